//! Unwraps arbitrary bytes as a recipient wrap (FORMAT.md §3.2) and as a child wrap (§3.3), and
//! wraps to arbitrary 32-byte X25519 keys: nothing may panic, and a wrap that succeeds must open.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_crypto::ids::PrincipalId;
use zopp_crypto::keys::{AgreementPublic, AgreementSecret, ScopeKey, ScopeKind};
use zopp_crypto::wrap::{self, KeyContext, WrappedKey};

fuzz_target!(|data: &[u8]| {
    let ctx = KeyContext {
        kind: ScopeKind::Environment,
        id: [3; 16],
        epoch: 2,
    };
    let parent = KeyContext {
        kind: ScopeKind::Project,
        id: [4; 16],
        epoch: 1,
    };
    let me = PrincipalId::from_bytes([1; 16]);
    let secret = AgreementSecret::from_bytes([0x11; 32]);
    let w = WrappedKey::from_bytes(data.to_vec());
    let _ = wrap::unwrap_from_recipient(&w, &ctx, &me, &secret);
    let _ = wrap::unwrap_under(&w, &ctx, &ScopeKey::from_bytes([0x22; 32]), &parent);

    if let Some(public) = data.get(..32) {
        let public = AgreementPublic::try_from_slice(public).expect("32 bytes");
        let _ = public.is_low_order();
        let key = ScopeKey::from_bytes([0x33; 32]);
        let mut rng = rand::thread_rng();
        if let Ok(w) = wrap::wrap_to_recipient(&key, &ctx, &me, &public, &mut rng) {
            assert!(public.is_canonical() && !public.is_low_order());
            assert_eq!(w.as_bytes().len(), wrap::RECIPIENT_WRAP_LEN);
        }
    }
});
