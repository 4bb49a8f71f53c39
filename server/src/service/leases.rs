//! App leases: `AcquireAppLease`, `ReleaseAppLease` and `GetAppStatus` (docs/platform.md).
//!
//! A lease keeps two applies of one app from running at once. The server knows the app only
//! by its name digest, and an apply only by versions, digests, the rendering's SHA-256 and the
//! exit code: it never sees a name, a manifest or a value. Taking a lease and recording an apply
//! need write on the environment; breaking another principal's live lease needs admin.

use rand_core::{OsRng, RngCore};
use zopp_crypto::envelope::NameDigest;
use zopp_crypto::ids::EnvironmentId;
use zopp_proto::v1::{
    AcquireAppLeaseRequest, AcquireAppLeaseResponse, AppApply, AppLeaseHolder, AppliedSecret,
    GetAppStatusRequest, GetAppStatusResponse, ReleaseAppLeaseRequest, ReleaseAppLeaseResponse,
};

use super::{convert, ZoppService};
use crate::audit::{self, action};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{Action, Role};
use crate::storage::leases::{self, ApplyRecord, LeaseOutcome, LeaseRecord, LeaseRequest};
use crate::validate;

/// Longest lease a client may ask for (a day).
const MAX_TTL_SECONDS: u32 = 86_400;
/// Most secrets one apply record may list.
const MAX_APPLIED_SECRETS: usize = 10_000;

fn app_target(d: &NameDigest) -> String {
    format!("app/{}", d.to_hex())
}

impl ZoppService {
    async fn holder(&self, l: &LeaseRecord) -> ServiceResult<AppLeaseHolder> {
        let found = self.state.storage.principals(&[l.holder]).await?;
        Ok(AppLeaseHolder {
            principal: found.first().map(convert::principal_public),
            acquired_at_ms: l.acquired_at_ms,
            expires_at_ms: l.expires_at_ms,
        })
    }

    pub(super) async fn acquire_app_lease_rpc(
        &self,
        caller: Caller,
        m: AcquireAppLeaseRequest,
    ) -> ServiceResult<AcquireAppLeaseResponse> {
        let app = validate::name_digest(&m.app_digest)?;
        if m.ttl_seconds == 0 || m.ttl_seconds > MAX_TTL_SECONDS {
            return Err(ServiceError::InvalidArgument(format!(
                "ttl_seconds must be 1..={MAX_TTL_SECONDS}"
            )));
        }
        let renew = !m.lease_id.is_empty();
        if renew && (m.lease_id.len() != 32 || !m.lease_id.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(ServiceError::InvalidArgument("malformed lease_id".into()));
        }
        let (r, role) = self
            .environment(
                &caller,
                m.env.as_ref(),
                Action::WriteSecrets,
                action::APP_LEASE,
            )
            .await?;
        if m.break_lock && role < Role::Admin {
            return Err(ServiceError::PermissionDenied(
                "breaking an app's lease needs the admin role on the environment".into(),
            ));
        }
        let env = r.env()?;
        let scope = r.env_scope()?;
        let now = self.now_ms();
        let lease_id = if renew {
            m.lease_id.clone()
        } else {
            let mut b = [0u8; 16];
            OsRng.fill_bytes(&mut b);
            hex::encode(b)
        };
        let act = if m.break_lock {
            action::APP_LEASE_BREAK
        } else {
            action::APP_LEASE
        };
        let req = LeaseRequest {
            environment: env.id,
            app,
            holder: caller.principal_id(),
            lease_id,
            renew,
            break_lock: m.break_lock,
            now_ms: now,
            expires_at_ms: now.saturating_add(i64::from(m.ttl_seconds) * 1_000),
        };
        let outcome = self
            .state
            .storage
            .acquire_lease(
                req,
                audit::draft(&caller, act, &scope, app_target(&app), now),
            )
            .await?;
        Ok(match outcome {
            LeaseOutcome::Acquired(l) => AcquireAppLeaseResponse {
                acquired: true,
                lease_id: l.lease_id.clone(),
                holder: Some(self.holder(&l).await?),
            },
            LeaseOutcome::Held(live) => AcquireAppLeaseResponse {
                acquired: false,
                lease_id: String::new(),
                holder: match live {
                    Some(l) => Some(self.holder(&l).await?),
                    None => None,
                },
            },
        })
    }

    pub(super) async fn release_app_lease_rpc(
        &self,
        caller: Caller,
        m: ReleaseAppLeaseRequest,
    ) -> ServiceResult<ReleaseAppLeaseResponse> {
        let app = validate::name_digest(&m.app_digest)?;
        let apply = match &m.apply {
            None => None,
            Some(a) => Some(apply_record(&caller, a, self.now_ms())?),
        };
        let (r, _role) = self
            .environment(
                &caller,
                m.env.as_ref(),
                Action::WriteSecrets,
                action::APP_APPLY,
            )
            .await?;
        let env = r.env()?;
        let scope = r.env_scope()?;
        let now = self.now_ms();
        // The audit target carries what the apply used: versions and digests, never names.
        let target = match &apply {
            Some(a) => format!(
                "{}@{} kubeconfig@{} sha256/{} exit/{} secrets/{}",
                app_target(&app),
                a.app_version,
                a.kubeconfig_version,
                hex::encode(a.rendering_sha256),
                a.exit_code,
                a.secrets
                    .iter()
                    .map(|s| format!("{}:{}@{}", s.environment, s.name_digest.to_hex(), s.version))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => format!("{} released", app_target(&app)),
        };
        let act = if apply.is_some() {
            action::APP_APPLY
        } else {
            action::APP_LEASE_RELEASE
        };
        let released = self
            .state
            .storage
            .release_lease(
                env.id,
                app,
                caller.principal_id(),
                &m.lease_id,
                apply,
                audit::draft(&caller, act, &scope, target, now),
            )
            .await?;
        Ok(ReleaseAppLeaseResponse { released })
    }

    pub(super) async fn get_app_status_rpc(
        &self,
        caller: Caller,
        m: GetAppStatusRequest,
    ) -> ServiceResult<GetAppStatusResponse> {
        let app = validate::name_digest(&m.app_digest)?;
        let (r, _role) = self
            .environment(
                &caller,
                m.env.as_ref(),
                Action::ReadSecrets,
                action::APP_STATUS,
            )
            .await?;
        let env = r.env()?;
        let (lease, last) = self
            .state
            .storage
            .app_status(env.id, app, self.now_ms())
            .await?;
        let holder = match &lease {
            Some(l) => Some(self.holder(l).await?),
            None => None,
        };
        let last_apply = match last {
            None => None,
            Some(a) => {
                let by = self.state.storage.principals(&[a.principal]).await?;
                Some(AppApply {
                    app_version: a.app_version,
                    secrets: a
                        .secrets
                        .iter()
                        .map(|s| AppliedSecret {
                            environment_id: s.environment.to_string(),
                            name_digest: s.name_digest.as_bytes().to_vec(),
                            version: s.version,
                        })
                        .collect(),
                    rendering_sha256: a.rendering_sha256.to_vec(),
                    exit_code: a.exit_code,
                    started_at_ms: a.started_at_ms,
                    kubeconfig_version: a.kubeconfig_version,
                    applied_by: by.first().map(convert::principal_public),
                    finished_at_ms: a.finished_at_ms,
                })
            }
        };
        Ok(GetAppStatusResponse { holder, last_apply })
    }
}

/// Checks an apply record from the wire.
fn apply_record(caller: &Caller, a: &AppApply, now_ms: i64) -> ServiceResult<ApplyRecord> {
    if a.secrets.len() > MAX_APPLIED_SECRETS {
        return Err(ServiceError::InvalidArgument(format!(
            "an apply record lists at most {MAX_APPLIED_SECRETS} secrets"
        )));
    }
    let secrets = a
        .secrets
        .iter()
        .map(|s| {
            Ok(leases::AppliedSecret {
                environment: validate::client_id::<EnvironmentId>(
                    "environment",
                    &s.environment_id,
                )?,
                name_digest: validate::name_digest(&s.name_digest)?,
                version: s.version,
            })
        })
        .collect::<ServiceResult<Vec<_>>>()?;
    Ok(ApplyRecord {
        principal: caller.principal_id(),
        app_version: a.app_version,
        kubeconfig_version: a.kubeconfig_version,
        rendering_sha256: validate::fixed::<32>("rendering_sha256", &a.rendering_sha256)?,
        exit_code: a.exit_code,
        secrets,
        started_at_ms: a.started_at_ms,
        finished_at_ms: now_ms,
    })
}
