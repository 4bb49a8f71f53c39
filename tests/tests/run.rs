//! Issue #4, `zopp run`, end to end on the real binaries: the child's environment and exit
//! code, `--only`/`--exclude`/`--preserve-env`, signal forwarding, masking across split writes
//! and through a pty, references and their errors, `--watch` restarts and `--fallback` when
//! the server is stopped or refuses the principal.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use zopp_tests::{bin, file_contains, on_both_backends, Backend, TestOutput, TestServer, TestUser};

on_both_backends!(
    child_gets_secrets_and_its_exit_code_is_zopps,
    only_exclude_and_preserve_env,
    signals_are_forwarded_to_the_child,
    mask_conceals_values_split_across_writes,
    mask_through_a_pty_keeps_the_terminal,
    references_resolve_across_environments,
    reference_cycles_and_missing_references_are_errors,
    watch_restarts_the_child_with_new_values,
    fallback_runs_from_the_copy_when_the_server_is_stopped,
    fallback_copy_is_removed_when_the_server_refuses_the_principal,
    child_gets_no_zopp_credentials,
    loader_and_startup_variables_are_refused,
);

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

/// `zopp run -w acme -p api -e dev FLAGS -- sh -c SCRIPT`.
fn run_sh<'a>(flags: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut v = with_env(&["run"]);
    v.extend_from_slice(flags);
    v.extend_from_slice(&["--", "sh", "-c", script]);
    v
}

/// A server and alice with `acme/api/dev` holding `secrets`.
fn setup(backend: Backend, secrets: &[(&str, &str)]) -> (TestServer, TestUser) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    for (k, v) in secrets {
        alice
            .zopp_stdin(&with_env(&["secret", "set", k, "-"]), v.as_bytes())
            .assert_success();
    }
    (server, alice)
}

/// A long-running `zopp` whose stdout lines arrive on a channel.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Spawned {
    fn start(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn zopp");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits (bounded) for a line equal to `want`.
    fn wait_for_line(&self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let tail: Vec<_> = seen.iter().rev().take(5).collect();
        panic!("no line {want:?} within {within:?}; last lines: {tail:?}");
    }

    fn signal(&self, sig: Signal) {
        zopp_tests::signal(self.child.id(), sig).expect("signal zopp");
    }

    /// Waits (bounded) for zopp to exit; returns its exit code.
    fn wait(mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("zopp did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn child_gets_secrets_and_its_exit_code_is_zopps(backend: Backend) {
    let (_server, alice) = setup(
        backend,
        &[
            ("A", "alpha value"),
            ("B", "${A}/suffix"),
            ("C", "multi\nline"),
        ],
    );
    let out = alice.zopp(&run_sh(
        &[],
        "printf '%s|%s|%s' \"$A\" \"$B\" \"$C\"; exit 7",
    ));
    out.assert_exit_code(7);
    assert_eq!(out.stdout(), "alpha value|alpha value/suffix|multi\nline");
    // zopp itself prints nothing on success; one round trip fetches everything.
    let out = alice.zopp_env(&run_sh(&[], "exit 0"), &[("ZOPP_DEBUG_RPC_COUNT", "1")]);
    out.assert_success();
    assert_eq!(out.stderr(), "zopp: rpc-count 1\n");
    // Death by a signal is 128 + the signal, like a shell.
    alice
        .zopp(&run_sh(&[], "kill -TERM $$"))
        .assert_exit_code(143);
    // stdin is the child's own.
    let out = alice.zopp_stdin(&run_sh(&[], "read line; echo \"got $line\""), b"hello\n");
    assert_eq!(out.assert_success().stdout(), "got hello\n");
    // A command that does not exist, or cannot be executed.
    let mut args = with_env(&["run"]);
    args.extend_from_slice(&["--", "zopp-no-such-command"]);
    alice
        .zopp(&args)
        .assert_exit_code(127)
        .assert_stderr_contains("command not found");
    let script = alice.cwd.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\n").expect("write");
    let script = script.to_str().expect("utf-8 path");
    let mut args = with_env(&["run"]);
    args.extend_from_slice(&["--", script]);
    alice.zopp(&args).assert_exit_code(126);
    // A run without a command is a usage error.
    alice.zopp(&with_env(&["run"])).assert_exit_code(2);
}

fn only_exclude_and_preserve_env(backend: Backend) {
    let (_server, alice) = setup(backend, &[("A", "from-zopp"), ("B", "bee"), ("C", "sea")]);
    let show = "printf '%s,%s,%s' \"${A-unset}\" \"${B-unset}\" \"${C-unset}\"";
    // A secret wins over a variable zopp inherited, unless --preserve-env.
    let out = alice.zopp_env(&run_sh(&[], show), &[("A", "inherited")]);
    assert_eq!(out.assert_success().stdout(), "from-zopp,bee,sea");
    let out = alice.zopp_env(&run_sh(&["--preserve-env"], show), &[("A", "inherited")]);
    assert_eq!(out.assert_success().stdout(), "inherited,bee,sea");
    let out = alice.zopp(&run_sh(&["--only", "A,C"], show));
    assert_eq!(out.assert_success().stdout(), "from-zopp,unset,sea");
    let out = alice.zopp(&run_sh(&["--exclude", "B", "--exclude", "C"], show));
    assert_eq!(out.assert_success().stdout(), "from-zopp,unset,unset");
    alice
        .zopp(&run_sh(&["--only", "NOPE"], show))
        .assert_exit_code(3)
        .assert_stderr_contains("NOPE");
    alice
        .zopp(&run_sh(&["--only", "BAD=NAME"], show))
        .assert_exit_code(2);
}

fn signals_are_forwarded_to_the_child(backend: Backend) {
    let (_server, alice) = setup(backend, &[("A", "x")]);
    for (sig, name, code) in [
        (Signal::SIGTERM, "TERM", 42),
        (Signal::SIGINT, "INT", 41),
        (Signal::SIGHUP, "HUP", 43),
        (Signal::SIGUSR1, "USR1", 44),
    ] {
        let marker = alice.cwd.path().join(format!("got-{name}"));
        let script = format!(
            "trap 'echo {name} > \"{}\"; exit {code}' {name}; echo ready; while :; do sleep 0.05; done",
            marker.display()
        );
        let cmd = alice.cmd(&run_sh(&[], &script));
        let zopp = Spawned::start(cmd);
        zopp.wait_for_line("ready", Duration::from_secs(30));
        zopp.signal(sig);
        assert_eq!(zopp.wait(Duration::from_secs(30)), code, "{name}");
        let written = std::fs::read_to_string(&marker).expect("the child's trap ran");
        assert_eq!(written.trim(), name);
    }
}

fn mask_conceals_values_split_across_writes(backend: Backend) {
    let (_server, alice) = setup(
        backend,
        &[("TOKEN", "hunter2-canary-value"), ("SHORT", "abc")],
    );
    // The value leaves the child in two writes with a pause between them.
    let script = "printf 'token: hunter2-'; sleep 0.3; printf 'canary-value!\\n'; \
                  echo \"err $TOKEN\" >&2; echo \"short=$SHORT\"; exit 4";
    let out = alice.zopp(&run_sh(&["--mask"], script));
    out.assert_exit_code(4);
    assert_eq!(out.stdout(), "token: <concealed by zopp>!\nshort=abc\n");
    assert_eq!(out.stderr(), "err <concealed by zopp>\n");
    // Without --mask the child's output is its own.
    let out = alice.zopp(&run_sh(&[], "echo $TOKEN"));
    assert_eq!(out.assert_success().stdout(), "hunter2-canary-value\n");
}

fn mask_through_a_pty_keeps_the_terminal(backend: Backend) {
    let (_server, alice) = setup(backend, &[("TOKEN", "hunter2-canary-value")]);
    // `script` gives zopp a terminal: the child must get one too, and still be masked.
    let zopp = bin("zopp");
    let inner = format!(
        "{} run -w acme -p api -e dev --mask -- sh -c '[ -t 1 ] && echo child-has-a-tty; echo $TOKEN; exit 3'",
        zopp.display()
    );
    // The user's environment (ZOPP_HOME, ZOPP_SERVER…), around `script` instead of `zopp`.
    let template = alice.cmd(&[]);
    let mut script = Command::new("script");
    script
        .args(["-qec", &inner, "/dev/null"])
        .current_dir(alice.cwd.path());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = TestOutput::run(script, None);
    out.assert_exit_code(3);
    let text = out.stdout();
    assert!(text.contains("child-has-a-tty"), "{text:?}");
    assert!(text.contains("<concealed by zopp>"), "{text:?}");
    assert!(!text.contains("hunter2-canary-value"), "{text:?}");
}

fn references_resolve_across_environments(backend: Backend) {
    let (_server, alice) = setup(
        backend,
        &[
            (
                "URL",
                "postgres://${zopp://api/shared/DB_HOST}:5432/${NAME}",
            ),
            ("NAME", "app"),
            ("LITERAL", "$${NOT_A_REF}"),
        ],
    );
    alice
        .zopp(&["environment", "create", "shared", "-w", "acme", "-p", "api"])
        .assert_success();
    alice
        .zopp(&[
            "secret",
            "set",
            "DB_HOST",
            "db.internal",
            "-w",
            "acme",
            "-p",
            "api",
            "-e",
            "shared",
        ])
        .assert_success();
    // Without --allow-ref the reference into api/shared is refused and nothing runs.
    let refused = alice.zopp(&run_sh(&[], "echo ran"));
    refused
        .assert_exit_code(4)
        .assert_stderr_contains("references into api/shared are not allowed here")
        .assert_stderr_contains("hint: pass --allow-ref api/shared");
    assert!(refused.stdout().is_empty(), "the command must not run");
    // Allowing another environment is not allowing this one.
    alice
        .zopp(&run_sh(&["--allow-ref", "api/prod"], "echo ran"))
        .assert_exit_code(4);
    let out = alice.zopp_env(
        &run_sh(
            &["--allow-ref", "api/shared"],
            "printf '%s %s' \"$URL\" \"$LITERAL\"",
        ),
        &[("ZOPP_DEBUG_RPC_COUNT", "1")],
    );
    assert_eq!(
        out.assert_success().stdout(),
        "postgres://db.internal:5432/app ${NOT_A_REF}"
    );
    // One round trip per environment the references reach.
    assert_eq!(out.stderr(), "zopp: rpc-count 2\n");
}

fn reference_cycles_and_missing_references_are_errors(backend: Backend) {
    let (_server, alice) = setup(backend, &[("A", "${B}"), ("B", "x${A}")]);
    let out = alice.zopp(&run_sh(&[], "echo ran"));
    out.assert_exit_code(1);
    assert!(out.stdout().is_empty(), "the command must not run");
    let err = out.stderr();
    assert!(
        err.contains("reference cycle: A -> B -> A")
            || err.contains("reference cycle: B -> A -> B"),
        "{err}"
    );
    alice
        .zopp(&with_env(&["secret", "set", "B", "${MISSING}"]))
        .assert_success();
    alice
        .zopp(&run_sh(&[], "echo ran"))
        .assert_exit_code(1)
        .assert_stderr_contains("unresolved reference ${MISSING} in B (via A -> B)");
    // Into an environment that does not exist: the chain and the missing environment.
    alice
        .zopp(&with_env(&["secret", "set", "B", "${zopp://api/nope/K}"]))
        .assert_success();
    alice
        .zopp(&run_sh(&["--allow-ref", "api/nope"], "echo ran"))
        .assert_exit_code(3)
        .assert_stderr_contains("unresolved reference ${zopp://api/nope/K} in B (via A -> B)");
}

fn watch_restarts_the_child_with_new_values(backend: Backend) {
    let (mut server, alice) = setup(backend, &[("K", "one")]);
    let cmd = alice.cmd(&run_sh(
        &["--watch", "--watch-grace", "5s"],
        "while :; do echo \"v=$K\"; sleep 0.1; done",
    ));
    let zopp = Spawned::start(cmd);
    zopp.wait_for_line("v=one", Duration::from_secs(30));
    alice
        .zopp(&with_env(&["secret", "set", "K", "two"]))
        .assert_success();
    zopp.wait_for_line("v=two", Duration::from_secs(30));
    // Every new value restarts it again.
    alice
        .zopp(&with_env(&["secret", "set", "K", "three"]))
        .assert_success();
    zopp.wait_for_line("v=three", Duration::from_secs(30));
    // The server going away leaves the command running (zopp keeps trying to reconnect).
    server.kill();
    zopp.wait_for_line("v=three", Duration::from_secs(10));
    zopp.wait_for_line("v=three", Duration::from_secs(10));
    zopp.signal(Signal::SIGTERM);
    assert_eq!(zopp.wait(Duration::from_secs(30)), 143);
}

fn fallback_runs_from_the_copy_when_the_server_is_stopped(backend: Backend) {
    let (mut server, alice) = setup(backend, &[("K", "kept-value")]);
    let copy = alice.cwd.path().join("dev.fallback");
    let copy_arg = copy.to_str().expect("utf-8 path");
    let out = alice.zopp(&run_sh(&["--fallback", copy_arg], "echo \"$K\""));
    assert_eq!(out.assert_success().stdout(), "kept-value\n");
    assert!(out.stderr().is_empty(), "{}", out.stderr());
    let mode = std::fs::metadata(&copy)
        .expect("copy written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !file_contains(&copy, b"kept-value"),
        "the copy is encrypted"
    );

    server.kill();
    // Without --fallback an outage is exit 7.
    alice.zopp(&run_sh(&[], "echo \"$K\"")).assert_exit_code(7);
    let out = alice.zopp(&run_sh(&["--fallback", copy_arg], "echo \"$K\""));
    assert_eq!(out.assert_success().stdout(), "kept-value\n");
    out.assert_stderr_contains("running from the fallback copy")
        .assert_stderr_contains("ago");
    // Too old for --fallback-max-age.
    std::thread::sleep(Duration::from_millis(20));
    alice
        .zopp(&run_sh(
            &["--fallback", copy_arg, "--fallback-max-age", "10ms"],
            "echo \"$K\"",
        ))
        .assert_exit_code(1)
        .assert_stderr_contains("older than --fallback-max-age");
    // --fallback-only never needs the server, and says nothing.
    let out = alice.zopp(&run_sh(
        &["--fallback", copy_arg, "--fallback-only"],
        "echo \"$K\"",
    ));
    assert_eq!(out.assert_success().stdout(), "kept-value\n");
    assert!(out.stderr().is_empty(), "{}", out.stderr());
    // No copy and no server: the outage is the error.
    let none = alice.cwd.path().join("none");
    alice
        .zopp(&run_sh(
            &["--fallback", none.to_str().expect("utf-8")],
            "true",
        ))
        .assert_exit_code(7);
}

fn fallback_copy_is_removed_when_the_server_refuses_the_principal(backend: Backend) {
    let (_server, alice) = setup(backend, &[("K", "kept-value")]);
    let copy = alice.cwd.path().join("dev.fallback");
    let copy_arg = copy.to_str().expect("utf-8 path");
    alice
        .zopp(&run_sh(&["--fallback", copy_arg], "true"))
        .assert_success();
    assert!(copy.exists());
    // A server that does not (or no longer does) accept this principal answers
    // UNAUTHENTICATED: the copy must go, and nothing runs.
    let other = TestServer::start_on(backend);
    let out = alice.zopp_env(
        &run_sh(&["--fallback", copy_arg], "echo ran"),
        &[("ZOPP_SERVER", other.url())],
    );
    out.assert_exit_code(5)
        .assert_stderr_contains("removed the fallback copy");
    assert!(out.stdout().is_empty());
    assert!(!copy.exists());
}

/// A service token or passphrase zopp was given never reaches the child, unless named with
/// `--allow-env` (a nested zopp client).
fn child_gets_no_zopp_credentials(backend: Backend) {
    let (_server, alice) = setup(backend, &[("A", "alpha")]);
    let script = "printf '%s|%s|%s' \"${ZOPP_TOKEN-unset}\" \"${ZOPP_PASSPHRASE-unset}\" \"$A\"";
    let out = alice.zopp_env(&run_sh(&[], script), &[("ZOPP_PASSPHRASE", "hunter2")]);
    assert_eq!(out.assert_success().stdout(), "unset|unset|alpha");

    let made = alice.zopp(&with_env(&[
        "principal",
        "create-service",
        "ci",
        "--role",
        "read",
        "--output",
        "json",
    ]));
    let token = made.assert_success().json()["token"]
        .as_str()
        .expect("token")
        .to_string();
    let ci_home = tempfile::tempdir().expect("ci home");
    let ci = |flags: &[&str]| {
        let mut cmd = Command::new(bin("zopp"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", ci_home.path())
            .env("ZOPP_TOKEN", &token)
            .env("ZOPP_SERVER", &alice.server)
            .current_dir(ci_home.path())
            .args(run_sh(flags, script));
        TestOutput::run(cmd, None)
    };
    assert_eq!(ci(&[]).assert_success().stdout(), "unset|unset|alpha");
    assert_eq!(
        ci(&["--allow-env", "ZOPP_TOKEN"]).assert_success().stdout(),
        format!("{token}|unset|alpha")
    );
}

/// A secret named like a variable that makes the loader, a shell or an interpreter run code
/// before the command is not injected: exit 4 naming it, the command not started. `--allow-env`
/// lets it through, `--exclude` leaves it out.
fn loader_and_startup_variables_are_refused(backend: Backend) {
    const REFUSED: [&str; 12] = [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "DYLD_INSERT_LIBRARIES",
        "BASH_ENV",
        "ENV",
        "PATH",
        "PROMPT_COMMAND",
        "IFS",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
        "GIT_SSH_COMMAND",
    ];
    let secrets: Vec<(&str, &str)> = REFUSED
        .iter()
        .map(|n| (*n, "/nonexistent/zopp-planted"))
        .chain([("SAFE", "ok")])
        .collect();
    let (_server, alice) = setup(backend, &secrets);
    for name in REFUSED {
        let out = alice.zopp(&run_sh(&["--only", name], "echo ran"));
        out.assert_exit_code(4)
            .assert_stderr_contains(&format!("secret '{name}' names a variable"))
            .assert_stderr_contains(&format!("--allow-env {name}"));
        assert!(out.stdout().is_empty(), "{name}: the command must not run");
    }
    // All at once: still refused, whatever else is there.
    alice.zopp(&run_sh(&[], "echo ran")).assert_exit_code(4);
    // Left out: runs.
    let excluded = REFUSED.join(",");
    let out = alice.zopp(&run_sh(&["--exclude", &excluded], "printf %s \"$SAFE\""));
    assert_eq!(out.assert_success().stdout(), "ok");
    // Named: passed on.
    let out = alice.zopp(&run_sh(
        &[
            "--only",
            "PYTHONSTARTUP,SAFE",
            "--allow-env",
            "PYTHONSTARTUP",
        ],
        "printf '%s %s' \"$PYTHONSTARTUP\" \"$SAFE\"",
    ));
    assert_eq!(
        out.assert_success().stdout(),
        "/nonexistent/zopp-planted ok"
    );
}
