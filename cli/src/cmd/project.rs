//! `zopp project create|list|delete -w WORKSPACE`.

use zopp_cli::validate::{check_name, NameKind};

use crate::args::ProjectCommand;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, DeletedJson, Out, ProjectJson};

/// Runs a project command.
pub async fn run(ctx: &Context, out: &Out, cmd: &ProjectCommand) -> Result<(), CliError> {
    match cmd {
        ProjectCommand::RotateKey(a) => {
            let scope = {
                let (ws, pr) = ctx.project()?;
                zopp_cli::teams::ScopeSpec::try_new(ws, Some(pr), None)?
            };
            crate::cmd::rotate::run(ctx, out, scope, a).await
        }
        ProjectCommand::Create(a) => {
            check_name(NameKind::Project, &a.name)?;
            let ws = ctx.workspace()?;
            let p = ctx.client().await?.create_project(ws, &a.name).await?;
            if out.is_json() {
                return out.json(&ProjectJson {
                    id: &p.id,
                    name: &p.name,
                    workspace: ws,
                    created_at: rfc3339(p.created_at_ms),
                });
            }
            out.note(&format!("created project '{}' in workspace '{ws}'", p.name));
            Ok(())
        }
        ProjectCommand::List => {
            let ws = ctx.workspace()?;
            let list = ctx.client().await?.list_projects(ws).await?;
            if out.is_json() {
                let rows: Vec<_> = list
                    .iter()
                    .map(|p| ProjectJson {
                        id: &p.id,
                        name: &p.name,
                        workspace: ws,
                        created_at: rfc3339(p.created_at_ms),
                    })
                    .collect();
                return out.json(&rows);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| vec![p.name.clone(), rfc3339(p.created_at_ms)])
                .collect();
            out.table_or(
                &["NAME", "CREATED"],
                &rows,
                "no projects in this workspace yet: `zopp project create NAME`",
            )
        }
        ProjectCommand::Delete(a) => {
            check_name(NameKind::Project, &a.name)?;
            let ws = ctx.workspace()?;
            let what = format!("project '{}' in workspace '{ws}'", a.name);
            super::confirm_delete(ctx, a.yes, &what, " with all its environments and secrets")?;
            ctx.client().await?.delete_project(ws, &a.name).await?;
            if out.is_json() {
                return out.json(&DeletedJson {
                    kind: "project",
                    name: &a.name,
                    deleted: true,
                });
            }
            out.note(&format!("deleted {what}"));
            Ok(())
        }
    }
}
