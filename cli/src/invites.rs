//! Workspace invites in the SDK (FORMAT.md §6.3): creating one (the code is generated here and
//! never sent), listing and revoking them, and joining a workspace with one.
//!
//! The inviter seals the workspace key under a key derived from the code and signs the code's
//! one-time key; the joiner opens the workspace key, wraps it to its own new X25519 key, and has
//! the one-time key sign its admission. So the new principal's keys are vouched for by the
//! inviter (its chain leads back to the workspace creator) although the inviter is offline.

use rand_core::OsRng;
use tonic::{Code, Response};
use zeroize::Zeroizing;
use zopp_crypto::code::{invite_statement, OneTimeCode, INVITE_PREFIX};
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keyfile::KdfParams;
use zopp_crypto::keys::{PrincipalKeys, ScopeKind, VerifyingKey};
use zopp_crypto::sign::{admission_message, join_message};
use zopp_crypto::wrap::{wrap_to_recipient, KeyContext};
use zopp_proto::v1 as pb;

use crate::client::{Client, ServerConfig};
use crate::error::{Error, Result};
use crate::home::{Identity, LocalConfig, ZoppHome};
use crate::teams::{Role, ScopeSpec};
use crate::trust::{TrustStore, Verifier};
use crate::verify::make::{statement_role, StatementMaker};

/// Full gRPC method paths of the invite RPCs, as signed (FORMAT.md §4).
pub mod method {
    /// `CreateInvite`.
    pub const CREATE_INVITE: &str = "/zopp.v1.Zopp/CreateInvite";
    /// `ListInvites`.
    pub const LIST_INVITES: &str = "/zopp.v1.Zopp/ListInvites";
    /// `RevokeInvite`.
    pub const REVOKE_INVITE: &str = "/zopp.v1.Zopp/RevokeInvite";
}

/// A new invite: the code to hand over (shown once) and what the server recorded.
pub struct CreatedInvite {
    /// `zwi_…`: carries the secret that opens the workspace key. Give it to one person only.
    pub code: Zeroizing<String>,
    /// The invite as stored.
    pub info: pb::InviteInfo,
}

impl std::fmt::Debug for CreatedInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedInvite({}, ..)", self.info.id)
    }
}

/// Whether `code` is a workspace invite code (as opposed to a server invite token).
pub fn is_workspace_invite(code: &str) -> bool {
    code.trim().starts_with(INVITE_PREFIX)
}

impl Client {
    /// Creates a single-use invite into `workspace` with `role`, valid for `expires_hours`
    /// (0: the server's default). The workspace key goes sealed under the code.
    ///
    /// # Errors
    /// PERMISSION_DENIED without the admin role on the workspace; transport and server errors.
    pub async fn create_invite(
        &self,
        workspace: &str,
        role: Role,
        expires_hours: u32,
    ) -> Result<CreatedInvite> {
        let scope = ScopeSpec::try_new(workspace, None, None)?;
        // Only workspace admins hold the workspace key, so a refusal here means the role is
        // missing; say which role instead of talking about keys.
        let wk = self.scope_key(&scope).await.map_err(|e| match e {
            Error::Refused {
                code: Code::PermissionDenied,
                ..
            } => Error::Refused {
                code: Code::PermissionDenied,
                message: format!(
                    "inviting members to workspace '{workspace}' needs the admin role on it"
                ),
            },
            other => other,
        })?;
        let code = OneTimeCode::generate(&mut OsRng);
        let invite_key = code.signing_key().verifying_key();
        let statement = invite_statement(&code.id(), &invite_key);
        // What the invite may admit, signed: the joiner's own grant claims no more (FORMAT.md
        // §13.6), so a read invite cannot become an admin's grant.
        let statements = vec![StatementMaker::new(
            wk.workspace,
            self.identity().principal(),
            &self.identity().keys().signing,
        )
        .invite(
            &wk.context,
            wk.epoch,
            role.statement_role(),
            *code.id().as_bytes(),
            invite_key.to_bytes(),
        )];
        let req = self.signed(
            method::CREATE_INVITE,
            pb::CreateInviteRequest {
                workspace: workspace.to_owned(),
                invite_id: code.id().to_string(),
                role: role.to_proto(),
                expires_hours,
                auth_hash: code.auth_hash().to_vec(),
                sealed_key: code.seal_scope_key(&wk.key, &wk.context, &mut OsRng),
                key_epoch: wk.epoch,
                invite_key: invite_key.to_bytes().to_vec(),
                invite_signature: self.identity().keys().signing.sign(&statement).to_vec(),
                workspace_id: wk.scope_id.clone(),
                statements,
            },
        );
        let info = self
            .rpc()
            .create_invite(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| match s.code() {
                Code::Aborted => Error::Conflict(s.message().to_owned()),
                _ => self.team_error(s, Some(&scope)),
            })?;
        Ok(CreatedInvite {
            code: code.encode(INVITE_PREFIX),
            info,
        })
    }

    /// The invites of `workspace`, newest first.
    ///
    /// # Errors
    /// PERMISSION_DENIED without the admin role; transport and server errors.
    pub async fn list_invites(&self, workspace: &str) -> Result<Vec<pb::InviteInfo>> {
        let scope = ScopeSpec::try_new(workspace, None, None)?;
        let req = self.signed(
            method::LIST_INVITES,
            pb::ListInvitesRequest {
                workspace: workspace.to_owned(),
            },
        );
        self.rpc()
            .list_invites(req)
            .await
            .map(|r| r.into_inner().invites)
            .map_err(|s| self.team_error(s, Some(&scope)))
    }

    /// Revokes a pending invite of `workspace`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; FAILED_PRECONDITION when it is no longer pending; transport errors.
    pub async fn revoke_invite(&self, workspace: &str, id: &str) -> Result<pb::InviteInfo> {
        let scope = ScopeSpec::try_new(workspace, None, None)?;
        let id = zopp_crypto::ids::InviteId::try_parse(id.trim()).map_err(|_| {
            Error::InvalidInput(format!(
                "'{}' is not an invite id (as `zopp invite list` shows it)",
                id.escape_debug()
            ))
        })?;
        let req = self.signed(
            method::REVOKE_INVITE,
            pb::RevokeInviteRequest {
                workspace: workspace.to_owned(),
                invite_id: id.to_string(),
            },
        );
        self.rpc()
            .revoke_invite(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, Some(&scope)))
    }
}

/// What joining a workspace needs besides the server and the home.
pub struct WorkspaceJoinParams<'a> {
    /// The `zwi_…` code.
    pub code: &'a str,
    /// The user's email (a new user).
    pub email: &'a str,
    /// Name of this device's principal.
    pub device_name: &'a str,
    /// Passphrase protecting the key file (none = stored plain, 0600).
    pub passphrase: Option<Zeroizing<String>>,
    /// Argon2id cost when a passphrase is set.
    pub kdf: KdfParams,
}

impl std::fmt::Debug for WorkspaceJoinParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceJoinParams")
            .field("email", &self.email)
            .field("device_name", &self.device_name)
            .finish_non_exhaustive()
    }
}

/// The result of joining a workspace.
#[derive(Debug)]
pub struct JoinedWorkspace {
    /// The identity recorded.
    pub config: LocalConfig,
    /// The workspace joined.
    pub workspace: String,
    /// The role received.
    pub role: Option<Role>,
    /// Notes for the user (the workspace creator trusted on first use).
    pub notes: Vec<String>,
}

fn refused(server: &ServerConfig, s: tonic::Status) -> Error {
    if let Some(e) = server.transport_failure(&s) {
        return e;
    }
    match s.code() {
        Code::Unavailable => Error::Unreachable {
            server: server.url().to_owned(),
            detail: s.message().to_owned(),
        },
        code => Error::JoinRefused {
            code,
            message: s.message().to_owned(),
        },
    }
}

/// Redeems a workspace invite on a machine without an identity: generates this device's keys,
/// checks that the invite really comes from a member whose chain leads to the workspace's
/// creator, opens the workspace key, wraps it to the new keys, and registers a new user whose
/// admission is signed by the invite's one-time key. Never overwrites an existing identity.
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed code (before any call); [`Error::IdentityExists`];
/// [`Error::JoinRefused`] when the server refuses (unknown, used, revoked or expired invite,
/// taken email); [`Error::Untrusted`] when the invite's chain does not verify.
pub async fn join_workspace(
    server: &ServerConfig,
    home: &ZoppHome,
    params: WorkspaceJoinParams<'_>,
) -> Result<JoinedWorkspace> {
    let code = OneTimeCode::try_parse(INVITE_PREFIX, params.code)
        .map_err(|_| Error::InvalidInput("the invite code is malformed".into()))?;
    crate::client::check_join_fields(params.email, params.device_name)?;
    if home.has_identity() {
        return Err(Error::IdentityExists {
            home: home.dir().to_owned(),
        });
    }
    let auth = code.auth();
    let mut rpc = crate::client::grpc(server.channel().await?);
    crate::client::count_rpc();
    let invite = rpc
        .lookup_workspace_invite(pb::LookupWorkspaceInviteRequest {
            invite_id: code.id().to_string(),
            auth: auth.to_vec(),
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| refused(server, s))?;

    // What the server says must match what the code proves, and the inviter must have vouched
    // for this very code's key.
    let invite_key = code.signing_key();
    if invite.invite_key != invite_key.verifying_key().to_bytes() {
        return Err(Error::Untrusted {
            message: "the server's description of this invite does not match the code".into(),
            fingerprint: None,
        });
    }
    let inviter = PrincipalId::try_parse(&invite.inviter_id)
        .map_err(|_| Error::BadResponse("invalid inviter id".into()))?;
    let workspace = WorkspaceId::try_parse(&invite.workspace_id)
        .map_err(|_| Error::BadResponse("invalid workspace id".into()))?;
    let keys = PrincipalKeys::generate(&mut OsRng);
    let principal = PrincipalId::random(&mut OsRng);
    let signing_pub = keys.signing.verifying_key();
    let agreement_pub = keys.agreement.public_key();

    let described = pb::GetPrincipalsResponse {
        target_ids: vec![inviter.to_string()],
        principals: invite.principals.clone(),
        workspace_id: invite.workspace_id.clone(),
        workspace_creator_id: invite.workspace_creator_id.clone(),
    };
    let mut store = TrustStore::in_memory();
    let mut verifier = Verifier::new(&described, principal, signing_pub, &[], &mut store)?;
    let inviter_keys = verifier.verify(inviter, &mut store)?;
    inviter_keys
        .signing
        .verify(
            &invite_statement(&code.id(), &invite_key.verifying_key()),
            &invite.invite_signature,
        )
        .map_err(|_| Error::Untrusted {
            message: format!(
                "the invite is not signed by its inviter, principal {inviter} ({})",
                inviter_keys.label
            ),
            fingerprint: None,
        })?;
    let notes = verifier.notes().to_vec();

    let ws_ctx = KeyContext {
        kind: ScopeKind::Workspace,
        id: *workspace.as_bytes(),
        epoch: 1,
    };
    let wk = code
        .open_scope_key(&invite.sealed_key, &ws_ctx)
        .map_err(|_| Error::KeyChain {
            scope: format!("workspace '{}'", invite.workspace),
            reason: "the key sealed in the invite does not open with this code".into(),
        })?;
    let wrapped = wrap_to_recipient(&wk, &ws_ctx, &principal, &agreement_pub, &mut OsRng)
        .map_err(|_| Error::InvalidInput("could not wrap the workspace key".into()))?;
    // The new principal vouches for the wrap it made to itself (FORMAT.md §13.4).
    let role = statement_role(invite.role)
        .ok_or_else(|| Error::BadResponse("the invite names no role".into()))?;
    let statements = vec![
        StatementMaker::new(workspace, principal, &keys.signing).grant(
            &ws_ctx,
            invite.key_epoch.max(1),
            role,
            principal,
            wrapped.as_bytes(),
        ),
    ];
    let admission = invite_key.sign(&admission_message(
        &principal,
        &signing_pub,
        &agreement_pub,
        Some(&inviter),
    ));
    let mut token = code.id().as_bytes().to_vec();
    token.extend_from_slice(auth.as_ref());
    let self_signature = keys.signing.sign(&join_message(
        &signing_pub,
        &agreement_pub,
        params.email,
        &zopp_crypto::sha256(&token),
    ));

    home.ensure_dir()?;
    // Written before the call, as for server invites, so the key cannot be lost once the server
    // has registered it.
    home.write_key_file(
        &keys,
        params.passphrase.as_ref().map(|p| p.as_bytes()),
        params.kdf,
    )?;
    crate::client::count_rpc();
    let joined = rpc
        .join_workspace(pb::JoinWorkspaceRequest {
            invite_id: code.id().to_string(),
            auth: auth.to_vec(),
            email: params.email.to_owned(),
            principal_name: params.device_name.to_owned(),
            principal_id: principal.to_string(),
            signing_key: signing_pub.to_bytes().to_vec(),
            agreement_key: agreement_pub.to_bytes().to_vec(),
            self_signature: self_signature.to_vec(),
            admission_signature: admission.to_vec(),
            wrapped_key: wrapped.into_bytes(),
            statements,
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| refused(server, s));
    let joined = match joined {
        Ok(j) => j,
        Err(e) => {
            home.remove_key_file();
            return Err(e);
        }
    };
    let config = LocalConfig {
        server: server.url().to_owned(),
        principal_id: joined.principal_id,
        user_id: joined.user_id,
        email: params.email.to_owned(),
        principal_name: params.device_name.to_owned(),
    };
    Identity::new(config.clone(), keys).map_err(|_| {
        Error::BadResponse("the server returned invalid principal or user ids".into())
    })?;
    home.write_config(&config)?;
    if let Ok(id) = <[u8; 16]>::try_from(joined.server_id.as_slice()) {
        home.pin_server_id(zopp_crypto::ids::ServerId::from_bytes(id))?;
    }
    // The creator this invite leads to becomes the workspace's pinned root on this device.
    let mut disk = TrustStore::load(home)?;
    if let Ok(creator) = PrincipalId::try_parse(&invite.workspace_creator_id) {
        if let Some(info) = invite
            .principals
            .iter()
            .filter_map(|i| i.principal.as_ref())
            .find(|p| p.principal_id == creator.to_string())
        {
            if let Ok(key) = VerifyingKey::try_from_slice(&info.signing_key) {
                disk.pin_workspace(workspace, creator, &key);
            }
        }
    }
    disk.save()?;
    Ok(JoinedWorkspace {
        config,
        workspace: invite.workspace,
        role: Role::from_proto(invite.role),
        notes,
    })
}
