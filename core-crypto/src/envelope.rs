//! Secret envelopes (FORMAT.md §5) and name digests (FORMAT.md §5.1).
//!
//! A secret version is stored as `name_digest` plus a sealed payload `{kind, name, value,
//! metadata}`. The AAD binds environment id, name digest, version and key epoch, so moving,
//! replaying or renumbering ciphertext makes it fail to open.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ids::EnvironmentId;
use crate::keys::ScopeKey;
use crate::wrap::{ALG_XCHACHA_HKDF, FORMAT_V1};
use crate::{CryptoError, Result};

/// HKDF info deriving the name-digest key from the environment key of epoch 1.
pub const NAME_LABEL: &[u8] = b"zopp/v1/name";
/// HKDF info deriving the sealing key from an environment key.
pub const SEAL_LABEL: &[u8] = b"zopp/v1/seal";
/// AAD prefix of a secret envelope.
pub const SECRET_AAD: &[u8] = b"zopp/v1/secret";
/// Version byte of the plaintext payload encoding.
pub const PAYLOAD_V1: u8 = 0x01;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its payload: version, alg, nonce, tag.
pub const ENVELOPE_OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;

/// Key for name digests; derived once per environment from its epoch-1 key so that digests stay
/// stable across key rotations (THREAT-MODEL.md discusses what that implies).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NameKey([u8; 32]);

impl NameKey {
    /// Derives the name key from the environment key of epoch 1.
    pub fn derive(first_epoch_key: &ScopeKey) -> Self {
        let mut k = [0u8; 32];
        Hkdf::<Sha256>::new(None, first_epoch_key.expose_secret())
            .expand(NAME_LABEL, &mut k)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(k)
    }
    /// HMAC-SHA256 digest of a secret name.
    pub fn digest(&self, name: &str) -> NameDigest {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(name.as_bytes());
        NameDigest(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameKey(..)")
    }
}

/// HMAC digest of a secret name: the only form in which a name reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameDigest([u8; 32]);

impl NameDigest {
    /// Parses 32 bytes.
    pub fn try_from_slice(b: &[u8]) -> Result<Self> {
        Ok(Self(
            b.try_into()
                .map_err(|_| CryptoError::Malformed("name digest"))?,
        ))
    }
    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for NameDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameDigest({})", hex::encode(&self.0[..8]))
    }
}

/// What a sealed secret holds (FORMAT.md §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SecretKind {
    /// A plain secret value (environment variable).
    Secret = 1,
    /// A kubeconfig document.
    Kubeconfig = 2,
    /// An app spec (manifest template, kubeconfig reference, apply command).
    App = 3,
}

impl SecretKind {
    fn try_from_u8(b: u8) -> Result<Self> {
        match b {
            1 => Ok(Self::Secret),
            2 => Ok(Self::Kubeconfig),
            3 => Ok(Self::App),
            _ => Err(CryptoError::Malformed("secret kind")),
        }
    }
}

/// The plaintext of one secret version. A secret itself: zeroized, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretPayload {
    #[zeroize(skip)]
    kind: SecretKind,
    name: String,
    value: Vec<u8>,
    metadata: Vec<u8>,
}

impl SecretPayload {
    /// Builds a payload. `metadata` is opaque (the CLI stores JSON there).
    pub fn new(kind: SecretKind, name: String, value: Vec<u8>, metadata: Vec<u8>) -> Self {
        Self {
            kind,
            name,
            value,
            metadata,
        }
    }
    /// Kind of secret.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }
    /// The secret's name (plaintext: never send it to the server).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The secret value.
    pub fn expose_secret(&self) -> &[u8] {
        &self.value
    }
    /// Opaque metadata.
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            2 + 12 + self.name.len() + self.value.len() + self.metadata.len(),
        ));
        out.push(PAYLOAD_V1);
        out.push(self.kind as u8);
        for part in [self.name.as_bytes(), &self.value, &self.metadata] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    fn decode(b: &[u8]) -> Result<Self> {
        let bad = CryptoError::Malformed("secret payload");
        if b.len() < 2 || b[0] != PAYLOAD_V1 {
            return Err(bad);
        }
        let kind = SecretKind::try_from_u8(b[1])?;
        let mut rest = &b[2..];
        // Decoded parts are plaintext: if a later part fails to decode, the earlier ones must
        // still be wiped, so they live in `Zeroizing` until moved into the payload.
        let mut parts: [Zeroizing<Vec<u8>>; 3] = Default::default();
        for part in parts.iter_mut() {
            if rest.len() < 4 {
                return Err(bad);
            }
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            rest = &rest[4..];
            if rest.len() < len {
                return Err(bad);
            }
            // Exact-size allocation: growing a vector would leave unwiped copies behind.
            *part = Zeroizing::new(rest[..len].to_vec());
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return Err(bad);
        }
        let [mut name, mut value, mut metadata] = parts;
        // `mem::take` moves each buffer out without copying it; the emptied `Zeroizing` shells
        // have nothing left to wipe.
        let name = String::from_utf8(std::mem::take(&mut *name)).map_err(|e| {
            let mut v = e.into_bytes();
            v.zeroize();
            CryptoError::Malformed("secret name")
        })?;
        Ok(Self {
            kind,
            name,
            value: std::mem::take(&mut *value),
            metadata: std::mem::take(&mut *metadata),
        })
    }
}

impl fmt::Debug for SecretPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPayload(..)")
    }
}

/// Where a sealed payload belongs: every field is bound into the AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeContext {
    /// Environment the secret lives in.
    pub environment: EnvironmentId,
    /// Digest of the secret's name.
    pub name_digest: NameDigest,
    /// Version number of this write (1-based).
    pub version: u64,
    /// Environment key epoch used to seal.
    pub key_epoch: u32,
}

impl EnvelopeContext {
    /// The AAD bytes (FORMAT.md §5).
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(SECRET_AAD.len() + 16 + 32 + 12);
        aad.extend_from_slice(SECRET_AAD);
        aad.extend_from_slice(self.environment.as_bytes());
        aad.extend_from_slice(self.name_digest.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.extend_from_slice(&self.key_epoch.to_be_bytes());
        aad
    }
}

/// A sealed secret payload; opaque to the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope(Vec<u8>);

impl Envelope {
    /// Wraps stored bytes (validated when opened).
    pub fn from_bytes(b: Vec<u8>) -> Self {
        Self(b)
    }
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Consumes into the encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Envelope({} bytes)", self.0.len())
    }
}

/// The sealing key of one environment key epoch.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// Derives the sealing key from an environment key.
    pub fn derive(environment_key: &ScopeKey) -> Self {
        let mut k = [0u8; 32];
        Hkdf::<Sha256>::new(None, environment_key.expose_secret())
            .expand(SEAL_LABEL, &mut k)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(k)
    }

    /// Seals `payload` for `ctx` (FORMAT.md §5).
    pub fn seal(
        &self,
        ctx: &EnvelopeContext,
        payload: &SecretPayload,
        rng: &mut impl CryptoRngCore,
    ) -> Envelope {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let pt = payload.encode();
        let ct = XChaCha20Poly1305::new((&self.0).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &pt,
                    aad: &ctx.aad(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + pt.len());
        out.push(FORMAT_V1);
        out.push(ALG_XCHACHA_HKDF);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Envelope(out)
    }

    /// Opens an envelope sealed for `ctx`.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for a wrong key, context or tampered bytes.
    pub fn open(&self, ctx: &EnvelopeContext, envelope: &Envelope) -> Result<SecretPayload> {
        let b = envelope.as_bytes();
        if b.len() < 2 {
            return Err(CryptoError::Malformed("envelope"));
        }
        if b[0] != FORMAT_V1 || b[1] != ALG_XCHACHA_HKDF {
            return Err(CryptoError::UnsupportedFormat);
        }
        if b.len() < ENVELOPE_OVERHEAD {
            return Err(CryptoError::Malformed("envelope"));
        }
        let pt = Zeroizing::new(
            XChaCha20Poly1305::new((&self.0).into())
                .decrypt(
                    XNonce::from_slice(&b[2..2 + NONCE_LEN]),
                    Payload {
                        msg: &b[2 + NONCE_LEN..],
                        aad: &ctx.aad(),
                    },
                )
                .map_err(|_| CryptoError::DecryptionFailed)?,
        );
        SecretPayload::decode(&pt)
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use rstest::rstest;

    /// A fixed epoch-1 environment key.
    const EK1: [u8; 32] = [0x42; 32];
    /// A fixed later-epoch environment key.
    const EK2: [u8; 32] = [0x43; 32];
    /// A fixed environment id.
    const ENV: [u8; 16] = [0xe0; 16];
    /// Another environment id.
    const OTHER_ENV: [u8; 16] = [0xe1; 16];

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(5)
    }

    fn ctx() -> EnvelopeContext {
        let digest = NameKey::derive(&ScopeKey::from_bytes(EK1)).digest("DATABASE_URL");
        EnvelopeContext {
            environment: EnvironmentId::from_bytes(ENV),
            name_digest: digest,
            version: 7,
            key_epoch: 2,
        }
    }

    fn payload() -> SecretPayload {
        SecretPayload::new(
            SecretKind::Secret,
            "DATABASE_URL".into(),
            b"postgres://u:p@db/app".to_vec(),
            b"{\"note\":\"x\"}".to_vec(),
        )
    }

    fn sealed() -> (SealKey, Envelope) {
        let key = SealKey::derive(&ScopeKey::from_bytes(EK2));
        let env = key.seal(&ctx(), &payload(), &mut rng());
        (key, env)
    }

    #[test]
    fn name_digest_depends_on_key_and_name_only() {
        let k = NameKey::derive(&ScopeKey::from_bytes(EK1));
        assert_eq!(k.digest("A"), k.digest("A"));
        assert_ne!(k.digest("A"), k.digest("B"));
        assert_ne!(k.digest("A"), k.digest("a"));
        let other = NameKey::derive(&ScopeKey::from_bytes(EK2));
        assert_ne!(k.digest("A"), other.digest("A"));
    }

    #[test]
    fn name_key_and_seal_key_are_domain_separated() {
        let ek = ScopeKey::from_bytes(EK1);
        assert_ne!(NameKey::derive(&ek).0, SealKey::derive(&ek).0);
        assert_ne!(NameKey::derive(&ek).0, EK1);
    }

    #[test]
    fn aad_layout_is_pinned() {
        let aad = ctx().aad();
        assert_eq!(aad.len(), SECRET_AAD.len() + 16 + 32 + 8 + 4);
        assert_eq!(&aad[..SECRET_AAD.len()], SECRET_AAD);
        let rest = &aad[SECRET_AAD.len()..];
        assert_eq!(&rest[..16], &ENV);
        assert_eq!(&rest[16..48], ctx().name_digest.as_bytes());
        assert_eq!(&rest[48..56], &7u64.to_be_bytes());
        assert_eq!(&rest[56..], &2u32.to_be_bytes());
    }

    #[test]
    fn payload_encoding_is_pinned() {
        let p = SecretPayload::new(SecretKind::App, "N".into(), b"vv".to_vec(), Vec::new());
        assert_eq!(
            hex::encode(p.encode().as_slice()),
            "0103000000014e00000002767600000000"
        );
    }

    #[rstest]
    #[case::secret(SecretKind::Secret, "K", b"v".to_vec(), Vec::new())]
    #[case::empty_value(SecretKind::Secret, "EMPTY", Vec::new(), Vec::new())]
    #[case::kubeconfig(SecretKind::Kubeconfig, "kube", vec![0u8; 4096], b"{}".to_vec())]
    #[case::app(SecretKind::App, "web", b"apiVersion: v1".to_vec(), b"m".to_vec())]
    #[case::binary(SecretKind::Secret, "BIN", (0..=255).collect(), vec![0xff; 3])]
    fn seal_open_round_trip(
        #[case] kind: SecretKind,
        #[case] name: &str,
        #[case] value: Vec<u8>,
        #[case] metadata: Vec<u8>,
    ) {
        let key = SealKey::derive(&ScopeKey::from_bytes(EK2));
        let p = SecretPayload::new(kind, name.into(), value.clone(), metadata.clone());
        let env = key.seal(&ctx(), &p, &mut rng());
        assert_eq!(
            env.as_bytes().len(),
            ENVELOPE_OVERHEAD + 2 + 12 + name.len() + value.len() + metadata.len()
        );
        assert_eq!(env.as_bytes()[0], FORMAT_V1);
        assert_eq!(env.as_bytes()[1], ALG_XCHACHA_HKDF);
        let out = key.open(&ctx(), &env).expect("opens");
        assert_eq!(out.kind(), kind);
        assert_eq!(out.name(), name);
        assert_eq!(out.expose_secret(), value.as_slice());
        assert_eq!(out.metadata(), metadata.as_slice());
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let key = SealKey::derive(&ScopeKey::from_bytes(EK2));
        let mut r = rng();
        let a = key.seal(&ctx(), &payload(), &mut r);
        let b = key.seal(&ctx(), &payload(), &mut r);
        assert_ne!(a, b);
    }

    fn with_environment(mut c: EnvelopeContext) -> EnvelopeContext {
        c.environment = EnvironmentId::from_bytes(OTHER_ENV);
        c
    }
    fn with_digest(mut c: EnvelopeContext) -> EnvelopeContext {
        c.name_digest = NameKey::derive(&ScopeKey::from_bytes(EK1)).digest("OTHER");
        c
    }
    fn with_version(mut c: EnvelopeContext) -> EnvelopeContext {
        c.version += 1;
        c
    }
    fn with_epoch(mut c: EnvelopeContext) -> EnvelopeContext {
        c.key_epoch -= 1;
        c
    }

    #[rstest]
    #[case::environment(with_environment)]
    #[case::name_digest(with_digest)]
    #[case::version(with_version)]
    #[case::key_epoch(with_epoch)]
    fn open_refuses_any_other_context(#[case] change: fn(EnvelopeContext) -> EnvelopeContext) {
        let (key, env) = sealed();
        assert_eq!(
            key.open(&change(ctx()), &env).err(),
            Some(CryptoError::DecryptionFailed)
        );
    }

    #[test]
    fn open_refuses_other_epoch_key() {
        let (_, env) = sealed();
        let wrong = SealKey::derive(&ScopeKey::from_bytes(EK1));
        assert_eq!(
            wrong.open(&ctx(), &env).err(),
            Some(CryptoError::DecryptionFailed)
        );
    }

    #[test]
    fn open_refuses_every_single_bit_flip() {
        let (key, env) = sealed();
        for i in 0..env.as_bytes().len() * 8 {
            let mut b = env.as_bytes().to_vec();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                key.open(&ctx(), &Envelope::from_bytes(b)).is_err(),
                "bit {i}"
            );
        }
    }

    #[rstest]
    #[case::version_zero(0x00, ALG_XCHACHA_HKDF)]
    #[case::version_two(0x02, ALG_XCHACHA_HKDF)]
    #[case::version_ff(0xff, ALG_XCHACHA_HKDF)]
    #[case::alg_zero(FORMAT_V1, 0x00)]
    #[case::alg_x25519(FORMAT_V1, crate::wrap::ALG_X25519_XCHACHA)]
    #[case::alg_argon2(FORMAT_V1, crate::keyfile::ALG_ARGON2ID_XCHACHA)]
    fn open_refuses_unknown_header(#[case] version: u8, #[case] alg: u8) {
        let (key, env) = sealed();
        let mut b = env.into_bytes();
        b[0] = version;
        b[1] = alg;
        assert_eq!(
            key.open(&ctx(), &Envelope::from_bytes(b)).err(),
            Some(CryptoError::UnsupportedFormat)
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (key, env) = sealed();
        let b = env.as_bytes();
        for n in 0..b.len() {
            let r = key.open(&ctx(), &Envelope::from_bytes(b[..n].to_vec()));
            let want = if n < ENVELOPE_OVERHEAD {
                CryptoError::Malformed("envelope")
            } else {
                CryptoError::DecryptionFailed
            };
            assert_eq!(r.err(), Some(want), "prefix {n}");
        }
    }

    #[test]
    fn appended_bytes_fail() {
        let (key, env) = sealed();
        let mut b = env.into_bytes();
        b.push(0);
        assert_eq!(
            key.open(&ctx(), &Envelope::from_bytes(b)).err(),
            Some(CryptoError::DecryptionFailed)
        );
    }

    #[rstest]
    #[case::empty(&[])]
    #[case::version_only(&[PAYLOAD_V1])]
    #[case::wrong_version(&[0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::kind_zero(&[PAYLOAD_V1, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::kind_four(&[PAYLOAD_V1, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::short_prefix(&[PAYLOAD_V1, 0x01, 0, 0, 0])]
    #[case::missing_parts(&[PAYLOAD_V1, 0x01, 0, 0, 0, 0])]
    #[case::length_past_end(&[PAYLOAD_V1, 0x01, 0, 0, 0, 5, b'a', 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::length_huge(&[PAYLOAD_V1, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::trailing_byte(&[PAYLOAD_V1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]
    #[case::name_not_utf8(&[PAYLOAD_V1, 0x01, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0])]
    fn malformed_payloads_are_refused(#[case] b: &[u8]) {
        assert!(matches!(
            SecretPayload::decode(b),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn every_prefix_of_a_payload_is_refused() {
        let enc = payload().encode();
        for n in 0..enc.len() {
            assert!(SecretPayload::decode(&enc[..n]).is_err(), "prefix {n}");
        }
        assert!(SecretPayload::decode(&enc).is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let p = payload();
        let shown = format!(
            "{p:?} {:?} {:?}",
            SealKey::derive(&ScopeKey::from_bytes(EK1)),
            NameKey::derive(&ScopeKey::from_bytes(EK1))
        );
        assert!(!shown.contains("postgres"), "{shown}");
        assert!(!shown.contains("DATABASE_URL"), "{shown}");
        assert!(!shown.contains(&hex::encode(&EK1[..4])), "{shown}");
        assert_eq!(format!("{:?}", sealed().1), "Envelope(101 bytes)");
    }

    #[test]
    fn name_digest_parses_only_32_bytes() {
        for n in [0, 31, 33] {
            assert_eq!(
                NameDigest::try_from_slice(&vec![0; n]).err(),
                Some(CryptoError::Malformed("name digest"))
            );
        }
        let d = NameDigest::try_from_slice(&[7; 32]).expect("32 bytes");
        assert_eq!(d.to_hex(), "07".repeat(32));
    }
}
