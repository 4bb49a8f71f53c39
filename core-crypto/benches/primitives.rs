//! Criterion benchmarks of the primitives every zopp operation is built from (DESIGN.md §10
//! "for scale"): wrapping a scope key to a principal and under a parent key, sealing and opening
//! a 64-byte secret, signing, verifying, and batch verification of 64 signatures.
//!
//! Run with `cargo bench -p zopp-crypto --bench primitives`; each figure is reported in
//! elements per second (`elem/s`), i.e. operations per second. Benchmarks, not tests: nothing
//! here judges the figures.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;
use zopp_crypto::envelope::{EnvelopeContext, NameKey, SealKey, SecretKind, SecretPayload};
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId};
use zopp_crypto::keys::{verify_batch, verify_batch_grouped, PrincipalKeys, ScopeKey, ScopeKind};
use zopp_crypto::sign::{request_message, NONCE_LEN};
use zopp_crypto::wrap::{
    unwrap_from_recipient, unwrap_under, wrap_to_recipient, wrap_under, KeyContext,
};

/// Fixed seed: the same keys and messages on every run.
const SEED: u64 = 0x7a6f_7070;
/// Signatures per batch verification, as the server and CLI chunk them.
const BATCH: usize = 64;
/// Size of the sealed value, as in DESIGN.md §10.
const VALUE_LEN: usize = 64;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(SEED)
}

fn wrapping(c: &mut Criterion) {
    let mut r = rng();
    let me = PrincipalKeys::generate(&mut r);
    let my_id = PrincipalId::random(&mut r);
    let env = EnvironmentId::random(&mut r);
    let project = ProjectId::random(&mut r);
    let ek = ScopeKey::generate(&mut r);
    let pk = ScopeKey::generate(&mut r);
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
    let agreement = me.agreement.public_key();

    let mut g = c.benchmark_group("wrap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("wrap_to_recipient", |b| {
        b.iter(|| wrap_to_recipient(&ek, &ek_ctx, &my_id, &agreement, &mut r).expect("wrap"))
    });
    let to_me = wrap_to_recipient(&ek, &ek_ctx, &my_id, &agreement, &mut r).expect("wrap");
    g.bench_function("unwrap_from_recipient", |b| {
        b.iter(|| unwrap_from_recipient(black_box(&to_me), &ek_ctx, &my_id, &me.agreement))
    });
    g.bench_function("wrap_under", |b| {
        b.iter(|| wrap_under(&ek, &ek_ctx, &pk, &pk_ctx, &mut r))
    });
    let under = wrap_under(&ek, &ek_ctx, &pk, &pk_ctx, &mut r);
    g.bench_function("unwrap_under", |b| {
        b.iter(|| unwrap_under(black_box(&under), &ek_ctx, &pk, &pk_ctx))
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let mut r = rng();
    let ek = ScopeKey::generate(&mut r);
    let seal = SealKey::derive(&ek);
    let ctx = EnvelopeContext {
        environment: EnvironmentId::random(&mut r),
        name_digest: NameKey::derive(&ek).digest("DATABASE_URL"),
        version: 1,
        key_epoch: 1,
    };
    let payload = SecretPayload::new(
        SecretKind::Secret,
        "DATABASE_URL".into(),
        vec![b'v'; VALUE_LEN],
        Vec::new(),
    );
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal_64B", |b| b.iter(|| seal.seal(&ctx, &payload, &mut r)));
    let sealed = seal.seal(&ctx, &payload, &mut r);
    g.bench_function("open_64B", |b| {
        b.iter(|| seal.open(&ctx, black_box(&sealed)).expect("open"))
    });
    g.finish();
}

fn signing(c: &mut Criterion) {
    let mut r = rng();
    let keys = PrincipalKeys::generate(&mut r);
    let vk = keys.signing.verifying_key();
    let messages: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[0] = i as u8;
            request_message(
                &zopp_crypto::ids::ServerId::from_bytes([5; 16]),
                "/zopp.v1.Zopp/GetSecret",
                1_700_000_000_000,
                &nonce,
                &[7; 32],
            )
        })
        .collect();
    let sigs: Vec<[u8; 64]> = messages.iter().map(|m| keys.signing.sign(m)).collect();

    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter(|| keys.signing.sign(black_box(&messages[0])))
    });
    g.bench_function("verify", |b| {
        b.iter(|| vk.verify(black_box(&messages[0]), &sigs[0]).expect("valid"))
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    let msg_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sig_refs: Vec<&[u8]> = sigs.iter().map(|s| &s[..]).collect();
    let vks = vec![vk; BATCH];
    g.bench_function("verify_batch_64", |b| {
        b.iter(|| verify_batch(black_box(&msg_refs), &sig_refs, &vks).expect("valid"))
    });
    g.bench_function("verify_batch_grouped_64_one_key", |b| {
        b.iter_batched(
            rng,
            |mut r| verify_batch_grouped(&msg_refs, &sig_refs, &vks, &mut r).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, wrapping, sealing, signing);
criterion_main!(benches);
