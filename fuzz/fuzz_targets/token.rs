//! Parses arbitrary text as a principal token (FORMAT.md §10) and as a one-time code: nothing may
//! panic, and whatever parses must encode back to the input without its surrounding whitespace.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_crypto::code::OneTimeCode;
use zopp_crypto::token::{is_format_whitespace, PrincipalToken};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trimmed = text.trim_matches(is_format_whitespace);
    if let Ok(t) = PrincipalToken::try_parse(text) {
        assert_eq!(t.encode().as_str(), trimmed);
    }
    for prefix in ["zopp_inv_", "zopp_dev_", ""] {
        if let Ok(c) = OneTimeCode::try_parse(prefix, text) {
            assert_eq!(c.encode(prefix).as_str(), trimmed);
        }
    }
});
