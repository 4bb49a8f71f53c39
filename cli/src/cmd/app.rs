//! `zopp app set|get|list|history|delete|rollback|status`, `zopp preview` and `zopp apply`
//! (DESIGN.md §7, docs/platform.md).
//!
//! An apply takes the app's lease from the server, renders the manifest with the real values,
//! writes the app's kubeconfig to a private file, pipes the manifest to the apply command's
//! stdin with `KUBECONFIG` set, masks the command's output, records the apply (encrypted in the
//! environment; versions and the rendering's digest in the server's audit trail) and releases
//! the lease. zopp itself prints only masked text.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::{Args, Subcommand};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Serialize;
use zeroize::Zeroizing;
use zopp_cli::platform::{
    self, diff_lines, AppSpec, ApplyInfo, LeaseOutcome, Rendering, ResourceKind, UsedSecret,
};
use zopp_cli::run::pump::{self, Pump, Sink};
use zopp_cli::run::signals::{self, FORWARDED};
use zopp_cli::validate::MAX_VALUE_LEN;
use zopp_cli::{Client, EnvRef, Error};
use zopp_formats::Masker;
use zopp_proto::v1 as pb;

use super::kubeconfig::{self as kube, ResourceRowJson};
use crate::context::Context;
use crate::failure::{CliError, EXIT_CONFLICT};
use crate::output::{rfc3339, Out};

/// `zopp app`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Store an app spec (checked: it parses, every reference parses, its kubeconfig exists)
    Set(AppSetArgs),
    /// Print an app spec (it holds references, never values)
    Get(AppGetArgs),
    /// List app names with their versions
    List,
    /// Show every version of an app
    History(AppNameArgs),
    /// Delete an app (a tombstone version: history and rollback still work)
    Delete(AppNameArgs),
    /// Restore an earlier version as a new version
    Rollback(AppRollbackArgs),
    /// Show the app's lease and its last apply: who, when, versions, result
    Status(AppNameArgs),
}

/// `zopp app set`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
The spec (YAML; docs/platform.md):
  kubeconfig: prod-cluster          # a kubeconfig of the same environment (required)
  namespace: web                    # set on the kubeconfig's current context (optional)
  labels: {team: web}               # descriptive (optional)
  apply: [kubectl, apply, -f, -]    # the command the manifest is piped to (the default)
  manifest: |                       # the template (required)
    apiVersion: v1
    kind: Secret
    metadata: {name: db}
    stringData: {password: ${DB_PASSWORD}}")]
pub struct AppSetArgs {
    /// App name (the rules of secret names)
    pub name: String,
    /// The app spec, or - for stdin
    #[arg(long, short = 'f', value_name = "FILE|-")]
    pub file: PathBuf,
}

/// `zopp app get`.
#[derive(Debug, Args)]
pub struct AppGetArgs {
    /// App name
    pub name: String,
    /// This version instead of the latest
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
}

/// An app named on the command line.
#[derive(Debug, Args)]
pub struct AppNameArgs {
    /// App name
    pub name: String,
}

/// `zopp app rollback`.
#[derive(Debug, Args)]
pub struct AppRollbackArgs {
    /// App name
    pub name: String,
    /// Version to restore
    #[arg(long, value_name = "N")]
    pub to: u64,
}

/// `zopp preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// App name
    pub name: String,
}

/// `zopp apply`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Exit codes: the apply command's own; 6 when another apply holds the app's lease.

In CI, with a service principal's token:
  ZOPP_TOKEN=zopp_… zopp apply web -w acme -p api -e prod --yes")]
pub struct ApplyArgs {
    /// App name
    pub name: String,
    /// Apply without asking (required without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Take the lease even from a live holder (admin on the environment)
    #[arg(long)]
    pub break_lock: bool,
    /// How long the lease lasts if this zopp dies without releasing it (renewed while the
    /// apply runs), e.g. 5m or 30s
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
}

/// `app status` as JSON.
#[derive(Debug, Serialize)]
struct AppStatusJson {
    name: String,
    locked_by: Option<String>,
    locked_since: Option<String>,
    lock_expires: Option<String>,
    last_apply: Option<LastApplyJson>,
}

#[derive(Debug, Serialize)]
struct LastApplyJson {
    by: String,
    started_at: String,
    finished_at: String,
    app_version: u64,
    kubeconfig_version: u64,
    exit_code: i32,
    rendering_sha256: String,
    secrets: Vec<UsedSecret>,
}

/// `preview` as JSON.
#[derive(Debug, Serialize)]
struct PreviewJson<'a> {
    name: &'a str,
    app_version: u64,
    kubeconfig: &'a str,
    apply_command: Vec<String>,
    rendering: &'a str,
    secrets: &'a [UsedSecret],
    last_applied_app_version: Option<u64>,
    changed_secrets: Vec<String>,
    diff: Vec<String>,
}

/// Runs an app command.
pub async fn run(ctx: &Context, out: &Out, cmd: &AppCommand) -> Result<(), CliError> {
    let kind = ResourceKind::App;
    match cmd {
        AppCommand::Set(a) => {
            platform::check_resource_name(&a.name)?;
            let text = super::inject::read_text(&a.file, MAX_VALUE_LEN)?;
            let spec = AppSpec::try_parse(&text)?;
            let env = ctx.env_ref()?;
            let client = ctx.client().await?;
            let kubeconfigs = client
                .list_resources(&env, ResourceKind::Kubeconfig)
                .await?;
            if !kubeconfigs.iter().any(|k| k.name == spec.kubeconfig) {
                return Err(CliError::Failed {
                    message: format!(
                        "app '{}' uses kubeconfig '{}', which does not exist in {env}",
                        a.name, spec.kubeconfig
                    ),
                    hint: Some(format!(
                        "store it first: `zopp kubeconfig set {} -f FILE`",
                        spec.kubeconfig
                    )),
                    code: crate::failure::EXIT_NOT_FOUND,
                });
            }
            let done = client
                .set_resource(&env, kind, &a.name, text.as_bytes())
                .await?;
            kube::written(out, kind, &a.name, done.version, false)
        }
        AppCommand::Get(a) => {
            let env = ctx.env_ref()?;
            let rec = ctx
                .client()
                .await?
                .get_resource(&env, kind, &a.name, a.version)
                .await?;
            out.bytes(rec.expose_value())
        }
        AppCommand::List => {
            let env = ctx.env_ref()?;
            let client = ctx.client().await?;
            let state = client.fetch_environment(&env).await?;
            let rows = platform::resource_rows(&state, kind);
            if out.is_json() {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|r| ResourceRowJson {
                        name: &r.name,
                        version: r.version,
                        updated_at: rfc3339(r.updated_at_ms),
                        updated_by: &r.updated_by,
                    })
                    .collect();
                return out.json(&rows);
            }
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.version.to_string(),
                        rfc3339(r.updated_at_ms),
                        r.updated_by.clone(),
                    ]
                })
                .collect();
            out.table(&["NAME", "VERSION", "UPDATED", "UPDATED BY"], &rows)
        }
        AppCommand::History(a) => kube::history(ctx, out, kind, &a.name).await,
        AppCommand::Delete(a) => kube::delete(ctx, out, kind, &a.name).await,
        AppCommand::Rollback(a) => kube::rollback(ctx, out, kind, &a.name, a.to).await,
        AppCommand::Status(a) => status(ctx, out, &a.name).await,
    }
}

/// The app's current spec and version.
async fn load_app(client: &Client, env: &EnvRef, name: &str) -> Result<(AppSpec, u64), CliError> {
    let rec = client
        .get_resource(env, ResourceKind::App, name, None)
        .await?;
    let text = std::str::from_utf8(rec.expose_value())
        .map_err(|_| Error::InvalidInput(format!("app '{name}' is not UTF-8 text")))?;
    Ok((AppSpec::try_parse(text)?, rec.version))
}

/// What changed between the last successful apply and `now`: one line per secret whose
/// version differs, appeared or disappeared.
fn changed_secrets(last: &[UsedSecret], now: &[UsedSecret]) -> Vec<String> {
    let key = |u: &UsedSecret| (u.environment_id.clone(), u.name_digest.clone());
    let mut out = Vec::new();
    for n in now {
        match last.iter().find(|l| key(l) == key(n)) {
            Some(l) if l.version != n.version => out.push(format!(
                "{}: version {} -> {}",
                n.reference, l.version, n.version
            )),
            Some(_) => {}
            None => out.push(format!("{}: new (version {})", n.reference, n.version)),
        }
    }
    for l in last {
        if !now.iter().any(|n| key(n) == key(l)) {
            out.push(format!("{}: no longer used", l.reference));
        }
    }
    out
}

/// `zopp preview`.
pub async fn preview(ctx: &Context, out: &Out, a: &PreviewArgs) -> Result<(), CliError> {
    let env = ctx.env_ref()?;
    let client = ctx.client().await?;
    let (spec, version) = load_app(&client, &env, &a.name).await?;
    let rendering = platform::render(&client, &env, &spec.manifest).await?;
    let (record, _) = client.apply_record(&env, &a.name).await?;
    let last = record.last_success.as_ref();
    let changed = last
        .map(|l| changed_secrets(&l.secrets, &rendering.used))
        .unwrap_or_default();
    let diff: Vec<String> = match last.and_then(|l| l.masked.as_deref()) {
        Some(old) if old != rendering.masked => diff_lines(old, &rendering.masked),
        _ => Vec::new(),
    };
    if out.is_json() {
        return out.json(&PreviewJson {
            name: &a.name,
            app_version: version,
            kubeconfig: &spec.kubeconfig,
            apply_command: spec.apply_command(),
            rendering: &rendering.masked,
            secrets: &rendering.used,
            last_applied_app_version: last.map(|l| l.app_version),
            changed_secrets: changed,
            diff,
        });
    }
    let mut text = String::new();
    text.push_str(&format!(
        "# app '{}' version {version} in {env}; kubeconfig '{}'{}; apply command: {}\n",
        a.name,
        spec.kubeconfig,
        spec.namespace
            .as_deref()
            .map(|n| format!(", namespace '{n}'"))
            .unwrap_or_default(),
        spec.apply_command().join(" ")
    ));
    text.push_str(&rendering.masked);
    if !rendering.masked.ends_with('\n') {
        text.push('\n');
    }
    match last {
        None => text.push_str("# never applied\n"),
        Some(l) => {
            text.push_str(&format!(
                "# changes since the last successful apply (app version {}, by {} at {}):\n",
                l.app_version,
                l.by,
                rfc3339(l.finished_at_ms)
            ));
            if l.app_version != version {
                text.push_str(&format!(
                    "#   app: version {} -> {version}\n",
                    l.app_version
                ));
            }
            for c in &changed {
                text.push_str(&format!("#   {c}\n"));
            }
            if diff.is_empty() {
                text.push_str("#   the masked manifest is unchanged\n");
            } else {
                text.push_str("# diff of the masked manifests (- last apply, + now):\n");
                for line in &diff {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    out.bytes(text.as_bytes())
}

/// `zopp app status`.
async fn status(ctx: &Context, out: &Out, name: &str) -> Result<(), CliError> {
    let env = ctx.env_ref()?;
    let client = ctx.client().await?;
    // The app must exist (and be readable) for its status to mean anything.
    load_app(&client, &env, name).await?;
    let (holder, server_last) = client.app_status(&env, name).await?;
    let (record, _) = client.apply_record(&env, name).await?;
    // The server's record is authoritative for who and when; the encrypted record names the
    // secrets. They describe the same apply when the rendering digests agree.
    let last = server_last.map(|s| {
        let digest = hex::encode(&s.rendering_sha256);
        let secrets = match &record.last {
            Some(l) if l.rendering_sha256 == digest => l.secrets.clone(),
            _ => s
                .secrets
                .iter()
                .map(|x| UsedSecret {
                    reference: format!("digest {}", hex::encode(&x.name_digest)),
                    environment_id: x.environment_id.clone(),
                    name_digest: hex::encode(&x.name_digest),
                    version: x.version,
                })
                .collect(),
        };
        LastApplyJson {
            by: platform::applied_by(&s),
            started_at: rfc3339(s.started_at_ms),
            finished_at: rfc3339(s.finished_at_ms),
            app_version: s.app_version,
            kubeconfig_version: s.kubeconfig_version,
            exit_code: s.exit_code,
            rendering_sha256: digest,
            secrets,
        }
    });
    let view = AppStatusJson {
        name: name.to_owned(),
        locked_by: holder.as_ref().map(|h| h.0.clone()),
        locked_since: holder.as_ref().map(|h| rfc3339(h.1)),
        lock_expires: holder.as_ref().map(|h| rfc3339(h.2)),
        last_apply: last,
    };
    if out.is_json() {
        return out.json(&view);
    }
    let mut text = format!("app '{name}' in {env}\n");
    match &holder {
        Some((by, since, until)) => text.push_str(&format!(
            "lease: held by {by} since {} (expires {})\n",
            rfc3339(*since),
            rfc3339(*until)
        )),
        None => text.push_str("lease: free\n"),
    }
    match &view.last_apply {
        None => text.push_str("last apply: never\n"),
        Some(l) => {
            text.push_str(&format!(
                "last apply: by {} at {} (finished {}), {}\n",
                l.by,
                l.started_at,
                l.finished_at,
                if l.exit_code == 0 {
                    "succeeded".to_owned()
                } else {
                    format!("failed with exit code {}", l.exit_code)
                }
            ));
            text.push_str(&format!(
                "  app version {}, kubeconfig version {}\n  rendering sha256 {}\n",
                l.app_version, l.kubeconfig_version, l.rendering_sha256
            ));
            for s in &l.secrets {
                text.push_str(&format!("  {} version {}\n", s.reference, s.version));
            }
        }
    }
    out.bytes(text.as_bytes())
}

/// Asks on the terminal whether to apply.
fn confirm(
    ctx: &Context,
    a: &ApplyArgs,
    env: &EnvRef,
    rendering: &Rendering,
) -> Result<(), CliError> {
    if a.yes {
        return Ok(());
    }
    if !ctx.interactive {
        return Err(CliError::usage(
            format!("refusing to apply app '{}' without confirmation", a.name),
            "stdin is not a terminal, so pass --yes to confirm (review it first with `zopp preview`)",
        ));
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{}", rendering.masked);
    let _ = write!(err, "apply app '{}' to {env}? [y/N] ", a.name);
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read", "stdin", e))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::Cancelled),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `zopp apply`.
pub async fn apply(ctx: &Context, out: &Out, a: &ApplyArgs) -> Result<(), CliError> {
    platform::check_resource_name(&a.name)?;
    if !a.yes && !ctx.interactive {
        return Err(CliError::usage(
            format!("refusing to apply app '{}' without confirmation", a.name),
            "stdin is not a terminal, so pass --yes to confirm (review it first with `zopp preview`)",
        ));
    }
    let ttl = u32::try_from(a.lease_ttl.as_secs())
        .ok()
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| {
            CliError::usage(
                "--lease-ttl must be between 1s and 24h",
                "e.g. --lease-ttl 5m",
            )
        })?;
    let env = ctx.env_ref()?;
    let client = ctx.client().await?;
    // The app must exist before a lease on its name means anything.
    load_app(&client, &env, &a.name).await?;
    let lease_id =
        match client
            .acquire_app_lease(&env, &a.name, ttl, None, a.break_lock)
            .await?
        {
            LeaseOutcome::Acquired { lease_id, .. } => lease_id,
            LeaseOutcome::Held {
                by,
                since_ms,
                expires_at_ms,
            } => return Err(CliError::Failed {
                message: format!(
                    "app '{}' is locked by {by} since {} (the lease expires at {} unless renewed)",
                    a.name,
                    rfc3339(since_ms),
                    rfc3339(expires_at_ms)
                ),
                hint: Some(
                    "wait for that apply to finish; if its holder died, the lease expires on its \
                     own, or an admin can take it with --break-lock"
                        .into(),
                ),
                code: EXIT_CONFLICT,
            }),
        };
    let result = apply_leased(ctx, out, a, &client, &env, &lease_id, ttl).await;
    let (code, record) = match result {
        Ok((code, record)) => (Ok(code), record),
        Err(e) => (Err(e), None),
    };
    match client
        .release_app_lease(&env, &a.name, &lease_id, record)
        .await
    {
        Ok(true) => {}
        Ok(false) => out.note(&format!(
            "zopp: warning: the lease on app '{}' had expired or been broken before the apply ended",
            a.name
        )),
        Err(e) => out.note(&format!(
            "zopp: warning: cannot release the lease on app '{}' ({e}); it expires on its own",
            a.name
        )),
    }
    match code? {
        0 => Ok(()),
        c => Err(CliError::Exit(c)),
    }
}

/// The part of an apply that runs under the lease: render, confirm, run the command, record.
/// Returns the command's exit code and the server's record of the apply.
async fn apply_leased(
    ctx: &Context,
    out: &Out,
    a: &ApplyArgs,
    client: &Client,
    env: &EnvRef,
    lease_id: &str,
    ttl: u32,
) -> Result<(u8, Option<pb::AppApply>), CliError> {
    // Read again under the lease: what is applied is what is current now.
    let (spec, app_version) = load_app(client, env, &a.name).await?;
    let rendering = platform::render(client, env, &spec.manifest).await?;
    confirm(ctx, a, env, &rendering)?;
    let (kubefile, kubeconfig_version) =
        kube::private_file(client, env, &spec.kubeconfig, spec.namespace.as_deref()).await?;
    let masker = rendering.masker();
    let started = now_ms();
    let code = run_command(
        client,
        env,
        a,
        &spec,
        &rendering,
        kubefile.path(),
        masker,
        lease_id,
        ttl,
    )
    .await?;
    drop(kubefile);
    let finished = now_ms();
    let digest = rendering.sha256();
    let info = ApplyInfo {
        by: label(client),
        started_at_ms: started,
        finished_at_ms: finished,
        app_version,
        kubeconfig_version,
        secrets: rendering.used.clone(),
        rendering_sha256: hex::encode(digest),
        exit_code: i32::from(code),
        masked: (code == 0).then(|| rendering.masked.clone()),
    };
    if let Err(e) = client.record_apply(env, &a.name, info).await {
        out.note(&format!(
            "zopp: warning: cannot store the apply record of app '{}' ({e}); `zopp preview` will compare against the one before",
            a.name
        ));
    }
    let record = pb::AppApply {
        app_version,
        secrets: rendering
            .used
            .iter()
            .map(|u| pb::AppliedSecret {
                environment_id: u.environment_id.clone(),
                name_digest: hex::decode(&u.name_digest).unwrap_or_default(),
                version: u.version,
            })
            .collect(),
        rendering_sha256: digest.to_vec(),
        exit_code: i32::from(code),
        started_at_ms: started,
        kubeconfig_version,
        applied_by: None,
        finished_at_ms: finished,
    };
    if code == 0 {
        out.note(&format!(
            "applied app '{}' version {app_version} to {env}",
            a.name
        ));
    }
    Ok((code, Some(record)))
}

/// Who this principal is, for the apply record.
fn label(client: &Client) -> String {
    let c = client.identity().config();
    [&c.email, &c.principal_name, &c.principal_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the apply command with the manifest on its stdin, its output masked, zopp's signals
/// passed on and the lease renewed; returns its exit code.
#[allow(clippy::too_many_arguments)]
async fn run_command(
    client: &Client,
    env: &EnvRef,
    a: &ApplyArgs,
    spec: &AppSpec,
    rendering: &Rendering,
    kubeconfig: &std::path::Path,
    masker: Masker,
    lease_id: &str,
    ttl: u32,
) -> Result<u8, CliError> {
    let argv = spec.apply_command();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::InvalidInput("the app's apply command is empty".into()))?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::InvalidInput(format!("cannot make a pipe: {e}")))
    };
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::from(in_r))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .kill_on_drop(false);
    let mut signals = signals::catch(&FORWARDED)
        .map_err(|e| Error::InvalidInput(format!("cannot install signal handlers: {e}")))?;
    let mut child = cmd.spawn().map_err(|e| CliError::Failed {
        message: format!("cannot run the apply command '{program}': {e}"),
        hint: Some("install it, or set `apply:` in the app spec (`zopp app get`)".into()),
        code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })?;
    // zopp's copies of the child's ends must close, so the pumps see end of file.
    drop(cmd);
    let pumps = vec![
        Pump::start(std::fs::File::from(out_r), Sink::Stdout, masker.fresh())
            .map_err(|e| Error::InvalidInput(format!("cannot read the command's output: {e}")))?,
        Pump::start(std::fs::File::from(err_r), Sink::Stderr, masker)
            .map_err(|e| Error::InvalidInput(format!("cannot read the command's output: {e}")))?,
    ];
    // The manifest goes in on a thread: a command that reads slowly must not stall zopp.
    let manifest = Zeroizing::new(rendering.text.as_bytes().to_vec());
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(in_w);
        // A command that exits without reading all of it closes the pipe: not zopp's error.
        let _ = f.write_all(&manifest);
        drop(manifest);
    });
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut renew = tokio::time::interval(Duration::from_secs(u64::from(ttl.div_ceil(3).max(1))));
    renew.tick().await;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| Error::InvalidInput(format!("cannot wait for the apply command: {e}")))?,
            Some(sig) = signals.recv() => {
                // A signal from the terminal already reached the command (same process group).
                if !sig.from_terminal {
                    if let Some(pid) = pid {
                        let _ = kill(pid, sig.signal);
                    }
                }
            }
            _ = renew.tick() => {
                if let Err(e) = client.acquire_app_lease(env, &a.name, ttl, Some(lease_id), false).await {
                    let _ = writeln!(std::io::stderr(), "zopp: warning: cannot renew the lease on app '{}': {e}", a.name);
                }
            }
        }
    };
    let _ = writer.join();
    pump::drain(&pumps, Duration::from_millis(500)).await;
    Ok(zopp_cli::run::exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(reference: &str, digest: &str, version: u64) -> UsedSecret {
        UsedSecret {
            reference: reference.into(),
            environment_id: "e".into(),
            name_digest: digest.into(),
            version,
        }
    }

    #[test]
    fn changes_name_references_and_versions() {
        let last = [used("${A}", "aa", 1), used("${B}", "bb", 2)];
        let now = [used("${A}", "aa", 2), used("${C}", "cc", 1)];
        assert_eq!(
            changed_secrets(&last, &now),
            vec![
                "${A}: version 1 -> 2",
                "${C}: new (version 1)",
                "${B}: no longer used"
            ]
        );
    }
}
