//! `zopp kubeconfig set|get|list|history|delete|rollback`: kubeconfigs stored like secrets
//! (`zopp_cli::platform`), printed with their credentials masked unless `--show`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use zopp_cli::platform::{self, ResourceKind};
use zopp_cli::teams::ScopeSpec;
use zopp_cli::validate::MAX_VALUE_LEN;
use zopp_cli::{Client, EnvRef, Error};

use crate::context::Context;
use crate::failure::{CliError, EXIT_PERMISSION};
use crate::output::{rfc3339, Out};

/// `zopp kubeconfig`.
#[derive(Debug, Subcommand)]
pub enum KubeconfigCommand {
    /// Store a kubeconfig (checked: it parses and its current-context exists) as a new version
    Set(KubeSetArgs),
    /// Print a kubeconfig with every credential masked (--show prints it whole; needs write)
    Get(KubeGetArgs),
    /// List kubeconfig names with their versions
    List,
    /// Show every version of a kubeconfig
    History(KubeNameArgs),
    /// Delete a kubeconfig (a tombstone version: history and rollback still work)
    Delete(KubeNameArgs),
    /// Restore an earlier version as a new version
    Rollback(KubeRollbackArgs),
}

/// `zopp kubeconfig set`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  zopp kubeconfig set prod-cluster -f ~/.kube/prod.yaml
  kind get kubeconfig | zopp kubeconfig set dev-cluster -f -")]
pub struct KubeSetArgs {
    /// Kubeconfig name (the rules of secret names)
    pub name: String,
    /// The kubeconfig file, or - for stdin
    #[arg(long, short = 'f', value_name = "FILE|-")]
    pub file: PathBuf,
}

/// `zopp kubeconfig get`.
#[derive(Debug, Args)]
pub struct KubeGetArgs {
    /// Kubeconfig name
    pub name: String,
    /// This version instead of the latest
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// Print the credentials too (needs the write role on the environment)
    #[arg(long)]
    pub show: bool,
}

/// A kubeconfig named on the command line.
#[derive(Debug, Args)]
pub struct KubeNameArgs {
    /// Kubeconfig name
    pub name: String,
}

/// `zopp kubeconfig rollback`.
#[derive(Debug, Args)]
pub struct KubeRollbackArgs {
    /// Kubeconfig name
    pub name: String,
    /// Version to restore
    #[arg(long, value_name = "N")]
    pub to: u64,
}

/// One row of `list` as JSON.
#[derive(Debug, Serialize)]
pub struct ResourceRowJson<'a> {
    /// Name.
    pub name: &'a str,
    /// Current version.
    pub version: u64,
    /// When it was written (RFC 3339).
    pub updated_at: String,
    /// Who wrote it.
    pub updated_by: &'a str,
}

/// The result of a write as JSON.
#[derive(Debug, Serialize)]
pub struct ResourceWriteJson<'a> {
    /// `kubeconfig` or `app`.
    pub kind: &'a str,
    /// Name.
    pub name: &'a str,
    /// The version written.
    pub version: u64,
    /// Whether this write deleted it.
    pub deleted: bool,
}

/// One version of `history` as JSON.
#[derive(Debug, Serialize)]
pub struct ResourceHistoryJson<'a> {
    /// Version.
    pub version: u64,
    /// When it was written.
    pub updated_at: String,
    /// Who wrote it.
    pub updated_by: &'a str,
    /// Whether the version is a deletion.
    pub deleted: bool,
}

/// Runs a kubeconfig command.
pub async fn run(ctx: &Context, out: &Out, cmd: &KubeconfigCommand) -> Result<(), CliError> {
    let kind = ResourceKind::Kubeconfig;
    match cmd {
        KubeconfigCommand::Set(a) => {
            platform::check_resource_name(&a.name)?;
            let text = super::inject::read_text(&a.file, MAX_VALUE_LEN)?;
            platform::parse_kubeconfig(&text)?;
            let env = ctx.env_ref()?;
            let done = ctx
                .client()
                .await?
                .set_resource(&env, kind, &a.name, text.as_bytes())
                .await?;
            written(out, kind, &done.name, done.version, false)
        }
        KubeconfigCommand::Get(a) => {
            let env = ctx.env_ref()?;
            let client = ctx.client().await?;
            if a.show {
                require_write(&client, &env, "print a kubeconfig's credentials").await?;
            }
            let rec = client.get_resource(&env, kind, &a.name, a.version).await?;
            let text = std::str::from_utf8(rec.expose_value()).map_err(|_| {
                Error::InvalidInput(format!("kubeconfig '{}' is not UTF-8 text", a.name))
            })?;
            if a.show {
                return out.bytes(text.as_bytes());
            }
            out.bytes(platform::masked_kubeconfig(text)?.as_bytes())
        }
        KubeconfigCommand::List => list(ctx, out, kind).await,
        KubeconfigCommand::History(a) => history(ctx, out, kind, &a.name).await,
        KubeconfigCommand::Delete(a) => delete(ctx, out, kind, &a.name).await,
        KubeconfigCommand::Rollback(a) => rollback(ctx, out, kind, &a.name, a.to).await,
    }
}

/// Refuses unless this principal holds the write role on `env` (asked of the server, which
/// decides from the grants it holds).
pub async fn require_write(client: &Client, env: &EnvRef, what: &str) -> Result<(), CliError> {
    let scope = ScopeSpec::try_new(
        env.workspace(),
        Some(env.project()),
        Some(env.environment()),
    )?;
    let role = client.effective_permission(&scope, None).await?.role;
    if role >= zopp_proto::v1::Role::Write as i32 {
        return Ok(());
    }
    Err(CliError::Failed {
        message: format!("permission denied: to {what} you need the write role on {env}"),
        hint: Some(
            "ask an admin for write (`zopp permission set`); readers may use `zopp preview`".into(),
        ),
        code: EXIT_PERMISSION,
    })
}

/// Prints the result of a write.
pub fn written(
    out: &Out,
    kind: ResourceKind,
    name: &str,
    version: u64,
    deleted: bool,
) -> Result<(), CliError> {
    if out.is_json() {
        return out.json(&ResourceWriteJson {
            kind: kind.label(),
            name,
            version,
            deleted,
        });
    }
    let verb = if deleted { "deleted" } else { "set" };
    out.note(&format!(
        "{verb} {} '{name}' (version {version})",
        kind.label()
    ));
    Ok(())
}

/// `list` of a resource kind.
pub async fn list(ctx: &Context, out: &Out, kind: ResourceKind) -> Result<(), CliError> {
    let env = ctx.env_ref()?;
    let rows = ctx.client().await?.list_resources(&env, kind).await?;
    if out.is_json() {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| ResourceRowJson {
                name: &r.name,
                version: r.version,
                updated_at: rfc3339(r.updated_at_ms),
                updated_by: &r.updated_by,
            })
            .collect();
        return out.json(&rows);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.version.to_string(),
                rfc3339(r.updated_at_ms),
                r.updated_by.clone(),
            ]
        })
        .collect();
    out.table(&["NAME", "VERSION", "UPDATED", "UPDATED BY"], &rows)
}

/// `history` of a resource.
pub async fn history(
    ctx: &Context,
    out: &Out,
    kind: ResourceKind,
    name: &str,
) -> Result<(), CliError> {
    let env = ctx.env_ref()?;
    let history = ctx
        .client()
        .await?
        .resource_history(&env, kind, name)
        .await?;
    if out.is_json() {
        let rows: Vec<_> = history
            .iter()
            .map(|r| ResourceHistoryJson {
                version: r.version,
                updated_at: rfc3339(r.created_at_ms),
                updated_by: r.writer.label(),
                deleted: r.is_deleted(),
            })
            .collect();
        return out.json(&rows);
    }
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|r| {
            vec![
                r.version.to_string(),
                rfc3339(r.created_at_ms),
                r.writer.label().to_owned(),
                if r.is_deleted() { "deleted" } else { "set" }.to_owned(),
            ]
        })
        .collect();
    out.table(&["VERSION", "UPDATED", "UPDATED BY", "CHANGE"], &rows)
}

/// `delete` of a resource.
pub async fn delete(
    ctx: &Context,
    out: &Out,
    kind: ResourceKind,
    name: &str,
) -> Result<(), CliError> {
    let env = ctx.env_ref()?;
    let done = ctx
        .client()
        .await?
        .delete_resource(&env, kind, name)
        .await?;
    written(out, kind, name, done.version, true)?;
    out.note(&format!(
        "`zopp {} rollback {name} --to {}` restores it",
        kind.label(),
        done.version - 1
    ));
    Ok(())
}

/// `rollback` of a resource.
pub async fn rollback(
    ctx: &Context,
    out: &Out,
    kind: ResourceKind,
    name: &str,
    to: u64,
) -> Result<(), CliError> {
    let env = ctx.env_ref()?;
    let done = ctx
        .client()
        .await?
        .rollback_resource(&env, kind, name, to)
        .await?;
    written(out, kind, name, done.version, false)
}

/// Fetches kubeconfig `name` (write role required: the child can read its credentials) and
/// writes it to a private temporary file, with `namespace` set on its current context when
/// given. Returns the file and the version used.
pub async fn private_file(
    client: &Client,
    env: &EnvRef,
    name: &str,
    namespace: Option<&str>,
) -> Result<(zopp_cli::kubefile::KubeconfigFile, u64), CliError> {
    require_write(client, env, "use a kubeconfig's credentials").await?;
    let rec = client
        .get_resource(env, ResourceKind::Kubeconfig, name, None)
        .await?;
    let text = std::str::from_utf8(rec.expose_value())
        .map_err(|_| Error::InvalidInput(format!("kubeconfig '{name}' is not UTF-8 text")))?;
    let file = match namespace {
        Some(ns) => {
            let text = platform::with_namespace(text, ns)?;
            zopp_cli::kubefile::KubeconfigFile::create(text.as_bytes())?
        }
        None => {
            platform::parse_kubeconfig(text)?;
            zopp_cli::kubefile::KubeconfigFile::create(text.as_bytes())?
        }
    };
    Ok((file, rec.version))
}
