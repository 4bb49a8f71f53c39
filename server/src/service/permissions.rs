//! `GetPrincipals`, `SetPermission`, `ListPermissions`, `RemovePermission` and
//! `EffectivePermission`: grants that carry keys (DESIGN.md §3) under the rules of DESIGN.md §5.
//!
//! The server cannot wrap keys: the granting client unwraps the scope key from its own grant,
//! verifies each grantee principal's admission chain (FORMAT.md §6), wraps the key to each, and
//! sends the wraps with the grant. The server checks that they cover exactly the grantee's live
//! principals at the scope's current key epoch, so a grant never leaves a device without its key.

use zopp_crypto::ids::{PrincipalId, ProjectId};
use zopp_proto::v1::{
    EffectivePermissionRequest, EffectivePermissionResponse, GetPrincipalsRequest,
    GetPrincipalsResponse, IssuedItem, ListPermissionsRequest, ListPermissionsResponse,
    PermissionGrant, RemovalReport, RemovePermissionRequest, RemovePermissionResponse, ScopeRef,
    SetPermissionRequest,
};

use super::statements::check_statements;
use super::teams::{
    grant_keys, parse_principal, parse_role, permission, principal_info, wire_role, Access,
    MAX_PRINCIPALS,
};
use super::ZoppService;
use crate::audit::{self, action};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{self, Action, Grant, Scope, Subject};
use crate::storage::teams::{
    GrantListing, GrantOutcome, GranteeRef, InviteStatus, NewGrant, RevokeOutcome, Stale,
};
use crate::storage::{EnvironmentRecord, GrantId, NamePath, ProjectRecord, Who};

/// The refusal for a grantee the caller may not look up: word for word what an unknown one
/// gets, so it tells nothing about who exists.
fn unknown_grantee(g: Option<&zopp_proto::v1::Grantee>) -> ServiceError {
    match g {
        Some(g) if !g.user_email.is_empty() => ServiceError::NotFound(format!(
            "no user with email '{}' on this server",
            g.user_email
        )),
        Some(g) => ServiceError::NotFound(format!(
            "principal {} not found",
            PrincipalId::try_parse(&g.principal_id)
                .map_or_else(|_| g.principal_id.clone(), |id| id.to_string())
        )),
        None => ServiceError::NotFound("grantee not found".into()),
    }
}

/// The message for keys prepared against a state that moved on.
pub(super) fn stale_error(stale: Stale, what: &str) -> ServiceError {
    match stale {
        Stale::Principals => ServiceError::Aborted(format!(
            "the devices holding keys for {what} changed while the keys were being wrapped; \
             run the command again"
        )),
        Stale::KeyEpoch { current } => ServiceError::Aborted(format!(
            "the key of {what} was rotated meanwhile (now at epoch {current}); run the command again"
        )),
        Stale::Subtree => ServiceError::Aborted(format!(
            "the projects, environments or grants under {what} changed meanwhile; run the \
             command again"
        )),
    }
}

impl ZoppService {
    pub(super) async fn get_principals_rpc(
        &self,
        caller: Caller,
        m: GetPrincipalsRequest,
    ) -> ServiceResult<GetPrincipalsResponse> {
        if m.principal_ids.len() > MAX_PRINCIPALS {
            return Err(ServiceError::InvalidArgument(format!(
                "at most {MAX_PRINCIPALS} principal ids per request"
            )));
        }
        let mut resp = GetPrincipalsResponse::default();
        let mut start: Vec<PrincipalId> = Vec::new();
        if m.workspace.is_empty() {
            if m.grantee.is_some() {
                return Err(ServiceError::InvalidArgument(
                    "looking up a grantee needs its workspace".into(),
                ));
            }
        } else {
            let access = match &m.grant_scope {
                // A grant in preparation: refuse before the client does any key work.
                Some(scope) => {
                    if scope.workspace != m.workspace {
                        return Err(ServiceError::InvalidArgument(
                            "grant_scope must be in the workspace named".into(),
                        ));
                    }
                    let role = parse_role(m.grant_role)?;
                    self.access(
                        &caller,
                        Some(scope),
                        Action::Grant(role),
                        action::PERMISSION_SET,
                    )
                    .await?
                }
                None => {
                    let scope = ScopeRef {
                        workspace: m.workspace.clone(),
                        ..ScopeRef::default()
                    };
                    self.access(
                        &caller,
                        Some(&scope),
                        Action::View,
                        action::PRINCIPAL_LOOKUP,
                    )
                    .await?
                }
            };
            let meta = self
                .state
                .storage
                .workspace_meta(access.r.workspace.id)
                .await?
                .ok_or_else(|| {
                    ServiceError::NotFound(format!("workspace '{}' not found", m.workspace))
                })?;
            resp.workspace_id = access.r.workspace.id.to_string();
            resp.workspace_creator_id = meta.creator.to_string();
            start.push(meta.creator);
            if m.grantee.is_some() {
                let g = self.grantee(m.grantee.as_ref(), &access).await?;
                let live = self
                    .state
                    .storage
                    .live_principals(g.grantee, self.now_ms())
                    .await?;
                // A stranger (sharing no workspace with the caller) is described only to a
                // caller who vouches for one of its devices by fingerprint; anyone else gets
                // the answer an unknown grantee gets.
                if !Self::vouched(&live, &m.fingerprints)
                    && !self.shares_workspace(&caller, &g.who()).await?
                {
                    return Err(unknown_grantee(m.grantee.as_ref()));
                }
                let mut ids: Vec<PrincipalId> = live.iter().map(|p| p.id).collect();
                ids.sort();
                resp.target_ids = ids.iter().map(ToString::to_string).collect();
                start.extend(ids);
            }
        }
        for text in &m.principal_ids {
            let id = parse_principal("principal_ids", text)?;
            let who = match self.state.storage.principal(id).await? {
                Some(p) => Who {
                    principal: p.id,
                    user: p.user_id,
                },
                None => return Err(ServiceError::NotFound(format!("principal {id} not found"))),
            };
            if !self.shares_workspace(&caller, &who).await? {
                return Err(ServiceError::NotFound(format!("principal {id} not found")));
            }
            start.push(id);
        }
        let infos = self.admission_closure(&start).await?;
        for text in &m.principal_ids {
            let id = parse_principal("principal_ids", text)?;
            if !infos.iter().any(|a| a.principal.id == id) {
                return Err(ServiceError::NotFound(format!("principal {id} not found")));
            }
        }
        resp.principals = infos.iter().map(principal_info).collect();
        Ok(resp)
    }

    pub(super) async fn set_permission_rpc(
        &self,
        caller: Caller,
        m: SetPermissionRequest,
    ) -> ServiceResult<PermissionGrant> {
        let role = parse_role(m.role)?;
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                Action::Grant(role),
                action::PERMISSION_SET,
            )
            .await?;
        let grantee = self.grantee(m.grantee.as_ref(), &access).await?;
        if m.scope_id != access.scope_id() {
            return Err(ServiceError::Aborted(format!(
                "{} is not the scope the keys were wrapped for (it was replaced); run the \
                 command again",
                access.what
            )));
        }
        let keys = grant_keys(&m.keys)?;
        let now = self.now_ms();
        let statements = check_statements(
            access.r.workspace.id,
            caller.principal_id(),
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let id = GrantId::new_random();
        let entry = audit::draft(
            &caller,
            action::PERMISSION_SET,
            &access.scope,
            format!("{} {role}", grantee.target()),
            now,
        );
        let grant = NewGrant {
            id,
            scope: access.scope,
            role,
            grantee: grantee.grantee,
            granted_by: caller.principal_id(),
            keys,
            now_ms: now,
        };
        match self.state.storage.set_grant(grant, entry).await? {
            GrantOutcome::Granted { .. } => {}
            GrantOutcome::Stale(s) => return Err(stale_error(s, &access.what)),
        }
        self.state.storage.add_key_statements(&statements).await?;
        tracing::info!(grant = %id, role = %role, "permission set");
        let listing = self
            .state
            .storage
            .live_grants(access.r.workspace.id)
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or_else(|| ServiceError::Internal("a new grant is not listed".into()))?;
        Ok(permission(&listing, &access.r.workspace.name))
    }

    pub(super) async fn list_permissions_rpc(
        &self,
        caller: Caller,
        m: ListPermissionsRequest,
    ) -> ServiceResult<ListPermissionsResponse> {
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                Action::ManageAccess,
                action::PERMISSION_LIST,
            )
            .await?;
        let grants = self
            .state
            .storage
            .live_grants(access.r.workspace.id)
            .await?;
        Ok(ListPermissionsResponse {
            grants: grants
                .iter()
                .filter(|g| access.scope.covers(&g.scope))
                .map(|g| permission(g, &access.r.workspace.name))
                .collect(),
        })
    }

    pub(super) async fn remove_permission_rpc(
        &self,
        caller: Caller,
        m: RemovePermissionRequest,
    ) -> ServiceResult<RemovePermissionResponse> {
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                Action::ManageAccess,
                action::PERMISSION_REMOVE,
            )
            .await?;
        let grantee = self.grantee(m.grantee.as_ref(), &access).await?;
        let existing = self
            .state
            .storage
            .live_grants(access.r.workspace.id)
            .await?
            .into_iter()
            .find(|g| g.scope == access.scope && g.grantee == grantee.grantee)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "{} holds no grant on {} (grants above or below it are removed where they \
                     were made)",
                    grantee.label, access.what
                ))
            })?;
        // Taking a role away is giving it in reverse: the same no-escalation rule applies.
        let subject = Subject {
            kind: caller.kind(),
            grants: &access.r.rbac,
        };
        if let Err(d) = rbac::authorize(&subject, Action::Grant(existing.role), &access.scope) {
            return Err(super::denial(d, Action::Grant(existing.role), &access.what));
        }
        let principals = self
            .state
            .storage
            .live_principals(grantee.grantee, self.now_ms())
            .await?;
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::PERMISSION_REMOVE,
            &access.scope,
            format!("{} {}", grantee.target(), existing.role),
            now,
        );
        match self
            .state
            .storage
            .revoke_grant(access.r.workspace.id, existing.id, now, entry)
            .await?
        {
            RevokeOutcome::Revoked => {}
            RevokeOutcome::NotFound => {
                return Err(ServiceError::NotFound(format!(
                    "{} holds no grant on {}",
                    grantee.label, access.what
                )))
            }
            RevokeOutcome::LastAdmin => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "this is the last admin grant of workspace '{}': grant admin to someone else \
                     first",
                    access.r.workspace.name
                )))
            }
        }
        let mut report = self
            .removal_report(
                &access,
                &[(existing.scope, grantee.who())],
                principals.iter().map(|p| p.id).collect(),
                true,
            )
            .await?;
        report.issued = self
            .leftovers(&caller, &access, &grantee.grantee, m.keep_issued)
            .await?;
        Ok(RemovePermissionResponse {
            removed: Some(permission(&existing, &access.r.workspace.name)),
            report: Some(report),
        })
    }

    /// Whether `fingerprints` name one of `principals` itself (as `zopp principal fingerprint`
    /// prints it on that device, FORMAT.md §3.4). A root's fingerprint is not enough: roots are
    /// shared widely, and would let anyone list every user admitted under one.
    fn vouched(principals: &[crate::storage::PrincipalRecord], fingerprints: &[String]) -> bool {
        let wanted: Vec<String> = fingerprints
            .iter()
            .map(|f| f.trim().to_ascii_lowercase())
            .collect();
        principals
            .iter()
            .any(|p| wanted.contains(&p.signing_key.fingerprint()))
    }

    /// What a grantee who just lost their last grant in the workspace had issued there and what
    /// would outlive them: unredeemed invites they created and live service principals they
    /// admitted. Revoked here (each with its own audit entry) unless `keep`, and only when the
    /// caller is an admin of the workspace, who alone may revoke them otherwise; listed either
    /// way. A grantee who keeps another grant in the workspace is still a member: nothing.
    async fn leftovers(
        &self,
        caller: &Caller,
        access: &Access,
        grantee: &GranteeRef,
        keep: bool,
    ) -> ServiceResult<Vec<IssuedItem>> {
        let ws = access.r.workspace.id;
        let issuers: Vec<PrincipalId> = match grantee {
            GranteeRef::User(u) => self
                .state
                .storage
                .user_principals(*u)
                .await?
                .iter()
                .map(|p| p.id)
                .collect(),
            GranteeRef::Principal(p) => vec![*p],
        };
        let still_member =
            self.state
                .storage
                .live_grants(ws)
                .await?
                .iter()
                .any(|g| match g.grantee {
                    GranteeRef::Principal(p) => issuers.contains(&p),
                    ref other => other == grantee,
                });
        if still_member {
            return Ok(Vec::new());
        }
        let subject = Subject {
            kind: caller.kind(),
            grants: &access.r.rbac,
        };
        let may_revoke =
            rbac::authorize(&subject, Action::ManageAccess, &Scope::Workspace(ws)).is_ok();
        let revoke = may_revoke && !keep;
        let now = self.now_ms();
        let mut issued = Vec::new();
        for invite in self.state.storage.invites(ws).await? {
            if !issuers.contains(&invite.created_by) || invite.status(now) != InviteStatus::Pending
            {
                continue;
            }
            let revoked = revoke && {
                let entry = audit::draft(
                    caller,
                    action::WORKSPACE_INVITE_REVOKE,
                    &Scope::Workspace(ws),
                    format!("invite/{}", invite.id),
                    now,
                );
                self.state
                    .storage
                    .revoke_invite(ws, invite.id, now, entry)
                    .await?
            };
            issued.push(IssuedItem {
                kind: "invite".into(),
                id: invite.id.to_string(),
                name: invite.role.name().into(),
                expires_at_ms: invite.expires_at_ms,
                revoked,
            });
        }
        for sp in self.state.storage.service_principals(ws).await? {
            let live = sp.revoked_at_ms.is_none() && sp.expires_at_ms.is_none_or(|t| t > now);
            if !live || !sp.admitted_by.is_some_and(|a| issuers.contains(&a)) {
                continue;
            }
            let revoked = revoke && {
                let entry = audit::draft(
                    caller,
                    action::PRINCIPAL_REVOKE,
                    &Scope::Workspace(ws),
                    format!("principal/{}", sp.id),
                    now,
                );
                self.state
                    .storage
                    .revoke_principal(sp.id, now, vec![entry])
                    .await?
                    .is_some()
            };
            if revoked {
                tracing::info!(principal = %sp.id, "service principal of a removed member revoked");
            }
            issued.push(IssuedItem {
                kind: "service_principal".into(),
                id: sp.id.to_string(),
                name: sp.name.clone(),
                expires_at_ms: sp.expires_at_ms.unwrap_or(0),
                revoked,
            });
        }
        Ok(issued)
    }

    /// What a removal took: the environments under each removed grant's scope that no remaining
    /// grant of that grantee covers, and the scopes to rotate.
    /// `removed` pairs each removed grant's scope with its grantee; with `subtract_remaining`,
    /// environments another grant of that grantee still covers are left out (a grant removal),
    /// without it every environment under the scopes counts (a revoked principal loses all).
    pub(super) async fn removal_report(
        &self,
        access: &Access,
        removed: &[(Scope, Who)],
        principals: Vec<PrincipalId>,
        subtract_remaining: bool,
    ) -> ServiceResult<RemovalReport> {
        let ws = &access.r.workspace;
        let mut tree = Vec::new();
        for p in self.state.storage.projects(ws.id).await? {
            let envs = self.state.storage.environments(p.id).await?;
            tree.push((p, envs));
        }
        let mut report = RemovalReport {
            principal_ids: principals.iter().map(ToString::to_string).collect(),
            ..RemovalReport::default()
        };
        for (scope, who) in removed {
            let remaining: Vec<Grant> = if !subtract_remaining {
                Vec::new()
            } else {
                self.state
                    .storage
                    .resolve(
                        who,
                        &NamePath {
                            workspace: &ws.name,
                            project: None,
                            environment: None,
                        },
                    )
                    .await?
                    .grants
                    .iter()
                    .map(|g| g.grant)
                    .collect()
            };
            let rotate = scope_ref(&ws.name, scope, &tree);
            if !report.rotate.contains(&rotate) {
                report.rotate.push(rotate);
            }
            for (p, envs) in &tree {
                for e in envs {
                    let env_scope = Scope::Environment(ws.id, p.id, e.id);
                    let env_ref = scope_ref(&ws.name, &env_scope, &tree);
                    if scope.covers(&env_scope)
                        && rbac::effective_role(&remaining, &env_scope).is_none()
                        && !report.environments.contains(&env_ref)
                    {
                        report.environments.push(env_ref);
                    }
                }
            }
        }
        Ok(report)
    }

    pub(super) async fn effective_permission_rpc(
        &self,
        caller: Caller,
        m: EffectivePermissionRequest,
    ) -> ServiceResult<EffectivePermissionResponse> {
        let about_self = m
            .grantee
            .as_ref()
            .is_none_or(|g| g.principal_id.is_empty() && g.user_email.is_empty());
        let access = self
            .access(
                &caller,
                m.scope.as_ref(),
                if about_self {
                    Action::View
                } else {
                    Action::ManageAccess
                },
                action::PERMISSION_EFFECTIVE,
            )
            .await?;
        let who = if about_self {
            caller.who()
        } else {
            self.grantee(m.grantee.as_ref(), &access).await?.who()
        };
        let held: Vec<GrantId> = self
            .state
            .storage
            .resolve(
                &who,
                &NamePath {
                    workspace: &access.r.workspace.name,
                    project: None,
                    environment: None,
                },
            )
            .await?
            .grants
            .iter()
            .filter(|g| g.grant.scope.covers(&access.scope))
            .map(|g| g.id)
            .collect();
        let via: Vec<GrantListing> = self
            .state
            .storage
            .live_grants(access.r.workspace.id)
            .await?
            .into_iter()
            .filter(|g| held.contains(&g.id))
            .collect();
        let role = via.iter().map(|g| g.role).max();
        Ok(EffectivePermissionResponse {
            role: role.map(wire_role).unwrap_or(0),
            via: via
                .iter()
                .map(|g| permission(g, &access.r.workspace.name))
                .collect(),
        })
    }
}

/// The names of `scope` in workspace `workspace`, whose projects and environments are `tree`.
pub(super) fn scope_ref(
    workspace: &str,
    scope: &Scope,
    tree: &[(ProjectRecord, Vec<EnvironmentRecord>)],
) -> ScopeRef {
    let project = |id: ProjectId| tree.iter().find(|(p, _)| p.id == id);
    let (project, environment) = match scope {
        Scope::Environment(_, p, e) => {
            let found = project(*p);
            (
                found.map(|(p, _)| p.name.clone()).unwrap_or_default(),
                found
                    .and_then(|(_, envs)| envs.iter().find(|env| env.id == *e))
                    .map(|env| env.name.clone())
                    .unwrap_or_default(),
            )
        }
        Scope::Project(_, p) => (
            project(*p).map(|(p, _)| p.name.clone()).unwrap_or_default(),
            String::new(),
        ),
        _ => (String::new(), String::new()),
    };
    ScopeRef {
        workspace: workspace.to_string(),
        project,
        environment,
    }
}
