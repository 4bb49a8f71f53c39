//! Vectors aimed at the checks an implementation can leave out and still pass the happy paths:
//! wraps sealed under the all-zero X25519 secret, small-order and mixed-order Ed25519 points,
//! non-canonical encodings, trailing bytes, key-file parameter bounds at and past each limit,
//! token text edge cases, weak keys and malleated signatures in every signed statement, full
//! audit-chain verification (`audit.verify`), and a positive vector for every open and decode
//! operation. Also the checker of `audit.verify`, the one operation these vectors add.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use sha2::{Digest, Sha512};
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::envelope::{
    Envelope, EnvelopeContext, NameDigest, NameKey, SealKey, SecretKind, SecretPayload,
};
use zopp_crypto::ids::ServerId;
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keyfile::{self, KdfParams};
use zopp_crypto::keys::{
    AgreementPublic, AgreementSecret, PrincipalKeys, ScopeKey, ScopeKind, SigningKey, VerifyingKey,
};
use zopp_crypto::sign::{self, VersionClaims};
use zopp_crypto::token::{self, PrincipalToken};
use zopp_crypto::wrap::{self, KeyContext, WrappedKey};
use zopp_crypto::CryptoError;

use super::generate::{code, rng_for, Vector, LOW_ORDER_POINTS, TINY};
use super::json::{h, n, s, J};
use super::reference as r;

/// Every vector of this file, in a fixed order.
pub fn all(v: &mut Vec<Vector>) {
    recipient_wraps(v);
    child_wraps(v);
    envelopes(v);
    requests(v);
    admissions(v);
    joins(v);
    versions(v);
    audit_chains(v);
    audit_verifications(v);
    key_files(v);
    tokens(v);
}

fn draw<const N: usize>(rng: &mut impl RngCore) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

// ---------------------------------------------------------------- Ed25519 crafting

/// The secret scalar of an Ed25519 seed (RFC 8032 §5.1.5), reduced mod L.
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

/// `k = SHA-512(R ‖ A ‖ M) mod L`.
fn challenge(r: &[u8], a: &[u8], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

fn signature(r: &[u8; 32], s: &Scalar) -> Vec<u8> {
    [r.as_slice(), s.as_bytes()].concat()
}

fn random_scalar(rng: &mut ChaCha20Rng) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&draw::<64>(rng))
}

/// Whether `[S]B = R + [k]A` holds exactly (the cofactorless equation), `A` taken as `point`
/// and hashed as `a_bytes`.
fn cofactorless(point: &EdwardsPoint, a_bytes: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let s: [u8; 32] = sig[32..64].try_into().expect("64-byte signature");
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    let k = challenge(&sig[..32], a_bytes, msg);
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-point, &s)
        .compress()
        .as_bytes()
        == &sig[..32]
}

/// Whether `[8]([S]B − R − [k]A)` is the identity (the cofactored equation).
fn cofactored(point: &EdwardsPoint, a_bytes: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let s: [u8; 32] = sig[32..64].try_into().expect("64-byte signature");
    let (Some(s), Some(r)) = (
        Option::<Scalar>::from(Scalar::from_canonical_bytes(s)),
        CompressedEdwardsY::from_slice(&sig[..32])
            .ok()
            .and_then(|c| c.decompress()),
    ) else {
        return false;
    };
    let k = challenge(&sig[..32], a_bytes, msg);
    (EdwardsPoint::mul_base(&s) - r - point * k)
        .mul_by_cofactor()
        .is_identity()
}

/// A signature under the small-order key `point` (encoded as `a_bytes`) that satisfies the
/// cofactorless equation: `R = [S]B − [j]T` for a guess `j` of `k` modulo the point's order,
/// retried until the guess is right.
fn weak_key_signature(
    point: &EdwardsPoint,
    a_bytes: &[u8],
    msg: &[u8],
    rng: &mut ChaCha20Rng,
) -> Vec<u8> {
    loop {
        let s = random_scalar(rng);
        for j in 0u8..8 {
            let jt = point * Scalar::from(j);
            let r = (EdwardsPoint::mul_base(&s) - jt).compress().to_bytes();
            let k = challenge(&r, a_bytes, msg);
            if point * k == jt {
                let sig = signature(&r, &s);
                assert!(cofactorless(point, a_bytes, msg, &sig));
                return sig;
            }
        }
    }
}

/// `S + L`: the same scalar mod L in a non-canonical encoding.
fn malleate(sig: &[u8]) -> Vec<u8> {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for (b, l) in out[32..].iter_mut().zip(L) {
        let t = u16::from(*b) + u16::from(l) + carry;
        *b = t as u8;
        carry = t >> 8;
    }
    out
}

/// The identity point's encoding: the simplest weak key.
fn identity_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
}

/// An encoding `y + p` (bit 255 clear) of a point whose canonical `y` is below 19 and which is
/// not of small order: decodes under a lenient reading, refused by RFC 8032's `y < p`.
fn non_canonical_key() -> [u8; 32] {
    for y in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        let Some(p) = CompressedEdwardsY(canonical).decompress() else {
            continue;
        };
        if p.is_small_order() {
            continue;
        }
        let mut b = [0xffu8; 32];
        b[0] = 0xed + y;
        b[31] = 0x7f;
        return b;
    }
    unreachable!("some y below 19 is on the curve")
}

fn lib_verify(key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    VerifyingKey::try_from_slice(key)?.verify(msg, sig)
}

// ---------------------------------------------------------------- §3.2 recipient wrap

struct Recipient {
    key: [u8; 32],
    id: [u8; 16],
    recipient: [u8; 16],
    secret: [u8; 32],
    wrapped: Vec<u8>,
}

impl Recipient {
    fn ctx(&self) -> KeyContext {
        KeyContext {
            kind: ScopeKind::Environment,
            id: self.id,
            epoch: 2,
        }
    }
}

fn recipient(rng: &mut ChaCha20Rng) -> Recipient {
    let key: [u8; 32] = draw(rng);
    let id: [u8; 16] = draw(rng);
    let recipient: [u8; 16] = draw(rng);
    let secret: [u8; 32] = draw(rng);
    let mut c = Recipient {
        key,
        id,
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
    c
}

fn recipient_open(name: &str, description: &str, c: &Recipient, expected: &'static str) -> Vector {
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
        inputs: vec![
            ("recipient_secret", h(c.secret)),
            ("recipient_id", h(c.recipient)),
            ("scope_kind", n(ScopeKind::Environment as u8)),
            ("scope_id", h(c.id)),
            ("epoch", n(2u8)),
            ("wrapped", h(&c.wrapped)),
        ],
        output: res.ok().map(|k| vec![("scope_key", h(k.expose_secret()))]),
        expected,
    }
}

fn recipient_wraps(v: &mut Vec<Vector>) {
    {
        let name = "wrap-recipient-open-ok";
        let c = recipient(&mut rng_for(name));
        v.push(recipient_open(
            name,
            "Unwrap an environment key of epoch 2 with the recipient's secret.",
            &c,
            r::OK,
        ));
    }
    {
        let name = "wrap-recipient-trailing-byte";
        let mut c = recipient(&mut rng_for(name));
        c.wrapped.push(0);
        v.push(recipient_open(
            name,
            "An authentic wrap with one zero byte appended: 107 bytes, not 106.",
            &c,
            r::MALFORMED,
        ));
    }
    // Authentic-looking wraps under the key an implementation without the contributory check
    // would derive: HKDF of the all-zero shared secret, salted with the low-order E and the
    // recipient's key, sealing a real scope key under the right AAD.
    for point_name in ["zero", "order8-a"] {
        let name = format!("wrap-recipient-zero-shared-secret-{point_name}");
        let mut rng = rng_for(&name);
        let mut c = recipient(&mut rng);
        let point: [u8; 32] = hex::decode(
            LOW_ORDER_POINTS
                .iter()
                .find(|(n, _)| *n == point_name)
                .expect("listed point")
                .1,
        )
        .expect("hex")
        .try_into()
        .expect("32 bytes");
        let nonce: [u8; 24] = draw(&mut rng);
        let recipient_public = r::x25519_public(&c.secret);
        let kek = r::recipient_kek(&[0u8; 32], &point, &recipient_public);
        let ctx = r::key_context(ScopeKind::Environment as u8, &c.id, 2);
        let aad = r::recipient_aad(&ctx, &c.recipient);
        let sealed = chacha_seal(&kek, &nonce, &c.key, &aad);
        c.wrapped = [&[0x01, 0x02][..], &point, &nonce, &sealed].concat();
        v.push(recipient_open(
            &name,
            &format!(
                "E is the low-order point `{point_name}` and the ciphertext is authentic under \
                 HKDF(salt = E ‖ R, ikm = 32 zero bytes): an unwrapper that skips the all-zero \
                 check opens it. The check is mandatory: refused."
            ),
            &c,
            r::DECRYPTION_FAILED,
        ));
    }
    // Non-canonical published keys: the wrap would bind bytes the recipient never computes.
    let mut high_bit = r::x25519_public(&draw(&mut rng_for("wrap-recipient-x")));
    high_bit[31] |= 0x80;
    let mut nine_plus_p = [0xffu8; 32];
    nine_plus_p[0] = 0xed + 9;
    nine_plus_p[31] = 0x7f;
    for (name, public, what) in [
        (
            "wrap-recipient-non-canonical-recipient-high-bit",
            high_bit,
            "a real X25519 key with bit 255 set",
        ),
        (
            "wrap-recipient-non-canonical-recipient-u-above-p",
            nine_plus_p,
            "u = p + 9, a non-canonical encoding of the base point (u = 9)",
        ),
    ] {
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
            &AgreementPublic::try_from_slice(&public).expect("32 bytes"),
            &mut rng,
        );
        assert_eq!(code(&res), r::INVALID_PUBLIC_KEY, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "3.2",
            operation: "wrap.recipient",
            description: format!(
                "The recipient's published X25519 key is {what}: published keys must be \
                 canonical (bit 255 clear, u < p), so the wrap is refused."
            ),
            inputs: vec![
                ("scope_key", h(key)),
                ("scope_kind", n(ScopeKind::Project as u8)),
                ("scope_id", h(id)),
                ("epoch", n(1u8)),
                ("recipient_id", h(recipient)),
                ("recipient_secret", J::Null),
                ("recipient_public", h(public)),
                ("ephemeral_secret", h(eph)),
                ("nonce", J::Null),
            ],
            output: None,
            expected: r::INVALID_PUBLIC_KEY,
        });
    }
}

fn chacha_seal(key: &[u8; 32], nonce: &[u8; 24], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    chacha20poly1305::XChaCha20Poly1305::new(key.into())
        .encrypt(
            chacha20poly1305::XNonce::from_slice(nonce),
            Payload { msg, aad },
        )
        .expect("in-memory encryption")
}

// ---------------------------------------------------------------- §3.3 child wrap

fn child_wraps(v: &mut Vec<Vector>) {
    for (name, description, extra, expected) in [
        (
            "wrap-child-open-ok",
            "Unwrap a project key under its workspace key.",
            false,
            r::OK,
        ),
        (
            "wrap-child-trailing-byte",
            "An authentic child wrap with one zero byte appended: 75 bytes, not 74.",
            true,
            r::MALFORMED,
        ),
    ] {
        let mut rng = rng_for(name);
        let child: [u8; 32] = draw(&mut rng);
        let parent: [u8; 32] = draw(&mut rng);
        let child_ctx = KeyContext {
            kind: ScopeKind::Project,
            id: draw(&mut rng),
            epoch: 1,
        };
        let parent_ctx = KeyContext {
            kind: ScopeKind::Workspace,
            id: draw(&mut rng),
            epoch: 1,
        };
        let mut wrapped = wrap::wrap_under(
            &ScopeKey::from_bytes(child),
            &child_ctx,
            &ScopeKey::from_bytes(parent),
            &parent_ctx,
            &mut rng,
        )
        .into_bytes();
        if extra {
            wrapped.push(0);
        }
        let res = wrap::unwrap_under(
            &WrappedKey::from_bytes(wrapped.clone()),
            &child_ctx,
            &ScopeKey::from_bytes(parent),
            &parent_ctx,
        );
        assert_eq!(code(&res), expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "3.3",
            operation: "wrap.child.open",
            description: description.into(),
            inputs: vec![
                ("parent_key", h(parent)),
                ("child_kind", n(child_ctx.kind as u8)),
                ("child_id", h(child_ctx.id)),
                ("child_epoch", n(child_ctx.epoch)),
                ("parent_kind", n(parent_ctx.kind as u8)),
                ("parent_id", h(parent_ctx.id)),
                ("parent_epoch", n(parent_ctx.epoch)),
                ("wrapped", h(&wrapped)),
            ],
            output: res.ok().map(|k| vec![("child_key", h(k.expose_secret()))]),
            expected,
        });
    }
}

// ---------------------------------------------------------------- §5 envelope

fn envelopes(v: &mut Vec<Vector>) {
    let name = "envelope-open-ok";
    let mut rng = rng_for(name);
    let ek: [u8; 32] = draw(&mut rng);
    let ek1: [u8; 32] = draw(&mut rng);
    let ctx = EnvelopeContext {
        environment: EnvironmentId::from_bytes(draw(&mut rng)),
        name_digest: NameKey::derive(&ScopeKey::from_bytes(ek1)).digest("SMTP_PASSWORD"),
        version: 7,
        key_epoch: 3,
    };
    let payload = SecretPayload::new(
        SecretKind::Secret,
        "SMTP_PASSWORD".into(),
        b"hunter2 \xf0\x9f\x94\x91".to_vec(),
        b"{}".to_vec(),
    );
    let key = SealKey::derive(&ScopeKey::from_bytes(ek));
    let envelope = key.seal(&ctx, &payload, &mut rng);
    let p = key
        .open(&ctx, &Envelope::from_bytes(envelope.as_bytes().to_vec()))
        .expect("opens");
    v.push(Vector {
        name: name.into(),
        section: "5",
        operation: "envelope.open",
        description: "Open version 7 of a secret sealed under key epoch 3.".into(),
        inputs: vec![
            ("environment_key", h(ek)),
            ("environment_id", h(ctx.environment.as_bytes())),
            ("name_digest", h(ctx.name_digest.as_bytes())),
            ("version", n(ctx.version)),
            ("key_epoch", n(ctx.key_epoch)),
            ("envelope", h(envelope.as_bytes())),
        ],
        output: Some(vec![
            ("kind", n(p.kind() as u8)),
            ("name", s(p.name())),
            ("value", h(p.expose_secret())),
            ("metadata", h(p.metadata())),
        ]),
        expected: r::OK,
    });
}

// ---------------------------------------------------------------- §4 request signatures

struct Req {
    method: &'static str,
    ts: i64,
    nonce: [u8; 16],
    body: Vec<u8>,
}

/// The deployment the adversarial requests and chains are signed for (FORMAT.md §4).
const ADV_SERVER_ID: [u8; 16] = [
    0x3c, 0x91, 0x0d, 0x7e, 0x44, 0xa2, 0x4b, 0x1f, 0x9e, 0x60, 0x2a, 0x5d, 0xc8, 0x17, 0x83, 0xf4,
];

impl Req {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        Self {
            method: "/zopp.v1.Zopp/GetSecret",
            ts: 1_767_225_600_123,
            nonce: draw(rng),
            body: draw::<40>(rng).to_vec(),
        }
    }
    fn message(&self) -> Vec<u8> {
        sign::request_message(
            &ServerId::from_bytes(ADV_SERVER_ID),
            self.method,
            self.ts,
            &self.nonce,
            &r::sha256(&self.body),
        )
    }
}

fn request_vector(
    name: &str,
    description: &str,
    q: &Req,
    key: &[u8],
    sig: &[u8],
    expected: &'static str,
) -> Vector {
    let msg = q.message();
    let res = lib_verify(key, &msg, sig);
    assert_eq!(code(&res), expected, "{name}");
    let ok = expected == r::OK;
    Vector {
        name: name.into(),
        section: "4",
        operation: "request.verify",
        description: description.into(),
        inputs: vec![
            ("signing_seed", J::Null),
            ("verifying_key", h(key)),
            ("server_id", h(ADV_SERVER_ID)),
            ("method", s(q.method)),
            ("timestamp_ms", n(q.ts)),
            ("nonce", h(q.nonce)),
            ("body", h(&q.body)),
            ("signature", h(sig)),
        ],
        output: ok.then(|| vec![("body_sha256", h(r::sha256(&q.body))), ("message", h(&msg))]),
        expected,
    }
}

/// Names and orders of the eight small-order points, in `EIGHT_TORSION` order.
const TORSION: [(&str, u8); 8] = [
    ("identity", 1),
    ("order8-a", 8),
    ("order4-a", 4),
    ("order8-b", 8),
    ("order2", 2),
    ("order8-c", 8),
    ("order4-b", 4),
    ("order8-d", 8),
];

fn requests(v: &mut Vec<Vector>) {
    // R of small order, S = k·a: the cofactored equation holds for every such R, the
    // cofactorless one for the identity; strict verification refuses all of them.
    for (i, (point_name, order)) in TORSION.iter().enumerate() {
        if i > 4 {
            break;
        }
        let name = format!("request-signature-small-order-r-{point_name}");
        let mut rng = rng_for(&name);
        let seed: [u8; 32] = draw(&mut rng);
        let key = SigningKey::from_seed(&seed).verifying_key();
        let a = secret_scalar(&seed);
        let point = CompressedEdwardsY(key.to_bytes())
            .decompress()
            .expect("a real key");
        let q = Req::new(&mut rng);
        let r_bytes = EIGHT_TORSION[i].compress().to_bytes();
        let k = challenge(&r_bytes, &key.to_bytes(), &q.message());
        let sig = signature(&r_bytes, &(k * a));
        assert!(cofactored(&point, &key.to_bytes(), &q.message(), &sig));
        assert_eq!(
            cofactorless(&point, &key.to_bytes(), &q.message(), &sig),
            i == 0
        );
        let holds = if i == 0 {
            "both the cofactored and the cofactorless equation hold"
        } else {
            "the cofactored equation holds, the cofactorless one does not"
        };
        v.push(request_vector(
            &name,
            &format!(
                "R is the small-order point `{point_name}` (order {order}) and S = k·a, made by \
                 the key's holder: {holds}. Strict verification refuses a small-order R."
            ),
            &q,
            &key.to_bytes(),
            &sig,
            r::BAD_SIGNATURE,
        ));
    }

    // A mixed-order key A' = [a]B + T (T of order 8) with an honest-looking signature: the
    // cofactored equation holds, the cofactorless one only when 8 divides k.
    for (name, want_k_multiple_of_8, expected) in [
        ("request-signature-mixed-order-key", false, r::BAD_SIGNATURE),
        (
            "request-signature-mixed-order-key-k-multiple-of-8-ok",
            true,
            r::OK,
        ),
    ] {
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let a = secret_scalar(&seed);
        let mixed = EdwardsPoint::mul_base(&a) + EIGHT_TORSION[1];
        let a_bytes = mixed.compress().to_bytes();
        let q = Req::new(&mut rng);
        let sig = loop {
            let nonce = random_scalar(&mut rng);
            let r_bytes = EdwardsPoint::mul_base(&nonce).compress().to_bytes();
            let k = challenge(&r_bytes, &a_bytes, &q.message());
            if (EIGHT_TORSION[1] * k).is_identity() == want_k_multiple_of_8 {
                break signature(&r_bytes, &(nonce + k * a));
            }
        };
        assert!(cofactored(&mixed, &a_bytes, &q.message(), &sig));
        let description = if want_k_multiple_of_8 {
            "The key is A + T, T of order 8 (a mixed-order key: decodes, not of small order), \
             and the signature is [r]B, r + k·a with 8 dividing k: the cofactorless equation \
             holds, so strict verification accepts. Keys are not checked for a torsion component."
        } else {
            "The key is A + T, T of order 8 (a mixed-order key), and the signature is [r]B, \
             r + k·a with k not a multiple of 8: a cofactored verifier accepts, strict \
             (cofactorless) verification refuses."
        };
        v.push(request_vector(
            name,
            description,
            &q,
            &a_bytes,
            &sig,
            expected,
        ));
    }

    // Every small-order key, with a signature the cofactorless equation accepts: refused as a
    // key, never reaching the signature.
    for (i, (point_name, order)) in TORSION.iter().enumerate() {
        let name = format!("request-signature-small-order-key-{point_name}");
        let mut rng = rng_for(&name);
        let q = Req::new(&mut rng);
        let point = EIGHT_TORSION[i];
        let a_bytes = point.compress().to_bytes();
        let sig = weak_key_signature(&point, &a_bytes, &q.message(), &mut rng);
        v.push(request_vector(
            &name,
            &format!(
                "The key is the small-order point `{point_name}` (order {order}) and the \
                 signature satisfies the cofactorless equation [S]B = R + [k]A: a verifier \
                 without the key check accepts it. Refused as a key."
            ),
            &q,
            &a_bytes,
            &sig,
            r::INVALID_PUBLIC_KEY,
        ));
    }
    // Non-canonical encodings of small-order points, with signatures that verify for them.
    let mut identity_sign_bit = identity_bytes();
    identity_sign_bit[31] |= 0x80;
    let mut p_plus_1 = [0xffu8; 32];
    p_plus_1[0] = 0xee;
    p_plus_1[31] = 0x7f;
    for (name, a_bytes, what) in [
        (
            "request-signature-small-order-key-identity-sign-bit",
            identity_sign_bit,
            "the identity (x = 0) with the sign bit set",
        ),
        (
            "request-signature-small-order-key-identity-y-p-plus-1",
            p_plus_1,
            "the identity written as y = p + 1",
        ),
    ] {
        let mut rng = rng_for(name);
        let q = Req::new(&mut rng);
        let sig = weak_key_signature(&EdwardsPoint::default(), &a_bytes, &q.message(), &mut rng);
        v.push(request_vector(
            name,
            &format!(
                "The key is {what}, a non-canonical encoding of a small-order point, with a \
                 signature the cofactorless equation accepts. Refused as a key."
            ),
            &q,
            &a_bytes,
            &sig,
            r::INVALID_PUBLIC_KEY,
        ));
    }
    {
        let name = "request-signature-non-canonical-key";
        let mut rng = rng_for(name);
        let q = Req::new(&mut rng);
        let key = non_canonical_key();
        let sig = draw::<64>(&mut rng);
        v.push(request_vector(
            name,
            "The key's y is written as y + p (≥ p) for a point of large order: RFC 8032 refuses \
             to decode y ≥ p, so the key is invalid whatever the signature.",
            &q,
            &key,
            &sig,
            r::INVALID_PUBLIC_KEY,
        ));
    }
    {
        let name = "request-signature-65-bytes";
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let q = Req::new(&mut rng);
        let k = SigningKey::from_seed(&seed);
        let mut sig = k.sign(&q.message()).to_vec();
        sig.push(0);
        v.push(request_vector(
            name,
            "A valid signature with a zero byte appended: 65 bytes.",
            &q,
            &k.verifying_key().to_bytes(),
            &sig,
            r::BAD_SIGNATURE,
        ));
    }
    {
        let name = "request-signature-small-order-key-65-bytes";
        let mut rng = rng_for(name);
        let q = Req::new(&mut rng);
        let sig = draw::<65>(&mut rng);
        v.push(request_vector(
            name,
            "A small-order key (the identity) and a 65-byte signature: the key is checked \
             first, so the outcome is invalid_public_key.",
            &q,
            &identity_bytes(),
            &sig,
            r::INVALID_PUBLIC_KEY,
        ));
    }
}

// ---------------------------------------------------------------- §6.1 admission

/// Fields of an admission.verify vector.
struct Admission {
    admitter_seed: Option<[u8; 32]>,
    admitter_key: Vec<u8>,
    principal: [u8; 16],
    signing_key: Vec<u8>,
    agreement_key: Vec<u8>,
    admitter_id: Option<[u8; 16]>,
    signature: Vec<u8>,
}

impl Admission {
    fn message(&self) -> Vec<u8> {
        r::admission_message(
            &self.principal,
            &self.signing_key,
            &self.agreement_key,
            self.admitter_id.as_ref().map(|a| a.as_slice()),
        )
    }
}

/// What admission.verify says, in FORMAT.md §6.1's order, with zopp-crypto.
pub fn lib_admission(
    admitter_key: &[u8],
    principal: &[u8; 16],
    signing_key: &[u8],
    agreement_key: &[u8],
    admitter: Option<&[u8; 16]>,
    sig: &[u8],
) -> Result<(), CryptoError> {
    let signing = VerifyingKey::try_from_slice(signing_key)?;
    let agreement = usable_agreement_key(agreement_key)?;
    let admitter_id = admitter.map(|a| PrincipalId::from_bytes(*a));
    let msg = sign::admission_message(
        &PrincipalId::from_bytes(*principal),
        &signing,
        &agreement,
        admitter_id.as_ref(),
    );
    // A root admission is self-signed: the admitted key itself verifies it.
    let verifier = if admitter.is_some() {
        VerifyingKey::try_from_slice(admitter_key)?
    } else {
        signing
    };
    verifier.verify(&msg, sig)
}

/// An X25519 key a statement may name: 32 bytes, canonical, not of low order.
pub fn usable_agreement_key(b: &[u8]) -> Result<AgreementPublic, CryptoError> {
    let k = AgreementPublic::try_from_slice(b)?;
    if !k.is_canonical() || k.is_low_order() {
        return Err(CryptoError::InvalidPublicKey);
    }
    Ok(k)
}

fn admission_vector(
    name: &str,
    description: &str,
    a: &Admission,
    expected: &'static str,
) -> Vector {
    let res = lib_admission(
        &a.admitter_key,
        &a.principal,
        &a.signing_key,
        &a.agreement_key,
        a.admitter_id.as_ref(),
        &a.signature,
    );
    assert_eq!(code(&res), expected, "{name}");
    let ok = expected == r::OK;
    Vector {
        name: name.into(),
        section: "6.1",
        operation: "admission.verify",
        description: description.into(),
        inputs: vec![
            (
                "admitter_seed",
                a.admitter_seed.filter(|_| ok).map_or(J::Null, h),
            ),
            ("admitter_key", h(&a.admitter_key)),
            ("principal_id", h(a.principal)),
            ("signing_key", h(&a.signing_key)),
            ("agreement_key", h(&a.agreement_key)),
            ("admitter_id", a.admitter_id.map_or(J::Null, h)),
            ("signature", h(&a.signature)),
        ],
        output: ok.then(|| vec![("message", h(a.message()))]),
        expected,
    }
}

fn admission(rng: &mut ChaCha20Rng, root: bool) -> (Admission, SigningKey) {
    let admitter_seed: [u8; 32] = draw(rng);
    let principal: [u8; 16] = draw(rng);
    let keys = PrincipalKeys::generate(rng);
    let admitter_id: [u8; 16] = draw(rng);
    let (seed, signer) = if root {
        (keys.signing.expose_secret(), keys.signing.clone())
    } else {
        (admitter_seed, SigningKey::from_seed(&admitter_seed))
    };
    let mut a = Admission {
        admitter_seed: Some(seed),
        admitter_key: signer.verifying_key().to_bytes().to_vec(),
        principal,
        signing_key: keys.signing.verifying_key().to_bytes().to_vec(),
        agreement_key: keys.agreement.public_key().to_bytes().to_vec(),
        admitter_id: (!root).then_some(admitter_id),
        signature: Vec::new(),
    };
    a.signature = signer.sign(&a.message()).to_vec();
    (a, signer)
}

fn admissions(v: &mut Vec<Vector>) {
    {
        let name = "admission-signature-root-other-signer";
        let mut rng = rng_for(name);
        let (mut a, _) = admission(&mut rng, true);
        let other = SigningKey::from_seed(&draw(&mut rng));
        a.admitter_key = other.verifying_key().to_bytes().to_vec();
        a.signature = other.sign(&a.message()).to_vec();
        v.push(admission_vector(
            name,
            "A root admission (flag 0) signed by some other key, named as `admitter_key`: a \
             root is verified under its own signing key, whatever admitter key is offered.",
            &a,
            r::BAD_SIGNATURE,
        ));
    }
    {
        let name = "admission-signature-weak-admitter-key";
        let mut rng = rng_for(name);
        let (mut a, _) = admission(&mut rng, false);
        a.admitter_key = identity_bytes().to_vec();
        a.signature = weak_key_signature(
            &EdwardsPoint::default(),
            &identity_bytes(),
            &a.message(),
            &mut rng,
        );
        v.push(admission_vector(
            name,
            "The admitter key is the identity point, with a signature the cofactorless equation \
             accepts: refused as a key.",
            &a,
            r::INVALID_PUBLIC_KEY,
        ));
    }
    {
        let name = "admission-signature-malleated-s";
        let mut rng = rng_for(name);
        let (mut a, _) = admission(&mut rng, false);
        a.signature = malleate(&a.signature);
        v.push(admission_vector(
            name,
            "The admitter's signature with S replaced by S + L.",
            &a,
            r::BAD_SIGNATURE,
        ));
    }
    {
        let name = "admission-signature-weak-signing-key";
        let mut rng = rng_for(name);
        let (mut a, signer) = admission(&mut rng, false);
        a.signing_key = EIGHT_TORSION[4].compress().to_bytes().to_vec();
        a.signature = signer.sign(&a.message()).to_vec();
        v.push(admission_vector(
            name,
            "A valid admitter signature vouching for a small-order (order 2) signing key: the \
             admitted key must itself be valid, so the admission is refused.",
            &a,
            r::INVALID_PUBLIC_KEY,
        ));
    }
    for (name, key, what) in [
        (
            "admission-signature-low-order-agreement-key",
            hex::decode(LOW_ORDER_POINTS[2].1).expect("hex"),
            "a low-order point (order 8)",
        ),
        (
            "admission-signature-non-canonical-agreement-key",
            {
                let mut k = r::x25519_public(&draw(&mut rng_for("admission-x"))).to_vec();
                k[31] |= 0x80;
                k
            },
            "a real key with bit 255 set (non-canonical)",
        ),
    ] {
        let mut rng = rng_for(name);
        let (mut a, signer) = admission(&mut rng, false);
        a.agreement_key = key;
        a.signature = signer.sign(&a.message()).to_vec();
        v.push(admission_vector(
            name,
            &format!(
                "A valid admitter signature vouching for an X25519 key that is {what}: refused."
            ),
            &a,
            r::INVALID_PUBLIC_KEY,
        ));
    }
}

// ---------------------------------------------------------------- §6.2 join

/// What join.verify says, in FORMAT.md §6.2's order, with zopp-crypto.
pub fn lib_join(
    signing_key: &[u8],
    agreement_key: &[u8],
    email: &str,
    token_hash: &[u8; 32],
    sig: &[u8],
) -> Result<(), CryptoError> {
    let key = VerifyingKey::try_from_slice(signing_key)?;
    let agreement = usable_agreement_key(agreement_key)?;
    key.verify(
        &sign::join_message(&key, &agreement, email, token_hash),
        sig,
    )
}

fn joins(v: &mut Vec<Vector>) {
    type Tamper = fn(&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>, &[u8; 32], &str, &mut ChaCha20Rng);
    let cases: [(&str, &str, Tamper, &'static str); 3] = [
        (
            "join-signature-weak-key",
            "The joining key is the identity point, self-signed with a signature the \
             cofactorless equation accepts: refused as a key.",
            |key, agreement, sig, th, email, rng| {
                *key = identity_bytes().to_vec();
                let msg = r::join_message(key, agreement, email, th);
                *sig = weak_key_signature(&EdwardsPoint::default(), key, &msg, rng);
            },
            r::INVALID_PUBLIC_KEY,
        ),
        (
            "join-signature-malleated-s",
            "The join signature with S replaced by S + L.",
            |_, _, sig, _, _, _| *sig = malleate(sig),
            r::BAD_SIGNATURE,
        ),
        (
            "join-signature-low-order-agreement-key",
            "A join self-signed over a low-order X25519 key (order 8): refused.",
            |_, _, _, _, _, _| {},
            r::INVALID_PUBLIC_KEY,
        ),
    ];
    for (name, description, tamper, expected) in cases {
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let k = SigningKey::from_seed(&seed);
        let mut key = k.verifying_key().to_bytes().to_vec();
        let mut agreement = if name.ends_with("low-order-agreement-key") {
            hex::decode(LOW_ORDER_POINTS[3].1).expect("hex")
        } else {
            r::x25519_public(&draw(&mut rng)).to_vec()
        };
        let email = "carol@example.com";
        let th = r::sha256(b"zopp_inv_example");
        let mut sig = k
            .sign(&r::join_message(&key, &agreement, email, &th))
            .to_vec();
        tamper(&mut key, &mut agreement, &mut sig, &th, email, &mut rng);
        let res = lib_join(&key, &agreement, email, &th, &sig);
        assert_eq!(code(&res), expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "6.2",
            operation: "join.verify",
            description: description.into(),
            inputs: vec![
                ("signing_seed", J::Null),
                ("signing_key", h(&key)),
                ("agreement_key", h(&agreement)),
                ("email", s(email)),
                ("token_hash", h(th)),
                ("signature", h(&sig)),
            ],
            output: None,
            expected,
        });
    }
}

// ---------------------------------------------------------------- §7 version claims

fn versions(v: &mut Vec<Vector>) {
    for (name, description, weak) in [
        (
            "version-claims-weak-key",
            "The writer key is the identity point, with a signature the cofactorless equation \
             accepts: refused as a key.",
            true,
        ),
        (
            "version-claims-malleated-s",
            "The writer's signature with S replaced by S + L.",
            false,
        ),
    ] {
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let k = SigningKey::from_seed(&seed);
        let env: [u8; 16] = draw(&mut rng);
        let digest: [u8; 32] = draw(&mut rng);
        let envelope = draw::<60>(&mut rng).to_vec();
        let writer: [u8; 16] = draw(&mut rng);
        let claims = VersionClaims {
            environment: EnvironmentId::from_bytes(env),
            name_digest: NameDigest::try_from_slice(&digest).expect("32 bytes"),
            version: 1,
            key_epoch: 1,
            deleted: false,
            envelope: &envelope,
            prev_hash: [0; 32],
            writer: PrincipalId::from_bytes(writer),
            env_version: 7,
            created_at_ms: 1_795_000_000_000,
        };
        let (key, sig, expected) = if weak {
            let key = identity_bytes().to_vec();
            let sig =
                weak_key_signature(&EdwardsPoint::default(), &key, &claims.message(), &mut rng);
            (key, sig, r::INVALID_PUBLIC_KEY)
        } else {
            (
                k.verifying_key().to_bytes().to_vec(),
                malleate(&claims.sign(&k)),
                r::BAD_SIGNATURE,
            )
        };
        let res = VerifyingKey::try_from_slice(&key).and_then(|k| claims.verify(&k, &sig));
        assert_eq!(code(&res), expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "7",
            operation: "version.verify",
            description: description.into(),
            inputs: vec![
                ("signing_seed", J::Null),
                ("verifying_key", h(&key)),
                ("environment_id", h(env)),
                ("name_digest", h(digest)),
                ("version", n(1u8)),
                ("key_epoch", n(1u8)),
                ("deleted", J::Bool(false)),
                ("envelope", h(&envelope)),
                ("prev_hash", h([0u8; 32])),
                ("writer_id", h(writer)),
                ("env_version", n(7u8)),
                ("created_at_ms", n(1_795_000_000_000i64)),
                ("signature", h(&sig)),
            ],
            output: None,
            expected,
        });
    }
}

// ---------------------------------------------------------------- §8 audit chain

#[derive(Clone)]
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
    prev_hash: [u8; 32],
    hash: [u8; 32],
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

    /// Sets `prev_hash` and recomputes `hash`, as a server writing the entry does.
    fn seal(&mut self, prev: [u8; 32]) {
        self.prev_hash = prev;
        self.hash = self.record().chain_hash(&prev);
    }

    fn json(&self, with_prev: bool) -> J {
        let mut f = vec![
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
        ];
        if with_prev {
            f.push(("prev_hash", h(self.prev_hash)));
        }
        f.push(("hash", h(self.hash)));
        J::Obj(f)
    }
}

fn seal_chain(entries: &mut [Entry], mut prev: [u8; 32]) {
    for e in entries {
        e.seal(prev);
        prev = e.hash;
    }
}

/// An actor of a chain: its text id, keys and email.
struct Actor {
    id: String,
    key: SigningKey,
    /// The signing key the server lists for the actor (normally `key`'s public half).
    listed_key: [u8; 32],
    agreement: [u8; 32],
    email: String,
}

impl Actor {
    fn new(rng: &mut ChaCha20Rng, email: &str) -> Self {
        let id = PrincipalId::from_bytes(draw(rng)).to_string();
        let keys = PrincipalKeys::generate(rng);
        Self {
            id,
            listed_key: keys.signing.verifying_key().to_bytes(),
            agreement: keys.agreement.public_key().to_bytes(),
            key: keys.signing,
            email: email.into(),
        }
    }

    fn json(&self) -> J {
        J::Obj(vec![
            ("principal_id", s(&self.id)),
            ("signing_key", h(self.listed_key)),
            ("agreement_key", h(self.agreement)),
            ("email", s(&self.email)),
        ])
    }

    /// An entry of a signed request by this actor (prev_hash and hash unset).
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        rng: &mut ChaCha20Rng,
        seq: u64,
        t: i64,
        action: &str,
        scope: &str,
        target: String,
        method: &str,
        result: &str,
    ) -> Entry {
        let nonce: [u8; 16] = draw(rng);
        let body = draw::<24>(rng);
        let request_hash = r::sha256(&body);
        let sig = self.key.sign(&sign::request_message(
            &ServerId::from_bytes(ADV_SERVER_ID),
            method,
            t,
            &nonce,
            &request_hash,
        ));
        Entry {
            seq,
            time_ms: t + 9,
            actor: self.id.clone(),
            action: action.into(),
            scope: scope.into(),
            target,
            method: method.into(),
            request_timestamp_ms: t,
            nonce: nonce.to_vec(),
            request_hash: request_hash.to_vec(),
            signature: sig.to_vec(),
            result: result.into(),
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }
}

const T0: i64 = 1_767_312_000_000;

/// A workspace chain segment from entry 41: a write of two secrets (one signed request, two
/// entries), a read and a refused grant, all by one actor.
fn workspace_segment(rng: &mut ChaCha20Rng) -> (Vec<Actor>, [u8; 32], Vec<Entry>) {
    let alice = Actor::new(rng, "alice@example.com");
    let env = PrincipalId::from_bytes(draw(rng)).to_string();
    let scope = format!("environment/{env}");
    let prev: [u8; 32] = draw(rng);
    let target = format!("{}@3", hex::encode(draw::<32>(rng)));
    let write = alice.request(
        rng,
        41,
        T0,
        "secret.write",
        &scope,
        target,
        "/zopp.v1.Zopp/WriteSecrets",
        "ok",
    );
    let mut second = write.clone();
    second.seq = 42;
    second.target = format!("{}@1", hex::encode(draw::<32>(rng)));
    let target = format!("{}@3", hex::encode(draw::<32>(rng)));
    let read = alice.request(
        rng,
        43,
        T0 + 5_000,
        "secret.read",
        &scope,
        target,
        "/zopp.v1.Zopp/GetSecret",
        "ok",
    );
    let target = format!("principal/{}", PrincipalId::from_bytes(draw(rng)));
    let grant = alice.request(
        rng,
        44,
        T0 + 9_000,
        "permission.set",
        &scope,
        target,
        "/zopp.v1.Zopp/SetPermission",
        "PERMISSION_DENIED",
    );
    let mut entries = vec![write, second, read, grant];
    seal_chain(&mut entries, prev);
    (vec![alice], prev, entries)
}

/// A server chain from entry 1: an operator-created invite (no actor), then the join that
/// redeemed it, self-signed over the join message, then the new user's first signed call.
fn server_segment(rng: &mut ChaCha20Rng) -> (Vec<Actor>, [u8; 32], Vec<Entry>) {
    let bob = Actor::new(rng, "bob@example.com");
    let invite = PrincipalId::from_bytes(draw(rng)).to_string();
    let token_hash = r::sha256(format!("zopp_inv_{}", hex::encode(draw::<16>(rng))).as_bytes());
    let operator = Entry {
        seq: 1,
        time_ms: T0,
        actor: String::new(),
        action: "invite.create".into(),
        scope: "server".into(),
        target: format!("invite/{invite}"),
        method: "zopp-server".into(),
        request_timestamp_ms: T0,
        nonce: Vec::new(),
        request_hash: Vec::new(),
        signature: Vec::new(),
        result: "ok".into(),
        prev_hash: [0; 32],
        hash: [0; 32],
    };
    let join_sig = bob.key.sign(&sign::join_message(
        &bob.key.verifying_key(),
        &AgreementPublic::try_from_slice(&bob.agreement).expect("32 bytes"),
        &bob.email,
        &token_hash,
    ));
    let join = Entry {
        seq: 2,
        time_ms: T0 + 60_000,
        actor: bob.id.clone(),
        action: "principal.join".into(),
        scope: "server".into(),
        target: format!("user/{}", PrincipalId::from_bytes(draw(rng))),
        method: "/zopp.v1.Zopp/Join".into(),
        request_timestamp_ms: T0 + 60_000,
        nonce: Vec::new(),
        request_hash: token_hash.to_vec(),
        signature: join_sig.to_vec(),
        result: "ok".into(),
        prev_hash: [0; 32],
        hash: [0; 32],
    };
    let target = format!("workspace/{}", PrincipalId::from_bytes(draw(rng)));
    let create = bob.request(
        rng,
        3,
        T0 + 61_000,
        "workspace.create",
        "server",
        target,
        "/zopp.v1.Zopp/CreateWorkspace",
        "ok",
    );
    let mut entries = vec![operator, join, create];
    seal_chain(&mut entries, [0; 32]);
    (vec![bob], [0; 32], entries)
}

fn audit_chains(v: &mut Vec<Vector>) {
    let name = "audit-chain-from-pinned-head-ok";
    let mut rng = rng_for(name);
    let (_, prev, entries) = workspace_segment(&mut rng);
    let canonical: Vec<J> = entries.iter().map(|e| h(e.record().canonical())).collect();
    v.push(Vector {
        name: name.into(),
        section: "8",
        operation: "audit.chain",
        description: "Entries 41 to 44 hashed from the stored hash of entry 40 (a non-zero \
                      prev_hash), as a verifier continuing from a pinned head does."
            .into(),
        inputs: vec![
            ("prev_hash", h(prev)),
            (
                "entries",
                J::Arr(entries.iter().map(|e| e.json(false)).collect()),
            ),
        ],
        output: Some(vec![
            ("canonical", J::Arr(canonical)),
            ("head", h(entries.last().expect("entries").hash)),
        ]),
        expected: r::OK,
    });
}

fn audit_verifications(v: &mut Vec<Vector>) {
    type Tamper = fn(&mut Vec<Actor>, &mut Vec<Entry>, [u8; 32], &mut ChaCha20Rng);
    let cases: [(&str, &str, bool, Tamper, &'static str); 12] = [
        (
            "audit-verify-ok",
            "Entries 41 to 44 of a workspace chain, from the pinned hash of entry 40: one \
             WriteSecrets call (two entries, one signature), a read, and a refused call.",
            false,
            |_, _, _, _| {},
            r::OK,
        ),
        (
            "audit-verify-server-chain-ok",
            "A server chain: an operator's entry (no actor, no signature), a join (signed over \
             the join message with the token hash as request_hash), then a signed call.",
            true,
            |_, _, _, _| {},
            r::OK,
        ),
        (
            "audit-verify-sequence-gap",
            "Entry 42 removed; entry 43 keeps its number and is re-linked to entry 41 with \
             freshly computed hashes: the sequence has a gap.",
            false,
            |_, e, prev, _| {
                e.remove(1);
                seal_chain(e, prev);
            },
            SEQUENCE_GAP,
        ),
        (
            "audit-verify-out-of-order",
            "Entry 41 appears twice (a replayed entry with recomputed hashes).",
            false,
            |_, e, prev, _| {
                let first = e[0].clone();
                e.insert(1, first);
                seal_chain(e, prev);
            },
            OUT_OF_ORDER,
        ),
        (
            "audit-verify-broken-link",
            "Entry 43's stored prev_hash is not entry 42's hash (its own hash is computed from \
             that wrong prev_hash).",
            false,
            |_, e, _, rng| {
                let wrong: [u8; 32] = draw(rng);
                e[2].seal(wrong);
                let mut prev = e[2].hash;
                for x in e.iter_mut().skip(3) {
                    x.seal(prev);
                    prev = x.hash;
                }
            },
            BROKEN_LINK,
        ),
        (
            "audit-verify-hash-mismatch",
            "Entry 44's result edited after the fact; stored hashes kept.",
            false,
            |_, e, _, _| e[3].result = "ok".into(),
            r::HASH_MISMATCH,
        ),
        (
            "audit-verify-bad-actor-signature",
            "Entry 43 claims another secret version in its request_hash than its actor signed, \
             with hashes recomputed: the chain is intact, the actor signature is not.",
            false,
            |_, e, prev, rng| {
                e[2].request_hash = draw::<32>(rng).to_vec();
                seal_chain(e, prev);
            },
            r::BAD_SIGNATURE,
        ),
        (
            "audit-verify-join-signed-as-request",
            "The join entry carries a valid request signature (§4) over its method, timestamp, \
             nonce and request_hash instead of the join signature (§6.2): a join is verified \
             over the join message only.",
            true,
            |a, e, prev, rng| {
                let nonce: [u8; 16] = draw(rng);
                let th: [u8; 32] = e[1].request_hash.clone().try_into().expect("32 bytes");
                e[1].nonce = nonce.to_vec();
                e[1].signature = a[0]
                    .key
                    .sign(&sign::request_message(
                        &ServerId::from_bytes(ADV_SERVER_ID),
                        &e[1].method,
                        e[1].request_timestamp_ms,
                        &nonce,
                        &th,
                    ))
                    .to_vec();
                seal_chain(e, prev);
            },
            r::BAD_SIGNATURE,
        ),
        (
            "audit-verify-join-wrong-email",
            "The server lists the joining actor with another email than the one its join \
             signature covers.",
            true,
            |a, _, _, _| a[0].email = "mallory@example.com".into(),
            r::BAD_SIGNATURE,
        ),
        (
            "audit-verify-unsigned-workspace-entry",
            "Entry 43 of a workspace chain has no actor (and no signature), with hashes \
             recomputed: only the server chain may hold unsigned entries.",
            false,
            |_, e, prev, _| {
                e[2].actor.clear();
                e[2].signature.clear();
                seal_chain(e, prev);
            },
            UNSIGNED_ENTRY,
        ),
        (
            "audit-verify-unknown-actor",
            "The server lists no keys for the actor of the entries.",
            false,
            |a, _, _, _| a.clear(),
            UNKNOWN_ACTOR,
        ),
        (
            "audit-verify-weak-actor-key",
            "The actor's listed signing key is the identity point: no valid key for the actor.",
            false,
            |a, _, _, _| a[0].listed_key = identity_bytes(),
            UNKNOWN_ACTOR,
        ),
    ];
    for (name, description, server, tamper, expected) in cases {
        let mut rng = rng_for(name);
        let (mut actors, prev, mut entries) = if server {
            server_segment(&mut rng)
        } else {
            workspace_segment(&mut rng)
        };
        tamper(&mut actors, &mut entries, prev, &mut rng);
        let actor_json: Vec<J> = actors.iter().map(Actor::json).collect();
        let inputs = vec![
            ("chain", s(if server { "server" } else { "workspace" })),
            ("server_id", h(ADV_SERVER_ID)),
            ("start_seq", n(if server { 1u64 } else { 41 })),
            ("prev_hash", h(prev)),
            ("actors", J::Arr(actor_json)),
            (
                "entries",
                J::Arr(entries.iter().map(|e| e.json(true)).collect()),
            ),
        ];
        let parsed = to_value(&J::Obj(inputs.clone()));
        let got = audit_verify_lib(&parsed).expect("well-formed inputs");
        assert_eq!(got.0, expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "8",
            operation: "audit.verify",
            description: description.into(),
            inputs,
            output: (expected == r::OK).then(|| vec![("head_seq", n(got.1)), ("head", h(got.2))]),
            expected,
        });
    }
}

/// Outcome: an entry's sequence number is above the one due (entries are missing).
pub const SEQUENCE_GAP: &str = "sequence_gap";
/// Outcome: an entry's sequence number is below the one due (repeated or reordered entry).
pub const OUT_OF_ORDER: &str = "out_of_order";
/// Outcome: an entry's stored prev_hash is not its predecessor's hash.
pub const BROKEN_LINK: &str = "broken_link";
/// Outcome: an entry without an actor on a workspace chain.
pub const UNSIGNED_ENTRY: &str = "unsigned_entry";
/// Outcome: an actor the server lists no valid signing key for.
pub const UNKNOWN_ACTOR: &str = "unknown_actor";

fn to_value(j: &J) -> Value {
    serde_json::from_str(&j.render()).expect("the writer renders JSON")
}

/// The join methods, whose entries carry a join signature (FORMAT.md §6.2) instead of a
/// request signature.
const JOIN_METHODS: [&str; 2] = ["/zopp.v1.Zopp/Join", "/zopp.v1.Zopp/JoinWorkspace"];

/// Builds a join message from the actor's signing key, agreement key, email and token hash.
type JoinMessage = fn(&[u8], &[u8], &str, &[u8; 32]) -> Vec<u8>;

/// Builds a request message from the server id, method, time, nonce and body hash.
type RequestMessage = fn(&[u8; 16], &str, i64, &[u8; 16], &[u8; 32]) -> Vec<u8>;

/// How one implementation hashes and verifies, so the algorithm of FORMAT.md §8 runs once over
/// zopp-crypto and once over the reference implementation.
struct Primitives {
    canonical: fn(&AuditRecord<'_>) -> Vec<u8>,
    hash: fn(&[u8; 32], &[u8]) -> [u8; 32],
    request_message: RequestMessage,
    join_message: JoinMessage,
    verify: fn(&[u8], &[u8], &[u8]) -> &'static str,
    key_ok: fn(&[u8]) -> bool,
}

const LIB: Primitives = Primitives {
    canonical: |rec| rec.canonical(),
    hash: |prev, c| zopp_crypto::sha256(&[prev.as_slice(), c].concat()),
    request_message: |sv, m, t, n, h| sign::request_message(&ServerId::from_bytes(*sv), m, t, n, h),
    join_message: |k, a, e, t| {
        let (Ok(k), Ok(a)) = (
            VerifyingKey::try_from_slice(k),
            AgreementPublic::try_from_slice(a),
        ) else {
            return Vec::new();
        };
        sign::join_message(&k, &a, e, t)
    },
    verify: |k, m, s| code(&lib_verify(k, m, s)),
    key_ok: |k| VerifyingKey::try_from_slice(k).is_ok(),
};

const REFERENCE: Primitives = Primitives {
    canonical: |rec| {
        r::audit_canonical(&r::AuditFields {
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
            strings2: [
                rec.nonce,
                rec.request_hash,
                rec.signature,
                rec.result.as_bytes(),
            ],
        })
    },
    hash: |prev, c| r::audit_hash(prev, c),
    request_message: |sv, m, t, n, h| r::request_message(sv, m, t, n, h),
    join_message: |k, a, e, t| r::join_message(k, a, e, t),
    verify: |k, m, s| match r::ed25519_verify(k, m, s) {
        Ok(()) => r::OK,
        Err(e) => e,
    },
    key_ok: |k| r::ed25519_key(k).is_ok(),
};

fn audit_verify_lib(i: &Value) -> Result<(&'static str, u64, [u8; 32]), String> {
    audit_verify_with(&LIB, i)
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, String> {
    v.get(k).ok_or_else(|| format!("no field `{k}`"))
}
fn text<'a>(v: &'a Value, k: &str) -> Result<&'a str, String> {
    field(v, k)?
        .as_str()
        .ok_or_else(|| format!("`{k}` is not a string"))
}
fn bytes(v: &Value, k: &str) -> Result<Vec<u8>, String> {
    hex::decode(text(v, k)?).map_err(|e| format!("`{k}`: {e}"))
}
fn int(v: &Value, k: &str) -> Result<i64, String> {
    field(v, k)?
        .as_i64()
        .ok_or_else(|| format!("`{k}` is not an integer"))
}
fn arr32(v: &Value, k: &str) -> Result<[u8; 32], String> {
    bytes(v, k)?
        .try_into()
        .map_err(|_| format!("`{k}` is not 32 bytes"))
}

/// FORMAT.md §8's verification of a chain segment: the outcome, the head's sequence number and
/// the head hash.
fn audit_verify_with(p: &Primitives, i: &Value) -> Result<(&'static str, u64, [u8; 32]), String> {
    let server_chain = match text(i, "chain")? {
        "server" => true,
        "workspace" => false,
        other => return Err(format!("unknown chain `{other}`")),
    };
    let start = u64::try_from(int(i, "start_seq")?).map_err(|_| "negative start_seq")?;
    let server_id: [u8; 16] = bytes(i, "server_id")?
        .try_into()
        .map_err(|_| "server_id is not 16 bytes")?;
    let mut prev = arr32(i, "prev_hash")?;
    let actors = field(i, "actors")?
        .as_array()
        .ok_or("`actors` is not an array")?;
    let entries = field(i, "entries")?
        .as_array()
        .ok_or("`entries` is not an array")?;
    let mut head_seq = start.saturating_sub(1);
    for (next, e) in (start..).zip(entries) {
        let seq = u64::try_from(int(e, "seq")?).map_err(|_| "negative seq")?;
        if seq > next {
            return Ok((SEQUENCE_GAP, 0, [0; 32]));
        }
        if seq < next {
            return Ok((OUT_OF_ORDER, 0, [0; 32]));
        }
        if arr32(e, "prev_hash")? != prev {
            return Ok((BROKEN_LINK, 0, [0; 32]));
        }
        let (nonce, request_hash, signature) = (
            bytes(e, "nonce")?,
            bytes(e, "request_hash")?,
            bytes(e, "signature")?,
        );
        let rec = AuditRecord {
            seq,
            time_ms: int(e, "time_ms")?,
            actor: text(e, "actor")?,
            action: text(e, "action")?,
            scope: text(e, "scope")?,
            target: text(e, "target")?,
            method: text(e, "method")?,
            request_timestamp_ms: int(e, "request_timestamp_ms")?,
            nonce: &nonce,
            request_hash: &request_hash,
            signature: &signature,
            result: text(e, "result")?,
        };
        let hash = (p.hash)(&prev, &(p.canonical)(&rec));
        if hash != arr32(e, "hash")? {
            return Ok((r::HASH_MISMATCH, 0, [0; 32]));
        }
        if rec.actor.is_empty() {
            if !server_chain {
                return Ok((UNSIGNED_ENTRY, 0, [0; 32]));
            }
        } else {
            let Some(actor) = actors
                .iter()
                .find(|a| a.get("principal_id").and_then(Value::as_str) == Some(rec.actor))
            else {
                return Ok((UNKNOWN_ACTOR, 0, [0; 32]));
            };
            let key = bytes(actor, "signing_key")?;
            if !(p.key_ok)(&key) {
                return Ok((UNKNOWN_ACTOR, 0, [0; 32]));
            }
            let message = if JOIN_METHODS.contains(&rec.method) {
                let agreement = bytes(actor, "agreement_key")?;
                match <[u8; 32]>::try_from(request_hash.as_slice()) {
                    Ok(th) if agreement.len() == 32 => Some((p.join_message)(
                        &key,
                        &agreement,
                        text(actor, "email")?,
                        &th,
                    )),
                    _ => None,
                }
            } else {
                match (
                    <[u8; 16]>::try_from(nonce.as_slice()),
                    <[u8; 32]>::try_from(request_hash.as_slice()),
                ) {
                    (Ok(n), Ok(h)) => Some((p.request_message)(
                        &server_id,
                        rec.method,
                        rec.request_timestamp_ms,
                        &n,
                        &h,
                    )),
                    _ => None,
                }
            };
            let ok = message.is_some_and(|m| (p.verify)(&key, &m, &signature) == r::OK);
            if !ok {
                return Ok((r::BAD_SIGNATURE, 0, [0; 32]));
            }
        }
        prev = hash;
        head_seq = seq;
    }
    Ok((r::OK, head_seq, prev))
}

/// Checks an `audit.verify` vector with zopp-crypto and with the reference implementation.
pub fn check_audit_verify(inputs: &Value, output: &Value, expected: &str) -> Result<(), String> {
    let lib = audit_verify_with(&LIB, inputs)?;
    let reference = audit_verify_with(&REFERENCE, inputs)?;
    if lib.0 != expected {
        return Err(format!(
            "zopp-crypto says `{}`, the vector expects `{expected}`",
            lib.0
        ));
    }
    if reference.0 != expected {
        return Err(format!(
            "the reference implementation says `{}`, the vector expects `{expected}`",
            reference.0
        ));
    }
    if expected == r::OK {
        let head_seq = output.get("head_seq").and_then(Value::as_u64);
        let head = output
            .get("head")
            .and_then(Value::as_str)
            .map(str::to_owned);
        for (who, got) in [("zopp-crypto", lib), ("reference", reference)] {
            if head_seq != Some(got.1) || head.as_deref() != Some(hex::encode(got.2).as_str()) {
                return Err(format!("{who}: head {} at {}", hex::encode(got.2), got.1));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- §9 key file

fn key_files(v: &mut Vec<Vector>) {
    // Sealed with in-bounds parameters and opened with the passphrase: decode succeeds.
    for (name, params, description) in [
        (
            "keyfile-sealed-decode-ok",
            TINY,
            "Decode a sealed key file with its passphrase (m = 8 KiB, t = 1, p = 1).",
        ),
        (
            "keyfile-sealed-time-cost-32-ok",
            KdfParams {
                m_cost_kib: 8,
                t_cost: 32,
                p_cost: 1,
            },
            "t = 32, the largest accepted time cost.",
        ),
        (
            "keyfile-sealed-lanes-16-ok",
            KdfParams {
                m_cost_kib: 128,
                t_cost: 1,
                p_cost: 16,
            },
            "p = 16, the largest accepted parallelism, with m = 8·p = 128 KiB.",
        ),
        (
            "keyfile-sealed-memory-8p-ok",
            KdfParams {
                m_cost_kib: 16,
                t_cost: 1,
                p_cost: 2,
            },
            "m = 8·p exactly (p = 2, m = 16 KiB), the smallest accepted memory for p.",
        ),
    ] {
        let mut rng = rng_for(name);
        let keys = PrincipalKeys::generate(&mut rng);
        let pass = b"correct horse battery staple";
        let enc = keyfile::encode_sealed(&keys, pass, params, &mut rng).expect("in bounds");
        let back = keyfile::decode(&enc, Some(pass.as_slice())).expect("decodes");
        v.push(Vector {
            name: name.into(),
            section: "9",
            operation: "keyfile.decode",
            description: description.into(),
            inputs: vec![("encoded", h(&enc)), ("passphrase", h(pass))],
            output: Some(vec![
                ("signing_seed", h(back.signing.expose_secret())),
                ("agreement_secret", h(back.agreement.expose_secret())),
                ("verifying_key", h(back.signing.verifying_key().to_bytes())),
                (
                    "agreement_public",
                    h(back.agreement.public_key().to_bytes()),
                ),
            ]),
            expected: r::OK,
        });
    }

    // Header edits of a sealed file, decoded with or without the passphrase.
    type Edit = fn(&mut Vec<u8>);
    let cases: [(&str, &str, Edit, bool, &'static str); 9] = [
        (
            "keyfile-sealed-time-cost-33",
            "t = 33, one past the largest accepted time cost.",
            |e| e[6..10].copy_from_slice(&33u32.to_be_bytes()),
            true,
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-lanes-zero",
            "p = 0.",
            |e| e[10..14].copy_from_slice(&0u32.to_be_bytes()),
            true,
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-lanes-17",
            "p = 17, one past the largest accepted parallelism (m = 8·17 KiB, so only p is out \
             of bounds).",
            |e| {
                e[2..6].copy_from_slice(&136u32.to_be_bytes());
                e[10..14].copy_from_slice(&17u32.to_be_bytes());
            },
            true,
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-memory-below-8p",
            "p = 2 with m = 15 KiB, one below 8·p.",
            |e| {
                e[2..6].copy_from_slice(&15u32.to_be_bytes());
                e[10..14].copy_from_slice(&2u32.to_be_bytes());
            },
            true,
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-memory-2gib-accepted",
            "m = 2,097,152 KiB (2 GiB), the largest accepted memory, decoded without a \
             passphrase: the bounds pass and the missing passphrase is reported, without \
             running Argon2.",
            |e| e[2..6].copy_from_slice(&(2u32 * 1024 * 1024).to_be_bytes()),
            false,
            r::DECRYPTION_FAILED,
        ),
        (
            "keyfile-sealed-time-cost-32-accepted",
            "t = 32 decoded without a passphrase: in bounds, so the missing passphrase is \
             reported.",
            |e| e[6..10].copy_from_slice(&32u32.to_be_bytes()),
            false,
            r::DECRYPTION_FAILED,
        ),
        (
            "keyfile-sealed-out-of-bounds-no-passphrase",
            "t = 33 decoded without a passphrase: the parameters are checked before the \
             passphrase, so the outcome is kdf_params.",
            |e| e[6..10].copy_from_slice(&33u32.to_be_bytes()),
            false,
            r::KDF_PARAMS,
        ),
        (
            "keyfile-sealed-trailing-byte",
            "A sealed key file with one zero byte appended: 135 bytes, not 134.",
            |e| e.push(0),
            true,
            r::MALFORMED,
        ),
        (
            "keyfile-plain-trailing-byte",
            "A plain key file with one zero byte appended: 67 bytes, not 66.",
            |e| {
                let mut plain = vec![0x01, 0x00];
                plain.extend_from_slice(&e[54..118]);
                plain.push(0);
                *e = plain;
            },
            false,
            r::MALFORMED,
        ),
    ];
    for (name, description, edit, with_pass, expected) in cases {
        let mut rng = rng_for(name);
        let keys = PrincipalKeys::generate(&mut rng);
        let pass = b"correct horse battery staple";
        let mut enc = keyfile::encode_sealed(&keys, pass, TINY, &mut rng).expect("in bounds");
        edit(&mut enc);
        let pass = with_pass.then_some(pass.as_slice());
        let res = keyfile::decode(&enc, pass);
        assert_eq!(code(&res), expected, "{name}");
        v.push(Vector {
            name: name.into(),
            section: "9",
            operation: "keyfile.decode",
            description: description.into(),
            inputs: vec![
                ("encoded", h(&enc)),
                ("passphrase", pass.map_or(J::Null, h)),
            ],
            output: None,
            expected,
        });
    }
}

// ---------------------------------------------------------------- §10 principal token

fn tokens(v: &mut Vec<Vector>) {
    type Edit = fn(&str) -> String;
    let cases: [(&str, &str, Edit, &'static str); 8] = [
        (
            "token-trailing-newline-ok",
            "The token followed by a line feed, as read from a file: accepted.",
            |t| format!("{t}\n"),
            r::OK,
        ),
        (
            "token-surrounding-whitespace-ok",
            "Space and tab before, CR LF after: the four whitespace characters of §1 are \
             trimmed.",
            |t| format!(" \t{t}\r\n"),
            r::OK,
        ),
        (
            "token-plus",
            "One body character replaced by `+` (standard base64, not base64url).",
            |t| replace_body_char(t, '+'),
            r::MALFORMED,
        ),
        (
            "token-slash",
            "One body character replaced by `/` (standard base64, not base64url).",
            |t| replace_body_char(t, '/'),
            r::MALFORMED,
        ),
        (
            "token-inner-space",
            "A space inside the body.",
            |t| format!("{} {}", &t[..40], &t[40..]),
            r::MALFORMED,
        ),
        (
            "token-inner-newline",
            "A line feed inside the body, as from a wrapped paste.",
            |t| format!("{}\n{}", &t[..60], &t[60..]),
            r::MALFORMED,
        ),
        (
            "token-trailing-no-break-space",
            "U+00A0 (no-break space) after the token: not whitespace in the sense of §1, so not \
             trimmed, and not base64url.",
            |t| format!("{t}\u{a0}"),
            r::MALFORMED,
        ),
        (
            "token-vertical-tab",
            "A vertical tab (U+000B) after the token: not one of §1's four whitespace \
             characters.",
            |t| format!("{t}\u{b}"),
            r::MALFORMED,
        ),
    ];
    for (name, description, edit, expected) in cases {
        let mut rng = rng_for(name);
        let principal: [u8; 16] = draw(&mut rng);
        let keys = PrincipalKeys::generate(&mut rng);
        let (token_share, server_share) = token::split(&keys.agreement, &mut rng);
        let t = PrincipalToken {
            principal: PrincipalId::from_bytes(principal),
            signing: keys.signing.clone(),
            share: token_share.clone(),
            binding: super::generate::token_binding(&mut rng),
        };
        let text = edit(&t.encode());
        let res = PrincipalToken::try_parse(&text);
        assert_eq!(code(&res), expected, "{name}");
        let ok = expected == r::OK;
        v.push(Vector {
            name: name.into(),
            section: "10",
            operation: "token.parse",
            description: description.into(),
            inputs: vec![
                ("token", s(&text)),
                (
                    "server_share",
                    if ok {
                        h(server_share.expose_secret())
                    } else {
                        J::Null
                    },
                ),
            ],
            output: ok.then(|| {
                vec![
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
                ]
            }),
            expected,
        });
    }
}

/// Replaces the tenth body character with `c`.
fn replace_body_char(t: &str, c: char) -> String {
    let mut chars: Vec<char> = t.chars().collect();
    chars["zopp_".len() + 10] = c;
    chars.into_iter().collect()
}
