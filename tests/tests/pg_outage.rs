//! Connection loss (issue #7): PostgreSQL stops under a running server and starts again. Calls
//! during the outage fail cleanly with "storage unavailable" (gRPC UNAVAILABLE, CLI exit 7), the
//! server recovers by itself without a restart, and no acknowledged write is lost.
//!
//! The test owns a private PostgreSQL instance ([`PrivateCluster`]), so stopping it cannot
//! disturb tests running in parallel on the shared server; the instance is stopped and removed
//! when the test ends, pass or fail. It also runs in the `pg-outage` nextest group
//! (.config/nextest.toml), one at a time, to keep its timing undisturbed.

use std::time::{Duration, Instant};

use zopp_proto::v1::{EnvironmentRef, WatchEnvironmentRequest, WhoAmIRequest};
use zopp_tests::pg::PrivateCluster;
use zopp_tests::signed::{connect, Signer};
use zopp_tests::{ServerOptions, TestServer, TestUser};

const E: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut a = head.to_vec();
    a.extend_from_slice(&E);
    a
}

#[test]
fn outage_fails_calls_cleanly_and_the_server_recovers_without_a_restart() {
    let cluster = PrivateCluster::start();
    let server = TestServer::start_with(ServerOptions {
        db_url: Some(cluster.url()),
        ..ServerOptions::default()
    });
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    for i in 0..5 {
        let name = format!("BEFORE_{i}");
        alice
            .zopp(&with_env(&["secret", "set", name.as_str(), "acknowledged"]))
            .assert_success();
    }

    // A watcher stays connected to the server across the outage.
    let signer = Signer::load(alice.home.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut stream = rt.block_on(async {
        let mut c = connect(&server.url()).await;
        let req = WatchEnvironmentRequest {
            env: Some(EnvironmentRef {
                workspace: "acme".into(),
                project: "api".into(),
                environment: "dev".into(),
            }),
            after_env_version: 5,
        };
        c.watch_environment(signer.request("/zopp.v1.Zopp/WatchEnvironment", req))
            .await
            .expect("watch")
            .into_inner()
    });

    cluster.stop();
    // Reads and writes during the outage: exit 7, naming the storage, and nothing half-done.
    let get = alice.zopp(&with_env(&["secret", "get", "BEFORE_0"]));
    get.assert_exit_code(7);
    get.assert_stderr_contains("storage unavailable");
    let set = alice.zopp(&with_env(&[
        "secret",
        "set",
        "DURING",
        "never-acknowledged",
    ]));
    set.assert_exit_code(7);
    set.assert_stderr_contains("storage unavailable");
    alice
        .zopp(&["workspace", "list"])
        .assert_exit_code(7)
        .assert_stderr_contains("storage unavailable");
    // On the wire: gRPC UNAVAILABLE with the stable message, not an authentication failure
    // (the principal could not be loaded, which must not read as "unknown principal").
    let status = rt.block_on(async {
        let mut c = connect(&server.url()).await;
        c.who_am_i(signer.request("/zopp.v1.Zopp/WhoAmI", WhoAmIRequest {}))
            .await
            .expect_err("no database, no answer")
    });
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "storage unavailable");

    cluster.start_again();
    // The same server process serves again as soon as the database answers: the first calls
    // may still meet connections that died with the old instance, so allow a short settling
    // period, then require success.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = alice.zopp(&with_env(&["secret", "get", "BEFORE_0"]));
        if out.code() == 0 {
            assert_eq!(out.stdout(), "acknowledged\n");
            break;
        }
        out.assert_exit_code(7);
        assert!(
            Instant::now() < deadline,
            "server did not recover: {}",
            out.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every write acknowledged before the outage is there; the refused one is not.
    let list = alice.zopp(&with_env(&["secret", "list", "--output", "json"]));
    let list = list.assert_success().json();
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    for i in 0..5 {
        assert!(names.contains(&format!("BEFORE_{i}").as_str()), "{names:?}");
    }
    assert!(!names.contains(&"DURING"), "{names:?}");
    // Writes work again, and the watcher, still on the same stream, hears them: the change
    // feed re-listened by itself.
    alice
        .zopp(&with_env(&["secret", "set", "AFTER", "v"]))
        .assert_success();
    let event = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), stream.message())
            .await
            .expect("the watcher hears the write made after recovery")
            .expect("stream healthy")
            .expect("stream open")
    });
    assert_eq!(event.env_version, 6);
    let log = server.logs();
    assert!(
        log.contains("storage unavailable"),
        "the outage is logged:\n{log}"
    );
}
