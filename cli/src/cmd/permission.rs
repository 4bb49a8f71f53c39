//! `zopp permission set|list|remove|effective`: roles at a workspace (`-w`), project (`-w -p`)
//! or environment (`-w -p -e`), with the scope's key following each grant.

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use zopp_cli::teams::{GranteeSpec, Role, ScopeSpec};
use zopp_cli::{Client, EnvRef};
use zopp_proto::v1 as pb;

use crate::args::GlobalArgs;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, Out};

const SCOPE_HELP: &str = "\
The scope is -w alone (a workspace), -w -p (a project) or -w -p -e (an environment). Here -p \
and -e are taken only from flags, never from ZOPP_PROJECT, ZOPP_ENVIRONMENT or zopp.toml, so an \
access change never lands on another scope than the one typed.";

/// `zopp permission …`.
#[derive(Debug, Subcommand)]
pub enum PermissionCommand {
    /// Grant a role at a scope to a user (all their devices) or one principal
    #[command(after_help = SCOPE_HELP)]
    Set(SetArgs),
    /// List the grants at a scope and below it
    #[command(after_help = SCOPE_HELP)]
    List,
    /// Remove a grant at exactly this scope and report what the grantee could read
    #[command(after_help = SCOPE_HELP)]
    Remove(RemoveArgs),
    /// Show the effective role at a scope (yours, or a grantee's with --principal/--user)
    #[command(after_help = SCOPE_HELP)]
    Effective(EffectiveArgs),
}

/// Who a command is about: exactly one of the two.
#[derive(Debug, Args)]
pub struct GranteeArgs {
    /// A principal id (a device or a service principal; `zopp principal list` shows them)
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "user",
        required_unless_present = "user"
    )]
    pub principal: Option<String>,
    /// A user's email: the grant applies to all of the user's devices
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
}

impl GranteeArgs {
    /// The validated grantee.
    pub fn spec(&self) -> Result<GranteeSpec, CliError> {
        Ok(GranteeSpec::try_new(
            self.principal.as_deref(),
            self.user.as_deref(),
        )?)
    }
}

/// A role on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// List, get, history, export, run
    Read,
    /// Read, plus set, delete, import, rollback
    Write,
    /// Write, plus managing projects, environments, access, invites and keys
    Admin,
}

impl RoleArg {
    /// The SDK role.
    pub fn role(self) -> Role {
        match self {
            RoleArg::Read => Role::Read,
            RoleArg::Write => Role::Write,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// `zopp permission set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Who receives the role
    #[command(flatten)]
    pub grantee: GranteeArgs,
    /// The role
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Trust a key chain ending at the principal with this fingerprint (compare it out of band
    /// with `zopp principal fingerprint`); repeatable
    #[arg(long = "fingerprint", value_name = "FP")]
    pub fingerprints: Vec<String>,
}

/// `zopp permission remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Whose grant to remove
    #[command(flatten)]
    pub grantee: GranteeArgs,
    /// Rotate the keys the grantee held right away, without asking
    #[arg(long)]
    pub rotate: bool,
    /// Neither rotate nor ask (print how to rotate instead)
    #[arg(long, conflicts_with = "rotate")]
    pub no_rotate: bool,
}

/// `zopp permission effective`.
#[derive(Debug, Args)]
pub struct EffectiveArgs {
    /// A principal id (default: you)
    #[arg(long, value_name = "ID", conflicts_with = "user")]
    pub principal: Option<String>,
    /// A user's email (default: you)
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
}

/// One grant in JSON output.
#[derive(Debug, Serialize)]
pub struct PermissionJson {
    /// Grant id.
    pub id: String,
    /// `workspace/project/environment` names of the scope.
    pub scope: String,
    /// `workspace`, `project` or `environment`.
    pub scope_kind: &'static str,
    /// `read`, `write` or `admin`.
    pub role: &'static str,
    /// The grantee user's email (user grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The grantee principal's id (principal grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// The grantee principal's name (principal grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    /// Whether the grantee is a service principal.
    pub service: bool,
    /// Who granted it (principal id).
    pub granted_by: String,
    /// When, RFC 3339.
    pub created_at: String,
}

impl PermissionJson {
    /// From the wire form.
    pub fn from_proto(g: &pb::PermissionGrant) -> Self {
        let scope = g
            .scope
            .as_ref()
            .map(|s| ScopeSpec::from_proto(s).to_string())
            .unwrap_or_default();
        Self {
            id: g.id.clone(),
            scope,
            scope_kind: match pb::ScopeKind::try_from(g.scope_kind) {
                Ok(pb::ScopeKind::Project) => "project",
                Ok(pb::ScopeKind::Environment) => "environment",
                _ => "workspace",
            },
            role: Role::from_proto(g.role).map_or("none", Role::name),
            user: (!g.user_email.is_empty()).then(|| g.user_email.clone()),
            principal_id: (!g.principal_id.is_empty()).then(|| g.principal_id.clone()),
            principal_name: (!g.principal_id.is_empty()).then(|| g.principal_name.clone()),
            service: g.service,
            granted_by: g.granted_by.clone(),
            created_at: rfc3339(g.created_at_ms),
        }
    }

    fn grantee(&self) -> String {
        match (&self.user, &self.principal_id, &self.principal_name) {
            (Some(u), _, _) => u.clone(),
            (None, Some(id), Some(name)) if self.service => {
                format!("service '{name}' ({id})")
            }
            (None, Some(id), Some(name)) => format!("device '{name}' ({id})"),
            _ => String::new(),
        }
    }
}

/// `zopp permission set` in JSON.
#[derive(Debug, Serialize)]
struct SetJson {
    grant: PermissionJson,
    /// Principals the scope key was wrapped to.
    principals: Vec<String>,
}

/// Secrets of one environment a removed grantee could read.
#[derive(Debug, Serialize)]
pub struct ReadableJson {
    /// `workspace/project/environment`.
    pub environment: String,
    /// Secret names (never values); absent when this client could not list them.
    pub secrets: Option<Vec<String>>,
}

/// `zopp permission remove` in JSON.
#[derive(Debug, Serialize)]
struct RemoveJson {
    removed: PermissionJson,
    /// Principals that lost access.
    principals: Vec<String>,
    /// What they could read: rotate these values at their source.
    readable: Vec<ReadableJson>,
    /// Scopes whose keys they held.
    rotate: Vec<String>,
    /// Rotations done by this command (with --rotate).
    rotated: Vec<crate::cmd::rotate::RotatedJson>,
}

/// `zopp permission effective` in JSON.
#[derive(Debug, Serialize)]
struct EffectiveJson {
    /// `read`, `write`, `admin`, or null without any covering grant.
    role: Option<&'static str>,
    /// The grants it comes from.
    via: Vec<PermissionJson>,
}

/// The scope of an access command: the workspace from any source, the project and environment
/// from flags only (see [`SCOPE_HELP`]).
pub fn scope(ctx: &Context, global: &GlobalArgs) -> Result<ScopeSpec, CliError> {
    Ok(ScopeSpec::try_new(
        ctx.workspace()?,
        global.project.as_deref(),
        global.environment.first().map(String::as_str),
    )?)
}

/// Runs a permission command.
pub async fn run(
    ctx: &Context,
    out: &Out,
    cmd: &PermissionCommand,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    let scope = scope(ctx, global)?;
    match cmd {
        PermissionCommand::Set(a) => {
            let grantee = a.grantee.spec()?;
            let client = ctx.client().await?;
            let done = client
                .set_permission(&scope, &grantee, a.role.role(), &a.fingerprints)
                .await?;
            for n in &done.notes {
                out.note(&format!("note: {n}"));
            }
            if out.is_json() {
                return out.json(&SetJson {
                    grant: PermissionJson::from_proto(&done.grant),
                    principals: done.principals.iter().map(|p| p.id.to_string()).collect(),
                });
            }
            let n = done.principals.len();
            out.note(&format!(
                "granted {} on {} to {grantee} (key wrapped to {n} principal{})",
                a.role.role(),
                scope.describe(),
                if n == 1 { "" } else { "s" }
            ));
            Ok(())
        }
        PermissionCommand::List => {
            let grants = ctx.client().await?.list_permissions(&scope).await?;
            let rows: Vec<PermissionJson> = grants.iter().map(PermissionJson::from_proto).collect();
            if out.is_json() {
                return out.json(&rows);
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.scope.clone(),
                        r.role.to_owned(),
                        r.grantee(),
                        r.created_at.clone(),
                    ]
                })
                .collect();
            out.table_or(
                &["SCOPE", "ROLE", "GRANTEE", "GRANTED"],
                &table,
                "no grants to list",
            )
        }
        PermissionCommand::Remove(a) => {
            let grantee = a.grantee.spec()?;
            let client = ctx.client().await?;
            let resp = client.remove_permission(&scope, &grantee).await?;
            let removed = resp
                .removed
                .as_ref()
                .map(PermissionJson::from_proto)
                .ok_or_else(|| zopp_cli::Error::BadResponse("the removal names no grant".into()))?;
            let report = resp.report.unwrap_or_default();
            if !out.is_json() {
                out.note(&format!(
                    "removed {} on {} from {grantee}",
                    removed.role,
                    scope.describe()
                ));
            }
            let readable = readable_secrets(&client, &report).await;
            let rotate: Vec<ScopeSpec> = report.rotate.iter().map(ScopeSpec::from_proto).collect();
            if !out.is_json() {
                print_readable(out, &readable)?;
            }
            let rotated =
                crate::cmd::rotate::offer(ctx, out, &client, &rotate, a.rotate, a.no_rotate)
                    .await?;
            if out.is_json() {
                return out.json(&RemoveJson {
                    removed,
                    principals: report.principal_ids.clone(),
                    readable,
                    rotate: rotate.iter().map(ToString::to_string).collect(),
                    rotated,
                });
            }
            Ok(())
        }
        PermissionCommand::Effective(a) => {
            let grantee = match (&a.principal, &a.user) {
                (None, None) => None,
                (p, u) => Some(GranteeSpec::try_new(p.as_deref(), u.as_deref())?),
            };
            let resp = ctx
                .client()
                .await?
                .effective_permission(&scope, grantee.as_ref())
                .await?;
            let role = Role::from_proto(resp.role).map(Role::name);
            let via: Vec<PermissionJson> =
                resp.via.iter().map(PermissionJson::from_proto).collect();
            if out.is_json() {
                return out.json(&EffectiveJson { role, via });
            }
            out.line(role.unwrap_or("none"))?;
            for g in &via {
                out.note(&format!(
                    "  via {} on {} ({})",
                    g.role,
                    g.scope,
                    g.grantee()
                ));
            }
            Ok(())
        }
    }
}

/// The secret names of each environment a removed grantee could read. An environment this
/// client cannot read itself is listed without names.
pub async fn readable_secrets(client: &Client, report: &pb::RemovalReport) -> Vec<ReadableJson> {
    let mut out = Vec::with_capacity(report.environments.len());
    for e in &report.environments {
        let Ok(env) = EnvRef::try_new(&e.workspace, &e.project, &e.environment) else {
            continue;
        };
        let secrets = match client.fetch_environment(&env).await {
            Ok(state) => Some(state.secrets.iter().map(|s| s.name.clone()).collect()),
            Err(err) => {
                tracing::warn!(environment = %env, error = %err, "cannot list what the removed grantee could read");
                None
            }
        };
        out.push(ReadableJson {
            environment: env.to_string(),
            secrets,
        });
    }
    out
}

/// Prints what a removed grantee could read, for rotating the values at their source.
pub fn print_readable(out: &Out, readable: &[ReadableJson]) -> Result<(), CliError> {
    if readable.is_empty() {
        return Ok(());
    }
    out.line("secrets they could read (change these values at their source):")?;
    for r in readable {
        match &r.secrets {
            Some(names) if names.is_empty() => out.line(&format!("  {}: (none)", r.environment))?,
            Some(names) => out.line(&format!("  {}: {}", r.environment, names.join(", ")))?,
            None => out.line(&format!(
                "  {}: (you cannot read this environment to list them)",
                r.environment
            ))?,
        }
    }
    Ok(())
}
