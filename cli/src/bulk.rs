//! Bulk writes for `zopp secret import`: many names and values become one `WriteSecrets` call,
//! one transaction on the server, so an import lands whole or not at all.
//!
//! One `FetchEnvironment` gives the current value, version and hash of every live secret, so
//! unchanged values are skipped and every new version names its predecessor without further
//! round trips. Sealing and signing (~35 µs a secret, mostly the Ed25519 signature) run on
//! every core. A write that loses a race is retried from the fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand_core::OsRng;
use tonic::Code;
use zopp_crypto::envelope::{EnvelopeContext, SecretKind, SecretPayload};
use zopp_crypto::sign::{VersionClaims, ZERO_HASH};
use zopp_formats::Entry;
use zopp_proto::v1 as pb;

use crate::chain::EnvironmentChain;
use crate::client::{method, Client, Target};
use crate::error::{Error, Result};
use crate::home::Identity;
use crate::scope::EnvRef;
use crate::secrets::{backoff, HeadLink, WRITE_ATTEMPTS};
use crate::validate::{check_name, check_value_len, NameKind};

/// Most writes one `WriteSecrets` call may carry (docs/ARCHITECTURE.md "Limits").
pub const MAX_WRITES_PER_CALL: usize = 20_000;

/// What an import did (or, for a dry run, would do), by name, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Names that had no live secret and got version 1 (or the version after a deletion).
    pub added: Vec<String>,
    /// Names whose value differed and got a new version.
    pub changed: Vec<String>,
    /// Names whose value was already the one imported: no new version.
    pub unchanged: Vec<String>,
    /// Environment version after the write; `None` when nothing was written.
    pub env_version: Option<u64>,
}

/// How far an import is, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportProgress {
    /// `done` of `total` new versions are sealed and signed.
    Sealed {
        /// Versions ready.
        done: usize,
        /// Versions to prepare.
        total: usize,
    },
    /// Every version is ready and the one write call is on its way.
    Writing,
}

/// A version to write: which entry, at which version, after which hash.
struct Planned<'a> {
    entry: &'a Entry,
    version: u64,
    prev_hash: [u8; 32],
}

impl Client {
    /// Imports `entries` into `env` in one transaction: new names are added, changed values get
    /// a new version, equal values are left alone. With `dry_run` nothing is written.
    /// `progress` is told how the sealing goes (it runs on worker threads).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::ValueTooLarge`] or [`Error::InvalidInput`] before any
    /// call (too many entries, a name that exists as another kind of secret);
    /// [`Error::Conflict`] when concurrent writers keep winning; transport and server errors.
    pub async fn import_secrets(
        &self,
        env: &EnvRef,
        entries: &[Entry],
        dry_run: bool,
        progress: &(dyn Fn(ImportProgress) + Sync),
    ) -> Result<ImportOutcome> {
        self.write_entries(env, entries, dry_run, None, progress)
            .await
    }

    /// Sets `entries` in `env` atomically, only if the environment is still at version
    /// `if_env_version` (`zopp secret set A=1 B=2 --if-env-version N`); otherwise as
    /// [`Client::import_secrets`].
    ///
    /// # Errors
    /// [`Error::Conflict`] naming the current environment version when another write came
    /// first; otherwise as [`Client::import_secrets`].
    pub async fn set_secrets(
        &self,
        env: &EnvRef,
        entries: &[Entry],
        if_env_version: Option<u64>,
    ) -> Result<ImportOutcome> {
        self.write_entries(env, entries, false, if_env_version, &|_| {})
            .await
    }

    async fn write_entries(
        &self,
        env: &EnvRef,
        entries: &[Entry],
        dry_run: bool,
        if_env_version: Option<u64>,
        progress: &(dyn Fn(ImportProgress) + Sync),
    ) -> Result<ImportOutcome> {
        for e in entries {
            check_name(NameKind::Secret, &e.name)?;
            check_value_len(e.value.len())?;
        }
        if entries.len() > MAX_WRITES_PER_CALL {
            return Err(Error::InvalidInput(format!(
                "{} secrets in one import; the limit is {MAX_WRITES_PER_CALL}: split the file",
                entries.len()
            )));
        }
        // Heads of names that exist only as deletions; learnt when a write says they exist.
        let mut deleted: HashMap<String, HeadLink> = HashMap::new();
        let mut last_env_version = None;
        for attempt in 0..WRITE_ATTEMPTS {
            let fetched = self.fetch_verified(env).await?;
            let state = &fetched.state;
            // Checked on every attempt: after a lost race the refetched version differs, so
            // a conditioned write fails instead of silently retrying over the other writer.
            if let Some(want) = if_env_version {
                if state.env_version != want {
                    return Err(Error::EnvVersionMismatch {
                        environment: env.to_string(),
                        workspace: env.workspace().to_owned(),
                        project: env.project().to_owned(),
                        current: state.env_version,
                        wanted: want,
                    });
                }
            }
            if last_env_version == Some(state.env_version) {
                // The write was refused although nobody else wrote: some added name has a
                // deleted history, which the fetch of live secrets does not show.
                let added: Vec<&str> = entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .filter(|n| !fetched.heads.contains_key(*n) && !deleted.contains_key(*n))
                    .collect();
                deleted.extend(self.deleted_heads(env, &fetched.chain, &added).await?);
            }
            last_env_version = Some(state.env_version);

            let live: HashMap<&str, &crate::SecretRecord> =
                state.secrets.iter().map(|s| (s.name.as_str(), s)).collect();
            let mut outcome = ImportOutcome::default();
            let mut plan = Vec::new();
            for e in entries {
                let value = e.value.expose_secret().as_bytes();
                match (live.get(e.name.as_str()), fetched.heads.get(&e.name)) {
                    (Some(rec), Some(head)) => {
                        if rec.kind() != Some(SecretKind::Secret) {
                            return Err(Error::InvalidInput(format!(
                                "'{}' already exists as a {}, not a secret; import does not replace it",
                                e.name,
                                kind_label(rec.kind())
                            )));
                        }
                        if zopp_crypto::ct_eq(rec.expose_value(), value) {
                            outcome.unchanged.push(e.name.clone());
                        } else {
                            outcome.changed.push(e.name.clone());
                            plan.push(Planned {
                                entry: e,
                                version: head.version + 1,
                                prev_hash: head.hash,
                            });
                        }
                    }
                    _ => {
                        outcome.added.push(e.name.clone());
                        let (version, prev_hash) = deleted
                            .get(&e.name)
                            .map_or((1, ZERO_HASH), |h| (h.version + 1, h.hash));
                        plan.push(Planned {
                            entry: e,
                            version,
                            prev_hash,
                        });
                    }
                }
            }
            if dry_run || plan.is_empty() {
                return Ok(outcome);
            }
            let (writes, verified): (Vec<_>, Vec<_>) = self
                .seal_all(
                    &fetched.chain,
                    WritePoint::after(state.env_version),
                    &plan,
                    progress,
                )
                .into_iter()
                .unzip();
            progress(ImportProgress::Writing);
            let req = self.signed(
                method::WRITE_SECRETS,
                pb::WriteSecretsRequest {
                    env: Some(env.to_proto()),
                    environment_id: fetched.chain.environment().to_string(),
                    writes,
                    if_env_version: state.env_version,
                },
            );
            match self.rpc().write_secrets(req).await {
                Ok(r) => {
                    outcome.env_version = Some(r.into_inner().env_version);
                    // This client made (and so vouches for) these versions: the next fetch
                    // need not check their signatures.
                    let cache = self.verified_cache(env);
                    let known = cache.load();
                    cache.store(known.iter().copied().chain(verified), &known);
                    return Ok(outcome);
                }
                // Lost a race (or met a deleted history): start over from a fresh read.
                Err(s) if s.code() == Code::Aborted => backoff(attempt).await,
                // The environment was deleted and recreated under the same name.
                Err(s) if s.code() == Code::FailedPrecondition && attempt == 0 => {
                    self.cache().remove(env);
                }
                Err(s) => return Err(self.status_error(s, Target::Environment(env))),
            }
        }
        Err(Error::Conflict(format!(
            "environment '{}' kept changing while importing; try again",
            env.environment()
        )))
    }

    /// Seals and signs every planned version, spread over the available cores.
    fn seal_all(
        &self,
        chain: &EnvironmentChain,
        point: WritePoint,
        plan: &[Planned<'_>],
        progress: &(dyn Fn(ImportProgress) + Sync),
    ) -> Vec<(pb::SecretWrite, crate::verified::Entry)> {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, 16);
        let chunk = plan.len().div_ceil(threads).max(64);
        let done = AtomicUsize::new(0);
        let total = plan.len();
        let identity = self.identity();
        let seal_chunk = |part: &[Planned<'_>]| -> Vec<(pb::SecretWrite, crate::verified::Entry)> {
            let mut out = Vec::with_capacity(part.len());
            for p in part {
                out.push(seal_one(identity, chain, point, p));
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                // Reporting every version would cost more than the work on small values.
                if n.is_multiple_of(256) || n == total {
                    progress(ImportProgress::Sealed { done: n, total });
                }
            }
            out
        };
        if plan.len() <= chunk {
            return seal_chunk(plan);
        }
        std::thread::scope(|scope| {
            let parts: Vec<_> = plan
                .chunks(chunk)
                .map(|part| scope.spawn(move || seal_chunk(part)))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().expect("sealing never panics"))
                .collect()
        })
    }
}

/// One new version: sealed under the current epoch, signed by `identity`; with its
/// verified-signature cache entry.
fn seal_one(
    identity: &Identity,
    chain: &EnvironmentChain,
    point: WritePoint,
    p: &Planned<'_>,
) -> (pb::SecretWrite, crate::verified::Entry) {
    let payload = SecretPayload::new(
        SecretKind::Secret,
        p.entry.name.clone(),
        p.entry.value.expose_secret().as_bytes().to_vec(),
        Vec::new(),
    );
    seal_version(
        identity,
        chain,
        point,
        &p.entry.name,
        p.version,
        p.prev_hash,
        Some(&payload),
    )
}

/// One new version of `name` after `prev_hash`: `payload` sealed under the current epoch (or a
/// tombstone when `None`), signed by `identity`; with its verified-signature cache entry.
pub(crate) fn seal_version(
    identity: &Identity,
    chain: &EnvironmentChain,
    point: WritePoint,
    name: &str,
    version: u64,
    prev_hash: [u8; 32],
    payload: Option<&SecretPayload>,
) -> (pb::SecretWrite, crate::verified::Entry) {
    let digest = chain.digest(name);
    let key_epoch = chain.key_epoch();
    let ctx = EnvelopeContext {
        environment: chain.environment(),
        name_digest: digest,
        version,
        key_epoch,
    };
    let envelope = payload.map_or_else(Vec::new, |payload| {
        chain
            .current_seal_key()
            .seal(&ctx, payload, &mut OsRng)
            .into_bytes()
    });
    let claims = VersionClaims {
        environment: chain.environment(),
        name_digest: digest,
        version,
        key_epoch,
        deleted: payload.is_none(),
        envelope: &envelope,
        prev_hash,
        writer: identity.principal(),
        env_version: point.env_version,
        created_at_ms: point.created_at_ms,
    };
    let signature = claims.sign(&identity.keys().signing).to_vec();
    let verified = crate::verified::entry(
        &claims.hash(&signature),
        &identity.keys().signing.verifying_key(),
    );
    let write = pb::SecretWrite {
        name_digest: digest.as_bytes().to_vec(),
        version,
        key_epoch,
        envelope,
        deleted: payload.is_none(),
        prev_hash: prev_hash.to_vec(),
        signature,
        env_version: point.env_version,
        created_at_ms: point.created_at_ms,
    };
    (write, verified)
}

/// The point in history one write call claims (FORMAT.md §7): the environment version it
/// produces (the one it was based on + 1) and the writer's time. Every version of the call
/// claims the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WritePoint {
    /// The environment version the write produces.
    pub(crate) env_version: u64,
    /// The writer's clock, unix ms.
    pub(crate) created_at_ms: i64,
}

impl WritePoint {
    /// The write that follows environment version `base`, made now.
    pub(crate) fn after(base: u64) -> Self {
        Self {
            env_version: base + 1,
            created_at_ms: crate::secrets::now_ms(),
        }
    }
}

/// How a kind of secret is called in messages.
fn kind_label(kind: Option<SecretKind>) -> &'static str {
    match kind {
        Some(SecretKind::Secret) => "secret",
        Some(SecretKind::Kubeconfig) => "kubeconfig",
        Some(SecretKind::App) => "app",
        None => "deleted secret",
    }
}
