//! Storage for teams (issue #3): grants that carry keys, workspace invites, service principals,
//! key rotation and device exports. [`TeamStorage`] is a supertrait of [`Storage`], so every
//! backend implements it (`sqlite/teams.rs`, `postgres/teams.rs`) and `dyn Storage` offers it.
//!
//! Like the rest of the storage layer it accepts only sealed material (wrapped keys, keys sealed
//! under invite or export codes, public keys) and ids. Each mutating method is one transaction
//! that also appends the audit entry it is given. Refusals that are answers rather than failures
//! (the grantee's devices changed, a key was rotated meanwhile, an invite was used) come back as
//! outcome enums, so handlers phrase each one precisely.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use zopp_crypto::ids::{InviteId, PrincipalId, ProjectId, UserId, WorkspaceId};
use zopp_crypto::wrap::WrappedKey;

use super::{
    AuditDraft, GrantId, Metered, NewPrincipal, PrincipalRecord, Result, Storage, StorageError,
};
use crate::metrics::{DB_DURATION, DB_ERRORS};
use crate::rbac::{Role, Scope};

/// Who a grant is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GranteeRef {
    /// A user: the grant applies to all of the user's principals.
    User(UserId),
    /// One principal (a device or a service principal).
    Principal(PrincipalId),
}

/// How a principal was admitted through a workspace invite (FORMAT.md §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteAdmission {
    /// The invite redeemed.
    pub invite_id: InviteId,
    /// The invite's one-time Ed25519 public key, which signed the admission.
    pub invite_key: [u8; 32],
    /// The inviter's signature over the invite statement.
    pub invite_signature: Vec<u8>,
}

/// A principal with everything a trust-chain verifier needs.
#[derive(Clone, Debug)]
pub struct AdmissionRecord {
    /// The principal (public keys, admitter, admission signature).
    pub principal: PrincipalRecord,
    /// Set when the admission went through a workspace invite.
    pub invite: Option<InviteAdmission>,
}

/// A workspace's creator and key generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceMeta {
    /// The principal that created the workspace: the root of its admission chains.
    pub creator: PrincipalId,
    /// Current generation of the workspace key.
    pub key_epoch: u32,
}

/// A scope key wrapped to one principal, to store with a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGrantKey {
    /// The principal the key is wrapped to.
    pub principal: PrincipalId,
    /// The key's epoch (environments) or generation (workspaces, projects).
    pub key_epoch: u32,
    /// The wrapped key.
    pub wrapped_key: WrappedKey,
}

/// A grant to store, replacing a live grant of the same grantee at the same scope.
#[derive(Clone, Debug)]
pub struct NewGrant {
    /// Server-chosen id.
    pub id: GrantId,
    /// The granted scope.
    pub scope: Scope,
    /// The granted role.
    pub role: Role,
    /// Who receives it.
    pub grantee: GranteeRef,
    /// Who grants it.
    pub granted_by: PrincipalId,
    /// The scope key wrapped to every live principal of the grantee, once each.
    pub keys: Vec<NewGrantKey>,
    /// Time of the grant.
    pub now_ms: i64,
}

/// Why a change that carries keys was not applied. The caller prepared its keys against a state
/// that has moved on; it can fetch the new state and try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// The grantees' live principals are not exactly those the keys were wrapped to.
    Principals,
    /// A key was rotated: its current epoch or generation is `current`.
    KeyEpoch {
        /// The current epoch.
        current: u32,
    },
    /// The scopes or grants under a rotated scope changed.
    Subtree,
}

/// The result of [`TeamStorage::set_grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Stored; `replaced` is the grant it superseded, if any.
    Granted {
        /// The live grant of the same grantee at the same scope that was revoked.
        replaced: Option<GrantId>,
    },
    /// Not stored: see [`Stale`].
    Stale(Stale),
}

/// One live grant of a workspace, with the names a listing shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantListing {
    /// Id.
    pub id: GrantId,
    /// Scope.
    pub scope: Scope,
    /// Project name (project and environment scopes).
    pub project_name: Option<String>,
    /// Environment name (environment scopes).
    pub environment_name: Option<String>,
    /// Role.
    pub role: Role,
    /// Grantee.
    pub grantee: GranteeRef,
    /// The grantee user's email (user grants).
    pub user_email: Option<String>,
    /// The grantee principal's name (principal grants).
    pub principal_name: Option<String>,
    /// Whether the grantee principal is a service principal.
    pub service: bool,
    /// Granting principal.
    pub granted_by: PrincipalId,
    /// Grant time.
    pub created_at_ms: i64,
}

/// The result of [`TeamStorage::revoke_grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked, and its wrapped keys deleted.
    Revoked,
    /// No live grant with that id in that workspace.
    NotFound,
    /// Refused: it is the workspace's last admin grant, and nobody could manage it afterwards.
    LastAdmin,
}

/// A workspace invite to store.
#[derive(Clone, Debug)]
pub struct NewInvite {
    /// Client-chosen id (the code names it).
    pub id: InviteId,
    /// The workspace joined.
    pub workspace: WorkspaceId,
    /// Role of the workspace-level grant the joiner receives.
    pub role: Role,
    /// SHA-256 of the authenticator derived from the code's secret.
    pub auth_hash: [u8; 32],
    /// The workspace key sealed under a key derived from the code's secret.
    pub sealed_key: Vec<u8>,
    /// Generation of the sealed workspace key; must be the current one.
    pub key_epoch: u32,
    /// The one-time Ed25519 public key the code's holder signs admissions with.
    pub invite_key: [u8; 32],
    /// The inviter's signature over the invite statement.
    pub invite_signature: Vec<u8>,
    /// The inviter.
    pub created_by: PrincipalId,
    /// Creation time.
    pub now_ms: i64,
    /// Expiry time.
    pub expires_at_ms: i64,
}

/// The state of a workspace invite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteStatus {
    /// Can be redeemed.
    Pending,
    /// Redeemed.
    Used,
    /// Revoked by an admin (or by a rotation of the workspace key).
    Revoked,
    /// Past its expiry.
    Expired,
}

impl InviteStatus {
    /// Lowercase name, as listings show it.
    pub fn name(self) -> &'static str {
        match self {
            InviteStatus::Pending => "pending",
            InviteStatus::Used => "used",
            InviteStatus::Revoked => "revoked",
            InviteStatus::Expired => "expired",
        }
    }
}

/// A stored workspace invite.
#[derive(Clone, Debug)]
pub struct InviteRecord {
    /// Id.
    pub id: InviteId,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Workspace name.
    pub workspace_name: String,
    /// Role given.
    pub role: Role,
    /// SHA-256 of the code's authenticator.
    pub auth_hash: [u8; 32],
    /// The sealed workspace key (empty once used or revoked).
    pub sealed_key: Vec<u8>,
    /// Generation of the sealed key.
    pub key_epoch: u32,
    /// One-time public key.
    pub invite_key: [u8; 32],
    /// Inviter's signature over the invite statement.
    pub invite_signature: Vec<u8>,
    /// Inviter.
    pub created_by: PrincipalId,
    /// Creation time.
    pub created_at_ms: i64,
    /// Expiry time.
    pub expires_at_ms: i64,
    /// Redemption time.
    pub used_at_ms: Option<i64>,
    /// The principal that redeemed it.
    pub used_by: Option<PrincipalId>,
    /// Revocation time.
    pub revoked_at_ms: Option<i64>,
}

impl InviteRecord {
    /// The invite's state at `now_ms`.
    pub fn status(&self, now_ms: i64) -> InviteStatus {
        if self.used_at_ms.is_some() {
            InviteStatus::Used
        } else if self.revoked_at_ms.is_some() {
            InviteStatus::Revoked
        } else if self.expires_at_ms <= now_ms {
            InviteStatus::Expired
        } else {
            InviteStatus::Pending
        }
    }
}

/// Everything redeeming a workspace invite writes in one transaction: a new user and principal,
/// the principal's admission through the invite, and the user's workspace grant with its key.
#[derive(Clone, Debug)]
pub struct WorkspaceJoin {
    /// The invite redeemed.
    pub invite_id: InviteId,
    /// SHA-256 of the presented authenticator (compared in constant time).
    pub auth_hash: [u8; 32],
    /// New user id.
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    /// The new principal (admitted by the inviter).
    pub principal: NewPrincipal,
    /// How the inviter vouched for it.
    pub admission: InviteAdmission,
    /// Id of the new grant.
    pub grant_id: GrantId,
    /// The workspace key wrapped to the new principal.
    pub wrapped_key: WrappedKey,
    /// Time of the join.
    pub now_ms: i64,
}

/// The result of [`TeamStorage::join_workspace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined.
    Joined,
    /// No invite has this id and authenticator.
    NotFound,
    /// The invite is no longer pending.
    NotPending(InviteStatus),
    /// The workspace key was rotated after the invite was made.
    KeyRotated,
    /// A user already has this email.
    EmailTaken,
    /// A principal already has these keys (or this id).
    KeysTaken,
}

/// A new service principal with its one grant.
#[derive(Clone, Debug)]
pub struct NewServicePrincipal {
    /// The principal (admitted by its creator).
    pub principal: NewPrincipal,
    /// The workspace owning it.
    pub workspace: WorkspaceId,
    /// The server's share of its X25519 secret (FORMAT.md §10).
    pub server_key_share: [u8; 32],
    /// Its grant (grantee is the principal itself).
    pub grant: NewGrant,
}

/// The result of creating a service principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceOutcome {
    /// Created.
    Created,
    /// A live service principal of the workspace has this name.
    NameTaken,
    /// A principal already has these keys or this id.
    KeysTaken,
    /// Not created: see [`Stale`].
    Stale(Stale),
}

/// What revoking a principal took away.
#[derive(Clone, Debug)]
pub struct RevokedPrincipal {
    /// The principal as it was before revocation.
    pub principal: PrincipalRecord,
    /// Its own (principal-level) grants, now revoked, per workspace.
    pub revoked_grants: Vec<(WorkspaceId, GrantListing)>,
}

/// The key generations of a workspace and its live projects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyEpochs {
    /// The workspace key's generation.
    pub workspace: u32,
    /// Each live project's key generation.
    pub projects: HashMap<ProjectId, u32>,
}

/// A new key for one scope of a rotation.
#[derive(Clone, Debug)]
pub struct RotatedScope {
    /// The scope (never the server).
    pub scope: Scope,
    /// The epoch or generation the caller rotated from; must still be current.
    pub from_epoch: u32,
    /// The new key wrapped under its parent's (new) key; `None` for a workspace.
    pub wrapped_key: Option<WrappedKey>,
    /// For an environment: the old key wrapped under the new one (the epoch link).
    pub epoch_link: Option<WrappedKey>,
}

/// A key rotation of a scope and everything below it, applied in one transaction.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The rotated scope.
    pub root: Scope,
    /// Every live scope at and below the root (the root first), each with its new key.
    pub scopes: Vec<RotatedScope>,
    /// New keys of every live grant at those scopes, for every live grantee principal.
    pub grant_keys: Vec<(GrantId, NewGrantKey)>,
    /// Time of the rotation.
    pub now_ms: i64,
}

/// A live user-level grant with the key wrapped to one principal, for a new device.
#[derive(Clone, Debug)]
pub struct OwnGrantKey {
    /// The grant.
    pub grant: GrantListing,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The key's epoch or generation (the scope's current one).
    pub key_epoch: u32,
    /// The key wrapped to the principal asked about.
    pub wrapped_key: WrappedKey,
}

/// A device export to store, with the new principal it prepares.
#[derive(Clone, Debug)]
pub struct NewDeviceExport {
    /// Client-chosen id (the code names it).
    pub id: InviteId,
    /// The user getting a new device.
    pub user: UserId,
    /// The new principal, admitted by the exporting device, expiring with the export.
    pub principal: NewPrincipal,
    /// SHA-256 of the code's authenticator.
    pub auth_hash: [u8; 32],
    /// The new principal's private keys, sealed (passphrase and code secret).
    pub sealed_keys: Vec<u8>,
    /// Keys of the user's live grants wrapped to the new principal.
    pub grant_keys: Vec<(GrantId, NewGrantKey)>,
    /// Creation time.
    pub now_ms: i64,
    /// Expiry time.
    pub expires_at_ms: i64,
}

/// The result of storing a device export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportOutcome {
    /// Stored.
    Stored,
    /// A principal already has these keys or this id.
    KeysTaken,
    /// Not stored: see [`Stale`].
    Stale(Stale),
}

/// A stored device export.
#[derive(Clone, Debug)]
pub struct DeviceExportRecord {
    /// Id.
    pub id: InviteId,
    /// The new principal.
    pub principal: PrincipalRecord,
    /// SHA-256 of the code's authenticator.
    pub auth_hash: [u8; 32],
    /// The sealed private keys (empty once imported).
    pub sealed_keys: Vec<u8>,
    /// Expiry time.
    pub expires_at_ms: i64,
    /// How many times it was fetched, this one included.
    pub fetches: u32,
    /// Import completion time.
    pub completed_at_ms: Option<i64>,
}

/// Storage operations for teams. See the module documentation.
#[async_trait]
pub trait TeamStorage: Send + Sync {
    // ----- principals and grants -----

    /// Principals with their admission details (missing ids are skipped).
    async fn principal_admissions(&self, ids: &[PrincipalId]) -> Result<Vec<AdmissionRecord>>;

    /// The user with this email (ASCII case-insensitive).
    async fn user_by_email(&self, email: &str) -> Result<Option<UserId>>;

    /// The grantee's live principals at `now_ms`: not revoked, not expired.
    async fn live_principals(
        &self,
        grantee: GranteeRef,
        now_ms: i64,
    ) -> Result<Vec<PrincipalRecord>>;

    /// A live workspace's creator and key generation.
    async fn workspace_meta(&self, id: WorkspaceId) -> Result<Option<WorkspaceMeta>>;

    /// Stores a grant with its keys, replacing a live grant of the same grantee at the same
    /// scope, after checking that the keys cover exactly the grantee's live principals at the
    /// scope's current key epoch. `NotFound` when the scope is gone.
    async fn set_grant(&self, grant: NewGrant, audit: AuditDraft) -> Result<GrantOutcome>;

    /// Live grants of a workspace on live scopes, oldest first.
    async fn live_grants(&self, workspace: WorkspaceId) -> Result<Vec<GrantListing>>;

    /// Revokes a live grant and deletes its wrapped keys.
    async fn revoke_grant(
        &self,
        workspace: WorkspaceId,
        id: GrantId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<RevokeOutcome>;

    // ----- workspace invites -----

    /// Stores a workspace invite (after checking its key generation is current).
    async fn create_invite(&self, invite: NewInvite, audit: AuditDraft) -> Result<Option<Stale>>;

    /// A workspace's invites, newest first.
    async fn invites(&self, workspace: WorkspaceId) -> Result<Vec<InviteRecord>>;

    /// One invite (of a live workspace).
    async fn invite(&self, id: InviteId) -> Result<Option<InviteRecord>>;

    /// Revokes a pending invite and erases its sealed key; `false` when it is not pending.
    async fn revoke_invite(
        &self,
        workspace: WorkspaceId,
        id: InviteId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<bool>;

    /// Redeems a workspace invite for a new user (see [`WorkspaceJoin`]).
    async fn join_workspace(&self, join: WorkspaceJoin, audit: AuditDraft) -> Result<JoinOutcome>;

    // ----- service principals and revocation -----

    /// Creates a service principal with its server key share and its grant.
    async fn create_service_principal(
        &self,
        sp: NewServicePrincipal,
        audit: AuditDraft,
    ) -> Result<ServiceOutcome>;

    /// The server's key share of a live service principal (`None` once revoked).
    async fn server_key_share(&self, principal: PrincipalId) -> Result<Option<[u8; 32]>>;

    /// Revokes a principal: marks it revoked, deletes its server key share, revokes its own
    /// grants, deletes every key wrapped to it and any pending export of it. `None` when it is
    /// unknown or already revoked.
    async fn revoke_principal(
        &self,
        id: PrincipalId,
        now_ms: i64,
        audit: Vec<AuditDraft>,
    ) -> Result<Option<RevokedPrincipal>>;

    /// Principals of a user (devices), revoked ones included, oldest first.
    async fn user_principals(&self, user: UserId) -> Result<Vec<PrincipalRecord>>;

    /// Service principals of a workspace, revoked ones included, oldest first.
    async fn service_principals(&self, workspace: WorkspaceId) -> Result<Vec<PrincipalRecord>>;

    /// Renames a live principal; `Ok(false)` when the name is taken (service principals).
    async fn rename_principal(
        &self,
        id: PrincipalId,
        name: &str,
        audit: Vec<AuditDraft>,
    ) -> Result<bool>;

    // ----- rotation -----

    /// The key generations of a workspace and its live projects.
    async fn key_epochs(&self, workspace: WorkspaceId) -> Result<KeyEpochs>;

    /// Applies a rotation after checking it covers exactly the live scopes and grants below its
    /// root at their current epochs; also revokes the workspace's pending invites when the
    /// workspace key itself is rotated (they carry the old key).
    async fn rotate_keys(&self, rotation: Rotation, audit: AuditDraft) -> Result<Option<Stale>>;

    // ----- devices -----

    /// The live user-level grants of `user` with the key wrapped to `principal` at each scope's
    /// current epoch (grants whose key this principal lacks are left out).
    async fn own_grant_keys(
        &self,
        user: UserId,
        principal: PrincipalId,
    ) -> Result<Vec<OwnGrantKey>>;

    /// Stores a device export with its new principal and grant keys.
    async fn create_device_export(
        &self,
        export: NewDeviceExport,
        audit: AuditDraft,
    ) -> Result<ExportOutcome>;

    /// Looks up a device export and counts the fetch.
    async fn fetch_device_export(&self, id: InviteId) -> Result<Option<DeviceExportRecord>>;

    /// Completes the import of the export whose principal is `principal`: the principal stops
    /// expiring and the sealed keys are erased. `false` when there is no pending export.
    async fn complete_device_export(
        &self,
        principal: PrincipalId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<bool>;

    // ----- key statements (FORMAT.md §13) -----

    /// Stores signed key statements (already checked by the service); one already stored is
    /// kept as it is.
    async fn add_key_statements(&self, statements: &[KeyStatementRecord]) -> Result<()>;

    /// The key statements of `workspace` about any of `subjects` (scope ids), oldest first.
    async fn key_statements(
        &self,
        workspace: WorkspaceId,
        subjects: &[String],
    ) -> Result<Vec<KeyStatementRecord>>;
}

/// One signed key statement as stored (FORMAT.md §13): the server only keeps and returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatementRecord {
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// The principal that signed it.
    pub signer: PrincipalId,
    /// Id of the scope whose key it is about.
    pub subject: String,
    /// The recipient of a grant statement.
    pub recipient: Option<PrincipalId>,
    /// Canonical bytes.
    pub body: Vec<u8>,
    /// Signature over `body`.
    pub signature: Vec<u8>,
    /// When it was stored.
    pub created_at_ms: i64,
}

impl KeyStatementRecord {
    /// SHA-256 of body and signature: the row's key.
    pub fn hash(&self) -> [u8; 32] {
        let mut b = self.body.clone();
        b.extend_from_slice(&self.signature);
        zopp_crypto::sha256(&b)
    }
}

/// Records a storage operation's latency and failures like [`Metered`] does for [`Storage`].
pub(super) async fn timed<T>(
    backend: &'static str,
    op: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let start = Instant::now();
    let out = fut.await;
    metrics::histogram!(DB_DURATION, "backend" => backend, "op" => op)
        .record(start.elapsed().as_secs_f64());
    if let Err(StorageError::Unavailable(_) | StorageError::Corrupt(_)) = &out {
        metrics::counter!(DB_ERRORS, "backend" => backend, "op" => op).increment(1);
    }
    out
}

macro_rules! metered {
    ($self:ident, $op:ident ( $($arg:expr),* )) => {
        timed($self.inner().backend(), stringify!($op), $self.inner().$op($($arg),*)).await
    };
}

#[async_trait]
impl<S: Storage> TeamStorage for Metered<S> {
    async fn principal_admissions(&self, ids: &[PrincipalId]) -> Result<Vec<AdmissionRecord>> {
        metered!(self, principal_admissions(ids))
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<UserId>> {
        metered!(self, user_by_email(email))
    }
    async fn live_principals(
        &self,
        grantee: GranteeRef,
        now_ms: i64,
    ) -> Result<Vec<PrincipalRecord>> {
        metered!(self, live_principals(grantee, now_ms))
    }
    async fn workspace_meta(&self, id: WorkspaceId) -> Result<Option<WorkspaceMeta>> {
        metered!(self, workspace_meta(id))
    }
    async fn add_key_statements(&self, statements: &[KeyStatementRecord]) -> Result<()> {
        metered!(self, add_key_statements(statements))
    }
    async fn key_statements(
        &self,
        workspace: WorkspaceId,
        subjects: &[String],
    ) -> Result<Vec<KeyStatementRecord>> {
        metered!(self, key_statements(workspace, subjects))
    }
    async fn set_grant(&self, grant: NewGrant, audit: AuditDraft) -> Result<GrantOutcome> {
        metered!(self, set_grant(grant, audit))
    }
    async fn live_grants(&self, workspace: WorkspaceId) -> Result<Vec<GrantListing>> {
        metered!(self, live_grants(workspace))
    }
    async fn revoke_grant(
        &self,
        workspace: WorkspaceId,
        id: GrantId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<RevokeOutcome> {
        metered!(self, revoke_grant(workspace, id, now_ms, audit))
    }
    async fn create_invite(&self, invite: NewInvite, audit: AuditDraft) -> Result<Option<Stale>> {
        metered!(self, create_invite(invite, audit))
    }
    async fn invites(&self, workspace: WorkspaceId) -> Result<Vec<InviteRecord>> {
        metered!(self, invites(workspace))
    }
    async fn invite(&self, id: InviteId) -> Result<Option<InviteRecord>> {
        metered!(self, invite(id))
    }
    async fn revoke_invite(
        &self,
        workspace: WorkspaceId,
        id: InviteId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<bool> {
        metered!(self, revoke_invite(workspace, id, now_ms, audit))
    }
    async fn join_workspace(&self, join: WorkspaceJoin, audit: AuditDraft) -> Result<JoinOutcome> {
        metered!(self, join_workspace(join, audit))
    }
    async fn create_service_principal(
        &self,
        sp: NewServicePrincipal,
        audit: AuditDraft,
    ) -> Result<ServiceOutcome> {
        metered!(self, create_service_principal(sp, audit))
    }
    async fn server_key_share(&self, principal: PrincipalId) -> Result<Option<[u8; 32]>> {
        metered!(self, server_key_share(principal))
    }
    async fn revoke_principal(
        &self,
        id: PrincipalId,
        now_ms: i64,
        audit: Vec<AuditDraft>,
    ) -> Result<Option<RevokedPrincipal>> {
        metered!(self, revoke_principal(id, now_ms, audit))
    }
    async fn user_principals(&self, user: UserId) -> Result<Vec<PrincipalRecord>> {
        metered!(self, user_principals(user))
    }
    async fn service_principals(&self, workspace: WorkspaceId) -> Result<Vec<PrincipalRecord>> {
        metered!(self, service_principals(workspace))
    }
    async fn rename_principal(
        &self,
        id: PrincipalId,
        name: &str,
        audit: Vec<AuditDraft>,
    ) -> Result<bool> {
        metered!(self, rename_principal(id, name, audit))
    }
    async fn key_epochs(&self, workspace: WorkspaceId) -> Result<KeyEpochs> {
        metered!(self, key_epochs(workspace))
    }
    async fn rotate_keys(&self, rotation: Rotation, audit: AuditDraft) -> Result<Option<Stale>> {
        metered!(self, rotate_keys(rotation, audit))
    }
    async fn own_grant_keys(
        &self,
        user: UserId,
        principal: PrincipalId,
    ) -> Result<Vec<OwnGrantKey>> {
        metered!(self, own_grant_keys(user, principal))
    }
    async fn create_device_export(
        &self,
        export: NewDeviceExport,
        audit: AuditDraft,
    ) -> Result<ExportOutcome> {
        metered!(self, create_device_export(export, audit))
    }
    async fn fetch_device_export(&self, id: InviteId) -> Result<Option<DeviceExportRecord>> {
        metered!(self, fetch_device_export(id))
    }
    async fn complete_device_export(
        &self,
        principal: PrincipalId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<bool> {
        metered!(self, complete_device_export(principal, now_ms, audit))
    }
}

/// The stored `scope_kind` of a scope (1 workspace, 2 project, 3 environment).
pub fn scope_kind(scope: &Scope) -> i16 {
    match scope {
        Scope::Server | Scope::Workspace(_) => 1,
        Scope::Project(..) => 2,
        Scope::Environment(..) => 3,
    }
}

/// Checks that `keys` are exactly one key per principal in `live`, each at `epoch`: the shared
/// rule of every change that stores grant keys, so both backends refuse the same requests.
pub fn check_grant_keys(keys: &[NewGrantKey], live: &[PrincipalId], epoch: u32) -> Option<Stale> {
    // A key at another epoch than the current one means the scope was rotated meanwhile.
    if keys.iter().any(|k| k.key_epoch != epoch) {
        return Some(Stale::KeyEpoch { current: epoch });
    }
    let mut given: Vec<PrincipalId> = keys.iter().map(|k| k.principal).collect();
    given.sort();
    let mut want = live.to_vec();
    want.sort();
    want.dedup();
    (given != want).then_some(Stale::Principals)
}

/// The ids of a scope as stored in grant rows: workspace, project, environment.
pub fn scope_columns(scope: &Scope) -> (String, Option<String>, Option<String>) {
    match scope {
        Scope::Server => (String::new(), None, None),
        Scope::Workspace(w) => (w.to_string(), None, None),
        Scope::Project(w, p) => (w.to_string(), Some(p.to_string()), None),
        Scope::Environment(w, p, e) => (w.to_string(), Some(p.to_string()), Some(e.to_string())),
    }
}

/// The grantee columns of a grant row: `(user_id, principal_id)`.
pub fn grantee_columns(g: GranteeRef) -> (Option<String>, Option<String>) {
    match g {
        GranteeRef::User(u) => (Some(u.to_string()), None),
        GranteeRef::Principal(p) => (None, Some(p.to_string())),
    }
}

/// What a rotation must cover, as read from the database inside its transaction: each live
/// scope at and below the root with its current epoch, and each live grant there with the live
/// principals of its grantee.
#[derive(Clone, Debug, Default)]
pub struct RotationState {
    /// Live scopes with their current epochs or generations.
    pub scopes: Vec<(Scope, u32)>,
    /// Live grants with their grantees' live principals.
    pub grants: Vec<(GrantId, Scope, Vec<PrincipalId>)>,
}

/// Checks a rotation against the current state: the same scopes at the epochs it rotated from,
/// and one new key (at the scope's next epoch) for every live principal of every live grant.
pub fn check_rotation(rotation: &Rotation, state: &RotationState) -> Option<Stale> {
    let mut want: Vec<(String, u32)> = state.scopes.iter().map(|(s, e)| (s.label(), *e)).collect();
    let mut got: Vec<(String, u32)> = rotation
        .scopes
        .iter()
        .map(|r| (r.scope.label(), r.from_epoch))
        .collect();
    want.sort();
    got.sort();
    if want != got {
        return Some(Stale::Subtree);
    }
    let next: HashMap<String, u32> = state
        .scopes
        .iter()
        .map(|(s, e)| (s.label(), e.saturating_add(1)))
        .collect();
    let mut want_keys: Vec<(GrantId, PrincipalId, u32)> = Vec::new();
    for (id, scope, principals) in &state.grants {
        let Some(&epoch) = next.get(&scope.label()) else {
            return Some(Stale::Subtree);
        };
        want_keys.extend(principals.iter().map(|p| (*id, *p, epoch)));
    }
    let mut got_keys: Vec<(GrantId, PrincipalId, u32)> = rotation
        .grant_keys
        .iter()
        .map(|(g, k)| (*g, k.principal, k.key_epoch))
        .collect();
    want_keys.sort();
    got_keys.sort();
    (want_keys != got_keys).then_some(Stale::Principals)
}
