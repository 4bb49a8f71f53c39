//! Workspaces, projects, environments, scope keys and what other principals may see.

use ::zopp_server::service::methods;
use rand::rngs::OsRng;
use tonic::Code;
use zopp_crypto::ids::WorkspaceId;
use zopp_crypto::keys::ScopeKind as CryptoScope;
use zopp_crypto::sign::ZERO_HASH;
use zopp_crypto::wrap::{unwrap_from_recipient, unwrap_under, wrap_to_recipient, WrappedKey};
use zopp_proto::v1::*;

use crate::common::*;

fn env_ref(w: &str, p: &str, e: &str) -> Option<EnvironmentRef> {
    Some(EnvironmentRef {
        workspace: w.into(),
        project: p.into(),
        environment: e.into(),
    })
}

async fn get_env(u: &User, w: &str, p: &str, e: &str) -> Result<EnvironmentKeys, tonic::Status> {
    u.c()
        .get_environment(u.sign(
            methods::GET_ENVIRONMENT,
            GetEnvironmentRequest {
                env: env_ref(w, p, e),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Grants `role` on `env` to `who`'s user, with EK wrapped to its principal: what a future grant
/// RPC will do, written straight into the database here.
async fn grant_environment(s: &Server, env: &Env, who: &User, granter: &User, role: i32) {
    let key = wrap_to_recipient(
        &env.ek,
        &ctx(CryptoScope::Environment, *env.env_id.as_bytes()),
        &who.id,
        &who.keys.agreement.public_key(),
        &mut OsRng,
    )
    .expect("wrap");
    let grant_id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO grants (id, scope_kind, workspace_id, project_id, environment_id, role, \
         user_id, granted_by, created_at) VALUES ($1, 3, $2, $3, $4, $5, $6, $7, 0)",
    )
    .bind(&grant_id)
    .bind(env.ws_id.to_string())
    .bind(env.project_id.to_string())
    .bind(env.env_id.to_string())
    .bind(role)
    .bind(&who.user_id)
    .bind(granter.id.to_string())
    .execute(s.sqlite.write_pool())
    .await
    .expect("grant");
    sqlx::query(
        "INSERT INTO grant_keys (grant_id, principal_id, key_epoch, wrapped_key, created_at) \
         VALUES ($1, $2, 1, $3, 0)",
    )
    .bind(&grant_id)
    .bind(who.id.to_string())
    .bind(key.into_bytes())
    .execute(s.sqlite.write_pool())
    .await
    .expect("grant key");
}

#[tokio::test]
async fn creates_lists_and_refuses_duplicates_and_bad_names() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;

    let list = u
        .c()
        .list_workspaces(u.sign(methods::LIST_WORKSPACES, ListWorkspacesRequest {}))
        .await
        .expect("list")
        .into_inner()
        .workspaces;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "acme");
    assert_eq!(list[0].id, env.ws_id.to_string());

    let envs = u
        .c()
        .list_environments(u.sign(
            methods::LIST_ENVIRONMENTS,
            ListEnvironmentsRequest {
                workspace: "acme".into(),
                project: "api".into(),
            },
        ))
        .await
        .expect("list envs")
        .into_inner()
        .environments;
    assert_eq!(envs.len(), 1);
    assert_eq!((envs[0].env_version, envs[0].key_epoch), (0, 1));

    let wrapped = || {
        wrap_to_recipient(
            &env.wk,
            &ctx(CryptoScope::Workspace, [1; 16]),
            &u.id,
            &u.keys.agreement.public_key(),
            &mut OsRng,
        )
        .expect("wrap")
        .into_bytes()
    };
    let create = |id: String, name: &str| CreateWorkspaceRequest {
        statements: Vec::new(),
        id,
        name: name.into(),
        wrapped_key: wrapped(),
    };
    let fresh = || WorkspaceId::random(&mut OsRng).to_string();
    let cases: Vec<(CreateWorkspaceRequest, Code, String)> = vec![
        (
            create(fresh(), "acme"),
            Code::AlreadyExists,
            "workspace 'acme' already exists".into(),
        ),
        (
            create(env.ws_id.to_string(), "other"),
            Code::AlreadyExists,
            format!("workspace id {} is already in use", env.ws_id),
        ),
        (
            create(fresh(), "has space"),
            Code::InvalidArgument,
            "invalid workspace name 'has space': it contains whitespace".into(),
        ),
        (
            create(fresh(), "a/b"),
            Code::InvalidArgument,
            "invalid workspace name 'a/b': it contains '/'".into(),
        ),
        (
            create(fresh(), ""),
            Code::InvalidArgument,
            "invalid workspace name '': it is empty".into(),
        ),
        (
            create("not-a-uuid".into(), "x"),
            Code::InvalidArgument,
            "invalid workspace id 'not-a-uuid'".into(),
        ),
        (
            CreateWorkspaceRequest {
                statements: Vec::new(),
                wrapped_key: vec![1, 2, 3],
                ..create(fresh(), "x")
            },
            Code::InvalidArgument,
            "wrapped_key is not a key wrapped to a principal (106 bytes, format 1, algorithm 2)"
                .into(),
        ),
    ];
    for (req, code, msg) in cases {
        assert_status(
            u.c()
                .create_workspace(u.sign(methods::CREATE_WORKSPACE, req))
                .await,
            code,
            &msg,
        );
    }
    let long = "a".repeat(257);
    let r = u
        .c()
        .create_workspace(u.sign(methods::CREATE_WORKSPACE, create(fresh(), &long)))
        .await;
    assert_eq!(r.expect_err("too long").code(), Code::InvalidArgument);

    // Duplicate project and environment names.
    let dup_project = u
        .c()
        .create_project(u.sign(
            methods::CREATE_PROJECT,
            CreateProjectRequest {
                statements: Vec::new(),
                workspace: "acme".into(),
                id: uuid::Uuid::new_v4().to_string(),
                name: "api".into(),
                wrapped_key: vec![1; 74],
            },
        ))
        .await;
    assert_status(
        dup_project,
        Code::AlreadyExists,
        "project 'api' already exists in workspace 'acme'",
    );
    let dup_env = u
        .c()
        .create_environment(u.sign(
            methods::CREATE_ENVIRONMENT,
            CreateEnvironmentRequest {
                statements: Vec::new(),
                workspace: "acme".into(),
                project: "api".into(),
                id: uuid::Uuid::new_v4().to_string(),
                name: "prod".into(),
                wrapped_key: vec![1; 74],
            },
        ))
        .await;
    assert_status(
        dup_env,
        Code::AlreadyExists,
        "environment 'prod' already exists in project 'api'",
    );
}

#[tokio::test]
async fn strangers_cannot_tell_hidden_from_missing() {
    let s = Server::start().await;
    let alice = s.join("alice@example.com").await;
    let bob = s.join("bob@example.com").await;
    alice.scaffold("acme", "api", "prod").await;

    let hidden = get_env(&bob, "acme", "api", "prod").await;
    let missing = get_env(&bob, "nope", "api", "prod").await;
    assert_eq!(hidden.as_ref().expect_err("hidden").code(), Code::NotFound);
    assert_eq!(
        hidden.expect_err("hidden").message(),
        "workspace 'acme' not found"
    );
    assert_eq!(
        missing.expect_err("missing").message(),
        "workspace 'nope' not found"
    );

    let list = bob
        .c()
        .list_workspaces(bob.sign(methods::LIST_WORKSPACES, ListWorkspacesRequest {}))
        .await
        .expect("list")
        .into_inner();
    assert!(list.workspaces.is_empty());
    assert_status(
        bob.c()
            .create_project(bob.sign(
                methods::CREATE_PROJECT,
                CreateProjectRequest {
                    statements: Vec::new(),
                    workspace: "acme".into(),
                    id: uuid::Uuid::new_v4().to_string(),
                    name: "x".into(),
                    wrapped_key: vec![1; 74],
                },
            ))
            .await,
        Code::NotFound,
        "workspace 'acme' not found",
    );
    assert_status(
        bob.c()
            .list_audit(bob.sign(
                methods::LIST_AUDIT,
                ListAuditRequest {
                    workspace: "acme".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
        "workspace 'acme' not found",
    );
}

#[tokio::test]
async fn environment_grantee_sees_only_its_environment() {
    let s = Server::start().await;
    let alice = s.join("alice@example.com").await;
    let bob = s.join("bob@example.com").await;
    let prod = alice.scaffold("acme", "api", "prod").await;
    alice
        .write_new(&prod, &[("DB_URL", b"postgres://prod")])
        .await
        .expect("write");
    // A sibling environment bob must not see.
    let staging_id = uuid::Uuid::new_v4().to_string();
    alice
        .c()
        .create_environment(alice.sign(
            methods::CREATE_ENVIRONMENT,
            CreateEnvironmentRequest {
                statements: Vec::new(),
                workspace: "acme".into(),
                project: "api".into(),
                id: staging_id,
                name: "staging".into(),
                wrapped_key: {
                    let mut w = vec![0u8; 74];
                    w[0] = 1;
                    w[1] = 1;
                    w
                },
            },
        ))
        .await
        .expect("staging");
    grant_environment(&s, &prod, &bob, &alice, 1).await;

    // Bob derives EK from his environment grant and reads the secret.
    let keys = get_env(&bob, "acme", "api", "prod").await.expect("keys");
    assert_eq!(keys.grant_scope, ScopeKind::Environment as i32);
    assert_eq!(keys.role, Role::Read as i32);
    assert!(keys.project_wrapped_key.is_empty() && keys.environment_wrapped_key.is_empty());
    let (value, _) = bob.read(&prod, "DB_URL").await.expect("read");
    assert_eq!(value, b"postgres://prod");

    // Sibling hidden, exactly like a missing one.
    let sibling = get_env(&bob, "acme", "api", "staging").await;
    let missing = get_env(&bob, "acme", "api", "nope").await;
    assert_eq!(
        sibling.expect_err("hidden").message(),
        "environment 'staging' not found in project 'api'"
    );
    assert_eq!(
        missing.expect_err("missing").message(),
        "environment 'nope' not found in project 'api'"
    );
    let envs = bob
        .c()
        .list_environments(bob.sign(
            methods::LIST_ENVIRONMENTS,
            ListEnvironmentsRequest {
                workspace: "acme".into(),
                project: "api".into(),
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .environments;
    assert_eq!(
        envs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["prod"]
    );

    // Read role: writing is refused with a clear message, and the refusal is audited.
    let w = bob.secret_write(&prod, "DB_URL", Some(b"evil"), 2, ZERO_HASH);
    assert_status(
        bob.write(&prod, vec![w], 0).await,
        Code::PermissionDenied,
        "permission denied: writing secrets on environment 'prod' in project 'api' needs the write role (you have read)",
    );
    let trail = alice.audit("acme").await;
    let denied = trail.entries.last().expect("an entry");
    assert_eq!(denied.result, "permission_denied");
    assert_eq!(denied.actor_principal_id, bob.id.to_string());
    assert_eq!(denied.action, "secret.write");

    // Scope keys above the grant are not his to derive; the workspace audit is admin-only.
    assert_status(
        bob.c()
            .get_scope_keys(bob.sign(
                methods::GET_SCOPE_KEYS,
                GetScopeKeysRequest {
                    workspace: "acme".into(),
                    project: "api".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "permission denied: no grant of yours covers project 'api' in workspace 'acme', so its key is not yours to derive",
    );
    assert_status(
        bob.c()
            .list_audit(bob.sign(
                methods::LIST_AUDIT,
                ListAuditRequest {
                    workspace: "acme".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
        "permission denied: reading the audit trail on workspace 'acme' needs the admin role (you have no role there)",
    );
}

#[tokio::test]
async fn scope_keys_let_an_admin_derive_workspace_and_project_keys() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    let wctx = ctx(CryptoScope::Workspace, *env.ws_id.as_bytes());
    let pctx = ctx(CryptoScope::Project, *env.project_id.as_bytes());

    let ws = u
        .c()
        .get_scope_keys(u.sign(
            methods::GET_SCOPE_KEYS,
            GetScopeKeysRequest {
                workspace: "acme".into(),
                project: String::new(),
            },
        ))
        .await
        .expect("ws keys")
        .into_inner();
    assert_eq!(ws.grant_scope, ScopeKind::Workspace as i32);
    assert_eq!(ws.role, Role::Admin as i32);
    assert!(ws.project_id.is_empty() && ws.project_wrapped_key.is_empty());
    let wk = unwrap_from_recipient(
        &WrappedKey::from_bytes(ws.grant_wrapped_key),
        &wctx,
        &u.id,
        &u.keys.agreement,
    )
    .expect("unwrap wk");
    assert!(wk == env.wk);

    let p = u
        .c()
        .get_scope_keys(u.sign(
            methods::GET_SCOPE_KEYS,
            GetScopeKeysRequest {
                workspace: "acme".into(),
                project: "api".into(),
            },
        ))
        .await
        .expect("project keys")
        .into_inner();
    assert_eq!(p.project_id, env.project_id.to_string());
    let pk = unwrap_under(
        &WrappedKey::from_bytes(p.project_wrapped_key),
        &pctx,
        &wk,
        &wctx,
    )
    .expect("unwrap pk");
    assert!(pk == env.pk);
}

#[tokio::test]
async fn deletes_hide_scopes_and_free_their_names() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    u.scaffold("acme", "api", "prod").await;
    u.c()
        .delete_environment(u.sign(
            methods::DELETE_ENVIRONMENT,
            DeleteEnvironmentRequest {
                env: env_ref("acme", "api", "prod"),
            },
        ))
        .await
        .expect("delete env");
    assert_status(
        get_env(&u, "acme", "api", "prod").await,
        Code::NotFound,
        "environment 'prod' not found in project 'api'",
    );
    u.c()
        .delete_project(u.sign(
            methods::DELETE_PROJECT,
            DeleteProjectRequest {
                workspace: "acme".into(),
                project: "api".into(),
            },
        ))
        .await
        .expect("delete project");
    assert_status(
        get_env(&u, "acme", "api", "prod").await,
        Code::NotFound,
        "project 'api' not found in workspace 'acme'",
    );
    u.c()
        .delete_workspace(u.sign(
            methods::DELETE_WORKSPACE,
            DeleteWorkspaceRequest {
                workspace: "acme".into(),
            },
        ))
        .await
        .expect("delete workspace");
    assert_status(
        u.c()
            .delete_workspace(u.sign(
                methods::DELETE_WORKSPACE,
                DeleteWorkspaceRequest {
                    workspace: "acme".into(),
                },
            ))
            .await,
        Code::NotFound,
        "workspace 'acme' not found",
    );
    // The name is free again.
    let again = u.scaffold("acme", "api", "prod").await;
    let keys = get_env(&u, "acme", "api", "prod").await.expect("keys");
    assert_eq!(keys.environment_id, again.env_id.to_string());
}
