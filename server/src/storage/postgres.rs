//! PostgreSQL backend (`postgres://URL`): the scale-out option, where any number of stateless
//! `zopp-server` replicas share one database (DESIGN.md §9).
//!
//! Same [`Storage`] contract as the SQLite backend and the same conformance suite
//! ([`super::suite`]); the schema in `migrations/postgres` mirrors `migrations/sqlite` one to one.
//! What differs is concurrency: SQLite funnels every writer through one connection, while here
//! many connections, in many processes, write at once under READ COMMITTED. So the places where
//! order matters take explicit locks inside their transaction:
//!
//! - a secret write locks its environment row (`SELECT … FOR UPDATE`) before reading the heads,
//!   so two writers of one environment queue, versions and `env_version` never fork and a
//!   check-and-set is never lost;
//! - an audit append takes a transaction-scoped advisory lock per chain (in chain-key order, so
//!   two multi-chain appends cannot deadlock) before reading the chain head, so the hash chain
//!   never forks; `(chain, seq)` being the primary key backs this up;
//! - creating a child (project, environment) share-locks its parent row so a concurrent delete of
//!   the parent either waits or is seen.
//!
//! Connection failures (the server down, a restart, a dropped socket) surface as
//! [`StorageError::Unavailable`]; the pool tests each connection before handing it out and opens
//! new ones as soon as the database answers again, so a server recovers by itself.
//!
//! The cross-replica parts of the server, the shared replay cache and the LISTEN/NOTIFY change
//! feed, live in [`replica`].

pub mod replica;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Postgres, QueryBuilder, Row, Transaction};
use zopp_crypto::envelope::{Envelope, NameDigest};
use zopp_crypto::ids::{EnvironmentId, InviteId, PrincipalId, ProjectId, WorkspaceId};
use zopp_crypto::keys::{AgreementPublic, VerifyingKey, SIGNATURE_LEN};
use zopp_crypto::sign::ZERO_HASH;
use zopp_crypto::wrap::WrappedKey;

use super::*;
use crate::rbac::{Grant, Role};

mod leases;
mod teams;

/// Default size of the connection pool of one replica (see docs/deploy.md for sizing).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// URL query parameter, consumed by zopp and not passed to PostgreSQL, that sets the pool size.
pub const MAX_CONNECTIONS_PARAM: &str = "max_connections";
/// How long a call waits for a connection before it reports the storage unavailable: short, so
/// that during an outage clients get a prompt UNAVAILABLE instead of a hanging call.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Channel on which committed secret writes announce `environment_id:env_version`.
pub const CHANGE_CHANNEL: &str = "zopp_env_changes";
/// Domain-separation label of the advisory-lock key derived from an audit chain's key.
const AUDIT_LOCK_LABEL: &[u8] = b"zopp/v1/pg-audit-chain-lock/";

/// The PostgreSQL implementation of [`Storage`]. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgStorage {
    pool: PgPool,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage").finish_non_exhaustive()
    }
}

/// Splits zopp's own [`MAX_CONNECTIONS_PARAM`] off a database URL.
///
/// # Errors
/// [`StorageError::UnsupportedUrl`] when the value is not a positive number.
pub fn split_pool_size(url: &str) -> Result<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), DEFAULT_MAX_CONNECTIONS));
    };
    let mut size = DEFAULT_MAX_CONNECTIONS;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((MAX_CONNECTIONS_PARAM, v)) => {
                size = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| StorageError::UnsupportedUrl(redact_url(url)))?;
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, size))
}

impl PgStorage {
    /// Connects to `url` (`postgres://…`, libpq-style parameters such as `sslmode=verify-full`
    /// and `sslrootcert=FILE` included, plus `max_connections=N` for the pool size) and runs the
    /// migrations.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when the database cannot be reached or migrated.
    pub async fn open(url: &str) -> Result<Self> {
        let (url, max) = split_pool_size(url)?;
        let opts = PgConnectOptions::from_str(&url)
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?
            .application_name("zopp-server")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A pooled connection may have died with a database restart: check before use, so
            // the first call after an outage gets a fresh connection instead of an error.
            .test_before_acquire(true)
            .idle_timeout(Some(Duration::from_secs(600)))
            .connect_with(opts)
            .await?;
        let s = Self { pool };
        s.migrate().await?;
        Ok(s)
    }

    /// Applies the embedded `migrations/postgres` (idempotent; concurrent replicas starting at
    /// once are serialised by sqlx's migration lock).
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when a migration fails.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StorageError::Unavailable(Box::new(e)))
    }

    /// The connection pool, for the replica services, maintenance and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for in-flight work.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// A read-only transaction whose statements all see one snapshot.
    async fn begin_snapshot(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

// ---------- errors ----------

/// Maps a database error, naming the collided rule for unique violations: pre-checks catch the
/// usual case, but under concurrency two transactions can both pass them, and the loser must
/// get the same error the pre-check would have given.
fn db_err(e: sqlx::Error) -> StorageError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            let conflict = match d.constraint() {
                Some("workspaces_pkey") => Conflict::WorkspaceId,
                Some("workspaces_live_name") => Conflict::WorkspaceName,
                Some("projects_pkey") => Conflict::ProjectId,
                Some("projects_live_name") => Conflict::ProjectName,
                Some("environments_pkey") => Conflict::EnvironmentId,
                Some("environments_live_name") => Conflict::EnvironmentName,
                Some("users_email") => Conflict::Email,
                Some("principals_signing_key") => Conflict::PrincipalKey,
                _ => Conflict::Other,
            };
            return StorageError::AlreadyExists(conflict);
        }
    }
    StorageError::from(e)
}

/// `?`-friendly conversion used throughout this file.
trait PgResultExt<T> {
    fn pg(self) -> Result<T>;
}

impl<T> PgResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn pg(self) -> Result<T> {
        self.map_err(db_err)
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

fn epoch(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

/// Saturating conversion for binding: values beyond i64 cannot match any stored row anyway.
fn sat_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Saturating conversion of a key epoch for binding to an INTEGER column.
fn sat_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

const PRINCIPAL_SELECT: &str = "SELECT p.id, p.user_id, p.workspace_id, u.email, p.name, \
     p.signing_key, p.agreement_key, p.admitted_by, p.admission_signature, p.created_at, \
     p.revoked_at, p.expires_at FROM principals p LEFT JOIN users u ON u.id = p.user_id";

fn principal_row(r: &PgRow) -> Result<PrincipalRecord> {
    Ok(PrincipalRecord {
        id: parse_id(&r.try_get::<String, _>(0)?, "principal id")?,
        user_id: opt_id(r.try_get(1)?, "user id")?,
        workspace_id: opt_id(r.try_get(2)?, "workspace id")?,
        user_email: r.try_get(3)?,
        name: r.try_get(4)?,
        signing_key: VerifyingKey::try_from_slice(&r.try_get::<Vec<u8>, _>(5)?)
            .map_err(|_| corrupt("principal signing key"))?,
        agreement_key: AgreementPublic::try_from_slice(&r.try_get::<Vec<u8>, _>(6)?)
            .map_err(|_| corrupt("principal agreement key"))?,
        admitted_by: opt_id(r.try_get(7)?, "admitting principal id")?,
        admission_signature: r.try_get(8)?,
        created_at_ms: r.try_get(9)?,
        revoked_at_ms: r.try_get(10)?,
        expires_at_ms: r.try_get(11)?,
    })
}

macro_rules! version_cols {
    () => {
        "v.environment_id, v.name_digest, v.version, v.env_version, v.key_epoch, v.envelope, \
         v.deleted, v.writer_id, v.signature, v.prev_hash, v.hash, v.created_at"
    };
}

fn version_row(r: &PgRow) -> Result<SecretVersionRecord> {
    Ok(SecretVersionRecord {
        environment_id: parse_id(&r.try_get::<String, _>(0)?, "environment id")?,
        name_digest: NameDigest::try_from_slice(&r.try_get::<Vec<u8>, _>(1)?)
            .map_err(|_| corrupt("name digest"))?,
        version: to_u64(r.try_get(2)?, "version")?,
        env_version: to_u64(r.try_get(3)?, "env version")?,
        key_epoch: epoch(r.try_get(4)?, "key epoch")?,
        envelope: Envelope::from_bytes(r.try_get(5)?),
        deleted: r.try_get(6)?,
        writer: parse_id(&r.try_get::<String, _>(7)?, "writer id")?,
        signature: sig64(&r.try_get::<Vec<u8>, _>(8)?)?,
        prev_hash: arr32(&r.try_get::<Vec<u8>, _>(9)?, "prev hash")?,
        hash: arr32(&r.try_get::<Vec<u8>, _>(10)?, "version hash")?,
        created_at_ms: r.try_get(11)?,
    })
}

macro_rules! audit_cols {
    () => {
        "chain, seq, time_ms, actor, action, scope, target, method, request_timestamp_ms, \
         nonce, request_hash, signature, result, prev_hash, hash"
    };
}

fn audit_row(r: &PgRow) -> Result<AuditEntryRecord> {
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

fn workspace_from(r: &PgRow, at: usize) -> Result<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: parse_id(&r.try_get::<String, _>(at)?, "workspace id")?,
        name: r.try_get(at + 1)?,
        created_at_ms: r.try_get(at + 2)?,
    })
}

fn project_row(r: &PgRow) -> Result<ProjectRecord> {
    Ok(ProjectRecord {
        id: parse_id(&r.try_get::<String, _>(0)?, "project id")?,
        workspace_id: parse_id(&r.try_get::<String, _>(1)?, "workspace id")?,
        name: r.try_get(2)?,
        wrapped_key: WrappedKey::from_bytes(r.try_get(3)?),
        created_at_ms: r.try_get(4)?,
    })
}

fn environment_row(r: &PgRow) -> Result<EnvironmentRecord> {
    Ok(EnvironmentRecord {
        id: parse_id(&r.try_get::<String, _>(0)?, "environment id")?,
        project_id: parse_id(&r.try_get::<String, _>(1)?, "project id")?,
        workspace_id: parse_id(&r.try_get::<String, _>(2)?, "workspace id")?,
        name: r.try_get(3)?,
        wrapped_key: WrappedKey::from_bytes(r.try_get(4)?),
        key_epoch: epoch(r.try_get(5)?, "key epoch")?,
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
/// floor to match, inside the caller's transaction (which holds the environment's row lock).
/// Returns how many versions went.
async fn prune_tx(tx: &mut Transaction<'static, Postgres>, env: &str, keep: u64) -> Result<u64> {
    let keep = sat_i64(keep);
    let floor: i64 = sqlx::query(SQL_PRUNE_FLOOR)
        .bind(env)
        .bind(keep)
        .fetch_one(&mut **tx)
        .await
        .pg()?
        .try_get(0)?;
    if floor == 0 {
        return Ok(0);
    }
    let pruned = sqlx::query(SQL_PRUNE)
        .bind(env)
        .bind(keep)
        .execute(&mut **tx)
        .await
        .pg()?
        .rows_affected();
    sqlx::query(SQL_RAISE_FLOOR)
        .bind(env)
        .bind(floor)
        .execute(&mut **tx)
        .await
        .pg()?;
    Ok(pruned)
}

// ---------- SQL ----------
//
// Every hot statement is a constant so the index test below can EXPLAIN each one.

const SQL_RESOLVE: &str = "SELECT w.id, w.name, w.created_at, \
     p.id, p.name, p.wrapped_key, p.created_at, \
     e.id, e.name, e.wrapped_key, e.key_epoch, e.env_version, e.created_at, \
     e.keep_versions, e.history_floor \
     FROM workspaces w \
     LEFT JOIN projects p ON p.workspace_id = w.id AND p.name = $2 AND p.deleted_at IS NULL \
     LEFT JOIN environments e ON e.project_id = p.id AND e.name = $3 AND e.deleted_at IS NULL \
     WHERE w.name = $1 AND w.deleted_at IS NULL";

const SQL_GRANTS: &str = "SELECT g.id, g.scope_kind, g.project_id, g.environment_id, g.role, \
     k.key_epoch, k.wrapped_key \
     FROM grants g LEFT JOIN grant_keys k ON k.grant_id = g.id AND k.principal_id = $2 \
     WHERE g.principal_id = $2 AND g.workspace_id = $1 AND g.revoked_at IS NULL \
     UNION ALL \
     SELECT g.id, g.scope_kind, g.project_id, g.environment_id, g.role, \
     k.key_epoch, k.wrapped_key \
     FROM grants g LEFT JOIN grant_keys k ON k.grant_id = g.id AND k.principal_id = $2 \
     WHERE g.user_id = $3 AND g.workspace_id = $1 AND g.revoked_at IS NULL";

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

/// Locks the environment row: every writer of one environment queues here.
const SQL_ENV_FOR_WRITE: &str = "SELECT key_epoch, env_version, keep_versions FROM environments \
     WHERE id = $1 AND deleted_at IS NULL FOR UPDATE";

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
/// migrations/postgres/0004_retention.sql allows exactly these).
const SQL_PRUNE: &str = "DELETE FROM secret_versions v USING secret_heads h \
     WHERE v.environment_id = $1 AND h.environment_id = $1 AND h.name_digest = v.name_digest \
       AND v.version <= h.version - $2";

const SQL_RAISE_FLOOR: &str =
    "UPDATE environments SET history_floor = GREATEST(history_floor, $2) WHERE id = $1";

const SQL_HEAD: &str =
    "SELECT version, hash FROM secret_heads WHERE environment_id = $1 AND name_digest = $2";

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

const SQL_AUDIT_INSERT: &str = concat!(
    "INSERT INTO audit_entries (",
    audit_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);

const SQL_INSERT_VERSION: &str = "INSERT INTO secret_versions (environment_id, name_digest, \
     version, env_version, key_epoch, envelope, deleted, writer_id, signature, prev_hash, hash, \
     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const SQL_UPSERT_HEAD: &str = "INSERT INTO secret_heads (environment_id, name_digest, version, \
     deleted, hash) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (environment_id, name_digest) DO UPDATE SET version = excluded.version, \
     deleted = excluded.deleted, hash = excluded.hash";

/// The advisory-lock key of an audit chain: 64 bits of a labelled hash of its key. Two chains
/// sharing a key would only queue behind each other, never corrupt anything.
fn audit_lock_key(chain: &AuditChain) -> i64 {
    let mut input = AUDIT_LOCK_LABEL.to_vec();
    input.extend_from_slice(chain.key().as_bytes());
    let h = zopp_crypto::sha256(&input);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

/// Appends drafts inside an open transaction, chaining each after its chain's current head.
async fn append_audit_tx(
    tx: &mut Transaction<'static, Postgres>,
    drafts: Vec<AuditDraft>,
) -> Result<Vec<AuditEntryRecord>> {
    // Lock every chain this transaction appends to, in a fixed order, before reading a head:
    // held until commit, so a concurrent appender on another connection or replica reads the
    // head only after this transaction's entries are visible.
    let keys: BTreeSet<i64> = drafts.iter().map(|d| audit_lock_key(&d.chain)).collect();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **tx)
            .await
            .pg()?;
    }
    let mut heads: std::collections::HashMap<AuditChain, Option<(u64, [u8; 32])>> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let head = match heads.get(&draft.chain) {
            Some(h) => *h,
            None => {
                let row = sqlx::query(SQL_AUDIT_HEAD)
                    .bind(draft.chain.key())
                    .fetch_optional(&mut **tx)
                    .await
                    .pg()?;
                match row {
                    Some(r) => Some((
                        to_u64(r.try_get(0)?, "audit seq")?,
                        arr32(&r.try_get::<Vec<u8>, _>(1)?, "audit hash")?,
                    )),
                    None => None,
                }
            }
        };
        let entry = seal_audit(draft, head);
        let d = &entry.draft;
        sqlx::query(SQL_AUDIT_INSERT)
            .bind(d.chain.key())
            .bind(sat_i64(entry.seq))
            .bind(d.time_ms)
            .bind(d.actor.map(|a| a.to_string()).unwrap_or_default())
            .bind(&d.action)
            .bind(&d.scope)
            .bind(&d.target)
            .bind(&d.method)
            .bind(d.request_timestamp_ms)
            .bind(&d.nonce)
            .bind(&d.request_hash)
            .bind(&d.signature)
            .bind(&d.result)
            .bind(&entry.prev_hash[..])
            .bind(&entry.hash[..])
            .execute(&mut **tx)
            .await
            .pg()?;
        heads.insert(d.chain, Some((entry.seq, entry.hash)));
        out.push(entry);
    }
    Ok(out)
}

async fn exists(
    tx: &mut Transaction<'static, Postgres>,
    sql: &'static str,
    args: &[&str],
) -> Result<bool> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.fetch_optional(&mut **tx).await.pg()?.is_some())
}

#[async_trait]
impl Storage for PgStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.pg()?;
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
        .await
        .pg()?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
        Ok(())
    }

    async fn server_invite(&self, id: InviteId) -> Result<Option<ServerInviteRecord>> {
        let row = sqlx::query(
            "SELECT id, secret_hash, created_at, expires_at, used_at FROM server_invites \
             WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .pg()?;
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
        // Locking the invite makes two concurrent redemptions queue: the second sees it used.
        let row = sqlx::query(
            "SELECT secret_hash, expires_at, used_at FROM server_invites WHERE id = $1 \
             FOR UPDATE",
        )
        .bind(join.invite_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .pg()?;
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
            .await
            .pg()?;
        if found.is_some() {
            return Err(StorageError::AlreadyExists(Conflict::PrincipalKey));
        }
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
            .bind(join.user_id.to_string())
            .bind(&join.email)
            .bind(join.now_ms)
            .execute(&mut *tx)
            .await
            .pg()?;
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
        .await
        .pg()?;
        let used = sqlx::query(
            "UPDATE server_invites SET used_at = $2, used_by = $3 WHERE id = $1 AND used_at IS NULL",
        )
        .bind(join.invite_id.to_string())
        .bind(join.now_ms)
        .bind(p.id.to_string())
        .execute(&mut *tx)
        .await
        .pg()?;
        if used.rows_affected() != 1 {
            return Err(StorageError::InviteUsed);
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
        Ok(())
    }

    async fn principal(&self, id: PrincipalId) -> Result<Option<PrincipalRecord>> {
        let sql = format!("{PRINCIPAL_SELECT} WHERE p.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .pg()?;
        row.as_ref().map(principal_row).transpose()
    }

    async fn principals(&self, ids: &[PrincipalId]) -> Result<Vec<PrincipalRecord>> {
        let mut unique: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        unique.sort();
        unique.dedup();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        // One array parameter: no bound-parameter limit to chunk around.
        let sql = format!("{PRINCIPAL_SELECT} WHERE p.id = ANY($1)");
        let rows = sqlx::query(&sql)
            .bind(&unique)
            .fetch_all(&self.pool)
            .await
            .pg()?;
        rows.iter().map(principal_row).collect()
    }

    async fn resolve(&self, who: &Who, path: &NamePath<'_>) -> Result<Resolution> {
        let mut conn = self.begin_snapshot().await?;
        let row = sqlx::query(SQL_RESOLVE)
            .bind(path.workspace)
            .bind(path.project)
            .bind(path.project.and(path.environment))
            .fetch_optional(&mut *conn)
            .await
            .pg()?;
        let Some(r) = row else {
            return Ok(Resolution::default());
        };
        let workspace = workspace_from(&r, 0)?;
        let project = match r.try_get::<Option<String>, _>(3)? {
            Some(id) => Some(ProjectRecord {
                id: parse_id(&id, "project id")?,
                workspace_id: workspace.id,
                name: r.try_get(4)?,
                wrapped_key: WrappedKey::from_bytes(r.try_get(5)?),
                created_at_ms: r.try_get(6)?,
            }),
            None => None,
        };
        let environment = match (&project, r.try_get::<Option<String>, _>(7)?) {
            (Some(p), Some(id)) => Some(EnvironmentRecord {
                id: parse_id(&id, "environment id")?,
                project_id: p.id,
                workspace_id: workspace.id,
                name: r.try_get(8)?,
                wrapped_key: WrappedKey::from_bytes(r.try_get(9)?),
                key_epoch: epoch(r.try_get(10)?, "key epoch")?,
                env_version: to_u64(r.try_get(11)?, "env version")?,
                created_at_ms: r.try_get(12)?,
                keep_versions: keep_versions(r.try_get(13)?)?,
                history_floor: to_u64(r.try_get(14)?, "history floor")?,
            }),
            _ => None,
        };
        let rows = sqlx::query(SQL_GRANTS)
            .bind(workspace.id.to_string())
            .bind(who.principal.to_string())
            .bind(who.user.map(|u| u.to_string()))
            .fetch_all(&mut *conn)
            .await
            .pg()?;
        conn.commit().await.pg()?;
        let mut grants: Vec<GrantRecord> = Vec::new();
        for r in rows {
            let id_text: String = r.try_get(0)?;
            let id = GrantId::try_parse(&id_text).ok_or_else(|| corrupt("grant id"))?;
            let key = match r.try_get::<Option<i32>, _>(5)? {
                Some(e) => Some(GrantKeyRecord {
                    key_epoch: epoch(e, "grant key epoch")?,
                    wrapped_key: WrappedKey::from_bytes(r.try_get(6)?),
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
                i32::from(r.try_get::<i16, _>(1)?),
                workspace.id,
                opt_id(r.try_get(2)?, "project id")?,
                opt_id(r.try_get(3)?, "environment id")?,
            )?;
            grants.push(GrantRecord {
                id,
                grant: Grant {
                    scope,
                    role: stored_role(i32::from(r.try_get::<i16, _>(4)?))?,
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

    async fn workspaces_for(&self, who: &Who) -> Result<Vec<WorkspaceRecord>> {
        let rows = sqlx::query(SQL_WORKSPACES_FOR)
            .bind(who.principal.to_string())
            .bind(who.user.map(|u| u.to_string()))
            .fetch_all(&self.pool)
            .await
            .pg()?;
        rows.iter().map(|r| workspace_from(r, 0)).collect()
    }

    async fn projects(&self, workspace: WorkspaceId) -> Result<Vec<ProjectRecord>> {
        let rows = sqlx::query(SQL_PROJECTS)
            .bind(workspace.to_string())
            .fetch_all(&self.pool)
            .await
            .pg()?;
        rows.iter().map(project_row).collect()
    }

    async fn environments(&self, project: ProjectId) -> Result<Vec<EnvironmentRecord>> {
        let rows = sqlx::query(SQL_ENVIRONMENTS)
            .bind(project.to_string())
            .fetch_all(&self.pool)
            .await
            .pg()?;
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
        .await
        .pg()?;
        sqlx::query(
            "INSERT INTO grants (id, scope_kind, workspace_id, role, user_id, granted_by, \
             created_at) VALUES ($1, 1, $2, $3, $4, $5, $6)",
        )
        .bind(ws.grant_id.to_string())
        .bind(&id)
        .bind(role_i16(Role::Admin))
        .bind(ws.creator_user.to_string())
        .bind(ws.created_by.to_string())
        .bind(ws.now_ms)
        .execute(&mut *tx)
        .await
        .pg()?;
        sqlx::query(
            "INSERT INTO grant_keys (grant_id, principal_id, key_epoch, wrapped_key, created_at) \
             VALUES ($1, $2, 1, $3, $4)",
        )
        .bind(ws.grant_id.to_string())
        .bind(ws.created_by.to_string())
        .bind(ws.wrapped_key.as_bytes())
        .bind(ws.now_ms)
        .execute(&mut *tx)
        .await
        .pg()?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
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
        .await
        .pg()?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("workspace"));
        }
        sqlx::query(
            "UPDATE projects SET deleted_at = $2 WHERE workspace_id = $1 AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .pg()?;
        sqlx::query(
            "UPDATE environments SET deleted_at = $2 WHERE workspace_id = $1 \
             AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .pg()?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
        Ok(())
    }

    async fn create_project(&self, p: NewProject, audit: AuditDraft) -> Result<ProjectRecord> {
        let mut tx = self.begin_write().await?;
        let ws = p.workspace_id.to_string();
        let id = p.id.to_string();
        // FOR SHARE: a concurrent delete of the workspace waits for this insert, or, if it
        // committed first, the re-checked row no longer matches.
        if !exists(
            &mut tx,
            "SELECT 1 FROM workspaces WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
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
        .await
        .pg()?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
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
                .await
                .pg()?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("project"));
        }
        sqlx::query(
            "UPDATE environments SET deleted_at = $2 WHERE project_id = $1 AND deleted_at IS NULL",
        )
        .bind(&id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .pg()?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
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
            "SELECT 1 FROM projects WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL \
             FOR SHARE",
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
        .await
        .pg()?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
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
        .await
        .pg()?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("environment"));
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
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
        // Locks the row like a write does, so no write runs under a limit half set.
        let floor: Option<i64> = sqlx::query(
            "UPDATE environments SET keep_versions = $2 WHERE id = $1 AND deleted_at IS NULL \
             RETURNING history_floor",
        )
        .bind(&id)
        .bind(keep_versions.map(sat_i64))
        .fetch_optional(&mut *tx)
        .await
        .pg()?
        .map(|r| r.try_get(0))
        .transpose()?;
        let Some(mut floor) = floor else {
            return Err(StorageError::NotFound("environment"));
        };
        let pruned = match keep_versions {
            Some(keep) => prune_tx(&mut tx, &id, keep).await?,
            None => 0,
        };
        if pruned > 0 {
            floor = sqlx::query("SELECT history_floor FROM environments WHERE id = $1")
                .bind(&id)
                .fetch_one(&mut *tx)
                .await
                .pg()?
                .try_get(0)?;
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await.pg()?;
        Ok(RetentionOutcome {
            pruned,
            history_floor: to_u64(floor, "history floor")?,
        })
    }

    async fn epoch_links(&self, env: EnvironmentId) -> Result<Vec<EpochLinkRecord>> {
        let rows = sqlx::query(SQL_EPOCH_LINKS)
            .bind(env.to_string())
            .fetch_all(&self.pool)
            .await
            .pg()?;
        rows.iter()
            .map(|r| {
                Ok(EpochLinkRecord {
                    epoch: epoch(r.try_get(0)?, "epoch")?,
                    wrapped_key: WrappedKey::from_bytes(r.try_get(1)?),
                })
            })
            .collect()
    }

    async fn environment_version(&self, env: EnvironmentId) -> Result<Option<u64>> {
        let row = sqlx::query(SQL_ENV_VERSION)
            .bind(env.to_string())
            .fetch_optional(&self.pool)
            .await
            .pg()?;
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
            None => sqlx::query(SQL_SECRET_HEAD)
                .bind(env.to_string())
                .bind(&digest.as_bytes()[..])
                .fetch_optional(&self.pool)
                .await
                .pg()?,
            Some(v) => sqlx::query(SQL_SECRET_VERSION)
                .bind(env.to_string())
                .bind(&digest.as_bytes()[..])
                .bind(sat_i64(v))
                .fetch_optional(&self.pool)
                .await
                .pg()?,
        };
        row.as_ref().map(version_row).transpose()
    }

    async fn secret_history(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
    ) -> Result<Vec<SecretVersionRecord>> {
        let rows = sqlx::query(SQL_SECRET_HISTORY)
            .bind(env.to_string())
            .bind(&digest.as_bytes()[..])
            .fetch_all(&self.pool)
            .await
            .pg()?;
        rows.iter().map(version_row).collect()
    }

    async fn environment_state(
        &self,
        env: EnvironmentId,
        at: PointInTime,
    ) -> Result<EnvironmentState> {
        // One snapshot, so the versions and the env_version agree even while replicas write.
        let mut conn = self.begin_snapshot().await?;
        let id = env.to_string();
        let (current, floor) = match sqlx::query(SQL_ENV_VERSION_AND_FLOOR)
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await
            .pg()?
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
                    .await
                    .pg()?,
                current,
            ),
            PointInTime::AtEnvVersion(n) => (
                sqlx::query(SQL_STATE_AT_ENV_VERSION)
                    .bind(&id)
                    .bind(sat_i64(n))
                    .fetch_all(&mut *conn)
                    .await
                    .pg()?,
                n.min(current),
            ),
            PointInTime::AtMs(t) => {
                let v: i64 = sqlx::query(SQL_ENV_VERSION_AT_MS)
                    .bind(&id)
                    .bind(t)
                    .fetch_one(&mut *conn)
                    .await
                    .pg()?
                    .try_get(0)?;
                (
                    sqlx::query(SQL_STATE_AT_MS)
                        .bind(&id)
                        .bind(t)
                        .fetch_all(&mut *conn)
                        .await
                        .pg()?,
                    to_u64(v, "env version")?,
                )
            }
        };
        conn.commit().await.pg()?;
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
        // The row lock is what makes check-and-set exact across connections and replicas: the
        // heads and env_version read below cannot change until this transaction ends.
        let row = sqlx::query(SQL_ENV_FOR_WRITE)
            .bind(&env)
            .fetch_optional(&mut *tx)
            .await
            .pg()?;
        let Some(row) = row else {
            return Err(StorageError::NotFound("environment"));
        };
        let key_epoch = epoch(row.try_get(0)?, "key epoch")?;
        let current = to_u64(row.try_get(1)?, "env version")?;
        let keep = keep_versions(row.try_get(2)?)?;
        if let Some(expected) = batch.if_env_version {
            if expected != current {
                return Err(StorageError::EnvironmentChanged { current });
            }
        }
        for w in &batch.writes {
            if w.key_epoch != key_epoch {
                return Err(StorageError::KeyEpochMismatch { current: key_epoch });
            }
            let head = sqlx::query(SQL_HEAD)
                .bind(&env)
                .bind(&w.name_digest.as_bytes()[..])
                .fetch_optional(&mut *tx)
                .await
                .pg()?
                .map(|r| -> Result<SecretHead> {
                    Ok(SecretHead {
                        version: to_u64(r.try_get(0)?, "head version")?,
                        hash: arr32(&r.try_get::<Vec<u8>, _>(1)?, "head hash")?,
                    })
                })
                .transpose()?;
            check_next_version(head, w)?;
        }
        let env_version = current + 1;
        for w in &batch.writes {
            sqlx::query(SQL_INSERT_VERSION)
                .bind(&env)
                .bind(&w.name_digest.as_bytes()[..])
                .bind(sat_i64(w.version))
                .bind(sat_i64(env_version))
                .bind(sat_i32(w.key_epoch))
                .bind(w.envelope.as_bytes())
                .bind(w.deleted)
                .bind(batch.writer.to_string())
                .bind(&w.signature[..])
                .bind(&w.prev_hash[..])
                .bind(&w.hash[..])
                .bind(batch.now_ms)
                .execute(&mut *tx)
                .await
                .pg()?;
            sqlx::query(SQL_UPSERT_HEAD)
                .bind(&env)
                .bind(&w.name_digest.as_bytes()[..])
                .bind(sat_i64(w.version))
                .bind(w.deleted)
                .bind(&w.hash[..])
                .execute(&mut *tx)
                .await
                .pg()?;
        }
        sqlx::query("UPDATE environments SET env_version = $2 WHERE id = $1")
            .bind(&env)
            .bind(sat_i64(env_version))
            .execute(&mut *tx)
            .await
            .pg()?;
        if let Some(keep) = keep {
            prune_tx(&mut tx, &env, keep).await?;
        }
        append_audit_tx(&mut tx, audit).await?;
        // Delivered to every listening replica when (and only if) the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGE_CHANNEL)
            .bind(replica::change_payload(batch.environment_id, env_version))
            .execute(&mut *tx)
            .await
            .pg()?;
        tx.commit().await.pg()?;
        Ok(WriteOutcome {
            env_version,
            created_at_ms: batch.now_ms,
        })
    }

    async fn append_audit(&self, entries: Vec<AuditDraft>) -> Result<Vec<AuditEntryRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let out = append_audit_tx(&mut tx, entries).await?;
        tx.commit().await.pg()?;
        Ok(out)
    }

    async fn list_audit(&self, chain: AuditChain, query: &AuditQuery) -> Result<AuditPage> {
        let mut conn = self.begin_snapshot().await?;
        let key = chain.key();
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
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
        let rows = qb.build().fetch_all(&mut *conn).await.pg()?;
        let head = sqlx::query(SQL_AUDIT_HEAD)
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await
            .pg()?;
        conn.commit().await.pg()?;
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

/// A role as the SMALLINT column stores it.
fn role_i16(r: Role) -> i16 {
    // Roles are 1..=3 (the schema's CHECK), far inside i16.
    i16::try_from(r.as_i32()).unwrap_or(i16::MAX)
}

#[cfg(test)]
mod tests;
