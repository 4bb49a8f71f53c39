//! An independent implementation of threat-model/FORMAT.md, written against the primitive crates
//! (HKDF, HMAC, XChaCha20-Poly1305, X25519, Ed25519, Argon2id, base64) rather than zopp-crypto.
//! The vector checker runs it next to zopp-crypto: both must reach each vector's outcome, so a
//! bug shared by the generator and the library cannot hide behind a self-consistent vector.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

// Outcome codes used in the vectors' `expected` field (FORMAT.md §11).

/// The operation succeeded.
pub const OK: &str = "ok";
/// Authentication failed.
pub const DECRYPTION_FAILED: &str = "decryption_failed";
/// Unknown version byte or algorithm id.
pub const UNSUPPORTED_FORMAT: &str = "unsupported_format";
/// Wrong length or framing.
pub const MALFORMED: &str = "malformed";
/// The signature does not verify.
pub const BAD_SIGNATURE: &str = "bad_signature";
/// Not a valid, non-small-order public key.
pub const INVALID_PUBLIC_KEY: &str = "invalid_public_key";
/// Argon2id parameters out of bounds.
pub const KDF_PARAMS: &str = "kdf_params";
/// A recomputed audit hash differs from the stored one.
pub const HASH_MISMATCH: &str = "hash_mismatch";

/// Result of a reference operation: the error is an outcome code.
pub type Outcome<T> = Result<T, &'static str>;

/// SHA-256.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// HKDF-SHA256 with an optional salt, 32-byte output.
pub fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

fn xchacha_seal(key: &[u8; 32], nonce: &[u8], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(nonce), Payload { msg, aad })
        .expect("in-memory encryption")
}

fn xchacha_open(key: &[u8; 32], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Outcome<Vec<u8>> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| DECRYPTION_FAILED)
}

// ---------- §5.1 name digest

/// §5.1 name key from the epoch-1 environment key.
pub fn name_key(first_epoch_key: &[u8; 32]) -> [u8; 32] {
    hkdf32(None, first_epoch_key, b"zopp/v1/name")
}

/// §5.1 digest of a name.
pub fn name_digest(name_key: &[u8; 32], name: &str) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(name_key).expect("any key length");
    m.update(name.as_bytes());
    m.finalize().into_bytes().into()
}

// ---------- §5 envelope, §5.2 payload

/// §5 sealing key of an environment key.
pub fn seal_key(environment_key: &[u8; 32]) -> [u8; 32] {
    hkdf32(None, environment_key, b"zopp/v1/seal")
}

/// §5 envelope AAD.
pub fn envelope_aad(environment: &[u8], digest: &[u8], version: u64, epoch: u32) -> Vec<u8> {
    [
        b"zopp/v1/secret".as_slice(),
        environment,
        digest,
        &version.to_be_bytes(),
        &epoch.to_be_bytes(),
    ]
    .concat()
}

/// A decoded §5.2 payload: kind, name, value, metadata.
pub type Payload5 = (u8, Vec<u8>, Vec<u8>, Vec<u8>);

/// §5.2 payload encoding.
pub fn encode_payload(kind: u8, name: &[u8], value: &[u8], metadata: &[u8]) -> Vec<u8> {
    let mut out = vec![0x01, kind];
    for part in [name, value, metadata] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// §5.2 payload decoding.
pub fn decode_payload(b: &[u8]) -> Outcome<Payload5> {
    if b.len() < 2 || b[0] != 0x01 || !(1..=3).contains(&b[1]) {
        return Err(MALFORMED);
    }
    let mut rest = &b[2..];
    let mut parts = Vec::new();
    for _ in 0..3 {
        if rest.len() < 4 {
            return Err(MALFORMED);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(MALFORMED);
        }
        parts.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    if !rest.is_empty() || std::str::from_utf8(&parts[0]).is_err() {
        return Err(MALFORMED);
    }
    let metadata = parts.pop().expect("3 parts");
    let value = parts.pop().expect("3 parts");
    let name = parts.pop().expect("3 parts");
    Ok((b[1], name, value, metadata))
}

/// §5 envelope with a given nonce.
pub fn seal_envelope(key: &[u8; 32], nonce: &[u8; 24], aad: &[u8], payload: &[u8]) -> Vec<u8> {
    [
        &[0x01, 0x01][..],
        nonce,
        &xchacha_seal(key, nonce, payload, aad),
    ]
    .concat()
}

/// §5 envelope opening, checks in the order FORMAT.md gives.
pub fn open_envelope(key: &[u8; 32], aad: &[u8], env: &[u8]) -> Outcome<Payload5> {
    if env.len() < 2 {
        return Err(MALFORMED);
    }
    if env[..2] != [0x01, 0x01] {
        return Err(UNSUPPORTED_FORMAT);
    }
    if env.len() < 2 + 24 + 16 {
        return Err(MALFORMED);
    }
    decode_payload(&xchacha_open(key, &env[2..26], &env[26..], aad)?)
}

// ---------- §3.2 recipient wrap, §3.3 child wrap

/// KeyContext encoding: kind byte, 16-byte id, epoch u32 BE.
pub fn key_context(kind: u8, id: &[u8], epoch: u32) -> Vec<u8> {
    [&[kind][..], id, &epoch.to_be_bytes()].concat()
}

/// §3.2 AAD.
pub fn recipient_aad(ctx: &[u8], recipient: &[u8]) -> Vec<u8> {
    [b"zopp/v1/wrapped-to".as_slice(), ctx, recipient].concat()
}

/// X25519 public key of a secret.
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(*secret, x25519_dalek::X25519_BASEPOINT_BYTES)
}

/// Whether 32 bytes are a canonical X25519 public key as §3.2 requires of published keys:
/// bit 255 clear and u < p.
pub fn x25519_canonical(u: &[u8; 32]) -> bool {
    u[31] & 0x80 == 0 && field_element_canonical(u)
}

/// Whether 32 little-endian bytes, bit 255 ignored, are below p = 2^255 - 19.
pub fn field_element_canonical(b: &[u8; 32]) -> bool {
    let mut v = *b;
    v[31] &= 0x7f;
    // Compare with p from the most significant byte down.
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    for i in (0..32).rev() {
        if v[i] != p[i] {
            return v[i] < p[i];
        }
    }
    false
}

/// An X25519 key a signed statement may name (§6): canonical, and not of low order (X25519
/// with any scalar gives zero).
pub fn x25519_usable(key: &[u8]) -> Outcome<()> {
    let key: [u8; 32] = key.try_into().map_err(|_| INVALID_PUBLIC_KEY)?;
    if !x25519_canonical(&key) || x25519(&[0x55; 32], &key).is_none() {
        return Err(INVALID_PUBLIC_KEY);
    }
    Ok(())
}

/// X25519; an all-zero result (a low-order peer point) is refused.
pub fn x25519(secret: &[u8; 32], peer: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = x25519_dalek::x25519(*secret, *peer);
    (shared != [0u8; 32]).then_some(shared)
}

/// §3.2 key-encryption key.
pub fn recipient_kek(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let salt = [ephemeral.as_slice(), recipient].concat();
    hkdf32(Some(&salt), shared, b"zopp/v1/wrap-x25519")
}

/// §3.2 wrap with a given ephemeral secret and nonce.
pub fn wrap_to_recipient(
    key: &[u8; 32],
    aad: &[u8],
    recipient_public: &[u8; 32],
    ephemeral_secret: &[u8; 32],
    nonce: &[u8; 24],
) -> Outcome<Vec<u8>> {
    if !x25519_canonical(recipient_public) {
        return Err(INVALID_PUBLIC_KEY);
    }
    let eph = x25519_public(ephemeral_secret);
    let shared = x25519(ephemeral_secret, recipient_public).ok_or(INVALID_PUBLIC_KEY)?;
    let kek = recipient_kek(&shared, &eph, recipient_public);
    Ok([
        &[0x01, 0x02][..],
        &eph,
        nonce,
        &xchacha_seal(&kek, nonce, key, aad),
    ]
    .concat())
}

/// §3.2 unwrap.
pub fn unwrap_from_recipient(wrapped: &[u8], aad: &[u8], secret: &[u8; 32]) -> Outcome<Vec<u8>> {
    if wrapped.len() < 2 {
        return Err(MALFORMED);
    }
    if wrapped[..2] != [0x01, 0x02] {
        return Err(UNSUPPORTED_FORMAT);
    }
    if wrapped.len() != 2 + 32 + 24 + 32 + 16 {
        return Err(MALFORMED);
    }
    let eph: [u8; 32] = wrapped[2..34].try_into().expect("32 bytes");
    let shared = x25519(secret, &eph).ok_or(DECRYPTION_FAILED)?;
    let kek = recipient_kek(&shared, &eph, &x25519_public(secret));
    xchacha_open(&kek, &wrapped[34..58], &wrapped[58..], aad)
}

/// §3.3 AAD.
pub fn child_aad(child_ctx: &[u8], parent_ctx: &[u8]) -> Vec<u8> {
    [b"zopp/v1/wrapped-under".as_slice(), child_ctx, parent_ctx].concat()
}

/// §3.3 key-encryption key.
pub fn child_kek(parent: &[u8; 32]) -> [u8; 32] {
    hkdf32(None, parent, b"zopp/v1/wrap-child")
}

/// §3.3 wrap with a given nonce.
pub fn wrap_under(child: &[u8; 32], parent: &[u8; 32], aad: &[u8], nonce: &[u8; 24]) -> Vec<u8> {
    [
        &[0x01, 0x01][..],
        nonce,
        &xchacha_seal(&child_kek(parent), nonce, child, aad),
    ]
    .concat()
}

/// §3.3 unwrap.
pub fn unwrap_under(wrapped: &[u8], parent: &[u8; 32], aad: &[u8]) -> Outcome<Vec<u8>> {
    if wrapped.len() < 2 {
        return Err(MALFORMED);
    }
    if wrapped[..2] != [0x01, 0x01] {
        return Err(UNSUPPORTED_FORMAT);
    }
    if wrapped.len() != 2 + 24 + 32 + 16 {
        return Err(MALFORMED);
    }
    xchacha_open(&child_kek(parent), &wrapped[2..26], &wrapped[26..], aad)
}

// ---------- Ed25519 (§4, §6, §7)

/// Ed25519 public key of a seed.
pub fn ed25519_public(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// Ed25519 signature (deterministic).
pub fn ed25519_sign(seed: &[u8; 32], msg: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    ed25519_dalek::SigningKey::from_bytes(seed)
        .sign(msg)
        .to_bytes()
}

/// Decodes an Ed25519 public key as §1 requires: 32 bytes, y < p, a curve point, not of small
/// order.
pub fn ed25519_key(public: &[u8]) -> Outcome<ed25519_dalek::VerifyingKey> {
    let public: [u8; 32] = public.try_into().map_err(|_| INVALID_PUBLIC_KEY)?;
    if !field_element_canonical(&public) {
        return Err(INVALID_PUBLIC_KEY);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| INVALID_PUBLIC_KEY)?;
    if key.is_weak() {
        return Err(INVALID_PUBLIC_KEY);
    }
    Ok(key)
}

/// Strict verification: the key is checked first, then the signature.
pub fn ed25519_verify(public: &[u8], msg: &[u8], sig: &[u8]) -> Outcome<()> {
    let key = ed25519_key(public)?;
    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| BAD_SIGNATURE)?;
    key.verify_strict(msg, &sig).map_err(|_| BAD_SIGNATURE)
}

/// §4 signed request message (protocol version 2: the server id follows the version byte).
pub fn request_message(
    server_id: &[u8],
    method: &str,
    ts: i64,
    nonce: &[u8],
    body_sha256: &[u8],
) -> Vec<u8> {
    [
        b"zopp/v1/request".as_slice(),
        &[2],
        server_id,
        &(method.len() as u32).to_be_bytes(),
        method.as_bytes(),
        &ts.to_be_bytes(),
        nonce,
        body_sha256,
    ]
    .concat()
}

/// §7 signed version message.
#[allow(clippy::too_many_arguments)]
pub fn version_message(
    environment: &[u8],
    digest: &[u8],
    version: u64,
    epoch: u32,
    deleted: bool,
    envelope: &[u8],
    prev_hash: &[u8],
    writer: &[u8],
    (env_version, created_at_ms): (u64, i64),
) -> Vec<u8> {
    [
        b"zopp/v1/version".as_slice(),
        environment,
        digest,
        &version.to_be_bytes(),
        &epoch.to_be_bytes(),
        &[u8::from(deleted)],
        &sha256(envelope),
        prev_hash,
        writer,
        &env_version.to_be_bytes(),
        &created_at_ms.to_be_bytes(),
    ]
    .concat()
}

/// §7 version hash.
pub fn version_hash(message: &[u8], sig: &[u8]) -> [u8; 32] {
    sha256(&[b"zopp/v1/version-hash".as_slice(), message, sig].concat())
}

/// §6.1 admission message.
pub fn admission_message(
    principal: &[u8],
    signing_key: &[u8],
    agreement_key: &[u8],
    admitter: Option<&[u8]>,
) -> Vec<u8> {
    let tail = match admitter {
        Some(a) => [&[1u8][..], a].concat(),
        None => vec![0],
    };
    [
        b"zopp/v1/admit".as_slice(),
        principal,
        signing_key,
        agreement_key,
        &tail,
    ]
    .concat()
}

/// §6.1 admission verification: both admitted keys must be valid, and the signature verifies
/// under the admitter's key, or under the admitted key itself for a root (no admitter).
pub fn admission_verify(
    admitter_key: &[u8],
    principal: &[u8],
    signing_key: &[u8],
    agreement_key: &[u8],
    admitter: Option<&[u8]>,
    sig: &[u8],
) -> Outcome<()> {
    ed25519_key(signing_key)?;
    x25519_usable(agreement_key)?;
    let msg = admission_message(principal, signing_key, agreement_key, admitter);
    let verifier = if admitter.is_some() {
        admitter_key
    } else {
        signing_key
    };
    ed25519_verify(verifier, &msg, sig)
}

/// §6.2 join verification: valid keys, then the self-signature.
pub fn join_verify(
    signing_key: &[u8],
    agreement_key: &[u8],
    email: &str,
    token_hash: &[u8],
    sig: &[u8],
) -> Outcome<()> {
    ed25519_key(signing_key)?;
    x25519_usable(agreement_key)?;
    ed25519_verify(
        signing_key,
        &join_message(signing_key, agreement_key, email, token_hash),
        sig,
    )
}

/// §6.2 join message.
pub fn join_message(
    signing_key: &[u8],
    agreement_key: &[u8],
    email: &str,
    token_hash: &[u8],
) -> Vec<u8> {
    [
        b"zopp/v1/join".as_slice(),
        signing_key,
        agreement_key,
        &(email.len() as u32).to_be_bytes(),
        email.as_bytes(),
        token_hash,
    ]
    .concat()
}

/// §3.4 fingerprint text.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let h = sha256(&[b"zopp/v1/fingerprint".as_slice(), public].concat());
    h[..10]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join("-")
}

// ---------- §8 audit

/// The §8 fields, in canonical order.
pub struct AuditFields<'a> {
    pub seq: u64,
    pub time_ms: i64,
    pub strings1: [&'a [u8]; 5],
    pub request_timestamp_ms: i64,
    pub strings2: [&'a [u8]; 4],
}

/// §8 canonical entry.
pub fn audit_canonical(f: &AuditFields<'_>) -> Vec<u8> {
    let mut m = b"zopp/v1/audit".to_vec();
    m.extend_from_slice(&f.seq.to_be_bytes());
    m.extend_from_slice(&f.time_ms.to_be_bytes());
    for s in f.strings1 {
        m.extend_from_slice(&(s.len() as u32).to_be_bytes());
        m.extend_from_slice(s);
    }
    m.extend_from_slice(&f.request_timestamp_ms.to_be_bytes());
    for s in f.strings2 {
        m.extend_from_slice(&(s.len() as u32).to_be_bytes());
        m.extend_from_slice(s);
    }
    m
}

/// §8 chain hash.
pub fn audit_hash(prev: &[u8], canonical: &[u8]) -> [u8; 32] {
    sha256(&[prev, canonical].concat())
}

// ---------- §9 key file

/// §9 Argon2id key-encryption key, bounds checked first.
pub fn keyfile_kek(pass: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Outcome<[u8; 32]> {
    // zopp's bounds, stricter than Argon2's own (FORMAT.md §9).
    if m > 2 * 1024 * 1024 || t == 0 || t > 32 || p == 0 || p > 16 || m < 8 * p {
        return Err(KDF_PARAMS);
    }
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|_| KDF_PARAMS)?;
    let mut out = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(pass, salt, &mut out)
        .map_err(|_| KDF_PARAMS)?;
    Ok(out)
}

/// Decodes a key file into (signing seed, X25519 secret).
pub fn keyfile_decode(enc: &[u8], pass: Option<&[u8]>) -> Outcome<([u8; 32], [u8; 32])> {
    let split = |b: &[u8]| -> Outcome<([u8; 32], [u8; 32])> {
        if b.len() != 64 {
            return Err(MALFORMED);
        }
        Ok((
            b[..32].try_into().expect("32 bytes"),
            b[32..].try_into().expect("32 bytes"),
        ))
    };
    if enc.len() < 2 {
        return Err(MALFORMED);
    }
    if enc[0] != 0x01 {
        return Err(UNSUPPORTED_FORMAT);
    }
    match enc[1] {
        0x00 => split(&enc[2..]),
        0x03 => {
            if enc.len() != 54 + 64 + 16 {
                return Err(MALFORMED);
            }
            let u = |i: usize| u32::from_be_bytes([enc[i], enc[i + 1], enc[i + 2], enc[i + 3]]);
            let (m, t, p) = (u(2), u(6), u(10));
            if m > 2 * 1024 * 1024 || t == 0 || t > 32 || p == 0 || p > 16 || m < 8 * p {
                return Err(KDF_PARAMS);
            }
            let pass = pass.ok_or(DECRYPTION_FAILED)?;
            let kek = keyfile_kek(pass, &enc[14..30], m, t, p)?;
            let aad = [b"zopp/v1/keyfile".as_slice(), &enc[..54]].concat();
            split(&xchacha_open(&kek, &enc[30..54], &enc[54..], &aad)?)
        }
        _ => Err(UNSUPPORTED_FORMAT),
    }
}

/// §9 sealed key file with a given salt and nonce.
#[allow(clippy::too_many_arguments)]
pub fn keyfile_seal(
    seed: &[u8; 32],
    agreement: &[u8; 32],
    pass: &[u8],
    m: u32,
    t: u32,
    p: u32,
    salt: &[u8; 16],
    nonce: &[u8; 24],
) -> Outcome<Vec<u8>> {
    let kek = keyfile_kek(pass, salt, m, t, p)?;
    let header = [
        &[0x01, 0x03][..],
        &m.to_be_bytes(),
        &t.to_be_bytes(),
        &p.to_be_bytes(),
        salt,
        nonce,
    ]
    .concat();
    let aad = [b"zopp/v1/keyfile".as_slice(), &header].concat();
    let ct = xchacha_seal(&kek, nonce, &[seed.as_slice(), agreement].concat(), &aad);
    Ok([header, ct].concat())
}

// ---------- §10 principal token

/// Parses a token into (principal id, signing seed, token share).
pub fn token_parse(s: &str) -> Outcome<([u8; 16], [u8; 32], [u8; 32])> {
    let raw = token_raw(s)?;
    Ok((
        raw[1..17].try_into().expect("16 bytes"),
        raw[17..49].try_into().expect("32 bytes"),
        raw[49..81].try_into().expect("32 bytes"),
    ))
}

/// §10 the binding bytes of a token (everything after the token share), checked for shape:
/// root id and key, a count, then a workspace entry, an optional project entry and
/// environment entries, each `level ‖ id[16] ‖ floor u32 ‖ len ‖ name` with a non-empty
/// UTF-8 name, and nothing after them.
pub fn token_binding_bytes(s: &str) -> Outcome<Vec<u8>> {
    Ok(token_raw(s)?[81..].to_vec())
}

fn token_raw(s: &str) -> Outcome<Vec<u8>> {
    let body = s
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
        .strip_prefix("zopp_")
        .ok_or(MALFORMED)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| MALFORMED)?;
    match raw.first() {
        None => return Err(MALFORMED),
        Some(0x02) => {}
        Some(_) => return Err(UNSUPPORTED_FORMAT),
    }
    if raw.len() < 81 + 48 + 1 {
        return Err(MALFORMED);
    }
    let count = raw[81 + 48] as usize;
    let mut at = 81 + 48 + 1;
    let mut levels = Vec::with_capacity(count);
    for _ in 0..count {
        if raw.len() < at + 22 {
            return Err(MALFORMED);
        }
        let level = raw[at];
        let len = raw[at + 21] as usize;
        let name = raw.get(at + 22..at + 22 + len).ok_or(MALFORMED)?;
        if len == 0 || std::str::from_utf8(name).is_err() {
            return Err(MALFORMED);
        }
        levels.push(level);
        at += 22 + len;
    }
    let shape_ok = match levels.as_slice() {
        [1] => true,
        [1, 2, envs @ ..] => envs.len() <= 64 && envs.iter().all(|&l| l == 3),
        _ => false,
    };
    if at != raw.len() || !shape_ok {
        return Err(MALFORMED);
    }
    Ok(raw)
}

/// §10 token text of raw bytes.
pub fn token_encode(raw: &[u8]) -> String {
    format!(
        "zopp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// XOR of two 32-byte strings (§10 share recombination).
pub fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}
