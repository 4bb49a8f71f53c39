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

/// Version byte of the token layout: 0x02 binds what the token was minted for.
pub const TOKEN_V2: u8 = 0x02;
/// The first token layout (no binding), refused since 0x02: the holder must mint a new token.
pub const TOKEN_V1: u8 = FORMAT_V1;
/// Bytes before the binding: version, principal id, signing seed, token share.
const CORE_LEN: usize = 1 + 16 + 32 + 32;
/// Environments one token can be bound to.
pub const MAX_BOUND_ENVIRONMENTS: usize = 64;
/// Longest scope name a binding holds (names are at most 64 bytes).
const MAX_NAME: usize = 255;

/// Scope levels in a binding (the same numbers as the key-context kinds, FORMAT.md §3.1).
const LEVEL_WORKSPACE: u8 = 1;
const LEVEL_PROJECT: u8 = 2;
const LEVEL_ENVIRONMENT: u8 = 3;

/// One scope a token was minted for: its name, its id, and the lowest key epoch (or, for a
/// workspace or project, key generation) a client holding the token may accept for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundScope {
    /// The scope's name (as `-w`/`-p`/`-e` give it).
    pub name: String,
    /// The scope's id.
    pub id: [u8; 16],
    /// Key epoch floor; 0 when the minter did not know it.
    pub epoch_floor: u32,
}

/// What a token was minted for (FORMAT.md §10): a client in principal-token mode keeps nothing
/// on disk, so these are its pins. A server answer that names another id for one of these
/// scopes, a key epoch below a floor, or another workspace root, is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBinding {
    /// The workspace's root: the principal that created it.
    pub root: PrincipalId,
    /// The root's Ed25519 public key (its fingerprint is what users compare).
    pub root_key: [u8; 32],
    /// The workspace.
    pub workspace: BoundScope,
    /// The project, when the token was minted for a project or an environment.
    pub project: Option<BoundScope>,
    /// Environments of that project with their ids and epoch floors (at most
    /// [`MAX_BOUND_ENVIRONMENTS`]).
    pub environments: Vec<BoundScope>,
}

impl TokenBinding {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.root.as_bytes());
        out.extend_from_slice(&self.root_key);
        let scopes = std::iter::once((LEVEL_WORKSPACE, &self.workspace))
            .chain(self.project.iter().map(|p| (LEVEL_PROJECT, p)))
            .chain(self.environments.iter().map(|e| (LEVEL_ENVIRONMENT, e)));
        let count = 1 + usize::from(self.project.is_some()) + self.environments.len();
        out.push(u8::try_from(count).expect("bounded by MAX_BOUND_ENVIRONMENTS"));
        for (level, scope) in scopes {
            out.push(level);
            out.extend_from_slice(&scope.id);
            out.extend_from_slice(&scope.epoch_floor.to_be_bytes());
            let name = &scope.name.as_bytes()[..scope.name.len().min(MAX_NAME)];
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }

    fn parse(mut b: &[u8]) -> Option<Self> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if b.len() < n {
                return None;
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Some(head)
        }
        let root = PrincipalId::from_bytes(take(&mut b, 16)?.try_into().ok()?);
        let root_key: [u8; 32] = take(&mut b, 32)?.try_into().ok()?;
        let count = usize::from(*take(&mut b, 1)?.first()?);
        let mut workspace = None;
        let mut project = None;
        let mut environments = Vec::new();
        for i in 0..count {
            let level = *take(&mut b, 1)?.first()?;
            let id: [u8; 16] = take(&mut b, 16)?.try_into().ok()?;
            let epoch_floor = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
            let len = usize::from(*take(&mut b, 1)?.first()?);
            let name = std::str::from_utf8(take(&mut b, len)?).ok()?.to_owned();
            if name.is_empty() {
                return None;
            }
            let scope = BoundScope {
                name,
                id,
                epoch_floor,
            };
            // Workspace first, then at most one project, then its environments.
            match (level, i) {
                (LEVEL_WORKSPACE, 0) => workspace = Some(scope),
                (LEVEL_PROJECT, 1) => project = Some(scope),
                (LEVEL_ENVIRONMENT, n) if n >= 2 && project.is_some() => environments.push(scope),
                _ => return None,
            }
        }
        if !b.is_empty() || environments.len() > MAX_BOUND_ENVIRONMENTS {
            return None;
        }
        Some(Self {
            root,
            root_key,
            workspace: workspace?,
            project,
            environments,
        })
    }
}

/// A decoded principal token. Secret: never printed.
pub struct PrincipalToken {
    /// The service principal.
    pub principal: PrincipalId,
    /// Its signing key.
    pub signing: SigningKey,
    /// The token's half of its X25519 secret.
    pub share: KeyShare,
    /// What it was minted for.
    pub binding: TokenBinding,
}

impl fmt::Debug for PrincipalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalToken({:?}, ..)", self.principal)
    }
}

/// The version byte of a token's text, when it decodes at all: lets a caller tell an outdated
/// token (mint a new one) from a damaged one.
pub fn token_version(s: &str) -> Option<u8> {
    let body = s
        .trim_matches(is_format_whitespace)
        .strip_prefix(TOKEN_PREFIX)?;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?,
    );
    raw.first().copied()
}

impl PrincipalToken {
    /// Encodes to the `zopp_…` text form.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(CORE_LEN + 256));
        raw.push(TOKEN_V2);
        raw.extend_from_slice(self.principal.as_bytes());
        let mut seed = self.signing.expose_secret();
        raw.extend_from_slice(&seed);
        seed.zeroize();
        raw.extend_from_slice(self.share.expose_secret());
        self.binding.encode_into(&mut raw);
        let mut s = Zeroizing::new(String::from(TOKEN_PREFIX));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_slice(), &mut s);
        s
    }

    /// Parses the `zopp_…` text form.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedFormat`] for a version other than [`TOKEN_V2`] (see
    /// [`token_version`] to tell an outdated token); [`CryptoError::Malformed`] for anything
    /// else that is not a well-formed token.
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
        match raw.first() {
            None => return Err(CryptoError::Malformed("principal token")),
            Some(&TOKEN_V2) => {}
            Some(_) => return Err(CryptoError::UnsupportedFormat),
        }
        if raw.len() < CORE_LEN {
            return Err(CryptoError::Malformed("principal token"));
        }
        let binding = TokenBinding::parse(&raw[CORE_LEN..])
            .ok_or(CryptoError::Malformed("principal token"))?;
        let id: [u8; 16] = raw[1..17].try_into().expect("16 bytes");
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[17..49]);
        let mut share = KeyShare([0u8; 32]);
        share.0.copy_from_slice(&raw[49..81]);
        Ok(Self {
            principal: PrincipalId::from_bytes(id),
            signing: SigningKey::from_seed(&seed),
            share,
            binding,
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

    /// The workspace root's id and key.
    const ROOT: [u8; 16] = [0x0a; 16];
    const ROOT_KEY: [u8; 32] = [0x0b; 32];

    fn binding() -> TokenBinding {
        TokenBinding {
            root: PrincipalId::from_bytes(ROOT),
            root_key: ROOT_KEY,
            workspace: BoundScope {
                name: "acme".into(),
                id: [0xa1; 16],
                epoch_floor: 2,
            },
            project: Some(BoundScope {
                name: "api".into(),
                id: [0xb2; 16],
                epoch_floor: 1,
            }),
            environments: vec![BoundScope {
                name: "prod".into(),
                id: [0xc3; 16],
                epoch_floor: 3,
            }],
        }
    }

    fn token() -> PrincipalToken {
        PrincipalToken {
            principal: PrincipalId::from_bytes(PRINCIPAL),
            signing: SigningKey::from_seed(&SEED),
            share: KeyShare::from_bytes(SHARE),
            binding: binding(),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let s = token().encode();
        assert!(s.starts_with(TOKEN_PREFIX));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&s[TOKEN_PREFIX.len()..])
            .expect("base64url");
        assert_eq!(raw[0], TOKEN_V2);
        assert_eq!(&raw[1..17], &PRINCIPAL);
        assert_eq!(&raw[17..49], &SEED);
        assert_eq!(&raw[49..81], &SHARE);
        let mut want = ROOT.to_vec();
        want.extend_from_slice(&ROOT_KEY);
        want.push(3);
        for (level, id, floor, name) in [
            (1u8, 0xa1u8, 2u32, "acme"),
            (2, 0xb2, 1, "api"),
            (3, 0xc3, 3, "prod"),
        ] {
            want.push(level);
            want.extend_from_slice(&[id; 16]);
            want.extend_from_slice(&floor.to_be_bytes());
            want.push(name.len() as u8);
            want.extend_from_slice(name.as_bytes());
        }
        assert_eq!(&raw[81..], want.as_slice());
        let t = PrincipalToken::try_parse(&s).expect("parses");
        assert_eq!(t.principal, PrincipalId::from_bytes(PRINCIPAL));
        assert_eq!(t.signing.expose_secret(), SEED);
        assert_eq!(t.share.expose_secret(), &SHARE);
        assert_eq!(t.binding, binding());
        assert_eq!(token_version(&s), Some(TOKEN_V2));
        // A workspace-wide token binds the workspace alone.
        let mut ws_only = token();
        ws_only.binding.project = None;
        ws_only.binding.environments.clear();
        let t = PrincipalToken::try_parse(&ws_only.encode()).expect("parses");
        assert_eq!(t.binding, ws_only.binding);
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

    #[rstest]
    #[case::outdated(TOKEN_V1, 80)]
    #[case::unknown(0x03, 200)]
    fn other_versions_are_unsupported(#[case] version: u8, #[case] rest: usize) {
        let mut raw = vec![version];
        raw.extend_from_slice(&vec![0; rest]);
        let s = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        assert_eq!(
            PrincipalToken::try_parse(&s).err(),
            Some(CryptoError::UnsupportedFormat)
        );
        assert_eq!(token_version(&s), Some(version));
    }

    #[test]
    fn bindings_out_of_order_are_malformed() {
        let encode = |b: &TokenBinding| {
            let mut t = token();
            t.binding = b.clone();
            t.encode()
        };
        // An environment without its project.
        let mut b = binding();
        b.project = None;
        assert_eq!(
            PrincipalToken::try_parse(&encode(&b)).err(),
            Some(CryptoError::Malformed("principal token"))
        );
        // An empty name.
        let mut b = binding();
        b.environments[0].name.clear();
        assert_eq!(
            PrincipalToken::try_parse(&encode(&b)).err(),
            Some(CryptoError::Malformed("principal token"))
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
