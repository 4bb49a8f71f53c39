//! `zopp environment create|list|delete -w WORKSPACE -p PROJECT`.

use zopp_cli::validate::{check_name, NameKind};
use zopp_cli::EnvRef;

use crate::args::EnvironmentCommand;
use crate::args::EnvironmentRestoreArgs;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, DeletedJson, EnvironmentJson, Out, RestoreJson, RetentionJson};

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
                return out.json(&EnvironmentJson::of(&e, ws, pr));
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
                    .map(|e| EnvironmentJson::of(e, ws, pr))
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
                        retention_label(e.keep_versions),
                    ]
                })
                .collect();
            out.table(&["NAME", "VERSION", "CREATED", "KEEPS"], &rows)
        }
        EnvironmentCommand::SetRetention(a) => {
            let env = ctx.env_ref()?;
            let keep = match (a.versions, a.keep_all) {
                (Some(n), false) => Some(n),
                (None, true) => None,
                _ => {
                    return Err(CliError::usage(
                        "give either a number of versions to keep or --keep-all",
                        "e.g. `zopp environment set-retention 10 -e prod`, or `--keep-all` to keep every version",
                    ))
                }
            };
            let (ws, pr) = (env.workspace().to_owned(), env.project().to_owned());
            let (e, pruned) = ctx.client().await?.set_retention(&env, keep).await?;
            if out.is_json() {
                return out.json(&RetentionJson {
                    environment: EnvironmentJson::of(&e, &ws, &pr),
                    pruned,
                });
            }
            out.note(&match keep {
                Some(n) => format!(
                    "environment '{}' now keeps the newest {n} version(s) of each secret; pruned {pruned} older version(s)",
                    e.name
                ),
                None => format!(
                    "environment '{}' now keeps every version of each secret",
                    e.name
                ),
            });
            Ok(())
        }
        EnvironmentCommand::Restore(a) => restore(ctx, out, a).await,
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

/// How a retention limit reads in `environment list`.
fn retention_label(keep_versions: u64) -> String {
    if keep_versions == 0 {
        "all".to_owned()
    } else {
        format!("last {keep_versions}")
    }
}

/// `zopp environment restore`.
async fn restore(ctx: &Context, out: &Out, a: &EnvironmentRestoreArgs) -> Result<(), CliError> {
    let at = a.point.resolve()?.ok_or_else(|| {
        CliError::usage(
            "restore needs the state to go back to",
            "pass --at TIME (e.g. --at 2026-11-20T10:00:00Z) or --at-version N",
        )
    })?;
    let env = ctx.env_ref()?;
    let done = ctx
        .client()
        .await?
        .restore_environment(&env, at, a.dry_run)
        .await?;
    if out.is_json() {
        return out.json(&RestoreJson {
            restored_from: at.describe(),
            from_env_version: done.from_env_version,
            base_env_version: done.base_env_version,
            added: &done.added,
            changed: &done.changed,
            removed: &done.removed,
            unchanged: &done.unchanged,
            env_version: done.env_version,
            dry_run: a.dry_run,
        });
    }
    let verb = if a.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let mut lines = vec![format!(
        "{verb} environment '{}' to its state at {} (environment version {}): {} added, {} changed, {} removed, {} unchanged",
        env.environment(),
        at.describe(),
        done.from_env_version,
        done.added.len(),
        done.changed.len(),
        done.removed.len(),
        done.unchanged.len()
    )];
    for (mark, names) in [
        ("+", &done.added),
        ("~", &done.changed),
        ("-", &done.removed),
    ] {
        lines.extend(names.iter().map(|n| format!("  {mark} {n}")));
    }
    match (a.dry_run, done.env_version) {
        (true, _) => lines.push("dry run: nothing was written".to_owned()),
        (false, Some(v)) => lines.push(format!("environment is now at version {v}")),
        (false, None) => {
            lines.push("nothing to do: the environment is already in that state".to_owned())
        }
    }
    out.note(&lines.join("\n"));
    Ok(())
}
