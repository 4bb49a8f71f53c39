//! Checks one committed vector without the generator: it reads only the JSON, then runs both
//! zopp-crypto and the reference implementation and demands that each reaches the vector's
//! `expected` outcome and, for `ok`, every byte of its `output`.

use rand_chacha::rand_core::{CryptoRng, RngCore};
use serde_json::Value;
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::envelope::{
    Envelope, EnvelopeContext, NameDigest, NameKey, SealKey, SecretKind, SecretPayload,
};
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keyfile::{self, KdfParams};
use zopp_crypto::keys::{
    AgreementPublic, AgreementSecret, PrincipalKeys, ScopeKey, ScopeKind, SigningKey, VerifyingKey,
};
use zopp_crypto::sign::{self, VersionClaims};
use zopp_crypto::token::{self, KeyShare, PrincipalToken};
use zopp_crypto::wrap::{self, KeyContext, WrappedKey};
use zopp_crypto::CryptoError;

use super::generate::code;
use super::reference as r;

/// An RNG that hands out exactly the bytes a vector recorded, so zopp-crypto's randomized
/// operations can be replayed byte for byte.
struct Replay {
    bytes: Vec<u8>,
    pos: usize,
}

impl Replay {
    fn new(parts: &[&[u8]]) -> Self {
        Self {
            bytes: parts.concat(),
            pos: 0,
        }
    }
}

impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let end = self.pos + dest.len();
        assert!(
            end <= self.bytes.len(),
            "the operation drew more randomness than the vector records"
        );
        dest.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Replay {}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Field accessors over one object of the vector; a missing or mistyped field is an error.
struct Fields<'a>(&'a Value, &'static str);

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Result<&'a Value, String> {
        self.0
            .get(k)
            .ok_or_else(|| format!("{} has no field `{k}`", self.1))
    }
    fn bytes(&self, k: &str) -> Result<Vec<u8>, String> {
        let t = self
            .get(k)?
            .as_str()
            .ok_or_else(|| format!("`{k}` is not a string"))?;
        hex::decode(t).map_err(|e| format!("`{k}` is not hex: {e}"))
    }
    fn opt_bytes(&self, k: &str) -> Result<Option<Vec<u8>>, String> {
        if self.get(k)?.is_null() {
            Ok(None)
        } else {
            self.bytes(k).map(Some)
        }
    }
    fn arr<const N: usize>(&self, k: &str) -> Result<[u8; N], String> {
        self.bytes(k)?
            .try_into()
            .map_err(|b: Vec<u8>| format!("`{k}` has {} bytes, not {N}", b.len()))
    }
    fn text(&self, k: &str) -> Result<&'a str, String> {
        self.get(k)?
            .as_str()
            .ok_or_else(|| format!("`{k}` is not a string"))
    }
    fn int(&self, k: &str) -> Result<i128, String> {
        let v = self.get(k)?;
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
            .ok_or_else(|| format!("`{k}` is not an integer"))
    }
    fn u64(&self, k: &str) -> Result<u64, String> {
        u64::try_from(self.int(k)?).map_err(|_| format!("`{k}` out of range"))
    }
    fn u32(&self, k: &str) -> Result<u32, String> {
        u32::try_from(self.int(k)?).map_err(|_| format!("`{k}` out of range"))
    }
    fn i64(&self, k: &str) -> Result<i64, String> {
        i64::try_from(self.int(k)?).map_err(|_| format!("`{k}` out of range"))
    }
    fn u8(&self, k: &str) -> Result<u8, String> {
        u8::try_from(self.int(k)?).map_err(|_| format!("`{k}` out of range"))
    }
    fn boolean(&self, k: &str) -> Result<bool, String> {
        self.get(k)?
            .as_bool()
            .ok_or_else(|| format!("`{k}` is not a boolean"))
    }
}

fn scope_kind(b: u8) -> Result<ScopeKind, String> {
    match b {
        1 => Ok(ScopeKind::Workspace),
        2 => Ok(ScopeKind::Project),
        3 => Ok(ScopeKind::Environment),
        _ => Err(format!("unknown scope kind {b}")),
    }
}

fn secret_kind(b: u8) -> Result<SecretKind, String> {
    match b {
        1 => Ok(SecretKind::Secret),
        2 => Ok(SecretKind::Kubeconfig),
        3 => Ok(SecretKind::App),
        _ => Err(format!("unknown secret kind {b}")),
    }
}

fn outcome<T>(res: &r::Outcome<T>) -> &'static str {
    match res {
        Ok(_) => r::OK,
        Err(e) => e,
    }
}

/// Checks one vector; the error says what disagreed.
pub fn check(v: &Value) -> Result<(), String> {
    let top = Fields(v, "vector");
    let expected = top.text("expected")?;
    let inputs = Fields(top.get("inputs")?, "inputs");
    let output = top.get("output")?;
    ensure!(
        (expected == r::OK) != output.is_null(),
        "an `ok` vector has an output and only an `ok` vector has one"
    );
    let out = Fields(output, "output");
    match top.text("operation")? {
        "name.digest" => name_digest(&inputs, &out),
        "envelope.seal" => envelope_seal(&inputs, &out),
        "envelope.open" => envelope_open(&inputs, &out, expected),
        "wrap.recipient" => wrap_recipient(&inputs, &out, expected),
        "wrap.recipient.open" => wrap_recipient_open(&inputs, &out, expected),
        "wrap.child" => wrap_child(&inputs, &out),
        "wrap.child.open" => wrap_child_open(&inputs, &out, expected),
        "request.verify" => request_verify(&inputs, &out, expected),
        "fingerprint" => fingerprint(&inputs, &out),
        "admission.verify" => admission_verify(&inputs, &out, expected),
        "join.verify" => join_verify(&inputs, &out, expected),
        "version.verify" => version_verify(&inputs, &out, expected),
        "audit.chain" => audit_chain(&inputs, &out, expected),
        "audit.verify" => super::adversarial::check_audit_verify(inputs.0, output, expected),
        "keyfile.seal" => keyfile_seal(&inputs, &out),
        "keyfile.decode" => keyfile_decode(&inputs, &out, expected),
        "token.parse" => token_parse(&inputs, &out, expected),
        other => super::statements::check(other, inputs.0, out.0, expected)
            .unwrap_or_else(|| Err(format!("unknown operation `{other}`"))),
    }
}

fn both(lib: &'static str, reference: &'static str, expected: &str) -> Result<(), String> {
    ensure!(
        lib == expected,
        "zopp-crypto says `{lib}`, the vector expects `{expected}`"
    );
    ensure!(
        reference == expected,
        "the reference implementation says `{reference}`, the vector expects `{expected}`"
    );
    Ok(())
}

fn same(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    ensure!(
        got == want,
        "{what}: got {}, vector has {}",
        hex::encode(got),
        hex::encode(want)
    );
    Ok(())
}

fn name_digest(i: &Fields<'_>, o: &Fields<'_>) -> Result<(), String> {
    let ek1 = i.arr::<32>("first_epoch_key")?;
    let name = i.text("name")?;
    let lib = NameKey::derive(&ScopeKey::from_bytes(ek1)).digest(name);
    same(
        "zopp-crypto digest",
        lib.as_bytes(),
        &o.bytes("name_digest")?,
    )?;
    let nk = r::name_key(&ek1);
    same("reference name key", &nk, &o.bytes("name_key")?)?;
    same(
        "reference digest",
        &r::name_digest(&nk, name),
        &o.bytes("name_digest")?,
    )
}

fn envelope_ctx(i: &Fields<'_>) -> Result<(EnvelopeContext, Vec<u8>), String> {
    let env = i.arr::<16>("environment_id")?;
    let digest = i.arr::<32>("name_digest")?;
    let version = i.u64("version")?;
    let epoch = i.u32("key_epoch")?;
    let ctx = EnvelopeContext {
        environment: EnvironmentId::from_bytes(env),
        name_digest: NameDigest::try_from_slice(&digest).map_err(|e| e.to_string())?,
        version,
        key_epoch: epoch,
    };
    Ok((ctx, r::envelope_aad(&env, &digest, version, epoch)))
}

fn envelope_seal(i: &Fields<'_>, o: &Fields<'_>) -> Result<(), String> {
    let ek = i.arr::<32>("environment_key")?;
    let nonce = i.arr::<24>("nonce")?;
    let kind = i.u8("kind")?;
    let name = i.text("name")?;
    let value = i.bytes("value")?;
    let metadata = i.bytes("metadata")?;
    let (ctx, aad) = envelope_ctx(i)?;
    let want = o.bytes("envelope")?;

    let payload = SecretPayload::new(
        secret_kind(kind)?,
        name.into(),
        value.clone(),
        metadata.clone(),
    );
    let key = SealKey::derive(&ScopeKey::from_bytes(ek));
    let sealed = key.seal(&ctx, &payload, &mut Replay::new(&[&nonce]));
    same("zopp-crypto envelope", sealed.as_bytes(), &want)?;
    same("zopp-crypto aad", &ctx.aad(), &o.bytes("aad")?)?;
    let opened = key
        .open(&ctx, &Envelope::from_bytes(want.clone()))
        .map_err(|e| format!("zopp-crypto cannot open: {e}"))?;
    ensure!(
        opened.kind() as u8 == kind
            && opened.name() == name
            && opened.expose_secret() == value.as_slice()
            && opened.metadata() == metadata.as_slice(),
        "zopp-crypto opens to another payload"
    );

    let sk = r::seal_key(&ek);
    same("reference seal key", &sk, &o.bytes("seal_key")?)?;
    same("reference aad", &aad, &o.bytes("aad")?)?;
    let encoded = r::encode_payload(kind, name.as_bytes(), &value, &metadata);
    same("reference payload", &encoded, &o.bytes("payload")?)?;
    same(
        "reference envelope",
        &r::seal_envelope(&sk, &nonce, &aad, &encoded),
        &want,
    )?;
    let p = r::open_envelope(&sk, &aad, &want).map_err(|e| format!("reference: {e}"))?;
    ensure!(
        p == (kind, name.as_bytes().to_vec(), value, metadata),
        "reference opens to another payload"
    );
    Ok(())
}

fn envelope_open(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let ek = i.arr::<32>("environment_key")?;
    let env = i.bytes("envelope")?;
    let (ctx, aad) = envelope_ctx(i)?;
    let lib =
        SealKey::derive(&ScopeKey::from_bytes(ek)).open(&ctx, &Envelope::from_bytes(env.clone()));
    let reference = r::open_envelope(&r::seal_key(&ek), &aad, &env);
    both(code(&lib), outcome(&reference), expected)?;
    if let (Ok(p), Ok((kind, name, value, metadata))) = (lib, reference) {
        let want = (
            o.u8("kind")?,
            o.text("name")?.as_bytes().to_vec(),
            o.bytes("value")?,
            o.bytes("metadata")?,
        );
        ensure!(
            (
                p.kind() as u8,
                p.name().as_bytes().to_vec(),
                p.expose_secret().to_vec(),
                p.metadata().to_vec()
            ) == want,
            "zopp-crypto opens to another payload"
        );
        ensure!(
            (kind, name, value, metadata) == want,
            "reference opens to another payload"
        );
    }
    Ok(())
}

fn key_ctx(
    i: &Fields<'_>,
    kind: &str,
    id: &str,
    epoch: &str,
) -> Result<(KeyContext, Vec<u8>), String> {
    let k = i.u8(kind)?;
    let id = i.arr::<16>(id)?;
    let epoch = i.u32(epoch)?;
    Ok((
        KeyContext {
            kind: scope_kind(k)?,
            id,
            epoch,
        },
        r::key_context(k, &id, epoch),
    ))
}

fn wrap_recipient(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let key = i.arr::<32>("scope_key")?;
    let (ctx, rctx) = key_ctx(i, "scope_kind", "scope_id", "epoch")?;
    let recipient = i.arr::<16>("recipient_id")?;
    let public = i.arr::<32>("recipient_public")?;
    let eph = i.arr::<32>("ephemeral_secret")?;
    let aad = r::recipient_aad(&rctx, &recipient);
    if expected != r::OK {
        let lib = wrap::wrap_to_recipient(
            &ScopeKey::from_bytes(key),
            &ctx,
            &PrincipalId::from_bytes(recipient),
            &AgreementPublic::try_from_slice(&public).map_err(|e| e.to_string())?,
            &mut Replay::new(&[&eph]),
        );
        let reference = r::wrap_to_recipient(&key, &aad, &public, &eph, &[0; 24]);
        return both(code(&lib), outcome(&reference), expected);
    }
    let secret = i.arr::<32>("recipient_secret")?;
    let nonce = i.arr::<24>("nonce")?;
    let want = o.bytes("wrapped")?;

    let lib = wrap::wrap_to_recipient(
        &ScopeKey::from_bytes(key),
        &ctx,
        &PrincipalId::from_bytes(recipient),
        &AgreementPublic::try_from_slice(&public).map_err(|e| e.to_string())?,
        &mut Replay::new(&[&eph, &nonce]),
    )
    .map_err(|e| format!("zopp-crypto refuses to wrap: {e}"))?;
    same("zopp-crypto wrapped", lib.as_bytes(), &want)?;
    let k = wrap::unwrap_from_recipient(
        &WrappedKey::from_bytes(want.clone()),
        &ctx,
        &PrincipalId::from_bytes(recipient),
        &AgreementSecret::from_bytes(secret),
    )
    .map_err(|e| format!("zopp-crypto cannot unwrap: {e}"))?;
    same("zopp-crypto unwrapped", k.expose_secret(), &key)?;

    same(
        "reference recipient public",
        &r::x25519_public(&secret),
        &public,
    )?;
    let eph_public = r::x25519_public(&eph);
    same(
        "reference ephemeral public",
        &eph_public,
        &o.bytes("ephemeral_public")?,
    )?;
    let shared = r::x25519(&eph, &public).ok_or("reference: zero shared secret")?;
    same(
        "reference shared secret",
        &shared,
        &o.bytes("shared_secret")?,
    )?;
    same(
        "reference kek",
        &r::recipient_kek(&shared, &eph_public, &public),
        &o.bytes("kek")?,
    )?;
    same("reference aad", &aad, &o.bytes("aad")?)?;
    let wrapped = r::wrap_to_recipient(&key, &aad, &public, &eph, &nonce)
        .map_err(|e| format!("reference: {e}"))?;
    same("reference wrapped", &wrapped, &want)?;
    let k =
        r::unwrap_from_recipient(&want, &aad, &secret).map_err(|e| format!("reference: {e}"))?;
    same("reference unwrapped", &k, &key)
}

fn wrap_recipient_open(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let secret = i.arr::<32>("recipient_secret")?;
    let recipient = i.arr::<16>("recipient_id")?;
    let (ctx, rctx) = key_ctx(i, "scope_kind", "scope_id", "epoch")?;
    let wrapped = i.bytes("wrapped")?;
    let lib = wrap::unwrap_from_recipient(
        &WrappedKey::from_bytes(wrapped.clone()),
        &ctx,
        &PrincipalId::from_bytes(recipient),
        &AgreementSecret::from_bytes(secret),
    );
    let reference =
        r::unwrap_from_recipient(&wrapped, &r::recipient_aad(&rctx, &recipient), &secret);
    both(code(&lib), outcome(&reference), expected)?;
    if let (Ok(a), Ok(b)) = (lib, reference) {
        same(
            "zopp-crypto unwrapped",
            a.expose_secret(),
            &o.bytes("scope_key")?,
        )?;
        same("reference unwrapped", &b, &o.bytes("scope_key")?)?;
    }
    Ok(())
}

fn child_ctxs(i: &Fields<'_>) -> Result<(KeyContext, KeyContext, Vec<u8>), String> {
    let (c, rc) = key_ctx(i, "child_kind", "child_id", "child_epoch")?;
    let (p, rp) = key_ctx(i, "parent_kind", "parent_id", "parent_epoch")?;
    Ok((c, p, r::child_aad(&rc, &rp)))
}

fn wrap_child(i: &Fields<'_>, o: &Fields<'_>) -> Result<(), String> {
    let child = i.arr::<32>("child_key")?;
    let parent = i.arr::<32>("parent_key")?;
    let nonce = i.arr::<24>("nonce")?;
    let (cctx, pctx, aad) = child_ctxs(i)?;
    let want = o.bytes("wrapped")?;
    let lib = wrap::wrap_under(
        &ScopeKey::from_bytes(child),
        &cctx,
        &ScopeKey::from_bytes(parent),
        &pctx,
        &mut Replay::new(&[&nonce]),
    );
    same("zopp-crypto wrapped", lib.as_bytes(), &want)?;
    let k = wrap::unwrap_under(&lib, &cctx, &ScopeKey::from_bytes(parent), &pctx)
        .map_err(|e| format!("zopp-crypto cannot unwrap: {e}"))?;
    same("zopp-crypto unwrapped", k.expose_secret(), &child)?;
    same("reference kek", &r::child_kek(&parent), &o.bytes("kek")?)?;
    same("reference aad", &aad, &o.bytes("aad")?)?;
    same(
        "reference wrapped",
        &r::wrap_under(&child, &parent, &aad, &nonce),
        &want,
    )?;
    let k = r::unwrap_under(&want, &parent, &aad).map_err(|e| format!("reference: {e}"))?;
    same("reference unwrapped", &k, &child)
}

fn wrap_child_open(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let parent = i.arr::<32>("parent_key")?;
    let wrapped = i.bytes("wrapped")?;
    let (cctx, pctx, aad) = child_ctxs(i)?;
    let lib = wrap::unwrap_under(
        &WrappedKey::from_bytes(wrapped.clone()),
        &cctx,
        &ScopeKey::from_bytes(parent),
        &pctx,
    );
    let reference = r::unwrap_under(&wrapped, &parent, &aad);
    both(code(&lib), outcome(&reference), expected)?;
    if let (Ok(a), Ok(b)) = (lib, reference) {
        same(
            "zopp-crypto unwrapped",
            a.expose_secret(),
            &o.bytes("child_key")?,
        )?;
        same("reference unwrapped", &b, &o.bytes("child_key")?)?;
    }
    Ok(())
}

fn lib_verify(key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    VerifyingKey::try_from_slice(key)?.verify(msg, sig)
}

/// When the vector carries the signer's seed, both implementations must derive its key and
/// reproduce its (deterministic) Ed25519 signature.
fn check_signer(seed: Option<Vec<u8>>, key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    if let Some(seed) = seed {
        let seed: [u8; 32] = seed.try_into().map_err(|_| "seed is not 32 bytes")?;
        let k = SigningKey::from_seed(&seed);
        same("zopp-crypto public key", &k.verifying_key().to_bytes(), key)?;
        same("zopp-crypto signature", &k.sign(msg), sig)?;
        same("reference public key", &r::ed25519_public(&seed), key)?;
        same("reference signature", &r::ed25519_sign(&seed, msg), sig)?;
    }
    Ok(())
}

fn request_verify(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let key = i.bytes("verifying_key")?;
    let server = i.arr::<16>("server_id")?;
    let method = i.text("method")?;
    let ts = i.i64("timestamp_ms")?;
    let nonce = i.arr::<16>("nonce")?;
    let body = i.bytes("body")?;
    let sig = i.bytes("signature")?;
    let body_hash = r::sha256(&body);
    let server_id = zopp_crypto::ids::ServerId::from_bytes(server);
    let lib_msg =
        sign::request_message(&server_id, method, ts, &nonce, &zopp_crypto::sha256(&body));
    let ref_msg = r::request_message(&server, method, ts, &nonce, &body_hash);
    let lib = lib_verify(&key, &lib_msg, &sig);
    let reference = r::ed25519_verify(&key, &ref_msg, &sig);
    both(code(&lib), outcome(&reference), expected)?;
    if expected == r::OK {
        same("body hash", &body_hash, &o.bytes("body_sha256")?)?;
        same("zopp-crypto message", &lib_msg, &o.bytes("message")?)?;
        same("reference message", &ref_msg, &o.bytes("message")?)?;
        let seed = i.opt_bytes("signing_seed")?;
        check_signer(seed.clone(), &key, &ref_msg, &sig)?;
        if let Some(seed) = seed {
            let seed: [u8; 32] = seed.try_into().map_err(|_| "seed is not 32 bytes")?;
            let again = sign::sign_request(
                &SigningKey::from_seed(&seed),
                &server_id,
                method,
                ts,
                &nonce,
                &body,
            );
            same("zopp-crypto sign_request", &again, &sig)?;
        }
    }
    Ok(())
}

fn fingerprint(i: &Fields<'_>, o: &Fields<'_>) -> Result<(), String> {
    let key = i.arr::<32>("verifying_key")?;
    let want = o.text("fingerprint")?;
    let lib = VerifyingKey::try_from_slice(&key)
        .map_err(|e| e.to_string())?
        .fingerprint();
    ensure!(
        lib == want,
        "zopp-crypto fingerprint {lib}, vector has {want}"
    );
    let reference = r::fingerprint(&key);
    ensure!(
        reference == want,
        "reference fingerprint {reference}, vector has {want}"
    );
    Ok(())
}

fn admission_verify(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let admitter_key = i.bytes("admitter_key")?;
    let principal = i.arr::<16>("principal_id")?;
    let signing_key = i.bytes("signing_key")?;
    let agreement_key = i.bytes("agreement_key")?;
    let admitter = i.opt_bytes("admitter_id")?;
    let sig = i.bytes("signature")?;
    let admitter_id: Option<[u8; 16]> = admitter
        .as_ref()
        .map(|a| {
            a.clone()
                .try_into()
                .map_err(|_| "admitter id is not 16 bytes")
        })
        .transpose()?;
    let lib = super::adversarial::lib_admission(
        &admitter_key,
        &principal,
        &signing_key,
        &agreement_key,
        admitter_id.as_ref(),
        &sig,
    );
    let reference = r::admission_verify(
        &admitter_key,
        &principal,
        &signing_key,
        &agreement_key,
        admitter.as_deref(),
        &sig,
    );
    both(code(&lib), outcome(&reference), expected)?;
    if expected == r::OK {
        let ref_msg = r::admission_message(
            &principal,
            &signing_key,
            &agreement_key,
            admitter.as_deref(),
        );
        let lib_msg = sign::admission_message(
            &PrincipalId::from_bytes(principal),
            &VerifyingKey::try_from_slice(&signing_key).map_err(|e| e.to_string())?,
            &AgreementPublic::try_from_slice(&agreement_key).map_err(|e| e.to_string())?,
            admitter_id.map(PrincipalId::from_bytes).as_ref(),
        );
        same("zopp-crypto message", &lib_msg, &o.bytes("message")?)?;
        same("reference message", &ref_msg, &o.bytes("message")?)?;
        let signer = if admitter.is_some() {
            &admitter_key
        } else {
            &signing_key
        };
        check_signer(i.opt_bytes("admitter_seed")?, signer, &ref_msg, &sig)?;
    }
    Ok(())
}

fn join_verify(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let signing_key = i.bytes("signing_key")?;
    let agreement_key = i.bytes("agreement_key")?;
    let email = i.text("email")?;
    let token_hash = i.arr::<32>("token_hash")?;
    let sig = i.bytes("signature")?;
    let lib = super::adversarial::lib_join(&signing_key, &agreement_key, email, &token_hash, &sig);
    let reference = r::join_verify(&signing_key, &agreement_key, email, &token_hash, &sig);
    both(code(&lib), outcome(&reference), expected)?;
    if expected == r::OK {
        let lib_msg = sign::join_message(
            &VerifyingKey::try_from_slice(&signing_key).map_err(|e| e.to_string())?,
            &AgreementPublic::try_from_slice(&agreement_key).map_err(|e| e.to_string())?,
            email,
            &token_hash,
        );
        let ref_msg = r::join_message(&signing_key, &agreement_key, email, &token_hash);
        same("zopp-crypto message", &lib_msg, &o.bytes("message")?)?;
        same("reference message", &ref_msg, &o.bytes("message")?)?;
        check_signer(i.opt_bytes("signing_seed")?, &signing_key, &ref_msg, &sig)?;
    }
    Ok(())
}

fn version_verify(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let key = i.bytes("verifying_key")?;
    let env = i.arr::<16>("environment_id")?;
    let digest = i.arr::<32>("name_digest")?;
    let version = i.u64("version")?;
    let epoch = i.u32("key_epoch")?;
    let deleted = i.boolean("deleted")?;
    let envelope = i.bytes("envelope")?;
    let prev = i.arr::<32>("prev_hash")?;
    let writer = i.arr::<16>("writer_id")?;
    let env_version = i.u64("env_version")?;
    let created_at_ms = i.i64("created_at_ms")?;
    let sig = i.bytes("signature")?;
    let claims = VersionClaims {
        environment: EnvironmentId::from_bytes(env),
        name_digest: NameDigest::try_from_slice(&digest).map_err(|e| e.to_string())?,
        version,
        key_epoch: epoch,
        deleted,
        envelope: &envelope,
        prev_hash: prev,
        writer: PrincipalId::from_bytes(writer),
        env_version,
        created_at_ms,
    };
    let ref_msg = r::version_message(
        &env,
        &digest,
        version,
        epoch,
        deleted,
        &envelope,
        &prev,
        &writer,
        (env_version, created_at_ms),
    );
    same("messages", &claims.message(), &ref_msg)?;
    let lib = VerifyingKey::try_from_slice(&key).and_then(|k| claims.verify(&k, &sig));
    let reference = r::ed25519_verify(&key, &ref_msg, &sig);
    both(code(&lib), outcome(&reference), expected)?;
    if expected == r::OK {
        same("message", &ref_msg, &o.bytes("message")?)?;
        same("zopp-crypto hash", &claims.hash(&sig), &o.bytes("hash")?)?;
        same(
            "reference hash",
            &r::version_hash(&ref_msg, &sig),
            &o.bytes("hash")?,
        )?;
        check_signer(i.opt_bytes("signing_seed")?, &key, &ref_msg, &sig)?;
    }
    Ok(())
}

fn audit_chain(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let mut lib_prev = i.arr::<32>("prev_hash")?;
    let mut ref_prev = lib_prev;
    let entries = i
        .get("entries")?
        .as_array()
        .ok_or("`entries` is not an array")?;
    let (mut lib_outcome, mut ref_outcome) = (r::OK, r::OK);
    let mut canonical = Vec::new();
    for e in entries {
        let f = Fields(e, "entry");
        let (nonce, request_hash, signature) = (
            f.bytes("nonce")?,
            f.bytes("request_hash")?,
            f.bytes("signature")?,
        );
        let rec = AuditRecord {
            seq: f.u64("seq")?,
            time_ms: f.i64("time_ms")?,
            actor: f.text("actor")?,
            action: f.text("action")?,
            scope: f.text("scope")?,
            target: f.text("target")?,
            method: f.text("method")?,
            request_timestamp_ms: f.i64("request_timestamp_ms")?,
            nonce: &nonce,
            request_hash: &request_hash,
            signature: &signature,
            result: f.text("result")?,
        };
        let stored = f.arr::<32>("hash")?;
        lib_prev = rec.chain_hash(&lib_prev);
        if lib_prev != stored {
            lib_outcome = r::HASH_MISMATCH;
        }
        let c = r::audit_canonical(&r::AuditFields {
            seq: rec.seq,
            time_ms: rec.time_ms,
            strings1: [
                rec.actor.as_bytes(),
                rec.action.as_bytes(),
                rec.scope.as_bytes(),
                rec.target.as_bytes(),
                rec.method.as_bytes(),
            ],
            request_timestamp_ms: rec.request_timestamp_ms,
            strings2: [&nonce, &request_hash, &signature, rec.result.as_bytes()],
        });
        same("canonical encodings", &rec.canonical(), &c)?;
        ref_prev = r::audit_hash(&ref_prev, &c);
        if ref_prev != stored {
            ref_outcome = r::HASH_MISMATCH;
        }
        canonical.push(c);
    }
    ensure!(!entries.is_empty(), "an audit vector needs entries");
    both(lib_outcome, ref_outcome, expected)?;
    if expected == r::OK {
        let want = o
            .get("canonical")?
            .as_array()
            .ok_or("`canonical` is not an array")?;
        ensure!(
            want.len() == canonical.len(),
            "one canonical encoding per entry"
        );
        for (c, w) in canonical.iter().zip(want) {
            let w = hex::decode(w.as_str().ok_or("canonical entry is not a string")?)
                .map_err(|e| e.to_string())?;
            same("canonical entry", c, &w)?;
        }
        same("chain head", &lib_prev, &o.bytes("head")?)?;
    }
    Ok(())
}

fn keyfile_seal(i: &Fields<'_>, o: &Fields<'_>) -> Result<(), String> {
    let seed = i.arr::<32>("signing_seed")?;
    let agreement = i.arr::<32>("agreement_secret")?;
    let pass = i.bytes("passphrase")?;
    let params = KdfParams {
        m_cost_kib: i.u32("m_cost_kib")?,
        t_cost: i.u32("t_cost")?,
        p_cost: i.u32("p_cost")?,
    };
    let salt = i.arr::<16>("salt")?;
    let nonce = i.arr::<24>("nonce")?;
    let want = o.bytes("encoded")?;
    let keys = PrincipalKeys {
        signing: SigningKey::from_seed(&seed),
        agreement: AgreementSecret::from_bytes(agreement),
    };
    let lib = keyfile::encode_sealed(&keys, &pass, params, &mut Replay::new(&[&salt, &nonce]))
        .map_err(|e| format!("zopp-crypto refuses to seal: {e}"))?;
    same("zopp-crypto key file", &lib, &want)?;
    let kek = keyfile::derive_passphrase_key(&pass, &salt, params).map_err(|e| e.to_string())?;
    same("zopp-crypto kek", kek.as_ref(), &o.bytes("kek")?)?;
    let back = keyfile::decode(&want, Some(&pass)).map_err(|e| format!("zopp-crypto: {e}"))?;
    same("zopp-crypto seed", &back.signing.expose_secret(), &seed)?;
    same(
        "zopp-crypto agreement",
        back.agreement.expose_secret(),
        &agreement,
    )?;

    let (m, t, p) = (params.m_cost_kib, params.t_cost, params.p_cost);
    let kek = r::keyfile_kek(&pass, &salt, m, t, p).map_err(|e| format!("reference: {e}"))?;
    same("reference kek", &kek, &o.bytes("kek")?)?;
    let enc = r::keyfile_seal(&seed, &agreement, &pass, m, t, p, &salt, &nonce)
        .map_err(|e| format!("reference: {e}"))?;
    same("reference key file", &enc, &want)?;
    let (s, a) = r::keyfile_decode(&want, Some(&pass)).map_err(|e| format!("reference: {e}"))?;
    same("reference seed", &s, &seed)?;
    same("reference agreement", &a, &agreement)
}

fn keyfile_decode(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let enc = i.bytes("encoded")?;
    let pass = i.opt_bytes("passphrase")?;
    let lib = keyfile::decode(&enc, pass.as_deref());
    let reference = r::keyfile_decode(&enc, pass.as_deref());
    both(code(&lib), outcome(&reference), expected)?;
    if let (Ok(keys), Ok((seed, agreement))) = (lib, reference) {
        let want_seed = o.bytes("signing_seed")?;
        let want_agreement = o.bytes("agreement_secret")?;
        same(
            "zopp-crypto seed",
            &keys.signing.expose_secret(),
            &want_seed,
        )?;
        same(
            "zopp-crypto agreement",
            keys.agreement.expose_secret(),
            &want_agreement,
        )?;
        same("reference seed", &seed, &want_seed)?;
        same("reference agreement", &agreement, &want_agreement)?;
        same(
            "verifying key",
            &r::ed25519_public(&seed),
            &o.bytes("verifying_key")?,
        )?;
        same(
            "agreement public",
            &r::x25519_public(&agreement),
            &o.bytes("agreement_public")?,
        )?;
        if pass.is_none() {
            same(
                "zopp-crypto plain encoding",
                &keyfile::encode_plain(&keys),
                &enc,
            )?;
        }
    }
    Ok(())
}

fn token_parse(i: &Fields<'_>, o: &Fields<'_>, expected: &str) -> Result<(), String> {
    let text = i.text("token")?;
    let lib = PrincipalToken::try_parse(text);
    let reference = r::token_parse(text);
    both(code(&lib), outcome(&reference), expected)?;
    if let (Ok(t), Ok((id, seed, share))) = (lib, reference) {
        let server_share = i.arr::<32>("server_share")?;
        same(
            "zopp-crypto principal",
            t.principal.as_bytes(),
            &o.bytes("principal_id")?,
        )?;
        same(
            "zopp-crypto seed",
            &t.signing.expose_secret(),
            &o.bytes("signing_seed")?,
        )?;
        same(
            "zopp-crypto share",
            t.share.expose_secret(),
            &o.bytes("token_share")?,
        )?;
        let combined = token::combine(&t.share, &KeyShare::from_bytes(server_share));
        same(
            "zopp-crypto combined secret",
            combined.expose_secret(),
            &o.bytes("agreement_secret")?,
        )?;
        ensure!(
            t.encode().as_str() == text.trim_matches(token::is_format_whitespace),
            "zopp-crypto re-encodes the token differently"
        );
        same("reference principal", &id, &o.bytes("principal_id")?)?;
        same("reference seed", &seed, &o.bytes("signing_seed")?)?;
        same("reference share", &share, &o.bytes("token_share")?)?;
        let binding =
            r::token_binding_bytes(text).map_err(|e| format!("reference binding: {e}"))?;
        same("reference binding", &binding, &o.bytes("binding")?)?;
        let secret = r::xor32(&share, &server_share);
        same(
            "reference combined secret",
            &secret,
            &o.bytes("agreement_secret")?,
        )?;
        same(
            "agreement public",
            &r::x25519_public(&secret),
            &o.bytes("agreement_public")?,
        )?;
        same(
            "verifying key",
            &r::ed25519_public(&seed),
            &o.bytes("verifying_key")?,
        )?;
    }
    Ok(())
}
