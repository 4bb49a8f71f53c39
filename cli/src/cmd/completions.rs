//! `zopp completions bash|zsh|fish`: prints a completion script on stdout.

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, Shell};
use crate::failure::CliError;

/// Writes the completion script for the requested shell.
pub fn run(args: &CompletionsArgs) -> Result<(), CliError> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "zopp", &mut script);
    crate::output::Out::new(crate::args::OutputFormat::Human).bytes(&script)
}
