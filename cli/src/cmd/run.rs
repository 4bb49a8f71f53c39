//! `zopp run [OPTIONS] -- COMMAND [ARGS…]`: start COMMAND with the environment's secrets on
//! top of zopp's own environment, and exit with its exit code.
//!
//! One round trip fetches and decrypts the whole environment (more only when references point
//! into other environments). zopp prints nothing of its own on success, so the child's output
//! is all there is.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::Signal;
use zopp_cli::fallback;
use zopp_cli::resolve::{ResolvedEnvironment, Sources};
use zopp_cli::run::signals::{self, FORWARDED};
use zopp_cli::run::watch::Watcher;
use zopp_cli::run::{Running, Spec};
use zopp_cli::validate::{check_name, NameKind};
use zopp_cli::{Client, EnvRef, Error, Missing};
use zopp_formats::Masker;

use crate::context::Context;
use crate::failure::CliError;

/// `zopp run`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  zopp run -e prod -- ./deploy.sh
  zopp run --only DATABASE_URL,REDIS_URL -- npm start
  zopp run --mask -- ./print-config           # secret values in its output are concealed
  zopp run --watch -- ./server                # restarted whenever the environment changes
  zopp run --fallback ~/.cache/app.zopp -- ./server   # survives a server outage

The command gets the environment's secrets on top of zopp's environment (a secret wins over a
variable that is already set, unless --preserve-env). Its stdin, stdout and stderr are zopp's
own unless --mask is given. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are passed
on. zopp exits with the command's exit code (128 + N when signal N killed it), 127 when the
command cannot be found and 126 when it cannot be executed. With --watch, zopp keeps running
while the command does, and exits with its code when it exits on its own; if the server goes
away, the command keeps running and zopp reconnects with backoff.")]
pub struct RunArgs {
    /// Inject only these secrets (comma-separated or repeated)
    #[arg(long, value_delimiter = ',', value_name = "K1,K2")]
    pub only: Vec<String>,
    /// Leave these secrets out (comma-separated or repeated)
    #[arg(long, value_delimiter = ',', value_name = "K1,K2")]
    pub exclude: Vec<String>,
    /// Keep variables already set in zopp's environment instead of overriding them
    #[arg(long)]
    pub preserve_env: bool,
    /// Replace every secret value (4 bytes or longer) in the command's output with
    /// `<concealed by zopp>`; on a terminal the command still gets a terminal (a pty)
    #[arg(long)]
    pub mask: bool,
    /// Restart the command (SIGTERM, then SIGKILL after --watch-grace) whenever the
    /// environment changes
    #[arg(long)]
    pub watch: bool,
    /// With --watch: how long a command may take to exit after SIGTERM before SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub watch_grace: Duration,
    /// After every fetch, keep an encrypted copy of the environment in FILE (0600, readable
    /// only with your key); run from it, with a warning, when the server is unreachable
    #[arg(long, value_name = "FILE")]
    pub fallback: Option<PathBuf>,
    /// Refuse a fallback copy older than this (e.g. 24h, 90m)
    #[arg(long, value_name = "DURATION", requires = "fallback", value_parser = humantime::parse_duration)]
    pub fallback_max_age: Option<Duration>,
    /// Run from the fallback copy without contacting the server
    #[arg(long, requires = "fallback", conflicts_with = "watch")]
    pub fallback_only: bool,
    /// Run with the environment as it was at TIME (RFC 3339, a UTC date or an age such as
    /// 2h), for reproducible runs; references into other environments resolve as they are now
    #[arg(long, value_name = "TIME", conflicts_with_all = ["at_version", "watch", "fallback"])]
    pub at: Option<String>,
    /// Run with the environment as of its version N (see `zopp environment list`)
    #[arg(long, value_name = "N", conflicts_with_all = ["watch", "fallback"])]
    pub at_version: Option<u64>,
    /// Write kubeconfig NAME of the environment to a private file (0600 in a 0700 directory,
    /// removed when the command ends) and point KUBECONFIG at it; needs the write role
    #[arg(long, value_name = "NAME", conflicts_with = "fallback_only")]
    pub kubeconfig: Option<String>,
    /// The command to run, and its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Runs `zopp run`; its `Err(CliError::Exit(code))` carries the child's exit code.
pub async fn run(ctx: &Context, a: &RunArgs) -> Result<(), CliError> {
    for name in a.only.iter().chain(&a.exclude) {
        check_name(NameKind::Secret, name)?;
    }
    let point = super::point(a.at.as_deref(), a.at_version)?;
    let env = ctx.env_ref()?;
    // Lazy: an unreachable server is reported by the first call, where --fallback takes over,
    // and a watch reconnects by itself once the server is back.
    let client = ctx.lazy_client().await?;
    let resolved = match point {
        Some(at) => {
            let sources = Sources::fetch_at(&client, &env, at).await?;
            resolve_injected(&client, sources, a).await?
        }
        None => obtain(&client, &env, a).await?,
    };

    // Dropped (and so removed) when this function returns, after the command has ended.
    let kube = match &a.kubeconfig {
        Some(name) => Some(
            super::kubeconfig::private_file(&client, &env, name, None)
                .await?
                .0,
        ),
        None => None,
    };
    let kube = kube.as_ref().map(zopp_cli::kubefile::KubeconfigFile::path);

    let pty = a.mask && std::io::stdout().is_terminal();
    let mut caught: Vec<Signal> = FORWARDED.to_vec();
    if pty {
        caught.push(Signal::SIGWINCH);
    }
    let mut signals = signals::catch(&caught)
        .map_err(|e| Error::InvalidInput(format!("cannot install signal handlers: {e}")))?;
    let mut running = start(a, &resolved, pty, kube)?;
    let mut current = resolved;
    let mut watcher = a
        .watch
        .then(|| Watcher::new(env.clone(), current.env_version));
    loop {
        tokio::select! {
            status = running.wait() => {
                let status = status.map_err(|e| Error::InvalidInput(format!("cannot wait for the command: {e}")))?;
                return Err(CliError::Exit(running.finish(status).await));
            }
            Some(sig) = signals.recv() => running.forward(sig),
            changed = next_change(&mut watcher, &client) => {
                let version = match changed {
                    Ok(v) => v,
                    Err(e) => {
                        warn(&format!("stopped watching {env}: {e}"));
                        if revoked(&e) {
                            remove_fallback(a);
                        }
                        watcher = None;
                        continue;
                    }
                };
                let fresh = match fetch(&client, &env, a).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        warn(&format!("cannot fetch version {version} of {env}: {e}; keeping the running command"));
                        continue;
                    }
                };
                if let Some(w) = watcher.as_mut() {
                    w.seen(fresh.env_version);
                }
                if same_values(&current, &fresh) {
                    current = fresh;
                    continue;
                }
                warn(&format!("{env} changed (version {}); restarting the command", fresh.env_version));
                running
                    .stop(a.watch_grace)
                    .await
                    .map_err(|e| Error::InvalidInput(format!("cannot stop the command: {e}")))?;
                running = start(a, &fresh, pty, kube)?;
                current = fresh;
            }
        }
    }
}

/// The environment to run with: fresh from the server, or the fallback copy when the server
/// is unreachable (or `--fallback-only`).
async fn obtain(
    client: &Client,
    env: &EnvRef,
    a: &RunArgs,
) -> Result<ResolvedEnvironment, CliError> {
    let Some(path) = &a.fallback else {
        return Ok(fetch(client, env, a).await?);
    };
    if a.fallback_only {
        return from_fallback(client, env, path, a.fallback_max_age, None);
    }
    match fetch_copy(client, env, a, true).await {
        Ok(resolved) => Ok(resolved),
        Err(e @ Error::Unreachable { .. }) => {
            from_fallback(client, env, path, a.fallback_max_age, Some(e))
        }
        Err(e) => {
            if revoked(&e) {
                remove_fallback(a);
            }
            Err(e.into())
        }
    }
}

/// Whether the child gets secret `name` (`--only`, `--exclude`).
fn injected(a: &RunArgs, name: &str) -> bool {
    (a.only.is_empty() || a.only.iter().any(|n| n == name)) && !a.exclude.iter().any(|n| n == name)
}

/// Resolves what the child gets: a secret it does not get may hold a dangling reference
/// without failing the run (it is left out of the result, and of the fallback copy).
async fn resolve_injected(
    client: &Client,
    sources: Sources,
    a: &RunArgs,
) -> Result<ResolvedEnvironment, Error> {
    let (resolved, failed) = sources.resolve_each(client).await?;
    if let Some((_, e)) = failed.into_iter().find(|(name, _)| injected(a, name)) {
        return Err(e);
    }
    Ok(resolved)
}

/// Fetches and resolves `env`; with `--fallback`, refreshes the copy. The first copy of a run
/// must be written (the user asked for one and would otherwise find none in the next outage);
/// a refresh during `--watch` that fails only warns.
async fn fetch(client: &Client, env: &EnvRef, a: &RunArgs) -> Result<ResolvedEnvironment, Error> {
    fetch_copy(client, env, a, false).await
}

async fn fetch_copy(
    client: &Client,
    env: &EnvRef,
    a: &RunArgs,
    must_write: bool,
) -> Result<ResolvedEnvironment, Error> {
    let sources = Sources::fetch(client, env).await?;
    let resolved = resolve_injected(client, sources, a).await?;
    if let Some(path) = &a.fallback {
        match fallback::write(path, client.identity(), env, &resolved) {
            Ok(()) => {}
            Err(e) if must_write => return Err(e),
            Err(e) => warn(&format!("{e}")),
        }
    }
    Ok(resolved)
}

/// Runs from the fallback copy at `path`. `outage` is why the server was not used (none for
/// `--fallback-only`).
fn from_fallback(
    client: &Client,
    env: &EnvRef,
    path: &Path,
    max_age: Option<Duration>,
    outage: Option<Error>,
) -> Result<ResolvedEnvironment, CliError> {
    let Some(copy) = fallback::read(path, client.identity(), env)? else {
        return Err(match outage {
            // Nothing to fall back on: the outage is the error, and the missing copy is why
            // it was not survived.
            Some(e) => CliError::Failed {
                message: format!("{e}, and there is no fallback copy at {}", path.display()),
                hint: Some(format!(
                    "no run with --fallback {} has reached the server yet (or the copy was deleted); run it once while the server is reachable to write the copy",
                    path.display()
                )),
                code: crate::failure::EXIT_UNREACHABLE,
            },
            None => {
                Error::Fallback(format!("there is no fallback copy at {}", path.display())).into()
            }
        });
    };
    let age = copy.age();
    let shown = humantime::format_duration(Duration::from_secs(age.as_secs()));
    if let Some(max) = max_age {
        if age > max {
            return Err(Error::Fallback(format!(
                "the fallback copy {} is {shown} old, older than --fallback-max-age {}{}",
                path.display(),
                humantime::format_duration(max),
                outage.map(|e| format!(", and {e}")).unwrap_or_default()
            ))
            .into());
        }
    }
    if let Some(e) = outage {
        warn(&format!(
            "{e}; running from the fallback copy {} written {shown} ago",
            path.display()
        ));
    }
    Ok(copy.into_environment())
}

/// Whether the server said this principal is no longer accepted.
fn revoked(e: &Error) -> bool {
    matches!(
        e,
        Error::Refused {
            code: tonic::Code::Unauthenticated,
            ..
        }
    )
}

/// Deletes the fallback copy after the server refused this principal: a revoked principal
/// must not keep running from it.
fn remove_fallback(a: &RunArgs) {
    if let Some(path) = &a.fallback {
        match fallback::remove(path) {
            Ok(()) => warn(&format!(
                "the server refused this identity; removed the fallback copy {}",
                path.display()
            )),
            Err(e) => warn(&format!("{e}")),
        }
    }
}

/// The next change a watch reports; never completes without a watch.
async fn next_change(watcher: &mut Option<Watcher>, client: &Client) -> Result<u64, Error> {
    match watcher {
        Some(w) => w.next(client).await,
        None => std::future::pending().await,
    }
}

/// Whether two resolutions would give the child the same variables.
fn same_values(a: &ResolvedEnvironment, b: &ResolvedEnvironment) -> bool {
    a.secrets.len() == b.secrets.len()
        && a.secrets.iter().zip(&b.secrets).all(|(x, y)| {
            x.name == y.name && zopp_crypto::ct_eq(x.expose_value(), y.expose_value())
        })
}

/// The variables the child gets: `--only`/`--exclude` applied, `--preserve-env` respected.
fn variables(a: &RunArgs, env: &ResolvedEnvironment) -> Result<Vec<(OsString, Vec<u8>)>, CliError> {
    for name in &a.only {
        if !env.secrets.iter().any(|s| &s.name == name) {
            return Err(Error::NotFound(Missing::Other(format!(
                "secret '{name}' given to --only is not in the environment"
            )))
            .into());
        }
    }
    let mut vars = Vec::with_capacity(env.secrets.len());
    for s in &env.secrets {
        if (!a.only.is_empty() && !a.only.contains(&s.name)) || a.exclude.contains(&s.name) {
            continue;
        }
        if a.preserve_env && std::env::var_os(&s.name).is_some() {
            continue;
        }
        if s.expose_value().contains(&0) {
            return Err(Error::Unrepresentable {
                name: s.name.clone(),
                reason: "contains a NUL byte, which an environment variable cannot hold",
            }
            .into());
        }
        vars.push((OsString::from(&s.name), s.expose_value().to_vec()));
    }
    Ok(vars)
}

/// Starts the child with `env`.
fn start(
    a: &RunArgs,
    env: &ResolvedEnvironment,
    pty: bool,
    kubeconfig: Option<&Path>,
) -> Result<Running, CliError> {
    let (program, args) = a
        .command
        .split_first()
        .ok_or_else(|| CliError::usage("no command given", "zopp run -- COMMAND [ARGS…]"))?;
    let masker = a
        .mask
        .then(|| Masker::new(env.secrets.iter().map(|s| s.expose_value())));
    let mut vars = variables(a, env)?;
    if let Some(path) = kubeconfig {
        use std::os::unix::ffi::OsStrExt;
        vars.push(("KUBECONFIG".into(), path.as_os_str().as_bytes().to_vec()));
    }
    let spec = Spec {
        program,
        args,
        env: vars,
        masker,
        pty,
    };
    Running::spawn(spec).map_err(|e| {
        let shown = program.to_string_lossy();
        let (code, message, hint) = match e.kind() {
            std::io::ErrorKind::NotFound => (
                127,
                format!("cannot run '{shown}': command not found"),
                Some("check the command's name and PATH".to_owned()),
            ),
            std::io::ErrorKind::PermissionDenied => (
                126,
                format!("cannot run '{shown}': permission denied"),
                Some("is the file executable (chmod +x)?".to_owned()),
            ),
            _ => (1, format!("cannot run '{shown}': {e}"), None),
        };
        CliError::Failed {
            message,
            hint,
            code,
        }
    })
}

/// A message from zopp itself, on stderr, told apart from the child's output.
fn warn(text: &str) {
    let _ = writeln!(std::io::stderr(), "zopp: warning: {text}");
}
