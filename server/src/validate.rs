//! Server-side validation of client input (docs/ARCHITECTURE.md "Limits"). Clients check the same
//! rules first; the server checks again because it cannot trust them.

use std::str::FromStr;

use zopp_crypto::envelope::{NameDigest, ENVELOPE_OVERHEAD};
use zopp_crypto::keys::SIGNATURE_LEN;
use zopp_crypto::wrap::{
    WrappedKey, ALG_X25519_XCHACHA, ALG_XCHACHA_HKDF, CHILD_WRAP_LEN, FORMAT_V1, RECIPIENT_WRAP_LEN,
};

use crate::error::{ServiceError, ServiceResult};

/// Longest workspace, project, environment or principal name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest envelope the server stores: a 1 MiB value plus 64 KiB for name, metadata and framing.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Most versions one `WriteSecrets` call may append.
pub const MAX_WRITES_PER_CALL: usize = 20_000;
/// Longest email address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Largest gRPC message in either direction.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

fn shown(s: &str) -> String {
    // Names are not secret, but an error message should not echo a megabyte back.
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// Checks a workspace, project or environment name: 1–256 bytes, no whitespace, no control
/// characters, no `/`.
///
/// # Errors
/// INVALID_ARGUMENT naming the rule broken.
pub fn scope_name(kind: &str, name: &str) -> ServiceResult<()> {
    let why = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!("it is longer than {MAX_NAME_BYTES} bytes"))
    } else if name.chars().any(char::is_whitespace) {
        Some("it contains whitespace".to_string())
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character".to_string())
    } else if name.contains('/') {
        Some("it contains '/'".to_string())
    } else {
        None
    };
    match why {
        Some(w) => Err(ServiceError::InvalidArgument(format!(
            "invalid {kind} name '{}': {w}",
            shown(name)
        ))),
        None => Ok(()),
    }
}

/// Checks a principal (device) name: 1–256 bytes, no control characters, not blank.
///
/// # Errors
/// INVALID_ARGUMENT naming the rule broken.
pub fn principal_name(name: &str) -> ServiceResult<()> {
    if name.trim().is_empty() {
        return Err(ServiceError::InvalidArgument(
            "principal name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "principal name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::InvalidArgument(
            "principal name contains a control character".into(),
        ));
    }
    Ok(())
}

/// Checks an email address: a non-empty local part, `@`, a domain without empty labels; at most
/// 254 bytes; no whitespace or control characters.
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn email(addr: &str) -> ServiceResult<()> {
    let bad = || ServiceError::InvalidArgument(format!("invalid email address '{}'", shown(addr)));
    if addr.len() > MAX_EMAIL_BYTES || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = addr.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.is_empty()
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok(())
}

/// Parses a client-chosen id: a valid, non-nil UUID.
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn client_id<T: FromStr>(kind: &str, text: &str) -> ServiceResult<T> {
    let bad = || ServiceError::InvalidArgument(format!("invalid {kind} id '{}'", shown(text)));
    if uuid::Uuid::parse_str(text).map_err(|_| bad())?.is_nil() {
        return Err(bad());
    }
    T::from_str(text).map_err(|_| bad())
}

/// Checks the framing of a key wrapped to a principal (FORMAT.md §3.2). The server cannot open
/// it; this only refuses bytes no client could ever unwrap.
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn recipient_wrap(what: &str, b: &[u8]) -> ServiceResult<WrappedKey> {
    if b.len() != RECIPIENT_WRAP_LEN || b[0] != FORMAT_V1 || b[1] != ALG_X25519_XCHACHA {
        return Err(ServiceError::InvalidArgument(format!(
            "{what} is not a key wrapped to a principal ({RECIPIENT_WRAP_LEN} bytes, format 1, algorithm 2)"
        )));
    }
    Ok(WrappedKey::from_bytes(b.to_vec()))
}

/// Checks the framing of a key wrapped under a parent key (FORMAT.md §3.3).
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn child_wrap(what: &str, b: &[u8]) -> ServiceResult<WrappedKey> {
    if b.len() != CHILD_WRAP_LEN || b[0] != FORMAT_V1 || b[1] != ALG_XCHACHA_HKDF {
        return Err(ServiceError::InvalidArgument(format!(
            "{what} is not a key wrapped under a parent key ({CHILD_WRAP_LEN} bytes, format 1, algorithm 1)"
        )));
    }
    Ok(WrappedKey::from_bytes(b.to_vec()))
}

/// Parses a 32-byte name digest.
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn name_digest(b: &[u8]) -> ServiceResult<NameDigest> {
    NameDigest::try_from_slice(b).map_err(|_| {
        ServiceError::InvalidArgument(format!("name_digest must be 32 bytes, got {}", b.len()))
    })
}

/// Checks an envelope's size and framing (FORMAT.md §5): version 1, algorithm 1, room for a
/// nonce and tag, at most [`MAX_ENVELOPE_BYTES`].
///
/// # Errors
/// INVALID_ARGUMENT naming the secret by digest prefix and the limit.
pub fn envelope(digest_prefix: &str, b: &[u8]) -> ServiceResult<()> {
    if b.len() > MAX_ENVELOPE_BYTES {
        return Err(ServiceError::InvalidArgument(format!(
            "envelope of secret {digest_prefix} is {} bytes; the limit is {MAX_ENVELOPE_BYTES} bytes (1 MiB value + 64 KiB)",
            b.len()
        )));
    }
    if b.len() < ENVELOPE_OVERHEAD || b[0] != FORMAT_V1 || b[1] != ALG_XCHACHA_HKDF {
        return Err(ServiceError::InvalidArgument(format!(
            "envelope of secret {digest_prefix} is not a format-1 sealed envelope"
        )));
    }
    Ok(())
}

/// Parses a fixed-length byte field.
///
/// # Errors
/// INVALID_ARGUMENT naming the field.
pub fn fixed<const N: usize>(field: &str, b: &[u8]) -> ServiceResult<[u8; N]> {
    b.try_into().map_err(|_| {
        ServiceError::InvalidArgument(format!("{field} must be {N} bytes, got {}", b.len()))
    })
}

/// Parses a signature.
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn signature(field: &str, b: &[u8]) -> ServiceResult<[u8; SIGNATURE_LEN]> {
    fixed::<SIGNATURE_LEN>(field, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use zopp_crypto::ids::WorkspaceId;

    #[rstest]
    #[case("prod", true)]
    #[case("my-app_2.0", true)]
    #[case("ünïcödé", true)]
    #[case("", false)]
    #[case("a b", false)]
    #[case("a\tb", false)]
    #[case("a\u{7}b", false)]
    #[case("a/b", false)]
    #[case("a\u{a0}b", false)]
    fn scope_names(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(scope_name("workspace", name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn scope_name_length_is_in_bytes() {
        assert!(scope_name("project", &"a".repeat(256)).is_ok());
        assert!(scope_name("project", &"a".repeat(257)).is_err());
        // 129 two-byte characters = 258 bytes.
        assert!(scope_name("project", &"é".repeat(129)).is_err());
    }

    #[test]
    fn long_names_are_not_echoed_in_full() {
        let e = scope_name("project", &format!("{} x", "a".repeat(500))).expect_err("invalid");
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[rstest]
    #[case("a@example.com", true)]
    #[case("first.last+tag@sub.example.org", true)]
    #[case("user@localhost", true)]
    #[case("", false)]
    #[case("no-at-sign", false)]
    #[case("@example.com", false)]
    #[case("a@", false)]
    #[case("a b@example.com", false)]
    #[case("a@.example.com", false)]
    #[case("a@example..com", false)]
    fn emails(#[case] addr: &str, #[case] ok: bool) {
        assert_eq!(email(addr).is_ok(), ok, "{addr:?}");
    }

    #[test]
    fn ids_must_be_non_nil_uuids() {
        assert!(
            client_id::<WorkspaceId>("workspace", "00000000-0000-0000-0000-000000000000").is_err()
        );
        assert!(client_id::<WorkspaceId>("workspace", "not-a-uuid").is_err());
        assert!(
            client_id::<WorkspaceId>("workspace", "6f1c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f").is_ok()
        );
    }

    #[test]
    fn wrap_framing() {
        let mut r = vec![0u8; RECIPIENT_WRAP_LEN];
        r[0] = FORMAT_V1;
        r[1] = ALG_X25519_XCHACHA;
        assert!(recipient_wrap("k", &r).is_ok());
        assert!(child_wrap("k", &r).is_err());
        let mut c = vec![0u8; CHILD_WRAP_LEN];
        c[0] = FORMAT_V1;
        c[1] = ALG_XCHACHA_HKDF;
        assert!(child_wrap("k", &c).is_ok());
        assert!(recipient_wrap("k", &c).is_err());
        assert!(child_wrap("k", &[]).is_err());
    }

    #[test]
    fn envelope_limits() {
        let mut e = vec![0u8; MAX_ENVELOPE_BYTES];
        e[0] = FORMAT_V1;
        e[1] = ALG_XCHACHA_HKDF;
        assert!(envelope("ab", &e).is_ok());
        e.push(0);
        let err = envelope("ab", &e).expect_err("too big");
        assert!(err.to_string().contains("1114112"), "{err}");
        assert!(envelope("ab", &[1, 1, 0]).is_err());
        let mut wrong_alg = vec![0u8; 64];
        wrong_alg[0] = FORMAT_V1;
        wrong_alg[1] = 9;
        assert!(envelope("ab", &wrong_alg).is_err());
    }
}
