//! Audit entries: the action names, builders for entries from a signed request, and the
//! group-commit appender used for secret reads.
//!
//! Mutations append their entries inside their own storage transaction. Reads have no
//! transaction of their own, so they go through [`AuditAppender`]: one task takes every pending
//! entry, commits them in a single transaction and then releases each waiting request. A read
//! answers only after its entry is durable, and many concurrent reads cost one commit.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::auth::Caller;
use crate::metrics::AUDIT_BATCH;
use crate::rbac::Scope;
use crate::storage::{AuditChain, AuditDraft, Storage, StorageError};

/// Action names recorded in the audit trail. Stable: clients filter on them.
pub mod action {
    /// `zopp-server invite create`.
    pub const INVITE_CREATE: &str = "invite.create";
    /// A principal joined with an invite.
    pub const PRINCIPAL_JOIN: &str = "principal.join";
    /// Workspace created.
    pub const WORKSPACE_CREATE: &str = "workspace.create";
    /// Workspace deleted.
    pub const WORKSPACE_DELETE: &str = "workspace.delete";
    /// Project created.
    pub const PROJECT_CREATE: &str = "project.create";
    /// Project deleted.
    pub const PROJECT_DELETE: &str = "project.delete";
    /// Environment created.
    pub const ENVIRONMENT_CREATE: &str = "environment.create";
    /// Environment deleted.
    pub const ENVIRONMENT_DELETE: &str = "environment.delete";
    /// Environment retention limit set or cleared (target: `keep/N` or `keep/all`).
    pub const ENVIRONMENT_RETENTION: &str = "environment.retention";
    /// Workspace or project key material handed out (`GetScopeKeys`).
    pub const SCOPE_KEYS: &str = "scope.keys";
    /// Environment key material handed out (`GetEnvironment`).
    pub const ENVIRONMENT_KEYS: &str = "environment.keys";
    /// Whole-environment read (`FetchEnvironment`).
    pub const ENVIRONMENT_FETCH: &str = "environment.fetch";
    /// Change stream opened (`WatchEnvironment`).
    pub const ENVIRONMENT_WATCH: &str = "environment.watch";
    /// One secret read (`GetSecret`).
    pub const SECRET_READ: &str = "secret.read";
    /// One secret's history read.
    pub const SECRET_HISTORY: &str = "secret.history";
    /// A secret version written.
    pub const SECRET_WRITE: &str = "secret.write";
    /// A tombstone version written.
    pub const SECRET_DELETE: &str = "secret.delete";
    /// Principals and admission chains looked up (recorded only when refused).
    pub const PRINCIPAL_LOOKUP: &str = "principal.lookup";
    /// A grant made or replaced.
    pub const PERMISSION_SET: &str = "permission.set";
    /// Grants listed (recorded only when refused).
    pub const PERMISSION_LIST: &str = "permission.list";
    /// A grant removed.
    pub const PERMISSION_REMOVE: &str = "permission.remove";
    /// An effective role looked up (recorded only when refused).
    pub const PERMISSION_EFFECTIVE: &str = "permission.effective";
    /// A workspace invite created.
    pub const WORKSPACE_INVITE_CREATE: &str = "workspace_invite.create";
    /// A workspace invite revoked.
    pub const WORKSPACE_INVITE_REVOKE: &str = "workspace_invite.revoke";
    /// Workspace invites listed (recorded only when refused).
    pub const WORKSPACE_INVITE_LIST: &str = "workspace_invite.list";
    /// A service principal created.
    pub const SERVICE_PRINCIPAL_CREATE: &str = "principal.create_service";
    /// A principal revoked.
    pub const PRINCIPAL_REVOKE: &str = "principal.revoke";
    /// A principal renamed.
    pub const PRINCIPAL_RENAME: &str = "principal.rename";
    /// A new device prepared for import.
    pub const PRINCIPAL_EXPORT: &str = "principal.export";
    /// A new device imported its keys.
    pub const PRINCIPAL_IMPORT: &str = "principal.import";
    /// Scope keys rotated.
    pub const KEYS_ROTATE: &str = "keys.rotate";
    /// A service principal fetched its server key share (each use of its token).
    pub const KEY_SHARE_READ: &str = "principal.key_share";
}

/// The chain an event in `scope` belongs to.
pub fn chain_of(scope: &Scope) -> AuditChain {
    match scope.workspace() {
        Some(w) => AuditChain::Workspace(w),
        None => AuditChain::Server,
    }
}

/// An entry recording `caller`'s signed request.
pub fn draft(
    caller: &Caller,
    action: &str,
    scope: &Scope,
    target: String,
    now_ms: i64,
) -> AuditDraft {
    let r = caller.request();
    AuditDraft {
        chain: chain_of(scope),
        time_ms: now_ms,
        actor: Some(caller.principal_id()),
        action: action.to_string(),
        scope: scope.label(),
        target,
        method: r.method.to_string(),
        request_timestamp_ms: r.timestamp_ms,
        nonce: r.nonce.to_vec(),
        request_hash: r.body_hash.to_vec(),
        signature: r.signature.to_vec(),
        result: "ok".to_string(),
    }
}

/// An entry on the server chain for an event without a signed request (the server acting on an
/// operator's command, e.g. `invite create`).
pub fn server_draft(action: &str, target: String, now_ms: i64) -> AuditDraft {
    AuditDraft {
        chain: AuditChain::Server,
        time_ms: now_ms,
        actor: None,
        action: action.to_string(),
        scope: Scope::Server.label(),
        target,
        method: "zopp-server".to_string(),
        request_timestamp_ms: now_ms,
        nonce: Vec::new(),
        request_hash: Vec::new(),
        signature: Vec::new(),
        result: "ok".to_string(),
    }
}

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 512;
/// Pending entries before callers wait for room (back-pressure).
const QUEUE: usize = 8192;

struct Pending {
    draft: AuditDraft,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// Group-commit appender: batches concurrent entries into one transaction.
#[derive(Clone)]
pub struct AuditAppender {
    tx: mpsc::Sender<Pending>,
}

impl AuditAppender {
    /// Starts the committing task on the current runtime. It ends when every clone is dropped.
    pub fn spawn(storage: Arc<dyn Storage>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(storage, rx));
        Self { tx }
    }

    /// Appends `draft` and waits until it is committed.
    ///
    /// # Errors
    /// The storage error of the batch, or unavailable when the appender stopped.
    pub async fn append(&self, draft: AuditDraft) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { draft, done })
            .await
            .map_err(|_| StorageError::Unavailable("audit appender stopped".into()))?;
        wait.await
            .map_err(|_| StorageError::Unavailable("audit appender stopped".into()))?
    }
}

async fn run(storage: Arc<dyn Storage>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (drafts, waiters): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|p| (p.draft, p.done)).unzip();
        metrics::histogram!(AUDIT_BATCH).record(drafts.len() as f64);
        match storage.append_audit(drafts).await {
            Ok(_) => {
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = waiters.len(), "audit batch failed");
                let msg = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(StorageError::Unavailable(msg.clone().into())));
                }
            }
        }
    }
}
