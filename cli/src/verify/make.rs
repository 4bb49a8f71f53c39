//! The key statements this client signs (FORMAT.md §13) whenever it makes a key or wraps one:
//! scope creation and rotation (with the key's commitment), grants, child wraps and epoch links.

use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{ScopeKey, SigningKey};
use zopp_crypto::statement::{key_commitment, wrap_hash, KeyClaim, KeyStatement, StatementRole};
use zopp_crypto::wrap::KeyContext;
use zopp_proto::v1 as pb;

/// Signs statements for one workspace as one principal.
pub struct StatementMaker<'a> {
    workspace: WorkspaceId,
    signer: PrincipalId,
    key: &'a SigningKey,
}

impl<'a> StatementMaker<'a> {
    /// Statements about `workspace`, signed by `signer` with `key`.
    pub fn new(workspace: WorkspaceId, signer: PrincipalId, key: &'a SigningKey) -> Self {
        Self {
            workspace,
            signer,
            key,
        }
    }

    fn sign(&self, claim: KeyClaim) -> pb::KeyStatement {
        let signed = KeyStatement {
            workspace: self.workspace,
            signer: self.signer,
            claim,
        }
        .sign(self.key);
        pb::KeyStatement {
            body: signed.body,
            signature: signed.signature.to_vec(),
        }
    }

    /// `key` was made for `context` as generation `generation` (FORMAT.md §13.3).
    pub fn scope_key(
        &self,
        context: &KeyContext,
        generation: u32,
        key: &ScopeKey,
    ) -> pb::KeyStatement {
        self.sign(KeyClaim::ScopeKey {
            context: *context,
            generation,
            commitment: key_commitment(key, context),
        })
    }

    /// The key of `context` was wrapped to `recipient` as a grant of `role` (FORMAT.md §13.4).
    pub fn grant(
        &self,
        context: &KeyContext,
        generation: u32,
        role: StatementRole,
        recipient: PrincipalId,
        wrapped: &[u8],
    ) -> pb::KeyStatement {
        self.sign(KeyClaim::Grant {
            context: *context,
            generation,
            role,
            recipient,
            wrap_hash: wrap_hash(wrapped),
        })
    }

    /// The invite `invite` with one-time key `invite_key` may admit one principal to the key of
    /// `context` with `role` (FORMAT.md §13.6).
    pub fn invite(
        &self,
        context: &KeyContext,
        generation: u32,
        role: StatementRole,
        invite: [u8; 16],
        invite_key: [u8; 32],
    ) -> pb::KeyStatement {
        self.sign(KeyClaim::Invite {
            context: *context,
            generation,
            role,
            invite,
            invite_key,
        })
    }

    /// The key of `child` was wrapped under the key of `parent` (FORMAT.md §13.5).
    pub fn child(
        &self,
        child: (&KeyContext, u32),
        parent: (&KeyContext, u32),
        wrapped: &[u8],
    ) -> pb::KeyStatement {
        self.sign(KeyClaim::Child {
            child: *child.0,
            child_generation: child.1,
            parent: *parent.0,
            parent_generation: parent.1,
            wrap_hash: wrap_hash(wrapped),
        })
    }
}

/// The statement role of a wire role; `None` for an unspecified one.
pub fn statement_role(raw: i32) -> Option<StatementRole> {
    match pb::Role::try_from(raw) {
        Ok(pb::Role::Read) => Some(StatementRole::Read),
        Ok(pb::Role::Write) => Some(StatementRole::Write),
        Ok(pb::Role::Admin) => Some(StatementRole::Admin),
        _ => None,
    }
}
