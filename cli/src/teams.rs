//! Teams in the SDK: grants that carry keys (DESIGN.md §3, §5). Granting unwraps the scope's key
//! from the caller's own grant, verifies each grantee principal's admission chain
//! ([`crate::trust`]), wraps the key to each, and sends the wraps with the grant; the server
//! stores them without being able to open them.

use std::fmt;

use rand_core::OsRng;
use tonic::{Code, Response, Status};
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{ScopeKey, ScopeKind};
use zopp_crypto::statement::StatementRole;
use zopp_crypto::wrap::{wrap_to_recipient, KeyContext};
use zopp_proto::v1 as pb;

use crate::chain::CurrentEnvironmentKey;
use crate::client::{Client, Target};
use crate::error::{Error, Missing, Result};
use crate::scope::EnvRef;
use crate::trust::{TrustStore, TrustedPrincipal, Verifier};
use crate::validate::{check_name, NameKind};
use crate::verify::keys::ChainStatements;
use crate::verify::make::StatementMaker;

/// Full gRPC method paths of the team RPCs, as signed (FORMAT.md §4).
pub mod method {
    /// `GetPrincipals`.
    pub const GET_PRINCIPALS: &str = "/zopp.v1.Zopp/GetPrincipals";
    /// `SetPermission`.
    pub const SET_PERMISSION: &str = "/zopp.v1.Zopp/SetPermission";
    /// `ListPermissions`.
    pub const LIST_PERMISSIONS: &str = "/zopp.v1.Zopp/ListPermissions";
    /// `RemovePermission`.
    pub const REMOVE_PERMISSION: &str = "/zopp.v1.Zopp/RemovePermission";
    /// `EffectivePermission`.
    pub const EFFECTIVE_PERMISSION: &str = "/zopp.v1.Zopp/EffectivePermission";
    /// `GetKeyShare`.
    pub const GET_KEY_SHARE: &str = "/zopp.v1.Zopp/GetKeyShare";
}

/// A role, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// List, get, history, export, run.
    Read,
    /// Read, plus set, delete, import, rollback.
    Write,
    /// Write, plus managing scopes, access and keys.
    Admin,
}

impl Role {
    /// The role as key statements name it (FORMAT.md §13.4).
    pub fn statement_role(self) -> StatementRole {
        match self {
            Role::Read => StatementRole::Read,
            Role::Write => StatementRole::Write,
            Role::Admin => StatementRole::Admin,
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> i32 {
        match self {
            Role::Read => pb::Role::Read as i32,
            Role::Write => pb::Role::Write as i32,
            Role::Admin => pb::Role::Admin as i32,
        }
    }
    /// Parses a wire value (`None` for unspecified or unknown).
    pub fn from_proto(v: i32) -> Option<Self> {
        match pb::Role::try_from(v) {
            Ok(pb::Role::Read) => Some(Role::Read),
            Ok(pb::Role::Write) => Some(Role::Write),
            Ok(pb::Role::Admin) => Some(Role::Admin),
            _ => None,
        }
    }
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A workspace, a project in it, or an environment: the scope of a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSpec {
    workspace: String,
    project: Option<String>,
    environment: Option<String>,
}

impl ScopeSpec {
    /// Checks the names: an environment needs its project.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidInput`].
    pub fn try_new(
        workspace: &str,
        project: Option<&str>,
        environment: Option<&str>,
    ) -> Result<Self> {
        check_name(NameKind::Workspace, workspace)?;
        if let Some(p) = project {
            check_name(NameKind::Project, p)?;
        }
        if let Some(e) = environment {
            check_name(NameKind::Environment, e)?;
            if project.is_none() {
                return Err(Error::InvalidInput(
                    "an environment scope needs its project: pass -p with -e".into(),
                ));
            }
        }
        Ok(Self {
            workspace: workspace.to_owned(),
            project: project.map(str::to_owned),
            environment: environment.map(str::to_owned),
        })
    }
    /// The workspace.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }
    /// The project, if the scope is a project or an environment.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }
    /// The environment, if the scope is one.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }
    /// The environment reference, when the scope is an environment.
    pub fn env_ref(&self) -> Option<EnvRef> {
        match (&self.project, &self.environment) {
            (Some(p), Some(e)) => EnvRef::try_new(&self.workspace, p, e).ok(),
            _ => None,
        }
    }
    /// The wire form.
    pub fn to_proto(&self) -> pb::ScopeRef {
        pb::ScopeRef {
            workspace: self.workspace.clone(),
            project: self.project.clone().unwrap_or_default(),
            environment: self.environment.clone().unwrap_or_default(),
        }
    }
    /// From the wire form.
    pub fn from_proto(s: &pb::ScopeRef) -> Self {
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Self {
            workspace: s.workspace.clone(),
            project: opt(&s.project),
            environment: opt(&s.environment),
        }
    }
    /// How messages name it, e.g. `environment 'prod' in project 'api'`.
    pub fn describe(&self) -> String {
        match (&self.project, &self.environment) {
            (Some(p), Some(e)) => format!("environment '{e}' in project '{p}'"),
            (Some(p), None) => format!("project '{p}' in workspace '{}'", self.workspace),
            _ => format!("workspace '{}'", self.workspace),
        }
    }
    /// The `-w/-p/-e` flags naming it.
    pub fn flags(&self) -> String {
        let mut s = format!("-w {}", self.workspace);
        if let Some(p) = &self.project {
            s.push_str(&format!(" -p {p}"));
        }
        if let Some(e) = &self.environment {
            s.push_str(&format!(" -e {e}"));
        }
        s
    }
}

impl fmt::Display for ScopeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.workspace)?;
        if let Some(p) = &self.project {
            write!(f, "/{p}")?;
        }
        if let Some(e) = &self.environment {
            write!(f, "/{e}")?;
        }
        Ok(())
    }
}

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GranteeSpec {
    /// A user, by email: all of the user's devices.
    User(String),
    /// One principal (a device or a service principal).
    Principal(PrincipalId),
}

impl GranteeSpec {
    /// Parses `--principal ID` or `--user EMAIL`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid id or email.
    pub fn try_new(principal: Option<&str>, user: Option<&str>) -> Result<Self> {
        match (principal, user) {
            (Some(p), None) => PrincipalId::try_parse(p.trim())
                .map(GranteeSpec::Principal)
                .map_err(|_| {
                    Error::InvalidInput(format!(
                        "'{}' is not a principal id (a UUID, as `zopp principal list` shows)",
                        p.escape_debug()
                    ))
                }),
            (None, Some(u)) => {
                if u.is_empty()
                    || u.len() > 254
                    || !u.contains('@')
                    || u.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Error::InvalidInput(format!(
                        "'{}' is not an email address",
                        u.escape_debug()
                    )));
                }
                Ok(GranteeSpec::User(u.to_owned()))
            }
            _ => Err(Error::InvalidInput(
                "name exactly one grantee: --principal ID or --user EMAIL".into(),
            )),
        }
    }
    /// The wire form.
    pub fn to_proto(&self) -> pb::Grantee {
        match self {
            GranteeSpec::User(e) => pb::Grantee {
                user_email: e.clone(),
                ..Default::default()
            },
            GranteeSpec::Principal(p) => pb::Grantee {
                principal_id: p.to_string(),
                ..Default::default()
            },
        }
    }
}

impl fmt::Display for GranteeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GranteeSpec::User(e) => f.write_str(e),
            GranteeSpec::Principal(p) => write!(f, "principal {p}"),
        }
    }
}

/// A scope's current key, opened from the caller's own grant.
pub(crate) struct ScopeKeyMaterial {
    /// The key.
    pub key: ScopeKey,
    /// Its context (FORMAT.md §3.1).
    pub context: KeyContext,
    /// The scope's id.
    pub scope_id: String,
    /// Its epoch (environments) or generation (workspaces, projects), as grants record it.
    pub epoch: u32,
    /// Id of its workspace (the scope itself for a workspace).
    pub workspace_id: String,
    /// Id of its project (the scope itself for a project; `None` for a workspace).
    pub project_id: Option<String>,
    /// The workspace it belongs to (statements about it name it).
    pub workspace: WorkspaceId,
}

/// What a grant did.
#[derive(Debug)]
pub struct GrantOutcome {
    /// The grant as stored.
    pub grant: pb::PermissionGrant,
    /// The principals the key was wrapped to.
    pub principals: Vec<TrustedPrincipal>,
    /// Notes for the user (roots trusted on first use).
    pub notes: Vec<String>,
}

impl Client {
    /// Maps a team RPC's status: NOT_FOUND names scopes the way secret commands do when the
    /// server's message is about one, and keeps the server's message otherwise (principals,
    /// users, grants).
    pub(crate) fn team_error(&self, status: Status, scope: Option<&ScopeSpec>) -> Error {
        if status.code() == Code::NotFound {
            let msg = status.message();
            let about_scope = ["workspace '", "project '", "environment '"]
                .iter()
                .any(|w| msg.starts_with(w));
            if !about_scope || scope.is_none() {
                return Error::NotFound(Missing::Other(msg.to_owned()));
            }
        }
        match scope {
            Some(s) => {
                let env = s.env_ref();
                let target = match (&env, s.project()) {
                    (Some(e), _) => Target::Environment(e),
                    (None, Some(p)) => Target::Project {
                        workspace: s.workspace(),
                        project: p,
                    },
                    (None, None) => Target::Workspace(s.workspace()),
                };
                self.status_error(status, target)
            }
            None => self.status_error(status, Target::Server),
        }
    }

    /// Public keys and admission chains of `grantee`'s live principals (and of `ids`) in
    /// `workspace`, as the server describes them (not yet verified).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown grantee; transport and server errors.
    pub async fn get_principals(
        &self,
        workspace: Option<&str>,
        grantee: Option<&GranteeSpec>,
        ids: &[PrincipalId],
    ) -> Result<pb::GetPrincipalsResponse> {
        self.get_principals_for(workspace, grantee, ids, None).await
    }

    /// Like [`Client::get_principals`], first checking that this principal may give `grant`'s
    /// role at its scope, so a refusal comes before any key is fetched or wrapped.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming the role needed; as [`Client::get_principals`].
    pub async fn get_principals_for(
        &self,
        workspace: Option<&str>,
        grantee: Option<&GranteeSpec>,
        ids: &[PrincipalId],
        grant: Option<(&ScopeSpec, Role)>,
    ) -> Result<pb::GetPrincipalsResponse> {
        self.get_principals_vouched(workspace, grantee, ids, grant, &[])
            .await
    }

    /// Like [`Client::get_principals_for`], vouching for admission roots by `fingerprints`: the
    /// server describes a grantee who shares no workspace with this principal only when one of
    /// its chain roots is among them.
    ///
    /// # Errors
    /// As [`Client::get_principals_for`].
    pub async fn get_principals_vouched(
        &self,
        workspace: Option<&str>,
        grantee: Option<&GranteeSpec>,
        ids: &[PrincipalId],
        grant: Option<(&ScopeSpec, Role)>,
        fingerprints: &[String],
    ) -> Result<pb::GetPrincipalsResponse> {
        let req = self.signed(
            method::GET_PRINCIPALS,
            pb::GetPrincipalsRequest {
                workspace: workspace.unwrap_or_default().to_owned(),
                grantee: grantee.map(GranteeSpec::to_proto),
                principal_ids: ids.iter().map(ToString::to_string).collect(),
                grant_scope: grant.map(|(s, _)| s.to_proto()),
                grant_role: grant.map_or(0, |(_, r)| r.to_proto()),
                fingerprints: fingerprints.to_vec(),
            },
        );
        let scope = match grant {
            Some((s, _)) => Some(s.clone()),
            None => workspace.and_then(|w| ScopeSpec::try_new(w, None, None).ok()),
        };
        self.rpc()
            .get_principals(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, scope.as_ref()))
    }

    /// The trust store of this client: `$ZOPP_HOME/trust.toml`, or memory only in token mode.
    pub(crate) fn trust_store(&self) -> Result<TrustStore> {
        match self.home() {
            Some(home) => TrustStore::load(home),
            None => {
                let mut store = TrustStore::in_memory();
                // A principal token carries the workspace root it was minted under.
                if let Some((ws, root, key)) = self.token_root() {
                    store.pin_workspace(ws, root, &key);
                }
                Ok(store)
            }
        }
    }

    /// Verifies the admission chains of `ids` in `resp` (FORMAT.md §6) and returns their keys.
    ///
    /// # Errors
    /// [`Error::Untrusted`] naming the first principal that does not check out.
    pub(crate) fn verify_principals(
        &self,
        resp: &pb::GetPrincipalsResponse,
        ids: &[PrincipalId],
        fingerprints: &[String],
    ) -> Result<(Vec<TrustedPrincipal>, Vec<String>)> {
        let mut store = self.trust_store()?;
        let me = self.identity();
        let mut v = Verifier::new(
            resp,
            me.principal(),
            me.keys().signing.verifying_key(),
            fingerprints,
            &mut store,
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(v.verify(*id, &mut store)?);
        }
        let notes = v.notes().to_vec();
        store.save()?;
        Ok((out, notes))
    }

    /// The current key of `scope`, opened from this principal's own grant.
    pub(crate) async fn scope_key(&self, scope: &ScopeSpec) -> Result<ScopeKeyMaterial> {
        if let Some(env) = scope.env_ref() {
            let keys = self.environment_keys(&env).await?;
            self.check_scopes(&crate::pins::environment_sightings(&env, &keys))?;
            let current = CurrentEnvironmentKey::derive(
                &keys,
                self.identity().principal(),
                &self.identity().keys().agreement,
            )
            .map_err(|e| Error::KeyChain {
                scope: format!("environment '{}'", env.environment()),
                reason: e.to_string(),
            })?;
            let workspace = WorkspaceId::try_parse(&keys.workspace_id)
                .map_err(|_| Error::BadResponse("invalid workspace id".into()))?;
            self.authenticate_chain(
                &current.trail,
                workspace,
                ChainStatements::of_environment(&keys),
                &format!("environment '{}'", env.environment()),
            )?;
            return Ok(ScopeKeyMaterial {
                workspace,
                context: KeyContext {
                    kind: ScopeKind::Environment,
                    id: *current.environment.as_bytes(),
                    epoch: current.epoch,
                },
                scope_id: current.environment.to_string(),
                epoch: current.epoch,
                key: current.key,
                workspace_id: keys.workspace_id.clone(),
                project_id: Some(keys.project_id.clone()),
            });
        }
        let chain = self.scope_chain(scope.workspace(), scope.project()).await?;
        let scope_id = match chain.project() {
            Some(p) => p.to_string(),
            None => chain.workspace().to_string(),
        };
        Ok(ScopeKeyMaterial {
            workspace: chain.workspace(),
            context: chain.context(),
            scope_id,
            epoch: chain.generation(),
            key: chain.key().clone(),
            workspace_id: chain.workspace().to_string(),
            project_id: chain.project().map(|p| p.to_string()),
        })
    }

    /// Grants `role` at `scope` to `grantee`: the scope key is wrapped to each of the
    /// grantee's live principals after their admission chains verify. `fingerprints` vouch for
    /// chain roots this client does not know yet.
    ///
    /// # Errors
    /// [`Error::Untrusted`] when a grantee principal does not check out (nothing is sent);
    /// [`Error::Refused`] with PERMISSION_DENIED when the caller may not grant this;
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn set_permission(
        &self,
        scope: &ScopeSpec,
        grantee: &GranteeSpec,
        role: Role,
        fingerprints: &[String],
    ) -> Result<GrantOutcome> {
        let principals = self
            .get_principals_vouched(
                Some(scope.workspace()),
                Some(grantee),
                &[],
                Some((scope, role)),
                fingerprints,
            )
            .await?;
        let ids = principals
            .target_ids
            .iter()
            .map(|id| {
                PrincipalId::try_parse(id)
                    .map_err(|_| Error::BadResponse("invalid principal id".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let (trusted, notes) = self.verify_principals(&principals, &ids, fingerprints)?;
        let material = self.scope_key(scope).await?;
        let keys = trusted
            .iter()
            .map(|p| {
                wrap_to_recipient(
                    &material.key,
                    &material.context,
                    &p.id,
                    &p.agreement,
                    &mut OsRng,
                )
                .map(|w| pb::WrappedGrantKey {
                    principal_id: p.id.to_string(),
                    key_epoch: material.epoch,
                    wrapped_key: w.into_bytes(),
                })
                .map_err(|_| Error::Untrusted {
                    message: format!(
                        "principal {} ({}) has an unusable X25519 key",
                        p.id, p.label
                    ),
                    fingerprint: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // One grant statement per wrap: the granter vouches for what it wrapped to whom.
        let maker = StatementMaker::new(
            material.workspace,
            self.identity().principal(),
            &self.identity().keys().signing,
        );
        let statements = keys
            .iter()
            .map(|k| {
                let recipient = PrincipalId::try_parse(&k.principal_id)
                    .map_err(|_| Error::BadResponse("invalid principal id".into()))?;
                Ok(maker.grant(
                    &material.context,
                    material.epoch,
                    role.statement_role(),
                    recipient,
                    &k.wrapped_key,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let req = self.signed(
            method::SET_PERMISSION,
            pb::SetPermissionRequest {
                scope: Some(scope.to_proto()),
                grantee: Some(grantee.to_proto()),
                role: role.to_proto(),
                scope_id: material.scope_id.clone(),
                keys,
                statements,
            },
        );
        let grant = self
            .rpc()
            .set_permission(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| match s.code() {
                Code::Aborted => Error::Conflict(s.message().to_owned()),
                _ => self.team_error(s, Some(scope)),
            })?;
        Ok(GrantOutcome {
            grant,
            principals: trusted,
            notes,
        })
    }

    /// Live grants at `scope` and below it.
    ///
    /// # Errors
    /// PERMISSION_DENIED without the admin role there; [`Error::NotFound`]; transport errors.
    pub async fn list_permissions(&self, scope: &ScopeSpec) -> Result<Vec<pb::PermissionGrant>> {
        let req = self.signed(
            method::LIST_PERMISSIONS,
            pb::ListPermissionsRequest {
                scope: Some(scope.to_proto()),
            },
        );
        self.rpc()
            .list_permissions(req)
            .await
            .map(|r| r.into_inner().grants)
            .map_err(|s| self.team_error(s, Some(scope)))
    }

    /// Removes `grantee`'s grant at exactly `scope` and reports what it could read.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such grant; PERMISSION_DENIED; transport errors.
    pub async fn remove_permission(
        &self,
        scope: &ScopeSpec,
        grantee: &GranteeSpec,
    ) -> Result<pb::RemovePermissionResponse> {
        self.remove_permission_keeping(scope, grantee, false).await
    }

    /// As [`Client::remove_permission`]; with `keep_issued`, the invites and service principals
    /// a grantee left without any grant in the workspace had issued stay valid (the report
    /// lists them either way).
    ///
    /// # Errors
    /// As [`Client::remove_permission`].
    pub async fn remove_permission_keeping(
        &self,
        scope: &ScopeSpec,
        grantee: &GranteeSpec,
        keep_issued: bool,
    ) -> Result<pb::RemovePermissionResponse> {
        let req = self.signed(
            method::REMOVE_PERMISSION,
            pb::RemovePermissionRequest {
                scope: Some(scope.to_proto()),
                grantee: Some(grantee.to_proto()),
                keep_issued,
            },
        );
        self.rpc()
            .remove_permission(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, Some(scope)))
    }

    /// The effective role of `grantee` (this principal when `None`) at `scope`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; PERMISSION_DENIED asking about someone else without admin there.
    pub async fn effective_permission(
        &self,
        scope: &ScopeSpec,
        grantee: Option<&GranteeSpec>,
    ) -> Result<pb::EffectivePermissionResponse> {
        let req = self.signed(
            method::EFFECTIVE_PERMISSION,
            pb::EffectivePermissionRequest {
                scope: Some(scope.to_proto()),
                grantee: grantee.map(GranteeSpec::to_proto),
            },
        );
        self.rpc()
            .effective_permission(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, Some(scope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_need_their_parents() {
        assert!(ScopeSpec::try_new("acme", None, Some("prod")).is_err());
        let s = ScopeSpec::try_new("acme", Some("api"), Some("prod")).expect("valid");
        assert_eq!(s.to_string(), "acme/api/prod");
        assert_eq!(s.flags(), "-w acme -p api -e prod");
        assert_eq!(s.describe(), "environment 'prod' in project 'api'");
        assert_eq!(ScopeSpec::from_proto(&s.to_proto()), s);
        assert!(ScopeSpec::try_new("a/b", None, None).is_err());
    }

    #[test]
    fn grantees_are_exactly_one_of_principal_and_user() {
        assert!(GranteeSpec::try_new(None, None).is_err());
        assert!(GranteeSpec::try_new(Some("x"), None).is_err());
        assert!(GranteeSpec::try_new(None, Some("not-an-email")).is_err());
        assert_eq!(
            GranteeSpec::try_new(None, Some("bob@example.com")).expect("email"),
            GranteeSpec::User("bob@example.com".into())
        );
        let id = "0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7a";
        assert!(matches!(
            GranteeSpec::try_new(Some(id), None),
            Ok(GranteeSpec::Principal(_))
        ));
        assert!(GranteeSpec::try_new(Some(id), Some("bob@example.com")).is_err());
    }

    #[test]
    fn roles_round_trip_through_the_wire() {
        for r in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(Role::from_proto(r.to_proto()), Some(r));
        }
        assert_eq!(Role::from_proto(0), None);
        assert!(Role::Read < Role::Admin);
    }
}
