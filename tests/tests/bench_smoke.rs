//! CI's smoke pass of the benchmark binary. Runs `zopp-bench --quick` (tiny iteration
//! counts against a real server on loopback) and checks that it exits 0 and reports every
//! measure as JSON. It never judges a figure: benchmarks are not timed tests, and a slow
//! machine must not fail CI.

use std::process::Command;

use serde::Deserialize;

/// The `id` of every figure `zopp-bench` reports (DESIGN.md §10).
const EXPECTED: &[&str] = &[
    "server_idle_rss",
    "secret_get",
    "import",
    "export",
    "run_10",
    "run_100",
    "run_1000",
    "server_rss_after_cli",
    "server_reads_1",
    "server_reads_16",
    "server_reads_64",
    "server_reads_64_p99",
    "server_rss_reads_64",
    "server_writes_1",
    "server_writes_16",
    "server_writes_64",
    "server_rss_writes_64",
    "audit_verify",
    "crypto_wrap_to_recipient",
    "crypto_unwrap_from_recipient",
    "crypto_wrap_under",
    "crypto_unwrap_under",
    "crypto_seal_64",
    "crypto_open_64",
    "crypto_sign",
    "crypto_verify",
    "crypto_verify_batch_64",
];

/// One figure of the JSON report; unknown fields are refused so the format stays documented.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Fields are read through Debug and the checks below.
struct Figure {
    id: String,
    name: String,
    value: f64,
    unit: String,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    target: Option<f64>,
    ratio: Option<f64>,
    lower_is_better: bool,
    round_trips: Option<u64>,
    detail: String,
}

/// The whole report (tests/src/bin/zopp-bench/report.rs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    format: u32,
    commit: Option<String>,
    finished: String,
    quick: bool,
    machine: Machine,
    figures: Vec<Figure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Machine {
    cpu: String,
    cores: usize,
    memory_mib: Option<u64>,
    kernel: String,
}

/// Figures measured from a distribution of samples carry their percentiles as numbers.
const WITH_PERCENTILES: &[&str] = &["secret_get", "export", "run_1000", "server_reads_64"];

#[test]
fn quick_pass_reports_every_measure_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("bench.json");
    let out = Command::new(zopp_tests::bin("zopp-bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&report)
        .output()
        .expect("run zopp-bench");
    assert!(
        out.status.success(),
        "zopp-bench --quick failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(&report).expect("zopp-bench wrote its JSON report");
    let parsed: Report = serde_json::from_str(&json).expect("the report is valid JSON");
    assert_eq!(parsed.format, 1);
    assert!(parsed.quick, "a --quick report says so");
    assert!(parsed.machine.cores >= 1 && !parsed.machine.cpu.is_empty());
    let figures = &parsed.figures;
    for id in EXPECTED {
        let f = figures
            .iter()
            .find(|f| f.id == *id)
            .unwrap_or_else(|| panic!("no figure '{id}' in the report:\n{json}"));
        // A measure, not a judgement: any finite, non-negative figure passes.
        assert!(
            f.value.is_finite() && f.value >= 0.0,
            "figure '{id}' is not a measurement: {f:?}"
        );
        assert_eq!(
            f.ratio.is_some(),
            f.target.is_some(),
            "figure '{id}' has a ratio exactly when it has a target: {f:?}"
        );
    }
    for id in WITH_PERCENTILES {
        let f = figures.iter().find(|f| f.id == *id).expect("listed above");
        let (Some(p50), Some(p95), Some(p99)) = (f.p50, f.p95, f.p99) else {
            panic!("figure '{id}' lacks its percentiles: {f:?}");
        };
        assert!(p50 <= p95 && p95 <= p99, "percentiles out of order: {f:?}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("quick smoke pass"),
        "the table says it is a smoke pass:\n{table}"
    );

    // The same report compared with itself: every figure is found and unchanged.
    let cmp = Command::new(zopp_tests::bin("zopp-bench"))
        .args([
            "--quick",
            "--throughput-only",
            "--reads-only",
            "--clients",
            "1",
        ])
        .arg("--seconds")
        .arg("0.1")
        .arg("--compare")
        .arg(&report)
        .arg("--json")
        .arg(dir.path().join("again.json"))
        .output()
        .expect("run zopp-bench --compare");
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stderr)
    );
    let table = String::from_utf8_lossy(&cmp.stdout);
    assert!(table.contains("compared with"), "{table}");
    let line = table
        .lines()
        .skip_while(|l| !l.starts_with("compared with"))
        .find(|l| l.starts_with("server reads/s, 1 clients"))
        .unwrap_or_else(|| panic!("the comparison lists the re-measured figure:\n{table}"));
    assert!(line.contains('%'), "a change is printed: {line}");
}

#[test]
fn help_prints_usage_and_measures_nothing() {
    let out = Command::new(zopp_tests::bin("zopp-bench"))
        .arg("--help")
        .output()
        .expect("run zopp-bench --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--quick", "--json", "--compare", "--postgres", "--seconds"] {
        assert!(text.contains(flag), "--help names {flag}:\n{text}");
    }
    assert!(
        !text.contains("\"figures\"") && !text.contains("commit "),
        "--help printed no report, so it ran no benchmark:\n{text}"
    );
}

#[test]
fn a_missing_baseline_is_refused_before_measuring() {
    let out = Command::new(zopp_tests::bin("zopp-bench"))
        .args(["--quick", "--compare", "/nonexistent/old.json"])
        .output()
        .expect("run zopp-bench");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/old.json"), "{err}");
}
