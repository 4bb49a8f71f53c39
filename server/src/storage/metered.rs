//! A [`Storage`] decorator that records every operation's latency and failures as Prometheus
//! metrics, so each backend gets the same database metrics without repeating the code.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use zopp_crypto::envelope::NameDigest;
use zopp_crypto::ids::{EnvironmentId, InviteId, PrincipalId, ProjectId, ServerId, WorkspaceId};

use super::*;
use crate::metrics::{DB_DURATION, DB_ERRORS};

/// Wraps a backend and measures it.
pub struct Metered<S> {
    inner: S,
}

impl<S: Storage> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn timed<T>(&self, op: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let out = fut.await;
        let backend = self.inner.backend();
        metrics::histogram!(DB_DURATION, "backend" => backend, "op" => op)
            .record(start.elapsed().as_secs_f64());
        if let Err(e) = &out {
            // Domain refusals (conflicts, not-found) are answers, not database failures.
            if matches!(e, StorageError::Unavailable(_) | StorageError::Corrupt(_)) {
                metrics::counter!(DB_ERRORS, "backend" => backend, "op" => op).increment(1);
            }
        }
        out
    }
}

#[async_trait]
impl<S: Storage> Storage for Metered<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<()> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn server_id(&self, candidate: ServerId) -> Result<ServerId> {
        self.timed("server_id", self.inner.server_id(candidate))
            .await
    }
    async fn reset_server_id(&self, new: ServerId) -> Result<()> {
        self.timed("reset_server_id", self.inner.reset_server_id(new))
            .await
    }
    async fn create_server_invite(
        &self,
        invite: ServerInviteRecord,
        audit: AuditDraft,
    ) -> Result<()> {
        self.timed(
            "create_server_invite",
            self.inner.create_server_invite(invite, audit),
        )
        .await
    }
    async fn server_invite(&self, id: InviteId) -> Result<Option<ServerInviteRecord>> {
        self.timed("server_invite", self.inner.server_invite(id))
            .await
    }
    async fn join(&self, join: NewJoin, audit: AuditDraft) -> Result<()> {
        self.timed("join", self.inner.join(join, audit)).await
    }
    async fn principal(&self, id: PrincipalId) -> Result<Option<PrincipalRecord>> {
        self.timed("principal", self.inner.principal(id)).await
    }
    async fn principals(&self, ids: &[PrincipalId]) -> Result<Vec<PrincipalRecord>> {
        self.timed("principals", self.inner.principals(ids)).await
    }
    async fn resolve(&self, who: &Who, path: &NamePath<'_>) -> Result<Resolution> {
        self.timed("resolve", self.inner.resolve(who, path)).await
    }
    async fn workspaces_for(&self, who: &Who) -> Result<Vec<WorkspaceRecord>> {
        self.timed("workspaces_for", self.inner.workspaces_for(who))
            .await
    }
    async fn projects(&self, workspace: WorkspaceId) -> Result<Vec<ProjectRecord>> {
        self.timed("projects", self.inner.projects(workspace)).await
    }
    async fn environments(&self, project: ProjectId) -> Result<Vec<EnvironmentRecord>> {
        self.timed("environments", self.inner.environments(project))
            .await
    }
    async fn create_workspace(
        &self,
        ws: NewWorkspace,
        audit: AuditDraft,
    ) -> Result<WorkspaceRecord> {
        self.timed("create_workspace", self.inner.create_workspace(ws, audit))
            .await
    }
    async fn delete_workspace(
        &self,
        id: WorkspaceId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<()> {
        self.timed(
            "delete_workspace",
            self.inner.delete_workspace(id, now_ms, audit),
        )
        .await
    }
    async fn create_project(&self, p: NewProject, audit: AuditDraft) -> Result<ProjectRecord> {
        self.timed("create_project", self.inner.create_project(p, audit))
            .await
    }
    async fn delete_project(&self, id: ProjectId, now_ms: i64, audit: AuditDraft) -> Result<()> {
        self.timed(
            "delete_project",
            self.inner.delete_project(id, now_ms, audit),
        )
        .await
    }
    async fn create_environment(
        &self,
        e: NewEnvironment,
        audit: AuditDraft,
    ) -> Result<EnvironmentRecord> {
        self.timed(
            "create_environment",
            self.inner.create_environment(e, audit),
        )
        .await
    }
    async fn delete_environment(
        &self,
        id: EnvironmentId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<()> {
        self.timed(
            "delete_environment",
            self.inner.delete_environment(id, now_ms, audit),
        )
        .await
    }
    async fn set_retention(
        &self,
        env: EnvironmentId,
        keep_versions: Option<u64>,
        audit: AuditDraft,
    ) -> Result<RetentionOutcome> {
        self.timed(
            "set_retention",
            self.inner.set_retention(env, keep_versions, audit),
        )
        .await
    }
    async fn epoch_links(&self, env: EnvironmentId) -> Result<Vec<EpochLinkRecord>> {
        self.timed("epoch_links", self.inner.epoch_links(env)).await
    }
    async fn environment_version(&self, env: EnvironmentId) -> Result<Option<u64>> {
        self.timed("environment_version", self.inner.environment_version(env))
            .await
    }
    async fn secret_version(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<Option<SecretVersionRecord>> {
        self.timed(
            "secret_version",
            self.inner.secret_version(env, digest, version),
        )
        .await
    }
    async fn resolve_read(
        &self,
        who: &Who,
        path: &NamePath<'_>,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<(Resolution, Option<SecretRead>)> {
        self.timed(
            "resolve_read",
            self.inner.resolve_read(who, path, digest, version),
        )
        .await
    }
    async fn secret_read(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<Option<SecretRead>> {
        self.timed("secret_read", self.inner.secret_read(env, digest, version))
            .await
    }
    async fn secret_history(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
    ) -> Result<Vec<SecretVersionRecord>> {
        self.timed("secret_history", self.inner.secret_history(env, digest))
            .await
    }
    async fn environment_state(
        &self,
        env: EnvironmentId,
        at: PointInTime,
    ) -> Result<EnvironmentState> {
        self.timed("environment_state", self.inner.environment_state(env, at))
            .await
    }
    async fn write_secrets(
        &self,
        batch: SecretWriteBatch,
        audit: Vec<AuditDraft>,
    ) -> Result<WriteOutcome> {
        self.timed("write_secrets", self.inner.write_secrets(batch, audit))
            .await
    }
    async fn append_audit(&self, entries: Vec<AuditDraft>) -> Result<Vec<AuditEntryRecord>> {
        self.timed("append_audit", self.inner.append_audit(entries))
            .await
    }
    async fn list_audit(&self, chain: AuditChain, query: &AuditQuery) -> Result<AuditPage> {
        self.timed("list_audit", self.inner.list_audit(chain, query))
            .await
    }
}
