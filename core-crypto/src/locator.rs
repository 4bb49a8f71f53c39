//! Where a code is to be redeemed: invite codes (`zinv_…`, `zwi_…`) and device codes
//! (`zdev_…`) may carry the server's URL, and a slot for the SHA-256 fingerprint of the CA that
//! signs its TLS certificate, so that `zopp join CODE EMAIL` on another machine needs no
//! `--server`.
//!
//! Text form: `CODE.LOCATOR`, where `LOCATOR` is base64url without padding of
//! `version: u8 = 1 ‖ url_len: u16 BE ‖ url (UTF-8) ‖ ca_len: u8 ‖ ca_fingerprint`; `ca_len` is 0
//! (no CA pinned: a public CA or plain http) or 32 (SHA-256 of the CA certificate, DER). The
//! code part is unchanged and `.` is outside the base64url alphabet, so a code without a
//! locator still parses as before. The locator is not secret and not authenticated: it only
//! says where to go, and everything the server answers is verified as before (a wrong URL
//! fails the join; it cannot make the joiner trust another server's keys).

use base64::Engine;

/// Separates a code from its locator.
pub const SEPARATOR: char = '.';
/// The only locator layout.
const LOCATOR_V1: u8 = 1;
/// Longest URL a locator holds.
pub const MAX_URL_LEN: usize = 2048;

/// Where to redeem a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locator {
    /// The server URL, e.g. `https://zopp.example.com:50051`.
    pub server: String,
    /// SHA-256 of the CA certificate (DER) the server's TLS chain ends in, when pinned.
    pub ca_fingerprint: Option<[u8; 32]>,
}

/// Why a locator cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocatorError {
    /// Not base64url, truncated, or trailing bytes.
    #[error("the server address part of the code is damaged")]
    Malformed,
    /// A layout version this client does not know.
    #[error("the server address part of the code has version {0}, which this zopp does not know (upgrade zopp)")]
    UnknownVersion(u8),
}

impl Locator {
    /// `code` with this locator attached.
    pub fn attach(&self, code: &str) -> String {
        let url = self.server.as_bytes();
        let url = &url[..url.len().min(MAX_URL_LEN)];
        let mut raw = Vec::with_capacity(4 + url.len() + 32);
        raw.push(LOCATOR_V1);
        raw.extend_from_slice(&(url.len() as u16).to_be_bytes());
        raw.extend_from_slice(url);
        match &self.ca_fingerprint {
            Some(fp) => {
                raw.push(32);
                raw.extend_from_slice(fp);
            }
            None => raw.push(0),
        }
        let mut out = String::with_capacity(code.len() + 1 + raw.len() * 4 / 3 + 4);
        out.push_str(code);
        out.push(SEPARATOR);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
        out
    }

    /// Splits `text` (surrounding whitespace ignored) into the code and its locator, if any.
    ///
    /// # Errors
    /// [`LocatorError`] when a locator is present but unreadable.
    pub fn split(text: &str) -> Result<(&str, Option<Locator>), LocatorError> {
        let text = text.trim();
        let Some((code, locator)) = text.split_once(SEPARATOR) else {
            return Ok((text, None));
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(locator)
            .map_err(|_| LocatorError::Malformed)?;
        let (&version, rest) = raw.split_first().ok_or(LocatorError::Malformed)?;
        if version != LOCATOR_V1 {
            return Err(LocatorError::UnknownVersion(version));
        }
        let (len, rest) = rest.split_at_checked(2).ok_or(LocatorError::Malformed)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len > MAX_URL_LEN {
            return Err(LocatorError::Malformed);
        }
        let (url, rest) = rest.split_at_checked(len).ok_or(LocatorError::Malformed)?;
        let server = std::str::from_utf8(url)
            .map_err(|_| LocatorError::Malformed)?
            .to_owned();
        let ca_fingerprint = match rest {
            [0] => None,
            [32, fp @ ..] if fp.len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(fp);
                Some(out)
            }
            _ => return Err(LocatorError::Malformed),
        };
        if server.is_empty() || server.chars().any(char::is_control) {
            return Err(LocatorError::Malformed);
        }
        Ok((
            code,
            Some(Locator {
                server,
                ca_fingerprint,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const CODE: &str = "zwi_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn round_trips_with_and_without_a_ca() {
        for ca in [None, Some([7u8; 32])] {
            let l = Locator {
                server: "https://zopp.example.com:50051".into(),
                ca_fingerprint: ca,
            };
            let text = l.attach(CODE);
            assert!(text.starts_with(&format!("{CODE}.")));
            assert_eq!(Locator::split(&text), Ok((CODE, Some(l))));
        }
    }

    #[test]
    fn pinned_bytes() {
        let l = Locator {
            server: "http://a:1".into(),
            ca_fingerprint: None,
        };
        // 01 ‖ 000a ‖ "http://a:1" ‖ 00
        assert_eq!(l.attach("c"), "c.AQAKaHR0cDovL2E6MQA");
    }

    #[test]
    fn a_code_without_a_locator_is_just_the_code() {
        assert_eq!(Locator::split(&format!(" {CODE}\n")), Ok((CODE, None)));
    }

    #[rstest]
    #[case::not_base64("c.!!")]
    #[case::empty("c.")]
    #[case::truncated_url("c.AQAKaHR0")]
    #[case::no_ca_len("c.AQAKaHR0cDovL2E6MQ")]
    #[case::short_ca("c.AQAKaHR0cDovL2E6MSAH")]
    #[case::trailing("c.AQAKaHR0cDovL2E6MQAA")]
    fn damaged_locators_are_refused(#[case] text: &str) {
        assert_eq!(Locator::split(text), Err(LocatorError::Malformed), "{text}");
    }

    #[test]
    fn unknown_versions_are_named() {
        assert_eq!(
            Locator::split("c.AgAKaHR0cDovL2E6MQA"),
            Err(LocatorError::UnknownVersion(2))
        );
    }
}
