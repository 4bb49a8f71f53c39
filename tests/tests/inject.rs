//! Issue #4, `zopp inject -i TEMPLATE [-o OUT]`, end to end on the real binaries: local and
//! cross-environment references, `$${` literals, a private output file, and errors that write
//! nothing.

use std::os::unix::fs::PermissionsExt;

use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(
    renders_references_to_stdout_and_to_a_private_file,
    unresolved_references_write_nothing,
    references_into_other_environments_need_allow_ref,
);

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

fn setup(backend: Backend) -> (TestServer, TestUser) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&["environment", "create", "shared", "-w", "acme", "-p", "api"])
        .assert_success();
    alice
        .zopp_stdin(
            &with_env(&["secret", "import", "--format", "dotenv"]),
            b"USER=app\nPASSWORD='p@ss ${w0rd}'\nURL=postgres://${USER}@${zopp://api/shared/HOST}/db\n",
        )
        .assert_success();
    alice
        .zopp(&[
            "secret",
            "set",
            "HOST",
            "db.internal",
            "-w",
            "acme",
            "-p",
            "api",
            "-e",
            "shared",
        ])
        .assert_success();
    (server, alice)
}

const TEMPLATE: &str = "url: ${URL}\nhost: ${zopp://api/shared/HOST}\nliteral: $${URL}\ncost: $5\n";
const RENDERED: &str =
    "url: postgres://app@db.internal/db\nhost: db.internal\nliteral: ${URL}\ncost: $5\n";

fn renders_references_to_stdout_and_to_a_private_file(backend: Backend) {
    let (_server, alice) = setup(backend);
    let out = alice.zopp_stdin(
        &with_env(&["inject", "--allow-ref", "api/shared", "-i", "-"]),
        TEMPLATE.as_bytes(),
    );
    assert_eq!(out.assert_success().stdout(), RENDERED);

    let template = alice.cwd.path().join("config.tpl");
    std::fs::write(&template, TEMPLATE).expect("write template");
    let target = alice.cwd.path().join("config.yaml");
    alice
        .zopp(&with_env(&[
            "inject",
            "--allow-ref",
            "api/shared",
            "-i",
            template.to_str().expect("utf-8 path"),
            "-o",
            target.to_str().expect("utf-8 path"),
        ]))
        .assert_success();
    assert_eq!(std::fs::read_to_string(&target).expect("written"), RENDERED);
    let mode = std::fs::metadata(&target)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

fn unresolved_references_write_nothing(backend: Backend) {
    let (_server, alice) = setup(backend);
    let target = alice.cwd.path().join("out.txt");
    std::fs::write(&target, "previous contents").expect("write");
    let target_arg = target.to_str().expect("utf-8 path");
    let cases: [(&str, i32, &str); 4] = [
        (
            "a: ${NOPE}\n",
            1,
            "unresolved reference ${NOPE} in the template",
        ),
        (
            "a: ${PASSWORD}\n",
            1,
            "unresolved reference ${w0rd} in PASSWORD (via the template -> PASSWORD)",
        ),
        (
            "a: ${zopp://api/missing/K}\n",
            3,
            "environment 'missing' not found",
        ),
        ("a: ${unterminated\n", 1, "unterminated reference"),
    ];
    for (template, code, message) in cases {
        let out = alice.zopp_stdin(
            &with_env(&[
                "inject",
                "--allow-ref",
                "api/missing",
                "-i",
                "-",
                "-o",
                target_arg,
            ]),
            template.as_bytes(),
        );
        out.assert_exit_code(code).assert_stderr_contains(message);
        assert!(out.stdout().is_empty());
        assert_eq!(
            std::fs::read_to_string(&target).expect("still there"),
            "previous contents",
            "{template}"
        );
    }
    // A cycle names its chain.
    alice
        .zopp(&with_env(&["secret", "set", "USER", "${URL}"]))
        .assert_success();
    alice
        .zopp_stdin(&with_env(&["inject", "-i", "-"]), b"${URL}")
        .assert_exit_code(1)
        .assert_stderr_contains("reference cycle: URL -> USER -> URL");
}

/// A reference into another environment, in the template or inside a secret the template uses,
/// is refused without `--allow-ref` for that environment: exit 4, nothing written.
fn references_into_other_environments_need_allow_ref(backend: Backend) {
    let (_server, alice) = setup(backend);
    let target = alice.cwd.path().join("out.txt");
    std::fs::write(&target, "previous contents").expect("write");
    let target_arg = target.to_str().expect("utf-8 path");
    // `${URL}` is a dev secret whose value points into api/shared; the second template points
    // there itself.
    for template in ["url: ${URL}\n", "host: ${zopp://api/shared/HOST}\n"] {
        for flags in [&[][..], &["--allow-ref", "api/prod"][..]] {
            let mut args = vec!["inject"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["-i", "-", "-o", target_arg]);
            let out = alice.zopp_stdin(&with_env(&args), template.as_bytes());
            out.assert_exit_code(4)
                .assert_stderr_contains("references into api/shared are not allowed here")
                .assert_stderr_contains("--allow-ref api/shared");
            assert_eq!(
                std::fs::read_to_string(&target).expect("still there"),
                "previous contents",
                "{template}"
            );
        }
    }
    // A template using only this environment's own values needs no flag.
    let out = alice.zopp_stdin(&with_env(&["inject", "-i", "-"]), b"user: ${USER}\n");
    assert_eq!(out.assert_success().stdout(), "user: app\n");
    // The allowed case.
    let out = alice.zopp_stdin(
        &with_env(&["inject", "--allow-ref", "api/shared", "-i", "-"]),
        b"url: ${URL}\n",
    );
    assert_eq!(
        out.assert_success().stdout(),
        "url: postgres://app@db.internal/db\n"
    );
}
