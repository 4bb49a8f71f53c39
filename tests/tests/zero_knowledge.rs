//! Zero knowledge (DESIGN.md §1.1, #2): after a real workload with canary names and values, the
//! stored data and every server log line contain no canary. On SQLite the raw bytes of the
//! database file and its WAL are searched; on PostgreSQL every row of every table, in text form
//! with `bytea` as hex, is searched for each canary and for its hex encoding.

use zopp_tests::{file_contains, TestServer, TestUser};

const E: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut a = head.to_vec();
    a.extend_from_slice(&E);
    a
}

/// Runs a workload through every code path that handles secrets and returns the canaries.
fn workload(server: &TestServer) -> (TestUser, Vec<String>) {
    let alice = TestUser::joined(server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let mut canaries = Vec::new();
    for i in 0..20 {
        let name = format!("CANARY_NAME_Q7X{i}Z");
        let value = format!("canary-value-8d1f{i}e-{}", "v".repeat(i));
        alice
            .zopp(&with_env(&["secret", "set", name.as_str(), value.as_str()]))
            .assert_success();
        canaries.push(name);
        canaries.push(value);
    }
    // Reads, updates, deletes and history go through every code path that handles secrets.
    for c in canaries.chunks(2).take(5) {
        alice
            .zopp(&with_env(&["secret", "get", c[0].as_str()]))
            .assert_success();
        alice
            .zopp(&with_env(&[
                "secret",
                "set",
                c[0].as_str(),
                "canary-update-55aa",
            ]))
            .assert_success();
        alice
            .zopp(&with_env(&["secret", "history", c[0].as_str()]))
            .assert_success();
    }
    alice
        .zopp(&with_env(&["secret", "delete", canaries[0].as_str()]))
        .assert_success();
    alice.zopp(&with_env(&["secret", "list"])).assert_success();
    canaries.push("canary-update-55aa".into());
    (alice, canaries)
}

/// The canaries really are there to find on the client side, and the server logged requests.
fn check_client_and_logs(server: &TestServer, alice: &TestUser, canaries: &[String]) {
    let logs = server.logs();
    assert!(
        logs.contains("WriteSecrets"),
        "server logged requests: {logs}"
    );
    for c in canaries {
        assert!(!logs.contains(c.as_str()), "{c} found in server logs");
    }
    let out = alice.zopp(&with_env(&["secret", "get", canaries[2].as_str()]));
    assert!(!out.assert_success().stdout().is_empty());
}

#[test]
fn database_and_logs_hold_no_plaintext() {
    let server = TestServer::start();
    let (alice, canaries) = workload(&server);
    let db = server.db_path();
    let wal = db.with_extension("db-wal");
    for c in &canaries {
        assert!(
            !file_contains(&db, c.as_bytes()),
            "{c} found in {}",
            db.display()
        );
        assert!(
            !file_contains(&wal, c.as_bytes()),
            "{c} found in {}",
            wal.display()
        );
    }
    check_client_and_logs(&server, &alice, &canaries);
}

#[test]
fn postgres_dump_and_logs_hold_no_plaintext() {
    let server = TestServer::start_postgres();
    let (alice, canaries) = workload(&server);
    let dump = server.pg.as_ref().expect("postgres database").dump();
    // The dump is real: it holds the workload's rows (versions, audit entries).
    assert!(dump.contains("secret_versions ("), "dump has versions");
    assert!(dump.contains("audit_entries ("), "dump has audit entries");
    for c in &canaries {
        assert!(!dump.contains(c.as_str()), "{c} found in the database dump");
        let hex = hex::encode(c.as_bytes());
        assert!(
            !dump.contains(&hex),
            "{c} found hex-encoded in the database dump"
        );
    }
    check_client_and_logs(&server, &alice, &canaries);
}
