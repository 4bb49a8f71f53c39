//! Workspaces, projects and environments: create, list, delete.
//!
//! Creating or deleting a scope needs the admin role on its parent (the workspace itself for a
//! workspace delete). Listing shows only what the caller may see: everything under a grant it
//! holds, plus the ancestors of its grants.

use zopp_crypto::ids::{EnvironmentId, ProjectId, WorkspaceId};
use zopp_proto::v1::{
    CreateEnvironmentRequest, CreateProjectRequest, CreateWorkspaceRequest,
    DeleteEnvironmentRequest, DeleteProjectRequest, DeleteResponse, DeleteWorkspaceRequest,
    Environment, ListEnvironmentsRequest, ListEnvironmentsResponse, ListProjectsRequest,
    ListProjectsResponse, ListWorkspacesRequest, ListWorkspacesResponse, Project,
    SetRetentionRequest, SetRetentionResponse, Workspace,
};

use super::statements::check_statements;
use super::{convert, ZoppService};
use crate::audit::{self, action};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{self, Action, Scope, Subject};
use crate::storage::{
    Conflict, GrantId, NamePath, NewEnvironment, NewProject, NewWorkspace, StorageError,
};
use crate::validate;

impl ZoppService {
    pub(super) async fn create_workspace_rpc(
        &self,
        caller: Caller,
        m: CreateWorkspaceRequest,
    ) -> ServiceResult<Workspace> {
        let subject = Subject {
            kind: caller.kind(),
            grants: &[],
        };
        if let Err(d) = rbac::authorize(&subject, Action::CreateWorkspace, &Scope::Server) {
            return Err(super::denial(d, Action::CreateWorkspace, "this server"));
        }
        let creator_user = caller.user_id().ok_or_else(|| {
            ServiceError::PermissionDenied(
                "permission denied: service principals cannot create workspaces".into(),
            )
        })?;
        validate::scope_name("workspace", &m.name)?;
        let id: WorkspaceId = validate::client_id("workspace", &m.id)?;
        let wrapped_key = validate::recipient_wrap("wrapped_key", &m.wrapped_key)?;
        let now = self.now_ms();
        let statements = check_statements(
            id,
            caller.principal_id(),
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let scope = Scope::Workspace(id);
        let entry = audit::draft(
            &caller,
            action::WORKSPACE_CREATE,
            &scope,
            m.name.clone(),
            now,
        );
        let ws = NewWorkspace {
            id,
            name: m.name.clone(),
            created_by: caller.principal_id(),
            creator_user,
            grant_id: GrantId::new_random(),
            wrapped_key,
            now_ms: now,
        };
        match self.state.storage.create_workspace(ws, entry).await {
            Ok(w) => {
                self.state.storage.add_key_statements(&statements).await?;
                Ok(convert::workspace(&w))
            }
            Err(StorageError::AlreadyExists(Conflict::WorkspaceName)) => Err(
                ServiceError::AlreadyExists(format!("workspace '{}' already exists", m.name)),
            ),
            Err(StorageError::AlreadyExists(Conflict::WorkspaceId)) => Err(
                ServiceError::AlreadyExists(format!("workspace id {id} is already in use")),
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn list_workspaces_rpc(
        &self,
        caller: Caller,
        _m: ListWorkspacesRequest,
    ) -> ServiceResult<ListWorkspacesResponse> {
        let list = self.state.storage.workspaces_for(&caller.who()).await?;
        Ok(ListWorkspacesResponse {
            workspaces: list.iter().map(convert::workspace).collect(),
        })
    }

    pub(super) async fn delete_workspace_rpc(
        &self,
        caller: Caller,
        m: DeleteWorkspaceRequest,
    ) -> ServiceResult<DeleteResponse> {
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: None,
                    environment: None,
                },
            )
            .await?;
        let scope = r.ws_scope();
        self.authorize(
            &caller,
            &r,
            Action::ManageScopes,
            &scope,
            action::WORKSPACE_DELETE,
        )
        .await?;
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::WORKSPACE_DELETE,
            &scope,
            r.workspace.name.clone(),
            now,
        );
        self.state
            .storage
            .delete_workspace(r.workspace.id, now, entry)
            .await
            .map_err(|e| not_found_as(e, || format!("workspace '{}' not found", m.workspace)))?;
        Ok(DeleteResponse {})
    }

    pub(super) async fn create_project_rpc(
        &self,
        caller: Caller,
        m: CreateProjectRequest,
    ) -> ServiceResult<Project> {
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: None,
                    environment: None,
                },
            )
            .await?;
        let ws_scope = r.ws_scope();
        self.authorize(
            &caller,
            &r,
            Action::ManageScopes,
            &ws_scope,
            action::PROJECT_CREATE,
        )
        .await?;
        validate::scope_name("project", &m.name)?;
        let id: ProjectId = validate::client_id("project", &m.id)?;
        let wrapped_key = validate::child_wrap("wrapped_key", &m.wrapped_key)?;
        let now = self.now_ms();
        let statements = check_statements(
            r.workspace.id,
            caller.principal_id(),
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let scope = Scope::Project(r.workspace.id, id);
        let entry = audit::draft(&caller, action::PROJECT_CREATE, &scope, m.name.clone(), now);
        let p = NewProject {
            id,
            workspace_id: r.workspace.id,
            name: m.name.clone(),
            wrapped_key,
            created_by: caller.principal_id(),
            now_ms: now,
        };
        match self.state.storage.create_project(p, entry).await {
            Ok(p) => {
                self.state.storage.add_key_statements(&statements).await?;
                Ok(convert::project(&p))
            }
            Err(StorageError::AlreadyExists(Conflict::ProjectName)) => {
                Err(ServiceError::AlreadyExists(format!(
                    "project '{}' already exists in workspace '{}'",
                    m.name, m.workspace
                )))
            }
            Err(StorageError::AlreadyExists(Conflict::ProjectId)) => Err(
                ServiceError::AlreadyExists(format!("project id {id} is already in use")),
            ),
            Err(e) => Err(not_found_as(e, || {
                format!("workspace '{}' not found", m.workspace)
            })),
        }
    }

    pub(super) async fn list_projects_rpc(
        &self,
        caller: Caller,
        m: ListProjectsRequest,
    ) -> ServiceResult<ListProjectsResponse> {
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: None,
                    environment: None,
                },
            )
            .await?;
        let all = self.state.storage.projects(r.workspace.id).await?;
        Ok(ListProjectsResponse {
            projects: all
                .iter()
                .filter(|p| rbac::visible(&r.rbac, &Scope::Project(r.workspace.id, p.id)))
                .map(convert::project)
                .collect(),
        })
    }

    pub(super) async fn delete_project_rpc(
        &self,
        caller: Caller,
        m: DeleteProjectRequest,
    ) -> ServiceResult<DeleteResponse> {
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: Some(&m.project),
                    environment: None,
                },
            )
            .await?;
        let ws_scope = r.ws_scope();
        self.authorize(
            &caller,
            &r,
            Action::ManageScopes,
            &ws_scope,
            action::PROJECT_DELETE,
        )
        .await?;
        let project = r.project()?;
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::PROJECT_DELETE,
            &r.project_scope()?,
            project.name.clone(),
            now,
        );
        self.state
            .storage
            .delete_project(project.id, now, entry)
            .await
            .map_err(|e| {
                not_found_as(e, || {
                    format!(
                        "project '{}' not found in workspace '{}'",
                        m.project, m.workspace
                    )
                })
            })?;
        Ok(DeleteResponse {})
    }

    pub(super) async fn create_environment_rpc(
        &self,
        caller: Caller,
        m: CreateEnvironmentRequest,
    ) -> ServiceResult<Environment> {
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: Some(&m.project),
                    environment: None,
                },
            )
            .await?;
        let project_scope = r.project_scope()?;
        self.authorize(
            &caller,
            &r,
            Action::ManageScopes,
            &project_scope,
            action::ENVIRONMENT_CREATE,
        )
        .await?;
        validate::scope_name("environment", &m.name)?;
        let id: EnvironmentId = validate::client_id("environment", &m.id)?;
        let wrapped_key = validate::child_wrap("wrapped_key", &m.wrapped_key)?;
        let project = r.project()?;
        let now = self.now_ms();
        let statements = check_statements(
            r.workspace.id,
            caller.principal_id(),
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let scope = Scope::Environment(r.workspace.id, project.id, id);
        let entry = audit::draft(
            &caller,
            action::ENVIRONMENT_CREATE,
            &scope,
            m.name.clone(),
            now,
        );
        let e = NewEnvironment {
            id,
            project_id: project.id,
            workspace_id: r.workspace.id,
            name: m.name.clone(),
            wrapped_key,
            created_by: caller.principal_id(),
            now_ms: now,
        };
        match self.state.storage.create_environment(e, entry).await {
            Ok(e) => {
                self.state.storage.add_key_statements(&statements).await?;
                Ok(convert::environment(&e))
            }
            Err(StorageError::AlreadyExists(Conflict::EnvironmentName)) => {
                Err(ServiceError::AlreadyExists(format!(
                    "environment '{}' already exists in project '{}'",
                    m.name, m.project
                )))
            }
            Err(StorageError::AlreadyExists(Conflict::EnvironmentId)) => Err(
                ServiceError::AlreadyExists(format!("environment id {id} is already in use")),
            ),
            Err(e) => Err(not_found_as(e, || {
                format!(
                    "project '{}' not found in workspace '{}'",
                    m.project, m.workspace
                )
            })),
        }
    }

    pub(super) async fn list_environments_rpc(
        &self,
        caller: Caller,
        m: ListEnvironmentsRequest,
    ) -> ServiceResult<ListEnvironmentsResponse> {
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &m.workspace,
                    project: Some(&m.project),
                    environment: None,
                },
            )
            .await?;
        let project = r.project()?;
        let all = self.state.storage.environments(project.id).await?;
        Ok(ListEnvironmentsResponse {
            environments: all
                .iter()
                .filter(|e| {
                    rbac::visible(
                        &r.rbac,
                        &Scope::Environment(r.workspace.id, project.id, e.id),
                    )
                })
                .map(convert::environment)
                .collect(),
        })
    }

    pub(super) async fn delete_environment_rpc(
        &self,
        caller: Caller,
        m: DeleteEnvironmentRequest,
    ) -> ServiceResult<DeleteResponse> {
        let env_ref = m.env.as_ref().ok_or_else(|| {
            ServiceError::InvalidArgument(
                "env is required: workspace, project and environment names".into(),
            )
        })?;
        let r = self
            .resolve(
                &caller,
                NamePath {
                    workspace: &env_ref.workspace,
                    project: Some(&env_ref.project),
                    environment: Some(&env_ref.environment),
                },
            )
            .await?;
        let project_scope = r.project_scope()?;
        self.authorize(
            &caller,
            &r,
            Action::ManageScopes,
            &project_scope,
            action::ENVIRONMENT_DELETE,
        )
        .await?;
        let env = r.env()?;
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::ENVIRONMENT_DELETE,
            &r.env_scope()?,
            env.name.clone(),
            now,
        );
        self.state
            .storage
            .delete_environment(env.id, now, entry)
            .await
            .map_err(|e| {
                not_found_as(e, || {
                    format!(
                        "environment '{}' not found in project '{}'",
                        env_ref.environment, env_ref.project
                    )
                })
            })?;
        Ok(DeleteResponse {})
    }

    /// Sets or clears an environment's retention limit: an admin of the environment (or
    /// above) decides how many versions of each secret the server keeps. Pruning happens in
    /// the same transaction, and after that in every write's; the audit trail is untouched.
    pub(super) async fn set_retention_rpc(
        &self,
        caller: Caller,
        m: SetRetentionRequest,
    ) -> ServiceResult<SetRetentionResponse> {
        if m.keep_versions > i64::MAX as u64 {
            return Err(ServiceError::InvalidArgument(format!(
                "keep_versions must be at most {}",
                i64::MAX
            )));
        }
        let (r, _) = self
            .environment(
                &caller,
                m.env.as_ref(),
                Action::ManageScopes,
                action::ENVIRONMENT_RETENTION,
            )
            .await?;
        let env = r.env()?;
        let keep = (m.keep_versions != 0).then_some(m.keep_versions);
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::ENVIRONMENT_RETENTION,
            &r.env_scope()?,
            keep.map_or_else(|| "keep/all".to_owned(), |n| format!("keep/{n}")),
            now,
        );
        let outcome = self
            .state
            .storage
            .set_retention(env.id, keep, entry)
            .await
            .map_err(|e| {
                not_found_as(e, || {
                    format!(
                        "environment '{}' not found in project '{}'",
                        env.name,
                        r.project
                            .as_ref()
                            .map(|p| p.name.as_str())
                            .unwrap_or_default()
                    )
                })
            })?;
        let mut record = env.clone();
        record.keep_versions = keep;
        record.history_floor = outcome.history_floor;
        Ok(SetRetentionResponse {
            environment: Some(convert::environment(&record)),
            pruned: outcome.pruned,
        })
    }
}

/// A storage NOT_FOUND (the scope vanished between resolution and the write) phrased like the
/// resolution's own message; other errors map as usual.
fn not_found_as(e: StorageError, msg: impl FnOnce() -> String) -> ServiceError {
    match e {
        StorageError::NotFound(_) => ServiceError::NotFound(msg()),
        other => other.into(),
    }
}
