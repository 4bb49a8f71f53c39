//! The first hour of a new user, end to end on the real binaries: errors in the shape asked for
//! (`--output json` errors as one JSON object on stderr, RFC 3339 times, truthful
//! `--if-env-version` conflicts), tables that say when they are empty and keep their header
//! when piped, destructive commands that confirm, runs that degrade gracefully, and which
//! identity a command uses when `ZOPP_TOKEN` and an identity on disk both exist.

use serde::Deserialize;
use zopp_tests::{TestOutput, TestServer, TestUser};

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

fn start() -> (TestServer, TestUser) {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    (server, alice)
}

/// The error object `--output json` prints on stderr (docs/ARCHITECTURE.md "Exit codes").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorJson {
    code: String,
    exit_code: u8,
    message: String,
    hint: Option<String>,
}

/// Parses the one JSON error line of `out`'s stderr and checks it agrees with the exit code.
fn json_error(out: &TestOutput) -> ErrorJson {
    let err = out.stderr();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{}: one line on stderr:\n{err}",
        out.command
    );
    let e: ErrorJson =
        serde_json::from_str(lines[0]).unwrap_or_else(|x| panic!("{x}: {}", lines[0]));
    assert_eq!(i32::from(e.exit_code), out.code(), "{e:?}");
    assert!(
        out.stdout().is_empty(),
        "nothing on stdout: {}",
        out.stdout()
    );
    e
}

#[test]
fn errors_are_one_json_object_on_stderr_with_output_json() {
    let (_server, alice) = start();

    let out = alice.zopp(&with_env(&["secret", "get", "NOPE", "--output", "json"]));
    out.assert_exit_code(3);
    let e = json_error(&out);
    assert_eq!(e.code, "not_found");
    assert_eq!(e.message, "secret 'NOPE' not found in environment 'dev'");
    assert!(e.hint.expect("a hint").contains("zopp secret list"));

    // ZOPP_OUTPUT=json counts too, and a usage error clap finds is JSON as well.
    let out = alice.zopp_env(&["secret", "list", "--bogus"], &[("ZOPP_OUTPUT", "json")]);
    out.assert_exit_code(2);
    let e = json_error(&out);
    assert_eq!(e.code, "usage");
    assert!(e.message.contains("--bogus"), "{e:?}");

    // A refused confirmation names --yes.
    let out = alice.zopp(&["workspace", "delete", "acme", "--output", "json"]);
    out.assert_exit_code(2);
    let e = json_error(&out);
    assert_eq!(e.code, "usage");
    assert!(e.hint.expect("hint").contains("--yes"));

    // Human output keeps the error:/hint: lines.
    alice
        .zopp(&with_env(&["secret", "get", "NOPE"]))
        .assert_exit_code(3)
        .assert_stderr_contains("error: secret 'NOPE' not found in environment 'dev'\nhint: ");
}

#[test]
fn times_in_errors_are_rfc3339() {
    let (_server, alice) = start();
    let out = alice.zopp(&with_env(&[
        "secret",
        "list",
        "--at",
        "2001-02-03T04:05:06Z",
    ]));
    out.assert_exit_code(3);
    let err = out.stderr();
    assert!(err.contains("did not exist yet (created at 20"), "{err}");
    assert!(!err.contains("unix"), "{err}");
    // The creation time is RFC 3339 in UTC.
    let created = err
        .split("created at ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("a creation time");
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{created}"
    );
}

#[test]
fn if_env_version_conflicts_say_what_happened() {
    let (_server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "K", "v"]))
        .assert_success();

    // Nobody wrote: the version asked for was simply never reached.
    let out = alice.zopp(&with_env(&[
        "secret",
        "set",
        "A=1",
        "--if-env-version",
        "999",
    ]));
    out.assert_exit_code(6).assert_stderr_contains(
        "error: acme/api/dev is at environment version 1; version 999 does not exist yet, so nothing was written\n\
         hint: `zopp environment list -w acme -p api` shows each environment's current version (VERSION)",
    );
    assert!(!out.stderr().contains("someone"), "{}", out.stderr());

    // Somebody did write: say how many writes came since.
    alice
        .zopp(&with_env(&["secret", "set", "K", "v2"]))
        .assert_success();
    alice
        .zopp(&with_env(&[
            "secret",
            "set",
            "A=1",
            "--if-env-version",
            "1",
        ]))
        .assert_exit_code(6)
        .assert_stderr_contains("is at environment version 2, not 1: 1 write happened since");

    // The command the hint names shows the version.
    let list = alice.zopp(&["environment", "list", "-w", "acme", "-p", "api"]);
    let text = list.assert_success().stdout();
    let mut lines = text.lines();
    assert!(lines.next().expect("header").contains("VERSION"), "{text}");
    assert!(lines.next().expect("row").starts_with("dev   2 "), "{text}");
}

#[test]
fn empty_tables_say_so_and_headers_survive_a_pipe() {
    let (_server, alice) = start();

    let out = alice.zopp(&with_env(&["secret", "list"]));
    out.assert_success();
    assert_eq!(out.stdout(), "");
    assert_eq!(out.stderr(), "no secrets in this environment\n");

    // Piped (the harness pipes stdout), the header is still there; --no-header drops it.
    let out = alice.zopp(&["workspace", "list"]);
    let text = out.assert_success().stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "NAME  CREATED");
    assert!(lines[1].starts_with("acme  "), "{text}");
    let out = alice.zopp(&["workspace", "list", "--no-header"]);
    let text = out.assert_success().stdout();
    assert!(
        text.starts_with("acme  ") && text.lines().count() == 1,
        "{text}"
    );

    // JSON is unchanged: an empty list is `[]`, and nothing on stderr.
    let out = alice.zopp(&with_env(&["secret", "list", "--output", "json"]));
    assert_eq!(out.assert_success().stdout(), "[]\n");
    assert_eq!(out.stderr(), "");
}

/// `environment set-retention N --dry-run --output json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionPlan {
    environment: String,
    keep_versions: u64,
    would_prune: u64,
    secrets: Vec<RetentionSecret>,
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSecret {
    name: String,
    would_prune: u64,
}

#[test]
fn restore_and_retention_confirm_and_dry_run() {
    let (_server, alice) = start();
    for (k, v) in [("A", "1"), ("B", "2"), ("A", "changed"), ("C", "3")] {
        alice
            .zopp(&with_env(&["secret", "set", k, v]))
            .assert_success();
    }

    // Without a terminal and without --yes: the plan, then a refusal naming --yes.
    let out = alice.zopp(&with_env(&["environment", "restore", "--at-version", "2"]));
    out.assert_exit_code(2).assert_stderr_contains(
        "error: refusing to restore environment 'dev' (0 added, 1 changed, 1 removed) without confirmation\n\
         hint: stdin is not a terminal, so pass --yes to confirm (--dry-run shows the plan)",
    );
    let err = out.stderr();
    assert!(
        err.contains("  replace the value of A\n") && err.contains("  delete C\n"),
        "{err}"
    );
    alice
        .zopp(&with_env(&["secret", "get", "C"]))
        .assert_success();
    // The same refusal as JSON.
    let out = alice.zopp(&with_env(&[
        "environment",
        "restore",
        "--at-version",
        "2",
        "--output",
        "json",
    ]));
    out.assert_exit_code(2);
    assert!(json_error(&out).hint.expect("hint").contains("--yes"));

    // --dry-run writes nothing; --yes does it.
    alice
        .zopp(&with_env(&[
            "environment",
            "restore",
            "--at-version",
            "2",
            "--dry-run",
        ]))
        .assert_success()
        .assert_stderr_contains("dry run: nothing was written");
    alice
        .zopp(&with_env(&["secret", "get", "C"]))
        .assert_success();
    alice
        .zopp(&with_env(&[
            "environment",
            "restore",
            "--at-version",
            "2",
            "--yes",
        ]))
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "get", "C"]))
        .assert_exit_code(3);
    assert_eq!(
        alice
            .zopp(&with_env(&["secret", "get", "A"]))
            .assert_success()
            .stdout(),
        "1\n"
    );

    // A has three versions now (1, changed, 1 again), B one: keeping 1 prunes two of A.
    let out = alice.zopp(&with_env(&[
        "environment",
        "set-retention",
        "1",
        "--dry-run",
        "--output",
        "json",
    ]));
    let plan: RetentionPlan = serde_json::from_slice(&out.assert_success().output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", out.stdout()));
    assert_eq!(
        (
            plan.environment.as_str(),
            plan.keep_versions,
            plan.would_prune,
            plan.dry_run
        ),
        ("dev", 1, 2, true)
    );
    assert_eq!(plan.secrets.len(), 1);
    assert_eq!(
        (plan.secrets[0].name.as_str(), plan.secrets[0].would_prune),
        ("A", 2)
    );

    let history = |u: &TestUser| {
        u.zopp(&with_env(&["secret", "history", "A", "--output", "json"]))
            .json()
            .as_array()
            .expect("history")
            .len()
    };
    assert_eq!(history(&alice), 3);
    alice
        .zopp(&with_env(&["environment", "set-retention", "1"]))
        .assert_exit_code(2)
        .assert_stderr_contains("  A: 2 version(s)\n")
        .assert_stderr_contains(
            "error: refusing to keep only the newest 1 version(s) of each secret of environment 'dev' (2 version(s) deleted now) without confirmation",
        );
    assert_eq!(history(&alice), 3, "nothing pruned without --yes");
    alice
        .zopp(&with_env(&["environment", "set-retention", "1", "--yes"]))
        .assert_success();
    assert_eq!(history(&alice), 1);
    // Keeping everything again deletes nothing, so it needs no confirmation.
    alice
        .zopp(&with_env(&["environment", "set-retention", "--keep-all"]))
        .assert_success();
}

/// `zopp run -w acme -p api -e dev FLAGS -- sh -c SCRIPT`.
fn run_sh<'a>(flags: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut v = with_env(&["run"]);
    v.extend_from_slice(flags);
    v.extend_from_slice(&["--", "sh", "-c", script]);
    v
}

#[test]
fn a_dangling_reference_fails_only_what_injects_it_and_is_warned_about_when_set() {
    let (_server, alice) = start();
    alice
        .zopp(&with_env(&[
            "secret",
            "set",
            "REDIS_URL",
            "redis://cache:6379",
        ]))
        .assert_success();
    // Set time: a warning naming the reference and where it was looked for; the write stands.
    let out = alice.zopp_stdin(&with_env(&["secret", "set", "BROKEN", "-"]), b"x${NOPE}");
    out.assert_success().assert_stderr_contains(
        "warning: secret 'BROKEN' references ${NOPE}, which does not exist in acme/api/dev; `zopp run` and `zopp inject` will fail on it until it does\n",
    );
    let out = alice.zopp_stdin(
        &with_env(&["secret", "set", "FAR", "-", "--output", "json"]),
        b"${zopp://api/nope/K}",
    );
    out.assert_success().assert_stderr_contains(
        "warning: secret 'FAR' references ${zopp://api/nope/K}, which cannot be checked: ",
    );
    assert_eq!(out.json()["name"], "FAR", "JSON stays on stdout");
    // A reference that resolves says nothing.
    let out = alice.zopp_stdin(
        &with_env(&["secret", "set", "GOOD", "-"]),
        b"${REDIS_URL}/0",
    );
    out.assert_success();
    assert!(!out.stderr().contains("warning"), "{}", out.stderr());
    // KEY=VALUE pairs are checked too, against the environment after the write.
    alice
        .zopp(&with_env(&["secret", "set", "P=${Q}", "Q=1", "R=${S}"]))
        .assert_success()
        .assert_stderr_contains("warning: secret 'R' references ${S}")
        .assert_stderr_contains("set 3 secrets in acme/api/dev");

    // Only what is injected has to resolve.
    let out = alice.zopp(&run_sh(
        &["--only", "REDIS_URL,GOOD"],
        "echo \"$REDIS_URL $GOOD\"",
    ));
    assert_eq!(
        out.assert_success().stdout(),
        "redis://cache:6379 redis://cache:6379/0\n"
    );
    let out = alice.zopp(&run_sh(
        &["--exclude", "BROKEN", "--exclude", "FAR", "--exclude", "R"],
        "echo \"$GOOD\"",
    ));
    assert_eq!(out.assert_success().stdout(), "redis://cache:6379/0\n");
    // Injecting it (explicitly, or everything) still fails, naming it.
    alice
        .zopp(&run_sh(&["--only", "BROKEN"], "echo ran"))
        .assert_exit_code(1)
        .assert_stderr_contains("unresolved reference ${NOPE} in BROKEN");
    let out = alice.zopp(&run_sh(&[], "echo ran"));
    assert_ne!(out.code(), 0);
    assert!(out.stdout().is_empty(), "the command must not run");
}

#[test]
fn fallback_creates_its_directory_and_a_missing_copy_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let (mut server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "REDIS_URL", "redis://cache"]))
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "set", "BROKEN", "${NOPE}"]))
        .assert_success();
    let dir = alice.cwd.path().join("cache/zopp");
    let copy = dir.join("dev.copy");
    let copy_arg = copy.to_str().expect("utf-8 path");
    let out = alice.zopp(&run_sh(
        &["--fallback", copy_arg, "--only", "REDIS_URL"],
        "echo \"$REDIS_URL\"",
    ));
    assert_eq!(out.assert_success().stdout(), "redis://cache\n");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&copy), 0o600);

    // A directory that cannot be made: loud, and the command does not run.
    let file = alice.cwd.path().join("a-file");
    std::fs::write(&file, b"").expect("write");
    let bad = file.join("sub/dev.copy");
    let out = alice.zopp(&run_sh(
        &[
            "--fallback",
            bad.to_str().expect("utf-8"),
            "--only",
            "REDIS_URL",
        ],
        "echo ran",
    ));
    out.assert_exit_code(1)
        .assert_stderr_contains("cannot create the directory of the fallback copy");
    assert!(out.stdout().is_empty());

    server.kill();
    let out = alice.zopp(&run_sh(
        &["--fallback", copy_arg, "--only", "REDIS_URL"],
        "echo \"$REDIS_URL\"",
    ));
    assert_eq!(out.assert_success().stdout(), "redis://cache\n");
    out.assert_stderr_contains("running from the fallback copy");
    // Offline with no copy: the outage and the missing copy, exit 7.
    let elsewhere = alice.cwd.path().join("elsewhere/dev.copy");
    let elsewhere_arg = elsewhere.to_str().expect("utf-8");
    alice
        .zopp(&run_sh(&["--fallback", elsewhere_arg], "echo ran"))
        .assert_exit_code(7)
        .assert_stderr_contains(&format!(
            ", and there is no fallback copy at {elsewhere_arg}\n"
        ))
        .assert_stderr_contains("hint: no run with --fallback");
}

/// `zopp whoami --output json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Whoami {
    principal_id: String,
    user_id: String,
    email: String,
    principal_name: String,
    server: String,
    identity: String,
    overridden_home: Option<String>,
}

#[test]
fn a_token_left_in_the_shell_says_which_identity_acts() {
    let (_server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "K", "v"]))
        .assert_success();
    let out = alice.zopp(&[
        "principal",
        "create-service",
        "deployer",
        "-w",
        "acme",
        "-p",
        "api",
        "-e",
        "dev",
        "--role",
        "read",
        "--output",
        "json",
    ]);
    let token = out.assert_success().json()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let home = alice.home.path().display().to_string();

    // Without a token: the identity on disk, no note.
    let me: Whoami = serde_json::from_slice(
        &alice
            .zopp(&["whoami", "--output", "json"])
            .assert_success()
            .output
            .stdout,
    )
    .expect("whoami JSON");
    assert_eq!((me.identity.as_str(), me.overridden_home), ("home", None));
    assert_eq!(me.email, "alice@example.com");
    let out = alice.zopp(&with_env(&["secret", "get", "K"]));
    assert_eq!(out.assert_success().stderr(), "");

    // With both: whoami says which acts, other commands add one line on stderr.
    let with_token = [("ZOPP_TOKEN", token.as_str())];
    let out = alice.zopp_env(&["whoami", "--output", "json"], &with_token);
    let me: Whoami = serde_json::from_slice(&out.assert_success().output.stdout).expect("JSON");
    assert_eq!(me.identity, "token");
    assert_eq!(me.overridden_home.as_deref(), Some(home.as_str()));
    assert_ne!(me.email, "alice@example.com");
    assert!(!me.principal_id.is_empty() && !me.server.is_empty());
    let _ = (me.user_id, me.principal_name);
    let out = alice.zopp_env(&["whoami"], &with_token);
    assert!(
        out.assert_success().stdout().contains(&format!(
            "identity: the service principal token in ZOPP_TOKEN; the identity in {home} (alice@example.com) is not used while it is set"
        )),
        "{}",
        out.stdout()
    );
    let out = alice.zopp_env(&with_env(&["secret", "get", "K"]), &with_token);
    assert_eq!(out.assert_success().stdout(), "v\n");
    assert_eq!(
        out.stderr(),
        format!("note: acting as the service principal of ZOPP_TOKEN, not as the identity in {home} (alice@example.com); unset ZOPP_TOKEN to use that one\n")
    );
    // JSON output keeps stderr clean.
    let out = alice.zopp_env(
        &with_env(&["secret", "get", "K", "--output", "json"]),
        &with_token,
    );
    assert_eq!(out.assert_success().stderr(), "");
}

/// `zopp audit list --output json` row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AuditRow {
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

fn is_long_hex_or_uuid(word: &str) -> bool {
    word.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|w| w.len() >= 32)
}

#[test]
fn audit_list_is_readable_newest_first_with_names() {
    let (_server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "API_KEY", "v1"]))
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "get", "API_KEY"]))
        .assert_success();
    let all: Vec<AuditRow> = serde_json::from_slice(
        &alice
            .zopp(&["audit", "list", "-w", "acme", "--output", "json"])
            .assert_success()
            .output
            .stdout,
    )
    .expect("audit JSON");
    assert!(all.len() >= 5, "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].seq < w[1].seq),
        "JSON keeps chain order"
    );

    // Piped: everything, newest first, under a header; names instead of ids and digests.
    let out = alice.zopp(&["audit", "list", "-w", "acme"]);
    let text = out.assert_success().stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), all.len() + 1, "{text}");
    assert!(lines[0].starts_with("SEQ  TIME"), "{text}");
    let seqs: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let read = lines
        .iter()
        .find(|l| l.contains("secret.read"))
        .expect("the read is listed");
    assert!(read.contains("alice@example.com"), "{read}");
    assert!(read.contains("acme/api/dev"), "{read}");
    assert!(read.contains("API_KEY@1"), "{read}");
    assert!(
        !lines.iter().any(|l| is_long_hex_or_uuid(l)),
        "no full ids or digests:\n{text}"
    );
    assert!(
        lines.iter().all(|l| l.len() < 120),
        "narrow columns:\n{text}"
    );

    // --limit: the newest N, and a note that there are more; JSON keeps the newest N in order.
    let out = alice.zopp(&["audit", "list", "-w", "acme", "--limit", "2"]);
    let text = out.assert_success().stdout();
    assert_eq!(text.lines().count(), 3, "{text}");
    let first: Vec<u64> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    // Listing is audited too, so the newest entries may be newer than `all`.
    assert!(
        first[0] > first[1] && first[1] >= all.last().unwrap().seq,
        "{text}"
    );
    out.assert_stderr_contains("the newest 2 of ");
    let two: Vec<AuditRow> = serde_json::from_slice(
        &alice
            .zopp(&[
                "audit", "list", "-w", "acme", "--limit", "2", "--output", "json",
            ])
            .assert_success()
            .output
            .stdout,
    )
    .expect("JSON");
    assert_eq!(two.len(), 2);
    assert!(two[0].seq < two[1].seq && two[1].seq > all.last().unwrap().seq);

    // Inside a repository whose zopp.toml names the workspace, `audit list` without -w is
    // still the server chain, and says so.
    std::fs::write(
        alice.cwd.path().join("zopp.toml"),
        "[defaults]\nworkspace = \"acme\"\n",
    )
    .expect("zopp.toml");
    let out = alice.zopp(&["audit", "list", "--output", "json"]);
    let server: Vec<AuditRow> =
        serde_json::from_slice(&out.assert_success().output.stdout).expect("JSON");
    let actions: Vec<&str> = server.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["invite.create", "principal.join"]);
    alice
        .zopp(&["audit", "list"])
        .assert_success()
        .assert_stderr_contains("pass -w acme for that workspace's");
}

/// Runs `zopp ARGS` as `user` but without ZOPP_SERVER, as on a fresh machine.
fn without_server(user: &TestUser, args: &[&str], env: &[(&str, &str)]) -> TestOutput {
    let mut cmd = user.cmd(args);
    cmd.env_remove("ZOPP_SERVER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    TestOutput::run(cmd, None)
}

#[test]
fn invite_and_device_codes_carry_their_server() {
    let (server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "K", "v"]))
        .assert_success();

    // A server invite with --url: joining needs no --server.
    let out = server.admin(&[
        "invite",
        "create",
        "--url",
        &server.url(),
        "--output",
        "json",
    ]);
    let json = out.assert_success().json();
    let token = json["token"].as_str().expect("token").to_owned();
    assert_eq!(json["server"], server.url().as_str());
    assert!(token.starts_with("zinv_") && token.contains('.'), "{token}");
    let carol = TestUser::new(&server);
    without_server(&carol, &["join", &token, "carol@example.com"], &[]).assert_success();
    let who = without_server(&carol, &["whoami", "--output", "json"], &[]);
    assert_eq!(who.assert_success().json()["server"], server.url().as_str());
    // A bad --url is refused before anything is created.
    server
        .admin(&["invite", "create", "--url", "zopp.example.com"])
        .assert_exit_code(1);

    // A workspace invite carries the inviter's server.
    let out = alice.zopp(&[
        "invite", "create", "-w", "acme", "--role", "read", "--output", "json",
    ]);
    let code = out.assert_success().json()["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert!(code.starts_with("zwi_") && code.contains('.'), "{code}");
    let bob = TestUser::new(&server);
    without_server(&bob, &["join", &code, "bob@example.com"], &[]).assert_success();
    let out = without_server(&bob, &with_env(&["secret", "get", "K"]), &[]);
    assert_eq!(out.assert_success().stdout(), "v\n");

    // A device code too.
    let pass = [("ZOPP_PASSPHRASE", "correct horse battery staple")];
    let out = alice.zopp_env(
        &[
            "principal",
            "export",
            "--name",
            "laptop-2",
            "--output",
            "json",
        ],
        &pass,
    );
    let device = out.assert_success().json()["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert!(
        device.starts_with("zdev_") && device.contains('.'),
        "{device}"
    );
    let laptop = TestUser::new(&server);
    without_server(&laptop, &["principal", "import", &device], &pass).assert_success();
    let out = without_server(&laptop, &with_env(&["secret", "get", "K"]), &pass);
    assert_eq!(out.assert_success().stdout(), "v\n");

    // A damaged address part is named, exit 2.
    let damaged = format!("{}.!!", code.split('.').next().expect("code part"));
    let dave = TestUser::new(&server);
    without_server(&dave, &["join", &damaged, "dave@example.com"], &[])
        .assert_exit_code(2)
        .assert_stderr_contains("the server address part of the code is damaged");
}

/// A workspace invite code for `role` in `acme`.
fn invite(admin: &TestUser, role: &str) -> String {
    let out = admin.zopp(&[
        "invite", "create", "-w", "acme", "--role", role, "--output", "json",
    ]);
    out.assert_success().json()["code"]
        .as_str()
        .expect("code")
        .to_owned()
}

fn principal_of(user: &TestUser) -> String {
    user.zopp(&["whoami", "--output", "json"])
        .assert_success()
        .json()["principal_id"]
        .as_str()
        .expect("principal id")
        .to_owned()
}

/// `zopp member remove --output json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRemoved {
    email: String,
    workspace: String,
    removed: Vec<serde_json::Value>,
    not_removed: Vec<NotDone>,
    principals: Vec<String>,
    readable: Vec<Readable>,
    rotated: Vec<serde_json::Value>,
    not_rotated: Vec<NotDone>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotDone {
    scope: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Readable {
    environment: String,
    secrets: Option<Vec<String>>,
}

#[test]
fn member_remove_takes_every_grant_and_rotates_only_what_it_may() {
    let (server, alice) = start();
    alice
        .zopp(&["environment", "create", "prod", "-w", "acme", "-p", "api"])
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "set", "DEV_KEY", "d"]))
        .assert_success();
    alice
        .zopp(&[
            "secret", "set", "PROD_KEY", "p", "-w", "acme", "-p", "api", "-e", "prod",
        ])
        .assert_success();
    // bob: read on the workspace, and write on prod through a second, narrower grant.
    let bob = TestUser::new(&server);
    bob.zopp(&["join", &invite(&alice, "read"), "bob@example.com"])
        .assert_success();
    alice
        .zopp(&[
            "permission",
            "set",
            "--user",
            "bob@example.com",
            "--role",
            "write",
            "-w",
            "acme",
            "-p",
            "api",
            "-e",
            "prod",
        ])
        .assert_success();
    let bob_device = principal_of(&bob);

    let out = alice.zopp(&[
        "member",
        "remove",
        "bob@example.com",
        "-w",
        "acme",
        "--output",
        "json",
    ]);
    let done: MemberRemoved =
        serde_json::from_slice(&out.assert_success().output.stdout).expect("member remove JSON");
    assert_eq!(
        (done.email.as_str(), done.workspace.as_str()),
        ("bob@example.com", "acme")
    );
    assert_eq!(done.removed.len(), 2, "{done:?}");
    assert!(done.not_removed.is_empty());
    assert_eq!(done.principals, [bob_device]);
    let mut readable: Vec<(String, Vec<String>)> = done
        .readable
        .iter()
        .map(|r| {
            (
                r.environment.clone(),
                r.secrets.clone().expect("alice lists them"),
            )
        })
        .collect();
    readable.sort();
    assert_eq!(
        readable,
        [
            ("acme/api/dev".to_owned(), vec!["DEV_KEY".to_owned()]),
            ("acme/api/prod".to_owned(), vec!["PROD_KEY".to_owned()]),
        ]
    );
    // Without a terminal and without --rotate: nothing rotated, said plainly, exit 0. The
    // workspace rotation covers prod, so only the workspace is named.
    assert!(done.rotated.is_empty());
    assert_eq!(done.not_rotated.len(), 1, "{:?}", done.not_rotated);
    assert_eq!(done.not_rotated[0].scope, "acme");
    assert!(done.not_rotated[0]
        .reason
        .contains("zopp workspace rotate-key -w acme"));
    // Without any grant the workspace is hidden from him.
    bob.zopp(&with_env(&["secret", "get", "DEV_KEY"]))
        .assert_exit_code(3);
    bob.zopp(&[
        "secret", "get", "PROD_KEY", "-w", "acme", "-p", "api", "-e", "prod",
    ])
    .assert_exit_code(3);
    // Nothing left to remove: exit 3 naming where to look.
    alice
        .zopp(&["member", "remove", "bob@example.com", "-w", "acme"])
        .assert_exit_code(3)
        .assert_stderr_contains("bob@example.com holds no grant in workspace 'acme'");

    // carol: read on the project; removed with --rotate, the project's keys are rotated.
    let carol = TestUser::new(&server);
    carol
        .zopp(&["join", &invite(&alice, "read"), "carol@example.com"])
        .assert_success();
    // The project grant first: a user who shares no workspace with alice any more is one
    // alice's server will not look up.
    alice
        .zopp(&[
            "permission",
            "set",
            "--user",
            "carol@example.com",
            "--role",
            "read",
            "-w",
            "acme",
            "-p",
            "api",
        ])
        .assert_success();
    alice
        .zopp(&[
            "permission",
            "remove",
            "--user",
            "carol@example.com",
            "-w",
            "acme",
            "--no-rotate",
        ])
        .assert_success();
    let out = alice.zopp(&[
        "member",
        "remove",
        "carol@example.com",
        "-w",
        "acme",
        "--rotate",
        "--output",
        "json",
    ]);
    let done: MemberRemoved =
        serde_json::from_slice(&out.assert_success().output.stdout).expect("JSON");
    assert_eq!(done.rotated.len(), 1, "{done:?}");
    assert_eq!(done.rotated[0]["scope"], "acme/api");
    assert!(done.not_rotated.is_empty());
}

#[test]
fn an_admin_revokes_a_members_device_only_where_they_administer_everything() {
    let (server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "K", "v"]))
        .assert_success();
    let bob = TestUser::new(&server);
    bob.zopp(&["join", &invite(&alice, "read"), "bob@example.com"])
        .assert_success();
    let bob_device = principal_of(&bob);
    alice
        .zopp(&["principal", "revoke", &bob_device, "--no-rotate"])
        .assert_success();
    bob.zopp(&with_env(&["secret", "get", "K"]))
        .assert_exit_code(5);

    // carol also has a workspace of her own: alice may not revoke her device.
    let carol = TestUser::new(&server);
    carol
        .zopp(&["join", &invite(&alice, "read"), "carol@example.com"])
        .assert_success();
    carol
        .zopp(&["workspace", "create", "carols"])
        .assert_success();
    let carol_device = principal_of(&carol);
    alice
        .zopp(&["principal", "revoke", &carol_device, "--no-rotate"])
        .assert_exit_code(4)
        .assert_stderr_contains("zopp member remove EMAIL -w WORKSPACE");
    carol.zopp(&["workspace", "list"]).assert_success();
}

#[test]
fn new_passphrases_must_be_strong_enough() {
    let server = TestServer::start();
    let weak = TestUser::new(&server);
    weak.zopp_env(
        &["join", &server.invite(), "weak@example.com"],
        &[("ZOPP_PASSPHRASE", "abc")],
    )
    .assert_exit_code(2)
    .assert_stderr_contains(
        "error: the passphrase is too short (3 characters): use at least 12, e.g. four random words",
    );
    assert!(!weak.home.path().join("principal.key").exists());
    let strong = TestUser::new(&server);
    strong
        .zopp_env(
            &["join", &server.invite(), "strong@example.com"],
            &[("ZOPP_PASSPHRASE", "correct horse battery staple")],
        )
        .assert_success();
    // A device transfer passphrase is new too.
    let plain = TestUser::joined(&server, "plain@example.com");
    plain
        .zopp_env(
            &["principal", "export", "--name", "second"],
            &[("ZOPP_PASSPHRASE", "aaaaaaaaaaaaaaaa")],
        )
        .assert_exit_code(2)
        .assert_stderr_contains("repeats too few characters");
}

#[test]
fn a_token_with_one_changed_character_is_called_invalid() {
    let (_server, alice) = start();
    alice
        .zopp(&with_env(&["secret", "set", "K", "v"]))
        .assert_success();
    let out = alice.zopp(&[
        "principal",
        "create-service",
        "ci",
        "-w",
        "acme",
        "-p",
        "api",
        "-e",
        "dev",
        "--role",
        "read",
        "--output",
        "json",
    ]);
    let token = out.assert_success().json()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let nobody = TestUser::new(&_server);
    let get = |t: &str| nobody.zopp_env(&with_env(&["secret", "get", "K"]), &[("ZOPP_TOKEN", t)]);
    assert_eq!(get(&token).assert_success().stdout(), "v\n");
    // One character of the key share changed: exit 2, "damaged", never a grant problem.
    let mut bytes = token.clone().into_bytes();
    let i = 95;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let damaged = String::from_utf8(bytes).expect("ascii");
    let out = get(&damaged);
    out.assert_exit_code(2)
        .assert_stderr_contains("ZOPP_TOKEN is not a valid principal token (its key share does not match the principal's key: the token is damaged or mistyped");
    assert!(!out.stderr().contains("grant"), "{}", out.stderr());
    // Malformed (cut short): exit 2 as well.
    get(&token[..50]).assert_exit_code(2);
}
