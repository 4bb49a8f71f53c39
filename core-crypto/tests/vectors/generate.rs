//! Deterministic generation of every vector in threat-model/vectors/.
//!
//! Each vector draws its keys, ids and nonces from its own ChaCha20 RNG seeded with
//! `SHA-256("zopp/v1/test-vector/" ‖ name)`, so adding or removing one vector never changes
//! another. Outputs come from zopp-crypto; the generator also asserts that zopp-crypto reaches
//! the outcome each case was written to show, so a regression cannot slip into a vector.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::envelope::{
    Envelope, EnvelopeContext, NameDigest, NameKey, SealKey, SecretKind, SecretPayload,
};
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keyfile::{self, KdfParams};
use zopp_crypto::keys::{AgreementSecret, PrincipalKeys, ScopeKey, ScopeKind, SigningKey};
use zopp_crypto::sign::{self, VersionClaims};
use zopp_crypto::token::{self, PrincipalToken};
use zopp_crypto::wrap::{self, KeyContext, WrappedKey};
use zopp_crypto::CryptoError;

use super::json::{h, n, s, J};
use super::reference as r;

/// One test vector: a JSON file in threat-model/vectors/.
pub struct Vector {
    pub name: String,
    pub section: &'static str,
    pub operation: &'static str,
    pub description: String,
    pub inputs: Vec<(&'static str, J)>,
    pub output: Option<Vec<(&'static str, J)>>,
    pub expected: &'static str,
}

impl Vector {
    /// The file's JSON, fields in a fixed order.
    pub fn to_json(&self) -> J {
        J::Obj(vec![
            ("name", s(&self.name)),
            ("section", s(self.section)),
            ("operation", s(self.operation)),
            ("description", s(&self.description)),
            ("inputs", J::Obj(self.inputs.clone())),
            ("output", self.output.clone().map_or(J::Null, J::Obj)),
            ("expected", s(self.expected)),
        ])
    }
}

/// The outcome code of a zopp-crypto result (FORMAT.md §11).
pub fn code<T>(res: &Result<T, CryptoError>) -> &'static str {
    match res {
        Ok(_) => r::OK,
        Err(CryptoError::DecryptionFailed) => r::DECRYPTION_FAILED,
        Err(CryptoError::UnsupportedFormat) => r::UNSUPPORTED_FORMAT,
        Err(CryptoError::Malformed(_)) => r::MALFORMED,
        Err(CryptoError::BadSignature) => r::BAD_SIGNATURE,
        Err(CryptoError::InvalidPublicKey) => r::INVALID_PUBLIC_KEY,
        Err(CryptoError::KdfParams) => r::KDF_PARAMS,
        Err(_) => "unknown_error",
    }
}

/// The RNG of the vector called `name`.
pub fn rng_for(name: &str) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(r::sha256(format!("zopp/v1/test-vector/{name}").as_bytes()))
}

fn draw<const N: usize>(rng: &mut impl RngCore) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

/// Smallest Argon2id parameters: vectors stay cheap to check.
pub const TINY: KdfParams = KdfParams {
    m_cost_kib: 8,
    t_cost: 1,
    p_cost: 1,
};

/// Order of the Ed25519 prime subgroup, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// X25519 u-coordinates that X25519 with any clamped scalar maps to zero: the small-order
/// points, their non-canonical encodings (u ≥ p) and the same with bit 255 set (ignored by X25519).
pub const LOW_ORDER_POINTS: [(&str, &str); 12] = [
    (
        "zero",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "one",
        "0100000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "order8-a",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    ),
    (
        "order8-b",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    ),
    (
        "p-minus-1",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    (
        "p",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    (
        "p-plus-1",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    (
        "zero-high-bit",
        "0000000000000000000000000000000000000000000000000000000000000080",
    ),
    (
        "one-high-bit",
        "0100000000000000000000000000000000000000000000000000000000000080",
    ),
    (
        "order8-a-high-bit",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    ),
    (
        "order8-b-high-bit",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
    ),
    (
        "p-minus-1-high-bit",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ),
];

fn flip(b: &[u8], byte: usize, mask: u8) -> Vec<u8> {
    let mut out = b.to_vec();
    out[byte] ^= mask;
    out
}

/// Every vector, in a fixed order.
pub fn all() -> Vec<Vector> {
    let mut v = Vec::new();
    name_digests(&mut v);
    envelopes(&mut v);
    recipient_wraps(&mut v);
    child_wraps(&mut v);
    requests(&mut v);
    admissions(&mut v);
    versions(&mut v);
    audits(&mut v);
    key_files(&mut v);
    tokens(&mut v);
    super::statements::generate(&mut v);
    super::adversarial::all(&mut v);
    v
}

// ---------------------------------------------------------------- §5.1 name digest

fn name_digests(v: &mut Vec<Vector>) {
    for (name, secret_name, what) in [
        ("name-digest-ok", "DATABASE_URL", "an ASCII secret name"),
        (
            "name-digest-utf8-ok",
            "MOT_DE_PASSE_ÉTÉ_🔑",
            "a non-ASCII name: the digest covers its UTF-8 bytes as they are (no normalization)",
        ),
    ] {
        let mut rng = rng_for(name);
        let ek1: [u8; 32] = draw(&mut rng);
        let key = NameKey::derive(&ScopeKey::from_bytes(ek1));
        let digest = key.digest(secret_name);
        let name_key = r::name_key(&ek1);
        v.push(Vector {
            name: name.into(),
            section: "5.1",
            operation: "name.digest",
            description: format!("Name digest of {what} under the epoch-1 environment key."),
            inputs: vec![("first_epoch_key", h(ek1)), ("name", s(secret_name))],
            output: Some(vec![
                ("name_key", h(name_key)),
                ("name_digest", h(digest.as_bytes())),
            ]),
            expected: r::OK,
        });
    }
}

// ---------------------------------------------------------------- §5 envelope

/// Named JSON fields, in file order.
type Fields = Vec<(&'static str, J)>;

struct OpenIn {
    ek: [u8; 32],
    env: [u8; 16],
    digest: [u8; 32],
    version: u64,
    epoch: u32,
    envelope: Vec<u8>,
}

impl OpenIn {
    fn ctx(&self) -> EnvelopeContext {
        EnvelopeContext {
            environment: EnvironmentId::from_bytes(self.env),
            name_digest: NameDigest::try_from_slice(&self.digest).expect("32 bytes"),
            version: self.version,
            key_epoch: self.epoch,
        }
    }

    fn inputs(&self) -> Vec<(&'static str, J)> {
        vec![
            ("environment_key", h(self.ek)),
            ("environment_id", h(self.env)),
            ("name_digest", h(self.digest)),
            ("version", n(self.version)),
            ("key_epoch", n(self.epoch)),
            ("envelope", h(&self.envelope)),
        ]
    }
}

/// Seals a payload with fresh keys and ids from `rng`, returning the `envelope.seal` vector
/// parts and the open inputs that reproduce it.
#[allow(clippy::too_many_arguments)]
fn seal_case(
    rng: &mut ChaCha20Rng,
    kind: SecretKind,
    name: &str,
    value: &[u8],
    metadata: &[u8],
    version: u64,
    epoch: u32,
) -> (Fields, Fields, OpenIn) {
    let ek: [u8; 32] = draw(rng);
    let env: [u8; 16] = draw(rng);
    let ek1: [u8; 32] = draw(rng);
    let digest = *NameKey::derive(&ScopeKey::from_bytes(ek1))
        .digest(name)
        .as_bytes();
    let nonce: [u8; 24] = draw(&mut rng.clone());
    let mut open = OpenIn {
        ek,
        env,
        digest,
        version,
        epoch,
        envelope: Vec::new(),
    };
    let payload = SecretPayload::new(kind, name.into(), value.to_vec(), metadata.to_vec());
    open.envelope = SealKey::derive(&ScopeKey::from_bytes(ek))
        .seal(&open.ctx(), &payload, rng)
        .into_bytes();
    let inputs = vec![
        ("environment_key", h(ek)),
        ("environment_id", h(env)),
        ("name_digest", h(digest)),
        ("version", n(version)),
        ("key_epoch", n(epoch)),
        ("nonce", h(nonce)),
        ("kind", n(kind as u8)),
        ("name", s(name)),
        ("value", h(value)),
        ("metadata", h(metadata)),
    ];
    let output = vec![
        ("seal_key", h(r::seal_key(&ek))),
        ("aad", h(open.ctx().aad())),
        (
            "payload",
            h(r::encode_payload(
                kind as u8,
                name.as_bytes(),
                value,
                metadata,
            )),
        ),
        ("envelope", h(&open.envelope)),
    ];
    (inputs, output, open)
}

fn open_vector(name: &str, description: &str, o: OpenIn, expected: &'static str) -> Vector {
    let res = SealKey::derive(&ScopeKey::from_bytes(o.ek))
        .open(&o.ctx(), &Envelope::from_bytes(o.envelope.clone()));
    assert_eq!(code(&res), expected, "{name}");
    Vector {
        name: name.into(),
        section: "5",
        operation: "envelope.open",
        description: description.into(),
        inputs: o.inputs(),
        output: res.ok().map(|p| {
            vec![
                ("kind", n(p.kind() as u8)),
                ("name", s(p.name())),
                ("value", h(p.expose_secret())),
                ("metadata", h(p.metadata())),
            ]
        }),
        expected,
    }
}

/// A standard secret sealed for the negative envelope cases.
fn base_open(rng: &mut ChaCha20Rng) -> OpenIn {
    seal_case(
        rng,
        SecretKind::Secret,
        "STRIPE_API_KEY",
        b"sk_live_51H8zQ2eZvKYlo2C0aBcDeFgHiJkLmNoP",
        b"{\"comment\":\"rotated quarterly\"}",
        4,
        2,
    )
    .2
}

fn envelopes(v: &mut Vec<Vector>) {
    for (name, kind, secret_name, value, metadata, version, epoch, what) in [
        (
            "envelope-seal-ok",
            SecretKind::Secret,
            "DATABASE_URL",
            b"postgres://app:s3cret@db.internal:5432/app".as_slice(),
            b"{\"comment\":\"primary\"}".as_slice(),
            3u64,
            2u32,
            "a secret value with metadata, version 3 sealed under key epoch 2",
        ),
        (
            "envelope-seal-kubeconfig-ok",
            SecretKind::Kubeconfig,
            "prod-cluster",
            b"apiVersion: v1\nkind: Config\nclusters: []\n".as_slice(),
            b"".as_slice(),
            1,
            1,
            "a kubeconfig resource (kind 2) with empty metadata",
        ),
        (
            "envelope-seal-empty-value-ok",
            SecretKind::Secret,
            "FEATURE_FLAG",
            b"".as_slice(),
            b"".as_slice(),
            1,
            1,
            "an empty value: the envelope still authenticates the name and kind",
        ),
    ] {
        let mut rng = rng_for(name);
        let (inputs, output, o) =
            seal_case(&mut rng, kind, secret_name, value, metadata, version, epoch);
        assert!(SealKey::derive(&ScopeKey::from_bytes(o.ek))
            .open(&o.ctx(), &Envelope::from_bytes(o.envelope.clone()))
            .is_ok());
        v.push(Vector {
            name: name.into(),
            section: "5",
            operation: "envelope.seal",
            description: format!(
                "Seal {what}; opening `envelope` with the same inputs gives the payload back."
            ),
            inputs,
            output: Some(output),
            expected: r::OK,
        });
    }

    type Change = fn(&mut OpenIn, &mut ChaCha20Rng);
    let cases: [(&str, &str, Change, &'static str); 15] = [
        (
            "envelope-open-bad-tag",
            "The last bit of the Poly1305 tag is flipped.",
            |o, _| o.envelope = flip(&o.envelope, o.envelope.len() - 1, 0x80),
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-altered-ciphertext",
            "The first ciphertext byte is flipped.",
            |o, _| o.envelope = flip(&o.envelope, 26, 0x01),
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-altered-nonce",
            "A nonce byte is flipped.",
            |o, _| o.envelope = flip(&o.envelope, 10, 0x04),
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-wrong-environment",
            "Opened for another environment id: the envelope was moved between environments.",
            |o, rng| o.env = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-wrong-name-digest",
            "Opened under another name digest: the envelope was moved to another secret.",
            |o, rng| o.digest = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-wrong-version",
            "Opened as version 5 although sealed as version 4: an old version replayed as new.",
            |o, _| o.version = 5,
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-wrong-key-epoch",
            "Opened claiming key epoch 1 although sealed under epoch 2.",
            |o, _| o.epoch = 1,
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-wrong-key",
            "Opened with another environment key (another epoch's key, or a sibling's).",
            |o, rng| o.ek = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "envelope-open-unknown-version",
            "Format version byte 0x02 is not defined.",
            |o, _| o.envelope[0] = 0x02,
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "envelope-open-version-zero",
            "Format version byte 0x00 is not defined.",
            |o, _| o.envelope[0] = 0x00,
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "envelope-open-unknown-algorithm",
            "Algorithm 0x02 (the X25519 wrap algorithm) is not valid for an envelope.",
            |o, _| o.envelope[1] = 0x02,
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "envelope-open-algorithm-ff",
            "Algorithm 0xff is not defined.",
            |o, _| o.envelope[1] = 0xff,
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "envelope-open-truncated",
            "41 bytes: one short of version, algorithm, nonce and tag.",
            |o, _| o.envelope.truncate(41),
            r::MALFORMED,
        ),
        (
            "envelope-open-truncated-header",
            "A single byte: not even a header.",
            |o, _| o.envelope.truncate(1),
            r::MALFORMED,
        ),
        (
            "envelope-open-appended-byte",
            "A zero byte appended after the tag.",
            |o, _| o.envelope.push(0),
            r::DECRYPTION_FAILED,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let mut o = base_open(&mut rng);
        change(&mut o, &mut rng);
        v.push(open_vector(name, description, o, expected));
    }
    let mut rng = rng_for("envelope-open-empty");
    let mut o = base_open(&mut rng);
    o.envelope.clear();
    v.push(open_vector(
        "envelope-open-empty",
        "An empty envelope.",
        o,
        r::MALFORMED,
    ));

    // Authentic envelopes whose plaintext breaks §5.2: only a holder of the key can make these,
    // and the decoder must still refuse them cleanly.
    for (name, description, payload) in [
        (
            "envelope-open-payload-trailing-bytes",
            "Authentic ciphertext of a payload with one byte after the metadata.",
            [r::encode_payload(1, b"K", b"v", b""), vec![0]].concat(),
        ),
        (
            "envelope-open-payload-unknown-kind",
            "Authentic ciphertext of a payload with kind 4.",
            r::encode_payload(4, b"K", b"v", b""),
        ),
        (
            "envelope-open-payload-unknown-version",
            "Authentic ciphertext of a payload whose version byte is 0x02.",
            {
                let mut p = r::encode_payload(1, b"K", b"v", b"");
                p[0] = 0x02;
                p
            },
        ),
        (
            "envelope-open-payload-name-not-utf8",
            "Authentic ciphertext of a payload whose name is not UTF-8.",
            r::encode_payload(1, &[0xc3, 0x28], b"v", b""),
        ),
        (
            "envelope-open-payload-length-overflow",
            "Authentic ciphertext of a payload whose value length runs past the end.",
            {
                let mut p = r::encode_payload(1, b"K", b"v", b"");
                p[10] = 0xff;
                p
            },
        ),
    ] {
        let mut rng = rng_for(name);
        let mut o = base_open(&mut rng);
        let nonce: [u8; 24] = draw(&mut rng);
        o.envelope = r::seal_envelope(&r::seal_key(&o.ek), &nonce, &o.ctx().aad(), &payload);
        let mut vector = open_vector(name, description, o, r::MALFORMED);
        vector.section = "5.2";
        v.push(vector);
    }
}

// ---------------------------------------------------------------- §3.2 recipient wrap

struct RecipientCase {
    key: [u8; 32],
    kind: ScopeKind,
    id: [u8; 16],
    epoch: u32,
    recipient: [u8; 16],
    secret: [u8; 32],
    wrapped: Vec<u8>,
}

impl RecipientCase {
    fn ctx(&self) -> KeyContext {
        KeyContext {
            kind: self.kind,
            id: self.id,
            epoch: self.epoch,
        }
    }

    fn open_inputs(&self) -> Vec<(&'static str, J)> {
        vec![
            ("recipient_secret", h(self.secret)),
            ("recipient_id", h(self.recipient)),
            ("scope_kind", n(self.kind as u8)),
            ("scope_id", h(self.id)),
            ("epoch", n(self.epoch)),
            ("wrapped", h(&self.wrapped)),
        ]
    }
}

/// Wraps a fresh scope key to a fresh principal; returns the case plus the ephemeral secret and
/// nonce the wrap drew from `rng`.
fn recipient_case(
    rng: &mut ChaCha20Rng,
    kind: ScopeKind,
    epoch: u32,
) -> (RecipientCase, [u8; 32], [u8; 24]) {
    let key: [u8; 32] = draw(rng);
    let id: [u8; 16] = draw(rng);
    let recipient: [u8; 16] = draw(rng);
    let secret: [u8; 32] = draw(rng);
    let mut peek = rng.clone();
    let eph: [u8; 32] = draw(&mut peek);
    let nonce: [u8; 24] = draw(&mut peek);
    let mut c = RecipientCase {
        key,
        kind,
        id,
        epoch,
        recipient,
        secret,
        wrapped: Vec::new(),
    };
    c.wrapped = wrap::wrap_to_recipient(
        &ScopeKey::from_bytes(key),
        &c.ctx(),
        &PrincipalId::from_bytes(recipient),
        &AgreementSecret::from_bytes(secret).public_key(),
        rng,
    )
    .expect("a real public key")
    .into_bytes();
    (c, eph, nonce)
}

fn recipient_open_vector(
    name: &str,
    description: &str,
    c: RecipientCase,
    expected: &'static str,
) -> Vector {
    let res = wrap::unwrap_from_recipient(
        &WrappedKey::from_bytes(c.wrapped.clone()),
        &c.ctx(),
        &PrincipalId::from_bytes(c.recipient),
        &AgreementSecret::from_bytes(c.secret),
    );
    assert_eq!(code(&res), expected, "{name}");
    Vector {
        name: name.into(),
        section: "3.2",
        operation: "wrap.recipient.open",
        description: description.into(),
        inputs: c.open_inputs(),
        output: res.ok().map(|k| vec![("scope_key", h(k.expose_secret()))]),
        expected,
    }
}

fn recipient_wraps(v: &mut Vec<Vector>) {
    for (name, kind, epoch, what) in [
        (
            "wrap-recipient-ok",
            ScopeKind::Environment,
            2u32,
            "an environment key of epoch 2",
        ),
        (
            "wrap-recipient-workspace-ok",
            ScopeKind::Workspace,
            1,
            "a workspace key",
        ),
    ] {
        let mut rng = rng_for(name);
        let (c, eph, nonce) = recipient_case(&mut rng, kind, epoch);
        let recipient_public = r::x25519_public(&c.secret);
        let eph_public = r::x25519_public(&eph);
        let shared = r::x25519(&eph, &recipient_public).expect("contributory");
        let ctx = r::key_context(kind as u8, &c.id, epoch);
        v.push(Vector {
            name: name.into(),
            section: "3.2",
            operation: "wrap.recipient",
            description: format!(
                "Wrap {what} to a principal; unwrapping `wrapped` with the recipient's secret gives `scope_key`."
            ),
            inputs: vec![
                ("scope_key", h(c.key)),
                ("scope_kind", n(kind as u8)),
                ("scope_id", h(c.id)),
                ("epoch", n(epoch)),
                ("recipient_id", h(c.recipient)),
                ("recipient_secret", h(c.secret)),
                ("recipient_public", h(recipient_public)),
                ("ephemeral_secret", h(eph)),
                ("nonce", h(nonce)),
            ],
            output: Some(vec![
                ("ephemeral_public", h(eph_public)),
                ("shared_secret", h(shared)),
                ("kek", h(r::recipient_kek(&shared, &eph_public, &recipient_public))),
                ("aad", h(r::recipient_aad(&ctx, &c.recipient))),
                ("wrapped", h(&c.wrapped)),
            ]),
            expected: r::OK,
        });
    }

    // Wrapping to a low-order recipient key is refused before anything is sealed.
    {
        let name = "wrap-recipient-low-order-recipient";
        let mut rng = rng_for(name);
        let key: [u8; 32] = draw(&mut rng);
        let id: [u8; 16] = draw(&mut rng);
        let recipient: [u8; 16] = draw(&mut rng);
        let eph: [u8; 32] = draw(&mut rng.clone());
        let res = wrap::wrap_to_recipient(
            &ScopeKey::from_bytes(key),
            &KeyContext {
                kind: ScopeKind::Project,
                id,
                epoch: 1,
            },
            &PrincipalId::from_bytes(recipient),
            &zopp_crypto::keys::AgreementPublic::try_from_slice(&[0; 32]).expect("32 bytes"),
            &mut rng,
        );
        assert_eq!(code(&res), r::INVALID_PUBLIC_KEY);
        v.push(Vector {
            name: name.into(),
            section: "3.2",
            operation: "wrap.recipient",
            description: "The recipient's X25519 key is the all-zero (low-order) point: the wrap \
                          is refused, since the shared secret would be zero."
                .into(),
            inputs: vec![
                ("scope_key", h(key)),
                ("scope_kind", n(ScopeKind::Project as u8)),
                ("scope_id", h(id)),
                ("epoch", n(1u8)),
                ("recipient_id", h(recipient)),
                ("recipient_secret", J::Null),
                ("recipient_public", h([0u8; 32])),
                ("ephemeral_secret", h(eph)),
                ("nonce", J::Null),
            ],
            output: None,
            expected: r::INVALID_PUBLIC_KEY,
        });
    }

    type Change = fn(&mut RecipientCase, &mut ChaCha20Rng);
    let cases: [(&str, &str, Change, &'static str); 10] = [
        (
            "wrap-recipient-wrong-recipient-id",
            "Opened by the right key under another principal id: a grant moved to another principal.",
            |c, rng| c.recipient = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-wrong-recipient-key",
            "Opened with another principal's X25519 secret.",
            |c, rng| c.secret = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-wrong-scope-kind",
            "Opened as a project key although wrapped as an environment key.",
            |c, _| c.kind = ScopeKind::Project,
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-wrong-scope-id",
            "Opened for another scope id: a grant moved to a sibling scope.",
            |c, rng| c.id = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-wrong-epoch",
            "Opened as epoch 3 although wrapped as epoch 2.",
            |c, _| c.epoch = 3,
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-bad-tag",
            "The last bit of the tag is flipped.",
            |c, _| c.wrapped = flip(&c.wrapped, c.wrapped.len() - 1, 0x80),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-ephemeral-high-bit",
            "Bit 255 of the ephemeral key is flipped. X25519 ignores that bit, so the shared secret \
             is unchanged; the HKDF salt covers the key as sent, so the unwrap still fails.",
            |c, _| c.wrapped = flip(&c.wrapped, 33, 0x80),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-recipient-truncated",
            "One byte short of the fixed 106-byte length.",
            |c, _| c.wrapped.truncate(105),
            r::MALFORMED,
        ),
        (
            "wrap-recipient-unknown-version",
            "Format version byte 0x02 is not defined.",
            |c, _| c.wrapped[0] = 0x02,
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "wrap-recipient-child-algorithm",
            "Algorithm 0x01 (symmetric, §3.3) where 0x02 (X25519) is required.",
            |c, _| c.wrapped[1] = 0x01,
            r::UNSUPPORTED_FORMAT,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let (mut c, _, _) = recipient_case(&mut rng, ScopeKind::Environment, 2);
        change(&mut c, &mut rng);
        v.push(recipient_open_vector(name, description, c, expected));
    }

    for (point_name, point) in LOW_ORDER_POINTS {
        let name = format!("wrap-recipient-low-order-ephemeral-{point_name}");
        let mut rng = rng_for(&name);
        let (mut c, _, _) = recipient_case(&mut rng, ScopeKind::Environment, 2);
        c.wrapped[2..34].copy_from_slice(&hex::decode(point).expect("hex"));
        v.push(recipient_open_vector(
            &name,
            &format!(
                "The ephemeral key is replaced by the low-order point `{point_name}`: X25519 \
                 gives the all-zero shared secret, which must be refused (reported as a \
                 decryption failure) rather than used as key material."
            ),
            c,
            r::DECRYPTION_FAILED,
        ));
    }
}

// ---------------------------------------------------------------- §3.3 child wrap

struct ChildCase {
    child: [u8; 32],
    child_ctx: KeyContext,
    parent: [u8; 32],
    parent_ctx: KeyContext,
    wrapped: Vec<u8>,
}

fn ctx_inputs(prefix: &str, c: &KeyContext) -> Vec<(&'static str, J)> {
    let names: [&'static str; 3] = if prefix == "child" {
        ["child_kind", "child_id", "child_epoch"]
    } else {
        ["parent_kind", "parent_id", "parent_epoch"]
    };
    vec![
        (names[0], n(c.kind as u8)),
        (names[1], h(c.id)),
        (names[2], n(c.epoch)),
    ]
}

fn child_case(
    rng: &mut ChaCha20Rng,
    child_kind: ScopeKind,
    child_epoch: u32,
    parent_kind: ScopeKind,
    parent_epoch: u32,
    same_id: bool,
) -> (ChildCase, [u8; 24]) {
    let child: [u8; 32] = draw(rng);
    let parent: [u8; 32] = draw(rng);
    let child_id: [u8; 16] = draw(rng);
    let parent_id: [u8; 16] = if same_id { child_id } else { draw(rng) };
    let child_ctx = KeyContext {
        kind: child_kind,
        id: child_id,
        epoch: child_epoch,
    };
    let parent_ctx = KeyContext {
        kind: parent_kind,
        id: parent_id,
        epoch: parent_epoch,
    };
    let nonce: [u8; 24] = draw(&mut rng.clone());
    let wrapped = wrap::wrap_under(
        &ScopeKey::from_bytes(child),
        &child_ctx,
        &ScopeKey::from_bytes(parent),
        &parent_ctx,
        rng,
    )
    .into_bytes();
    (
        ChildCase {
            child,
            child_ctx,
            parent,
            parent_ctx,
            wrapped,
        },
        nonce,
    )
}

fn child_wraps(v: &mut Vec<Vector>) {
    for (name, ck, ce, pk, pe, same_id, what) in [
        (
            "wrap-child-ok",
            ScopeKind::Project,
            1u32,
            ScopeKind::Workspace,
            1u32,
            false,
            "a project key under its workspace key",
        ),
        (
            "wrap-child-environment-ok",
            ScopeKind::Environment,
            1,
            ScopeKind::Project,
            1,
            false,
            "an environment key under its project key",
        ),
        (
            "wrap-child-epoch-link-ok",
            ScopeKind::Environment,
            1,
            ScopeKind::Environment,
            2,
            true,
            "the epoch link: environment key epoch 1 under epoch 2 of the same environment",
        ),
    ] {
        let mut rng = rng_for(name);
        let (c, nonce) = child_case(&mut rng, ck, ce, pk, pe, same_id);
        let child_ctx = r::key_context(ck as u8, &c.child_ctx.id, ce);
        let parent_ctx = r::key_context(pk as u8, &c.parent_ctx.id, pe);
        let mut inputs = vec![("child_key", h(c.child))];
        inputs.extend(ctx_inputs("child", &c.child_ctx));
        inputs.push(("parent_key", h(c.parent)));
        inputs.extend(ctx_inputs("parent", &c.parent_ctx));
        inputs.push(("nonce", h(nonce)));
        v.push(Vector {
            name: name.into(),
            section: "3.3",
            operation: "wrap.child",
            description: format!("Wrap {what}."),
            inputs,
            output: Some(vec![
                ("kek", h(r::child_kek(&c.parent))),
                ("aad", h(r::child_aad(&child_ctx, &parent_ctx))),
                ("wrapped", h(&c.wrapped)),
            ]),
            expected: r::OK,
        });
    }

    type Change = fn(&mut ChildCase, &mut ChaCha20Rng);
    let cases: [(&str, &str, Change, &'static str); 11] = [
        (
            "wrap-child-wrong-parent-key",
            "Opened under another parent key.",
            |c, rng| c.parent = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-wrong-parent-kind",
            "Opened claiming the parent is an environment key.",
            |c, _| c.parent_ctx.kind = ScopeKind::Environment,
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-wrong-parent-id",
            "Opened under another parent scope id.",
            |c, rng| c.parent_ctx.id = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-wrong-parent-epoch",
            "Opened claiming parent epoch 2.",
            |c, _| c.parent_ctx.epoch = 2,
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-wrong-child-kind",
            "Opened claiming the child is a workspace key.",
            |c, _| c.child_ctx.kind = ScopeKind::Workspace,
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-wrong-child-id",
            "Opened for another child scope id: a wrapped key moved to a sibling.",
            |c, rng| c.child_ctx.id = draw(rng),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-wrong-child-epoch",
            "Opened claiming child epoch 2.",
            |c, _| c.child_ctx.epoch = 2,
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-swapped-contexts",
            "Child and parent contexts swapped.",
            |c, _| std::mem::swap(&mut c.child_ctx, &mut c.parent_ctx),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-bad-tag",
            "The last bit of the tag is flipped.",
            |c, _| c.wrapped = flip(&c.wrapped, c.wrapped.len() - 1, 0x80),
            r::DECRYPTION_FAILED,
        ),
        (
            "wrap-child-truncated",
            "One byte short of the fixed 74-byte length.",
            |c, _| c.wrapped.truncate(73),
            r::MALFORMED,
        ),
        (
            "wrap-child-recipient-algorithm",
            "Algorithm 0x02 (X25519, §3.2) where 0x01 (symmetric) is required.",
            |c, _| c.wrapped[1] = 0x02,
            r::UNSUPPORTED_FORMAT,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let (mut c, _) = child_case(
            &mut rng,
            ScopeKind::Project,
            1,
            ScopeKind::Workspace,
            1,
            false,
        );
        change(&mut c, &mut rng);
        let res = wrap::unwrap_under(
            &WrappedKey::from_bytes(c.wrapped.clone()),
            &c.child_ctx,
            &ScopeKey::from_bytes(c.parent),
            &c.parent_ctx,
        );
        assert_eq!(code(&res), expected, "{name}");
        let mut inputs = vec![("parent_key", h(c.parent))];
        inputs.extend(ctx_inputs("child", &c.child_ctx));
        inputs.extend(ctx_inputs("parent", &c.parent_ctx));
        inputs.push(("wrapped", h(&c.wrapped)));
        v.push(Vector {
            name: name.into(),
            section: "3.3",
            operation: "wrap.child.open",
            description: description.into(),
            inputs,
            output: res.ok().map(|k| vec![("child_key", h(k.expose_secret()))]),
            expected,
        });
    }
}

// ---------------------------------------------------------------- §4 request signatures

struct Request {
    seed: [u8; 32],
    verifying_key: Vec<u8>,
    server: [u8; 16],
    method: String,
    ts: i64,
    nonce: [u8; 16],
    body: Vec<u8>,
    sig: Vec<u8>,
}

/// The deployment the request vectors are signed for.
const REQUEST_SERVER_ID: [u8; 16] = [
    0x7a, 0x0b, 0x4e, 0x1c, 0x52, 0x9d, 0x4f, 0x61, 0x8a, 0x33, 0x0e, 0x6b, 0x2c, 0x90, 0x15, 0xd7,
];

fn request_case(rng: &mut ChaCha20Rng) -> Request {
    let seed: [u8; 32] = draw(rng);
    let nonce: [u8; 16] = draw(rng);
    let body: [u8; 48] = draw(rng);
    let method = "/zopp.v1.Zopp/GetSecret".to_string();
    let ts = 1_767_225_600_123;
    // Fixed rather than drawn, so the other fields keep their values.
    let server = REQUEST_SERVER_ID;
    let key = SigningKey::from_seed(&seed);
    let sig = sign::sign_request(
        &key,
        &zopp_crypto::ids::ServerId::from_bytes(server),
        &method,
        ts,
        &nonce,
        &body,
    )
    .to_vec();
    Request {
        seed,
        verifying_key: key.verifying_key().to_bytes().to_vec(),
        server,
        method,
        ts,
        nonce,
        body: body.to_vec(),
        sig,
    }
}

fn verify_with(key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    zopp_crypto::keys::VerifyingKey::try_from_slice(key)?.verify(msg, sig)
}

fn requests(v: &mut Vec<Vector>) {
    type Change = fn(&mut Request, &mut ChaCha20Rng);
    let cases: [(&str, &str, Change, &'static str); 10] = [
        (
            "request-signature-ok",
            "A signed GetSecret call; `body` stands for the request's protobuf encoding.",
            |_, _| {},
            r::OK,
        ),
        (
            "request-signature-altered-body",
            "One bit of the body is flipped after signing.",
            |q, _| q.body = flip(&q.body, 0, 0x01),
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-altered-method",
            "The signature of a GetSecret call presented on SetSecret.",
            |q, _| q.method = "/zopp.v1.Zopp/SetSecret".into(),
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-altered-timestamp",
            "The timestamp moved forward by one millisecond.",
            |q, _| q.ts += 1,
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-other-server",
            "A call signed for one deployment presented to another (a copy of the database \
             behind another server id).",
            |q, _| q.server[15] ^= 0x01,
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-altered-nonce",
            "A fresh nonce with the old signature: a replay dressed as a new call.",
            |q, rng| q.nonce = draw(rng),
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-wrong-key",
            "Verified with another principal's key.",
            |q, rng| {
                q.verifying_key = SigningKey::from_seed(&draw(rng))
                    .verifying_key()
                    .to_bytes()
                    .to_vec()
            },
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-malleated-s",
            "S replaced by S + L, the same scalar mod L: strict verification refuses it.",
            |q, _| {
                let mut carry = 0u16;
                for (i, l) in ED25519_L.iter().enumerate() {
                    let t = u16::from(q.sig[32 + i]) + u16::from(*l) + carry;
                    q.sig[32 + i] = t as u8;
                    carry = t >> 8;
                }
            },
            r::BAD_SIGNATURE,
        ),
        (
            "request-signature-weak-key",
            "The verifying key is the identity point, a small-order key for which anyone can make \
             a signature verify (R = [S]B for any S): refused as a key, whatever the signature.",
            |q, _| {
                let mut id = [0u8; 32];
                id[0] = 1;
                q.verifying_key = id.to_vec();
            },
            r::INVALID_PUBLIC_KEY,
        ),
        (
            "request-signature-truncated",
            "A 63-byte signature.",
            |q, _| q.sig.truncate(63),
            r::BAD_SIGNATURE,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let mut q = request_case(&mut rng);
        change(&mut q, &mut rng);
        let body_hash = r::sha256(&q.body);
        let msg = sign::request_message(
            &zopp_crypto::ids::ServerId::from_bytes(q.server),
            &q.method,
            q.ts,
            &q.nonce,
            &body_hash,
        );
        let res = verify_with(&q.verifying_key, &msg, &q.sig);
        assert_eq!(code(&res), expected, "{name}");
        let ok = expected == r::OK;
        v.push(Vector {
            name: name.into(),
            section: "4",
            operation: "request.verify",
            description: description.into(),
            inputs: vec![
                ("signing_seed", if ok { h(q.seed) } else { J::Null }),
                ("verifying_key", h(&q.verifying_key)),
                ("server_id", h(q.server)),
                ("method", s(&q.method)),
                ("timestamp_ms", n(q.ts)),
                ("nonce", h(q.nonce)),
                ("body", h(&q.body)),
                ("signature", h(&q.sig)),
            ],
            output: ok.then(|| vec![("body_sha256", h(body_hash)), ("message", h(&msg))]),
            expected,
        });
    }

    let name = "fingerprint-ok";
    let mut rng = rng_for(name);
    let key = SigningKey::from_seed(&draw(&mut rng)).verifying_key();
    v.push(Vector {
        name: name.into(),
        section: "3.4",
        operation: "fingerprint",
        description:
            "The fingerprint shown by `zopp principal fingerprint` for out-of-band checks.".into(),
        inputs: vec![("verifying_key", h(key.to_bytes()))],
        output: Some(vec![("fingerprint", s(&key.fingerprint()))]),
        expected: r::OK,
    });
}

// ---------------------------------------------------------------- §6 admission and join

fn admissions(v: &mut Vec<Vector>) {
    type Change = fn(&mut Vec<(&'static str, Vec<u8>)>, &mut ChaCha20Rng);
    let cases: [(&str, &str, bool, Change, &'static str); 4] = [
        (
            "admission-signature-ok",
            "An admitter vouches for a new principal's keys.",
            true,
            |_, _| {},
            r::OK,
        ),
        (
            "admission-signature-root-ok",
            "A chain root's admission: no admitter (flag byte 0), self-signed by the admitted key.",
            false,
            |_, _| {},
            r::OK,
        ),
        (
            "admission-signature-wrong-admitter",
            "The admission presented as made by another admitter id.",
            true,
            |f, rng| f[4].1 = draw::<16>(rng).to_vec(),
            r::BAD_SIGNATURE,
        ),
        (
            "admission-signature-swapped-agreement-key",
            "The server substitutes its own X25519 key for the principal's.",
            true,
            |f, rng| {
                f[3].1 = r::x25519_public(&draw(rng)).to_vec();
            },
            r::BAD_SIGNATURE,
        ),
    ];
    for (name, description, with_admitter, change, expected) in cases {
        let mut rng = rng_for(name);
        let admitter_seed: [u8; 32] = draw(&mut rng);
        let principal: [u8; 16] = draw(&mut rng);
        let keys = PrincipalKeys::generate(&mut rng);
        let admitter_id: [u8; 16] = draw(&mut rng);
        // A root admission is self-signed by the admitted key (FORMAT.md §6.1).
        let admitter_seed = if with_admitter {
            admitter_seed
        } else {
            keys.signing.expose_secret()
        };
        let admitter = SigningKey::from_seed(&admitter_seed);
        let vk = keys.signing.verifying_key();
        let ak = keys.agreement.public_key();
        let aid = PrincipalId::from_bytes(admitter_id);
        let msg = sign::admission_message(
            &PrincipalId::from_bytes(principal),
            &vk,
            &ak,
            with_admitter.then_some(&aid),
        );
        let sig = admitter.sign(&msg);
        let mut f: Vec<(&'static str, Vec<u8>)> = vec![
            ("admitter_key", admitter.verifying_key().to_bytes().to_vec()),
            ("principal_id", principal.to_vec()),
            ("signing_key", vk.to_bytes().to_vec()),
            ("agreement_key", ak.to_bytes().to_vec()),
            ("admitter_id", admitter_id.to_vec()),
            ("signature", sig.to_vec()),
        ];
        change(&mut f, &mut rng);
        let res_msg = sign::admission_message(
            &PrincipalId::from_bytes(f[1].1.clone().try_into().expect("16 bytes")),
            &zopp_crypto::keys::VerifyingKey::try_from_slice(&f[2].1).expect("valid key"),
            &zopp_crypto::keys::AgreementPublic::try_from_slice(&f[3].1).expect("32 bytes"),
            with_admitter
                .then(|| PrincipalId::from_bytes(f[4].1.clone().try_into().expect("16 bytes")))
                .as_ref(),
        );
        let res = verify_with(&f[0].1, &res_msg, &f[5].1);
        assert_eq!(code(&res), expected, "{name}");
        let ok = expected == r::OK;
        let mut inputs = vec![("admitter_seed", if ok { h(admitter_seed) } else { J::Null })];
        for (k, b) in &f {
            if *k == "admitter_id" && !with_admitter {
                inputs.push((k, J::Null));
            } else {
                inputs.push((k, h(b)));
            }
        }
        v.push(Vector {
            name: name.into(),
            section: "6.1",
            operation: "admission.verify",
            description: description.into(),
            inputs,
            output: ok.then(|| vec![("message", h(&res_msg))]),
            expected,
        });
    }

    type JoinChange = fn(&mut String, &mut [u8; 32], &mut ChaCha20Rng);
    let cases: [(&str, &str, JoinChange, &'static str); 3] = [
        (
            "join-signature-ok",
            "A joining principal's proof of possession, binding its email and the invite.",
            |_, _, _| {},
            r::OK,
        ),
        (
            "join-signature-wrong-email",
            "The join presented with another email.",
            |e, _, _| *e = "mallory@example.com".into(),
            r::BAD_SIGNATURE,
        ),
        (
            "join-signature-wrong-token-hash",
            "The join presented for another invite.",
            |_, t, rng| *t = draw(rng),
            r::BAD_SIGNATURE,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let key = SigningKey::from_seed(&seed);
        let ak = AgreementSecret::generate(&mut rng).public_key();
        let invite: [u8; 16] = draw(&mut rng);
        let mut token_hash = r::sha256(format!("zopp_inv_{}", hex::encode(invite)).as_bytes());
        let mut email = "alice@example.com".to_string();
        let sig = key.sign(&sign::join_message(
            &key.verifying_key(),
            &ak,
            &email,
            &token_hash,
        ));
        change(&mut email, &mut token_hash, &mut rng);
        let msg = sign::join_message(&key.verifying_key(), &ak, &email, &token_hash);
        let res = key.verifying_key().verify(&msg, &sig);
        assert_eq!(code(&res), expected, "{name}");
        let ok = expected == r::OK;
        v.push(Vector {
            name: name.into(),
            section: "6.2",
            operation: "join.verify",
            description: description.into(),
            inputs: vec![
                ("signing_seed", if ok { h(seed) } else { J::Null }),
                ("signing_key", h(key.verifying_key().to_bytes())),
                ("agreement_key", h(ak.to_bytes())),
                ("email", s(&email)),
                ("token_hash", h(token_hash)),
                ("signature", h(sig)),
            ],
            output: ok.then(|| vec![("message", h(&msg))]),
            expected,
        });
    }
}

// ---------------------------------------------------------------- §7 version claims

struct Claims {
    env: [u8; 16],
    digest: [u8; 32],
    version: u64,
    epoch: u32,
    deleted: bool,
    envelope: Vec<u8>,
    prev: [u8; 32],
    writer: [u8; 16],
    env_version: u64,
    created_at_ms: i64,
}

impl Claims {
    fn claims(&self) -> VersionClaims<'_> {
        VersionClaims {
            environment: EnvironmentId::from_bytes(self.env),
            name_digest: NameDigest::try_from_slice(&self.digest).expect("32 bytes"),
            version: self.version,
            key_epoch: self.epoch,
            deleted: self.deleted,
            envelope: &self.envelope,
            prev_hash: self.prev,
            writer: PrincipalId::from_bytes(self.writer),
            env_version: self.env_version,
            created_at_ms: self.created_at_ms,
        }
    }
}

fn versions(v: &mut Vec<Vector>) {
    type Change = fn(&mut Claims, &mut ChaCha20Rng);
    let cases: [(&str, &str, bool, Change, &'static str); 9] = [
        (
            "version-claims-ok",
            "Version 1 of a secret: prev_hash is all zeros.",
            false,
            |_, _| {},
            r::OK,
        ),
        (
            "version-claims-tombstone-ok",
            "A deletion: version 3, deleted = 1, empty envelope, chained to version 2.",
            true,
            |_, _| {},
            r::OK,
        ),
        (
            "version-claims-altered-envelope",
            "The server swaps in another envelope.",
            false,
            |c, rng| c.envelope = draw::<64>(rng).to_vec(),
            r::BAD_SIGNATURE,
        ),
        (
            "version-claims-altered-prev-hash",
            "The server re-links the version to another history.",
            false,
            |c, rng| c.prev = draw(rng),
            r::BAD_SIGNATURE,
        ),
        (
            "version-claims-wrong-writer",
            "The version attributed to another principal id.",
            false,
            |c, rng| c.writer = draw(rng),
            r::BAD_SIGNATURE,
        ),
        (
            "version-claims-flipped-deleted",
            "A live version presented as a deletion.",
            false,
            |c, _| c.deleted = true,
            r::BAD_SIGNATURE,
        ),
        (
            "version-claims-altered-version",
            "Version 1 renumbered as version 2.",
            false,
            |c, _| c.version = 2,
            r::BAD_SIGNATURE,
        ),
        (
            "version-claims-altered-env-version",
            "The version moved to another point in the environment's history (env_version 7 \
             served as 3), as a server lying to an `--at-version` read would.",
            false,
            |c, _| c.env_version = 3,
            r::BAD_SIGNATURE,
        ),
        (
            "version-claims-altered-created-at",
            "The version's time moved one second earlier, as a server lying to an `--at` read \
             would.",
            false,
            |c, _| c.created_at_ms -= 1000,
            r::BAD_SIGNATURE,
        ),
    ];
    for (name, description, tombstone, change, expected) in cases {
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let key = SigningKey::from_seed(&seed);
        let mut c = Claims {
            env: draw(&mut rng),
            digest: draw(&mut rng),
            version: 1,
            epoch: 1,
            deleted: false,
            envelope: draw::<101>(&mut rng).to_vec(),
            prev: sign::ZERO_HASH,
            writer: draw(&mut rng),
            env_version: 7,
            created_at_ms: 1_795_000_000_000,
        };
        if tombstone {
            c.version = 3;
            c.epoch = 2;
            c.deleted = true;
            c.envelope.clear();
            c.prev = draw(&mut rng);
        }
        let sig = c.claims().sign(&key);
        change(&mut c, &mut rng);
        let res = c.claims().verify(&key.verifying_key(), &sig);
        assert_eq!(code(&res), expected, "{name}");
        let ok = expected == r::OK;
        v.push(Vector {
            name: name.into(),
            section: "7",
            operation: "version.verify",
            description: description.into(),
            inputs: vec![
                ("signing_seed", if ok { h(seed) } else { J::Null }),
                ("verifying_key", h(key.verifying_key().to_bytes())),
                ("environment_id", h(c.env)),
                ("name_digest", h(c.digest)),
                ("version", n(c.version)),
                ("key_epoch", n(c.epoch)),
                ("deleted", J::Bool(c.deleted)),
                ("envelope", h(&c.envelope)),
                ("prev_hash", h(c.prev)),
                ("writer_id", h(c.writer)),
                ("env_version", n(c.env_version)),
                ("created_at_ms", n(c.created_at_ms)),
                ("signature", h(sig)),
            ],
            output: ok.then(|| {
                vec![
                    ("message", h(c.claims().message())),
                    ("hash", h(c.claims().hash(&sig))),
                ]
            }),
            expected,
        });
    }
}

// ---------------------------------------------------------------- §8 audit

struct Entry {
    seq: u64,
    time_ms: i64,
    actor: String,
    action: String,
    scope: String,
    target: String,
    method: String,
    request_timestamp_ms: i64,
    nonce: Vec<u8>,
    request_hash: Vec<u8>,
    signature: Vec<u8>,
    result: String,
}

impl Entry {
    fn record(&self) -> AuditRecord<'_> {
        AuditRecord {
            seq: self.seq,
            time_ms: self.time_ms,
            actor: &self.actor,
            action: &self.action,
            scope: &self.scope,
            target: &self.target,
            method: &self.method,
            request_timestamp_ms: self.request_timestamp_ms,
            nonce: &self.nonce,
            request_hash: &self.request_hash,
            signature: &self.signature,
            result: &self.result,
        }
    }

    fn json(&self, hash: &[u8; 32]) -> J {
        J::Obj(vec![
            ("seq", n(self.seq)),
            ("time_ms", n(self.time_ms)),
            ("actor", s(&self.actor)),
            ("action", s(&self.action)),
            ("scope", s(&self.scope)),
            ("target", s(&self.target)),
            ("method", s(&self.method)),
            ("request_timestamp_ms", n(self.request_timestamp_ms)),
            ("nonce", h(&self.nonce)),
            ("request_hash", h(&self.request_hash)),
            ("signature", h(&self.signature)),
            ("result", s(&self.result)),
            ("hash", h(hash)),
        ])
    }
}

fn uuid_text(b: [u8; 16]) -> String {
    PrincipalId::from_bytes(b).to_string()
}

fn audit_entries(rng: &mut ChaCha20Rng, count: u64) -> Vec<Entry> {
    let actor = uuid_text(draw(rng));
    let env = uuid_text(draw(rng));
    let steps = [
        ("secret.write", "/zopp.v1.Zopp/WriteSecrets", "ok"),
        ("secret.read", "/zopp.v1.Zopp/GetSecret", "ok"),
        (
            "permission.grant",
            "/zopp.v1.Zopp/Grant",
            "PERMISSION_DENIED",
        ),
    ];
    (0..count)
        .map(|i| {
            let (action, method, result) = steps[i as usize % steps.len()];
            let t = 1_767_225_600_000 + 1_000 * i as i64;
            Entry {
                seq: i + 1,
                time_ms: t + 7,
                actor: actor.clone(),
                action: action.into(),
                scope: format!("environment/{env}"),
                target: format!("{}@{}", hex::encode(draw::<32>(rng)), i + 1),
                method: method.into(),
                request_timestamp_ms: t,
                nonce: draw::<16>(rng).to_vec(),
                request_hash: draw::<32>(rng).to_vec(),
                signature: draw::<64>(rng).to_vec(),
                result: result.into(),
            }
        })
        .collect()
}

fn audits(v: &mut Vec<Vector>) {
    type Tamper = fn(&mut Vec<Entry>, &mut Vec<[u8; 32]>);
    let cases: [(&str, &str, u64, Tamper, &'static str); 5] = [
        (
            "audit-entry-ok",
            "One entry at the head of a chain: prev_hash is all zeros.",
            1,
            |_, _| {},
            r::OK,
        ),
        (
            "audit-chain-ok",
            "Three chained entries, including a refused call (its result is the gRPC code name).",
            3,
            |_, _| {},
            r::OK,
        ),
        (
            "audit-chain-altered-entry",
            "The server rewrites the result of entry 2 after the fact, keeping the stored hashes.",
            3,
            |e, _| e[1].result = "NOT_FOUND".into(),
            r::HASH_MISMATCH,
        ),
        (
            "audit-chain-reordered",
            "Entries 2 and 3 swapped, each keeping its stored hash.",
            3,
            |e, hs| {
                e.swap(1, 2);
                hs.swap(1, 2);
            },
            r::HASH_MISMATCH,
        ),
        (
            "audit-chain-field-boundary-shift",
            "The last byte of `actor` moved into `action`: the concatenation is unchanged, the \
             length prefixes are not.",
            1,
            |e, _| {
                let c = e[0].actor.pop().expect("non-empty actor");
                e[0].action.insert(0, c);
            },
            r::HASH_MISMATCH,
        ),
    ];
    for (name, description, count, tamper, expected) in cases {
        let mut rng = rng_for(name);
        let mut entries = audit_entries(&mut rng, count);
        let mut hashes = Vec::new();
        let mut prev = [0u8; 32];
        for e in &entries {
            prev = e.record().chain_hash(&prev);
            hashes.push(prev);
        }
        tamper(&mut entries, &mut hashes);
        let mut prev = [0u8; 32];
        let mut canonical = Vec::new();
        let mut outcome = r::OK;
        for (e, stored) in entries.iter().zip(&hashes) {
            canonical.push(h(e.record().canonical()));
            prev = e.record().chain_hash(&prev);
            if &prev != stored {
                outcome = r::HASH_MISMATCH;
            }
        }
        assert_eq!(outcome, expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "8",
            operation: "audit.chain",
            description: description.into(),
            inputs: vec![
                ("prev_hash", h([0u8; 32])),
                (
                    "entries",
                    J::Arr(
                        entries
                            .iter()
                            .zip(&hashes)
                            .map(|(e, x)| e.json(x))
                            .collect(),
                    ),
                ),
            ],
            output: (expected == r::OK)
                .then(|| vec![("canonical", J::Arr(canonical)), ("head", h(prev))]),
            expected,
        });
    }
}

// ---------------------------------------------------------------- §9 key file

fn key_files(v: &mut Vec<Vector>) {
    {
        let name = "keyfile-plain-ok";
        let mut rng = rng_for(name);
        let keys = PrincipalKeys::generate(&mut rng);
        let enc = keyfile::encode_plain(&keys);
        v.push(Vector {
            name: name.into(),
            section: "9",
            operation: "keyfile.decode",
            description: "A key file without a passphrase.".into(),
            inputs: vec![("encoded", h(enc.as_slice())), ("passphrase", J::Null)],
            output: Some(vec![
                ("signing_seed", h(keys.signing.expose_secret())),
                ("agreement_secret", h(keys.agreement.expose_secret())),
                ("verifying_key", h(keys.signing.verifying_key().to_bytes())),
                (
                    "agreement_public",
                    h(keys.agreement.public_key().to_bytes()),
                ),
            ]),
            expected: r::OK,
        });
    }
    {
        let name = "keyfile-sealed-ok";
        let mut rng = rng_for(name);
        let keys = PrincipalKeys::generate(&mut rng);
        let pass = b"correct horse battery staple";
        let mut peek = rng.clone();
        let salt: [u8; 16] = draw(&mut peek);
        let nonce: [u8; 24] = draw(&mut peek);
        let enc = keyfile::encode_sealed(&keys, pass, TINY, &mut rng).expect("in bounds");
        let kek = keyfile::derive_passphrase_key(pass, &salt, TINY).expect("in bounds");
        v.push(Vector {
            name: name.into(),
            section: "9",
            operation: "keyfile.seal",
            description: "A key file sealed under a passphrase with the smallest Argon2id \
                          parameters (m = 8 KiB, t = 1, p = 1) so the vector is cheap to check; \
                          real files use m = 64 MiB, t = 3, p = 1."
                .into(),
            inputs: vec![
                ("signing_seed", h(keys.signing.expose_secret())),
                ("agreement_secret", h(keys.agreement.expose_secret())),
                ("passphrase", h(pass)),
                ("m_cost_kib", n(TINY.m_cost_kib)),
                ("t_cost", n(TINY.t_cost)),
                ("p_cost", n(TINY.p_cost)),
                ("salt", h(salt)),
                ("nonce", h(nonce)),
            ],
            output: Some(vec![("kek", h(kek.as_ref())), ("encoded", h(&enc))]),
            expected: r::OK,
        });
    }

    type Change = fn(&mut Vec<u8>, &mut Option<Vec<u8>>);
    let cases: [(&str, &str, Change, &'static str); 10] = [
        (
            "keyfile-sealed-wrong-passphrase",
            "Opened with a passphrase one character longer.",
            |_, p| *p = Some(b"correct horse battery stapler".to_vec()),
            r::DECRYPTION_FAILED,
        ),
        (
            "keyfile-sealed-no-passphrase",
            "A sealed file opened without a passphrase.",
            |_, p| *p = None,
            r::DECRYPTION_FAILED,
        ),
        (
            "keyfile-sealed-altered-params",
            "m_cost raised from 8 to 16 KiB: the header is bound into the AAD (and the KEK changes).",
            |e, _| e[5] = 16,
            r::DECRYPTION_FAILED,
        ),
        (
            "keyfile-sealed-altered-salt",
            "One salt bit flipped.",
            |e, _| e[14] ^= 1,
            r::DECRYPTION_FAILED,
        ),
        (
            "keyfile-sealed-time-cost-zero",
            "t_cost 0 is outside the accepted bounds.",
            |e, _| e[9] = 0,
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-memory-too-large",
            "m_cost 2 GiB + 1 KiB exceeds the 2 GiB bound: refused before any work.",
            |e, _| e[2..6].copy_from_slice(&(2 * 1024 * 1024 + 1u32).to_be_bytes()),
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-truncated",
            "One byte short of the fixed 134-byte length.",
            |e, _| {
                e.pop();
            },
            r::MALFORMED,
        ),
        (
            "keyfile-plain-truncated",
            "A plain key file one byte short of 66 bytes.",
            |e, p| {
                *e = [&[0x01, 0x00][..], &e[2..65]].concat();
                *p = None;
            },
            r::MALFORMED,
        ),
        (
            "keyfile-unknown-version",
            "Format version byte 0x02 is not defined.",
            |e, _| e[0] = 0x02,
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "keyfile-unknown-algorithm",
            "Algorithm 0x01 is not a key-file algorithm.",
            |e, _| e[1] = 0x01,
            r::UNSUPPORTED_FORMAT,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let keys = PrincipalKeys::generate(&mut rng);
        let mut enc =
            keyfile::encode_sealed(&keys, b"correct horse battery staple", TINY, &mut rng)
                .expect("in bounds");
        let mut pass = Some(b"correct horse battery staple".to_vec());
        change(&mut enc, &mut pass);
        let res = keyfile::decode(&enc, pass.as_deref());
        assert_eq!(code(&res), expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "9",
            operation: "keyfile.decode",
            description: description.into(),
            inputs: vec![
                ("encoded", h(&enc)),
                ("passphrase", pass.as_ref().map_or(J::Null, h)),
            ],
            output: None,
            expected,
        });
    }
}

// ---------------------------------------------------------------- §10 principal token

/// The binding of the token vectors: a token minted for `acme/api/prod`.
pub(crate) fn token_binding(rng: &mut ChaCha20Rng) -> token::TokenBinding {
    let root = SigningKey::from_seed(&draw(rng));
    token::TokenBinding {
        root: PrincipalId::from_bytes(draw(rng)),
        root_key: root.verifying_key().to_bytes(),
        workspace: token::BoundScope {
            name: "acme".into(),
            id: draw(rng),
            epoch_floor: 1,
        },
        project: Some(token::BoundScope {
            name: "api".into(),
            id: draw(rng),
            epoch_floor: 0,
        }),
        environments: vec![token::BoundScope {
            name: "prod".into(),
            id: draw(rng),
            epoch_floor: 2,
        }],
    }
}

fn tokens(v: &mut Vec<Vector>) {
    {
        let name = "token-ok";
        let mut rng = rng_for(name);
        let principal: [u8; 16] = draw(&mut rng);
        let keys = PrincipalKeys::generate(&mut rng);
        let (token_share, server_share) = token::split(&keys.agreement, &mut rng);
        let binding = token_binding(&mut rng);
        let t = PrincipalToken {
            principal: PrincipalId::from_bytes(principal),
            signing: keys.signing.clone(),
            share: token_share.clone(),
            binding: binding.clone(),
        };
        let text = t.encode();
        v.push(Vector {
            name: name.into(),
            section: "10",
            operation: "token.parse",
            description: "A service principal's token; XOR of its share with the server's share \
                          gives the principal's X25519 secret."
                .into(),
            inputs: vec![
                ("token", s(&text)),
                ("server_share", h(server_share.expose_secret())),
            ],
            output: Some(vec![
                ("principal_id", h(principal)),
                ("signing_seed", h(keys.signing.expose_secret())),
                ("verifying_key", h(keys.signing.verifying_key().to_bytes())),
                ("token_share", h(token_share.expose_secret())),
                (
                    "binding",
                    h(r::token_binding_bytes(&text).expect("valid token")),
                ),
                ("agreement_secret", h(keys.agreement.expose_secret())),
                (
                    "agreement_public",
                    h(keys.agreement.public_key().to_bytes()),
                ),
            ]),
            expected: r::OK,
        });
    }

    type Change = fn(&str) -> String;
    let cases: [(&str, &str, Change, &'static str); 10] = [
        (
            "token-bad-prefix",
            "`zopp-` instead of `zopp_`.",
            |t| t.replacen("zopp_", "zopp-", 1),
            r::MALFORMED,
        ),
        (
            "token-uppercase-prefix",
            "`ZOPP_`: the prefix is case-sensitive.",
            |t| t.replacen("zopp_", "ZOPP_", 1),
            r::MALFORMED,
        ),
        (
            "token-missing-prefix",
            "The base64 body alone.",
            |t| t["zopp_".len()..].to_string(),
            r::MALFORMED,
        ),
        (
            "token-truncated",
            "The last four characters (three bytes) cut off, as by a bad copy and paste.",
            |t| t[..t.len() - 4].to_string(),
            r::MALFORMED,
        ),
        (
            "token-truncated-one-char",
            "The last character cut off: not a whole number of base64 bytes.",
            |t| t[..t.len() - 1].to_string(),
            r::MALFORMED,
        ),
        (
            "token-padded",
            "`=` padding appended: tokens are unpadded base64url.",
            |t| format!("{t}="),
            r::MALFORMED,
        ),
        (
            "token-extra-bytes",
            "Three extra bytes (four characters) appended after the binding.",
            |t| format!("{t}AAAA"),
            r::MALFORMED,
        ),
        (
            "token-unknown-version",
            "Version byte 0x03 inside an otherwise well-formed token.",
            |t| {
                let (id, seed, share) = r::token_parse(t).expect("valid token");
                let binding = r::token_binding_bytes(t).expect("valid token");
                r::token_encode(&[&[0x03][..], &id, &seed, &share, &binding].concat())
            },
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "token-version-1",
            "A token of the first layout (0x01, 81 bytes, no binding): refused, to be minted again.",
            |t| {
                let (id, seed, share) = r::token_parse(t).expect("valid token");
                r::token_encode(&[&[0x01][..], &id, &seed, &share].concat())
            },
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "token-binding-environment-without-project",
            "The binding's project entry removed: an environment must follow its project.",
            |t| {
                let (id, seed, share) = r::token_parse(t).expect("valid token");
                let mut b = r::token_binding_bytes(t).expect("valid token");
                // root (48) ‖ count ‖ workspace entry (1 + 16 + 4 + 1 + 4) ‖ project entry …
                let ws_end = 48 + 1 + 26;
                let project_len = 1 + 16 + 4 + 1 + 3;
                b.drain(ws_end..ws_end + project_len);
                b[48] -= 1;
                r::token_encode(&[&[0x02][..], &id, &seed, &share, &b].concat())
            },
            r::MALFORMED,
        ),
    ];
    for (name, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let keys = PrincipalKeys::generate(&mut rng);
        let (share, _) = token::split(&keys.agreement, &mut rng);
        let principal = PrincipalId::random(&mut rng);
        let binding = token_binding(&mut rng);
        let t = PrincipalToken {
            principal,
            signing: keys.signing.clone(),
            share,
            binding,
        };
        let text = change(&t.encode());
        let res = PrincipalToken::try_parse(&text);
        assert_eq!(code(&res), expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "10",
            operation: "token.parse",
            description: description.into(),
            inputs: vec![("token", s(&text)), ("server_share", J::Null)],
            output: None,
            expected,
        });
    }
}
