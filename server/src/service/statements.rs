//! Signed key statements (threat-model/FORMAT.md §13): the server checks that a submitted
//! statement is well formed and signed by the caller, stores it beside what it authorizes, and
//! returns the statements of a key chain with the chain. It never makes one (it has no member's
//! key) and never decides whether a statement is legitimate: clients do, against their pins.

use std::collections::HashSet;

use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::statement::{KeyClaim, SignedKeyStatement};
use zopp_proto::v1::{EnvironmentKeys, KeyStatement, PrincipalInfo, ScopeKeys};

use super::teams::principal_info;
use super::ZoppService;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::teams::KeyStatementRecord;

/// Most statements one request may carry (a rotation re-wraps every grant key of a subtree).
const MAX_STATEMENTS: usize = 20_000;

/// Statements returned with one key chain, and what a client needs to check them.
pub(super) struct ChainStatements {
    pub(super) statements: Vec<KeyStatement>,
    pub(super) signers: Vec<PrincipalInfo>,
    pub(super) creator: String,
}

/// Parses and checks statements signed by `signer` (holding `key`) for `workspace`.
///
/// # Errors
/// `InvalidArgument` naming the first statement that is malformed, names another workspace or
/// signer, or whose signature does not verify.
pub(super) fn check_statements(
    workspace: WorkspaceId,
    signer: PrincipalId,
    key: &VerifyingKey,
    statements: &[KeyStatement],
    now_ms: i64,
) -> ServiceResult<Vec<KeyStatementRecord>> {
    check(Some(workspace), signer, key, statements, now_ms)
}

/// As [`check_statements`] for statements about several workspaces (a device export carries
/// grant keys of every workspace its user belongs to).
pub(super) fn check_statements_any_workspace(
    signer: PrincipalId,
    key: &VerifyingKey,
    statements: &[KeyStatement],
    now_ms: i64,
) -> ServiceResult<Vec<KeyStatementRecord>> {
    check(None, signer, key, statements, now_ms)
}

fn check(
    workspace: Option<WorkspaceId>,
    signer: PrincipalId,
    key: &VerifyingKey,
    statements: &[KeyStatement],
    now_ms: i64,
) -> ServiceResult<Vec<KeyStatementRecord>> {
    if statements.len() > MAX_STATEMENTS {
        return Err(ServiceError::InvalidArgument(format!(
            "at most {MAX_STATEMENTS} key statements per request"
        )));
    }
    statements
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let bad = |why: &str| {
                ServiceError::InvalidArgument(format!("key statement {}: {why}", i + 1))
            };
            let parsed = SignedKeyStatement::try_from_parts(&st.body, &st.signature)
                .map_err(|e| bad(&e.to_string()))?;
            let s = parsed.statement;
            if workspace.is_some_and(|w| w != s.workspace) {
                return Err(bad("it names another workspace"));
            }
            if s.signer != signer {
                return Err(bad("it must be signed by the calling principal"));
            }
            parsed
                .verify(key)
                .map_err(|_| bad("its signature does not verify under the caller's key"))?;
            let (subject, recipient) = match s.claim {
                KeyClaim::ScopeKey { context, .. } => (context.id, None),
                KeyClaim::Grant {
                    context, recipient, ..
                } => (context.id, Some(recipient)),
                KeyClaim::Child { child, .. } => (child.id, None),
                KeyClaim::Invite { context, .. } => (context.id, None),
            };
            Ok(KeyStatementRecord {
                workspace: s.workspace,
                signer,
                subject: uuid::Uuid::from_bytes(subject).to_string(),
                recipient,
                body: st.body.clone(),
                signature: st.signature.clone(),
                created_at_ms: now_ms,
            })
        })
        .collect()
}

impl ZoppService {
    /// The statements about the scopes `subjects` (scope ids, text form) that a chain opened by
    /// `recipient` needs: every scope-key, child and invite statement, the grant statements made
    /// out to `recipient`, and those made out to any signer of an included statement (which
    /// prove the signers' roles), with the signers' admission chains and the workspace's
    /// creator.
    pub(super) async fn chain_statements(
        &self,
        workspace: WorkspaceId,
        subjects: &[String],
        recipient: PrincipalId,
    ) -> ServiceResult<ChainStatements> {
        let rows = self
            .state
            .storage
            .key_statements(workspace, subjects)
            .await?;
        let mut wanted: HashSet<PrincipalId> = HashSet::from([recipient]);
        let mut take = vec![false; rows.len()];
        loop {
            let mut grew = false;
            for (i, r) in rows.iter().enumerate() {
                if !take[i] && r.recipient.is_none_or(|p| wanted.contains(&p)) {
                    take[i] = true;
                    grew |= wanted.insert(r.signer);
                }
            }
            if !grew {
                break;
            }
        }
        let rows: Vec<_> = rows
            .into_iter()
            .zip(take)
            .filter_map(|(r, t)| t.then_some(r))
            .collect();
        let meta = self
            .state
            .storage
            .workspace_meta(workspace)
            .await?
            .ok_or_else(|| ServiceError::NotFound("workspace not found".into()))?;
        let mut start: Vec<PrincipalId> = rows
            .iter()
            .map(|r| r.signer)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        start.push(meta.creator);
        let signers = self.admission_closure(&start).await?;
        Ok(ChainStatements {
            statements: rows
                .into_iter()
                .map(|r| KeyStatement {
                    body: r.body,
                    signature: r.signature,
                })
                .collect(),
            signers: signers.iter().map(principal_info).collect(),
            creator: meta.creator.to_string(),
        })
    }
}

impl ZoppService {
    /// Adds the statements of an environment's chain to `keys` (GetEnvironment and
    /// FetchEnvironment; the per-secret reads leave them out to stay one small query).
    pub(super) async fn attach_environment_statements(
        &self,
        caller: PrincipalId,
        keys: &mut EnvironmentKeys,
    ) -> ServiceResult<()> {
        let workspace = parse_workspace(&keys.workspace_id)?;
        let subjects = [
            keys.workspace_id.clone(),
            keys.project_id.clone(),
            keys.environment_id.clone(),
        ];
        let found = self.chain_statements(workspace, &subjects, caller).await?;
        keys.statements = found.statements;
        keys.signers = found.signers;
        keys.workspace_creator_id = found.creator;
        Ok(())
    }

    /// Adds the statements of a workspace's or project's chain to `keys`.
    pub(super) async fn attach_scope_statements(
        &self,
        caller: PrincipalId,
        keys: &mut ScopeKeys,
    ) -> ServiceResult<()> {
        let workspace = parse_workspace(&keys.workspace_id)?;
        let mut subjects = vec![keys.workspace_id.clone()];
        if !keys.project_id.is_empty() {
            subjects.push(keys.project_id.clone());
        }
        let found = self.chain_statements(workspace, &subjects, caller).await?;
        keys.statements = found.statements;
        keys.signers = found.signers;
        keys.workspace_creator_id = found.creator;
        Ok(())
    }
}

fn parse_workspace(text: &str) -> ServiceResult<WorkspaceId> {
    WorkspaceId::try_parse(text)
        .map_err(|_| ServiceError::Internal("a stored workspace id does not parse".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zopp_crypto::keys::{ScopeKind, SigningKey};
    use zopp_crypto::statement::KeyStatement as Statement;
    use zopp_crypto::wrap::KeyContext;

    const WS: WorkspaceId = WorkspaceId::from_bytes([1; 16]);
    const ME: PrincipalId = PrincipalId::from_bytes([2; 16]);

    fn signed(workspace: WorkspaceId, signer: PrincipalId, key: &SigningKey) -> KeyStatement {
        let s = Statement {
            workspace,
            signer,
            claim: KeyClaim::ScopeKey {
                context: KeyContext {
                    kind: ScopeKind::Project,
                    id: [3; 16],
                    epoch: 1,
                },
                generation: 1,
                commitment: [4; 32],
            },
        }
        .sign(key);
        KeyStatement {
            body: s.body,
            signature: s.signature.to_vec(),
        }
    }

    #[test]
    fn accepts_only_the_callers_well_signed_statements_for_the_workspace() {
        let key = SigningKey::from_seed(&[5; 32]);
        let vk = key.verifying_key();
        let ok = check_statements(WS, ME, &vk, &[signed(WS, ME, &key)], 7).expect("valid");
        assert_eq!(ok[0].subject, uuid::Uuid::from_bytes([3; 16]).to_string());
        assert_eq!(ok[0].created_at_ms, 7);
        let other_ws = WorkspaceId::from_bytes([9; 16]);
        assert!(check_statements(WS, ME, &vk, &[signed(other_ws, ME, &key)], 0).is_err());
        let other = PrincipalId::from_bytes([9; 16]);
        assert!(check_statements(WS, ME, &vk, &[signed(WS, other, &key)], 0).is_err());
        let mallory = SigningKey::from_seed(&[6; 32]);
        assert!(check_statements(WS, ME, &vk, &[signed(WS, ME, &mallory)], 0).is_err());
        let mut garbled = signed(WS, ME, &key);
        garbled.body.truncate(10);
        assert!(check_statements(WS, ME, &vk, &[garbled], 0).is_err());
    }
}
