//! Key rotation: `PrepareRotation` and `RotateKeys` (THREAT-MODEL.md §4.6).
//!
//! Rotating a scope replaces its key and every key below it, because a holder of a key can
//! unwrap everything under it: a workspace rotation draws a new workspace key, new project keys
//! and the next epoch of every environment key; a project rotation, its project key and its
//! environments' next epochs; an environment rotation, its next epoch. Environment keys keep
//! the old epoch wrapped under the new one (the epoch link), so current grantees still read
//! history; nothing new is ever wrapped under an old key. Every live grant at a rotated scope
//! gets the new key wrapped to each live principal of its grantee, and the old grant keys go.

use std::collections::HashMap;

use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId};
use zopp_proto::v1::{
    GetScopeKeysRequest, PrepareRotationRequest, RotateKeysRequest, RotateKeysResponse,
    RotationGrant, RotationPlan, RotationScope, ScopeKind as WireScopeKind,
};

use super::permissions::stale_error;
use super::statements::check_statements;
use super::teams::{grant_keys, principal_info, scope_id, wire_kind, wire_role, Access};
use super::ZoppService;
use crate::audit::{self, action};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{Action, Scope};
use crate::storage::teams::{NewGrantKey, RotatedScope, Rotation};
use crate::storage::{EnvironmentRecord, GrantId, ProjectRecord};
use crate::validate;

/// Most grant keys one rotation may carry.
const MAX_ROTATION_KEYS: usize = 100_000;

/// The live scopes at and below a rotation's root, parents before children.
struct Subtree {
    projects: Vec<ProjectRecord>,
    environments: Vec<EnvironmentRecord>,
}

impl ZoppService {
    async fn subtree(&self, access: &Access) -> ServiceResult<Subtree> {
        let ws = access.r.workspace.id;
        let mut projects = Vec::new();
        let mut environments = Vec::new();
        for p in self.state.storage.projects(ws).await? {
            let project_scope = Scope::Project(ws, p.id);
            let in_project = access.scope.covers(&project_scope);
            for e in self.state.storage.environments(p.id).await? {
                if access.scope.covers(&Scope::Environment(ws, p.id, e.id)) {
                    environments.push(e);
                }
            }
            if in_project {
                projects.push(p);
            }
        }
        Ok(Subtree {
            projects,
            environments,
        })
    }

    pub(super) async fn prepare_rotation_rpc(
        &self,
        caller: Caller,
        m: PrepareRotationRequest,
    ) -> ServiceResult<RotationPlan> {
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                Action::ManageAccess,
                action::KEYS_ROTATE,
            )
            .await?;
        let ws = &access.r.workspace;
        // The new key is wrapped under its parent's key, which the caller must be able to
        // derive: an environment needs its project's key, a project the workspace key. A
        // workspace has no parent, but its key opens the current keys below it.
        let parent_project = match access.scope {
            Scope::Environment(..) => access.r.project.as_ref().map(|p| p.name.clone()),
            _ => None,
        };
        let parent_keys = self
            .get_scope_keys_rpc(
                caller.clone(),
                GetScopeKeysRequest {
                    workspace: ws.name.clone(),
                    project: parent_project.unwrap_or_default(),
                },
            )
            .await
            .map_err(|e| match e {
                ServiceError::PermissionDenied(_) => ServiceError::PermissionDenied(format!(
                    "permission denied: rotating the keys of {} wraps the new key under its \
                     parent's key, and no grant of yours covers the parent",
                    access.what
                )),
                other => other,
            })?;
        let epochs = self.state.storage.key_epochs(ws.id).await?;
        let tree = self.subtree(&access).await?;
        let now = self.now_ms();
        let grants = self.state.storage.live_grants(ws.id).await?;
        let mut grants_at: HashMap<String, Vec<RotationGrant>> = HashMap::new();
        let mut principals: Vec<PrincipalId> = Vec::new();
        for g in grants.iter().filter(|g| access.scope.covers(&g.scope)) {
            let live = self.state.storage.live_principals(g.grantee, now).await?;
            principals.extend(live.iter().map(|p| p.id));
            grants_at
                .entry(scope_id(&g.scope))
                .or_default()
                .push(RotationGrant {
                    grant_id: g.id.to_string(),
                    principal_ids: live.iter().map(|p| p.id.to_string()).collect(),
                    role: wire_role(g.role),
                });
        }
        let mut scopes = Vec::new();
        let mut push = |kind: Scope, name: &str, parent: String, epoch: u32, wrapped: Vec<u8>| {
            let id = scope_id(&kind);
            scopes.push(RotationScope {
                kind: wire_kind(&kind),
                grants: grants_at.remove(&id).unwrap_or_default(),
                id,
                name: name.to_string(),
                parent_id: parent,
                key_epoch: epoch,
                wrapped_key: wrapped,
            });
        };
        if let Scope::Workspace(w) = access.scope {
            push(
                Scope::Workspace(w),
                &ws.name,
                String::new(),
                epochs.workspace,
                Vec::new(),
            );
        }
        for p in &tree.projects {
            push(
                Scope::Project(ws.id, p.id),
                &p.name,
                ws.id.to_string(),
                epochs.projects.get(&p.id).copied().unwrap_or(1),
                p.wrapped_key.as_bytes().to_vec(),
            );
        }
        for e in &tree.environments {
            push(
                Scope::Environment(ws.id, e.project_id, e.id),
                &e.name,
                e.project_id.to_string(),
                e.key_epoch,
                e.wrapped_key.as_bytes().to_vec(),
            );
        }
        let meta = self
            .state
            .storage
            .workspace_meta(ws.id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("workspace '{}' not found", ws.name)))?;
        principals.push(meta.creator);
        let infos = self.admission_closure(&principals).await?;
        Ok(RotationPlan {
            workspace_id: ws.id.to_string(),
            parent_keys: Some(parent_keys),
            scopes,
            principals: infos.iter().map(principal_info).collect(),
            workspace_creator_id: meta.creator.to_string(),
        })
    }

    pub(super) async fn rotate_keys_rpc(
        &self,
        caller: Caller,
        m: RotateKeysRequest,
    ) -> ServiceResult<RotateKeysResponse> {
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                Action::ManageAccess,
                action::KEYS_ROTATE,
            )
            .await?;
        let ws = access.r.workspace.id;
        let tree = self.subtree(&access).await?;
        let env_project: HashMap<EnvironmentId, ProjectId> = tree
            .environments
            .iter()
            .map(|e| (e.id, e.project_id))
            .collect();
        let mut scopes = Vec::with_capacity(m.keys.len());
        for k in &m.keys {
            let bad = |what: &str| {
                ServiceError::InvalidArgument(format!("key for scope '{}': {what}", k.scope_id))
            };
            let scope = match WireScopeKind::try_from(k.kind) {
                Ok(WireScopeKind::Workspace) if k.scope_id == ws.to_string() => {
                    Scope::Workspace(ws)
                }
                Ok(WireScopeKind::Project) => {
                    let p: ProjectId = validate::client_id("project", &k.scope_id)?;
                    Scope::Project(ws, p)
                }
                Ok(WireScopeKind::Environment) => {
                    let e: EnvironmentId = validate::client_id("environment", &k.scope_id)?;
                    // An environment not below the root is caught by the storage's subtree
                    // check; it only needs a project here to be named at all.
                    let p = env_project.get(&e).copied().ok_or_else(|| {
                        ServiceError::Aborted(format!(
                            "environment {e} is not below {} any more; run the command again",
                            access.what
                        ))
                    })?;
                    Scope::Environment(ws, p, e)
                }
                _ => return Err(bad("unknown scope")),
            };
            let (wrapped_key, epoch_link) = match scope {
                Scope::Workspace(_) => (None, None),
                Scope::Project(..) => (
                    Some(validate::child_wrap("wrapped_key", &k.wrapped_key)?),
                    None,
                ),
                _ => (
                    Some(validate::child_wrap("wrapped_key", &k.wrapped_key)?),
                    Some(validate::child_wrap("epoch_link", &k.epoch_link)?),
                ),
            };
            scopes.push(RotatedScope {
                scope,
                from_epoch: k.from_epoch,
                wrapped_key,
                epoch_link,
            });
        }
        let mut keys: Vec<(GrantId, NewGrantKey)> = Vec::new();
        for g in &m.grants {
            let id = GrantId::try_parse(&g.grant_id).ok_or_else(|| {
                ServiceError::InvalidArgument(format!("invalid grant id '{}'", g.grant_id))
            })?;
            for k in grant_keys(&g.keys)? {
                keys.push((id, k));
            }
            if keys.len() > MAX_ROTATION_KEYS {
                return Err(ServiceError::InvalidArgument(format!(
                    "at most {MAX_ROTATION_KEYS} grant keys per rotation"
                )));
            }
        }
        let now = self.now_ms();
        let statements = check_statements(
            ws,
            caller.principal_id(),
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let (n_scopes, n_keys) = (scopes.len(), keys.len());
        let rotation = Rotation {
            root: access.scope,
            scopes,
            grant_keys: keys,
            now_ms: now,
        };
        let entry = audit::draft(
            &caller,
            action::KEYS_ROTATE,
            &access.scope,
            format!("scopes/{n_scopes} grant_keys/{n_keys}"),
            now,
        );
        if let Some(stale) = self.state.storage.rotate_keys(rotation, entry).await? {
            return Err(stale_error(stale, &access.what));
        }
        self.state.storage.add_key_statements(&statements).await?;
        tracing::info!(scopes = n_scopes, grant_keys = n_keys, "keys rotated");
        Ok(RotateKeysResponse {
            scopes: u32::try_from(n_scopes).unwrap_or(u32::MAX),
            grant_keys: u32::try_from(n_keys).unwrap_or(u32::MAX),
        })
    }
}
