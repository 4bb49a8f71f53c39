//! The malicious server, for tests: edits the database under a running [`TestServer`] the way an
//! operator who controls it could (THREAT-MODEL.md §4.2), so a test can show that the client
//! refuses what comes back.
//!
//! Every edit is plain SQL on the server's own database (SQLite file or PostgreSQL), made while
//! the server runs. The SQLite server's read cache is keyed by a read epoch that triggers raise
//! on every change to the tables it caches (docs/ARCHITECTURE.md "read epoch"), so the next
//! request sees the edit; PostgreSQL has no such cache. Immutability triggers are switched off
//! first where an edit needs it: the attacker owns the database, triggers included.
//!
//! Scopes are addressed by name and resolved to ids inside the SQL, so no helper needs to read
//! a row back into Rust. Snapshots ([`Tamper::save_environment_key`]) are copied into a table of
//! the attacker's own inside the same database and put back later.

use crate::{pg, Backend, TestServer};

/// Edits the database of one running server.
pub struct Tamper<'a> {
    server: &'a TestServer,
}

/// SQL selecting the id of environment `e` of project `p` in workspace `w` (live scopes only).
fn env_id_sql(w: &str, p: &str, e: &str) -> String {
    format!(
        "(SELECT e.id FROM environments e \
           JOIN projects pr ON pr.id = e.project_id \
           JOIN workspaces ws ON ws.id = e.workspace_id \
          WHERE ws.name = {} AND pr.name = {} AND e.name = {} \
            AND e.deleted_at IS NULL AND pr.deleted_at IS NULL AND ws.deleted_at IS NULL)",
        quote(w),
        quote(p),
        quote(e)
    )
}

/// A SQL string literal (test names only: no user input reaches this).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A table name made of a test's label: letters, digits and `_` only.
fn table(label: &str) -> String {
    assert!(
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "snapshot labels are plain identifiers, not {label:?}"
    );
    format!("tamper_{label}")
}

impl<'a> Tamper<'a> {
    /// The attacker's handle on `server`'s database.
    pub fn new(server: &'a TestServer) -> Self {
        Self { server }
    }

    /// Runs `sql`, panicking with the statement when the database refuses it.
    pub fn exec(&self, sql: &str) -> u64 {
        self.server
            .exec_sql(sql)
            .unwrap_or_else(|e| panic!("tamper SQL failed: {e}\n{sql}"))
    }

    /// The first column of the first row of `sql`, as text (`None` for no row or NULL).
    pub fn query_text(&self, sql: &str) -> Option<String> {
        use sqlx::Row;
        let sql = format!("SELECT CAST(({sql}) AS TEXT)");
        match self.server.backend() {
            Backend::Sqlite => {
                use sqlx::Connection;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(async {
                        let opts = sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(self.server.db_path())
                            .busy_timeout(std::time::Duration::from_secs(10));
                        let mut c = sqlx::SqliteConnection::connect_with(&opts)
                            .await
                            .expect("open the server's SQLite file");
                        let row = sqlx::query(&sql)
                            .fetch_one(&mut c)
                            .await
                            .unwrap_or_else(|e| panic!("tamper query failed: {e}\n{sql}"));
                        row.try_get::<Option<String>, _>(0).expect("text column")
                    })
            }
            Backend::Postgres => pg::with_conn(&self.server.db_url, move |c| {
                Box::pin(async move {
                    let row = sqlx::query(&sql)
                        .fetch_one(&mut *c)
                        .await
                        .unwrap_or_else(|e| panic!("tamper query failed: {e}\n{sql}"));
                    row.try_get::<Option<String>, _>(0).expect("text column")
                }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>
            }),
        }
    }

    /// `sql` (a count or another integer), as a number.
    pub fn query_i64(&self, sql: &str) -> i64 {
        self.query_text(sql)
            .unwrap_or_else(|| panic!("no value from {sql}"))
            .parse()
            .expect("an integer")
    }

    /// The id of environment `w/p/e`.
    pub fn environment_id(&self, w: &str, p: &str, e: &str) -> String {
        self.query_text(&env_id_sql(w, p, e))
            .unwrap_or_else(|| panic!("no environment {w}/{p}/{e}"))
    }

    /// How many versions environment `w/p/e` stores (to show that nothing was written).
    pub fn version_count(&self, w: &str, p: &str, e: &str) -> i64 {
        self.query_i64(&format!(
            "SELECT count(*) FROM secret_versions WHERE environment_id = {}",
            env_id_sql(w, p, e)
        ))
    }

    /// Swaps the names of environments `a` and `b` of `w/p`: who asks for `a` gets `b`'s id,
    /// keys and secrets, and the reverse.
    pub fn swap_environments(&self, w: &str, p: &str, a: &str, b: &str) {
        let (ia, ib) = (self.environment_id(w, p, a), self.environment_id(w, p, b));
        // Through a third name: the live-name index is checked row by row.
        for (id, name) in [(&ia, "tamper-swap"), (&ib, a), (&ia, b)] {
            self.exec(&format!(
                "UPDATE environments SET name = {} WHERE id = {}",
                quote(name),
                quote(id)
            ));
        }
    }

    /// Copies environment `w/p/e`'s current key (the EK wrapped under its project key) and key
    /// epoch into a table named after `label`, to be put back by
    /// [`Tamper::restore_environment_key`].
    pub fn save_environment_key(&self, label: &str, w: &str, p: &str, e: &str) {
        self.exec(&format!(
            "CREATE TABLE {} AS SELECT id, wrapped_key, key_epoch FROM environments WHERE id = {}",
            table(label),
            env_id_sql(w, p, e)
        ));
    }

    /// Puts back the key and epoch saved under `label`: a rotation rolled back, every later
    /// epoch hidden again.
    pub fn restore_environment_key(&self, label: &str) {
        let t = table(label);
        let n = self.exec(&format!(
            "UPDATE environments SET \
               wrapped_key = (SELECT wrapped_key FROM {t}), \
               key_epoch = (SELECT key_epoch FROM {t}) \
             WHERE id = (SELECT id FROM {t})"
        ));
        assert_eq!(n, 1, "the saved environment no longer exists");
    }

    /// Copies the rows of `table` matching `filter` into a table named after `label`.
    pub fn save_rows(&self, label: &str, table_name: &str, filter: &str) {
        self.exec(&format!(
            "CREATE TABLE {} AS SELECT * FROM {table_name} WHERE {filter}",
            table(label)
        ));
    }

    /// Puts back `columns` of the rows saved under `label`, matched by `key`; returns the rows
    /// changed. For scope rows that others reference (they cannot be deleted and re-inserted).
    pub fn restore_columns(
        &self,
        label: &str,
        table_name: &str,
        key: &str,
        columns: &[&str],
    ) -> u64 {
        let t = table(label);
        let set: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = (SELECT s.{c} FROM {t} s WHERE s.{key} = {table_name}.{key})"))
            .collect();
        self.exec(&format!(
            "UPDATE {table_name} SET {} WHERE {key} IN (SELECT {key} FROM {t})",
            set.join(", ")
        ))
    }

    /// Replaces the rows of `table` matching `filter` with those saved under `label`.
    pub fn restore_rows(&self, label: &str, table_name: &str, filter: &str) {
        self.exec(&format!("DELETE FROM {table_name} WHERE {filter}"));
        self.exec(&format!(
            "INSERT INTO {table_name} SELECT * FROM {}",
            table(label)
        ));
    }

    /// SQL selecting the id of project `p` of workspace `w`.
    pub fn project_id_sql(w: &str, p: &str) -> String {
        format!(
            "(SELECT pr.id FROM projects pr JOIN workspaces ws ON ws.id = pr.workspace_id \
              WHERE ws.name = {} AND pr.name = {} AND pr.deleted_at IS NULL AND ws.deleted_at IS NULL)",
            quote(w),
            quote(p)
        )
    }

    /// SQL selecting the id of workspace `w`.
    pub fn workspace_id_sql(w: &str) -> String {
        format!(
            "(SELECT id FROM workspaces WHERE name = {} AND deleted_at IS NULL)",
            quote(w)
        )
    }

    /// SQL selecting the id of environment `e` of `w/p`.
    pub fn environment_id_sql(w: &str, p: &str, e: &str) -> String {
        env_id_sql(w, p, e)
    }

    /// Serves the previous version of every secret of `w/p/e` that has one as its head: a
    /// genuinely signed, older state passed off as current.
    pub fn roll_back_heads(&self, w: &str, p: &str, e: &str) -> u64 {
        self.exec(&format!(
            "UPDATE secret_heads SET \
               hash = (SELECT v.hash FROM secret_versions v \
                        WHERE v.environment_id = secret_heads.environment_id \
                          AND v.name_digest = secret_heads.name_digest \
                          AND v.version = secret_heads.version - 1), \
               deleted = (SELECT v.deleted FROM secret_versions v \
                        WHERE v.environment_id = secret_heads.environment_id \
                          AND v.name_digest = secret_heads.name_digest \
                          AND v.version = secret_heads.version - 1), \
               version = version - 1 \
             WHERE environment_id = {} AND version > 1",
            env_id_sql(w, p, e)
        ))
    }

    /// Lets stored versions be edited in place (they are immutable by trigger).
    fn unlock_versions(&self) {
        match self.server.backend() {
            Backend::Sqlite => {
                self.exec("DROP TRIGGER IF EXISTS secret_versions_no_update");
            }
            Backend::Postgres => {
                self.exec("ALTER TABLE secret_versions DISABLE TRIGGER secret_versions_no_update");
            }
        }
    }

    /// Runs `UPDATE secret_versions SET {set} WHERE environment_id = <w/p/e> AND {filter}` with
    /// the immutability trigger off; returns the rows changed. For rewriting what a version
    /// claims outside its envelope: `env_version`, `created_at`, `version`.
    pub fn rewrite_versions(&self, w: &str, p: &str, e: &str, set: &str, filter: &str) -> u64 {
        self.unlock_versions();
        self.exec(&format!(
            "UPDATE secret_versions SET {set} WHERE environment_id = {} AND ({filter})",
            env_id_sql(w, p, e)
        ))
    }

    /// Flips one byte of the sealed value of every current version in `w/p/e`: a value the
    /// server made up, stored where the real one was.
    pub fn forge_values(&self, w: &str, p: &str, e: &str) -> u64 {
        let flipped = match self.server.backend() {
            // The last byte is in the tag; any change breaks it.
            // `||` yields text in SQLite: cast back, the column holds bytes.
            Backend::Sqlite => {
                "CAST(substr(envelope, 1, length(envelope) - 1) || \
                 CASE WHEN substr(envelope, -1) = X'00' THEN X'01' ELSE X'00' END AS BLOB)"
            }
            Backend::Postgres => {
                "set_byte(envelope, length(envelope) - 1, \
                 (get_byte(envelope, length(envelope) - 1) + 1) % 256)"
            }
        };
        self.rewrite_versions(
            w,
            p,
            e,
            &format!("envelope = {flipped}"),
            "NOT deleted AND length(envelope) > 0",
        )
    }
}

impl TestServer {
    /// The attacker's handle on this server's database.
    pub fn tamper(&self) -> Tamper<'_> {
        Tamper::new(self)
    }
}
