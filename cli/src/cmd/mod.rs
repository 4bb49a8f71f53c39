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
    check_scope_flags(&cli)?;
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

/// How far down the scope a command reads `-w/-p/-e`: 0 not at all, 1 the workspace, 2 also
/// the project, 3 also the environment.
fn scope_depth(cmd: &Command) -> (&'static str, u8) {
    use crate::args::{EnvironmentCommand as E, ProjectCommand as P, WorkspaceCommand as W};
    use crate::cmd::principal::PrincipalCommand as Pr;
    match cmd {
        Command::Join(_) => ("join", 0),
        Command::Whoami => ("whoami", 0),
        Command::Completions(_) => ("completions", 0),
        Command::Workspace(W::Create(_)) => ("workspace create", 0),
        Command::Workspace(W::List) => ("workspace list", 0),
        Command::Workspace(W::Delete(_)) => ("workspace delete", 0),
        Command::Workspace(W::RotateKey(_)) => ("workspace rotate-key", 1),
        Command::Project(P::Create(_)) => ("project create", 1),
        Command::Project(P::List) => ("project list", 1),
        Command::Project(P::Delete(_)) => ("project delete", 1),
        Command::Project(P::RotateKey(_)) => ("project rotate-key", 2),
        Command::Environment(E::Create(_)) => ("environment create", 2),
        Command::Environment(E::List) => ("environment list", 2),
        Command::Environment(E::Delete(_)) => ("environment delete", 2),
        Command::Environment(_) => ("environment", 3),
        Command::Secret(_) => ("secret", 3),
        Command::Audit(_) => ("audit", 1),
        Command::Run(_) => ("run", 3),
        Command::Inject(_) => ("inject", 3),
        Command::Diff(_) => ("diff", 3),
        Command::Permission(_) => ("permission", 3),
        Command::Invite(crate::cmd::invite::InviteCommand::Create(_)) => ("invite create", 1),
        Command::Invite(crate::cmd::invite::InviteCommand::List) => ("invite list", 1),
        Command::Invite(crate::cmd::invite::InviteCommand::Revoke(_)) => ("invite revoke", 1),
        Command::Member(_) => ("member remove", 1),
        Command::Kubeconfig(_) => ("kubeconfig", 3),
        Command::App(_) => ("app", 3),
        Command::Preview(_) => ("preview", 3),
        Command::Apply(_) => ("apply", 3),
        Command::Principal(Pr::CreateService(_)) => ("principal create-service", 3),
        Command::Principal(Pr::List) => ("principal list", 1),
        Command::Principal(Pr::Fingerprint(a)) if a.id.is_some() => ("principal fingerprint", 1),
        Command::Principal(Pr::Fingerprint(_)) => ("principal fingerprint (of yourself)", 0),
        Command::Principal(Pr::Rename(_)) => ("principal rename", 0),
        Command::Principal(Pr::Revoke(_)) => ("principal revoke", 0),
        Command::Principal(Pr::Remove(_)) => ("principal remove", 0),
        Command::Principal(Pr::Export(_)) => ("principal export", 0),
        Command::Principal(Pr::Import(_)) => ("principal import", 0),
    }
}

/// Refuses `-w/-p/-e` flags the command would not read. Ignoring them silently lets a user
/// believe they narrowed what a command does (`zopp invite create -e prod` still admits to
/// the whole workspace). Only flags are checked: `ZOPP_*` variables and zopp.toml hold
/// defaults for every command and are meant to be ignored where they do not apply.
fn check_scope_flags(cli: &Cli) -> Result<(), CliError> {
    let (name, depth) = scope_depth(&cli.command);
    let g = &cli.global;
    let given = [
        (1, "-w/--workspace", g.workspace.is_some()),
        (2, "-p/--project", g.project.is_some()),
        (3, "-e/--environment", !g.environment.is_empty()),
    ];
    let Some((_, flag, _)) = given.iter().find(|(level, _, set)| *set && *level > depth) else {
        return Ok(());
    };
    let scope = match depth {
        0 => "it takes no workspace, project or environment",
        1 => "it works on a whole workspace (-w)",
        _ => "it works on a whole project (-w -p)",
    };
    let hint = match &cli.command {
        Command::Invite(_) => {
            "an invite's --role covers the whole workspace; to give one project or environment only, grant it to a user who has joined the server: `zopp permission set --user EMAIL --role ROLE -w W -p P -e E`"
        }
        _ => "remove the flag",
    };
    Err(CliError::usage(
        format!("`zopp {name}` would ignore {flag}: {scope}"),
        hint,
    ))
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
