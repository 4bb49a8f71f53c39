//! What one tenant of a server may learn about another (THREAT-MODEL.md, "Metadata between
//! tenants"): who is a server admin (the only principals that may read the server audit chain,
//! which names every user who ever joined), and whether two principals share a workspace (the
//! only case in which one may look the other up, unless it vouches for the other's keys by
//! fingerprint).
//!
//! A refusal here never tells a stranger whether the principal or email it asked about exists:
//! the caller gets the same NOT_FOUND as for one that does not.

use std::collections::BTreeSet;

use zopp_crypto::ids::WorkspaceId;

use super::ZoppService;
use crate::auth::Caller;
use crate::error::ServiceResult;
use crate::storage::Who;

impl ZoppService {
    /// Whether the caller is a server admin: a device of a user the server admitted itself,
    /// through an invite made with `zopp-server invite create` (a principal with no admitter,
    /// the root of its own chain). Only someone with the server's database can make such an
    /// invite. Users admitted by other users (workspace invites, device exports) and service
    /// principals are not server admins.
    pub(super) async fn is_server_admin(&self, caller: &Caller) -> ServiceResult<bool> {
        let Some(user) = caller.user_id() else {
            return Ok(false);
        };
        if caller.principal().admitted_by.is_none() {
            return Ok(true);
        }
        Ok(self
            .state
            .storage
            .user_principals(user)
            .await?
            .iter()
            .any(|p| p.admitted_by.is_none()))
    }

    /// Whether the principal or user `target` shares a workspace with the caller (holds a grant
    /// in, or is a service principal of, a workspace the caller holds a grant in), or is the
    /// caller's own user.
    pub(super) async fn shares_workspace(
        &self,
        caller: &Caller,
        target: &Who,
    ) -> ServiceResult<bool> {
        let me = caller.who();
        if target.principal == me.principal || (target.user.is_some() && target.user == me.user) {
            return Ok(true);
        }
        let mine: BTreeSet<WorkspaceId> = self
            .state
            .storage
            .workspaces_for(&me)
            .await?
            .iter()
            .map(|w| w.id)
            .collect();
        if mine.is_empty() {
            return Ok(false);
        }
        if let Some(Some(ws)) = self
            .state
            .storage
            .principal(target.principal)
            .await?
            .map(|p| p.workspace_id)
        {
            if mine.contains(&ws) {
                return Ok(true);
            }
        }
        Ok(self
            .state
            .storage
            .workspaces_for(target)
            .await?
            .iter()
            .any(|w| mine.contains(&w.id)))
    }
}
