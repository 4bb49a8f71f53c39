//! Scale-out (issue #7, DESIGN.md §9): two `zopp-server` replicas on one PostgreSQL database
//! behave as one server. A write through one is read through the other at once; a signed call
//! replayed to the other replica is refused (shared replay cache); a watcher on one (a raw
//! `WatchEnvironment` stream, and `zopp run --watch` restarting its child) hears
//! writes made through the other (LISTEN/NOTIFY); and concurrent writers through both lose no
//! update and never fork the audit chain.

use std::time::Duration;

use zopp_proto::v1::{
    EnvironmentRef, ListAuditRequest, ListWorkspacesRequest, WatchEnvironmentRequest, WhoAmIRequest,
};
use zopp_tests::signed::{connect, verify_chain, with_metadata, Signer};
use zopp_tests::{TestServer, TestUser};

const E: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut a = head.to_vec();
    a.extend_from_slice(&E);
    a
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Alice, joined and set up through replica `a`, with a second view of herself on `b`.
fn alice_on(a: &TestServer) -> TestUser {
    let alice = TestUser::joined(a, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
}

/// `zopp` as `user`, but talking to `server`.
fn via(user: &TestUser, server: &TestServer, args: &[&str]) -> zopp_tests::TestOutput {
    user.zopp_env(args, &[("ZOPP_SERVER", server.url())])
}

#[test]
fn a_write_through_one_replica_is_read_through_the_other_at_once() {
    let a = TestServer::start_postgres();
    let b = a.replica();
    let alice = alice_on(&a);
    for i in 0..5 {
        let value = format!("value-{i}");
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        via(
            &alice,
            writer,
            &with_env(&["secret", "set", "SHARED", value.as_str()]),
        )
        .assert_success();
        let out = via(&alice, reader, &with_env(&["secret", "get", "SHARED"]));
        assert_eq!(out.assert_success().stdout(), format!("{value}\n"));
    }
    // Scopes created through one replica are visible through the other.
    via(&alice, &b, &["project", "create", "web", "-w", "acme"]).assert_success();
    let ps = via(
        &alice,
        &a,
        &["project", "list", "-w", "acme", "--output", "json"],
    );
    assert!(ps.assert_success().stdout().contains("web"));
    // An invite made against the shared database works through either replica.
    let bob = TestUser::new(&b);
    bob.zopp(&["join", &a.invite(), "bob@example.com"])
        .assert_success();
}

#[test]
fn a_signed_call_replayed_to_the_other_replica_is_refused() {
    let a = TestServer::start_postgres();
    let b = a.replica();
    let alice = alice_on(&a);
    let signer = Signer::load(alice.home.path());
    runtime().block_on(async {
        let mut ca = connect(&a.url()).await;
        let mut cb = connect(&b.url()).await;
        for (mut first, mut second) in [(ca.clone(), cb.clone()), (cb.clone(), ca.clone())] {
            let md = signer.metadata("/zopp.v1.Zopp/WhoAmI", &WhoAmIRequest {});
            let ok = first
                .who_am_i(with_metadata(md.clone(), WhoAmIRequest {}))
                .await
                .expect("first use of the signature is accepted");
            assert_eq!(ok.into_inner().email, "alice@example.com");
            let replay = second
                .who_am_i(with_metadata(md.clone(), WhoAmIRequest {}))
                .await
                .expect_err("the same signed call on the other replica is refused");
            assert_eq!(replay.code(), tonic::Code::Unauthenticated);
            assert_eq!(replay.message(), "replayed request nonce");
            // And on the first replica again.
            let again = first
                .who_am_i(with_metadata(md, WhoAmIRequest {}))
                .await
                .expect_err("replay on the same replica is refused");
            assert_eq!(again.code(), tonic::Code::Unauthenticated);
        }
        // A fresh signature works on both.
        ca.list_workspaces(
            signer.request("/zopp.v1.Zopp/ListWorkspaces", ListWorkspacesRequest {}),
        )
        .await
        .expect("fresh call on A");
        cb.list_workspaces(
            signer.request("/zopp.v1.Zopp/ListWorkspaces", ListWorkspacesRequest {}),
        )
        .await
        .expect("fresh call on B");
    });
}

#[test]
fn a_watcher_on_one_replica_hears_writes_through_the_other() {
    let a = TestServer::start_postgres();
    let b = a.replica();
    let alice = alice_on(&a);
    via(&alice, &a, &with_env(&["secret", "set", "K", "v0"])).assert_success();
    let signer = Signer::load(alice.home.path());
    let env = EnvironmentRef {
        workspace: "acme".into(),
        project: "api".into(),
        environment: "dev".into(),
    };
    let rt = runtime();
    let mut stream = rt.block_on(async {
        let mut ca = connect(&a.url()).await;
        let req = WatchEnvironmentRequest {
            env: Some(env.clone()),
            after_env_version: 1,
        };
        ca.watch_environment(signer.request("/zopp.v1.Zopp/WatchEnvironment", req))
            .await
            .expect("watch on A")
            .into_inner()
    });
    for (i, expected) in [(1, 2u64), (2, 3), (3, 4)] {
        // Written through B only: A hears it through PostgreSQL's NOTIFY.
        let value = format!("v{i}");
        via(
            &alice,
            &b,
            &with_env(&["secret", "set", "K", value.as_str()]),
        )
        .assert_success();
        let event = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("the watcher on A hears B's write within 10 s")
                .expect("stream healthy")
                .expect("stream open")
        });
        assert_eq!(event.env_version, expected);
    }
}

#[test]
fn concurrent_writers_through_both_replicas_lose_nothing_and_keep_one_audit_chain() {
    const WRITERS: usize = 8;
    let a = TestServer::start_postgres();
    let b = a.replica();
    let alice = alice_on(&a);

    // Last-writer-wins sets of one secret, half through each replica, all at once. The client
    // re-reads and retries when it loses a race, so every acknowledged write must be a version.
    let outputs: Vec<(String, zopp_tests::TestOutput)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let server = if i % 2 == 0 { &a } else { &b };
                let alice = &alice;
                s.spawn(move || {
                    let value = format!("writer-{i}");
                    let out = via(
                        alice,
                        server,
                        &with_env(&["secret", "set", "RACE", value.as_str()]),
                    );
                    (value, out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let mut acknowledged: Vec<String> = Vec::new();
    for (value, out) in &outputs {
        match out.code() {
            0 => acknowledged.push(value.clone()),
            // Too contended even after retries: a clean conflict, not a lost write.
            6 => {
                out.assert_stderr_contains("try again");
            }
            _ => panic!("{value}: unexpected failure\n{}", out.stderr()),
        }
    }
    assert!(!acknowledged.is_empty());
    let history = via(
        &alice,
        &b,
        &with_env(&[
            "secret",
            "history",
            "RACE",
            "--show-values",
            "--output",
            "json",
        ]),
    );
    let history = history.assert_success().json();
    let rows = history.as_array().expect("history rows");
    assert_eq!(
        rows.len(),
        acknowledged.len(),
        "exactly one version per acknowledged write: {history}"
    );
    let mut versions: Vec<u64> = rows
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=acknowledged.len() as u64).collect::<Vec<_>>()
    );
    let mut stored: Vec<String> = rows
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    acknowledged.sort();
    assert_eq!(stored, acknowledged, "no acknowledged value was lost");

    // Check-and-set: of racing "create only if absent" writes, through both replicas, exactly
    // one wins and the rest get a conflict (exit 6).
    let codes: Vec<i32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let server = if i % 2 == 0 { &a } else { &b };
                let alice = &alice;
                s.spawn(move || {
                    let value = format!("cas-{i}");
                    via(
                        alice,
                        server,
                        &with_env(&["secret", "set", "ONCE", value.as_str(), "--if-version", "0"]),
                    )
                    .code()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("cas thread"))
            .collect()
    });
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 6), "{codes:?}");

    // The workspace's audit chain, read through each replica, is one gap-free chain that
    // re-hashes from the first entry to the head, with an entry for every acknowledged write.
    let signer = Signer::load(alice.home.path());
    // The racing sets plus the one check-and-set winner.
    let audited_writes = acknowledged.len() + 1;
    let heads: Vec<[u8; 32]> = runtime().block_on(async {
        let mut heads = Vec::new();
        for server in [&a, &b] {
            let mut c = connect(&server.url()).await;
            let req = ListAuditRequest {
                workspace: "acme".into(),
                limit: 10_000,
                ..Default::default()
            };
            let page = c
                .list_audit(signer.request("/zopp.v1.Zopp/ListAudit", req))
                .await
                .expect("list audit")
                .into_inner();
            let head = verify_chain(&page.entries);
            assert_eq!(page.head_seq, page.entries.len() as u64);
            assert_eq!(page.head_hash, head.to_vec());
            let writes = page
                .entries
                .iter()
                .filter(|e| e.method == "/zopp.v1.Zopp/WriteSecrets" && e.result == "ok")
                .count();
            assert!(
                writes >= audited_writes,
                "every acknowledged write is audited ({writes} entries)"
            );
            heads.push(head);
        }
        heads
    });
    assert_eq!(heads[0], heads[1], "both replicas see the same chain head");
}

/// `zopp run --watch` connected to replica A restarts its child when the environment changes
/// through replica B.
#[test]
fn zopp_run_watch_on_one_replica_restarts_on_a_write_through_the_other() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let a = TestServer::start_postgres();
    let b = a.replica();
    let alice = alice_on(&a);
    via(&alice, &a, &with_env(&["secret", "set", "K", "v0"])).assert_success();

    let mut args = vec!["run", "--watch"];
    args.extend_from_slice(&E);
    args.extend_from_slice(&["--", "sh", "-c", "echo \"started $K\"; exec sleep 600"]);
    let mut cmd = alice.cmd(&args);
    cmd.env("ZOPP_SERVER", a.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Own process group, so the cleanup below also ends the child whatever happens.
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn zopp run --watch");
    let pgid = child.id();
    struct Cleanup(u32);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = zopp_tests::signal_group(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _cleanup = Cleanup(pgid);

    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line from the child in time")
    };
    assert_eq!(next_line(), "started v0");
    // The change goes through B only; the watcher is connected to A.
    via(&alice, &b, &with_env(&["secret", "set", "K", "v1"])).assert_success();
    assert_eq!(
        next_line(),
        "started v1",
        "child restarted with the new value"
    );
    via(&alice, &b, &with_env(&["secret", "set", "K", "v2"])).assert_success();
    assert_eq!(next_line(), "started v2");
    let _ = child.kill();
    let _ = child.wait();
}
