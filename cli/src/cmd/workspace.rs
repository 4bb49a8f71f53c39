//! `zopp workspace create|list|delete`.

use zopp_cli::validate::{check_name, NameKind};

use crate::args::WorkspaceCommand;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, DeletedJson, Out, WorkspaceJson};

/// Runs a workspace command.
pub async fn run(ctx: &Context, out: &Out, cmd: &WorkspaceCommand) -> Result<(), CliError> {
    match cmd {
        WorkspaceCommand::RotateKey(a) => {
            let scope = zopp_cli::teams::ScopeSpec::try_new(ctx.workspace()?, None, None)?;
            crate::cmd::rotate::run(ctx, out, scope, a).await
        }
        WorkspaceCommand::Create(a) => {
            check_name(NameKind::Workspace, &a.name)?;
            let ws = ctx.client().await?.create_workspace(&a.name).await?;
            if out.is_json() {
                return out.json(&WorkspaceJson {
                    id: &ws.id,
                    name: &ws.name,
                    created_at: rfc3339(ws.created_at_ms),
                });
            }
            out.note(&format!("created workspace '{}'", ws.name));
            Ok(())
        }
        WorkspaceCommand::List => {
            let list = ctx.client().await?.list_workspaces().await?;
            if out.is_json() {
                let rows: Vec<_> = list
                    .iter()
                    .map(|w| WorkspaceJson {
                        id: &w.id,
                        name: &w.name,
                        created_at: rfc3339(w.created_at_ms),
                    })
                    .collect();
                return out.json(&rows);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|w| vec![w.name.clone(), rfc3339(w.created_at_ms)])
                .collect();
            out.table_or(
                &["NAME", "CREATED"],
                &rows,
                "no workspaces you can see yet: `zopp workspace create NAME`, or ask for an invite",
            )
        }
        WorkspaceCommand::Delete(a) => {
            check_name(NameKind::Workspace, &a.name)?;
            let what = format!("workspace '{}'", a.name);
            super::confirm_delete(
                ctx,
                a.yes,
                &what,
                " with all its projects, environments and secrets",
            )?;
            ctx.client().await?.delete_workspace(&a.name).await?;
            if out.is_json() {
                return out.json(&DeletedJson {
                    kind: "workspace",
                    name: &a.name,
                    deleted: true,
                });
            }
            out.note(&format!("deleted {what}"));
            Ok(())
        }
    }
}
