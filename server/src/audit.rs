//! Audit entries: the action names, builders for entries from a signed request, and the
//! group-commit appender used for secret reads.
//!
//! Mutations append their entries inside their own storage transaction. Reads have no
//! transaction of their own, so they go through [`AuditAppender`]: one task takes every pending
//! entry, commits them in a single transaction and then releases each waiting request. A read
//! answers only after its entry is durable, and many concurrent reads cost one commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

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
    /// An app's lease taken (target: `app/<digest>`).
    pub const APP_LEASE: &str = "app.lease";
    /// An app's live lease taken from its holder by an admin (`--break-lock`).
    pub const APP_LEASE_BREAK: &str = "app.lease_break";
    /// An app's lease released with nothing applied.
    pub const APP_LEASE_RELEASE: &str = "app.lease_release";
    /// An apply recorded: app version, kubeconfig version, rendering SHA-256, exit code and
    /// each secret version used, by digest.
    pub const APP_APPLY: &str = "app.apply";
    /// An app's status read (recorded only when refused).
    pub const APP_STATUS: &str = "app.status";
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
/// While reads that will append are still on their way, the committer waits for this many
/// entries before it commits. A commit has a fixed cost (the transaction, its WAL frames, and
/// every reader connection's page cache, which SQLite drops when the database changes), so under
/// load a few larger commits cost far less than many of two or three entries.
const FILL_BATCH: usize = 16;
/// The longest the committer waits for a batch to fill (tokio timers tick in milliseconds).
const MAX_LINGER: Duration = Duration::from_millis(2);
/// Pending entries before callers wait for room (back-pressure).
const QUEUE: usize = 8192;

struct Pending {
    draft: AuditDraft,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// Requests in flight that may append a read entry, so the committer knows whether waiting can
/// fill a batch. Without load nothing is on its way and every entry commits at once.
#[derive(Default)]
struct Arrivals {
    count: AtomicUsize,
    left: Notify,
}

/// Held by a request that may append a read entry, from before its authentication until it
/// ends; see [`AuditAppender::arriving`].
pub struct Arrival(Arc<Arrivals>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        // A request that ends without an entry (refused, not found) must not keep the
        // committer waiting for it.
        self.0.left.notify_one();
    }
}

/// Group-commit appender: batches concurrent entries into one transaction.
#[derive(Clone)]
pub struct AuditAppender {
    tx: mpsc::Sender<Pending>,
    arrivals: Arc<Arrivals>,
}

impl AuditAppender {
    /// Starts the committing task on the current runtime. It ends when every clone is dropped.
    pub fn spawn(storage: Arc<dyn Storage>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let arrivals = Arc::new(Arrivals::default());
        tokio::spawn(run(storage, rx, arrivals.clone()));
        Self { tx, arrivals }
    }

    /// Announces a request that may append a read entry; hold the guard until it ends.
    pub fn arriving(&self) -> Arrival {
        self.arrivals.count.fetch_add(1, Ordering::AcqRel);
        Arrival(self.arrivals.clone())
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

async fn run(storage: Arc<dyn Storage>, mut rx: mpsc::Receiver<Pending>, arrivals: Arc<Arrivals>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        fill(&mut rx, &mut batch, &arrivals).await;
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

/// Waits, briefly, for more entries while requests that may add one are still in flight. Every
/// request whose entry is already in the batch still holds its [`Arrival`], so the batch is
/// complete once the in-flight count no longer exceeds it.
async fn fill(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>, arrivals: &Arrivals) {
    let linger = tokio::time::sleep(MAX_LINGER);
    tokio::pin!(linger);
    loop {
        // Whatever is queued already belongs in the batch before the count is compared: a read
        // may have queued its entry and ended in the time another one woke this task.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() >= FILL_BATCH || arrivals.count.load(Ordering::Acquire) <= batch.len() {
            return;
        }
        tokio::select! {
            n = rx.recv_many(batch, MAX_BATCH - batch.len()) => if n == 0 { return },
            () = arrivals.left.notified() => {}
            () = &mut linger => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued entry; `fill` never looks at its waiter.
    fn pending() -> Pending {
        let (done, _) = oneshot::channel();
        let draft = server_draft(action::INVITE_CREATE, String::new(), 0);
        Pending { draft, done }
    }

    /// Runs `fill` on `batch` and returns the (virtual) time it took.
    async fn timed_fill(
        a: &AuditAppender,
        rx: &mut mpsc::Receiver<Pending>,
        batch: &mut Vec<Pending>,
    ) -> Duration {
        let t = tokio::time::Instant::now();
        fill(rx, batch, &a.arrivals).await;
        t.elapsed()
    }

    fn appender() -> (AuditAppender, mpsc::Receiver<Pending>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let arrivals = Arc::new(Arrivals::default());
        (AuditAppender { tx, arrivals }, rx)
    }

    // The clock is paused: time moves only when every task waits, so the virtual time `fill`
    // took tells whether it returned on an event or on its linger timer. No task here yields
    // (`yield_now`): a yielded task is not counted as ready, and the clock could jump to the
    // linger deadline before it runs again.

    #[tokio::test(start_paused = true)]
    async fn an_idle_server_commits_at_once() {
        let (a, mut rx) = appender();
        let _mine = a.arriving();
        let mut batch = vec![pending()];
        let took = timed_fill(&a, &mut rx, &mut batch).await;
        assert_eq!(batch.len(), 1);
        assert_eq!(took, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_read_in_flight_to_join_the_batch() {
        let (a, mut rx) = appender();
        let _first = a.arriving();
        let second = a.arriving();
        let mut batch = vec![pending()];
        let tx = a.tx.clone();
        // The test runs on one thread: the spawned task runs once `fill` waits, never before.
        tokio::spawn(async move {
            tx.send(pending()).await.expect("committer listening");
            drop(second);
        });
        let took = timed_fill(&a, &mut rx, &mut batch).await;
        assert_eq!(batch.len(), 2, "the second read's entry joined the batch");
        assert_eq!(took, Duration::ZERO, "no timer was needed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_ends_without_an_entry_releases_the_batch() {
        let (a, mut rx) = appender();
        let _first = a.arriving();
        let refused = a.arriving();
        let mut batch = vec![pending()];
        tokio::spawn(async move { drop(refused) });
        let took = timed_fill(&a, &mut rx, &mut batch).await;
        assert_eq!(batch.len(), 1);
        assert!(took < MAX_LINGER, "released by the drop, not the timer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_read_delays_the_batch_by_at_most_the_linger() {
        let (a, mut rx) = appender();
        let _first = a.arriving();
        let _stuck = a.arriving();
        let mut batch = vec![pending()];
        let took = timed_fill(&a, &mut rx, &mut batch).await;
        assert_eq!(batch.len(), 1);
        assert!(took >= MAX_LINGER, "released by the timer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_commits_without_waiting_for_the_rest() {
        let (a, mut rx) = appender();
        let guards: Vec<Arrival> = (0..FILL_BATCH + 8).map(|_| a.arriving()).collect();
        let mut batch: Vec<Pending> = (0..FILL_BATCH).map(|_| pending()).collect();
        let took = timed_fill(&a, &mut rx, &mut batch).await;
        assert_eq!(batch.len(), FILL_BATCH);
        assert_eq!(took, Duration::ZERO);
        drop(guards);
    }
}
