//! Key rotation in the SDK (THREAT-MODEL.md §4.6): a fresh key for a scope and every scope
//! below it, wrapped under the parent's key and to every current grantee, with the old
//! environment keys linked under the new ones so history stays readable to those grantees.
//!
//! Nothing new is ever wrapped under an old key: a removed principal who kept every key it held
//! and later obtains a copy of the database learns nothing sealed after the rotation.

use std::collections::HashMap;

use rand_core::OsRng;
use tonic::{Code, Response};
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{ScopeKey, ScopeKind};
use zopp_crypto::wrap::{unwrap_under, wrap_to_recipient, wrap_under, KeyContext, WrappedKey};
use zopp_proto::v1 as pb;

use crate::chain::ScopeChain;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::teams::ScopeSpec;
use crate::trust::Verifier;
use crate::verify::keys::ChainStatements;
use crate::verify::make::{statement_role, StatementMaker};

/// Full gRPC method paths of the rotation RPCs, as signed (FORMAT.md §4).
pub mod method {
    /// `PrepareRotation`.
    pub const PREPARE_ROTATION: &str = "/zopp.v1.Zopp/PrepareRotation";
    /// `RotateKeys`.
    pub const ROTATE_KEYS: &str = "/zopp.v1.Zopp/RotateKeys";
}

/// What a rotation did.
#[derive(Debug)]
pub struct RotationOutcome {
    /// The rotated scope.
    pub scope: ScopeSpec,
    /// Scopes that got a new key (the rotated one and everything below it).
    pub scopes: u32,
    /// Grant keys wrapped to current grantees.
    pub grant_keys: u32,
    /// Notes for the user (roots trusted on first use).
    pub notes: Vec<String>,
}

/// A scope's old and new keys during a rotation.
struct Rekeyed {
    kind: ScopeKind,
    old: ScopeKey,
    new: ScopeKey,
    old_ctx: KeyContext,
    new_ctx: KeyContext,
    /// The new key's generation.
    new_gen: u32,
}

fn kind_of(raw: i32) -> Result<ScopeKind> {
    match pb::ScopeKind::try_from(raw) {
        Ok(pb::ScopeKind::Workspace) => Ok(ScopeKind::Workspace),
        Ok(pb::ScopeKind::Project) => Ok(ScopeKind::Project),
        Ok(pb::ScopeKind::Environment) => Ok(ScopeKind::Environment),
        _ => Err(Error::BadResponse(
            "unknown scope kind in a rotation plan".into(),
        )),
    }
}

fn id16(text: &str) -> Result<[u8; 16]> {
    // Every scope id is a UUID; the id type only names it in errors.
    WorkspaceId::try_parse(text)
        .map(|u| *u.as_bytes())
        .map_err(|_| Error::BadResponse("invalid scope id in a rotation plan".into()))
}

/// The context of a scope's key: workspace and project keys are always bound to epoch 1 (they
/// are rotated by replacement and nothing sealed names their generation); environment keys to
/// their epoch (FORMAT.md §3.1).
fn context(kind: ScopeKind, id: [u8; 16], epoch: u32) -> KeyContext {
    KeyContext {
        kind,
        id,
        epoch: if kind == ScopeKind::Environment {
            epoch
        } else {
            1
        },
    }
}

impl Client {
    /// Rotates the key of `scope` and of every scope below it. `fingerprints` vouch for chain
    /// roots of grantees this client does not know yet.
    ///
    /// # Errors
    /// PERMISSION_DENIED without the admin role on `scope` or without a grant covering its
    /// parent; [`Error::Untrusted`] when a grantee's keys do not check out (nothing is sent);
    /// [`Error::Conflict`] when grants or scopes changed meanwhile; transport errors.
    pub async fn rotate_keys(
        &self,
        scope: &ScopeSpec,
        fingerprints: &[String],
    ) -> Result<RotationOutcome> {
        let req = self.signed(
            method::PREPARE_ROTATION,
            pb::PrepareRotationRequest {
                scope: Some(scope.to_proto()),
            },
        );
        let plan = self
            .rpc()
            .prepare_rotation(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, Some(scope)))?;
        let me = self.identity();
        let parent_keys = plan
            .parent_keys
            .as_ref()
            .ok_or_else(|| Error::BadResponse("the rotation plan has no parent key".into()))?;
        let parent = ScopeChain::derive(parent_keys, me.principal(), &me.keys().agreement)
            .map_err(|e| Error::KeyChain {
                scope: scope.describe(),
                reason: e.to_string(),
            })?;
        // The key everything new is wrapped under must be the scope's real key.
        self.authenticate_chain(
            parent.trail(),
            parent.workspace(),
            ChainStatements::of_scope(parent_keys),
            &scope.describe(),
        )?;
        let maker = StatementMaker::new(parent.workspace(), me.principal(), &me.keys().signing);
        let mut statements = Vec::new();

        // Every grantee is checked before anything is wrapped to it.
        let described = pb::GetPrincipalsResponse {
            target_ids: Vec::new(),
            principals: plan.principals.clone(),
            workspace_id: plan.workspace_id.clone(),
            workspace_creator_id: plan.workspace_creator_id.clone(),
        };
        let mut store = self.trust_store()?;
        let mut verifier = Verifier::new(
            &described,
            me.principal(),
            me.keys().signing.verifying_key(),
            fingerprints,
            &mut store,
        )?;

        let mut done: HashMap<String, Rekeyed> = HashMap::new();
        let mut keys = Vec::with_capacity(plan.scopes.len());
        let mut grants = Vec::new();
        let mut n_keys = 0u32;
        for (i, s) in plan.scopes.iter().enumerate() {
            let kind = kind_of(s.kind)?;
            let id = id16(&s.id)?;
            let old_ctx = context(kind, id, s.key_epoch);
            let new_ctx = context(kind, id, s.key_epoch.saturating_add(1));
            let root = i == 0;
            // The key a scope's current key is wrapped under, and the one its new key will be:
            // the parent's old and new keys, or for the rotated scope its unchanged parent.
            let (under_old, under_old_ctx, under_new, under_new_ctx, under_new_gen) = if root {
                (
                    parent.key(),
                    parent.context(),
                    parent.key(),
                    parent.context(),
                    parent.generation(),
                )
            } else {
                let p = done.get(&s.parent_id).ok_or_else(|| {
                    Error::BadResponse("a rotation plan lists a child before its parent".into())
                })?;
                (&p.old, p.old_ctx, &p.new, p.new_ctx, p.new_gen)
            };
            let new_gen = s.key_epoch.saturating_add(1);
            let old = if kind == ScopeKind::Workspace {
                // The rotated workspace's current key is the parent chain's own key.
                parent.key().clone()
            } else {
                unwrap_under(
                    &WrappedKey::from_bytes(s.wrapped_key.clone()),
                    &old_ctx,
                    under_old,
                    &under_old_ctx,
                )
                .map_err(|_| Error::KeyChain {
                    scope: format!("'{}'", s.name),
                    reason: "its current key does not open with its parent's key".into(),
                })?
            };
            let new = ScopeKey::generate(&mut OsRng);
            let (wrapped_key, epoch_link) = match kind {
                ScopeKind::Workspace => (Vec::new(), Vec::new()),
                ScopeKind::Project => (
                    wrap_under(&new, &new_ctx, under_new, &under_new_ctx, &mut OsRng).into_bytes(),
                    Vec::new(),
                ),
                ScopeKind::Environment => (
                    wrap_under(&new, &new_ctx, under_new, &under_new_ctx, &mut OsRng).into_bytes(),
                    // EK(n) under EK(n + 1): history stays readable, the future does not leak.
                    wrap_under(&old, &old_ctx, &new, &new_ctx, &mut OsRng).into_bytes(),
                ),
            };
            // The rotating admin vouches for every key and wrap it makes (FORMAT.md §13).
            statements.push(maker.scope_key(&new_ctx, new_gen, &new));
            if !wrapped_key.is_empty() {
                statements.push(maker.child(
                    (&new_ctx, new_gen),
                    (&under_new_ctx, under_new_gen),
                    &wrapped_key,
                ));
            }
            if !epoch_link.is_empty() {
                statements.push(maker.child(
                    (&old_ctx, s.key_epoch),
                    (&new_ctx, new_gen),
                    &epoch_link,
                ));
            }
            keys.push(pb::RotatedKey {
                scope_id: s.id.clone(),
                kind: s.kind,
                from_epoch: s.key_epoch,
                wrapped_key,
                epoch_link,
            });
            for g in &s.grants {
                let role = statement_role(g.role).ok_or_else(|| {
                    Error::BadResponse("a rotation plan lists a grant without its role".into())
                })?;
                let mut wrapped = Vec::with_capacity(g.principal_ids.len());
                for pid in &g.principal_ids {
                    let pid = PrincipalId::try_parse(pid)
                        .map_err(|_| Error::BadResponse("invalid principal id".into()))?;
                    let trusted = verifier.verify(pid, &mut store)?;
                    let w = wrap_to_recipient(&new, &new_ctx, &pid, &trusted.agreement, &mut OsRng)
                        .map_err(|_| Error::Untrusted {
                            message: format!(
                                "principal {pid} ({}) has an unusable X25519 key",
                                trusted.label
                            ),
                            fingerprint: None,
                        })?;
                    statements.push(maker.grant(&new_ctx, new_gen, role, pid, w.as_bytes()));
                    wrapped.push(pb::WrappedGrantKey {
                        principal_id: pid.to_string(),
                        key_epoch: new_gen,
                        wrapped_key: w.into_bytes(),
                    });
                    n_keys += 1;
                }
                grants.push(pb::RotatedGrantKeys {
                    grant_id: g.grant_id.clone(),
                    keys: wrapped,
                });
            }
            done.insert(
                s.id.clone(),
                Rekeyed {
                    kind,
                    old,
                    new,
                    old_ctx,
                    new_ctx,
                    new_gen,
                },
            );
        }
        let notes = verifier.notes().to_vec();
        store.save()?;
        let req = self.signed(
            method::ROTATE_KEYS,
            pb::RotateKeysRequest {
                scope: Some(scope.to_proto()),
                keys,
                grants,
                statements,
            },
        );
        let resp = self
            .rpc()
            .rotate_keys(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| match s.code() {
                Code::Aborted => Error::Conflict(s.message().to_owned()),
                _ => self.team_error(s, Some(scope)),
            })?;
        // Cached chains of the rotated environments are stale now; the next read refreshes them.
        if done.values().any(|r| r.kind != ScopeKind::Environment) {
            self.cache().clear();
        } else if let Some(env) = scope.env_ref() {
            self.cache().remove(&env);
        }
        debug_assert_eq!(resp.grant_keys, n_keys);
        Ok(RotationOutcome {
            scope: scope.clone(),
            scopes: resp.scopes,
            grant_keys: resp.grant_keys,
            notes,
        })
    }
}
