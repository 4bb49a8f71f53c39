//! What the team handlers share: resolving the scope a request names (a workspace, project or
//! environment) and authorizing an action on it, resolving grantees, describing principals with
//! their admission chains, and turning grant records into wire messages.

use std::collections::{BTreeSet, HashMap};

use zopp_crypto::ids::{PrincipalId, UserId};
use zopp_crypto::keys::AgreementPublic;
use zopp_proto::v1::{
    Grantee, PermissionGrant, PrincipalInfo, Role as WireRole, ScopeKind as WireScopeKind, ScopeRef,
};

use super::{convert, denial, Resolved, ZoppService};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{self, Action, Denied, Grant, Role, Scope};
use crate::storage::teams::{AdmissionRecord, GrantListing, GranteeRef, NewGrantKey};
use crate::storage::{NamePath, PrincipalRecord, Who};
use crate::validate;

/// Longest admission chain followed: real chains are a handful of links; a longer one is a loop
/// or an attack on the server's memory.
pub(super) const MAX_CHAIN: usize = 64;
/// Most principals one request may name, or one grant may carry keys for.
pub(super) const MAX_PRINCIPALS: usize = 1000;

/// A scope a request named, resolved and authorized.
pub(super) struct Access {
    /// The resolved names with the caller's grants.
    pub r: Resolved,
    /// The scope itself.
    pub scope: Scope,
    /// How messages name it, e.g. `environment 'prod' in project 'api'`.
    pub what: String,
}

impl Access {
    /// Id of the scope (workspace, project or environment id).
    pub fn scope_id(&self) -> String {
        scope_id(&self.scope)
    }
}

/// The id of a scope as text.
pub(super) fn scope_id(scope: &Scope) -> String {
    match scope {
        Scope::Server => String::new(),
        Scope::Workspace(w) => w.to_string(),
        Scope::Project(_, p) => p.to_string(),
        Scope::Environment(_, _, e) => e.to_string(),
    }
}

/// The wire kind of a scope.
pub(super) fn wire_kind(scope: &Scope) -> i32 {
    match scope {
        Scope::Server => WireScopeKind::Unspecified as i32,
        Scope::Workspace(_) => WireScopeKind::Workspace as i32,
        Scope::Project(..) => WireScopeKind::Project as i32,
        Scope::Environment(..) => WireScopeKind::Environment as i32,
    }
}

/// Parses a wire role: read, write or admin.
pub(super) fn parse_role(v: i32) -> ServiceResult<Role> {
    Role::try_from_i32(v)
        .ok_or_else(|| ServiceError::InvalidArgument("role must be read, write or admin".into()))
}

/// The wire form of a role.
pub(super) fn wire_role(r: Role) -> i32 {
    match r {
        Role::Read => WireRole::Read as i32,
        Role::Write => WireRole::Write as i32,
        Role::Admin => WireRole::Admin as i32,
    }
}

/// A principal id from a request.
pub(super) fn parse_principal(field: &str, text: &str) -> ServiceResult<PrincipalId> {
    PrincipalId::try_parse(text).map_err(|_| {
        ServiceError::InvalidArgument(format!(
            "{field} '{}' is not a principal id",
            text.chars().take(64).collect::<String>()
        ))
    })
}

/// Keys a request carries for a grant: well-framed, one per principal.
pub(super) fn grant_keys(
    keys: &[zopp_proto::v1::WrappedGrantKey],
) -> ServiceResult<Vec<NewGrantKey>> {
    if keys.len() > MAX_PRINCIPALS {
        return Err(ServiceError::InvalidArgument(format!(
            "at most {MAX_PRINCIPALS} wrapped keys per request"
        )));
    }
    let mut seen = BTreeSet::new();
    keys.iter()
        .map(|k| {
            let principal = parse_principal("keys.principal_id", &k.principal_id)?;
            if !seen.insert(principal) {
                return Err(ServiceError::InvalidArgument(format!(
                    "two keys for principal {principal}"
                )));
            }
            Ok(NewGrantKey {
                principal,
                key_epoch: k.key_epoch,
                wrapped_key: validate::recipient_wrap("keys.wrapped_key", &k.wrapped_key)?,
            })
        })
        .collect()
}

/// A principal as a chain verifier needs it.
pub(super) fn principal_info(a: &AdmissionRecord) -> PrincipalInfo {
    PrincipalInfo {
        principal: Some(convert::principal_public(&a.principal)),
        admission_invite_id: a
            .invite
            .as_ref()
            .map(|i| i.invite_id.to_string())
            .unwrap_or_default(),
        admission_invite_key: a
            .invite
            .as_ref()
            .map(|i| i.invite_key.to_vec())
            .unwrap_or_default(),
        admission_invite_signature: a
            .invite
            .as_ref()
            .map(|i| i.invite_signature.clone())
            .unwrap_or_default(),
        workspace_id: a
            .principal
            .workspace_id
            .map(|w| w.to_string())
            .unwrap_or_default(),
        expires_at_ms: a.principal.expires_at_ms.unwrap_or(0),
        revoked_at_ms: a.principal.revoked_at_ms.unwrap_or(0),
    }
}

/// Wire form of a live grant of the workspace named `workspace`.
pub(super) fn permission(g: &GrantListing, workspace: &str) -> PermissionGrant {
    let (user_email, principal_id) = match g.grantee {
        GranteeRef::User(_) => (g.user_email.clone().unwrap_or_default(), String::new()),
        GranteeRef::Principal(p) => (String::new(), p.to_string()),
    };
    PermissionGrant {
        id: g.id.to_string(),
        scope_kind: wire_kind(&g.scope),
        scope: Some(ScopeRef {
            workspace: workspace.to_string(),
            project: g.project_name.clone().unwrap_or_default(),
            environment: g.environment_name.clone().unwrap_or_default(),
        }),
        scope_id: scope_id(&g.scope),
        role: wire_role(g.role),
        user_email,
        principal_id,
        principal_name: g.principal_name.clone().unwrap_or_default(),
        service: g.service,
        granted_by: g.granted_by.to_string(),
        created_at_ms: g.created_at_ms,
    }
}

/// A grantee as RBAC and grant look-ups see it: its user's and its own grants.
pub(super) fn who_of(grantee: GranteeRef, record: Option<&PrincipalRecord>) -> Who {
    match grantee {
        // No principal has the nil id, so only the user's grants match.
        GranteeRef::User(u) => Who {
            principal: PrincipalId::from_bytes([0; 16]),
            user: Some(u),
        },
        GranteeRef::Principal(p) => Who {
            principal: p,
            user: record.and_then(|r| r.user_id),
        },
    }
}

/// A resolved grantee.
pub(super) struct ResolvedGrantee {
    /// For storage.
    pub grantee: GranteeRef,
    /// The principal record, for a principal grantee.
    pub record: Option<PrincipalRecord>,
    /// How messages name it: an email, or a principal's name and id.
    pub label: String,
}

impl ResolvedGrantee {
    /// The grantee as grant look-ups see it.
    pub fn who(&self) -> Who {
        who_of(self.grantee, self.record.as_ref())
    }
    /// The audit target naming it (ids only).
    pub fn target(&self) -> String {
        match self.grantee {
            GranteeRef::User(u) => format!("user/{u}"),
            GranteeRef::Principal(p) => format!("principal/{p}"),
        }
    }
}

impl ZoppService {
    /// Resolves the scope `sref` names and authorizes `action` on it (through
    /// [`ZoppService::authorize`], which audits refusals).
    ///
    /// A project or environment the caller cannot see is NOT_FOUND when the caller's role on
    /// its parent would allow the action anyway (it could see it if it existed), and otherwise
    /// PERMISSION_DENIED naming the role it needs: either way the answer is the same whether
    /// or not the scope exists, so nothing hidden leaks.
    pub(super) async fn access(
        &self,
        caller: &Caller,
        sref: Option<&ScopeRef>,
        action: Action,
        audit_action: &str,
    ) -> ServiceResult<Access> {
        let sref = sref.ok_or_else(|| {
            ServiceError::InvalidArgument(
                "scope is required: a workspace, optionally with a project and an environment"
                    .into(),
            )
        })?;
        validate::scope_name("workspace", &sref.workspace)?;
        let project = (!sref.project.is_empty()).then_some(sref.project.as_str());
        let environment = (!sref.environment.is_empty()).then_some(sref.environment.as_str());
        if let Some(p) = project {
            validate::scope_name("project", p)?;
        }
        if let Some(e) = environment {
            validate::scope_name("environment", e)?;
            if project.is_none() {
                return Err(ServiceError::InvalidArgument(
                    "an environment scope needs its project".into(),
                ));
            }
        }
        let res = self
            .state
            .storage
            .resolve(
                &caller.who(),
                &NamePath {
                    workspace: &sref.workspace,
                    project,
                    environment,
                },
            )
            .await?;
        let rbac_grants: Vec<Grant> = res.grants.iter().map(|g| g.grant).collect();
        let ws_missing =
            || ServiceError::NotFound(format!("workspace '{}' not found", sref.workspace));
        let workspace = res
            .workspace
            .filter(|w| rbac::visible(&rbac_grants, &Scope::Workspace(w.id)))
            .ok_or_else(ws_missing)?;
        let unseen = |parent: &Scope, missing: String, what: String| -> ServiceError {
            let could_see = action == Action::View
                || rbac::effective_role(&rbac_grants, parent)
                    .is_some_and(|r| r >= action.required_role());
            if could_see {
                ServiceError::NotFound(missing)
            } else {
                denial(
                    Denied::Forbidden {
                        required: action.required_role(),
                        held: None,
                    },
                    action,
                    &what,
                )
            }
        };
        let project = match project {
            None => None,
            Some(name) => {
                let p = res
                    .project
                    .filter(|p| rbac::visible(&rbac_grants, &Scope::Project(workspace.id, p.id)));
                match p {
                    Some(p) => Some(p),
                    None => {
                        return Err(unseen(
                            &Scope::Workspace(workspace.id),
                            format!(
                                "project '{name}' not found in workspace '{}'",
                                workspace.name
                            ),
                            format!("project '{name}' in workspace '{}'", workspace.name),
                        ))
                    }
                }
            }
        };
        let environment = match (environment, &project) {
            (Some(name), Some(p)) => {
                let e = res.environment.filter(|e| {
                    rbac::visible(&rbac_grants, &Scope::Environment(workspace.id, p.id, e.id))
                });
                match e {
                    Some(e) => Some(e),
                    None => {
                        return Err(unseen(
                            &Scope::Project(workspace.id, p.id),
                            format!("environment '{name}' not found in project '{}'", p.name),
                            format!("environment '{name}' in project '{}'", p.name),
                        ))
                    }
                }
            }
            _ => None,
        };
        let r = Resolved {
            workspace,
            project,
            environment,
            grants: res.grants,
            rbac: rbac_grants,
        };
        let scope = match (&r.project, &r.environment) {
            (Some(p), Some(e)) => Scope::Environment(r.workspace.id, p.id, e.id),
            (Some(p), None) => Scope::Project(r.workspace.id, p.id),
            _ => Scope::Workspace(r.workspace.id),
        };
        let what = r.describe(&scope);
        self.authorize(caller, &r, action, &scope, audit_action)
            .await?;
        Ok(Access { r, scope, what })
    }

    /// Resolves the grantee a request names, within workspace `access`. A service principal
    /// of another workspace is not found here.
    pub(super) async fn grantee(
        &self,
        g: Option<&Grantee>,
        access: &Access,
    ) -> ServiceResult<ResolvedGrantee> {
        let g = g.ok_or_else(|| {
            ServiceError::InvalidArgument("grantee is required: a principal id or an email".into())
        })?;
        match (g.principal_id.is_empty(), g.user_email.is_empty()) {
            (false, true) => {
                let id = parse_principal("grantee.principal_id", &g.principal_id)?;
                let missing = || ServiceError::NotFound(format!("principal {id} not found"));
                let p = self
                    .state
                    .storage
                    .principal(id)
                    .await?
                    .filter(|p| p.revoked_at_ms.is_none())
                    .ok_or_else(missing)?;
                if p.workspace_id.is_some_and(|w| w != access.r.workspace.id) {
                    return Err(missing());
                }
                let label = match &p.user_email {
                    Some(email) => format!("principal {id} ({email}, device '{}')", p.name),
                    None => format!("service principal '{}' ({id})", p.name),
                };
                Ok(ResolvedGrantee {
                    grantee: GranteeRef::Principal(id),
                    record: Some(p),
                    label,
                })
            }
            (true, false) => {
                validate::email(&g.user_email)?;
                let user: UserId = self
                    .state
                    .storage
                    .user_by_email(&g.user_email)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "no user with email '{}' on this server",
                            g.user_email
                        ))
                    })?;
                Ok(ResolvedGrantee {
                    grantee: GranteeRef::User(user),
                    record: None,
                    label: g.user_email.clone(),
                })
            }
            _ => Err(ServiceError::InvalidArgument(
                "name exactly one grantee: a principal id or a user's email".into(),
            )),
        }
    }

    /// Describes `start` and every admitter up to the chain roots.
    pub(super) async fn admission_closure(
        &self,
        start: &[PrincipalId],
    ) -> ServiceResult<Vec<AdmissionRecord>> {
        let mut found: HashMap<PrincipalId, AdmissionRecord> = HashMap::new();
        let mut frontier: Vec<PrincipalId> = start.to_vec();
        for _ in 0..MAX_CHAIN {
            frontier.retain(|id| !found.contains_key(id));
            frontier.sort();
            frontier.dedup();
            if frontier.is_empty() {
                break;
            }
            let loaded = self.state.storage.principal_admissions(&frontier).await?;
            frontier = loaded
                .iter()
                .filter_map(|a| a.principal.admitted_by)
                .collect();
            for a in loaded {
                found.insert(a.principal.id, a);
            }
        }
        let mut out: Vec<AdmissionRecord> = found.into_values().collect();
        out.sort_by_key(|a| a.principal.id);
        Ok(out)
    }
}

/// Refuses an X25519 key no client could wrap to safely.
pub(super) fn agreement_key(b: &[u8]) -> ServiceResult<AgreementPublic> {
    AgreementPublic::try_from_slice(b)
        .ok()
        .filter(|k| k.is_canonical() && !k.is_low_order())
        .ok_or_else(|| {
            ServiceError::InvalidArgument("agreement_key is not a valid X25519 public key".into())
        })
}
