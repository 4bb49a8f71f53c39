//! Issue #8: CI's smoke pass of the benchmark binary. Runs `zopp-bench --quick` (tiny iteration
//! counts against a real server on loopback) and checks that it exits 0 and reports every
//! measure as JSON. It never judges a figure: benchmarks are not timed tests, and a slow
//! machine must not fail CI.

use std::process::Command;

use serde::Deserialize;

/// The `id` of every figure `zopp-bench` reports (DESIGN.md §10 and issue #8).
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
    target: Option<f64>,
    lower_is_better: bool,
    detail: String,
}

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
    let figures: Vec<Figure> = serde_json::from_str(&json).expect("the report is valid JSON");
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
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("quick smoke pass"),
        "the table says it is a smoke pass:\n{table}"
    );
}
