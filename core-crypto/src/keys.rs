//! Principal keys (Ed25519 identity + X25519 agreement) and symmetric scope keys.

use std::fmt;

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{CryptoError, Result};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A principal's Ed25519 signing key: identity and request signatures.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// Generates a fresh key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self(ed25519_dalek::SigningKey::generate(rng))
    }
    /// Builds a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }
    /// The 32-byte seed.
    ///
    /// # Security
    /// The returned array is secret; zeroize it after use.
    pub fn expose_secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }
    /// Signs `msg` (callers build domain-separated messages with [`crate::sign`]).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        use ed25519_dalek::Signer;
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// A principal's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Parses a 32-byte public key; refuses non-canonical encodings (y ≥ p), invalid points and
    /// weak (small-order) keys (FORMAT.md §1).
    pub fn try_from_slice(b: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = b.try_into().map_err(|_| CryptoError::InvalidPublicKey)?;
        if !is_canonical_field_element(&arr) {
            return Err(CryptoError::InvalidPublicKey);
        }
        let k = ed25519_dalek::VerifyingKey::from_bytes(&arr)
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        if k.is_weak() {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(Self(k))
    }
    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// Verifies `sig` over `msg` (strict: no malleable or small-order encodings).
    ///
    /// With the `fast-strict-verify` feature (on by default) this is the hand-written check
    /// below; without it, `ed25519_dalek`'s `verify_strict`, which accepts exactly the same
    /// signatures (a property test and the vectors hold the two together).
    ///
    /// Accepts exactly what `ed25519_dalek`'s `verify_strict` accepts (a property test holds the
    /// two together): `s` canonical, `R` neither undecodable nor of small order, the key not of
    /// small order (refused when it was parsed), and `[s]B - [k]A` compressing to the bytes of
    /// `R`. `verify_strict` decompresses `R` to test its order, a field square root per call
    /// (~6% of a server's instructions per signed read); here `R` is only compared in its
    /// compressed form: the comparison can only succeed for a canonical encoding of a curve
    /// point, and the canonical encodings of the eight small-order points are refused by value.
    #[cfg(feature = "fast-strict-verify")]
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        use curve25519_dalek::edwards::EdwardsPoint;

        let (r, s) = split_signature(sig)?;
        if small_order_encodings().iter().any(|e| e == r) {
            return Err(CryptoError::BadSignature);
        }
        let k = challenge(r, &self.0.to_bytes(), msg);
        let minus_a = -self.0.to_edwards();
        let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s);
        if expected.compress().as_bytes()[..] == *r {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }
    /// Verifies `sig` over `msg` with `ed25519_dalek`'s `verify_strict` (the fallback when the
    /// `fast-strict-verify` feature is off; see the feature's version for what is accepted).
    #[cfg(not(feature = "fast-strict-verify"))]
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        // The same length and canonical-`s` checks as the hand-written version, so both refuse
        // the same inputs for the same reason.
        split_signature(sig)?;
        let sig =
            ed25519_dalek::Signature::from_slice(sig).map_err(|_| CryptoError::BadSignature)?;
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
    /// A short fingerprint for out-of-band comparison: first 10 bytes of
    /// SHA-256("zopp/v1/fingerprint" ‖ key), as five groups of four hex digits.
    pub fn fingerprint(&self) -> String {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(crate::sign::FINGERPRINT_LABEL);
        buf.extend_from_slice(&self.to_bytes());
        let h = crate::sha256(&buf);
        h[..10]
            .chunks(2)
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// Splits an Ed25519 signature into the bytes of `R` and the scalar `s`, which must be
/// canonical (below the group order).
fn split_signature(sig: &[u8]) -> Result<(&[u8], curve25519_dalek::scalar::Scalar)> {
    use curve25519_dalek::scalar::Scalar;
    let sig: &[u8; SIGNATURE_LEN] = sig.try_into().map_err(|_| CryptoError::BadSignature)?;
    let (r, s) = sig.split_at(32);
    let s: [u8; 32] = s.try_into().map_err(|_| CryptoError::BadSignature)?;
    let s =
        Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).ok_or(CryptoError::BadSignature)?;
    Ok((r, s))
}

/// Ed25519's challenge `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
fn challenge(r: &[u8], a: &[u8; 32], msg: &[u8]) -> curve25519_dalek::scalar::Scalar {
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    curve25519_dalek::scalar::Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// Whether 32 little-endian bytes, bit 255 ignored, encode an integer below p = 2²⁵⁵ − 19: the
/// canonical encoding of a field element (RFC 8032 §5.1.3 refuses y ≥ p, RFC 7748 publishes
/// u < p).
fn is_canonical_field_element(b: &[u8; 32]) -> bool {
    // Only 2²⁵⁵ − 19 ..= 2²⁵⁵ − 1 are non-canonical: bits 8..255 all set and the low byte ≥ 0xed.
    !(b[31] & 0x7f == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed)
}

/// The canonical encodings of the eight points of small order (the 8-torsion subgroup).
#[cfg(feature = "fast-strict-verify")]
fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENCODINGS: std::sync::OnceLock<[[u8; 32]; 8]> = std::sync::OnceLock::new();
    ENCODINGS
        .get_or_init(|| curve25519_dalek::constants::EIGHT_TORSION.map(|p| p.compress().to_bytes()))
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", hex::encode(self.to_bytes()))
    }
}

/// Verifies many signatures at once (≈40% cheaper per signature than one by one).
///
/// # Errors
/// [`CryptoError::BadSignature`] if any one fails; the caller then verifies individually to
/// find which.
///
/// # Security
/// Batch verification cannot run [`VerifyingKey::verify`]'s strict checks (small-order `R`,
/// cofactorless equation per signature), so the signer of a key can craft a signature that
/// passes here and fails individually. It never accepts a signature its key's holder could not
/// have made; callers that must agree with other verifiers on borderline signatures verify
/// individually (FORMAT.md §4).
pub fn verify_batch(msgs: &[&[u8]], sigs: &[&[u8]], keys: &[VerifyingKey]) -> Result<()> {
    if msgs.len() != sigs.len() || msgs.len() != keys.len() {
        return Err(CryptoError::BadSignature);
    }
    if msgs.is_empty() {
        return Ok(());
    }
    let sigs: Vec<ed25519_dalek::Signature> = sigs
        .iter()
        .map(|s| ed25519_dalek::Signature::from_slice(s).map_err(|_| CryptoError::BadSignature))
        .collect::<Result<_>>()?;
    let keys: Vec<ed25519_dalek::VerifyingKey> = keys.iter().map(|k| k.0).collect();
    ed25519_dalek::verify_batch(msgs, &sigs, &keys).map_err(|_| CryptoError::BadSignature)
}

/// Like [`verify_batch`], but faster when a few keys made many of the signatures (an audit chain,
/// a secret history): the equation's terms of each distinct key are summed first, so the
/// multi-scalar multiplication has one point per signature plus one per key instead of two per
/// signature. `rng` draws each signature's 128-bit random coefficient.
///
/// # Errors
/// [`CryptoError::BadSignature`] if any one fails, or if the slices differ in length; the caller
/// then verifies individually to find which.
///
/// # Security
/// The same batch equation as [`verify_batch`] (cofactorless, `s` must be canonical, `R` must
/// decompress), with the same caveat: it is not strict, so only use it where borderline
/// signatures crafted by a key's own holder do not matter. Random coefficients make a forged
/// signature pass with probability at most 2⁻¹²⁸.
pub fn verify_batch_grouped(
    msgs: &[&[u8]],
    sigs: &[&[u8]],
    keys: &[VerifyingKey],
    rng: &mut impl CryptoRngCore,
) -> Result<()> {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};

    let n = msgs.len();
    if sigs.len() != n || keys.len() != n {
        return Err(CryptoError::BadSignature);
    }
    if n == 0 {
        return Ok(());
    }
    let mut coefficients = vec![0u8; 16 * n];
    rng.fill_bytes(&mut coefficients);
    // [-Σ z·s]B + Σ z·R + Σ_key (Σ z·H(R‖A‖M))·A = 0, with the B term first and key terms last.
    let mut scalars: Vec<Scalar> = Vec::with_capacity(n + 2);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(n + 2);
    scalars.push(Scalar::ZERO);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    let mut b_coefficient = Scalar::ZERO;
    let mut key_terms: std::collections::HashMap<[u8; 32], (EdwardsPoint, Scalar)> =
        std::collections::HashMap::new();
    for (i, ((msg, sig), key)) in msgs.iter().zip(sigs).zip(keys).enumerate() {
        let (r_bytes, s) = split_signature(sig)?;
        let r = CompressedEdwardsY::from_slice(r_bytes)
            .ok()
            .and_then(|r| r.decompress())
            .ok_or(CryptoError::BadSignature)?;
        let a_bytes = key.0.to_bytes();
        let hram = challenge(r_bytes, &a_bytes, msg);
        let mut z = [0u8; 16];
        z.copy_from_slice(&coefficients[16 * i..16 * (i + 1)]);
        let z = Scalar::from(u128::from_le_bytes(z));
        b_coefficient += z * s;
        let term = key_terms
            .entry(a_bytes)
            .or_insert_with(|| (key.0.to_edwards(), Scalar::ZERO));
        term.1 += z * hram;
        scalars.push(z);
        points.push(r);
    }
    scalars[0] = -b_coefficient;
    for (point, coefficient) in key_terms.into_values() {
        scalars.push(coefficient);
        points.push(point);
    }
    if EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity() {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

/// A principal's X25519 secret: receives wrapped scope keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AgreementSecret([u8; 32]);

impl AgreementSecret {
    /// Generates a fresh secret.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        // Filled in place: a local array would leave an unwiped copy on the stack.
        let mut s = Self([0u8; 32]);
        rng.fill_bytes(&mut s.0);
        s
    }
    /// Wraps raw secret bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    /// The raw secret bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
    /// The public half.
    pub fn public_key(&self) -> AgreementPublic {
        let s = x25519_dalek::StaticSecret::from(self.0);
        AgreementPublic(x25519_dalek::PublicKey::from(&s).to_bytes())
    }
    /// X25519 with `peer`; refuses a non-contributory (low-order) result.
    pub(crate) fn agree(&self, peer: &AgreementPublic) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let s = x25519_dalek::StaticSecret::from(self.0);
        let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(zeroize::Zeroizing::new(shared.to_bytes()))
    }
}

impl fmt::Debug for AgreementSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgreementSecret(..)")
    }
}

/// A principal's X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AgreementPublic([u8; 32]);

impl AgreementPublic {
    /// Parses 32 bytes.
    pub fn try_from_slice(b: &[u8]) -> Result<Self> {
        Ok(Self(
            b.try_into().map_err(|_| CryptoError::InvalidPublicKey)?,
        ))
    }
    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
    /// Whether these are the bytes RFC 7748 publishes: bit 255 clear and u < p. A published key
    /// must be canonical (FORMAT.md §3.2): the wrap's KEK binds the recipient key as published,
    /// the recipient binds the canonical encoding it computes, and the two must be equal.
    pub fn is_canonical(&self) -> bool {
        self.0[31] & 0x80 == 0 && is_canonical_field_element(&self.0)
    }
    /// Whether this is a low-order point (or an encoding of one), with which every key
    /// agreement yields the all-zero secret. Wrapping to such a key is refused anyway; this lets
    /// a server refuse to register one in the first place (FORMAT.md §3.2).
    pub fn is_low_order(&self) -> bool {
        // X25519 clamps every scalar to a multiple of the cofactor, so the result is zero
        // exactly when the point has small order, whichever scalar is used.
        let probe = x25519_dalek::StaticSecret::from([0x55; 32]);
        !probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.0))
            .was_contributory()
    }
}

impl fmt::Debug for AgreementPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgreementPublic({})", hex::encode(self.0))
    }
}

/// Both private keys of a principal.
#[derive(Clone)]
pub struct PrincipalKeys {
    /// Identity and request signatures.
    pub signing: SigningKey,
    /// Receives wrapped scope keys.
    pub agreement: AgreementSecret,
}

impl PrincipalKeys {
    /// Generates a fresh pair.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            signing: SigningKey::generate(rng),
            agreement: AgreementSecret::generate(rng),
        }
    }
}

impl fmt::Debug for PrincipalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrincipalKeys(..)")
    }
}

/// Level of a scope key in the hierarchy (also the byte bound into AADs, FORMAT.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ScopeKind {
    /// Workspace key (WK).
    Workspace = 1,
    /// Project key (PK), wrapped under WK.
    Project = 2,
    /// Environment key (EK), wrapped under PK.
    Environment = 3,
}

/// A random 32-byte symmetric scope key (WK, PK or EK).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ScopeKey([u8; 32]);

impl ScopeKey {
    /// Generates a fresh key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        // Filled in place: a local array would leave an unwiped copy on the stack.
        let mut s = Self([0u8; 32]);
        rng.fill_bytes(&mut s.0);
        s
    }
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    /// The raw key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScopeKey(..)")
    }
}

impl PartialEq for ScopeKey {
    fn eq(&self, other: &Self) -> bool {
        crate::ct_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// RFC 8032 §7.1 test 1: secret seed.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    /// RFC 8032 §7.1 test 1: public key.
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    /// RFC 8032 §7.1 test 1: signature of the empty message.
    const RFC8032_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
    /// RFC 7748 §6.1: Alice's X25519 secret.
    const ALICE_SECRET: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    /// RFC 7748 §6.1: Alice's X25519 public key.
    const ALICE_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    /// RFC 7748 §6.1: Bob's X25519 secret.
    const BOB_SECRET: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    /// RFC 7748 §6.1: Bob's X25519 public key.
    const BOB_PUBLIC: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    /// RFC 7748 §6.1: their shared secret.
    const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
    /// Order of the Ed25519 prime subgroup, little-endian.
    const ED25519_L: &str = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010";

    fn b32(h: &str) -> [u8; 32] {
        hex::decode(h).expect("hex").try_into().expect("32 bytes")
    }

    fn rfc_key() -> SigningKey {
        SigningKey::from_seed(&b32(RFC8032_SEED))
    }

    #[test]
    fn ed25519_matches_rfc8032() {
        let k = rfc_key();
        assert_eq!(hex::encode(k.verifying_key().to_bytes()), RFC8032_PUBLIC);
        assert_eq!(hex::encode(k.sign(b"")), RFC8032_SIG);
        let vk = VerifyingKey::try_from_slice(&b32(RFC8032_PUBLIC)).expect("valid key");
        vk.verify(b"", &hex::decode(RFC8032_SIG).expect("hex"))
            .expect("verifies");
        assert_eq!(
            vk.verify(b"x", &k.sign(b"")),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn x25519_matches_rfc7748() {
        let alice = AgreementSecret::from_bytes(b32(ALICE_SECRET));
        let bob = AgreementSecret::from_bytes(b32(BOB_SECRET));
        assert_eq!(hex::encode(alice.public_key().to_bytes()), ALICE_PUBLIC);
        assert_eq!(hex::encode(bob.public_key().to_bytes()), BOB_PUBLIC);
        let ab = alice.agree(&bob.public_key()).expect("contributory");
        let ba = bob.agree(&alice.public_key()).expect("contributory");
        assert_eq!(hex::encode(ab.as_ref()), SHARED);
        assert_eq!(hex::encode(ba.as_ref()), SHARED);
    }

    #[test]
    fn agreement_refuses_every_low_order_point() {
        let alice = AgreementSecret::from_bytes(b32(ALICE_SECRET));
        for p in crate::wrap::tests::LOW_ORDER_POINTS {
            let peer = AgreementPublic::try_from_slice(&b32(p)).expect("32 bytes");
            assert_eq!(
                alice.agree(&peer).err(),
                Some(CryptoError::InvalidPublicKey),
                "{p}"
            );
        }
    }

    #[rstest]
    #[case::empty("")]
    #[case::short("d75a98")]
    #[case::long("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a00")]
    // The identity point and other small-order points: every signature would verify for them.
    #[case::identity("0100000000000000000000000000000000000000000000000000000000000000")]
    #[case::order_2("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
    #[case::order_4("0000000000000000000000000000000000000000000000000000000000000000")]
    #[case::order_8("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")]
    // y = 2 is not the y-coordinate of any curve point.
    #[case::not_on_curve("0200000000000000000000000000000000000000000000000000000000000000")]
    // y = p + 1 and y = p: non-canonical encodings (of the identity and of y = 0), refused as
    // encodings before anything is decoded (RFC 8032 §5.1.3).
    #[case::y_p_plus_1("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
    #[case::y_p("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
    // The identity with the sign bit set (x = 0 has no negative).
    #[case::identity_sign_bit("0100000000000000000000000000000000000000000000000000000000000080")]
    fn verifying_key_refuses_invalid_and_weak_keys(#[case] h: &str) {
        assert_eq!(
            VerifyingKey::try_from_slice(&hex::decode(h).expect("hex")).err(),
            Some(CryptoError::InvalidPublicKey)
        );
    }

    #[test]
    fn verify_refuses_malleated_s() {
        // s + L encodes the same scalar mod L; strict verification must refuse it.
        let sig = hex::decode(RFC8032_SIG).expect("hex");
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig[32..]);
        let l = b32(ED25519_L);
        let mut carry = 0u16;
        for i in 0..32 {
            let t = u16::from(s[i]) + u16::from(l[i]) + carry;
            s[i] = t as u8;
            carry = t >> 8;
        }
        let mut bad = sig.clone();
        bad[32..].copy_from_slice(&s);
        let vk = rfc_key().verifying_key();
        assert_eq!(vk.verify(b"", &bad), Err(CryptoError::BadSignature));
    }

    #[test]
    fn verify_refuses_every_bit_flip_and_every_truncation() {
        let k = rfc_key();
        let vk = k.verifying_key();
        let sig = k.sign(b"message");
        for i in 0..SIGNATURE_LEN * 8 {
            let mut b = sig;
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                vk.verify(b"message", &b),
                Err(CryptoError::BadSignature),
                "{i}"
            );
        }
        for n in 0..SIGNATURE_LEN {
            assert_eq!(
                vk.verify(b"message", &sig[..n]),
                Err(CryptoError::BadSignature)
            );
        }
    }

    #[test]
    fn batch_verification() {
        let keys: Vec<SigningKey> = (1u8..=4).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let msgs: Vec<Vec<u8>> = (0u8..4).map(|i| vec![i; 10]).collect();
        let sigs: Vec<[u8; 64]> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let m: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let s: Vec<&[u8]> = sigs.iter().map(|s| s.as_slice()).collect();
        verify_batch(&m, &s, &vks).expect("all valid");
        verify_batch(&[], &[], &[]).expect("empty batch");
        assert_eq!(
            verify_batch(&m[..3], &s, &vks),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            verify_batch(&m, &s[..3], &vks),
            Err(CryptoError::BadSignature)
        );
        let mut swapped = s.clone();
        swapped.swap(0, 1);
        assert_eq!(
            verify_batch(&m, &swapped, &vks),
            Err(CryptoError::BadSignature)
        );
        let short = [0u8; 63];
        let mut bad = s.clone();
        bad[2] = &short;
        assert_eq!(verify_batch(&m, &bad, &vks), Err(CryptoError::BadSignature));
    }

    #[test]
    fn grouped_batch_verification() {
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        // Two keys, many messages each: the case the grouping is for.
        let keys: Vec<SigningKey> = (1u8..=2).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let msgs: Vec<Vec<u8>> = (0u8..40).map(|i| vec![i; 10]).collect();
        let signer = |i: usize| &keys[i % 2];
        let sigs: Vec<[u8; 64]> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| signer(i).sign(m))
            .collect();
        let vks: Vec<VerifyingKey> = (0..msgs.len()).map(|i| signer(i).verifying_key()).collect();
        let m: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let s: Vec<&[u8]> = sigs.iter().map(|s| s.as_slice()).collect();
        verify_batch_grouped(&m, &s, &vks, &mut rng).expect("all valid");
        verify_batch_grouped(&[], &[], &[], &mut rng).expect("empty batch");
        verify_batch_grouped(&m[..1], &s[..1], &vks[..1], &mut rng).expect("one");
        let bad =
            |m: &[&[u8]], s: &[&[u8]], k: &[VerifyingKey], rng: &mut rand_chacha::ChaCha20Rng| {
                assert_eq!(
                    verify_batch_grouped(m, s, k, rng),
                    Err(CryptoError::BadSignature)
                );
            };
        bad(&m[..3], &s, &vks, &mut rng);
        bad(&m, &s[..3], &vks, &mut rng);
        bad(&m, &s, &vks[..3], &mut rng);
        // Every bit of one signature, one message byte, and the other key's name on it.
        for bit in 0..SIGNATURE_LEN * 8 {
            let mut flipped = sigs[17];
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut s2 = s.clone();
            s2[17] = &flipped;
            bad(&m, &s2, &vks, &mut rng);
        }
        let other = vec![99u8; 10];
        let mut m2 = m.clone();
        m2[5] = &other;
        bad(&m2, &s, &vks, &mut rng);
        let mut k2 = vks.clone();
        k2[5] = vks[4];
        bad(&m, &s, &k2, &mut rng);
        let mut swapped = s.clone();
        swapped.swap(0, 2);
        bad(&m, &swapped, &vks, &mut rng);
        let short = [0u8; 63];
        let mut s3 = s.clone();
        s3[2] = &short;
        bad(&m, &s3, &vks, &mut rng);
        // s + L: the same scalar mod L, but not canonical.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut high = sigs[9];
        let mut carry = 0u16;
        for (b, l) in high[32..].iter_mut().zip(L) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        let mut s4 = s.clone();
        s4[9] = &high;
        bad(&m, &s4, &vks, &mut rng);
        // Agrees with the ungrouped batch on the valid set.
        verify_batch(&m, &s, &vks).expect("ungrouped agrees");
    }

    #[test]
    fn fingerprint_is_pinned() {
        let vk = rfc_key().verifying_key();
        let fp = vk.fingerprint();
        assert_eq!(fp.len(), 24);
        let mut input = crate::sign::FINGERPRINT_LABEL.to_vec();
        input.extend_from_slice(&vk.to_bytes());
        let want: Vec<String> = crate::sha256(&input)[..10]
            .chunks(2)
            .map(hex::encode)
            .collect();
        assert_eq!(fp, want.join("-"));
    }

    #[test]
    fn secrets_never_print() {
        let keys = PrincipalKeys {
            signing: rfc_key(),
            agreement: AgreementSecret::from_bytes(b32(ALICE_SECRET)),
        };
        let shown = format!(
            "{keys:?} {:?} {:?} {:?}",
            keys.signing,
            keys.agreement,
            ScopeKey::from_bytes([0xab; 32])
        );
        for secret in [&RFC8032_SEED[..8], &ALICE_SECRET[..8], "abababab"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(format!("{:?}", keys.signing.verifying_key()).contains(&RFC8032_PUBLIC[..8]));
    }

    #[test]
    fn scope_keys_compare_by_value() {
        assert_eq!(ScopeKey::from_bytes([1; 32]), ScopeKey::from_bytes([1; 32]));
        assert_ne!(ScopeKey::from_bytes([1; 32]), ScopeKey::from_bytes([2; 32]));
    }

    #[test]
    fn low_order_points_are_recognized() {
        for p in crate::wrap::tests::LOW_ORDER_POINTS {
            let k = AgreementPublic::try_from_slice(&b32(p)).expect("32 bytes");
            assert!(k.is_low_order(), "{p}");
        }
        for p in [ALICE_PUBLIC, BOB_PUBLIC] {
            let k = AgreementPublic::try_from_slice(&b32(p)).expect("32 bytes");
            assert!(!k.is_low_order(), "{p}");
        }
    }

    #[test]
    fn non_canonical_y_of_a_real_point_is_refused() {
        // The first y below 19 that is on the curve and not of small order, written as y + p.
        let y = (2u8..19)
            .find(|&y| {
                let mut b = [0u8; 32];
                b[0] = y;
                curve25519_dalek::edwards::CompressedEdwardsY(b)
                    .decompress()
                    .is_some_and(|p| !p.is_small_order())
            })
            .expect("some small y is on the curve");
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        VerifyingKey::try_from_slice(&canonical).expect("the canonical encoding decodes");
        let mut b = [0xffu8; 32];
        b[0] = 0xed + y;
        b[31] = 0x7f;
        assert_eq!(
            VerifyingKey::try_from_slice(&b).err(),
            Some(CryptoError::InvalidPublicKey)
        );
    }

    #[rstest]
    #[case::alice(ALICE_PUBLIC, true)]
    #[case::zero(
        "0000000000000000000000000000000000000000000000000000000000000000",
        true
    )]
    #[case::p_minus_1(
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        true
    )]
    #[case::p(
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        false
    )]
    #[case::p_plus_9(
        "f6ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        false
    )]
    #[case::high_bit(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4eea",
        false
    )]
    fn agreement_public_canonical_encodings(#[case] h: &str, #[case] canonical: bool) {
        let k = AgreementPublic::try_from_slice(&b32(h)).expect("32 bytes");
        assert_eq!(k.is_canonical(), canonical, "{h}");
    }

    #[test]
    fn agreement_public_parses_only_32_bytes() {
        for n in [0, 31, 33] {
            assert_eq!(
                AgreementPublic::try_from_slice(&vec![9; n]).err(),
                Some(CryptoError::InvalidPublicKey)
            );
        }
    }
}
