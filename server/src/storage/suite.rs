//! The backend conformance suite: one set of behaviours every [`Storage`] implementation must
//! show, written against `&dyn Storage` so SQLite and PostgreSQL run exactly the same checks
//! (call [`run_all`] from each backend's test with a fresh, empty database).
//!
//! It panics with a descriptive message on the first deviation, like any test.

use zopp_crypto::envelope::{Envelope, NameDigest};
use zopp_crypto::ids::{EnvironmentId, InviteId, PrincipalId, ProjectId, UserId, WorkspaceId};
use zopp_crypto::keys::{AgreementSecret, SigningKey, SIGNATURE_LEN};
use zopp_crypto::sign::ZERO_HASH;
use zopp_crypto::wrap::WrappedKey;

use super::*;
use crate::rbac::{Role, Scope};

/// A fixed "now" for deterministic data.
pub const T0: i64 = 1_700_000_000_000;

/// Runs every check against an empty database.
pub async fn run_all(store: &dyn Storage) {
    store.ping().await.expect("ping");
    invites_and_join(store).await;
    scopes_and_names(store).await;
    grants_and_resolution(store).await;
    secret_writes_and_conflicts(store).await;
    point_in_time_reads(store).await;
    retention_prunes_in_the_write(store).await;
    environments_are_isolated(store).await;
    audit_chains(store).await;
    deletes_hide_children(store).await;
}

fn principal(seed: u8) -> NewPrincipal {
    NewPrincipal {
        id: PrincipalId::from_bytes([seed; 16]),
        name: format!("device-{seed}"),
        signing_key: SigningKey::from_seed(&[seed; 32]).verifying_key(),
        agreement_key: AgreementSecret::from_bytes([seed; 32]).public_key(),
        admitted_by: None,
        admission_signature: Vec::new(),
        expires_at_ms: None,
    }
}

fn draft(chain: AuditChain, action: &str, actor: Option<PrincipalId>) -> AuditDraft {
    AuditDraft {
        chain,
        time_ms: T0,
        actor,
        action: action.to_string(),
        scope: "server".to_string(),
        target: String::new(),
        method: "/zopp.v1.Zopp/Test".to_string(),
        request_timestamp_ms: T0,
        nonce: vec![1; 16],
        request_hash: vec![2; 32],
        signature: vec![3; 64],
        result: "ok".to_string(),
    }
}

fn digest(n: u8) -> NameDigest {
    NameDigest::try_from_slice(&[n; 32]).expect("32 bytes")
}

fn wk(n: u8) -> WrappedKey {
    WrappedKey::from_bytes(vec![n; 8])
}

async fn invite(store: &dyn Storage, seed: u8, expires_at_ms: i64) -> InviteId {
    let id = InviteId::from_bytes([seed; 16]);
    store
        .create_server_invite(
            ServerInviteRecord {
                id,
                secret_hash: [seed; 32],
                created_at_ms: T0,
                expires_at_ms,
                used_at_ms: None,
            },
            draft(AuditChain::Server, "invite.create", None),
        )
        .await
        .expect("create invite");
    id
}

pub(crate) async fn join(store: &dyn Storage, seed: u8, email: &str) -> Who {
    let inv = invite(store, seed, T0 + 3_600_000).await;
    let user = UserId::from_bytes([seed; 16]);
    let p = principal(seed);
    let who = Who {
        principal: p.id,
        user: Some(user),
    };
    store
        .join(
            NewJoin {
                invite_id: inv,
                secret_hash: [seed; 32],
                user_id: user,
                email: email.to_string(),
                principal: p,
                now_ms: T0,
            },
            draft(AuditChain::Server, "principal.join", Some(who.principal)),
        )
        .await
        .expect("join");
    who
}

/// A joined user with a workspace, a project and an environment, ready for secret writes.
pub struct Fixture {
    /// The user.
    pub who: Who,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Its project.
    pub project: ProjectId,
    /// Its environment.
    pub environment: EnvironmentId,
}

impl Fixture {
    /// Creates the user (seed 200) and `fixture-ws/api/prod`.
    pub async fn new(store: &dyn Storage) -> Self {
        Self::named(store, 200, "fixture-ws").await
    }

    async fn named(store: &dyn Storage, seed: u8, ws_name: &str) -> Self {
        let who = join(store, seed, &format!("user{seed}@example.com")).await;
        let workspace = WorkspaceId::from_bytes([seed; 16]);
        let project = ProjectId::from_bytes([seed; 16]);
        let environment = EnvironmentId::from_bytes([seed; 16]);
        let chain = AuditChain::Workspace(workspace);
        store
            .create_workspace(
                NewWorkspace {
                    id: workspace,
                    name: ws_name.to_string(),
                    created_by: who.principal,
                    creator_user: who.user.expect("user principal"),
                    grant_id: GrantId::new_random(),
                    wrapped_key: wk(1),
                    now_ms: T0,
                },
                draft(chain, "workspace.create", Some(who.principal)),
            )
            .await
            .expect("create workspace");
        store
            .create_project(
                NewProject {
                    id: project,
                    workspace_id: workspace,
                    name: "api".to_string(),
                    wrapped_key: wk(2),
                    created_by: who.principal,
                    now_ms: T0,
                },
                draft(chain, "project.create", Some(who.principal)),
            )
            .await
            .expect("create project");
        store
            .create_environment(
                NewEnvironment {
                    id: environment,
                    project_id: project,
                    workspace_id: workspace,
                    name: "prod".to_string(),
                    wrapped_key: wk(3),
                    created_by: who.principal,
                    now_ms: T0,
                },
                draft(chain, "environment.create", Some(who.principal)),
            )
            .await
            .expect("create environment");
        Self {
            who,
            workspace,
            project,
            environment,
        }
    }

    /// A write of `version` of secret `d` following `prev` (the previous version's hash).
    pub fn version(&self, d: u8, version: u64, prev: [u8; 32], deleted: bool) -> NewSecretVersion {
        NewSecretVersion {
            name_digest: digest(d),
            version,
            key_epoch: 1,
            envelope: Envelope::from_bytes(if deleted {
                Vec::new()
            } else {
                vec![d, version as u8, 0xEE]
            }),
            deleted,
            signature: [d; SIGNATURE_LEN],
            prev_hash: prev,
            hash: [d.wrapping_add(version as u8); 32],
        }
    }

    /// Writes versions in one batch.
    pub async fn write(
        &self,
        store: &dyn Storage,
        writes: Vec<NewSecretVersion>,
        if_env_version: Option<u64>,
        now_ms: i64,
    ) -> Result<WriteOutcome> {
        let audit = writes
            .iter()
            .map(|w| AuditDraft {
                target: format!("secret/{}@{}", w.name_digest.to_hex(), w.version),
                ..draft(
                    AuditChain::Workspace(self.workspace),
                    "secret.write",
                    Some(self.who.principal),
                )
            })
            .collect();
        store
            .write_secrets(
                SecretWriteBatch {
                    environment_id: self.environment,
                    writer: self.who.principal,
                    if_env_version,
                    writes,
                    now_ms,
                },
                audit,
            )
            .await
    }

    /// Writes version 1 of secret `d`.
    pub async fn write_one(&self, store: &dyn Storage, d: u8) -> WriteOutcome {
        self.write(store, vec![self.version(d, 1, ZERO_HASH, false)], None, T0)
            .await
            .expect("write version 1")
    }

    fn path(&self) -> NamePath<'static> {
        NamePath {
            workspace: "fixture-ws",
            project: Some("api"),
            environment: Some("prod"),
        }
    }
}

async fn invites_and_join(store: &dyn Storage) {
    let inv = invite(store, 1, T0 + 1000).await;
    let rec = store
        .server_invite(inv)
        .await
        .expect("lookup")
        .expect("invite exists");
    assert_eq!(rec.secret_hash, [1; 32]);
    assert_eq!(rec.expires_at_ms, T0 + 1000);
    assert_eq!(rec.used_at_ms, None);

    let mk = |seed: u8, email: &str, secret: [u8; 32], now: i64| NewJoin {
        invite_id: inv,
        secret_hash: secret,
        user_id: UserId::from_bytes([seed; 16]),
        email: email.to_string(),
        principal: principal(seed),
        now_ms: now,
    };
    let audit = || draft(AuditChain::Server, "principal.join", None);

    // Wrong secret reads exactly like an unknown invite.
    assert!(matches!(
        store
            .join(mk(1, "a@example.com", [9; 32], T0), audit())
            .await,
        Err(StorageError::NotFound("invite"))
    ));
    // Expired.
    assert!(matches!(
        store
            .join(mk(1, "a@example.com", [1; 32], T0 + 1000), audit())
            .await,
        Err(StorageError::InviteExpired)
    ));
    // Success, then reuse.
    store
        .join(mk(1, "Alice@Example.com", [1; 32], T0), audit())
        .await
        .expect("join");
    let p = store
        .principal(PrincipalId::from_bytes([1; 16]))
        .await
        .expect("load")
        .expect("principal exists");
    assert_eq!(p.user_email.as_deref(), Some("Alice@Example.com"));
    assert_eq!(p.user_id, Some(UserId::from_bytes([1; 16])));
    assert_eq!(p.name, "device-1");
    assert_eq!(p.revoked_at_ms, None);
    assert_eq!(
        p.signing_key,
        SigningKey::from_seed(&[1; 32]).verifying_key()
    );
    assert!(store
        .server_invite(inv)
        .await
        .expect("lookup")
        .expect("exists")
        .used_at_ms
        .is_some());
    assert!(matches!(
        store
            .join(mk(2, "b@example.com", [1; 32], T0), audit())
            .await,
        Err(StorageError::InviteUsed)
    ));
    // Unknown invite.
    let unknown = NewJoin {
        invite_id: InviteId::from_bytes([99; 16]),
        ..mk(3, "c@example.com", [1; 32], T0)
    };
    assert!(matches!(
        store.join(unknown, audit()).await,
        Err(StorageError::NotFound("invite"))
    ));

    // Duplicate email (any ASCII case) and duplicate keys refuse and leave the invite unused.
    let inv2 = invite(store, 2, T0 + 1000).await;
    let dup_email = NewJoin {
        invite_id: inv2,
        secret_hash: [2; 32],
        ..mk(2, "alice@EXAMPLE.com", [2; 32], T0)
    };
    assert!(matches!(
        store.join(dup_email, audit()).await,
        Err(StorageError::AlreadyExists(Conflict::Email))
    ));
    let dup_key = NewJoin {
        invite_id: inv2,
        secret_hash: [2; 32],
        principal: NewPrincipal {
            id: PrincipalId::from_bytes([2; 16]),
            ..principal(1)
        },
        ..mk(2, "bob@example.com", [2; 32], T0)
    };
    assert!(matches!(
        store.join(dup_key, audit()).await,
        Err(StorageError::AlreadyExists(Conflict::PrincipalKey))
    ));
    assert!(store
        .principal(PrincipalId::from_bytes([2; 16]))
        .await
        .expect("load")
        .is_none());
    assert_eq!(
        store
            .server_invite(inv2)
            .await
            .expect("lookup")
            .expect("exists")
            .used_at_ms,
        None
    );
    let both = store
        .principals(&[
            PrincipalId::from_bytes([1; 16]),
            PrincipalId::from_bytes([1; 16]),
            PrincipalId::from_bytes([77; 16]),
        ])
        .await
        .expect("principals");
    assert_eq!(both.len(), 1);
}

async fn scopes_and_names(store: &dyn Storage) {
    let who = join(store, 10, "scopes@example.com").await;
    let user = who.user.expect("user");
    let ws = WorkspaceId::from_bytes([10; 16]);
    let new_ws = |id: WorkspaceId, name: &str| NewWorkspace {
        id,
        name: name.to_string(),
        created_by: who.principal,
        creator_user: user,
        grant_id: GrantId::new_random(),
        wrapped_key: wk(1),
        now_ms: T0,
    };
    let chain = AuditChain::Workspace(ws);
    let a = || draft(chain, "x", Some(who.principal));
    let rec = store
        .create_workspace(new_ws(ws, "acme"), a())
        .await
        .expect("create");
    assert_eq!(rec.name, "acme");
    assert!(matches!(
        store.create_workspace(new_ws(ws, "other"), a()).await,
        Err(StorageError::AlreadyExists(Conflict::WorkspaceId))
    ));
    assert!(matches!(
        store
            .create_workspace(new_ws(WorkspaceId::from_bytes([11; 16]), "acme"), a())
            .await,
        Err(StorageError::AlreadyExists(Conflict::WorkspaceName))
    ));
    let p = ProjectId::from_bytes([10; 16]);
    let new_p = |id: ProjectId, ws: WorkspaceId, name: &str| NewProject {
        id,
        workspace_id: ws,
        name: name.to_string(),
        wrapped_key: wk(2),
        created_by: who.principal,
        now_ms: T0,
    };
    store
        .create_project(new_p(p, ws, "api"), a())
        .await
        .expect("project");
    assert!(matches!(
        store.create_project(new_p(p, ws, "web"), a()).await,
        Err(StorageError::AlreadyExists(Conflict::ProjectId))
    ));
    assert!(matches!(
        store
            .create_project(new_p(ProjectId::from_bytes([12; 16]), ws, "api"), a())
            .await,
        Err(StorageError::AlreadyExists(Conflict::ProjectName))
    ));
    assert!(matches!(
        store
            .create_project(
                new_p(
                    ProjectId::from_bytes([13; 16]),
                    WorkspaceId::from_bytes([99; 16]),
                    "x"
                ),
                a()
            )
            .await,
        Err(StorageError::NotFound("workspace"))
    ));
    let e = EnvironmentId::from_bytes([10; 16]);
    let new_e = |id: EnvironmentId, project: ProjectId, name: &str| NewEnvironment {
        id,
        project_id: project,
        workspace_id: ws,
        name: name.to_string(),
        wrapped_key: wk(3),
        created_by: who.principal,
        now_ms: T0,
    };
    let env = store
        .create_environment(new_e(e, p, "prod"), a())
        .await
        .expect("env");
    assert_eq!((env.key_epoch, env.env_version), (1, 0));
    assert!(matches!(
        store.create_environment(new_e(e, p, "dev"), a()).await,
        Err(StorageError::AlreadyExists(Conflict::EnvironmentId))
    ));
    assert!(matches!(
        store
            .create_environment(new_e(EnvironmentId::from_bytes([11; 16]), p, "prod"), a())
            .await,
        Err(StorageError::AlreadyExists(Conflict::EnvironmentName))
    ));
    assert!(matches!(
        store
            .create_environment(
                new_e(
                    EnvironmentId::from_bytes([12; 16]),
                    ProjectId::from_bytes([98; 16]),
                    "dev"
                ),
                a()
            )
            .await,
        Err(StorageError::NotFound("project"))
    ));
    store
        .create_environment(new_e(EnvironmentId::from_bytes([13; 16]), p, "dev"), a())
        .await
        .expect("second env");
    let envs = store.environments(p).await.expect("list envs");
    assert_eq!(
        envs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["dev", "prod"]
    );
    let projects = store.projects(ws).await.expect("list projects");
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].wrapped_key, wk(2));
    let listed = store.workspaces_for(&who).await.expect("workspaces");
    assert_eq!(listed, vec![rec]);
}

async fn grants_and_resolution(store: &dyn Storage) {
    let f = Fixture::named(store, 20, "grants-ws").await;
    let r = store
        .resolve(
            &f.who,
            &NamePath {
                workspace: "grants-ws",
                project: Some("api"),
                environment: Some("prod"),
            },
        )
        .await
        .expect("resolve");
    assert_eq!(r.workspace.as_ref().map(|w| w.id), Some(f.workspace));
    assert_eq!(r.project.as_ref().map(|p| p.id), Some(f.project));
    let env = r.environment.as_ref().expect("environment resolved");
    assert_eq!(env.id, f.environment);
    assert_eq!(env.project_id, f.project);
    assert_eq!(env.workspace_id, f.workspace);
    assert_eq!(env.wrapped_key, wk(3));
    assert_eq!(r.grants.len(), 1);
    let g = &r.grants[0];
    assert_eq!(g.grant.scope, Scope::Workspace(f.workspace));
    assert_eq!(g.grant.role, Role::Admin);
    assert_eq!(
        g.keys,
        vec![GrantKeyRecord {
            key_epoch: 1,
            wrapped_key: wk(1)
        }]
    );

    // Partial resolutions stop where the names stop matching.
    let r = store
        .resolve(
            &f.who,
            &NamePath {
                workspace: "grants-ws",
                project: Some("nope"),
                environment: Some("prod"),
            },
        )
        .await
        .expect("resolve");
    assert!(r.workspace.is_some() && r.project.is_none() && r.environment.is_none());
    let r = store
        .resolve(
            &f.who,
            &NamePath {
                workspace: "grants-ws",
                project: Some("api"),
                environment: None,
            },
        )
        .await
        .expect("resolve");
    assert!(r.project.is_some() && r.environment.is_none());
    let r = store
        .resolve(
            &f.who,
            &NamePath {
                workspace: "no-such-ws",
                project: None,
                environment: None,
            },
        )
        .await
        .expect("resolve");
    assert!(r.workspace.is_none() && r.grants.is_empty());

    // Another principal sees the workspace but holds no grants in it.
    let stranger = Who {
        principal: PrincipalId::from_bytes([1; 16]),
        user: Some(UserId::from_bytes([1; 16])),
    };
    let r = store
        .resolve(
            &stranger,
            &NamePath {
                workspace: "grants-ws",
                project: None,
                environment: None,
            },
        )
        .await
        .expect("resolve");
    assert!(r.workspace.is_some());
    assert!(r.grants.is_empty());
    assert!(!store
        .workspaces_for(&stranger)
        .await
        .expect("list")
        .iter()
        .any(|w| w.id == f.workspace));
}

async fn secret_writes_and_conflicts(store: &dyn Storage) {
    let f = Fixture::named(store, 30, "writes-ws").await;
    let audit_before = store
        .list_audit(
            AuditChain::Workspace(f.workspace),
            &AuditQuery {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .expect("audit")
        .head_seq;

    let out = f
        .write(
            store,
            vec![
                f.version(1, 1, ZERO_HASH, false),
                f.version(2, 1, ZERO_HASH, false),
            ],
            Some(0),
            T0 + 10,
        )
        .await
        .expect("first batch");
    assert_eq!(out.env_version, 1);
    assert_eq!(out.created_at_ms, T0 + 10);
    let v1 = store
        .secret_version(f.environment, &digest(1), None)
        .await
        .expect("head")
        .expect("exists");
    assert_eq!(v1.version, 1);
    assert_eq!(v1.env_version, 1);
    assert_eq!(v1.writer, f.who.principal);
    assert_eq!(v1.prev_hash, ZERO_HASH);
    assert_eq!(v1.envelope, Envelope::from_bytes(vec![1, 1, 0xEE]));

    // Wrong version, wrong prev hash, stale if_env_version, wrong key epoch: each refuses the
    // whole batch, even when the other writes in it are fine.
    let good = f.version(2, 2, v1_hash(store, &f, 2).await, false);
    let cases: Vec<(Vec<NewSecretVersion>, Option<u64>)> = vec![
        (vec![good.clone(), f.version(1, 3, v1.hash, false)], None),
        (vec![good.clone(), f.version(1, 2, [0xAB; 32], false)], None),
        (vec![good.clone(), f.version(3, 2, ZERO_HASH, false)], None),
        (vec![good.clone()], Some(7)),
        (
            vec![
                good.clone(),
                NewSecretVersion {
                    key_epoch: 2,
                    ..f.version(1, 2, v1.hash, false)
                },
            ],
            None,
        ),
    ];
    let mut errors = Vec::new();
    for (writes, ifv) in cases {
        errors.push(
            f.write(store, writes, ifv, T0 + 20)
                .await
                .expect_err("refused"),
        );
    }
    assert!(matches!(
        errors[0],
        StorageError::VersionConflict { current: 1, .. }
    ));
    assert!(matches!(errors[1], StorageError::PrevHashMismatch { .. }));
    assert!(matches!(
        errors[2],
        StorageError::VersionConflict { current: 0, .. }
    ));
    assert!(matches!(
        errors[3],
        StorageError::EnvironmentChanged { current: 1 }
    ));
    assert!(matches!(
        errors[4],
        StorageError::KeyEpochMismatch { current: 1 }
    ));
    assert_eq!(
        errors[0].to_string(),
        format!(
            "version conflict on secret {}: current version is 1",
            hex::encode([1u8; 8])
        )
    );
    // Nothing changed.
    assert_eq!(
        store.environment_version(f.environment).await.expect("v"),
        Some(1)
    );
    let h2 = store
        .secret_history(f.environment, &digest(2))
        .await
        .expect("history");
    assert_eq!(h2.len(), 1);
    assert!(store
        .secret_version(f.environment, &digest(3), None)
        .await
        .expect("head")
        .is_none());
    let audit_after = store
        .list_audit(
            AuditChain::Workspace(f.workspace),
            &AuditQuery {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .expect("audit")
        .head_seq;
    assert_eq!(audit_after, audit_before + 2, "only the good batch audited");

    // A tombstone then a resurrection.
    let out = f
        .write(
            store,
            vec![f.version(1, 2, v1.hash, true)],
            Some(1),
            T0 + 30,
        )
        .await
        .expect("delete");
    assert_eq!(out.env_version, 2);
    let head = store
        .secret_version(f.environment, &digest(1), None)
        .await
        .expect("head")
        .expect("tombstone head");
    assert!(head.deleted);
    assert!(head.envelope.as_bytes().is_empty());
    let out = f
        .write(
            store,
            vec![f.version(1, 3, head.hash, false)],
            None,
            T0 + 40,
        )
        .await
        .expect("resurrect");
    assert_eq!(out.env_version, 3);
    let hist = store
        .secret_history(f.environment, &digest(1))
        .await
        .expect("history");
    assert_eq!(
        hist.iter()
            .map(|v| (v.version, v.env_version, v.deleted))
            .collect::<Vec<_>>(),
        [(1, 1, false), (2, 2, true), (3, 3, false)]
    );
    assert_eq!(hist[1].prev_hash, hist[0].hash);
    let v2 = store
        .secret_version(f.environment, &digest(1), Some(2))
        .await
        .expect("v2")
        .expect("exists");
    assert_eq!(v2, hist[1]);
    assert!(store
        .secret_version(f.environment, &digest(1), Some(9))
        .await
        .expect("v9")
        .is_none());

    // The one-call read: head with its predecessor and writer, or a given version.
    let read = store
        .secret_read(f.environment, &digest(1), None)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.secret, hist[2]);
    assert_eq!(read.previous.as_ref(), Some(&hist[1]));
    assert_eq!(read.writer.as_ref().map(|p| p.id), Some(f.who.principal));
    assert_eq!(
        read.writer.and_then(|p| p.user_email).as_deref(),
        Some("user30@example.com")
    );
    let first = store
        .secret_read(f.environment, &digest(1), Some(1))
        .await
        .expect("read v1")
        .expect("exists");
    assert_eq!(first.secret, hist[0]);
    assert!(first.previous.is_none());
    assert!(store
        .secret_read(f.environment, &digest(1), Some(9))
        .await
        .expect("read v9")
        .is_none());
    assert!(store
        .secret_read(f.environment, &digest(9), None)
        .await
        .expect("read unknown")
        .is_none());
}

async fn v1_hash(store: &dyn Storage, f: &Fixture, d: u8) -> [u8; 32] {
    store
        .secret_version(f.environment, &digest(d), Some(1))
        .await
        .expect("read")
        .expect("exists")
        .hash
}

async fn point_in_time_reads(store: &dyn Storage) {
    let f = Fixture::named(store, 40, "pit-ws").await;
    // env_version 1 at T0+100: a1, b1.  2 at T0+200: a2.  3 at T0+300: b deleted.
    f.write(
        store,
        vec![
            f.version(1, 1, ZERO_HASH, false),
            f.version(2, 1, ZERO_HASH, false),
        ],
        None,
        T0 + 100,
    )
    .await
    .expect("w1");
    let a1 = v1_hash(store, &f, 1).await;
    let b1 = v1_hash(store, &f, 2).await;
    f.write(store, vec![f.version(1, 2, a1, false)], None, T0 + 200)
        .await
        .expect("w2");
    f.write(store, vec![f.version(2, 2, b1, true)], None, T0 + 300)
        .await
        .expect("w3");

    let summary = |s: &EnvironmentState| {
        (
            s.env_version,
            s.versions
                .iter()
                .map(|v| (v.name_digest.as_bytes()[0], v.version))
                .collect::<Vec<_>>(),
        )
    };
    let now = store
        .environment_state(f.environment, PointInTime::Now)
        .await
        .expect("now");
    assert_eq!(summary(&now), (3, vec![(1, 2)]));
    for (at, expected) in [
        (PointInTime::AtEnvVersion(1), (1, vec![(1, 1), (2, 1)])),
        (PointInTime::AtEnvVersion(2), (2, vec![(1, 2), (2, 1)])),
        (PointInTime::AtEnvVersion(3), (3, vec![(1, 2)])),
        (PointInTime::AtMs(T0 + 50), (0, vec![])),
        (PointInTime::AtMs(T0 + 100), (1, vec![(1, 1), (2, 1)])),
        (PointInTime::AtMs(T0 + 250), (2, vec![(1, 2), (2, 1)])),
        (PointInTime::AtMs(T0 + 10_000), (3, vec![(1, 2)])),
    ] {
        let s = store
            .environment_state(f.environment, at)
            .await
            .expect("state");
        assert_eq!(summary(&s), expected, "{at:?}");
    }
    assert!(matches!(
        store
            .environment_state(EnvironmentId::from_bytes([0xEE; 16]), PointInTime::Now)
            .await,
        Err(StorageError::NotFound("environment"))
    ));
}

/// Issue #5: a per-environment retention limit prunes the oldest versions of each secret in the
/// same transaction as the write (or as the limit), raises the history floor so that
/// point-in-time reads of pruned states fail instead of answering wrong, and never touches the
/// audit trail.
async fn retention_prunes_in_the_write(store: &dyn Storage) {
    let f = Fixture::named(store, 41, "retention-ws").await;
    let chain = AuditChain::Workspace(f.workspace);
    let audit_head = || async {
        store
            .list_audit(
                chain,
                &AuditQuery {
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .expect("audit")
            .head_seq
    };
    let history = |d: u8| async move {
        store
            .secret_history(f.environment, &digest(d))
            .await
            .expect("history")
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>()
    };
    let retention = |keep: Option<u64>| {
        store.set_retention(
            f.environment,
            keep,
            draft(chain, "environment.retention", Some(f.who.principal)),
        )
    };
    // env_version 1..3: a1, a2, a3 (T0+100, +200, +300); 4: b1 (T0+400).
    let mut prev = ZERO_HASH;
    for v in 1..=3u64 {
        f.write(
            store,
            vec![f.version(1, v, prev, false)],
            None,
            T0 + 100 * v as i64,
        )
        .await
        .expect("write a");
        prev = f.version(1, v, prev, false).hash;
    }
    f.write(
        store,
        vec![f.version(2, 1, ZERO_HASH, false)],
        None,
        T0 + 400,
    )
    .await
    .expect("write b");
    // By default nothing is pruned.
    assert_eq!(history(1).await, vec![1, 2, 3]);
    let env = store.environments(f.project).await.expect("list");
    assert_eq!((env[0].keep_versions, env[0].history_floor), (None, 0));

    let before = audit_head().await;
    let out = retention(Some(2)).await.expect("set retention");
    assert_eq!(
        out,
        RetentionOutcome {
            pruned: 1,
            history_floor: 2
        }
    );
    assert_eq!(audit_head().await, before + 1, "the change is audited");
    assert_eq!(history(1).await, vec![2, 3]);
    assert_eq!(history(2).await, vec![1]);
    let env = store.environments(f.project).await.expect("list");
    assert_eq!((env[0].keep_versions, env[0].history_floor), (Some(2), 2));
    // States before the floor are refused, by version and by time; later ones are exact.
    for at in [PointInTime::AtEnvVersion(1), PointInTime::AtMs(T0 + 150)] {
        assert!(
            matches!(
                store.environment_state(f.environment, at).await,
                Err(StorageError::Pruned { floor: 2 })
            ),
            "{at:?}"
        );
    }
    let s = store
        .environment_state(f.environment, PointInTime::AtEnvVersion(2))
        .await
        .expect("state at the floor");
    assert_eq!(
        s.versions
            .iter()
            .map(|v| (v.name_digest.as_bytes()[0], v.version))
            .collect::<Vec<_>>(),
        vec![(1, 2)]
    );

    // The next write of `a` prunes a2 in its own transaction; the floor follows.
    let out = f
        .write(store, vec![f.version(1, 4, prev, false)], None, T0 + 500)
        .await
        .expect("write a4");
    assert_eq!(out.env_version, 5);
    prev = f.version(1, 4, prev, false).hash;
    assert_eq!(history(1).await, vec![3, 4]);
    assert!(matches!(
        store
            .environment_state(f.environment, PointInTime::AtEnvVersion(2))
            .await,
        Err(StorageError::Pruned { floor: 3 })
    ));
    // Pruning never touches the audit trail: every write is still there.
    assert_eq!(audit_head().await, before + 2);

    // Clearing the limit keeps everything again.
    let out = retention(None).await.expect("clear retention");
    assert_eq!(out.pruned, 0);
    f.write(store, vec![f.version(1, 5, prev, false)], None, T0 + 600)
        .await
        .expect("write a5");
    assert_eq!(history(1).await, vec![3, 4, 5]);
    let env = store.environments(f.project).await.expect("list");
    assert_eq!((env[0].keep_versions, env[0].history_floor), (None, 3));

    assert!(matches!(
        store
            .set_retention(
                EnvironmentId::from_bytes([0xEE; 16]),
                Some(1),
                draft(chain, "environment.retention", None)
            )
            .await,
        Err(StorageError::NotFound(_))
    ));
}

async fn environments_are_isolated(store: &dyn Storage) {
    let f = Fixture::named(store, 50, "iso-a").await;
    let g = Fixture::named(store, 51, "iso-b").await;
    f.write_one(store, 1).await;
    g.write_one(store, 1).await;
    g.write(store, vec![g.version(2, 1, ZERO_HASH, false)], None, T0 + 1)
        .await
        .expect("write");
    let a = store
        .environment_state(f.environment, PointInTime::Now)
        .await
        .expect("a");
    assert_eq!(a.versions.len(), 1);
    assert!(a.versions.iter().all(|v| v.environment_id == f.environment));
    assert!(store
        .secret_version(f.environment, &digest(2), None)
        .await
        .expect("read")
        .is_none());
    // The same digest in two environments are two secrets with their own version counters.
    assert_eq!(
        store.environment_version(f.environment).await.expect("v"),
        Some(1)
    );
    assert_eq!(
        store.environment_version(g.environment).await.expect("v"),
        Some(2)
    );
}

async fn audit_chains(store: &dyn Storage) {
    let ws = WorkspaceId::from_bytes([60; 16]);
    let chain = AuditChain::Workspace(ws);
    let actor = PrincipalId::from_bytes([61; 16]);
    let mut drafts = Vec::new();
    for i in 0..5 {
        drafts.push(AuditDraft {
            time_ms: T0 + i,
            ..draft(
                chain,
                if i % 2 == 0 {
                    "secret.read"
                } else {
                    "secret.write"
                },
                if i < 3 { Some(actor) } else { None },
            )
        });
    }
    let sealed = store.append_audit(drafts).await.expect("append");
    assert_eq!(
        sealed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(sealed[0].prev_hash, ZERO_HASH);
    for w in sealed.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    // A second append continues the chain.
    let more = store
        .append_audit(vec![draft(chain, "secret.read", Some(actor))])
        .await
        .expect("append");
    assert_eq!(more[0].seq, 6);
    assert_eq!(more[0].prev_hash, sealed[4].hash);
    // Recompute every hash from the stored fields.
    let all = store
        .list_audit(
            chain,
            &AuditQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(all.entries.len(), 6);
    assert_eq!(all.head_seq, 6);
    assert_eq!(all.head_hash, more[0].hash);
    let mut head = None;
    for e in &all.entries {
        let again = seal_audit(e.draft.clone(), head);
        assert_eq!(&again, e, "stored entry {} re-hashes identically", e.seq);
        head = Some((e.seq, e.hash));
    }
    // Paging and filters.
    let page = |q: AuditQuery| async move {
        store
            .list_audit(chain, &q)
            .await
            .expect("list")
            .entries
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        page(AuditQuery {
            after_seq: 2,
            limit: 2,
            ..Default::default()
        })
        .await,
        [3, 4]
    );
    assert_eq!(
        page(AuditQuery {
            limit: 100,
            action: Some("secret.write".into()),
            ..Default::default()
        })
        .await,
        [2, 4]
    );
    assert_eq!(
        page(AuditQuery {
            limit: 100,
            actor: Some(actor),
            ..Default::default()
        })
        .await,
        [1, 2, 3, 6]
    );
    assert_eq!(
        page(AuditQuery {
            limit: 100,
            since_ms: Some(T0 + 1),
            until_ms: Some(T0 + 3),
            ..Default::default()
        })
        .await,
        [2, 3, 4]
    );
    // Chains are independent.
    let other = store
        .list_audit(
            AuditChain::Workspace(WorkspaceId::from_bytes([62; 16])),
            &AuditQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert!(other.entries.is_empty());
    assert_eq!((other.head_seq, other.head_hash), (0, ZERO_HASH));
    let server = store
        .list_audit(
            AuditChain::Server,
            &AuditQuery {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .expect("server chain");
    assert!(server
        .entries
        .iter()
        .any(|e| e.draft.action == "principal.join"));
}

async fn deletes_hide_children(store: &dyn Storage) {
    let f = Fixture::named(store, 70, "del-ws").await;
    let a = || {
        draft(
            AuditChain::Workspace(f.workspace),
            "delete",
            Some(f.who.principal),
        )
    };
    f.write_one(store, 1).await;
    store
        .delete_environment(f.environment, T0 + 1, a())
        .await
        .expect("delete env");
    assert!(matches!(
        store.delete_environment(f.environment, T0 + 2, a()).await,
        Err(StorageError::NotFound("environment"))
    ));
    assert_eq!(
        store.environment_version(f.environment).await.expect("v"),
        None
    );
    assert!(matches!(
        f.write(store, vec![f.version(2, 1, ZERO_HASH, false)], None, T0 + 3)
            .await,
        Err(StorageError::NotFound("environment"))
    ));
    // The name is free again; the old versions stay stored.
    store
        .create_environment(
            NewEnvironment {
                id: EnvironmentId::from_bytes([71; 16]),
                project_id: f.project,
                workspace_id: f.workspace,
                name: "prod".into(),
                wrapped_key: wk(3),
                created_by: f.who.principal,
                now_ms: T0 + 4,
            },
            a(),
        )
        .await
        .expect("recreate prod");
    assert_eq!(
        store
            .secret_history(f.environment, &digest(1))
            .await
            .expect("history")
            .len(),
        1
    );
    store
        .delete_workspace(f.workspace, T0 + 5, a())
        .await
        .expect("delete ws");
    let r = store
        .resolve(&f.who, &f.path_in("del-ws"))
        .await
        .expect("resolve");
    assert!(r.workspace.is_none());
    assert!(store
        .projects(f.workspace)
        .await
        .expect("projects")
        .is_empty());
    assert!(store
        .environments(f.project)
        .await
        .expect("envs")
        .is_empty());
    assert!(!store
        .workspaces_for(&f.who)
        .await
        .expect("list")
        .iter()
        .any(|w| w.id == f.workspace));
    assert!(matches!(
        store.delete_project(f.project, T0 + 6, a()).await,
        Err(StorageError::NotFound("project"))
    ));
}

impl Fixture {
    fn path_in<'a>(&self, ws: &'a str) -> NamePath<'a> {
        NamePath {
            workspace: ws,
            ..self.path()
        }
    }
}
