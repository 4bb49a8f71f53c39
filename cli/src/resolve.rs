//! `${…}` references across environments, for `zopp run` and `zopp inject`: fetch the
//! environment asked for, then exactly the other environments its references reach, and
//! resolve on this machine with `zopp-formats` (the server never sees a reference resolved).
//!
//! Only plain secrets take part (kubeconfigs and apps live in the same store but are not
//! environment variables). Values that are not UTF-8 cannot hold references; they are passed
//! through as they are and cannot be referenced.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use zeroize::Zeroizing;
use zopp_crypto::envelope::SecretKind;
use zopp_formats::template::{missing_environments, missing_environments_lenient, TemplateError};
use zopp_formats::{
    render_template, resolve_each, resolve_environment, Entry, EnvironmentPath, RemoteEnvironments,
    SecretValue,
};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::scope::EnvRef;
use crate::secrets::DecryptedEnvironment;

/// Most environments one resolution may pull in: a bound on what a hostile or mistaken chain
/// of references can make the client fetch.
pub const MAX_ENVIRONMENTS: usize = 64;

/// One resolved secret.
pub struct ResolvedSecret {
    /// Its name.
    pub name: String,
    value: Zeroizing<Vec<u8>>,
}

impl ResolvedSecret {
    /// A resolved secret from its parts.
    pub fn new(name: String, value: Zeroizing<Vec<u8>>) -> Self {
        Self { name, value }
    }
    /// The value with every reference replaced.
    ///
    /// # Security
    /// Plaintext secret.
    pub fn expose_value(&self) -> &[u8] {
        &self.value
    }
}

impl std::fmt::Debug for ResolvedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResolvedSecret({}, ..)", self.name)
    }
}

/// An environment with every reference resolved.
#[derive(Debug)]
pub struct ResolvedEnvironment {
    /// Environment version of the environment asked for.
    pub env_version: u64,
    /// Every plain secret, sorted by name.
    pub secrets: Vec<ResolvedSecret>,
}

/// The secrets a resolution draws on: the environment asked for, and every other environment
/// fetched for its references so far.
pub struct Sources {
    env: EnvRef,
    env_version: u64,
    current: Vec<Entry>,
    /// Secrets whose value is not UTF-8, passed through unresolved.
    binary: Vec<ResolvedSecret>,
    remote: RemoteEnvironments,
    /// Environments that could not be fetched, and why (reported with the reference).
    failures: BTreeMap<EnvironmentPath, Error>,
    fetched: usize,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sources({}, {:?})", self.env, self.remote)
    }
}

/// Splits an environment's plain secrets into text entries (which may hold references) and
/// binary values (which cannot).
fn split(state: &DecryptedEnvironment) -> (Vec<Entry>, Vec<ResolvedSecret>) {
    let mut text = Vec::with_capacity(state.secrets.len());
    let mut binary = Vec::new();
    for s in &state.secrets {
        if s.kind() != Some(SecretKind::Secret) {
            continue;
        }
        match std::str::from_utf8(s.expose_value()) {
            Ok(v) => text.push(Entry::new(s.name.clone(), v)),
            Err(_) => binary.push(ResolvedSecret::new(
                s.name.clone(),
                Zeroizing::new(s.expose_value().to_vec()),
            )),
        }
    }
    (text, binary)
}

/// Maps a reference problem to an SDK error; one pointing into an environment that could not
/// be fetched carries that fetch's error as its cause.
fn reference_error(e: TemplateError, failures: &BTreeMap<EnvironmentPath, Error>) -> Error {
    let cause = match &e {
        TemplateError::EnvironmentNotLoaded { environment, .. } => failures.get(environment),
        _ => None,
    };
    match cause {
        Some(cause) => Error::Reference {
            message: format!("{e}: {cause}"),
            cause: Some(Box::new(clone_cause(cause))),
        },
        None => Error::Reference {
            message: e.to_string(),
            cause: None,
        },
    }
}

/// A copy of a fetch error that keeps what decides the exit code and hint.
fn clone_cause(e: &Error) -> Error {
    match e {
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::Refused { code, message } => Error::Refused {
            code: *code,
            message: message.clone(),
        },
        Error::InvalidName { kind, name, reason } => Error::InvalidName {
            kind: *kind,
            name: name.clone(),
            reason,
        },
        other => Error::InvalidInput(other.to_string()),
    }
}

impl Sources {
    /// Fetches `env` (one round trip) and nothing else yet.
    ///
    /// # Errors
    /// As [`Client::fetch_environment`].
    pub async fn fetch(client: &Client, env: &EnvRef) -> Result<Self> {
        Self::fetch_at(client, env, crate::At::Now).await
    }

    /// As [`Client::fetch_environment_at`]: the environment's own state at `at`.
    pub async fn fetch_at(client: &Client, env: &EnvRef, at: crate::At) -> Result<Self> {
        let state = client.fetch_environment_at(env, at).await?;
        let (current, binary) = split(&state);
        Ok(Self {
            env: env.clone(),
            env_version: state.env_version,
            current,
            binary,
            remote: RemoteEnvironments::new(),
            failures: BTreeMap::new(),
            fetched: 1,
        })
    }

    /// Environment version of the environment asked for.
    pub fn env_version(&self) -> u64 {
        self.env_version
    }

    /// The path of the environment asked for, as references spell it.
    fn own_path(&self) -> EnvironmentPath {
        EnvironmentPath::new(self.env.project(), self.env.environment())
    }

    /// Fetches `paths` concurrently. A path that does not exist, is not readable or is not a
    /// valid name is remembered as a failure (reported with the reference that needs it);
    /// transport errors end the resolution.
    async fn load(&mut self, client: &Client, paths: BTreeSet<EnvironmentPath>) -> Result<()> {
        let mut wanted = Vec::new();
        for path in paths {
            if self.remote.contains(&path) || self.failures.contains_key(&path) {
                continue;
            }
            if path == self.own_path() {
                // A `zopp://` reference back into the environment asked for needs no fetch.
                self.remote.insert(path, self.current.iter().cloned());
                continue;
            }
            match EnvRef::try_new(self.env.workspace(), &path.project, &path.environment) {
                Ok(r) => wanted.push((path, r)),
                Err(e) => {
                    self.failures.insert(path, e);
                }
            }
        }
        if self.fetched + wanted.len() > MAX_ENVIRONMENTS {
            return Err(Error::Reference {
                message: format!(
                    "references of {} reach more than {MAX_ENVIRONMENTS} environments",
                    self.env
                ),
                cause: None,
            });
        }
        self.fetched += wanted.len();
        let results = join_all(wanted.iter().map(|(_, r)| client.fetch_environment(r))).await;
        for ((path, _), result) in wanted.into_iter().zip(results) {
            match result {
                Ok(state) => {
                    let (text, _) = split(&state);
                    self.remote.insert(path, text);
                }
                Err(e @ (Error::NotFound(_) | Error::Refused { .. } | Error::KeyChain { .. })) => {
                    self.failures.insert(path, e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fetches every environment the references of the whole environment reach, then
    /// resolves every secret (for `zopp run`).
    ///
    /// # Errors
    /// [`Error::Reference`] for a malformed, missing or cyclic reference (naming the chain);
    /// transport and server errors of the extra fetches.
    pub async fn resolve_all(mut self, client: &Client) -> Result<ResolvedEnvironment> {
        loop {
            // Every path `load` is given ends up loaded or failed, so this terminates.
            let missing: BTreeSet<EnvironmentPath> =
                missing_environments(&self.current, &self.remote)
                    .map_err(|e| reference_error(e, &self.failures))?
                    .into_iter()
                    .filter(|p| !self.failures.contains_key(p))
                    .collect();
            if missing.is_empty() {
                break;
            }
            self.load(client, missing).await?;
        }
        let resolved = resolve_environment(&self.current, &self.remote)
            .map_err(|e| reference_error(e, &self.failures))?;
        let mut secrets: Vec<ResolvedSecret> = resolved
            .into_iter()
            .map(|e| {
                let value = e.value.into_zeroizing();
                let bytes = Zeroizing::new(value.as_bytes().to_vec());
                ResolvedSecret::new(e.name, bytes)
            })
            .collect();
        secrets.append(&mut self.binary);
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ResolvedEnvironment {
            env_version: self.env_version,
            secrets,
        })
    }

    /// Like [`Sources::resolve_all`], but a secret whose references cannot be resolved is left
    /// out and reported next to the result instead of failing the rest (`zopp run --only`:
    /// only what is injected has to resolve). Environments are fetched only for references
    /// that parse.
    ///
    /// # Errors
    /// Transport and server errors of the extra fetches; more than [`MAX_ENVIRONMENTS`].
    pub async fn resolve_each(
        mut self,
        client: &Client,
    ) -> Result<(ResolvedEnvironment, Vec<(String, Error)>)> {
        loop {
            let missing: BTreeSet<EnvironmentPath> =
                missing_environments_lenient(&self.current, &self.remote)
                    .into_iter()
                    .filter(|p| !self.failures.contains_key(p))
                    .collect();
            if missing.is_empty() {
                break;
            }
            self.load(client, missing).await?;
        }
        let mut secrets = Vec::with_capacity(self.current.len() + self.binary.len());
        let mut failed = Vec::new();
        for (name, result) in resolve_each(&self.current, &self.remote) {
            match result {
                Ok(value) => {
                    let value = value.into_zeroizing();
                    let bytes = Zeroizing::new(value.as_bytes().to_vec());
                    secrets.push(ResolvedSecret::new(name, bytes));
                }
                Err(e) => failed.push((name, reference_error(e, &self.failures))),
            }
        }
        secrets.append(&mut self.binary);
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((
            ResolvedEnvironment {
                env_version: self.env_version,
                secrets,
            },
            failed,
        ))
    }

    /// Renders `template` (for `zopp inject`), fetching only the environments the references
    /// it uses reach.
    ///
    /// # Errors
    /// [`Error::Reference`] for a malformed, missing or cyclic reference, naming the chain;
    /// transport and server errors of the extra fetches.
    pub async fn render(mut self, client: &Client, template: &str) -> Result<Zeroizing<String>> {
        loop {
            match render_template(template, &self.current, &self.remote) {
                Ok(text) => return Ok(text),
                Err(TemplateError::EnvironmentNotLoaded { environment, .. })
                    if !self.remote.contains(&environment)
                        && !self.failures.contains_key(&environment) =>
                {
                    self.load(client, BTreeSet::from([environment])).await?;
                }
                Err(e) => return Err(reference_error(e, &self.failures)),
            }
        }
    }
}

impl ResolvedEnvironment {
    /// The values as text entries, for formats that need text.
    ///
    /// # Errors
    /// [`Error::Unrepresentable`] naming the first value that is not UTF-8.
    pub fn to_entries(&self) -> Result<Vec<Entry>> {
        self.secrets
            .iter()
            .map(|s| {
                let text =
                    std::str::from_utf8(s.expose_value()).map_err(|_| Error::Unrepresentable {
                        name: s.name.clone(),
                        reason: "is not valid UTF-8",
                    })?;
                Ok(Entry::new(s.name.clone(), SecretValue::from(text)))
            })
            .collect()
    }
}
