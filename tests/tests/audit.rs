//! Issue #6, a verifiable audit trail checked by clients (DESIGN.md §6), on the real binaries.
//!
//! `zopp audit list|export|verify` on both backends; the database's own refusal to update or
//! delete audit rows (triggers) on both; and the five attacks `zopp audit verify` must catch,
//! each made by editing the real SQLite file behind the server's back as an attacker with the
//! disk would: an edited field, a deleted entry, two swapped entries, a truncated tail (after a
//! pinned verify) and a forged entry whose hashes are all recomputed, so that only the missing
//! actor signature gives it away.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde::Deserialize;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, Row, SqliteConnection};
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::keys::SigningKey;
use zopp_crypto::sign::{sign_request, ZERO_HASH};
use zopp_tests::{on_both_backends, Backend, TestOutput, TestServer, TestUser};

on_both_backends!(
    list_filters_by_time_action_and_principal,
    export_writes_jsonl_and_csv_that_verify_offline,
    verify_passes_and_pins_the_head,
    secret_reads_are_logged,
    outsiders_cannot_read_the_trail,
    database_refuses_update_and_delete,
);

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

/// A server with alice's workspace `acme`: the hierarchy, three secrets and two reads.
fn trail_on(backend: Backend) -> (TestServer, TestUser) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    for (k, v) in [("A", "1"), ("B", "2"), ("C", "3")] {
        alice
            .zopp(&with_env(&["secret", "set", k, v]))
            .assert_success();
    }
    for k in ["A", "B"] {
        alice
            .zopp(&with_env(&["secret", "get", k]))
            .assert_success();
    }
    (server, alice)
}

/// `zopp audit list --output json` entry; unknown fields fail (the shape is a contract).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRow {
    seq: u64,
    time: String,
    actor: Option<String>,
    actor_email: Option<String>,
    action: String,
    scope: String,
    target: String,
    result: String,
    hash: String,
}

/// `zopp audit export --format jsonl` line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRow {
    seq: u64,
    time: String,
    actor: Option<String>,
    actor_email: Option<String>,
    action: String,
    scope: String,
    target: String,
    result: String,
    hash: String,
    prev_hash: String,
    method: String,
    request_time: String,
    request_timestamp_ms: i64,
    time_ms: i64,
    nonce: String,
    request_hash: String,
    signature: String,
}

/// `zopp audit verify --output json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyJson {
    verified: bool,
    workspace: Option<String>,
    entries: u64,
    head_seq: u64,
    head_hash: String,
    signatures: u64,
    pinned_signatures: u64,
    server_events: u64,
    previous_pin: Option<u64>,
}

fn list(user: &TestUser, extra: &[&str]) -> Vec<ListRow> {
    let mut args = vec!["audit", "list", "--output", "json"];
    args.extend_from_slice(extra);
    let out = user.zopp(&args);
    out.assert_success();
    serde_json::from_slice(&out.output.stdout)
        .unwrap_or_else(|e| panic!("list JSON ({e}):\n{}", out.stdout()))
}

fn principal_id(user: &TestUser) -> String {
    let who = user.zopp(&["whoami", "--output", "json"]);
    who.assert_success().json()["principal_id"]
        .as_str()
        .expect("principal id")
        .to_owned()
}

fn workspace_id(user: &TestUser, name: &str) -> String {
    let list = user.zopp(&["workspace", "list", "--output", "json"]);
    let list = list.assert_success().json();
    list.as_array()
        .expect("array")
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["id"].as_str())
        .expect("workspace listed")
        .to_owned()
}

fn verify_json(user: &TestUser, extra: &[&str]) -> VerifyJson {
    let mut args = vec!["audit", "verify", "--output", "json"];
    args.extend_from_slice(extra);
    let out = user.zopp(&args);
    out.assert_success();
    serde_json::from_slice(&out.output.stdout)
        .unwrap_or_else(|e| panic!("verify JSON ({e}):\n{}", out.stdout()))
}

fn list_filters_by_time_action_and_principal(backend: Backend) {
    let (server, alice) = trail_on(backend);
    let me = principal_id(&alice);
    let all = list(&alice, &["-w", "acme"]);
    assert!(all.len() >= 10, "{all:?}");
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "oldest first, from 1");
        assert_eq!(r.actor.as_deref(), Some(me.as_str()));
        assert_eq!(r.actor_email.as_deref(), Some("alice@example.com"));
        assert_eq!(r.result, "ok");
        assert!(r.time.ends_with('Z') && r.time.contains('T'), "{}", r.time);
        assert_eq!(r.hash.len(), 64);
        assert!(!r.scope.is_empty());
    }
    assert_eq!(all[0].action, "workspace.create");
    assert_eq!(all[0].target, "acme");

    let writes = list(&alice, &["-w", "acme", "--action", "secret.write"]);
    assert_eq!(writes.len(), 3);
    assert!(writes.iter().all(|r| r.action == "secret.write"
        && r.scope.starts_with("environment/")
        && r.target.starts_with("secret/")));
    // Targets name digests, never the plaintext names.
    assert!(all.iter().all(|r| !r.target.contains("secret/A@")));

    assert_eq!(
        list(&alice, &["-w", "acme", "--principal", &me]).len(),
        all.len()
    );
    assert_eq!(
        list(&alice, &["-w", "acme", "--principal", "ALICE@example.com"]).len(),
        all.len(),
        "emails match case-insensitively"
    );
    assert!(list(&alice, &["-w", "acme", "--principal", "bob@example.com"]).is_empty());
    assert!(list(
        &alice,
        &[
            "-w",
            "acme",
            "--principal",
            "0b6b0f7e-3c43-4f43-8a51-7f3c4f0f1d22"
        ]
    )
    .is_empty());

    assert_eq!(
        list(&alice, &["-w", "acme", "--since", "1h"]).len(),
        all.len()
    );
    assert!(list(&alice, &["-w", "acme", "--until", "2000-01-01"]).is_empty());
    // An RFC 3339 bound is inclusive on both ends.
    let mid = &all[all.len() / 2];
    let since = list(&alice, &["-w", "acme", "--since", &mid.time]);
    let want: Vec<u64> = all
        .iter()
        .filter(|r| r.time >= mid.time)
        .map(|r| r.seq)
        .collect();
    assert_eq!(since.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
    let until = list(&alice, &["-w", "acme", "--until", &mid.time]);
    let want: Vec<u64> = all
        .iter()
        .filter(|r| r.time <= mid.time)
        .map(|r| r.seq)
        .collect();
    assert_eq!(until.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
    let both = list(
        &alice,
        &[
            "-w",
            "acme",
            "--since",
            "1d",
            "--until",
            "2999-01-01T00:00:00Z",
            "--action",
            "secret.read",
        ],
    );
    let reads = all.iter().filter(|r| r.action == "secret.read").count();
    assert!(reads >= 2, "the two gets were read: {all:?}");
    assert_eq!(both.len(), reads);

    alice
        .zopp(&["audit", "list", "-w", "acme", "--since", "yesterday-ish"])
        .assert_exit_code(2)
        .assert_stderr_contains("error: --since 'yesterday-ish' is not a time");
    alice
        .zopp(&["audit", "list", "-w", "acme", "--principal", "alice"])
        .assert_exit_code(2)
        .assert_stderr_contains("neither a principal id nor an email");

    // Human output: a header, then one line per entry, the actor by email.
    let human = alice.zopp(&["audit", "list", "-w", "acme"]);
    let text = human.assert_success().stdout();
    assert_eq!(text.lines().count(), all.len() + 1);
    assert!(text.contains("secret.write") && text.contains("alice@example.com"));

    // Without a workspace: the server chain (the invite and alice's join).
    let srv = list(&alice, &[]);
    let actions: Vec<&str> = srv.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["invite.create", "principal.join"]);
    assert!(srv[0].actor.is_none() && srv[0].actor_email.is_none());
    assert_eq!(srv[1].actor.as_deref(), Some(me.as_str()));
    drop(server);
}

fn export_writes_jsonl_and_csv_that_verify_offline(backend: Backend) {
    let (_server, alice) = trail_on(backend);
    let listed = list(&alice, &["-w", "acme"]);

    let out = alice.zopp(&["audit", "export", "-w", "acme", "--format", "jsonl"]);
    let text = out.assert_success().stdout();
    let rows: Vec<ExportRow> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rows.len(), listed.len(), "one line per entry");
    for (r, l) in rows.iter().zip(&listed) {
        assert_eq!((r.seq, &r.hash, &r.action), (l.seq, &l.hash, &l.action));
        assert_eq!((&r.time, &r.actor_email), (&l.time, &l.actor_email));
        assert!(r.request_time.ends_with('Z'));
        assert!(r.method.starts_with("/zopp.v1.Zopp/"));
    }
    // The export alone is enough to recompute the chain.
    let mut prev = ZERO_HASH;
    for r in &rows {
        let h = |s: &str| hex::decode(s).expect("hex");
        assert_eq!(h(&r.prev_hash), prev);
        let hash = AuditRecord {
            seq: r.seq,
            time_ms: r.time_ms,
            actor: r.actor.as_deref().unwrap_or(""),
            action: &r.action,
            scope: &r.scope,
            target: &r.target,
            method: &r.method,
            request_timestamp_ms: r.request_timestamp_ms,
            nonce: &h(&r.nonce),
            request_hash: &h(&r.request_hash),
            signature: &h(&r.signature),
            result: &r.result,
        }
        .chain_hash(&prev);
        assert_eq!(hex::encode(hash), r.hash, "entry {}", r.seq);
        prev = hash;
    }

    // CSV to a file: created 0600 even over a world-readable file, header row, CRLF records.
    let path = alice.cwd.path().join("trail.csv");
    std::fs::write(&path, "old").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = alice.zopp(&[
        "audit",
        "export",
        "-w",
        "acme",
        "--format",
        "csv",
        "-o",
        path.to_str().expect("utf-8 path"),
        "--action",
        "secret.write",
    ]);
    out.assert_success()
        .assert_stderr_contains("exported 3 audit entries of workspace 'acme' to");
    assert!(out.stdout().is_empty(), "data went to the file");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let csv = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(
        lines[0],
        "seq,time,actor,actor_email,action,scope,target,result,hash,prev_hash,method,\
         request_time,request_timestamp_ms,time_ms,nonce,request_hash,signature"
    );
    assert_eq!(lines.len(), 4);
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 17, "{line}");
        assert_eq!(cells[4], "secret.write");
        assert_eq!(cells[3], "alice@example.com");
    }
}

fn verify_passes_and_pins_the_head(backend: Backend) {
    let (_server, alice) = trail_on(backend);
    let n = list(&alice, &["-w", "acme"]).len() as u64;
    let out = alice.zopp(&["audit", "verify", "-w", "acme"]);
    let text = out.assert_success().stdout();
    let line = text.trim_end();
    let prefix = format!("verified {n} entries, head {n} ");
    assert!(line.starts_with(&prefix), "{line}");
    assert_eq!(
        line.len(),
        prefix.len() + 16,
        "a 16-digit hash prefix: {line}"
    );
    out.assert_stderr_contains(&format!(
        "first verification of workspace 'acme': pinned entry {n} for the next run"
    ));

    // The pin: $ZOPP_HOME/audit-pins/<server hash>/<workspace id>.json, 0600.
    let ws = workspace_id(&alice, "acme");
    let pins: Vec<_> = std::fs::read_dir(alice.home.path().join("audit-pins"))
        .expect("pins dir")
        .map(|d| d.expect("entry").path().join(format!("{ws}.json")))
        .collect();
    assert_eq!(pins.len(), 1);
    let pin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pins[0]).expect("pin file")).expect("pin JSON");
    assert_eq!(pin["seq"], n);
    assert_eq!(pin["workspace_id"], ws.as_str());
    let mode = std::fs::metadata(&pins[0])
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // More activity; the next run checks the old head is still on the chain, then moves on.
    alice
        .zopp(&with_env(&["secret", "set", "D", "4"]))
        .assert_success();
    let v = verify_json(&alice, &["-w", "acme"]);
    assert!(v.verified);
    assert_eq!(v.workspace.as_deref(), Some("acme"));
    assert_eq!(v.previous_pin, Some(n));
    assert!(v.entries > n && v.head_seq == v.entries);
    // Every entry is alice's own signed request; those up to the pin were checked last time.
    assert_eq!(
        (v.pinned_signatures, v.signatures),
        (n, v.entries - n),
        "{v:?}"
    );
    assert_eq!(v.server_events, 0);
    assert_eq!(
        v.head_hash,
        list(&alice, &["-w", "acme"]).last().expect("entries").hash
    );

    // The server chain: the invite is a server event, the join carries its join signature.
    let s = verify_json(&alice, &[]);
    assert_eq!((s.entries, s.server_events, s.signatures), (2, 1, 1));
    assert_eq!((s.previous_pin, s.pinned_signatures), (None, 0));
    assert!(s.workspace.is_none());
}

fn secret_reads_are_logged(backend: Backend) {
    let (_server, alice) = trail_on(backend);
    let me = principal_id(&alice);
    let reads = |u: &TestUser| list(u, &["-w", "acme", "--action", "secret.read"]);
    let before = reads(&alice);
    alice
        .zopp(&with_env(&["secret", "get", "C"]))
        .assert_success();
    let after = reads(&alice);
    assert_eq!(after.len(), before.len() + 1, "one secret.read per get");
    let read = after.last().expect("the new read");
    assert_eq!(read.actor.as_deref(), Some(me.as_str()));
    assert!(read.scope.starts_with("environment/"));
    assert!(read.target.starts_with("secret/") && read.target.ends_with("@1"));
    // The read's target is the same digest the write of C recorded.
    let writes = list(&alice, &["-w", "acme", "--action", "secret.write"]);
    assert!(writes.iter().any(|w| w.target == read.target));
    // A failed read of a missing secret reads nothing.
    alice
        .zopp(&with_env(&["secret", "get", "NOPE"]))
        .assert_exit_code(3);
    assert_eq!(reads(&alice).len(), after.len());
}

fn outsiders_cannot_read_the_trail(backend: Backend) {
    // Roles below admin cannot be granted to another user yet (no grant command): a user with
    // no role in the workspace is the non-admin there is, and to it the workspace does not
    // exist (NOT_FOUND, never a hint that it does).
    let (server, alice) = trail_on(backend);
    let bob = TestUser::joined(&server, "bob@example.com");
    for cmd in [
        vec!["audit", "list", "-w", "acme"],
        vec!["audit", "export", "-w", "acme", "--format", "csv"],
        vec!["audit", "verify", "-w", "acme"],
    ] {
        let out = bob.zopp(&cmd);
        out.assert_exit_code(3)
            .assert_stderr_contains("error: workspace 'acme' not found");
        assert!(out.stdout().is_empty());
    }
    // Bob administers his own workspace, whose trail alice cannot read.
    bob.zopp(&["workspace", "create", "bobs"]).assert_success();
    assert_eq!(list(&bob, &["-w", "bobs"]).len(), 1);
    alice
        .zopp(&["audit", "list", "-w", "bobs"])
        .assert_exit_code(3);
    assert!(list(&alice, &["-w", "acme"])
        .iter()
        .all(|r| r.actor_email.as_deref() == Some("alice@example.com")));
}

// ---------- the database ----------

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A direct connection to the server's SQLite file, as someone with the disk would open it.
async fn sqlite(server: &TestServer) -> SqliteConnection {
    let opts = SqliteConnectOptions::new()
        .filename(server.db_path())
        .busy_timeout(Duration::from_secs(10));
    SqliteConnection::connect_with(&opts)
        .await
        .expect("open the server's SQLite file")
}

/// Runs `sql` against the server's database (either backend); returns the error text, if any.
fn exec(server: &TestServer, sql: &str) -> Result<u64, String> {
    server.exec_sql(sql)
}

fn database_refuses_update_and_delete(backend: Backend) {
    let (server, alice) = trail_on(backend);
    let ws = workspace_id(&alice, "acme");
    let before = list(&alice, &["-w", "acme"]);
    let attempts = [
        format!(
            "UPDATE audit_entries SET target = 'secret/forged@1' WHERE chain = '{ws}' AND seq = 3"
        ),
        format!("UPDATE audit_entries SET seq = seq + 1000 WHERE chain = '{ws}'"),
        format!("DELETE FROM audit_entries WHERE chain = '{ws}' AND seq = 3"),
        "DELETE FROM audit_entries".to_owned(),
    ];
    for sql in &attempts {
        let err = exec(&server, sql).expect_err("the trigger refuses");
        assert!(
            err.contains("audit entries are append-only"),
            "{sql}: {err}"
        );
    }
    if backend == Backend::Postgres {
        let err = exec(&server, "TRUNCATE audit_entries").expect_err("refused");
        assert!(err.contains("append-only"), "{err}");
    }
    // Appending still works, and nothing changed.
    let after = list(&alice, &["-w", "acme"]);
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!((&a.hash, &a.target), (&b.hash, &b.target));
    }
    verify_json(&alice, &["-w", "acme"]);
}

// ---------- the five attacks, on the real SQLite file ----------

const TRIGGERS_OFF: &str = "DROP TRIGGER IF EXISTS audit_entries_no_update; \
                            DROP TRIGGER IF EXISTS audit_entries_no_delete;";

/// Tampers with the SQLite file: drops the append-only triggers (an attacker with the disk
/// can), then runs `sql`.
fn tamper(server: &TestServer, sql: &str) {
    exec(server, &format!("{TRIGGERS_OFF} {sql}")).expect("tamper");
}

fn sqlite_trail() -> (TestServer, TestUser, String) {
    let (server, alice) = trail_on(Backend::Sqlite);
    let ws = workspace_id(&alice, "acme");
    (server, alice, ws)
}

/// Runs `zopp audit verify -w acme` expecting exit 1 and exactly this failure.
fn verify_fails(alice: &TestUser, failure: &str) -> TestOutput {
    let out = alice.zopp(&["audit", "verify", "-w", "acme"]);
    out.assert_exit_code(1);
    let first = out.stderr().lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first,
        format!("error: audit trail of workspace 'acme' failed verification: {failure}"),
        "{}",
        out.stderr()
    );
    out.assert_stderr_contains("hint: the server's audit trail is not what");
    assert!(out.stdout().is_empty(), "no success line: {}", out.stdout());
    out
}

#[test]
fn tamper_edited_field_is_caught() {
    let (server, alice, ws) = sqlite_trail();
    verify_json(&alice, &["-w", "acme"]);
    tamper(
        &server,
        &format!("UPDATE audit_entries SET result = 'PERMISSION_DENIED' WHERE chain = '{ws}' AND seq = 5"),
    );
    verify_fails(&alice, "entry 5: hash mismatch (edited field?)");
}

#[test]
fn tamper_deleted_entry_is_caught() {
    let (server, alice, ws) = sqlite_trail();
    tamper(
        &server,
        &format!("DELETE FROM audit_entries WHERE chain = '{ws}' AND seq = 6"),
    );
    verify_fails(&alice, "entry 6: missing (chain has a gap)");
}

#[test]
fn tamper_reordered_entries_are_caught() {
    let (server, alice, ws) = sqlite_trail();
    // Swap entries 4 and 5 (through a free number: (chain, seq) is the primary key).
    tamper(
        &server,
        &format!(
            "UPDATE audit_entries SET seq = 1000000 WHERE chain = '{ws}' AND seq = 4; \
             UPDATE audit_entries SET seq = 4 WHERE chain = '{ws}' AND seq = 5; \
             UPDATE audit_entries SET seq = 5 WHERE chain = '{ws}' AND seq = 1000000;"
        ),
    );
    verify_fails(
        &alice,
        "entry 4: prev_hash is not the hash of entry 3 (reordered, inserted or removed entry?)",
    );
}

#[test]
fn tamper_truncated_tail_is_caught_by_the_pin() {
    let (server, alice, ws) = sqlite_trail();
    let head = verify_json(&alice, &["-w", "acme"]).head_seq;
    tamper(
        &server,
        &format!(
            "DELETE FROM audit_entries WHERE chain = '{ws}' AND seq > {}",
            head - 3
        ),
    );
    // The shorter chain is consistent in itself: only the pin tells.
    assert_eq!(list(&alice, &["-w", "acme"]).len() as u64, head - 3);
    verify_fails(
        &alice,
        &format!(
            "chain truncated: pinned head is seq {head} but the chain ends at {}",
            head - 3
        ),
    );
    // A failed run keeps the old pin: it fails again.
    verify_fails(
        &alice,
        &format!(
            "chain truncated: pinned head is seq {head} but the chain ends at {}",
            head - 3
        ),
    );
}

/// One stored audit row, every column.
#[derive(Clone, Debug)]
struct StoredEntry {
    seq: i64,
    time_ms: i64,
    actor: String,
    action: String,
    scope: String,
    target: String,
    method: String,
    request_timestamp_ms: i64,
    nonce: Vec<u8>,
    request_hash: Vec<u8>,
    signature: Vec<u8>,
    result: String,
}

impl StoredEntry {
    fn hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        AuditRecord {
            seq: self.seq as u64,
            time_ms: self.time_ms,
            actor: &self.actor,
            action: &self.action,
            scope: &self.scope,
            target: &self.target,
            method: &self.method,
            request_timestamp_ms: self.request_timestamp_ms,
            nonce: &self.nonce,
            request_hash: &self.request_hash,
            signature: &self.signature,
            result: &self.result,
        }
        .chain_hash(prev)
    }
}

#[test]
fn tamper_forged_entry_is_caught_by_its_signature() {
    let (server, alice, ws) = sqlite_trail();
    let at: usize = 7;
    block_on(async {
        let mut c = sqlite(&server).await;
        let rows = sqlx::query(
            "SELECT seq, time_ms, actor, action, scope, target, method, request_timestamp_ms, \
             nonce, request_hash, signature, result FROM audit_entries WHERE chain = $1 ORDER BY seq",
        )
        .bind(&ws)
        .fetch_all(&mut c)
        .await
        .expect("read the chain");
        let mut chain: Vec<StoredEntry> = rows
            .iter()
            .map(|r| StoredEntry {
                seq: r.get(0),
                time_ms: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                scope: r.get(4),
                target: r.get(5),
                method: r.get(6),
                request_timestamp_ms: r.get(7),
                nonce: r.get(8),
                request_hash: r.get(9),
                signature: r.get(10),
                result: r.get(11),
            })
            .collect();
        // A write alice never asked for, attributed to her, signed by someone else's key, with
        // every later entry renumbered and every hash recomputed: links and hashes all check
        // out, so only the signature can give it away.
        let mut forged = chain[at - 1].clone();
        forged.action = "secret.write".into();
        forged.target = format!("secret/{}@2", "ab".repeat(32));
        forged.method = "/zopp.v1.Zopp/WriteSecrets".into();
        let mallory = SigningKey::from_seed(&[0x3a; 32]);
        let nonce: [u8; 16] = forged.nonce.clone().try_into().expect("16-byte nonce");
        forged.signature = sign_request(
            &mallory,
            &forged.method,
            forged.request_timestamp_ms,
            &nonce,
            b"forged body",
        )
        .to_vec();
        forged.request_hash = zopp_crypto::sha256(b"forged body").to_vec();
        chain.insert(at - 1, forged);
        for (i, e) in chain.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
        c.execute(TRIGGERS_OFF).await.expect("drop triggers");
        sqlx::query("DELETE FROM audit_entries WHERE chain = $1 AND seq >= $2")
            .bind(&ws)
            .bind(at as i64)
            .execute(&mut c)
            .await
            .expect("cut the tail");
        let mut prev = ZERO_HASH;
        for e in &chain {
            let hash = e.hash(&prev);
            if e.seq >= at as i64 {
                sqlx::query(
                    "INSERT INTO audit_entries (chain, seq, time_ms, actor, action, scope, \
                     target, method, request_timestamp_ms, nonce, request_hash, signature, \
                     result, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(&ws)
                .bind(e.seq)
                .bind(e.time_ms)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.scope)
                .bind(&e.target)
                .bind(&e.method)
                .bind(e.request_timestamp_ms)
                .bind(&e.nonce)
                .bind(&e.request_hash)
                .bind(&e.signature)
                .bind(&e.result)
                .bind(prev.to_vec())
                .bind(hash.to_vec())
                .execute(&mut c)
                .await
                .expect("insert the rewritten tail");
            }
            prev = hash;
        }
    });
    // The forged entry lists like any other.
    let listed = list(&alice, &["-w", "acme"]);
    assert_eq!(listed[at - 1].action, "secret.write");
    assert_eq!(
        listed[at - 1].actor_email.as_deref(),
        Some("alice@example.com")
    );
    verify_fails(&alice, &format!("entry {at}: actor signature invalid"));
}
