//! TLS end to end with real certificates: the CLI presents client certificates (flags, or
//! `ZOPP_TLS_*` in service-token mode), remembers the CA and client certificate chosen at join,
//! tells TLS failures apart, refuses plaintext to another machine, and the server refuses a key
//! that is not its certificate's before it listens.

use std::process::{Command, Stdio};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use zopp_tests::certs::{Pair, TestCerts};
use zopp_tests::{bin, ServerOptions, TestOutput, TestServer, TestUser};

const SCOPE: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "prod"];

fn with<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(tail);
    v
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// A server with `identity` as its certificate, requiring client certificates from the test CA
/// when `mutual`.
fn tls_server(certs: &TestCerts, identity: &Pair, mutual: bool) -> TestServer {
    let mut extra_args = vec![
        "--tls-cert".into(),
        path(&identity.cert),
        "--tls-key".into(),
        path(&identity.key),
    ];
    let ca_pem = std::fs::read(certs.ca()).expect("CA");
    let mut probe = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(if identity.cert.ends_with("wrong-name.pem") {
            "elsewhere.example"
        } else {
            "localhost"
        });
    if mutual {
        extra_args.extend(["--tls-client-ca".into(), path(&certs.ca())]);
        let c = certs.client();
        probe = probe.identity(Identity::from_pem(
            std::fs::read(&c.cert).expect("client cert"),
            std::fs::read(&c.key).expect("client key"),
        ));
    }
    TestServer::start_with(ServerOptions {
        extra_args,
        tls: Some(probe),
        ..ServerOptions::default()
    })
}

fn tls_args(ca: &std::path::Path, client: Option<&Pair>) -> Vec<String> {
    let mut v = vec!["--tls-ca".to_string(), path(ca)];
    if let Some(c) = client {
        v.extend(["--tls-cert".into(), path(&c.cert)]);
        v.extend(["--tls-key".into(), path(&c.key)]);
    }
    v
}

fn run(user: &TestUser, args: &[&str], extra: &[String]) -> TestOutput {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    user.zopp(&all)
}

#[test]
fn join_remembers_the_ca_and_client_certificate_for_later_commands() {
    let certs = TestCerts::new();
    let server = tls_server(&certs, &certs.server(), true);
    let user = TestUser::new(&server);
    let client = certs.client();
    run(
        &user,
        &["join", &server.invite(), "ops@example.com"],
        &tls_args(&certs.ca(), Some(&client)),
    )
    .assert_success();
    let config = std::fs::read_to_string(user.home.path().join("config.toml")).expect("config");
    assert!(config.contains("[tls]"), "{config}");

    // No TLS flag from here on: the CA and the client certificate come from config.toml.
    user.zopp(&["workspace", "create", "acme"]).assert_success();
    user.zopp(&["project", "create", "api", "-w", "acme"])
        .assert_success();
    user.zopp(&["environment", "create", "prod", "-w", "acme", "-p", "api"])
        .assert_success();
    user.zopp_stdin(
        &with(&["secret", "set", "DB_PASSWORD", "-"], &SCOPE),
        b"hunter2",
    )
    .assert_success();
    let got = user.zopp(&with(&["secret", "get", "DB_PASSWORD"], &SCOPE));
    assert_eq!(got.assert_success().stdout(), "hunter2\n");

    // A service principal's token, with the client certificate from ZOPP_TLS_CERT/ZOPP_TLS_KEY.
    let out = user.zopp(&with(
        &[
            "principal",
            "create-service",
            "ci",
            "--role",
            "read",
            "--output",
            "json",
        ],
        &SCOPE,
    ));
    let token = out.assert_success().json()["token"]
        .as_str()
        .expect("token")
        .to_string();
    let ci = |client: Option<&Pair>| {
        let home = tempfile::tempdir().expect("ci home");
        let mut cmd = Command::new(bin("zopp"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .env("ZOPP_TOKEN", &token)
            .env("ZOPP_SERVER", server.url())
            .env("ZOPP_TLS_CA", certs.ca())
            .current_dir(home.path())
            .args(with(&["secret", "get", "DB_PASSWORD"], &SCOPE))
            .stdin(Stdio::null());
        if let Some(c) = client {
            cmd.env("ZOPP_TLS_CERT", &c.cert)
                .env("ZOPP_TLS_KEY", &c.key);
        }
        TestOutput::run(cmd, None)
    };
    assert_eq!(ci(Some(&client)).assert_success().stdout(), "hunter2\n");
    ci(None)
        .assert_exit_code(5)
        .assert_stderr_contains("client certificate")
        .assert_stderr_contains("ZOPP_TLS_CERT");
}

#[test]
fn tls_failures_say_what_is_wrong_and_what_to_do() {
    let certs = TestCerts::new();
    let mutual = tls_server(&certs, &certs.server(), true);

    // The server's CA is not trusted (system roots only).
    let user = TestUser::new(&mutual);
    run(&user, &["join", &mutual.invite(), "a@example.com"], &[])
        .assert_exit_code(7)
        .assert_stderr_contains("not signed by a trusted CA")
        .assert_stderr_contains("--tls-ca");
    assert!(!user.home.path().join("principal.key").exists());

    // No client certificate for a server that requires one.
    run(
        &user,
        &["join", &mutual.invite(), "a@example.com"],
        &tls_args(&certs.ca(), None),
    )
    .assert_exit_code(5)
    .assert_stderr_contains("client certificate")
    .assert_stderr_contains("--tls-cert");

    // A client certificate from a CA the server does not trust.
    run(
        &user,
        &["join", &mutual.invite(), "a@example.com"],
        &tls_args(&certs.ca(), Some(&certs.stranger())),
    )
    .assert_exit_code(5)
    .assert_stderr_contains("client certificate");

    // A certificate for another host name.
    let elsewhere = tls_server(&certs, &certs.wrong_name(), false);
    let user = TestUser::new(&elsewhere);
    run(
        &user,
        &["join", &elsewhere.invite(), "a@example.com"],
        &tls_args(&certs.ca(), None),
    )
    .assert_exit_code(7)
    .assert_stderr_contains("not valid for this host name");

    // Plaintext to a TLS port.
    let mut user = TestUser::new(&mutual);
    user.server = format!("http://{}", mutual.addr);
    let out = user.zopp(&["join", &mutual.invite(), "a@example.com"]);
    out.assert_exit_code(7);
    assert!(!out.stderr().contains("invite"), "{}", out.stderr());
}

#[test]
fn plaintext_to_another_machine_is_refused_unless_insecure() {
    let server = TestServer::start();
    let mut user = TestUser::new(&server);
    // TEST-NET-1: nothing answers there, and nothing is sent before the refusal.
    user.server = "http://192.0.2.1:50051".into();
    user.zopp(&["join", "zinv_x", "a@example.com"])
        .assert_exit_code(2)
        .assert_stderr_contains("refusing plaintext connection")
        .assert_stderr_contains("--insecure");
    user.server = "192.0.2.1:50051".into();
    user.zopp(&["whoami"]).assert_exit_code(2);
    // With --insecure the address is accepted and the command fails further on (no identity).
    user.zopp(&["whoami", "--insecure"]).assert_exit_code(5);
    user.zopp_env(&["whoami"], &[("ZOPP_INSECURE", "1")])
        .assert_exit_code(5);
}

#[test]
fn server_refuses_a_key_that_is_not_its_certificates_before_listening() {
    let certs = TestCerts::new();
    let home = tempfile::tempdir().expect("home");
    let serve = |cert: &std::path::Path, key: &std::path::Path| {
        let mut cmd = Command::new(bin("zopp-server"));
        cmd.env_clear()
            .env("ZOPP_HOME", home.path())
            .env("NO_COLOR", "1")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
            ])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        TestOutput::run(cmd, None)
    };
    let out = serve(&certs.server().cert, &certs.client().key);
    out.assert_exit_code(1)
        .assert_stderr_contains("does not belong to the certificate");
    assert!(!out.stdout().contains("listening"), "{}", out.stdout());

    let out = serve(&certs.server().key, &certs.server().key);
    out.assert_exit_code(1)
        .assert_stderr_contains("not a PEM certificate");
    assert!(!out.stdout().contains("listening"));
}
