//! Storage of app leases and of the last apply of each app (docs/platform.md). [`LeaseStorage`]
//! is a supertrait of [`Storage`], implemented by both backends (`sqlite/leases.rs`,
//! `postgres/leases.rs`) and checked by one conformance suite (`leases_suite.rs`).
//!
//! An app is known only by its name digest; an apply record holds versions and digests, never
//! a name or a value. A lease is a row per app; it is live while `expires_at` is in the future,
//! so a holder that died stops blocking others once its TTL runs out, with no cleanup job.

use async_trait::async_trait;
use zopp_crypto::envelope::NameDigest;
use zopp_crypto::ids::{EnvironmentId, PrincipalId};

use super::teams::timed;
use super::{AuditDraft, Metered, Result, Storage};

/// A lease on one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Lease id (server-chosen, random).
    pub lease_id: String,
    /// Who holds it.
    pub holder: PrincipalId,
    /// When it was taken (unix ms).
    pub acquired_at_ms: i64,
    /// When it runs out unless renewed (unix ms).
    pub expires_at_ms: i64,
}

/// What to take or renew.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    /// The app's environment.
    pub environment: EnvironmentId,
    /// The app's name digest.
    pub app: NameDigest,
    /// Who asks.
    pub holder: PrincipalId,
    /// The id of a new lease, or of the lease to renew (see `renew`).
    pub lease_id: String,
    /// Renew the caller's lease `lease_id` instead of taking a new one.
    pub renew: bool,
    /// Take it even from a live holder.
    pub break_lock: bool,
    /// Now (unix ms).
    pub now_ms: i64,
    /// When the lease runs out (unix ms).
    pub expires_at_ms: i64,
}

/// The answer to a [`LeaseRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Taken or renewed: the lease as stored.
    Acquired(LeaseRecord),
    /// Someone else holds a live lease (or the lease to renew is gone): the live one, if any.
    Held(Option<LeaseRecord>),
}

/// One secret version an apply used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedSecret {
    /// Its environment.
    pub environment: EnvironmentId,
    /// Its name digest.
    pub name_digest: NameDigest,
    /// The version used.
    pub version: u64,
}

/// One recorded apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyRecord {
    /// Who applied.
    pub principal: PrincipalId,
    /// The app version applied.
    pub app_version: u64,
    /// The kubeconfig version used.
    pub kubeconfig_version: u64,
    /// SHA-256 of the rendering.
    pub rendering_sha256: [u8; 32],
    /// The apply command's exit code.
    pub exit_code: i32,
    /// The secrets used.
    pub secrets: Vec<AppliedSecret>,
    /// When the apply started (client's clock, unix ms).
    pub started_at_ms: i64,
    /// When the server recorded it (unix ms).
    pub finished_at_ms: i64,
}

/// Lease and apply-record operations. Each mutating method is one transaction that also
/// appends the audit entry it is given.
#[async_trait]
pub trait LeaseStorage {
    /// Takes, renews or breaks the lease on an app (see [`LeaseRequest`]). The audit entry is
    /// written only when the lease is acquired.
    async fn acquire_lease(&self, req: LeaseRequest, audit: AuditDraft) -> Result<LeaseOutcome>;

    /// Releases lease `lease_id` of `holder` on an app (if it still holds it) and stores
    /// `apply` as the app's last apply, with the audit entry. Returns whether the lease was
    /// still held.
    async fn release_lease(
        &self,
        environment: EnvironmentId,
        app: NameDigest,
        holder: PrincipalId,
        lease_id: &str,
        apply: Option<ApplyRecord>,
        audit: AuditDraft,
    ) -> Result<bool>;

    /// The live lease on an app at `now_ms` and its last recorded apply.
    async fn app_status(
        &self,
        environment: EnvironmentId,
        app: NameDigest,
        now_ms: i64,
    ) -> Result<(Option<LeaseRecord>, Option<ApplyRecord>)>;
}

/// Encodes the secrets of an apply record for storage: per secret, the environment id (16
/// bytes), the name digest (32 bytes) and the version (8 bytes, big-endian).
pub fn encode_secrets(secrets: &[AppliedSecret]) -> Vec<u8> {
    let mut out = Vec::with_capacity(secrets.len() * 56);
    for s in secrets {
        out.extend_from_slice(s.environment.as_bytes());
        out.extend_from_slice(s.name_digest.as_bytes());
        out.extend_from_slice(&s.version.to_be_bytes());
    }
    out
}

/// Decodes [`encode_secrets`]; `None` for bytes it did not write.
pub fn decode_secrets(bytes: &[u8]) -> Option<Vec<AppliedSecret>> {
    if !bytes.len().is_multiple_of(56) {
        return None;
    }
    bytes
        .chunks(56)
        .map(|c| {
            Some(AppliedSecret {
                environment: EnvironmentId::from_bytes(c[..16].try_into().ok()?),
                name_digest: NameDigest::try_from_slice(&c[16..48]).ok()?,
                version: u64::from_be_bytes(c[48..].try_into().ok()?),
            })
        })
        .collect()
}

#[async_trait]
impl<S: Storage> LeaseStorage for Metered<S> {
    async fn acquire_lease(&self, req: LeaseRequest, audit: AuditDraft) -> Result<LeaseOutcome> {
        timed(
            self.inner().backend(),
            "acquire_lease",
            self.inner().acquire_lease(req, audit),
        )
        .await
    }
    async fn release_lease(
        &self,
        environment: EnvironmentId,
        app: NameDigest,
        holder: PrincipalId,
        lease_id: &str,
        apply: Option<ApplyRecord>,
        audit: AuditDraft,
    ) -> Result<bool> {
        timed(
            self.inner().backend(),
            "release_lease",
            self.inner()
                .release_lease(environment, app, holder, lease_id, apply, audit),
        )
        .await
    }
    async fn app_status(
        &self,
        environment: EnvironmentId,
        app: NameDigest,
        now_ms: i64,
    ) -> Result<(Option<LeaseRecord>, Option<ApplyRecord>)> {
        timed(
            self.inner().backend(),
            "app_status",
            self.inner().app_status(environment, app, now_ms),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_encoding_round_trips() {
        let secrets = vec![
            AppliedSecret {
                environment: EnvironmentId::from_bytes([1; 16]),
                name_digest: NameDigest::try_from_slice(&[2; 32]).expect("32 bytes"),
                version: 7,
            },
            AppliedSecret {
                environment: EnvironmentId::from_bytes([3; 16]),
                name_digest: NameDigest::try_from_slice(&[4; 32]).expect("32 bytes"),
                version: u64::MAX,
            },
        ];
        let bytes = encode_secrets(&secrets);
        assert_eq!(bytes.len(), 112);
        assert_eq!(decode_secrets(&bytes), Some(secrets));
        assert_eq!(decode_secrets(&bytes[..55]), None);
    }
}
