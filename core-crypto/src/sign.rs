//! Domain-separated messages that principals sign (FORMAT.md §4, §6, §7).
//!
//! Each message starts with its own label, so a signature made for one purpose can never be
//! replayed as another.

use crate::envelope::NameDigest;
use crate::ids::{EnvironmentId, PrincipalId, ServerId};
use crate::keys::{AgreementPublic, SigningKey, VerifyingKey, SIGNATURE_LEN};
use crate::{sha256, Result};

/// Label of a signed gRPC request.
pub const REQUEST_LABEL: &[u8] = b"zopp/v1/request";
/// Label of a secret version signature.
pub const VERSION_LABEL: &[u8] = b"zopp/v1/version";
/// Label of a secret version hash.
pub const VERSION_HASH_LABEL: &[u8] = b"zopp/v1/version-hash";
/// Label of an admission (one principal vouching for another's keys).
pub const ADMIT_LABEL: &[u8] = b"zopp/v1/admit";
/// Label of a joining principal's proof of possession.
pub const JOIN_LABEL: &[u8] = b"zopp/v1/join";
/// Label of a public-key fingerprint.
pub const FINGERPRINT_LABEL: &[u8] = b"zopp/v1/fingerprint";
/// Protocol version bound into request signatures: 2 binds the server id (FORMAT.md §4).
pub const PROTOCOL_VERSION: u8 = 2;
/// Length of a request nonce.
pub const NONCE_LEN: usize = 16;
/// The all-zero server id: the one call a principal token makes before it knows the server's id
/// is signed for it (FORMAT.md §4).
pub const UNBOUND_SERVER: ServerId = ServerId::from_bytes([0; 16]);
/// Hash of "no previous version".
pub const ZERO_HASH: [u8; 32] = [0u8; 32];

/// The bytes a request signature covers (FORMAT.md §4): the deployment it is meant for, the
/// method, time, nonce and body hash.
pub fn request_message(
    server: &ServerId,
    method: &str,
    timestamp_ms: i64,
    nonce: &[u8; NONCE_LEN],
    body_sha256: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(REQUEST_LABEL.len() + 1 + 16 + 4 + method.len() + 8 + 16 + 32);
    m.extend_from_slice(REQUEST_LABEL);
    m.push(PROTOCOL_VERSION);
    m.extend_from_slice(server.as_bytes());
    m.extend_from_slice(&(method.len() as u32).to_be_bytes());
    m.extend_from_slice(method.as_bytes());
    m.extend_from_slice(&timestamp_ms.to_be_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(body_sha256);
    m
}

/// Signs a request: returns the signature over [`request_message`].
pub fn sign_request(
    key: &SigningKey,
    server: &ServerId,
    method: &str,
    timestamp_ms: i64,
    nonce: &[u8; NONCE_LEN],
    body: &[u8],
) -> [u8; SIGNATURE_LEN] {
    key.sign(&request_message(
        server,
        method,
        timestamp_ms,
        nonce,
        &sha256(body),
    ))
}

/// Everything a secret version signature covers (FORMAT.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionClaims<'a> {
    /// Environment of the secret.
    pub environment: EnvironmentId,
    /// Digest of the secret's name.
    pub name_digest: NameDigest,
    /// Version number.
    pub version: u64,
    /// Key epoch of the envelope.
    pub key_epoch: u32,
    /// Whether this version is a deletion (tombstone).
    pub deleted: bool,
    /// The envelope bytes (empty for a tombstone).
    pub envelope: &'a [u8],
    /// Hash of the previous version ([`ZERO_HASH`] for version 1).
    pub prev_hash: [u8; 32],
    /// The writer.
    pub writer: PrincipalId,
    /// The environment version this version's write produces: the writer signs the point in
    /// history its write takes, so `--at-version` reads can be checked.
    pub env_version: u64,
    /// When the writer made it (unix ms, the writer's clock): `--at` reads are checked
    /// against it.
    pub created_at_ms: i64,
}

impl VersionClaims<'_> {
    /// The signed message.
    pub fn message(&self) -> Vec<u8> {
        let mut m =
            Vec::with_capacity(VERSION_LABEL.len() + 16 + 32 + 8 + 4 + 1 + 32 + 32 + 16 + 8 + 8);
        m.extend_from_slice(VERSION_LABEL);
        m.extend_from_slice(self.environment.as_bytes());
        m.extend_from_slice(self.name_digest.as_bytes());
        m.extend_from_slice(&self.version.to_be_bytes());
        m.extend_from_slice(&self.key_epoch.to_be_bytes());
        m.push(u8::from(self.deleted));
        m.extend_from_slice(&sha256(self.envelope));
        m.extend_from_slice(&self.prev_hash);
        m.extend_from_slice(self.writer.as_bytes());
        m.extend_from_slice(&self.env_version.to_be_bytes());
        m.extend_from_slice(&self.created_at_ms.to_be_bytes());
        m
    }
    /// Signs the claims as their writer.
    pub fn sign(&self, key: &SigningKey) -> [u8; SIGNATURE_LEN] {
        key.sign(&self.message())
    }
    /// Verifies a signature by the writer's key.
    pub fn verify(&self, key: &VerifyingKey, sig: &[u8]) -> Result<()> {
        key.verify(&self.message(), sig)
    }
    /// The version's hash, which the next version's `prev_hash` must equal.
    pub fn hash(&self, sig: &[u8]) -> [u8; 32] {
        let mut m = Vec::with_capacity(VERSION_HASH_LABEL.len() + 200);
        m.extend_from_slice(VERSION_HASH_LABEL);
        m.extend_from_slice(&self.message());
        m.extend_from_slice(sig);
        sha256(&m)
    }
}

/// The bytes of an admission: `admitter` vouches that `principal` owns these keys (FORMAT.md §6).
pub fn admission_message(
    principal: &PrincipalId,
    signing_key: &VerifyingKey,
    agreement_key: &AgreementPublic,
    admitter: Option<&PrincipalId>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(ADMIT_LABEL.len() + 16 + 64 + 17);
    m.extend_from_slice(ADMIT_LABEL);
    m.extend_from_slice(principal.as_bytes());
    m.extend_from_slice(&signing_key.to_bytes());
    m.extend_from_slice(&agreement_key.to_bytes());
    match admitter {
        Some(a) => {
            m.push(1);
            m.extend_from_slice(a.as_bytes());
        }
        None => m.push(0),
    }
    m
}

/// The bytes a joining principal signs with its new signing key: proves possession of that key
/// and binds its agreement key, email and the invite it redeems (FORMAT.md §6).
pub fn join_message(
    signing_key: &VerifyingKey,
    agreement_key: &AgreementPublic,
    email: &str,
    token_hash: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(JOIN_LABEL.len() + 64 + 4 + email.len() + 32);
    m.extend_from_slice(JOIN_LABEL);
    m.extend_from_slice(&signing_key.to_bytes());
    m.extend_from_slice(&agreement_key.to_bytes());
    m.extend_from_slice(&(email.len() as u32).to_be_bytes());
    m.extend_from_slice(email.as_bytes());
    m.extend_from_slice(token_hash);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CryptoError;
    use rstest::rstest;

    /// A fixed signing seed.
    const SEED: [u8; 32] = [0x5e; 32];
    /// Another principal's signing seed.
    const OTHER_SEED: [u8; 32] = [0x5f; 32];
    /// A fixed request nonce.
    const NONCE: [u8; NONCE_LEN] = [0x0c; NONCE_LEN];
    /// A fixed request time (unix ms).
    const TS: i64 = 1_700_000_000_123;
    /// A fixed method.
    const METHOD: &str = "/zopp.v1.Zopp/GetSecret";
    /// A fixed server id.
    const SERVER: ServerId = ServerId::from_bytes([0x5d; 16]);
    /// Another deployment.
    const OTHER_SERVER: ServerId = ServerId::from_bytes([0x5c; 16]);
    /// A fixed environment id.
    const ENV: [u8; 16] = [0xe0; 16];
    /// A fixed writer id.
    const WRITER: [u8; 16] = [0xa1; 16];

    fn key() -> SigningKey {
        SigningKey::from_seed(&SEED)
    }

    #[test]
    fn request_message_layout_is_pinned() {
        let m = request_message(&SERVER, METHOD, TS, &NONCE, &[0xbb; 32]);
        let mut want = b"zopp/v1/request".to_vec();
        want.push(2);
        want.extend_from_slice(&[0x5d; 16]);
        want.extend_from_slice(&(METHOD.len() as u32).to_be_bytes());
        want.extend_from_slice(METHOD.as_bytes());
        want.extend_from_slice(&TS.to_be_bytes());
        want.extend_from_slice(&NONCE);
        want.extend_from_slice(&[0xbb; 32]);
        assert_eq!(m, want);
        // Negative times encode as two's complement, not as an error.
        let m = request_message(&SERVER, "", -1, &NONCE, &[0; 32]);
        assert_eq!(&m[36..44], &[0xff; 8]);
    }

    #[rstest]
    #[case::server(OTHER_SERVER, METHOD, TS, NONCE, b"body".as_slice())]
    #[case::method(SERVER, "/zopp.v1.Zopp/SetSecret", TS, NONCE, b"body".as_slice())]
    #[case::timestamp(SERVER, METHOD, TS + 1, NONCE, b"body".as_slice())]
    #[case::nonce(SERVER, METHOD, TS, [0x0d; NONCE_LEN], b"body".as_slice())]
    #[case::body(SERVER, METHOD, TS, NONCE, b"bodz".as_slice())]
    #[case::empty_body(SERVER, METHOD, TS, NONCE, b"".as_slice())]
    fn altered_request_fails(
        #[case] server: ServerId,
        #[case] method: &str,
        #[case] ts: i64,
        #[case] nonce: [u8; NONCE_LEN],
        #[case] body: &[u8],
    ) {
        let sig = sign_request(&key(), &SERVER, METHOD, TS, &NONCE, b"body");
        let vk = key().verifying_key();
        vk.verify(
            &request_message(&SERVER, METHOD, TS, &NONCE, &sha256(b"body")),
            &sig,
        )
        .expect("original verifies");
        assert_eq!(
            vk.verify(
                &request_message(&server, method, ts, &nonce, &sha256(body)),
                &sig
            ),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn request_signed_by_another_key_fails() {
        let sig = sign_request(
            &SigningKey::from_seed(&OTHER_SEED),
            &SERVER,
            METHOD,
            TS,
            &NONCE,
            b"",
        );
        assert_eq!(
            key().verifying_key().verify(
                &request_message(&SERVER, METHOD, TS, &NONCE, &sha256(b"")),
                &sig
            ),
            Err(CryptoError::BadSignature)
        );
    }

    fn claims(envelope: &[u8]) -> VersionClaims<'_> {
        VersionClaims {
            environment: EnvironmentId::from_bytes(ENV),
            name_digest: NameDigest::try_from_slice(&[0xd1; 32]).expect("32 bytes"),
            version: 2,
            key_epoch: 1,
            deleted: false,
            envelope,
            prev_hash: [0x77; 32],
            writer: PrincipalId::from_bytes(WRITER),
            env_version: 9,
            created_at_ms: 1_790_000_000_000,
        }
    }

    #[test]
    fn version_message_layout_is_pinned() {
        let c = claims(b"sealed");
        let m = c.message();
        let mut want = b"zopp/v1/version".to_vec();
        want.extend_from_slice(&ENV);
        want.extend_from_slice(&[0xd1; 32]);
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&1u32.to_be_bytes());
        want.push(0);
        want.extend_from_slice(&sha256(b"sealed"));
        want.extend_from_slice(&[0x77; 32]);
        want.extend_from_slice(&WRITER);
        want.extend_from_slice(&9u64.to_be_bytes());
        want.extend_from_slice(&1_790_000_000_000i64.to_be_bytes());
        assert_eq!(m, want);
        let sig = c.sign(&key());
        let mut h = b"zopp/v1/version-hash".to_vec();
        h.extend_from_slice(&want);
        h.extend_from_slice(&sig);
        assert_eq!(c.hash(&sig), sha256(&h));
    }

    fn environment(c: &mut VersionClaims<'_>) {
        c.environment = EnvironmentId::from_bytes([0xe1; 16]);
    }
    fn digest(c: &mut VersionClaims<'_>) {
        c.name_digest = NameDigest::try_from_slice(&[0xd2; 32]).expect("32 bytes");
    }
    fn version(c: &mut VersionClaims<'_>) {
        c.version = 3;
    }
    fn epoch(c: &mut VersionClaims<'_>) {
        c.key_epoch = 2;
    }
    fn deleted(c: &mut VersionClaims<'_>) {
        c.deleted = true;
    }
    fn envelope(c: &mut VersionClaims<'_>) {
        c.envelope = b"sealee";
    }
    fn prev_hash(c: &mut VersionClaims<'_>) {
        c.prev_hash = ZERO_HASH;
    }
    fn writer(c: &mut VersionClaims<'_>) {
        c.writer = PrincipalId::from_bytes([0xa2; 16]);
    }
    fn env_version(c: &mut VersionClaims<'_>) {
        c.env_version = 8;
    }
    fn created_at(c: &mut VersionClaims<'_>) {
        c.created_at_ms -= 1;
    }

    #[rstest]
    #[case::environment(environment)]
    #[case::name_digest(digest)]
    #[case::version(version)]
    #[case::key_epoch(epoch)]
    #[case::deleted(deleted)]
    #[case::envelope(envelope)]
    #[case::prev_hash(prev_hash)]
    #[case::writer(writer)]
    #[case::env_version(env_version)]
    #[case::created_at(created_at)]
    fn altered_version_claims_fail(#[case] change: fn(&mut VersionClaims<'_>)) {
        let c = claims(b"sealed");
        let sig = c.sign(&key());
        c.verify(&key().verifying_key(), &sig)
            .expect("original verifies");
        let mut altered = c;
        change(&mut altered);
        assert_eq!(
            altered.verify(&key().verifying_key(), &sig),
            Err(CryptoError::BadSignature)
        );
        assert_ne!(altered.hash(&sig), c.hash(&sig));
    }

    #[test]
    fn version_hash_covers_the_signature() {
        let c = claims(b"sealed");
        let a = c.sign(&key());
        let b = c.sign(&SigningKey::from_seed(&OTHER_SEED));
        assert_ne!(c.hash(&a), c.hash(&b));
    }

    #[test]
    fn admission_and_join_layouts_are_pinned() {
        let vk = key().verifying_key();
        let ak = crate::keys::AgreementSecret::from_bytes([3; 32]).public_key();
        let p = PrincipalId::from_bytes([0x01; 16]);
        let a = PrincipalId::from_bytes([0x02; 16]);
        let root = admission_message(&p, &vk, &ak, None);
        let admitted = admission_message(&p, &vk, &ak, Some(&a));
        assert_eq!(root.len(), ADMIT_LABEL.len() + 16 + 32 + 32 + 1);
        assert_eq!(admitted.len(), root.len() + 16);
        assert_eq!(root.last(), Some(&0));
        assert_eq!(admitted[root.len() - 1], 1);
        assert_eq!(&admitted[root.len()..], &[0x02; 16]);
        let j = join_message(&vk, &ak, "a@b.c", &[0x44; 32]);
        let mut want = JOIN_LABEL.to_vec();
        want.extend_from_slice(&vk.to_bytes());
        want.extend_from_slice(&ak.to_bytes());
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"a@b.c");
        want.extend_from_slice(&[0x44; 32]);
        assert_eq!(j, want);
    }

    #[test]
    fn signed_labels_are_prefix_free() {
        // A signature is only ever checked against one message type; distinct labels, none a
        // prefix of another, keep a message of one type from parsing as another.
        let labels = [REQUEST_LABEL, VERSION_LABEL, ADMIT_LABEL, JOIN_LABEL];
        for (i, a) in labels.iter().enumerate() {
            for (j, b) in labels.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a:?} prefixes {b:?}");
                }
            }
        }
    }
}
