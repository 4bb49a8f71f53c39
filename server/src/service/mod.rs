//! The gRPC service: one thin trait method per RPC, each delegating to a handler through
//! [`ZoppService::signed`] (or [`ZoppService::open`] for the two unauthenticated RPCs).
//!
//! `signed` authenticates the request, applies the rate limit, runs the handler with the
//! resulting [`Caller`], maps the error to a status in one place, and records logs and metrics.
//! Handlers take a `Caller`, which only the authenticator can create, so a handler cannot run
//! without a verified signature.

mod convert;
mod devices;
mod invites;
mod keys;
mod leases;
mod permissions;
mod rotation;
mod scopes;
mod secrets;
mod service_principals;
mod statements;
mod teams;
mod tenancy;
mod trail;
mod workspace_invites;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;
use zopp_crypto::envelope::NameDigest;
use zopp_proto::v1::zopp_server::Zopp;
use zopp_proto::v1::*;

use crate::audit::{self, AuditAppender};
use crate::auth::{Authenticator, Caller};
use crate::error::{code_name, ServiceError, ServiceResult};
use crate::feed::ChangeFeed;
use crate::metrics::{AUTH_FAILURES, RATE_LIMITED, RPC_DURATION, RPC_TOTAL};
use crate::ratelimit::RateLimiter;
use crate::rbac::{self, Action, Denied, Grant, Role, Scope, Subject};
use crate::storage::{
    EnvironmentRecord, GrantRecord, NamePath, ProjectRecord, Resolution, SecretRead, Storage,
    WorkspaceRecord,
};
use crate::validate;
use crate::Clock;

/// Full gRPC method paths: what request signatures cover.
pub mod methods {
    /// `LookupInvite` (unauthenticated).
    pub const LOOKUP_INVITE: &str = "/zopp.v1.Zopp/LookupInvite";
    /// `Join` (unauthenticated, self-signed).
    pub const JOIN: &str = "/zopp.v1.Zopp/Join";
    /// `GetServerInfo` (unauthenticated).
    pub const GET_SERVER_INFO: &str = "/zopp.v1.Zopp/GetServerInfo";
    /// `WhoAmI`.
    pub const WHO_AM_I: &str = "/zopp.v1.Zopp/WhoAmI";
    /// `CreateWorkspace`.
    pub const CREATE_WORKSPACE: &str = "/zopp.v1.Zopp/CreateWorkspace";
    /// `ListWorkspaces`.
    pub const LIST_WORKSPACES: &str = "/zopp.v1.Zopp/ListWorkspaces";
    /// `DeleteWorkspace`.
    pub const DELETE_WORKSPACE: &str = "/zopp.v1.Zopp/DeleteWorkspace";
    /// `CreateProject`.
    pub const CREATE_PROJECT: &str = "/zopp.v1.Zopp/CreateProject";
    /// `ListProjects`.
    pub const LIST_PROJECTS: &str = "/zopp.v1.Zopp/ListProjects";
    /// `DeleteProject`.
    pub const DELETE_PROJECT: &str = "/zopp.v1.Zopp/DeleteProject";
    /// `CreateEnvironment`.
    pub const CREATE_ENVIRONMENT: &str = "/zopp.v1.Zopp/CreateEnvironment";
    /// `ListEnvironments`.
    pub const LIST_ENVIRONMENTS: &str = "/zopp.v1.Zopp/ListEnvironments";
    /// `DeleteEnvironment`.
    pub const DELETE_ENVIRONMENT: &str = "/zopp.v1.Zopp/DeleteEnvironment";
    pub const SET_RETENTION: &str = "/zopp.v1.Zopp/SetRetention";
    /// `GetEnvironment`.
    pub const GET_ENVIRONMENT: &str = "/zopp.v1.Zopp/GetEnvironment";
    /// `GetScopeKeys`.
    pub const GET_SCOPE_KEYS: &str = "/zopp.v1.Zopp/GetScopeKeys";
    /// `FetchEnvironment`.
    pub const FETCH_ENVIRONMENT: &str = "/zopp.v1.Zopp/FetchEnvironment";
    /// `GetSecret`.
    pub const GET_SECRET: &str = "/zopp.v1.Zopp/GetSecret";
    /// `SecretHistory`.
    pub const SECRET_HISTORY: &str = "/zopp.v1.Zopp/SecretHistory";
    /// `WriteSecrets`.
    pub const WRITE_SECRETS: &str = "/zopp.v1.Zopp/WriteSecrets";
    /// `WatchEnvironment`.
    pub const WATCH_ENVIRONMENT: &str = "/zopp.v1.Zopp/WatchEnvironment";
    /// `ListAudit`.
    pub const LIST_AUDIT: &str = "/zopp.v1.Zopp/ListAudit";
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
    /// `CreateInvite`.
    pub const CREATE_INVITE: &str = "/zopp.v1.Zopp/CreateInvite";
    /// `ListInvites`.
    pub const LIST_INVITES: &str = "/zopp.v1.Zopp/ListInvites";
    /// `RevokeInvite`.
    pub const REVOKE_INVITE: &str = "/zopp.v1.Zopp/RevokeInvite";
    /// `LookupWorkspaceInvite` (unauthenticated).
    pub const LOOKUP_WORKSPACE_INVITE: &str = "/zopp.v1.Zopp/LookupWorkspaceInvite";
    /// `JoinWorkspace` (unauthenticated).
    pub const JOIN_WORKSPACE: &str = "/zopp.v1.Zopp/JoinWorkspace";
    /// `CreateServicePrincipal`.
    pub const CREATE_SERVICE_PRINCIPAL: &str = "/zopp.v1.Zopp/CreateServicePrincipal";
    /// `RevokePrincipal`.
    pub const REVOKE_PRINCIPAL: &str = "/zopp.v1.Zopp/RevokePrincipal";
    /// `ListPrincipals`.
    pub const LIST_PRINCIPALS: &str = "/zopp.v1.Zopp/ListPrincipals";
    /// `RenamePrincipal`.
    pub const RENAME_PRINCIPAL: &str = "/zopp.v1.Zopp/RenamePrincipal";
    /// `PrepareRotation`.
    pub const PREPARE_ROTATION: &str = "/zopp.v1.Zopp/PrepareRotation";
    /// `RotateKeys`.
    pub const ROTATE_KEYS: &str = "/zopp.v1.Zopp/RotateKeys";
    /// `ListGrantKeys`.
    pub const LIST_GRANT_KEYS: &str = "/zopp.v1.Zopp/ListGrantKeys";
    /// `ExportPrincipal`.
    pub const EXPORT_PRINCIPAL: &str = "/zopp.v1.Zopp/ExportPrincipal";
    /// `ImportPrincipal` (unauthenticated).
    pub const IMPORT_PRINCIPAL: &str = "/zopp.v1.Zopp/ImportPrincipal";
    /// `AcquireAppLease`.
    pub const ACQUIRE_APP_LEASE: &str = "/zopp.v1.Zopp/AcquireAppLease";
    /// `ReleaseAppLease`.
    pub const RELEASE_APP_LEASE: &str = "/zopp.v1.Zopp/ReleaseAppLease";
    /// `GetAppStatus`.
    pub const GET_APP_STATUS: &str = "/zopp.v1.Zopp/GetAppStatus";
    /// `CompleteImport`.
    pub const COMPLETE_IMPORT: &str = "/zopp.v1.Zopp/CompleteImport";
}

/// Everything the handlers share.
pub struct AppState {
    /// The database.
    pub storage: Arc<dyn Storage>,
    /// Request signature checks.
    pub auth: Authenticator,
    /// Group-commit audit appender for reads.
    pub audit: AuditAppender,
    /// Change notifications for watchers.
    pub feed: Arc<dyn ChangeFeed>,
    /// Per-principal rate limit.
    pub limiter: RateLimiter,
    /// Per-address rate limit of unauthenticated calls.
    pub open_limiter: RateLimiter<std::net::IpAddr>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Flips to `true` when the server starts draining; open streams end.
    pub shutdown: watch::Receiver<bool>,
}

/// The `zopp.v1.Zopp` service.
#[derive(Clone)]
pub struct ZoppService {
    state: Arc<AppState>,
}

/// Stream type of `WatchEnvironment`.
pub type WatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<WatchEnvironmentEvent, Status>> + Send>>;

/// Longest client-supplied `x-request-id` kept.
const MAX_REQUEST_ID: usize = 128;

/// The id of one request's log lines: the client's `x-request-id` when it sent a short one of
/// printable ASCII (so a proxy's id follows the call through), else a random (version 4) UUID
/// from the thread-local generator (a system call per request for a correlation id is cost
/// without benefit).
fn request_id(md: &tonic::metadata::MetadataMap) -> String {
    md.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string()
        })
}

/// The client's address for log lines (`-` when the transport does not say).
fn peer(remote: Option<std::net::SocketAddr>) -> String {
    remote.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

/// Unary methods that append a read entry through the group committer: while one is in flight,
/// the committer may wait for its entry to join the next batch.
fn audits_read(method: &str) -> bool {
    matches!(
        method,
        methods::GET_SECRET
            | methods::FETCH_ENVIRONMENT
            | methods::GET_ENVIRONMENT
            | methods::SECRET_HISTORY
            | methods::GET_SCOPE_KEYS
            | methods::GET_KEY_SHARE
    )
}

fn short_name(method: &'static str) -> &'static str {
    method.rsplit('/').next().unwrap_or(method)
}

impl ZoppService {
    /// Wraps shared state.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    fn now_ms(&self) -> i64 {
        self.state.clock.now_ms()
    }

    /// Runs a signed RPC: authenticate, rate-limit, handle, map errors, log and measure.
    async fn signed<T, R, F, Fut>(
        &self,
        method: &'static str,
        request: Request<T>,
        handler: F,
    ) -> Result<Response<R>, Status>
    where
        T: prost::Message,
        F: FnOnce(Caller, T) -> Fut,
        Fut: Future<Output = ServiceResult<R>>,
    {
        let started = Instant::now();
        let _arrival = audits_read(method).then(|| self.state.audit.arriving());
        let request_id = request_id(request.metadata());
        let span = tracing::info_span!(
            "rpc",
            %request_id,
            method,
            peer = %peer(request.remote_addr()),
            principal = tracing::field::Empty,
            auth_failure = tracing::field::Empty
        );
        let state = &self.state;
        let outcome = async {
            let caller = state
                .auth
                .authenticate(method, request.metadata(), request.get_ref())
                .await
                .inspect_err(|e| {
                    if let crate::auth::AuthFailure::Refused(e) = e {
                        tracing::Span::current().record("auth_failure", e.reason());
                    }
                })?;
            tracing::Span::current()
                .record("principal", tracing::field::display(caller.principal_id()));
            if !state.limiter.allow(caller.principal_id()) {
                metrics::counter!(RATE_LIMITED).increment(1);
                return Err(ServiceError::ResourceExhausted(
                    "rate limit exceeded for this principal; retry shortly".into(),
                ));
            }
            handler(caller, request.into_inner()).await
        }
        .instrument(span.clone())
        .await;
        finish(method, started, request_id, outcome, &span)
    }

    /// Runs an unauthenticated RPC (`LookupInvite`, `Join`).
    async fn open<T, R, F, Fut>(
        &self,
        method: &'static str,
        request: Request<T>,
        handler: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = ServiceResult<R>>,
    {
        let started = Instant::now();
        let request_id = request_id(request.metadata());
        let remote = request.remote_addr();
        let span = tracing::info_span!(
            "rpc",
            %request_id,
            method,
            peer = %peer(remote),
            principal = tracing::field::Empty,
            auth_failure = tracing::field::Empty
        );
        // Invite and export codes are guessed here, so each address gets a small budget.
        if remote.is_some_and(|a| !self.state.open_limiter.allow(a.ip())) {
            metrics::counter!(RATE_LIMITED).increment(1);
            metrics::counter!(AUTH_FAILURES, "reason" => "rate_limited").increment(1);
            span.record("auth_failure", "rate_limited");
            let refused = Err(ServiceError::ResourceExhausted(
                "too many unauthenticated requests from this address; retry in a few seconds"
                    .into(),
            ));
            return finish(method, started, request_id, refused, &span);
        }
        let outcome = handler(request.into_inner()).instrument(span.clone()).await;
        if let Err(e) = &outcome {
            // A code that does not open anything counts as a failed authentication.
            if matches!(
                e.code(),
                Code::NotFound
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
            ) {
                metrics::counter!(AUTH_FAILURES, "reason" => "invite").increment(1);
                span.record("auth_failure", "invite");
            }
        }
        finish(method, started, request_id, outcome, &span)
    }

    /// Appends a read's audit entry through the group committer. The read fails if the entry
    /// cannot be made durable.
    async fn audit_read(
        &self,
        caller: &Caller,
        action: &str,
        scope: &Scope,
        target: String,
    ) -> ServiceResult<()> {
        let d = audit::draft(caller, action, scope, target, self.now_ms());
        self.state.audit.append(d).await?;
        Ok(())
    }

    /// Resolves `path` top down and checks the caller may see each level. A missing scope and one
    /// the caller may not see give the same NOT_FOUND message.
    async fn resolve(&self, caller: &Caller, path: NamePath<'_>) -> ServiceResult<Resolved> {
        validate_path(&path)?;
        let res = self.state.storage.resolve(&caller.who(), &path).await?;
        self.check_resolution(path, res)
    }

    /// Checks that the caller may see each level of a resolution `storage` made of `path`.
    fn check_resolution(&self, path: NamePath<'_>, res: Resolution) -> ServiceResult<Resolved> {
        let ws_missing =
            || ServiceError::NotFound(format!("workspace '{}' not found", path.workspace));
        let workspace = res.workspace.ok_or_else(ws_missing)?;
        let rbac: Vec<Grant> = res.grants.iter().map(|g| g.grant).collect();
        if !rbac::visible(&rbac, &Scope::Workspace(workspace.id)) {
            return Err(ws_missing());
        }
        let project = match path.project {
            None => None,
            Some(pname) => {
                let missing = || {
                    ServiceError::NotFound(format!(
                        "project '{pname}' not found in workspace '{}'",
                        path.workspace
                    ))
                };
                let p = res.project.ok_or_else(missing)?;
                if !rbac::visible(&rbac, &Scope::Project(workspace.id, p.id)) {
                    return Err(missing());
                }
                Some(p)
            }
        };
        let environment = match (path.environment, &project) {
            (Some(ename), Some(p)) => {
                let missing = || {
                    ServiceError::NotFound(format!(
                        "environment '{ename}' not found in project '{}'",
                        p.name
                    ))
                };
                let e = res.environment.ok_or_else(missing)?;
                if !rbac::visible(&rbac, &Scope::Environment(workspace.id, p.id, e.id)) {
                    return Err(missing());
                }
                Some(e)
            }
            _ => None,
        };
        Ok(Resolved {
            workspace,
            project,
            environment,
            grants: res.grants,
            rbac,
        })
    }

    /// Resolves an environment reference and authorizes `action` on it.
    async fn environment(
        &self,
        caller: &Caller,
        env: Option<&EnvironmentRef>,
        action: Action,
        audit_action: &str,
    ) -> ServiceResult<(Resolved, Role)> {
        let path = env_path(env)?;
        let resolved = self.resolve(caller, path).await?;
        self.authorize_env(caller, resolved, action, audit_action)
            .await
    }

    /// Like [`ZoppService::environment`], also reading secret `digest` (its head, or
    /// `version`) in the same storage round trip. The read is returned only once the caller is
    /// authorized for `action`.
    async fn environment_with_secret(
        &self,
        caller: &Caller,
        env: Option<&EnvironmentRef>,
        action: Action,
        audit_action: &str,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> ServiceResult<(Resolved, Role, Option<SecretRead>)> {
        let path = env_path(env)?;
        validate_path(&path)?;
        let (res, read) = self
            .state
            .storage
            .resolve_read(&caller.who(), &path, digest, version)
            .await?;
        let resolved = self.check_resolution(path, res)?;
        let (resolved, role) = self
            .authorize_env(caller, resolved, action, audit_action)
            .await?;
        Ok((resolved, role, read))
    }

    async fn authorize_env(
        &self,
        caller: &Caller,
        resolved: Resolved,
        action: Action,
        audit_action: &str,
    ) -> ServiceResult<(Resolved, Role)> {
        let scope = resolved.env_scope()?;
        let role = self
            .authorize(caller, &resolved, action, &scope, audit_action)
            .await?
            .ok_or_else(|| ServiceError::Internal("authorized without a role".into()))?;
        Ok((resolved, role))
    }

    /// The one authorization gate of every scoped handler. A refusal on a scope the caller can
    /// see is itself recorded in the workspace's audit trail.
    async fn authorize(
        &self,
        caller: &Caller,
        resolved: &Resolved,
        action: Action,
        scope: &Scope,
        audit_action: &str,
    ) -> ServiceResult<Option<Role>> {
        let subject = Subject {
            kind: caller.kind(),
            grants: &resolved.rbac,
        };
        match rbac::authorize(&subject, action, scope) {
            Ok(role) => Ok(role),
            Err(d) => {
                let err = denial(d, action, &resolved.describe(scope));
                if err.code() == Code::PermissionDenied {
                    let mut entry =
                        audit::draft(caller, audit_action, scope, String::new(), self.now_ms());
                    entry.result = code_name(Code::PermissionDenied).to_string();
                    if let Err(e) = self.state.audit.append(entry).await {
                        tracing::warn!(error = %e, "could not audit a refused request");
                    }
                }
                Err(err)
            }
        }
    }
}

/// The names of an environment reference, which every environment call needs.
fn env_path(env: Option<&EnvironmentRef>) -> ServiceResult<NamePath<'_>> {
    let r = env.ok_or_else(|| {
        ServiceError::InvalidArgument(
            "env is required: workspace, project and environment names".into(),
        )
    })?;
    Ok(NamePath {
        workspace: &r.workspace,
        project: Some(&r.project),
        environment: Some(&r.environment),
    })
}

/// Checks each name of `path`.
fn validate_path(path: &NamePath<'_>) -> ServiceResult<()> {
    validate::scope_name("workspace", path.workspace)?;
    if let Some(p) = path.project {
        validate::scope_name("project", p)?;
    }
    if let Some(e) = path.environment {
        validate::scope_name("environment", e)?;
    }
    Ok(())
}

/// Turns an RBAC refusal into the client's error.
fn denial(d: Denied, action: Action, what: &str) -> ServiceError {
    match d {
        Denied::Hidden => ServiceError::NotFound(format!("{what} not found")),
        Denied::Forbidden { required, held } => ServiceError::PermissionDenied(format!(
            "permission denied: {} on {what} needs the {required} role (you have {})",
            action_text(action),
            held.map(Role::name).unwrap_or("no role there")
        )),
        Denied::NotAllowed(why) => {
            ServiceError::PermissionDenied(format!("permission denied: {why}"))
        }
    }
}

fn action_text(a: Action) -> &'static str {
    match a {
        Action::View => "viewing",
        Action::ReadSecrets => "reading secrets",
        Action::WriteSecrets => "writing secrets",
        Action::ManageScopes => "managing projects and environments",
        Action::ManageAccess => "managing access",
        Action::ReadAudit => "reading the audit trail",
        Action::CreateWorkspace => "creating workspaces",
        Action::Grant(Role::Read) => "giving the read role",
        Action::Grant(Role::Write) => "giving the write role",
        Action::Grant(Role::Admin) => "giving the admin role",
    }
}

/// A resolved name path with the caller's grants in its workspace.
struct Resolved {
    workspace: WorkspaceRecord,
    project: Option<ProjectRecord>,
    environment: Option<EnvironmentRecord>,
    grants: Vec<GrantRecord>,
    rbac: Vec<Grant>,
}

impl Resolved {
    fn ws_scope(&self) -> Scope {
        Scope::Workspace(self.workspace.id)
    }

    fn project(&self) -> ServiceResult<&ProjectRecord> {
        self.project
            .as_ref()
            .ok_or_else(|| ServiceError::Internal("project not resolved".into()))
    }

    fn env(&self) -> ServiceResult<&EnvironmentRecord> {
        self.environment
            .as_ref()
            .ok_or_else(|| ServiceError::Internal("environment not resolved".into()))
    }

    fn project_scope(&self) -> ServiceResult<Scope> {
        Ok(Scope::Project(self.workspace.id, self.project()?.id))
    }

    fn env_scope(&self) -> ServiceResult<Scope> {
        Ok(Scope::Environment(
            self.workspace.id,
            self.project()?.id,
            self.env()?.id,
        ))
    }

    /// Human description of a scope of this path, for messages.
    fn describe(&self, scope: &Scope) -> String {
        match (scope, &self.project, &self.environment) {
            (Scope::Environment(..), Some(p), Some(e)) => {
                format!("environment '{}' in project '{}'", e.name, p.name)
            }
            (Scope::Project(..), Some(p), _) => {
                format!(
                    "project '{}' in workspace '{}'",
                    p.name, self.workspace.name
                )
            }
            (Scope::Server, _, _) => "this server".to_string(),
            _ => format!("workspace '{}'", self.workspace.name),
        }
    }
}

fn finish<R>(
    method: &'static str,
    started: Instant,
    request_id: String,
    outcome: ServiceResult<R>,
    span: &tracing::Span,
) -> Result<Response<R>, Status> {
    let _entered = span.enter();
    let request_id_value = tonic::metadata::MetadataValue::try_from(request_id).ok();
    let (code, reply) = match outcome {
        Ok(r) => {
            let mut resp = Response::new(r);
            if let Some(v) = request_id_value {
                resp.metadata_mut().insert("x-request-id", v);
            }
            (Code::Ok, Ok(resp))
        }
        Err(e) => {
            let code = e.code();
            let mut status = e.into_status();
            if let Some(v) = request_id_value {
                status.metadata_mut().insert("x-request-id", v);
            }
            (code, Err(status))
        }
    };
    let elapsed = started.elapsed();
    let name = short_name(method);
    metrics::counter!(RPC_TOTAL, "method" => name, "code" => code_name(code)).increment(1);
    metrics::histogram!(RPC_DURATION, "method" => name, "code" => code_name(code))
        .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    match code {
        Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => {
            tracing::warn!(code = code_name(code), latency_ms, "rpc failed")
        }
        _ => tracing::info!(code = code_name(code), latency_ms, "rpc"),
    }
    reply
}

#[tonic::async_trait]
impl Zopp for ZoppService {
    async fn lookup_invite(
        &self,
        request: Request<LookupInviteRequest>,
    ) -> Result<Response<LookupInviteResponse>, Status> {
        self.open(methods::LOOKUP_INVITE, request, |m| {
            self.lookup_invite_rpc(m)
        })
        .await
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.open(methods::JOIN, request, |m| self.join_rpc(m))
            .await
    }

    async fn get_server_info(
        &self,
        request: Request<GetServerInfoRequest>,
    ) -> Result<Response<GetServerInfoResponse>, Status> {
        self.open(methods::GET_SERVER_INFO, request, |_| async {
            Ok(GetServerInfoResponse {
                server_id: self.state.auth.server_id().as_bytes().to_vec(),
            })
        })
        .await
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        self.signed(methods::WHO_AM_I, request, |c, m| self.who_am_i_rpc(c, m))
            .await
    }

    async fn create_workspace(
        &self,
        request: Request<CreateWorkspaceRequest>,
    ) -> Result<Response<Workspace>, Status> {
        self.signed(methods::CREATE_WORKSPACE, request, |c, m| {
            self.create_workspace_rpc(c, m)
        })
        .await
    }

    async fn list_workspaces(
        &self,
        request: Request<ListWorkspacesRequest>,
    ) -> Result<Response<ListWorkspacesResponse>, Status> {
        self.signed(methods::LIST_WORKSPACES, request, |c, m| {
            self.list_workspaces_rpc(c, m)
        })
        .await
    }

    async fn delete_workspace(
        &self,
        request: Request<DeleteWorkspaceRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.signed(methods::DELETE_WORKSPACE, request, |c, m| {
            self.delete_workspace_rpc(c, m)
        })
        .await
    }

    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        self.signed(methods::CREATE_PROJECT, request, |c, m| {
            self.create_project_rpc(c, m)
        })
        .await
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        self.signed(methods::LIST_PROJECTS, request, |c, m| {
            self.list_projects_rpc(c, m)
        })
        .await
    }

    async fn delete_project(
        &self,
        request: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.signed(methods::DELETE_PROJECT, request, |c, m| {
            self.delete_project_rpc(c, m)
        })
        .await
    }

    async fn create_environment(
        &self,
        request: Request<CreateEnvironmentRequest>,
    ) -> Result<Response<Environment>, Status> {
        self.signed(methods::CREATE_ENVIRONMENT, request, |c, m| {
            self.create_environment_rpc(c, m)
        })
        .await
    }

    async fn list_environments(
        &self,
        request: Request<ListEnvironmentsRequest>,
    ) -> Result<Response<ListEnvironmentsResponse>, Status> {
        self.signed(methods::LIST_ENVIRONMENTS, request, |c, m| {
            self.list_environments_rpc(c, m)
        })
        .await
    }

    async fn delete_environment(
        &self,
        request: Request<DeleteEnvironmentRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.signed(methods::DELETE_ENVIRONMENT, request, |c, m| {
            self.delete_environment_rpc(c, m)
        })
        .await
    }

    async fn set_retention(
        &self,
        request: Request<SetRetentionRequest>,
    ) -> Result<Response<SetRetentionResponse>, Status> {
        self.signed(methods::SET_RETENTION, request, |c, m| {
            self.set_retention_rpc(c, m)
        })
        .await
    }

    async fn get_environment(
        &self,
        request: Request<GetEnvironmentRequest>,
    ) -> Result<Response<EnvironmentKeys>, Status> {
        self.signed(methods::GET_ENVIRONMENT, request, |c, m| {
            self.get_environment_rpc(c, m)
        })
        .await
    }

    async fn get_scope_keys(
        &self,
        request: Request<GetScopeKeysRequest>,
    ) -> Result<Response<ScopeKeys>, Status> {
        self.signed(methods::GET_SCOPE_KEYS, request, |c, m| {
            self.get_scope_keys_rpc(c, m)
        })
        .await
    }

    async fn fetch_environment(
        &self,
        request: Request<FetchEnvironmentRequest>,
    ) -> Result<Response<FetchEnvironmentResponse>, Status> {
        self.signed(methods::FETCH_ENVIRONMENT, request, |c, m| {
            self.fetch_environment_rpc(c, m)
        })
        .await
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        self.signed(methods::GET_SECRET, request, |c, m| {
            self.get_secret_rpc(c, m)
        })
        .await
    }

    async fn secret_history(
        &self,
        request: Request<SecretHistoryRequest>,
    ) -> Result<Response<SecretHistoryResponse>, Status> {
        self.signed(methods::SECRET_HISTORY, request, |c, m| {
            self.secret_history_rpc(c, m)
        })
        .await
    }

    async fn write_secrets(
        &self,
        request: Request<WriteSecretsRequest>,
    ) -> Result<Response<WriteSecretsResponse>, Status> {
        self.signed(methods::WRITE_SECRETS, request, |c, m| {
            self.write_secrets_rpc(c, m)
        })
        .await
    }

    type WatchEnvironmentStream = WatchStream;

    async fn watch_environment(
        &self,
        request: Request<WatchEnvironmentRequest>,
    ) -> Result<Response<Self::WatchEnvironmentStream>, Status> {
        self.signed(methods::WATCH_ENVIRONMENT, request, |c, m| {
            self.watch_environment_rpc(c, m)
        })
        .await
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        self.signed(methods::LIST_AUDIT, request, |c, m| {
            self.list_audit_rpc(c, m)
        })
        .await
    }

    async fn get_principals(
        &self,
        request: Request<GetPrincipalsRequest>,
    ) -> Result<Response<GetPrincipalsResponse>, Status> {
        self.signed(methods::GET_PRINCIPALS, request, |c, m| {
            self.get_principals_rpc(c, m)
        })
        .await
    }

    async fn set_permission(
        &self,
        request: Request<SetPermissionRequest>,
    ) -> Result<Response<PermissionGrant>, Status> {
        self.signed(methods::SET_PERMISSION, request, |c, m| {
            self.set_permission_rpc(c, m)
        })
        .await
    }

    async fn list_permissions(
        &self,
        request: Request<ListPermissionsRequest>,
    ) -> Result<Response<ListPermissionsResponse>, Status> {
        self.signed(methods::LIST_PERMISSIONS, request, |c, m| {
            self.list_permissions_rpc(c, m)
        })
        .await
    }

    async fn remove_permission(
        &self,
        request: Request<RemovePermissionRequest>,
    ) -> Result<Response<RemovePermissionResponse>, Status> {
        self.signed(methods::REMOVE_PERMISSION, request, |c, m| {
            self.remove_permission_rpc(c, m)
        })
        .await
    }

    async fn acquire_app_lease(
        &self,
        request: Request<AcquireAppLeaseRequest>,
    ) -> Result<Response<AcquireAppLeaseResponse>, Status> {
        self.signed(methods::ACQUIRE_APP_LEASE, request, |c, m| {
            self.acquire_app_lease_rpc(c, m)
        })
        .await
    }

    async fn release_app_lease(
        &self,
        request: Request<ReleaseAppLeaseRequest>,
    ) -> Result<Response<ReleaseAppLeaseResponse>, Status> {
        self.signed(methods::RELEASE_APP_LEASE, request, |c, m| {
            self.release_app_lease_rpc(c, m)
        })
        .await
    }

    async fn get_app_status(
        &self,
        request: Request<GetAppStatusRequest>,
    ) -> Result<Response<GetAppStatusResponse>, Status> {
        self.signed(methods::GET_APP_STATUS, request, |c, m| {
            self.get_app_status_rpc(c, m)
        })
        .await
    }

    async fn effective_permission(
        &self,
        request: Request<EffectivePermissionRequest>,
    ) -> Result<Response<EffectivePermissionResponse>, Status> {
        self.signed(methods::EFFECTIVE_PERMISSION, request, |c, m| {
            self.effective_permission_rpc(c, m)
        })
        .await
    }

    async fn get_key_share(
        &self,
        request: Request<GetKeyShareRequest>,
    ) -> Result<Response<GetKeyShareResponse>, Status> {
        self.signed(methods::GET_KEY_SHARE, request, |c, m| {
            self.get_key_share_rpc(c, m)
        })
        .await
    }

    async fn create_invite(
        &self,
        request: Request<CreateInviteRequest>,
    ) -> Result<Response<InviteInfo>, Status> {
        self.signed(methods::CREATE_INVITE, request, |c, m| {
            self.create_invite_rpc(c, m)
        })
        .await
    }

    async fn list_invites(
        &self,
        request: Request<ListInvitesRequest>,
    ) -> Result<Response<ListInvitesResponse>, Status> {
        self.signed(methods::LIST_INVITES, request, |c, m| {
            self.list_invites_rpc(c, m)
        })
        .await
    }

    async fn revoke_invite(
        &self,
        request: Request<RevokeInviteRequest>,
    ) -> Result<Response<InviteInfo>, Status> {
        self.signed(methods::REVOKE_INVITE, request, |c, m| {
            self.revoke_invite_rpc(c, m)
        })
        .await
    }

    async fn lookup_workspace_invite(
        &self,
        request: Request<LookupWorkspaceInviteRequest>,
    ) -> Result<Response<LookupWorkspaceInviteResponse>, Status> {
        self.open(methods::LOOKUP_WORKSPACE_INVITE, request, |m| {
            self.lookup_workspace_invite_rpc(m)
        })
        .await
    }

    async fn join_workspace(
        &self,
        request: Request<JoinWorkspaceRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        self.open(methods::JOIN_WORKSPACE, request, |m| {
            self.join_workspace_rpc(m)
        })
        .await
    }

    async fn create_service_principal(
        &self,
        request: Request<CreateServicePrincipalRequest>,
    ) -> Result<Response<PrincipalInfo>, Status> {
        self.signed(methods::CREATE_SERVICE_PRINCIPAL, request, |c, m| {
            self.create_service_principal_rpc(c, m)
        })
        .await
    }

    async fn revoke_principal(
        &self,
        request: Request<RevokePrincipalRequest>,
    ) -> Result<Response<RevokePrincipalResponse>, Status> {
        self.signed(methods::REVOKE_PRINCIPAL, request, |c, m| {
            self.revoke_principal_rpc(c, m)
        })
        .await
    }

    async fn list_principals(
        &self,
        request: Request<ListPrincipalsRequest>,
    ) -> Result<Response<ListPrincipalsResponse>, Status> {
        self.signed(methods::LIST_PRINCIPALS, request, |c, m| {
            self.list_principals_rpc(c, m)
        })
        .await
    }

    async fn rename_principal(
        &self,
        request: Request<RenamePrincipalRequest>,
    ) -> Result<Response<PrincipalInfo>, Status> {
        self.signed(methods::RENAME_PRINCIPAL, request, |c, m| {
            self.rename_principal_rpc(c, m)
        })
        .await
    }

    async fn prepare_rotation(
        &self,
        request: Request<PrepareRotationRequest>,
    ) -> Result<Response<RotationPlan>, Status> {
        self.signed(methods::PREPARE_ROTATION, request, |c, m| {
            self.prepare_rotation_rpc(c, m)
        })
        .await
    }

    async fn rotate_keys(
        &self,
        request: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        self.signed(methods::ROTATE_KEYS, request, |c, m| {
            self.rotate_keys_rpc(c, m)
        })
        .await
    }

    async fn list_grant_keys(
        &self,
        request: Request<ListGrantKeysRequest>,
    ) -> Result<Response<ListGrantKeysResponse>, Status> {
        self.signed(methods::LIST_GRANT_KEYS, request, |c, m| {
            self.list_grant_keys_rpc(c, m)
        })
        .await
    }

    async fn export_principal(
        &self,
        request: Request<ExportPrincipalRequest>,
    ) -> Result<Response<ExportPrincipalResponse>, Status> {
        self.signed(methods::EXPORT_PRINCIPAL, request, |c, m| {
            self.export_principal_rpc(c, m)
        })
        .await
    }

    async fn import_principal(
        &self,
        request: Request<ImportPrincipalRequest>,
    ) -> Result<Response<ImportPrincipalResponse>, Status> {
        self.open(methods::IMPORT_PRINCIPAL, request, |m| {
            self.import_principal_rpc(m)
        })
        .await
    }

    async fn complete_import(
        &self,
        request: Request<CompleteImportRequest>,
    ) -> Result<Response<PrincipalInfo>, Status> {
        self.signed(methods::COMPLETE_IMPORT, request, |c, m| {
            self.complete_import_rpc(c, m)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;

    async fn service() -> (tempfile::TempDir, ZoppService) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&url).await.expect("open"));
        let clock: Arc<dyn Clock> = Arc::new(crate::SystemClock);
        let (_tx, shutdown) = watch::channel(false);
        let state = AppState {
            storage: storage.clone(),
            auth: Authenticator::new(
                storage.clone(),
                Arc::new(crate::auth::MemoryReplayCache::new()),
                clock.clone(),
                zopp_crypto::ids::ServerId::from_bytes([1; 16]),
            ),
            audit: AuditAppender::spawn(storage.clone()),
            feed: Arc::new(crate::feed::LocalFeed::new()),
            limiter: RateLimiter::new(crate::ratelimit::RateLimit::unlimited()),
            open_limiter: RateLimiter::new(crate::ratelimit::RateLimit::unlimited()),
            clock,
            shutdown,
        };
        (dir, ZoppService::new(Arc::new(state)))
    }

    /// Every RPC but `LookupInvite` and `Join` must refuse a request without signature metadata.
    /// The count is taken from the .proto itself, so a new RPC cannot be added without also
    /// being listed (and therefore checked) here.
    #[tokio::test]
    async fn every_signed_rpc_refuses_an_unsigned_request() {
        let (_dir, svc) = service().await;
        let mut checked = 0usize;
        macro_rules! unsigned {
            ($($rpc:ident($msg:expr)),* $(,)?) => {$(
                let status = svc
                    .$rpc(Request::new($msg))
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{} accepted an unsigned request", stringify!($rpc)));
                assert_eq!(status.code(), Code::Unauthenticated, "{}", stringify!($rpc));
                assert_eq!(status.message(), "missing x-zopp-principal metadata");
                checked += 1;
            )*};
        }
        unsigned!(
            who_am_i(WhoAmIRequest::default()),
            create_workspace(CreateWorkspaceRequest::default()),
            list_workspaces(ListWorkspacesRequest::default()),
            delete_workspace(DeleteWorkspaceRequest::default()),
            create_project(CreateProjectRequest::default()),
            list_projects(ListProjectsRequest::default()),
            delete_project(DeleteProjectRequest::default()),
            create_environment(CreateEnvironmentRequest::default()),
            list_environments(ListEnvironmentsRequest::default()),
            delete_environment(DeleteEnvironmentRequest::default()),
            set_retention(SetRetentionRequest::default()),
            get_environment(GetEnvironmentRequest::default()),
            get_scope_keys(GetScopeKeysRequest::default()),
            fetch_environment(FetchEnvironmentRequest::default()),
            get_secret(GetSecretRequest::default()),
            secret_history(SecretHistoryRequest::default()),
            write_secrets(WriteSecretsRequest::default()),
            watch_environment(WatchEnvironmentRequest::default()),
            list_audit(ListAuditRequest::default()),
            get_principals(GetPrincipalsRequest::default()),
            set_permission(SetPermissionRequest::default()),
            list_permissions(ListPermissionsRequest::default()),
            remove_permission(RemovePermissionRequest::default()),
            effective_permission(EffectivePermissionRequest::default()),
            get_key_share(GetKeyShareRequest::default()),
            create_invite(CreateInviteRequest::default()),
            list_invites(ListInvitesRequest::default()),
            revoke_invite(RevokeInviteRequest::default()),
            create_service_principal(CreateServicePrincipalRequest::default()),
            revoke_principal(RevokePrincipalRequest::default()),
            list_principals(ListPrincipalsRequest::default()),
            rename_principal(RenamePrincipalRequest::default()),
            prepare_rotation(PrepareRotationRequest::default()),
            rotate_keys(RotateKeysRequest::default()),
            list_grant_keys(ListGrantKeysRequest::default()),
            export_principal(ExportPrincipalRequest::default()),
            complete_import(CompleteImportRequest::default()),
            acquire_app_lease(AcquireAppLeaseRequest::default()),
            release_app_lease(ReleaseAppLeaseRequest::default()),
            get_app_status(GetAppStatusRequest::default()),
        );
        let proto = include_str!("../../../proto/zopp/v1/zopp.proto");
        let rpcs = proto
            .lines()
            .filter(|l| l.trim_start().starts_with("rpc "))
            .count();
        // LookupInvite, Join, LookupWorkspaceInvite, JoinWorkspace and ImportPrincipal prove
        // possession of a code instead of signing; GetServerInfo tells anyone the server id.
        assert_eq!(checked, rpcs - 6, "every signed RPC is checked");
    }

    #[tokio::test]
    async fn unauthenticated_rpcs_answer_without_signatures() {
        let (_dir, svc) = service().await;
        let s = svc
            .lookup_invite(Request::new(LookupInviteRequest {
                token: "zinv_x".into(),
            }))
            .await
            .expect_err("malformed token refused");
        assert_eq!(s.code(), Code::InvalidArgument);
        let info = svc
            .get_server_info(Request::new(GetServerInfoRequest {}))
            .await
            .expect("server info")
            .into_inner();
        assert_eq!(info.server_id, vec![1; 16]);
        // The code-authenticated team RPCs answer too, refusing a malformed id.
        let s = svc
            .lookup_workspace_invite(Request::new(LookupWorkspaceInviteRequest::default()))
            .await
            .expect_err("no invite id");
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = svc
            .join_workspace(Request::new(JoinWorkspaceRequest::default()))
            .await
            .expect_err("no invite id");
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = svc
            .import_principal(Request::new(ImportPrincipalRequest::default()))
            .await
            .expect_err("no export id");
        assert_eq!(s.code(), Code::InvalidArgument);
    }

    #[test]
    fn method_paths_match_the_service_name() {
        for m in [
            methods::WHO_AM_I,
            methods::GET_SCOPE_KEYS,
            methods::WRITE_SECRETS,
            methods::LIST_AUDIT,
        ] {
            assert!(m.starts_with("/zopp.v1.Zopp/"), "{m}");
        }
        assert_eq!(short_name(methods::GET_SECRET), "GetSecret");
    }
}
