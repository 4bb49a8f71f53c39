//! TLS to PostgreSQL (docs/deploy.md "TLS to the database"): with `sslmode=verify-full` and
//! `sslrootcert`, the server connects over TLS to a database whose certificate chains to that
//! CA and names the host, and refuses one signed by another CA.

use zopp_tests::pg::{with_conn, PrivateCluster};
use zopp_tests::{ServerOptions, TestServer, TestUser};

#[test]
fn verify_full_connects_over_tls_and_refuses_a_foreign_certificate() {
    let cluster = PrivateCluster::start_with_tls();
    let url = |ca: &std::path::Path| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            cluster.port(),
            ca.display()
        )
    };

    // A CA that did not sign the server's certificate: nothing is written, with a clear error.
    let probe = TestServer::start();
    let refused = probe.admin(&["migrate", "--db", &url(&cluster.other_ca_path())]);
    assert_ne!(refused.code(), 0);
    refused.assert_stderr_contains("cannot open database");
    refused.assert_stderr_contains("invalid peer certificate: UnknownIssuer");
    let tables: i64 = with_conn(&cluster.url(), |c| {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_one(&mut *c)
            .await
            .expect("count tables")
        })
    });
    assert_eq!(tables, 0, "no migration ran over an unverified connection");

    // The right CA: the server runs, and its connections really are encrypted.
    let server = TestServer::start_with(ServerOptions {
        db_url: Some(url(&cluster.ca_path())),
        ..ServerOptions::default()
    });
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&[
            "secret", "set", "K", "v", "-w", "acme", "-p", "api", "-e", "dev",
        ])
        .assert_success();
    let out = alice.zopp(&["secret", "get", "K", "-w", "acme", "-p", "api", "-e", "dev"]);
    assert_eq!(out.assert_success().stdout(), "v\n");
    let (tls, plain): (i64, i64) = with_conn(&cluster.url(), |c| {
        Box::pin(async move {
            sqlx::query_as(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'zopp-server'",
            )
            .fetch_one(&mut *c)
            .await
            .expect("connection stats")
        })
    });
    assert!(tls >= 1, "zopp-server holds TLS connections");
    assert_eq!(plain, 0, "and no plaintext ones");
}
