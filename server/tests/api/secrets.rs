//! Secrets: round trips through real keys, versions, conflicts, point-in-time reads, limits and
//! the guarantee that refused input changes nothing.

use std::time::Duration;

use ::zopp_server::service::methods;
use ::zopp_server::validate::MAX_ENVELOPE_BYTES;
use futures::StreamExt;
use tonic::Code;
use zopp_crypto::envelope::{EnvelopeContext, NameDigest, SealKey};
use zopp_crypto::sign::ZERO_HASH;
use zopp_proto::v1::*;

use crate::common::*;

fn prefix(env: &Env, name: &str) -> String {
    hex::encode(&env.digest(name).as_bytes()[..8])
}

#[tokio::test]
async fn values_round_trip_through_the_key_chain() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    let out = u
        .write_new(&env, &[("DB_URL", b"postgres://x"), ("API_KEY", b"k3y")])
        .await
        .expect("write");
    assert_eq!(out.env_version, 1);

    let (value, resp) = u.read(&env, "DB_URL").await.expect("read");
    assert_eq!(value, b"postgres://x");
    let keys = resp.keys.expect("keys");
    assert_eq!(keys.grant_scope, ScopeKind::Workspace as i32);
    assert_eq!(keys.role, Role::Admin as i32);
    assert_eq!(keys.env_version, 1);
    assert_eq!(keys.key_epoch, 1);
    assert!(keys.epoch_links.is_empty());
    let writer = resp.writer.expect("writer");
    assert_eq!(writer.principal_id, u.id.to_string());
    assert_eq!(writer.user_email, "a@example.com");
    assert!(resp.previous.is_none());

    // One round trip fetches everything, with the writer's keys to check signatures.
    let all = u.fetch(&env, 0, 0).await.expect("fetch");
    assert_eq!(all.env_version, 1);
    assert_eq!(all.secrets.len(), 2);
    assert_eq!(all.writers.len(), 1);
    let ek = u.derive_ek(all.keys.as_ref().expect("keys"));
    let vk = zopp_crypto::keys::VerifyingKey::try_from_slice(&all.writers[0].signing_key)
        .expect("writer key");
    let mut names = Vec::new();
    for v in &all.secrets {
        let digest = NameDigest::try_from_slice(&v.name_digest).expect("digest");
        let claims = zopp_crypto::sign::VersionClaims {
            environment: env.env_id,
            name_digest: digest,
            version: v.version,
            key_epoch: v.key_epoch,
            deleted: v.deleted,
            envelope: &v.envelope,
            prev_hash: ZERO_HASH,
            writer: u.id,
            env_version: v.env_version,
            created_at_ms: v.created_at_ms,
        };
        claims.verify(&vk, &v.signature).expect("version signature");
        let p = SealKey::derive(&ek)
            .open(
                &EnvelopeContext {
                    environment: env.env_id,
                    name_digest: digest,
                    version: v.version,
                    key_epoch: v.key_epoch,
                },
                &zopp_crypto::envelope::Envelope::from_bytes(v.envelope.clone()),
            )
            .expect("open");
        names.push(p.name().to_string());
    }
    names.sort();
    assert_eq!(names, ["API_KEY", "DB_URL"]);

    let keys_only = u
        .c()
        .get_environment(u.sign(
            methods::GET_ENVIRONMENT,
            GetEnvironmentRequest { env: env.r() },
        ))
        .await
        .expect("keys")
        .into_inner();
    assert!(u.derive_ek(&keys_only) == env.ek);
}

#[tokio::test]
async fn conflicting_writes_are_aborted_with_the_current_state() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    u.write_new(&env, &[("A", b"1")]).await.expect("v1");

    let again = u.secret_write(&env, "A", Some(b"2"), 1, ZERO_HASH);
    assert_status(
        u.write(&env, vec![again], 0).await,
        Code::Aborted,
        &format!(
            "version conflict on secret {}: current version is 1",
            prefix(&env, "A")
        ),
    );
    let skipped = u.secret_write(&env, "A", Some(b"2"), 3, ZERO_HASH);
    assert_status(
        u.write(&env, vec![skipped], 0).await,
        Code::Aborted,
        &format!(
            "version conflict on secret {}: current version is 1",
            prefix(&env, "A")
        ),
    );
    let head = u
        .get(&env, "A", 0, false)
        .await
        .expect("head")
        .secret
        .expect("secret");
    let next = u.secret_write(&env, "A", Some(b"2"), 2, hash_of(&env, &head));
    assert_status(
        u.write(&env, vec![next.clone()], 7).await,
        Code::Aborted,
        "environment changed: now at version 1",
    );
    let forged_chain = u.secret_write(&env, "A", Some(b"2"), 2, [0xAB; 32]);
    assert_status(
        u.write(&env, vec![forged_chain], 0).await,
        Code::Aborted,
        &format!(
            "previous-version hash mismatch on secret {}",
            prefix(&env, "A")
        ),
    );
    let ok = u
        .write(&env, vec![next], 1)
        .await
        .expect("v2 at env version 1");
    assert_eq!(ok.env_version, 2);
    let (value, resp) = u.read(&env, "A").await.expect("read");
    assert_eq!(value, b"2");
    let prev = resp.previous.expect("previous version");
    assert_eq!(prev.version, 1);
    assert_eq!(
        resp.secret.expect("secret").prev_hash,
        hash_of(&env, &prev).to_vec()
    );
}

#[tokio::test]
async fn refused_input_changes_nothing() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    u.write_new(&env, &[("KEEP", b"original")])
        .await
        .expect("seed");
    let audit_head = u.audit("acme").await.head_seq;
    let good = || u.secret_write(&env, "NEW", Some(b"v"), 1, ZERO_HASH);

    let mut huge = u.secret_write(&env, "BIG", Some(b"x"), 1, ZERO_HASH);
    huge.envelope.resize(MAX_ENVELOPE_BYTES + 1, 0);
    let mut bad_sig = u.secret_write(&env, "BAD", Some(b"x"), 1, ZERO_HASH);
    bad_sig.signature[0] ^= 1;
    let mut tampered = u.secret_write(&env, "TAMPER", Some(b"x"), 1, ZERO_HASH);
    let last = tampered.envelope.len() - 1;
    tampered.envelope[last] ^= 1;
    let mut tomb_with_body = u.secret_write(&env, "T", None, 1, ZERO_HASH);
    tomb_with_body.envelope = vec![1, 1, 0];
    let mut v0 = good();
    v0.version = 0;
    let mut short_digest = good();
    short_digest.name_digest.pop();

    let p = |n: &str| prefix(&env, n);
    let cases: Vec<(Vec<SecretWrite>, Code, String)> = vec![
        (vec![], Code::InvalidArgument, "no writes in the request".into()),
        (
            vec![good(), huge],
            Code::InvalidArgument,
            format!(
                "envelope of secret {} is {} bytes; the limit is 1114112 bytes (1 MiB value + 64 KiB)",
                p("BIG"),
                MAX_ENVELOPE_BYTES + 1
            ),
        ),
        (
            vec![good(), good()],
            Code::InvalidArgument,
            format!("secret {} is written more than once in one call", p("NEW")),
        ),
        (
            vec![good(), bad_sig],
            Code::InvalidArgument,
            format!("bad signature on secret {} version 1", p("BAD")),
        ),
        (
            vec![good(), tampered],
            Code::InvalidArgument,
            format!("bad signature on secret {} version 1", p("TAMPER")),
        ),
        (
            vec![good(), tomb_with_body],
            Code::InvalidArgument,
            format!("deletion of secret {} must have an empty envelope", p("T")),
        ),
        (
            vec![v0],
            Code::InvalidArgument,
            format!(
                "version of secret {} must be between 1 and {}",
                p("NEW"),
                i64::MAX
            ),
        ),
        (
            vec![short_digest],
            Code::InvalidArgument,
            "name_digest must be 32 bytes, got 31".into(),
        ),
    ];
    for (writes, code, msg) in cases {
        assert_status(u.write(&env, writes, 0).await, code, &msg);
    }
    // The environment id the client encrypted for must be the live one.
    let wrong_id = u
        .c()
        .write_secrets(u.sign(
            methods::WRITE_SECRETS,
            WriteSecretsRequest {
                env: env.r(),
                environment_id: uuid::Uuid::new_v4().to_string(),
                // Stamped as a real write would be, so only the environment id is wrong.
                writes: vec![u.stamp(&env, &good(), 2, now_ms())],
                if_env_version: 0,
            },
        ))
        .await;
    let wrong_id = wrong_id.expect_err("wrong id");
    assert_eq!(
        wrong_id.code(),
        Code::FailedPrecondition,
        "{}",
        wrong_id.message()
    );
    // Too many writes.
    let many: Vec<SecretWrite> = (0..20_001u32)
        .map(|i| SecretWrite {
            name_digest: {
                let mut d = [0u8; 32];
                d[..4].copy_from_slice(&i.to_be_bytes());
                d.to_vec()
            },
            version: 1,
            key_epoch: 1,
            envelope: Vec::new(),
            deleted: true,
            prev_hash: ZERO_HASH.to_vec(),
            signature: vec![0; 64],
            env_version: 0,
            created_at_ms: 0,
        })
        .collect();
    assert_status(
        u.write(&env, many, 0).await,
        Code::InvalidArgument,
        "20001 writes in one call; the limit is 20000",
    );

    // Nothing moved.
    let state = u.fetch(&env, 0, 0).await.expect("fetch");
    assert_eq!(state.env_version, 1);
    assert_eq!(state.secrets.len(), 1);
    assert_eq!(u.read(&env, "KEEP").await.expect("read").0, b"original");
    assert_status(
        u.get(&env, "NEW", 0, false).await,
        Code::NotFound,
        &format!("secret {} not found in environment 'prod'", p("NEW")),
    );
    // Only reads were audited since (each fetch/read adds one entry), no write entries.
    let trail = u.audit("acme").await;
    assert!(trail
        .entries
        .iter()
        .filter(|e| e.seq > audit_head)
        .all(|e| e.action != "secret.write"));
}

#[tokio::test]
async fn large_batches_commit_atomically() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    let names: Vec<String> = (0..500).map(|i| format!("KEY_{i}")).collect();
    let pairs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"value"[..])).collect();
    let out = u.write_new(&env, &pairs).await.expect("batch");
    assert_eq!(out.env_version, 1);
    let state = u.fetch(&env, 0, 0).await.expect("fetch");
    assert_eq!(state.secrets.len(), 500);
    assert!(state.secrets.iter().all(|v| v.env_version == 1));
    // One bad signature at the end of a large batch refuses all of it.
    let mut writes: Vec<SecretWrite> = (0..100)
        .map(|i| u.secret_write(&env, &format!("MORE_{i}"), Some(b"v"), 1, ZERO_HASH))
        .collect();
    writes[99].signature[5] ^= 0x40;
    let r = u.write(&env, writes, 0).await;
    assert_eq!(r.expect_err("refused").code(), Code::InvalidArgument);
    assert_eq!(u.fetch(&env, 0, 0).await.expect("fetch").secrets.len(), 500);
}

#[tokio::test]
async fn history_tombstones_and_points_in_time() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    u.write_new(&env, &[("A", b"one"), ("B", b"bee")])
        .await
        .expect("env v1");
    let t1 = ::zopp_server::now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let a1 = u
        .get(&env, "A", 0, false)
        .await
        .expect("a1")
        .secret
        .expect("a1");
    u.write(
        &env,
        vec![u.secret_write(&env, "A", Some(b"two"), 2, hash_of(&env, &a1))],
        0,
    )
    .await
    .expect("env v2");
    let a2 = u
        .get(&env, "A", 0, false)
        .await
        .expect("a2")
        .secret
        .expect("a2");
    u.write(
        &env,
        vec![u.secret_write(&env, "A", None, 3, hash_of(&env, &a2))],
        0,
    )
    .await
    .expect("env v3: delete");

    assert_status(
        u.get(&env, "A", 0, false).await,
        Code::NotFound,
        &format!(
            "secret {} not found in environment 'prod'",
            prefix(&env, "A")
        ),
    );
    let tomb = u.get(&env, "A", 0, true).await.expect("tombstone");
    let t = tomb.secret.expect("head");
    assert!(t.deleted && t.envelope.is_empty() && t.version == 3);
    assert_eq!(tomb.previous.expect("previous").version, 2);
    let old = u
        .get(&env, "A", 1, false)
        .await
        .expect("v1")
        .secret
        .expect("v1");
    assert_eq!(old.env_version, 1);
    assert_status(
        u.get(&env, "A", 9, false).await,
        Code::NotFound,
        &format!(
            "version 9 of secret {} not found in environment 'prod'",
            prefix(&env, "A")
        ),
    );

    let history = u
        .c()
        .secret_history(u.sign(
            methods::SECRET_HISTORY,
            SecretHistoryRequest {
                env: env.r(),
                name_digest: env.digest("A").as_bytes().to_vec(),
            },
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        history
            .versions
            .iter()
            .map(|v| (v.version, v.env_version, v.deleted))
            .collect::<Vec<_>>(),
        [(1, 1, false), (2, 2, false), (3, 3, true)]
    );
    for w in history.versions.windows(2) {
        assert_eq!(w[1].prev_hash, hash_of(&env, &w[0]).to_vec());
    }

    let at = |r: &FetchEnvironmentResponse| {
        let mut v: Vec<(u64, u64)> = r
            .secrets
            .iter()
            .map(|s| (s.version, s.env_version))
            .collect();
        v.sort();
        (r.env_version, v)
    };
    assert_eq!(
        at(&u.fetch(&env, 0, 0).await.expect("now")),
        (3, vec![(1, 1)])
    );
    assert_eq!(
        at(&u.fetch(&env, 0, 2).await.expect("at v2")),
        (2, vec![(1, 1), (2, 2)])
    );
    assert_eq!(
        at(&u.fetch(&env, 0, 1).await.expect("at v1")),
        (1, vec![(1, 1), (1, 1)])
    );
    assert_eq!(
        at(&u.fetch(&env, t1, 0).await.expect("at t1")),
        (1, vec![(1, 1), (1, 1)])
    );
    // A state that never existed is NOT_FOUND (issue #5), with a prefix clients recognise.
    assert_status(
        u.fetch(&env, 0, 9).await,
        Code::NotFound,
        "point in time: environment 'prod' is at version 3; version 9 does not exist yet",
    );
    let before = u.fetch(&env, 1, 0).await.expect_err("before creation");
    assert_eq!(before.code(), Code::NotFound);
    assert!(
        before
            .message()
            .starts_with("point in time: environment 'prod' did not exist yet"),
        "{}",
        before.message()
    );
    assert_status(
        u.fetch(&env, t1, 1).await,
        Code::InvalidArgument,
        "set at most one of at_ms and at_env_version",
    );
}

#[tokio::test]
async fn watch_reports_current_and_new_versions() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    u.write_new(&env, &[("A", b"1")]).await.expect("v1");
    let mut stream = u
        .c()
        .watch_environment(u.sign(
            methods::WATCH_ENVIRONMENT,
            WatchEnvironmentRequest {
                env: env.r(),
                after_env_version: 0,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first event in time")
        .expect("event")
        .expect("ok");
    assert_eq!(first.env_version, 1);
    u.write_new(&env, &[("B", b"2")]).await.expect("v2");
    let second = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("second event in time")
        .expect("event")
        .expect("ok");
    assert_eq!(second.env_version, 2);

    // A watcher that is up to date gets nothing until the next write.
    let mut quiet = u
        .c()
        .watch_environment(u.sign(
            methods::WATCH_ENVIRONMENT,
            WatchEnvironmentRequest {
                env: env.r(),
                after_env_version: 2,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), quiet.next())
            .await
            .is_err(),
        "no event while nothing changed"
    );
    u.write_new(&env, &[("C", b"3")]).await.expect("v3");
    let third = tokio::time::timeout(Duration::from_secs(5), quiet.next())
        .await
        .expect("event in time")
        .expect("event")
        .expect("ok");
    assert_eq!(third.env_version, 3);
}
