//! `ListAudit`: one page of a workspace's audit chain (or the server's), with the chain head so
//! clients can detect truncation, and the actors' public keys so they can check signatures.

use zopp_crypto::ids::PrincipalId;
use zopp_proto::v1::{ListAuditRequest, ListAuditResponse};

use super::{convert, ZoppService};
use crate::auth::Caller;
use crate::error::{ServiceError, ServiceResult};
use crate::rbac::{self, Action, Scope, Subject};
use crate::storage::{AuditChain, AuditQuery, NamePath};

/// Entries per page when the request does not say.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page.
pub const MAX_PAGE: u32 = 1000;

impl ZoppService {
    pub(super) async fn list_audit_rpc(
        &self,
        caller: Caller,
        m: ListAuditRequest,
    ) -> ServiceResult<ListAuditResponse> {
        let chain = if m.workspace.is_empty() {
            let subject = Subject {
                kind: caller.kind(),
                grants: &[],
            };
            rbac::authorize(&subject, Action::ReadAudit, &Scope::Server)
                .map_err(|d| super::denial(d, Action::ReadAudit, "this server"))?;
            // The server chain names every user who ever joined: server admins only.
            if !self.is_server_admin(&caller).await? {
                return Err(ServiceError::PermissionDenied(
                    "reading the server audit trail needs a server admin (a user who joined \
                     with an invite from `zopp-server invite create`)"
                        .into(),
                ));
            }
            AuditChain::Server
        } else {
            let r = self
                .resolve(
                    &caller,
                    NamePath {
                        workspace: &m.workspace,
                        project: None,
                        environment: None,
                    },
                )
                .await?;
            let scope = r.ws_scope();
            self.authorize(&caller, &r, Action::ReadAudit, &scope, "audit.read")
                .await?;
            AuditChain::Workspace(r.workspace.id)
        };
        let actor = if m.principal_id.is_empty() {
            None
        } else {
            Some(PrincipalId::try_parse(&m.principal_id).map_err(|_| {
                ServiceError::InvalidArgument(format!("invalid principal id '{}'", m.principal_id))
            })?)
        };
        if m.since_ms < 0 || m.until_ms < 0 {
            return Err(ServiceError::InvalidArgument(
                "since_ms and until_ms must not be negative".into(),
            ));
        }
        let query = AuditQuery {
            after_seq: m.after_seq,
            limit: match m.limit {
                0 => DEFAULT_PAGE,
                n => n.min(MAX_PAGE),
            },
            since_ms: (m.since_ms != 0).then_some(m.since_ms),
            until_ms: (m.until_ms != 0).then_some(m.until_ms),
            action: (!m.action.is_empty()).then(|| m.action.clone()),
            actor,
        };
        let page = self.state.storage.list_audit(chain, &query).await?;
        let mut actor_ids: Vec<PrincipalId> =
            page.entries.iter().filter_map(|e| e.draft.actor).collect();
        // A page of a thousand entries usually names a handful of actors.
        actor_ids.sort_unstable();
        actor_ids.dedup();
        let actors = if actor_ids.is_empty() {
            Vec::new()
        } else {
            self.state.storage.principals(&actor_ids).await?
        };
        Ok(ListAuditResponse {
            entries: page.entries.into_iter().map(convert::audit_entry).collect(),
            actors: actors.iter().map(convert::principal_public).collect(),
            head_seq: page.head_seq,
            head_hash: page.head_hash.to_vec(),
        })
    }
}
