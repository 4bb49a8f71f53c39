//! One module per command family; [`dispatch`] routes a parsed command line to it.

pub mod app;
pub mod audit;
mod completions;
mod diff;
mod environment;
pub mod inject;
pub mod invite;
mod join;
pub mod kubeconfig;
pub mod member;
pub mod permission;
pub mod principal;
mod project;
pub mod rotate;
pub mod run;
mod secret;
pub mod transfer;
mod whoami;
mod workspace;

use std::io::{BufRead, Write};

use crate::args::{Cli, Command};
use crate::context::Context;
use crate::failure::CliError;
use crate::output::Out;

/// Runs the command `cli` describes.
pub async fn dispatch(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions(a) = &cli.command {
        // Needs no context: works even with a broken environment.
        return completions::run(a);
    }
    if cli.global.environment.len() > 1 && !matches!(cli.command, Command::Diff(_)) {
        return Err(CliError::usage(
            format!(
                "-e/--environment given {} times; only `zopp diff` compares two environments",
                cli.global.environment.len()
            ),
            "pass one -e NAME",
        ));
    }
    let ctx = Context::from_process(&cli.global)?;
    // Which identity acts is easy to get wrong with a ZOPP_TOKEN left in the shell: say so
    // (`whoami` shows it in its own output; JSON output keeps stderr for errors).
    if !matches!(cli.command, Command::Whoami | Command::Join(_)) && !ctx.output_is_json() {
        if let Some(note) = ctx.token_note() {
            let _ = writeln!(std::io::stderr(), "{note}");
        }
    }
    let mut out = Out::new(ctx.output);
    out.header = !cli.global.no_header;
    match &cli.command {
        Command::Join(a) => join::run(&ctx, &out, a).await,
        Command::Whoami => whoami::run(&ctx, &out).await,
        Command::Workspace(c) => workspace::run(&ctx, &out, c).await,
        Command::Project(c) => project::run(&ctx, &out, c).await,
        Command::Environment(c) => environment::run(&ctx, &out, c).await,
        Command::Secret(c) => secret::run(&ctx, &out, c).await,
        Command::Audit(c) => audit::run(&ctx, &out, c).await,
        Command::Run(a) => run::run(&ctx, a).await,
        Command::Inject(a) => inject::run(&ctx, &out, a).await,
        Command::Permission(c) => permission::run(&ctx, &out, c, &cli.global).await,
        Command::Invite(c) => invite::run(&ctx, &out, c).await,
        Command::Member(c) => member::run(&ctx, &out, c).await,
        Command::Principal(c) => principal::run(&ctx, &out, c, &cli.global).await,
        Command::Kubeconfig(c) => kubeconfig::run(&ctx, &out, c).await,
        Command::App(c) => app::run(&ctx, &out, c).await,
        Command::Preview(a) => app::preview(&ctx, &out, a).await,
        Command::Apply(a) => app::apply(&ctx, &out, a).await,
        Command::Diff(a) => diff::run(&ctx, &out, a, &cli.global.environment).await,
        Command::Completions(_) => unreachable!("handled above"),
    }
}

/// Asks before deleting `what`, unless `yes`. Without a terminal it cannot ask, so it refuses
/// and points at `--yes`.
fn confirm_delete(ctx: &Context, yes: bool, what: &str, consequence: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !ctx.interactive {
        return Err(CliError::NeedsConfirmation {
            what: what.to_owned(),
        });
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "delete {what}{consequence}? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Sdk(zopp_cli::Error::io("cannot read", "stdin", e)))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::Cancelled),
    }
}

/// Asks whether to `action` (the plan is already on stderr), unless `yes`. Without a terminal it
/// cannot ask, so it refuses and points at `--yes`.
fn confirm(ctx: &Context, yes: bool, action: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !ctx.interactive {
        return Err(CliError::NeedsYes {
            action: action.to_owned(),
        });
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "{action}? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Sdk(zopp_cli::Error::io("cannot read", "stdin", e)))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::Cancelled),
    }
}

/// Refuses, before anything is asked, a command the caller's role at `env` cannot perform:
/// confirming a plan the server will refuse anyway wastes the user's time.
async fn require_role(
    client: &zopp_cli::Client,
    env: &zopp_cli::EnvRef,
    needed: zopp_cli::teams::Role,
    what: &str,
) -> Result<(), CliError> {
    use zopp_cli::teams::{Role, ScopeSpec};
    let scope = ScopeSpec::try_new(
        env.workspace(),
        Some(env.project()),
        Some(env.environment()),
    )?;
    let have = Role::from_proto(client.effective_permission(&scope, None).await?.role);
    if have >= Some(needed) {
        return Ok(());
    }
    Err(CliError::Sdk(zopp_cli::Error::Refused {
        code: tonic::Code::PermissionDenied,
        message: format!(
            "{what} needs the {} role on {}; you have {}",
            needed.name(),
            scope.describe(),
            have.map_or("no role", Role::name)
        ),
    }))
}

impl crate::args::PointArgs {
    /// The point in time asked for, checked: `None` for now.
    pub fn resolve(&self) -> Result<Option<zopp_cli::At>, CliError> {
        point(self.at.as_deref(), self.at_version)
    }
}

/// Checks one `--at TIME` or `--at-version N` (at most one of them is set).
pub fn point(at: Option<&str>, at_version: Option<u64>) -> Result<Option<zopp_cli::At>, CliError> {
    use zopp_cli::At;
    match (at, at_version) {
        (Some(t), _) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            Ok(Some(At::Time(audit::parse_time("--at", t, now)?)))
        }
        (None, Some(0)) => Err(CliError::usage(
            "--at-version 0 is the empty environment before its first write",
            "environment versions start at 1; `zopp environment list` shows the current one",
        )),
        (None, Some(v)) => Ok(Some(At::EnvVersion(v))),
        (None, None) => Ok(None),
    }
}
