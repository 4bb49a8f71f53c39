//! Storage: the [`Storage`] trait every backend implements, the records it returns, and the
//! backend-independent rules (audit chaining, version checks) both backends share.
//!
//! The trait accepts only sealed types from `zopp-crypto` ([`Envelope`], [`WrappedKey`],
//! [`NameDigest`]), public keys and id newtypes, so plaintext secrets or names cannot reach the
//! database by construction. Workspace, project and environment names are plaintext on purpose:
//! they are routing labels, not secrets (docs/ARCHITECTURE.md "What the server sees").
//!
//! Each mutating method is one database transaction that also appends the audit entries it is
//! given; if an entry cannot be written the change is rolled back. Times are passed in by the
//! caller (unix milliseconds) so tests are deterministic.

pub mod copy;
pub mod leases;
pub mod leases_suite;
mod metered;
pub mod postgres;
pub mod sqlite;
pub mod suite;
pub mod teams;
pub mod teams_suite;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::envelope::{Envelope, NameDigest};
use zopp_crypto::ids::{EnvironmentId, InviteId, PrincipalId, ProjectId, UserId, WorkspaceId};
use zopp_crypto::keys::{AgreementPublic, VerifyingKey, SIGNATURE_LEN};
use zopp_crypto::sign::ZERO_HASH;
use zopp_crypto::wrap::WrappedKey;

use crate::rbac::{Grant, Role, Scope};

pub use leases::LeaseStorage;
pub use metered::Metered;
pub use teams::TeamStorage;

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A unique thing a change collided with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// A live workspace already has this name.
    WorkspaceName,
    /// The client-chosen workspace id is taken.
    WorkspaceId,
    /// A live project in the workspace already has this name.
    ProjectName,
    /// The client-chosen project id is taken.
    ProjectId,
    /// A live environment in the project already has this name.
    EnvironmentName,
    /// The client-chosen environment id is taken.
    EnvironmentId,
    /// A user with this email exists.
    Email,
    /// A principal with this signing key exists.
    PrincipalKey,
    /// Some other uniqueness rule (detail in the logs).
    Other,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conflict::WorkspaceName => "workspace name",
            Conflict::WorkspaceId => "workspace id",
            Conflict::ProjectName => "project name",
            Conflict::ProjectId => "project id",
            Conflict::EnvironmentName => "environment name",
            Conflict::EnvironmentId => "environment id",
            Conflict::Email => "email",
            Conflict::PrincipalKey => "principal signing key",
            Conflict::Other => "unique value",
        })
    }
}

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be reached, or failed while running the operation.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A uniqueness rule refused the change.
    #[error("{0} already in use")]
    AlreadyExists(Conflict),
    /// A row the operation depends on is missing (or soft-deleted).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The invite's expiry time has passed.
    #[error("invite expired")]
    InviteExpired,
    /// The invite was redeemed before.
    #[error("invite already used")]
    InviteUsed,
    /// A write's version is not exactly the head + 1.
    #[error(
        "version conflict on secret {}: current version is {current}",
        digest_prefix(name_digest)
    )]
    VersionConflict {
        /// The secret.
        name_digest: NameDigest,
        /// Its current head version (0 when it has none).
        current: u64,
    },
    /// A write's `prev_hash` differs from the stored head's hash.
    #[error(
        "previous-version hash mismatch on secret {}",
        digest_prefix(name_digest)
    )]
    PrevHashMismatch {
        /// The secret.
        name_digest: NameDigest,
    },
    /// `if_env_version` did not match.
    #[error("environment changed: now at version {current}")]
    EnvironmentChanged {
        /// The environment's current version.
        current: u64,
    },
    /// A write used a key epoch other than the environment's current one.
    #[error("environment key rotated: current key epoch is {current}")]
    KeyEpochMismatch {
        /// The environment's current key epoch.
        current: u32,
    },
    /// A point-in-time read asked for a state older than the retention limit kept.
    #[error("versions before environment version {floor} were pruned by the retention limit")]
    Pruned {
        /// The oldest environment version that can still be read.
        floor: u64,
    },
    /// Stored data failed validation on the way out (a bug or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database URL names no supported backend.
    #[error("unsupported database url '{0}': use sqlite://PATH or postgres://URL")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StorageError {
    /// Both backends use sqlx; this keeps their error mapping identical. A unique violation that
    /// slipped past a backend's own pre-checks still reads as a conflict, decode failures mean
    /// the stored data is wrong, and everything else means the database failed us.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StorageError::AlreadyExists(Conflict::Other)
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => StorageError::Corrupt(e.to_string()),
            _ => StorageError::Unavailable(Box::new(e)),
        }
    }
}

/// Parses an Ed25519 public key, remembering recent results. Decompressing the curve point is
/// the costliest step of loading a principal, and every request loads one; the mapping from
/// bytes to key never changes, so caching it changes nothing but the cost.
///
/// # Errors
/// As [`VerifyingKey::try_from_slice`].
pub fn verifying_key(bytes: &[u8]) -> std::result::Result<VerifyingKey, zopp_crypto::CryptoError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    /// Distinct keys remembered before the cache starts over (a few hundred KiB at most).
    const CAPACITY: usize = 4096;
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let Ok(arr) = <[u8; 32]>::try_from(bytes) else {
        return VerifyingKey::try_from_slice(bytes);
    };
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(k) = crate::lock(cache).get(&arr) {
        return Ok(*k);
    }
    let key = VerifyingKey::try_from_slice(bytes)?;
    let mut map = crate::lock(cache);
    if map.len() >= CAPACITY {
        map.clear();
    }
    map.insert(arr, key);
    Ok(key)
}

/// First 8 bytes of a digest in hex: enough to tell secrets apart in messages and logs.
pub fn digest_prefix(d: &NameDigest) -> String {
    hex::encode(&d.as_bytes()[..8])
}

/// Id of a grant (server-chosen).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(uuid::Uuid);

impl GrantId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
    /// Parses the hyphenated text form.
    pub fn try_parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(Self)
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantId({})", self.0.hyphenated())
    }
}

/// The calling principal and its user, as grant look-ups need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    /// The principal.
    pub principal: PrincipalId,
    /// Its user (`None` for a service principal).
    pub user: Option<UserId>,
}

/// A principal as stored (public halves only).
#[derive(Clone, Debug)]
pub struct PrincipalRecord {
    /// Id.
    pub id: PrincipalId,
    /// Owning user (`None` for a service principal).
    pub user_id: Option<UserId>,
    /// Owning workspace of a service principal.
    pub workspace_id: Option<WorkspaceId>,
    /// Owning user's email (`None` for a service principal).
    pub user_email: Option<String>,
    /// Device or service name.
    pub name: String,
    /// Ed25519 public key.
    pub signing_key: VerifyingKey,
    /// X25519 public key.
    pub agreement_key: AgreementPublic,
    /// Principal that admitted this one (`None` for a root).
    pub admitted_by: Option<PrincipalId>,
    /// Admitter's signature over this principal's keys (empty for a root).
    pub admission_signature: Vec<u8>,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<i64>,
    /// Expiry time (service principals), if any.
    pub expires_at_ms: Option<i64>,
}

/// A principal to insert.
#[derive(Clone, Debug)]
pub struct NewPrincipal {
    /// Server-chosen id.
    pub id: PrincipalId,
    /// Device or service name.
    pub name: String,
    /// Ed25519 public key.
    pub signing_key: VerifyingKey,
    /// X25519 public key.
    pub agreement_key: AgreementPublic,
    /// Principal that admitted this one.
    pub admitted_by: Option<PrincipalId>,
    /// Admitter's signature.
    pub admission_signature: Vec<u8>,
    /// Expiry time, if any.
    pub expires_at_ms: Option<i64>,
}

/// A server invite as stored: only the SHA-256 of its secret.
#[derive(Clone, Debug)]
pub struct ServerInviteRecord {
    /// Id (the first half of the token).
    pub id: InviteId,
    /// SHA-256 of the token's 32-byte secret.
    pub secret_hash: [u8; 32],
    /// Creation time.
    pub created_at_ms: i64,
    /// Expiry time.
    pub expires_at_ms: i64,
    /// Redemption time, once used.
    pub used_at_ms: Option<i64>,
}

/// Everything a join writes in one transaction.
#[derive(Clone, Debug)]
pub struct NewJoin {
    /// The invite being redeemed.
    pub invite_id: InviteId,
    /// SHA-256 of the presented secret (checked again inside the transaction).
    pub secret_hash: [u8; 32],
    /// New user id.
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    /// The new principal.
    pub principal: NewPrincipal,
    /// Time of the join.
    pub now_ms: i64,
}

/// A workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// Client-chosen id.
    pub id: WorkspaceId,
    /// Unique among live workspaces.
    pub name: String,
    /// Creation time.
    pub created_at_ms: i64,
}

/// A project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    /// Client-chosen id.
    pub id: ProjectId,
    /// Parent workspace.
    pub workspace_id: WorkspaceId,
    /// Unique among the workspace's live projects.
    pub name: String,
    /// Project key wrapped under the workspace key.
    pub wrapped_key: WrappedKey,
    /// Creation time.
    pub created_at_ms: i64,
}

/// An environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentRecord {
    /// Client-chosen id.
    pub id: EnvironmentId,
    /// Parent project.
    pub project_id: ProjectId,
    /// Grandparent workspace.
    pub workspace_id: WorkspaceId,
    /// Unique among the project's live environments.
    pub name: String,
    /// Environment key of the current epoch wrapped under the project key.
    pub wrapped_key: WrappedKey,
    /// Current key epoch (from 1).
    pub key_epoch: u32,
    /// Bumped once by every successful write.
    pub env_version: u64,
    /// Creation time.
    pub created_at_ms: i64,
    /// Retention limit: each secret keeps its newest N versions (`None`: every version, the
    /// default).
    pub keep_versions: Option<u64>,
    /// Oldest environment version whose state is complete (0: nothing was ever pruned).
    pub history_floor: u64,
}

/// What setting a retention limit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Versions pruned at once to honour the new limit.
    pub pruned: u64,
    /// The environment's history floor afterwards (see [`EnvironmentRecord::history_floor`]).
    pub history_floor: u64,
}

/// A new workspace with its creator's admin grant.
#[derive(Clone, Debug)]
pub struct NewWorkspace {
    /// Client-chosen id.
    pub id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Creating principal.
    pub created_by: PrincipalId,
    /// Creating principal's user, who receives the admin grant.
    pub creator_user: UserId,
    /// Id of the creator's grant.
    pub grant_id: GrantId,
    /// The workspace key wrapped to the creator principal (epoch 1).
    pub wrapped_key: WrappedKey,
    /// Creation time.
    pub now_ms: i64,
}

/// A new project.
#[derive(Clone, Debug)]
pub struct NewProject {
    /// Client-chosen id.
    pub id: ProjectId,
    /// Parent workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Project key wrapped under the workspace key.
    pub wrapped_key: WrappedKey,
    /// Creating principal.
    pub created_by: PrincipalId,
    /// Creation time.
    pub now_ms: i64,
}

/// A new environment (key epoch 1, version 0).
#[derive(Clone, Debug)]
pub struct NewEnvironment {
    /// Client-chosen id.
    pub id: EnvironmentId,
    /// Parent project.
    pub project_id: ProjectId,
    /// Grandparent workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Environment key (epoch 1) wrapped under the project key.
    pub wrapped_key: WrappedKey,
    /// Creating principal.
    pub created_by: PrincipalId,
    /// Creation time.
    pub now_ms: i64,
}

/// One live grant held by the caller, with the keys wrapped to the calling principal.
#[derive(Clone, Debug)]
pub struct GrantRecord {
    /// Id.
    pub id: GrantId,
    /// Scope and role.
    pub grant: Grant,
    /// Keys of this grant wrapped to the calling principal, one per key epoch.
    pub keys: Vec<GrantKeyRecord>,
}

/// A grant's scope key wrapped to one principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantKeyRecord {
    /// Epoch of the wrapped key (1 for workspace and project keys).
    pub key_epoch: u32,
    /// The wrapped key.
    pub wrapped_key: WrappedKey,
}

/// Names to resolve, top down.
#[derive(Clone, Copy, Debug)]
pub struct NamePath<'a> {
    /// Workspace name.
    pub workspace: &'a str,
    /// Project name, when resolving a project or environment.
    pub project: Option<&'a str>,
    /// Environment name, when resolving an environment.
    pub environment: Option<&'a str>,
}

/// The result of resolving a [`NamePath`]: as far as the names matched live rows, plus the
/// caller's live grants in the workspace (empty when the workspace does not exist).
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// The workspace, if a live one has the name.
    pub workspace: Option<WorkspaceRecord>,
    /// The project, if asked for and found.
    pub project: Option<ProjectRecord>,
    /// The environment, if asked for and found.
    pub environment: Option<EnvironmentRecord>,
    /// The caller's live grants in the workspace (its own and its user's).
    pub grants: Vec<GrantRecord>,
}

/// An environment key of an older epoch wrapped under the next epoch's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochLinkRecord {
    /// The older epoch.
    pub epoch: u32,
    /// EK(epoch) wrapped under EK(epoch + 1).
    pub wrapped_key: WrappedKey,
}

/// One stored secret version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersionRecord {
    /// Environment.
    pub environment_id: EnvironmentId,
    /// Digest of the secret's name.
    pub name_digest: NameDigest,
    /// Version (from 1).
    pub version: u64,
    /// Environment version the write produced.
    pub env_version: u64,
    /// Key epoch of the envelope.
    pub key_epoch: u32,
    /// Sealed payload (empty for a tombstone).
    pub envelope: Envelope,
    /// Whether this version deletes the secret.
    pub deleted: bool,
    /// Writing principal.
    pub writer: PrincipalId,
    /// Writer's signature over the version claims.
    pub signature: [u8; SIGNATURE_LEN],
    /// Hash of the previous version ([`ZERO_HASH`] for version 1).
    pub prev_hash: [u8; 32],
    /// This version's hash (what the next version's `prev_hash` must be).
    pub hash: [u8; 32],
    /// Write time.
    pub created_at_ms: i64,
}

/// One version to append, already checked by the handler (signature, sizes).
#[derive(Clone, Debug)]
pub struct NewSecretVersion {
    /// Digest of the secret's name.
    pub name_digest: NameDigest,
    /// Must be exactly head + 1.
    pub version: u64,
    /// Must be the environment's current epoch.
    pub key_epoch: u32,
    /// Sealed payload (empty for a tombstone).
    pub envelope: Envelope,
    /// Tombstone flag.
    pub deleted: bool,
    /// Writer's signature.
    pub signature: [u8; SIGNATURE_LEN],
    /// Must equal the head's hash.
    pub prev_hash: [u8; 32],
    /// The version's hash, computed by the handler with `VersionClaims::hash`.
    pub hash: [u8; 32],
}

/// An atomic batch of writes to one environment.
#[derive(Clone, Debug)]
pub struct SecretWriteBatch {
    /// Environment.
    pub environment_id: EnvironmentId,
    /// Writing principal.
    pub writer: PrincipalId,
    /// When set, the environment must still be at this version.
    pub if_env_version: Option<u64>,
    /// Versions to append (at most one per digest).
    pub writes: Vec<NewSecretVersion>,
    /// Write time.
    pub now_ms: i64,
}

/// Result of a successful batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The environment's new version.
    pub env_version: u64,
    /// Time stored on every version.
    pub created_at_ms: i64,
}

/// One secret version with its predecessor and writer, as [`Storage::secret_read`] returns it.
#[derive(Clone, Debug)]
pub struct SecretRead {
    /// The requested version.
    pub secret: SecretVersionRecord,
    /// The version before it (`None` for version 1).
    pub previous: Option<SecretVersionRecord>,
    /// The writer (`None` only if the principal row is missing, which foreign keys prevent).
    pub writer: Option<PrincipalRecord>,
}

/// Which state of an environment to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointInTime {
    /// The current state.
    Now,
    /// The newest state at or before this time (unix ms).
    AtMs(i64),
    /// The state as of this environment version.
    AtEnvVersion(u64),
}

/// The live secrets of an environment at a point in time.
#[derive(Clone, Debug, Default)]
pub struct EnvironmentState {
    /// Latest non-deleted version of each secret.
    pub versions: Vec<SecretVersionRecord>,
    /// Environment version of this state.
    pub env_version: u64,
}

/// An audit chain: one per workspace plus the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditChain {
    /// Server-level events (joins, invites).
    Server,
    /// A workspace's events.
    Workspace(WorkspaceId),
}

impl AuditChain {
    /// The stored chain key: `server` or the workspace id.
    pub fn key(&self) -> String {
        match self {
            AuditChain::Server => "server".to_string(),
            AuditChain::Workspace(w) => w.to_string(),
        }
    }
}

/// An audit entry before the storage assigns its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    /// Chain to append to.
    pub chain: AuditChain,
    /// Server time of the event.
    pub time_ms: i64,
    /// Acting principal (`None` for the server itself, e.g. `invite create`).
    pub actor: Option<PrincipalId>,
    /// Action name, e.g. `secret.write`.
    pub action: String,
    /// Scope label, e.g. `environment/<id>`.
    pub scope: String,
    /// Target, e.g. `secret/<digest hex>@<version>`; never plaintext.
    pub target: String,
    /// Full gRPC method of the request.
    pub method: String,
    /// The timestamp the actor signed.
    pub request_timestamp_ms: i64,
    /// Request nonce.
    pub nonce: Vec<u8>,
    /// SHA-256 of the request body.
    pub request_hash: Vec<u8>,
    /// The actor's request signature.
    pub signature: Vec<u8>,
    /// `ok` or a gRPC code name.
    pub result: String,
}

/// An audit entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntryRecord {
    /// Position in its chain, from 1.
    pub seq: u64,
    /// The entry's fields.
    pub draft: AuditDraft,
    /// Hash of the previous entry ([`ZERO_HASH`] for the first).
    pub prev_hash: [u8; 32],
    /// `SHA-256(prev_hash ‖ canonical entry)`.
    pub hash: [u8; 32],
}

/// Filters and paging of an audit listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Entries with `seq > after_seq`.
    pub after_seq: u64,
    /// At most this many entries.
    pub limit: u32,
    /// Only entries at or after this time.
    pub since_ms: Option<i64>,
    /// Only entries at or before this time.
    pub until_ms: Option<i64>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<PrincipalId>,
}

/// One page of an audit chain plus the chain's head.
#[derive(Clone, Debug, Default)]
pub struct AuditPage {
    /// Matching entries, oldest first.
    pub entries: Vec<AuditEntryRecord>,
    /// Seq of the newest entry in the chain (0 when empty).
    pub head_seq: u64,
    /// Hash of the newest entry ([`ZERO_HASH`] when empty).
    pub head_hash: [u8; 32],
}

/// The persistence interface of the server. Implemented by SQLite ([`sqlite::SqliteStorage`])
/// and, later, PostgreSQL; both must pass [`suite::run_all`]. The team operations (grants with
/// keys, invites, service principals, rotation) are in the supertrait [`TeamStorage`].
#[async_trait]
pub trait Storage: TeamStorage + LeaseStorage + Send + Sync + 'static {
    /// Short backend name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Checks the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    // ----- invites and principals -----

    /// Stores a new server invite and its audit entry.
    async fn create_server_invite(
        &self,
        invite: ServerInviteRecord,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Looks up a server invite by id.
    async fn server_invite(&self, id: InviteId) -> Result<Option<ServerInviteRecord>>;

    /// Redeems an invite: checks it (unknown, wrong secret → `NotFound("invite")`; expired; used),
    /// creates the user and principal, marks the invite used and appends the audit entry, all in
    /// one transaction.
    async fn join(&self, join: NewJoin, audit: AuditDraft) -> Result<()>;

    /// Loads one principal.
    async fn principal(&self, id: PrincipalId) -> Result<Option<PrincipalRecord>>;

    /// Loads several principals (missing ids are skipped), in no particular order.
    async fn principals(&self, ids: &[PrincipalId]) -> Result<Vec<PrincipalRecord>>;

    // ----- workspaces, projects, environments -----

    /// Resolves names top down and loads the caller's grants in the workspace.
    async fn resolve(&self, who: &Who, path: &NamePath<'_>) -> Result<Resolution>;

    /// [`Storage::resolve`] and, when the environment resolves, [`Storage::secret_read`] of
    /// `digest` in it, for `GetSecret`. The default runs the two; a backend can answer both in
    /// one round trip, which matters because this is the hottest call. The caller authorizes
    /// against the resolution before it returns anything of the read.
    async fn resolve_read(
        &self,
        who: &Who,
        path: &NamePath<'_>,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<(Resolution, Option<SecretRead>)> {
        let resolution = self.resolve(who, path).await?;
        let read = match &resolution.environment {
            Some(env) => self.secret_read(env.id, digest, version).await?,
            None => None,
        };
        Ok((resolution, read))
    }

    /// Live workspaces in which the caller holds any live grant, by name.
    async fn workspaces_for(&self, who: &Who) -> Result<Vec<WorkspaceRecord>>;

    /// Live projects of a workspace, by name.
    async fn projects(&self, workspace: WorkspaceId) -> Result<Vec<ProjectRecord>>;

    /// Live environments of a project, by name.
    async fn environments(&self, project: ProjectId) -> Result<Vec<EnvironmentRecord>>;

    /// Creates a workspace and its creator's admin grant (with the wrapped workspace key).
    async fn create_workspace(
        &self,
        ws: NewWorkspace,
        audit: AuditDraft,
    ) -> Result<WorkspaceRecord>;

    /// Soft-deletes a workspace and everything in it.
    async fn delete_workspace(&self, id: WorkspaceId, now_ms: i64, audit: AuditDraft)
        -> Result<()>;

    /// Creates a project in a live workspace.
    async fn create_project(&self, p: NewProject, audit: AuditDraft) -> Result<ProjectRecord>;

    /// Soft-deletes a project and its environments.
    async fn delete_project(&self, id: ProjectId, now_ms: i64, audit: AuditDraft) -> Result<()>;

    /// Creates an environment in a live project.
    async fn create_environment(
        &self,
        e: NewEnvironment,
        audit: AuditDraft,
    ) -> Result<EnvironmentRecord>;

    /// Soft-deletes an environment.
    async fn delete_environment(
        &self,
        id: EnvironmentId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Links from the environment's current epoch down to epoch 1, newest first.
    async fn epoch_links(&self, env: EnvironmentId) -> Result<Vec<EpochLinkRecord>>;

    /// The environment's current version, or `None` when it is missing or deleted.
    async fn environment_version(&self, env: EnvironmentId) -> Result<Option<u64>>;

    // ----- secrets -----

    /// One version of a secret: the head when `version` is `None`.
    async fn secret_version(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<Option<SecretVersionRecord>>;

    /// What a single-secret read returns: one version (the head when `version` is `None`), the
    /// version before it (for the client's chain check) and its writer's public keys. The default
    /// composes the simpler methods; a backend can answer it in one round trip instead, which
    /// matters because it is the hottest read.
    async fn secret_read(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
        version: Option<u64>,
    ) -> Result<Option<SecretRead>> {
        let Some(secret) = self.secret_version(env, digest, version).await? else {
            return Ok(None);
        };
        let previous = match secret.version {
            0 | 1 => None,
            v => self.secret_version(env, digest, Some(v - 1)).await?,
        };
        let writer = self.principal(secret.writer).await?;
        Ok(Some(SecretRead {
            secret,
            previous,
            writer,
        }))
    }

    /// Every version of a secret, oldest first.
    async fn secret_history(
        &self,
        env: EnvironmentId,
        digest: &NameDigest,
    ) -> Result<Vec<SecretVersionRecord>>;

    /// The live secrets of an environment at a point in time.
    ///
    /// # Errors
    /// [`StorageError::Pruned`] when the state asked for is older than the environment's
    /// history floor (the retention limit pruned versions it needs): never a partial state.
    async fn environment_state(
        &self,
        env: EnvironmentId,
        at: PointInTime,
    ) -> Result<EnvironmentState>;

    /// Appends a batch of versions atomically, checking `if_env_version`, each version against its
    /// head (see [`check_next_version`]) and the key epoch; bumps `env_version` once; appends the
    /// audit entries; and, when the environment has a retention limit, prunes the versions
    /// beyond it and raises the history floor, all in the same transaction.
    async fn write_secrets(
        &self,
        batch: SecretWriteBatch,
        audit: Vec<AuditDraft>,
    ) -> Result<WriteOutcome>;

    /// Sets (`Some(n)`) or clears (`None`: keep everything) an environment's retention limit and
    /// prunes at once what the new limit no longer keeps, with the audit entry, in one
    /// transaction.
    async fn set_retention(
        &self,
        env: EnvironmentId,
        keep_versions: Option<u64>,
        audit: AuditDraft,
    ) -> Result<RetentionOutcome>;

    // ----- audit -----

    /// Appends entries (possibly to several chains) in one transaction, in order.
    async fn append_audit(&self, entries: Vec<AuditDraft>) -> Result<Vec<AuditEntryRecord>>;

    /// Reads one page of a chain.
    async fn list_audit(&self, chain: AuditChain, query: &AuditQuery) -> Result<AuditPage>;
}

/// Opens the backend named by `url` and runs its migrations.
///
/// # Errors
/// [`StorageError::UnsupportedUrl`] for an unknown scheme; [`StorageError::Unavailable`] when
/// the database cannot be opened or migrated.
pub async fn open(url: &str) -> Result<Arc<dyn Storage>> {
    if url.starts_with("sqlite:") {
        let s = sqlite::SqliteStorage::open(url).await?;
        Ok(Arc::new(Metered::new(s)))
    } else if is_postgres_url(url) {
        let s = postgres::PgStorage::open(url).await?;
        Ok(Arc::new(Metered::new(s)))
    } else {
        Err(StorageError::UnsupportedUrl(redact_url(url)))
    }
}

/// Whether `url` names the PostgreSQL backend (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// What several replicas of one deployment must share beyond the tables: the replay cache and
/// the change feed. Only a backend that serves replicas (PostgreSQL) provides them; otherwise the
/// server keeps both in process.
pub struct SharedServices {
    /// Nonces seen by any replica.
    pub replay: Arc<dyn crate::auth::ReplayCache>,
    /// Environment changes made through any replica.
    pub feed: Arc<dyn crate::feed::ChangeFeed>,
}

/// A backend opened for `serve`.
pub struct Opened {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// Cross-replica services, when the backend has them.
    pub shared: Option<SharedServices>,
}

/// Like [`open`], and for PostgreSQL also starts the shared replay cache and the LISTEN/NOTIFY
/// change feed on the same pool. Must run inside a Tokio runtime.
///
/// # Errors
/// As [`open`].
pub async fn open_for_serving(url: &str) -> Result<Opened> {
    if is_postgres_url(url) {
        let s = postgres::PgStorage::open(url).await?;
        let shared = SharedServices {
            replay: Arc::new(postgres::replica::PgReplayCache::new(s.pool().clone())),
            feed: Arc::new(postgres::replica::PgFeed::start(s.pool().clone())),
        };
        Ok(Opened {
            storage: Arc::new(Metered::new(s)),
            shared: Some(shared),
        })
    } else {
        Ok(Opened {
            storage: open(url).await?,
            shared: None,
        })
    }
}

/// Removes a password from a database URL so it can be shown in errors and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Assigns `draft` its place after `head` (`(seq, hash)` of the chain's newest entry) and
/// computes its hash with [`AuditRecord::chain_hash`] (FORMAT.md §8). Every backend uses this,
/// so the chain a client verifies does not depend on the database.
pub fn seal_audit(draft: AuditDraft, head: Option<(u64, [u8; 32])>) -> AuditEntryRecord {
    let (prev_seq, prev_hash) = head.unwrap_or((0, ZERO_HASH));
    let seq = prev_seq + 1;
    let actor = draft.actor.map(|a| a.to_string()).unwrap_or_default();
    let hash = AuditRecord {
        seq,
        time_ms: draft.time_ms,
        actor: &actor,
        action: &draft.action,
        scope: &draft.scope,
        target: &draft.target,
        method: &draft.method,
        request_timestamp_ms: draft.request_timestamp_ms,
        nonce: &draft.nonce,
        request_hash: &draft.request_hash,
        signature: &draft.signature,
        result: &draft.result,
    }
    .chain_hash(&prev_hash);
    AuditEntryRecord {
        seq,
        draft,
        prev_hash,
        hash,
    }
}

/// The head of one secret as a write sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretHead {
    /// Latest version.
    pub version: u64,
    /// Its hash.
    pub hash: [u8; 32],
}

/// Checks that `write` follows `head` (docs/ARCHITECTURE.md "Versions"): its version is exactly
/// head + 1 (1 for a new name) and its `prev_hash` is the head's hash ([`ZERO_HASH`] for
/// version 1). Shared by every backend so they refuse the same writes with the same errors.
///
/// # Errors
/// [`StorageError::VersionConflict`] or [`StorageError::PrevHashMismatch`].
pub fn check_next_version(head: Option<SecretHead>, write: &NewSecretVersion) -> Result<()> {
    let (current, expected_prev) = match head {
        Some(h) => (h.version, h.hash),
        None => (0, ZERO_HASH),
    };
    if write.version != current + 1 {
        return Err(StorageError::VersionConflict {
            name_digest: write.name_digest,
            current,
        });
    }
    if !zopp_crypto::ct_eq(&write.prev_hash, &expected_prev) {
        return Err(StorageError::PrevHashMismatch {
            name_digest: write.name_digest,
        });
    }
    Ok(())
}

/// The scope a stored grant row describes, validated.
///
/// # Errors
/// [`StorageError::Corrupt`] when the kind and ids do not fit together.
pub fn grant_scope(
    kind: i32,
    workspace: WorkspaceId,
    project: Option<ProjectId>,
    environment: Option<EnvironmentId>,
) -> Result<Scope> {
    match (kind, project, environment) {
        (1, None, None) => Ok(Scope::Workspace(workspace)),
        (2, Some(p), None) => Ok(Scope::Project(workspace, p)),
        (3, Some(p), Some(e)) => Ok(Scope::Environment(workspace, p, e)),
        _ => Err(StorageError::Corrupt(format!(
            "grant scope kind {kind} does not match its ids"
        ))),
    }
}

/// Parses a stored role.
///
/// # Errors
/// [`StorageError::Corrupt`] for an unknown number.
pub fn stored_role(v: i32) -> Result<Role> {
    Role::try_from_i32(v).ok_or_else(|| StorageError::Corrupt(format!("unknown role {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: [u8; 32] = [7; 32];

    fn write(version: u64, prev: [u8; 32]) -> NewSecretVersion {
        NewSecretVersion {
            name_digest: NameDigest::try_from_slice(&D).expect("32 bytes"),
            version,
            key_epoch: 1,
            envelope: Envelope::from_bytes(vec![1, 1, 0]),
            deleted: false,
            signature: [0; SIGNATURE_LEN],
            prev_hash: prev,
            hash: [9; 32],
        }
    }

    #[test]
    fn first_version_needs_zero_prev_hash() {
        assert!(check_next_version(None, &write(1, ZERO_HASH)).is_ok());
        assert!(matches!(
            check_next_version(None, &write(1, [1; 32])),
            Err(StorageError::PrevHashMismatch { .. })
        ));
        assert!(matches!(
            check_next_version(None, &write(2, ZERO_HASH)),
            Err(StorageError::VersionConflict { current: 0, .. })
        ));
    }

    #[test]
    fn next_version_follows_head() {
        let head = Some(SecretHead {
            version: 3,
            hash: [5; 32],
        });
        assert!(check_next_version(head, &write(4, [5; 32])).is_ok());
        assert!(matches!(
            check_next_version(head, &write(3, [5; 32])),
            Err(StorageError::VersionConflict { current: 3, .. })
        ));
        assert!(matches!(
            check_next_version(head, &write(4, [6; 32])),
            Err(StorageError::PrevHashMismatch { .. })
        ));
    }

    #[test]
    fn version_conflict_message_names_digest_prefix_and_head() {
        let e = check_next_version(None, &write(5, ZERO_HASH)).expect_err("conflict");
        assert_eq!(
            e.to_string(),
            "version conflict on secret 0707070707070707: current version is 0"
        );
    }

    #[test]
    fn audit_chain_links_and_hashes() {
        let draft = AuditDraft {
            chain: AuditChain::Server,
            time_ms: 1,
            actor: None,
            action: "invite.create".into(),
            scope: "server".into(),
            target: "invite/x".into(),
            method: "cli".into(),
            request_timestamp_ms: 1,
            nonce: vec![],
            request_hash: vec![],
            signature: vec![],
            result: "ok".into(),
        };
        let a = seal_audit(draft.clone(), None);
        assert_eq!(a.seq, 1);
        assert_eq!(a.prev_hash, ZERO_HASH);
        let b = seal_audit(draft, Some((a.seq, a.hash)));
        assert_eq!(b.seq, 2);
        assert_eq!(b.prev_hash, a.hash);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn cached_key_parsing_agrees_with_direct_parsing() {
        let good = zopp_crypto::keys::SigningKey::from_seed(&[3; 32])
            .verifying_key()
            .to_bytes();
        for _ in 0..2 {
            assert_eq!(
                verifying_key(&good).expect("valid"),
                VerifyingKey::try_from_slice(&good).expect("valid")
            );
        }
        // The identity point is a weak key; a short slice is no key at all.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(verifying_key(&identity).is_err());
        assert!(verifying_key(&good[..31]).is_err());
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
