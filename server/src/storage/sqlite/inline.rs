//! Synchronous SQLite access for the hottest statements: principal look-up, resolution, the
//! fused secret read, the current state of an environment, and audit batches.
//!
//! sqlx runs every SQLite connection on a worker thread of its own: each statement is a message
//! to that thread and each row a message back, so a read that SQLite answers from its mapped
//! page cache in a few microseconds costs several thread wake-ups, which dominated a signed read.
//! These statements run instead on the calling thread, on a small set of read-only connections
//! that hold their prepared statements. They are short indexed look-ups (microseconds) and never
//! wait on a lock (WAL readers see the last committed snapshot), so running them inline does not
//! stall the async runtime. The current state of an environment (thousands of rows for `run`
//! and export) is read here too, but on a blocking thread; other long reads (listings, history)
//! stay on sqlx's pool. [`InlineWriter`] commits the group-committed audit batches.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use rusqlite::types::{FromSql, Value, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

use super::{corrupt, Result, StorageError};

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 32;

/// Typed column access shared by sqlx rows and rows read here, so one decoder serves both.
pub(super) trait Cols {
    /// Column `i` as `T`.
    fn col<T: Col>(&self, i: usize) -> Result<T>;
}

/// A column type both drivers decode.
pub(super) trait Col:
    for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + FromSql
{
}

impl<T> Col for T where T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + FromSql {}

impl Cols for SqliteRow {
    fn col<T: Col>(&self, i: usize) -> Result<T> {
        Ok(self.try_get(i)?)
    }
}

/// A row copied out of a statement, so decoding can run after the statement is reset.
pub(super) struct OwnedRow(Vec<Value>);

impl Cols for OwnedRow {
    fn col<T: Col>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).ok_or_else(|| corrupt("column index"))?;
        T::column_result(ValueRef::from(v)).map_err(|e| StorageError::Corrupt(e.to_string()))
    }
}

fn unavailable(e: rusqlite::Error) -> StorageError {
    StorageError::Unavailable(Box::new(e))
}

/// Read-only connections used on the calling thread.
pub(super) struct InlineReaders {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// Set by [`InlineReaders::close`]: later reads fail as the closed sqlx pools do.
    closed: AtomicBool,
}

impl InlineReaders {
    /// Opens `count` read-only connections to the database file at `path` (which the write
    /// pool has already created and migrated).
    pub(super) fn open(path: &Path, count: usize, busy: Duration) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conns = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            let c = Connection::open_with_flags(path, flags).map_err(unavailable)?;
            c.busy_timeout(busy).map_err(unavailable)?;
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            conns.push(Mutex::new(c));
        }
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Runs `sql` with `$1..$n` bound to `params` and returns every row.
    pub(super) fn query(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<OwnedRow>> {
        self.check_open()?;
        self.with(|c| rows(c, sql, params)).map_err(unavailable)
    }

    /// Runs `f` inside one read transaction, so all its statements see the same snapshot.
    pub(super) fn snapshot<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        self.check_open()?;
        self.with(|c| {
            c.execute_batch("BEGIN DEFERRED")?;
            let out = f(c);
            c.execute_batch("COMMIT")?;
            Ok(out)
        })
        .map_err(unavailable)?
    }

    /// Refuses reads from now on (the storage is closing).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Unavailable("database closed".into()));
        }
        Ok(())
    }

    /// Runs `f` on the first free connection (the next one in turn when all are busy).
    ///
    /// First free, not round robin: every commit (one per audit batch, many per second under
    /// load) empties the page cache of each connection, and the next read on it fetches its
    /// pages again with `pread`. The hot reads run on the runtime's threads, so at most that
    /// many use a connection at once (plus the occasional environment snapshot on a blocking
    /// thread); packing them onto the lowest connections refills about one cache per runtime
    /// thread per commit instead of one per connection.
    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        for c in &self.conns {
            match c.try_lock() {
                Ok(c) => return run(&c, f),
                // A panic mid-read leaves nothing to repair but an open transaction (below).
                Err(TryLockError::Poisoned(p)) => return run(&p.into_inner(), f),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let n = self.conns.len();
        let c = self.conns[self.next.fetch_add(1, Ordering::Relaxed) % n]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        run(&c, f)
    }
}

fn run<R>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    if !c.is_autocommit() {
        // Left open by a read that panicked: end it so this one sees a fresh snapshot.
        c.execute_batch("ROLLBACK")?;
    }
    f(c)
}

/// The read-write connection that commits group-committed audit batches (the hottest write:
/// one per signed read). Callers hold the storage's write gate meanwhile, so this never
/// contends with the server's other writes for SQLite's lock.
pub(super) struct InlineWriter {
    conn: Mutex<Connection>,
}

impl InlineWriter {
    /// Opens the connection with the same durability settings as the sqlx writer.
    pub(super) fn open(path: &Path, busy: Duration) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let c = Connection::open_with_flags(path, flags).map_err(unavailable)?;
        c.busy_timeout(busy).map_err(unavailable)?;
        c.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON;",
        )
        .map_err(unavailable)?;
        c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            conn: Mutex::new(c),
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: committed when it succeeds, rolled back
    /// when it fails.
    pub(super) fn transaction<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let c = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !c.is_autocommit() {
            c.execute_batch("ROLLBACK").map_err(unavailable)?;
        }
        c.execute_batch("BEGIN IMMEDIATE").map_err(unavailable)?;
        match f(&c) {
            Ok(out) => {
                c.execute_batch("COMMIT").map_err(unavailable)?;
                Ok(out)
            }
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Runs statement `sql` on `c` with `$1..$n` bound to `params`.
pub(super) fn execute_on(c: &Connection, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
    let run = || -> rusqlite::Result<usize> {
        let mut stmt = c.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        stmt.raw_execute()
    };
    run().map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StorageError::AlreadyExists(super::Conflict::Other)
        }
        _ => unavailable(e),
    })
}

/// Parameter names of the statements run here (the audit insert has the most).
const PARAM_NAMES: [&str; 15] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
];

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[&dyn ToSql]) -> rusqlite::Result<()> {
    if params.len() > PARAM_NAMES.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            params.len(),
            PARAM_NAMES.len(),
        ));
    }
    for (name, p) in PARAM_NAMES.iter().zip(params) {
        // Statements number their parameters `$1..$n`; SQLite indexes named parameters by first
        // appearance, so bind by name.
        if let Some(idx) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(idx, p)?;
        }
    }
    Ok(())
}

/// Runs `sql` on `c` with `$1..$n` bound to `params` and returns every row.
fn rows(c: &Connection, sql: &str, params: &[&dyn ToSql]) -> rusqlite::Result<Vec<OwnedRow>> {
    let mut stmt = c.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    let width = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(width);
        for i in 0..width {
            vals.push(r.get::<_, Value>(i)?);
        }
        out.push(OwnedRow(vals));
    }
    Ok(out)
}

/// As [`rows`], with the error mapped for storage callers.
pub(super) fn query_on(c: &Connection, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<OwnedRow>> {
    rows(c, sql, params).map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers(dir: &tempfile::TempDir) -> InlineReaders {
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).expect("create");
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (a TEXT, b INTEGER, c BLOB);")
            .expect("schema");
        c.execute("INSERT INTO t VALUES ('x', 7, x'0102')", [])
            .expect("insert");
        InlineReaders::open(&path, 2, Duration::from_secs(1)).expect("open readers")
    }

    #[test]
    fn parameters_bind_by_their_number_not_their_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = readers(&dir);
        let rows = r
            .query("SELECT $2, $1", &[&"first", &"second"])
            .expect("query");
        assert_eq!(rows[0].col::<String>(0).expect("col"), "second");
        assert_eq!(rows[0].col::<String>(1).expect("col"), "first");
    }

    #[test]
    fn columns_decode_by_type_and_mismatches_are_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = readers(&dir);
        let rows = r
            .query("SELECT a, b, c, NULL FROM t WHERE b = $1", &[&7_i64])
            .expect("query");
        let row = &rows[0];
        assert_eq!(row.col::<String>(0).expect("text"), "x");
        assert_eq!(row.col::<i64>(1).expect("int"), 7);
        assert_eq!(row.col::<Vec<u8>>(2).expect("blob"), vec![1, 2]);
        assert_eq!(row.col::<Option<String>>(3).expect("null"), None);
        assert!(matches!(row.col::<i64>(0), Err(StorageError::Corrupt(_))));
        assert!(matches!(
            row.col::<String>(9),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn closed_readers_refuse_and_snapshots_see_one_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = readers(&dir);
        let n = r
            .snapshot(|c| {
                let a = query_on(c, "SELECT COUNT(*) FROM t", &[])?;
                a[0].col::<i64>(0)
            })
            .expect("snapshot");
        assert_eq!(n, 1);
        r.close();
        assert!(matches!(
            r.query("SELECT 1", &[]),
            Err(StorageError::Unavailable(_))
        ));
    }

    #[test]
    fn a_failed_write_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = readers(&dir);
        let w = InlineWriter::open(&dir.path().join("t.db"), Duration::from_secs(1)).expect("open");
        let refused: Result<()> = w.transaction(|c| {
            execute_on(c, "INSERT INTO t VALUES ($1, 8, NULL)", &[&"y"])?;
            Err(StorageError::Corrupt("refused".into()))
        });
        assert!(refused.is_err());
        w.transaction(|c| execute_on(c, "INSERT INTO t VALUES ($1, 9, NULL)", &[&"z"]))
            .expect("commit");
        let rows = r.query("SELECT a FROM t ORDER BY b", &[]).expect("query");
        let names: Vec<String> = rows.iter().map(|r| r.col(0).expect("a")).collect();
        assert_eq!(names, ["x", "z"]);
    }
}
