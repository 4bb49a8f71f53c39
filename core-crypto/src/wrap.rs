//! Key wrapping: a scope key to a principal (ephemeral-static X25519, FORMAT.md §3.2) and a child
//! scope key under its parent (FORMAT.md §3.3).

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ids::PrincipalId;
use crate::keys::{AgreementPublic, AgreementSecret, ScopeKey, ScopeKind};
use crate::{CryptoError, Result};

/// Format version byte of every zopp binary format.
pub const FORMAT_V1: u8 = 0x01;
/// Algorithm id: XChaCha20-Poly1305 under a key derived by HKDF-SHA256 from a symmetric key.
pub const ALG_XCHACHA_HKDF: u8 = 0x01;
/// Algorithm id: ephemeral-static X25519 → HKDF-SHA256 → XChaCha20-Poly1305.
pub const ALG_X25519_XCHACHA: u8 = 0x02;

/// HKDF info for the key-encryption key of a recipient wrap.
pub const WRAP_X25519_LABEL: &[u8] = b"zopp/v1/wrap-x25519";
/// HKDF info for the key-encryption key of a parent wrap.
pub const WRAP_CHILD_LABEL: &[u8] = b"zopp/v1/wrap-child";
/// AAD prefix of a recipient wrap.
pub const WRAP_RECIPIENT_AAD: &[u8] = b"zopp/v1/wrapped-to";
/// AAD prefix of a parent wrap.
pub const WRAP_CHILD_AAD: &[u8] = b"zopp/v1/wrapped-under";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Length of a wrap to a recipient: version, alg, ephemeral key, nonce, key, tag.
pub const RECIPIENT_WRAP_LEN: usize = 2 + 32 + NONCE_LEN + KEY_LEN + TAG_LEN;
/// Length of a wrap under a parent key: version, alg, nonce, key, tag.
pub const CHILD_WRAP_LEN: usize = 2 + NONCE_LEN + KEY_LEN + TAG_LEN;

/// Which key a wrap carries: bound into the AAD so a wrapped key cannot be moved to another
/// scope, epoch or recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyContext {
    /// Level of the key.
    pub kind: ScopeKind,
    /// Id of the workspace, project or environment (16 raw UUID bytes).
    pub id: [u8; 16],
    /// Key epoch (1 for workspace and project keys; environments count up on rotation).
    pub epoch: u32,
}

impl KeyContext {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.epoch.to_be_bytes());
    }
}

/// A scope key sealed for someone; opaque to the server.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey(Vec<u8>);

impl WrappedKey {
    /// Wraps stored bytes (validated when unwrapped).
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

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

fn recipient_aad(ctx: &KeyContext, recipient: &PrincipalId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_RECIPIENT_AAD.len() + 21 + 16);
    aad.extend_from_slice(WRAP_RECIPIENT_AAD);
    ctx.encode(&mut aad);
    aad.extend_from_slice(recipient.as_bytes());
    aad
}

fn recipient_kek(
    shared: &[u8; 32],
    ephemeral: &AgreementPublic,
    recipient: &AgreementPublic,
) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(&ephemeral.to_bytes());
    salt[32..].copy_from_slice(&recipient.to_bytes());
    let mut kek = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(WRAP_X25519_LABEL, kek.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    kek
}

/// Wraps `key` to `recipient_key` of principal `recipient` (FORMAT.md §3.2).
///
/// # Errors
/// [`CryptoError::InvalidPublicKey`] if the recipient key is not canonical (bit 255 set, or
/// u ≥ p: the recipient could never open the wrap) or is a low-order point.
pub fn wrap_to_recipient(
    key: &ScopeKey,
    ctx: &KeyContext,
    recipient: &PrincipalId,
    recipient_key: &AgreementPublic,
    rng: &mut impl CryptoRngCore,
) -> Result<WrappedKey> {
    if !recipient_key.is_canonical() {
        return Err(CryptoError::InvalidPublicKey);
    }
    let eph = AgreementSecret::generate(rng);
    let eph_pub = eph.public_key();
    let shared = eph.agree(recipient_key)?;
    let kek = recipient_kek(&shared, &eph_pub, recipient_key);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ct = XChaCha20Poly1305::new(kek.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key.expose_secret(),
                aad: &recipient_aad(ctx, recipient),
            },
        )
        .map_err(|_| CryptoError::DecryptionFailed)?;
    let mut out = Vec::with_capacity(RECIPIENT_WRAP_LEN);
    out.push(FORMAT_V1);
    out.push(ALG_X25519_XCHACHA);
    out.extend_from_slice(&eph_pub.to_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(WrappedKey(out))
}

/// Opens a key wrapped to `me` (FORMAT.md §3.2).
///
/// # Errors
/// [`CryptoError::DecryptionFailed`] on any mismatch; format errors for bad framing.
pub fn unwrap_from_recipient(
    wrapped: &WrappedKey,
    ctx: &KeyContext,
    me: &PrincipalId,
    my_secret: &AgreementSecret,
) -> Result<ScopeKey> {
    let b = wrapped.as_bytes();
    if b.len() < 2 {
        return Err(CryptoError::Malformed("wrapped key"));
    }
    if b[0] != FORMAT_V1 || b[1] != ALG_X25519_XCHACHA {
        return Err(CryptoError::UnsupportedFormat);
    }
    if b.len() != RECIPIENT_WRAP_LEN {
        return Err(CryptoError::Malformed("wrapped key"));
    }
    let eph_pub = AgreementPublic::try_from_slice(&b[2..34])?;
    let nonce = &b[34..34 + NONCE_LEN];
    let ct = &b[34 + NONCE_LEN..];
    let shared = my_secret
        .agree(&eph_pub)
        .map_err(|_| CryptoError::DecryptionFailed)?;
    let kek = recipient_kek(&shared, &eph_pub, &my_secret.public_key());
    open_key(&kek, nonce, ct, &recipient_aad(ctx, me))
}

fn child_aad(child: &KeyContext, parent: &KeyContext) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_CHILD_AAD.len() + 42);
    aad.extend_from_slice(WRAP_CHILD_AAD);
    child.encode(&mut aad);
    parent.encode(&mut aad);
    aad
}

fn child_kek(parent: &ScopeKey) -> Zeroizing<[u8; 32]> {
    let mut kek = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, parent.expose_secret())
        .expand(WRAP_CHILD_LABEL, kek.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    kek
}

/// Wraps `child` under `parent` (PK under WK, EK under PK, EK(n) under EK(n+1); FORMAT.md §3.3).
pub fn wrap_under(
    child: &ScopeKey,
    child_ctx: &KeyContext,
    parent: &ScopeKey,
    parent_ctx: &KeyContext,
    rng: &mut impl CryptoRngCore,
) -> WrappedKey {
    let kek = child_kek(parent);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ct = XChaCha20Poly1305::new(kek.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: child.expose_secret(),
                aad: &child_aad(child_ctx, parent_ctx),
            },
        )
        .expect("XChaCha20-Poly1305 encryption of 32 bytes cannot fail");
    let mut out = Vec::with_capacity(CHILD_WRAP_LEN);
    out.push(FORMAT_V1);
    out.push(ALG_XCHACHA_HKDF);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    WrappedKey(out)
}

/// Opens a child key wrapped under `parent` (FORMAT.md §3.3).
///
/// # Errors
/// [`CryptoError::DecryptionFailed`] on any mismatch; format errors for bad framing.
pub fn unwrap_under(
    wrapped: &WrappedKey,
    child_ctx: &KeyContext,
    parent: &ScopeKey,
    parent_ctx: &KeyContext,
) -> Result<ScopeKey> {
    let b = wrapped.as_bytes();
    if b.len() < 2 {
        return Err(CryptoError::Malformed("wrapped key"));
    }
    if b[0] != FORMAT_V1 || b[1] != ALG_XCHACHA_HKDF {
        return Err(CryptoError::UnsupportedFormat);
    }
    if b.len() != CHILD_WRAP_LEN {
        return Err(CryptoError::Malformed("wrapped key"));
    }
    let kek = child_kek(parent);
    open_key(
        &kek,
        &b[2..2 + NONCE_LEN],
        &b[2 + NONCE_LEN..],
        &child_aad(child_ctx, parent_ctx),
    )
}

fn open_key(kek: &[u8; 32], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Result<ScopeKey> {
    let pt = Zeroizing::new(
        XChaCha20Poly1305::new(kek.into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::DecryptionFailed)?,
    );
    let arr: Zeroizing<[u8; 32]> = Zeroizing::new(
        pt.as_slice()
            .try_into()
            .map_err(|_| CryptoError::DecryptionFailed)?,
    );
    Ok(ScopeKey::from_bytes(*arr))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use rstest::rstest;

    /// The scope key being wrapped.
    const SCOPE_KEY: [u8; 32] = [0x5c; 32];
    /// A parent scope key.
    const PARENT_KEY: [u8; 32] = [0x9a; 32];
    /// The recipient's X25519 secret.
    const RECIPIENT_SECRET: [u8; 32] = [0x21; 32];
    /// Another principal's X25519 secret.
    const OTHER_SECRET: [u8; 32] = [0x22; 32];
    /// The recipient's principal id.
    const RECIPIENT: [u8; 16] = [0xa1; 16];
    /// Another principal id.
    const OTHER: [u8; 16] = [0xa2; 16];
    /// A scope id.
    const SCOPE_ID: [u8; 16] = [0xc3; 16];
    /// A parent scope id.
    const PARENT_ID: [u8; 16] = [0xc4; 16];

    /// Curve25519 points of small order (and their non-canonical and high-bit encodings): X25519
    /// with any clamped scalar maps them to the all-zero output.
    pub(crate) const LOW_ORDER_POINTS: [&str; 12] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(3)
    }

    fn ctx() -> KeyContext {
        KeyContext {
            kind: ScopeKind::Environment,
            id: SCOPE_ID,
            epoch: 4,
        }
    }

    fn parent_ctx() -> KeyContext {
        KeyContext {
            kind: ScopeKind::Project,
            id: PARENT_ID,
            epoch: 1,
        }
    }

    fn recipient_secret() -> AgreementSecret {
        AgreementSecret::from_bytes(RECIPIENT_SECRET)
    }

    fn wrapped_to_recipient() -> WrappedKey {
        wrap_to_recipient(
            &ScopeKey::from_bytes(SCOPE_KEY),
            &ctx(),
            &PrincipalId::from_bytes(RECIPIENT),
            &recipient_secret().public_key(),
            &mut rng(),
        )
        .expect("valid recipient key")
    }

    fn wrapped_under_parent() -> WrappedKey {
        wrap_under(
            &ScopeKey::from_bytes(SCOPE_KEY),
            &ctx(),
            &ScopeKey::from_bytes(PARENT_KEY),
            &parent_ctx(),
            &mut rng(),
        )
    }

    #[test]
    fn recipient_round_trip() {
        let w = wrapped_to_recipient();
        assert_eq!(w.as_bytes().len(), RECIPIENT_WRAP_LEN);
        assert_eq!(&w.as_bytes()[..2], &[FORMAT_V1, ALG_X25519_XCHACHA]);
        let k = unwrap_from_recipient(
            &w,
            &ctx(),
            &PrincipalId::from_bytes(RECIPIENT),
            &recipient_secret(),
        )
        .expect("unwraps");
        assert_eq!(k.expose_secret(), &SCOPE_KEY);
    }

    #[test]
    fn child_round_trip() {
        let w = wrapped_under_parent();
        assert_eq!(w.as_bytes().len(), CHILD_WRAP_LEN);
        assert_eq!(&w.as_bytes()[..2], &[FORMAT_V1, ALG_XCHACHA_HKDF]);
        let k = unwrap_under(&w, &ctx(), &ScopeKey::from_bytes(PARENT_KEY), &parent_ctx())
            .expect("unwraps");
        assert_eq!(k.expose_secret(), &SCOPE_KEY);
    }

    #[test]
    fn aad_layouts_are_pinned() {
        let aad = recipient_aad(&ctx(), &PrincipalId::from_bytes(RECIPIENT));
        let mut want = WRAP_RECIPIENT_AAD.to_vec();
        want.push(3);
        want.extend_from_slice(&SCOPE_ID);
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.extend_from_slice(&RECIPIENT);
        assert_eq!(aad, want);

        let aad = child_aad(&ctx(), &parent_ctx());
        let mut want = WRAP_CHILD_AAD.to_vec();
        want.push(3);
        want.extend_from_slice(&SCOPE_ID);
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.push(2);
        want.extend_from_slice(&PARENT_ID);
        want.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(aad, want);
    }

    fn kind_changed(mut c: KeyContext) -> KeyContext {
        c.kind = ScopeKind::Workspace;
        c
    }
    fn id_changed(mut c: KeyContext) -> KeyContext {
        c.id[15] ^= 1;
        c
    }
    fn epoch_changed(mut c: KeyContext) -> KeyContext {
        c.epoch += 1;
        c
    }
    fn same(c: KeyContext) -> KeyContext {
        c
    }

    #[rstest]
    #[case::scope_kind(kind_changed, RECIPIENT, RECIPIENT_SECRET)]
    #[case::scope_id(id_changed, RECIPIENT, RECIPIENT_SECRET)]
    #[case::epoch(epoch_changed, RECIPIENT, RECIPIENT_SECRET)]
    #[case::recipient_id(same, OTHER, RECIPIENT_SECRET)]
    #[case::recipient_secret(same, RECIPIENT, OTHER_SECRET)]
    fn recipient_unwrap_refuses_other_context(
        #[case] change: fn(KeyContext) -> KeyContext,
        #[case] me: [u8; 16],
        #[case] secret: [u8; 32],
    ) {
        let r = unwrap_from_recipient(
            &wrapped_to_recipient(),
            &change(ctx()),
            &PrincipalId::from_bytes(me),
            &AgreementSecret::from_bytes(secret),
        );
        assert_eq!(r.err(), Some(CryptoError::DecryptionFailed));
    }

    #[rstest]
    #[case::child_kind(kind_changed, same, PARENT_KEY)]
    #[case::child_id(id_changed, same, PARENT_KEY)]
    #[case::child_epoch(epoch_changed, same, PARENT_KEY)]
    #[case::parent_kind(same, kind_changed, PARENT_KEY)]
    #[case::parent_id(same, id_changed, PARENT_KEY)]
    #[case::parent_epoch(same, epoch_changed, PARENT_KEY)]
    #[case::parent_key(same, same, SCOPE_KEY)]
    fn child_unwrap_refuses_other_context(
        #[case] child: fn(KeyContext) -> KeyContext,
        #[case] parent: fn(KeyContext) -> KeyContext,
        #[case] parent_key: [u8; 32],
    ) {
        let r = unwrap_under(
            &wrapped_under_parent(),
            &child(ctx()),
            &ScopeKey::from_bytes(parent_key),
            &parent(parent_ctx()),
        );
        assert_eq!(r.err(), Some(CryptoError::DecryptionFailed));
    }

    #[test]
    fn swapping_child_and_parent_context_fails() {
        let r = unwrap_under(
            &wrapped_under_parent(),
            &parent_ctx(),
            &ScopeKey::from_bytes(PARENT_KEY),
            &ctx(),
        );
        assert_eq!(r.err(), Some(CryptoError::DecryptionFailed));
    }

    #[test]
    fn every_low_order_point_is_refused_both_ways() {
        for p in LOW_ORDER_POINTS {
            let point: [u8; 32] = hex::decode(p).expect("hex").try_into().expect("32 bytes");
            let public = AgreementPublic::try_from_slice(&point).expect("32 bytes");
            let r = wrap_to_recipient(
                &ScopeKey::from_bytes(SCOPE_KEY),
                &ctx(),
                &PrincipalId::from_bytes(RECIPIENT),
                &public,
                &mut rng(),
            );
            assert_eq!(
                r.err(),
                Some(CryptoError::InvalidPublicKey),
                "recipient {p}"
            );

            let mut b = wrapped_to_recipient().into_bytes();
            b[2..34].copy_from_slice(&point);
            let r = unwrap_from_recipient(
                &WrappedKey::from_bytes(b),
                &ctx(),
                &PrincipalId::from_bytes(RECIPIENT),
                &recipient_secret(),
            );
            assert_eq!(
                r.err(),
                Some(CryptoError::DecryptionFailed),
                "ephemeral {p}"
            );
        }
    }

    #[test]
    fn every_bit_flip_fails() {
        let rw = wrapped_to_recipient();
        let cw = wrapped_under_parent();
        for i in 0..RECIPIENT_WRAP_LEN * 8 {
            let mut b = rw.as_bytes().to_vec();
            b[i / 8] ^= 1 << (i % 8);
            let r = unwrap_from_recipient(
                &WrappedKey::from_bytes(b),
                &ctx(),
                &PrincipalId::from_bytes(RECIPIENT),
                &recipient_secret(),
            );
            assert!(r.is_err(), "recipient wrap bit {i}");
        }
        for i in 0..CHILD_WRAP_LEN * 8 {
            let mut b = cw.as_bytes().to_vec();
            b[i / 8] ^= 1 << (i % 8);
            let r = unwrap_under(
                &WrappedKey::from_bytes(b),
                &ctx(),
                &ScopeKey::from_bytes(PARENT_KEY),
                &parent_ctx(),
            );
            assert!(r.is_err(), "child wrap bit {i}");
        }
    }

    #[test]
    fn ephemeral_high_bit_is_bound_even_though_x25519_ignores_it() {
        // X25519 masks bit 255 of a u-coordinate, so the shared secret is unchanged; the HKDF
        // salt carries the bytes as sent, which is what makes this flip detectable.
        let mut b = wrapped_to_recipient().into_bytes();
        b[33] ^= 0x80;
        let r = unwrap_from_recipient(
            &WrappedKey::from_bytes(b),
            &ctx(),
            &PrincipalId::from_bytes(RECIPIENT),
            &recipient_secret(),
        );
        assert_eq!(r.err(), Some(CryptoError::DecryptionFailed));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let rw = wrapped_to_recipient();
        for n in 0..RECIPIENT_WRAP_LEN {
            let r = unwrap_from_recipient(
                &WrappedKey::from_bytes(rw.as_bytes()[..n].to_vec()),
                &ctx(),
                &PrincipalId::from_bytes(RECIPIENT),
                &recipient_secret(),
            );
            assert_eq!(r.err(), Some(CryptoError::Malformed("wrapped key")), "{n}");
        }
        let cw = wrapped_under_parent();
        for n in 0..CHILD_WRAP_LEN {
            let r = unwrap_under(
                &WrappedKey::from_bytes(cw.as_bytes()[..n].to_vec()),
                &ctx(),
                &ScopeKey::from_bytes(PARENT_KEY),
                &parent_ctx(),
            );
            assert_eq!(r.err(), Some(CryptoError::Malformed("wrapped key")), "{n}");
        }
    }

    #[rstest]
    #[case::version_zero(0x00, ALG_X25519_XCHACHA, ALG_XCHACHA_HKDF)]
    #[case::version_two(0x02, ALG_X25519_XCHACHA, ALG_XCHACHA_HKDF)]
    #[case::alg_swapped(FORMAT_V1, ALG_XCHACHA_HKDF, ALG_X25519_XCHACHA)]
    #[case::alg_unknown(FORMAT_V1, 0x7f, 0x7f)]
    fn unknown_headers_are_unsupported(
        #[case] version: u8,
        #[case] recipient_alg: u8,
        #[case] child_alg: u8,
    ) {
        let mut b = wrapped_to_recipient().into_bytes();
        b[0] = version;
        b[1] = recipient_alg;
        let r = unwrap_from_recipient(
            &WrappedKey::from_bytes(b),
            &ctx(),
            &PrincipalId::from_bytes(RECIPIENT),
            &recipient_secret(),
        );
        assert_eq!(r.err(), Some(CryptoError::UnsupportedFormat));
        let mut b = wrapped_under_parent().into_bytes();
        b[0] = version;
        b[1] = child_alg;
        let r = unwrap_under(
            &WrappedKey::from_bytes(b),
            &ctx(),
            &ScopeKey::from_bytes(PARENT_KEY),
            &parent_ctx(),
        );
        assert_eq!(r.err(), Some(CryptoError::UnsupportedFormat));
    }

    #[test]
    fn wrapped_keys_do_not_print_key_material() {
        assert_eq!(
            format!("{:?}", wrapped_under_parent()),
            format!("WrappedKey({CHILD_WRAP_LEN} bytes)")
        );
    }
}
