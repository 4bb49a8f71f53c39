//! Secret operations: read (verify every version's signature and chain, then open it), write
//! (append a signed version after the verified head), delete (tombstone), history and rollback.
//!
//! Names never leave the client: requests carry the HMAC digest from the environment's name key
//! (FORMAT.md §5.1). Reads trust nothing the server says about a version until its writer's
//! signature over [`VersionClaims`] (FORMAT.md §7) checks out and the envelope opens under the
//! context it claims.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use tonic::{Code, Response, Status};
use zopp_crypto::envelope::{Envelope, EnvelopeContext, NameDigest, SecretKind, SecretPayload};
use zopp_crypto::ids::EnvironmentId;
use zopp_crypto::keys::{verify_batch, VerifyingKey};
use zopp_crypto::sign::{VersionClaims, ZERO_HASH};
use zopp_proto::v1 as pb;

use crate::cache::same_chain;
use crate::chain::EnvironmentChain;
use crate::client::{method, missing, parse_principal, Client, Target};
use crate::error::{Error, Missing, Result};
use crate::scope::EnvRef;
use crate::validate::{check_name, check_value_len, NameKind};

/// Attempts for a write that keeps losing races against concurrent writers.
pub(crate) const WRITE_ATTEMPTS: u32 = 6;

/// Batches of at least this many signatures are split across the available cores: a batch of
/// 1,000 costs ~30 ms on one core, the whole budget of `zopp run` (DESIGN.md §10).
const PARALLEL_VERIFY_AT: usize = 128;

/// Who wrote a version, as the server describes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    /// Writer principal id.
    pub principal_id: String,
    /// Principal (device or service principal) name.
    pub name: String,
    /// Owning user's email; empty for service principals.
    pub email: String,
}

impl Writer {
    fn from_proto(p: &pb::PrincipalPublic) -> Self {
        Self {
            principal_id: p.principal_id.clone(),
            name: p.name.clone(),
            email: p.user_email.clone(),
        }
    }

    /// The most human label available: email, else principal name, else id.
    pub fn label(&self) -> &str {
        [&self.email, &self.name, &self.principal_id]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("unknown", String::as_str)
    }
}

/// One verified, opened version of a secret.
pub struct SecretRecord {
    /// The secret's name.
    pub name: String,
    /// Version number (1-based).
    pub version: u64,
    /// When the server stored it (unix ms).
    pub created_at_ms: i64,
    /// Environment version its write produced.
    pub env_version: u64,
    /// Who wrote it.
    pub writer: Writer,
    payload: Option<SecretPayload>,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("deleted", &self.is_deleted())
            .finish_non_exhaustive()
    }
}

impl SecretRecord {
    /// Whether this version is a deletion (tombstone).
    pub fn is_deleted(&self) -> bool {
        self.payload.is_none()
    }
    /// The decrypted payload; `None` for a tombstone.
    pub fn payload(&self) -> Option<&SecretPayload> {
        self.payload.as_ref()
    }
    /// The value; empty for a tombstone.
    ///
    /// # Security
    /// Plaintext secret: print it only where the user asked for it.
    pub fn expose_value(&self) -> &[u8] {
        self.payload.as_ref().map_or(&[], |p| p.expose_secret())
    }
    /// What kind of secret this is (`None` for a tombstone).
    pub fn kind(&self) -> Option<SecretKind> {
        self.payload.as_ref().map(SecretPayload::kind)
    }
}

/// The latest state of every live secret of an environment, verified and opened.
#[derive(Debug)]
pub struct DecryptedEnvironment {
    /// The environment id.
    pub environment: EnvironmentId,
    /// Environment version of this state.
    pub env_version: u64,
    /// Current key epoch.
    pub key_epoch: u32,
    /// Live secrets, sorted by name.
    pub secrets: Vec<SecretRecord>,
}

/// Which state of an environment to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum At {
    /// The current state.
    #[default]
    Now,
    /// The newest state at or before this time (unix ms, at least 1).
    Time(i64),
    /// The state as of this environment version (at least 1).
    EnvVersion(u64),
}

impl At {
    /// How the point is named in messages.
    pub fn describe(&self) -> String {
        match self {
            At::Now => "now".to_owned(),
            At::Time(ms) => rfc3339(*ms),
            At::EnvVersion(v) => format!("environment version {v}"),
        }
    }
}

/// The result of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The secret written.
    pub name: String,
    /// The new version.
    pub version: u64,
    /// Environment version the write produced.
    pub env_version: u64,
    /// Server time of the write (unix ms).
    pub created_at_ms: i64,
}

/// Parsed public keys of the writers a response names; each key is parsed once.
struct Writers(HashMap<String, (VerifyingKey, Writer)>);

impl Writers {
    fn new<'a>(list: impl IntoIterator<Item = &'a pb::PrincipalPublic>) -> Self {
        let mut map = HashMap::new();
        for p in list {
            // An unparsable key is left out: versions it signed then fail verification.
            if let Ok(k) = VerifyingKey::try_from_slice(&p.signing_key) {
                map.insert(p.principal_id.clone(), (k, Writer::from_proto(p)));
            }
        }
        Self(map)
    }
    fn get(&self, id: &str) -> Option<&(VerifyingKey, Writer)> {
        self.0.get(id)
    }
}

/// The claims a stored version makes, or `None` when it is malformed.
fn claims(env: EnvironmentId, v: &pb::SecretVersion) -> Option<VersionClaims<'_>> {
    Some(VersionClaims {
        environment: env,
        name_digest: NameDigest::try_from_slice(&v.name_digest).ok()?,
        version: v.version,
        key_epoch: v.key_epoch,
        deleted: v.deleted,
        envelope: &v.envelope,
        prev_hash: v.prev_hash.as_slice().try_into().ok()?,
        writer: parse_principal(&v.writer_principal_id)?,
        env_version: v.env_version,
        created_at_ms: v.created_at_ms,
    })
}

/// This machine's clock in unix ms: the time a writer signs into its versions.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether a version's signed point in history fits the state it was served in: an
/// environment version at most the state's, and for a point-in-time read at most the point
/// asked for (FORMAT.md §7). The server cannot move a version in history without breaking its
/// signature, so this is what a "state at N" or "state at T" answer must satisfy.
fn fits_point(v: &pb::SecretVersion, state_env_version: u64, at: At) -> bool {
    v.env_version >= 1
        && v.env_version <= state_env_version
        && match at {
            At::Now => true,
            At::EnvVersion(n) => v.env_version <= n,
            At::Time(ms) => v.created_at_ms <= ms.max(1),
        }
}

/// Opens a version's envelope and checks that the name inside digests to the stored digest, so
/// a server cannot file one secret's ciphertext under another's name.
fn open(chain: &EnvironmentChain, v: &pb::SecretVersion) -> Option<SecretPayload> {
    let digest = NameDigest::try_from_slice(&v.name_digest).ok()?;
    let ctx = EnvelopeContext {
        environment: chain.environment(),
        name_digest: digest,
        version: v.version,
        key_epoch: v.key_epoch,
    };
    let payload = chain
        .seal_key(v.key_epoch)?
        .open(&ctx, &Envelope::from_bytes(v.envelope.clone()))
        .ok()?;
    (chain.digest(payload.name()) == digest).then_some(payload)
}

/// A name for a secret that failed verification before its name could be trusted.
fn digest_label(v: &pb::SecretVersion) -> String {
    format!(
        "#{}",
        hex::encode(&v.name_digest[..v.name_digest.len().min(6)])
    )
}

/// Verifies one version's signature; returns its hash (the next version's `prev_hash`).
fn verify_one(
    env: EnvironmentId,
    v: &pb::SecretVersion,
    writer: Option<&pb::PrincipalPublic>,
    name: &str,
) -> Result<([u8; 32], Writer)> {
    let fail = || Error::Verification {
        name: name.to_owned(),
    };
    let c = claims(env, v).ok_or_else(fail)?;
    let w = writer
        .filter(|w| w.principal_id == v.writer_principal_id)
        .ok_or_else(fail)?;
    let key = VerifyingKey::try_from_slice(&w.signing_key).map_err(|_| fail())?;
    c.verify(&key, &v.signature).map_err(|_| fail())?;
    Ok((c.hash(&v.signature), Writer::from_proto(w)))
}

/// Verifies many signatures in one batch; on failure finds and names the first bad version.
fn verify_many(
    env: EnvironmentId,
    versions: &[pb::SecretVersion],
    writers: &Writers,
    name_of: impl Fn(usize) -> String,
) -> Result<()> {
    let all: Vec<usize> = (0..versions.len()).collect();
    verify_some(env, versions, &all, writers, name_of)
}

/// [`verify_many`] for the versions at `indices` only (the others were verified before).
fn verify_some(
    env: EnvironmentId,
    versions: &[pb::SecretVersion],
    indices: &[usize],
    writers: &Writers,
    name_of: impl Fn(usize) -> String,
) -> Result<()> {
    let mut messages = Vec::with_capacity(indices.len());
    let mut keys = Vec::with_capacity(indices.len());
    for &i in indices {
        let v = &versions[i];
        let fail = || Error::Verification { name: name_of(i) };
        let c = claims(env, v).ok_or_else(fail)?;
        let (key, _) = writers.get(&v.writer_principal_id).ok_or_else(fail)?;
        messages.push(c.message());
        keys.push(*key);
    }
    let msgs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<&[u8]> = indices
        .iter()
        .map(|&i| versions[i].signature.as_slice())
        .collect();
    if batch_verifies(&msgs, &sigs, &keys) {
        return Ok(());
    }
    for (&i, ((m, s), k)) in indices.iter().zip(msgs.iter().zip(&sigs).zip(&keys)) {
        if k.verify(m, s).is_err() {
            return Err(Error::Verification { name: name_of(i) });
        }
    }
    // Batch and single verification disagree only on malformed input; refuse it all the same.
    Err(Error::Verification {
        name: name_of(indices.first().copied().unwrap_or(0)),
    })
}

/// Batch-verifies, split into one batch per core when there are enough signatures to pay for
/// the threads.
fn batch_verifies(msgs: &[&[u8]], sigs: &[&[u8]], keys: &[VerifyingKey]) -> bool {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    if msgs.len() < PARALLEL_VERIFY_AT || threads < 2 {
        return verify_batch(msgs, sigs, keys).is_ok();
    }
    let chunk = msgs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let batches: Vec<_> = msgs
            .chunks(chunk)
            .zip(sigs.chunks(chunk))
            .zip(keys.chunks(chunk))
            .map(|((m, s), k)| scope.spawn(move || verify_batch(m, s, k).is_ok()))
            .collect();
        // Join every thread (no short-circuit), so none outlives a failure report.
        batches
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .fold(true, |all, ok| all & ok)
    })
}

/// A response that carries the environment's current key chain.
trait CarriesKeys {
    fn keys(&self) -> Option<&pb::EnvironmentKeys>;
}

impl CarriesKeys for pb::GetSecretResponse {
    fn keys(&self) -> Option<&pb::EnvironmentKeys> {
        self.keys.as_ref()
    }
}

impl CarriesKeys for pb::SecretHistoryResponse {
    fn keys(&self) -> Option<&pb::EnvironmentKeys> {
        self.keys.as_ref()
    }
}

/// A `GetSecret` call in flight.
type PendingGet =
    std::pin::Pin<Box<dyn Future<Output = Result<pb::GetSecretResponse, Status>> + Send>>;

/// The outcome of a by-name request: the keys it was made with, and the response, or `None`
/// when the secret does not exist.
struct Lookup<T> {
    chain: EnvironmentChain,
    digest: NameDigest,
    response: Option<T>,
    /// The environment's version when the server answered (what the next write follows).
    env_version: u64,
}

/// The verified head of a secret, which the next write appends to.
pub(crate) struct Head {
    pub(crate) chain: EnvironmentChain,
    pub(crate) digest: NameDigest,
    /// The environment's version when the head was read: the next write claims the one after.
    pub(crate) env_version: u64,
    /// `(version, hash, deleted)` of the newest version, if any.
    pub(crate) latest: Option<(u64, [u8; 32], bool)>,
}

/// Where a live secret's chain ends: what the next version of it must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadLink {
    /// Its name digest.
    pub(crate) digest: NameDigest,
    /// Its latest version.
    pub(crate) version: u64,
    /// That version's hash (the next version's `prev_hash`).
    pub(crate) hash: [u8; 32],
}

/// [`Client::fetch_environment`]'s result plus what a writer needs: the derived keys and the
/// head of every live secret, by name.
pub(crate) struct FetchedEnvironment {
    pub(crate) state: DecryptedEnvironment,
    pub(crate) chain: EnvironmentChain,
    pub(crate) heads: HashMap<String, HeadLink>,
}

impl Head {
    fn version(&self) -> u64 {
        self.latest.map_or(0, |(v, _, _)| v)
    }
    fn is_live(&self) -> bool {
        matches!(self.latest, Some((_, _, false)))
    }
}

impl Client {
    /// The environment's derived keys and the wrapped chain they came from: from the cache when
    /// warm (no round trip), else from one `GetEnvironment`. The flag says whether they are
    /// fresh from the server.
    async fn chain_for(
        &self,
        env: &EnvRef,
    ) -> Result<(EnvironmentChain, pb::EnvironmentKeys, bool)> {
        if let Some(keys) = self.cache().load(env) {
            match self.derive(env, &keys) {
                Ok(chain) => return Ok((chain, keys, false)),
                Err(_) => self.cache().remove(env),
            }
        }
        let keys = self.environment_keys(env).await?;
        Ok((self.derive(env, &keys)?, keys, true))
    }

    /// The digest the server knows `name` by in `env` (from the cached key chain when there is
    /// one, so usually without a round trip).
    ///
    /// # Errors
    /// Fetching or verifying the environment's key chain failed.
    pub async fn name_digest(&self, env: &EnvRef, name: &str) -> Result<NameDigest> {
        Ok(self.chain_for(env).await?.0.digest(name))
    }

    /// Adopts the key chain a response carried: caches it and derives from it. A per-secret
    /// read carries the chain without its statements (FORMAT.md §13.6): a chain not verified
    /// before is then fetched again with them.
    async fn adopt(
        &self,
        env: &EnvRef,
        keys: Option<&pb::EnvironmentKeys>,
    ) -> Result<EnvironmentChain> {
        let keys =
            keys.ok_or_else(|| Error::BadResponse("the response carries no key chain".into()))?;
        if keys.statements.is_empty() && !self.chain_was_verified(env, keys)? {
            let fresh = self.environment_keys(env).await?;
            return self.derive(env, &fresh);
        }
        let chain = self.derive(env, keys)?;
        self.cache().store(env, keys);
        Ok(chain)
    }

    /// Runs a request addressed by name digest. With a cached chain that turns out stale (the
    /// environment was deleted and recreated under the same name, so the digest key changed),
    /// refreshes the chain once and retries.
    async fn by_name<T, F, Fut>(
        &self,
        env: &EnvRef,
        name: &str,
        version: Option<u64>,
        mut call: F,
    ) -> Result<Lookup<T>>
    where
        T: CarriesKeys,
        F: FnMut(NameDigest) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let target = Target::Secret { env, name, version };
        let (mut chain, mut keys, mut fresh) = self.chain_for(env).await?;
        let mut retried = false;
        loop {
            let digest = chain.digest(name);
            match crate::client::retry_read(|| call(digest)).await {
                Ok(resp) => {
                    // Usually the response carries the very chain already derived: skip the
                    // key agreement and the cache update.
                    let env_version = resp.keys().map_or(0, |k| k.env_version);
                    if resp.keys().is_some_and(|k| same_chain(k, &keys)) {
                        return Ok(Lookup {
                            chain,
                            digest,
                            response: Some(resp),
                            env_version,
                        });
                    }
                    let current = self.adopt(env, resp.keys()).await?;
                    if current.environment() != chain.environment() {
                        if retried {
                            return Err(Error::BadResponse(
                                "the environment changed identity twice in a row".into(),
                            ));
                        }
                        retried = true;
                        fresh = true;
                        chain = current;
                        keys = resp.keys().cloned().unwrap_or_default();
                        continue;
                    }
                    return Ok(Lookup {
                        chain: current,
                        digest,
                        response: Some(resp),
                        env_version,
                    });
                }
                Err(s) if s.code() == Code::NotFound => {
                    let what = missing(s.message(), target);
                    if !matches!(
                        what,
                        Missing::Secret { .. } | Missing::Version { .. } | Missing::Other(_)
                    ) {
                        self.cache().remove(env);
                        return Err(Error::NotFound(what));
                    }
                    if !fresh && !retried {
                        // The digest came from the cache: make sure it is still the right one.
                        retried = true;
                        fresh = true;
                        keys = self.environment_keys(env).await?;
                        let current = self.derive(env, &keys)?;
                        let changed = current.environment() != chain.environment();
                        chain = current;
                        if changed {
                            continue;
                        }
                    }
                    return Ok(Lookup {
                        chain,
                        digest,
                        response: None,
                        env_version: keys.env_version,
                    });
                }
                Err(s) => return Err(self.status_error(s, target)),
            }
        }
    }

    fn get_secret_call(
        &self,
        env: &EnvRef,
        version: u64,
        include_deleted: bool,
    ) -> impl FnMut(NameDigest) -> PendingGet + '_ {
        let env = env.to_proto();
        move |digest| {
            let req = self.signed(
                method::GET_SECRET,
                pb::GetSecretRequest {
                    env: Some(env.clone()),
                    name_digest: digest.as_bytes().to_vec(),
                    version,
                    include_deleted,
                },
            );
            let mut rpc = self.rpc();
            Box::pin(async move { rpc.get_secret(req).await.map(Response::into_inner) })
        }
    }

    /// Verifies a `GetSecret` answer: the version is the one asked for, its writer signed it, and
    /// it links to the previous version the server sent along.
    fn verify_single(
        &self,
        lookup: &Lookup<pb::GetSecretResponse>,
        resp: &pb::GetSecretResponse,
        name: &str,
        version: Option<u64>,
    ) -> Result<([u8; 32], Writer)> {
        verify_answer(
            lookup.chain.environment(),
            lookup.digest,
            resp,
            name,
            version,
        )
    }

    /// The heads of `names` that exist only as deletions, which a fetch of live secrets does
    /// not show: asked for concurrently with `chain`'s digests, each verified like any other
    /// head. Names that were never written are left out.
    ///
    /// # Errors
    /// [`Error::Verification`]; transport and server errors.
    pub(crate) async fn deleted_heads(
        &self,
        env: &EnvRef,
        chain: &EnvironmentChain,
        names: &[&str],
    ) -> Result<HashMap<String, HeadLink>> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        /// Requests in flight at once: enough to hide the round trip, few enough to stay
        /// clear of the server's per-principal rate limit.
        const IN_FLIGHT: usize = 16;
        let env_id = chain.environment();
        let mut call = self.get_secret_call(env, 0, true);
        let pending: Vec<_> = names
            .iter()
            .map(|name| {
                let digest = chain.digest(name);
                (*name, digest, call(digest))
            })
            .collect();
        stream::iter(pending)
            .map(|(name, digest, fut)| async move {
                match fut.await {
                    Ok(resp) => {
                        let (hash, _) = verify_answer(env_id, digest, &resp, name, None)?;
                        let v = resp.secret.as_ref().expect("checked by verify_answer");
                        Ok(Some((
                            name.to_owned(),
                            HeadLink {
                                digest,
                                version: v.version,
                                hash,
                            },
                        )))
                    }
                    Err(s) if s.code() == Code::NotFound => Ok(None),
                    Err(s) => Err(self.status_error(
                        s,
                        Target::Secret {
                            env,
                            name,
                            version: None,
                        },
                    )),
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }
}

/// The writers of `versions`, each once, as the response describes them.
fn named_writers<'a>(
    writers: &'a [pb::PrincipalPublic],
    versions: impl Iterator<Item = &'a pb::SecretVersion>,
) -> Vec<&'a pb::PrincipalPublic> {
    let mut out: Vec<&pb::PrincipalPublic> = Vec::new();
    for v in versions {
        if out.iter().any(|w| w.principal_id == v.writer_principal_id) {
            continue;
        }
        if let Some(w) = writers
            .iter()
            .find(|w| w.principal_id == v.writer_principal_id)
        {
            out.push(w);
        }
    }
    out
}

impl Client {
    /// [`Client::vouch_writers`] for the one writer of a `GetSecret` answer.
    async fn vouch_single(
        &self,
        env: &EnvRef,
        lookup: &Lookup<pb::GetSecretResponse>,
        resp: &pb::GetSecretResponse,
    ) -> Result<()> {
        match &resp.writer {
            Some(w) => {
                self.vouch_writers(env, &lookup.chain.workspace().to_string(), &[w])
                    .await
            }
            None => Ok(()),
        }
    }
}

/// Verifies a `GetSecret` answer for `digest` in environment `env`: the version is the one
/// asked for, its writer signed it, and it links to the previous version the server sent
/// along. Returns the version's hash and writer.
fn verify_answer(
    env: EnvironmentId,
    digest: NameDigest,
    resp: &pb::GetSecretResponse,
    name: &str,
    version: Option<u64>,
) -> Result<([u8; 32], Writer)> {
    let fail = || Error::Verification {
        name: name.to_owned(),
    };
    let v = resp
        .secret
        .as_ref()
        .ok_or_else(|| Error::BadResponse("the response carries no secret".into()))?;
    if v.name_digest != digest.as_bytes() || version.is_some_and(|n| n != v.version) {
        return Err(fail());
    }
    let (hash, writer) = verify_one(env, v, resp.writer.as_ref(), name)?;
    match &resp.previous {
        Some(prev) => {
            let pc = claims(env, prev).ok_or_else(fail)?;
            if prev.version + 1 != v.version
                || prev.name_digest != v.name_digest
                || prev.env_version >= v.env_version
                || pc.hash(&prev.signature).as_slice() != v.prev_hash.as_slice()
            {
                return Err(fail());
            }
        }
        None if v.version == 1 && v.prev_hash.as_slice() != ZERO_HASH.as_slice() => {
            return Err(fail())
        }
        None if v.version == 0 => return Err(fail()),
        None => {}
    }
    Ok((hash, writer))
}

impl Client {
    /// Fetches, verifies and opens one secret (the latest version, or `version`).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the secret (or version) does not exist or is deleted;
    /// [`Error::Verification`] when it does not check out; transport and server errors.
    pub async fn get_secret(
        &self,
        env: &EnvRef,
        name: &str,
        version: Option<u64>,
    ) -> Result<SecretRecord> {
        check_name(NameKind::Secret, name)?;
        self.get_stored(env, name, version).await
    }

    /// [`Client::get_secret`] of a stored name the caller has already checked (kubeconfigs and
    /// apps are stored under names no secret can have, see `platform.rs`).
    pub(crate) async fn get_stored(
        &self,
        env: &EnvRef,
        name: &str,
        version: Option<u64>,
    ) -> Result<SecretRecord> {
        let not_found = || {
            Error::NotFound(match version {
                Some(version) => Missing::Version {
                    name: name.to_owned(),
                    version,
                },
                None => Missing::Secret {
                    environment: env.environment().to_owned(),
                    name: name.to_owned(),
                },
            })
        };
        // Pins seen before the retry's request: see `fetch_verified_at`.
        let mut snapshot: Option<crate::pins::Seen> = None;
        let (lookup, writer) = loop {
            let lookup = self
                .by_name(
                    env,
                    name,
                    version,
                    self.get_secret_call(env, version.unwrap_or(0), false),
                )
                .await?;
            let resp = lookup.response.as_ref().ok_or_else(not_found)?;
            let (_, writer) = self.verify_single(&lookup, resp, name, version)?;
            self.vouch_single(env, &lookup, resp).await?;
            let v = resp.secret.as_ref().expect("checked by verify_single");
            if version.is_none() {
                // The latest version must not be older than one this client has seen.
                let pins = self.pins(lookup.chain.environment());
                let mut seen = pins.load();
                // Only this secret's own version can be compared: the environment's version
                // moves with every other secret's writes too.
                let against = snapshot.as_ref().unwrap_or(&seen);
                if let Some(r) = against.check(u64::MAX, [(&lookup.digest, v.version)]) {
                    if snapshot.is_none() {
                        snapshot = Some(seen);
                        continue;
                    }
                    return Err(rolled_back(env, r, |_| Some(name.to_owned())));
                }
                if seen.raise(v.env_version, [(&lookup.digest, v.version)]) {
                    pins.store(&seen);
                }
            }
            break (lookup, writer);
        };
        let resp = lookup.response.as_ref().ok_or_else(not_found)?;
        let v = resp.secret.as_ref().expect("checked by verify_single");
        if v.deleted {
            return Err(not_found());
        }
        let payload = open(&lookup.chain, v).ok_or_else(|| Error::Verification {
            name: name.to_owned(),
        })?;
        if payload.name() != name {
            return Err(Error::Verification {
                name: name.to_owned(),
            });
        }
        Ok(SecretRecord {
            name: name.to_owned(),
            version: v.version,
            created_at_ms: v.created_at_ms,
            env_version: v.env_version,
            writer,
            payload: Some(payload),
        })
    }

    /// The verified head of a secret (tombstones included).
    pub(crate) async fn head(&self, env: &EnvRef, name: &str) -> Result<Head> {
        let lookup = self
            .by_name(env, name, None, self.get_secret_call(env, 0, true))
            .await?;
        let latest = match &lookup.response {
            None => None,
            Some(resp) => {
                let (hash, _) = self.verify_single(&lookup, resp, name, None)?;
                self.vouch_single(env, &lookup, resp).await?;
                let v = resp.secret.as_ref().expect("checked by verify_single");
                Some((v.version, hash, v.deleted))
            }
        };
        Ok(Head {
            chain: lookup.chain,
            digest: lookup.digest,
            env_version: lookup.env_version,
            latest,
        })
    }

    /// Appends one version after `head`: sealed under the current epoch, signed, written.
    /// Returns `None` when another writer got there first (ABORTED).
    async fn append(
        &self,
        env: &EnvRef,
        name: &str,
        head: &Head,
        payload: Option<&SecretPayload>,
    ) -> Result<Option<WriteOutcome>> {
        let chain = &head.chain;
        let version = head.version() + 1;
        let key_epoch = chain.key_epoch();
        let envelope = match payload {
            Some(p) => {
                let ctx = EnvelopeContext {
                    environment: chain.environment(),
                    name_digest: head.digest,
                    version,
                    key_epoch,
                };
                chain
                    .current_seal_key()
                    .seal(&ctx, p, &mut OsRng)
                    .into_bytes()
            }
            None => Vec::new(),
        };
        let prev_hash = head.latest.map_or(ZERO_HASH, |(_, h, _)| h);
        let env_version = head.env_version + 1;
        let created_at_ms = now_ms();
        let claims = VersionClaims {
            environment: chain.environment(),
            name_digest: head.digest,
            version,
            key_epoch,
            deleted: payload.is_none(),
            envelope: &envelope,
            prev_hash,
            writer: self.identity().principal(),
            env_version,
            created_at_ms,
        };
        let signature = claims.sign(&self.identity().keys().signing).to_vec();
        let req = self.signed(
            method::WRITE_SECRETS,
            pb::WriteSecretsRequest {
                env: Some(env.to_proto()),
                environment_id: chain.environment().to_string(),
                writes: vec![pb::SecretWrite {
                    name_digest: head.digest.as_bytes().to_vec(),
                    version,
                    key_epoch,
                    envelope,
                    deleted: payload.is_none(),
                    prev_hash: prev_hash.to_vec(),
                    signature,
                    env_version,
                    created_at_ms,
                }],
                if_env_version: 0,
            },
        );
        match self.rpc().write_secrets(req).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some(WriteOutcome {
                    name: name.to_owned(),
                    version,
                    env_version: r.env_version,
                    created_at_ms: r.created_at_ms,
                }))
            }
            Err(s) if s.code() == Code::Aborted => Ok(None),
            Err(s) => Err(self.status_error(
                s,
                Target::Secret {
                    env,
                    name,
                    version: None,
                },
            )),
        }
    }

    /// Sets a secret's value as a new version. Without `if_version`, a write that races another
    /// writer re-reads the head and tries again, so no update is lost and none is overwritten
    /// unseen; with it, the write happens only while the secret is at exactly that version
    /// (0 = does not exist yet).
    ///
    /// # Errors
    /// [`Error::Conflict`] when `if_version` does not match; validation, transport and server
    /// errors.
    pub async fn set_secret(
        &self,
        env: &EnvRef,
        name: &str,
        value: &[u8],
        if_version: Option<u64>,
    ) -> Result<WriteOutcome> {
        check_name(NameKind::Secret, name)?;
        check_value_len(value.len())?;
        let payload = SecretPayload::new(
            SecretKind::Secret,
            name.to_owned(),
            value.to_vec(),
            Vec::new(),
        );
        self.set_payload(env, name, &payload, if_version).await
    }

    /// [`Client::set_secret`] of any payload under a stored name the caller has checked.
    pub(crate) async fn set_payload(
        &self,
        env: &EnvRef,
        name: &str,
        payload: &SecretPayload,
        if_version: Option<u64>,
    ) -> Result<WriteOutcome> {
        for attempt in 0..WRITE_ATTEMPTS {
            let head = self.head(env, name).await?;
            if let Some(expected) = if_version {
                if head.version() != expected {
                    return Err(Error::Conflict(version_mismatch(
                        name,
                        head.version(),
                        expected,
                    )));
                }
            }
            match self.append(env, name, &head, Some(payload)).await? {
                Some(done) => return Ok(done),
                None if if_version.is_some() => {
                    return Err(Error::Conflict(format!(
                        "secret '{name}' changed while writing (expected version {})",
                        if_version.unwrap_or_default()
                    )))
                }
                None => backoff(attempt).await,
            }
        }
        Err(too_contended(name))
    }

    /// Deletes a secret: appends a tombstone, so history and rollback keep working.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no live secret of that name; transport and server
    /// errors.
    pub async fn delete_secret(&self, env: &EnvRef, name: &str) -> Result<WriteOutcome> {
        check_name(NameKind::Secret, name)?;
        self.delete_stored(env, name).await
    }

    /// [`Client::delete_secret`] of a stored name the caller has checked.
    pub(crate) async fn delete_stored(&self, env: &EnvRef, name: &str) -> Result<WriteOutcome> {
        for attempt in 0..WRITE_ATTEMPTS {
            let head = self.head(env, name).await?;
            if !head.is_live() {
                return Err(Error::NotFound(Missing::Secret {
                    environment: env.environment().to_owned(),
                    name: name.to_owned(),
                }));
            }
            match self.append(env, name, &head, None).await? {
                Some(done) => return Ok(done),
                None => backoff(attempt).await,
            }
        }
        Err(too_contended(name))
    }

    /// Every version of a secret, oldest first, verified as one chain and opened.
    async fn verified_history(
        &self,
        env: &EnvRef,
        name: &str,
    ) -> Result<(Head, Vec<SecretRecord>)> {
        let env_proto = env.to_proto();
        let lookup = self
            .by_name(env, name, None, |digest| {
                let req = self.signed(
                    method::SECRET_HISTORY,
                    pb::SecretHistoryRequest {
                        env: Some(env_proto.clone()),
                        name_digest: digest.as_bytes().to_vec(),
                    },
                );
                let mut rpc = self.rpc();
                async move { rpc.secret_history(req).await.map(Response::into_inner) }
            })
            .await?;
        let not_found = || {
            Error::NotFound(Missing::Secret {
                environment: env.environment().to_owned(),
                name: name.to_owned(),
            })
        };
        let resp = lookup.response.ok_or_else(not_found)?;
        if resp.versions.is_empty() {
            return Err(not_found());
        }
        let fail = || Error::Verification {
            name: name.to_owned(),
        };
        let env_id = lookup.chain.environment();
        let writers = Writers::new(&resp.writers);
        verify_many(env_id, &resp.versions, &writers, |_| name.to_owned())?;
        self.vouch_writers(
            env,
            &lookup.chain.workspace().to_string(),
            &named_writers(&resp.writers, resp.versions.iter()),
        )
        .await?;
        let mut prev = ZERO_HASH;
        let mut prev_env_version = 0;
        let mut records = Vec::with_capacity(resp.versions.len());
        // A retention limit may have pruned the oldest versions, so the history can start
        // after version 1; from there on nothing may be missing.
        let first = resp.versions[0].version.max(1);
        for (i, v) in resp.versions.iter().enumerate() {
            let c = claims(env_id, v).ok_or_else(fail)?;
            // Versions must run first, first + 1… each chained to the one before: nothing
            // dropped, reordered or spliced in. Version 1 must start a chain.
            let chained = i > 0 || v.version == 1;
            // Each write of a secret is a later point in the environment's history.
            if v.version != first + i as u64
                || v.name_digest != lookup.digest.as_bytes()
                || (chained && c.prev_hash != prev)
                || v.env_version <= prev_env_version
            {
                return Err(fail());
            }
            prev = c.hash(&v.signature);
            prev_env_version = v.env_version;
            let payload = if v.deleted {
                None
            } else {
                let p = open(&lookup.chain, v).ok_or_else(fail)?;
                if p.name() != name {
                    return Err(fail());
                }
                Some(p)
            };
            let writer = writers
                .get(&v.writer_principal_id)
                .map(|(_, w)| w.clone())
                .ok_or_else(fail)?;
            records.push(SecretRecord {
                name: name.to_owned(),
                version: v.version,
                created_at_ms: v.created_at_ms,
                env_version: v.env_version,
                writer,
                payload,
            });
        }
        let last = records.last().expect("history is not empty");
        let head = Head {
            latest: Some((last.version, prev, last.is_deleted())),
            chain: lookup.chain,
            digest: lookup.digest,
            env_version: lookup.env_version,
        };
        Ok((head, records))
    }

    /// Every version of a secret, oldest first, verified and opened (tombstones included).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Verification`]; transport and server errors.
    pub async fn secret_history(&self, env: &EnvRef, name: &str) -> Result<Vec<SecretRecord>> {
        check_name(NameKind::Secret, name)?;
        Ok(self.verified_history(env, name).await?.1)
    }

    /// Restores version `to` as a new version: its plaintext is re-sealed under the current key
    /// epoch and signed afresh (ciphertext is never copied, since its AAD binds the old version
    /// number).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown version; [`Error::InvalidInput`] when that version is
    /// a deletion; transport and server errors.
    pub async fn rollback_secret(&self, env: &EnvRef, name: &str, to: u64) -> Result<WriteOutcome> {
        check_name(NameKind::Secret, name)?;
        self.rollback_stored(env, name, to).await
    }

    /// Every version of a stored name the caller has checked, oldest first.
    pub(crate) async fn history_stored(
        &self,
        env: &EnvRef,
        name: &str,
    ) -> Result<Vec<SecretRecord>> {
        Ok(self.verified_history(env, name).await?.1)
    }

    /// [`Client::rollback_secret`] of a stored name the caller has checked.
    pub(crate) async fn rollback_stored(
        &self,
        env: &EnvRef,
        name: &str,
        to: u64,
    ) -> Result<WriteOutcome> {
        for attempt in 0..WRITE_ATTEMPTS {
            let (head, history) = self.verified_history(env, name).await?;
            let target = history.iter().find(|r| r.version == to).ok_or_else(|| {
                Error::NotFound(Missing::Version {
                    name: name.to_owned(),
                    version: to,
                })
            })?;
            let payload = target.payload().ok_or_else(|| {
                Error::InvalidInput(format!(
                    "version {to} of secret '{name}' is a deletion; pick a version with a value"
                ))
            })?;
            match self.append(env, name, &head, Some(payload)).await? {
                Some(done) => return Ok(done),
                None => backoff(attempt).await,
            }
        }
        Err(too_contended(name))
    }

    /// Fetches the latest version of every live secret in one round trip, batch-verifies the
    /// signatures and opens every envelope. Shared by `secret list`, export and run.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Verification`]; transport and server errors.
    pub async fn fetch_environment(&self, env: &EnvRef) -> Result<DecryptedEnvironment> {
        Ok(self.fetch_verified(env).await?.state)
    }

    /// [`Client::fetch_environment`] of the state at `at`: every live secret as it was then,
    /// each version's signature verified and opened with the key of its epoch (the current
    /// chain holds every earlier epoch's key).
    ///
    /// # Errors
    /// [`Error::NotFound`] with [`Missing::PointInTime`] for a state before the environment
    /// existed, after its current version, or pruned by its retention limit; as
    /// [`Client::fetch_environment`] otherwise.
    pub async fn fetch_environment_at(&self, env: &EnvRef, at: At) -> Result<DecryptedEnvironment> {
        Ok(self.fetch_verified_at(env, at).await?.state)
    }

    /// [`Client::fetch_environment`], also returning the derived keys and each live secret's
    /// head, so a bulk write can follow the read without another round trip.
    pub(crate) async fn fetch_verified(&self, env: &EnvRef) -> Result<FetchedEnvironment> {
        self.fetch_verified_at(env, At::Now).await
    }

    /// [`Client::fetch_verified`] at any point in time. Only a current read is checked against
    /// (and raises) the pins of what this client has seen: old states are old on purpose.
    pub(crate) async fn fetch_verified_at(
        &self,
        env: &EnvRef,
        at: At,
    ) -> Result<FetchedEnvironment> {
        match self.fetch_verified_once(env, at, None).await? {
            Fetch::Done(f) => Ok(f),
            // Another zopp process of this identity may have pinned a newer state while this
            // request was in flight, so an older answer is not yet proof of a rollback. Ask
            // again, judged by the pins as they were before asking: a server that really went
            // back answers the same and is refused.
            Fetch::Raced(before) => match self.fetch_verified_once(env, at, Some(before)).await? {
                Fetch::Done(f) => Ok(f),
                Fetch::Raced(_) => unreachable!("a retry with a snapshot never races"),
            },
        }
    }

    async fn fetch_verified_once(
        &self,
        env: &EnvRef,
        at: At,
        snapshot: Option<crate::pins::Seen>,
    ) -> Result<Fetch> {
        let (at_ms, at_env_version) = match at {
            At::Now => (0, 0),
            // 0 means "now" on the wire; the first millisecond is as empty as the epoch.
            At::Time(ms) => (ms.max(1), 0),
            At::EnvVersion(v) => (0, v),
        };
        let resp = crate::client::retry_read(|| {
            let req = self.signed(
                method::FETCH_ENVIRONMENT,
                pb::FetchEnvironmentRequest {
                    env: Some(env.to_proto()),
                    at_ms,
                    at_env_version,
                },
            );
            let mut rpc = self.rpc();
            async move { rpc.fetch_environment(req).await }
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| {
            if s.code() == Code::NotFound {
                if let Some(detail) = s.message().strip_prefix(POINT_IN_TIME_PREFIX) {
                    if at != At::Now {
                        return Error::NotFound(Missing::PointInTime {
                            environment: env.environment().to_owned(),
                            at: at.describe(),
                            detail: detail.to_owned(),
                        });
                    }
                }
                self.cache().remove(env);
            }
            self.status_error(s, Target::Environment(env))
        })?;
        let chain = self.adopt(env, resp.keys.as_ref()).await?;
        let env_id = chain.environment();
        let writers = Writers::new(&resp.writers);
        let name_of = |i: usize| {
            let v = &resp.secrets[i];
            open(&chain, v).map_or_else(|| digest_label(v), |p| p.name().to_owned())
        };
        // Only versions not verified by an earlier fetch need their signature checked.
        let verified = self.verified_cache(env);
        let known = verified.load();
        let mut entries = Vec::with_capacity(resp.secrets.len());
        let mut todo = Vec::new();
        for (i, v) in resp.secrets.iter().enumerate() {
            let entry = claims(env_id, v).and_then(|c| {
                let (key, _) = writers.get(&v.writer_principal_id)?;
                Some(crate::verified::entry(&c.hash(&v.signature), key))
            });
            match entry {
                Some(e) if known.contains(&e) => entries.push(e),
                Some(e) => {
                    entries.push(e);
                    todo.push(i);
                }
                // Malformed: verification reports it, by name.
                None => todo.push(i),
            }
        }
        verify_some(env_id, &resp.secrets, &todo, &writers, name_of)?;
        self.vouch_writers(
            env,
            &chain.workspace().to_string(),
            &named_writers(&resp.writers, resp.secrets.iter()),
        )
        .await?;
        verified.store(entries, &known);
        let mut secrets = Vec::with_capacity(resp.secrets.len());
        let mut heads = HashMap::with_capacity(resp.secrets.len());
        for v in &resp.secrets {
            let fail = || Error::Verification {
                name: digest_label(v),
            };
            if !fits_point(v, resp.env_version, at) {
                // Signed, but not at the point in history the server says it answers for.
                return Err(Error::Verification {
                    name: open(&chain, v).map_or_else(|| digest_label(v), |p| p.name().to_owned()),
                });
            }
            if v.deleted {
                // A tombstone is not a live secret; the server should not send one.
                return Err(fail());
            }
            let payload = open(&chain, v).ok_or_else(fail)?;
            let c = claims(env_id, v).ok_or_else(fail)?;
            heads.insert(
                payload.name().to_owned(),
                HeadLink {
                    digest: c.name_digest,
                    version: v.version,
                    hash: c.hash(&v.signature),
                },
            );
            let writer = writers
                .get(&v.writer_principal_id)
                .map(|(_, w)| w.clone())
                .ok_or_else(fail)?;
            secrets.push(SecretRecord {
                name: payload.name().to_owned(),
                version: v.version,
                created_at_ms: v.created_at_ms,
                env_version: v.env_version,
                writer,
                payload: Some(payload),
            });
        }
        secrets.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = secrets.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::Verification {
                name: w[0].name.clone(),
            });
        }
        if at == At::Now {
            let pins = self.pins(env_id);
            let mut seen = pins.load();
            let current = || heads.values().map(|h| (&h.digest, h.version));
            let against = snapshot.as_ref().unwrap_or(&seen);
            if let Some(r) = against.check(resp.env_version, current()) {
                if snapshot.is_none() {
                    return Ok(Fetch::Raced(seen));
                }
                return Err(rolled_back(env, r, |d| {
                    heads
                        .iter()
                        .find(|(_, h)| &h.digest == d)
                        .map(|(n, _)| n.clone())
                }));
            }
            if seen.raise(resp.env_version, current()) {
                pins.store(&seen);
            }
        }
        Ok(Fetch::Done(FetchedEnvironment {
            state: DecryptedEnvironment {
                environment: env_id,
                env_version: resp.env_version,
                key_epoch: chain.key_epoch(),
                secrets,
            },
            chain,
            heads,
        }))
    }
}

/// One attempt of [`Client::fetch_verified_at`].
enum Fetch {
    /// The verified environment.
    Done(FetchedEnvironment),
    /// Older than the pins read after the answer came; the pins as read then.
    Raced(crate::pins::Seen),
}

/// A unix-ms time as RFC 3339 in UTC with milliseconds (`2026-11-20T10:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// How the server starts a NOT_FOUND about a point-in-time state (server/src/service/secrets.rs).
const POINT_IN_TIME_PREFIX: &str = "point in time: ";

/// The error for a step backwards, naming the secret when `name_of` knows its digest.
fn rolled_back(
    env: &EnvRef,
    r: crate::pins::Regression,
    name_of: impl Fn(&NameDigest) -> Option<String>,
) -> Error {
    use crate::pins::Regression;
    match r {
        Regression::Secret { digest, seen, got } => Error::RolledBack {
            what: format!(
                "secret '{}'",
                name_of(&digest).unwrap_or_else(|| format!("#{}", &digest.to_hex()[..12]))
            ),
            seen,
            got,
        },
        Regression::Environment { seen, got } => Error::RolledBack {
            what: format!("environment '{}'", env.environment()),
            seen,
            got,
        },
    }
}

fn version_mismatch(name: &str, actual: u64, expected: u64) -> String {
    if actual == 0 {
        format!("secret '{name}' does not exist (expected version {expected})")
    } else {
        format!("secret '{name}' is at version {actual}, not {expected}")
    }
}

fn too_contended(name: &str) -> Error {
    Error::Conflict(format!(
        "secret '{name}' kept changing while writing; try again"
    ))
}

/// Waits a little, with jitter, before retrying a write that lost a race: concurrent writers
/// that retried in lockstep would keep colliding.
pub(crate) async fn backoff(attempt: u32) {
    let base = 10u64 << attempt.min(5);
    let jitter = OsRng.next_u64() % base;
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zopp_crypto::keys::SigningKey;

    const WRITER_SEED: [u8; 32] = [0x51; 32];
    const WRITER_ID: &str = "11111111-2222-4333-8444-555555555555";
    const ENV: [u8; 16] = [0xe0; 16];

    fn writer_public() -> pb::PrincipalPublic {
        pb::PrincipalPublic {
            principal_id: WRITER_ID.into(),
            signing_key: SigningKey::from_seed(&WRITER_SEED)
                .verifying_key()
                .to_bytes()
                .to_vec(),
            name: "laptop".into(),
            user_email: "alice@example.com".into(),
            ..Default::default()
        }
    }

    fn signed_version(version: u64, prev_hash: [u8; 32], envelope: &[u8]) -> pb::SecretVersion {
        let env = EnvironmentId::from_bytes(ENV);
        let mut v = pb::SecretVersion {
            name_digest: vec![0xd1; 32],
            version,
            key_epoch: 1,
            envelope: envelope.to_vec(),
            writer_principal_id: WRITER_ID.into(),
            prev_hash: prev_hash.to_vec(),
            ..Default::default()
        };
        let sig = claims(env, &v)
            .expect("well-formed")
            .sign(&SigningKey::from_seed(&WRITER_SEED));
        v.signature = sig.to_vec();
        v
    }

    #[test]
    fn batch_verification_names_the_bad_version() {
        let env = EnvironmentId::from_bytes(ENV);
        let writers = Writers::new(&[writer_public()]);
        let mut vs: Vec<_> = (1..=5)
            .map(|i| signed_version(i, ZERO_HASH, &[i as u8; 40]))
            .collect();
        verify_many(env, &vs, &writers, |i| format!("S{i}")).expect("all good");
        vs[3].envelope[0] ^= 1;
        let err = verify_many(env, &vs, &writers, |i| format!("S{i}")).expect_err("tampered");
        assert_eq!(err.to_string(), "secret 'S3' failed verification");
        // Versions by an unknown writer fail too.
        let err = verify_many(env, &vs[..1], &Writers::new(&[]), |_| "A".into())
            .expect_err("no writer key");
        assert!(matches!(err, Error::Verification { .. }));
    }

    #[test]
    fn single_verification_checks_the_writer_and_returns_the_chain_hash() {
        let env = EnvironmentId::from_bytes(ENV);
        let v = signed_version(1, ZERO_HASH, b"x");
        let (hash, writer) = verify_one(env, &v, Some(&writer_public()), "A").expect("valid");
        assert_eq!(writer.label(), "alice@example.com");
        assert_eq!(hash, claims(env, &v).expect("claims").hash(&v.signature));
        // The next version must chain to that hash, and the writer named must be the signer.
        let next = signed_version(2, hash, b"y");
        verify_one(env, &next, Some(&writer_public()), "A").expect("valid");
        let mut other = writer_public();
        other.principal_id = "99999999-2222-4333-8444-555555555555".into();
        assert!(verify_one(env, &next, Some(&other), "A").is_err());
        // Another environment id breaks the signature.
        let elsewhere = EnvironmentId::from_bytes([0xe1; 16]);
        assert!(verify_one(elsewhere, &next, Some(&writer_public()), "A").is_err());
    }

    #[test]
    fn writer_labels_fall_back() {
        let mut w = Writer {
            principal_id: "p".into(),
            name: "ci".into(),
            email: String::new(),
        };
        assert_eq!(w.label(), "ci");
        w.name.clear();
        assert_eq!(w.label(), "p");
    }
}
