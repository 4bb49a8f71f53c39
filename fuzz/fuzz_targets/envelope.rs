//! Opens arbitrary bytes as a secret envelope (FORMAT.md §5), and seals arbitrary bytes as an
//! authentic §5.2 payload so the payload decoder sees inputs only a key holder could make.
//! Nothing may panic; an authentic payload that decodes must re-seal and open to the same fields.

#![no_main]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use zopp_crypto::envelope::{Envelope, EnvelopeContext, NameDigest, SealKey, SecretPayload};
use zopp_crypto::ids::EnvironmentId;
use zopp_crypto::keys::ScopeKey;

const EK: [u8; 32] = [0x42; 32];

fn ctx() -> EnvelopeContext {
    EnvelopeContext {
        environment: EnvironmentId::from_bytes([7; 16]),
        name_digest: NameDigest::try_from_slice(&[9; 32]).expect("32 bytes"),
        version: 3,
        key_epoch: 2,
    }
}

fn seal_raw(payload: &[u8]) -> Vec<u8> {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, &EK)
        .expand(b"zopp/v1/seal", &mut key)
        .expect("32 bytes");
    let nonce = [5u8; 24];
    let ct = XChaCha20Poly1305::new((&key).into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: payload,
                aad: &ctx().aad(),
            },
        )
        .expect("in-memory encryption");
    [&[1u8, 1][..], &nonce, &ct].concat()
}

fuzz_target!(|data: &[u8]| {
    let key = SealKey::derive(&ScopeKey::from_bytes(EK));
    let _ = key.open(&ctx(), &Envelope::from_bytes(data.to_vec()));
    if let Ok(p) = key.open(&ctx(), &Envelope::from_bytes(seal_raw(data))) {
        let again = SecretPayload::new(
            p.kind(),
            p.name().to_owned(),
            p.expose_secret().to_vec(),
            p.metadata().to_vec(),
        );
        let mut rng = rand::thread_rng();
        let q = key
            .open(&ctx(), &key.seal(&ctx(), &again, &mut rng))
            .expect("a sealed payload opens");
        assert_eq!(q.name(), p.name());
        assert_eq!(q.expose_secret(), p.expose_secret());
        assert_eq!(q.metadata(), p.metadata());
        assert_eq!(q.kind(), p.kind());
    }
});
