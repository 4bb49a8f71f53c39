//! Decodes arbitrary bytes as a key file (FORMAT.md §9): nothing may panic, parameters out of
//! bounds never reach Argon2, and whatever decodes re-encodes to the same keys. Argon2 itself
//! only runs for small stored parameters, so each input stays fast.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_crypto::keyfile;
use zopp_crypto::CryptoError;

fuzz_target!(|data: &[u8]| {
    let without = keyfile::decode(data, None);
    if data.len() == 134 && data[..2] == [1, 3] {
        let u = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().expect("4 bytes"));
        let (m, t, p) = (u(2), u(6), u(10));
        let in_bounds =
            (1..=32).contains(&t) && (1..=16).contains(&p) && m >= 8 * p && m <= 2 << 20;
        // Bounds first, then the passphrase (FORMAT.md §9 order).
        let want = if in_bounds {
            CryptoError::DecryptionFailed
        } else {
            CryptoError::KdfParams
        };
        assert_eq!(without.as_ref().err(), Some(&want));
        if in_bounds && m <= 64 && t <= 2 {
            let _ = keyfile::decode(data, Some(b"correct horse battery staple"));
        }
    }
    if let Ok(keys) = without {
        assert_eq!(keyfile::encode_plain(&keys).as_slice(), data);
    }
});
