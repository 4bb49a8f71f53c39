//! Core-crypto primitives per second, beside the costs DESIGN.md §10 gives "for scale".
//!
//! The detailed, statistically careful figures come from criterion
//! (`cargo bench -p zopp-crypto --bench primitives`, same workloads); this is a short timing
//! loop over the same operations so that one `zopp-bench` run shows every §10 figure together.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use zopp_crypto::envelope::{EnvelopeContext, NameKey, SealKey, SecretKind, SecretPayload};
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId};
use zopp_crypto::keys::{verify_batch, PrincipalKeys, ScopeKey, ScopeKind};
use zopp_crypto::sign::{request_message, NONCE_LEN};
use zopp_crypto::wrap::{
    unwrap_from_recipient, unwrap_under, wrap_to_recipient, wrap_under, KeyContext,
};

use crate::Figure;

/// Signatures per batch verification, as the server and CLI chunk them.
const BATCH: usize = 64;

/// Runs `f` (which does `per_call` operations) repeatedly for about `budget`; operations/s.
fn rate(budget: Duration, per_call: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm
    let started = Instant::now();
    let mut calls = 0usize;
    while started.elapsed() < budget {
        for _ in 0..8 {
            f();
        }
        calls += 8;
    }
    (calls * per_call) as f64 / started.elapsed().as_secs_f64()
}

/// `µs` per operation as operations per second.
fn per_second(us: f64) -> f64 {
    1e6 / us
}

pub fn measure(budget: Duration) -> Vec<Figure> {
    let r = &mut OsRng;
    let me = PrincipalKeys::generate(r);
    let my_id = PrincipalId::random(r);
    let agreement = me.agreement.public_key();
    let env = EnvironmentId::random(r);
    let project = ProjectId::random(r);
    let (ek, pk) = (ScopeKey::generate(r), ScopeKey::generate(r));
    let ek_ctx = KeyContext {
        kind: ScopeKind::Environment,
        id: *env.as_bytes(),
        epoch: 1,
    };
    let pk_ctx = KeyContext {
        kind: ScopeKind::Project,
        id: *project.as_bytes(),
        epoch: 1,
    };
    let seal = SealKey::derive(&ek);
    let ctx = EnvelopeContext {
        environment: env,
        name_digest: NameKey::derive(&ek).digest("DATABASE_URL"),
        version: 1,
        key_epoch: 1,
    };
    let payload = SecretPayload::new(
        SecretKind::Secret,
        "DATABASE_URL".into(),
        vec![b'v'; 64],
        Vec::new(),
    );
    let msgs: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[0] = i as u8;
            request_message(
                "/zopp.v1.Zopp/GetSecret",
                1_700_000_000_000,
                &nonce,
                &[7; 32],
            )
        })
        .collect();
    let sigs: Vec<[u8; 64]> = msgs.iter().map(|m| me.signing.sign(m)).collect();
    let vk = me.signing.verifying_key();
    let msg_refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let sig_refs: Vec<&[u8]> = sigs.iter().map(|s| &s[..]).collect();
    let vks = vec![vk; BATCH];

    let to_me = wrap_to_recipient(&ek, &ek_ctx, &my_id, &agreement, r).expect("wrap");
    let under = wrap_under(&ek, &ek_ctx, &pk, &pk_ctx, r);
    let sealed = seal.seal(&ctx, &payload, r);

    // (id, name, ops/s, reference ops/s from DESIGN.md §10 "for scale", what the reference is)
    let rows: Vec<(&str, &str, f64, Option<f64>, &str)> = vec![
        (
            "crypto_wrap_to_recipient",
            "wrap to recipient (X25519)",
            rate(budget, 1, || {
                black_box(wrap_to_recipient(&ek, &ek_ctx, &my_id, &agreement, &mut OsRng).ok());
            }),
            None,
            "",
        ),
        (
            "crypto_unwrap_from_recipient",
            "unwrap from recipient (X25519)",
            rate(budget, 1, || {
                black_box(unwrap_from_recipient(&to_me, &ek_ctx, &my_id, &me.agreement).ok());
            }),
            Some(per_second(90.0)),
            "reference: one X25519 agreement ~90 µs",
        ),
        (
            "crypto_wrap_under",
            "wrap under parent key",
            rate(budget, 1, || {
                black_box(wrap_under(&ek, &ek_ctx, &pk, &pk_ctx, &mut OsRng));
            }),
            None,
            "",
        ),
        (
            "crypto_unwrap_under",
            "unwrap under parent key",
            rate(budget, 1, || {
                black_box(unwrap_under(&under, &ek_ctx, &pk, &pk_ctx).ok());
            }),
            None,
            "",
        ),
        (
            "crypto_seal_64",
            "seal 64-byte value",
            rate(budget, 1, || {
                black_box(seal.seal(&ctx, &payload, &mut OsRng));
            }),
            Some(per_second(2.6)),
            "reference: ~2.6 µs",
        ),
        (
            "crypto_open_64",
            "open 64-byte value",
            rate(budget, 1, || {
                black_box(seal.open(&ctx, &sealed).ok());
            }),
            None,
            "",
        ),
        (
            "crypto_sign",
            "Ed25519 sign",
            rate(budget, 1, || {
                black_box(me.signing.sign(&msgs[0]));
            }),
            Some(per_second(33.0)),
            "reference: ~33 µs",
        ),
        (
            "crypto_verify",
            "Ed25519 verify",
            rate(budget, 1, || {
                black_box(vk.verify(&msgs[0], &sigs[0]).ok());
            }),
            Some(per_second(50.0)),
            "reference: ~50 µs",
        ),
        (
            "crypto_verify_batch_64",
            "Ed25519 batch verify (64)",
            rate(budget, BATCH, || {
                black_box(verify_batch(&msg_refs, &sig_refs, &vks).ok());
            }),
            Some(per_second(29.0)),
            "signatures/s; reference: ~29 µs each",
        ),
    ];
    rows.into_iter()
        .map(|(id, name, value, target, detail)| Figure {
            id: id.into(),
            name: name.into(),
            value,
            unit: "ops/s".into(),
            target,
            lower_is_better: false,
            detail: detail.into(),
            ..Default::default()
        })
        .collect()
}
