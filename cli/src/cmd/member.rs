//! `zopp member remove EMAIL -w WORKSPACE`: offboarding in one command. Every grant the user
//! holds anywhere in the workspace (the workspace, its projects, their environments) is
//! removed, what they could read is listed, the keys they held are rotated where the caller may
//! rotate them (asked on a terminal, `--rotate`/`--no-rotate` otherwise), and whatever could
//! not be done is said plainly. A rotation that is declined, not allowed or fails never turns a
//! completed removal into a failed exit code: access is gone either way.

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use serde::Serialize;
use zopp_cli::teams::{GranteeSpec, Role, ScopeSpec};
use zopp_proto::v1 as pb;

use crate::cmd::permission::{print_readable, readable_secrets, PermissionJson, ReadableJson};
use crate::cmd::rotate::{self, RotatedJson};
use crate::context::Context;
use crate::failure::{describe, CliError};
use crate::output::Out;

/// `zopp member …`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Remove a user from the workspace given by -w: every grant at every scope in it, then
    /// list what they could read and rotate the keys they held (where you may)
    Remove(MemberRemoveArgs),
}

/// `zopp member remove`.
#[derive(Debug, Args)]
pub struct MemberRemoveArgs {
    /// The user's email
    pub email: String,
    /// Rotate every key they held that you may rotate, without asking
    #[arg(long)]
    pub rotate: bool,
    /// Neither rotate nor ask (print how to rotate instead)
    #[arg(long, conflicts_with = "rotate")]
    pub no_rotate: bool,
}

/// Something the command could not do, and why.
#[derive(Debug, Serialize)]
pub struct NotDoneJson {
    /// `workspace/project/environment` names of the scope.
    pub scope: String,
    /// Why, as a sentence.
    pub reason: String,
}

/// `zopp member remove --output json`.
#[derive(Debug, Serialize)]
pub struct MemberRemoveJson {
    /// The user removed.
    pub email: String,
    /// The workspace.
    pub workspace: String,
    /// Grants removed.
    pub removed: Vec<PermissionJson>,
    /// Grants that could not be removed (the user keeps them).
    pub not_removed: Vec<NotDoneJson>,
    /// Principals (their devices) that lost access.
    pub principals: Vec<String>,
    /// What they could read: change these values at their source.
    pub readable: Vec<ReadableJson>,
    /// Rotations done by this command.
    pub rotated: Vec<RotatedJson>,
    /// Scopes whose keys they held and that were not rotated, with the reason.
    pub not_rotated: Vec<NotDoneJson>,
}

/// Runs a member command.
pub async fn run(ctx: &Context, out: &Out, cmd: &MemberCommand) -> Result<(), CliError> {
    match cmd {
        MemberCommand::Remove(a) => remove(ctx, out, a).await,
    }
}

async fn remove(ctx: &Context, out: &Out, a: &MemberRemoveArgs) -> Result<(), CliError> {
    let workspace = ctx.workspace()?;
    let grantee = GranteeSpec::try_new(None, Some(&a.email))?;
    let ws = ScopeSpec::try_new(workspace, None, None)?;
    let client = ctx.client().await?;
    let grants = client.list_permissions(&ws).await?;
    let theirs: Vec<&pb::PermissionGrant> = grants
        .iter()
        .filter(|g| g.user_email.eq_ignore_ascii_case(&a.email))
        .collect();
    if theirs.is_empty() {
        return Err(CliError::Failed {
            message: format!("{} holds no grant in workspace '{workspace}'", a.email),
            hint: Some(format!(
                "`zopp permission list -w {workspace}` shows who holds what"
            )),
            code: crate::failure::EXIT_NOT_FOUND,
        });
    }

    let mut removed = Vec::new();
    let mut not_removed = Vec::new();
    let mut first_failure = None;
    let mut principals = BTreeSet::new();
    let mut environments: Vec<pb::ScopeRef> = Vec::new();
    let mut to_rotate: Vec<ScopeSpec> = Vec::new();
    // Invites and service principals they had issued, revoked with their last grant.
    let mut issued: Vec<pb::IssuedItem> = Vec::new();
    for g in theirs {
        let scope = ScopeSpec::from_proto(&g.scope.clone().unwrap_or_default());
        match client.remove_permission(&scope, &grantee).await {
            Ok(resp) => {
                if let Some(r) = &resp.removed {
                    removed.push(PermissionJson::from_proto(r));
                }
                let report = resp.report.unwrap_or_default();
                principals.extend(report.principal_ids);
                issued.extend(report.issued);
                for e in report.environments {
                    if !environments.contains(&e) {
                        environments.push(e);
                    }
                }
                for s in report.rotate.iter().map(ScopeSpec::from_proto) {
                    if !to_rotate.contains(&s) {
                        to_rotate.push(s);
                    }
                }
            }
            Err(e) => {
                let f = describe(&CliError::Sdk(e));
                not_removed.push(NotDoneJson {
                    scope: scope.to_string(),
                    reason: f.as_ref().map_or_else(String::new, |f| f.message.clone()),
                });
                first_failure.get_or_insert(f.map_or(crate::failure::EXIT_ERROR, |f| f.code));
            }
        }
    }
    if !out.is_json() {
        for r in &removed {
            out.note(&format!(
                "removed {} on {} from {}",
                r.role, r.scope, a.email
            ));
        }
        for n in &not_removed {
            out.note(&format!(
                "could not remove their grant on {}: {}",
                n.scope, n.reason
            ));
        }
    }
    let report = pb::RemovalReport {
        principal_ids: principals.iter().cloned().collect(),
        environments,
        rotate: Vec::new(),
        issued,
    };
    let readable = readable_secrets(&client, &report).await;
    if !out.is_json() {
        print_readable(out, &readable)?;
    }

    // A rotation of a scope covers everything below it: keep the outermost ones.
    let outermost: Vec<ScopeSpec> = to_rotate
        .iter()
        .filter(|s| !to_rotate.iter().any(|o| o != *s && covers(o, s)))
        .cloned()
        .collect();
    let mut rotated = Vec::new();
    let mut not_rotated = Vec::new();
    for scope in &outermost {
        // Offered only to someone allowed to do it: rotation needs the admin role there.
        let role = client
            .effective_permission(scope, None)
            .await
            .ok()
            .and_then(|r| Role::from_proto(r.role));
        if role != Some(Role::Admin) {
            not_rotated.push(NotDoneJson {
                scope: scope.to_string(),
                reason: format!(
                    "rotating the keys of {} needs the admin role there (you have {}); ask an admin to run `zopp {} rotate-key {}`",
                    scope.describe(),
                    role.map_or("none", Role::name),
                    rotate::family(scope),
                    scope.flags()
                ),
            });
            continue;
        }
        let go = if a.rotate {
            true
        } else if a.no_rotate || !ctx.interactive || out.is_json() {
            false
        } else {
            rotate::ask(&format!(
                "rotate the keys of {} now, so that {} cannot read what is written from now on? [y/N] ",
                scope.describe(),
                a.email
            ))?
        };
        if !go {
            not_rotated.push(NotDoneJson {
                scope: scope.to_string(),
                reason: format!(
                    "not rotated; run `zopp {} rotate-key {}` so that what is written from now on is sealed under a key they never had",
                    rotate::family(scope),
                    scope.flags()
                ),
            });
            continue;
        }
        match rotate::rotate(out, &client, scope, &[]).await {
            Ok(done) => rotated.push(done),
            Err(e) => not_rotated.push(NotDoneJson {
                scope: scope.to_string(),
                reason: format!(
                    "rotation failed: {}",
                    describe(&e).map_or_else(String::new, |f| f.message)
                ),
            }),
        }
    }
    let left = not_removed.len();
    if out.is_json() {
        out.json(&MemberRemoveJson {
            email: a.email.clone(),
            workspace: workspace.to_owned(),
            removed,
            not_removed,
            principals: principals.into_iter().collect(),
            readable,
            rotated,
            not_rotated,
        })?;
    } else {
        for n in &not_rotated {
            out.note(&format!("they kept the key of {}: {}", n.scope, n.reason));
        }
    }
    match first_failure {
        // Some grant is still theirs: that is a failure, whatever else was done.
        Some(code) => Err(CliError::Failed {
            message: format!(
                "{} still holds {} grant(s) in workspace '{workspace}' that you could not remove",
                a.email, left
            ),
            hint: Some(format!(
                "ask an admin of those scopes to run `zopp member remove {} -w {workspace}`",
                a.email
            )),
            code,
        }),
        None => Ok(()),
    }
}

/// Whether rotating `outer` also rotates `inner` (a scope rotation covers everything below).
fn covers(outer: &ScopeSpec, inner: &ScopeSpec) -> bool {
    outer.workspace() == inner.workspace()
        && match (outer.project(), outer.environment()) {
            (None, _) => true,
            (Some(p), None) => inner.project() == Some(p),
            (Some(_), Some(_)) => outer == inner,
        }
}
