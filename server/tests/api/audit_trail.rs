//! The audit trail: every mutation and secret read is recorded, the chain verifies from its
//! stored fields alone, the database refuses to rewrite it, and nothing in it (or anywhere in the
//! database) is plaintext.

use std::collections::HashMap;

use ::zopp_server::service::methods;
use tonic::Code;
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::sign::{request_message, ZERO_HASH};
use zopp_proto::v1::*;

use crate::common::*;

/// What `zopp audit verify` does: recompute every hash, follow the links, and check each actor's
/// request signature with the public key the server lists.
fn verify_chain(page: &ListAuditResponse) {
    let keys: HashMap<&str, VerifyingKey> = page
        .actors
        .iter()
        .map(|a| {
            (
                a.principal_id.as_str(),
                VerifyingKey::try_from_slice(&a.signing_key).expect("actor key"),
            )
        })
        .collect();
    let mut prev = ZERO_HASH;
    for (i, e) in page.entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "no gaps");
        assert_eq!(
            e.prev_hash,
            prev.to_vec(),
            "entry {} links to its predecessor",
            e.seq
        );
        let record = AuditRecord {
            seq: e.seq,
            time_ms: e.time_ms,
            actor: &e.actor_principal_id,
            action: &e.action,
            scope: &e.scope,
            target: &e.target,
            method: &e.method,
            request_timestamp_ms: e.request_timestamp_ms,
            nonce: &e.nonce,
            request_hash: &e.request_hash,
            signature: &e.signature,
            result: &e.result,
        };
        let h = record.chain_hash(&prev);
        assert_eq!(e.hash, h.to_vec(), "entry {} hash", e.seq);
        if e.method != methods::JOIN && !e.actor_principal_id.is_empty() {
            let key = keys[e.actor_principal_id.as_str()];
            let nonce: [u8; 16] = e.nonce.clone().try_into().expect("16-byte nonce");
            let body: [u8; 32] = e.request_hash.clone().try_into().expect("32-byte hash");
            key.verify(
                &request_message(
                    &TEST_SERVER_ID,
                    &e.method,
                    e.request_timestamp_ms,
                    &nonce,
                    &body,
                ),
                &e.signature,
            )
            .expect("actor signature");
        }
        prev = h;
    }
    assert_eq!(page.head_seq, page.entries.len() as u64);
    assert_eq!(page.head_hash, prev.to_vec());
}

#[tokio::test]
async fn mutations_and_reads_are_chained_and_verifiable() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    u.write_new(&env, &[("DB_URL", b"x"), ("API_KEY", b"y")])
        .await
        .expect("write");
    u.read(&env, "DB_URL").await.expect("read");
    u.fetch(&env, 0, 0).await.expect("fetch");

    let trail = u.audit("acme").await;
    verify_chain(&trail);
    let actions: Vec<&str> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "workspace.create",
            "project.create",
            "environment.create",
            "secret.write",
            "secret.write",
            "secret.read",
            "environment.fetch",
        ]
    );
    let env_scope = format!("environment/{}", env.env_id);
    let read = &trail.entries[5];
    assert_eq!(read.scope, env_scope);
    assert_eq!(
        read.target,
        format!("secret/{}@1", env.digest("DB_URL").to_hex())
    );
    assert_eq!(read.method, methods::GET_SECRET);
    assert_eq!(read.result, "ok");
    assert_eq!(read.actor_principal_id, u.id.to_string());
    let mut write_targets: Vec<&str> = trail.entries[3..5]
        .iter()
        .map(|e| e.target.as_str())
        .collect();
    write_targets.sort();
    let mut expected = vec![
        format!("secret/{}@1", env.digest("DB_URL").to_hex()),
        format!("secret/{}@1", env.digest("API_KEY").to_hex()),
    ];
    expected.sort();
    assert_eq!(write_targets, expected);
    assert_eq!(trail.entries[6].target, "env_version/1");

    // Filters and paging.
    let only = |req: ListAuditRequest| {
        let u = &u;
        async move {
            u.c()
                .list_audit(u.sign(methods::LIST_AUDIT, req))
                .await
                .expect("list")
                .into_inner()
        }
    };
    let writes = only(ListAuditRequest {
        workspace: "acme".into(),
        action: "secret.write".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(writes.entries.len(), 2);
    assert_eq!(
        writes.head_seq, 7,
        "head covers the whole chain, not the page"
    );
    let page = only(ListAuditRequest {
        workspace: "acme".into(),
        after_seq: 2,
        limit: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(
        page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4]
    );
    let mine = only(ListAuditRequest {
        workspace: "acme".into(),
        principal_id: u.id.to_string(),
        ..Default::default()
    })
    .await;
    assert_eq!(mine.entries.len(), 7);
    assert_eq!(mine.actors.len(), 1);
    assert_status(
        u.c()
            .list_audit(u.sign(
                methods::LIST_AUDIT,
                ListAuditRequest {
                    workspace: "acme".into(),
                    principal_id: "someone".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
        "invalid principal id 'someone'",
    );

    // The server chain (invites, joins) verifies too.
    let server = u.audit("").await;
    verify_chain(&server);
    assert!(server.entries.iter().any(|e| e.action == "principal.join"));
}

#[tokio::test]
async fn the_database_refuses_to_rewrite_history() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    u.write_new(&env, &[("A", b"1")]).await.expect("write");
    let pool = s.sqlite.write_pool();
    for sql in [
        "UPDATE audit_entries SET result = 'ok' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq > 1",
        "UPDATE secret_versions SET envelope = x'01'",
        "DELETE FROM secret_versions",
    ] {
        let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || err.to_string().contains("immutable"),
            "{sql}: {err}"
        );
    }
    verify_chain(&u.audit("acme").await);
}

#[tokio::test]
async fn no_plaintext_name_or_value_reaches_the_database() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    let name = "CANARY_NAME_6c1f0e";
    let value = b"canary-value-9d2b47";
    u.write_new(&env, &[(name, value)]).await.expect("write");
    u.read(&env, name).await.expect("read");
    // Checkpoint the WAL into the main file, then scan every file SQLite wrote.
    sqlx::query("PRAGMA wal_checkpoint(FULL)")
        .execute(s.sqlite.write_pool())
        .await
        .expect("checkpoint");
    let dir = s.db_path.parent().expect("dir");
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read db file");
        for needle in [name.as_bytes(), &value[..]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
        scanned += 1;
    }
    assert!(scanned >= 1);
}
