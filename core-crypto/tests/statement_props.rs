//! Property tests of signed key statements (FORMAT.md §12): every statement round-trips through
//! its canonical bytes and verifies under its signer's key, and flipping any bit of the body or
//! the signature makes verification (or decoding) fail.

use proptest::prelude::*;
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{ScopeKey, ScopeKind, SigningKey};
use zopp_crypto::statement::{
    key_commitment, KeyClaim, KeyStatement, SignedKeyStatement, StatementRole,
};
use zopp_crypto::wrap::KeyContext;

fn context() -> impl Strategy<Value = KeyContext> {
    (1u8..=3, any::<[u8; 16]>(), 1u32..1000).prop_map(|(k, id, epoch)| {
        let kind = match k {
            1 => ScopeKind::Workspace,
            2 => ScopeKind::Project,
            _ => ScopeKind::Environment,
        };
        KeyContext {
            kind,
            id,
            // Workspace and project contexts always carry epoch 1.
            epoch: if kind == ScopeKind::Environment {
                epoch
            } else {
                1
            },
        }
    })
}

/// A generation consistent with `ctx`: an environment's generation is its epoch.
fn generation_for(ctx: &KeyContext, g: u32) -> u32 {
    if ctx.kind == ScopeKind::Environment {
        ctx.epoch
    } else {
        g
    }
}

fn claim() -> impl Strategy<Value = KeyClaim> {
    prop_oneof![
        (context(), 1u32..100, any::<[u8; 32]>()).prop_map(|(context, g, commitment)| {
            KeyClaim::ScopeKey {
                generation: generation_for(&context, g),
                context,
                commitment,
            }
        }),
        (
            context(),
            1u32..100,
            1u8..=3,
            any::<[u8; 16]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(context, g, role, recipient, wrap_hash)| KeyClaim::Grant {
                generation: generation_for(&context, g),
                context,
                role: match role {
                    1 => StatementRole::Read,
                    2 => StatementRole::Write,
                    _ => StatementRole::Admin,
                },
                recipient: PrincipalId::from_bytes(recipient),
                wrap_hash,
            }),
        (
            context(),
            context(),
            1u32..100,
            1u32..100,
            any::<[u8; 32]>()
        )
            .prop_map(|(child, parent, cg, pg, wrap_hash)| KeyClaim::Child {
                child_generation: generation_for(&child, cg),
                parent_generation: generation_for(&parent, pg),
                child,
                parent,
                wrap_hash,
            }),
    ]
}

proptest! {
    #[test]
    fn sign_verify_round_trip(
        claim in claim(),
        ws in any::<[u8; 16]>(),
        signer in any::<[u8; 16]>(),
        seed in any::<[u8; 32]>(),
    ) {
        let s = KeyStatement {
            workspace: WorkspaceId::from_bytes(ws),
            signer: PrincipalId::from_bytes(signer),
            claim,
        };
        let key = SigningKey::from_seed(&seed);
        let signed = s.sign(&key);
        let back = SignedKeyStatement::try_from_parts(&signed.body, &signed.signature)
            .expect("a signed statement parses");
        prop_assert_eq!(back.statement, s);
        prop_assert!(back.verify(&key.verifying_key()).is_ok());
    }

    #[test]
    fn any_flipped_bit_fails(
        claim in claim(),
        seed in any::<[u8; 32]>(),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let s = KeyStatement {
            workspace: WorkspaceId::from_bytes([1; 16]),
            signer: PrincipalId::from_bytes([2; 16]),
            claim,
        };
        let key = SigningKey::from_seed(&seed);
        let signed = s.sign(&key);
        let mut bytes = signed.body.clone();
        bytes.extend_from_slice(&signed.signature);
        let i = index.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let (body, sig) = bytes.split_at(signed.body.len());
        let outcome = SignedKeyStatement::try_from_parts(body, sig)
            .and_then(|p| p.verify(&key.verifying_key()));
        prop_assert!(outcome.is_err());
    }

    #[test]
    fn commitments_differ_for_different_keys(
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
        ctx in context(),
    ) {
        prop_assume!(a != b);
        prop_assert_ne!(
            key_commitment(&ScopeKey::from_bytes(a), &ctx),
            key_commitment(&ScopeKey::from_bytes(b), &ctx)
        );
    }
}
