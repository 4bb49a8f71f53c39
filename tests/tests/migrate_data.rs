//! `zopp-server migrate-data` (issue #7): a team outgrowing the embedded SQLite database copies
//! it to PostgreSQL. Everything arrives intact: a server on the copy serves the same secrets,
//! versions and history to the same clients, and the audit chains verify with the same heads.

use zopp_proto::v1::ListAuditRequest;
use zopp_tests::signed::{connect, verify_chain, Signer};
use zopp_tests::{PgDatabase, ServerOptions, TestServer, TestUser};

const E: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut a = head.to_vec();
    a.extend_from_slice(&E);
    a
}

/// Reads and verifies the audit chains of workspace `acme` and of the server; returns their
/// heads and lengths.
fn chain_heads(server: &TestServer, signer: &Signer) -> Vec<([u8; 32], usize)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut c = connect(&server.url()).await;
            let mut out = Vec::new();
            for ws in ["acme", ""] {
                let req = ListAuditRequest {
                    workspace: ws.into(),
                    limit: 10_000,
                    ..Default::default()
                };
                let page = c
                    .list_audit(signer.request("/zopp.v1.Zopp/ListAudit", req))
                    .await
                    .unwrap_or_else(|e| panic!("list audit of '{ws}': {e}"))
                    .into_inner();
                out.push((verify_chain(&page.entries), page.entries.len()));
            }
            out
        })
}

#[test]
fn sqlite_copies_to_postgres_with_versions_and_audit_chain_intact() {
    let mut old = TestServer::start();
    let alice = TestUser::joined(&old, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&["environment", "create", "prod", "-w", "acme", "-p", "api"])
        .assert_success();
    for v in ["one", "two", "three"] {
        alice
            .zopp(&with_env(&["secret", "set", "ROTATED", v]))
            .assert_success();
    }
    alice
        .zopp(&with_env(&["secret", "set", "GONE", "x"]))
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "delete", "GONE"]))
        .assert_success();
    alice
        .zopp_stdin(
            &with_env(&["secret", "set", "BINARY", "-"]),
            b"\x00\x01line\n",
        )
        .assert_success();
    alice
        .zopp(&[
            "secret",
            "set",
            "PROD_ONLY",
            "p",
            "-w",
            "acme",
            "-p",
            "api",
            "-e",
            "prod",
        ])
        .assert_success();
    TestUser::joined(&old, "bob@example.com");
    let signer = Signer::load(alice.home.path());
    let before = chain_heads(&old, &signer);
    let history_before = alice
        .zopp(&with_env(&[
            "secret",
            "history",
            "ROTATED",
            "--show-values",
            "--output",
            "json",
        ]))
        .assert_success()
        .json();
    assert!(old.terminate().success(), "old server drains and exits");

    let pg = PgDatabase::create();
    let out = old.admin(&["migrate-data", "--from", &old.db_url, "--to", pg.url()]);
    out.assert_success();
    out.assert_stderr_contains("audit chains");

    let new = TestServer::start_with(ServerOptions {
        pg: Some(pg.clone()),
        ..ServerOptions::default()
    });
    let on_new = |args: &[&str]| alice.zopp_env(args, &[("ZOPP_SERVER", new.url())]);
    assert_eq!(
        on_new(&with_env(&["secret", "get", "ROTATED"]))
            .assert_success()
            .stdout(),
        "three\n"
    );
    let v1 = on_new(&with_env(&["secret", "get", "ROTATED", "--version", "1"]));
    assert_eq!(v1.assert_success().stdout(), "one\n");
    let history_after = on_new(&with_env(&[
        "secret",
        "history",
        "ROTATED",
        "--show-values",
        "--output",
        "json",
    ]))
    .assert_success()
    .json();
    assert_eq!(history_after, history_before, "history identical");
    on_new(&with_env(&["secret", "get", "GONE"])).assert_exit_code(3);
    let bin = on_new(&with_env(&["secret", "get", "BINARY"]));
    assert_eq!(bin.assert_success().output.stdout, b"\x00\x01line\n\n");
    let prod = on_new(&[
        "secret",
        "get",
        "PROD_ONLY",
        "-w",
        "acme",
        "-p",
        "api",
        "-e",
        "prod",
    ]);
    assert_eq!(prod.assert_success().stdout(), "p\n");

    // The audit chains verify on the copy and end where they ended before (plus the reads the
    // checks above just logged, which extend the same chain).
    let after = chain_heads(&new, &signer);
    assert_eq!(after[1], before[1], "server chain unchanged");
    assert!(after[0].1 > before[0].1, "workspace chain continues");
    let rows = pg.scalar("SELECT count(*) FROM audit_entries WHERE chain <> 'server'");
    assert_eq!(rows as usize, after[0].1);

    // The copy is a live deployment: writes continue the same version chain.
    on_new(&with_env(&["secret", "set", "ROTATED", "four"])).assert_success();
    let h = on_new(&with_env(&[
        "secret", "history", "ROTATED", "--output", "json",
    ]));
    assert_eq!(h.assert_success().json().as_array().expect("rows").len(), 4);

    // A second copy into the now non-empty database is refused and changes nothing.
    let again = old.admin(&["migrate-data", "--from", &old.db_url, "--to", pg.url()]);
    assert_ne!(again.code(), 0);
    again.assert_stderr_contains("not empty");
    let versions = pg.scalar("SELECT count(*) FROM secret_versions");
    assert_eq!(versions, 8, "3 + 2 + 1 + 1 copied, 1 written after");
}

#[test]
fn migrate_data_refuses_a_missing_source() {
    let server = TestServer::start();
    let pg = PgDatabase::create();
    let missing = format!(
        "sqlite://{}",
        server.home.path().join("no-such.db").display()
    );
    let out = server.admin(&["migrate-data", "--from", &missing, "--to", pg.url()]);
    assert_ne!(out.code(), 0);
    out.assert_stderr_contains("does not exist");
    assert!(!server.home.path().join("no-such.db").exists());
}
