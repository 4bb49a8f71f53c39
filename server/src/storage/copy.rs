//! `zopp-server migrate-data --from URL --to URL`: copies a whole zopp database to another
//! backend (typically the embedded SQLite file to PostgreSQL when a team scales out), row for
//! row: ids, ciphertext, versions, grants and the audit chains stay byte-identical, so clients
//! notice nothing and `zopp audit verify` keeps its pinned head.
//!
//! Safety rules: the source is only read, inside one snapshot, and must be at exactly the schema
//! version this binary knows; the target is migrated first and must be empty; everything is
//! written in one target transaction that also re-counts every table and re-hashes every audit
//! chain before it commits, so the target ends up either a verified copy or untouched.
//! A table this code does not know (a newer schema) is refused rather than silently left out.
//!
//! The shared replay cache (`replay_nonces`, PostgreSQL only) is not copied: its entries expire
//! within a minute and a stopped deployment has nothing in flight.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::sign::ZERO_HASH;

use super::postgres::{split_pool_size, PgStorage};
use super::sqlite::SqliteStorage;
use super::{is_postgres_url, redact_url, StorageError};

/// Rows per multi-row INSERT: well inside both backends' bound-parameter limits.
const INSERT_CHUNK: usize = 400;

/// How a column is read and bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// BIGINT.
    I64,
    /// INTEGER (4 bytes on PostgreSQL).
    I32,
    /// SMALLINT (2 bytes on PostgreSQL).
    I16,
    /// TEXT.
    Text,
    /// BLOB / BYTEA.
    Bytes,
    /// BOOLEAN.
    Bool,
}

/// One table of the schema, in an order where every referenced row is copied first. Its columns
/// are read from the source's schema at run time (which the version check has matched to this
/// binary's migrations), so a migration that adds a column needs no change here.
struct Table {
    name: &'static str,
    /// Deterministic read order (a key), so equal databases copy identically.
    order_by: &'static str,
}

/// Every data table of migrations/{sqlite,postgres}, parents before children. A table of the
/// source that is missing here is refused (never silently left out); a test checks that the
/// migrated schema has none.
const TABLES: &[Table] = &[
    Table {
        name: "users",
        order_by: "id",
    },
    Table {
        name: "workspaces",
        order_by: "id",
    },
    Table {
        name: "principals",
        order_by: "created_at, id",
    },
    Table {
        name: "workspace_invites",
        order_by: "id",
    },
    Table {
        name: "device_exports",
        order_by: "id",
    },
    Table {
        name: "server_invites",
        order_by: "id",
    },
    Table {
        name: "projects",
        order_by: "id",
    },
    Table {
        name: "environments",
        order_by: "id",
    },
    Table {
        name: "environment_key_epochs",
        order_by: "environment_id, epoch",
    },
    Table {
        name: "grants",
        order_by: "id",
    },
    Table {
        name: "grant_keys",
        order_by: "grant_id, principal_id, key_epoch",
    },
    Table {
        name: "secret_versions",
        order_by: "environment_id, name_digest, version",
    },
    Table {
        name: "secret_heads",
        order_by: "environment_id, name_digest",
    },
    Table {
        name: "app_applies",
        order_by: "environment_id, app_digest",
    },
    Table {
        name: "audit_entries",
        order_by: "chain, seq",
    },
    // The copy is the same deployment: clients keep the server id they pinned, and the request
    // signatures in the audit trail still verify.
    Table {
        name: "server_identity",
        order_by: "singleton",
    },
    Table {
        name: "key_statements",
        order_by: "hash",
    },
];

/// A table the target may already hold a row of (a server that was started on the empty
/// database made its own id): replaced by the source's, not a reason to refuse.
const REPLACED: &[&str] = &["server_identity"];

/// The columns of one table, in schema order.
type Columns = Vec<(String, Kind)>;

/// One source table as read: its place in [`TABLES`], its columns and its rows.
struct TableData {
    table: &'static Table,
    columns: Columns,
    rows: Rows,
}

/// The column kind of a declared SQLite type or a PostgreSQL `data_type`.
fn kind_of(table: &str, column: &str, declared: &str) -> Result<Kind, CopyError> {
    Ok(match declared.to_ascii_lowercase().as_str() {
        "bigint" => I64,
        "integer" => I32,
        "smallint" => I16,
        "text" => Text,
        "blob" | "bytea" => Bytes,
        "boolean" => Bool,
        other => {
            return Err(CopyError::UnknownColumnType(format!(
                "{table}.{column} ({other})"
            )))
        }
    })
}

use Kind::*;

/// Tables that exist in a migrated database but are not data to copy (`read_epoch` is SQLite's
/// cache counter, which the target's own migration creates and its triggers raise).
const NOT_COPIED: &[&str] = &[
    "_sqlx_migrations",
    "sqlite_sequence",
    "replay_nonces",
    "read_epoch",
    // Leases are live coordination, meaningless in another database.
    "app_leases",
];

/// One value of a column of kind [`Kind`] (`None` is SQL NULL, typed for binding).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

type Rows = Vec<Vec<Val>>;

/// Why a copy was refused or failed. The target is unchanged in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A database could not be opened, read or written.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The source SQLite file does not exist (a copy never creates its source).
    #[error("source database {0} does not exist")]
    SourceMissing(String),
    /// The source's schema is not the one this binary writes.
    #[error(
        "source database is at schema version {found}, this zopp-server knows version {known}: \
         run `zopp-server migrate --db <source>` with this binary first, or use the zopp-server \
         that matches the source"
    )]
    SchemaMismatch {
        /// Latest migration applied to the source.
        found: i64,
        /// Latest migration this binary embeds.
        known: i64,
    },
    /// A column has a type this binary does not know how to copy.
    #[error("source has a column zopp-server cannot copy: {0}")]
    UnknownColumnType(String),
    /// The source holds a table this binary does not know how to copy.
    #[error("source has a table zopp-server cannot copy: {0}")]
    UnknownTable(String),
    /// The target already holds data.
    #[error("target database is not empty: table {table} has {rows} rows; migrate-data only copies into a new, empty database")]
    TargetNotEmpty {
        /// First non-empty table.
        table: &'static str,
        /// Its row count.
        rows: i64,
    },
    /// Source and target are the same database.
    #[error("--from and --to name the same database")]
    SameDatabase,
    /// A principal's admitter is missing from the source.
    #[error(
        "source is inconsistent: principal {0} was admitted by a principal that does not exist"
    )]
    DanglingAdmitter(String),
    /// After copying, a table's row count differs from the source's.
    #[error("copy of table {table} has {copied} rows, source has {source_rows}")]
    CountMismatch {
        /// The table.
        table: &'static str,
        /// Rows read from the source.
        source_rows: usize,
        /// Rows found in the target.
        copied: i64,
    },
    /// An audit chain does not re-hash (the source itself is damaged or was tampered with).
    #[error("audit chain {chain} does not verify at entry {seq}: the source is damaged or was tampered with")]
    ChainBroken {
        /// The chain key (`server` or a workspace id).
        chain: String,
        /// First failing entry.
        seq: i64,
    },
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Storage(StorageError::from(e))
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub tables: Vec<(&'static str, usize)>,
    /// Audit chains re-hashed in the target.
    pub chains_verified: usize,
    /// Audit entries among them.
    pub audit_entries: usize,
}

impl CopyReport {
    /// Total rows copied.
    pub fn rows(&self) -> usize {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

enum Backend {
    Sqlite,
    Postgres,
}

fn backend_of(url: &str) -> Result<Backend, CopyError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if is_postgres_url(url) {
        Ok(Backend::Postgres)
    } else {
        Err(StorageError::UnsupportedUrl(redact_url(url)).into())
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> CopyError {
    CopyError::Storage(StorageError::Unavailable(Box::new(e)))
}

fn select_sql(t: &Table, columns: &Columns) -> String {
    let cols: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        t.name,
        t.order_by
    )
}

fn latest_known(backend: &Backend) -> i64 {
    let m = match backend {
        Backend::Sqlite => sqlx::migrate!("../migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("../migrations/postgres"),
    };
    m.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Reads the listed tables present in the source, with their columns, in one snapshot.
macro_rules! read_tables {
    ($tx:expr, $names:expr, $columns_sql:expr, $decode:expr) => {{
        check_tables(&$names)?;
        let mut out = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            if !$names.iter().any(|n| n == t.name) {
                // Not in this schema version (the version check matched it to this binary).
                continue;
            }
            let cols: Vec<(String, String)> = sqlx::query_as($columns_sql)
                .bind(t.name)
                .fetch_all(&mut *$tx)
                .await?;
            let columns = cols
                .iter()
                .map(|(c, ty)| Ok((c.clone(), kind_of(t.name, c, ty)?)))
                .collect::<Result<Columns, CopyError>>()?;
            let rows = sqlx::query(&select_sql(t, &columns))
                .fetch_all(&mut *$tx)
                .await?;
            let mut decoded = Vec::with_capacity(rows.len());
            for r in &rows {
                let mut vals = Vec::with_capacity(columns.len());
                for (i, (_, k)) in columns.iter().enumerate() {
                    vals.push($decode(r, i, *k)?);
                }
                decoded.push(vals);
            }
            out.push(TableData {
                table: t,
                columns,
                rows: decoded,
            });
        }
        out
    }};
}

fn decode_sqlite(r: &sqlx::sqlite::SqliteRow, i: usize, k: Kind) -> Result<Val, sqlx::Error> {
    Ok(match k {
        I64 | I32 | I16 => Val::Int(r.try_get(i)?),
        Text => Val::Text(r.try_get(i)?),
        Bytes => Val::Bytes(r.try_get(i)?),
        Bool => Val::Bool(r.try_get(i)?),
    })
}

fn decode_pg(r: &sqlx::postgres::PgRow, i: usize, k: Kind) -> Result<Val, sqlx::Error> {
    Ok(match k {
        I64 => Val::Int(r.try_get(i)?),
        I32 => Val::Int(r.try_get::<Option<i32>, _>(i)?.map(i64::from)),
        I16 => Val::Int(r.try_get::<Option<i16>, _>(i)?.map(i64::from)),
        Text => Val::Text(r.try_get(i)?),
        Bytes => Val::Bytes(r.try_get(i)?),
        Bool => Val::Bool(r.try_get(i)?),
    })
}

/// Reads every table of the source in one snapshot.
async fn read_source(url: &str) -> Result<Vec<TableData>, CopyError> {
    match backend_of(url)? {
        Backend::Sqlite => {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(unavailable)?
                .read_only(true);
            if !opts.get_filename().exists() {
                return Err(CopyError::SourceMissing(redact_url(url)));
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await?;
            let mut tx = pool.begin().await?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap_or(None);
            check_schema(found.unwrap_or(0), latest_known(&Backend::Sqlite))?;
            let names: Vec<String> =
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(&mut *tx)
                    .await?;
            let out = read_tables!(
                tx,
                names,
                "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
                decode_sqlite
            );
            tx.commit().await?;
            pool.close().await;
            Ok(out)
        }
        Backend::Postgres => {
            let (base, _) = split_pool_size(url)?;
            let opts = PgConnectOptions::from_str(&base).map_err(unavailable)?;
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await?;
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap_or(None);
            check_schema(found.unwrap_or(0), latest_known(&Backend::Postgres))?;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&mut *tx)
            .await?;
            let out = read_tables!(
                tx,
                names,
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                decode_pg
            );
            tx.commit().await?;
            pool.close().await;
            Ok(out)
        }
    }
}

fn check_schema(found: i64, known: i64) -> Result<(), CopyError> {
    if found == known {
        Ok(())
    } else {
        Err(CopyError::SchemaMismatch { found, known })
    }
}

fn check_tables(names: &[String]) -> Result<(), CopyError> {
    let known: HashSet<&str> = TABLES.iter().map(|t| t.name).collect();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    for n in names {
        if !known.contains(n.as_str()) && !NOT_COPIED.contains(&n.as_str()) {
            unknown.insert(n);
        }
    }
    match unknown.into_iter().next() {
        Some(n) => Err(CopyError::UnknownTable(n.to_string())),
        None => Ok(()),
    }
}

/// Puts principals in an order where each admitter comes before those it admitted (the
/// self-reference `admitted_by` is checked immediately by both backends).
fn order_principals(columns: &Columns, rows: Rows) -> Result<Rows, CopyError> {
    let at = |name: &str| {
        columns
            .iter()
            .position(|(c, _)| c == name)
            .ok_or_else(|| CopyError::UnknownColumnType(format!("principals.{name} (missing)")))
    };
    let id_at = at("id")?;
    let admitter_at = at("admitted_by")?;
    let mut done: HashSet<String> = HashSet::new();
    let mut pending = rows;
    let mut out = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for r in pending {
            let ready = match &r[admitter_at] {
                Val::Text(None) => true,
                Val::Text(Some(a)) => done.contains(a),
                _ => true,
            };
            if ready {
                if let Val::Text(Some(id)) = &r[id_at] {
                    done.insert(id.clone());
                }
                out.push(r);
            } else {
                rest.push(r);
            }
        }
        if rest.len() == before {
            let id = match &rest[0][id_at] {
                Val::Text(Some(id)) => id.clone(),
                _ => String::new(),
            };
            return Err(CopyError::DanglingAdmitter(id));
        }
        pending = rest;
    }
    Ok(out)
}

macro_rules! insert_rows {
    ($db:ty, $tx:expr, $data:expr) => {{
        let cols: Vec<&str> = $data.columns.iter().map(|(c, _)| c.as_str()).collect();
        for chunk in $data.rows.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<$db> = QueryBuilder::new(format!(
                "INSERT INTO {} ({}) ",
                $data.table.name,
                cols.join(", ")
            ));
            qb.push_values(chunk, |mut b, row| {
                for v in row {
                    match v {
                        Val::Int(x) => b.push_bind(*x),
                        Val::Text(x) => b.push_bind(x.clone()),
                        Val::Bytes(x) => b.push_bind(x.clone()),
                        Val::Bool(x) => b.push_bind(*x),
                    };
                }
            });
            qb.build().execute(&mut *$tx).await?;
        }
    }};
}

macro_rules! verify_target {
    ($tx:expr, $data:expr, $report:expr) => {{
        for d in $data.iter() {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", d.table.name))
                .fetch_one(&mut *$tx)
                .await?;
            if n != d.rows.len() as i64 {
                return Err(CopyError::CountMismatch {
                    table: d.table.name,
                    source_rows: d.rows.len(),
                    copied: n,
                });
            }
        }
        let rows = sqlx::query(concat!(
            "SELECT chain, seq, time_ms, actor, action, scope, target, method, ",
            "request_timestamp_ms, nonce, request_hash, signature, result, prev_hash, hash ",
            "FROM audit_entries ORDER BY chain, seq"
        ))
        .fetch_all(&mut *$tx)
        .await?;
        let mut chain = String::new();
        let mut prev = ZERO_HASH;
        let mut expected_seq = 1i64;
        for r in &rows {
            let c: String = r.try_get(0)?;
            if c != chain {
                chain = c.clone();
                prev = ZERO_HASH;
                expected_seq = 1;
                $report.chains_verified += 1;
            }
            let seq: i64 = r.try_get(1)?;
            let broken = || CopyError::ChainBroken {
                chain: c.clone(),
                seq,
            };
            let stored_prev: Vec<u8> = r.try_get(13)?;
            let stored_hash: Vec<u8> = r.try_get(14)?;
            if seq != expected_seq || stored_prev != prev {
                return Err(broken());
            }
            let (actor, action, scope, target, method, result): (
                String,
                String,
                String,
                String,
                String,
                String,
            ) = (
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
                r.try_get(12)?,
            );
            let (nonce, request_hash, signature): (Vec<u8>, Vec<u8>, Vec<u8>) =
                (r.try_get(9)?, r.try_get(10)?, r.try_get(11)?);
            let hash = AuditRecord {
                seq: u64::try_from(seq).map_err(|_| broken())?,
                time_ms: r.try_get(2)?,
                actor: &actor,
                action: &action,
                scope: &scope,
                target: &target,
                method: &method,
                request_timestamp_ms: r.try_get(8)?,
                nonce: &nonce,
                request_hash: &request_hash,
                signature: &signature,
                result: &result,
            }
            .chain_hash(&prev);
            if stored_hash != hash {
                return Err(broken());
            }
            prev = hash;
            expected_seq += 1;
            $report.audit_entries += 1;
        }
    }};
}

macro_rules! ensure_empty {
    ($tx:expr, $data:expr) => {{
        for d in $data.iter() {
            if REPLACED.contains(&d.table.name) {
                sqlx::query(&format!("DELETE FROM {}", d.table.name))
                    .execute(&mut *$tx)
                    .await?;
                continue;
            }
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", d.table.name))
                .fetch_one(&mut *$tx)
                .await?;
            if n != 0 {
                return Err(CopyError::TargetNotEmpty {
                    table: d.table.name,
                    rows: n,
                });
            }
        }
    }};
}

/// Copies every zopp table from `from` to `to` (each `sqlite://PATH` or `postgres://URL`),
/// migrating the target first; see the module docs for the guarantees.
///
/// # Errors
/// [`CopyError`]; the target is left without any copied row on every error.
pub async fn copy_database(from: &str, to: &str) -> Result<CopyReport, CopyError> {
    if from == to {
        return Err(CopyError::SameDatabase);
    }
    let mut data = read_source(from).await?;
    for d in data.iter_mut().filter(|d| d.table.name == "principals") {
        d.rows = order_principals(&d.columns, std::mem::take(&mut d.rows))?;
    }
    let mut report = CopyReport {
        tables: data.iter().map(|d| (d.table.name, d.rows.len())).collect(),
        ..CopyReport::default()
    };
    match backend_of(to)? {
        Backend::Sqlite => {
            let target = SqliteStorage::open(to).await?;
            let mut tx = target.write_pool().begin_with("BEGIN IMMEDIATE").await?;
            ensure_empty!(tx, data);
            for d in &data {
                insert_rows!(Sqlite, tx, d);
            }
            verify_target!(tx, data, report);
            tx.commit().await?;
            target.close().await;
        }
        Backend::Postgres => {
            let target = PgStorage::open(to).await?;
            let mut tx = target.pool().begin().await?;
            // No replica may write while the copy runs: a concurrent writer would make the
            // emptiness check stale. The lock ends with the transaction.
            for d in &data {
                sqlx::query(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", d.table.name))
                    .execute(&mut *tx)
                    .await?;
            }
            ensure_empty!(tx, data);
            for d in &data {
                insert_rows!(Postgres, tx, d);
            }
            verify_target!(tx, data, report);
            tx.commit().await?;
            target.close().await;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table the migrations create is either copied or deliberately not, and every column
    /// has a type the copy knows; both backends' schemas are checked on SQLite's side here and on
    /// PostgreSQL's by the end-to-end copy test.
    #[tokio::test]
    async fn every_migrated_table_and_column_is_known() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = SqliteStorage::open(&url).await.expect("open");
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(s.write_pool())
                .await
                .expect("tables");
        check_tables(&names).expect("every table is listed");
        for n in names.iter().filter(|n| !NOT_COPIED.contains(&n.as_str())) {
            let cols: Vec<(String, String)> =
                sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                    .bind(n)
                    .fetch_all(s.write_pool())
                    .await
                    .expect("columns");
            for (c, ty) in cols {
                kind_of(n, &c, &ty).expect("known column type");
            }
        }
        s.close().await;
    }

    #[test]
    fn admitters_come_first() {
        let columns: Columns = vec![("id".into(), Text), ("admitted_by".into(), Text)];
        let p = |id: &str, by: Option<&str>| {
            vec![
                Val::Text(Some(id.to_string())),
                Val::Text(by.map(str::to_string)),
            ]
        };
        let ordered = order_principals(
            &columns,
            vec![p("c", Some("b")), p("b", Some("a")), p("a", None)],
        )
        .expect("ordered");
        let ids: Vec<_> = ordered.iter().map(|r| r[0].clone()).collect();
        assert_eq!(ids, ["a", "b", "c"].map(|s| Val::Text(Some(s.to_string()))));
        assert!(matches!(
            order_principals(&columns, vec![p("x", Some("ghost"))]),
            Err(CopyError::DanglingAdmitter(id)) if id == "x"
        ));
    }

    #[tokio::test]
    async fn refuses_a_missing_source_and_the_same_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let from = format!("sqlite://{}", dir.path().join("missing.db").display());
        let to = format!("sqlite://{}", dir.path().join("to.db").display());
        assert!(matches!(
            copy_database(&from, &to).await,
            Err(CopyError::SourceMissing(_))
        ));
        assert!(
            !dir.path().join("missing.db").exists(),
            "source not created"
        );
        assert!(matches!(
            copy_database(&to, &to).await,
            Err(CopyError::SameDatabase)
        ));
    }

    #[tokio::test]
    async fn copies_sqlite_to_sqlite_and_refuses_a_non_empty_target() {
        let dir = tempfile::tempdir().expect("temp dir");
        let from = format!("sqlite://{}", dir.path().join("from.db").display());
        let to = format!("sqlite://{}", dir.path().join("to.db").display());
        let s = SqliteStorage::open(&from).await.expect("open source");
        let f = super::super::suite::Fixture::new(&s).await;
        f.write_one(&s, 1).await;
        f.write_one(&s, 2).await;
        s.close().await;
        let report = copy_database(&from, &to).await.expect("copy");
        assert_eq!(report.chains_verified, 2, "server and workspace chains");
        assert!(report.rows() > 10);
        let copied = SqliteStorage::open(&to).await.expect("open copy");
        use super::super::Storage;
        let v = copied
            .secret_history(
                f.environment,
                &zopp_crypto::envelope::NameDigest::try_from_slice(&[2; 32]).expect("digest"),
            )
            .await
            .expect("history");
        assert_eq!(v.len(), 1);
        copied.close().await;
        assert!(matches!(
            copy_database(&from, &to).await,
            Err(CopyError::TargetNotEmpty { .. })
        ));
    }
}
