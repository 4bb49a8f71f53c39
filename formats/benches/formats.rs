//! Timings for the sizes DESIGN.md §10 cares about: 10,000-line imports, 10,000-secret exports,
//! resolving 10,000 references and masking a chatty child's output.
//!
//! `cargo bench -p zopp-formats` prints the median of several runs of each. Plain `Instant`
//! timing keeps this free of a benchmark framework; the figures are indicative, not a test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use zopp_formats::mask::Masker;
use zopp_formats::template::{resolve_environment, RemoteEnvironments};
use zopp_formats::{
    parse, render, Entry, ExportFormat, ExportOptions, ImportFormat, ImportOptions,
};

const ENTRIES: usize = 10_000;
const RUNS: usize = 15;

fn median(mut run: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[RUNS / 2]
}

fn report(what: &str, time: Duration) {
    println!("{what:<48} {:>10.3} ms", time.as_secs_f64() * 1e3);
}

/// A dotenv file mixing every value style, one entry per line (plus a few comments).
fn dotenv_input() -> String {
    let mut text = String::from("# generated for the benchmark\n");
    for i in 0..ENTRIES {
        let line = match i % 5 {
            0 => format!("export KEY_{i}=plain-value-{i}\n"),
            1 => format!("KEY_{i} = 'single quoted {i} $HOME' # comment\n"),
            2 => format!("KEY_{i}=\"double \\\"quoted\\\" {i}\\n\"\n"),
            3 => format!(
                "KEY_{i}=postgres://user:pa55w0rd@db-{i}.internal:5432/app?sslmode=require\n"
            ),
            _ => format!("KEY_{i}=\n"),
        };
        text.push_str(&line);
    }
    text
}

fn main() {
    let input = dotenv_input();
    let options = ImportOptions::new("bench.env");
    report(
        "parse 10,000 dotenv lines",
        median(|| {
            black_box(parse(black_box(&input), ImportFormat::Dotenv, &options).unwrap());
        }),
    );
    let entries = parse(&input, ImportFormat::Dotenv, &options).unwrap();

    for format in [ExportFormat::Dotenv, ExportFormat::Json, ExportFormat::Yaml] {
        let rendered = render(&entries, format, &ExportOptions::default()).unwrap();
        let import = match format {
            ExportFormat::Json => ImportFormat::Json,
            ExportFormat::Yaml => ImportFormat::Yaml,
            _ => ImportFormat::Dotenv,
        };
        report(
            &format!("render 10,000 secrets as {format}"),
            median(|| {
                black_box(render(black_box(&entries), format, &ExportOptions::default()).unwrap());
            }),
        );
        report(
            &format!("parse 10,000 secrets from {format}"),
            median(|| {
                black_box(parse(black_box(&rendered), import, &options).unwrap());
            }),
        );
    }

    // 10,000 values referencing 100 shared ones, twice each, plus a 1,000-deep chain.
    let mut linked: Vec<Entry> = (0..100)
        .map(|i| Entry::new(format!("BASE_{i}"), format!("base-{i}")))
        .collect();
    linked.extend((0..ENTRIES).map(|i| {
        Entry::new(
            format!("KEY_{i}"),
            format!("x${{BASE_{}}}y${{BASE_{}}}z", i % 100, (i * 7) % 100),
        )
    }));
    linked.extend((0..1000).map(|i| {
        let value = if i == 999 {
            String::from("end")
        } else {
            format!("${{CHAIN_{}}}", i + 1)
        };
        Entry::new(format!("CHAIN_{i}"), value)
    }));
    let remote = RemoteEnvironments::new();
    report(
        "resolve 11,100 values, 21,000 references",
        median(|| {
            black_box(resolve_environment(black_box(&linked), &remote).unwrap());
        }),
    );

    let values: Vec<String> = (0..1000)
        .map(|i| format!("secret-value-{i:04}-xyz"))
        .collect();
    let masker = Masker::new(&values);
    let mut output = Vec::with_capacity(16 << 20);
    let mut n = 0;
    while output.len() < 16 << 20 {
        output.extend_from_slice(b"INFO request handled in 3ms user=42 token=");
        output.extend_from_slice(values[n % values.len()].as_bytes());
        output.extend_from_slice(b" secret-valu partial\n");
        n += 1;
    }
    report(
        "mask 16 MiB in 64 KiB reads (1,000 values)",
        median(|| {
            let mut stream = masker.fresh();
            for chunk in output.chunks(64 * 1024) {
                black_box(stream.push(chunk));
            }
            black_box(stream.finish());
        }),
    );
}
