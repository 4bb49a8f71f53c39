use thiserror::Error;

/// Errors from zopp-crypto. Deliberately coarse: a failed open never says which check failed,
/// so it cannot serve as an oracle.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authenticated decryption failed (wrong key, wrong context, or tampered bytes).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The input has an unknown format version or algorithm id.
    #[error("unsupported format version or algorithm")]
    UnsupportedFormat,
    /// The input is shorter or longer than its format allows.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A public key is not a valid point, or a key agreement produced a non-contributory result.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// KDF parameters are outside the accepted bounds.
    #[error("key derivation parameters out of bounds")]
    KdfParams,
}
