//! SQLite implementation of [`LeaseStorage`]. A lease is taken by one conditional upsert, so
//! of two concurrent takers exactly one gets it, whatever the backend's locking.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use zopp_crypto::envelope::NameDigest;
use zopp_crypto::ids::{EnvironmentId, PrincipalId};

use super::super::leases::*;
use super::*;

/// Takes the lease unless a live one of someone else's stands (or `$7` breaks it).
pub(super) const TAKE_LEASE: &str = "INSERT INTO app_leases \
     (environment_id, app_digest, lease_id, holder_id, acquired_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (environment_id, app_digest) DO UPDATE SET lease_id = excluded.lease_id, \
     holder_id = excluded.holder_id, acquired_at = excluded.acquired_at, \
     expires_at = excluded.expires_at \
     WHERE app_leases.expires_at <= $5 OR $7 \
     RETURNING lease_id, holder_id, acquired_at, expires_at";

/// Extends the caller's own lease.
pub(super) const RENEW_LEASE: &str = "UPDATE app_leases SET expires_at = $5 \
     WHERE environment_id = $1 AND app_digest = $2 AND lease_id = $3 AND holder_id = $4 \
     RETURNING lease_id, holder_id, acquired_at, expires_at";

pub(super) const SELECT_LEASE: &str = "SELECT lease_id, holder_id, acquired_at, expires_at \
     FROM app_leases WHERE environment_id = $1 AND app_digest = $2 AND expires_at > $3";

pub(super) const DELETE_LEASE: &str = "DELETE FROM app_leases \
     WHERE environment_id = $1 AND app_digest = $2 AND lease_id = $3 AND holder_id = $4";

pub(super) const UPSERT_APPLY: &str = "INSERT INTO app_applies (environment_id, app_digest, \
     principal_id, app_version, kubeconfig_version, rendering_sha256, exit_code, secrets, \
     started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (environment_id, app_digest) DO UPDATE SET principal_id = excluded.principal_id, \
     app_version = excluded.app_version, kubeconfig_version = excluded.kubeconfig_version, \
     rendering_sha256 = excluded.rendering_sha256, exit_code = excluded.exit_code, \
     secrets = excluded.secrets, started_at = excluded.started_at, \
     finished_at = excluded.finished_at";

pub(super) const SELECT_APPLY: &str = "SELECT principal_id, app_version, kubeconfig_version, \
     rendering_sha256, exit_code, secrets, started_at, finished_at \
     FROM app_applies WHERE environment_id = $1 AND app_digest = $2";

fn lease_row(r: &SqliteRow) -> Result<LeaseRecord> {
    Ok(LeaseRecord {
        lease_id: r.try_get(0)?,
        holder: parse_id(&r.try_get::<String, _>(1)?, "lease holder id")?,
        acquired_at_ms: r.try_get(2)?,
        expires_at_ms: r.try_get(3)?,
    })
}

fn apply_row(r: &SqliteRow) -> Result<ApplyRecord> {
    Ok(ApplyRecord {
        principal: parse_id(&r.try_get::<String, _>(0)?, "applier id")?,
        app_version: to_u64(r.try_get(1)?, "app version")?,
        kubeconfig_version: to_u64(r.try_get(2)?, "kubeconfig version")?,
        rendering_sha256: arr32(&r.try_get::<Vec<u8>, _>(3)?, "rendering digest")?,
        exit_code: r.try_get(4)?,
        secrets: decode_secrets(&r.try_get::<Vec<u8>, _>(5)?)
            .ok_or_else(|| corrupt("applied secrets"))?,
        started_at_ms: r.try_get(6)?,
        finished_at_ms: r.try_get(7)?,
    })
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| corrupt(what))
}

#[async_trait]
impl LeaseStorage for SqliteStorage {
    async fn acquire_lease(&self, req: LeaseRequest, audit: AuditDraft) -> Result<LeaseOutcome> {
        let mut tx = self.begin_write().await?;
        let env = req.environment.to_string();
        let app = &req.app.as_bytes()[..];
        let query = if req.renew {
            sqlx::query(RENEW_LEASE)
                .bind(&env)
                .bind(app)
                .bind(&req.lease_id)
                .bind(req.holder.to_string())
                .bind(req.expires_at_ms)
        } else {
            sqlx::query(TAKE_LEASE)
                .bind(&env)
                .bind(app)
                .bind(&req.lease_id)
                .bind(req.holder.to_string())
                .bind(req.now_ms)
                .bind(req.expires_at_ms)
                .bind(req.break_lock)
        };
        let taken = query.fetch_optional(&mut *tx).await?;
        match taken {
            Some(r) => {
                let lease = lease_row(&r)?;
                if !req.renew {
                    append_audit_tx(&mut tx, vec![audit]).await?;
                }
                tx.commit().await?;
                Ok(LeaseOutcome::Acquired(lease))
            }
            None => {
                let live = sqlx::query(SELECT_LEASE)
                    .bind(&env)
                    .bind(app)
                    .bind(req.now_ms)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| lease_row(&r))
                    .transpose()?;
                Ok(LeaseOutcome::Held(live))
            }
        }
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
        let mut tx = self.begin_write().await?;
        let env = environment.to_string();
        let released = sqlx::query(DELETE_LEASE)
            .bind(&env)
            .bind(&app.as_bytes()[..])
            .bind(lease_id)
            .bind(holder.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if let Some(a) = apply {
            sqlx::query(UPSERT_APPLY)
                .bind(&env)
                .bind(&app.as_bytes()[..])
                .bind(a.principal.to_string())
                .bind(to_i64(a.app_version, "app version")?)
                .bind(to_i64(a.kubeconfig_version, "kubeconfig version")?)
                .bind(&a.rendering_sha256[..])
                .bind(a.exit_code)
                .bind(encode_secrets(&a.secrets))
                .bind(a.started_at_ms)
                .bind(a.finished_at_ms)
                .execute(&mut *tx)
                .await?;
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn app_status(
        &self,
        environment: EnvironmentId,
        app: NameDigest,
        now_ms: i64,
    ) -> Result<(Option<LeaseRecord>, Option<ApplyRecord>)> {
        let env = environment.to_string();
        let lease = sqlx::query(SELECT_LEASE)
            .bind(&env)
            .bind(&app.as_bytes()[..])
            .bind(now_ms)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| lease_row(&r))
            .transpose()?;
        let apply = sqlx::query(SELECT_APPLY)
            .bind(&env)
            .bind(&app.as_bytes()[..])
            .fetch_optional(&self.reader)
            .await?
            .map(|r| apply_row(&r))
            .transpose()?;
        Ok((lease, apply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lease_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = SqliteStorage::open(&url).await.expect("open sqlite");
        super::super::super::leases_suite::run_all(&s).await;
    }
}
