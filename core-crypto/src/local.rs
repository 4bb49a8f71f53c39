//! Keys for files a client keeps for itself: the encrypted fallback copy of an environment
//! (`zopp run --fallback FILE`) and integrity tags over local caches.
//!
//! A [`LocalKey`] is derived with HKDF-SHA256 from the principal's X25519 secret and a
//! purpose label, so it exists only where that principal's private key is, and each purpose
//! gets an independent key. Nothing sealed here ever goes to a server.
//!
//! Sealed layout (changing it breaks every copy already written):
//! `0x01 (format) ‖ 0x01 (XChaCha20-Poly1305) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`, the AAD
//! being the caller's context prefixed with [`LOCAL_AAD`].

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::AgreementSecret;
use crate::wrap::{ALG_XCHACHA_HKDF, FORMAT_V1};
use crate::{CryptoError, Result};

/// HKDF info of the key sealing `zopp run --fallback` copies.
pub const FALLBACK_LABEL: &[u8] = b"zopp/v1/fallback";
/// HKDF info of the key tagging the client's cache of already verified signatures.
pub const VERIFIED_CACHE_LABEL: &[u8] = b"zopp/v1/verified-cache";
/// AAD prefix of every locally sealed file.
pub const LOCAL_AAD: &[u8] = b"zopp/v1/local";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes [`LocalKey::seal`] adds to its plaintext: version, algorithm, nonce, tag.
pub const LOCAL_OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;

/// A symmetric key for one local purpose, derived from a principal's X25519 secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct LocalKey([u8; 32]);

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKey(..)")
    }
}

impl LocalKey {
    /// Derives the key of `label` (e.g. [`FALLBACK_LABEL`]) from `secret`.
    pub fn derive(secret: &AgreementSecret, label: &[u8]) -> Self {
        let mut k = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret.expose_secret())
            .expand(label, &mut k)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(k)
    }

    /// A key from raw bytes (tests and vectors).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    fn aad(context: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut aad = Zeroizing::new(Vec::with_capacity(LOCAL_AAD.len() + context.len()));
        aad.extend_from_slice(LOCAL_AAD);
        aad.extend_from_slice(context);
        aad
    }

    /// Seals `plaintext`, binding `context` (who and what the file is for) as AAD.
    pub fn seal(&self, context: &[u8], plaintext: &[u8], rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new((&self.0).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &Self::aad(context),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(LOCAL_OVERHEAD + plaintext.len());
        out.push(FORMAT_V1);
        out.push(ALG_XCHACHA_HKDF);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`LocalKey::seal`] produced for the same `context`.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedFormat`] for an unknown version or algorithm,
    /// [`CryptoError::Malformed`] for a truncated input, [`CryptoError::DecryptionFailed`] for
    /// a wrong key, a wrong context or tampered bytes.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < 2 {
            return Err(CryptoError::Malformed("local file"));
        }
        if sealed[0] != FORMAT_V1 || sealed[1] != ALG_XCHACHA_HKDF {
            return Err(CryptoError::UnsupportedFormat);
        }
        if sealed.len() < LOCAL_OVERHEAD {
            return Err(CryptoError::Malformed("local file"));
        }
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                XNonce::from_slice(&sealed[2..2 + NONCE_LEN]),
                Payload {
                    msg: &sealed[2 + NONCE_LEN..],
                    aad: &Self::aad(context),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::DecryptionFailed)
    }

    /// HMAC-SHA256 of `data` under this key (integrity of local caches).
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(LOCAL_AAD);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Fixed X25519 secret of the test principal.
    const SECRET: [u8; 32] = [0x42; 32];

    fn key(label: &[u8]) -> LocalKey {
        LocalKey::derive(&AgreementSecret::from_bytes(SECRET), label)
    }

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let k = key(FALLBACK_LABEL);
        let sealed = k.seal(b"principal|acme/api/dev", b"A=1", &mut rng);
        assert_eq!(sealed.len(), LOCAL_OVERHEAD + 3);
        assert_eq!(
            k.open(b"principal|acme/api/dev", &sealed)
                .expect("opens")
                .as_slice(),
            b"A=1"
        );
        assert_eq!(
            k.open(b"principal|acme/api/prod", &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        // Another purpose's key opens nothing.
        assert_eq!(
            key(VERIFIED_CACHE_LABEL).open(b"principal|acme/api/dev", &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open(b"principal|acme/api/dev", &bad).is_err(), "byte {i}");
        }
        assert_eq!(
            k.open(b"", &sealed[..LOCAL_OVERHEAD - 1]),
            Err(CryptoError::Malformed("local file"))
        );
    }

    #[test]
    fn tags_depend_on_key_and_data() {
        let a = key(VERIFIED_CACHE_LABEL);
        assert_eq!(a.tag(b"x"), a.tag(b"x"));
        assert_ne!(a.tag(b"x"), a.tag(b"y"));
        assert_ne!(a.tag(b"x"), key(FALLBACK_LABEL).tag(b"x"));
        assert!(format!("{a:?}") == "LocalKey(..)");
    }
}
