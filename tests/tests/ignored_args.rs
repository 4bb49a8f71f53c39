//! A command line that zopp would carry out only in part is refused whole: exit 2, a message
//! naming the argument or flag that would have been ignored, a hint, and nothing written.
//! `zopp secret set X v Y=w` used to exit 0 having set X alone.

use zopp_tests::{TestServer, TestUser};

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

/// Names of the secrets in acme/api/dev.
fn names(user: &TestUser) -> Vec<String> {
    let list = user.zopp(&with_env(&["secret", "list", "--output", "json"]));
    list.assert_success()
        .json()
        .as_array()
        .expect("list is an array")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect()
}

fn refused(user: &TestUser, args: &[&str], needle: &str) {
    let out = user.zopp(args);
    out.assert_exit_code(2)
        .assert_stderr_contains(needle)
        .assert_stderr_contains("hint: ");
}

#[test]
fn secret_set_refuses_to_mix_its_two_forms_and_writes_nothing() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let file = alice.cwd.path().join("value");
    std::fs::write(&file, b"from-file").expect("write value file");
    let file = file.to_str().expect("utf-8 path");

    let out = alice.zopp(&with_env(&["secret", "set", "X", "v", "Y=w"]));
    out.assert_exit_code(2);
    let err = out.stderr();
    assert!(
        err.starts_with(
            "error: 'Y=w' would be ignored: `zopp secret set X VALUE` sets one secret\n"
        ),
        "{err}"
    );
    assert!(err.contains("hint: to set several secrets in one write, give each as KEY=VALUE: `zopp secret set A=1 B=2`"), "{err}");

    // The same through stdin, with a condition, and with several extra pairs.
    let out = alice.zopp_stdin(&with_env(&["secret", "set", "X", "-", "Y=w"]), b"v");
    out.assert_exit_code(2)
        .assert_stderr_contains("'Y=w' would be ignored");
    refused(
        &alice,
        &with_env(&["secret", "set", "X", "v", "Y=w", "--if-env-version", "0"]),
        "'Y=w' would be ignored",
    );
    refused(
        &alice,
        &with_env(&["secret", "set", "X", "v", "Y=w", "Z=u"]),
        "'Y=w' would be ignored",
    );
    // A pair form with a flag only the one-secret form reads.
    refused(
        &alice,
        &with_env(&["secret", "set", "X=1", "--file", file]),
        "--file is ignored with KEY=VALUE arguments",
    );
    refused(
        &alice,
        &with_env(&["secret", "set", "X=1", "Y=2", "--if-version", "0"]),
        "--if-version 0 is ignored with KEY=VALUE arguments",
    );
    assert!(names(&alice).is_empty(), "nothing may be written");

    // Each form on its own still works.
    alice
        .zopp(&with_env(&["secret", "set", "X", "v"]))
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "set", "Y", "--file", file]))
        .assert_success();
    alice
        .zopp(&with_env(&["secret", "set", "A=1", "B=x=y"]))
        .assert_success();
    // A value may itself contain '=': the first argument names the form.
    alice
        .zopp(&with_env(&["secret", "set", "C", "k=v"]))
        .assert_success();
    assert_eq!(names(&alice), ["A", "B", "C", "X", "Y"]);
    let get = |n: &str| {
        alice
            .zopp(&with_env(&["secret", "get", n]))
            .assert_success()
            .stdout()
    };
    assert_eq!(get("B"), "x=y\n");
    assert_eq!(get("C"), "k=v\n");
    assert_eq!(get("Y"), "from-file\n");
}

#[test]
fn scope_flags_a_command_would_ignore_are_refused() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");

    // An invite admits to the whole workspace: -e must not look as if it narrowed it.
    let out = alice.zopp(&["invite", "create", "-w", "acme", "-p", "api", "-e", "dev"]);
    out.assert_exit_code(2);
    assert!(
        out.stderr().starts_with(
            "error: `zopp invite create` would ignore -p/--project: it works on a whole workspace (-w)\n"
        ),
        "{}",
        out.stderr()
    );
    out.assert_stderr_contains("zopp permission set --user EMAIL");
    let invites = alice.zopp(&["invite", "list", "-w", "acme", "--output", "json"]);
    assert_eq!(invites.assert_success().json(), serde_json::json!([]));

    let cases: &[(&[&str], &str)] = &[
        (&["whoami", "-p", "api"], "would ignore -p/--project"),
        (
            &["workspace", "create", "beta", "-w", "acme"],
            "`zopp workspace create` would ignore -w/--workspace",
        ),
        (
            &["project", "list", "-w", "acme", "-e", "dev"],
            "would ignore -e/--environment",
        ),
        (
            &[
                "environment",
                "create",
                "qa",
                "-w",
                "acme",
                "-p",
                "api",
                "-e",
                "dev",
            ],
            "would ignore -e/--environment: it works on a whole project (-w -p)",
        ),
        (
            &["audit", "verify", "-w", "acme", "-p", "api"],
            "`zopp audit` would ignore -p/--project",
        ),
        (
            &["principal", "fingerprint", "-w", "acme"],
            "would ignore -w/--workspace",
        ),
    ];
    for (args, needle) in cases {
        refused(&alice, args, needle);
    }
    let ws = alice.zopp(&["workspace", "list", "--output", "json"]);
    assert_eq!(
        ws.assert_success().json().as_array().expect("list").len(),
        1
    );
    let envs = alice.zopp(&[
        "environment",
        "list",
        "-w",
        "acme",
        "-p",
        "api",
        "--output",
        "json",
    ]);
    assert_eq!(
        envs.assert_success().json().as_array().expect("list").len(),
        1
    );

    // Defaults from the environment apply wherever they fit and are not refused elsewhere.
    alice
        .zopp_env(
            &["project", "list", "-w", "acme"],
            &[("ZOPP_ENVIRONMENT", "dev"), ("ZOPP_PROJECT", "api")],
        )
        .assert_success();
    // -e twice is for `zopp diff` only.
    refused(
        &alice,
        &[
            "secret", "list", "-w", "acme", "-p", "api", "-e", "dev", "-e", "prod",
        ],
        "-e/--environment given 2 times",
    );
}

#[test]
fn flags_that_do_nothing_in_the_mode_given_are_refused() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&with_env(&["secret", "set", "K", "v"]))
        .assert_success();

    // k8s naming flags on another export format.
    refused(
        &alice,
        &with_env(&["secret", "export", "--format", "dotenv", "--name", "api"]),
        "--name would be ignored: it names the Secret of --format k8s",
    );
    refused(
        &alice,
        &with_env(&[
            "secret",
            "export",
            "--format",
            "json",
            "--namespace",
            "prod",
        ]),
        "--namespace would be ignored",
    );
    let k8s = alice.zopp(&with_env(&[
        "secret",
        "export",
        "--format",
        "k8s",
        "--name",
        "api",
        "--namespace",
        "prod",
    ]));
    assert!(k8s.assert_success().stdout().contains("namespace: prod"));

    // --watch-grace only means something with --watch (clap's own usage error, exit 2).
    let out = alice.zopp(&with_env(&["run", "--watch-grace", "5s", "--", "true"]));
    out.assert_exit_code(2).assert_stderr_contains("--watch");
    // A name both kept and left out.
    refused(
        &alice,
        &with_env(&["run", "--only", "K", "--exclude", "K", "--", "true"]),
        "'K' is in both --only and --exclude",
    );

    // --rotate on revoking the identity in use cannot be honoured: refused before the revoke.
    let me = alice.zopp(&["whoami", "--output", "json"]).json();
    let id = me["principal_id"].as_str().expect("principal id");
    refused(
        &alice,
        &["principal", "revoke", id, "--rotate"],
        "--rotate cannot be honoured",
    );
    alice.zopp(&["whoami"]).assert_success();
}
