//! Request authentication (docs/ARCHITECTURE.md "Request signing", FORMAT.md §4).
//!
//! Every RPC except `LookupInvite` and `Join` carries four metadata values: the principal id, a
//! unix-ms timestamp, a 16-byte nonce and an Ed25519 signature over
//! `zopp_crypto::sign::request_message(server_id, method, timestamp, nonce, sha256(body))`, where
//! `server_id` is this deployment's (so a request signed for another is refused) and `body` is
//! the prost encoding of the request message (the server re-encodes the decoded message; prost's
//! encoding is canonical for a schema). The checks run cheapest first: metadata shape, clock
//! skew, principal status, signature, and only then the replay cache, so that forged requests
//! cannot fill the cache or burn a legitimate nonce.
//!
//! The only way to obtain a [`Caller`] is [`Authenticator::authenticate`], and every handler
//! needs one, so an unauthenticated handler cannot be written by accident.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use std::sync::Mutex;
use tonic::metadata::MetadataMap;
use zopp_crypto::ids::{PrincipalId, ServerId, UserId, WorkspaceId};
use zopp_crypto::keys::SIGNATURE_LEN;
use zopp_crypto::sign::{request_message, NONCE_LEN, UNBOUND_SERVER};
use zopp_proto::{MD_NONCE, MD_PRINCIPAL, MD_SIGNATURE, MD_TIMESTAMP};

use crate::metrics::AUTH_FAILURES;
use crate::rbac::PrincipalKind;
use crate::storage::{PrincipalRecord, Storage, StorageError, Who};
use crate::{lock, Clock};

/// Largest accepted difference between the request timestamp and the server clock.
pub const MAX_SKEW_MS: i64 = 60_000;
/// How long past its own timestamp a nonce is remembered: beyond that the skew check alone
/// refuses the request, so the cache needs nothing older (plus a margin for clock steps).
const NONCE_TTL_MS: i64 = MAX_SKEW_MS + 1_000;

/// Why a request's signature was refused. Each message names the failed check and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A required metadata value is absent.
    #[error("missing {0} metadata")]
    Missing(&'static str),
    /// A metadata value does not parse.
    #[error("malformed {0} metadata")]
    Malformed(&'static str),
    /// The timestamp is more than [`MAX_SKEW_MS`] away from the server clock.
    #[error("request timestamp outside the allowed 60 s skew")]
    Skew,
    /// The nonce was seen inside the replay window.
    #[error("replayed request nonce")]
    Replay,
    /// No principal has this id.
    #[error("unknown principal")]
    UnknownPrincipal,
    /// The principal was revoked.
    #[error("principal revoked")]
    Revoked,
    /// The principal's expiry time has passed.
    #[error("principal expired")]
    Expired,
    /// The signature does not verify for this principal, method and body.
    #[error("bad request signature")]
    BadSignature,
    /// The timestamp predates what the replay cache remembers (a request signed before the
    /// server last started), so a replay could not be told apart from a first use.
    #[error("request timestamp is older than the server's start")]
    BeforeStart,
}

impl AuthError {
    /// Stable label for the `reason` of the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "missing_metadata",
            AuthError::Malformed(_) => "malformed_metadata",
            AuthError::Skew => "clock_skew",
            AuthError::Replay => "replay",
            AuthError::UnknownPrincipal => "unknown_principal",
            AuthError::Revoked => "revoked",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "bad_signature",
            AuthError::BeforeStart => "before_start",
        }
    }
}

/// Failure of [`Authenticator::authenticate`]: a refused request, or a storage outage while
/// checking it (which must not be reported as an authentication failure).
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// The request was refused.
    #[error(transparent)]
    Refused(#[from] AuthError),
    /// The principal or the replay cache could not be consulted.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The signed envelope of one request, as recorded in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// Full gRPC method path.
    pub method: &'static str,
    /// The signed timestamp (unix ms).
    pub timestamp_ms: i64,
    /// The signed nonce.
    pub nonce: [u8; NONCE_LEN],
    /// SHA-256 of the encoded request message.
    pub body_hash: [u8; 32],
    /// The principal's signature.
    pub signature: [u8; SIGNATURE_LEN],
}

/// An authenticated caller. Only [`Authenticator::authenticate`] creates one.
#[derive(Clone, Debug)]
pub struct Caller {
    principal: PrincipalRecord,
    request: SignedRequest,
}

impl Caller {
    /// The calling principal's id.
    pub fn principal_id(&self) -> PrincipalId {
        self.principal.id
    }
    /// Its user (`None` for a service principal).
    pub fn user_id(&self) -> Option<UserId> {
        self.principal.user_id
    }
    /// The workspace owning a service principal.
    pub fn service_workspace(&self) -> Option<WorkspaceId> {
        self.principal.workspace_id
    }
    /// User device or service principal.
    pub fn kind(&self) -> PrincipalKind {
        if self.principal.user_id.is_some() {
            PrincipalKind::User
        } else {
            PrincipalKind::Service
        }
    }
    /// Principal and user, for grant look-ups.
    pub fn who(&self) -> Who {
        Who {
            principal: self.principal.id,
            user: self.principal.user_id,
        }
    }
    /// The full principal record (public keys, name, email).
    pub fn principal(&self) -> &PrincipalRecord {
        &self.principal
    }
    /// The signed request.
    pub fn request(&self) -> &SignedRequest {
        &self.request
    }
}

/// Remembers nonces for the replay window. In-memory for one process; a database-backed
/// implementation can replace it when several replicas share the load.
#[async_trait]
pub trait ReplayCache: Send + Sync + 'static {
    /// Records `nonce` until `expires_at_ms`. Returns `false` when it is already recorded and
    /// not yet expired, i.e. the request is a replay.
    async fn check_and_insert(
        &self,
        nonce: &[u8; NONCE_LEN],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StorageError>;

    /// The earliest request timestamp (unix ms) whose nonce this cache is sure to have seen if
    /// it was used: a cache that lives in one process forgets every nonce when the process
    /// ends, so it vouches only for requests signed after it was made. A cache that outlives
    /// the process (in the database) vouches for everything.
    fn remembers_since_ms(&self) -> i64 {
        i64::MIN
    }
}

const SHARDS: usize = 16;

#[derive(Default)]
struct NonceShard {
    expiry: HashMap<[u8; NONCE_LEN], i64>,
    // Insertion order; expiries are nearly monotonic (timestamp + TTL), so pruning from the
    // front removes almost everything that has expired in O(expired).
    order: VecDeque<([u8; NONCE_LEN], i64)>,
}

/// The in-process [`ReplayCache`]: sharded maps pruned as time passes. It forgets everything
/// when the process ends, so it vouches only for requests signed after it was made: the
/// authenticator refuses older ones, which a restart would otherwise let through a second time.
pub struct MemoryReplayCache {
    shards: Vec<Mutex<NonceShard>>,
    since_ms: i64,
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        Self::remembering_since(crate::now_ms())
    }
}

impl MemoryReplayCache {
    /// An empty cache that vouches for requests signed from now on.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache that vouches for requests signed at or after `since_ms`. Only a cache
    /// that truly saw every request since then may claim it (tests use `i64::MIN` to stand for
    /// a server that has been up longer than the skew window).
    pub fn remembering_since(since_ms: i64) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(NonceShard::default()))
                .collect(),
            since_ms,
        }
    }

    /// Number of remembered nonces (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).expiry.len()).sum()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_sync(&self, nonce: &[u8; NONCE_LEN], expires_at_ms: i64, now_ms: i64) -> bool {
        let mut shard = lock(&self.shards[usize::from(nonce[0]) % SHARDS]);
        while let Some((n, exp)) = shard.order.front().copied() {
            if exp > now_ms {
                break;
            }
            shard.order.pop_front();
            if shard.expiry.get(&n) == Some(&exp) {
                shard.expiry.remove(&n);
            }
        }
        if let Some(exp) = shard.expiry.get(nonce) {
            if *exp > now_ms {
                return false;
            }
        }
        shard.expiry.insert(*nonce, expires_at_ms);
        shard.order.push_back((*nonce, expires_at_ms));
        true
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn check_and_insert(
        &self,
        nonce: &[u8; NONCE_LEN],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        Ok(self.insert_sync(nonce, expires_at_ms, now_ms))
    }

    fn remembers_since_ms(&self) -> i64 {
        self.since_ms
    }
}

/// Verifies signed requests.
#[derive(Clone)]
pub struct Authenticator {
    storage: Arc<dyn Storage>,
    replay: Arc<dyn ReplayCache>,
    clock: Arc<dyn Clock>,
    server_id: ServerId,
}

/// The one method signed for [`UNBOUND_SERVER`] (and only for it): a principal token's first call,
/// made before the client knows the server id (its response names it). Replaying it at another
/// deployment returns that deployment's copy of the same share (FORMAT.md §4).
const UNBOUND_METHOD: &str = "/zopp.v1.Zopp/GetKeyShare";

fn metadata<'a>(md: &'a MetadataMap, key: &'static str) -> Result<&'a str, AuthError> {
    md.get(key)
        .ok_or(AuthError::Missing(key))?
        .to_str()
        .map_err(|_| AuthError::Malformed(key))
}

fn hex_array<const N: usize>(s: &str, key: &'static str) -> Result<[u8; N], AuthError> {
    let mut out = [0u8; N];
    // Lowercase hex only (FORMAT.md §4): one canonical spelling per value.
    if s.len() != 2 * N || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(AuthError::Malformed(key));
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| AuthError::Malformed(key))?;
    Ok(out)
}

/// Whether `timestamp_ms` is at most [`MAX_SKEW_MS`] from `now_ms`. Checked arithmetic: a
/// difference that does not fit in an `i64` (a timestamp near `i64::MIN` or `i64::MAX`) is out
/// of the window, never wrapped or saturated into it.
fn within_skew(timestamp_ms: i64, now_ms: i64) -> bool {
    timestamp_ms
        .checked_sub(now_ms)
        .and_then(i64::checked_abs)
        .is_some_and(|d| d <= MAX_SKEW_MS)
}

impl Authenticator {
    /// Builds an authenticator over `storage` (principals) and `replay`, for requests signed
    /// for `server_id`.
    pub fn new(
        storage: Arc<dyn Storage>,
        replay: Arc<dyn ReplayCache>,
        clock: Arc<dyn Clock>,
        server_id: ServerId,
    ) -> Self {
        Self {
            storage,
            replay,
            clock,
            server_id,
        }
    }

    /// The deployment's server id, which every request signature must bind.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// Checks the request signature on `msg` received for `method` (full gRPC path).
    ///
    /// # Errors
    /// [`AuthFailure::Refused`] naming the failed check, or [`AuthFailure::Storage`] when the
    /// principal could not be loaded.
    pub async fn authenticate<T: prost::Message>(
        &self,
        method: &'static str,
        md: &MetadataMap,
        msg: &T,
    ) -> Result<Caller, AuthFailure> {
        let result = self.check(method, md, msg).await;
        if let Err(AuthFailure::Refused(e)) = &result {
            metrics::counter!(AUTH_FAILURES, "reason" => e.reason()).increment(1);
        }
        result
    }

    async fn check<T: prost::Message>(
        &self,
        method: &'static str,
        md: &MetadataMap,
        msg: &T,
    ) -> Result<Caller, AuthFailure> {
        let principal = PrincipalId::try_parse(metadata(md, MD_PRINCIPAL)?)
            .map_err(|_| AuthError::Malformed(MD_PRINCIPAL))?;
        let ts_text = metadata(md, MD_TIMESTAMP)?;
        if ts_text.is_empty() || !ts_text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(AuthError::Malformed(MD_TIMESTAMP).into());
        }
        let timestamp_ms: i64 = ts_text
            .parse()
            .map_err(|_| AuthError::Malformed(MD_TIMESTAMP))?;
        let nonce: [u8; NONCE_LEN] = hex_array(metadata(md, MD_NONCE)?, MD_NONCE)?;
        let signature: [u8; SIGNATURE_LEN] = hex_array(metadata(md, MD_SIGNATURE)?, MD_SIGNATURE)?;

        let now = self.clock.now_ms();
        if !within_skew(timestamp_ms, now) {
            return Err(AuthError::Skew.into());
        }
        if timestamp_ms < self.replay.remembers_since_ms() {
            return Err(AuthError::BeforeStart.into());
        }

        let record = self
            .storage
            .principal(principal)
            .await?
            .ok_or(AuthError::UnknownPrincipal)?;
        if record.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked.into());
        }
        if record.expires_at_ms.is_some_and(|t| t <= now) {
            return Err(AuthError::Expired.into());
        }

        let body_hash = zopp_crypto::sha256(&msg.encode_to_vec());
        let verify = |server: &ServerId| {
            let signed = request_message(server, method, timestamp_ms, &nonce, &body_hash);
            record.signing_key.verify(&signed, &signature)
        };
        // One server id per method, so an audit verifier knows which one to check.
        let server = if method == UNBOUND_METHOD {
            UNBOUND_SERVER
        } else {
            self.server_id
        };
        verify(&server).map_err(|_| AuthError::BadSignature)?;

        if !self
            .replay
            .check_and_insert(&nonce, timestamp_ms.saturating_add(NONCE_TTL_MS), now)
            .await?
        {
            return Err(AuthError::Replay.into());
        }
        Ok(Caller {
            principal: record,
            request: SignedRequest {
                method,
                timestamp_ms,
                nonce,
                body_hash,
                signature,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Same first byte: the same shard, so pruning one prunes the other.
    const N1: [u8; NONCE_LEN] = [1; NONCE_LEN];
    const N2: [u8; NONCE_LEN] = [1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];

    #[test]
    fn replay_cache_refuses_within_window_and_forgets_after() {
        let c = MemoryReplayCache::new();
        assert!(c.insert_sync(&N1, 1_000, 0));
        assert!(!c.insert_sync(&N1, 1_500, 10));
        assert!(c.insert_sync(&N2, 1_000, 10));
        // At expiry both are pruned; the same nonce is then fresh again (its timestamp would be
        // outside the skew window by then, so the skew check refuses it anyway).
        assert!(c.insert_sync(&N1, 3_000, 1_000));
        assert_eq!(c.len(), 1);
        assert!(!c.insert_sync(&N1, 3_000, 2_999));
    }

    #[test]
    fn replay_cache_prunes_everything_expired() {
        let c = MemoryReplayCache::new();
        for i in 0..1000u32 {
            let mut n = [0u8; NONCE_LEN];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n[0] = (i % 256) as u8;
            assert!(c.insert_sync(&n, i64::from(i) + 1, 0));
        }
        assert_eq!(c.len(), 1000);
        // Touch every shard after everything expired.
        for s in 0..SHARDS as u8 {
            let mut n = [0xFF; NONCE_LEN];
            n[0] = s;
            c.insert_sync(&n, 10_000, 5_000);
        }
        assert_eq!(c.len(), SHARDS);
    }

    #[rstest::rstest]
    #[case::now(1_000_000, 1_000_000, true)]
    #[case::edge_past(1_000_000 - MAX_SKEW_MS, 1_000_000, true)]
    #[case::edge_future(1_000_000 + MAX_SKEW_MS, 1_000_000, true)]
    #[case::past(1_000_000 - MAX_SKEW_MS - 1, 1_000_000, false)]
    #[case::future(1_000_000 + MAX_SKEW_MS + 1, 1_000_000, false)]
    #[case::min(i64::MIN, 1_000_000, false)]
    #[case::min_plus_one(i64::MIN + 1, 1_000_000, false)]
    #[case::max(i64::MAX, 1_000_000, false)]
    #[case::min_at_zero(i64::MIN, 0, false)]
    #[case::max_at_min(i64::MAX, i64::MIN, false)]
    fn skew_check_never_overflows(#[case] ts: i64, #[case] now: i64, #[case] ok: bool) {
        assert_eq!(within_skew(ts, now), ok);
    }

    #[test]
    fn memory_cache_vouches_only_from_its_creation() {
        let before = crate::now_ms();
        let c = MemoryReplayCache::new();
        assert!(c.remembers_since_ms() >= before);
        assert_eq!(
            MemoryReplayCache::remembering_since(i64::MIN).remembers_since_ms(),
            i64::MIN
        );
    }

    #[test]
    fn hex_metadata_must_be_canonical_lowercase() {
        assert!(hex_array::<2>("0a0b", "k").is_ok());
        assert_eq!(hex_array::<2>("0A0B", "k"), Err(AuthError::Malformed("k")));
        assert_eq!(hex_array::<2>("0a0", "k"), Err(AuthError::Malformed("k")));
        assert_eq!(
            hex_array::<2>("0a0b0c", "k"),
            Err(AuthError::Malformed("k"))
        );
        assert_eq!(hex_array::<2>("zz00", "k"), Err(AuthError::Malformed("k")));
    }

    #[test]
    fn messages_name_the_check() {
        assert_eq!(
            AuthError::Skew.to_string(),
            "request timestamp outside the allowed 60 s skew"
        );
        assert_eq!(AuthError::Replay.to_string(), "replayed request nonce");
        assert_eq!(AuthError::UnknownPrincipal.to_string(), "unknown principal");
        assert_eq!(AuthError::Revoked.to_string(), "principal revoked");
        assert_eq!(AuthError::BadSignature.to_string(), "bad request signature");
        assert_eq!(
            AuthError::Missing(MD_NONCE).to_string(),
            "missing x-zopp-nonce metadata"
        );
    }
}
