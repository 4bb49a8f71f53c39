//! `zopp-bench`'s command line.

use std::path::PathBuf;

use clap::Parser;

/// Measures zopp against the DESIGN.md §10 targets: a real `zopp-server` on loopback with a
/// temporary home, the real `zopp` binary and an in-process signed load generator. Prints a
/// table (and a comparison with `--compare`) on stdout, then the JSON report (or writes it to
/// `--json FILE`). Build with `cargo build --release --workspace --bins` first: figures from a
/// debug build are not meaningful.
#[derive(Debug, Parser)]
#[command(name = "zopp-bench", version)]
pub struct Args {
    /// Smoke pass: tiny iteration counts, no target judged (what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Write the JSON report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print each figure's change against an earlier JSON report.
    #[arg(long, value_name = "OLD.json")]
    pub compare: Option<PathBuf>,
    /// Server throughput only, on a fresh database of the PostgreSQL server at URL (default:
    /// ZOPP_TEST_PG_URL, else the local test server).
    #[arg(long, value_name = "URL", num_args = 0..=1)]
    pub postgres: Option<Option<String>>,
    /// Replicas sharing the PostgreSQL database (needs --postgres).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub replicas: usize,
    /// Server throughput only, on SQLite (for iterating on the server's hot path).
    #[arg(long)]
    pub throughput_only: bool,
    /// With --postgres or --throughput-only: measure reads only.
    #[arg(long)]
    pub reads_only: bool,
    /// With --postgres or --throughput-only: one concurrency only.
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub clients: Option<usize>,
    /// Seconds of load per throughput run.
    #[arg(long, value_name = "S", value_parser = positive_seconds)]
    pub seconds: Option<f64>,
}

fn positive_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number above zero")),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}
