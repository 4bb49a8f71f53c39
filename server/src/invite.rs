//! Server invites: single-use tokens `zinv_` + base64url(16-byte invite id ‖ 32-byte secret).
//!
//! The database keeps only SHA-256 of the secret, so a copy of it cannot be turned into a working
//! invite. `zopp-server invite create` writes the invite straight into the database; no running
//! server is needed.

use std::fmt;

use base64::Engine;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};
use zopp_crypto::ids::InviteId;

use crate::audit::{action, server_draft};
use crate::storage::{ServerInviteRecord, Storage, StorageError};

/// Prefix of every server invite token.
pub const INVITE_PREFIX: &str = "zinv_";
const RAW_LEN: usize = 16 + 32;
/// Default lifetime of a new invite.
pub const DEFAULT_EXPIRES_HOURS: u32 = 48;
/// Longest lifetime accepted (one year): an invite is meant to be redeemed soon.
pub const MAX_EXPIRES_HOURS: u32 = 24 * 366;

/// Error parsing an invite token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed invite token")]
pub struct InviteParseError;

/// A decoded invite token. Its secret is zeroized on drop and never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct InviteToken {
    #[zeroize(skip)]
    id: InviteId,
    secret: [u8; 32],
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteToken({}, ..)", self.id)
    }
}

impl InviteToken {
    /// A fresh token.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self {
            id: InviteId::random(rng),
            secret,
        }
    }

    /// The invite id (not secret).
    pub fn id(&self) -> InviteId {
        self.id
    }

    /// SHA-256 of the secret: what the database stores and compares.
    pub fn secret_hash(&self) -> [u8; 32] {
        zopp_crypto::sha256(&self.secret)
    }

    /// The token text as printed for the user.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        raw[..16].copy_from_slice(self.id.as_bytes());
        raw[16..].copy_from_slice(&self.secret);
        let mut s = Zeroizing::new(String::from(INVITE_PREFIX));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_slice(), &mut s);
        s
    }

    /// Parses token text (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`InviteParseError`] for anything that is not a well-formed token.
    pub fn try_parse(text: &str) -> Result<Self, InviteParseError> {
        let body = text
            .trim_matches(zopp_crypto::token::is_format_whitespace)
            .strip_prefix(INVITE_PREFIX)
            .ok_or(InviteParseError)?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| InviteParseError)?,
        );
        if raw.len() != RAW_LEN {
            return Err(InviteParseError);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&raw[16..]);
        Ok(Self {
            id: InviteId::from_bytes(id),
            secret,
        })
    }
}

/// A freshly created invite: the token text (shown once) and its expiry.
pub struct CreatedInvite {
    /// `zinv_…` text to hand to the new user.
    pub token: Zeroizing<String>,
    /// Expiry time (unix ms).
    pub expires_at_ms: i64,
}

impl fmt::Debug for CreatedInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CreatedInvite(.., expires_at_ms: {})",
            self.expires_at_ms
        )
    }
}

/// Creates a single-use server invite valid for `expires_hours` from `now_ms`, with its
/// `invite.create` entry on the server audit chain.
///
/// # Errors
/// Storage failures.
pub async fn create_server_invite(
    storage: &dyn Storage,
    expires_hours: u32,
    now_ms: i64,
    rng: &mut impl CryptoRngCore,
) -> Result<CreatedInvite, StorageError> {
    let token = InviteToken::generate(rng);
    let expires_at_ms = now_ms + i64::from(expires_hours) * 3_600_000;
    let record = ServerInviteRecord {
        id: token.id(),
        secret_hash: token.secret_hash(),
        created_at_ms: now_ms,
        expires_at_ms,
        used_at_ms: None,
    };
    let audit = server_draft(
        action::INVITE_CREATE,
        format!("invite/{}", token.id()),
        now_ms,
    );
    storage.create_server_invite(record, audit).await?;
    Ok(CreatedInvite {
        token: token.encode(),
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trips_and_has_the_documented_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t = InviteToken::generate(&mut rng);
        let text = t.encode();
        assert!(text.starts_with("zinv_"));
        // 48 bytes → 64 base64url characters, no padding.
        assert_eq!(text.len(), 5 + 64);
        let back = InviteToken::try_parse(&format!("  {}\n", text.as_str())).expect("parse");
        assert_eq!(back.id(), t.id());
        assert_eq!(back.secret_hash(), t.secret_hash());
        assert!(!format!("{back:?}").contains(&text[5..]));
    }

    #[test]
    fn refuses_malformed_tokens() {
        for bad in ["", "zinv_", "zopp_AAAA", "zinv_!!!!", "zinv_AAAA", "ZINV_x"] {
            assert_eq!(
                InviteToken::try_parse(bad).err(),
                Some(InviteParseError),
                "{bad}"
            );
        }
        let long = format!("zinv_{}", "A".repeat(100));
        assert!(InviteToken::try_parse(&long).is_err());
    }
}
