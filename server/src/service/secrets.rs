//! Environment keys and secrets: `GetEnvironment`, `FetchEnvironment`, `GetSecret`,
//! `SecretHistory`, `WriteSecrets` and `WatchEnvironment`.
//!
//! The server never sees a plaintext name or value: it stores and returns name digests and
//! sealed envelopes. What it can check it does: each write's signature by the caller over its
//! `VersionClaims` (FORMAT.md §7), that `prev_hash` is the stored head's hash, that versions are
//! consecutive, and the size limits.

use std::collections::HashSet;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use zopp_crypto::envelope::{Envelope, NameDigest};
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keys::{verify_batch, VerifyingKey, SIGNATURE_LEN};
use zopp_crypto::sign::VersionClaims;
use zopp_proto::v1::{
    EnvironmentKeys, FetchEnvironmentRequest, FetchEnvironmentResponse, GetEnvironmentRequest,
    GetSecretRequest, GetSecretResponse, PrincipalPublic, SecretHistoryRequest,
    SecretHistoryResponse, WatchEnvironmentEvent, WatchEnvironmentRequest, WriteSecretsRequest,
    WriteSecretsResponse,
};

use super::{convert, Resolved, WatchStream, ZoppService};
use crate::audit::{self, action};
use crate::auth::{AuthError, Caller};
use crate::error::{ServiceError, ServiceResult};
use crate::metrics::OPEN_WATCHES;
use crate::rbac::Action;
use crate::storage::{
    digest_prefix, NewSecretVersion, PointInTime, SecretRead, SecretWriteBatch, StorageError,
};
use crate::validate;

/// Signatures verified per batch call (ed25519 batch verification amortizes well up to here).
const VERIFY_CHUNK: usize = 64;
/// Batches larger than this verify on the blocking pool so they cannot stall the async workers.
const BLOCKING_VERIFY_AT: usize = 32;

/// One validated write, before its signature is checked.
struct PendingWrite {
    name_digest: NameDigest,
    version: u64,
    key_epoch: u32,
    envelope: Vec<u8>,
    deleted: bool,
    prev_hash: [u8; 32],
    signature: [u8; SIGNATURE_LEN],
    env_version: u64,
    created_at_ms: i64,
}

/// How far a write's signed time may be from the server's clock (as for request timestamps).
const MAX_WRITE_SKEW_MS: i64 = 60_000;

impl PendingWrite {
    fn claims(&self, environment: EnvironmentId, writer: PrincipalId) -> VersionClaims<'_> {
        VersionClaims {
            environment,
            name_digest: self.name_digest,
            version: self.version,
            key_epoch: self.key_epoch,
            deleted: self.deleted,
            envelope: &self.envelope,
            prev_hash: self.prev_hash,
            writer,
            env_version: self.env_version,
            created_at_ms: self.created_at_ms,
        }
    }
}

/// Verifies every write's signature by `key` and computes each version's hash.
fn verify_writes(
    environment: EnvironmentId,
    writer: PrincipalId,
    key: VerifyingKey,
    writes: Vec<PendingWrite>,
) -> ServiceResult<Vec<NewSecretVersion>> {
    for chunk in writes.chunks(VERIFY_CHUNK) {
        let msgs: Vec<Vec<u8>> = chunk
            .iter()
            .map(|w| w.claims(environment, writer).message())
            .collect();
        let msg_refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let sig_refs: Vec<&[u8]> = chunk.iter().map(|w| &w.signature[..]).collect();
        let keys = vec![key; chunk.len()];
        if verify_batch(&msg_refs, &sig_refs, &keys).is_err() {
            // Name the first bad one.
            for (w, m) in chunk.iter().zip(&msgs) {
                if key.verify(m, &w.signature).is_err() {
                    return Err(ServiceError::InvalidArgument(format!(
                        "bad signature on secret {} version {}",
                        digest_prefix(&w.name_digest),
                        w.version
                    )));
                }
            }
            return Err(ServiceError::InvalidArgument(
                "bad signature on a secret version".into(),
            ));
        }
    }
    Ok(writes
        .into_iter()
        .map(|w| {
            let hash = w.claims(environment, writer).hash(&w.signature);
            NewSecretVersion {
                name_digest: w.name_digest,
                version: w.version,
                key_epoch: w.key_epoch,
                envelope: Envelope::from_bytes(w.envelope),
                deleted: w.deleted,
                signature: w.signature,
                prev_hash: w.prev_hash,
                hash,
            }
        })
        .collect())
}

fn secret_target(d: &NameDigest, version: u64) -> String {
    format!("secret/{}@{version}", d.to_hex())
}

impl ZoppService {
    /// Public keys of the given writers.
    async fn writers(
        &self,
        ids: impl Iterator<Item = PrincipalId>,
    ) -> ServiceResult<Vec<PrincipalPublic>> {
        let ids: Vec<PrincipalId> = ids.collect::<HashSet<_>>().into_iter().collect();
        let found = self.state.storage.principals(&ids).await?;
        Ok(found.iter().map(convert::principal_public).collect())
    }

    async fn keys_for(
        &self,
        caller: &Caller,
        m_env: Option<&zopp_proto::v1::EnvironmentRef>,
        action: Action,
        audit_action: &str,
    ) -> ServiceResult<(Resolved, EnvironmentKeys)> {
        let (r, role) = self
            .environment(caller, m_env, action, audit_action)
            .await?;
        let keys = self.environment_keys(&r, role).await?;
        Ok((r, keys))
    }

    pub(super) async fn get_environment_rpc(
        &self,
        caller: Caller,
        m: GetEnvironmentRequest,
    ) -> ServiceResult<EnvironmentKeys> {
        let (r, mut keys) = self
            .keys_for(
                &caller,
                m.env.as_ref(),
                Action::ReadSecrets,
                action::ENVIRONMENT_KEYS,
            )
            .await?;
        self.attach_environment_statements(caller.principal_id(), &mut keys)
            .await?;
        self.audit_read(
            &caller,
            action::ENVIRONMENT_KEYS,
            &r.env_scope()?,
            format!("key_epoch/{}", keys.key_epoch),
        )
        .await?;
        Ok(keys)
    }

    pub(super) async fn fetch_environment_rpc(
        &self,
        caller: Caller,
        m: FetchEnvironmentRequest,
    ) -> ServiceResult<FetchEnvironmentResponse> {
        if m.at_ms != 0 && m.at_env_version != 0 {
            return Err(ServiceError::InvalidArgument(
                "set at most one of at_ms and at_env_version".into(),
            ));
        }
        if m.at_ms < 0 {
            return Err(ServiceError::InvalidArgument(
                "at_ms must not be negative".into(),
            ));
        }
        let (r, mut keys) = self
            .keys_for(
                &caller,
                m.env.as_ref(),
                Action::ReadSecrets,
                action::ENVIRONMENT_FETCH,
            )
            .await?;
        self.attach_environment_statements(caller.principal_id(), &mut keys)
            .await?;
        let env = r.env()?;
        // A state that never existed is NOT_FOUND, like any other missing thing; the message
        // says which bound was crossed so that the client can tell the user what to ask for.
        let at = if m.at_env_version != 0 {
            if m.at_env_version > env.env_version {
                return Err(ServiceError::NotFound(format!(
                    "point in time: environment '{}' is at version {}; version {} does not exist yet",
                    env.name, env.env_version, m.at_env_version
                )));
            }
            PointInTime::AtEnvVersion(m.at_env_version)
        } else if m.at_ms != 0 {
            if m.at_ms < env.created_at_ms {
                return Err(ServiceError::NotFound(format!(
                    "point in time: environment '{}' did not exist yet (created at {})",
                    env.name,
                    rfc3339_utc(env.created_at_ms)
                )));
            }
            PointInTime::AtMs(m.at_ms)
        } else {
            PointInTime::Now
        };
        let state = self
            .state
            .storage
            .environment_state(env.id, at)
            .await
            .map_err(|e| match e {
                StorageError::Pruned { floor } => ServiceError::NotFound(format!(
                    "point in time: environment '{}' keeps only its newest versions; states \
                     before environment version {floor} were pruned by its retention limit",
                    env.name
                )),
                e => self.env_gone(e, &r),
            })?;
        let writers = self
            .writers(state.versions.iter().map(|v| v.writer))
            .await?;
        self.audit_read(
            &caller,
            action::ENVIRONMENT_FETCH,
            &r.env_scope()?,
            format!("env_version/{}", state.env_version),
        )
        .await?;
        Ok(FetchEnvironmentResponse {
            keys: Some(keys),
            secrets: state.versions.iter().map(convert::secret_version).collect(),
            writers,
            env_version: state.env_version,
        })
    }

    fn env_gone(&self, e: StorageError, r: &Resolved) -> ServiceError {
        match e {
            StorageError::NotFound(_) => ServiceError::NotFound(format!(
                "environment '{}' not found in project '{}'",
                r.environment
                    .as_ref()
                    .map(|e| e.name.as_str())
                    .unwrap_or_default(),
                r.project
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or_default()
            )),
            other => other.into(),
        }
    }

    pub(super) async fn get_secret_rpc(
        &self,
        caller: Caller,
        m: GetSecretRequest,
    ) -> ServiceResult<GetSecretResponse> {
        let digest = validate::name_digest(&m.name_digest)?;
        let version = (m.version != 0).then_some(m.version);
        let (r, role, read) = self
            .environment_with_secret(
                &caller,
                m.env.as_ref(),
                Action::ReadSecrets,
                action::SECRET_READ,
                &digest,
                version,
            )
            .await?;
        let keys = self.environment_keys(&r, role).await?;
        let env = r.env()?;
        let not_found = || {
            ServiceError::NotFound(format!(
                "secret {} not found in environment '{}'",
                digest_prefix(&digest),
                env.name
            ))
        };
        let read = match (read, version) {
            (Some(r), Some(_)) => r,
            (Some(r), None) if !r.secret.deleted || m.include_deleted => r,
            (_, None) => return Err(not_found()),
            (None, Some(v)) => {
                return Err(ServiceError::NotFound(format!(
                    "version {v} of secret {} not found in environment '{}'",
                    digest_prefix(&digest),
                    env.name
                )))
            }
        };
        let SecretRead {
            secret,
            previous,
            writer,
        } = read;
        let writer = writer.as_ref().map(convert::principal_public);
        self.audit_read(
            &caller,
            action::SECRET_READ,
            &r.env_scope()?,
            secret_target(&digest, secret.version),
        )
        .await?;
        Ok(GetSecretResponse {
            keys: Some(keys),
            secret: Some(convert::secret_version(&secret)),
            writer,
            previous: previous.as_ref().map(convert::secret_version),
        })
    }

    pub(super) async fn secret_history_rpc(
        &self,
        caller: Caller,
        m: SecretHistoryRequest,
    ) -> ServiceResult<SecretHistoryResponse> {
        let digest = validate::name_digest(&m.name_digest)?;
        let (r, keys) = self
            .keys_for(
                &caller,
                m.env.as_ref(),
                Action::ReadSecrets,
                action::SECRET_HISTORY,
            )
            .await?;
        let env = r.env()?;
        let versions = self.state.storage.secret_history(env.id, &digest).await?;
        if versions.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "secret {} not found in environment '{}'",
                digest_prefix(&digest),
                env.name
            )));
        }
        let writers = self.writers(versions.iter().map(|v| v.writer)).await?;
        self.audit_read(
            &caller,
            action::SECRET_HISTORY,
            &r.env_scope()?,
            format!("secret/{}", digest.to_hex()),
        )
        .await?;
        Ok(SecretHistoryResponse {
            keys: Some(keys),
            versions: versions.iter().map(convert::secret_version).collect(),
            writers,
        })
    }

    pub(super) async fn write_secrets_rpc(
        &self,
        caller: Caller,
        m: WriteSecretsRequest,
    ) -> ServiceResult<WriteSecretsResponse> {
        // Validate the shape of every write before touching the database.
        if m.writes.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "no writes in the request".into(),
            ));
        }
        if m.writes.len() > validate::MAX_WRITES_PER_CALL {
            return Err(ServiceError::InvalidArgument(format!(
                "{} writes in one call; the limit is {}",
                m.writes.len(),
                validate::MAX_WRITES_PER_CALL
            )));
        }
        let claimed_env: EnvironmentId = validate::client_id("environment", &m.environment_id)?;
        let mut seen = HashSet::with_capacity(m.writes.len());
        let mut pending = Vec::with_capacity(m.writes.len());
        for w in m.writes {
            let name_digest = validate::name_digest(&w.name_digest)?;
            let prefix = digest_prefix(&name_digest);
            if !seen.insert(name_digest) {
                return Err(ServiceError::InvalidArgument(format!(
                    "secret {prefix} is written more than once in one call"
                )));
            }
            if w.version == 0 || w.version > i64::MAX as u64 {
                return Err(ServiceError::InvalidArgument(format!(
                    "version of secret {prefix} must be between 1 and {}",
                    i64::MAX
                )));
            }
            if w.key_epoch == 0 {
                return Err(ServiceError::InvalidArgument(format!(
                    "key_epoch of secret {prefix} must be at least 1"
                )));
            }
            if w.deleted {
                if !w.envelope.is_empty() {
                    return Err(ServiceError::InvalidArgument(format!(
                        "deletion of secret {prefix} must have an empty envelope"
                    )));
                }
            } else {
                validate::envelope(&prefix, &w.envelope)?;
            }
            pending.push(PendingWrite {
                name_digest,
                version: w.version,
                key_epoch: w.key_epoch,
                envelope: w.envelope,
                deleted: w.deleted,
                prev_hash: validate::fixed::<32>("prev_hash", &w.prev_hash)?,
                signature: validate::signature("signature", &w.signature)?,
                env_version: w.env_version,
                created_at_ms: w.created_at_ms,
            });
        }
        // One call is one point in history: one environment version, one time, both signed
        // by the writer (FORMAT.md §7).
        let (claimed_version, claimed_at) = pending
            .first()
            .map(|w| (w.env_version, w.created_at_ms))
            .unwrap_or_default();
        if claimed_version == 0 || claimed_version > i64::MAX as u64 {
            return Err(ServiceError::InvalidArgument(
                "writes must claim the environment version they produce (at least 1)".into(),
            ));
        }
        if pending
            .iter()
            .any(|w| w.env_version != claimed_version || w.created_at_ms != claimed_at)
        {
            return Err(ServiceError::InvalidArgument(
                "every write of one call must claim the same environment version and time".into(),
            ));
        }
        if m.if_env_version != 0 && m.if_env_version + 1 != claimed_version {
            return Err(ServiceError::InvalidArgument(format!(
                "the writes claim environment version {claimed_version}, which does not follow if_env_version {}",
                m.if_env_version
            )));
        }
        let server_now = self.now_ms();
        // abs_diff: a claimed time near i64::MIN would overflow a subtraction.
        if claimed_at.abs_diff(server_now) > MAX_WRITE_SKEW_MS.unsigned_abs() {
            return Err(ServiceError::InvalidArgument(format!(
                "the writes claim time {claimed_at} (unix ms) but the server's clock says {server_now}: check this machine's clock"
            )));
        }

        let (r, _role) = self
            .environment(
                &caller,
                m.env.as_ref(),
                Action::WriteSecrets,
                action::SECRET_WRITE,
            )
            .await?;
        let env = r.env()?;
        if env.id != claimed_env {
            return Err(ServiceError::FailedPrecondition(format!(
                "environment '{}' has id {}, not {claimed_env}: it was deleted and recreated; fetch it again",
                env.name, env.id
            )));
        }

        let writer = caller.principal_id();
        let key = caller.principal().signing_key;
        let env_id = env.id;
        let versions = if pending.len() > BLOCKING_VERIFY_AT {
            tokio::task::spawn_blocking(move || verify_writes(env_id, writer, key, pending))
                .await
                .map_err(|e| ServiceError::Internal(format!("signature check task: {e}")))??
        } else {
            verify_writes(env_id, writer, key, pending)?
        };

        let now = self.now_ms();
        let scope = r.env_scope()?;
        let audit_entries = versions
            .iter()
            .map(|v| {
                let act = if v.deleted {
                    action::SECRET_DELETE
                } else {
                    action::SECRET_WRITE
                };
                audit::draft(
                    &caller,
                    act,
                    &scope,
                    secret_target(&v.name_digest, v.version),
                    now,
                )
            })
            .collect();
        // The signed env_version makes every write conditional on the version before it, and
        // the versions carry the time their writer signed.
        let batch = SecretWriteBatch {
            environment_id: env_id,
            writer,
            if_env_version: Some(claimed_version - 1),
            writes: versions,
            now_ms: claimed_at,
        };
        let outcome = self
            .state
            .storage
            .write_secrets(batch, audit_entries)
            .await
            .map_err(|e| self.env_gone(e, &r))?;
        self.state.feed.publish(env_id, outcome.env_version);
        Ok(WriteSecretsResponse {
            env_version: outcome.env_version,
            created_at_ms: outcome.created_at_ms,
        })
    }

    pub(super) async fn watch_environment_rpc(
        &self,
        caller: Caller,
        m: WatchEnvironmentRequest,
    ) -> ServiceResult<WatchStream> {
        let (r, _role) = self
            .environment(
                &caller,
                m.env.as_ref(),
                Action::ReadSecrets,
                action::ENVIRONMENT_WATCH,
            )
            .await?;
        let env_id = r.env()?.id;
        // Subscribe before reading the version, so a write landing in between is not missed.
        let mut events = self.state.feed.subscribe(env_id);
        let current = self
            .state
            .storage
            .environment_version(env_id)
            .await?
            .ok_or_else(|| self.env_gone(StorageError::NotFound("environment"), &r))?;
        self.audit_read(
            &caller,
            action::ENVIRONMENT_WATCH,
            &r.env_scope()?,
            format!("after_env_version/{}", m.after_env_version),
        )
        .await?;

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let svc = self.clone();
        let env_ref = m.env.clone();
        let mut last = m.after_env_version;
        tokio::spawn(async move {
            let _open = WatchGauge::open();
            if current > last {
                if tx
                    .send(Ok(WatchEnvironmentEvent {
                        env_version: current,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                last = current;
            }
            let mut stop = svc.state.shutdown.clone();
            loop {
                let next = tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(v) => Ok(v),
                        // Fell behind: the latest version is all a watcher needs.
                        Err(RecvError::Lagged(_)) => svc
                            .state
                            .storage
                            .environment_version(env_id)
                            .await
                            .map_err(ServiceError::from)
                            .and_then(|v| v.ok_or_else(|| ServiceError::NotFound("environment not found".into()))),
                        Err(RecvError::Closed) => break,
                    },
                    _ = async { let _ = stop.wait_for(|draining| *draining).await; } => break,
                    _ = tx.closed() => break,
                };
                let v = match next {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(e.into_status())).await;
                        break;
                    }
                };
                if v <= last {
                    continue;
                }
                // Access may have been revoked since the stream opened: check again before
                // telling the caller anything more.
                if let Err(e) = svc.recheck(&caller, env_ref.as_ref()).await {
                    let _ = tx.send(Err(e.into_status())).await;
                    break;
                }
                if tx
                    .send(Ok(WatchEnvironmentEvent { env_version: v }))
                    .await
                    .is_err()
                {
                    break;
                }
                last = v;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Re-validates a long-lived caller: still a live principal, still allowed to read.
    async fn recheck(
        &self,
        caller: &Caller,
        env: Option<&zopp_proto::v1::EnvironmentRef>,
    ) -> ServiceResult<()> {
        let p = self
            .state
            .storage
            .principal(caller.principal_id())
            .await?
            .ok_or(AuthError::UnknownPrincipal)?;
        if p.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked.into());
        }
        if p.expires_at_ms.is_some_and(|t| t <= self.now_ms()) {
            return Err(AuthError::Expired.into());
        }
        self.environment(caller, env, Action::ReadSecrets, action::ENVIRONMENT_WATCH)
            .await?;
        Ok(())
    }
}

/// Keeps the open-watches gauge right however the stream task ends.
struct WatchGauge;

impl WatchGauge {
    fn open() -> Self {
        metrics::gauge!(OPEN_WATCHES).increment(1.0);
        WatchGauge
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_WATCHES).decrement(1.0);
    }
}

/// Unix milliseconds as RFC 3339 in UTC, the only form times take in messages people read.
fn rfc3339_utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "an unrepresentable time".to_owned())
}
