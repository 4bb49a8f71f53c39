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

use crate::args::Cli;
use crate::failure::{describe, CliError, EXIT_ERROR};

/// Set to `1` to print `zopp: rpc-count N` on stderr at exit (tests assert round trips).
const RPC_COUNT_ENV: &str = "ZOPP_DEBUG_RPC_COUNT";

fn main() -> ExitCode {
    // Key files and the cache must never be readable by others, whatever umask zopp inherits.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    init_logging();
    // Before any key is read: a crash must not write keys to a core file.
    if let Err(e) = zopp_cli::hardening::disable_core_dumps() {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with exit 0, usage errors to stderr with exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_ERROR));
        }
    };
    let code = run(cli);
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
fn run(cli: Cli) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&CliError::Sdk(zopp_cli::Error::InvalidInput(format!(
                "cannot start the async runtime: {e}"
            ))));
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(cmd::dispatch(cli)) {
        Ok(()) => failure::EXIT_OK,
        Err(CliError::Exit(code)) => code,
        Err(e) => report(&e),
    }
}

/// Prints `error:` and `hint:` lines; returns the exit code.
fn report(err: &CliError) -> u8 {
    let Some(f) = describe(err) else {
        // stdout was closed (`zopp secret list | head -1`): nothing left to say.
        return failure::EXIT_OK;
    };
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
