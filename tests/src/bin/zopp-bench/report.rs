//! The benchmark report: figures with their distribution, target and ratio as numbers, the
//! commit and machine they were measured on, the table printed for people, and the comparison
//! with an earlier report (`--compare`).
//!
//! The JSON shape is documented here and checked by `tests/tests/bench_smoke.rs`; a figure's
//! `id` is stable across runs, so two reports compare figure by figure.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::percentile;

/// One measured figure.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Figure {
    /// Stable identifier (the name may carry sizes that differ between full and quick runs).
    pub id: String,
    /// What was measured, for people.
    pub name: String,
    /// The figure, in `unit`.
    pub value: f64,
    /// Unit of `value`, the percentiles and `target`.
    pub unit: String,
    /// Median of the samples behind `value`, when it comes from a distribution.
    pub p50: Option<f64>,
    /// 95th percentile of the samples.
    pub p95: Option<f64>,
    /// 99th percentile of the samples.
    pub p99: Option<f64>,
    /// Target from DESIGN.md §10, in the same unit.
    pub target: Option<f64>,
    /// value/target when lower is better, target/value when higher is better: ≤ 1 meets it.
    pub ratio: Option<f64>,
    /// True when lower values are better.
    pub lower_is_better: bool,
    /// Round trips the measured command made, where counted.
    pub round_trips: Option<u64>,
    /// Anything else worth knowing about the figure.
    pub detail: String,
}

impl Figure {
    /// A figure whose percentiles come from `sorted` samples (in the figure's unit).
    pub fn percentiles(sorted: &[f64]) -> Self {
        Figure {
            p50: Some(percentile(sorted, 0.5)),
            p95: Some(percentile(sorted, 0.95)),
            p99: Some(percentile(sorted, 0.99)),
            ..Default::default()
        }
    }

    fn compute_ratio(&self) -> Option<f64> {
        self.target.map(|t| {
            if self.lower_is_better {
                self.value / t
            } else {
                t / self.value
            }
        })
    }
}

/// Where the figures were measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model as /proc/cpuinfo names it.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory in MiB.
    pub memory_mib: Option<u64>,
    /// Kernel release.
    pub kernel: String,
}

/// A whole run of `zopp-bench`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// Version of this JSON shape.
    pub format: u32,
    /// `git describe --always --dirty` of the working tree, when run from a checkout.
    pub commit: Option<String>,
    /// When the run finished (RFC 3339, UTC).
    pub finished: String,
    /// True for the smoke pass, whose figures mean nothing.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// Every figure, in measuring order.
    pub figures: Vec<Figure>,
}

impl Report {
    /// Wraps `figures` with their ratios, the commit and the machine.
    pub fn new(quick: bool, mut figures: Vec<Figure>) -> Self {
        for f in &mut figures {
            f.ratio = f.compute_ratio();
        }
        Report {
            format: 1,
            commit: commit(),
            finished: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            quick,
            machine: machine(),
            figures,
        }
    }

    /// Reads an earlier report for `--compare`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a zopp-bench report (format 1): {e}",
                path.display()
            )
        })
    }

    /// The table for people.
    pub fn print_table(&self) {
        println!(
            "{:<36} {:>12} {:>10} {:>10} {:>12} {:>6}  detail",
            "measure", "value", "p95", "p99", "target", "ratio"
        );
        for f in &self.figures {
            let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            let target = f
                .target
                .map_or("-".to_string(), |t| format!("{t:.1} {}", f.unit));
            println!(
                "{:<36} {:>12} {:>10} {:>10} {:>12} {:>6}  {}",
                f.name,
                format!("{:.2} {}", f.value, f.unit),
                num(f.p95),
                num(f.p99),
                target,
                num(f.ratio),
                f.detail
            );
        }
        if self.quick {
            println!("(quick smoke pass: figures are not meaningful)");
        } else {
            println!(
                "ratio = value/target when lower is better, target/value when higher is better: \
                 ≤ 1.00 meets the target"
            );
        }
        println!(
            "commit {}, {} cores, {}",
            self.commit.as_deref().unwrap_or("unknown"),
            self.machine.cores,
            self.machine.cpu
        );
    }

    /// Each figure's change against `old`, matched by id; figures only one side has are listed.
    pub fn print_comparison(&self, old: &Report) {
        let before: HashMap<&str, &Figure> =
            old.figures.iter().map(|f| (f.id.as_str(), f)).collect();
        println!(
            "\ncompared with {} ({}):",
            old.commit.as_deref().unwrap_or("unknown commit"),
            old.finished
        );
        println!(
            "{:<36} {:>14} {:>14} {:>9}  verdict",
            "measure", "before", "after", "change"
        );
        for f in &self.figures {
            let Some(o) = before.get(f.id.as_str()) else {
                println!("{:<36} {:>14} {:>14}", f.name, "-", fmt(f));
                continue;
            };
            let change = change(o.value, f.value);
            println!(
                "{:<36} {:>14} {:>14} {:>9}  {}",
                f.name,
                fmt(o),
                fmt(f),
                change.map_or("-".into(), |c| format!("{:+.1}%", c * 100.0)),
                verdict(change, f.lower_is_better)
            );
        }
        for o in &old.figures {
            if !self.figures.iter().any(|f| f.id == o.id) {
                println!("{:<36} {:>14} {:>14}", o.name, fmt(o), "-");
            }
        }
    }
}

fn fmt(f: &Figure) -> String {
    format!("{:.2} {}", f.value, f.unit)
}

/// Relative change from `before` to `after`, when `before` is not zero.
fn change(before: f64, after: f64) -> Option<f64> {
    (before != 0.0 && before.is_finite() && after.is_finite()).then(|| (after - before) / before)
}

/// Changes within 3% are called noise: repeated runs on a shared 2-core machine differ by that.
fn verdict(change: Option<f64>, lower_is_better: bool) -> &'static str {
    match change {
        None => "",
        Some(c) if c.abs() < 0.03 => "same",
        Some(c) if (c < 0.0) == lower_is_better => "better",
        Some(_) => "worse",
    }
}

fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(
            || std::env::consts::ARCH.to_string(),
            |(_, m)| m.trim().to_string(),
        );
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |k| k.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_direction_of_better() {
        assert_eq!(verdict(change(10.0, 9.0), true), "better");
        assert_eq!(verdict(change(10.0, 9.0), false), "worse");
        assert_eq!(verdict(change(10.0, 11.0), false), "better");
        assert_eq!(verdict(change(10.0, 10.2), true), "same");
        assert_eq!(verdict(change(0.0, 1.0), true), "");
    }

    #[test]
    fn ratios_are_below_one_when_the_target_is_met() {
        let mut f = Figure {
            value: 5.0,
            target: Some(10.0),
            lower_is_better: true,
            ..Default::default()
        };
        assert_eq!(f.compute_ratio(), Some(0.5));
        f.lower_is_better = false;
        assert_eq!(f.compute_ratio(), Some(2.0));
    }
}
