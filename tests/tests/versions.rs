//! Issue #5, versions you can trust, end to end on the real binaries and both backends:
//! point-in-time reads (`secret list|get|export` and `run` with `--at`/`--at-version`),
//! `environment restore`, `diff`, per-environment retention, concurrent writers that lose no
//! update, and the three attacks on the real SQLite file that a client must catch: a value
//! replaced by another version's ciphertext, a version signed by nobody, and an environment
//! rolled back behind a client that has already seen a newer state.

use std::collections::BTreeMap;

use serde::Deserialize;
use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(
    point_in_time_reads_see_the_environment_as_it_was,
    point_in_time_errors_are_clear,
    restore_makes_an_earlier_state_current,
    diff_compares_environments_and_points_in_time,
    retention_prunes_old_versions_and_refuses_pruned_reads,
    concurrent_writers_lose_no_update,
    several_keys_at_once_conditioned_on_the_environment,
);

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

/// `args` after the scope flags: for `zopp run`, whose arguments after `--` are the command's.
fn env_then<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = ENV.to_vec();
    v.extend_from_slice(args);
    v
}

fn start(backend: Backend) -> (TestServer, TestUser) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    (server, alice)
}

/// Sets `name` and returns the environment version the write produced.
fn set(user: &TestUser, name: &str, value: &str) -> u64 {
    let out = user.zopp(&with_env(&[
        "secret", "set", name, value, "--output", "json",
    ]));
    out.assert_success().json()["env_version"]
        .as_u64()
        .expect("env_version")
}

/// `secret list --output json` row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    version: u64,
    updated_at: String,
    #[allow(dead_code)]
    updated_by: String,
}

/// Name → version of `secret list` with `extra` flags.
fn list(user: &TestUser, extra: &[&str]) -> BTreeMap<String, u64> {
    let mut args = with_env(&["secret", "list", "--output", "json"]);
    args.extend_from_slice(extra);
    let out = user.zopp(&args);
    out.assert_success();
    let rows: Vec<Row> = serde_json::from_slice(&out.output.stdout)
        .unwrap_or_else(|e| panic!("list JSON ({e}):\n{}", out.stdout()));
    rows.into_iter().map(|r| (r.name, r.version)).collect()
}

fn get(user: &TestUser, name: &str, extra: &[&str]) -> String {
    let mut args = with_env(&["secret", "get", name]);
    args.extend_from_slice(extra);
    user.zopp(&args).assert_success().stdout()
}

fn versions(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
}

fn point_in_time_reads_see_the_environment_as_it_was(backend: Backend) {
    let (_server, alice) = start(backend);
    assert_eq!(set(&alice, "A", "1"), 1);
    // The time of the first write, to the millisecond, as `list` reports it.
    let out = alice.zopp(&with_env(&["secret", "list", "--output", "json"]));
    let rows: Vec<Row> = serde_json::from_slice(&out.output.stdout).expect("list JSON");
    let t1 = rows[0].updated_at.clone();
    assert_eq!(set(&alice, "B", "2"), 2);
    assert_eq!(set(&alice, "A", "3"), 3);
    alice
        .zopp(&with_env(&["secret", "delete", "B"]))
        .assert_success();

    assert_eq!(list(&alice, &[]), versions(&[("A", 2)]));
    assert_eq!(
        list(&alice, &["--at-version", "2"]),
        versions(&[("A", 1), ("B", 1)])
    );
    assert_eq!(
        list(&alice, &["--at-version", "3"]),
        versions(&[("A", 2), ("B", 1)])
    );
    assert_eq!(list(&alice, &["--at", &t1]), versions(&[("A", 1)]));
    // An age or a time after the last write is the current state.
    assert_eq!(
        list(&alice, &["--at", "2999-01-01T00:00:00Z"]),
        list(&alice, &[])
    );

    assert_eq!(get(&alice, "A", &["--at-version", "2"]), "1\n");
    assert_eq!(get(&alice, "A", &["--at", &t1]), "1\n");
    assert_eq!(get(&alice, "B", &["--at-version", "3"]), "2\n");
    let gone = alice.zopp(&with_env(&["secret", "get", "B", "--at-version", "4"]));
    gone.assert_exit_code(3).assert_stderr_contains(
        "secret 'B' did not exist in environment 'dev' at environment version 4",
    );

    let out = alice.zopp(&with_env(&[
        "secret",
        "export",
        "-f",
        "dotenv",
        "--at-version",
        "2",
    ]));
    let text = out.assert_success().stdout();
    assert!(text.contains("A=") && text.contains('1'), "{text}");
    assert!(text.contains("B=") && text.contains('2'), "{text}");
    assert!(
        !text.contains('3'),
        "the later value is not exported: {text}"
    );

    let out = alice.zopp(&env_then(&[
        "run",
        "--at-version",
        "2",
        "--",
        "sh",
        "-c",
        "printf '%s,%s' \"$A\" \"${B-unset}\"",
    ]));
    assert_eq!(out.assert_success().stdout(), "1,2");
    let out = alice.zopp(&env_then(&[
        "run",
        "--",
        "sh",
        "-c",
        "printf '%s,%s' \"$A\" \"${B-unset}\"",
    ]));
    assert_eq!(out.assert_success().stdout(), "3,unset");
}

fn point_in_time_errors_are_clear(backend: Backend) {
    let (_server, alice) = start(backend);
    set(&alice, "A", "1");
    let out = alice.zopp(&with_env(&["secret", "list", "--at", "yesterday-ish"]));
    out.assert_exit_code(2)
        .assert_stderr_contains("error: --at 'yesterday-ish' is not a time")
        .assert_stderr_contains("hint: use RFC 3339");
    alice
        .zopp(&with_env(&["secret", "list", "--at-version", "0"]))
        .assert_exit_code(2)
        .assert_stderr_contains("environment versions start at 1");
    alice
        .zopp(&with_env(&[
            "secret",
            "list",
            "--at",
            "2020-01-01T00:00:00Z",
            "--at-version",
            "1",
        ]))
        .assert_exit_code(2);

    let out = alice.zopp(&with_env(&["secret", "list", "--at-version", "9"]));
    out.assert_exit_code(3).assert_stderr_contains(
        "error: environment 'dev' has no state at environment version 9: environment 'dev' is at version 1; version 9 does not exist yet",
    );
    out.assert_stderr_contains("hint: pick a later --at time or --at-version");
    let out = alice.zopp(&with_env(&[
        "secret",
        "export",
        "-f",
        "json",
        "--at",
        "2020-01-01T00:00:00Z",
    ]));
    out.assert_exit_code(3).assert_stderr_contains(
        "error: environment 'dev' has no state at 2020-01-01T00:00:00.000Z: environment 'dev' did not exist yet",
    );
    alice
        .zopp(&env_then(&["run", "--at-version", "5", "--", "true"]))
        .assert_exit_code(3);
    // --watch follows the live environment; an old state cannot change.
    alice
        .zopp(&env_then(&[
            "run",
            "--at-version",
            "1",
            "--watch",
            "--",
            "true",
        ]))
        .assert_exit_code(2);
}

/// `zopp environment restore --output json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Restore {
    restored_from: String,
    from_env_version: u64,
    base_env_version: u64,
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
    unchanged: Vec<String>,
    env_version: Option<u64>,
    dry_run: bool,
}

fn restore(user: &TestUser, extra: &[&str]) -> Restore {
    let mut args = with_env(&["environment", "restore", "--yes", "--output", "json"]);
    args.extend_from_slice(extra);
    let out = user.zopp(&args);
    out.assert_success();
    serde_json::from_slice(&out.output.stdout)
        .unwrap_or_else(|e| panic!("restore JSON ({e}):\n{}", out.stdout()))
}

fn restore_makes_an_earlier_state_current(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    set(&alice, "A", "1");
    set(&alice, "B", "2");
    set(&alice, "SAME", "s");
    // Version 3 is the state to go back to. Then: A changes, B is deleted, C appears.
    set(&alice, "A", "changed");
    alice
        .zopp(&with_env(&["secret", "delete", "B"]))
        .assert_success();
    set(&alice, "C", "new");
    // A key rotation in between: restored values are sealed under the new epoch.
    alice
        .zopp(&with_env(&["environment", "rotate-key"]))
        .assert_success();

    let plan = restore(&alice, &["--at-version", "3", "--dry-run"]);
    assert_eq!(
        (plan.from_env_version, plan.base_env_version, plan.dry_run),
        (3, 6, true)
    );
    assert_eq!(plan.restored_from, "environment version 3");
    assert_eq!(
        (plan.added, plan.changed, plan.removed, plan.unchanged),
        (
            vec!["B".to_owned()],
            vec!["A".to_owned()],
            vec!["C".to_owned()],
            vec!["SAME".to_owned()]
        )
    );
    assert_eq!(plan.env_version, None);
    assert_eq!(
        list(&alice, &[]),
        versions(&[("A", 2), ("C", 1), ("SAME", 1)]),
        "a dry run writes nothing"
    );

    let done = restore(&alice, &["--at-version", "3"]);
    assert_eq!(
        done.env_version,
        Some(7),
        "one transaction: one environment version"
    );
    assert_eq!(get(&alice, "A", &[]), "1\n");
    assert_eq!(get(&alice, "B", &[]), "2\n");
    assert_eq!(get(&alice, "SAME", &[]), "s\n");
    alice
        .zopp(&with_env(&["secret", "get", "C"]))
        .assert_exit_code(3);
    // New versions, never rewritten history: A 1 → changed → 1, B 1 → deleted → 2.
    assert_eq!(
        list(&alice, &[]),
        versions(&[("A", 3), ("B", 3), ("SAME", 1)])
    );
    let history = alice
        .zopp(&with_env(&["secret", "history", "C", "--output", "json"]))
        .json();
    assert_eq!(history[1]["deleted"], true);

    // Restoring to the state it is already in is a no-op.
    let again = restore(&alice, &["--at-version", "3"]);
    assert_eq!(again.env_version, None);
    assert_eq!(again.unchanged.len(), 3);
    // The human summary, and a restore by time.
    let out = alice.zopp(&with_env(&[
        "environment",
        "restore",
        "--at",
        "2999-01-01T00:00:00Z",
    ]));
    out.assert_success()
        .assert_stderr_contains("nothing to do: the environment is already in that state");
    // Restoring needs a point and the write role.
    alice
        .zopp(&with_env(&["environment", "restore"]))
        .assert_exit_code(2)
        .assert_stderr_contains("--at-version");
    let code = invite(&alice, "read");
    let reader = TestUser::new(&server);
    reader
        .zopp(&["join", &code, "reader@example.com"])
        .assert_success();
    reader
        .zopp(&with_env(&["environment", "restore", "--at-version", "1"]))
        .assert_exit_code(4);
}

/// A workspace invite code for `role` in `acme`.
fn invite(admin: &TestUser, role: &str) -> String {
    let out = admin.zopp(&[
        "invite", "create", "-w", "acme", "--role", role, "--output", "json",
    ]);
    out.assert_success().json()["code"]
        .as_str()
        .expect("invite code")
        .to_owned()
}

/// `zopp diff --output json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Diff {
    from: String,
    to: String,
    from_env_version: u64,
    to_env_version: u64,
    changes: Vec<DiffRow>,
    unchanged: usize,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct DiffRow {
    name: String,
    change: String,
    from_value: Option<String>,
    to_value: Option<String>,
}

fn diff(user: &TestUser, args: &[&str]) -> Diff {
    let mut all = vec!["diff", "--output", "json", "-w", "acme", "-p", "api"];
    all.extend_from_slice(args);
    let out = user.zopp(&all);
    out.assert_success();
    serde_json::from_slice(&out.output.stdout)
        .unwrap_or_else(|e| panic!("diff JSON ({e}):\n{}", out.stdout()))
}

fn row(name: &str, change: &str, from: Option<&str>, to: Option<&str>) -> DiffRow {
    DiffRow {
        name: name.into(),
        change: change.into(),
        from_value: from.map(Into::into),
        to_value: to.map(Into::into),
    }
}

fn diff_compares_environments_and_points_in_time(backend: Backend) {
    let (_server, alice) = start(backend);
    alice
        .zopp(&["environment", "create", "prod", "-w", "acme", "-p", "api"])
        .assert_success();
    let prod = |k: &str, v: &str| {
        alice
            .zopp(&[
                "secret", "set", k, v, "-w", "acme", "-p", "api", "-e", "prod",
            ])
            .assert_success();
    };
    for (k, v) in [("A", "1"), ("B", "2"), ("C", "3")] {
        set(&alice, k, v);
    }
    for (k, v) in [("A", "1"), ("B", "two"), ("D", "4")] {
        prod(k, v);
    }

    let d = diff(&alice, &["-e", "dev", "-e", "prod"]);
    assert_eq!((d.from.as_str(), d.to.as_str()), ("dev", "prod"));
    assert_eq!(
        (d.from_env_version, d.to_env_version, d.unchanged),
        (3, 3, 1)
    );
    assert_eq!(
        d.changes,
        vec![
            row("B", "changed", None, None),
            row("C", "removed", None, None),
            row("D", "added", None, None),
        ],
        "names only without --show-values"
    );
    let d = diff(&alice, &["-e", "dev", "-e", "prod", "--show-values"]);
    assert_eq!(
        d.changes,
        vec![
            row("B", "changed", Some("2"), Some("two")),
            row("C", "removed", Some("3"), None),
            row("D", "added", None, Some("4")),
        ]
    );

    // One environment at two points in time.
    set(&alice, "A", "1b");
    let d = diff(
        &alice,
        &["-e", "dev", "--at-version", "1", "--at-version", "4"],
    );
    assert_eq!(
        (d.from.as_str(), d.to.as_str()),
        ("dev@environment version 1", "dev@environment version 4")
    );
    assert_eq!(
        d.changes,
        vec![
            row("A", "changed", None, None),
            row("B", "added", None, None),
            row("C", "added", None, None),
        ]
    );
    // Human output: one line per name on stdout, a summary on stderr; never a value unasked.
    let out = alice.zopp(&with_env(&[
        "diff",
        "--at-version",
        "3",
        "--at-version",
        "4",
    ]));
    out.assert_success()
        .assert_stderr_contains("0 added, 0 removed, 1 changed, 2 unchanged");
    assert_eq!(out.stdout(), "~ A\n");
    // Identical sides: exit 0, nothing on stdout.
    let out = alice.zopp(&with_env(&[
        "diff",
        "--at-version",
        "4",
        "--at-version",
        "4",
    ]));
    assert_eq!(out.assert_success().stdout(), "");
    // Exactly two sides.
    alice
        .zopp(&with_env(&["diff"]))
        .assert_exit_code(2)
        .assert_stderr_contains("diff compares exactly two things");
    // Other commands refuse a second -e.
    alice
        .zopp(&[
            "secret", "list", "-w", "acme", "-p", "api", "-e", "dev", "-e", "prod",
        ])
        .assert_exit_code(2);
}

fn retention_prunes_old_versions_and_refuses_pruned_reads(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    for v in ["1", "2", "3"] {
        set(&alice, "A", v);
    }
    set(&alice, "B", "b");
    // Nothing is pruned by default.
    let envs = alice
        .zopp(&[
            "environment",
            "list",
            "-w",
            "acme",
            "-p",
            "api",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(envs[0]["keep_versions"], serde_json::Value::Null);
    assert_eq!(envs[0]["history_floor"], 0);

    let out = alice.zopp(&with_env(&[
        "environment",
        "set-retention",
        "2",
        "--yes",
        "--output",
        "json",
    ]));
    let json = out.assert_success().json();
    assert_eq!(json["pruned"], 1);
    assert_eq!(json["environment"]["keep_versions"], 2);
    assert_eq!(json["environment"]["history_floor"], 2);
    let history = |name: &str| -> Vec<u64> {
        alice
            .zopp(&with_env(&["secret", "history", name, "--output", "json"]))
            .json()
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["version"].as_u64().expect("version"))
            .collect()
    };
    assert_eq!(history("A"), vec![2, 3]);
    // Every write prunes in its own transaction.
    set(&alice, "A", "4");
    assert_eq!(history("A"), vec![3, 4]);
    assert_eq!(history("B"), vec![1]);
    assert_eq!(get(&alice, "A", &[]), "4\n");
    alice
        .zopp(&with_env(&["secret", "get", "A", "--version", "1"]))
        .assert_exit_code(3);

    // A pruned state is refused, never answered with what happens to be left.
    let out = alice.zopp(&with_env(&["secret", "list", "--at-version", "2"]));
    out.assert_exit_code(3)
        .assert_stderr_contains("were pruned by its retention limit");
    assert_eq!(
        list(&alice, &["--at-version", "4"]),
        versions(&[("A", 3), ("B", 1)])
    );

    // The audit trail keeps every write and records the change of limit.
    let audit = alice
        .zopp(&["audit", "list", "-w", "acme", "--output", "json"])
        .json();
    let actions: Vec<&str> = audit
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "secret.write").count(), 5);
    assert!(actions.contains(&"environment.retention"), "{actions:?}");
    alice
        .zopp(&["audit", "verify", "-w", "acme"])
        .assert_success();

    // The database itself still refuses to delete a kept version.
    let err = server
        .exec_sql("DELETE FROM secret_versions")
        .expect_err("the trigger refuses");
    assert!(err.contains("secret versions are immutable"), "{err}");

    // Only an admin may change the limit.
    let code = invite(&alice, "write");
    let writer = TestUser::new(&server);
    writer
        .zopp(&["join", &code, "writer@example.com"])
        .assert_success();
    writer
        .zopp(&with_env(&["environment", "set-retention", "1"]))
        .assert_exit_code(4);
    alice
        .zopp(&with_env(&["environment", "set-retention", "0"]))
        .assert_exit_code(2);
    alice
        .zopp(&with_env(&["environment", "set-retention"]))
        .assert_exit_code(2);

    // --keep-all: writes keep everything again.
    alice
        .zopp(&with_env(&["environment", "set-retention", "--keep-all"]))
        .assert_success();
    set(&alice, "A", "5");
    set(&alice, "A", "6");
    assert_eq!(history("A"), vec![3, 4, 5, 6]);
}

fn concurrent_writers_lose_no_update(backend: Backend) {
    let (_server, alice) = start(backend);
    const WRITERS: usize = 4;
    // Plain writers retry on conflict: every value lands as its own version.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let alice = &alice;
                s.spawn(move || {
                    let v = format!("value-{i}");
                    alice.zopp(&with_env(&["secret", "set", "K", &v]))
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread").assert_success();
        }
    });
    let history = alice
        .zopp(&with_env(&[
            "secret",
            "history",
            "K",
            "--show-values",
            "--output",
            "json",
        ]))
        .json();
    let values: std::collections::BTreeSet<String> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["value"].as_str().expect("value").to_owned())
        .collect();
    assert_eq!(values.len(), WRITERS, "no update lost: {values:?}");

    // Check-and-set writers racing on the same version: exactly one wins, the others exit 6
    // and name the current version.
    let current = WRITERS.to_string();
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (alice, current) = (&alice, &current);
                s.spawn(move || {
                    let v = format!("cas-{i}");
                    alice.zopp(&with_env(&[
                        "secret",
                        "set",
                        "K",
                        &v,
                        "--if-version",
                        current,
                    ]))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    assert_eq!(outs.iter().filter(|o| o.code() == 0).count(), 1);
    for o in outs.iter().filter(|o| o.code() != 0) {
        o.assert_exit_code(6);
        let err = o.stderr();
        assert!(
            err.contains("secret 'K'"),
            "the conflict names the secret: {err}"
        );
    }
    let v = alice
        .zopp(&with_env(&["secret", "get", "K", "--output", "json"]))
        .json();
    assert_eq!(v["version"].as_u64(), Some(WRITERS as u64 + 1));
}

// ---------- the three attacks, on the real SQLite file ----------

/// An attacker with the disk drops the immutability triggers first.
const TRIGGERS_OFF: &str = "DROP TRIGGER IF EXISTS secret_versions_no_update; \
                            DROP TRIGGER IF EXISTS secret_versions_no_delete;";

fn tamper(server: &TestServer, sql: &str) {
    server
        .exec_sql(&format!("{TRIGGERS_OFF} {sql}"))
        .expect("tamper");
}

/// A server with secret K at versions 1 and 2 (and OTHER at 1), read once by alice.
fn sqlite_with_history() -> (TestServer, TestUser) {
    let (server, alice) = start(Backend::Sqlite);
    set(&alice, "K", "first");
    set(&alice, "K", "second");
    set(&alice, "OTHER", "x");
    assert_eq!(get(&alice, "K", &[]), "second\n");
    assert_eq!(list(&alice, &[]).len(), 2);
    (server, alice)
}

/// The client refuses with exit 1 and names K.
fn refused(alice: &TestUser, args: &[&str], message: &str) {
    let out = alice.zopp(&env_then(args));
    out.assert_exit_code(1);
    let first = out.stderr().lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!("error: {message}")),
        "{}",
        out.stderr()
    );
    assert!(out.stdout().is_empty(), "nothing printed: {}", out.stdout());
}

#[test]
fn tamper_value_replaced_by_another_versions_ciphertext_is_caught() {
    let (server, alice) = sqlite_with_history();
    tamper(
        &server,
        "UPDATE secret_versions SET envelope = (SELECT envelope FROM secret_versions v1 \
           WHERE v1.name_digest = secret_versions.name_digest AND v1.version = 1) \
         WHERE version = 2",
    );
    refused(
        &alice,
        &["secret", "get", "K"],
        "secret 'K' failed verification",
    );
    refused(&alice, &["run", "--", "true"], "secret '");
    refused(&alice, &["secret", "list"], "secret '");
}

#[test]
fn tamper_version_signed_by_nobody_is_caught() {
    let (server, alice) = sqlite_with_history();
    // A third version of K chained correctly after version 2, with a signature nobody made.
    tamper(
        &server,
        "INSERT INTO secret_versions (environment_id, name_digest, version, env_version, \
           key_epoch, envelope, deleted, writer_id, signature, prev_hash, hash, created_at) \
         SELECT environment_id, name_digest, 3, 4, key_epoch, envelope, deleted, writer_id, \
           zeroblob(64), hash, randomblob(32), created_at + 1 \
         FROM secret_versions WHERE version = 2; \
         UPDATE secret_heads SET version = 3, hash = (SELECT hash FROM secret_versions v \
           WHERE v.name_digest = secret_heads.name_digest AND v.version = 3) \
         WHERE version = 2; \
         UPDATE environments SET env_version = 4",
    );
    refused(
        &alice,
        &["secret", "get", "K"],
        "secret 'K' failed verification",
    );
    refused(&alice, &["secret", "export", "-f", "dotenv"], "secret '");
}

#[test]
fn tamper_environment_rolled_back_behind_a_client_is_caught() {
    let (server, alice) = sqlite_with_history();
    // K back to its first version: every remaining row genuinely signed (OTHER keeps the
    // environment version its writer signed; renumbering it would be a forgery, caught sooner).
    tamper(
        &server,
        "UPDATE secret_heads SET version = 1, hash = (SELECT hash FROM secret_versions v \
           WHERE v.name_digest = secret_heads.name_digest AND v.version = 1) \
         WHERE version = 2; \
         DELETE FROM secret_versions WHERE version = 2",
    );
    let message = "secret 'K' went back from version 2 to 1: the server is serving an older state than this client has already seen";
    refused(&alice, &["secret", "get", "K"], message);
    refused(&alice, &["secret", "list"], message);
    refused(&alice, &["run", "--", "true"], message);
    // A client that never saw the newer state has nothing to compare with (trust on first
    // use), which is why every client pins what it reads.
    let code = invite(&alice, "read");
    let fresh = TestUser::new(&server);
    fresh
        .zopp(&["join", &code, "fresh@example.com"])
        .assert_success();
    assert_eq!(get(&fresh, "K", &[]), "first\n");
}

/// `zopp secret set A=1 B=2 --if-env-version N`: all keys in one write, or none when someone
/// wrote first; racing conditioned writers on the same base: exactly one wins.
fn several_keys_at_once_conditioned_on_the_environment(backend: Backend) {
    let (_server, alice) = start(backend);
    let base = set(&alice, "K0", "zero");
    let base_text = base.to_string();
    let out = alice.zopp(&with_env(&[
        "secret",
        "set",
        "A=1",
        "B=two=2",
        "--if-env-version",
        &base_text,
        "--output",
        "json",
    ]));
    let json = out.assert_success().json();
    assert_eq!(json["added"], serde_json::json!(["A", "B"]));
    let after = json["env_version"].as_u64().expect("env_version");
    assert!(after > base, "the write moved the environment on");
    let got = alice.zopp(&with_env(&["secret", "get", "B"]));
    assert_eq!(got.assert_success().stdout(), "two=2\n");

    // The same base again is stale: exit 6 naming the current version, and nothing lands.
    alice
        .zopp(&with_env(&[
            "secret",
            "set",
            "A=9",
            "C=3",
            "--if-env-version",
            &base_text,
        ]))
        .assert_exit_code(6)
        .assert_stderr_contains(&format!("is at environment version {after}, not {base}"));
    let a = alice.zopp(&with_env(&["secret", "get", "A"]));
    assert_eq!(a.assert_success().stdout(), "1\n");
    alice
        .zopp(&with_env(&["secret", "get", "C"]))
        .assert_exit_code(3);

    // Mixed forms are refused before any call.
    alice
        .zopp(&with_env(&["secret", "set", "A=1", "NOT_A_PAIR"]))
        .assert_exit_code(2)
        .assert_stderr_contains("is not KEY=VALUE");

    // Four writers race on the same base: one wins, three get exit 6, none is lost silently.
    let current = after.to_string();
    let results: Vec<(i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let alice = &alice;
                let current = &current;
                s.spawn(move || {
                    let pair = format!("RACE=writer-{i}");
                    let out = alice.zopp(&with_env(&[
                        "secret",
                        "set",
                        &pair,
                        "--if-env-version",
                        current,
                    ]));
                    (out.code(), out.stderr())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let codes: Vec<i32> = results.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{results:?}");
    assert_eq!(codes.iter().filter(|c| **c == 6).count(), 3, "{results:?}");
}
