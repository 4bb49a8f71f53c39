//! One-time codes (FORMAT.md §6.3, §12): workspace invites (`zwi_…`) and device exports
//! (`zdev_…`). A code is `prefix ‖ base64url(id[16] ‖ secret[32])`; everything else derives from
//! the secret with HKDF under distinct labels, so the server, which sees only what the holder
//! sends, learns nothing it could use:
//!
//! - the **authenticator** proves possession of the code; the server stores only its SHA-256;
//! - the **sealing key** seals the workspace key an invite carries, which the server stores but
//!   cannot open;
//! - the **invite signing key** is the one-time Ed25519 key whose public half the inviter signs
//!   (the invite statement) and with which the joiner's admission is signed.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ids::InviteId;
use crate::keys::{ScopeKey, SigningKey, VerifyingKey};
use crate::wrap::{KeyContext, ALG_XCHACHA_HKDF, FORMAT_V1};
use crate::{CryptoError, Result};

/// Prefix of a workspace invite code.
pub const INVITE_PREFIX: &str = "zwi_";
/// Prefix of a device export code.
pub const DEVICE_PREFIX: &str = "zdev_";
/// HKDF info of a code's authenticator.
pub const AUTH_LABEL: &[u8] = b"zopp/v1/code-auth";
/// HKDF info of a code's sealing key.
pub const SEAL_LABEL: &[u8] = b"zopp/v1/code-seal";
/// HKDF info of a code's one-time signing key.
pub const SIGN_LABEL: &[u8] = b"zopp/v1/code-sign";
/// AAD prefix of a scope key sealed under a code.
pub const SEALED_KEY_AAD: &[u8] = b"zopp/v1/code-sealed";
/// Label of the invite statement: the inviter vouches for an invite's one-time key.
pub const INVITE_LABEL: &[u8] = b"zopp/v1/invite";

const RAW_LEN: usize = 16 + 32;
const NONCE_LEN: usize = 24;
/// Length of a scope key sealed under a code: version, algorithm, nonce, key, tag.
pub const SEALED_KEY_LEN: usize = 2 + NONCE_LEN + 32 + 16;

/// A decoded one-time code. Secret: zeroized on drop, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct OneTimeCode {
    #[zeroize(skip)]
    id: InviteId,
    secret: [u8; 32],
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OneTimeCode({}, ..)", self.id)
    }
}

impl OneTimeCode {
    /// A fresh code with a random id and secret.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let id = InviteId::random(rng);
        let mut c = Self {
            id,
            secret: [0u8; 32],
        };
        rng.fill_bytes(&mut c.secret);
        c
    }

    /// The code's id (not secret: the server looks the code up by it).
    pub fn id(&self) -> InviteId {
        self.id
    }

    /// The text form, `prefix` followed by base64url(id ‖ secret) without padding.
    pub fn encode(&self, prefix: &str) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        raw[..16].copy_from_slice(self.id.as_bytes());
        raw[16..].copy_from_slice(&self.secret);
        let mut s = Zeroizing::new(String::from(prefix));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_slice(), &mut s);
        s
    }

    /// Parses the text form (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for anything but `prefix` and 64 strict base64url characters.
    pub fn try_parse(prefix: &str, text: &str) -> Result<Self> {
        let body = text
            .trim_matches(crate::token::is_format_whitespace)
            .strip_prefix(prefix)
            .ok_or(CryptoError::Malformed("one-time code"))?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| CryptoError::Malformed("one-time code"))?,
        );
        if raw.len() != RAW_LEN {
            return Err(CryptoError::Malformed("one-time code"));
        }
        let id: [u8; 16] = raw[..16].try_into().expect("16 bytes");
        let mut c = Self {
            id: InviteId::from_bytes(id),
            secret: [0u8; 32],
        };
        c.secret.copy_from_slice(&raw[16..]);
        Ok(c)
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(self.id.as_bytes()), &self.secret)
            .expand(label, out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// The authenticator the holder sends to prove it has the code.
    pub fn auth(&self) -> Zeroizing<[u8; 32]> {
        self.derive(AUTH_LABEL)
    }

    /// SHA-256 of the authenticator: what the server stores and compares.
    pub fn auth_hash(&self) -> [u8; 32] {
        crate::sha256(self.auth().as_ref())
    }

    /// The one-time signing key of an invite.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_seed(&self.derive(SIGN_LABEL))
    }

    fn aad(&self, ctx: &KeyContext) -> Vec<u8> {
        let mut aad = Vec::with_capacity(SEALED_KEY_AAD.len() + 16 + 21);
        aad.extend_from_slice(SEALED_KEY_AAD);
        aad.extend_from_slice(self.id.as_bytes());
        aad.push(ctx.kind as u8);
        aad.extend_from_slice(&ctx.id);
        aad.extend_from_slice(&ctx.epoch.to_be_bytes());
        aad
    }

    /// Seals a scope key under this code (FORMAT.md §6.3), bound to the code's id and the key's
    /// context.
    pub fn seal_scope_key(
        &self,
        key: &ScopeKey,
        ctx: &KeyContext,
        rng: &mut impl CryptoRngCore,
    ) -> Vec<u8> {
        let kek = self.derive(SEAL_LABEL);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new(kek.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key.expose_secret(),
                    aad: &self.aad(ctx),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of 32 bytes cannot fail");
        let mut out = Vec::with_capacity(SEALED_KEY_LEN);
        out.push(FORMAT_V1);
        out.push(ALG_XCHACHA_HKDF);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a scope key sealed under this code.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for another code, another context or tampered bytes;
    /// format errors for bad framing.
    pub fn open_scope_key(&self, sealed: &[u8], ctx: &KeyContext) -> Result<ScopeKey> {
        if sealed.len() < 2 {
            return Err(CryptoError::Malformed("sealed key"));
        }
        if sealed[0] != FORMAT_V1 || sealed[1] != ALG_XCHACHA_HKDF {
            return Err(CryptoError::UnsupportedFormat);
        }
        if sealed.len() != SEALED_KEY_LEN {
            return Err(CryptoError::Malformed("sealed key"));
        }
        let kek = self.derive(SEAL_LABEL);
        let pt = Zeroizing::new(
            XChaCha20Poly1305::new(kek.as_ref().into())
                .decrypt(
                    XNonce::from_slice(&sealed[2..2 + NONCE_LEN]),
                    Payload {
                        msg: &sealed[2 + NONCE_LEN..],
                        aad: &self.aad(ctx),
                    },
                )
                .map_err(|_| CryptoError::DecryptionFailed)?,
        );
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(
            pt.as_slice()
                .try_into()
                .map_err(|_| CryptoError::DecryptionFailed)?,
        );
        Ok(ScopeKey::from_bytes(*key))
    }

    /// The passphrase under which a device export seals the new device's key file (FORMAT.md
    /// §12): the user's passphrase, a zero byte, and the code's secret. The key file's Argon2id
    /// then needs both, so neither a leaked code nor the server's copy alone opens it, and a
    /// weak passphrase cannot be guessed offline without the code.
    pub fn device_passphrase(&self, passphrase: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(passphrase.len() + 33));
        out.extend_from_slice(passphrase);
        out.push(0);
        out.extend_from_slice(&self.secret);
        out
    }
}

/// The bytes an inviter signs to vouch for an invite's one-time key (FORMAT.md §6.3): whatever
/// that key admits is admitted by the inviter.
pub fn invite_statement(invite: &InviteId, invite_key: &VerifyingKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(INVITE_LABEL.len() + 16 + 32);
    m.extend_from_slice(INVITE_LABEL);
    m.extend_from_slice(invite.as_bytes());
    m.extend_from_slice(&invite_key.to_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ScopeKind;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use rstest::rstest;

    /// A fixed workspace key.
    const WK: [u8; 32] = [0x4b; 32];
    /// A fixed workspace id.
    const WS: [u8; 16] = [0x77; 16];

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(12)
    }

    fn ctx(epoch: u32) -> KeyContext {
        KeyContext {
            kind: ScopeKind::Workspace,
            id: WS,
            epoch,
        }
    }

    #[test]
    fn codes_round_trip_and_have_the_documented_shape() {
        let c = OneTimeCode::generate(&mut rng());
        for prefix in [INVITE_PREFIX, DEVICE_PREFIX] {
            let text = c.encode(prefix);
            assert_eq!(text.len(), prefix.len() + 64);
            let back =
                OneTimeCode::try_parse(prefix, &format!(" {}\n", text.as_str())).expect("parses");
            assert_eq!(back.id(), c.id());
            assert_eq!(back.auth_hash(), c.auth_hash());
            assert!(!format!("{back:?}").contains(&text[prefix.len()..]));
        }
        // The prefix says what the code is for: one kind is never taken for the other.
        let invite = c.encode(INVITE_PREFIX);
        assert!(OneTimeCode::try_parse(DEVICE_PREFIX, &invite).is_err());
    }

    #[rstest]
    #[case::empty("")]
    #[case::prefix_only("zwi_")]
    #[case::short("zwi_AAAA")]
    #[case::padded("zwi_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")]
    #[case::bad_alphabet("zwi_++++AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    #[case::other_prefix("zinv_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    fn malformed_codes_are_refused(#[case] text: &str) {
        assert_eq!(
            OneTimeCode::try_parse(INVITE_PREFIX, text).err(),
            Some(CryptoError::Malformed("one-time code"))
        );
    }

    #[test]
    fn derived_values_are_independent_and_tied_to_the_code() {
        let a = OneTimeCode::generate(&mut rng());
        let b = OneTimeCode::generate(&mut ChaCha20Rng::seed_from_u64(13));
        assert_ne!(a.auth().as_ref(), a.derive(SEAL_LABEL).as_ref());
        assert_ne!(a.auth().as_ref(), a.derive(SIGN_LABEL).as_ref());
        assert_ne!(a.auth_hash(), b.auth_hash());
        assert_ne!(
            a.signing_key().verifying_key(),
            b.signing_key().verifying_key()
        );
        assert_ne!(
            a.device_passphrase(b"pw").as_slice(),
            b.device_passphrase(b"pw").as_slice()
        );
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_code_and_context() {
        let c = OneTimeCode::generate(&mut rng());
        let sealed = c.seal_scope_key(&ScopeKey::from_bytes(WK), &ctx(1), &mut rng());
        assert_eq!(sealed.len(), SEALED_KEY_LEN);
        assert_eq!(
            c.open_scope_key(&sealed, &ctx(1))
                .expect("opens")
                .expose_secret(),
            &WK
        );
        assert_eq!(
            c.open_scope_key(&sealed, &ctx(2)).err(),
            Some(CryptoError::DecryptionFailed)
        );
        let other = OneTimeCode::generate(&mut ChaCha20Rng::seed_from_u64(14));
        assert_eq!(
            other.open_scope_key(&sealed, &ctx(1)).err(),
            Some(CryptoError::DecryptionFailed)
        );
        for i in 2..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                c.open_scope_key(&bad, &ctx(1)).err(),
                Some(CryptoError::DecryptionFailed),
                "byte {i}"
            );
        }
        assert_eq!(
            c.open_scope_key(&sealed[..10], &ctx(1)).err(),
            Some(CryptoError::Malformed("sealed key"))
        );
        let mut wrong_version = sealed.clone();
        wrong_version[0] = 2;
        assert_eq!(
            c.open_scope_key(&wrong_version, &ctx(1)).err(),
            Some(CryptoError::UnsupportedFormat)
        );
    }

    #[test]
    fn invite_statement_layout_is_pinned() {
        let key = SigningKey::from_seed(&[9; 32]).verifying_key();
        let id = InviteId::from_bytes([3; 16]);
        let m = invite_statement(&id, &key);
        let mut want = b"zopp/v1/invite".to_vec();
        want.extend_from_slice(&[3; 16]);
        want.extend_from_slice(&key.to_bytes());
        assert_eq!(m, want);
    }
}
