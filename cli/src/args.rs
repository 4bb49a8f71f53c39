//! The command line as clap parses it: raw and unchecked. `context.rs` and each command turn
//! these into validated values before anything else happens.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Settings are taken, in order of precedence, from a flag, then a ZOPP_* environment variable, then \
the [defaults] table of the nearest zopp.toml (searched from the current directory upwards), then \
the built-in default.

Environment:
  ZOPP_HOME         where the identity lives (default ~/.zopp)
  ZOPP_SERVER       server URL (default: the one recorded at join, else http://127.0.0.1:50051)
  ZOPP_TLS_CA       CA certificate (PEM) for an https:// server
  ZOPP_WORKSPACE, ZOPP_PROJECT, ZOPP_ENVIRONMENT
                    default scope
  ZOPP_OUTPUT       human or json
  ZOPP_PASSPHRASE   passphrase of the key file (otherwise asked on a terminal)

Exit codes: 0 ok, 1 error, 2 usage or invalid input, 3 not found, 4 permission denied,
5 authentication, 6 conflict, 7 server unreachable.";

/// zopp: a zero-knowledge secrets manager. Every key and every plaintext stays on this machine.
#[derive(Debug, Parser)]
#[command(name = "zopp", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Server URL [env: ZOPP_SERVER] [default: the server joined, else http://127.0.0.1:50051]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// CA certificate (PEM) to trust for an https:// server [env: ZOPP_TLS_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Workspace [env: ZOPP_WORKSPACE] [zopp.toml: defaults.workspace]
    #[arg(short = 'w', long, global = true, value_name = "NAME")]
    pub workspace: Option<String>,
    /// Project [env: ZOPP_PROJECT] [zopp.toml: defaults.project]
    #[arg(short = 'p', long, global = true, value_name = "NAME")]
    pub project: Option<String>,
    /// Environment [env: ZOPP_ENVIRONMENT] [zopp.toml: defaults.environment]; `zopp diff`
    /// takes it twice
    #[arg(short = 'e', long, global = true, value_name = "NAME", action = clap::ArgAction::Append)]
    pub environment: Vec<String>,
    /// Output format [env: ZOPP_OUTPUT] [default: human]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Print tables without their header line (headers are printed by default, piped too)
    #[arg(long, global = true)]
    pub no_header: bool,
}

/// How results are printed on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: plain values and aligned tables.
    #[default]
    Human,
    /// For scripts: one JSON document.
    Json,
}

/// The command families.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Redeem an invite: generate this device's keys and register them with the server
    Join(JoinArgs),
    /// Show which principal and user this identity is
    Whoami,
    /// Create, list and delete workspaces
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Create, list and delete projects of a workspace
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Create, list and delete environments of a project
    #[command(subcommand, visible_alias = "env")]
    Environment(EnvironmentCommand),
    /// Set, read, list, delete and restore secrets of an environment
    #[command(subcommand)]
    Secret(SecretCommand),
    /// List, export and verify the audit trail of a workspace (-w) or of the server
    #[command(subcommand)]
    Audit(crate::cmd::audit::AuditCommand),
    /// Run a command with the environment's secrets as environment variables
    Run(crate::cmd::run::RunArgs),
    /// Render a template, replacing ${KEY} references with secrets
    Inject(crate::cmd::inject::InjectArgs),
    /// Grant, list, remove and inspect roles at a workspace, project or environment
    #[command(subcommand)]
    Permission(crate::cmd::permission::PermissionCommand),
    /// Create, list and revoke single-use workspace invites
    #[command(subcommand)]
    Invite(crate::cmd::invite::InviteCommand),
    /// Offboard a user: remove every grant they hold in a workspace, list what they could read,
    /// rotate what you may
    #[command(subcommand)]
    Member(crate::cmd::member::MemberCommand),
    /// Service principals and their tokens, your devices, revocation and fingerprints
    #[command(subcommand)]
    Principal(crate::cmd::principal::PrincipalCommand),
    /// Compare two environments of a project (-e A -e B) or one environment at two points in
    /// time (--at T1 --at T2, --at-version N1 --at-version N2): names added, removed, changed
    Diff(DiffArgs),
    /// Store, print (credentials masked), list and restore kubeconfigs
    #[command(subcommand)]
    Kubeconfig(crate::cmd::kubeconfig::KubeconfigCommand),
    /// Store, inspect and restore apps: manifest templates applied with secrets injected
    #[command(subcommand)]
    App(crate::cmd::app::AppCommand),
    /// Render an app's manifest with every secret masked, and show what changed since the
    /// last apply
    Preview(crate::cmd::app::PreviewArgs),
    /// Render an app's manifest with its secrets and pipe it to its apply command, under a
    /// server-side lease
    Apply(crate::cmd::app::ApplyArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
}

/// A point in time of an environment: `--at` or `--at-version` (neither: now).
#[derive(Debug, Args)]
pub struct PointArgs {
    /// Read the environment as it was at TIME (RFC 3339, e.g. 2026-11-20T10:00:00Z, a UTC date
    /// or an age such as 2h)
    #[arg(long, value_name = "TIME", conflicts_with = "at_version")]
    pub at: Option<String>,
    /// Read the environment as of its version N (each write bumps it; see `environment list`)
    #[arg(long, value_name = "N")]
    pub at_version: Option<u64>,
}

/// `zopp diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// First and second point in time (give it twice, or combine with --at-version)
    #[arg(long, value_name = "TIME", num_args = 1, action = clap::ArgAction::Append)]
    pub at: Vec<String>,
    /// First and second environment version (give it twice, or combine with --at)
    #[arg(long, value_name = "N", num_args = 1, action = clap::ArgAction::Append)]
    pub at_version: Vec<u64>,
    /// Also print the values that differ (decrypted here; never sent anywhere)
    #[arg(long)]
    pub show_values: bool,
}

/// `zopp environment set-retention`.
#[derive(Debug, Args)]
pub struct SetRetentionArgs {
    /// Keep the newest N versions of each secret (older ones are pruned at once and on every
    /// write)
    #[arg(value_name = "N", conflicts_with = "keep_all")]
    pub versions: Option<u64>,
    /// Keep every version again (the default)
    #[arg(long)]
    pub keep_all: bool,
    /// Show what the new limit would prune without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal and the limit prunes)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `zopp environment restore`.
#[derive(Debug, Args)]
pub struct EnvironmentRestoreArgs {
    /// The state to make current
    #[command(flatten)]
    pub point: PointArgs,
    /// Show what would change without writing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `zopp join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Invite: a server invite (zinv_…, from `zopp-server invite create`) or a workspace invite
    /// (zwi_…, from `zopp invite create`)
    pub token: String,
    /// Your email address
    pub email: String,
    /// Name for this device [default: the host name]
    #[arg(long, value_name = "DEVICE")]
    pub name: Option<String>,
}

/// `zopp workspace …`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace (its key is generated here and wrapped to you)
    Create(NameArg),
    /// List the workspaces you can see
    List,
    /// Delete a workspace with all its projects, environments and secrets
    Delete(DeleteArgs),
    /// Give the workspace given by -w a new key and every project and environment in it, so removed members cannot read what comes next
    RotateKey(crate::cmd::rotate::RotateArgs),
}

/// `zopp project …`.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project in the workspace given by -w
    Create(NameArg),
    /// List the projects of the workspace given by -w
    List,
    /// Delete a project with all its environments and secrets
    Delete(DeleteArgs),
    /// Give the project given by -w/-p a new key and its environments, so removed members cannot read what comes next
    RotateKey(crate::cmd::rotate::RotateArgs),
}

/// `zopp environment …`.
#[derive(Debug, Subcommand)]
pub enum EnvironmentCommand {
    /// Create an environment in the project given by -w/-p
    Create(NameArg),
    /// List the environments of the project given by -w/-p
    List,
    /// Delete an environment with all its secrets
    Delete(DeleteArgs),
    /// Give the environment given by -w/-p/-e a new key (its next key epoch), so removed members cannot read what comes next
    RotateKey(crate::cmd::rotate::RotateArgs),
    /// Keep only the newest N versions of each secret of the environment (admin), or --keep-all
    SetRetention(SetRetentionArgs),
    /// Make an earlier state of the environment current again, as new versions in one
    /// transaction (--at TIME or --at-version N; --dry-run shows the plan)
    Restore(EnvironmentRestoreArgs),
}

/// A scope name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Name (1-256 bytes, no whitespace, control characters or '/')
    pub name: String,
}

/// A deletion.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Name of what to delete
    pub name: String,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `zopp secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret's value (adds a new version; nothing is overwritten)
    Set(SecretSetArgs),
    /// Print a secret's value
    Get(SecretGetArgs),
    /// List secret names with their versions (never values); --at/--at-version for an earlier
    /// state
    List(SecretListArgs),
    /// Delete a secret (a tombstone version: history and rollback still work)
    Delete(SecretDeleteArgs),
    /// Show every version of a secret
    History(SecretHistoryArgs),
    /// Restore an earlier version's value as a new version
    Rollback(SecretRollbackArgs),
    /// Import secrets from a dotenv, JSON, YAML, 1Password, AWS, Vault or Doppler file (one
    /// transaction)
    Import(crate::cmd::transfer::ImportArgs),
    /// Export secrets as dotenv, JSON, YAML, shell, a Kubernetes Secret or a docker env-file
    Export(crate::cmd::transfer::ExportArgs),
}

/// `zopp secret set`.
#[derive(Debug, Args)]
pub struct SecretSetArgs {
    /// Secret name (1-256 bytes, no whitespace, control characters or '=')
    pub name: String,
    /// The value, or - to read stdin to the end (prefer - or --file: arguments end up in shell
    /// history). Asked for on a terminal when omitted
    #[arg(conflicts_with = "file", value_name = "VALUE|-")]
    pub value: Option<OsString>,
    /// Read the value from this file, byte for byte
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Write only if the secret is still at this version (0: only if it does not exist)
    #[arg(long, value_name = "N", conflicts_with = "if_env_version")]
    pub if_version: Option<u64>,
    /// More KEY=VALUE pairs: `zopp secret set A=1 B=2` sets several secrets in one write
    #[arg(value_name = "KEY=VALUE", conflicts_with = "file")]
    pub more: Vec<OsString>,
    /// Write only if the environment is still at this version (all keys or none)
    #[arg(long, value_name = "N")]
    pub if_env_version: Option<u64>,
}

/// `zopp secret list`.
#[derive(Debug, Args)]
pub struct SecretListArgs {
    /// Which state of the environment
    #[command(flatten)]
    pub point: PointArgs,
}

/// `zopp secret get`.
#[derive(Debug, Args)]
pub struct SecretGetArgs {
    /// Secret name
    pub name: String,
    /// A specific version instead of the latest
    #[arg(long, value_name = "N", conflicts_with_all = ["at", "at_version"])]
    pub version: Option<u64>,
    /// The value the secret had in an earlier state of the environment
    #[command(flatten)]
    pub point: PointArgs,
}

/// `zopp secret delete`.
#[derive(Debug, Args)]
pub struct SecretDeleteArgs {
    /// Secret name
    pub name: String,
    /// Accepted for symmetry with other deletes; a secret deletion is undone with rollback
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `zopp secret history`.
#[derive(Debug, Args)]
pub struct SecretHistoryArgs {
    /// Secret name
    pub name: String,
    /// Include each version's value
    #[arg(long)]
    pub show_values: bool,
}

/// `zopp secret rollback`.
#[derive(Debug, Args)]
pub struct SecretRollbackArgs {
    /// Secret name
    pub name: String,
    /// Version whose value to restore
    #[arg(long, value_name = "N")]
    pub to: u64,
}

/// `zopp completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells with completion scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash
    Bash,
    /// Zsh
    Zsh,
    /// Fish
    Fish,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scope_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "zopp", "secret", "get", "K", "-w", "acme", "-p", "api", "-e", "dev",
        ])
        .expect("parse");
        assert_eq!(cli.global.workspace.as_deref(), Some("acme"));
        assert_eq!(cli.global.project.as_deref(), Some("api"));
        assert_eq!(cli.global.environment, ["dev"]);
    }

    #[test]
    fn dash_is_a_value_and_value_conflicts_with_file() {
        let cli = Cli::try_parse_from(["zopp", "secret", "set", "K", "-"]).expect("parse");
        let Command::Secret(SecretCommand::Set(a)) = cli.command else {
            panic!("secret set")
        };
        assert_eq!(a.value.as_deref(), Some(std::ffi::OsStr::new("-")));
        assert!(Cli::try_parse_from(["zopp", "secret", "set", "K", "v", "--file", "f"]).is_err());
    }

    #[test]
    fn empty_names_reach_validation() {
        // Clap must not swallow an empty name: validation refuses it with exit 2 and a reason.
        let cli = Cli::try_parse_from(["zopp", "workspace", "create", ""]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::Create(NameArg { ref name })) if name.is_empty()
        ));
    }
}
