//! `zopp diff`: two environments of one project (`-e A -e B`), or one environment at two points
//! in time (`--at T1 --at T2`, `--at-version N1 --at-version N2`, or one of each). Names only,
//! unless `--show-values`. A difference is not an error: the exit code is 0 either way.

use zopp_cli::versions::{diff, Change};
use zopp_cli::{At, DecryptedEnvironment, EnvRef, SecretRecord};

use crate::args::DiffArgs;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{DiffJson, DiffRowJson, Out};

/// One side of a comparison: which environment, at which point.
struct Side {
    env: EnvRef,
    at: At,
}

impl Side {
    fn label(&self) -> String {
        match self.at {
            At::Now => self.env.environment().to_owned(),
            at => format!("{}@{}", self.env.environment(), at.describe()),
        }
    }
}

/// Runs `zopp diff`; `environments` are the `-e` flags as given.
pub async fn run(
    ctx: &Context,
    out: &Out,
    a: &DiffArgs,
    environments: &[String],
) -> Result<(), CliError> {
    let (from, to) = sides(ctx, a, environments)?;
    let client = ctx.client().await?;
    let (old, new) = futures::future::try_join(
        client.fetch_environment_at(&from.env, from.at),
        client.fetch_environment_at(&to.env, to.at),
    )
    .await?;
    let (changes, unchanged) = diff(&old, &new);
    let value = |state: &DecryptedEnvironment, name: &str| -> Option<String> {
        find(state, name).map(|r| String::from_utf8_lossy(r.expose_value()).into_owned())
    };
    if out.is_json() {
        let values: Vec<(Option<String>, Option<String>)> = changes
            .iter()
            .map(|(name, _)| {
                if a.show_values {
                    (value(&old, name), value(&new, name))
                } else {
                    (None, None)
                }
            })
            .collect();
        let rows = changes
            .iter()
            .zip(&values)
            .map(|((name, change), (f, t))| DiffRowJson {
                name,
                change: change_label(*change),
                from_value: f.as_deref(),
                to_value: t.as_deref(),
            })
            .collect();
        return out.json(&DiffJson {
            from: from.label(),
            to: to.label(),
            from_env_version: old.env_version,
            to_env_version: new.env_version,
            changes: rows,
            unchanged,
        });
    }
    let mut lines = Vec::with_capacity(changes.len() + 1);
    for (name, change) in &changes {
        let mark = match change {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Changed => "~",
        };
        let mut line = format!("{mark} {name}");
        if a.show_values {
            // One line per name: escape newlines and control characters.
            let shown = |v: Option<String>| {
                v.map_or_else(
                    || "(absent)".to_owned(),
                    |v| format!("'{}'", v.escape_debug()),
                )
            };
            line.push_str(&format!(
                ": {} -> {}",
                shown(value(&old, name)),
                shown(value(&new, name))
            ));
        }
        lines.push(line);
    }
    if !lines.is_empty() {
        out.bytes(format!("{}\n", lines.join("\n")).as_bytes())?;
    }
    out.note(&format!(
        "{} -> {}: {} added, {} removed, {} changed, {} unchanged",
        from.label(),
        to.label(),
        changes.iter().filter(|(_, c)| *c == Change::Added).count(),
        changes
            .iter()
            .filter(|(_, c)| *c == Change::Removed)
            .count(),
        changes
            .iter()
            .filter(|(_, c)| *c == Change::Changed)
            .count(),
        unchanged
    ));
    Ok(())
}

fn find<'a>(state: &'a DecryptedEnvironment, name: &str) -> Option<&'a SecretRecord> {
    state
        .secrets
        .binary_search_by(|s| s.name.as_str().cmp(name))
        .ok()
        .map(|i| &state.secrets[i])
}

fn change_label(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Changed => "changed",
    }
}

/// The two sides the flags describe, checked before any call.
fn sides(ctx: &Context, a: &DiffArgs, environments: &[String]) -> Result<(Side, Side), CliError> {
    let usage = || {
        CliError::usage(
            "diff compares exactly two things",
            "pass two environments (`zopp diff -e dev -e prod`) or two points in time of one (`zopp diff -e prod --at 2026-11-20T10:00:00Z --at 2026-11-21T10:00:00Z`, or --at-version N1 --at-version N2)",
        )
    };
    let mut points = Vec::new();
    for t in &a.at {
        points.extend(super::point(Some(t), None)?);
    }
    for v in &a.at_version {
        points.extend(super::point(None, Some(*v))?);
    }
    match (environments.len(), points.len()) {
        (2, 0) => {
            let (ws, pr) = ctx.project()?;
            let side = |name: &str| -> Result<Side, CliError> {
                Ok(Side {
                    env: EnvRef::try_new(ws, pr, name)?,
                    at: At::Now,
                })
            };
            Ok((side(&environments[0])?, side(&environments[1])?))
        }
        (0 | 1, 2) => {
            let env = ctx.env_ref()?;
            Ok((
                Side {
                    env: env.clone(),
                    at: points[0],
                },
                Side { env, at: points[1] },
            ))
        }
        // One point: compare it with now.
        (0 | 1, 1) => {
            let env = ctx.env_ref()?;
            Ok((
                Side {
                    env: env.clone(),
                    at: points[0],
                },
                Side { env, at: At::Now },
            ))
        }
        _ => Err(usage()),
    }
}
