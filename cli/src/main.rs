//! `zopp`: the command line client. Parses the command line, runs the command through the SDK
//! (`zopp_cli`), and maps any error to an `error:` line, a `hint:` line and an exit code in one
//! place (`failure.rs`). Secrets never appear in arguments it logs or in its messages.

mod args;
mod cmd;
mod context;
mod failure;
mod output;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, OutputFormat};
use crate::failure::{describe, CliError, EXIT_ERROR};

/// Set to `1` to print `zopp: rpc-count N` on stderr at exit (tests assert round trips).
const RPC_COUNT_ENV: &str = "ZOPP_DEBUG_RPC_COUNT";

fn main() -> ExitCode {
    // Key files and the cache must never be readable by others, whatever umask zopp inherits.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(EXIT_ERROR);
            if code != failure::EXIT_OK && json_asked_in_argv() {
                report_json(&clap_failure(&e, code));
                return ExitCode::from(code);
            }
            // Help and version go to stdout with exit 0, usage errors to stderr with exit 2.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let json = json_asked(cli.global.output);
    let code = run(cli, json);
    if std::env::var_os(RPC_COUNT_ENV).is_some_and(|v| v == "1") {
        let _ = writeln!(
            std::io::stderr(),
            "zopp: rpc-count {}",
            zopp_cli::rpc_count()
        );
    }
    ExitCode::from(code)
}

/// Runs the command and reports its failure; every key it unlocked is dropped (and wiped) by the
/// time this returns.
fn run(cli: Cli, json: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(
                &CliError::Sdk(zopp_cli::Error::InvalidInput(format!(
                    "cannot start the async runtime: {e}"
                ))),
                json,
            );
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(cmd::dispatch(cli)) {
        Ok(()) => failure::EXIT_OK,
        Err(CliError::Exit(code)) => code,
        Err(e) => report(&e, json),
    }
}

/// Whether errors are to be JSON: `--output json`, else `ZOPP_OUTPUT=json` (the precedence
/// `Context` applies to results).
fn json_asked(flag: Option<OutputFormat>) -> bool {
    match flag {
        Some(f) => f == OutputFormat::Json,
        None => std::env::var("ZOPP_OUTPUT").is_ok_and(|v| v.eq_ignore_ascii_case("json")),
    }
}

/// [`json_asked`] for a command line clap refused: its `--output` is looked for by hand.
fn json_asked_in_argv() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = None;
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            break;
        }
        if let Some(v) = a.strip_prefix("--output=") {
            flag = Some(v.to_owned());
        } else if a == "--output" {
            flag = args.get(i + 1).cloned();
        }
    }
    match flag {
        Some(v) => v.eq_ignore_ascii_case("json"),
        None => json_asked(None),
    }
}

/// A clap usage error as a [`failure::Failure`]: its first line is the message, the rest
/// (usage and tips) the hint.
fn clap_failure(e: &clap::Error, code: u8) -> failure::Failure {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let message = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let rest: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    failure::Failure {
        message,
        hint: (!rest.is_empty()).then(|| rest.join("; ")),
        code,
    }
}

/// Prints a failure as one JSON object on one line of stderr.
fn report_json(f: &failure::Failure) {
    let _ = writeln!(std::io::stderr().lock(), "{}", f.to_json());
}

/// Prints `error:` and `hint:` lines, or one JSON object with `json`; returns the exit code.
fn report(err: &CliError, json: bool) -> u8 {
    let Some(f) = describe(err) else {
        // stdout was closed (`zopp secret list | head -1`): nothing left to say.
        return failure::EXIT_OK;
    };
    if json {
        report_json(&f);
        return f.code;
    }
    let mut stderr = std::io::stderr().lock();
    let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (red, yellow, reset) = if color {
        ("\x1b[1;31m", "\x1b[1;33m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let _ = writeln!(stderr, "{red}error{reset}: {}", f.message);
    if let Some(hint) = &f.hint {
        let _ = writeln!(stderr, "{yellow}hint{reset}: {hint}");
    }
    f.code
}

/// Diagnostics (not user messages) go to stderr, filtered by `ZOPP_LOG` (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZOPP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
