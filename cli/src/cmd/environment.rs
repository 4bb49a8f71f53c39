//! `zopp environment create|list|delete -w WORKSPACE -p PROJECT`.

use std::io::Write;
use zopp_cli::validate::{check_name, NameKind};

use zopp_cli::EnvRef;

use crate::args::EnvironmentCommand;
use crate::args::EnvironmentRestoreArgs;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{
    rfc3339, DeletedJson, EnvironmentJson, Out, RestoreJson, RetentionJson, RetentionPlanJson,
    RetentionSecretJson,
};

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
            out.table_or(
                &["NAME", "VERSION", "CREATED", "KEEPS"],
                &rows,
                "no environments in this project yet: `zopp environment create NAME`",
            )
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
            if keep == Some(0) {
                return Err(CliError::usage(
                    "a retention limit keeps at least 1 version",
                    "use --keep-all to keep every version",
                ));
            }
            let (ws, pr) = (env.workspace().to_owned(), env.project().to_owned());
            let client = ctx.client().await?;
            if let Some(n) = keep.filter(|_| !a.yes || a.dry_run) {
                // A limit deletes older versions for good: show how many, then ask.
                let plan = retention_plan(&client, &env, n).await?;
                if a.dry_run {
                    if out.is_json() {
                        return out.json(&RetentionPlanJson {
                            environment: env.environment(),
                            keep_versions: n,
                            would_prune: plan.total,
                            secrets: plan
                                .per_secret
                                .iter()
                                .map(|(name, p)| RetentionSecretJson {
                                    name,
                                    would_prune: *p,
                                })
                                .collect(),
                            dry_run: true,
                        });
                    }
                    let _ = writeln!(
                        std::io::stderr(),
                        "{}\ndry run: nothing was changed",
                        plan.text
                    );
                    return Ok(());
                }
                super::require_role(
                    &client,
                    &env,
                    zopp_cli::teams::Role::Admin,
                    "setting retention",
                )
                .await?;
                if !out.is_json() {
                    let _ = writeln!(std::io::stderr(), "{}", plan.text);
                }
                super::confirm(
                    ctx,
                    a.yes,
                    &format!(
                        "keep only the newest {n} version(s) of each secret of environment '{}' ({} version(s) deleted now)",
                        env.environment(),
                        plan.total
                    ),
                )?;
            } else if a.dry_run {
                out.note(&format!(
                    "would keep every version of each secret of environment '{}' from now on; nothing is deleted\ndry run: nothing was changed",
                    env.environment()
                ));
                return Ok(());
            }
            let (e, pruned) = client.set_retention(&env, keep).await?;
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

/// What a retention limit would delete now, counted from each live secret's history.
struct RetentionPlan {
    /// Versions deleted at once.
    total: u64,
    /// Per live secret, versions deleted at once (only those losing some).
    per_secret: Vec<(String, u64)>,
    /// The plan for people.
    text: String,
}

async fn retention_plan(
    client: &zopp_cli::Client,
    env: &EnvRef,
    keep: u64,
) -> Result<RetentionPlan, CliError> {
    let state = client.fetch_environment(env).await?;
    let mut per_secret = Vec::new();
    for s in &state.secrets {
        let versions = client.secret_history(env, &s.name).await?.len() as u64;
        if versions > keep {
            per_secret.push((s.name.clone(), versions - keep));
        }
    }
    per_secret.sort();
    let total = per_secret.iter().map(|(_, n)| n).sum();
    let mut lines = vec![format!(
        "keeping only the newest {keep} version(s) of each secret of environment '{}' would delete {total} older version(s) for good (older versions of deleted secrets too), and later writes keep pruning; --at/--at-version reads before them stop working",
        env.environment()
    )];
    lines.extend(
        per_secret
            .iter()
            .map(|(name, n)| format!("  {name}: {n} version(s)")),
    );
    Ok(RetentionPlan {
        total,
        per_secret,
        text: lines.join("\n"),
    })
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
    let client = ctx.client().await?;
    if !a.yes || a.dry_run {
        // Restoring deletes the names that did not exist then and replaces changed values:
        // show the plan first, then ask (or, without a terminal, refuse without --yes).
        let plan = client.restore_environment(&env, at, true).await?;
        let nothing = plan.added.is_empty() && plan.changed.is_empty() && plan.removed.is_empty();
        if a.dry_run || nothing {
            return print_restore(out, &env, at, &plan, a.dry_run);
        }
        super::require_role(&client, &env, zopp_cli::teams::Role::Write, "restoring").await?;
        if !out.is_json() {
            print_plan(&env, at, &plan);
        }
        super::confirm(
            ctx,
            a.yes,
            &format!(
                "restore environment '{}' ({} added, {} changed, {} removed)",
                env.environment(),
                plan.added.len(),
                plan.changed.len(),
                plan.removed.len()
            ),
        )?;
    }
    let done = client.restore_environment(&env, at, false).await?;
    print_restore(out, &env, at, &done, false)
}

/// The restore plan on stderr, before asking.
fn print_plan(env: &EnvRef, at: zopp_cli::At, plan: &zopp_cli::versions::RestoreOutcome) {
    let mut lines = vec![format!(
        "restoring environment '{}' to its state at {} (environment version {}) would:",
        env.environment(),
        at.describe(),
        plan.from_env_version
    )];
    for (verb, names) in [
        ("bring back", &plan.added),
        ("replace the value of", &plan.changed),
        ("delete", &plan.removed),
    ] {
        lines.extend(names.iter().map(|n| format!("  {verb} {n}")));
    }
    lines.push("  (earlier versions stay in each secret's history)".to_owned());
    let _ = writeln!(std::io::stderr(), "{}", lines.join("\n"));
}

/// What a restore did (or, with `dry_run`, would do).
fn print_restore(
    out: &Out,
    env: &EnvRef,
    at: zopp_cli::At,
    done: &zopp_cli::versions::RestoreOutcome,
    dry_run: bool,
) -> Result<(), CliError> {
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
            dry_run,
        });
    }
    let verb = if dry_run { "would restore" } else { "restored" };
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
    match (dry_run, done.env_version) {
        (true, _) => lines.push("dry run: nothing was written".to_owned()),
        (false, Some(v)) => lines.push(format!("environment is now at version {v}")),
        (false, None) => {
            lines.push("nothing to do: the environment is already in that state".to_owned())
        }
    }
    out.note(&lines.join("\n"));
    Ok(())
}
