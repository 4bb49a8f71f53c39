//! What zopp does to protect keys on the machine it runs on, end to end on the real binaries:
//! a key file is never written unencrypted unless the user said so, and a zopp process holding
//! keys cannot dump core (while the command `zopp run` starts keeps the limit zopp inherited).

use std::process::Command;

use zopp_tests::{bin, TestOutput, TestServer, TestUser};

/// `zopp join` for `u` without a terminal and without the test kit's `ZOPP_NO_PASSPHRASE`.
fn join(
    u: &TestUser,
    invite: &str,
    email: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> TestOutput {
    let mut args = vec!["join", invite, email];
    args.extend_from_slice(extra);
    let mut cmd = u.cmd(&args);
    cmd.env_remove("ZOPP_NO_PASSPHRASE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    TestOutput::run(cmd, None)
}

#[test]
fn without_a_terminal_a_key_file_is_not_written_unencrypted_silently() {
    let server = TestServer::start();
    let invite = server.invite();
    let u = TestUser::new(&server);
    let key = u.home.path().join("principal.key");

    // Neither a passphrase nor --no-passphrase: refused before the invite is spent.
    join(&u, &invite, "a@example.com", &[], &[])
        .assert_exit_code(2)
        .assert_stderr_contains(
            "error: no passphrase for the new key file: stdin is not a terminal to ask for one",
        )
        .assert_stderr_contains(
            "hint: set ZOPP_PASSPHRASE to protect the key, or pass --no-passphrase",
        );
    assert!(!key.exists());
    // An empty ZOPP_PASSPHRASE is not a way of saying "none".
    join(
        &u,
        &invite,
        "a@example.com",
        &[],
        &[("ZOPP_PASSPHRASE", "")],
    )
    .assert_exit_code(2)
    .assert_stderr_contains("ZOPP_PASSPHRASE is set but empty");
    assert!(!key.exists());

    // A passphrase seals the key file.
    join(
        &u,
        &invite,
        "a@example.com",
        &[],
        &[("ZOPP_PASSPHRASE", "correct horse battery")],
    )
    .assert_success();
    let sealed = std::fs::read(&key).expect("key file");
    assert!(zopp_crypto::keyfile::decode(&sealed, None).is_err());
    assert!(zopp_crypto::keyfile::decode(&sealed, Some(b"correct horse battery")).is_ok());

    // Saying so explicitly stores it plain, by flag or by ZOPP_NO_PASSPHRASE=1.
    for (email, extra, env) in [
        ("b@example.com", &["--no-passphrase"][..], &[][..]),
        ("c@example.com", &[][..], &[("ZOPP_NO_PASSPHRASE", "1")][..]),
    ] {
        let v = TestUser::new(&server);
        join(&v, &server.invite(), email, extra, env).assert_success();
        let plain = std::fs::read(v.home.path().join("principal.key")).expect("key file");
        assert!(zopp_crypto::keyfile::decode(&plain, None).is_ok());
    }
}

#[test]
fn zopp_cannot_dump_core_and_its_child_keeps_the_inherited_limit() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    // Start zopp with a soft core limit of 4096 blocks; the child reports its own limit and
    // zopp's (its parent's) from /proc.
    let mut cmd = Command::new("sh");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ZOPP_HOME", alice.home.path())
        .env("ZOPP_SERVER", &alice.server)
        .env("NO_COLOR", "1")
        .current_dir(alice.cwd.path())
        .args([
            "-c",
            "ulimit -S -c 4096 && exec \"$0\" \"$@\"",
            bin("zopp").to_str().expect("utf-8 path"),
            "run",
            "-w",
            "acme",
            "-p",
            "api",
            "-e",
            "dev",
            "--",
            "sh",
            "-c",
            "echo \"child $(ulimit -S -c)\"; grep 'Max core file size' /proc/$PPID/limits",
        ]);
    let out = TestOutput::run(cmd, None);
    let text = out.assert_success().stdout();
    assert!(text.contains("child 4096"), "{text}");
    let zopp_limit: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("zopp's limits")
        .split_whitespace()
        .collect();
    // "Max core file size  <soft>  <hard>  bytes"
    assert_eq!(zopp_limit[4], "0", "zopp's soft core limit: {text}");
}
