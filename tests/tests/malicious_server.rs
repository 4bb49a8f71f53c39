//! A malicious server, attack by attack (THREAT-MODEL.md §4.2): each test edits the database
//! under a running server (tests/src/tamper.rs), as an operator who controls it could, and
//! asserts that the client refuses what comes back: exit code 1, an error naming the tampering,
//! no forged or foreign value on stdout, and nothing written. A control runs the same flows
//! untampered.

use zopp_tests::tamper::Tamper;
use zopp_tests::{on_both_backends, Backend, TestServer, TestUser};

on_both_backends!(environment_swap_is_refused);

/// `head` followed by the scope flags of `acme/api/ENV`.
fn at<'a>(env: &'a str, head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&["-w", "acme", "-p", "api", "-e", env]);
    v
}

/// `zopp run` in `acme/api/ENV` printing `var` (the scope flags before `--`).
fn run_at<'a>(env: &'a str, extra: &[&'a str], var: &'a str) -> Vec<&'a str> {
    let mut v = vec!["run", "-w", "acme", "-p", "api", "-e", env];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--", "printenv", var]);
    v
}

fn start(backend: Backend) -> (TestServer, TestUser) {
    let server = TestServer::start_on(backend);
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "prod");
    (server, alice)
}

fn set(user: &TestUser, env: &str, name: &str, value: &str) {
    user.zopp(&at(env, &["secret", "set", name, value]))
        .assert_success();
}

fn get(user: &TestUser, env: &str, name: &str) -> zopp_tests::TestOutput {
    user.zopp(&at(env, &["secret", "get", name]))
}

/// Asserts a refusal: exit 1, `needle` in stderr, none of `forbidden` on stdout.
fn refused(out: &zopp_tests::TestOutput, needle: &str, forbidden: &[&str]) {
    out.assert_exit_code(1).assert_stderr_contains(needle);
    for f in forbidden {
        assert!(
            !out.stdout().contains(f) && !out.stderr().contains(f),
            "{}: printed {f:?}\n{}",
            out.command,
            out.stdout()
        );
    }
}

#[test]
fn untampered_flows_pass() {
    let (server, alice) = start(Backend::Sqlite);
    alice
        .zopp(&[
            "environment",
            "create",
            "staging",
            "-w",
            "acme",
            "-p",
            "api",
        ])
        .assert_success();
    set(&alice, "prod", "DB_PASS", "prod-pass-1");
    set(&alice, "staging", "DB_PASS", "staging-pass");
    set(&alice, "prod", "DB_PASS", "prod-pass-2");
    assert_eq!(
        get(&alice, "prod", "DB_PASS")
            .assert_success()
            .stdout()
            .trim(),
        "prod-pass-2"
    );
    assert_eq!(
        get(&alice, "staging", "DB_PASS")
            .assert_success()
            .stdout()
            .trim(),
        "staging-pass"
    );
    // Rotations at every level move the pins forward, and reads keep working.
    alice
        .zopp(&at("prod", &["environment", "rotate-key"]))
        .assert_success();
    set(&alice, "prod", "AFTER_ENV", "1");
    alice
        .zopp(&["project", "rotate-key", "-w", "acme", "-p", "api"])
        .assert_success();
    alice
        .zopp(&["environment", "create", "qa", "-w", "acme", "-p", "api"])
        .assert_success();
    alice
        .zopp(&["workspace", "rotate-key", "-w", "acme"])
        .assert_success();
    alice
        .zopp(&["project", "create", "web", "-w", "acme"])
        .assert_success();
    set(&alice, "prod", "AFTER_ALL", "2");
    assert_eq!(
        get(&alice, "prod", "DB_PASS")
            .assert_success()
            .stdout()
            .trim(),
        "prod-pass-2"
    );
    let out = alice.zopp(&run_at("prod", &[], "DB_PASS"));
    assert_eq!(out.assert_success().stdout().trim(), "prod-pass-2");
    // Deleting and recreating a scope from this client starts its pins afresh.
    alice
        .zopp(&[
            "environment",
            "delete",
            "qa",
            "-w",
            "acme",
            "-p",
            "api",
            "--yes",
        ])
        .assert_success();
    alice
        .zopp(&["environment", "create", "qa", "-w", "acme", "-p", "api"])
        .assert_success();
    set(&alice, "qa", "X", "y");
    drop(server);
}

fn environment_swap_is_refused(backend: Backend) {
    let (server, alice) = start(backend);
    alice
        .zopp(&[
            "environment",
            "create",
            "staging",
            "-w",
            "acme",
            "-p",
            "api",
        ])
        .assert_success();
    set(&alice, "prod", "DB_PASS", "prod-pass");
    set(&alice, "staging", "DB_PASS", "staging-pass");
    get(&alice, "prod", "DB_PASS").assert_success();
    get(&alice, "staging", "DB_PASS").assert_success();
    let t = Tamper::new(&server);
    let before = (
        t.version_count("acme", "api", "prod"),
        t.version_count("acme", "api", "staging"),
    );
    t.swap_environments("acme", "api", "prod", "staging");

    let swapped = "environment 'prod' changed identity";
    refused(&get(&alice, "prod", "DB_PASS"), swapped, &["staging-pass"]);
    refused(
        &alice.zopp(&run_at("prod", &[], "DB_PASS")),
        swapped,
        &["staging-pass"],
    );
    refused(
        &alice.zopp(&at("prod", &["secret", "list"])),
        swapped,
        &["staging-pass"],
    );
    refused(
        &alice.zopp(&at("prod", &["secret", "set", "DB_PASS", "meant-for-prod"])),
        swapped,
        &[],
    );
    refused(
        &get(&alice, "staging", "DB_PASS"),
        "environment 'staging' changed identity",
        &["prod-pass"],
    );
    assert_eq!(
        (
            t.version_count("acme", "api", "prod"),
            t.version_count("acme", "api", "staging"),
        ),
        before,
        "nothing was written"
    );
    // The hint says what to do.
    get(&alice, "prod", "DB_PASS").assert_stderr_contains("hint: nothing was read or written");
}

#[test]
fn environment_key_rollback_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "DB_PASS", "before-rotation");
    t.save_rows(
        "env_epoch_1",
        "environments",
        &format!("id = {}", Tamper::environment_id_sql("acme", "api", "prod")),
    );
    alice
        .zopp(&at("prod", &["environment", "rotate-key"]))
        .assert_success();
    set(&alice, "prod", "AFTER", "sealed-under-epoch-2");
    let before = t.version_count("acme", "api", "prod");
    assert_eq!(
        t.restore_columns(
            "env_epoch_1",
            "environments",
            "id",
            &["wrapped_key", "key_epoch"]
        ),
        1
    );

    let back = "the key epoch of environment 'prod' went back from 2 to 1";
    refused(
        &alice.zopp(&at(
            "prod",
            &["secret", "set", "NEW", "written-under-old-key"],
        )),
        back,
        &[],
    );
    refused(&get(&alice, "prod", "DB_PASS"), back, &["before-rotation"]);
    refused(
        &alice.zopp(&run_at("prod", &[], "DB_PASS")),
        back,
        &["before-rotation"],
    );
    assert_eq!(
        t.version_count("acme", "api", "prod"),
        before,
        "nothing was written"
    );
}

#[test]
fn project_key_rollback_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    let project = format!("id = {}", Tamper::project_id_sql("acme", "api"));
    t.save_rows("project_gen_1", "projects", &project);
    alice
        .zopp(&["project", "rotate-key", "-w", "acme", "-p", "api"])
        .assert_success();
    // Creating an environment reads the project's key: generation 2 is pinned.
    alice
        .zopp(&[
            "environment",
            "create",
            "staging",
            "-w",
            "acme",
            "-p",
            "api",
        ])
        .assert_success();
    assert_eq!(
        t.restore_columns(
            "project_gen_1",
            "projects",
            "id",
            &["wrapped_key", "key_epoch"]
        ),
        1
    );
    refused(
        &alice.zopp(&["environment", "create", "qa", "-w", "acme", "-p", "api"]),
        "the key epoch of project 'api' went back from 2 to 1",
        &[],
    );
    assert_eq!(
        t.query_i64("SELECT count(*) FROM environments WHERE name = 'qa'"),
        0,
        "no environment was created under the retired key"
    );
}

#[test]
fn workspace_key_rollback_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    let ws = Tamper::workspace_id_sql("acme");
    t.save_rows("ws_gen_1", "workspaces", &format!("id = {ws}"));
    let grants =
        format!("grant_id IN (SELECT id FROM grants WHERE scope_kind = 1 AND workspace_id = {ws})");
    t.save_rows("ws_grant_keys_1", "grant_keys", &grants);
    alice
        .zopp(&["workspace", "rotate-key", "-w", "acme"])
        .assert_success();
    // Creating a project reads the workspace's key: generation 2 is pinned.
    alice
        .zopp(&["project", "create", "web", "-w", "acme"])
        .assert_success();
    assert_eq!(
        t.restore_columns("ws_gen_1", "workspaces", "id", &["key_epoch"]),
        1
    );
    t.restore_rows("ws_grant_keys_1", "grant_keys", &grants);
    refused(
        &alice.zopp(&["project", "create", "mobile", "-w", "acme"]),
        "the key epoch of workspace 'acme' went back from 2 to 1",
        &[],
    );
    assert_eq!(
        t.query_i64("SELECT count(*) FROM projects WHERE name = 'mobile'"),
        0,
        "no project was created under the retired key"
    );
}

#[test]
fn single_secret_rollback_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "API_KEY", "old-value");
    set(&alice, "prod", "API_KEY", "new-value");
    assert_eq!(
        get(&alice, "prod", "API_KEY")
            .assert_success()
            .stdout()
            .trim(),
        "new-value"
    );
    let before = t.version_count("acme", "api", "prod");
    assert_eq!(t.roll_back_heads("acme", "api", "prod"), 1);

    let back = "secret 'API_KEY' went back from version 2 to 1";
    refused(&get(&alice, "prod", "API_KEY"), back, &["old-value"]);
    refused(
        &alice.zopp(&run_at("prod", &[], "API_KEY")),
        back,
        &["old-value"],
    );
    assert_eq!(t.version_count("acme", "api", "prod"), before);
}

#[test]
fn forged_value_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "API_KEY", "real-value");
    assert_eq!(t.forge_values("acme", "api", "prod"), 1);
    refused(
        &get(&alice, "prod", "API_KEY"),
        "secret 'API_KEY' failed verification",
        &["real-value"],
    );
    refused(
        &alice.zopp(&run_at("prod", &[], "API_KEY")),
        "failed verification",
        &["real-value"],
    );
}

#[test]
fn point_in_time_lie_by_environment_version_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "API_KEY", "first-value");
    set(&alice, "prod", "API_KEY", "second-value");
    let at_one = run_at("prod", &["--at-version", "1"], "API_KEY");
    assert_eq!(
        alice.zopp(&at_one).assert_success().stdout().trim(),
        "first-value"
    );
    // The server moves version 2 back to environment version 1: a deploy pinned to version 1
    // would get the later value.
    assert_eq!(
        t.rewrite_versions("acme", "api", "prod", "env_version = 1", "version = 2"),
        1
    );
    refused(
        &alice.zopp(&at_one),
        "secret 'API_KEY' failed verification",
        &["second-value", "first-value"],
    );
}

#[test]
fn point_in_time_lie_by_time_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "API_KEY", "first-value");
    set(&alice, "prod", "API_KEY", "second-value");
    // The server claims version 2 was written two hours ago (and the environment is older
    // still), so a read of the state an hour ago gets it.
    let hours = |h: i64| h * 3_600_000;
    t.exec(&format!(
        "UPDATE environments SET created_at = created_at - {} WHERE id = {}",
        hours(3),
        Tamper::environment_id_sql("acme", "api", "prod")
    ));
    t.exec(&format!(
        "UPDATE projects SET created_at = created_at - {} WHERE id = {}",
        hours(3),
        Tamper::project_id_sql("acme", "api")
    ));
    assert_eq!(
        t.rewrite_versions(
            "acme",
            "api",
            "prod",
            &format!("created_at = created_at - {}", hours(2)),
            "version = 2"
        ),
        1
    );
    refused(
        &alice.zopp(&run_at("prod", &["--at", "1h"], "API_KEY")),
        "secret 'API_KEY' failed verification",
        &["second-value", "first-value"],
    );
}

/// A principal token's holder: an empty home, `ZOPP_TOKEN` set.
fn token_user(server: &TestServer, token: &str) -> TestUser {
    let mut u = TestUser::new(server);
    u.env.push(("ZOPP_TOKEN".into(), token.into()));
    u
}

/// A read token for the whole of project `acme/api`, minted by `admin`.
fn project_token(admin: &TestUser) -> String {
    let out = admin.zopp(&[
        "principal",
        "create-service",
        "ci",
        "--role",
        "read",
        "-w",
        "acme",
        "-p",
        "api",
        "--output",
        "json",
    ]);
    out.assert_success().json()["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[test]
fn token_mode_epoch_rollback_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "DB_PASS", "epoch-1-value");
    t.save_rows(
        "token_env_epoch_1",
        "environments",
        &format!("id = {}", Tamper::environment_id_sql("acme", "api", "prod")),
    );
    alice
        .zopp(&at("prod", &["environment", "rotate-key"]))
        .assert_success();
    set(&alice, "prod", "DB_PASS", "epoch-2-value");
    let ci = token_user(&server, &project_token(&alice));
    let run = run_at("prod", &[], "DB_PASS");
    assert_eq!(
        ci.zopp(&run).assert_success().stdout().trim(),
        "epoch-2-value"
    );

    // Epoch 1's key still opens under the project key the token holds: without the floor in
    // the token, a CI runner with nothing on disk would accept it.
    t.restore_columns(
        "token_env_epoch_1",
        "environments",
        "id",
        &["wrapped_key", "key_epoch"],
    );
    refused(
        &ci.zopp(&run),
        "the key epoch of environment 'prod' went back from 2 to 1",
        &["epoch-1-value", "epoch-2-value"],
    );
    assert!(
        std::fs::read_dir(ci.home.path())
            .expect("home")
            .next()
            .is_none(),
        "token mode writes nothing"
    );
}

#[test]
fn token_mode_environment_swap_is_refused() {
    let (server, alice) = start(Backend::Sqlite);
    alice
        .zopp(&[
            "environment",
            "create",
            "staging",
            "-w",
            "acme",
            "-p",
            "api",
        ])
        .assert_success();
    set(&alice, "prod", "DB_PASS", "prod-pass");
    set(&alice, "staging", "DB_PASS", "staging-pass");
    let ci = token_user(&server, &project_token(&alice));
    let run = run_at("prod", &[], "DB_PASS");
    assert_eq!(ci.zopp(&run).assert_success().stdout().trim(), "prod-pass");
    Tamper::new(&server).swap_environments("acme", "api", "prod", "staging");
    refused(
        &ci.zopp(&run),
        "environment 'prod' changed identity",
        &["staging-pass", "prod-pass"],
    );
}

#[test]
fn outdated_tokens_are_refused_with_a_clear_error() {
    let server = TestServer::start();
    // A token of the first layout: version 0x01 and 80 bytes, nothing bound.
    let raw: Vec<u8> = std::iter::once(1u8).chain([7u8; 80]).collect();
    let token = format!("zopp_{}", base64url(&raw));
    let out = token_user(&server, &token).zopp(&at("prod", &["secret", "get", "A"]));
    out.assert_exit_code(5)
        .assert_stderr_contains("outdated format")
        .assert_stderr_contains("zopp principal create-service");
}

/// Unpadded base64url (RFC 4648 §5), enough for a test token.
fn base64url(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = c.iter().fold(0u32, |n, &x| (n << 8) | u32::from(x)) << (8 * (3 - c.len()));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn writer_key_substitution_is_refused() {
    use zopp_crypto::envelope::NameDigest;
    use zopp_crypto::ids::{EnvironmentId, PrincipalId};
    use zopp_crypto::keys::SigningKey;
    use zopp_crypto::sign::VersionClaims;

    let (server, alice) = start(Backend::Sqlite);
    let t = Tamper::new(&server);
    set(&alice, "prod", "API_KEY", "real-value");
    get(&alice, "prod", "API_KEY").assert_success();
    let env_sql = Tamper::environment_id_sql("acme", "api", "prod");
    let env_id = t.environment_id("acme", "api", "prod");
    let q = |sql: &str| t.query_text(sql).expect("a value");
    let digest_hex = q(&format!(
        "SELECT lower(hex(name_digest)) FROM secret_heads WHERE environment_id = {env_sql}"
    ));
    let head_hash = q(&format!(
        "SELECT lower(hex(hash)) FROM secret_heads WHERE environment_id = {env_sql}"
    ));
    let alice_id = q(&format!(
        "SELECT writer_id FROM secret_versions WHERE environment_id = {env_sql}"
    ));
    let env_version: u64 = q(&format!(
        "SELECT env_version FROM environments WHERE id = {env_sql}"
    ))
    .parse()
    .expect("a number");

    // The server's own principal, "admitted" by alice with a signature it cannot make, and a
    // deletion of API_KEY signed with its own key in that principal's name.
    const MALLORY: &str = "6d616c6c-6f72-4479-8000-000000000001";
    let key = SigningKey::from_seed(&[0x66; 32]);
    let digest = NameDigest::try_from_slice(&hex::decode(&digest_hex).expect("hex")).expect("32");
    let prev: [u8; 32] = hex::decode(&head_hash)
        .expect("hex")
        .try_into()
        .expect("32");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let claims = VersionClaims {
        environment: EnvironmentId::try_parse(&env_id).expect("id"),
        name_digest: digest,
        version: 2,
        key_epoch: 1,
        deleted: true,
        envelope: &[],
        prev_hash: prev,
        writer: PrincipalId::try_parse(MALLORY).expect("id"),
        env_version: env_version + 1,
        created_at_ms: now,
    };
    let sig = claims.sign(&key);
    let hash = claims.hash(&sig);
    t.exec(&format!(
        "INSERT INTO principals (id, workspace_id, name, signing_key, agreement_key, admitted_by, \
           admission_signature, created_at) \
         VALUES ('{MALLORY}', (SELECT workspace_id FROM environments WHERE id = {env_sql}), \
           'mallory', X'{}', X'{}', '{alice_id}', X'{}', {now})",
        hex::encode(key.verifying_key().to_bytes()),
        hex::encode([0x09u8; 32]),
        hex::encode([0u8; 64]),
    ));
    t.exec(&format!(
        "INSERT INTO secret_versions (environment_id, name_digest, version, env_version, \
           key_epoch, envelope, deleted, writer_id, signature, prev_hash, hash, created_at) \
         VALUES ('{env_id}', X'{digest_hex}', 2, {}, 1, X'', 1, '{MALLORY}', X'{}', \
           X'{head_hash}', X'{}', {now})",
        env_version + 1,
        hex::encode(sig),
        hex::encode(hash),
    ));
    t.exec(&format!(
        "UPDATE secret_heads SET version = 2, deleted = 1, hash = X'{}' \
         WHERE environment_id = '{env_id}'",
        hex::encode(hash)
    ));
    t.exec(&format!(
        "UPDATE environments SET env_version = env_version + 1 WHERE id = '{env_id}'"
    ));
    let before = t.version_count("acme", "api", "prod");

    // The deletion's signature checks out under the key the response carries; the key's
    // admission chain does not.
    let not_vouched = "a version's writer does not verify, so its versions cannot be trusted: \
                       the keys of principal 6d616c6c-6f72-4479-8000-000000000001";
    refused(
        &alice.zopp(&at("prod", &["secret", "history", "API_KEY"])),
        not_vouched,
        &["real-value"],
    );
    refused(
        &alice.zopp(&at("prod", &["secret", "set", "API_KEY", "next-value"])),
        not_vouched,
        &[],
    );
    assert_eq!(
        t.version_count("acme", "api", "prod"),
        before,
        "nothing was written"
    );
}
