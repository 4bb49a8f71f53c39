//! `LookupInvite`, `Join` and `WhoAmI`.

use zopp_crypto::ids::{PrincipalId, UserId};
use zopp_crypto::keys::{AgreementPublic, VerifyingKey};
use zopp_crypto::sign::join_message;
use zopp_proto::v1::{
    JoinRequest, JoinResponse, LookupInviteRequest, LookupInviteResponse, WhoAmIRequest,
    WhoAmIResponse,
};

use super::{methods, ZoppService};
use crate::audit::action;
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::invite::InviteToken;
use crate::storage::{AuditChain, AuditDraft, Conflict, NewJoin, NewPrincipal, StorageError};
use crate::validate;

fn parse_token(text: &str) -> ServiceResult<InviteToken> {
    InviteToken::try_parse(text)
        .map_err(|_| ServiceError::InvalidArgument("malformed invite token".into()))
}

fn invite_not_found() -> ServiceError {
    ServiceError::NotFound("invite not found".into())
}

fn random_uuid_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

impl ZoppService {
    pub(super) async fn lookup_invite_rpc(
        &self,
        m: LookupInviteRequest,
    ) -> ServiceResult<LookupInviteResponse> {
        let token = parse_token(&m.token)?;
        let invite = self
            .state
            .storage
            .server_invite(token.id())
            .await?
            .ok_or_else(invite_not_found)?;
        // A wrong secret must look exactly like an unknown invite.
        if !zopp_crypto::ct_eq(&invite.secret_hash, &token.secret_hash()) {
            return Err(invite_not_found());
        }
        if invite.used_at_ms.is_some() {
            return Err(StorageError::InviteUsed.into());
        }
        if invite.expires_at_ms <= self.now_ms() {
            return Err(StorageError::InviteExpired.into());
        }
        Ok(LookupInviteResponse {
            expires_at_ms: invite.expires_at_ms,
            kind: "server".to_string(),
            workspace: String::new(),
        })
    }

    pub(super) async fn join_rpc(&self, m: JoinRequest) -> ServiceResult<JoinResponse> {
        // Surrounding whitespace as FORMAT.md §1 defines it, exactly as the client trims it
        // before hashing the token into its join signature (§6.2).
        let token_text = m
            .token
            .trim_matches(zopp_crypto::token::is_format_whitespace);
        let token = parse_token(token_text)?;
        validate::email(&m.email)?;
        validate::principal_name(&m.principal_name)?;
        let signing_key = VerifyingKey::try_from_slice(&m.signing_key).map_err(|_| {
            ServiceError::InvalidArgument("signing_key is not a valid Ed25519 public key".into())
        })?;
        let agreement_key = AgreementPublic::try_from_slice(&m.agreement_key)
            .ok()
            .filter(|k| k.is_canonical() && !k.is_low_order())
            .ok_or_else(|| {
                ServiceError::InvalidArgument(
                    "agreement_key is not a valid X25519 public key".into(),
                )
            })?;
        let token_hash = zopp_crypto::sha256(token_text.as_bytes());
        let proof = join_message(&signing_key, &agreement_key, &m.email, &token_hash);
        signing_key.verify(&proof, &m.self_signature).map_err(|_| {
            ServiceError::InvalidArgument(
                "self_signature does not verify for these keys, this email and this invite".into(),
            )
        })?;

        let now = self.now_ms();
        let user_id = UserId::from_bytes(random_uuid_bytes());
        let principal_id = PrincipalId::from_bytes(random_uuid_bytes());
        // Server invites have no inviter: the new principal is a root of its admission chain,
        // so an admission signature has nothing to vouch for and is not stored.
        let join = NewJoin {
            invite_id: token.id(),
            secret_hash: token.secret_hash(),
            user_id,
            email: m.email.clone(),
            principal: NewPrincipal {
                id: principal_id,
                name: m.principal_name.clone(),
                signing_key,
                agreement_key,
                admitted_by: None,
                admission_signature: Vec::new(),
                expires_at_ms: None,
            },
            now_ms: now,
        };
        // The proof of possession stands in for a request signature: a verifier can check it
        // with the principal's public keys, its email and this request_hash (the token hash).
        let audit = AuditDraft {
            chain: AuditChain::Server,
            time_ms: now,
            actor: Some(principal_id),
            action: action::PRINCIPAL_JOIN.to_string(),
            scope: "server".to_string(),
            target: format!("user/{user_id}"),
            method: methods::JOIN.to_string(),
            request_timestamp_ms: now,
            nonce: Vec::new(),
            request_hash: token_hash.to_vec(),
            signature: m.self_signature.clone(),
            result: "ok".to_string(),
        };
        match self.state.storage.join(join, audit).await {
            Ok(()) => {}
            Err(StorageError::NotFound(_)) => return Err(invite_not_found()),
            Err(StorageError::AlreadyExists(Conflict::Email)) => {
                return Err(ServiceError::AlreadyExists(format!(
                    "a user with email '{}' already exists",
                    m.email
                )))
            }
            Err(StorageError::AlreadyExists(Conflict::PrincipalKey)) => {
                return Err(ServiceError::AlreadyExists(
                    "these keys are already registered to another principal".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(principal = %principal_id, user = %user_id, "principal joined");
        Ok(JoinResponse {
            user_id: user_id.to_string(),
            principal_id: principal_id.to_string(),
        })
    }

    pub(super) async fn who_am_i_rpc(
        &self,
        caller: Caller,
        _m: WhoAmIRequest,
    ) -> ServiceResult<WhoAmIResponse> {
        let p = caller.principal();
        Ok(WhoAmIResponse {
            principal_id: p.id.to_string(),
            user_id: p.user_id.map(|u| u.to_string()).unwrap_or_default(),
            email: p.user_email.clone().unwrap_or_default(),
            principal_name: p.name.clone(),
        })
    }
}
