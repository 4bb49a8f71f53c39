//! SQLite backend: the embedded default (`sqlite://PATH`).
//!
//! Durability and concurrency: WAL journal with `synchronous=NORMAL` (a committed WAL transaction
//! survives `kill -9` of the process; only an OS crash or power loss can lose the last commits),
//! `foreign_keys=ON` and a busy timeout. All writes go through one pool holding a single
//! connection, so writers queue in the pool instead of fighting over SQLite's lock (no
//! `SQLITE_BUSY`, no deadlocks); every write transaction starts with `BEGIN IMMEDIATE` so that a
//! second process (`zopp-server invite create` next to a running server) waits instead of failing
//! half-way. Reads use a separate pool of read-only connections that see committed snapshots.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite, Transaction};
use zopp_crypto::envelope::{Envelope, NameDigest};
use zopp_crypto::ids::{EnvironmentId, InviteId, PrincipalId, ProjectId, WorkspaceId};
use zopp_crypto::keys::{AgreementPublic, SIGNATURE_LEN};
use zopp_crypto::sign::ZERO_HASH;
use zopp_crypto::wrap::WrappedKey;

use super::*;
use crate::rbac::{Grant, Role};

mod cache;
mod inline;
mod leases;
mod teams;

use cache::{ReadCache, ReadKey};

use inline::{execute_on, query_on, Cols, InlineReaders, InlineWriter};

/// Default number of read connections.
pub const DEFAULT_READERS: u32 = 4;
/// Most read-only connections for inline reads.
const MAX_INLINE_READERS: usize = 32;
/// How long SQLite waits on a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection before the storage counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Ids per `IN (...)` list, well under SQLite's bound-parameter limit.
const IN_CHUNK: usize = 500;

/// The SQLite implementation of [`Storage`].
pub struct SqliteStorage {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Hot reads and audit batches on rusqlite connections (file databases only: an in-memory
    /// database exists only inside sqlx's own connections).
    inline: Option<Inline>,
    /// Held by every write transaction of this server (sqlx's or the inline writer's), so they
    /// take SQLite's write lock one at a time and never wait in its busy handler.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").finish_non_exhaustive()
    }
}

impl SqliteStorage {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`) and migrates it.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when the file cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, DEFAULT_READERS).await
    }

    /// Like [`SqliteStorage::open`] with `readers` read connections.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when the file cannot be opened or migrated.
    pub async fn open_with(url: &str, readers: u32) -> Result<Self> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal)
            .disable_statement_logging();
        create_private(base.get_filename())?;
        let file = base.get_filename().to_path_buf();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Keep the single writer forever: reopening costs and gains nothing. A local file
            // connection cannot go stale, so skip the ping sqlx would send (a thread hand-off)
            // on every acquire.
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            // No `mmap_size`: every commit (one per audit batch) makes each reader unmap the whole
            // mapping at its next read, and the TLB shoot-downs and page faults of remapping cost
            // far more than the few `pread`s of the pages a read needs.
            .connect_with(base.read_only(true))
            .await?;
        // The writer has created the file by now, unless the database lives in memory.
        let inline = if file.is_file() {
            // One reader per runtime worker keeps them from waiting on each other; past a few
            // dozen cores, more connections only cost memory.
            let threads = std::thread::available_parallelism().map_or(2, usize::from);
            Some(Inline {
                readers: Arc::new(InlineReaders::open(
                    &file,
                    threads.max(readers as usize).min(MAX_INLINE_READERS),
                    BUSY_TIMEOUT,
                )?),
                writer: Arc::new(InlineWriter::open(&file, BUSY_TIMEOUT)?),
                cache: ReadCache::new(),
            })
        } else {
            None
        };
        Ok(Self {
            writer,
            reader,
            inline,
            write_gate: Arc::default(),
        })
    }

    /// The write pool, for tests and maintenance that need raw SQL (e.g. proving the audit
    /// triggers refuse tampering).
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, waiting for in-flight work.
    pub async fn close(&self) {
        if let Some(inline) = &self.inline {
            inline.readers.close();
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn begin_write(&self) -> Result<WriteTx> {
        let gate = self.write_gate.clone().lock_owned().await;
        // IMMEDIATE takes the write lock up front, so a concurrent writer in another process
        // makes this wait (busy timeout) rather than fail at the first write statement.
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _gate: gate })
    }
}

/// The rusqlite connections of a file database.
struct Inline {
    /// Read-only connections used on the calling thread.
    readers: Arc<InlineReaders>,
    /// Commits group-committed audit batches without sqlx's per-statement thread hand-offs.
    writer: Arc<InlineWriter>,
    /// Principal look-ups and fused secret reads, kept while the rows they came from are
    /// unchanged (checked on the readers).
    cache: ReadCache,
}

/// A write transaction holding the server's write gate until it commits or is dropped.
pub(super) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    /// Commits, then opens the gate.
    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Creates the database file with mode 0600 if it does not exist yet. SQLite gives its `-wal`
/// and `-shm` files the database file's permissions, so the whole database stays private.
fn create_private(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") || path.exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StorageError::Unavailable(Box::new(e))),
    }
}

// ---------- row decoding ----------

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(what.to_string())
}

fn parse_id<T: FromStr>(s: &str, what: &str) -> Result<T> {
    T::from_str(s).map_err(|_| corrupt(what))
}

fn opt_id<T: FromStr>(s: Option<String>, what: &str) -> Result<Option<T>> {
    s.map(|s| parse_id(&s, what)).transpose()
}

fn arr32(v: &[u8], what: &str) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| corrupt(what))
}

fn sig64(v: &[u8]) -> Result<[u8; SIGNATURE_LEN]> {
    v.try_into().map_err(|_| corrupt("signature"))
}

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn to_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

/// Saturating conversion for binding: values beyond i64 cannot match any stored row anyway.
fn sat_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

macro_rules! principal_cols {
    () => {
        "p.id, p.user_id, p.workspace_id, u.email, p.name, p.signing_key, p.agreement_key, \
         p.admitted_by, p.admission_signature, p.created_at, p.revoked_at, p.expires_at"
    };
}

// The read epoch (migrations/sqlite/0004_read_epoch.sql): raised in the same transaction as
// any change to the rows a cached read comes from. Cached statements select it as their last
// column, so a result carries the epoch of its own snapshot.
macro_rules! read_epoch_col {
    () => {
        "(SELECT n FROM read_epoch WHERE id = 1)"
    };
}

const PRINCIPAL_SELECT: &str = concat!(
    "SELECT ",
    principal_cols!(),
    " FROM principals p LEFT JOIN users u ON u.id = p.user_id"
);

/// One principal, with the read epoch after its columns.
const SQL_PRINCIPAL: &str = concat!(
    "SELECT ",
    principal_cols!(),
    ", ",
    read_epoch_col!(),
    " FROM principals p LEFT JOIN users u ON u.id = p.user_id WHERE p.id = $1"
);

/// Columns of a principal row (`principal_cols!`).
const PRINCIPAL_COLS: usize = 12;

const SQL_READ_EPOCH: &str = "SELECT n FROM read_epoch WHERE id = 1";

/// The current read epoch, on an inline reader.
fn read_epoch(readers: &InlineReaders) -> Result<i64> {
    readers
        .query(SQL_READ_EPOCH, &[])?
        .first()
        .ok_or_else(|| corrupt("read epoch row"))?
        .col(0)
}

fn principal_row(r: &impl Cols) -> Result<PrincipalRecord> {
    principal_at(r, 0)
}

/// Decodes the twelve principal columns of `PRINCIPAL_SELECT` starting at column `at`.
fn principal_at(r: &impl Cols, at: usize) -> Result<PrincipalRecord> {
    Ok(PrincipalRecord {
        id: parse_id(&r.col::<String>(at)?, "principal id")?,
        user_id: opt_id(r.col(at + 1)?, "user id")?,
        workspace_id: opt_id(r.col(at + 2)?, "workspace id")?,
        user_email: r.col(at + 3)?,
        name: r.col(at + 4)?,
        signing_key: verifying_key(&r.col::<Vec<u8>>(at + 5)?)
            .map_err(|_| corrupt("principal signing key"))?,
        agreement_key: AgreementPublic::try_from_slice(&r.col::<Vec<u8>>(at + 6)?)
            .map_err(|_| corrupt("principal agreement key"))?,
        admitted_by: opt_id(r.col(at + 7)?, "admitting principal id")?,
        admission_signature: r.col(at + 8)?,
        created_at_ms: r.col(at + 9)?,
        revoked_at_ms: r.col(at + 10)?,
        expires_at_ms: r.col(at + 11)?,
    })
}

macro_rules! version_cols {
    () => {
        "v.environment_id, v.name_digest, v.version, v.env_version, v.key_epoch, v.envelope, \
         v.deleted, v.writer_id, v.signature, v.prev_hash, v.hash, v.created_at"
    };
}

fn version_row(r: &impl Cols) -> Result<SecretVersionRecord> {
    version_at(r, 0)
}

/// Decodes the twelve `version_cols!` columns starting at column `at`.
fn version_at(r: &impl Cols, at: usize) -> Result<SecretVersionRecord> {
    Ok(SecretVersionRecord {
        environment_id: parse_id(&r.col::<String>(at)?, "environment id")?,
        name_digest: NameDigest::try_from_slice(&r.col::<Vec<u8>>(at + 1)?)
            .map_err(|_| corrupt("name digest"))?,
        version: to_u64(r.col(at + 2)?, "version")?,
        env_version: to_u64(r.col(at + 3)?, "env version")?,
        key_epoch: to_u32(r.col(at + 4)?, "key epoch")?,
        envelope: Envelope::from_bytes(r.col(at + 5)?),
        deleted: r.col(at + 6)?,
        writer: parse_id(&r.col::<String>(at + 7)?, "writer id")?,
        signature: sig64(&r.col::<Vec<u8>>(at + 8)?)?,
        prev_hash: arr32(&r.col::<Vec<u8>>(at + 9)?, "prev hash")?,
        hash: arr32(&r.col::<Vec<u8>>(at + 10)?, "version hash")?,
        created_at_ms: r.col(at + 11)?,
    })
}

macro_rules! audit_cols {
    () => {
        "chain, seq, time_ms, actor, action, scope, target, method, request_timestamp_ms, \
         nonce, request_hash, signature, result, prev_hash, hash"
    };
}

fn audit_row(r: &SqliteRow) -> Result<AuditEntryRecord> {
    let chain: String = r.try_get(0)?;
    let chain = if chain == "server" {
        AuditChain::Server
    } else {
        AuditChain::Workspace(parse_id(&chain, "audit chain")?)
    };
    let actor: String = r.try_get(3)?;
    let actor = if actor.is_empty() {
        None
    } else {
        Some(parse_id(&actor, "audit actor")?)
    };
    Ok(AuditEntryRecord {
        seq: to_u64(r.try_get(1)?, "audit seq")?,
        draft: AuditDraft {
            chain,
            time_ms: r.try_get(2)?,
            actor,
            action: r.try_get(4)?,
            scope: r.try_get(5)?,
            target: r.try_get(6)?,
            method: r.try_get(7)?,
            request_timestamp_ms: r.try_get(8)?,
            nonce: r.try_get(9)?,
            request_hash: r.try_get(10)?,
            signature: r.try_get(11)?,
            result: r.try_get(12)?,
        },
        prev_hash: arr32(&r.try_get::<Vec<u8>, _>(13)?, "audit prev hash")?,
        hash: arr32(&r.try_get::<Vec<u8>, _>(14)?, "audit hash")?,
    })
}

// ---------- SQL ----------
//
// Every statement is a constant so the index test below can EXPLAIN each one.

// Names top down plus the caller's live grants in the workspace, in one statement: resolution
// is on every request's path, and each statement costs a round trip to SQLite's worker thread.
// One row per grant key (or one row with NULL grant columns when the caller holds none).
macro_rules! resolve_cols {
    () => {
        "w.id, w.name, w.created_at, \
         p.id, p.name, p.wrapped_key, p.created_at, \
         e.id, e.name, e.wrapped_key, e.key_epoch, e.env_version, e.created_at, \
         g.gid, g.scope_kind, g.project_id, g.environment_id, g.role, g.key_epoch, g.wrapped_key, \
         e.keep_versions, e.history_floor"
    };
}

macro_rules! resolve_from {
    () => {
        " FROM workspaces w \
     LEFT JOIN projects p ON p.workspace_id = w.id AND p.name = $2 AND p.deleted_at IS NULL \
     LEFT JOIN environments e ON e.project_id = p.id AND e.name = $3 AND e.deleted_at IS NULL \
     LEFT JOIN ( \
       SELECT g.workspace_id AS gw, g.id AS gid, g.scope_kind, g.project_id, g.environment_id, \
         g.role, k.key_epoch, k.wrapped_key \
       FROM grants g LEFT JOIN grant_keys k ON k.grant_id = g.id AND k.principal_id = $4 \
       WHERE g.principal_id = $4 AND g.revoked_at IS NULL AND g.workspace_id = \
         (SELECT id FROM workspaces WHERE name = $1 AND deleted_at IS NULL) \
       UNION ALL \
       SELECT g.workspace_id, g.id, g.scope_kind, g.project_id, g.environment_id, \
         g.role, k.key_epoch, k.wrapped_key \
       FROM grants g LEFT JOIN grant_keys k ON k.grant_id = g.id AND k.principal_id = $4 \
       WHERE g.user_id = $5 AND g.revoked_at IS NULL AND g.workspace_id = \
         (SELECT id FROM workspaces WHERE name = $1 AND deleted_at IS NULL) \
     ) g ON g.gw = w.id"
    };
}

const SQL_RESOLVE: &str = concat!(
    "SELECT ",
    resolve_cols!(),
    resolve_from!(),
    " WHERE w.name = $1 AND w.deleted_at IS NULL"
);

const SQL_WORKSPACES_FOR: &str = "SELECT w.id, w.name, w.created_at FROM workspaces w \
     WHERE w.deleted_at IS NULL AND w.id IN ( \
       SELECT workspace_id FROM grants WHERE principal_id = $1 AND revoked_at IS NULL \
       UNION SELECT workspace_id FROM grants WHERE user_id = $2 AND revoked_at IS NULL) \
     ORDER BY w.name";

const SQL_PROJECTS: &str = "SELECT id, workspace_id, name, wrapped_key, created_at FROM projects \
     WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY name";

const SQL_ENVIRONMENTS: &str = "SELECT id, project_id, workspace_id, name, wrapped_key, \
     key_epoch, env_version, created_at, keep_versions, history_floor FROM environments \
     WHERE project_id = $1 AND deleted_at IS NULL ORDER BY name";

const SQL_EPOCH_LINKS: &str = "SELECT epoch, wrapped_key FROM environment_key_epochs \
     WHERE environment_id = $1 ORDER BY epoch DESC";

const SQL_ENV_VERSION: &str =
    "SELECT env_version FROM environments WHERE id = $1 AND deleted_at IS NULL";

const SQL_ENV_FOR_WRITE: &str = "SELECT key_epoch, env_version, keep_versions FROM environments \
     WHERE id = $1 AND deleted_at IS NULL";

const SQL_ENV_VERSION_AND_FLOOR: &str =
    "SELECT env_version, history_floor FROM environments WHERE id = $1 AND deleted_at IS NULL";

/// The history floor a pruning raises: for every version about to be pruned, the environment
/// version of the version that superseded it (before that, the pruned version was current, so
/// states older than the maximum are incomplete).
const SQL_PRUNE_FLOOR: &str = "SELECT COALESCE(MAX(n.env_version), 0) FROM secret_versions d \
     JOIN secret_heads h ON h.environment_id = d.environment_id AND h.name_digest = d.name_digest \
     JOIN secret_versions n ON n.environment_id = d.environment_id \
       AND n.name_digest = d.name_digest AND n.version = d.version + 1 \
     WHERE d.environment_id = $1 AND d.version <= h.version - $2";

/// Deletes every version more than `$2` behind its secret's head (the trigger of
/// migrations/sqlite/0003_retention.sql allows exactly these).
const SQL_PRUNE: &str = "DELETE FROM secret_versions WHERE environment_id = $1 AND version <= \
     (SELECT h.version FROM secret_heads h WHERE h.environment_id = $1 \
       AND h.name_digest = secret_versions.name_digest) - $2";

const SQL_RAISE_FLOOR: &str =
    "UPDATE environments SET history_floor = MAX(history_floor, $2) WHERE id = $1";

const SQL_SECRET_HEAD: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM secret_heads h JOIN secret_versions v ON v.environment_id = h.environment_id \
     AND v.name_digest = h.name_digest AND v.version = h.version \
     WHERE h.environment_id = $1 AND h.name_digest = $2"
);

const SQL_SECRET_VERSION: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM secret_versions v WHERE v.environment_id = $1 AND v.name_digest = $2 \
     AND v.version = $3"
);

// Principals and users are aliased `wp`/`wu` so the same lists serve the fused reads below,
// where `p` is the project.
macro_rules! read_cols {
    () => {
        concat!(
            version_cols!(),
            ", pv.environment_id, pv.name_digest, pv.version, pv.env_version, pv.key_epoch, \
             pv.envelope, pv.deleted, pv.writer_id, pv.signature, pv.prev_hash, pv.hash, \
             pv.created_at, \
             wp.id, wp.user_id, wp.workspace_id, wu.email, wp.name, wp.signing_key, \
             wp.agreement_key, wp.admitted_by, wp.admission_signature, wp.created_at, \
             wp.revoked_at, wp.expires_at"
        )
    };
}

macro_rules! read_joins {
    () => {
        " LEFT JOIN secret_versions pv ON pv.environment_id = v.environment_id \
         AND pv.name_digest = v.name_digest AND pv.version = v.version - 1 \
         LEFT JOIN principals wp ON wp.id = v.writer_id \
         LEFT JOIN users wu ON wu.id = wp.user_id"
    };
}

// A secret read (head or given version) with its predecessor and writer in one statement.
const SQL_READ_HEAD: &str = concat!(
    "SELECT ",
    read_cols!(),
    " FROM secret_heads h JOIN secret_versions v ON v.environment_id = h.environment_id \
     AND v.name_digest = h.name_digest AND v.version = h.version",
    read_joins!(),
    " WHERE h.environment_id = $1 AND h.name_digest = $2"
);

const SQL_READ_VERSION: &str = concat!(
    "SELECT ",
    read_cols!(),
    " FROM secret_versions v",
    read_joins!(),
    " WHERE v.environment_id = $1 AND v.name_digest = $2 AND v.version = $3"
);

// The caller's resolution and the secret it asks for, in one statement: `GetSecret` is the
// hottest call, and every statement is a round trip to SQLite's worker thread. The secret
// columns follow the twenty-two of `resolve_cols!` and are repeated on each grant row; the handler
// still authorizes before it returns anything (the row is read, never shown, when refused).
const SQL_RESOLVE_READ_HEAD: &str = concat!(
    "SELECT ",
    resolve_cols!(),
    ", ",
    read_cols!(),
    ", ",
    read_epoch_col!(),
    resolve_from!(),
    " LEFT JOIN secret_heads h ON h.environment_id = e.id AND h.name_digest = $6 \
     LEFT JOIN secret_versions v ON v.environment_id = h.environment_id \
     AND v.name_digest = h.name_digest AND v.version = h.version",
    read_joins!(),
    " WHERE w.name = $1 AND w.deleted_at IS NULL"
);

const SQL_RESOLVE_READ_VERSION: &str = concat!(
    "SELECT ",
    resolve_cols!(),
    ", ",
    read_cols!(),
    ", ",
    read_epoch_col!(),
    resolve_from!(),
    " LEFT JOIN secret_versions v ON v.environment_id = e.id AND v.name_digest = $6 \
     AND v.version = $7",
    read_joins!(),
    " WHERE w.name = $1 AND w.deleted_at IS NULL"
);

/// Columns of `resolve_cols!`: the secret read of a fused statement starts here.
const RESOLVE_COLS: usize = 22;
/// The read epoch of a fused statement's snapshot, after the secret read's 36 columns.
const FUSED_EPOCH_COL: usize = RESOLVE_COLS + 36;

const SQL_SECRET_HISTORY: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM secret_versions v WHERE v.environment_id = $1 AND v.name_digest = $2 \
     ORDER BY v.version"
);

const SQL_STATE_NOW: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM secret_heads h JOIN secret_versions v ON v.environment_id = h.environment_id \
     AND v.name_digest = h.name_digest AND v.version = h.version \
     WHERE h.environment_id = $1 AND NOT h.deleted ORDER BY v.name_digest"
);

const SQL_STATE_AT_ENV_VERSION: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM (SELECT name_digest, MAX(version) AS version FROM secret_versions \
       WHERE environment_id = $1 AND env_version <= $2 GROUP BY name_digest) m \
     JOIN secret_versions v ON v.environment_id = $1 AND v.name_digest = m.name_digest \
       AND v.version = m.version \
     WHERE NOT v.deleted ORDER BY v.name_digest"
);

const SQL_STATE_AT_MS: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM (SELECT name_digest, MAX(version) AS version FROM secret_versions \
       WHERE environment_id = $1 AND created_at <= $2 GROUP BY name_digest) m \
     JOIN secret_versions v ON v.environment_id = $1 AND v.name_digest = m.name_digest \
       AND v.version = m.version \
     WHERE NOT v.deleted ORDER BY v.name_digest"
);

const SQL_ENV_VERSION_AT_MS: &str = "SELECT COALESCE(MAX(env_version), 0) FROM secret_versions \
     WHERE environment_id = $1 AND created_at <= $2";

const SQL_AUDIT_HEAD: &str =
    "SELECT seq, hash FROM audit_entries WHERE chain = $1 ORDER BY seq DESC LIMIT 1";

fn workspace_from(r: &impl Cols, at: usize) -> Result<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: parse_id(&r.col::<String>(at)?, "workspace id")?,
        name: r.col(at + 1)?,
        created_at_ms: r.col(at + 2)?,
    })
}

fn project_row(r: &SqliteRow) -> Result<ProjectRecord> {
    Ok(ProjectRecord {
        id: parse_id(&r.try_get::<String, _>(0)?, "project id")?,
        workspace_id: parse_id(&r.try_get::<String, _>(1)?, "workspace id")?,
        name: r.try_get(2)?,
        wrapped_key: WrappedKey::from_bytes(r.try_get(3)?),
        created_at_ms: r.try_get(4)?,
    })
}

fn environment_row(r: &SqliteRow) -> Result<EnvironmentRecord> {
    Ok(EnvironmentRecord {
        id: parse_id(&r.try_get::<String, _>(0)?, "environment id")?,
        project_id: parse_id(&r.try_get::<String, _>(1)?, "project id")?,
        workspace_id: parse_id(&r.try_get::<String, _>(2)?, "workspace id")?,
        name: r.try_get(3)?,
        wrapped_key: WrappedKey::from_bytes(r.try_get(4)?),
        key_epoch: to_u32(r.try_get(5)?, "key epoch")?,
        env_version: to_u64(r.try_get(6)?, "env version")?,
        created_at_ms: r.try_get(7)?,
        keep_versions: keep_versions(r.try_get(8)?)?,
        history_floor: to_u64(r.try_get(9)?, "history floor")?,
    })
}

/// The stored retention limit (NULL: keep every version).
fn keep_versions(v: Option<i64>) -> Result<Option<u64>> {
    v.map(|n| to_u64(n, "retention limit")).transpose()
}

/// Prunes the versions of `env` that a limit of `keep` no longer keeps and raises the history
/// floor to match, inside the caller's transaction. Returns how many versions went.
async fn prune_tx(tx: &mut WriteTx, env: &str, keep: u64) -> Result<u64> {
    let keep = sat_i64(keep);
    let floor: i64 = sqlx::query(SQL_PRUNE_FLOOR)
        .bind(env)
        .bind(keep)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    if floor == 0 {
        return Ok(0);
    }
    let pruned = sqlx::query(SQL_PRUNE)
        .bind(env)
        .bind(keep)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query(SQL_RAISE_FLOOR)
        .bind(env)
        .bind(floor)
        .execute(&mut **tx)
        .await?;
    Ok(pruned)
}

/// Secrets per statement when a batch reads heads and inserts versions (12 parameters a row).
const WRITE_ROWS_PER_STATEMENT: usize = 500;

/// Rows per multi-row audit INSERT (15 parameters each, well under SQLite's limit).
const AUDIT_ROWS_PER_INSERT: usize = 256;

/// The newest (seq, hash) of each chain a batch appends to (None: the chain is empty).
type ChainHeads = HashMap<AuditChain, Option<(u64, [u8; 32])>>;

/// The distinct chains `drafts` append to.
fn chains_of(drafts: &[AuditDraft]) -> Vec<AuditChain> {
    let mut chains: Vec<AuditChain> = Vec::new();
    for d in drafts {
        if !chains.contains(&d.chain) {
            chains.push(d.chain);
        }
    }
    chains
}

fn audit_head(r: &impl Cols) -> Result<(u64, [u8; 32])> {
    Ok((
        to_u64(r.col(0)?, "audit seq")?,
        arr32(&r.col::<Vec<u8>>(1)?, "audit hash")?,
    ))
}

/// Seals `drafts` in order, each after its chain's head (as of `heads`, then the entry before).
fn chain_drafts(drafts: Vec<AuditDraft>, mut heads: ChainHeads) -> Vec<AuditEntryRecord> {
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let head = heads.get(&draft.chain).copied().flatten();
        let entry = seal_audit(draft, head);
        heads.insert(entry.draft.chain, Some((entry.seq, entry.hash)));
        out.push(entry);
    }
    out
}

/// [`append_audit_tx`] on the inline writer's open transaction.
fn append_audit_inline(
    c: &rusqlite::Connection,
    drafts: Vec<AuditDraft>,
) -> Result<Vec<AuditEntryRecord>> {
    let mut heads = ChainHeads::new();
    for chain in chains_of(&drafts) {
        let rows = query_on(c, SQL_AUDIT_HEAD, &[&chain.key()])?;
        heads.insert(chain, rows.first().map(audit_head).transpose()?);
    }
    let out = chain_drafts(drafts, heads);
    for entry in &out {
        let d = &entry.draft;
        execute_on(
            c,
            SQL_AUDIT_INSERT_ONE,
            &[
                &d.chain.key(),
                &sat_i64(entry.seq),
                &d.time_ms,
                &d.actor.map(|a| a.to_string()).unwrap_or_default(),
                &d.action,
                &d.scope,
                &d.target,
                &d.method,
                &d.request_timestamp_ms,
                &d.nonce,
                &d.request_hash,
                &d.signature,
                &d.result,
                &&entry.prev_hash[..],
                &&entry.hash[..],
            ],
        )?;
    }
    Ok(out)
}

const SQL_AUDIT_INSERT_ONE: &str = concat!(
    "INSERT INTO audit_entries (",
    audit_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);

/// Appends drafts inside an open transaction, chaining each after its chain's current head. The
/// chain is computed in memory first (one head look-up per chain), then written with multi-row
/// INSERTs: a group-committed batch of reads costs a handful of statements, not one per entry.
async fn append_audit_tx(
    tx: &mut WriteTx,
    drafts: Vec<AuditDraft>,
) -> Result<Vec<AuditEntryRecord>> {
    let mut heads = ChainHeads::new();
    for chain in chains_of(&drafts) {
        let row = sqlx::query(SQL_AUDIT_HEAD)
            .bind(chain.key())
            .fetch_optional(&mut **tx)
            .await?;
        heads.insert(chain, row.as_ref().map(audit_head).transpose()?);
    }
    let out = chain_drafts(drafts, heads);
    for chunk in out.chunks(AUDIT_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(concat!("INSERT INTO audit_entries (", audit_cols!(), ") "));
        qb.push_values(chunk, |mut row, entry| {
            let d = &entry.draft;
            row.push_bind(d.chain.key())
                .push_bind(sat_i64(entry.seq))
                .push_bind(d.time_ms)
                .push_bind(d.actor.map(|a| a.to_string()).unwrap_or_default())
                .push_bind(d.action.clone())
                .push_bind(d.scope.clone())
                .push_bind(d.target.clone())
                .push_bind(d.method.clone())
                .push_bind(d.request_timestamp_ms)
                .push_bind(d.nonce.clone())
                .push_bind(d.request_hash.clone())
                .push_bind(d.signature.clone())
                .push_bind(d.result.clone())
                .push_bind(entry.prev_hash.to_vec())
                .push_bind(entry.hash.to_vec());
        });
        // Row counts vary per batch: do not let each size evict hot statements from the cache.
        qb.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(out)
}

async fn exists(tx: &mut WriteTx, sql: &'static str, args: &[&str]) -> Result<bool> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.fetch_optional(&mut **tx).await?.is_some())
}

/// Decodes the rows of `SQL_RESOLVE` (or a fused read, whose first columns are the same).
fn resolution_from(rows: &[impl Cols]) -> Result<Resolution> {
    let Some(r) = rows.first() else {
        return Ok(Resolution::default());
    };
    let workspace = workspace_from(r, 0)?;
    let project = match r.col::<Option<String>>(3)? {
        Some(id) => Some(ProjectRecord {
            id: parse_id(&id, "project id")?,
            workspace_id: workspace.id,
            name: r.col(4)?,
            wrapped_key: WrappedKey::from_bytes(r.col(5)?),
            created_at_ms: r.col(6)?,
        }),
        None => None,
    };
    let environment = match (&project, r.col::<Option<String>>(7)?) {
        (Some(p), Some(id)) => Some(EnvironmentRecord {
            id: parse_id(&id, "environment id")?,
            project_id: p.id,
            workspace_id: workspace.id,
            name: r.col(8)?,
            wrapped_key: WrappedKey::from_bytes(r.col(9)?),
            key_epoch: to_u32(r.col(10)?, "key epoch")?,
            env_version: to_u64(r.col(11)?, "env version")?,
            created_at_ms: r.col(12)?,
            keep_versions: keep_versions(r.col(20)?)?,
            history_floor: to_u64(r.col(21)?, "history floor")?,
        }),
        _ => None,
    };
    let mut grants: Vec<GrantRecord> = Vec::new();
    for r in rows {
        let Some(id_text) = r.col::<Option<String>>(13)? else {
            continue;
        };
        let id = GrantId::try_parse(&id_text).ok_or_else(|| corrupt("grant id"))?;
        let key = match r.col::<Option<i64>>(18)? {
            Some(epoch) => Some(GrantKeyRecord {
                key_epoch: to_u32(epoch, "grant key epoch")?,
                wrapped_key: WrappedKey::from_bytes(r.col(19)?),
            }),
            None => None,
        };
        if let Some(g) = grants.iter_mut().find(|g| g.id == id) {
            // The same grant can match twice (principal and user); keep keys unique.
            if let Some(k) = key {
                if !g.keys.contains(&k) {
                    g.keys.push(k);
                }
            }
            continue;
        }
        let scope = grant_scope(
            r.col(14)?,
            workspace.id,
            opt_id(r.col(15)?, "project id")?,
            opt_id(r.col(16)?, "environment id")?,
        )?;
        grants.push(GrantRecord {
            id,
            grant: Grant {
                scope,
                role: stored_role(r.col(17)?)?,
            },
            keys: key.into_iter().collect(),
        });
    }
    Ok(Resolution {
        workspace: Some(workspace),
        project,
        environment,
        grants,
    })
}

/// Decodes the rows of a fused resolution and secret read.
fn fused_read(rows: &[impl Cols]) -> Result<(Resolution, Option<SecretRead>)> {
    let resolution = resolution_from(rows)?;
    let read = match rows.first() {
        Some(r) if resolution.environment.is_some() => secret_read_at(r, RESOLVE_COLS)?,
        _ => None,
    };
    Ok((resolution, read))
}

/// Decodes a secret read (`read_cols!`) starting at column `at`: `None`
/// when the outer join found no version.
fn secret_read_at(r: &impl Cols, at: usize) -> Result<Option<SecretRead>> {
    if r.col::<Option<String>>(at)?.is_none() {
        return Ok(None);
    }
    let previous = match r.col::<Option<String>>(at + 12)? {
        Some(_) => Some(version_at(r, at + 12)?),
        None => None,
    };
    let writer = match r.col::<Option<String>>(at + 24)? {
        Some(_) => Some(principal_at(r, at + 24)?),
        None => None,
    };
    Ok(Some(SecretRead {
        secret: version_at(r, at)?,
        previous,
        writer,
    }))
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_server_invite(
        &self,
        invite: ServerInviteRecord,
        audit: AuditDraft,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO server_invites (id, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(invite.id.to_string())
        .bind(&invite.secret_hash[..])
        .bind(invite.created_at_ms)
        .bind(invite.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn server_invite(&self, id: InviteId) -> Result<Option<ServerInviteRecord>> {
        let row = sqlx::query(
            "SELECT id, secret_hash, created_at, expires_at, used_at FROM server_invites \
             WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(ServerInviteRecord {
                id: parse_id(&r.try_get::<String, _>(0)?, "invite id")?,
                secret_hash: arr32(&r.try_get::<Vec<u8>, _>(1)?, "invite secret hash")?,
                created_at_ms: r.try_get(2)?,
                expires_at_ms: r.try_get(3)?,
                used_at_ms: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn join(&self, join: NewJoin, audit: AuditDraft) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT secret_hash, expires_at, used_at FROM server_invites WHERE id = $1",
        )
        .bind(join.invite_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StorageError::NotFound("invite"));
        };
        let stored = arr32(&row.try_get::<Vec<u8>, _>(0)?, "invite secret hash")?;
        if !zopp_crypto::ct_eq(&stored, &join.secret_hash) {
            return Err(StorageError::NotFound("invite"));
        }
        if row.try_get::<Option<i64>, _>(2)?.is_some() {
            return Err(StorageError::InviteUsed);
        }
        if row.try_get::<i64, _>(1)? <= join.now_ms {
            return Err(StorageError::InviteExpired);
        }
        if exists(
            &mut tx,
            "SELECT 1 FROM users WHERE lower(email) = lower($1)",
            &[&join.email],
        )
        .await?
        {
            return Err(StorageError::AlreadyExists(Conflict::Email));
        }
        let p = &join.principal;
        let signing = p.signing_key.to_bytes();
        let found = sqlx::query("SELECT 1 FROM principals WHERE signing_key = $1")
            .bind(&signing[..])
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_some() {
            return Err(StorageError::AlreadyExists(Conflict::PrincipalKey));
        }
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
            .bind(join.user_id.to_string())
            .bind(&join.email)
            .bind(join.now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO principals (id, user_id, name, signing_key, agreement_key, admitted_by, \
             admission_signature, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(p.id.to_string())
        .bind(join.user_id.to_string())
        .bind(&p.name)
        .bind(&signing[..])
        .bind(&p.agreement_key.to_bytes()[..])
        .bind(p.admitted_by.map(|a| a.to_string()))
        .bind(&p.admission_signature)
        .bind(join.now_ms)
        .bind(p.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        let used = sqlx::query(
            "UPDATE server_invites SET used_at = $2, used_by = $3 WHERE id = $1 AND used_at IS NULL",
        )
        .bind(join.invite_id.to_string())
        .bind(join.now_ms)
        .bind(p.id.to_string())
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(StorageError::InviteUsed);
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn principal(&self, id: PrincipalId) -> Result<Option<PrincipalRecord>> {
        if let Some(inline) = &self.inline {
            let cache = &inline.cache;
            let epoch = read_epoch(&inline.readers)?;
            if let Some(p) = cache.principal(epoch, &id) {
                return Ok(Some(p));
            }
            let rows = inline.readers.query(SQL_PRINCIPAL, &[&id.to_string()])?;
            let Some(row) = rows.first() else {
                // Unknown ids are the caller's choice: not remembered, so they cannot churn it.
                return Ok(None);
            };
            let p = principal_row(row)?;
            cache.put_principal(row.col(PRINCIPAL_COLS)?, p.clone());
            return Ok(Some(p));
        }
        let row = sqlx::query(SQL_PRINCIPAL)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(principal_row).transpose()
    }

    async fn principals(&self, ids: &[PrincipalId]) -> Result<Vec<PrincipalRecord>> {
        let mut unique: Vec<PrincipalId> = ids.to_vec();
        unique.sort();
        unique.dedup();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("{PRINCIPAL_SELECT} WHERE p.id IN ("));
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id.to_string());
            }
            qb.push(")");
            for r in qb.build().persistent(false).fetch_all(&self.reader).await? {
                out.push(principal_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn resolve(&self, who: &Who, path: &NamePath<'_>) -> Result<Resolution> {
        if let Some(inline) = &self.inline {
            let rows = inline.readers.query(
                SQL_RESOLVE,
                &[
                    &path.workspace,
                    &path.project,
                    &path.project.and(path.environment),
                    &who.principal.to_string(),
                    &who.user.map(|u| u.to_string()),
                ],
            )?;
            return resolution_from(&rows);
        }
        let rows = sqlx::query(SQL_RESOLVE)
            .bind(path.workspace)
            .bind(path.project)
            .bind(path.project.and(path.environment))
            .bind(who.principal.to_string())
            .bind(who.user.map(|u| u.to_string()))
            .fetch_all(&self.reader)
            .await?;
        resolution_from(&rows)
    }

    async fn resolve_read(
        &self,
        who: &Who,
        path: &NamePath<'_>,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<(Resolution, Option<SecretRead>)> {
        if let Some(inline) = &self.inline {
            let cache = &inline.cache;
            let key = ReadKey {
                principal: who.principal,
                user: who.user,
                workspace: path.workspace.to_string(),
                project: path.project.map(str::to_string),
                environment: path.environment.map(str::to_string),
                digest: *digest.as_bytes(),
                version,
            };
            if let Some(hit) = cache.read(read_epoch(&inline.readers)?, &key) {
                return Ok(hit);
            }
            let principal = who.principal.to_string();
            let user = who.user.map(|u| u.to_string());
            let env = path.project.and(path.environment);
            let digest = &digest.as_bytes()[..];
            let mut params: Vec<&dyn rusqlite::ToSql> = vec![
                &path.workspace,
                &path.project,
                &env,
                &principal,
                &user,
                &digest,
            ];
            let v = version.map(sat_i64);
            let sql = match &v {
                None => SQL_RESOLVE_READ_HEAD,
                Some(v) => {
                    params.push(v);
                    SQL_RESOLVE_READ_VERSION
                }
            };
            let rows = inline.readers.query(sql, &params)?;
            let read = fused_read(&rows)?;
            // No row: no such workspace, a name the caller chose; not remembered.
            if let Some(row) = rows.first() {
                cache.put_read(row.col(FUSED_EPOCH_COL)?, key, read.clone());
            }
            return Ok(read);
        }
        let q = match version {
            None => sqlx::query(SQL_RESOLVE_READ_HEAD),
            Some(_) => sqlx::query(SQL_RESOLVE_READ_VERSION),
        }
        .bind(path.workspace)
        .bind(path.project)
        .bind(path.project.and(path.environment))
        .bind(who.principal.to_string())
        .bind(who.user.map(|u| u.to_string()))
        .bind(&digest.as_bytes()[..]);
        let q = match version {
            None => q,
            Some(v) => q.bind(sat_i64(v)),
        };
        let rows = q.fetch_all(&self.reader).await?;
        fused_read(&rows)
    }

    async fn workspaces_for(&self, who: &Who) -> Result<Vec<WorkspaceRecord>> {
        let rows = sqlx::query(SQL_WORKSPACES_FOR)
            .bind(who.principal.to_string())
            .bind(who.user.map(|u| u.to_string()))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| workspace_from(r, 0)).collect()
    }

    async fn projects(&self, workspace: WorkspaceId) -> Result<Vec<ProjectRecord>> {
        let rows = sqlx::query(SQL_PROJECTS)
            .bind(workspace.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(project_row).collect()
    }

    async fn environments(&self, project: ProjectId) -> Result<Vec<EnvironmentRecord>> {
        let rows = sqlx::query(SQL_ENVIRONMENTS)
            .bind(project.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(environment_row).collect()
    }

    async fn create_workspace(
        &self,
        ws: NewWorkspace,
        audit: AuditDraft,
    ) -> Result<WorkspaceRecord> {
        let mut tx = self.begin_write().await?;
        let id = ws.id.to_string();
        if exists(&mut tx, "SELECT 1 FROM workspaces WHERE id = $1", &[&id]).await? {
            return Err(StorageError::AlreadyExists(Conflict::WorkspaceId));
        }
        if exists(
            &mut tx,
            "SELECT 1 FROM workspaces WHERE name = $1 AND deleted_at IS NULL",
            &[&ws.name],
        )
        .await?
        {
            return Err(StorageError::AlreadyExists(Conflict::WorkspaceName));
        }
        sqlx::query(
            "INSERT INTO workspaces (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(&ws.name)
        .bind(ws.created_by.to_string())
        .bind(ws.now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO grants (id, scope_kind, workspace_id, role, user_id, granted_by, \
             created_at) VALUES ($1, 1, $2, $3, $4, $5, $6)",
        )
        .bind(ws.grant_id.to_string())
        .bind(&id)
        .bind(Role::Admin.as_i32())
        .bind(ws.creator_user.to_string())
        .bind(ws.created_by.to_string())
        .bind(ws.now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO grant_keys (grant_id, principal_id, key_epoch, wrapped_key, created_at) \
             VALUES ($1, $2, 1, $3, $4)",
        )
        .bind(ws.grant_id.to_string())
        .bind(ws.created_by.to_string())
        .bind(ws.wrapped_key.as_bytes())
        .bind(ws.now_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(WorkspaceRecord {
            id: ws.id,
            name: ws.name,
            created_at_ms: ws.now_ms,
        })
    }

    async fn delete_workspace(
        &self,
        id: WorkspaceId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let id = id.to_string();
        let done = sqlx::query(
            "UPDATE workspaces SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("workspace"));
        }
        sqlx::query(
            "UPDATE projects SET deleted_at = $2 WHERE workspace_id = $1 AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE environments SET deleted_at = $2 WHERE workspace_id = $1 \
             AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_project(&self, p: NewProject, audit: AuditDraft) -> Result<ProjectRecord> {
        let mut tx = self.begin_write().await?;
        let ws = p.workspace_id.to_string();
        let id = p.id.to_string();
        if !exists(
            &mut tx,
            "SELECT 1 FROM workspaces WHERE id = $1 AND deleted_at IS NULL",
            &[&ws],
        )
        .await?
        {
            return Err(StorageError::NotFound("workspace"));
        }
        if exists(&mut tx, "SELECT 1 FROM projects WHERE id = $1", &[&id]).await? {
            return Err(StorageError::AlreadyExists(Conflict::ProjectId));
        }
        if exists(
            &mut tx,
            "SELECT 1 FROM projects WHERE workspace_id = $1 AND name = $2 AND deleted_at IS NULL",
            &[&ws, &p.name],
        )
        .await?
        {
            return Err(StorageError::AlreadyExists(Conflict::ProjectName));
        }
        sqlx::query(
            "INSERT INTO projects (id, workspace_id, name, wrapped_key, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&ws)
        .bind(&p.name)
        .bind(p.wrapped_key.as_bytes())
        .bind(p.created_by.to_string())
        .bind(p.now_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(ProjectRecord {
            id: p.id,
            workspace_id: p.workspace_id,
            name: p.name,
            wrapped_key: p.wrapped_key,
            created_at_ms: p.now_ms,
        })
    }

    async fn delete_project(&self, id: ProjectId, now_ms: i64, audit: AuditDraft) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let id = id.to_string();
        let done =
            sqlx::query("UPDATE projects SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(&id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("project"));
        }
        sqlx::query(
            "UPDATE environments SET deleted_at = $2 WHERE project_id = $1 AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_environment(
        &self,
        e: NewEnvironment,
        audit: AuditDraft,
    ) -> Result<EnvironmentRecord> {
        let mut tx = self.begin_write().await?;
        let project = e.project_id.to_string();
        let ws = e.workspace_id.to_string();
        let id = e.id.to_string();
        if !exists(
            &mut tx,
            "SELECT 1 FROM projects WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
            &[&project, &ws],
        )
        .await?
        {
            return Err(StorageError::NotFound("project"));
        }
        if exists(&mut tx, "SELECT 1 FROM environments WHERE id = $1", &[&id]).await? {
            return Err(StorageError::AlreadyExists(Conflict::EnvironmentId));
        }
        if exists(
            &mut tx,
            "SELECT 1 FROM environments WHERE project_id = $1 AND name = $2 \
             AND deleted_at IS NULL",
            &[&project, &e.name],
        )
        .await?
        {
            return Err(StorageError::AlreadyExists(Conflict::EnvironmentName));
        }
        sqlx::query(
            "INSERT INTO environments (id, project_id, workspace_id, name, wrapped_key, \
             key_epoch, env_version, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, 1, 0, $6, $7)",
        )
        .bind(&id)
        .bind(&project)
        .bind(&ws)
        .bind(&e.name)
        .bind(e.wrapped_key.as_bytes())
        .bind(e.created_by.to_string())
        .bind(e.now_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(EnvironmentRecord {
            id: e.id,
            project_id: e.project_id,
            workspace_id: e.workspace_id,
            name: e.name,
            wrapped_key: e.wrapped_key,
            key_epoch: 1,
            env_version: 0,
            created_at_ms: e.now_ms,
            keep_versions: None,
            history_floor: 0,
        })
    }

    async fn delete_environment(
        &self,
        id: EnvironmentId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE environments SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("environment"));
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_retention(
        &self,
        env: EnvironmentId,
        keep_versions: Option<u64>,
        audit: AuditDraft,
    ) -> Result<RetentionOutcome> {
        let mut tx = self.begin_write().await?;
        let id = env.to_string();
        let done = sqlx::query(
            "UPDATE environments SET keep_versions = $2 WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(keep_versions.map(sat_i64))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("environment"));
        }
        let pruned = match keep_versions {
            Some(keep) => prune_tx(&mut tx, &id, keep).await?,
            None => 0,
        };
        let floor: i64 = sqlx::query("SELECT history_floor FROM environments WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(RetentionOutcome {
            pruned,
            history_floor: to_u64(floor, "history floor")?,
        })
    }

    async fn epoch_links(&self, env: EnvironmentId) -> Result<Vec<EpochLinkRecord>> {
        let rows = sqlx::query(SQL_EPOCH_LINKS)
            .bind(env.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EpochLinkRecord {
                    epoch: to_u32(r.try_get(0)?, "epoch")?,
                    wrapped_key: WrappedKey::from_bytes(r.try_get(1)?),
                })
            })
            .collect()
    }

    async fn environment_version(&self, env: EnvironmentId) -> Result<Option<u64>> {
        let row = sqlx::query(SQL_ENV_VERSION)
            .bind(env.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| to_u64(r.try_get(0)?, "env version"))
            .transpose()
    }

    async fn secret_version(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<Option<SecretVersionRecord>> {
        let row = match version {
            None => {
                sqlx::query(SQL_SECRET_HEAD)
                    .bind(env.to_string())
                    .bind(&digest.as_bytes()[..])
                    .fetch_optional(&self.reader)
                    .await?
            }
            Some(v) => {
                sqlx::query(SQL_SECRET_VERSION)
                    .bind(env.to_string())
                    .bind(&digest.as_bytes()[..])
                    .bind(sat_i64(v))
                    .fetch_optional(&self.reader)
                    .await?
            }
        };
        row.as_ref().map(version_row).transpose()
    }

    async fn secret_read(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<Option<SecretRead>> {
        let q = match version {
            None => sqlx::query(SQL_READ_HEAD)
                .bind(env.to_string())
                .bind(&digest.as_bytes()[..]),
            Some(v) => sqlx::query(SQL_READ_VERSION)
                .bind(env.to_string())
                .bind(&digest.as_bytes()[..])
                .bind(sat_i64(v)),
        };
        let Some(r) = q.fetch_optional(&self.reader).await? else {
            return Ok(None);
        };
        let previous = match r.try_get::<Option<String>, _>(12)? {
            Some(_) => Some(version_at(&r, 12)?),
            None => None,
        };
        let writer = match r.try_get::<Option<String>, _>(24)? {
            Some(_) => Some(principal_at(&r, 24)?),
            None => None,
        };
        Ok(Some(SecretRead {
            secret: version_at(&r, 0)?,
            previous,
            writer,
        }))
    }

    async fn secret_history(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
    ) -> Result<Vec<SecretVersionRecord>> {
        let rows = sqlx::query(SQL_SECRET_HISTORY)
            .bind(env.to_string())
            .bind(&digest.as_bytes()[..])
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(version_row).collect()
    }

    async fn environment_state(
        &self,
        env: EnvironmentId,
        at: PointInTime,
    ) -> Result<EnvironmentState> {
        if let (Some(inline), PointInTime::Now) = (&self.inline, at) {
            // The common fetch (`zopp run`, export) can return thousands of rows: read them on
            // a blocking thread rather than a runtime worker.
            let readers = inline.readers.clone();
            return tokio::task::spawn_blocking(move || {
                readers.snapshot(|c| {
                    let id = env.to_string();
                    let head = query_on(c, SQL_ENV_VERSION_AND_FLOOR, &[&id])?;
                    let Some(r) = head.first() else {
                        return Err(StorageError::NotFound("environment"));
                    };
                    let env_version = to_u64(r.col(0)?, "env version")?;
                    let rows = query_on(c, SQL_STATE_NOW, &[&id])?;
                    Ok(EnvironmentState {
                        versions: rows.iter().map(version_row).collect::<Result<_>>()?,
                        env_version,
                    })
                })
            })
            .await
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
        }
        // One read transaction, so the versions and the env_version come from the same snapshot.
        let mut conn = self.reader.begin().await?;
        let id = env.to_string();
        let (current, floor) = match sqlx::query(SQL_ENV_VERSION_AND_FLOOR)
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?
        {
            Some(r) => (
                to_u64(r.try_get(0)?, "env version")?,
                to_u64(r.try_get(1)?, "history floor")?,
            ),
            None => return Err(StorageError::NotFound("environment")),
        };
        let (rows, env_version) = match at {
            PointInTime::Now => (
                sqlx::query(SQL_STATE_NOW)
                    .bind(&id)
                    .fetch_all(&mut *conn)
                    .await?,
                current,
            ),
            PointInTime::AtEnvVersion(n) => (
                sqlx::query(SQL_STATE_AT_ENV_VERSION)
                    .bind(&id)
                    .bind(sat_i64(n))
                    .fetch_all(&mut *conn)
                    .await?,
                n.min(current),
            ),
            PointInTime::AtMs(t) => {
                let v: i64 = sqlx::query(SQL_ENV_VERSION_AT_MS)
                    .bind(&id)
                    .bind(t)
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
                (
                    sqlx::query(SQL_STATE_AT_MS)
                        .bind(&id)
                        .bind(t)
                        .fetch_all(&mut *conn)
                        .await?,
                    to_u64(v, "env version")?,
                )
            }
        };
        conn.commit().await?;
        // Older than the floor, pruned versions are missing from the answer: refuse it rather
        // than return a state that never existed. (By time, `env_version` is the newest
        // surviving version at or before `t`; it is below the floor exactly when the true
        // state at `t` is.)
        if at != PointInTime::Now && env_version < floor {
            return Err(StorageError::Pruned { floor });
        }
        Ok(EnvironmentState {
            versions: rows.iter().map(version_row).collect::<Result<_>>()?,
            env_version,
        })
    }

    async fn write_secrets(
        &self,
        batch: SecretWriteBatch,
        audit: Vec<AuditDraft>,
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin_write().await?;
        let env = batch.environment_id.to_string();
        let row = sqlx::query(SQL_ENV_FOR_WRITE)
            .bind(&env)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StorageError::NotFound("environment"));
        };
        let key_epoch = to_u32(row.try_get(0)?, "key epoch")?;
        let current = to_u64(row.try_get(1)?, "env version")?;
        let keep = keep_versions(row.try_get(2)?)?;
        if let Some(expected) = batch.if_env_version {
            if expected != current {
                return Err(StorageError::EnvironmentChanged { current });
            }
        }
        if batch.writes.iter().any(|w| w.key_epoch != key_epoch) {
            return Err(StorageError::KeyEpochMismatch { current: key_epoch });
        }
        // Heads of every written secret, a chunk of digests per statement: an import of
        // thousands of secrets must not cost thousands of round trips.
        let mut heads: HashMap<[u8; 32], SecretHead> = HashMap::with_capacity(batch.writes.len());
        for chunk in batch.writes.chunks(WRITE_ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT name_digest, version, hash FROM secret_heads WHERE environment_id = ",
            );
            qb.push_bind(env.as_str()).push(" AND name_digest IN (");
            let mut sep = qb.separated(", ");
            for w in chunk {
                sep.push_bind(&w.name_digest.as_bytes()[..]);
            }
            qb.push(")");
            for r in qb
                .build()
                .persistent(chunk.len() == 1)
                .fetch_all(&mut *tx)
                .await?
            {
                heads.insert(
                    arr32(&r.try_get::<Vec<u8>, _>(0)?, "head digest")?,
                    SecretHead {
                        version: to_u64(r.try_get(1)?, "head version")?,
                        hash: arr32(&r.try_get::<Vec<u8>, _>(2)?, "head hash")?,
                    },
                );
            }
        }
        for w in &batch.writes {
            check_next_version(heads.get(w.name_digest.as_bytes()).copied(), w)?;
        }
        let env_version = current + 1;
        let writer = batch.writer.to_string();
        for chunk in batch.writes.chunks(WRITE_ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO secret_versions (environment_id, name_digest, version, env_version, \
                 key_epoch, envelope, deleted, writer_id, signature, prev_hash, hash, created_at) ",
            );
            qb.push_values(chunk, |mut row, w| {
                row.push_bind(env.as_str())
                    .push_bind(&w.name_digest.as_bytes()[..])
                    .push_bind(sat_i64(w.version))
                    .push_bind(sat_i64(env_version))
                    .push_bind(i64::from(w.key_epoch))
                    .push_bind(w.envelope.as_bytes())
                    .push_bind(w.deleted)
                    .push_bind(writer.as_str())
                    .push_bind(&w.signature[..])
                    .push_bind(&w.prev_hash[..])
                    .push_bind(&w.hash[..])
                    .push_bind(batch.now_ms);
            });
            qb.build()
                .persistent(chunk.len() == 1)
                .execute(&mut *tx)
                .await?;
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO secret_heads (environment_id, name_digest, version, deleted, hash) ",
            );
            qb.push_values(chunk, |mut row, w| {
                row.push_bind(env.as_str())
                    .push_bind(&w.name_digest.as_bytes()[..])
                    .push_bind(sat_i64(w.version))
                    .push_bind(w.deleted)
                    .push_bind(&w.hash[..]);
            });
            qb.push(
                " ON CONFLICT (environment_id, name_digest) DO UPDATE SET \
                 version = excluded.version, deleted = excluded.deleted, hash = excluded.hash",
            );
            qb.build()
                .persistent(chunk.len() == 1)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE environments SET env_version = $2 WHERE id = $1")
            .bind(&env)
            .bind(sat_i64(env_version))
            .execute(&mut *tx)
            .await?;
        if let Some(keep) = keep {
            prune_tx(&mut tx, &env, keep).await?;
        }
        append_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(WriteOutcome {
            env_version,
            created_at_ms: batch.now_ms,
        })
    }

    async fn append_audit(&self, entries: Vec<AuditDraft>) -> Result<Vec<AuditEntryRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(inline) = &self.inline {
            if self.writer.is_closed() {
                return Err(StorageError::Unavailable("database closed".into()));
            }
            let gate = self.write_gate.clone().lock_owned().await;
            let w = inline.writer.clone();
            let out = tokio::task::spawn_blocking(move || {
                w.transaction(|c| append_audit_inline(c, entries))
            })
            .await
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
            drop(gate);
            return out;
        }
        let mut tx = self.begin_write().await?;
        let out = append_audit_tx(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn list_audit(&self, chain: AuditChain, query: &AuditQuery) -> Result<AuditPage> {
        let mut conn = self.reader.begin().await?;
        let key = chain.key();
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
            "SELECT ",
            audit_cols!(),
            " FROM audit_entries WHERE chain = "
        ));
        qb.push_bind(key.clone());
        qb.push(" AND seq > ").push_bind(sat_i64(query.after_seq));
        if let Some(a) = &query.action {
            qb.push(" AND action = ").push_bind(a.clone());
        }
        if let Some(p) = &query.actor {
            qb.push(" AND actor = ").push_bind(p.to_string());
        }
        if let Some(t) = query.since_ms {
            qb.push(" AND time_ms >= ").push_bind(t);
        }
        if let Some(t) = query.until_ms {
            qb.push(" AND time_ms <= ").push_bind(t);
        }
        qb.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = qb.build().fetch_all(&mut *conn).await?;
        let head = sqlx::query(SQL_AUDIT_HEAD)
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await?;
        conn.commit().await?;
        let (head_seq, head_hash) = match head {
            Some(r) => (
                to_u64(r.try_get(0)?, "audit seq")?,
                arr32(&r.try_get::<Vec<u8>, _>(1)?, "audit hash")?,
            ),
            None => (0, ZERO_HASH),
        };
        Ok(AuditPage {
            entries: rows.iter().map(audit_row).collect::<Result<_>>()?,
            head_seq,
            head_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStorage) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = SqliteStorage::open(&url).await.expect("open sqlite");
        (dir, s)
    }

    #[tokio::test]
    async fn conformance_suite() {
        let (_dir, s) = store().await;
        super::super::suite::run_all(&s).await;
    }

    #[tokio::test]
    async fn audit_and_versions_refuse_update_and_delete() {
        let (_dir, s) = store().await;
        let ctx = super::super::suite::Fixture::new(&s).await;
        ctx.write_one(&s, 1).await;
        for sql in [
            "UPDATE audit_entries SET result = 'forged'",
            "DELETE FROM audit_entries",
            "UPDATE secret_versions SET envelope = x'00'",
            "DELETE FROM secret_versions",
        ] {
            let err = sqlx::query(sql)
                .execute(s.write_pool())
                .await
                .expect_err(sql);
            let msg = err.to_string();
            assert!(
                msg.contains("append-only") || msg.contains("immutable"),
                "{sql}: {msg}"
            );
        }
    }

    /// The cached principal look-up and fused read follow a change made behind the server's
    /// back (another connection, raw SQL): the triggers raise the read epoch with it.
    #[tokio::test]
    async fn cached_reads_follow_changes_made_by_other_connections() {
        let (_dir, s) = store().await;
        let f = super::super::suite::Fixture::new(&s).await;
        f.write_one(&s, 1).await;
        let path = NamePath {
            workspace: "fixture-ws",
            project: Some("api"),
            environment: Some("prod"),
        };
        let d = NameDigest::try_from_slice(&[1; 32]).expect("32 bytes");
        let read = || async { s.resolve_read(&f.who, &path, &d, None).await.expect("read") };
        // Twice: the second answer comes from the cache.
        let (res, first) = read().await;
        assert_eq!(res.grants.len(), 1);
        assert!(first.is_some());
        assert!(read().await.1.is_some());
        let who = s.principal(f.who.principal).await.expect("look-up");
        assert!(who.expect("principal").revoked_at_ms.is_none());
        assert!(s.principal(f.who.principal).await.expect("again").is_some());

        let other =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", _dir.path().join("t.db").display()))
                .await
                .expect("second connection");
        for sql in [
            "UPDATE grants SET revoked_at = 5",
            "UPDATE principals SET revoked_at = 5",
        ] {
            sqlx::query(sql).execute(&other).await.expect(sql);
        }
        let (res, _) = read().await;
        assert!(
            res.grants.is_empty(),
            "a revoked grant is not served from the cache"
        );
        let who = s.principal(f.who.principal).await.expect("look-up");
        assert_eq!(who.expect("principal").revoked_at_ms, Some(5));
    }

    /// Each table a cached read comes from raises the read epoch on insert, update and delete
    /// (migrations/sqlite/0004_read_epoch.sql); a table added to those reads needs the same.
    #[tokio::test]
    async fn every_table_of_a_cached_read_raises_the_epoch() {
        let (_dir, s) = store().await;
        let mut read_tables: Vec<&str> = Vec::new();
        for sql in [
            SQL_PRINCIPAL,
            SQL_RESOLVE_READ_HEAD,
            SQL_RESOLVE_READ_VERSION,
        ] {
            for word in sql.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                let known: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = $1",
                )
                .bind(word)
                .fetch_one(s.write_pool())
                .await
                .expect("schema");
                if known == 1 && word != "read_epoch" && !read_tables.contains(&word) {
                    read_tables.push(word);
                }
            }
        }
        assert!(read_tables.len() >= 9, "{read_tables:?}");
        for table in read_tables {
            for op in ["INSERT", "UPDATE", "DELETE"] {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = $1 \
                     AND sql LIKE '%AFTER ' || $2 || ' ON%' AND sql LIKE '%read_epoch%'",
                )
                .bind(table)
                .bind(op)
                .fetch_one(s.write_pool())
                .await
                .expect("schema");
                assert_eq!(n, 1, "{op} on {table} does not raise the read epoch");
            }
        }
    }

    /// Every hot query must be served by an index on its leading columns: a full `SCAN` of a
    /// table whose size grows with other environments' or workspaces' data would make a read's
    /// cost depend on them (DESIGN.md §10).
    #[tokio::test]
    async fn hot_queries_use_indexes() {
        let (_dir, s) = store().await;
        let queries: &[(&str, usize)] = &[
            (SQL_RESOLVE, 5),
            (SQL_READ_HEAD, 2),
            (SQL_RESOLVE_READ_HEAD, 6),
            (SQL_RESOLVE_READ_VERSION, 7),
            (SQL_READ_VERSION, 3),
            (SQL_WORKSPACES_FOR, 2),
            (SQL_PROJECTS, 1),
            (SQL_ENVIRONMENTS, 1),
            (SQL_EPOCH_LINKS, 1),
            (SQL_ENV_VERSION, 1),
            (SQL_ENV_FOR_WRITE, 1),
            (
                "SELECT name_digest, version, hash FROM secret_heads \
                 WHERE environment_id = $1 AND name_digest IN ($2, $3)",
                3,
            ),
            (SQL_SECRET_HEAD, 2),
            (SQL_SECRET_VERSION, 3),
            (SQL_SECRET_HISTORY, 2),
            (SQL_STATE_NOW, 1),
            (SQL_STATE_AT_ENV_VERSION, 2),
            (SQL_STATE_AT_MS, 2),
            (SQL_ENV_VERSION_AT_MS, 2),
            (SQL_AUDIT_HEAD, 1),
            (SQL_PRINCIPAL, 1),
            (SQL_READ_EPOCH, 0),
        ];
        for (sql, params) in queries {
            let text = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&text);
            for _ in 0..*params {
                q = q.bind("x");
            }
            let plan = q.fetch_all(s.write_pool()).await.expect("explain");
            // Scanning a materialized subquery or co-routine is fine: its rows were produced
            // through an index already.
            let derived: Vec<String> = plan
                .iter()
                .filter_map(|(_, _, _, d)| {
                    d.strip_prefix("MATERIALIZE ")
                        .or_else(|| d.strip_prefix("CO-ROUTINE "))
                        .map(|n| format!("SCAN {n}"))
                })
                .collect();
            for (_, _, _, detail) in &plan {
                let full_scan = detail.starts_with("SCAN ")
                    && !detail.contains("USING INDEX")
                    && !detail.contains("USING COVERING INDEX")
                    && !detail.contains("SUBQUERY")
                    && !derived.iter().any(|d| detail.starts_with(d.as_str()));
                assert!(!full_scan, "full table scan in {sql}:\n{plan:?}");
            }
        }
    }
}
