//! Request signing (FORMAT.md §4): every refusal is UNAUTHENTICATED with a message naming the
//! failed check.

use ::zopp_server::auth::MemoryReplayCache;
use ::zopp_server::service::methods;
use ::zopp_server::ServeOptions;
use tonic::Code;
use zopp_crypto::ids::PrincipalId;
use zopp_crypto::keys::PrincipalKeys;
use zopp_proto::v1::*;

use crate::common::*;

const SKEW: &str = "request timestamp outside the allowed 60 s skew";

#[tokio::test]
async fn signed_call_succeeds_and_identifies_the_caller() {
    let s = Server::start().await;
    let u = s.join("alice@example.com").await;
    let me = u
        .c()
        .who_am_i(u.sign(methods::WHO_AM_I, WhoAmIRequest {}))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.principal_id, u.id.to_string());
    assert_eq!(me.user_id, u.user_id);
    assert_eq!(me.email, "alice@example.com");
    assert_eq!(me.principal_name, "laptop");
}

#[tokio::test]
async fn replayed_call_is_refused() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let opts = SignAs {
        timestamp_ms: Some(::zopp_server::now_ms()),
        nonce: Some([7; 16]),
        ..SignAs::default()
    };
    let req = || {
        sign_with(
            &u.keys,
            u.id,
            methods::LIST_WORKSPACES,
            ListWorkspacesRequest {},
            &opts,
        )
    };
    u.c().list_workspaces(req()).await.expect("first use");
    assert_status(
        u.c().list_workspaces(req()).await,
        Code::Unauthenticated,
        "replayed request nonce",
    );
}

#[tokio::test]
async fn another_principals_signature_is_refused() {
    let s = Server::start().await;
    let alice = s.join("alice@example.com").await;
    let mallory = s.join("mallory@example.com").await;
    // Mallory signs with her own key but claims to be Alice.
    let req = sign_with(
        &mallory.keys,
        mallory.id,
        methods::LIST_WORKSPACES,
        ListWorkspacesRequest {},
        &SignAs {
            principal: Some(alice.id),
            ..SignAs::default()
        },
    );
    assert_status(
        mallory.c().list_workspaces(req).await,
        Code::Unauthenticated,
        "bad request signature",
    );
}

#[tokio::test]
async fn altered_body_is_refused_and_changes_nothing() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    let mut req = u.sign(
        methods::CREATE_PROJECT,
        CreateProjectRequest {
            statements: Vec::new(),
            workspace: "acme".into(),
            id: "6f1c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f".into(),
            name: "web".into(),
            wrapped_key: vec![1; 74],
        },
    );
    req.get_mut().name = "evil".into();
    assert_status(
        u.c().create_project(req).await,
        Code::Unauthenticated,
        "bad request signature",
    );
    let projects = u
        .c()
        .list_projects(u.sign(
            methods::LIST_PROJECTS,
            ListProjectsRequest {
                workspace: env.workspace.clone(),
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .projects;
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, "api");
}

#[tokio::test]
async fn signature_for_another_method_is_refused() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    // Same (empty) body encoding, different method: the method is part of what is signed.
    let signed_for_whoami = u.sign(methods::WHO_AM_I, WhoAmIRequest {});
    let md = signed_for_whoami.metadata().clone();
    let mut req = tonic::Request::new(ListWorkspacesRequest {});
    *req.metadata_mut() = md;
    assert_status(
        u.c().list_workspaces(req).await,
        Code::Unauthenticated,
        "bad request signature",
    );
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    // A server whose replay cache has seen every request of the window (up for longer than the
    // skew), so only the skew check decides.
    let s = Server::start_with(ServeOptions {
        replay: std::sync::Arc::new(MemoryReplayCache::remembering_since(i64::MIN)),
        ..ServeOptions::default()
    })
    .await;
    let u = s.join("a@example.com").await;
    for offset in [-61_000i64, 61_000, -3_600_000] {
        let req = sign_with(
            &u.keys,
            u.id,
            methods::LIST_WORKSPACES,
            ListWorkspacesRequest {},
            &SignAs {
                timestamp_ms: Some(::zopp_server::now_ms() + offset),
                ..SignAs::default()
            },
        );
        assert_status(
            u.c().list_workspaces(req).await,
            Code::Unauthenticated,
            SKEW,
        );
    }
    // Inside the window is fine.
    let req = sign_with(
        &u.keys,
        u.id,
        methods::LIST_WORKSPACES,
        ListWorkspacesRequest {},
        &SignAs {
            timestamp_ms: Some(::zopp_server::now_ms() - 50_000),
            ..SignAs::default()
        },
    );
    u.c().list_workspaces(req).await.expect("within skew");
}

/// A timestamp at the far ends of `i64`: the skew check must not overflow (in a release build
/// `i64::MIN.abs()` wraps to a negative number and would pass the check, with a nonce whose
/// expiry saturates and is never pruned).
#[tokio::test]
async fn extreme_timestamps_are_refused_as_skew() {
    let s = Server::start_with(ServeOptions {
        replay: std::sync::Arc::new(MemoryReplayCache::remembering_since(i64::MIN)),
        ..ServeOptions::default()
    })
    .await;
    let u = s.join("a@example.com").await;
    for ts in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
        let req = sign_with(
            &u.keys,
            u.id,
            methods::LIST_WORKSPACES,
            ListWorkspacesRequest {},
            &SignAs {
                timestamp_ms: Some(ts),
                ..SignAs::default()
            },
        );
        assert_status(
            u.c().list_workspaces(req).await,
            Code::Unauthenticated,
            SKEW,
        );
    }
}

/// A request accepted before a restart cannot be replayed after it: the new process's replay
/// cache is empty, so the server refuses every timestamp older than its start.
#[tokio::test]
async fn request_from_before_a_restart_is_refused() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let req = || {
        sign_with(
            &u.keys,
            u.id,
            methods::LIST_WORKSPACES,
            ListWorkspacesRequest {},
            &SignAs {
                timestamp_ms: Some(::zopp_server::now_ms()),
                nonce: Some([9; 16]),
                ..SignAs::default()
            },
        )
    };
    let first = req();
    u.c().list_workspaces(first).await.expect("first use");
    let replay = req();
    // The same database served by a new process (a fresh in-memory replay cache).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let restarted = s.restart_on_same_database().await;
    let c = restarted.client().await;
    assert_status(
        c.clone().list_workspaces(replay).await,
        Code::Unauthenticated,
        "request timestamp is older than the server's start",
    );
    // A fresh request goes through.
    let fresh = u.sign(methods::LIST_WORKSPACES, ListWorkspacesRequest {});
    c.clone()
        .list_workspaces(fresh)
        .await
        .expect("fresh request");
}

/// A request signed for another deployment (one that shares a copy of this database) is refused,
/// and so is one signed for no deployment on any method but `GetKeyShare`.
#[tokio::test]
async fn request_signed_for_another_server_is_refused() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    for server in [
        zopp_crypto::ids::ServerId::from_bytes([0x7f; 16]),
        zopp_crypto::sign::UNBOUND_SERVER,
    ] {
        let req = sign_with(
            &u.keys,
            u.id,
            methods::LIST_WORKSPACES,
            ListWorkspacesRequest {},
            &SignAs {
                server: Some(server),
                ..SignAs::default()
            },
        );
        assert_status(
            u.c().list_workspaces(req).await,
            Code::Unauthenticated,
            "bad request signature",
        );
    }
    // The server tells anyone its id, and a join hands it to the new principal.
    let info = s
        .client()
        .await
        .get_server_info(GetServerInfoRequest {})
        .await
        .expect("server info")
        .into_inner();
    assert_eq!(info.server_id, TEST_SERVER_ID.as_bytes().to_vec());
    let keys = PrincipalKeys::generate(&mut rand::rngs::OsRng);
    let joined = s
        .client()
        .await
        .join(join_request(&keys, &s.invite().await, "b@example.com"))
        .await
        .expect("join")
        .into_inner();
    assert_eq!(joined.server_id, TEST_SERVER_ID.as_bytes().to_vec());
}

#[tokio::test]
async fn unknown_principal_is_refused() {
    let s = Server::start().await;
    let keys = PrincipalKeys::generate(&mut rand::rngs::OsRng);
    let ghost = PrincipalId::random(&mut rand::rngs::OsRng);
    let req = sign_with(
        &keys,
        ghost,
        methods::WHO_AM_I,
        WhoAmIRequest {},
        &SignAs::default(),
    );
    assert_status(
        s.client().await.who_am_i(req).await,
        Code::Unauthenticated,
        "unknown principal",
    );
}

#[tokio::test]
async fn missing_and_malformed_metadata_are_named() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    assert_status(
        u.c().who_am_i(WhoAmIRequest {}).await,
        Code::Unauthenticated,
        "missing x-zopp-principal metadata",
    );
    for (key, value, msg) in [
        ("x-zopp-nonce", "ABCDEF", "malformed x-zopp-nonce metadata"),
        (
            "x-zopp-nonce",
            "00112233445566778899AABBCCDDEEFF",
            "malformed x-zopp-nonce metadata",
        ),
        (
            "x-zopp-timestamp",
            "soon",
            "malformed x-zopp-timestamp metadata",
        ),
        (
            "x-zopp-principal",
            "alice",
            "malformed x-zopp-principal metadata",
        ),
        (
            "x-zopp-signature",
            "00",
            "malformed x-zopp-signature metadata",
        ),
    ] {
        let mut req = u.sign(methods::WHO_AM_I, WhoAmIRequest {});
        req.metadata_mut()
            .insert(key, value.parse().expect("ascii"));
        assert_status(u.c().who_am_i(req).await, Code::Unauthenticated, msg);
    }
    let mut req = u.sign(methods::WHO_AM_I, WhoAmIRequest {});
    req.metadata_mut().remove("x-zopp-signature");
    assert_status(
        u.c().who_am_i(req).await,
        Code::Unauthenticated,
        "missing x-zopp-signature metadata",
    );
}

#[tokio::test]
async fn revoked_and_expired_principals_are_refused() {
    let s = Server::start().await;
    let a = s.join("a@example.com").await;
    let b = s.join("b@example.com").await;
    sqlx::query("UPDATE principals SET revoked_at = 1 WHERE id = $1")
        .bind(a.id.to_string())
        .execute(s.sqlite.write_pool())
        .await
        .expect("revoke");
    sqlx::query("UPDATE principals SET expires_at = 1 WHERE id = $1")
        .bind(b.id.to_string())
        .execute(s.sqlite.write_pool())
        .await
        .expect("expire");
    assert_status(
        a.c()
            .who_am_i(a.sign(methods::WHO_AM_I, WhoAmIRequest {}))
            .await,
        Code::Unauthenticated,
        "principal revoked",
    );
    assert_status(
        b.c()
            .who_am_i(b.sign(methods::WHO_AM_I, WhoAmIRequest {}))
            .await,
        Code::Unauthenticated,
        "principal expired",
    );
}

#[tokio::test]
async fn forged_requests_do_not_burn_nonces() {
    let s = Server::start().await;
    let alice = s.join("alice@example.com").await;
    let mallory = s.join("mallory@example.com").await;
    let nonce = [9u8; 16];
    let forged = sign_with(
        &mallory.keys,
        mallory.id,
        methods::WHO_AM_I,
        WhoAmIRequest {},
        &SignAs {
            principal: Some(alice.id),
            nonce: Some(nonce),
            ..SignAs::default()
        },
    );
    assert_status(
        alice.c().who_am_i(forged).await,
        Code::Unauthenticated,
        "bad request signature",
    );
    let genuine = sign_with(
        &alice.keys,
        alice.id,
        methods::WHO_AM_I,
        WhoAmIRequest {},
        &SignAs {
            nonce: Some(nonce),
            ..SignAs::default()
        },
    );
    alice
        .c()
        .who_am_i(genuine)
        .await
        .expect("nonce still fresh");
}

#[tokio::test]
async fn rate_limit_refuses_bursts_per_principal() {
    let s = Server::start_with(::zopp_server::ServeOptions {
        rate_limit: ::zopp_server::ratelimit::RateLimit {
            per_second: 0.5,
            burst: 2.0,
        },
        ..::zopp_server::ServeOptions::default()
    })
    .await;
    let a = s.join("a@example.com").await;
    let b = s.join("b@example.com").await;
    for _ in 0..2 {
        a.c()
            .who_am_i(a.sign(methods::WHO_AM_I, WhoAmIRequest {}))
            .await
            .expect("within burst");
    }
    assert_status(
        a.c()
            .who_am_i(a.sign(methods::WHO_AM_I, WhoAmIRequest {}))
            .await,
        Code::ResourceExhausted,
        "rate limit exceeded for this principal; retry shortly",
    );
    b.c()
        .who_am_i(b.sign(methods::WHO_AM_I, WhoAmIRequest {}))
        .await
        .expect("other principal unaffected");
}
