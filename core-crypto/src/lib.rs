//! zopp's cryptography: principal keys, scope keys, key wrapping, secret envelopes, signatures
//! and the passphrase KDF.
//!
//! This crate is pure: it does no I/O, reads no clock or environment and spawns nothing. Callers
//! pass randomness (`CryptoRngCore`) and time in, so every function is deterministic under test.
//! Every byte layout produced here is specified in `threat-model/FORMAT.md`; the section is named
//! next to the code that writes it. Secret types zeroize on drop and never print their contents.

pub mod audit;
pub mod code;
pub mod envelope;
mod error;
pub mod ids;
pub mod keyfile;
pub mod keys;
pub mod local;
pub mod locator;
pub mod sign;
pub mod statement;
pub mod token;
pub mod wrap;

pub use error::CryptoError;

/// Result alias for this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
