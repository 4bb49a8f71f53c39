//! `zopp workspace|project|environment rotate-key`: a new key for the scope and every scope
//! below it (THREAT-MODEL.md §4.6), and the offer to rotate after a removal.

use std::io::{BufRead, Write};

use clap::Args;
use serde::Serialize;
use zopp_cli::teams::ScopeSpec;
use zopp_cli::Client;

use crate::context::Context;
use crate::failure::CliError;
use crate::output::Out;

/// `rotate-key` options.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Trust a grantee's key chain ending at the principal with this fingerprint (compare it
    /// out of band with `zopp principal fingerprint`); repeatable
    #[arg(long = "fingerprint", value_name = "FP")]
    pub fingerprints: Vec<String>,
}

/// One rotation in JSON output.
#[derive(Debug, Serialize)]
pub struct RotatedJson {
    /// `workspace/project/environment` names of the rotated scope.
    pub scope: String,
    /// Scopes that got a new key: the rotated one and everything below it.
    pub scopes: u32,
    /// Keys wrapped to current grantees.
    pub grant_keys: u32,
}

/// Rotates `scope`'s keys and reports it.
pub async fn run(
    ctx: &Context,
    out: &Out,
    scope: ScopeSpec,
    args: &RotateArgs,
) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let done = rotate(out, &client, &scope, &args.fingerprints).await?;
    if out.is_json() {
        return out.json(&done);
    }
    Ok(())
}

/// Rotates `scope` and reports it on stderr.
pub(crate) async fn rotate(
    out: &Out,
    client: &Client,
    scope: &ScopeSpec,
    fingerprints: &[String],
) -> Result<RotatedJson, CliError> {
    let done = client.rotate_keys(scope, fingerprints).await?;
    for n in &done.notes {
        out.note(&format!("note: {n}"));
    }
    if !out.is_json() {
        out.note(&format!(
            "rotated the keys of {} ({} scope{}, {} grant key{} rewrapped); what is written from \
             now on is sealed under the new key",
            scope.describe(),
            done.scopes,
            if done.scopes == 1 { "" } else { "s" },
            done.grant_keys,
            if done.grant_keys == 1 { "" } else { "s" },
        ));
    }
    Ok(RotatedJson {
        scope: scope.to_string(),
        scopes: done.scopes,
        grant_keys: done.grant_keys,
    })
}

/// After a removal: rotates the keys the removed principals held when `rotate` is set, asks on
/// a terminal otherwise (unless `no_rotate`), and else says how to do it. Returns the scopes it
/// rotated.
pub async fn offer(
    ctx: &Context,
    out: &Out,
    client: &Client,
    scopes: &[ScopeSpec],
    rotate_now: bool,
    no_rotate: bool,
) -> Result<Vec<RotatedJson>, CliError> {
    let mut rotated = Vec::new();
    for scope in scopes {
        // Offered only to someone allowed to do it: rotation needs the admin role there.
        let role = client
            .effective_permission(scope, None)
            .await
            .ok()
            .and_then(|r| zopp_cli::teams::Role::from_proto(r.role));
        if role != Some(zopp_cli::teams::Role::Admin) {
            out.note(&format!(
                "they kept the key of {}, and rotating it needs the admin role there (you have {}): ask an admin to run `zopp {} rotate-key {}`",
                scope.describe(),
                role.map_or("none", zopp_cli::teams::Role::name),
                family(scope),
                scope.flags()
            ));
            continue;
        }
        let go = if rotate_now {
            true
        } else if no_rotate || !ctx.interactive || out.is_json() {
            false
        } else {
            ask(&format!(
                "rotate the keys of {} now, so that they cannot read what is written from now \
                 on? [y/N] ",
                scope.describe()
            ))?
        };
        if go {
            // The removal already happened: a failed rotation is reported, not fatal.
            match rotate(out, client, scope, &[]).await {
                Ok(done) => rotated.push(done),
                Err(e) => out.note(&format!(
                    "could not rotate the keys of {}: {}; run `zopp {} rotate-key {}` again later",
                    scope.describe(),
                    crate::failure::describe(&e).map_or_else(String::new, |f| f.message),
                    family(scope),
                    scope.flags()
                )),
            }
        } else if !out.is_json() {
            out.note(&format!(
                "hint: they kept the key of {}; run `zopp {} rotate-key {}` so that what is \
                 written from now on is sealed under a key they never had",
                scope.describe(),
                family(scope),
                scope.flags()
            ));
        }
    }
    Ok(rotated)
}

/// The command family that rotates `scope`.
pub fn family(scope: &ScopeSpec) -> &'static str {
    match (scope.project(), scope.environment()) {
        (Some(_), Some(_)) => "environment",
        (Some(_), None) => "project",
        _ => "workspace",
    }
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
pub(crate) fn ask(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Sdk(zopp_cli::Error::io("cannot read", "stdin", e)))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
