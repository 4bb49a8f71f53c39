//! Service-principal tokens (FORMAT.md §10): `zopp_` + base64url(version ‖ principal id ‖ signing
//! seed ‖ token share). The principal's X25519 secret is the XOR of the token share and a server
//! share; the server never sees the token, and deleting its share on revocation makes a leaked
//! token useless for decryption.

use std::fmt;

use base64::Engine;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ids::PrincipalId;
use crate::keys::{AgreementSecret, SigningKey};
use crate::wrap::FORMAT_V1;
use crate::{CryptoError, Result};

/// Prefix of every principal token.
pub const TOKEN_PREFIX: &str = "zopp_";
const RAW_LEN: usize = 1 + 16 + 32 + 32;

/// One 32-byte share of a split X25519 secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyShare([u8; 32]);

impl KeyShare {
    /// Wraps raw share bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    /// The raw bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyShare(..)")
    }
}

/// Splits `secret` into (token share, server share), each uniformly random on its own.
pub fn split(secret: &AgreementSecret, rng: &mut impl CryptoRngCore) -> (KeyShare, KeyShare) {
    // Fill the shares in place so no unwiped copy of either is left on the stack.
    let mut a = KeyShare([0u8; 32]);
    rng.fill_bytes(&mut a.0);
    let mut b = KeyShare([0u8; 32]);
    for ((x, s), r) in b.0.iter_mut().zip(secret.expose_secret()).zip(&a.0) {
        *x = s ^ r;
    }
    (a, b)
}

/// Recombines two shares.
pub fn combine(a: &KeyShare, b: &KeyShare) -> AgreementSecret {
    let mut s = Zeroizing::new([0u8; 32]);
    for ((x, l), r) in s.iter_mut().zip(&a.0).zip(&b.0) {
        *x = l ^ r;
    }
    AgreementSecret::from_bytes(*s)
}

/// The whitespace FORMAT.md §1 lets surround a token: space, tab, line feed, carriage return.
/// Nothing else (no other Unicode space) is trimmed, so every implementation trims alike.
pub fn is_format_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// A decoded principal token. Secret: never printed.
pub struct PrincipalToken {
    /// The service principal.
    pub principal: PrincipalId,
    /// Its signing key.
    pub signing: SigningKey,
    /// The token's half of its X25519 secret.
    pub share: KeyShare,
}

impl fmt::Debug for PrincipalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalToken({:?}, ..)", self.principal)
    }
}

impl PrincipalToken {
    /// Encodes to the `zopp_…` text form.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(RAW_LEN));
        raw.push(FORMAT_V1);
        raw.extend_from_slice(self.principal.as_bytes());
        let mut seed = self.signing.expose_secret();
        raw.extend_from_slice(&seed);
        seed.zeroize();
        raw.extend_from_slice(self.share.expose_secret());
        let mut s = Zeroizing::new(String::from(TOKEN_PREFIX));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_slice(), &mut s);
        s
    }

    /// Parses the `zopp_…` text form.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for anything that is not a well-formed token.
    pub fn try_parse(s: &str) -> Result<Self> {
        let body = s
            .trim_matches(is_format_whitespace)
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(CryptoError::Malformed("principal token"))?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| CryptoError::Malformed("principal token"))?,
        );
        if raw.len() != RAW_LEN {
            return Err(CryptoError::Malformed("principal token"));
        }
        if raw[0] != FORMAT_V1 {
            return Err(CryptoError::UnsupportedFormat);
        }
        let id: [u8; 16] = raw[1..17].try_into().expect("16 bytes");
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[17..49]);
        let mut share = KeyShare([0u8; 32]);
        share.0.copy_from_slice(&raw[49..81]);
        Ok(Self {
            principal: PrincipalId::from_bytes(id),
            signing: SigningKey::from_seed(&seed),
            share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use rstest::rstest;

    /// A fixed service principal id.
    const PRINCIPAL: [u8; 16] = [0x5a; 16];
    /// A fixed signing seed.
    const SEED: [u8; 32] = [0x5e; 32];
    /// A fixed token share.
    const SHARE: [u8; 32] = [0x7b; 32];

    fn token() -> PrincipalToken {
        PrincipalToken {
            principal: PrincipalId::from_bytes(PRINCIPAL),
            signing: SigningKey::from_seed(&SEED),
            share: KeyShare::from_bytes(SHARE),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let s = token().encode();
        assert!(s.starts_with(TOKEN_PREFIX));
        // 81 raw bytes are 108 base64 characters without padding.
        assert_eq!(s.len(), TOKEN_PREFIX.len() + 108);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&s[TOKEN_PREFIX.len()..])
            .expect("base64url");
        assert_eq!(raw[0], FORMAT_V1);
        assert_eq!(&raw[1..17], &PRINCIPAL);
        assert_eq!(&raw[17..49], &SEED);
        assert_eq!(&raw[49..], &SHARE);
        let t = PrincipalToken::try_parse(&s).expect("parses");
        assert_eq!(t.principal, PrincipalId::from_bytes(PRINCIPAL));
        assert_eq!(t.signing.expose_secret(), SEED);
        assert_eq!(t.share.expose_secret(), &SHARE);
        // Surrounding whitespace (a trailing newline from a file) is tolerated.
        assert!(PrincipalToken::try_parse(&format!("  {}\n", s.as_str())).is_ok());
        assert!(PrincipalToken::try_parse(&format!("\t{}\r\n", s.as_str())).is_ok());
    }

    #[rstest]
    #[case::empty("")]
    #[case::doubled_prefix("zopp_zopp_")]
    #[case::no_prefix("AQ")]
    #[case::upper_prefix("ZOPP_")]
    #[case::other_prefix("zop_")]
    #[case::dash_prefix("zopp-")]
    fn bad_prefix_is_malformed(#[case] prefix: &str) {
        let s = token().encode();
        let body = &s[TOKEN_PREFIX.len()..];
        assert_eq!(
            PrincipalToken::try_parse(&format!("{prefix}{body}")).err(),
            Some(CryptoError::Malformed("principal token"))
        );
    }

    #[test]
    fn every_truncation_is_malformed() {
        let s = token().encode();
        for n in 0..s.len() {
            assert_eq!(
                PrincipalToken::try_parse(&s[..n]).err(),
                Some(CryptoError::Malformed("principal token")),
                "prefix {n}"
            );
        }
    }

    #[rstest]
    #[case::padded("=")]
    #[case::extra_char("A")]
    #[case::extra_bytes("AAAA")]
    #[case::inner_space(" x")]
    // Only space, tab, LF and CR are trimmed (FORMAT.md §1): other spaces stay and fail.
    #[case::no_break_space("\u{a0}")]
    #[case::vertical_tab("\u{b}")]
    #[case::form_feed("\u{c}")]
    #[case::ideographic_space("\u{3000}")]
    fn non_canonical_forms_are_malformed(#[case] suffix: &str) {
        let s = format!("{}{suffix}", token().encode().as_str());
        assert_eq!(
            PrincipalToken::try_parse(&s).err(),
            Some(CryptoError::Malformed("principal token"))
        );
    }

    #[test]
    fn standard_base64_alphabet_is_refused() {
        // Tokens use the URL-safe alphabet; '+' and '/' never appear in a valid one.
        let s = token().encode();
        let mut body: Vec<char> = s[TOKEN_PREFIX.len()..].chars().collect();
        body[0] = '+';
        let bad = format!("{TOKEN_PREFIX}{}", body.into_iter().collect::<String>());
        assert!(PrincipalToken::try_parse(&bad).is_err());
    }

    #[test]
    fn unknown_version_is_unsupported() {
        let mut raw = vec![0x02];
        raw.extend_from_slice(&[0; 80]);
        let s = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        assert_eq!(
            PrincipalToken::try_parse(&s).err(),
            Some(CryptoError::UnsupportedFormat)
        );
    }

    #[test]
    fn split_shares_recombine_and_each_share_differs_from_the_secret() {
        let secret = AgreementSecret::from_bytes([0x21; 32]);
        let (a, b) = split(&secret, &mut ChaCha20Rng::seed_from_u64(4));
        assert_ne!(a.expose_secret(), secret.expose_secret());
        assert_ne!(b.expose_secret(), secret.expose_secret());
        assert_eq!(combine(&a, &b).expose_secret(), secret.expose_secret());
        assert_eq!(combine(&b, &a).expose_secret(), secret.expose_secret());
        let (c, _) = split(&secret, &mut ChaCha20Rng::seed_from_u64(5));
        assert_ne!(combine(&c, &b).expose_secret(), secret.expose_secret());
    }

    #[test]
    fn token_never_prints_secrets() {
        let shown = format!("{:?} {:?}", token(), KeyShare::from_bytes(SHARE));
        assert!(shown.contains("5a5a5a5a"), "{shown}");
        assert!(!shown.contains("5e5e"), "{shown}");
        assert!(!shown.contains("7b7b"), "{shown}");
        assert!(!shown.contains(token().encode().as_str()), "{shown}");
    }
}
