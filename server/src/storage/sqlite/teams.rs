//! SQLite implementation of [`TeamStorage`]. Every write runs in one `BEGIN IMMEDIATE`
//! transaction on the single writer connection, so its checks and its changes cannot interleave
//! with another writer's.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use zopp_crypto::ids::{InviteId, PrincipalId, ProjectId, UserId, WorkspaceId};

use super::super::teams::*;
use super::*;

const ADMISSION_SELECT: &str = "SELECT p.id, p.user_id, p.workspace_id, u.email, p.name, \
     p.signing_key, p.agreement_key, p.admitted_by, p.admission_signature, p.created_at, \
     p.revoked_at, p.expires_at, p.admission_invite_id, p.admission_invite_key, \
     p.admission_invite_signature FROM principals p LEFT JOIN users u ON u.id = p.user_id";

/// Columns of a grant listing; `own_grant_keys` appends the wrapped key's epoch and bytes.
const GRANT_COLS: &str = "g.id, g.scope_kind, g.project_id, g.environment_id, g.role, \
     g.user_id, u.email, g.principal_id, p.name, p.workspace_id, g.granted_by, g.created_at, \
     pr.name, e.name, g.workspace_id, \
     CASE g.scope_kind WHEN 1 THEN w.key_epoch WHEN 2 THEN pr.key_epoch ELSE e.key_epoch END";

/// Joins of a grant listing: live workspaces, and the names of the grantee and the scope.
const GRANT_JOINS: &str = " FROM grants g \
     JOIN workspaces w ON w.id = g.workspace_id AND w.deleted_at IS NULL \
     LEFT JOIN users u ON u.id = g.user_id \
     LEFT JOIN principals p ON p.id = g.principal_id \
     LEFT JOIN projects pr ON pr.id = g.project_id \
     LEFT JOIN environments e ON e.id = g.environment_id";

/// Live grants on live scopes.
const GRANT_LIVE: &str = " WHERE g.revoked_at IS NULL \
     AND (g.project_id IS NULL OR pr.deleted_at IS NULL) \
     AND (g.environment_id IS NULL OR e.deleted_at IS NULL)";

const INVITE_SELECT: &str = "SELECT i.id, i.workspace_id, w.name, i.role, i.auth_hash, \
     i.sealed_key, i.key_epoch, i.invite_key, i.invite_signature, i.created_by, i.created_at, \
     i.expires_at, i.used_at, i.used_by, i.revoked_at \
     FROM workspace_invites i JOIN workspaces w ON w.id = i.workspace_id AND w.deleted_at IS NULL";

fn admission_row(r: &SqliteRow) -> Result<AdmissionRecord> {
    let principal = principal_row(r)?;
    let invite = match r.try_get::<Option<String>, _>(12)? {
        Some(id) => Some(InviteAdmission {
            invite_id: parse_id(&id, "admission invite id")?,
            invite_key: arr32(
                &r.try_get::<Option<Vec<u8>>, _>(13)?.unwrap_or_default(),
                "admission invite key",
            )?,
            invite_signature: r.try_get::<Option<Vec<u8>>, _>(14)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(AdmissionRecord { principal, invite })
}

/// A grant listing row (see [`GRANT_COLS`]) with its workspace and its scope's current epoch.
fn grant_row(r: &SqliteRow) -> Result<(GrantListing, WorkspaceId, u32)> {
    let workspace: WorkspaceId = parse_id(&r.try_get::<String, _>(14)?, "workspace id")?;
    let scope = grant_scope(
        r.try_get(1)?,
        workspace,
        opt_id(r.try_get(2)?, "project id")?,
        opt_id(r.try_get(3)?, "environment id")?,
    )?;
    let user: Option<UserId> = opt_id(r.try_get(5)?, "user id")?;
    let principal: Option<PrincipalId> = opt_id(r.try_get(7)?, "principal id")?;
    let grantee = match (user, principal) {
        (Some(u), None) => GranteeRef::User(u),
        (None, Some(p)) => GranteeRef::Principal(p),
        _ => return Err(corrupt("grant grantee")),
    };
    let id_text: String = r.try_get(0)?;
    let listing = GrantListing {
        id: GrantId::try_parse(&id_text).ok_or_else(|| corrupt("grant id"))?,
        scope,
        project_name: r.try_get(12)?,
        environment_name: r.try_get(13)?,
        role: stored_role(r.try_get(4)?)?,
        grantee,
        user_email: r.try_get(6)?,
        principal_name: r.try_get(8)?,
        service: r.try_get::<Option<String>, _>(9)?.is_some(),
        granted_by: parse_id(&r.try_get::<String, _>(10)?, "granting principal id")?,
        created_at_ms: r.try_get(11)?,
    };
    Ok((listing, workspace, to_u32(r.try_get(15)?, "key epoch")?))
}

fn invite_row(r: &SqliteRow) -> Result<InviteRecord> {
    Ok(InviteRecord {
        id: parse_id(&r.try_get::<String, _>(0)?, "invite id")?,
        workspace: parse_id(&r.try_get::<String, _>(1)?, "workspace id")?,
        workspace_name: r.try_get(2)?,
        role: stored_role(r.try_get(3)?)?,
        auth_hash: arr32(&r.try_get::<Vec<u8>, _>(4)?, "invite auth hash")?,
        sealed_key: r.try_get(5)?,
        key_epoch: to_u32(r.try_get(6)?, "invite key epoch")?,
        invite_key: arr32(&r.try_get::<Vec<u8>, _>(7)?, "invite key")?,
        invite_signature: r.try_get(8)?,
        created_by: parse_id(&r.try_get::<String, _>(9)?, "inviter id")?,
        created_at_ms: r.try_get(10)?,
        expires_at_ms: r.try_get(11)?,
        used_at_ms: r.try_get(12)?,
        used_by: opt_id(r.try_get(13)?, "invitee id")?,
        revoked_at_ms: r.try_get(14)?,
    })
}

/// The current epoch (environments) or generation (workspaces, projects) of a live scope.
async fn scope_epoch(c: &mut SqliteConnection, scope: &Scope) -> Result<Option<u32>> {
    let row = match scope {
        Scope::Server => return Ok(None),
        Scope::Workspace(w) => {
            sqlx::query("SELECT key_epoch FROM workspaces WHERE id = $1 AND deleted_at IS NULL")
                .bind(w.to_string())
                .fetch_optional(&mut *c)
                .await?
        }
        Scope::Project(w, p) => {
            sqlx::query(
                "SELECT key_epoch FROM projects WHERE id = $1 AND workspace_id = $2 \
                 AND deleted_at IS NULL",
            )
            .bind(p.to_string())
            .bind(w.to_string())
            .fetch_optional(&mut *c)
            .await?
        }
        Scope::Environment(w, p, e) => {
            sqlx::query(
                "SELECT key_epoch FROM environments WHERE id = $1 AND project_id = $2 \
                 AND workspace_id = $3 AND deleted_at IS NULL",
            )
            .bind(e.to_string())
            .bind(p.to_string())
            .bind(w.to_string())
            .fetch_optional(&mut *c)
            .await?
        }
    };
    row.map(|r| to_u32(r.try_get(0)?, "key epoch")).transpose()
}

async fn live_principal_rows(
    c: &mut SqliteConnection,
    grantee: GranteeRef,
    now_ms: i64,
) -> Result<Vec<PrincipalRecord>> {
    let (column, id) = match grantee {
        GranteeRef::User(u) => ("p.user_id", u.to_string()),
        GranteeRef::Principal(p) => ("p.id", p.to_string()),
    };
    let sql = format!(
        "{PRINCIPAL_SELECT} WHERE {column} = $1 AND p.revoked_at IS NULL \
         AND (p.expires_at IS NULL OR p.expires_at > $2) ORDER BY p.created_at, p.id"
    );
    let rows = sqlx::query(&sql)
        .bind(id)
        .bind(now_ms)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(principal_row).collect()
}

async fn live_principal_ids(
    c: &mut SqliteConnection,
    grantee: GranteeRef,
    now_ms: i64,
) -> Result<Vec<PrincipalId>> {
    Ok(live_principal_rows(c, grantee, now_ms)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect())
}

async fn grants_where(
    c: &mut SqliteConnection,
    filter: &str,
    id: String,
) -> Result<Vec<(GrantListing, WorkspaceId, u32)>> {
    let sql = format!(
        "SELECT {GRANT_COLS}{GRANT_JOINS}{GRANT_LIVE} AND {filter} ORDER BY g.created_at, g.id"
    );
    let rows = sqlx::query(&sql).bind(id).fetch_all(&mut *c).await?;
    rows.iter().map(grant_row).collect()
}

async fn principal_taken(c: &mut SqliteConnection, p: &NewPrincipal) -> Result<bool> {
    let found = sqlx::query("SELECT 1 FROM principals WHERE id = $1 OR signing_key = $2")
        .bind(p.id.to_string())
        .bind(&p.signing_key.to_bytes()[..])
        .fetch_optional(&mut *c)
        .await?;
    Ok(found.is_some())
}

async fn insert_grant(c: &mut SqliteConnection, g: &NewGrant) -> Result<()> {
    let (ws, project, env) = scope_columns(&g.scope);
    let (user, principal) = grantee_columns(g.grantee);
    sqlx::query(
        "INSERT INTO grants (id, scope_kind, workspace_id, project_id, environment_id, role, \
         user_id, principal_id, granted_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(g.id.to_string())
    .bind(scope_kind(&g.scope))
    .bind(ws)
    .bind(project)
    .bind(env)
    .bind(g.role.as_i32())
    .bind(user)
    .bind(principal)
    .bind(g.granted_by.to_string())
    .bind(g.now_ms)
    .execute(&mut *c)
    .await?;
    for k in &g.keys {
        insert_grant_key(c, g.id, k, g.now_ms).await?;
    }
    Ok(())
}

async fn insert_grant_key(
    c: &mut SqliteConnection,
    grant: GrantId,
    k: &NewGrantKey,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO grant_keys (grant_id, principal_id, key_epoch, wrapped_key, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(grant.to_string())
    .bind(k.principal.to_string())
    .bind(i64::from(k.key_epoch))
    .bind(k.wrapped_key.as_bytes())
    .bind(now_ms)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn insert_principal(
    c: &mut SqliteConnection,
    p: &NewPrincipal,
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
    admission: Option<&InviteAdmission>,
    server_key_share: Option<&[u8; 32]>,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO principals (id, user_id, workspace_id, name, signing_key, agreement_key, \
         admitted_by, admission_signature, created_at, expires_at, server_key_share, \
         admission_invite_id, admission_invite_key, admission_invite_signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(p.id.to_string())
    .bind(user.map(|u| u.to_string()))
    .bind(workspace.map(|w| w.to_string()))
    .bind(&p.name)
    .bind(&p.signing_key.to_bytes()[..])
    .bind(&p.agreement_key.to_bytes()[..])
    .bind(p.admitted_by.map(|a| a.to_string()))
    .bind(&p.admission_signature)
    .bind(now_ms)
    .bind(p.expires_at_ms)
    .bind(server_key_share.map(|s| s.to_vec()))
    .bind(admission.map(|a| a.invite_id.to_string()))
    .bind(admission.map(|a| a.invite_key.to_vec()))
    .bind(admission.map(|a| a.invite_signature.clone()))
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Reads what a rotation of `root` must cover (see [`RotationState`]).
async fn rotation_state(
    c: &mut SqliteConnection,
    root: &Scope,
    now_ms: i64,
) -> Result<RotationState> {
    let mut state = RotationState::default();
    let Some(ws) = root.workspace() else {
        return Ok(state);
    };
    if let Scope::Workspace(w) = root {
        match scope_epoch(c, root).await? {
            Some(e) => state.scopes.push((Scope::Workspace(*w), e)),
            None => return Ok(state),
        }
    }
    let (only_project, only_env) = match root {
        Scope::Project(_, p) => (Some(p.to_string()), None),
        Scope::Environment(_, p, e) => (Some(p.to_string()), Some(e.to_string())),
        _ => (None, None),
    };
    if only_env.is_none() {
        let rows = sqlx::query(
            "SELECT id, key_epoch FROM projects WHERE workspace_id = $1 AND deleted_at IS NULL \
             AND ($2 IS NULL OR id = $2)",
        )
        .bind(ws.to_string())
        .bind(&only_project)
        .fetch_all(&mut *c)
        .await?;
        for r in rows {
            let p: ProjectId = parse_id(&r.try_get::<String, _>(0)?, "project id")?;
            state
                .scopes
                .push((Scope::Project(ws, p), to_u32(r.try_get(1)?, "key epoch")?));
        }
    }
    let rows = sqlx::query(
        "SELECT e.id, e.project_id, e.key_epoch FROM environments e \
         JOIN projects p ON p.id = e.project_id AND p.deleted_at IS NULL \
         WHERE e.workspace_id = $1 AND e.deleted_at IS NULL \
         AND ($2 IS NULL OR e.project_id = $2) AND ($3 IS NULL OR e.id = $3)",
    )
    .bind(ws.to_string())
    .bind(&only_project)
    .bind(&only_env)
    .fetch_all(&mut *c)
    .await?;
    for r in rows {
        let e = parse_id(&r.try_get::<String, _>(0)?, "environment id")?;
        let p = parse_id(&r.try_get::<String, _>(1)?, "project id")?;
        state.scopes.push((
            Scope::Environment(ws, p, e),
            to_u32(r.try_get(2)?, "key epoch")?,
        ));
    }
    for (g, _, _) in grants_where(c, "g.workspace_id = $1", ws.to_string()).await? {
        if root.covers(&g.scope) {
            let principals = live_principal_ids(c, g.grantee, now_ms).await?;
            state.grants.push((g.id, g.scope, principals));
        }
    }
    Ok(state)
}

#[async_trait]
impl TeamStorage for SqliteStorage {
    async fn principal_admissions(&self, ids: &[PrincipalId]) -> Result<Vec<AdmissionRecord>> {
        let mut unique = ids.to_vec();
        unique.sort();
        unique.dedup();
        let mut out = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(IN_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("{ADMISSION_SELECT} WHERE p.id IN ("));
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id.to_string());
            }
            qb.push(")");
            for r in qb.build().fetch_all(&self.reader).await? {
                out.push(admission_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserId>> {
        let row = sqlx::query("SELECT id FROM users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| parse_id(&r.try_get::<String, _>(0)?, "user id"))
            .transpose()
    }

    async fn live_principals(
        &self,
        grantee: GranteeRef,
        now_ms: i64,
    ) -> Result<Vec<PrincipalRecord>> {
        let mut c = self.reader.acquire().await?;
        live_principal_rows(&mut c, grantee, now_ms).await
    }

    async fn workspace_meta(&self, id: WorkspaceId) -> Result<Option<WorkspaceMeta>> {
        let row = sqlx::query(
            "SELECT created_by, key_epoch FROM workspaces WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(WorkspaceMeta {
                creator: parse_id(&r.try_get::<String, _>(0)?, "workspace creator id")?,
                key_epoch: to_u32(r.try_get(1)?, "key epoch")?,
            })
        })
        .transpose()
    }

    async fn set_grant(&self, g: NewGrant, audit: AuditDraft) -> Result<GrantOutcome> {
        let mut tx = self.begin_write().await?;
        let Some(epoch) = scope_epoch(&mut tx, &g.scope).await? else {
            return Err(StorageError::NotFound("scope"));
        };
        let live = live_principal_ids(&mut tx, g.grantee, g.now_ms).await?;
        if let Some(stale) = check_grant_keys(&g.keys, &live, epoch) {
            return Ok(GrantOutcome::Stale(stale));
        }
        let (ws, project, env) = scope_columns(&g.scope);
        let (user, principal) = grantee_columns(g.grantee);
        let old = sqlx::query(
            "SELECT id FROM grants WHERE workspace_id = $1 AND scope_kind = $2 \
             AND project_id IS $3 AND environment_id IS $4 AND user_id IS $5 \
             AND principal_id IS $6 AND revoked_at IS NULL",
        )
        .bind(&ws)
        .bind(scope_kind(&g.scope))
        .bind(&project)
        .bind(&env)
        .bind(&user)
        .bind(&principal)
        .fetch_optional(&mut *tx)
        .await?;
        let replaced = match old {
            Some(r) => {
                let id: String = r.try_get(0)?;
                sqlx::query("UPDATE grants SET revoked_at = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(g.now_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM grant_keys WHERE grant_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                Some(GrantId::try_parse(&id).ok_or_else(|| corrupt("grant id"))?)
            }
            None => None,
        };
        insert_grant(&mut tx, &g).await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(GrantOutcome::Granted { replaced })
    }

    async fn live_grants(&self, workspace: WorkspaceId) -> Result<Vec<GrantListing>> {
        let mut c = self.reader.acquire().await?;
        Ok(
            grants_where(&mut c, "g.workspace_id = $1", workspace.to_string())
                .await?
                .into_iter()
                .map(|(g, _, _)| g)
                .collect(),
        )
    }

    async fn revoke_grant(
        &self,
        workspace: WorkspaceId,
        id: GrantId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<RevokeOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT scope_kind, role FROM grants WHERE id = $1 AND workspace_id = $2 \
             AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(workspace.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RevokeOutcome::NotFound);
        };
        let kind: i32 = row.try_get(0)?;
        let role = stored_role(row.try_get(1)?)?;
        if kind == 1 && role == Role::Admin {
            let others = sqlx::query(
                "SELECT 1 FROM grants WHERE workspace_id = $1 AND scope_kind = 1 AND role = 3 \
                 AND revoked_at IS NULL AND id <> $2 LIMIT 1",
            )
            .bind(workspace.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if others.is_none() {
                return Ok(RevokeOutcome::LastAdmin);
            }
        }
        sqlx::query("UPDATE grants SET revoked_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM grant_keys WHERE grant_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(RevokeOutcome::Revoked)
    }

    async fn create_invite(&self, i: NewInvite, audit: AuditDraft) -> Result<Option<Stale>> {
        let mut tx = self.begin_write().await?;
        let Some(epoch) = scope_epoch(&mut tx, &Scope::Workspace(i.workspace)).await? else {
            return Err(StorageError::NotFound("workspace"));
        };
        if epoch != i.key_epoch {
            return Ok(Some(Stale::KeyEpoch { current: epoch }));
        }
        // Expired invites keep nothing they no longer need: erase their sealed keys.
        sqlx::query(
            "UPDATE workspace_invites SET sealed_key = $3 WHERE workspace_id = $1 \
             AND used_at IS NULL AND revoked_at IS NULL AND expires_at <= $2 \
             AND length(sealed_key) > 0",
        )
        .bind(i.workspace.to_string())
        .bind(i.now_ms)
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workspace_invites (id, workspace_id, role, auth_hash, sealed_key, \
             key_epoch, invite_key, invite_signature, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(i.id.to_string())
        .bind(i.workspace.to_string())
        .bind(i.role.as_i32())
        .bind(&i.auth_hash[..])
        .bind(&i.sealed_key)
        .bind(i64::from(i.key_epoch))
        .bind(&i.invite_key[..])
        .bind(&i.invite_signature)
        .bind(i.created_by.to_string())
        .bind(i.now_ms)
        .bind(i.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn invites(&self, workspace: WorkspaceId) -> Result<Vec<InviteRecord>> {
        let sql = format!("{INVITE_SELECT} WHERE i.workspace_id = $1 ORDER BY i.created_at DESC");
        let rows = sqlx::query(&sql)
            .bind(workspace.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(invite_row).collect()
    }

    async fn invite(&self, id: InviteId) -> Result<Option<InviteRecord>> {
        let sql = format!("{INVITE_SELECT} WHERE i.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(invite_row).transpose()
    }

    async fn revoke_invite(
        &self,
        workspace: WorkspaceId,
        id: InviteId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE workspace_invites SET revoked_at = $3, sealed_key = $4 \
             WHERE id = $1 AND workspace_id = $2 AND used_at IS NULL AND revoked_at IS NULL \
             AND expires_at > $3",
        )
        .bind(id.to_string())
        .bind(workspace.to_string())
        .bind(now_ms)
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn join_workspace(&self, j: WorkspaceJoin, audit: AuditDraft) -> Result<JoinOutcome> {
        let mut tx = self.begin_write().await?;
        let sql = format!("{INVITE_SELECT} WHERE i.id = $1");
        let row = sqlx::query(&sql)
            .bind(j.invite_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(invite) = row.as_ref().map(invite_row).transpose()? else {
            return Ok(JoinOutcome::NotFound);
        };
        if !zopp_crypto::ct_eq(&invite.auth_hash, &j.auth_hash) {
            return Ok(JoinOutcome::NotFound);
        }
        let status = invite.status(j.now_ms);
        if status != InviteStatus::Pending {
            return Ok(JoinOutcome::NotPending(status));
        }
        let ws_scope = Scope::Workspace(invite.workspace);
        if scope_epoch(&mut tx, &ws_scope).await? != Some(invite.key_epoch) {
            return Ok(JoinOutcome::KeyRotated);
        }
        if exists(
            &mut tx,
            "SELECT 1 FROM users WHERE lower(email) = lower($1)",
            &[&j.email],
        )
        .await?
        {
            return Ok(JoinOutcome::EmailTaken);
        }
        if principal_taken(&mut tx, &j.principal).await? {
            return Ok(JoinOutcome::KeysTaken);
        }
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
            .bind(j.user_id.to_string())
            .bind(&j.email)
            .bind(j.now_ms)
            .execute(&mut *tx)
            .await?;
        insert_principal(
            &mut tx,
            &j.principal,
            Some(j.user_id),
            None,
            Some(&j.admission),
            None,
            j.now_ms,
        )
        .await?;
        let grant = NewGrant {
            id: j.grant_id,
            scope: ws_scope,
            role: invite.role,
            grantee: GranteeRef::User(j.user_id),
            granted_by: invite.created_by,
            keys: vec![NewGrantKey {
                principal: j.principal.id,
                key_epoch: invite.key_epoch,
                wrapped_key: j.wrapped_key.clone(),
            }],
            now_ms: j.now_ms,
        };
        insert_grant(&mut tx, &grant).await?;
        let used = sqlx::query(
            "UPDATE workspace_invites SET used_at = $2, used_by = $3, sealed_key = $4 \
             WHERE id = $1 AND used_at IS NULL",
        )
        .bind(j.invite_id.to_string())
        .bind(j.now_ms)
        .bind(j.principal.id.to_string())
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(JoinOutcome::NotPending(InviteStatus::Used));
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(JoinOutcome::Joined)
    }

    async fn create_service_principal(
        &self,
        sp: NewServicePrincipal,
        audit: AuditDraft,
    ) -> Result<ServiceOutcome> {
        let mut tx = self.begin_write().await?;
        let Some(epoch) = scope_epoch(&mut tx, &sp.grant.scope).await? else {
            return Err(StorageError::NotFound("scope"));
        };
        let name_taken = sqlx::query(
            "SELECT 1 FROM principals WHERE workspace_id = $1 AND name = $2 \
             AND revoked_at IS NULL",
        )
        .bind(sp.workspace.to_string())
        .bind(&sp.principal.name)
        .fetch_optional(&mut *tx)
        .await?;
        if name_taken.is_some() {
            return Ok(ServiceOutcome::NameTaken);
        }
        if principal_taken(&mut tx, &sp.principal).await? {
            return Ok(ServiceOutcome::KeysTaken);
        }
        if let Some(stale) = check_grant_keys(&sp.grant.keys, &[sp.principal.id], epoch) {
            return Ok(ServiceOutcome::Stale(stale));
        }
        insert_principal(
            &mut tx,
            &sp.principal,
            None,
            Some(sp.workspace),
            None,
            Some(&sp.server_key_share),
            sp.grant.now_ms,
        )
        .await?;
        insert_grant(&mut tx, &sp.grant).await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(ServiceOutcome::Created)
    }

    async fn server_key_share(&self, principal: PrincipalId) -> Result<Option<[u8; 32]>> {
        let row = sqlx::query(
            "SELECT server_key_share FROM principals WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(principal.to_string())
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(r) => r
                .try_get::<Option<Vec<u8>>, _>(0)?
                .map(|b| arr32(&b, "server key share"))
                .transpose(),
            None => Ok(None),
        }
    }

    async fn revoke_principal(
        &self,
        id: PrincipalId,
        now_ms: i64,
        audit: Vec<AuditDraft>,
    ) -> Result<Option<RevokedPrincipal>> {
        let mut tx = self.begin_write().await?;
        let sql = format!("{PRINCIPAL_SELECT} WHERE p.id = $1 AND p.revoked_at IS NULL");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(principal) = row.as_ref().map(principal_row).transpose()? else {
            return Ok(None);
        };
        let revoked_grants = grants_where(&mut tx, "g.principal_id = $1", id.to_string())
            .await?
            .into_iter()
            .map(|(g, w, _)| (w, g))
            .collect();
        sqlx::query("UPDATE principals SET revoked_at = $2, server_key_share = NULL WHERE id = $1")
            .bind(id.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE grants SET revoked_at = $2 WHERE principal_id = $1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM grant_keys WHERE principal_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE device_exports SET sealed_keys = $2 WHERE principal_id = $1 \
             AND completed_at IS NULL",
        )
        .bind(id.to_string())
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        // The share is gone from the row; push the pages that held it out of the WAL too.
        self.checkpoint_truncate().await?;
        Ok(Some(RevokedPrincipal {
            principal,
            revoked_grants,
        }))
    }

    async fn user_principals(&self, user: UserId) -> Result<Vec<PrincipalRecord>> {
        let sql = format!("{PRINCIPAL_SELECT} WHERE p.user_id = $1 ORDER BY p.created_at, p.id");
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(principal_row).collect()
    }

    async fn service_principals(&self, workspace: WorkspaceId) -> Result<Vec<PrincipalRecord>> {
        let sql =
            format!("{PRINCIPAL_SELECT} WHERE p.workspace_id = $1 ORDER BY p.created_at, p.id");
        let rows = sqlx::query(&sql)
            .bind(workspace.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(principal_row).collect()
    }

    async fn rename_principal(
        &self,
        id: PrincipalId,
        name: &str,
        audit: Vec<AuditDraft>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query(
            "SELECT 1 FROM principals o JOIN principals p ON p.id = $1 \
             WHERE p.workspace_id IS NOT NULL AND o.workspace_id = p.workspace_id \
             AND o.name = $2 AND o.revoked_at IS NULL AND o.id <> p.id",
        )
        .bind(id.to_string())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Ok(false);
        }
        let done =
            sqlx::query("UPDATE principals SET name = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id.to_string())
                .bind(name)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::NotFound("principal"));
        }
        append_audit_tx(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn key_epochs(&self, workspace: WorkspaceId) -> Result<KeyEpochs> {
        let mut c = self.reader.begin().await?;
        let Some(ws) = scope_epoch(&mut c, &Scope::Workspace(workspace)).await? else {
            return Err(StorageError::NotFound("workspace"));
        };
        let rows = sqlx::query(
            "SELECT id, key_epoch FROM projects WHERE workspace_id = $1 AND deleted_at IS NULL",
        )
        .bind(workspace.to_string())
        .fetch_all(&mut *c)
        .await?;
        c.commit().await?;
        let mut out = KeyEpochs {
            workspace: ws,
            projects: Default::default(),
        };
        for r in rows {
            out.projects.insert(
                parse_id(&r.try_get::<String, _>(0)?, "project id")?,
                to_u32(r.try_get(1)?, "key epoch")?,
            );
        }
        Ok(out)
    }

    async fn rotate_keys(&self, rot: Rotation, audit: AuditDraft) -> Result<Option<Stale>> {
        let mut tx = self.begin_write().await?;
        let state = rotation_state(&mut tx, &rot.root, rot.now_ms).await?;
        if state.scopes.is_empty() {
            return Err(StorageError::NotFound("scope"));
        }
        if let Some(stale) = check_rotation(&rot, &state) {
            return Ok(Some(stale));
        }
        for r in &rot.scopes {
            match r.scope {
                Scope::Server => {}
                Scope::Workspace(w) => {
                    sqlx::query("UPDATE workspaces SET key_epoch = key_epoch + 1 WHERE id = $1")
                        .bind(w.to_string())
                        .execute(&mut *tx)
                        .await?;
                    // Pending invites carry the old workspace key: they die with it.
                    sqlx::query(
                        "UPDATE workspace_invites SET revoked_at = $2, sealed_key = $3 \
                         WHERE workspace_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
                    )
                    .bind(w.to_string())
                    .bind(rot.now_ms)
                    .bind(Vec::<u8>::new())
                    .execute(&mut *tx)
                    .await?;
                }
                Scope::Project(_, p) => {
                    let wrapped = r
                        .wrapped_key
                        .as_ref()
                        .ok_or(StorageError::NotFound("project key"))?;
                    sqlx::query(
                        "UPDATE projects SET key_epoch = key_epoch + 1, wrapped_key = $2 \
                         WHERE id = $1",
                    )
                    .bind(p.to_string())
                    .bind(wrapped.as_bytes())
                    .execute(&mut *tx)
                    .await?;
                }
                Scope::Environment(_, _, e) => {
                    let (Some(wrapped), Some(link)) = (&r.wrapped_key, &r.epoch_link) else {
                        return Err(StorageError::NotFound("environment key"));
                    };
                    sqlx::query(
                        "UPDATE environments SET key_epoch = key_epoch + 1, wrapped_key = $2 \
                         WHERE id = $1",
                    )
                    .bind(e.to_string())
                    .bind(wrapped.as_bytes())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO environment_key_epochs (environment_id, epoch, wrapped_key, \
                         created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(e.to_string())
                    .bind(i64::from(r.from_epoch))
                    .bind(link.as_bytes())
                    .bind(rot.now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        // Keys of older epochs are useless to current grantees (links reach back from the new
        // key) and only ever helped those who already held them: drop them.
        for (grant, _, _) in &state.grants {
            sqlx::query("DELETE FROM grant_keys WHERE grant_id = $1")
                .bind(grant.to_string())
                .execute(&mut *tx)
                .await?;
        }
        for (grant, k) in &rot.grant_keys {
            insert_grant_key(&mut tx, *grant, k, rot.now_ms).await?;
        }
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn own_grant_keys(
        &self,
        user: UserId,
        principal: PrincipalId,
    ) -> Result<Vec<OwnGrantKey>> {
        let sql = format!(
            "SELECT {GRANT_COLS}, k.key_epoch, k.wrapped_key{GRANT_JOINS} \
             JOIN grant_keys k ON k.grant_id = g.id AND k.principal_id = $2\
             {GRANT_LIVE} AND g.user_id = $1 ORDER BY g.created_at, g.id"
        );
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .bind(principal.to_string())
            .fetch_all(&self.reader)
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let (grant, workspace, current) = grant_row(r)?;
            let key_epoch = to_u32(r.try_get(16)?, "grant key epoch")?;
            if key_epoch == current {
                out.push(OwnGrantKey {
                    grant,
                    workspace,
                    key_epoch,
                    wrapped_key: WrappedKey::from_bytes(r.try_get(17)?),
                });
            }
        }
        Ok(out)
    }

    async fn create_device_export(
        &self,
        x: NewDeviceExport,
        audit: AuditDraft,
    ) -> Result<ExportOutcome> {
        let mut tx = self.begin_write().await?;
        if principal_taken(&mut tx, &x.principal).await? {
            return Ok(ExportOutcome::KeysTaken);
        }
        // Each key must belong to a live grant of this user at its scope's current epoch.
        let grants = grants_where(&mut tx, "g.user_id = $1", x.user.to_string()).await?;
        for (grant, k) in &x.grant_keys {
            match grants.iter().find(|(g, _, _)| g.id == *grant) {
                Some((_, _, current))
                    if *current == k.key_epoch && k.principal == x.principal.id => {}
                Some((_, _, current)) => {
                    return Ok(ExportOutcome::Stale(Stale::KeyEpoch { current: *current }))
                }
                None => return Ok(ExportOutcome::Stale(Stale::Principals)),
            }
        }
        insert_principal(
            &mut tx,
            &x.principal,
            Some(x.user),
            None,
            None,
            None,
            x.now_ms,
        )
        .await?;
        for (grant, k) in &x.grant_keys {
            insert_grant_key(&mut tx, *grant, k, x.now_ms).await?;
        }
        sqlx::query(
            "INSERT INTO device_exports (id, user_id, principal_id, auth_hash, sealed_keys, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(x.id.to_string())
        .bind(x.user.to_string())
        .bind(x.principal.id.to_string())
        .bind(&x.auth_hash[..])
        .bind(&x.sealed_keys)
        .bind(x.now_ms)
        .bind(x.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(ExportOutcome::Stored)
    }

    async fn fetch_device_export(&self, id: InviteId) -> Result<Option<DeviceExportRecord>> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE device_exports SET fetches = fetches + 1 WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT principal_id, auth_hash, sealed_keys, expires_at, fetches, completed_at \
             FROM device_exports WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let principal_id: String = row.try_get(0)?;
        let sql = format!("{PRINCIPAL_SELECT} WHERE p.id = $1");
        let p = sqlx::query(&sql)
            .bind(&principal_id)
            .fetch_one(&mut *tx)
            .await?;
        let record = DeviceExportRecord {
            id,
            principal: principal_row(&p)?,
            auth_hash: arr32(&row.try_get::<Vec<u8>, _>(1)?, "export auth hash")?,
            sealed_keys: row.try_get(2)?,
            expires_at_ms: row.try_get(3)?,
            fetches: to_u32(row.try_get(4)?, "export fetches")?,
            completed_at_ms: row.try_get(5)?,
        };
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn complete_device_export(
        &self,
        principal: PrincipalId,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE device_exports SET completed_at = $2, sealed_keys = $3 \
             WHERE principal_id = $1 AND completed_at IS NULL AND expires_at > $2",
        )
        .bind(principal.to_string())
        .bind(now_ms)
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE principals SET expires_at = NULL WHERE id = $1 AND revoked_at IS NULL")
            .bind(principal.to_string())
            .execute(&mut *tx)
            .await?;
        append_audit_tx(&mut tx, vec![audit]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn add_key_statements(&self, statements: &[KeyStatementRecord]) -> Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for st in statements {
            sqlx::query(
                "INSERT INTO key_statements \
                 (hash, workspace_id, signer_id, subject_id, recipient_id, body, signature, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(st.hash().to_vec())
            .bind(st.workspace.to_string())
            .bind(st.signer.to_string())
            .bind(&st.subject)
            .bind(st.recipient.map(|r| r.to_string()))
            .bind(&st.body)
            .bind(&st.signature)
            .bind(st.created_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn key_statements(
        &self,
        workspace: WorkspaceId,
        subjects: &[String],
    ) -> Result<Vec<KeyStatementRecord>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> =
            (0..subjects.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT signer_id, subject_id, recipient_id, body, signature, created_at \
             FROM key_statements WHERE workspace_id = $1 AND subject_id IN ({}) \
             ORDER BY created_at, hash",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(workspace.to_string());
        for s in subjects {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                let recipient: Option<String> = r.try_get(2)?;
                Ok(KeyStatementRecord {
                    workspace,
                    signer: parse_id(&r.try_get::<String, _>(0)?, "statement signer id")?,
                    subject: r.try_get(1)?,
                    recipient: recipient
                        .map(|t| parse_id(&t, "statement recipient id"))
                        .transpose()?,
                    body: r.try_get(3)?,
                    signature: r.try_get(4)?,
                    created_at_ms: r.try_get(5)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn team_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = SqliteStorage::open(&url).await.expect("open sqlite");
        super::super::super::teams_suite::run_all(&s).await;
    }
}
