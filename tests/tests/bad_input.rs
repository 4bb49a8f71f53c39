//! Bad input gets a clear error, the exit code DESIGN.md §8 names, and changes nothing (#2).

use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(
    unknown_scopes_and_secrets_exit_3,
    duplicate_names_exit_6_and_change_nothing,
    invalid_names_are_refused_before_any_network_call,
    oversized_value_is_refused_cleanly,
    unreachable_server_exits_7_naming_the_address,
    no_identity_exits_5_with_a_hint,
    invites_are_single_use_and_bad_tokens_are_refused,
);

fn unknown_scopes_and_secrets_exit_3(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let cases: &[&[&str]] = &[
        &["secret", "get", "X", "-w", "nope", "-p", "api", "-e", "dev"],
        &[
            "secret", "get", "X", "-w", "acme", "-p", "nope", "-e", "dev",
        ],
        &[
            "secret", "get", "X", "-w", "acme", "-p", "api", "-e", "nope",
        ],
        &[
            "secret", "get", "MISSING", "-w", "acme", "-p", "api", "-e", "dev",
        ],
        &[
            "secret", "delete", "MISSING", "-w", "acme", "-p", "api", "-e", "dev",
        ],
        &["project", "list", "-w", "nope"],
        &["environment", "list", "-w", "acme", "-p", "nope"],
    ];
    for c in cases {
        let out = alice.zopp(c);
        out.assert_exit_code(3);
        assert!(
            out.stderr().contains("not found"),
            "{:?}: {}",
            c,
            out.stderr()
        );
    }
    let out = alice.zopp(&["secret", "get", "X", "-w", "nope", "-p", "api", "-e", "dev"]);
    out.assert_stderr_contains("'nope'");
}

fn duplicate_names_exit_6_and_change_nothing(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&["workspace", "create", "acme"])
        .assert_exit_code(6);
    alice
        .zopp(&["project", "create", "api", "-w", "acme"])
        .assert_exit_code(6);
    alice
        .zopp(&["environment", "create", "dev", "-w", "acme", "-p", "api"])
        .assert_exit_code(6);
    let ws = alice
        .zopp(&["workspace", "list", "--output", "json"])
        .json();
    assert_eq!(ws.as_array().unwrap().len(), 1);
}

fn invalid_names_are_refused_before_any_network_call(backend: Backend) {
    // Point at a port nothing listens on: a refusal with exit 2 (not 7) proves no call was made.
    let server = TestServer::start_on(backend);
    let mut alice = TestUser::joined(&server, "alice@example.com");
    alice.server = "http://127.0.0.1:9".into();
    let long = "A".repeat(257);
    let bad: &[&str] = &["", "has space", "tab\there", "ctl\u{7}", &long, "A=B"];
    for name in bad {
        let out = alice.zopp(&[
            "secret", "set", name, "v", "-w", "acme", "-p", "api", "-e", "dev",
        ]);
        out.assert_exit_code(2);
    }
    for name in ["", "a b", "a/b", &long] {
        alice
            .zopp(&["workspace", "create", name])
            .assert_exit_code(2);
    }
}

fn oversized_value_is_refused_cleanly(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let big = vec![b'x'; 1024 * 1024 + 1];
    let out = alice.zopp_stdin(
        &[
            "secret", "set", "BIG", "-", "-w", "acme", "-p", "api", "-e", "dev",
        ],
        &big,
    );
    out.assert_exit_code(2);
    out.assert_stderr_contains("1 MiB");
    // Exactly the limit is fine.
    let max = vec![b'y'; 1024 * 1024];
    alice
        .zopp_stdin(
            &[
                "secret", "set", "BIG", "-", "-w", "acme", "-p", "api", "-e", "dev",
            ],
            &max,
        )
        .assert_success();
    let out = alice.zopp(&[
        "secret", "get", "BIG", "-w", "acme", "-p", "api", "-e", "dev",
    ]);
    assert_eq!(out.assert_success().output.stdout.len(), 1024 * 1024 + 1);
}

fn unreachable_server_exits_7_naming_the_address(backend: Backend) {
    let server = TestServer::start_on(backend);
    let mut alice = TestUser::joined(&server, "alice@example.com");
    alice.server = "http://127.0.0.1:9".into();
    let out = alice.zopp(&["workspace", "list"]);
    out.assert_exit_code(7);
    out.assert_stderr_contains("127.0.0.1:9");
}

fn no_identity_exits_5_with_a_hint(backend: Backend) {
    let server = TestServer::start_on(backend);
    let nobody = TestUser::new(&server);
    let out = nobody.zopp(&["workspace", "list"]);
    out.assert_exit_code(5);
    out.assert_stderr_contains("zopp join");
}

fn invites_are_single_use_and_bad_tokens_are_refused(backend: Backend) {
    let server = TestServer::start_on(backend);
    let token = server.invite();
    TestUser::new(&server)
        .zopp(&["join", &token, "a@example.com"])
        .assert_success();
    let again = TestUser::new(&server).zopp(&["join", &token, "b@example.com"]);
    assert_ne!(again.code(), 0);
    again.assert_stderr_contains("used");
    let bad = TestUser::new(&server).zopp(&["join", "zinv_garbage", "c@example.com"]);
    assert_ne!(bad.code(), 0);
    // A joined identity is never overwritten.
    let u = TestUser::joined(&server, "d@example.com");
    u.zopp(&["join", &server.invite(), "d2@example.com"])
        .assert_exit_code(6);
}
