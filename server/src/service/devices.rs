//! More devices for one user: `ListGrantKeys`, `ExportPrincipal`, `ImportPrincipal` and
//! `CompleteImport`.
//!
//! The exporting device generates the new device's keys, admits them with its own signature,
//! re-wraps every key of its user's grants to them, and seals their private half under the user's
//! passphrase and the export code (FORMAT.md §12). The server stores that sealed copy without
//! being able to open it (the code's secret never reaches it), hands it to whoever proves
//! possession of the code, and erases it once the new device confirms with a signed call.

use zopp_crypto::ids::{InviteId, PrincipalId};
use zopp_crypto::keyfile::ALG_ARGON2ID_XCHACHA;
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::sign::admission_message;
use zopp_crypto::wrap::FORMAT_V1;
use zopp_proto::v1::{
    CompleteImportRequest, ExportPrincipalRequest, ExportPrincipalResponse, ImportPrincipalRequest,
    ImportPrincipalResponse, ListGrantKeysRequest, ListGrantKeysResponse, OwnGrantKey,
    PrincipalInfo,
};

use super::permissions::stale_error;
use super::statements::check_statements_any_workspace;
use super::teams::{agreement_key, grant_keys, permission, principal_info};
use super::workspace_invites::expiry_hours;
use super::ZoppService;
use crate::audit::{self, action};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::Scope;
use crate::storage::teams::{ExportOutcome, NewDeviceExport};
use crate::storage::{GrantId, NewPrincipal, StorageError};
use crate::validate;

/// Default lifetime of a device export, in hours.
pub const DEFAULT_EXPORT_HOURS: u32 = 24;
/// Longest lifetime of a device export: a week.
pub const MAX_EXPORT_HOURS: u32 = 7 * 24;
/// Fetches allowed per export: enough for typos in the passphrase, few enough that a copied
/// code cannot be tried forever.
pub const MAX_EXPORT_FETCHES: u32 = 10;
/// Length of a sealed key file (FORMAT.md §9): header 54, keys 64, tag 16.
const SEALED_KEY_FILE_LEN: usize = 134;

fn export_not_found() -> ServiceError {
    ServiceError::NotFound("device export not found".into())
}

impl ZoppService {
    fn device_user(&self, caller: &Caller) -> ServiceResult<zopp_crypto::ids::UserId> {
        caller.user_id().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "service principals have no devices; create another service principal instead"
                    .into(),
            )
        })
    }

    pub(super) async fn list_grant_keys_rpc(
        &self,
        caller: Caller,
        _m: ListGrantKeysRequest,
    ) -> ServiceResult<ListGrantKeysResponse> {
        let user = self.device_user(&caller)?;
        let own = self
            .state
            .storage
            .own_grant_keys(user, caller.principal_id())
            .await?;
        let names = self.state.storage.workspaces_for(&caller.who()).await?;
        Ok(ListGrantKeysResponse {
            keys: own
                .iter()
                .map(|k| {
                    let ws_name = names
                        .iter()
                        .find(|w| w.id == k.workspace)
                        .map(|w| w.name.as_str())
                        .unwrap_or_default();
                    OwnGrantKey {
                        grant: Some(permission(&k.grant, ws_name)),
                        workspace_id: k.workspace.to_string(),
                        key_epoch: k.key_epoch,
                        wrapped_key: k.wrapped_key.as_bytes().to_vec(),
                    }
                })
                .collect(),
        })
    }

    pub(super) async fn export_principal_rpc(
        &self,
        caller: Caller,
        m: ExportPrincipalRequest,
    ) -> ServiceResult<ExportPrincipalResponse> {
        let user = self.device_user(&caller)?;
        let export_id: InviteId = validate::client_id("export", &m.export_id)?;
        let auth_hash: [u8; 32] = validate::fixed("auth_hash", &m.auth_hash)?;
        if m.sealed_keys.len() != SEALED_KEY_FILE_LEN
            || m.sealed_keys[0] != FORMAT_V1
            || m.sealed_keys[1] != ALG_ARGON2ID_XCHACHA
        {
            return Err(ServiceError::InvalidArgument(
                "sealed_keys is not a passphrase-sealed key file".into(),
            ));
        }
        let hours = expiry_hours(m.expires_hours, DEFAULT_EXPORT_HOURS, MAX_EXPORT_HOURS)?;
        validate::principal_name(&m.principal_name)?;
        let id: PrincipalId = validate::client_id("principal", &m.principal_id)?;
        let signing_key = VerifyingKey::try_from_slice(&m.signing_key).map_err(|_| {
            ServiceError::InvalidArgument("signing_key is not a valid Ed25519 public key".into())
        })?;
        let agreement_key = agreement_key(&m.agreement_key)?;
        let caller_id = caller.principal_id();
        caller
            .principal()
            .signing_key
            .verify(
                &admission_message(&id, &signing_key, &agreement_key, Some(&caller_id)),
                &m.admission_signature,
            )
            .map_err(|_| {
                ServiceError::InvalidArgument(
                    "admission_signature is not your signature over these keys".into(),
                )
            })?;
        let mut keys = Vec::with_capacity(m.keys.len());
        for k in &m.keys {
            let grant = GrantId::try_parse(&k.grant_id).ok_or_else(|| {
                ServiceError::InvalidArgument(format!("invalid grant id '{}'", k.grant_id))
            })?;
            for key in grant_keys(k.key.as_slice())? {
                if key.principal != id {
                    return Err(ServiceError::InvalidArgument(
                        "every key of an export is wrapped to the new principal".into(),
                    ));
                }
                keys.push((grant, key));
            }
        }
        let now = self.now_ms();
        let statements = check_statements_any_workspace(
            caller_id,
            &caller.principal().signing_key,
            &m.statements,
            now,
        )?;
        let expires_at_ms = now + i64::from(hours) * 3_600_000;
        let export = NewDeviceExport {
            id: export_id,
            user,
            principal: NewPrincipal {
                id,
                name: m.principal_name.clone(),
                signing_key,
                agreement_key,
                admitted_by: Some(caller_id),
                admission_signature: m.admission_signature.clone(),
                // A device that is never imported stops working on its own.
                expires_at_ms: Some(expires_at_ms),
            },
            auth_hash,
            sealed_keys: m.sealed_keys.clone(),
            grant_keys: keys,
            now_ms: now,
            expires_at_ms,
        };
        let entry = audit::draft(
            &caller,
            action::PRINCIPAL_EXPORT,
            &Scope::Server,
            format!("principal/{id}"),
            now,
        );
        let outcome = match self.state.storage.create_device_export(export, entry).await {
            Ok(o) => o,
            Err(StorageError::AlreadyExists(_)) => ExportOutcome::KeysTaken,
            Err(e) => return Err(e.into()),
        };
        match outcome {
            ExportOutcome::Stored => {}
            ExportOutcome::KeysTaken => {
                return Err(ServiceError::AlreadyExists(
                    "these keys, this principal id or this export id are already registered".into(),
                ))
            }
            ExportOutcome::Stale(s) => return Err(stale_error(s, "your grants")),
        }
        self.state.storage.add_key_statements(&statements).await?;
        tracing::info!(principal = %id, "device exported");
        let info = self.admission_closure(&[id]).await?;
        Ok(ExportPrincipalResponse {
            principal: info
                .iter()
                .find(|a| a.principal.id == id)
                .map(principal_info),
            expires_at_ms,
        })
    }

    pub(super) async fn import_principal_rpc(
        &self,
        m: ImportPrincipalRequest,
    ) -> ServiceResult<ImportPrincipalResponse> {
        let id = InviteId::try_parse(&m.export_id).map_err(|_| {
            ServiceError::InvalidArgument("the export code names no valid export".into())
        })?;
        let auth: [u8; 32] = validate::fixed("auth", &m.auth)?;
        let export = self
            .state
            .storage
            .fetch_device_export(id)
            .await?
            .ok_or_else(export_not_found)?;
        if !zopp_crypto::ct_eq(&export.auth_hash, &zopp_crypto::sha256(&auth)) {
            return Err(export_not_found());
        }
        if export.completed_at_ms.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "this device export was already imported".into(),
            ));
        }
        if export.expires_at_ms <= self.now_ms() || export.principal.revoked_at_ms.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "this device export expired; run `zopp principal export` again".into(),
            ));
        }
        if export.fetches > MAX_EXPORT_FETCHES {
            return Err(ServiceError::FailedPrecondition(
                "this device export was fetched too many times; run `zopp principal export` \
                 again"
                    .into(),
            ));
        }
        let p = &export.principal;
        Ok(ImportPrincipalResponse {
            sealed_keys: export.sealed_keys.clone(),
            principal_id: p.id.to_string(),
            user_id: p.user_id.map(|u| u.to_string()).unwrap_or_default(),
            email: p.user_email.clone().unwrap_or_default(),
            principal_name: p.name.clone(),
            expires_at_ms: export.expires_at_ms,
        })
    }

    pub(super) async fn complete_import_rpc(
        &self,
        caller: Caller,
        _m: CompleteImportRequest,
    ) -> ServiceResult<PrincipalInfo> {
        let now = self.now_ms();
        let entry = audit::draft(
            &caller,
            action::PRINCIPAL_IMPORT,
            &Scope::Server,
            format!("principal/{}", caller.principal_id()),
            now,
        );
        if !self
            .state
            .storage
            .complete_device_export(caller.principal_id(), now, entry)
            .await?
        {
            return Err(ServiceError::FailedPrecondition(
                "no pending device export for this principal".into(),
            ));
        }
        let id = caller.principal_id();
        let info = self.admission_closure(&[id]).await?;
        info.iter()
            .find(|a| a.principal.id == id)
            .map(principal_info)
            .ok_or_else(|| ServiceError::NotFound(format!("principal {id} not found")))
    }
}
