//! The conformance suite of [`LeaseStorage`]: the same checks against SQLite and PostgreSQL
//! (call [`run_all`] with a fresh, empty database). It panics on the first deviation.

use zopp_crypto::envelope::NameDigest;

use super::leases::*;
use super::suite::{join, Fixture, T0};
use super::*;

fn draft(f: &Fixture, action: &str) -> AuditDraft {
    AuditDraft {
        chain: AuditChain::Workspace(f.workspace),
        time_ms: T0,
        actor: Some(f.who.principal),
        action: action.to_string(),
        scope: format!("environment/{}", f.environment),
        target: "app/00".to_string(),
        method: "/zopp.v1.Zopp/Test".to_string(),
        request_timestamp_ms: T0,
        nonce: vec![1; 16],
        request_hash: vec![2; 32],
        signature: vec![3; 64],
        result: "ok".to_string(),
    }
}

fn request(f: &Fixture, holder: PrincipalId, id: &str, now: i64, ttl: i64) -> LeaseRequest {
    LeaseRequest {
        environment: f.environment,
        app: digest(1),
        holder,
        lease_id: id.to_string(),
        renew: false,
        break_lock: false,
        now_ms: now,
        expires_at_ms: now + ttl,
    }
}

fn digest(b: u8) -> NameDigest {
    NameDigest::try_from_slice(&[b; 32]).expect("32 bytes")
}

async fn audit_len(store: &dyn Storage, f: &Fixture) -> u64 {
    store
        .list_audit(
            AuditChain::Workspace(f.workspace),
            &AuditQuery {
                limit: 1,
                ..AuditQuery::default()
            },
        )
        .await
        .expect("audit")
        .head_seq
}

/// Runs every check against an empty database.
pub async fn run_all(store: &dyn Storage) {
    let f = Fixture::new(store).await;
    let bob = join(store, 201, "bob@example.com").await.principal;
    let alice = f.who.principal;

    // Nothing yet.
    assert_eq!(
        store
            .app_status(f.environment, digest(1), T0)
            .await
            .expect("status"),
        (None, None)
    );

    // Alice takes the lease; the take is audited.
    let before = audit_len(store, &f).await;
    let got = store
        .acquire_lease(request(&f, alice, "a1", T0, 1_000), draft(&f, "app.lease"))
        .await
        .expect("acquire");
    let LeaseOutcome::Acquired(lease) = got else {
        panic!("free lease taken: {got:?}")
    };
    assert_eq!(lease.holder, alice);
    assert_eq!(lease.expires_at_ms, T0 + 1_000);
    assert_eq!(audit_len(store, &f).await, before + 1);

    // Bob is refused while it is live and learns who holds it; nothing is audited.
    let held = store
        .acquire_lease(
            request(&f, bob, "b1", T0 + 500, 1_000),
            draft(&f, "app.lease"),
        )
        .await
        .expect("contended");
    assert_eq!(held, LeaseOutcome::Held(Some(lease.clone())));
    assert_eq!(audit_len(store, &f).await, before + 1);
    // Another app is independent.
    let mut other = request(&f, bob, "b2", T0 + 500, 1_000);
    other.app = digest(2);
    assert!(matches!(
        store
            .acquire_lease(other, draft(&f, "app.lease"))
            .await
            .expect("other app"),
        LeaseOutcome::Acquired(_)
    ));

    // Alice renews her own lease; Bob cannot renew hers.
    let mut renew = request(&f, alice, "a1", T0 + 600, 1_000);
    renew.renew = true;
    let LeaseOutcome::Acquired(renewed) = store
        .acquire_lease(renew.clone(), draft(&f, "app.lease"))
        .await
        .expect("renew")
    else {
        panic!("own lease renewed")
    };
    assert_eq!(renewed.expires_at_ms, T0 + 1_600);
    assert_eq!(renewed.acquired_at_ms, T0);
    let mut stolen = renew.clone();
    stolen.holder = bob;
    assert!(matches!(
        store
            .acquire_lease(stolen, draft(&f, "app.lease"))
            .await
            .expect("renew other"),
        LeaseOutcome::Held(Some(_))
    ));

    // Once it expires, Bob takes it; Alice's release then finds it gone but still records.
    let LeaseOutcome::Acquired(bobs) = store
        .acquire_lease(
            request(&f, bob, "b3", T0 + 1_600, 1_000),
            draft(&f, "app.lease"),
        )
        .await
        .expect("after expiry")
    else {
        panic!("an expired lease is free")
    };
    assert_eq!(bobs.holder, bob);
    let record = ApplyRecord {
        principal: alice,
        app_version: 3,
        kubeconfig_version: 1,
        rendering_sha256: [9; 32],
        exit_code: 0,
        secrets: vec![AppliedSecret {
            environment: f.environment,
            name_digest: digest(7),
            version: 2,
        }],
        started_at_ms: T0,
        finished_at_ms: T0 + 1_700,
    };
    let released = store
        .release_lease(
            f.environment,
            digest(1),
            alice,
            "a1",
            Some(record.clone()),
            draft(&f, "app.apply"),
        )
        .await
        .expect("late release");
    assert!(!released, "the lease was no longer Alice's");
    let (live, last) = store
        .app_status(f.environment, digest(1), T0 + 1_700)
        .await
        .expect("status");
    assert_eq!(live, Some(bobs.clone()));
    assert_eq!(last, Some(record));

    // An admin breaks Bob's live lease.
    let mut brk = request(&f, alice, "a2", T0 + 1_800, 1_000);
    brk.break_lock = true;
    let LeaseOutcome::Acquired(broken) = store
        .acquire_lease(brk, draft(&f, "app.lease_break"))
        .await
        .expect("break")
    else {
        panic!("break takes a live lease")
    };
    assert_eq!(broken.holder, alice);

    // Releasing one's own lease frees it and replaces the last apply.
    let failed = ApplyRecord {
        principal: alice,
        app_version: 4,
        kubeconfig_version: 2,
        rendering_sha256: [8; 32],
        exit_code: 1,
        secrets: Vec::new(),
        started_at_ms: T0 + 1_800,
        finished_at_ms: T0 + 1_900,
    };
    assert!(store
        .release_lease(
            f.environment,
            digest(1),
            alice,
            "a2",
            Some(failed.clone()),
            draft(&f, "app.apply"),
        )
        .await
        .expect("release"));
    let (live, last) = store
        .app_status(f.environment, digest(1), T0 + 1_900)
        .await
        .expect("status");
    assert_eq!(live, None);
    assert_eq!(last, Some(failed));

    // An expired lease is not reported as live.
    let (live, _) = store
        .app_status(f.environment, digest(2), T0 + 10_000)
        .await
        .expect("status");
    assert_eq!(live, None);
}
