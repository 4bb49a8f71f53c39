//! Property tests: every round trip holds for arbitrary inputs, and every change to ciphertext,
//! signature or bound context (a single flipped bit, any other AAD field) is refused.
//!
//! Inputs come from proptest; the randomness the crate consumes comes from a ChaCha20 RNG seeded
//! by proptest, so a failing case replays exactly from `proptest-regressions/`.

use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::envelope::{
    Envelope, EnvelopeContext, NameDigest, NameKey, SealKey, SecretKind, SecretPayload,
};
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keyfile::{self, KdfParams};
use zopp_crypto::keys::{
    AgreementSecret, PrincipalKeys, ScopeKey, ScopeKind, SigningKey, SIGNATURE_LEN,
};
use zopp_crypto::sign::{self, VersionClaims};
use zopp_crypto::token::{self, KeyShare, PrincipalToken};
use zopp_crypto::wrap::{self, KeyContext, WrappedKey};
use zopp_crypto::{sha256, CryptoError};

/// Smallest Argon2id parameters, so sealed key files are cheap to test.
const TINY: KdfParams = KdfParams {
    m_cost_kib: 8,
    t_cost: 1,
    p_cost: 1,
};

fn kind() -> impl Strategy<Value = SecretKind> {
    prop_oneof![
        Just(SecretKind::Secret),
        Just(SecretKind::Kubeconfig),
        Just(SecretKind::App)
    ]
}

fn scope_kind() -> impl Strategy<Value = ScopeKind> {
    prop_oneof![
        Just(ScopeKind::Workspace),
        Just(ScopeKind::Project),
        Just(ScopeKind::Environment)
    ]
}

fn key_context() -> impl Strategy<Value = KeyContext> {
    (scope_kind(), any::<[u8; 16]>(), any::<u32>()).prop_map(|(kind, id, epoch)| KeyContext {
        kind,
        id,
        epoch,
    })
}

fn envelope_context() -> impl Strategy<Value = EnvelopeContext> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(env, digest, version, key_epoch)| EnvelopeContext {
            environment: EnvironmentId::from_bytes(env),
            name_digest: NameDigest::try_from_slice(&digest).expect("32 bytes"),
            version,
            key_epoch,
        })
}

fn payload() -> impl Strategy<Value = SecretPayload> {
    (
        kind(),
        ".{0,40}",
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..60),
    )
        .prop_map(|(k, name, value, metadata)| SecretPayload::new(k, name, value, metadata))
}

/// One field of a context to change, and the value to change it to.
#[derive(Clone, Debug)]
enum EnvelopeChange {
    Environment([u8; 16]),
    Digest([u8; 32]),
    Version(u64),
    Epoch(u32),
}

fn envelope_change() -> impl Strategy<Value = EnvelopeChange> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(EnvelopeChange::Environment),
        any::<[u8; 32]>().prop_map(EnvelopeChange::Digest),
        any::<u64>().prop_map(EnvelopeChange::Version),
        any::<u32>().prop_map(EnvelopeChange::Epoch),
    ]
}

/// Applies `change`; `None` when it would leave the context as it was.
fn apply_envelope_change(c: EnvelopeContext, change: &EnvelopeChange) -> Option<EnvelopeContext> {
    let mut out = c;
    match change {
        EnvelopeChange::Environment(e) => out.environment = EnvironmentId::from_bytes(*e),
        EnvelopeChange::Digest(d) => {
            out.name_digest = NameDigest::try_from_slice(d).expect("32 bytes")
        }
        EnvelopeChange::Version(v) => out.version = *v,
        EnvelopeChange::Epoch(e) => out.key_epoch = *e,
    }
    (out != c).then_some(out)
}

#[derive(Clone, Debug)]
enum KeyChange {
    Kind(ScopeKind),
    Id([u8; 16]),
    Epoch(u32),
}

fn key_change() -> impl Strategy<Value = KeyChange> {
    prop_oneof![
        scope_kind().prop_map(KeyChange::Kind),
        any::<[u8; 16]>().prop_map(KeyChange::Id),
        any::<u32>().prop_map(KeyChange::Epoch),
    ]
}

fn apply_key_change(c: KeyContext, change: &KeyChange) -> Option<KeyContext> {
    let mut out = c;
    match change {
        KeyChange::Kind(k) => out.kind = *k,
        KeyChange::Id(id) => out.id = *id,
        KeyChange::Epoch(e) => out.epoch = *e,
    }
    (out != c).then_some(out)
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let bit = bit % (b.len() * 8);
    b[bit / 8] ^= 1 << (bit % 8);
    b
}

fn same_payload(a: &SecretPayload, b: &SecretPayload) -> bool {
    a.kind() == b.kind()
        && a.name() == b.name()
        && a.expose_secret() == b.expose_secret()
        && a.metadata() == b.metadata()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn seal_open_round_trip(
        ek in any::<[u8; 32]>(),
        ctx in envelope_context(),
        p in payload(),
        seed in any::<u64>(),
    ) {
        let key = SealKey::derive(&ScopeKey::from_bytes(ek));
        let env = key.seal(&ctx, &p, &mut ChaCha20Rng::seed_from_u64(seed));
        let out = key.open(&ctx, &env).expect("round trip");
        prop_assert!(same_payload(&out, &p));
    }

    #[test]
    fn open_refuses_any_other_context(
        ek in any::<[u8; 32]>(),
        ctx in envelope_context(),
        change in envelope_change(),
        p in payload(),
        seed in any::<u64>(),
    ) {
        let other = apply_envelope_change(ctx, &change);
        prop_assume!(other.is_some());
        let other = other.expect("assumed");
        let key = SealKey::derive(&ScopeKey::from_bytes(ek));
        let env = key.seal(&ctx, &p, &mut ChaCha20Rng::seed_from_u64(seed));
        prop_assert_eq!(key.open(&other, &env).err(), Some(CryptoError::DecryptionFailed));
    }

    #[test]
    fn open_refuses_any_other_key(
        ek in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        ctx in envelope_context(),
        p in payload(),
    ) {
        prop_assume!(ek != other);
        let env = SealKey::derive(&ScopeKey::from_bytes(ek))
            .seal(&ctx, &p, &mut ChaCha20Rng::seed_from_u64(1));
        let wrong = SealKey::derive(&ScopeKey::from_bytes(other));
        prop_assert_eq!(wrong.open(&ctx, &env).err(), Some(CryptoError::DecryptionFailed));
    }

    #[test]
    fn open_refuses_any_flipped_bit(
        ek in any::<[u8; 32]>(),
        ctx in envelope_context(),
        p in payload(),
        bit in any::<usize>(),
    ) {
        let key = SealKey::derive(&ScopeKey::from_bytes(ek));
        let env = key.seal(&ctx, &p, &mut ChaCha20Rng::seed_from_u64(2));
        let bad = Envelope::from_bytes(flip(env.as_bytes(), bit));
        prop_assert!(key.open(&ctx, &bad).is_err());
    }

    #[test]
    fn name_digests_separate_names_and_environments(
        ek in any::<[u8; 32]>(),
        other_ek in any::<[u8; 32]>(),
        a in ".{0,40}",
        b in ".{0,40}",
    ) {
        let k = NameKey::derive(&ScopeKey::from_bytes(ek));
        prop_assert_eq!(k.digest(&a), k.digest(&a));
        prop_assert_eq!(a == b, k.digest(&a) == k.digest(&b));
        let other = NameKey::derive(&ScopeKey::from_bytes(other_ek));
        prop_assert_eq!(ek == other_ek, k.digest(&a) == other.digest(&a));
    }

    #[test]
    fn recipient_wrap_round_trip(
        key in any::<[u8; 32]>(),
        ctx in key_context(),
        me in any::<[u8; 16]>(),
        secret in any::<[u8; 32]>(),
        seed in any::<u64>(),
    ) {
        let secret = AgreementSecret::from_bytes(secret);
        let me = PrincipalId::from_bytes(me);
        let w = wrap::wrap_to_recipient(
            &ScopeKey::from_bytes(key), &ctx, &me, &secret.public_key(),
            &mut ChaCha20Rng::seed_from_u64(seed),
        ).expect("a real public key");
        prop_assert_eq!(w.as_bytes().len(), wrap::RECIPIENT_WRAP_LEN);
        let k = wrap::unwrap_from_recipient(&w, &ctx, &me, &secret).expect("round trip");
        prop_assert_eq!(k.expose_secret(), &key);
    }

    #[test]
    fn recipient_unwrap_refuses_any_other_context_or_recipient(
        ctx in key_context(),
        change in key_change(),
        me in any::<[u8; 16]>(),
        someone_else in any::<[u8; 16]>(),
        secret in any::<[u8; 32]>(),
    ) {
        let secret = AgreementSecret::from_bytes(secret);
        let me = PrincipalId::from_bytes(me);
        let w = wrap::wrap_to_recipient(
            &ScopeKey::from_bytes([7; 32]), &ctx, &me, &secret.public_key(),
            &mut ChaCha20Rng::seed_from_u64(3),
        ).expect("a real public key");
        if let Some(other) = apply_key_change(ctx, &change) {
            prop_assert_eq!(
                wrap::unwrap_from_recipient(&w, &other, &me, &secret).err(),
                Some(CryptoError::DecryptionFailed)
            );
        }
        let someone_else = PrincipalId::from_bytes(someone_else);
        if someone_else != me {
            prop_assert_eq!(
                wrap::unwrap_from_recipient(&w, &ctx, &someone_else, &secret).err(),
                Some(CryptoError::DecryptionFailed)
            );
        }
    }

    #[test]
    fn recipient_unwrap_refuses_any_flipped_bit(
        ctx in key_context(),
        secret in any::<[u8; 32]>(),
        bit in any::<usize>(),
    ) {
        let secret = AgreementSecret::from_bytes(secret);
        let me = PrincipalId::from_bytes([1; 16]);
        let w = wrap::wrap_to_recipient(
            &ScopeKey::from_bytes([7; 32]), &ctx, &me, &secret.public_key(),
            &mut ChaCha20Rng::seed_from_u64(4),
        ).expect("a real public key");
        let bad = WrappedKey::from_bytes(flip(w.as_bytes(), bit));
        prop_assert!(wrap::unwrap_from_recipient(&bad, &ctx, &me, &secret).is_err());
    }

    #[test]
    fn child_wrap_round_trip(
        child in any::<[u8; 32]>(),
        parent in any::<[u8; 32]>(),
        child_ctx in key_context(),
        parent_ctx in key_context(),
        seed in any::<u64>(),
    ) {
        let w = wrap::wrap_under(
            &ScopeKey::from_bytes(child), &child_ctx, &ScopeKey::from_bytes(parent), &parent_ctx,
            &mut ChaCha20Rng::seed_from_u64(seed),
        );
        prop_assert_eq!(w.as_bytes().len(), wrap::CHILD_WRAP_LEN);
        let k = wrap::unwrap_under(&w, &child_ctx, &ScopeKey::from_bytes(parent), &parent_ctx)
            .expect("round trip");
        prop_assert_eq!(k.expose_secret(), &child);
    }

    #[test]
    fn child_unwrap_refuses_any_other_context_or_parent(
        parent in any::<[u8; 32]>(),
        other_parent in any::<[u8; 32]>(),
        child_ctx in key_context(),
        parent_ctx in key_context(),
        change in key_change(),
        change_parent in any::<bool>(),
    ) {
        let parent_key = ScopeKey::from_bytes(parent);
        let w = wrap::wrap_under(
            &ScopeKey::from_bytes([9; 32]), &child_ctx, &parent_key, &parent_ctx,
            &mut ChaCha20Rng::seed_from_u64(5),
        );
        let changed = if change_parent {
            apply_key_change(parent_ctx, &change).map(|p| (child_ctx, p))
        } else {
            apply_key_change(child_ctx, &change).map(|c| (c, parent_ctx))
        };
        if let Some((c, p)) = changed {
            prop_assert_eq!(
                wrap::unwrap_under(&w, &c, &parent_key, &p).err(),
                Some(CryptoError::DecryptionFailed)
            );
        }
        if other_parent != parent {
            prop_assert_eq!(
                wrap::unwrap_under(&w, &child_ctx, &ScopeKey::from_bytes(other_parent), &parent_ctx)
                    .err(),
                Some(CryptoError::DecryptionFailed)
            );
        }
    }

    #[test]
    fn child_unwrap_refuses_any_flipped_bit(
        child_ctx in key_context(),
        parent_ctx in key_context(),
        bit in any::<usize>(),
    ) {
        let parent = ScopeKey::from_bytes([8; 32]);
        let w = wrap::wrap_under(
            &ScopeKey::from_bytes([9; 32]), &child_ctx, &parent, &parent_ctx,
            &mut ChaCha20Rng::seed_from_u64(6),
        );
        let bad = WrappedKey::from_bytes(flip(w.as_bytes(), bit));
        prop_assert!(wrap::unwrap_under(&bad, &child_ctx, &parent, &parent_ctx).is_err());
    }

    #[test]
    fn sign_verify_round_trip_and_any_change_fails(
        seed in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        other in proptest::collection::vec(any::<u8>(), 0..200),
        bit in 0..SIGNATURE_LEN * 8,
    ) {
        let k = SigningKey::from_seed(&seed);
        let vk = k.verifying_key();
        let sig = k.sign(&msg);
        prop_assert!(vk.verify(&msg, &sig).is_ok());
        prop_assert_eq!(vk.verify(&msg, &flip(&sig, bit)), Err(CryptoError::BadSignature));
        if other != msg {
            prop_assert_eq!(vk.verify(&other, &sig), Err(CryptoError::BadSignature));
        }
    }

    #[test]
    fn request_signature_binds_every_field(
        seed in any::<[u8; 32]>(),
        method in "/[a-z.]{1,20}/[A-Za-z]{1,20}",
        ts in any::<i64>(),
        nonce in any::<[u8; 16]>(),
        body in proptest::collection::vec(any::<u8>(), 0..100),
        server in any::<[u8; 16]>(),
        which in 0..5usize,
    ) {
        let k = SigningKey::from_seed(&seed);
        let server = zopp_crypto::ids::ServerId::from_bytes(server);
        let sig = sign::sign_request(&k, &server, &method, ts, &nonce, &body);
        let vk = k.verifying_key();
        prop_assert!(vk.verify(&sign::request_message(&server, &method, ts, &nonce, &sha256(&body)), &sig).is_ok());
        let (mut m, mut t, mut n, mut b) = (method.clone(), ts, nonce, body.clone());
        let mut sv = *server.as_bytes();
        match which {
            0 => m.push('x'),
            1 => t = t.wrapping_add(1),
            2 => n[0] ^= 1,
            3 => sv[0] ^= 1,
            _ => b.push(0),
        }
        let sv = zopp_crypto::ids::ServerId::from_bytes(sv);
        prop_assert_eq!(
            vk.verify(&sign::request_message(&sv, &m, t, &n, &sha256(&b)), &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn version_claims_bind_every_field(
        seed in any::<[u8; 32]>(),
        ctx in envelope_context(),
        deleted in any::<bool>(),
        envelope in proptest::collection::vec(any::<u8>(), 0..100),
        prev in any::<[u8; 32]>(),
        writer in any::<[u8; 16]>(),
        which in 0..10usize,
    ) {
        let k = SigningKey::from_seed(&seed);
        let c = VersionClaims {
            environment: ctx.environment,
            name_digest: ctx.name_digest,
            version: ctx.version,
            key_epoch: ctx.key_epoch,
            deleted,
            envelope: &envelope,
            prev_hash: prev,
            writer: PrincipalId::from_bytes(writer),
            env_version: ctx.version,
            created_at_ms: i64::from(ctx.key_epoch),
        };
        let sig = c.sign(&k);
        prop_assert!(c.verify(&k.verifying_key(), &sig).is_ok());
        let longer = [envelope.as_slice(), &[0]].concat();
        let mut altered = c;
        match which {
            0 => altered.environment = EnvironmentId::from_bytes(flip(&[0; 16], 0).try_into().expect("16")),
            1 => altered.name_digest = NameDigest::try_from_slice(&flip(c.name_digest.as_bytes(), 7)).expect("32"),
            2 => altered.version = c.version.wrapping_add(1),
            3 => altered.key_epoch = c.key_epoch.wrapping_add(1),
            4 => altered.deleted = !deleted,
            5 => altered.envelope = &longer,
            6 => altered.prev_hash = flip(&prev, 255).try_into().expect("32"),
            7 => altered.env_version = c.env_version.wrapping_add(1),
            8 => altered.created_at_ms = c.created_at_ms.wrapping_sub(1),
            _ => altered.writer = PrincipalId::from_bytes(flip(&writer, 3).try_into().expect("16")),
        }
        prop_assume!(altered != c);
        prop_assert_eq!(altered.verify(&k.verifying_key(), &sig), Err(CryptoError::BadSignature));
        prop_assert_ne!(altered.hash(&sig), c.hash(&sig));
    }

    #[test]
    fn plain_key_file_round_trip(seed in any::<[u8; 32]>(), agr in any::<[u8; 32]>()) {
        let keys = PrincipalKeys {
            signing: SigningKey::from_seed(&seed),
            agreement: AgreementSecret::from_bytes(agr),
        };
        let enc = keyfile::encode_plain(&keys);
        let dec = keyfile::decode(&enc, None).expect("round trip");
        prop_assert_eq!(dec.signing.expose_secret(), seed);
        prop_assert_eq!(dec.agreement.expose_secret(), &agr);
    }

    #[test]
    fn split_combine_round_trip(secret in any::<[u8; 32]>(), seed in any::<u64>()) {
        let s = AgreementSecret::from_bytes(secret);
        let (a, b) = token::split(&s, &mut ChaCha20Rng::seed_from_u64(seed));
        let combined = token::combine(&a, &b);
        prop_assert_eq!(combined.expose_secret(), &secret);
    }

    #[test]
    fn token_round_trip_and_every_prefix_fails(
        id in any::<[u8; 16]>(),
        seed in any::<[u8; 32]>(),
        share in any::<[u8; 32]>(),
    ) {
        let t = PrincipalToken {
            principal: PrincipalId::from_bytes(id),
            signing: SigningKey::from_seed(&seed),
            share: KeyShare::from_bytes(share),
            binding: token::TokenBinding {
                root: PrincipalId::from_bytes(id),
                root_key: seed,
                workspace: token::BoundScope { name: "w".into(), id, epoch_floor: 1 },
                project: None,
                environments: Vec::new(),
            },
        };
        let s = t.encode();
        let back = PrincipalToken::try_parse(&s).expect("round trip");
        prop_assert_eq!(back.principal, t.principal);
        prop_assert_eq!(back.signing.expose_secret(), seed);
        prop_assert_eq!(back.share.expose_secret(), &share);
        for n in 0..s.len() {
            prop_assert!(PrincipalToken::try_parse(&s[..n]).is_err());
        }
    }

    #[test]
    fn audit_encoding_is_injective(
        a in ("[a-z]{0,4}", "[a-z]{0,4}", "[a-z]{0,4}", any::<u64>()),
        b in ("[a-z]{0,4}", "[a-z]{0,4}", "[a-z]{0,4}", any::<u64>()),
    ) {
        let rec = |x: &(String, String, String, u64)| AuditRecord {
            seq: x.3,
            time_ms: 0,
            actor: "",
            action: &x.0,
            scope: &x.1,
            target: &x.2,
            method: "",
            request_timestamp_ms: 0,
            nonce: &[],
            request_hash: &[],
            signature: &[],
            result: "ok",
        }
        .canonical();
        prop_assert_eq!(a == b, rec(&a) == rec(&b));
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ctx = EnvelopeContext {
            environment: EnvironmentId::from_bytes([0; 16]),
            name_digest: NameDigest::try_from_slice(&[0; 32]).expect("32 bytes"),
            version: 1,
            key_epoch: 1,
        };
        let key = ScopeKey::from_bytes([1; 32]);
        let kc = KeyContext { kind: ScopeKind::Environment, id: [0; 16], epoch: 1 };
        let me = PrincipalId::from_bytes([0; 16]);
        prop_assert!(SealKey::derive(&key).open(&ctx, &Envelope::from_bytes(bytes.clone())).is_err());
        let w = WrappedKey::from_bytes(bytes.clone());
        prop_assert!(wrap::unwrap_from_recipient(&w, &kc, &me, &AgreementSecret::from_bytes([2; 32])).is_err());
        prop_assert!(wrap::unwrap_under(&w, &kc, &key, &kc).is_err());
        // Random bytes are a plain key file only when they have its exact header and length.
        let plain = bytes.len() == 66 && bytes[..2] == [1, keyfile::ALG_PLAIN];
        prop_assert_eq!(keyfile::decode(&bytes, Some(b"pw")).is_ok(), plain);
        prop_assert!(zopp_crypto::keys::VerifyingKey::try_from_slice(&bytes).is_err() || bytes.len() == 32);
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(PrincipalToken::try_parse(&text).is_err());
        let prefixed = format!("zopp_{text}");
        prop_assert!(PrincipalToken::try_parse(&prefixed).is_err());
    }
}

proptest! {
    // Argon2id even at its smallest parameters dominates these cases: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sealed_key_file_round_trip_and_wrong_passphrase_fails(
        seed in any::<[u8; 32]>(),
        agr in any::<[u8; 32]>(),
        pass in proptest::collection::vec(any::<u8>(), 0..40),
        wrong in proptest::collection::vec(any::<u8>(), 0..40),
        rng_seed in any::<u64>(),
    ) {
        let keys = PrincipalKeys {
            signing: SigningKey::from_seed(&seed),
            agreement: AgreementSecret::from_bytes(agr),
        };
        let enc = keyfile::encode_sealed(&keys, &pass, TINY, &mut ChaCha20Rng::seed_from_u64(rng_seed))
            .expect("tiny params are in bounds");
        prop_assert!(keyfile::is_sealed(&enc));
        let dec = keyfile::decode(&enc, Some(&pass)).expect("round trip");
        prop_assert_eq!(dec.signing.expose_secret(), seed);
        prop_assert_eq!(dec.agreement.expose_secret(), &agr);
        if wrong != pass {
            prop_assert_eq!(keyfile::decode(&enc, Some(&wrong)).err(), Some(CryptoError::DecryptionFailed));
        }
    }

    #[test]
    fn sealed_key_file_refuses_any_flipped_bit(pass in "[a-z]{0,12}", bit in 0..(54 + 64 + 16) * 8usize) {
        let keys = PrincipalKeys {
            signing: SigningKey::from_seed(&[3; 32]),
            agreement: AgreementSecret::from_bytes([4; 32]),
        };
        let enc = keyfile::encode_sealed(&keys, pass.as_bytes(), TINY, &mut ChaCha20Rng::seed_from_u64(7))
            .expect("tiny params are in bounds");
        let bad = flip(&enc, bit);
        // A flip that makes m_cost 128 MiB..1 GiB is refused like any other (wrong derived key),
        // at that much memory; the 64 MiB flip and the unit test cover that path.
        let m = u32::from_be_bytes([bad[2], bad[3], bad[4], bad[5]]);
        prop_assume!(m <= 64 * 1024 || m > keyfile::MAX_M_COST_KIB);
        prop_assert!(keyfile::decode(&bad, Some(pass.as_bytes())).is_err());
    }
}

/// Ed25519's challenge `k = SHA-512(R ‖ A ‖ M) mod ℓ`, for crafting signatures by hand.
fn challenge(r: &[u8], a: &[u8], msg: &[u8]) -> curve25519_dalek::scalar::Scalar {
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    curve25519_dalek::scalar::Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// What `ed25519_dalek`'s `verify_strict` says of `sig` (false when it does not even parse).
fn dalek_strict(key: &ed25519_dalek::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| key.verify_strict(msg, &s).is_ok())
}

/// How a signature is made for [`verify_agrees_with_dalek_verify_strict`]: an honest one, and
/// the edge cases strict verification exists for.
fn crafted_signature(
    seed: &[u8; 32],
    msg: &[u8],
    case: u8,
    r_seed: [u8; 64],
    torsion: usize,
) -> Vec<u8> {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;

    let sk = ed25519_dalek::SigningKey::from_bytes(seed);
    let a = sk.to_scalar();
    let a_bytes = sk.verifying_key().to_bytes();
    let r = Scalar::from_bytes_mod_order_wide(&r_seed);
    let t = EIGHT_TORSION[torsion % 8];
    let k_for = |r_bytes: &[u8]| challenge(r_bytes, &a_bytes, msg);
    let (r_bytes, s) = match case % 6 {
        // Honest.
        0 => {
            let rb = (r * ED25519_BASEPOINT_POINT).compress().to_bytes();
            (rb.to_vec(), r + k_for(&rb) * a)
        }
        // R with a small-order component: the honest s no longer satisfies the equation.
        1 => {
            let rb = (r * ED25519_BASEPOINT_POINT + t).compress().to_bytes();
            (rb.to_vec(), r + k_for(&rb) * a)
        }
        // R itself of small order, with the s that makes sB - kA = R when R is the identity.
        2 => {
            let rb = t.compress().to_bytes();
            (rb.to_vec(), k_for(&rb) * a)
        }
        // A non-canonical s (s + l, which plain Ed25519 implementations sometimes accept).
        3 => {
            let rb = (r * ED25519_BASEPOINT_POINT).compress().to_bytes();
            let s = r + k_for(&rb) * a;
            let mut sig = rb.to_vec();
            let mut wide = [0u8; 33];
            // l, the order of the base point, little-endian.
            let l: [u8; 32] = [
                0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
                0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ];
            let mut carry = 0u16;
            for i in 0..32 {
                let v = u16::from(s.to_bytes()[i]) + u16::from(l[i]) + carry;
                wide[i] = v as u8;
                carry = v >> 8;
            }
            sig.extend_from_slice(&wide[..32]);
            return sig;
        }
        // -R instead of R (or, for the rare tiny y, a non-canonical encoding of R).
        4 => {
            let mut rb = (r * ED25519_BASEPOINT_POINT).compress().to_bytes();
            let y_small = rb[1..31].iter().all(|b| *b == 0) && rb[0] < 19 && rb[31] & 0x7f == 0;
            if y_small {
                rb[0] += 0xed;
                rb[31] |= 0x7f;
                rb[1..31].iter_mut().for_each(|b| *b = 0xff);
            } else {
                rb[31] ^= 0x80;
            }
            (rb.to_vec(), r + k_for(&rb) * a)
        }
        // Arbitrary bytes.
        _ => (
            r_seed[..32].to_vec(),
            Scalar::from_bytes_mod_order_wide(&r_seed),
        ),
    };
    let mut sig = r_bytes;
    sig.extend_from_slice(&s.to_bytes());
    sig
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `VerifyingKey::verify` compares `R` in compressed form instead of decompressing it; it
    /// must accept and refuse exactly what `ed25519_dalek`'s `verify_strict` does.
    #[test]
    fn verify_agrees_with_dalek_verify_strict(
        seed in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..64),
        case in any::<u8>(),
        r_seed in proptest::array::uniform32(any::<u8>()).prop_flat_map(|a| {
            proptest::array::uniform32(any::<u8>()).prop_map(move |b| {
                let mut w = [0u8; 64];
                w[..32].copy_from_slice(&a);
                w[32..].copy_from_slice(&b);
                w
            })
        }),
        torsion in 0..8usize,
    ) {
        let sig = crafted_signature(&seed, &msg, case, r_seed, torsion);
        let dalek_key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let dalek = dalek_strict(&dalek_key, &msg, &sig);
        let ours = SigningKey::from_seed(&seed).verifying_key().verify(&msg, &sig).is_ok();
        prop_assert_eq!(ours, dalek, "case {} torsion {}", case % 6, torsion);
        if case % 6 == 0 {
            prop_assert!(ours, "an honest signature verifies");
        }
        if case % 6 == 2 {
            prop_assert!(!ours, "a small-order R is refused");
        }
    }
}

/// Every small-order `R` is refused even with the `s` that satisfies the cofactorless equation
/// (the identity case), which plain (non-strict) verification would accept.
#[test]
fn small_order_r_is_refused_for_every_torsion_point() {
    for torsion in 0..8 {
        let sig = crafted_signature(&[7; 32], b"m", 2, [3; 64], torsion);
        let vk = SigningKey::from_seed(&[7; 32]).verifying_key();
        assert_eq!(
            vk.verify(b"m", &sig),
            Err(CryptoError::BadSignature),
            "torsion {torsion}"
        );
    }
}

/// Encodings of small-order points besides the canonical ones: the "negative zero" sign bit on
/// the two points with x = 0, and y + p for the two y values small enough to have one. Each is
/// paired with the `s` that makes `[s]B - [k]A` the identity, and both verifiers refuse them all.
#[test]
fn non_canonical_small_order_r_encodings_are_refused_like_verify_strict() {
    let seed = [11u8; 32];
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let a = sk.to_scalar();
    let a_bytes = sk.verifying_key().to_bytes();
    let msg = b"edge";
    let mut encodings: Vec<[u8; 32]> = Vec::new();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    for base in [identity, minus_one] {
        let mut negative_zero = base;
        negative_zero[31] |= 0x80;
        encodings.push(negative_zero);
    }
    // y + p for y = 0 and y = 1 (p = 2^255 - 19).
    for y in [0u8, 1] {
        let mut e = [0xffu8; 32];
        e[0] = 0xed + y;
        e[31] = 0x7f;
        encodings.push(e);
    }
    let dalek_key = sk.verifying_key();
    let ours = SigningKey::from_seed(&seed).verifying_key();
    for r in encodings {
        let k = challenge(&r, &a_bytes, msg);
        let mut sig = r.to_vec();
        sig.extend_from_slice(&(k * a).to_bytes());
        let strict = dalek_strict(&dalek_key, msg, &sig);
        assert!(!strict, "{r:02x?}");
        assert_eq!(
            ours.verify(msg, &sig),
            Err(CryptoError::BadSignature),
            "{r:02x?}"
        );
    }
}

/// A key with a small-order component (A + T) is not weak, so it parses; signatures over it
/// either satisfy the cofactorless equation or not, and both verifiers must say the same.
#[test]
fn mixed_order_keys_verify_like_verify_strict() {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;

    let mut agreed_accepts = 0;
    for (i, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
        for n in 0..16u8 {
            let sk = ed25519_dalek::SigningKey::from_bytes(&[n.wrapping_add(40); 32]);
            let a = sk.to_scalar();
            let mixed = (a * ED25519_BASEPOINT_POINT + t).compress().to_bytes();
            let r = Scalar::from_bytes_mod_order_wide(&[n.wrapping_add(i as u8); 64]);
            let rb = (r * ED25519_BASEPOINT_POINT).compress().to_bytes();
            let msg = [n, i as u8];
            let k = challenge(&rb, &mixed, &msg);
            let mut sig = rb.to_vec();
            sig.extend_from_slice(&(r + k * a).to_bytes());
            let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&mixed).expect("valid point");
            let strict = dalek_strict(&dalek_key, &msg, &sig);
            let ours = zopp_crypto::keys::VerifyingKey::try_from_slice(&mixed)
                .expect("a mixed-order key is not weak")
                .verify(&msg, &sig)
                .is_ok();
            assert_eq!(ours, strict, "torsion {i}, key {n}");
            agreed_accepts += usize::from(ours);
        }
    }
    // [k]T vanishes when k is a multiple of T's order: some of these verify, most do not.
    assert!(
        agreed_accepts > 0 && agreed_accepts < 7 * 16,
        "{agreed_accepts}"
    );
}
