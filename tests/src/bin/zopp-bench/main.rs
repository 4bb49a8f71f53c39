//! `zopp-bench`: measures zopp against the DESIGN.md §10 targets on loopback with a real server
//! (SQLite, temporary home) and the real `zopp` binary, and prints a table plus a JSON report
//! (report.rs documents its shape; `--compare OLD.json` prints the change per figure).
//!
//! Run: `cargo build --release --workspace --bins && target/release/zopp-bench [--quick] [--json FILE]`;
//! `zopp-bench --help` lists every flag. `--quick` is the smoke pass CI runs: tiny iteration
//! counts, no targets judged.
//!
//! `--postgres [URL] [--replicas N]` measures only server throughput (signed reads and writes
//! per second) on a fresh database of the PostgreSQL server at `URL` (default
//! `ZOPP_TEST_PG_URL`, else the local test server), through `N` replicas (default 1), for the
//! one-vs-two replica figures in docs/deploy.md. `--throughput-only` measures the same on
//! SQLite alone, for iterating on the server's hot path. With either, `--reads-only`,
//! `--clients N` and `--seconds S` narrow the runs to one phase (e.g. to profile it).
//!
//! Every figure has a stable `id` in the JSON; `tests/tests/bench_smoke.rs` checks them.

mod args;
mod primitives;
mod report;
mod throughput;

use std::time::{Duration, Instant};

use args::Args;
use clap::Parser;
use zopp_proto::v1::EnvironmentRef;
use zopp_tests::{ServerOptions, TestServer, TestUser};

pub(crate) use report::Figure;

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn time_runs(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn rpc_count(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("zopp: rpc-count "))
        .and_then(|n| n.trim().parse().ok())
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) process `pid` ("self" for this one) has used so far.
pub(crate) fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    Some(ticks / 100.0)
}

fn dotenv(n: usize, prefix: &str) -> String {
    (0..n)
        .map(|i| format!("{prefix}_{i:05}=value-{i}-{}\n", "x".repeat(24)))
        .collect()
}

/// Seconds of load per throughput run (full, quick).
const THROUGHPUT_RUN: (Duration, Duration) = (Duration::from_secs(5), Duration::from_millis(150));
/// Time spent on each crypto primitive (full, quick).
const PRIMITIVE_RUN: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(10));

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.replicas != 1 && args.postgres.is_none() {
        eprintln!("zopp-bench: --replicas needs --postgres (SQLite has one server)");
        return std::process::ExitCode::from(2);
    }
    // Read before measuring, so a bad file fails at once rather than after minutes of load.
    let baseline = match args.compare.as_deref().map(report::Report::read) {
        Some(Ok(old)) => Some(old),
        Some(Err(e)) => {
            eprintln!("zopp-bench: {e}");
            return std::process::ExitCode::from(2);
        }
        None => None,
    };
    let run = if args.quick {
        THROUGHPUT_RUN.1
    } else {
        THROUGHPUT_RUN.0
    };
    let load = throughput::Load {
        run: args.seconds.map_or(run, Duration::from_secs_f64),
        reads_only: args.reads_only,
        clients: args.clients,
    };

    let figures = if let Some(url) = &args.postgres {
        if let Some(url) = url {
            // Read by PgDatabase::create; set before any thread starts.
            std::env::set_var("ZOPP_TEST_PG_URL", url);
        }
        server_throughput(Some(zopp_tests::PgDatabase::create()), args.replicas, &load)
    } else if args.throughput_only {
        server_throughput(None, 1, &load)
    } else {
        let mut figures = cli_and_server(args.quick, run);
        figures.extend(audit_verify(args.quick));
        figures.extend(primitives::measure(if args.quick {
            PRIMITIVE_RUN.1
        } else {
            PRIMITIVE_RUN.0
        }));
        figures
    };

    let report = report::Report::new(args.quick, figures);
    report.print_table();
    if let Some(old) = &baseline {
        report.print_comparison(old);
    }
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    match &args.json {
        Some(path) => {
            if let Err(e) = std::fs::write(path, json) {
                eprintln!("zopp-bench: cannot write {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
        }
        None => println!("{json}"),
    }
    std::process::ExitCode::SUCCESS
}

/// Options for a server without a rate limit (the load generator is one principal).
fn unlimited(
    pg: Option<std::sync::Arc<zopp_tests::PgDatabase>>,
    db_url: Option<String>,
) -> ServerOptions {
    ServerOptions {
        db_url,
        pg,
        extra_args: vec!["--rate-limit".into(), "0".into()],
    }
}

/// Creates environment `throughput` holding one secret, for the load generator.
fn throughput_env(user: &TestUser, w: &str) -> EnvironmentRef {
    user.zopp(&["environment", "create", "throughput", "-w", w, "-p", "api"])
        .assert_success();
    user.zopp(&[
        "secret",
        "set",
        "TP_KEY",
        "tp-value",
        "-w",
        w,
        "-p",
        "api",
        "-e",
        "throughput",
    ])
    .assert_success();
    EnvironmentRef {
        workspace: w.into(),
        project: "api".into(),
        environment: "throughput".into(),
    }
}

/// Server throughput only: on SQLite (`pg` None, one server), or on PostgreSQL through
/// `replicas` servers sharing one database.
fn server_throughput(
    pg: Option<std::sync::Arc<zopp_tests::PgDatabase>>,
    replicas: usize,
    load: &throughput::Load,
) -> Vec<Figure> {
    let first = TestServer::start_with(unlimited(pg.clone(), None));
    let others: Vec<TestServer> = (1..replicas)
        .map(|_| TestServer::start_with(unlimited(pg.clone(), Some(first.db_url.clone()))))
        .collect();
    let user = TestUser::joined(&first, "bench@example.com");
    user.scaffold("bench", "api", "dev");
    let env = throughput_env(&user, "bench");
    let servers: Vec<&TestServer> = std::iter::once(&first).chain(&others).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let pids: Vec<u32> = servers.iter().filter_map(|s| s.pid()).collect();
    let metrics: Vec<String> = servers
        .iter()
        .filter_map(|s| s.metrics_addr.clone())
        .collect();
    throughput::measure(&urls, &pids, &metrics, user.home.path(), env, load)
}

/// The CLI measures and server throughput on one SQLite server.
fn cli_and_server(quick: bool, run: Duration) -> Vec<Figure> {
    let iters = if quick { 3 } else { 40 };
    let mut figures: Vec<Figure> = Vec::new();

    let server = TestServer::start_with(unlimited(None, None));
    let user = TestUser::joined(&server, "bench@example.com");
    user.scaffold("bench", "api", "dev");
    let env = ["-w", "bench", "-p", "api", "-e", "dev"];
    let with_env = |head: &[&'static str]| -> Vec<&'static str> {
        let mut v = head.to_vec();
        v.extend_from_slice(&env);
        v
    };

    if let Some(kib) = server.pid().and_then(rss_kib) {
        figures.push(Figure {
            id: "server_idle_rss".into(),
            name: "server idle RSS".into(),
            value: kib as f64 / 1024.0,
            unit: "MiB".into(),
            target: Some(15.0),
            lower_is_better: true,
            detail: String::new(),
            ..Default::default()
        });
    }

    // `zopp secret get`, end to end with process start, warm key cache.
    user.zopp(&with_env(&["secret", "set", "BENCH_KEY", "bench-value"]))
        .assert_success();
    user.zopp(&with_env(&["secret", "get", "BENCH_KEY"]))
        .assert_success();
    let counted = user.zopp_env(
        &with_env(&["secret", "get", "BENCH_KEY"]),
        &[("ZOPP_DEBUG_RPC_COUNT", "1")],
    );
    let get_rpcs = rpc_count(&counted.stderr());
    let get_args = with_env(&["secret", "get", "BENCH_KEY"]);
    let t = time_runs(iters, || {
        user.zopp(&get_args).assert_success();
    });
    figures.push(Figure {
        id: "secret_get".into(),
        name: "secret get (median)".into(),
        value: percentile(&t, 0.5),
        unit: "ms".into(),
        target: Some(6.0),
        lower_is_better: true,
        detail: format!(
            "{} round trip(s)",
            get_rpcs.map_or("?".into(), |n| n.to_string())
        ),
        round_trips: get_rpcs,
        ..Figure::percentiles(&t)
    });

    // Import of 10,000 dotenv lines, then export of 10,000 secrets.
    let n_import = if quick { 200 } else { 10_000 };
    let import = dotenv(n_import, "IMPORTED");
    let t0 = Instant::now();
    let out = user.zopp_stdin(
        &with_env(&["secret", "import", "--format", "dotenv", "-i", "-"]),
        import.as_bytes(),
    );
    let import_ms = t0.elapsed().as_secs_f64() * 1e3;
    if out.code() == 0 {
        figures.push(Figure {
            id: "import".into(),
            name: format!("import {n_import} dotenv lines"),
            value: import_ms,
            unit: "ms".into(),
            target: (!quick).then_some(2000.0),
            lower_is_better: true,
            detail: String::new(),
            ..Default::default()
        });
        let exp_args = with_env(&["secret", "export", "--format", "dotenv"]);
        let t = time_runs(if quick { 1 } else { 5 }, || {
            user.zopp(&exp_args).assert_success();
        });
        figures.push(Figure {
            id: "export".into(),
            name: format!("export {n_import} secrets (median)"),
            value: percentile(&t, 0.5),
            unit: "ms".into(),
            target: (!quick).then_some(200.0),
            lower_is_better: true,
            detail: String::new(),
            ..Figure::percentiles(&t)
        });
    } else {
        eprintln!("zopp-bench: import unavailable: {}", out.stderr().trim());
    }

    // `zopp run -- true` with 10, 100, 1,000 secrets in their own environments.
    for n in [10usize, 100, 1000] {
        let e = format!("run{n}");
        user.zopp(&["environment", "create", &e, "-w", "bench", "-p", "api"])
            .assert_success();
        let file = dotenv(n, "RUN");
        let imp = user.zopp_stdin(
            &[
                "secret", "import", "--format", "dotenv", "-i", "-", "-w", "bench", "-p", "api",
                "-e", &e,
            ],
            file.as_bytes(),
        );
        if imp.code() != 0 {
            break;
        }
        let run_args = ["run", "-w", "bench", "-p", "api", "-e", &e, "--", "true"];
        let warm = user.zopp_env(&run_args, &[("ZOPP_DEBUG_RPC_COUNT", "1")]);
        if warm.code() != 0 {
            eprintln!("zopp-bench: run unavailable: {}", warm.stderr().trim());
            break;
        }
        let rpcs = rpc_count(
            &user
                .zopp_env(&run_args, &[("ZOPP_DEBUG_RPC_COUNT", "1")])
                .stderr(),
        );
        let t = time_runs(iters, || {
            user.zopp(&run_args).assert_success();
        });
        figures.push(Figure {
            id: format!("run_{n}"),
            name: format!("run -- true, {n} secrets (median)"),
            value: percentile(&t, 0.5),
            unit: "ms".into(),
            target: (n == 1000).then_some(25.0),
            lower_is_better: true,
            detail: format!(
                "{} round trip(s)",
                rpcs.map_or("?".into(), |n| n.to_string())
            ),
            round_trips: rpcs,
            ..Figure::percentiles(&t)
        });
    }

    if let Some(kib) = server.pid().and_then(rss_kib) {
        figures.push(Figure {
            id: "server_rss_after_cli".into(),
            name: "server RSS after CLI load".into(),
            value: kib as f64 / 1024.0,
            unit: "MiB".into(),
            target: None,
            lower_is_better: true,
            detail: String::new(),
            ..Default::default()
        });
    }

    let env = throughput_env(&user, "bench");
    figures.extend(throughput::measure(
        &[server.url()],
        &server.pid().into_iter().collect::<Vec<_>>(),
        &server.metrics_addr.iter().cloned().collect::<Vec<_>>(),
        user.home.path(),
        env,
        &throughput::Load::all(run),
    ));
    figures
}

// ---------- `zopp audit verify` throughput (DESIGN.md §10) ----------
//
// A chain of N entries, each from its own signed request (so every entry costs a signature
// check: the worst case, since the entries of one multi-write request share one), filled by
// concurrent signed `GetEnvironment` reads on a server of its own without a rate limit. Then
// `zopp audit verify` runs cold (no pinned head) and the figure is entries per second of the
// whole command: process start, paging, hashing, signatures and writing the pin.

/// Entries in the chain for the full run and for the quick smoke pass.
const AUDIT_ENTRIES: (usize, usize) = (100_000, 500);
/// Concurrent readers filling the chain.
const AUDIT_FILL_READERS: usize = 32;

fn audit_verify(quick: bool) -> Vec<Figure> {
    let n = if quick {
        AUDIT_ENTRIES.1
    } else {
        AUDIT_ENTRIES.0
    };
    let server = TestServer::start_with(zopp_tests::ServerOptions {
        extra_args: vec!["--rate-limit".into(), "0".into()],
        ..Default::default()
    });
    let user = TestUser::joined(&server, "audit-bench@example.com");
    user.scaffold("audit", "api", "dev");
    let filled = Instant::now();
    fill_audit_chain(&server.url(), user.home.path(), n);
    let fill_s = filled.elapsed().as_secs_f64();

    let pins = user.home.path().join("audit-pins");
    let args = ["audit", "verify", "-w", "audit", "--output", "json"];
    let runs = if quick { 1 } else { 5 };
    let mut entries = 0u64;
    let t = time_runs(runs, || {
        // Cold: nothing pinned, so the run is exactly a first verification.
        let _ = std::fs::remove_dir_all(&pins);
        let out = user.zopp(&args);
        out.assert_success();
        entries = out.json()["entries"].as_u64().unwrap_or(0);
    });
    let median_ms = percentile(&t, 0.5);
    vec![Figure {
        id: "audit_verify".into(),
        name: format!("audit verify, {entries} entries"),
        value: entries as f64 / (median_ms / 1e3),
        unit: "entries/s".into(),
        target: (!quick).then_some(50_000.0),
        lower_is_better: false,
        detail: format!(
            "median {median_ms:.0} ms of {runs} cold runs, process start included; \
             chain filled by {n} signed reads in {fill_s:.1} s"
        ),
        ..Default::default()
    }]
}

/// Appends `n` entries to workspace `audit`'s chain: signed `GetEnvironment` reads, each logged
/// as `environment.keys` with its own request signature.
fn fill_audit_chain(url: &str, home: &std::path::Path, n: usize) {
    use zopp_proto::v1::{EnvironmentRef, GetEnvironmentRequest};
    const GET_ENVIRONMENT: &str = "/zopp.v1.Zopp/GetEnvironment";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let signer = std::sync::Arc::new(zopp_tests::signed::Signer::load(home));
        let client = zopp_tests::signed::connect(url).await;
        let mut readers = tokio::task::JoinSet::new();
        for r in 0..AUDIT_FILL_READERS {
            let share = n / AUDIT_FILL_READERS + usize::from(r < n % AUDIT_FILL_READERS);
            let signer = signer.clone();
            let mut client = client.clone();
            readers.spawn(async move {
                for _ in 0..share {
                    let req = signer.request(
                        GET_ENVIRONMENT,
                        GetEnvironmentRequest {
                            env: Some(EnvironmentRef {
                                workspace: "audit".into(),
                                project: "api".into(),
                                environment: "dev".into(),
                            }),
                        },
                    );
                    client.get_environment(req).await.expect("audited read");
                }
            });
        }
        while let Some(done) = readers.join_next().await {
            done.expect("reader task");
        }
    });
}
