//! Workspace invites: `CreateInvite`, `ListInvites`, `RevokeInvite`, and the two
//! unauthenticated RPCs that redeem one, `LookupWorkspaceInvite` and `JoinWorkspace`.
//!
//! An invite code (`zwi_…`) never reaches the server. The inviter's client sends the SHA-256 of
//! the authenticator derived from it, the workspace key sealed under a key derived from it, and
//! the code's one-time Ed25519 key with the inviter's signature over it (FORMAT.md §6.3). The
//! joiner's client proves possession with the authenticator, opens the workspace key, wraps it
//! to its new X25519 key and has the one-time key sign its admission: the inviter vouches for
//! the new principal without being online.

use zopp_crypto::code::{invite_statement, SEALED_KEY_LEN};
use zopp_crypto::ids::{InviteId, PrincipalId, UserId};
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::sign::{admission_message, join_message};
use zopp_crypto::wrap::{ALG_XCHACHA_HKDF, FORMAT_V1};
use zopp_proto::v1::{
    CreateInviteRequest, InviteInfo, JoinResponse, JoinWorkspaceRequest, ListInvitesRequest,
    ListInvitesResponse, LookupWorkspaceInviteRequest, LookupWorkspaceInviteResponse,
    RevokeInviteRequest, ScopeRef,
};

use super::permissions::stale_error;
use super::statements::check_statements;
use super::teams::{agreement_key, parse_role, principal_info, wire_role};
use super::{methods, ZoppService};
use crate::audit::{self, action};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::invite::{DEFAULT_EXPIRES_HOURS, MAX_EXPIRES_HOURS};
use crate::rbac::{Action, Scope};
use crate::storage::teams::{
    InviteAdmission, InviteRecord, InviteStatus, JoinOutcome, NewInvite, WorkspaceJoin,
};
use crate::storage::{AuditChain, AuditDraft, GrantId, NewPrincipal, StorageError};
use crate::validate;

fn invite_info(i: &InviteRecord, now_ms: i64) -> InviteInfo {
    InviteInfo {
        id: i.id.to_string(),
        workspace: i.workspace_name.clone(),
        role: wire_role(i.role),
        created_at_ms: i.created_at_ms,
        expires_at_ms: i.expires_at_ms,
        created_by: i.created_by.to_string(),
        status: i.status(now_ms).name().to_string(),
        used_by: i.used_by.map(|p| p.to_string()).unwrap_or_default(),
    }
}

fn parse_invite_id(text: &str) -> ServiceResult<InviteId> {
    InviteId::try_parse(text).map_err(|_| {
        ServiceError::InvalidArgument(format!(
            "invite id '{}' is not valid",
            text.chars().take(64).collect::<String>()
        ))
    })
}

fn invite_not_found() -> ServiceError {
    ServiceError::NotFound("invite not found".into())
}

/// Why a known invite cannot be redeemed.
fn not_pending(status: InviteStatus) -> ServiceError {
    ServiceError::FailedPrecondition(match status {
        InviteStatus::Used => "invite already used".into(),
        InviteStatus::Revoked => "invite revoked".into(),
        InviteStatus::Expired => "invite expired".into(),
        InviteStatus::Pending => "invite pending".into(),
    })
}

/// Hours from a request: 0 means the default; the maximum is a year.
pub(super) fn expiry_hours(h: u32, default: u32, max: u32) -> ServiceResult<u32> {
    match h {
        0 => Ok(default),
        h if h > max => Err(ServiceError::InvalidArgument(format!(
            "expiry must be at most {max} hours"
        ))),
        h => Ok(h),
    }
}

impl ZoppService {
    /// The invite `id` if `auth` is its authenticator; otherwise NOT_FOUND, exactly as for an
    /// unknown id, so the answer reveals nothing about invites the caller cannot redeem.
    async fn invite_for(&self, id: &str, auth: &[u8]) -> ServiceResult<InviteRecord> {
        let id = parse_invite_id(id)?;
        let auth: [u8; 32] = validate::fixed("auth", auth)?;
        let invite = self
            .state
            .storage
            .invite(id)
            .await?
            .ok_or_else(invite_not_found)?;
        if !zopp_crypto::ct_eq(&invite.auth_hash, &zopp_crypto::sha256(&auth)) {
            return Err(invite_not_found());
        }
        Ok(invite)
    }

    pub(super) async fn create_invite_rpc(
        &self,
        caller: Caller,
        m: CreateInviteRequest,
    ) -> ServiceResult<InviteInfo> {
        let role = parse_role(m.role)?;
        let scope = ScopeRef {
            workspace: m.workspace.clone(),
            ..ScopeRef::default()
        };
        let access = self
            .access(
                &caller,
                Some(&scope),
                Action::Grant(role),
                action::WORKSPACE_INVITE_CREATE,
            )
            .await?;
        let ws = &access.r.workspace;
        if m.workspace_id != ws.id.to_string() {
            return Err(ServiceError::Aborted(format!(
                "workspace '{}' is not the one the key was sealed for; run the command again",
                ws.name
            )));
        }
        let id: InviteId = validate::client_id("invite", &m.invite_id)?;
        let hours = expiry_hours(m.expires_hours, DEFAULT_EXPIRES_HOURS, MAX_EXPIRES_HOURS)?;
        let auth_hash: [u8; 32] = validate::fixed("auth_hash", &m.auth_hash)?;
        if m.sealed_key.len() != SEALED_KEY_LEN
            || m.sealed_key[0] != FORMAT_V1
            || m.sealed_key[1] != ALG_XCHACHA_HKDF
        {
            return Err(ServiceError::InvalidArgument(format!(
                "sealed_key is not a key sealed under an invite code ({SEALED_KEY_LEN} bytes)"
            )));
        }
        let invite_key = VerifyingKey::try_from_slice(&m.invite_key).map_err(|_| {
            ServiceError::InvalidArgument("invite_key is not a valid Ed25519 public key".into())
        })?;
        // The statement must be the caller's: otherwise the chain would name an inviter that
        // never vouched for this key.
        caller
            .principal()
            .signing_key
            .verify(&invite_statement(&id, &invite_key), &m.invite_signature)
            .map_err(|_| {
                ServiceError::InvalidArgument(
                    "invite_signature is not your signature over this invite's key".into(),
                )
            })?;
        let now = self.now_ms();
        let statements = check_statements(
            ws.id,
            caller.principal_id(),
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let invite = NewInvite {
            id,
            workspace: ws.id,
            role,
            auth_hash,
            sealed_key: m.sealed_key.clone(),
            key_epoch: m.key_epoch.max(1),
            invite_key: invite_key.to_bytes(),
            invite_signature: m.invite_signature.clone(),
            created_by: caller.principal_id(),
            now_ms: now,
            expires_at_ms: now + i64::from(hours) * 3_600_000,
        };
        let entry = audit::draft(
            &caller,
            action::WORKSPACE_INVITE_CREATE,
            &access.scope,
            format!("invite/{id} {role}"),
            now,
        );
        match self.state.storage.create_invite(invite, entry).await {
            Ok(None) => {}
            Ok(Some(stale)) => return Err(stale_error(stale, &access.what)),
            Err(StorageError::AlreadyExists(_)) => {
                return Err(ServiceError::AlreadyExists(format!(
                    "invite id {id} is already in use"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.state.storage.add_key_statements(&statements).await?;
        let stored = self
            .state
            .storage
            .invite(id)
            .await?
            .ok_or_else(|| ServiceError::Internal("a new invite is not stored".into()))?;
        Ok(invite_info(&stored, now))
    }

    pub(super) async fn list_invites_rpc(
        &self,
        caller: Caller,
        m: ListInvitesRequest,
    ) -> ServiceResult<ListInvitesResponse> {
        let scope = ScopeRef {
            workspace: m.workspace,
            ..ScopeRef::default()
        };
        let access = self
            .access(
                &caller,
                Some(&scope),
                Action::ManageAccess,
                action::WORKSPACE_INVITE_LIST,
            )
            .await?;
        let now = self.now_ms();
        let invites = self.state.storage.invites(access.r.workspace.id).await?;
        Ok(ListInvitesResponse {
            invites: invites.iter().map(|i| invite_info(i, now)).collect(),
        })
    }

    pub(super) async fn revoke_invite_rpc(
        &self,
        caller: Caller,
        m: RevokeInviteRequest,
    ) -> ServiceResult<InviteInfo> {
        let scope = ScopeRef {
            workspace: m.workspace,
            ..ScopeRef::default()
        };
        let access = self
            .access(
                &caller,
                Some(&scope),
                Action::ManageAccess,
                action::WORKSPACE_INVITE_REVOKE,
            )
            .await?;
        let id = parse_invite_id(&m.invite_id)?;
        let ws = access.r.workspace.id;
        let found = || async {
            self.state
                .storage
                .invite(id)
                .await
                .map(|i| i.filter(|i| i.workspace == ws))
        };
        let Some(before) = found().await? else {
            return Err(ServiceError::NotFound(format!(
                "invite {id} not found in workspace '{}'",
                access.r.workspace.name
            )));
        };
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::WORKSPACE_INVITE_REVOKE,
            &access.scope,
            format!("invite/{id}"),
            now,
        );
        if !self.state.storage.revoke_invite(ws, id, now, entry).await? {
            return Err(ServiceError::FailedPrecondition(format!(
                "invite {id} is already {}",
                before.status(now).name()
            )));
        }
        let after = found().await?.ok_or_else(invite_not_found)?;
        Ok(invite_info(&after, now))
    }

    pub(super) async fn lookup_workspace_invite_rpc(
        &self,
        m: LookupWorkspaceInviteRequest,
    ) -> ServiceResult<LookupWorkspaceInviteResponse> {
        let invite = self.invite_for(&m.invite_id, &m.auth).await?;
        let status = invite.status(self.now_ms());
        if status != InviteStatus::Pending {
            return Err(not_pending(status));
        }
        let meta = self
            .state
            .storage
            .workspace_meta(invite.workspace)
            .await?
            .ok_or_else(invite_not_found)?;
        let chain = self
            .admission_closure(&[invite.created_by, meta.creator])
            .await?;
        Ok(LookupWorkspaceInviteResponse {
            workspace_id: invite.workspace.to_string(),
            workspace: invite.workspace_name.clone(),
            role: wire_role(invite.role),
            expires_at_ms: invite.expires_at_ms,
            sealed_key: invite.sealed_key.clone(),
            key_epoch: invite.key_epoch,
            invite_key: invite.invite_key.to_vec(),
            invite_signature: invite.invite_signature.clone(),
            inviter_id: invite.created_by.to_string(),
            principals: chain.iter().map(principal_info).collect(),
            workspace_creator_id: meta.creator.to_string(),
        })
    }

    pub(super) async fn join_workspace_rpc(
        &self,
        m: JoinWorkspaceRequest,
    ) -> ServiceResult<JoinResponse> {
        let invite = self.invite_for(&m.invite_id, &m.auth).await?;
        validate::email(&m.email)?;
        validate::principal_name(&m.principal_name)?;
        let principal_id: PrincipalId = validate::client_id("principal", &m.principal_id)?;
        let signing_key = VerifyingKey::try_from_slice(&m.signing_key).map_err(|_| {
            ServiceError::InvalidArgument("signing_key is not a valid Ed25519 public key".into())
        })?;
        let agreement_key = agreement_key(&m.agreement_key)?;
        // The join signature binds the keys, the email and this invite (FORMAT.md §6.2); the
        // token hash covers the invite id and the authenticator, never the code itself.
        let mut token = invite.id.as_bytes().to_vec();
        token.extend_from_slice(&m.auth);
        let token_hash = zopp_crypto::sha256(&token);
        signing_key
            .verify(
                &join_message(&signing_key, &agreement_key, &m.email, &token_hash),
                &m.self_signature,
            )
            .map_err(|_| {
                ServiceError::InvalidArgument(
                    "self_signature does not verify for these keys, this email and this invite"
                        .into(),
                )
            })?;
        // The admission must be signed by the invite's one-time key, which the inviter vouched
        // for: clients check this chain before wrapping keys to the new principal.
        let invite_key = VerifyingKey::try_from_slice(&invite.invite_key)
            .map_err(|_| ServiceError::Internal("stored invite key is invalid".into()))?;
        invite_key
            .verify(
                &admission_message(
                    &principal_id,
                    &signing_key,
                    &agreement_key,
                    Some(&invite.created_by),
                ),
                &m.admission_signature,
            )
            .map_err(|_| {
                ServiceError::InvalidArgument(
                    "admission_signature is not the invite key's signature over these keys".into(),
                )
            })?;
        let wrapped_key = validate::recipient_wrap("wrapped_key", &m.wrapped_key)?;
        let now = self.now_ms();
        let statements = check_statements(
            invite.workspace,
            principal_id,
            &signing_key,
            &m.statements,
            now,
        )?;
        let user_id = UserId::from_bytes(*uuid::Uuid::new_v4().as_bytes());
        let join = WorkspaceJoin {
            invite_id: invite.id,
            auth_hash: invite.auth_hash,
            user_id,
            email: m.email.clone(),
            principal: NewPrincipal {
                id: principal_id,
                name: m.principal_name.clone(),
                signing_key,
                agreement_key,
                admitted_by: Some(invite.created_by),
                admission_signature: m.admission_signature.clone(),
                expires_at_ms: None,
            },
            admission: InviteAdmission {
                invite_id: invite.id,
                invite_key: invite.invite_key,
                invite_signature: invite.invite_signature.clone(),
            },
            grant_id: GrantId::new_random(),
            wrapped_key,
            now_ms: now,
        };
        // As for server invites, the proof of possession stands in for a request signature.
        let audit = AuditDraft {
            chain: AuditChain::Workspace(invite.workspace),
            time_ms: now,
            actor: Some(principal_id),
            action: action::PRINCIPAL_JOIN.to_string(),
            scope: Scope::Workspace(invite.workspace).label(),
            target: format!("user/{user_id} invite/{} {}", invite.id, invite.role),
            method: methods::JOIN_WORKSPACE.to_string(),
            request_timestamp_ms: now,
            nonce: Vec::new(),
            request_hash: token_hash.to_vec(),
            signature: m.self_signature.clone(),
            result: "ok".to_string(),
        };
        let outcome = match self.state.storage.join_workspace(join, audit).await {
            Ok(o) => o,
            Err(StorageError::AlreadyExists(_)) => JoinOutcome::KeysTaken,
            Err(e) => return Err(e.into()),
        };
        match outcome {
            JoinOutcome::Joined => {}
            JoinOutcome::NotFound => return Err(invite_not_found()),
            JoinOutcome::NotPending(s) => return Err(not_pending(s)),
            JoinOutcome::KeyRotated => {
                return Err(ServiceError::FailedPrecondition(
                    "the workspace key was rotated after this invite was made; ask for a new \
                     invite"
                        .into(),
                ))
            }
            JoinOutcome::EmailTaken => {
                return Err(ServiceError::AlreadyExists(format!(
                    "a user with email '{}' already exists",
                    m.email
                )))
            }
            JoinOutcome::KeysTaken => {
                return Err(ServiceError::AlreadyExists(
                    "these keys or this principal id are already registered".into(),
                ))
            }
        }
        self.state.storage.add_key_statements(&statements).await?;
        tracing::info!(principal = %principal_id, user = %user_id, invite = %invite.id, "joined a workspace");
        Ok(JoinResponse {
            user_id: user_id.to_string(),
            principal_id: principal_id.to_string(),
            server_id: self.state.auth.server_id().as_bytes().to_vec(),
        })
    }
}
