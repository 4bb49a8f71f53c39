//! Whole-environment versions (issue #5): compare two states (`zopp diff`) and make an earlier
//! state current again (`zopp environment restore`).
//!
//! Both work on states read with [`Client::fetch_environment_at`], so every version involved
//! has had its writer's signature checked and its envelope opened before anything is compared
//! or written. A restore never copies ciphertext: each value is re-sealed under the current key
//! epoch as a new version (the AAD binds the version number, so an old envelope could not be
//! reused anyway) and signed by the restoring principal.

use std::collections::{BTreeMap, HashMap};

use tonic::Code;
use zopp_crypto::sign::ZERO_HASH;
use zopp_proto::v1 as pb;

use crate::bulk::{seal_version, MAX_WRITES_PER_CALL};
use crate::client::{method, Client, Target};
use crate::error::{Error, Result};
use crate::scope::EnvRef;
use crate::secrets::{At, DecryptedEnvironment, SecretRecord};

/// How one name differs between two states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the second state.
    Added,
    /// Only in the first state.
    Removed,
    /// In both, with another value, kind or metadata.
    Changed,
}

/// Whether two live versions hold the same thing (compared in constant time: they are secrets).
pub fn same_content(a: &SecretRecord, b: &SecretRecord) -> bool {
    match (a.payload(), b.payload()) {
        (Some(x), Some(y)) => {
            x.kind() == y.kind()
                && zopp_crypto::ct_eq(x.expose_secret(), y.expose_secret())
                && zopp_crypto::ct_eq(x.metadata(), y.metadata())
        }
        (None, None) => true,
        _ => false,
    }
}

/// The names that differ from `from` to `to`, sorted by name, and how many are the same.
pub fn diff(
    from: &DecryptedEnvironment,
    to: &DecryptedEnvironment,
) -> (Vec<(String, Change)>, usize) {
    let old: BTreeMap<&str, &SecretRecord> =
        from.secrets.iter().map(|s| (s.name.as_str(), s)).collect();
    let new: BTreeMap<&str, &SecretRecord> =
        to.secrets.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut changes = Vec::new();
    let mut same = 0;
    for (name, a) in &old {
        match new.get(name) {
            None => changes.push(((*name).to_owned(), Change::Removed)),
            Some(b) if same_content(a, b) => same += 1,
            Some(_) => changes.push(((*name).to_owned(), Change::Changed)),
        }
    }
    for name in new.keys() {
        if !old.contains_key(name) {
            changes.push(((*name).to_owned(), Change::Added));
        }
    }
    changes.sort();
    (changes, same)
}

/// What a restore did (or, for a dry run, would do), by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Environment version of the state restored.
    pub from_env_version: u64,
    /// Environment version the restore was based on (and conditioned on).
    pub base_env_version: u64,
    /// Names that did not exist (or were deleted) and come back.
    pub added: Vec<String>,
    /// Names whose value, kind or metadata goes back to the earlier one.
    pub changed: Vec<String>,
    /// Names that did not exist then and are deleted.
    pub removed: Vec<String>,
    /// Names already as they were: no new version.
    pub unchanged: Vec<String>,
    /// Environment version after the write; `None` when nothing was written.
    pub env_version: Option<u64>,
}

impl Client {
    /// Makes the state of `env` at `at` current again, as new versions in one transaction:
    /// changed names get their earlier value back, names that did not exist then are deleted,
    /// names that were deleted since come back, and names already equal are skipped. The write
    /// is conditioned on the environment version read first, so a concurrent writer makes it
    /// fail whole (nothing is written) instead of being overwritten unseen.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for [`At::Now`]; [`Error::NotFound`] for a state that does not
    /// exist or was pruned; [`Error::Conflict`] when the environment changed meanwhile;
    /// verification, transport and server errors.
    pub async fn restore_environment(
        &self,
        env: &EnvRef,
        at: At,
        dry_run: bool,
    ) -> Result<RestoreOutcome> {
        if at == At::Now {
            return Err(Error::InvalidInput(
                "restore needs an earlier state: pass --at TIME or --at-version N".into(),
            ));
        }
        let current = self.fetch_verified(env).await?;
        let target = self.fetch_verified_at(env, at).await?;
        if target.chain.environment() != current.chain.environment() {
            return Err(Error::Conflict(format!(
                "environment '{}' was deleted and recreated while restoring; run the restore again",
                env.environment()
            )));
        }
        let base = current.state.env_version;
        let live: HashMap<&str, &SecretRecord> = current
            .state
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut outcome = RestoreOutcome {
            from_env_version: target.state.env_version,
            base_env_version: base,
            ..RestoreOutcome::default()
        };
        // (name, the record to restore, or None to delete)
        let mut plan: Vec<(&str, Option<&SecretRecord>)> = Vec::new();
        for t in &target.state.secrets {
            match live.get(t.name.as_str()) {
                Some(c) if same_content(c, t) => outcome.unchanged.push(t.name.clone()),
                Some(_) => {
                    outcome.changed.push(t.name.clone());
                    plan.push((&t.name, Some(t)));
                }
                None => {
                    outcome.added.push(t.name.clone());
                    plan.push((&t.name, Some(t)));
                }
            }
        }
        let then: HashMap<&str, ()> = target
            .state
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), ()))
            .collect();
        for c in &current.state.secrets {
            if !then.contains_key(c.name.as_str()) {
                outcome.removed.push(c.name.clone());
                plan.push((&c.name, None));
            }
        }
        if plan.len() > MAX_WRITES_PER_CALL {
            return Err(Error::InvalidInput(format!(
                "restoring needs {} new versions; one write holds at most {MAX_WRITES_PER_CALL}",
                plan.len()
            )));
        }
        if dry_run || plan.is_empty() {
            return Ok(outcome);
        }
        // Names coming back after a deletion continue their chain after the tombstone.
        let added: Vec<&str> = outcome.added.iter().map(String::as_str).collect();
        let deleted = self.deleted_heads(env, &current.chain, &added).await?;
        let point = crate::bulk::WritePoint::after(base);
        let writes: Vec<pb::SecretWrite> = plan
            .iter()
            .map(|(name, record)| {
                let (version, prev_hash) = current
                    .heads
                    .get(*name)
                    .or_else(|| deleted.get(*name))
                    .map_or((1, ZERO_HASH), |h| (h.version + 1, h.hash));
                seal_version(
                    self.identity(),
                    &current.chain,
                    point,
                    name,
                    version,
                    prev_hash,
                    record.and_then(|r| r.payload()),
                )
                .0
            })
            .collect();
        let req = self.signed(
            method::WRITE_SECRETS,
            pb::WriteSecretsRequest {
                env: Some(env.to_proto()),
                environment_id: current.chain.environment().to_string(),
                writes,
                if_env_version: base,
            },
        );
        match self.rpc().write_secrets(req).await {
            Ok(r) => {
                outcome.env_version = Some(r.into_inner().env_version);
                Ok(outcome)
            }
            Err(s) if s.code() == Code::Aborted => Err(Error::Conflict(format!(
                "environment '{}' changed while restoring (it was at version {base}); nothing was written: run the restore again",
                env.environment()
            ))),
            Err(s) => Err(self.status_error(s, Target::Environment(env))),
        }
    }
}
