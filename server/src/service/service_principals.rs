//! Principals beyond joining: service principals for CI (`CreateServicePrincipal`,
//! `GetKeyShare`), and managing existing principals (`RevokePrincipal`, `ListPrincipals`,
//! `RenamePrincipal`).
//!
//! A service principal's X25519 secret is split (FORMAT.md §10): its token holds one share and
//! the server the other, so the token alone decrypts nothing, and revoking the principal deletes
//! the server's share for good.

use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::sign::admission_message;
use zopp_proto::v1::{
    CreateServicePrincipalRequest, GetKeyShareRequest, GetKeyShareResponse, ListPrincipalsRequest,
    ListPrincipalsResponse, PermissionGrant, PrincipalInfo, RemovalReport, RenamePrincipalRequest,
    RevokePrincipalRequest, RevokePrincipalResponse, ScopeRef,
};

use super::permissions::{scope_ref, stale_error};
use super::statements::check_statements;
use super::teams::{
    agreement_key, grant_keys, parse_principal, parse_role, permission, principal_info, Access,
};
use super::ZoppService;
use crate::audit::{self, action};
use crate::auth::{AuthError, Caller};
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{Action, Scope};
use crate::storage::teams::{
    GrantListing, GranteeRef, NewGrant, NewServicePrincipal, ServiceOutcome,
};
use crate::storage::{AuditDraft, GrantId, NamePath, NewPrincipal, PrincipalRecord, Who};
use crate::validate;

/// How a principal management request is allowed.
enum Authority {
    /// The caller's user owns the device.
    OwnDevice,
    /// The device is another user's, and the caller administers every workspace that user
    /// belongs to.
    MemberAdmin,
    /// The caller manages access on every scope of this service principal in this workspace.
    WorkspaceAdmin(Box<Access>),
}

impl ZoppService {
    pub(super) async fn get_key_share_rpc(
        &self,
        caller: Caller,
        _m: GetKeyShareRequest,
    ) -> ServiceResult<GetKeyShareResponse> {
        let workspace = caller.service_workspace().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "only service principals have a server key share; devices hold their whole key"
                    .into(),
            )
        })?;
        // The authenticator already refused revoked and expired principals; a missing share
        // means the revocation raced this call.
        let share = self
            .state
            .storage
            .server_key_share(caller.principal_id())
            .await?
            .ok_or(ServiceError::Unauthenticated(AuthError::Revoked))?;
        // Every use of a token is on the record of its workspace.
        self.audit_read(
            &caller,
            action::KEY_SHARE_READ,
            &Scope::Workspace(workspace),
            format!("principal/{}", caller.principal_id()),
        )
        .await?;
        Ok(GetKeyShareResponse {
            server_key_share: share.to_vec(),
            agreement_key: caller.principal().agreement_key.to_bytes().to_vec(),
            server_id: self.state.auth.server_id().as_bytes().to_vec(),
        })
    }

    pub(super) async fn create_service_principal_rpc(
        &self,
        caller: Caller,
        m: CreateServicePrincipalRequest,
    ) -> ServiceResult<PrincipalInfo> {
        let role = parse_role(m.role)?;
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                Action::Grant(role),
                action::SERVICE_PRINCIPAL_CREATE,
            )
            .await?;
        validate::principal_name(&m.name)?;
        let id: PrincipalId = validate::client_id("principal", &m.principal_id)?;
        let signing_key = VerifyingKey::try_from_slice(&m.signing_key).map_err(|_| {
            ServiceError::InvalidArgument("signing_key is not a valid Ed25519 public key".into())
        })?;
        let agreement_key = agreement_key(&m.agreement_key)?;
        let caller_id = caller.principal_id();
        caller
            .principal()
            .signing_key
            .verify(
                &admission_message(&id, &signing_key, &agreement_key, Some(&caller_id)),
                &m.admission_signature,
            )
            .map_err(|_| {
                ServiceError::InvalidArgument(
                    "admission_signature is not your signature over these keys".into(),
                )
            })?;
        let server_key_share: [u8; 32] = validate::fixed("server_key_share", &m.server_key_share)?;
        let now = self.now_ms();
        let expires_at_ms = match m.expires_at_ms {
            0 => None,
            t if t <= now => {
                return Err(ServiceError::InvalidArgument(
                    "expires_at_ms is in the past".into(),
                ))
            }
            t => Some(t),
        };
        if m.scope_id != access.scope_id() {
            return Err(ServiceError::Aborted(format!(
                "{} is not the scope the key was wrapped for (it was replaced); run the command \
                 again",
                access.what
            )));
        }
        let keys = grant_keys(m.key.as_slice())?;
        let statements = check_statements(
            access.r.workspace.id,
            caller_id,
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let sp = NewServicePrincipal {
            principal: NewPrincipal {
                id,
                name: m.name.clone(),
                signing_key,
                agreement_key,
                admitted_by: Some(caller_id),
                admission_signature: m.admission_signature.clone(),
                expires_at_ms,
            },
            workspace: access.r.workspace.id,
            server_key_share,
            grant: NewGrant {
                id: GrantId::new_random(),
                scope: access.scope,
                role,
                grantee: GranteeRef::Principal(id),
                granted_by: caller_id,
                keys,
                now_ms: now,
            },
        };
        let entry = audit::draft(
            &caller,
            action::SERVICE_PRINCIPAL_CREATE,
            &access.scope,
            format!("principal/{id} {role}"),
            now,
        );
        let outcome = match self.state.storage.create_service_principal(sp, entry).await {
            Ok(o) => o,
            Err(crate::storage::StorageError::AlreadyExists(_)) => ServiceOutcome::NameTaken,
            Err(e) => return Err(e.into()),
        };
        match outcome {
            ServiceOutcome::Created => {}
            ServiceOutcome::NameTaken => {
                return Err(ServiceError::AlreadyExists(format!(
                    "a service principal named '{}' already exists in workspace '{}'",
                    m.name, access.r.workspace.name
                )))
            }
            ServiceOutcome::KeysTaken => {
                return Err(ServiceError::AlreadyExists(
                    "these keys or this principal id are already registered".into(),
                ))
            }
            ServiceOutcome::Stale(s) => return Err(stale_error(s, &access.what)),
        }
        self.state.storage.add_key_statements(&statements).await?;
        tracing::info!(principal = %id, role = %role, "service principal created");
        let info = self.admission_closure(&[id]).await?;
        info.iter()
            .find(|a| a.principal.id == id)
            .map(principal_info)
            .ok_or_else(|| ServiceError::Internal("a new principal is not stored".into()))
    }

    /// The live principal `id`, NOT_FOUND otherwise.
    async fn live_principal(&self, id: PrincipalId) -> ServiceResult<PrincipalRecord> {
        self.state
            .storage
            .principal(id)
            .await?
            .filter(|p| p.revoked_at_ms.is_none())
            .ok_or_else(|| ServiceError::NotFound(format!("principal {id} not found")))
    }

    /// The name of a workspace the caller can see, by id.
    async fn workspace_name(&self, caller: &Caller, id: WorkspaceId) -> ServiceResult<String> {
        self.state
            .storage
            .workspaces_for(&caller.who())
            .await?
            .into_iter()
            .find(|w| w.id == id)
            .map(|w| w.name)
            .ok_or_else(|| ServiceError::NotFound("principal not found".into()))
    }

    /// May the caller manage `target`? Its own user's devices, yes; a service principal, when
    /// it may manage access on every scope the principal holds a grant on (so an environment's
    /// admin cannot revoke a workspace-wide service principal); anything else, no.
    async fn principal_authority(
        &self,
        caller: &Caller,
        target: &PrincipalRecord,
        audit_action: &str,
    ) -> ServiceResult<(Authority, Vec<GrantListing>)> {
        if let Some(user) = target.user_id {
            if caller.user_id() == Some(user) {
                return Ok((Authority::OwnDevice, Vec::new()));
            }
            if audit_action == action::PRINCIPAL_REVOKE {
                // A member's lost laptop: an admin of every workspace the device's user belongs
                // to may revoke it. A device serves its user in every workspace, so an admin of
                // only some of them may not (one tenant's admin must not lock a user out of
                // another's); there, removing the user's grants is the tool.
                let who = Who {
                    principal: target.id,
                    user: Some(user),
                };
                let workspaces = self.state.storage.workspaces_for(&who).await?;
                let mut allowed = !workspaces.is_empty();
                for ws in &workspaces {
                    let ws_ref = ScopeRef {
                        workspace: ws.name.clone(),
                        ..ScopeRef::default()
                    };
                    if self
                        .access(caller, Some(&ws_ref), Action::ManageAccess, audit_action)
                        .await
                        .is_err()
                    {
                        allowed = false;
                        break;
                    }
                }
                if allowed {
                    return Ok((Authority::MemberAdmin, Vec::new()));
                }
            }
            return Err(ServiceError::PermissionDenied(
                "permission denied: a device can be revoked by its own user, or by an admin of \
                 every workspace its user belongs to; to take someone's access away in your \
                 workspace, run `zopp member remove EMAIL -w WORKSPACE`"
                    .into(),
            ));
        }
        let ws = target
            .workspace_id
            .ok_or_else(|| ServiceError::Internal("principal without user or workspace".into()))?;
        let ws_name = self
            .workspace_name(caller, ws)
            .await
            .map_err(|_| ServiceError::NotFound(format!("principal {} not found", target.id)))?;
        let grants: Vec<GrantListing> = self
            .state
            .storage
            .live_grants(ws)
            .await?
            .into_iter()
            .filter(|g| g.grantee == GranteeRef::Principal(target.id))
            .collect();
        let ws_ref = ScopeRef {
            workspace: ws_name.clone(),
            ..ScopeRef::default()
        };
        for g in &grants {
            let sref = ScopeRef {
                workspace: ws_name.clone(),
                project: g.project_name.clone().unwrap_or_default(),
                environment: g.environment_name.clone().unwrap_or_default(),
            };
            self.access(caller, Some(&sref), Action::ManageAccess, audit_action)
                .await?;
        }
        let access = match grants.first() {
            Some(_) => {
                self.access(caller, Some(&ws_ref), Action::View, audit_action)
                    .await?
            }
            None => {
                self.access(caller, Some(&ws_ref), Action::ManageAccess, audit_action)
                    .await?
            }
        };
        Ok((Authority::WorkspaceAdmin(Box::new(access)), grants))
    }

    pub(super) async fn revoke_principal_rpc(
        &self,
        caller: Caller,
        m: RevokePrincipalRequest,
    ) -> ServiceResult<RevokePrincipalResponse> {
        let id = parse_principal("principal_id", &m.principal_id)?;
        let target = self.live_principal(id).await?;
        let (authority, sp_grants) = self
            .principal_authority(&caller, &target, action::PRINCIPAL_REVOKE)
            .await?;
        let now = self.now_ms();
        // What it could read, gathered before its grants go.
        let (report, audits) = match &authority {
            Authority::WorkspaceAdmin(access) => {
                let removed: Vec<(Scope, Who)> = sp_grants
                    .iter()
                    .map(|g| {
                        (
                            g.scope,
                            Who {
                                principal: id,
                                user: None,
                            },
                        )
                    })
                    .collect();
                let report = self
                    .removal_report(access, &removed, vec![id], false)
                    .await?;
                let entry = audit::draft(
                    &caller,
                    action::PRINCIPAL_REVOKE,
                    &access.scope,
                    format!("principal/{id}"),
                    now,
                );
                (report, vec![entry])
            }
            Authority::OwnDevice | Authority::MemberAdmin => {
                self.device_report(&caller, &target, now).await?
            }
        };
        self.state
            .storage
            .revoke_principal(id, now, audits)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("principal {id} not found")))?;
        tracing::info!(principal = %id, "principal revoked");
        let info = self.admission_closure(&[id]).await?;
        let principal = info
            .iter()
            .find(|a| a.principal.id == id)
            .map(principal_info)
            .unwrap_or_else(|| PrincipalInfo {
                revoked_at_ms: now,
                ..PrincipalInfo::default()
            });
        Ok(RevokePrincipalResponse {
            principal: Some(principal),
            report: Some(report),
        })
    }

    /// What a revoked device could read: every environment under its user's grants (the
    /// device held their keys), and the scopes to rotate; plus one audit entry per workspace
    /// and one on the server chain.
    async fn device_report(
        &self,
        caller: &Caller,
        target: &PrincipalRecord,
        now: i64,
    ) -> ServiceResult<(RemovalReport, Vec<AuditDraft>)> {
        let who = Who {
            principal: target.id,
            user: target.user_id,
        };
        let mut report = RemovalReport {
            principal_ids: vec![target.id.to_string()],
            ..RemovalReport::default()
        };
        let mut audits = vec![audit::draft(
            caller,
            action::PRINCIPAL_REVOKE,
            &Scope::Server,
            format!("principal/{}", target.id),
            now,
        )];
        for ws in self.state.storage.workspaces_for(&who).await? {
            let res = self
                .state
                .storage
                .resolve(
                    &who,
                    &NamePath {
                        workspace: &ws.name,
                        project: None,
                        environment: None,
                    },
                )
                .await?;
            let mut tree = Vec::new();
            for p in self.state.storage.projects(ws.id).await? {
                let envs = self.state.storage.environments(p.id).await?;
                tree.push((p, envs));
            }
            for g in &res.grants {
                report
                    .rotate
                    .push(scope_ref(&ws.name, &g.grant.scope, &tree));
            }
            for (p, envs) in &tree {
                for e in envs {
                    let env_scope = Scope::Environment(ws.id, p.id, e.id);
                    if res.grants.iter().any(|g| g.grant.scope.covers(&env_scope)) {
                        report.environments.push(ScopeRef {
                            workspace: ws.name.clone(),
                            project: p.name.clone(),
                            environment: e.name.clone(),
                        });
                    }
                }
            }
            audits.push(audit::draft(
                caller,
                action::PRINCIPAL_REVOKE,
                &Scope::Workspace(ws.id),
                format!("principal/{}", target.id),
                now,
            ));
        }
        Ok((report, audits))
    }

    pub(super) async fn list_principals_rpc(
        &self,
        caller: Caller,
        m: ListPrincipalsRequest,
    ) -> ServiceResult<ListPrincipalsResponse> {
        if m.workspace.is_empty() {
            let user = caller.user_id().ok_or_else(|| {
                ServiceError::FailedPrecondition(
                    "a service principal has no devices; name its workspace with -w".into(),
                )
            })?;
            let devices = self.state.storage.user_principals(user).await?;
            let ids: Vec<PrincipalId> = devices.iter().map(|p| p.id).collect();
            let infos = self.state.storage.principal_admissions(&ids).await?;
            return Ok(ListPrincipalsResponse {
                principals: ids
                    .iter()
                    .filter_map(|id| infos.iter().find(|a| a.principal.id == *id))
                    .map(principal_info)
                    .collect(),
                grants: Vec::new(),
            });
        }
        let scope = ScopeRef {
            workspace: m.workspace,
            ..ScopeRef::default()
        };
        let access = self
            .access(
                &caller,
                Some(&scope),
                Action::ManageAccess,
                action::PRINCIPAL_LOOKUP,
            )
            .await?;
        let ws = &access.r.workspace;
        let services = self.state.storage.service_principals(ws.id).await?;
        let ids: Vec<PrincipalId> = services.iter().map(|p| p.id).collect();
        let infos = self.state.storage.principal_admissions(&ids).await?;
        let grants = self.state.storage.live_grants(ws.id).await?;
        let mut out = ListPrincipalsResponse::default();
        for id in &ids {
            if let Some(a) = infos.iter().find(|a| a.principal.id == *id) {
                out.principals.push(principal_info(a));
                out.grants.push(
                    grants
                        .iter()
                        .find(|g| g.grantee == GranteeRef::Principal(*id))
                        .map(|g| permission(g, &ws.name))
                        .unwrap_or_else(PermissionGrant::default),
                );
            }
        }
        Ok(out)
    }

    pub(super) async fn rename_principal_rpc(
        &self,
        caller: Caller,
        m: RenamePrincipalRequest,
    ) -> ServiceResult<PrincipalInfo> {
        let id = parse_principal("principal_id", &m.principal_id)?;
        validate::principal_name(&m.name)?;
        let target = self.live_principal(id).await?;
        let (authority, _) = self
            .principal_authority(&caller, &target, action::PRINCIPAL_RENAME)
            .await?;
        let now = self.now_ms();
        let scope = match &authority {
            Authority::OwnDevice | Authority::MemberAdmin => Scope::Server,
            Authority::WorkspaceAdmin(access) => access.scope,
        };
        let entry = audit::draft(
            &caller,
            action::PRINCIPAL_RENAME,
            &scope,
            format!("principal/{id}"),
            now,
        );
        if !self
            .state
            .storage
            .rename_principal(id, &m.name, vec![entry])
            .await?
        {
            return Err(ServiceError::AlreadyExists(format!(
                "a service principal named '{}' already exists in this workspace",
                m.name
            )));
        }
        let info = self.admission_closure(&[id]).await?;
        info.iter()
            .find(|a| a.principal.id == id)
            .map(principal_info)
            .ok_or_else(|| ServiceError::NotFound(format!("principal {id} not found")))
    }
}
