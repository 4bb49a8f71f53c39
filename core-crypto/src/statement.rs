//! Signed key statements and key commitments (FORMAT.md §13).
//!
//! A wrapped key proves nothing about who made it: anyone who knows a principal's public X25519
//! key can wrap a key of their choosing to it. So every key a client uses comes with a statement
//! signed by the principal that made it: a **scope-key statement** (a scope's key was created or
//! rotated, with a public commitment to the key), a **grant statement** (a scope key was wrapped
//! to a recipient with a role) and a **child statement** (a child key was wrapped under its
//! parent's key, or an older epoch's key under the newer one). The commitment lets a client
//! detect a substituted key even when it decrypts.
//!
//! This module only encodes, signs, decodes and verifies single statements; which signer is
//! legitimate for which statement is the client's decision (it needs admission chains and pins).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::{PrincipalId, WorkspaceId};
use crate::keys::{ScopeKey, ScopeKind, SigningKey, VerifyingKey, SIGNATURE_LEN};
use crate::wrap::KeyContext;
use crate::{sha256, CryptoError, Result};

/// HMAC message prefix of a key commitment (§13.1); only ever MACed, never signed.
pub const KEY_COMMITMENT_LABEL: &[u8] = b"zopp/v1/key-commitment";
/// Signed label of a scope-key statement: creation or rotation of a scope's key (§13.3).
pub const SCOPE_KEY_LABEL: &[u8] = b"zopp/v1/key-scope";
/// Signed label of a grant statement: a scope key wrapped to a recipient (§13.4).
pub const GRANT_LABEL: &[u8] = b"zopp/v1/key-grant";
/// Signed label of a child statement: a key wrapped under another (§13.5).
pub const CHILD_LABEL: &[u8] = b"zopp/v1/key-child";
/// Signed label of an invite statement: an invite's one-time key may admit one principal with
/// a role (§13.6).
pub const INVITE_LABEL: &[u8] = b"zopp/v1/key-invite";

/// Bytes of an encoded key context.
const CONTEXT_LEN: usize = 21;
/// Bytes of the header shared by every statement, after its label: workspace and signer ids.
const HEADER_LEN: usize = 32;
/// Encoded length of a scope-key statement.
pub const SCOPE_KEY_LEN: usize = 17 + HEADER_LEN + CONTEXT_LEN + 4 + 32;
/// Encoded length of a grant statement.
pub const GRANT_LEN: usize = 17 + HEADER_LEN + CONTEXT_LEN + 4 + 1 + 16 + 32;
/// Encoded length of a child statement.
pub const CHILD_LEN: usize = 17 + HEADER_LEN + 2 * (CONTEXT_LEN + 4) + 32;
/// Encoded length of an invite statement.
pub const INVITE_LEN: usize = 18 + HEADER_LEN + CONTEXT_LEN + 4 + 1 + 16 + 32;

/// A public commitment to a scope key: `HMAC(key, "zopp/v1/key-commitment" ‖ KeyContext)`.
///
/// Binding (finding a second key with the same commitment means a SHA-256 collision) and hiding
/// (HMAC is a PRF), so it can be published beside the key's identity.
pub fn key_commitment(key: &ScopeKey, ctx: &KeyContext) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
        .expect("HMAC-SHA256 accepts any key length");
    mac.update(KEY_COMMITMENT_LABEL);
    mac.update(&encode_context(ctx));
    mac.finalize().into_bytes().into()
}

/// SHA-256 of a wrapped key's bytes, as statements bind it.
pub fn wrap_hash(wrapped: &[u8]) -> [u8; 32] {
    sha256(wrapped)
}

/// Role named by a grant statement (the byte it encodes as).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum StatementRole {
    /// Read.
    Read = 1,
    /// Write.
    Write = 2,
    /// Admin.
    Admin = 3,
}

impl StatementRole {
    fn try_from_byte(b: u8) -> Result<Self> {
        match b {
            1 => Ok(Self::Read),
            2 => Ok(Self::Write),
            3 => Ok(Self::Admin),
            _ => Err(CryptoError::Malformed("key statement role")),
        }
    }
}

/// What a statement says (FORMAT.md §13.3–§12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyClaim {
    /// A scope's key of `generation` was created or rotated; `commitment` is its
    /// [`key_commitment`]. For an environment, `generation` equals `context.epoch`.
    ScopeKey {
        /// The key's context.
        context: KeyContext,
        /// Key generation (the epoch of an environment key; the rotation count of a workspace
        /// or project key, whose context epoch stays 1).
        generation: u32,
        /// The key's commitment.
        commitment: [u8; 32],
    },
    /// The key of `context` (generation `generation`) was wrapped to `recipient` as a grant of
    /// `role`; `wrap_hash` is SHA-256 of the wrap bytes.
    Grant {
        /// The granted key's context.
        context: KeyContext,
        /// Its generation.
        generation: u32,
        /// The role granted.
        role: StatementRole,
        /// The principal the key was wrapped to.
        recipient: PrincipalId,
        /// SHA-256 of the wrapped key.
        wrap_hash: [u8; 32],
    },
    /// The key of `child` was wrapped under the key of `parent` (a project key under the
    /// workspace key, an environment key under the project key, or an epoch link: EK(n) under
    /// EK(n+1)).
    Child {
        /// The wrapped key's context.
        child: KeyContext,
        /// Its generation.
        child_generation: u32,
        /// The wrapping key's context.
        parent: KeyContext,
        /// Its generation.
        parent_generation: u32,
        /// SHA-256 of the wrapped key.
        wrap_hash: [u8; 32],
    },
    /// The invite `invite` (one-time Ed25519 key `invite_key`) may admit one principal to the
    /// key of `context` with `role`: the joiner's own grant statement claims at most this role.
    Invite {
        /// The workspace key's context.
        context: KeyContext,
        /// Its generation (the key sealed in the invite).
        generation: u32,
        /// The role the joiner receives.
        role: StatementRole,
        /// The invite's id.
        invite: [u8; 16],
        /// The invite's one-time public key.
        invite_key: [u8; 32],
    },
}

/// A key statement: who made it, in which workspace, and its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyStatement {
    /// The workspace the statement belongs to.
    pub workspace: WorkspaceId,
    /// The principal that signs it.
    pub signer: PrincipalId,
    /// What it says.
    pub claim: KeyClaim,
}

fn encode_context(ctx: &KeyContext) -> [u8; CONTEXT_LEN] {
    let mut b = [0u8; CONTEXT_LEN];
    b[0] = ctx.kind as u8;
    b[1..17].copy_from_slice(&ctx.id);
    b[17..].copy_from_slice(&ctx.epoch.to_be_bytes());
    b
}

/// Reads fixed-width fields front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at returned N bytes")
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn context(&mut self) -> Result<KeyContext> {
        let kind = match self.take::<1>()[0] {
            1 => ScopeKind::Workspace,
            2 => ScopeKind::Project,
            3 => ScopeKind::Environment,
            _ => return Err(CryptoError::Malformed("key statement scope kind")),
        };
        let id = self.take();
        let epoch = self.u32();
        if epoch == 0 {
            return Err(CryptoError::Malformed("key statement epoch"));
        }
        Ok(KeyContext { kind, id, epoch })
    }
}

impl KeyStatement {
    /// The canonical bytes that are signed and stored (FORMAT.md §13.2).
    pub fn encode(&self) -> Vec<u8> {
        let (label, len) = match self.claim {
            KeyClaim::ScopeKey { .. } => (SCOPE_KEY_LABEL, SCOPE_KEY_LEN),
            KeyClaim::Grant { .. } => (GRANT_LABEL, GRANT_LEN),
            KeyClaim::Child { .. } => (CHILD_LABEL, CHILD_LEN),
            KeyClaim::Invite { .. } => (INVITE_LABEL, INVITE_LEN),
        };
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(label);
        m.extend_from_slice(self.workspace.as_bytes());
        m.extend_from_slice(self.signer.as_bytes());
        match &self.claim {
            KeyClaim::ScopeKey {
                context,
                generation,
                commitment,
            } => {
                m.extend_from_slice(&encode_context(context));
                m.extend_from_slice(&generation.to_be_bytes());
                m.extend_from_slice(commitment);
            }
            KeyClaim::Grant {
                context,
                generation,
                role,
                recipient,
                wrap_hash,
            } => {
                m.extend_from_slice(&encode_context(context));
                m.extend_from_slice(&generation.to_be_bytes());
                m.push(*role as u8);
                m.extend_from_slice(recipient.as_bytes());
                m.extend_from_slice(wrap_hash);
            }
            KeyClaim::Child {
                child,
                child_generation,
                parent,
                parent_generation,
                wrap_hash,
            } => {
                m.extend_from_slice(&encode_context(child));
                m.extend_from_slice(&child_generation.to_be_bytes());
                m.extend_from_slice(&encode_context(parent));
                m.extend_from_slice(&parent_generation.to_be_bytes());
                m.extend_from_slice(wrap_hash);
            }
            KeyClaim::Invite {
                context,
                generation,
                role,
                invite,
                invite_key,
            } => {
                m.extend_from_slice(&encode_context(context));
                m.extend_from_slice(&generation.to_be_bytes());
                m.push(*role as u8);
                m.extend_from_slice(invite);
                m.extend_from_slice(invite_key);
            }
        }
        debug_assert_eq!(m.len(), len);
        m
    }

    /// Parses canonical bytes, refusing anything [`KeyStatement::encode`] would not produce.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedFormat`] for an unknown label; [`CryptoError::Malformed`] for a
    /// wrong length, an unknown scope kind or role, a zero epoch or generation, or an
    /// environment generation that differs from its epoch.
    pub fn try_decode(bytes: &[u8]) -> Result<Self> {
        let (kind, label, len) = if bytes.starts_with(SCOPE_KEY_LABEL) {
            (0, SCOPE_KEY_LABEL, SCOPE_KEY_LEN)
        } else if bytes.starts_with(GRANT_LABEL) {
            (1, GRANT_LABEL, GRANT_LEN)
        } else if bytes.starts_with(CHILD_LABEL) {
            (2, CHILD_LABEL, CHILD_LEN)
        } else if bytes.starts_with(INVITE_LABEL) {
            (3, INVITE_LABEL, INVITE_LEN)
        } else {
            return Err(CryptoError::UnsupportedFormat);
        };
        if bytes.len() != len {
            return Err(CryptoError::Malformed("key statement length"));
        }
        let mut r = Reader(&bytes[label.len()..]);
        let workspace = WorkspaceId::from_bytes(r.take());
        let signer = PrincipalId::from_bytes(r.take());
        let generation = |r: &mut Reader<'_>, ctx: &KeyContext| {
            let g = r.u32();
            let bad = g == 0 || (ctx.kind == ScopeKind::Environment && g != ctx.epoch);
            if bad || (ctx.kind != ScopeKind::Environment && ctx.epoch != 1) {
                return Err(CryptoError::Malformed("key statement generation"));
            }
            Ok(g)
        };
        let claim = match kind {
            0 => {
                let context = r.context()?;
                let generation = generation(&mut r, &context)?;
                KeyClaim::ScopeKey {
                    context,
                    generation,
                    commitment: r.take(),
                }
            }
            1 => {
                let context = r.context()?;
                let generation = generation(&mut r, &context)?;
                let role = StatementRole::try_from_byte(r.take::<1>()[0])?;
                KeyClaim::Grant {
                    context,
                    generation,
                    role,
                    recipient: PrincipalId::from_bytes(r.take()),
                    wrap_hash: r.take(),
                }
            }
            3 => {
                let context = r.context()?;
                let generation = generation(&mut r, &context)?;
                if context.kind != ScopeKind::Workspace {
                    return Err(CryptoError::Malformed("invite statement scope kind"));
                }
                let role = StatementRole::try_from_byte(r.take::<1>()[0])?;
                KeyClaim::Invite {
                    context,
                    generation,
                    role,
                    invite: r.take(),
                    invite_key: r.take(),
                }
            }
            _ => {
                let child = r.context()?;
                let child_generation = generation(&mut r, &child)?;
                let parent = r.context()?;
                let parent_generation = generation(&mut r, &parent)?;
                KeyClaim::Child {
                    child,
                    child_generation,
                    parent,
                    parent_generation,
                    wrap_hash: r.take(),
                }
            }
        };
        Ok(Self {
            workspace,
            signer,
            claim,
        })
    }

    /// Signs the statement with the signer's key.
    pub fn sign(&self, key: &SigningKey) -> SignedKeyStatement {
        let body = self.encode();
        let signature = key.sign(&body);
        SignedKeyStatement {
            statement: *self,
            body,
            signature,
        }
    }
}

/// A statement with its canonical bytes and signature, as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKeyStatement {
    /// The decoded statement.
    pub statement: KeyStatement,
    /// Its canonical bytes (what was signed).
    pub body: Vec<u8>,
    /// The signer's Ed25519 signature over `body`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedKeyStatement {
    /// Parses a stored or received statement (not yet verified).
    ///
    /// # Errors
    /// As [`KeyStatement::try_decode`]; [`CryptoError::Malformed`] for a signature that is not
    /// 64 bytes.
    pub fn try_from_parts(body: &[u8], signature: &[u8]) -> Result<Self> {
        let statement = KeyStatement::try_decode(body)?;
        let signature: [u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| CryptoError::Malformed("key statement signature"))?;
        Ok(Self {
            statement,
            body: body.to_vec(),
            signature,
        })
    }

    /// Verifies the signature under the signer's key (strictly, FORMAT.md §1).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, signer_key: &VerifyingKey) -> Result<()> {
        signer_key.verify(&self.body, &self.signature)
    }

    /// SHA-256 of body and signature: identifies this exact signed statement.
    pub fn hash(&self) -> [u8; 32] {
        let mut b = Vec::with_capacity(self.body.len() + SIGNATURE_LEN);
        b.extend_from_slice(&self.body);
        b.extend_from_slice(&self.signature);
        sha256(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const WS: [u8; 16] = [0x11; 16];
    const SIGNER: [u8; 16] = [0x22; 16];
    const RECIPIENT: [u8; 16] = [0x33; 16];
    const SEED: [u8; 32] = [0x44; 32];
    const KEY: [u8; 32] = [0x55; 32];

    fn ctx(kind: ScopeKind, epoch: u32) -> KeyContext {
        KeyContext {
            kind,
            id: [kind as u8; 16],
            epoch,
        }
    }

    fn statement(claim: KeyClaim) -> KeyStatement {
        KeyStatement {
            workspace: WorkspaceId::from_bytes(WS),
            signer: PrincipalId::from_bytes(SIGNER),
            claim,
        }
    }

    fn claims() -> Vec<KeyClaim> {
        vec![
            KeyClaim::ScopeKey {
                context: ctx(ScopeKind::Environment, 3),
                generation: 3,
                commitment: [7; 32],
            },
            KeyClaim::Grant {
                context: ctx(ScopeKind::Workspace, 1),
                generation: 2,
                role: StatementRole::Admin,
                recipient: PrincipalId::from_bytes(RECIPIENT),
                wrap_hash: [8; 32],
            },
            KeyClaim::Child {
                child: ctx(ScopeKind::Environment, 1),
                child_generation: 1,
                parent: ctx(ScopeKind::Environment, 2),
                parent_generation: 2,
                wrap_hash: [9; 32],
            },
            KeyClaim::Invite {
                context: ctx(ScopeKind::Workspace, 1),
                generation: 1,
                role: StatementRole::Write,
                invite: [10; 16],
                invite_key: [11; 32],
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_and_verifies() {
        let key = SigningKey::from_seed(&SEED);
        for claim in claims() {
            let s = statement(claim);
            let body = s.encode();
            assert_eq!(KeyStatement::try_decode(&body).expect("decodes"), s);
            let signed = s.sign(&key);
            let parsed = SignedKeyStatement::try_from_parts(&signed.body, &signed.signature)
                .expect("parses");
            parsed.verify(&key.verifying_key()).expect("verifies");
            assert!(parsed
                .verify(&SigningKey::from_seed(&[1; 32]).verifying_key())
                .is_err());
        }
    }

    #[test]
    fn labels_are_distinct_and_no_prefix_of_another_signed_label() {
        let signed: [&[u8]; 8] = [
            SCOPE_KEY_LABEL,
            GRANT_LABEL,
            CHILD_LABEL,
            INVITE_LABEL,
            crate::sign::REQUEST_LABEL,
            crate::sign::ADMIT_LABEL,
            crate::sign::JOIN_LABEL,
            crate::sign::VERSION_LABEL,
        ];
        for (i, a) in signed.iter().enumerate() {
            for (j, b) in signed.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a:?} is a prefix of {b:?}");
                }
            }
        }
    }

    #[test]
    fn commitment_binds_key_and_context() {
        let k = ScopeKey::from_bytes(KEY);
        let c = key_commitment(&k, &ctx(ScopeKind::Project, 1));
        assert_ne!(c, key_commitment(&k, &ctx(ScopeKind::Workspace, 1)));
        assert_ne!(
            c,
            key_commitment(
                &ScopeKey::from_bytes([0x56; 32]),
                &ctx(ScopeKind::Project, 1)
            )
        );
        assert_eq!(c, key_commitment(&k, &ctx(ScopeKind::Project, 1)));
    }

    #[rstest]
    #[case::unknown_label(b"zopp/v1/key-other".to_vec(), CryptoError::UnsupportedFormat)]
    #[case::empty(Vec::new(), CryptoError::UnsupportedFormat)]
    fn unknown_labels_are_unsupported(#[case] body: Vec<u8>, #[case] err: CryptoError) {
        assert_eq!(KeyStatement::try_decode(&body).expect_err("refused"), err);
    }

    #[test]
    fn malformed_fields_are_refused() {
        for claim in claims() {
            let body = statement(claim).encode();
            let mut longer = body.clone();
            longer.push(0);
            assert!(KeyStatement::try_decode(&longer).is_err());
            assert!(KeyStatement::try_decode(&body[..body.len() - 1]).is_err());
            // The first context's kind byte.
            let mut bad_kind = body.clone();
            let label = if body.starts_with(INVITE_LABEL) {
                18
            } else {
                17
            };
            bad_kind[label + HEADER_LEN] = 9;
            assert!(KeyStatement::try_decode(&bad_kind).is_err());
        }
        // An environment whose generation is not its epoch.
        let mut s = statement(claims()[0]);
        if let KeyClaim::ScopeKey { generation, .. } = &mut s.claim {
            *generation = 4;
        }
        assert!(KeyStatement::try_decode(&s.encode()).is_err());
        // A workspace key's context epoch is always 1.
        let mut s = statement(claims()[1]);
        if let KeyClaim::Grant { context, .. } = &mut s.claim {
            context.epoch = 2;
        }
        assert!(KeyStatement::try_decode(&s.encode()).is_err());
        // An unknown role.
        let mut body = statement(claims()[1]).encode();
        body[17 + HEADER_LEN + CONTEXT_LEN + 4] = 4;
        assert!(KeyStatement::try_decode(&body).is_err());
        // A signature of the wrong length.
        let body = statement(claims()[2]).encode();
        assert!(SignedKeyStatement::try_from_parts(&body, &[0; 63]).is_err());
    }
}
