//! The first user journey of issue #2, end to end on the real binaries: invite, join, create the
//! hierarchy, set/get/list/delete secrets, JSON output and defaults from env and `zopp.toml`.

use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(
    secret_round_trip,
    value_from_file_and_binary_safe_stdin,
    json_shapes_of_invite_and_join,
    defaults_from_env_and_zopp_toml,
    get_is_one_round_trip_with_a_warm_cache,
);

const W: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];

fn args<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&W);
    v
}

fn secret_round_trip(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");

    alice
        .zopp(&args(&[
            "secret",
            "set",
            "DATABASE_URL",
            "postgres://u:p@h/db",
        ]))
        .assert_success();
    alice
        .zopp_stdin(&args(&["secret", "set", "API_KEY", "-"]), b"s3cr3t")
        .assert_success();

    let out = alice.zopp(&args(&["secret", "get", "DATABASE_URL"]));
    out.assert_success();
    assert_eq!(out.stdout(), "postgres://u:p@h/db\n");
    let out = alice.zopp(&args(&["secret", "get", "API_KEY"]));
    assert_eq!(out.assert_success().stdout(), "s3cr3t\n");

    // A second write is a new version.
    alice
        .zopp(&args(&["secret", "set", "API_KEY", "rotated"]))
        .assert_success();
    let json = alice
        .zopp(&args(&["secret", "get", "API_KEY", "--output", "json"]))
        .json();
    assert_eq!(json["name"], "API_KEY");
    assert_eq!(json["value"], "rotated");
    assert_eq!(json["version"], 2);

    let list = alice.zopp(&args(&["secret", "list", "--output", "json"]));
    let list = list.assert_success().json();
    let rows = list.as_array().expect("list is an array");
    assert_eq!(rows.len(), 2);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"API_KEY") && names.contains(&"DATABASE_URL"));
    for r in rows {
        assert!(r["version"].as_u64().unwrap() >= 1);
        assert!(
            r["updated_at"].as_str().unwrap().contains('T'),
            "RFC 3339 time: {r}"
        );
        assert!(!r["updated_by"].as_str().unwrap().is_empty());
        assert!(r.get("value").is_none(), "list never shows values: {r}");
    }
    // Human list shows names but never values.
    let human = alice.zopp(&args(&["secret", "list"]));
    let text = human.assert_success().stdout();
    assert!(text.contains("DATABASE_URL") && text.contains("API_KEY"));
    assert!(!text.contains("rotated") && !text.contains("postgres://"));

    alice
        .zopp(&args(&["secret", "delete", "API_KEY"]))
        .assert_success();
    alice
        .zopp(&args(&["secret", "get", "API_KEY"]))
        .assert_exit_code(3);
    let list = alice
        .zopp(&args(&["secret", "list", "--output", "json"]))
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The hierarchy lists.
    let ws = alice
        .zopp(&["workspace", "list", "--output", "json"])
        .json();
    assert!(ws.to_string().contains("acme"));
    let ps = alice
        .zopp(&["project", "list", "-w", "acme", "--output", "json"])
        .json();
    assert!(ps.to_string().contains("api"));
    let es = alice
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
    assert!(es.to_string().contains("dev"));
}

fn value_from_file_and_binary_safe_stdin(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let value = "line one\nline \"two\" with $HOME and \\ backslash\n  trailing spaces  ";
    let file = alice.cwd.path().join("value.txt");
    std::fs::write(&file, value).unwrap();
    alice
        .zopp(&args(&[
            "secret",
            "set",
            "MULTI",
            "--file",
            file.to_str().unwrap(),
        ]))
        .assert_success();
    let out = alice.zopp(&args(&["secret", "get", "MULTI", "--output", "json"]));
    assert_eq!(out.assert_success().json()["value"], value);
    // stdin is taken exactly, with no trimming.
    alice
        .zopp_stdin(
            &args(&["secret", "set", "PEM", "-"]),
            b"-----BEGIN-----\nabc\n",
        )
        .assert_success();
    let out = alice.zopp(&args(&["secret", "get", "PEM"]));
    assert_eq!(out.assert_success().stdout(), "-----BEGIN-----\nabc\n\n");
}

fn json_shapes_of_invite_and_join(backend: Backend) {
    let server = TestServer::start_on(backend);
    let out = server.admin(&[
        "invite",
        "create",
        "--expires-hours",
        "48",
        "--output",
        "json",
    ]);
    let inv = out.assert_success().json();
    let token = inv["token"].as_str().expect("token");
    assert!(inv["expires_at"]
        .as_str()
        .expect("expires_at")
        .contains('T'));
    let bob = TestUser::new(&server);
    let joined = bob.zopp(&["join", token, "bob@example.com", "--output", "json"]);
    let j = joined.assert_success().json();
    assert!(!j["user_id"].as_str().unwrap().is_empty());
    assert!(!j["principal_id"].as_str().unwrap().is_empty());
    // Human invite output is just the token on stdout.
    let human = server.admin(&["invite", "create"]);
    assert!(human.assert_success().stdout().trim().len() > 20);
}

fn defaults_from_env_and_zopp_toml(backend: Backend) {
    let server = TestServer::start_on(backend);
    let mut alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&["environment", "create", "prod", "-w", "acme", "-p", "api"])
        .assert_success();

    // zopp.toml in a parent directory of the working directory.
    std::fs::write(
        alice.cwd.path().join("zopp.toml"),
        "[defaults]\nworkspace = \"acme\"\nproject = \"api\"\nenvironment = \"dev\"\n",
    )
    .unwrap();
    let sub = alice.cwd.path().join("service/src");
    std::fs::create_dir_all(&sub).unwrap();
    let mut cmd = alice.cmd(&["secret", "set", "FROM_TOML", "dev-value"]);
    cmd.current_dir(&sub);
    zopp_tests::TestOutput::run(cmd, None).assert_success();
    alice
        .zopp(&args(&["secret", "get", "FROM_TOML"]))
        .assert_success();

    // Environment variables beat zopp.toml; flags beat both.
    alice.env.push(("ZOPP_ENVIRONMENT".into(), "prod".into()));
    alice
        .zopp(&["secret", "set", "K", "prod-value"])
        .assert_success();
    let out = alice.zopp(&["secret", "get", "K", "-e", "prod"]);
    assert_eq!(out.assert_success().stdout(), "prod-value\n");
    alice
        .zopp(&["secret", "get", "K", "-e", "dev"])
        .assert_exit_code(3);
}

fn get_is_one_round_trip_with_a_warm_cache(backend: Backend) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    alice
        .zopp(&args(&["secret", "set", "A", "1"]))
        .assert_success();
    // First get may need to resolve the key chain; every later one is a single round trip.
    alice.zopp(&args(&["secret", "get", "A"])).assert_success();
    let out = alice.zopp_env(
        &args(&["secret", "get", "A"]),
        &[("ZOPP_DEBUG_RPC_COUNT", "1")],
    );
    out.assert_success();
    assert!(
        out.stderr().contains("zopp: rpc-count 1"),
        "expected one round trip:\n{}",
        out.stderr()
    );
}
