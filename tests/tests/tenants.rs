//! Metadata between tenants of one server, end to end on the real binaries: the server audit
//! chain (which names every user who ever joined) is readable only by server admins, and a
//! principal or user is described only to principals that share a workspace with it (or vouch
//! for it by fingerprint). A stranger's refusal is word for word what a non-existent principal or
//! email gets, so it learns nothing about who exists.

use zopp_tests::{TestServer, TestUser};

/// The principal id in a user's `config.toml`.
fn principal_id(u: &TestUser) -> String {
    let text = std::fs::read_to_string(u.home.path().join("config.toml")).expect("config");
    let t: toml::Table = text.parse().expect("toml");
    t["principal_id"]
        .as_str()
        .expect("principal_id")
        .to_string()
}

/// alice (a server admin) with workspace `lobby`; mallory, admitted by alice into `lobby` with a
/// workspace invite, owns workspace `evil`; bob joined the server on his own and shares nothing
/// with mallory.
fn tenants(server: &TestServer) -> (TestUser, TestUser, TestUser) {
    let alice = TestUser::joined(server, "alice@example.com");
    alice
        .zopp(&["workspace", "create", "lobby"])
        .assert_success();
    let code = alice.zopp(&[
        "invite", "create", "-w", "lobby", "--role", "read", "--output", "json",
    ]);
    let code = code.assert_success().json()["code"]
        .as_str()
        .expect("code")
        .to_string();
    let mallory = TestUser::new(server);
    mallory
        .zopp(&["join", &code, "mallory@example.com"])
        .assert_success();
    mallory
        .zopp(&["workspace", "create", "evil"])
        .assert_success();
    let bob = TestUser::joined(server, "bob@example.com");
    (alice, mallory, bob)
}

#[test]
fn only_server_admins_read_the_server_audit_chain() {
    let server = TestServer::start();
    let (alice, mallory, bob) = tenants(&server);
    for verb in ["list", "verify"] {
        mallory
            .zopp(&["audit", verb])
            .assert_exit_code(4)
            .assert_stderr_contains("needs a server admin");
    }
    let listed = alice.zopp(&["audit", "list", "--output", "json"]);
    assert!(
        listed.assert_success().stdout().contains("bob@example.com")
            || listed.stdout().contains(&principal_id(&bob)),
        "a server admin sees the server chain: {}",
        listed.stdout()
    );
    bob.zopp(&["audit", "verify"]).assert_success();
    // mallory still reads the chains of her own workspaces.
    mallory
        .zopp(&["audit", "verify", "-w", "evil"])
        .assert_success();
}

#[test]
fn strangers_cannot_look_each_other_up() {
    let server = TestServer::start();
    let (alice, mallory, bob) = tenants(&server);
    let grant = |who: &str, extra: &[&str]| {
        let mut args = vec![
            "permission",
            "set",
            "--user",
            who,
            "--role",
            "read",
            "-w",
            "evil",
        ];
        args.extend_from_slice(extra);
        mallory.zopp(&args)
    };
    // An email that exists and one that does not: the same refusal.
    let existing = grant("bob@example.com", &[]);
    let missing = grant("nobody@example.com", &[]);
    existing.assert_exit_code(3);
    missing.assert_exit_code(3);
    assert_eq!(
        existing.stderr().replace("bob@example.com", "EMAIL"),
        missing.stderr().replace("nobody@example.com", "EMAIL"),
    );
    // A principal id that exists and one that does not: the same refusal.
    let bob_id = principal_id(&bob);
    let ghost = "0b9d3c1e-8a53-4c7e-9a4f-5d6e7f809123";
    let existing = mallory.zopp(&["principal", "fingerprint", &bob_id]);
    let missing = mallory.zopp(&["principal", "fingerprint", ghost]);
    existing.assert_exit_code(3);
    missing.assert_exit_code(3);
    assert_eq!(
        existing.stderr().replace(&bob_id, "ID"),
        missing.stderr().replace(ghost, "ID"),
    );

    // Vouching for bob's device by the fingerprint he reads out lets mallory grant him.
    let fp = bob.zopp(&["principal", "fingerprint"]);
    let fp = fp.assert_success().stdout().trim().to_string();
    grant("bob@example.com", &["--fingerprint", &fp]).assert_success();
    // Sharing a workspace is enough: alice and mallory both hold grants in `lobby`.
    alice
        .zopp(&["principal", "fingerprint", &principal_id(&mallory)])
        .assert_success();
    // And now that bob is in `evil`, mallory can look him up like any member.
    mallory
        .zopp(&["principal", "fingerprint", &bob_id])
        .assert_success();
}
