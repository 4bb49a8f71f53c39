//! Vectors of FORMAT.md §13, key statements and key commitments: their generator, their checker
//! and a reference implementation written on the primitive crates, kept together in one file.
//!
//! Operations: `key.commitment` (inputs: the key and its context; output: the commitment) and
//! `key-statement.verify` (inputs: the signer's public key, the statement's bytes and its
//! signature; output for `ok`: the decoded fields).

use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{ScopeKey, ScopeKind, SigningKey, VerifyingKey};
use zopp_crypto::statement::{
    key_commitment, KeyClaim, KeyStatement, SignedKeyStatement, StatementRole,
};
use zopp_crypto::wrap::KeyContext;

use super::generate::{code, rng_for, Vector};
use super::json::{h, n, J};
use super::reference as r;

fn draw<const N: usize>(rng: &mut ChaCha20Rng) -> [u8; N] {
    use rand_chacha::rand_core::RngCore;
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

// ---------------------------------------------------------------- reference implementation

const LABELS: [(&[u8], usize); 4] = [
    (b"zopp/v1/key-scope", 106),
    (b"zopp/v1/key-grant", 123),
    (b"zopp/v1/key-child", 131),
    (b"zopp/v1/key-invite", 124),
];

/// §13.1 commitment, from the primitives.
fn ref_commitment(key: &[u8; 32], ctx: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(b"zopp/v1/key-commitment");
    mac.update(ctx);
    mac.finalize().into_bytes().into()
}

/// Checks one context (21 bytes) and the generation after it (4 bytes).
fn ref_context(b: &[u8]) -> r::Outcome<u8> {
    let kind = b[0];
    let epoch = u32::from_be_bytes(b[17..21].try_into().expect("4 bytes"));
    let generation = u32::from_be_bytes(b[21..25].try_into().expect("4 bytes"));
    if !(1..=3).contains(&kind) || epoch == 0 || generation == 0 {
        return Err(r::MALFORMED);
    }
    if (kind == 3 && generation != epoch) || (kind != 3 && epoch != 1) {
        return Err(r::MALFORMED);
    }
    Ok(kind)
}

/// §13.2–§13.6 decoding and verification, from the primitives.
fn ref_verify(public: &[u8], body: &[u8], sig: &[u8]) -> r::Outcome<()> {
    let (label, len) = LABELS
        .iter()
        .find(|(l, _)| body.starts_with(l))
        .ok_or(r::UNSUPPORTED_FORMAT)?;
    if body.len() != *len {
        return Err(r::MALFORMED);
    }
    let claim = &body[label.len() + 32..];
    match label.len() + claim.len() + 32 {
        106 => {
            ref_context(claim)?;
        }
        123 | 124 => {
            let kind = ref_context(claim)?;
            if !(1..=3).contains(&claim[25]) {
                return Err(r::MALFORMED);
            }
            if label.len() == 18 && kind != 1 {
                return Err(r::MALFORMED);
            }
        }
        _ => {
            ref_context(&claim[..25])?;
            ref_context(&claim[25..50])?;
        }
    }
    if sig.len() != 64 {
        return Err(r::MALFORMED);
    }
    r::ed25519_verify(public, body, sig)
}

// ---------------------------------------------------------------- generator

fn ctx(kind: ScopeKind, id: [u8; 16], epoch: u32) -> KeyContext {
    KeyContext { kind, id, epoch }
}

fn ctx_bytes(c: &KeyContext) -> Vec<u8> {
    r::key_context(c.kind as u8, &c.id, c.epoch)
}

/// The vectors of §13.
pub fn generate(v: &mut Vec<Vector>) {
    commitments(v);
    statements(v);
}

fn commitments(v: &mut Vec<Vector>) {
    for (name, kind, epoch) in [
        ("key-commitment-ok", ScopeKind::Project, 1),
        ("key-commitment-environment-ok", ScopeKind::Environment, 3),
    ] {
        let mut rng = rng_for(name);
        let key: [u8; 32] = draw(&mut rng);
        let c = ctx(kind, draw(&mut rng), epoch);
        let lib = key_commitment(&ScopeKey::from_bytes(key), &c);
        assert_eq!(lib, ref_commitment(&key, &ctx_bytes(&c)), "{name}");
        v.push(Vector {
            name: name.into(),
            section: "13.1",
            operation: "key.commitment",
            description: "The public commitment to a scope key, bound to its context.".into(),
            inputs: vec![
                ("key", h(key)),
                ("kind", n(c.kind as u8)),
                ("id", h(c.id)),
                ("epoch", n(c.epoch)),
            ],
            output: Some(vec![("commitment", h(lib))]),
            expected: r::OK,
        });
    }
}

/// A statement of the given kind with fields drawn from `rng`.
fn statement(kind: &str, rng: &mut ChaCha20Rng) -> KeyStatement {
    let workspace = WorkspaceId::from_bytes(draw(rng));
    let signer = PrincipalId::from_bytes(draw(rng));
    let ws = ctx(ScopeKind::Workspace, *workspace.as_bytes(), 1);
    let env = |n: u32, rng: &mut ChaCha20Rng| ctx(ScopeKind::Environment, draw(rng), n);
    let claim = match kind {
        "scope" => KeyClaim::ScopeKey {
            context: env(2, rng),
            generation: 2,
            commitment: draw(rng),
        },
        "grant" => KeyClaim::Grant {
            context: ctx(ScopeKind::Project, draw(rng), 1),
            generation: 3,
            role: StatementRole::Write,
            recipient: PrincipalId::from_bytes(draw(rng)),
            wrap_hash: draw(rng),
        },
        "child" => {
            let id: [u8; 16] = draw(rng);
            KeyClaim::Child {
                child: ctx(ScopeKind::Environment, id, 1),
                child_generation: 1,
                parent: ctx(ScopeKind::Environment, id, 2),
                parent_generation: 2,
                wrap_hash: draw(rng),
            }
        }
        _ => KeyClaim::Invite {
            context: ws,
            generation: 1,
            role: StatementRole::Read,
            invite: draw(rng),
            invite_key: draw(rng),
        },
    };
    KeyStatement {
        workspace,
        signer,
        claim,
    }
}

type Change = fn(&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>, &mut ChaCha20Rng);

fn statements(v: &mut Vec<Vector>) {
    let cases: [(&str, &str, &str, &str, Change, &'static str); 16] = [
        (
            "key-statement-scope-ok",
            "13.3",
            "scope",
            "A scope key's creation or rotation, with its commitment.",
            |_, _, _, _| {},
            r::OK,
        ),
        (
            "key-statement-grant-ok",
            "13.4",
            "grant",
            "A grant wrap, binding role, recipient and wrap hash.",
            |_, _, _, _| {},
            r::OK,
        ),
        (
            "key-statement-child-ok",
            "13.5",
            "child",
            "An epoch link: EK(1) under EK(2).",
            |_, _, _, _| {},
            r::OK,
        ),
        (
            "key-statement-invite-ok",
            "13.6",
            "invite",
            "An invite's one-time key may admit one principal with a role.",
            |_, _, _, _| {},
            r::OK,
        ),
        (
            "key-statement-scope-altered-commitment",
            "13.3",
            "scope",
            "The server swaps in the commitment of a key it knows.",
            |b, _, _, _| {
                let l = b.len() - 1;
                b[l] ^= 1;
            },
            r::BAD_SIGNATURE,
        ),
        (
            "key-statement-grant-altered-recipient",
            "13.4",
            "grant",
            "A grant statement presented for another recipient.",
            |b, _, _, _| {
                b[17 + 32 + 25 + 1] ^= 1;
            },
            r::BAD_SIGNATURE,
        ),
        (
            "key-statement-grant-raised-role",
            "13.4",
            "grant",
            "A read grant presented as an admin grant.",
            |b, _, _, _| {
                b[17 + 32 + 25] = 3;
            },
            r::BAD_SIGNATURE,
        ),
        (
            "key-statement-child-swapped-contexts",
            "13.5",
            "child",
            "The epoch link presented the other way round (EK(2) under EK(1)).",
            |b, _, _, _| {
                let (c, p) = (b[49..74].to_vec(), b[74..99].to_vec());
                b[49..74].copy_from_slice(&p);
                b[74..99].copy_from_slice(&c);
            },
            r::BAD_SIGNATURE,
        ),
        (
            "key-statement-wrong-signer-key",
            "13.2",
            "scope",
            "Verified under another principal's key.",
            |_, _, k, rng| {
                *k = r::ed25519_public(&draw(rng)).to_vec();
            },
            r::BAD_SIGNATURE,
        ),
        (
            "key-statement-unknown-label",
            "13.2",
            "scope",
            "A label this version does not define.",
            |b, _, _, _| {
                b[12] = b'X';
            },
            r::UNSUPPORTED_FORMAT,
        ),
        (
            "key-statement-truncated",
            "13.2",
            "grant",
            "One byte short.",
            |b, _, _, _| {
                b.pop();
            },
            r::MALFORMED,
        ),
        (
            "key-statement-appended-byte",
            "13.2",
            "child",
            "One byte too many.",
            |b, _, _, _| {
                b.push(0);
            },
            r::MALFORMED,
        ),
        (
            "key-statement-generation-not-epoch",
            "13.2",
            "scope",
            "An environment key whose generation differs from its epoch (signed).",
            |_, _, _, _| {},
            r::MALFORMED,
        ),
        (
            "key-statement-unknown-role",
            "13.2",
            "grant",
            "Role byte 4 (signed).",
            |_, _, _, _| {},
            r::MALFORMED,
        ),
        (
            "key-statement-invite-not-workspace",
            "13.6",
            "invite",
            "An invite statement for a project key (signed).",
            |_, _, _, _| {},
            r::MALFORMED,
        ),
        (
            "key-statement-short-signature",
            "13.2",
            "invite",
            "A 63-byte signature.",
            |_, s, _, _| {
                s.pop();
            },
            r::MALFORMED,
        ),
    ];
    for (name, section, kind, description, change, expected) in cases {
        let mut rng = rng_for(name);
        let seed: [u8; 32] = draw(&mut rng);
        let key = SigningKey::from_seed(&seed);
        let st = statement(kind, &mut rng);
        let mut body = st.encode();
        // Structural faults are signed, so only the decoder can refuse them.
        match name {
            "key-statement-generation-not-epoch" => {
                body[17 + 32 + 21..17 + 32 + 25].copy_from_slice(&5u32.to_be_bytes())
            }
            "key-statement-unknown-role" => body[17 + 32 + 25] = 4,
            "key-statement-invite-not-workspace" => body[18 + 32] = ScopeKind::Project as u8,
            _ => {}
        }
        let mut sig = key.sign(&body).to_vec();
        let mut public = key.verifying_key().to_bytes().to_vec();
        change(&mut body, &mut sig, &mut public, &mut rng);
        let lib = SignedKeyStatement::try_from_parts(&body, &sig).and_then(|s| {
            let k = VerifyingKey::try_from_slice(&public)?;
            s.verify(&k).map(|()| s)
        });
        assert_eq!(code(&lib), expected, "{name}");
        assert_eq!(
            ref_verify(&public, &body, &sig).err().unwrap_or(r::OK),
            expected,
            "{name} (reference)"
        );
        let ok = expected == r::OK;
        v.push(Vector {
            name: name.into(),
            section,
            operation: "key-statement.verify",
            description: description.into(),
            inputs: vec![
                ("signer_seed", if ok { h(seed) } else { J::Null }),
                ("signer_key", h(&public)),
                ("statement", h(&body)),
                ("signature", h(&sig)),
            ],
            output: ok.then(|| {
                vec![
                    ("workspace_id", h(st.workspace.as_bytes())),
                    ("signer_id", h(st.signer.as_bytes())),
                ]
            }),
            expected,
        });
    }
}

// ---------------------------------------------------------------- checker

fn field(v: &serde_json::Value, k: &str) -> Result<Vec<u8>, String> {
    let t = v
        .get(k)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("no hex field `{k}`"))?;
    hex::decode(t).map_err(|e| format!("`{k}` is not hex: {e}"))
}

fn int(v: &serde_json::Value, k: &str) -> Result<u64, String> {
    v.get(k)
        .and_then(|x| x.as_u64())
        .ok_or_else(|| format!("no integer field `{k}`"))
}

/// Checks a §13 vector with zopp-crypto and the reference; `None` for another operation.
pub fn check(
    operation: &str,
    inputs: &serde_json::Value,
    output: &serde_json::Value,
    expected: &str,
) -> Option<Result<(), String>> {
    match operation {
        "key.commitment" => Some(check_commitment(inputs, output)),
        "key-statement.verify" => Some(check_statement(inputs, output, expected)),
        _ => None,
    }
}

fn check_commitment(i: &serde_json::Value, o: &serde_json::Value) -> Result<(), String> {
    let key: [u8; 32] = field(i, "key")?
        .try_into()
        .map_err(|_| "key is not 32 bytes")?;
    let id: [u8; 16] = field(i, "id")?
        .try_into()
        .map_err(|_| "id is not 16 bytes")?;
    let kind = match int(i, "kind")? {
        1 => ScopeKind::Workspace,
        2 => ScopeKind::Project,
        3 => ScopeKind::Environment,
        k => return Err(format!("unknown kind {k}")),
    };
    let epoch = u32::try_from(int(i, "epoch")?).map_err(|_| "epoch out of range")?;
    let c = ctx(kind, id, epoch);
    let want = field(o, "commitment")?;
    let lib = key_commitment(&ScopeKey::from_bytes(key), &c);
    let reference = ref_commitment(&key, &ctx_bytes(&c));
    if lib.as_slice() != want.as_slice() || reference.as_slice() != want.as_slice() {
        return Err("the commitment differs".into());
    }
    Ok(())
}

fn check_statement(
    i: &serde_json::Value,
    o: &serde_json::Value,
    expected: &str,
) -> Result<(), String> {
    let public = field(i, "signer_key")?;
    let body = field(i, "statement")?;
    let sig = field(i, "signature")?;
    let lib = SignedKeyStatement::try_from_parts(&body, &sig).and_then(|s| {
        let k = VerifyingKey::try_from_slice(&public)?;
        s.verify(&k).map(|()| s)
    });
    let reference = ref_verify(&public, &body, &sig).err().unwrap_or(r::OK);
    if code(&lib) != expected || reference != expected {
        return Err(format!(
            "zopp-crypto says `{}`, the reference `{reference}`, the vector `{expected}`",
            code(&lib)
        ));
    }
    if let Ok(s) = lib {
        if field(o, "workspace_id")? != s.statement.workspace.as_bytes()
            || field(o, "signer_id")? != s.statement.signer.as_bytes()
        {
            return Err("decoded ids differ".into());
        }
        if let Some(seed) = i.get("signer_seed").and_then(|x| x.as_str()) {
            let seed: [u8; 32] = hex::decode(seed)
                .map_err(|e| e.to_string())?
                .try_into()
                .map_err(|_| "seed is not 32 bytes")?;
            if r::ed25519_public(&seed).as_slice() != public.as_slice()
                || r::ed25519_sign(&seed, &body).as_slice() != sig.as_slice()
            {
                return Err("the seed does not make this signature".into());
            }
        }
    }
    Ok(())
}
