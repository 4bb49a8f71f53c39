//! Building `EnvironmentKeys`: the chain of wrapped keys a caller needs to derive an environment
//! key, starting from the grant it holds (docs/ARCHITECTURE.md "Keys a client derives").

use zopp_proto::v1::{
    EnvironmentKeys, EpochLink, GetScopeKeysRequest, Role as WireRole, ScopeKeys, ScopeKind,
};

use super::{Resolved, ZoppService};
use crate::audit::action;
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{Action, Role, Scope};
use crate::storage::{EnvironmentRecord, GrantRecord, NamePath};

fn wire_role(r: Role) -> i32 {
    match r {
        Role::Read => WireRole::Read as i32,
        Role::Write => WireRole::Write as i32,
        Role::Admin => WireRole::Admin as i32,
    }
}

/// The newest key of a workspace or project grant. Those keys are rotated by replacement
/// (THREAT-MODEL.md §4.6): a rotation stores the new generation's keys and drops the old ones,
/// so the highest generation held is the current key.
fn newest_key(g: &GrantRecord) -> Option<usize> {
    g.keys
        .iter()
        .enumerate()
        .max_by_key(|(_, k)| k.key_epoch)
        .map(|(i, _)| i)
}

/// The grant to derive from: the highest-level grant covering the environment for which the
/// calling principal holds a wrapped key (an environment grant only counts with a key for the
/// environment's current epoch).
fn pick_grant<'a>(
    grants: &'a [GrantRecord],
    env: &EnvironmentRecord,
    scope: &Scope,
) -> Option<(&'a GrantRecord, usize)> {
    let level = |g: &GrantRecord| match g.grant.scope {
        Scope::Workspace(_) => 0,
        Scope::Project(..) => 1,
        _ => 2,
    };
    grants
        .iter()
        .filter(|g| g.grant.scope.covers(scope))
        .filter_map(|g| {
            if level(g) == 2 {
                g.keys
                    .iter()
                    .position(|k| k.key_epoch == env.key_epoch)
                    .map(|i| (g, i))
            } else {
                newest_key(g).map(|i| (g, i))
            }
        })
        .min_by_key(|(g, _)| level(g))
}

/// The grant to derive a workspace or project key from: the highest covering grant with a key
/// for the calling principal.
fn pick_scope_grant<'a>(
    grants: &'a [GrantRecord],
    scope: &Scope,
) -> Option<(&'a GrantRecord, usize)> {
    grants
        .iter()
        .filter(|g| g.grant.scope.covers(scope))
        .filter_map(|g| newest_key(g).map(|i| (g, i)))
        .min_by_key(|(g, _)| matches!(g.grant.scope, Scope::Project(..)))
}

impl ZoppService {
    pub(super) async fn get_scope_keys_rpc(
        &self,
        caller: Caller,
        m: GetScopeKeysRequest,
    ) -> ServiceResult<ScopeKeys> {
        let project_name = (!m.project.is_empty()).then_some(m.project.as_str());
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: project_name,
                    environment: None,
                },
            )
            .await?;
        let scope = match project_name {
            Some(_) => r.project_scope()?,
            None => r.ws_scope(),
        };
        let what = r.describe(&scope);
        // Seeing a scope through a grant below it gives no right to its key.
        let role = self
            .authorize(&caller, &r, Action::View, &scope, action::SCOPE_KEYS)
            .await?
            .ok_or_else(|| {
                ServiceError::PermissionDenied(format!(
                    "permission denied: no grant of yours covers {what}, so its key is not yours to derive"
                ))
            })?;
        let (grant, i) = pick_scope_grant(&r.grants, &scope).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "no key for {what} has been shared with this principal yet"
            ))
        })?;
        let (grant_scope, grant_scope_id, project_wrapped_key) = match grant.grant.scope {
            Scope::Workspace(w) => (
                ScopeKind::Workspace,
                w.to_string(),
                match &r.project {
                    Some(p) if project_name.is_some() => p.wrapped_key.as_bytes().to_vec(),
                    _ => Vec::new(),
                },
            ),
            Scope::Project(_, p) => (ScopeKind::Project, p.to_string(), Vec::new()),
            _ => return Err(ServiceError::Internal("scope grant below its scope".into())),
        };
        let epochs = self.state.storage.key_epochs(r.workspace.id).await?;
        let key_epoch = match &r.project {
            Some(p) if project_name.is_some() => epochs.projects.get(&p.id).copied().unwrap_or(1),
            _ => epochs.workspace,
        };
        let mut keys = ScopeKeys {
            key_epoch,
            workspace_id: r.workspace.id.to_string(),
            project_id: r
                .project
                .as_ref()
                .map(|p| p.id.to_string())
                .unwrap_or_default(),
            grant_scope: grant_scope as i32,
            grant_scope_id,
            grant_wrapped_key: grant.keys[i].wrapped_key.as_bytes().to_vec(),
            project_wrapped_key,
            role: wire_role(role),
            ..ScopeKeys::default()
        };
        self.attach_scope_statements(caller.principal_id(), &mut keys)
            .await?;
        self.audit_read(&caller, action::SCOPE_KEYS, &scope, String::new())
            .await?;
        Ok(keys)
    }

    /// The key material for the resolved environment, for a caller whose effective role there
    /// is `role`.
    pub(super) async fn environment_keys(
        &self,
        r: &Resolved,
        role: Role,
    ) -> ServiceResult<EnvironmentKeys> {
        let project = r.project()?;
        let env = r.env()?;
        let scope = r.env_scope()?;
        let (grant, key_index) = pick_grant(&r.grants, env, &scope).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "no key for environment '{}' has been shared with this principal yet",
                env.name
            ))
        })?;
        let grant_wrapped_key = grant.keys[key_index].wrapped_key.as_bytes().to_vec();
        let (grant_scope, grant_scope_id, project_wrapped_key, environment_wrapped_key) =
            match grant.grant.scope {
                Scope::Workspace(w) => (
                    ScopeKind::Workspace,
                    w.to_string(),
                    project.wrapped_key.as_bytes().to_vec(),
                    env.wrapped_key.as_bytes().to_vec(),
                ),
                Scope::Project(_, p) => (
                    ScopeKind::Project,
                    p.to_string(),
                    Vec::new(),
                    env.wrapped_key.as_bytes().to_vec(),
                ),
                Scope::Environment(_, _, e) => (
                    ScopeKind::Environment,
                    e.to_string(),
                    Vec::new(),
                    Vec::new(),
                ),
                Scope::Server => {
                    return Err(ServiceError::Internal("grant at server scope".into()));
                }
            };
        // Epoch 1 has no links; skip the query for the common case.
        let epoch_links = if env.key_epoch > 1 {
            self.state
                .storage
                .epoch_links(env.id)
                .await?
                .into_iter()
                .map(|l| EpochLink {
                    epoch: l.epoch,
                    wrapped_key: l.wrapped_key.into_bytes(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(EnvironmentKeys {
            workspace_id: r.workspace.id.to_string(),
            project_id: project.id.to_string(),
            environment_id: env.id.to_string(),
            grant_scope: grant_scope as i32,
            grant_scope_id,
            grant_wrapped_key,
            project_wrapped_key,
            environment_wrapped_key,
            key_epoch: env.key_epoch,
            epoch_links,
            env_version: env.env_version,
            role: wire_role(role),
            ..EnvironmentKeys::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::Grant;
    use crate::storage::{GrantId, GrantKeyRecord};
    use zopp_crypto::ids::{EnvironmentId, ProjectId, WorkspaceId};
    use zopp_crypto::wrap::WrappedKey;

    const W: WorkspaceId = WorkspaceId::from_bytes([1; 16]);
    const P: ProjectId = ProjectId::from_bytes([2; 16]);
    const E: EnvironmentId = EnvironmentId::from_bytes([3; 16]);

    fn env(epoch: u32) -> EnvironmentRecord {
        EnvironmentRecord {
            id: E,
            project_id: P,
            workspace_id: W,
            name: "prod".into(),
            wrapped_key: WrappedKey::from_bytes(vec![3]),
            key_epoch: epoch,
            env_version: 0,
            created_at_ms: 0,
            keep_versions: None,
            history_floor: 0,
        }
    }

    fn grant(scope: Scope, epochs: &[u32]) -> GrantRecord {
        GrantRecord {
            id: GrantId::new_random(),
            grant: Grant {
                scope,
                role: Role::Read,
            },
            keys: epochs
                .iter()
                .map(|&e| GrantKeyRecord {
                    key_epoch: e,
                    wrapped_key: WrappedKey::from_bytes(vec![e as u8]),
                })
                .collect(),
        }
    }

    #[test]
    fn prefers_the_highest_level_with_a_key() {
        let scope = Scope::Environment(W, P, E);
        let grants = vec![
            grant(Scope::Environment(W, P, E), &[1]),
            grant(Scope::Project(W, P), &[1]),
            grant(Scope::Workspace(W), &[]),
        ];
        let (g, _) = pick_grant(&grants, &env(1), &scope).expect("a grant");
        assert_eq!(g.grant.scope, Scope::Project(W, P));
    }

    #[test]
    fn environment_grant_needs_the_current_epoch() {
        let scope = Scope::Environment(W, P, E);
        let grants = vec![grant(Scope::Environment(W, P, E), &[1, 2])];
        let (g, i) = pick_grant(&grants, &env(2), &scope).expect("a grant");
        assert_eq!(g.keys[i].key_epoch, 2);
        assert!(pick_grant(&grants, &env(3), &scope).is_none());
    }

    #[test]
    fn ignores_grants_that_do_not_cover_the_environment() {
        let scope = Scope::Environment(W, P, E);
        let other = EnvironmentId::from_bytes([9; 16]);
        let grants = vec![grant(Scope::Environment(W, P, other), &[1])];
        assert!(pick_grant(&grants, &env(1), &scope).is_none());
    }
}
