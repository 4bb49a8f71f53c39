//! `zopp-server`: runs the zopp gRPC server (`serve`), applies database migrations (`migrate`)
//! and creates server invites (`invite create`) directly in the database.
//!
//! stdout carries data only: the bound addresses (`zopp-server listening on ADDR`, and
//! `zopp-server metrics on ADDR` before it) and invite tokens. Logs go to stderr.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use zopp_server::ratelimit::{RateLimit, DEFAULT_RATE_PER_SEC};
use zopp_server::server::DEFAULT_DRAIN_TIMEOUT;
use zopp_server::storage::{self, redact_url, Storage};
use zopp_server::{invite, ServeOptions, TlsOptions};

/// The zopp server: a zero-knowledge secrets store over signed gRPC.
#[derive(Parser, Debug)]
#[command(name = "zopp-server", version, propagate_version = true)]
struct Cli {
    /// Database: sqlite://PATH or postgres://URL [default: sqlite://$ZOPP_HOME/server.db]
    #[arg(long, env = "ZOPP_DB", global = true, value_name = "URL")]
    db: Option<String>,

    /// Log format on stderr
    #[arg(
        long,
        env = "ZOPP_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gRPC server until SIGTERM or SIGINT
    Serve(ServeArgs),
    /// Apply database migrations and exit
    Migrate,
    /// Copy every row of a stopped deployment's database into a new, empty one (e.g. SQLite to
    /// PostgreSQL), verifying counts and audit chains before committing
    MigrateData(MigrateDataArgs),
    /// Manage server invites
    Invite {
        #[command(subcommand)]
        command: InviteCommand,
    },
}

#[derive(clap::Args, Debug)]
struct MigrateDataArgs {
    /// Source database (sqlite://PATH or postgres://URL); only read
    #[arg(long, value_name = "URL")]
    from: String,
    /// Target database (sqlite://PATH or postgres://URL); migrated, must be empty
    #[arg(long, value_name = "URL")]
    to: String,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address for gRPC (port 0 picks a free port; the bound address is printed on stdout)
    #[arg(long, env = "ZOPP_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// Address for Prometheus /metrics, or "off"
    #[arg(long, env = "ZOPP_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: String,

    /// TLS certificate chain (PEM); needs --tls-key
    #[arg(long, env = "ZOPP_TLS_CERT", requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); needs --tls-cert
    #[arg(long, env = "ZOPP_TLS_KEY", requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Require client certificates issued by this CA (PEM); needs --tls-cert
    #[arg(
        long,
        env = "ZOPP_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    tls_client_ca: Option<PathBuf>,

    /// Requests per second allowed per principal, with bursts of twice that (0 = no limit)
    #[arg(long, env = "ZOPP_RATE_LIMIT", default_value_t = DEFAULT_RATE_PER_SEC)]
    rate_limit: u32,

    /// Longest graceful drain on shutdown, e.g. 30s
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum InviteCommand {
    /// Create a single-use server invite and print its token
    Create {
        /// Hours until the invite expires
        #[arg(long, default_value_t = invite::DEFAULT_EXPIRES_HOURS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(invite::MAX_EXPIRES_HOURS)))]
        expires_hours: u32,
        /// The URL clients reach this server at; put into the token, so that `zopp join TOKEN
        /// EMAIL` needs no --server
        #[arg(long, value_name = "URL", env = "ZOPP_PUBLIC_URL")]
        url: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Each event is formatted into one buffer and handed to one write(2). Through
    // `std::io::stderr` that write runs under the process-wide stderr lock, and with one log line
    // per call the runtime's threads queued on that lock under load; a duplicate of the
    // descriptor takes no lock in user space. The kernel still keeps each line whole on a file,
    // and on a pipe up to PIPE_BUF (4 KiB; a call's line is a few hundred bytes).
    let writer = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => BoxMakeWriter::new(Arc::new(std::fs::File::from(fd))),
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let db = match cli.db {
        Some(url) => url,
        None => default_db_url()?,
    };
    match cli.command {
        Command::Serve(args) => serve(args, &db).await,
        Command::Migrate => {
            let storage = open_storage(&db).await?;
            tracing::info!(db = %redact_url(&db), "database is up to date");
            drop(storage);
            Ok(())
        }
        Command::MigrateData(a) => migrate_data(&a).await,
        Command::Invite {
            command:
                InviteCommand::Create {
                    expires_hours,
                    url,
                    output,
                },
        } => {
            if let Some(u) = &url {
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.len() > zopp_crypto::locator::MAX_URL_LEN
                    || u.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    anyhow::bail!(
                        "--url '{}' is not a server URL: pass http://HOST:PORT or https://HOST:PORT",
                        u.escape_debug()
                    );
                }
            }
            let storage = open_storage(&db).await?;
            let created = invite::create_server_invite(
                storage.as_ref(),
                expires_hours,
                zopp_server::now_ms(),
                &mut rand::rngs::OsRng,
            )
            .await
            .context("cannot create the invite")?;
            let expires = rfc3339(created.expires_at_ms)?;
            // The token with the server's address attached (threat-model/FORMAT.md: code
            // locators), when the operator said where clients reach it.
            let token = zeroize::Zeroizing::new(match &url {
                Some(u) => zopp_crypto::locator::Locator {
                    server: u.clone(),
                    ca_fingerprint: None,
                }
                .attach(created.token.as_str()),
                None => created.token.as_str().to_owned(),
            });
            let mut out = std::io::stdout().lock();
            match output {
                Output::Human => {
                    writeln!(out, "{}", token.as_str())?;
                    match &url {
                        Some(u) => eprintln!(
                            "single-use invite for {u}, expires {expires}: `zopp join TOKEN EMAIL` needs no --server"
                        ),
                        None => eprintln!(
                            "single-use invite, expires {expires} (pass --url https://HOST:PORT to put the server's address into the token)"
                        ),
                    }
                }
                Output::Json => {
                    let v = serde_json::json!({
                        "token": token.as_str(),
                        "expires_at": expires,
                        "server": url,
                    });
                    writeln!(out, "{v}")?;
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}

/// `migrate-data`: the copy, then a summary on stderr (stdout stays for data).
async fn migrate_data(a: &MigrateDataArgs) -> anyhow::Result<()> {
    let report = storage::copy::copy_database(&a.from, &a.to)
        .await
        .with_context(|| {
            format!(
                "cannot copy {} to {}",
                redact_url(&a.from),
                redact_url(&a.to)
            )
        })?;
    for (table, rows) in &report.tables {
        eprintln!("{table:>24}  {rows} rows");
    }
    eprintln!(
        "copied {} rows from {} to {}; {} audit chains ({} entries) verified",
        report.rows(),
        redact_url(&a.from),
        redact_url(&a.to),
        report.chains_verified,
        report.audit_entries
    );
    Ok(())
}

/// `sqlite://$ZOPP_HOME/server.db`, creating `$ZOPP_HOME` (default `~/.zopp`) with mode 0700.
fn default_db_url() -> anyhow::Result<String> {
    let home = match std::env::var_os("ZOPP_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => {
            let Some(user_home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
                bail!("cannot find a home directory: set ZOPP_HOME or --db");
            };
            PathBuf::from(user_home).join(".zopp")
        }
    };
    if !home.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
    }
    Ok(format!("sqlite://{}", home.join("server.db").display()))
}

async fn open_storage(db: &str) -> anyhow::Result<Arc<dyn Storage>> {
    storage::open(db).await.map_err(|e| open_error(db, &e))
}

/// The innermost cause is the one a person can act on ("unable to open database file").
fn open_error(db: &str, e: &storage::StorageError) -> anyhow::Error {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    anyhow::anyhow!("cannot open database {}: {cause}", redact_url(db))
}

fn rfc3339(ms: i64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .context("expiry time out of range")?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

async fn read_pem(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read {what} {}", path.display()))
}

async fn serve(args: ServeArgs, db: &str) -> anyhow::Result<()> {
    let metrics_addr: Option<SocketAddr> = match args.metrics_listen.as_str() {
        "off" => None,
        a => Some(a.parse().with_context(|| {
            format!("invalid --metrics-listen '{a}': expected HOST:PORT or off")
        })?),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsOptions {
            cert_pem: read_pem(cert, "TLS certificate").await?,
            key_pem: read_pem(key, "TLS key").await?,
            client_ca_pem: match &args.tls_client_ca {
                Some(ca) => Some(read_pem(ca, "TLS client CA").await?),
                None => None,
            },
        }),
        _ => None,
    };
    let prometheus = match metrics_addr {
        Some(_) => Some(zopp_server::metrics::install_recorder()?),
        None => None,
    };

    // For PostgreSQL this also starts the replay cache and change feed shared by replicas.
    let opened = storage::open_for_serving(db)
        .await
        .map_err(|e| open_error(db, &e))?;
    let storage = opened.storage;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    let mut lines = Vec::new();
    if let (Some(addr), Some(handle)) = (metrics_addr, prometheus) {
        let (ml, maddr) = zopp_server::metrics::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tokio::spawn(zopp_server::metrics::serve(ml, handle, metrics_stopped));
        // Printed before the gRPC line: readers may stop reading once they see that one.
        lines.push(format!("zopp-server metrics on {maddr}"));
    }
    lines.push(format!("zopp-server listening on {local}"));
    {
        let mut out = std::io::stdout().lock();
        for l in &lines {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
    }
    tracing::info!(
        listen = %local,
        db = %redact_url(db),
        backend = storage.backend(),
        tls = tls.is_some(),
        "serving"
    );

    let mut opts = ServeOptions {
        rate_limit: if args.rate_limit == 0 {
            RateLimit::unlimited()
        } else {
            RateLimit::per_second(args.rate_limit)
        },
        tls,
        drain_timeout: if args.drain_timeout.is_zero() {
            DEFAULT_DRAIN_TIMEOUT
        } else {
            args.drain_timeout
        },
        ..ServeOptions::default()
    };
    if let Some(shared) = opened.shared {
        opts.replay = shared.replay;
        opts.feed = shared.feed;
    }
    zopp_server::serve(listener, storage, opts, shutdown_signal())
        .await
        .context("server failed")?;
    let _ = stop_metrics.send(true);
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Without signal handlers there is nothing to wait for but Ctrl-C.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
