//! Ed25519 key decoding and strict verification (FORMAT.md §1) on arbitrary keys, signatures
//! and messages, checked against ed25519-dalek's `verify_strict` (differential: the two must
//! agree on every input), plus the batch verifiers and the signed statements of §4, §6 and §7.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_crypto::keys::{self, SigningKey, VerifyingKey};

fuzz_target!(|data: &[u8]| {
    if data.len() < 96 {
        return;
    }
    let (key, rest) = data.split_at(32);
    let (sig, msg) = rest.split_at(64);
    let ours = VerifyingKey::try_from_slice(key).and_then(|k| k.verify(msg, sig));

    // ed25519-dalek's strict verification, with the canonical-encoding and weak-key checks
    // FORMAT.md §1 adds in front of it.
    let arr: [u8; 32] = key.try_into().expect("32 bytes");
    let canonical =
        !(arr[31] & 0x7f == 0x7f && arr[1..31].iter().all(|&b| b == 0xff) && arr[0] >= 0xed);
    let dalek = canonical
        && ed25519_dalek::VerifyingKey::from_bytes(&arr).is_ok_and(|k| {
            !k.is_weak()
                && ed25519_dalek::Signature::from_slice(sig)
                    .is_ok_and(|s| k.verify_strict(msg, &s).is_ok())
        });
    assert_eq!(
        ours.is_ok(),
        dalek,
        "key {} sig {}",
        hex::encode(key),
        hex::encode(sig)
    );

    if let Ok(k) = VerifyingKey::try_from_slice(key) {
        let _ = keys::verify_batch(&[msg], &[sig], &[k]);
        let _ =
            keys::verify_batch_grouped(&[msg, msg], &[sig, sig], &[k, k], &mut rand::thread_rng());
    }

    // An honest signature over the same bytes verifies, and so does the batch of it.
    let signer = SigningKey::from_seed(&arr);
    let good = signer.sign(msg);
    let vk = signer.verifying_key();
    vk.verify(msg, &good).expect("an honest signature verifies");
    keys::verify_batch(&[msg], &[&good], &[vk]).expect("an honest batch verifies");
});
