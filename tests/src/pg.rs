//! PostgreSQL for the end-to-end tests.
//!
//! [`PgDatabase`]: a fresh database per test on the shared server named by `ZOPP_TEST_PG_URL`
//! (default [`DEFAULT_ADMIN_URL`]; `scripts/test.sh` installs and starts it), dropped when the
//! last handle goes, so tests run in parallel without seeing each other's rows.
//!
//! [`PrivateCluster`]: a whole PostgreSQL instance owned by one test, for tests that stop and
//! start the database under a running server; stopping the shared server would fail every other
//! test running at the time.
//!
//! Nothing here skips: without PostgreSQL a test fails with a message saying how to start it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use sqlx::{Connection, Executor, PgConnection, Row};

/// Maintenance URL used when `ZOPP_TEST_PG_URL` is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// The maintenance URL: `ZOPP_TEST_PG_URL` or [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var("ZOPP_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` with a connection to `url` on a private runtime (callers are plain `#[test]`s).
pub fn with_conn<T>(
    url: &str,
    f: impl for<'c> FnOnce(
        &'c mut PgConnection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'c>>,
) -> T {
    runtime().block_on(async {
        let mut conn = connect(url).await;
        let out = f(&mut conn).await;
        let _ = conn.close().await;
        out
    })
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach PostgreSQL at {url} ({e}); run the tests with `bash scripts/test.sh` \
             (installs and starts a local cluster), start one with `pg_ctlcluster \
             --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point \
             ZOPP_TEST_PG_URL at a server",
            url = redact(url)
        )
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Replaces the database name in a `postgres://…/db[?…]` URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let cut = base
        .rfind('/')
        .filter(|i| *i > base.find("://").map_or(0, |s| s + 2))
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database created for one test (and its replicas) and dropped with the last handle.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `zopp_test_<random>` on the shared server.
    pub fn create() -> Arc<Self> {
        let admin_url = admin_url();
        let mut b = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let name = format!("zopp_test_{}", hex::encode(b));
        let sql = format!("CREATE DATABASE {name}");
        with_conn(&admin_url, |c| {
            Box::pin(async move {
                c.execute(sql.as_str()).await.expect("create test database");
            })
        });
        let url = with_database(&admin_url, &name);
        Arc::new(Self {
            admin_url,
            name,
            url,
        })
    }

    /// The database's URL, for `--db`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every row of every table, one line per row in PostgreSQL's text form (`bytea` as
    /// `\x…` hex): what a stolen dump of the database would show.
    pub fn dump(&self) -> String {
        with_conn(&self.url, |c| {
            Box::pin(async move {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT quote_ident(table_name) FROM information_schema.tables \
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
                     ORDER BY table_name",
                )
                .fetch_all(&mut *c)
                .await
                .expect("list tables");
                assert!(
                    tables.iter().any(|t| t == "secret_versions"),
                    "schema missing: {tables:?}"
                );
                let mut out = String::new();
                for t in tables {
                    let rows = sqlx::query(&format!("SELECT t::text FROM {t} t"))
                        .fetch_all(&mut *c)
                        .await
                        .expect("dump table");
                    for r in rows {
                        out.push_str(&t);
                        out.push(' ');
                        out.push_str(&r.get::<String, _>(0));
                        out.push('\n');
                    }
                }
                out
            })
        })
    }

    /// Runs a query returning one `bigint`.
    pub fn scalar(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        with_conn(&self.url, |c| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&mut *c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            })
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = self.admin_url.clone();
        // Best effort: a leftover database is harmless (random name) and must not turn a
        // passing test into a panic during unwinding.
        let _ = std::thread::spawn(move || {
            runtime().block_on(async {
                if let Ok(mut c) = PgConnection::connect(&admin).await {
                    let _ = c.execute(sql.as_str()).await;
                    let _ = c.close().await;
                }
            })
        })
        .join();
    }
}

/// A PostgreSQL instance of its own (initdb in a temporary directory, a free loopback port,
/// trust authentication), which a test may stop and start at will. Stopped and removed on drop,
/// whatever the test's outcome.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    run_as_postgres: bool,
    tls: bool,
}

impl PrivateCluster {
    /// Initialises and starts a new cluster.
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// Like [`PrivateCluster::start`], with TLS on: a fresh test CA ([`PrivateCluster::ca_path`])
    /// signs a server certificate for `localhost` and `127.0.0.1`.
    pub fn start_with_tls() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Self {
        let bindir = server_bindir();
        let dir = tempfile::tempdir().expect("cluster dir");
        // PostgreSQL refuses to run as root: as root, hand the directory to the `postgres`
        // account the package created and run its tools as that user.
        let run_as_postgres = is_root();
        if run_as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let port = free_port();
        let c = Self {
            dir,
            bindir,
            port,
            run_as_postgres,
            tls,
        };
        if tls {
            c.make_certificates();
        }
        c.tool(
            "initdb",
            &[
                "-D",
                &c.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        c.start_again();
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str, args: &[&str]) {
        let exe = self.bindir.join(name);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(self.dir.path());
        run(&mut cmd);
    }

    /// The cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The cluster's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA that signed the server certificate (TLS clusters).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// PEM of an unrelated CA, for checking that verification refuses the server.
    pub fn other_ca_path(&self) -> PathBuf {
        self.dir.path().join("tls/other-ca.pem")
    }

    fn make_certificates(&self) {
        let tls = self.dir.path().join("tls");
        std::fs::create_dir(&tls).expect("tls dir");
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(&tls));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, cn) in [("ca", "zopp test CA"), ("other-ca", "unrelated CA")] {
            let mut a = vec!["req", "-x509"];
            a.extend_from_slice(&ec);
            let key = format!("{name}.key");
            let pem = format!("{name}.pem");
            let subj = format!("/CN={cn}");
            a.extend_from_slice(&["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            a.extend_from_slice(&["-addext", "basicConstraints=critical,CA:TRUE"]);
            a.extend_from_slice(&["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&a);
        }
        let mut a = vec!["req"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&a);
        std::fs::write(
            tls.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        // PostgreSQL insists on a private key file only its owner can read.
        run(Command::new("chmod")
            .arg("0600")
            .arg(tls.join("server.key")));
        if self.run_as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&tls));
        }
    }

    /// Starts the (stopped) cluster on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let tls = self.dir.path().join("tls");
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                tls.join("server.crt").display(),
                tls.join("server.key").display()
            ));
        }
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let url = self.url();
        let deadline = Instant::now() + Duration::from_secs(30);
        runtime().block_on(async {
            while PgConnection::connect(&url).await.is_err() {
                assert!(Instant::now() < deadline, "private cluster did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Stops the cluster the way a crash would (immediate mode: every backend is killed at
    /// once, nothing is flushed or checkpointed; the next start replays the WAL).
    pub fn crash(&self) {
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Stops the cluster (fast mode: open transactions are rolled back, committed ones stay).
    pub fn stop(&self) {
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let exe = self.bindir.join("pg_ctl");
        let data = self.data();
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // Already stopped is fine; the directory goes with the TempDir.
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Directory of the PostgreSQL server programs (`initdb`, `pg_ctl`): the newest
/// `/usr/lib/postgresql/N/bin` (Debian's layout), else wherever `initdb` is on `PATH`.
fn server_bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p).find(|d| Path::new(d).join("initdb").exists())
        })
        .expect("PostgreSQL server programs (initdb, pg_ctl) not found: install PostgreSQL (`bash scripts/test.sh` does)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_swapped_keeping_parameters() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "zopp_test_1"),
            "postgres://u:p@h:5432/zopp_test_1"
        );
        assert_eq!(
            with_database("postgres://h/postgres?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
