//! `zopp environment create|list|delete -w WORKSPACE -p PROJECT`.

use zopp_cli::validate::{check_name, NameKind};
use zopp_cli::EnvRef;

use crate::args::EnvironmentCommand;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, DeletedJson, EnvironmentJson, Out};

/// Runs an environment command.
pub async fn run(ctx: &Context, out: &Out, cmd: &EnvironmentCommand) -> Result<(), CliError> {
    match cmd {
        EnvironmentCommand::RotateKey(a) => {
            let scope = {
                let env = ctx.env_ref()?;
                zopp_cli::teams::ScopeSpec::try_new(
                    env.workspace(),
                    Some(env.project()),
                    Some(env.environment()),
                )?
            };
            crate::cmd::rotate::run(ctx, out, scope, a).await
        }
        EnvironmentCommand::Create(a) => {
            check_name(NameKind::Environment, &a.name)?;
            let (ws, pr) = ctx.project()?;
            let e = ctx
                .client()
                .await?
                .create_environment(ws, pr, &a.name)
                .await?;
            if out.is_json() {
                return out.json(&EnvironmentJson {
                    id: &e.id,
                    name: &e.name,
                    workspace: ws,
                    project: pr,
                    created_at: rfc3339(e.created_at_ms),
                    env_version: e.env_version,
                    key_epoch: e.key_epoch,
                });
            }
            out.note(&format!(
                "created environment '{}' in project '{pr}'",
                e.name
            ));
            Ok(())
        }
        EnvironmentCommand::List => {
            let (ws, pr) = ctx.project()?;
            let list = ctx.client().await?.list_environments(ws, pr).await?;
            if out.is_json() {
                let rows: Vec<_> = list
                    .iter()
                    .map(|e| EnvironmentJson {
                        id: &e.id,
                        name: &e.name,
                        workspace: ws,
                        project: pr,
                        created_at: rfc3339(e.created_at_ms),
                        env_version: e.env_version,
                        key_epoch: e.key_epoch,
                    })
                    .collect();
                return out.json(&rows);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.env_version.to_string(),
                        rfc3339(e.created_at_ms),
                    ]
                })
                .collect();
            out.table(&["NAME", "VERSION", "CREATED"], &rows)
        }
        EnvironmentCommand::Delete(a) => {
            let (ws, pr) = ctx.project()?;
            let env = EnvRef::try_new(ws, pr, &a.name)?;
            let what = format!("environment '{}' in project '{pr}'", a.name);
            super::confirm_delete(ctx, a.yes, &what, " with all its secrets")?;
            ctx.client().await?.delete_environment(&env).await?;
            if out.is_json() {
                return out.json(&DeletedJson {
                    kind: "environment",
                    name: &a.name,
                    deleted: true,
                });
            }
            out.note(&format!("deleted {what}"));
            Ok(())
        }
    }
}
