//! `zopp invite create|list|revoke -w WORKSPACE`: single-use workspace invites. The code is
//! made here and printed once; it carries the secret that opens the workspace key, and the
//! server keeps only what cannot open it.

use clap::{Args, Subcommand};
use serde::Serialize;
use zopp_cli::teams::Role;
use zopp_proto::v1 as pb;

use crate::cmd::permission::RoleArg;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, Out};

/// `zopp invite …`.
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create a single-use invite into the workspace given by -w and print its code once
    Create(CreateArgs),
    /// List the workspace's invites and their state
    List,
    /// Revoke a pending invite
    Revoke(RevokeArgs),
}

/// `zopp invite create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Role the joiner receives on the workspace
    #[arg(long, value_enum, default_value = "read")]
    pub role: RoleArg,
    /// Hours until the invite expires (1 to 8784)
    #[arg(long, value_name = "N", default_value_t = 48)]
    pub expires_hours: u32,
}

/// `zopp invite revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Invite id, as `zopp invite list` shows it
    pub id: String,
}

/// An invite in JSON output.
#[derive(Debug, Serialize)]
pub struct InviteJson {
    /// Invite id.
    pub id: String,
    /// Workspace name.
    pub workspace: String,
    /// Role given on joining.
    pub role: &'static str,
    /// `pending`, `used`, `revoked` or `expired`.
    pub status: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry time, RFC 3339.
    pub expires_at: String,
    /// Who created it (principal id).
    pub created_by: String,
    /// Who redeemed it (principal id), once used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
}

impl InviteJson {
    fn from_proto(i: &pb::InviteInfo) -> Self {
        Self {
            id: i.id.clone(),
            workspace: i.workspace.clone(),
            role: Role::from_proto(i.role).map_or("none", Role::name),
            status: i.status.clone(),
            created_at: rfc3339(i.created_at_ms),
            expires_at: rfc3339(i.expires_at_ms),
            created_by: i.created_by.clone(),
            used_by: (!i.used_by.is_empty()).then(|| i.used_by.clone()),
        }
    }
}

/// `zopp invite create` in JSON.
#[derive(Serialize)]
struct CreatedJson<'a> {
    /// The code to give the new member (once).
    code: &'a str,
    #[serde(flatten)]
    invite: InviteJson,
}

/// Runs an invite command.
pub async fn run(ctx: &Context, out: &Out, cmd: &InviteCommand) -> Result<(), CliError> {
    let workspace = ctx.workspace()?;
    match cmd {
        InviteCommand::Create(a) => {
            if a.expires_hours == 0 || a.expires_hours > 24 * 366 {
                return Err(CliError::usage(
                    format!("--expires-hours {} is out of range", a.expires_hours),
                    "pass a number of hours from 1 to 8784",
                ));
            }
            let client = ctx.client().await?;
            let created = client
                .create_invite(workspace, a.role.role(), a.expires_hours)
                .await?;
            // The code carries the server's address, so `zopp join` needs no --server.
            let code = zeroize::Zeroizing::new(crate::cmd::principal::located(
                client.server().url(),
                created.code.as_str(),
            ));
            let info = InviteJson::from_proto(&created.info);
            if out.is_json() {
                return out.json(&CreatedJson {
                    code: code.as_str(),
                    invite: info,
                });
            }
            out.line(code.as_str())?;
            out.note(&format!(
                "invite into workspace '{workspace}' as {} until {}: give this code to one \
                 person, who runs `zopp join CODE EMAIL`",
                info.role, info.expires_at
            ));
            Ok(())
        }
        InviteCommand::List => {
            let list = ctx.client().await?.list_invites(workspace).await?;
            let rows: Vec<InviteJson> = list.iter().map(InviteJson::from_proto).collect();
            if out.is_json() {
                return out.json(&rows);
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.role.to_owned(),
                        r.status.clone(),
                        r.expires_at.clone(),
                    ]
                })
                .collect();
            out.table_or(
                &["ID", "ROLE", "STATUS", "EXPIRES"],
                &table,
                "no invites in this workspace",
            )
        }
        InviteCommand::Revoke(a) => {
            let info = ctx.client().await?.revoke_invite(workspace, &a.id).await?;
            if out.is_json() {
                return out.json(&InviteJson::from_proto(&info));
            }
            out.note(&format!("revoked invite {}", info.id));
            Ok(())
        }
    }
}
