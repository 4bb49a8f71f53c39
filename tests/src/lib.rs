//! Helpers for zopp's end-to-end tests: spawn the real `zopp-server` and `zopp` binaries on a
//! free loopback port with a per-test `ZOPP_HOME`, wait on the gRPC health check (never a sleep),
//! and run commands with assertions on exit codes and output.
//!
//! Binaries come from `ZOPP_BIN_DIR`, else from the cargo target directory this test binary was
//! built into (`scripts/test.sh` builds them first).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod certs;
pub mod pg;
pub mod signed;
pub mod tamper;

pub use pg::PgDatabase;

/// The database a [`TestServer`] runs on. End-to-end tests run on both (see
/// [`on_both_backends!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file in the server's temporary home.
    Sqlite,
    /// A fresh database on the shared PostgreSQL server (`ZOPP_TEST_PG_URL`).
    Postgres,
}

/// Emits, for each named `fn NAME(backend: Backend)`, a module `NAME` with two tests, `sqlite`
/// and `postgres`, so one body covers both backends (nextest shows `NAME::sqlite` and
/// `NAME::postgres`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::Backend::Postgres)
            }
        }
    )+};
}

/// Directory holding the `zopp` and `zopp-server` binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZOPP_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>
    let exe = std::env::current_exe().expect("test binary path is known");
    let mut dir = exe
        .parent()
        .expect("test binary has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Sends `signal` to process `pid` by system call. Never shell out to `kill(1)` for this:
/// procps-ng 4.0's `kill -KILL -12345` signals pid -1, i.e. every process on the machine.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::signal::kill(nix_pid(pid)?, signal)
}

/// Sends `signal` to every process in the process group led by `pgid`.
pub fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::signal::killpg(nix_pid(pgid)?, signal)
}

/// A positive pid: 0 and negative values address groups or every process, never one child.
fn nix_pid(pid: u32) -> nix::Result<nix::unistd::Pid> {
    match i32::try_from(pid) {
        Ok(p) if p > 1 => Ok(nix::unistd::Pid::from_raw(p)),
        _ => Err(nix::errno::Errno::EINVAL),
    }
}

/// Path of a workspace binary; panics with a clear hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`) or set ZOPP_BIN_DIR",
        p.display()
    );
    p
}

/// A running `zopp-server` with its own temporary home and log file.
pub struct TestServer {
    child: Child,
    /// The server's `ZOPP_HOME` (holds `server.db`).
    pub home: tempfile::TempDir,
    /// `host:port` the server listens on.
    pub addr: String,
    /// `host:port` of the Prometheus endpoint.
    pub metrics_addr: Option<String>,
    /// The database URL the server uses.
    pub db_url: String,
    /// File receiving the server's stderr (its logs).
    pub log_path: PathBuf,
    /// The PostgreSQL database, when running on one (kept alive while any replica runs).
    pub pg: Option<Arc<PgDatabase>>,
    /// Extra `serve` arguments, kept for [`TestServer::restart`].
    extra_args: Vec<String>,
    /// How clients trust the server when it serves TLS.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Spawns `zopp-server serve` on `listen` and reads the addresses it bound from its stdout.
fn spawn_server(
    home: &Path,
    db_url: &str,
    log_path: &Path,
    listen: &str,
    extra_args: &[String],
) -> (Child, String, Option<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open server log");
    let mut cmd = Command::new(bin("zopp-server"));
    clear_zopp_env(&mut cmd);
    cmd.env("ZOPP_HOME", home)
        .env("RUST_LOG", "info")
        .arg("serve")
        .args(["--listen", listen, "--metrics-listen", "127.0.0.1:0"])
        .args(["--db", db_url, "--log-format", "json"])
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().expect("spawn zopp-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut metrics_addr = None;
    // The server prints its bound addresses on stdout as soon as it has bound them.
    while addr.is_none() {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.strip_prefix("zopp-server listening on ") {
                    addr = Some(a.trim().to_string());
                } else if let Some(a) = line.strip_prefix("zopp-server metrics on ") {
                    metrics_addr = Some(a.trim().to_string());
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                panic!("zopp-server exited before listening; log:\n{log}");
            }
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("address read above"), metrics_addr)
}

/// Options for [`TestServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Database URL; default: SQLite in the server's temporary home.
    pub db_url: Option<String>,
    /// Extra arguments after `serve`.
    pub extra_args: Vec<String>,
    /// Run on this PostgreSQL database (its URL is the default for `db_url`).
    pub pg: Option<Arc<PgDatabase>>,
    /// `--listen` address instead of a free loopback port (to restart on the same one).
    pub listen: Option<String>,
    /// The server serves TLS (its `--tls-*` flags are in `extra_args`): how the health check
    /// trusts it, and [`TestServer::url`] becomes `https://localhost:PORT`.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl TestServer {
    /// Starts a server on SQLite in a fresh temporary home and waits until it is healthy.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with options and waits until it is healthy.
    pub fn start_with(opts: ServerOptions) -> Self {
        let home = tempfile::tempdir().expect("create server home");
        let db_url = opts
            .db_url
            .clone()
            .or_else(|| opts.pg.as_ref().map(|p| p.url().to_string()))
            .unwrap_or_else(|| format!("sqlite://{}", home.path().join("server.db").display()));
        let log_path = home.path().join("server.log");
        let (child, addr, metrics_addr) = spawn_server(
            home.path(),
            &db_url,
            &log_path,
            opts.listen.as_deref().unwrap_or("127.0.0.1:0"),
            &opts.extra_args,
        );
        let server = Self {
            child,
            home,
            addr,
            metrics_addr,
            db_url,
            log_path,
            pg: opts.pg.clone(),
            extra_args: opts.extra_args,
            tls: opts.tls.clone(),
        };
        // A TLS listener does not answer the plaintext health check: its caller checks it.
        if server.tls.is_some() || !server.extra_args.iter().any(|a| a == "--tls-cert") {
            server.wait_healthy(Duration::from_secs(30));
        }
        server
    }

    /// Starts the server again after it exited or was killed: same home, database, options and
    /// address (clients keep their URL), and waits until it is healthy. Its log file is appended
    /// to.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr, metrics_addr) = spawn_server(
            self.home.path(),
            &self.db_url,
            &self.log_path,
            &self.addr,
            &self.extra_args,
        );
        assert_eq!(addr, self.addr, "restarted on another address");
        self.child = child;
        self.metrics_addr = metrics_addr;
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Starts a server on `backend` (a fresh database either way).
    pub fn start_on(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::start(),
            Backend::Postgres => Self::start_postgres(),
        }
    }

    /// Starts a server on a fresh PostgreSQL database.
    pub fn start_postgres() -> Self {
        Self::start_with(ServerOptions {
            pg: Some(PgDatabase::create()),
            ..ServerOptions::default()
        })
    }

    /// Starts another replica on this server's database (PostgreSQL: any number of replicas
    /// may share one database).
    pub fn replica(&self) -> Self {
        Self::start_with(ServerOptions {
            db_url: Some(self.db_url.clone()),
            pg: self.pg.clone(),
            ..ServerOptions::default()
        })
    }

    /// The backend this server runs on.
    pub fn backend(&self) -> Backend {
        if self.db_url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// `http://host:port`, as `ZOPP_SERVER` wants it.
    pub fn url(&self) -> String {
        match &self.tls {
            Some(_) => format!(
                "https://localhost:{}",
                self.addr.rsplit(':').next().expect("host:port")
            ),
            None => format!("http://{}", self.addr),
        }
    }

    /// Blocks until the gRPC health check reports SERVING.
    pub fn wait_healthy(&self, timeout: Duration) {
        let url = self.url();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let deadline = Instant::now() + timeout;
        rt.block_on(async {
            loop {
                let mut endpoint =
                    tonic::transport::Endpoint::from_shared(url.clone()).expect("valid url");
                if let Some(tls) = &self.tls {
                    endpoint = endpoint.tls_config(tls.clone()).expect("TLS config");
                }
                if let Ok(ch) = endpoint.connect().await {
                    let mut c = tonic_health::pb::health_client::HealthClient::new(ch);
                    let req = tonic_health::pb::HealthCheckRequest {
                        service: "zopp.v1.Zopp".into(),
                    };
                    if let Ok(r) = c.check(req).await {
                        if r.into_inner().status
                            == tonic_health::pb::health_check_response::ServingStatus::Serving
                                as i32
                        {
                            return;
                        }
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "zopp-server at {url} never became healthy"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    /// Path of the SQLite database file (when running on SQLite).
    pub fn db_path(&self) -> PathBuf {
        PathBuf::from(self.db_url.trim_start_matches("sqlite://"))
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `zopp-server <args>` against this server's database and home.
    pub fn admin(&self, args: &[&str]) -> TestOutput {
        let mut cmd = Command::new(bin("zopp-server"));
        clear_zopp_env(&mut cmd);
        cmd.env("ZOPP_HOME", self.home.path());
        cmd.args(args);
        if !args.contains(&"--db") {
            cmd.args(["--db", &self.db_url]);
        }
        TestOutput::run(cmd, None)
    }

    /// Runs `sql` directly against the server's database (either backend), as someone with the
    /// disk or the database credentials would; returns the rows affected or the error text.
    pub fn exec_sql(&self, sql: &str) -> Result<u64, String> {
        use sqlx::{Connection, Executor};
        match self.backend() {
            Backend::Sqlite => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(async {
                    let opts = sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(self.db_path())
                        .busy_timeout(Duration::from_secs(10));
                    let mut c = sqlx::SqliteConnection::connect_with(&opts)
                        .await
                        .expect("open the server's SQLite file");
                    c.execute(sql)
                        .await
                        .map(|r| r.rows_affected())
                        .map_err(|e| e.to_string())
                }),
            Backend::Postgres => {
                let sql = sql.to_owned();
                pg::with_conn(&self.db_url, move |c| {
                    Box::pin(async move {
                        c.execute(sql.as_str())
                            .await
                            .map(|r| r.rows_affected())
                            .map_err(|e| e.to_string())
                    })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>
                })
            }
        }
    }

    /// Creates a server invite and returns its token.
    pub fn invite(&self) -> String {
        let out = self.admin(&[
            "invite",
            "create",
            "--expires-hours",
            "1",
            "--output",
            "json",
        ]);
        out.assert_success();
        out.json()["token"]
            .as_str()
            .expect("invite JSON has a token")
            .to_string()
    }

    /// The server's process id (None once it exited).
    pub fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait for zopp-server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clear_zopp_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ZOPP_") && k != "ZOPP_BIN_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
}

/// A `zopp` user with its own home, talking to one server.
pub struct TestUser {
    /// The user's `ZOPP_HOME`.
    pub home: tempfile::TempDir,
    /// Server URL.
    pub server: String,
    /// Working directory for commands (holds any `zopp.toml`).
    pub cwd: tempfile::TempDir,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

impl TestUser {
    /// A user with an empty home (not joined).
    pub fn new(server: &TestServer) -> Self {
        Self {
            home: tempfile::tempdir().expect("create user home"),
            server: server.url(),
            cwd: tempfile::tempdir().expect("create user cwd"),
            env: Vec::new(),
        }
    }

    /// A user who has joined with a fresh server invite.
    pub fn joined(server: &TestServer, email: &str) -> Self {
        let u = Self::new(server);
        u.zopp(&["join", &server.invite(), email]).assert_success();
        u
    }

    /// A `zopp` command with this user's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("zopp"));
        clear_zopp_env(&mut cmd);
        // Test identities are not passphrase-protected (unlocking would cost an Argon2id run per
        // command); without a terminal zopp wants that said explicitly.
        cmd.env("ZOPP_HOME", self.home.path())
            .env("ZOPP_SERVER", &self.server)
            .env("ZOPP_NO_PASSPHRASE", "1")
            .current_dir(self.cwd.path())
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `zopp <args>` with no stdin.
    pub fn zopp(&self, args: &[&str]) -> TestOutput {
        TestOutput::run(self.cmd(args), None)
    }

    /// Runs `zopp <args>` with `stdin` piped in.
    pub fn zopp_stdin(&self, args: &[&str], stdin: &[u8]) -> TestOutput {
        TestOutput::run(self.cmd(args), Some(stdin))
    }

    /// Runs with an extra environment variable.
    pub fn zopp_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &self,
        args: &[&str],
        env: &[(K, V)],
    ) -> TestOutput {
        let mut cmd = self.cmd(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        TestOutput::run(cmd, None)
    }

    /// Creates workspace `w`, project `p` and environment `e`.
    pub fn scaffold(&self, w: &str, p: &str, e: &str) {
        self.zopp(&["workspace", "create", w]).assert_success();
        self.zopp(&["project", "create", p, "-w", w])
            .assert_success();
        self.zopp(&["environment", "create", e, "-w", w, "-p", p])
            .assert_success();
    }
}

/// The result of one command.
#[derive(Debug)]
pub struct TestOutput {
    /// Printed command line, for failure messages.
    pub command: String,
    /// Raw output.
    pub output: Output,
}

impl TestOutput {
    /// Runs `cmd`, feeding `stdin` (or /dev/null).
    pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Self {
        let command = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        if let Some(input) = stdin {
            let mut s = child.stdin.take().expect("piped stdin");
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = s.write_all(&input);
            });
        }
        let output = child.wait_with_output().expect("wait for command");
        Self { command, output }
    }

    /// Exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    /// Stdout as UTF-8.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Stderr as UTF-8.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not JSON ({e}):\n{}",
                self.command,
                self.stdout()
            )
        })
    }

    /// Asserts exit code `code`, printing both streams when it differs.
    pub fn assert_exit_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Asserts exit code 0.
    pub fn assert_success(&self) -> &Self {
        self.assert_exit_code(0)
    }

    /// Asserts stderr contains `needle`.
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr().contains(needle),
            "{}: stderr lacks {needle:?}:\n{}",
            self.command,
            self.stderr()
        );
        self
    }
}

/// Whether `needle` occurs anywhere in the raw bytes of `path` (a database or log file).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut buf = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf).expect("read file");
        }
        Err(_) => return false,
    }
    buf.windows(needle.len()).any(|w| w == needle)
}
