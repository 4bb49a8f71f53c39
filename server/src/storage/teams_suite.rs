//! The conformance suite of [`TeamStorage`]: the same checks against SQLite and PostgreSQL
//! (call [`run_all`] with a fresh, empty database). It panics on the first deviation.

use zopp_crypto::ids::{EnvironmentId, InviteId, PrincipalId, UserId};
use zopp_crypto::keys::{AgreementSecret, SigningKey};
use zopp_crypto::wrap::WrappedKey;

use super::suite::{Fixture, T0};
use super::teams::*;
use super::*;
use crate::rbac::{Role, Scope};

/// Runs every check against an empty database.
pub async fn run_all(store: &dyn Storage) {
    let f = Fixture::new(store).await;
    let meta = store
        .workspace_meta(f.workspace)
        .await
        .expect("meta")
        .expect("live workspace");
    assert_eq!(meta.creator, f.who.principal);
    assert_eq!(meta.key_epoch, 1);
    let bob = invites_and_joins(store, &f).await;
    grants_carry_keys(store, &f, &bob).await;
    service_principals_and_revocation(store, &f).await;
    rotation(store, &f, &bob).await;
    device_exports(store, &f).await;
}

fn draft(f: &Fixture, action: &str) -> AuditDraft {
    AuditDraft {
        chain: AuditChain::Workspace(f.workspace),
        time_ms: T0,
        actor: Some(f.who.principal),
        action: action.to_string(),
        scope: format!("workspace/{}", f.workspace),
        target: String::new(),
        method: "/zopp.v1.Zopp/Test".to_string(),
        request_timestamp_ms: T0,
        nonce: vec![1; 16],
        request_hash: vec![2; 32],
        signature: vec![3; 64],
        result: "ok".to_string(),
    }
}

fn wrapped(n: u8) -> WrappedKey {
    WrappedKey::from_bytes(vec![n; 106])
}

fn principal(seed: u8) -> NewPrincipal {
    NewPrincipal {
        id: PrincipalId::from_bytes([seed; 16]),
        name: format!("device-{seed}"),
        signing_key: SigningKey::from_seed(&[seed; 32]).verifying_key(),
        agreement_key: AgreementSecret::from_bytes([seed; 32]).public_key(),
        admitted_by: None,
        admission_signature: vec![seed; 64],
        expires_at_ms: None,
    }
}

fn key(p: PrincipalId, epoch: u32, n: u8) -> NewGrantKey {
    NewGrantKey {
        principal: p,
        key_epoch: epoch,
        wrapped_key: wrapped(n),
    }
}

fn invite(f: &Fixture, seed: u8, epoch: u32, expires_at_ms: i64) -> NewInvite {
    NewInvite {
        id: InviteId::from_bytes([seed; 16]),
        workspace: f.workspace,
        role: Role::Write,
        auth_hash: [seed; 32],
        sealed_key: vec![seed; 90],
        key_epoch: epoch,
        invite_key: [seed; 32],
        invite_signature: vec![seed; 64],
        created_by: f.who.principal,
        now_ms: T0,
        expires_at_ms,
    }
}

fn join(f: &Fixture, invite_seed: u8, auth: [u8; 32], seed: u8) -> WorkspaceJoin {
    let mut p = principal(seed);
    p.admitted_by = Some(f.who.principal);
    WorkspaceJoin {
        invite_id: InviteId::from_bytes([invite_seed; 16]),
        auth_hash: auth,
        user_id: UserId::from_bytes([seed; 16]),
        email: format!("user{seed}@example.com"),
        principal: p,
        admission: InviteAdmission {
            invite_id: InviteId::from_bytes([invite_seed; 16]),
            invite_key: [invite_seed; 32],
            invite_signature: vec![invite_seed; 64],
        },
        grant_id: GrantId::new_random(),
        wrapped_key: wrapped(seed),
        now_ms: T0 + 1,
    }
}

/// Invites: a stale key generation is refused, a wrong authenticator looks like no invite, an
/// invite is redeemed once, its sealed key is erased, and the joiner's admission is recorded.
async fn invites_and_joins(store: &dyn Storage, f: &Fixture) -> Who {
    let i = invite(f, 31, 2, T0 + 3_600_000);
    assert_eq!(
        store.create_invite(i, draft(f, "i")).await.expect("create"),
        Some(Stale::KeyEpoch { current: 1 })
    );
    assert_eq!(
        store
            .create_invite(invite(f, 31, 1, T0 + 3_600_000), draft(f, "i"))
            .await
            .expect("create"),
        None
    );
    let listed = store.invites(f.workspace).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status(T0), InviteStatus::Pending);
    assert_eq!(listed[0].workspace_name, "fixture-ws");

    assert_eq!(
        store
            .join_workspace(join(f, 31, [9; 32], 41), draft(f, "j"))
            .await
            .expect("join"),
        JoinOutcome::NotFound
    );
    assert_eq!(
        store
            .join_workspace(join(f, 31, [31; 32], 41), draft(f, "j"))
            .await
            .expect("join"),
        JoinOutcome::Joined
    );
    assert_eq!(
        store
            .join_workspace(join(f, 31, [31; 32], 42), draft(f, "j"))
            .await
            .expect("join"),
        JoinOutcome::NotPending(InviteStatus::Used)
    );
    let used = store
        .invite(InviteId::from_bytes([31; 16]))
        .await
        .expect("get")
        .expect("exists");
    assert!(used.sealed_key.is_empty(), "a used invite keeps no key");
    assert_eq!(used.used_by, Some(PrincipalId::from_bytes([41; 16])));

    // An email already registered is refused, and nothing is written.
    store
        .create_invite(invite(f, 32, 1, T0 + 3_600_000), draft(f, "i"))
        .await
        .expect("create");
    let mut dup = join(f, 32, [32; 32], 43);
    dup.email = "USER41@example.com".into();
    assert_eq!(
        store
            .join_workspace(dup, draft(f, "j"))
            .await
            .expect("join"),
        JoinOutcome::EmailTaken
    );
    assert!(store
        .principal(PrincipalId::from_bytes([43; 16]))
        .await
        .expect("get")
        .is_none());
    // Revoked and expired invites cannot be redeemed.
    assert!(store
        .revoke_invite(
            f.workspace,
            InviteId::from_bytes([32; 16]),
            T0 + 2,
            draft(f, "r")
        )
        .await
        .expect("revoke"));
    assert!(!store
        .revoke_invite(
            f.workspace,
            InviteId::from_bytes([32; 16]),
            T0 + 3,
            draft(f, "r")
        )
        .await
        .expect("revoke twice"));
    assert_eq!(
        store
            .join_workspace(join(f, 32, [32; 32], 44), draft(f, "j"))
            .await
            .expect("join"),
        JoinOutcome::NotPending(InviteStatus::Revoked)
    );
    store
        .create_invite(invite(f, 33, 1, T0 + 1), draft(f, "i"))
        .await
        .expect("create");
    assert_eq!(
        store
            .join_workspace(join(f, 33, [33; 32], 45), draft(f, "j"))
            .await
            .expect("join"),
        JoinOutcome::NotPending(InviteStatus::Expired)
    );

    let bob_user = store
        .user_by_email("User41@Example.com")
        .await
        .expect("lookup")
        .expect("registered");
    let bob = Who {
        principal: PrincipalId::from_bytes([41; 16]),
        user: Some(bob_user),
    };
    let adm = store
        .principal_admissions(&[bob.principal, f.who.principal])
        .await
        .expect("admissions");
    assert_eq!(adm.len(), 2);
    let b = adm
        .iter()
        .find(|a| a.principal.id == bob.principal)
        .expect("bob");
    assert_eq!(b.principal.admitted_by, Some(f.who.principal));
    assert_eq!(
        b.invite.as_ref().map(|i| i.invite_id),
        Some(InviteId::from_bytes([31; 16]))
    );
    let a = adm
        .iter()
        .find(|a| a.principal.id == f.who.principal)
        .expect("creator");
    assert!(a.invite.is_none());
    // Bob holds the workspace grant of the invite, with his key.
    let res = store
        .resolve(
            &bob,
            &NamePath {
                workspace: "fixture-ws",
                project: None,
                environment: None,
            },
        )
        .await
        .expect("resolve");
    assert_eq!(res.grants.len(), 1);
    assert_eq!(res.grants[0].grant.role, Role::Write);
    assert_eq!(res.grants[0].keys.len(), 1);
    bob
}

/// Grants carry exactly one key per live principal of the grantee at the scope's epoch; a new
/// grant replaces the grantee's grant at the same scope; the last workspace admin stays.
async fn grants_carry_keys(store: &dyn Storage, f: &Fixture, bob: &Who) {
    let env = Scope::Environment(f.workspace, f.project, f.environment);
    let bob_user = bob.user.expect("user");
    let live = store
        .live_principals(GranteeRef::User(bob_user), T0)
        .await
        .expect("live");
    assert_eq!(
        live.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![bob.principal]
    );
    let grant = |keys: Vec<NewGrantKey>, role: Role| NewGrant {
        id: GrantId::new_random(),
        scope: env,
        role,
        grantee: GranteeRef::User(bob_user),
        granted_by: f.who.principal,
        keys,
        now_ms: T0 + 10,
    };
    assert_eq!(
        store
            .set_grant(grant(vec![], Role::Read), draft(f, "g"))
            .await
            .expect("set"),
        GrantOutcome::Stale(Stale::Principals)
    );
    assert_eq!(
        store
            .set_grant(
                grant(vec![key(f.who.principal, 1, 1)], Role::Read),
                draft(f, "g")
            )
            .await
            .expect("set"),
        GrantOutcome::Stale(Stale::Principals)
    );
    assert_eq!(
        store
            .set_grant(
                grant(vec![key(bob.principal, 2, 1)], Role::Read),
                draft(f, "g")
            )
            .await
            .expect("set"),
        GrantOutcome::Stale(Stale::KeyEpoch { current: 1 })
    );
    let first = grant(vec![key(bob.principal, 1, 1)], Role::Read);
    let first_id = first.id;
    assert_eq!(
        store.set_grant(first, draft(f, "g")).await.expect("set"),
        GrantOutcome::Granted { replaced: None }
    );
    let second = grant(vec![key(bob.principal, 1, 2)], Role::Write);
    let second_id = second.id;
    assert_eq!(
        store.set_grant(second, draft(f, "g")).await.expect("set"),
        GrantOutcome::Granted {
            replaced: Some(first_id)
        }
    );
    let listed = store.live_grants(f.workspace).await.expect("list");
    let at_env: Vec<&GrantListing> = listed.iter().filter(|g| g.scope == env).collect();
    assert_eq!(at_env.len(), 1);
    assert_eq!(at_env[0].id, second_id);
    assert_eq!(at_env[0].role, Role::Write);
    assert_eq!(at_env[0].project_name.as_deref(), Some("api"));
    assert_eq!(at_env[0].environment_name.as_deref(), Some("prod"));
    assert_eq!(at_env[0].user_email.as_deref(), Some("user41@example.com"));
    // The scope must exist.
    let gone = NewGrant {
        scope: Scope::Environment(f.workspace, f.project, EnvironmentId::from_bytes([77; 16])),
        ..grant(vec![key(bob.principal, 1, 1)], Role::Read)
    };
    assert!(matches!(
        store.set_grant(gone, draft(f, "g")).await,
        Err(StorageError::NotFound(_))
    ));

    assert_eq!(
        store
            .revoke_grant(f.workspace, second_id, T0 + 20, draft(f, "r"))
            .await
            .expect("revoke"),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        store
            .revoke_grant(f.workspace, second_id, T0 + 21, draft(f, "r"))
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    let creator_grant = store
        .live_grants(f.workspace)
        .await
        .expect("list")
        .into_iter()
        .find(|g| g.grantee == GranteeRef::User(f.who.user.expect("user")))
        .expect("creator's admin grant");
    assert_eq!(
        store
            .revoke_grant(f.workspace, creator_grant.id, T0 + 22, draft(f, "r"))
            .await
            .expect("revoke"),
        RevokeOutcome::LastAdmin
    );
    // Bob gets read on the environment again for the rotation checks below.
    assert!(matches!(
        store
            .set_grant(
                grant(vec![key(bob.principal, 1, 3)], Role::Read),
                draft(f, "g")
            )
            .await
            .expect("set"),
        GrantOutcome::Granted { .. }
    ));
}

/// A service principal keeps its server key share until revoked; revocation deletes the share,
/// its grants and every key wrapped to it.
async fn service_principals_and_revocation(store: &dyn Storage, f: &Fixture) {
    let env = Scope::Environment(f.workspace, f.project, f.environment);
    let mut p = principal(61);
    p.name = "deployer".into();
    p.admitted_by = Some(f.who.principal);
    let sp = |p: NewPrincipal| NewServicePrincipal {
        workspace: f.workspace,
        server_key_share: [0x5b; 32],
        grant: NewGrant {
            id: GrantId::new_random(),
            scope: env,
            role: Role::Read,
            grantee: GranteeRef::Principal(p.id),
            granted_by: f.who.principal,
            keys: vec![key(p.id, 1, 9)],
            now_ms: T0 + 30,
        },
        principal: p,
    };
    assert_eq!(
        store
            .create_service_principal(sp(p.clone()), draft(f, "s"))
            .await
            .expect("create"),
        ServiceOutcome::Created
    );
    let mut same_name = principal(62);
    same_name.name = "deployer".into();
    assert_eq!(
        store
            .create_service_principal(sp(same_name), draft(f, "s"))
            .await
            .expect("create"),
        ServiceOutcome::NameTaken
    );
    assert_eq!(
        store.server_key_share(p.id).await.expect("share"),
        Some([0x5b; 32])
    );
    assert_eq!(
        store
            .service_principals(f.workspace)
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(store
        .rename_principal(p.id, "deployer-2", vec![draft(f, "n")])
        .await
        .expect("rename"));
    let revoked = store
        .revoke_principal(p.id, T0 + 40, vec![draft(f, "v")])
        .await
        .expect("revoke")
        .expect("was live");
    assert_eq!(revoked.principal.name, "deployer-2");
    assert_eq!(revoked.revoked_grants.len(), 1);
    assert_eq!(revoked.revoked_grants[0].0, f.workspace);
    assert_eq!(store.server_key_share(p.id).await.expect("share"), None);
    assert!(store
        .revoke_principal(p.id, T0 + 41, vec![draft(f, "v")])
        .await
        .expect("revoke again")
        .is_none());
    let after = store.principal(p.id).await.expect("get").expect("kept");
    assert_eq!(after.revoked_at_ms, Some(T0 + 40));
    assert!(store
        .live_grants(f.workspace)
        .await
        .expect("list")
        .iter()
        .all(|g| g.grantee != GranteeRef::Principal(p.id)));
    // A revoked service principal's name is free again.
    let mut again = principal(63);
    again.name = "deployer-2".into();
    assert_eq!(
        store
            .create_service_principal(sp(again), draft(f, "s"))
            .await
            .expect("create"),
        ServiceOutcome::Created
    );
}

/// A rotation must cover exactly the live scopes and grants below its root at their current
/// epochs; applied, it bumps the epochs, links the old environment key, replaces grant keys and
/// (for a workspace) revokes pending invites.
async fn rotation(store: &dyn Storage, f: &Fixture, bob: &Who) {
    let ws = Scope::Workspace(f.workspace);
    let project = Scope::Project(f.workspace, f.project);
    let env = Scope::Environment(f.workspace, f.project, f.environment);
    let epochs = store.key_epochs(f.workspace).await.expect("epochs");
    assert_eq!(epochs.workspace, 1);
    assert_eq!(epochs.projects.get(&f.project), Some(&1));

    let grants = store.live_grants(f.workspace).await.expect("list");
    let env_grants: Vec<&GrantListing> = grants.iter().filter(|g| g.scope == env).collect();
    // Bob's read grant and the service principal made above.
    assert_eq!(env_grants.len(), 2);
    let sp = match env_grants
        .iter()
        .find(|g| matches!(g.grantee, GranteeRef::Principal(_)))
        .map(|g| g.grantee)
    {
        Some(GranteeRef::Principal(p)) => p,
        _ => panic!("service principal grant"),
    };
    let env_rotation = |from: u32, keys: Vec<(GrantId, NewGrantKey)>| Rotation {
        root: env,
        scopes: vec![RotatedScope {
            scope: env,
            from_epoch: from,
            wrapped_key: Some(WrappedKey::from_bytes(vec![0xA1; 74])),
            epoch_link: Some(WrappedKey::from_bytes(vec![0xA2; 74])),
        }],
        grant_keys: keys,
        now_ms: T0 + 50,
    };
    let full_keys: Vec<(GrantId, NewGrantKey)> = env_grants
        .iter()
        .map(|g| {
            let p = match g.grantee {
                GranteeRef::User(_) => bob.principal,
                GranteeRef::Principal(p) => p,
            };
            (g.id, key(p, 2, 0xB0))
        })
        .collect();
    assert_eq!(
        store
            .rotate_keys(env_rotation(2, full_keys.clone()), draft(f, "k"))
            .await
            .expect("rotate"),
        Some(Stale::Subtree)
    );
    assert_eq!(
        store
            .rotate_keys(env_rotation(1, full_keys[..1].to_vec()), draft(f, "k"))
            .await
            .expect("rotate"),
        Some(Stale::Principals)
    );
    assert_eq!(
        store
            .rotate_keys(env_rotation(1, full_keys.clone()), draft(f, "k"))
            .await
            .expect("rotate"),
        None
    );
    let res = store
        .resolve(
            bob,
            &NamePath {
                workspace: "fixture-ws",
                project: Some("api"),
                environment: Some("prod"),
            },
        )
        .await
        .expect("resolve");
    let e = res.environment.expect("env");
    assert_eq!(e.key_epoch, 2);
    assert_eq!(e.wrapped_key.as_bytes(), &[0xA1; 74][..]);
    let links = store.epoch_links(f.environment).await.expect("links");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].epoch, 1);
    let bob_env = res
        .grants
        .iter()
        .find(|g| g.grant.scope == env)
        .expect("bob's env grant");
    assert_eq!(
        bob_env.keys.iter().map(|k| k.key_epoch).collect::<Vec<_>>(),
        vec![2],
        "older keys are dropped"
    );
    let _ = sp;

    // Rotating the workspace covers the workspace, the project and the environment, and kills
    // pending invites (they carry the old workspace key).
    store
        .create_invite(invite(f, 34, 1, T0 + 3_600_000), draft(f, "i"))
        .await
        .expect("invite");
    let grants = store.live_grants(f.workspace).await.expect("list");
    let mut keys = Vec::new();
    for g in &grants {
        let principals = store
            .live_principals(g.grantee, T0 + 60)
            .await
            .expect("live");
        let epoch = match g.scope {
            Scope::Environment(..) => 3,
            _ => 2,
        };
        for p in principals {
            keys.push((g.id, key(p.id, epoch, 0xC0)));
        }
    }
    let ws_rotation = Rotation {
        root: ws,
        scopes: vec![
            RotatedScope {
                scope: ws,
                from_epoch: 1,
                wrapped_key: None,
                epoch_link: None,
            },
            RotatedScope {
                scope: project,
                from_epoch: 1,
                wrapped_key: Some(WrappedKey::from_bytes(vec![0xC1; 74])),
                epoch_link: None,
            },
            RotatedScope {
                scope: env,
                from_epoch: 2,
                wrapped_key: Some(WrappedKey::from_bytes(vec![0xC2; 74])),
                epoch_link: Some(WrappedKey::from_bytes(vec![0xC3; 74])),
            },
        ],
        grant_keys: keys,
        now_ms: T0 + 60,
    };
    assert_eq!(
        store
            .rotate_keys(ws_rotation, draft(f, "k"))
            .await
            .expect("rotate"),
        None
    );
    let epochs = store.key_epochs(f.workspace).await.expect("epochs");
    assert_eq!(epochs.workspace, 2);
    assert_eq!(epochs.projects.get(&f.project), Some(&2));
    let inv = store
        .invite(InviteId::from_bytes([34; 16]))
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(inv.status(T0 + 61), InviteStatus::Revoked);
    assert!(inv.sealed_key.is_empty());
    assert_eq!(
        store.epoch_links(f.environment).await.expect("links").len(),
        2
    );
}

/// A device export adds a principal for the same user with keys of the user's grants, expiring
/// until the import completes.
async fn device_exports(store: &dyn Storage, f: &Fixture) {
    let user = f.who.user.expect("user");
    let own = store
        .own_grant_keys(user, f.who.principal)
        .await
        .expect("own keys");
    assert_eq!(own.len(), 1, "the creator's workspace grant");
    assert_eq!(own[0].key_epoch, 2, "at the rotated generation");
    let mut p = principal(71);
    p.admitted_by = Some(f.who.principal);
    p.expires_at_ms = Some(T0 + 1_000_000);
    let export = |p: NewPrincipal, epoch: u32| NewDeviceExport {
        id: InviteId::from_bytes([71; 16]),
        user,
        grant_keys: vec![(own[0].grant.id, key(p.id, epoch, 0xD0))],
        principal: p,
        auth_hash: [71; 32],
        sealed_keys: vec![0xD1; 200],
        now_ms: T0 + 70,
        expires_at_ms: T0 + 1_000_000,
    };
    assert_eq!(
        store
            .create_device_export(export(p.clone(), 1), draft(f, "x"))
            .await
            .expect("export"),
        ExportOutcome::Stale(Stale::KeyEpoch { current: 2 })
    );
    assert_eq!(
        store
            .create_device_export(export(p.clone(), 2), draft(f, "x"))
            .await
            .expect("export"),
        ExportOutcome::Stored
    );
    let fetched = store
        .fetch_device_export(InviteId::from_bytes([71; 16]))
        .await
        .expect("fetch")
        .expect("exists");
    assert_eq!(fetched.fetches, 1);
    assert_eq!(fetched.principal.id, p.id);
    assert_eq!(fetched.sealed_keys, vec![0xD1; 200]);
    assert_eq!(
        store
            .fetch_device_export(InviteId::from_bytes([71; 16]))
            .await
            .expect("fetch")
            .expect("exists")
            .fetches,
        2
    );
    assert_eq!(store.user_principals(user).await.expect("devices").len(), 2);
    assert!(store
        .complete_device_export(p.id, T0 + 80, draft(f, "c"))
        .await
        .expect("complete"));
    assert!(!store
        .complete_device_export(p.id, T0 + 81, draft(f, "c"))
        .await
        .expect("complete twice"));
    let done = store.principal(p.id).await.expect("get").expect("exists");
    assert_eq!(done.expires_at_ms, None);
    let fetched = store
        .fetch_device_export(InviteId::from_bytes([71; 16]))
        .await
        .expect("fetch")
        .expect("exists");
    assert!(fetched.sealed_keys.is_empty());
    assert_eq!(fetched.completed_at_ms, Some(T0 + 80));
    // The new device holds the workspace key now.
    let own = store.own_grant_keys(user, p.id).await.expect("own keys");
    assert_eq!(own.len(), 1);
}
