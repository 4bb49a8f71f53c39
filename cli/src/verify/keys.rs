//! Checks a derived key chain against the key statements the server returned with it
//! (FORMAT.md §13.6): every key opened must match a commitment, and every wrap opened must be
//! named by a statement, each signed by a principal whose admission chain reaches a root this
//! client trusts. The server can store and return statements but cannot make one, so a key it
//! substituted (even one that decrypts) has no statement and is refused.

use std::collections::HashMap;

use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{ScopeKind, VerifyingKey};
use zopp_crypto::statement::{KeyClaim, SignedKeyStatement, StatementRole};
use zopp_crypto::wrap::KeyContext;
use zopp_proto::v1 as pb;

use crate::chain::KeyTrail;
use crate::trust::{TrustError, TrustStore, Verifier};

/// The statements that came with a chain, and what is needed to check their signers.
#[derive(Clone, Copy, Debug)]
pub struct ChainStatements<'a> {
    /// The signed statements.
    pub statements: &'a [pb::KeyStatement],
    /// Their signers and admitters up to the chain roots.
    pub signers: &'a [pb::PrincipalInfo],
    /// The workspace's creator, as the server names it (checked against the pin).
    pub creator: &'a str,
    /// The environment of the chain and the project the server says it belongs to, so that a
    /// project admin's role covers it.
    pub environment: Option<(&'a str, &'a str)>,
}

impl<'a> ChainStatements<'a> {
    /// The statements of an environment's chain.
    pub fn of_environment(keys: &'a pb::EnvironmentKeys) -> Self {
        Self {
            statements: &keys.statements,
            signers: &keys.signers,
            creator: &keys.workspace_creator_id,
            environment: Some((&keys.environment_id, &keys.project_id)),
        }
    }

    /// The statements of a workspace's or project's chain.
    pub fn of_scope(keys: &'a pb::ScopeKeys) -> Self {
        Self {
            statements: &keys.statements,
            signers: &keys.signers,
            creator: &keys.workspace_creator_id,
            environment: None,
        }
    }
}

/// Why a chain's keys are refused. Each message names the key and says what the server did.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAuthError {
    /// The response carried no statements at all (a per-secret read); the caller fetches the
    /// chain with its statements and checks again.
    #[error("the server sent the key chain without its signed statements")]
    NoStatements,
    /// A key opened, but its commitment is not the one its maker signed.
    #[error(
        "the {0} does not match the commitment signed when it was made: the server substituted \
         the key (it decrypts, but it is not the scope's key)"
    )]
    Substituted(String),
    /// No verifiable statement commits to a key.
    #[error("no signed statement vouches for the {0}: the server may have substituted the key")]
    Uncommitted(String),
    /// No verifiable statement names the grant wrap.
    #[error(
        "no signed grant statement vouches for the {0} wrapped to you: the server may have \
         substituted the key"
    )]
    Grant(String),
    /// No verifiable statement names a child wrap or epoch link.
    #[error(
        "no signed statement vouches for the wrap of the {child} under the {parent}: the server \
         may have substituted the key"
    )]
    Child {
        /// The wrapped key.
        child: String,
        /// The wrapping key.
        parent: String,
    },
    /// The statements' signers cannot be checked against this client's pins.
    #[error("the key statements' signers do not check out: {0}")]
    Signer(String),
    /// The only statement vouching for a key was made by a principal whose admin role over the
    /// scope is not proven by signed grants back to the workspace's creator.
    #[error(
        "the {key} is vouched for only by principal {signer}, whose admin role over it no signed \
         grant from the workspace's creator proves: an insider or the server forged it"
    )]
    Unauthorized {
        /// The key.
        key: String,
        /// The statement's signer.
        signer: PrincipalId,
    },
}

/// How a key is named in messages: "workspace key", "environment key of epoch 2".
pub fn describe(ctx: &KeyContext) -> String {
    match ctx.kind {
        ScopeKind::Workspace => "workspace key".to_string(),
        ScopeKind::Project => "project key".to_string(),
        ScopeKind::Environment => format!("environment key of epoch {}", ctx.epoch),
    }
}

/// Checks `trail` (what a derivation by `me` in `workspace` opened) against `given`.
///
/// # Errors
/// [`KeyAuthError`] naming the first key or wrap that no verifiable statement vouches for.
pub fn check(
    trail: &KeyTrail,
    workspace: WorkspaceId,
    me: PrincipalId,
    my_key: VerifyingKey,
    given: ChainStatements<'_>,
    store: &mut TrustStore,
) -> Result<(), KeyAuthError> {
    if given.statements.is_empty() {
        return Err(KeyAuthError::NoStatements);
    }
    // Malformed statements or statements of another workspace vouch for nothing; they are
    // skipped rather than refused, so junk the server adds cannot hide the real ones.
    let parsed: Vec<SignedKeyStatement> = given
        .statements
        .iter()
        .filter_map(|s| SignedKeyStatement::try_from_parts(&s.body, &s.signature).ok())
        .filter(|s| s.statement.workspace == workspace)
        .collect();
    let described = pb::GetPrincipalsResponse {
        target_ids: Vec::new(),
        principals: given.signers.to_vec(),
        workspace_id: workspace.to_string(),
        workspace_creator_id: given.creator.to_owned(),
    };
    let verifier = Verifier::new(&described, me, my_key, &[], store)
        .map_err(|e| KeyAuthError::Signer(e.to_string()))?;
    let creator = PrincipalId::try_parse(given.creator)
        .map_err(|_| KeyAuthError::Signer("the server named no workspace creator".into()))?;
    let infos = given
        .signers
        .iter()
        .filter_map(|i| {
            let p = i.principal.as_ref()?;
            Some((PrincipalId::try_parse(&p.principal_id).ok()?, i))
        })
        .collect();
    let env_project = given.environment.and_then(|(e, p)| {
        Some((
            *WorkspaceId::try_parse(e).ok()?.as_bytes(),
            *WorkspaceId::try_parse(p).ok()?.as_bytes(),
        ))
    });
    let mut checker = Checker {
        verifier,
        store,
        me,
        my_key,
        signers: HashMap::new(),
        last_signer_error: None,
        roles: Roles {
            creator,
            infos,
            env_project,
            workspace: *workspace.as_bytes(),
            legit: HashMap::new(),
        },
    };

    for (ctx, commitment) in &trail.keys {
        let mut same_context = false;
        let mut unauthorized = None;
        let mut found = false;
        for s in &parsed {
            if let KeyClaim::ScopeKey {
                context,
                commitment: c,
                ..
            } = &s.statement.claim
            {
                if context == ctx && checker.valid(s) {
                    if !zopp_crypto::ct_eq(c, commitment) {
                        same_context = true;
                    } else if checker.authorized(&parsed, s.statement.signer, ctx, 0) {
                        found = true;
                        break;
                    } else {
                        unauthorized = Some(s.statement.signer);
                    }
                }
            }
        }
        if !found {
            return Err(checker.fail(match unauthorized {
                Some(signer) => KeyAuthError::Unauthorized {
                    key: describe(ctx),
                    signer,
                },
                None if same_context => KeyAuthError::Substituted(describe(ctx)),
                None => KeyAuthError::Uncommitted(describe(ctx)),
            }));
        }
    }
    if let Some((ctx, hash)) = &trail.grant {
        let found = parsed.iter().any(|s| {
            matches!(&s.statement.claim, KeyClaim::Grant { context, recipient, wrap_hash, .. }
                if context == ctx && *recipient == me && wrap_hash == hash)
                && checker.valid(s)
        });
        if !found {
            return Err(checker.fail(KeyAuthError::Grant(describe(ctx))));
        }
    }
    for (c, p, hash) in &trail.children {
        let found = parsed.iter().any(|s| {
            matches!(&s.statement.claim, KeyClaim::Child { child, parent, wrap_hash, .. }
                if child == c && parent == p && wrap_hash == hash)
                && checker.valid(s)
        });
        if !found {
            return Err(checker.fail(KeyAuthError::Child {
                child: describe(c),
                parent: describe(p),
            }));
        }
    }
    checker.store_notes();
    Ok(())
}

/// Verifies statements, remembering each signer's outcome.
struct Checker<'a, 'b> {
    verifier: Verifier<'a>,
    store: &'b mut TrustStore,
    me: PrincipalId,
    my_key: VerifyingKey,
    signers: HashMap<PrincipalId, Option<VerifyingKey>>,
    last_signer_error: Option<TrustError>,
    roles: Roles<'a>,
}

/// What proving a signer's role needs (FORMAT.md §13.7).
struct Roles<'a> {
    /// The workspace's creator: admin of everything in it.
    creator: PrincipalId,
    /// The principals described with the statements.
    infos: HashMap<PrincipalId, &'a pb::PrincipalInfo>,
    /// The chain's environment and its project.
    env_project: Option<([u8; 16], [u8; 16])>,
    /// The workspace id.
    workspace: [u8; 16],
    /// Grant statements already judged, by statement hash (`None`: being judged, which breaks
    /// cycles).
    legit: HashMap<[u8; 32], Option<bool>>,
}

/// Longest chain of grants followed to prove a role.
const MAX_ROLE_DEPTH: usize = 16;

impl Roles<'_> {
    /// Whether a grant at `grant` covers the key of `target`: a workspace grant covers every
    /// scope of its workspace, a project grant its project and the project's environments, an
    /// environment grant its environment.
    fn covers(&self, grant: &KeyContext, target: &KeyContext) -> bool {
        match grant.kind {
            ScopeKind::Workspace => grant.id == self.workspace,
            ScopeKind::Project => {
                (target.kind == ScopeKind::Project && target.id == grant.id)
                    || (target.kind == ScopeKind::Environment
                        && self
                            .env_project
                            .is_some_and(|(e, p)| e == target.id && p == grant.id))
            }
            ScopeKind::Environment => {
                target.kind == ScopeKind::Environment && target.id == grant.id
            }
        }
    }

    /// The one-time invite key that admitted `p`, with the invite's id, if it joined by invite.
    fn invite_of(&self, p: PrincipalId) -> Option<([u8; 16], [u8; 32])> {
        let info = self.infos.get(&p)?;
        let key: [u8; 32] = info.admission_invite_key.as_slice().try_into().ok()?;
        let id = WorkspaceId::try_parse(&info.admission_invite_id).ok()?;
        // An invite key admits one principal: a second admission under it proves nothing.
        let uses = self
            .infos
            .values()
            .filter(|i| i.admission_invite_key == info.admission_invite_key)
            .count();
        (uses == 1).then_some((*id.as_bytes(), key))
    }

    /// The principal that admitted `p` directly with its own key (not through an invite).
    fn admitter_of(&self, p: PrincipalId) -> Option<PrincipalId> {
        let info = self.infos.get(&p)?;
        if !info.admission_invite_key.is_empty() {
            return None;
        }
        PrincipalId::try_parse(&info.principal.as_ref()?.admitted_by).ok()
    }
}

impl Checker<'_, '_> {
    fn signer_key(&mut self, id: PrincipalId) -> Option<VerifyingKey> {
        if id == self.me {
            return Some(self.my_key);
        }
        if let Some(k) = self.signers.get(&id) {
            return *k;
        }
        let key = match self.verifier.verify_signer(id, self.store) {
            Ok(t) => Some(t.signing),
            Err(e) => {
                self.last_signer_error = Some(e);
                None
            }
        };
        self.signers.insert(id, key);
        key
    }

    fn valid(&mut self, s: &SignedKeyStatement) -> bool {
        self.signer_key(s.statement.signer)
            .is_some_and(|k| s.verify(&k).is_ok())
    }

    /// Whether `signer` is an admin over `target`: the workspace's creator, or the recipient
    /// of a legitimate admin grant covering it (FORMAT.md §13.7).
    fn authorized(
        &mut self,
        all: &[SignedKeyStatement],
        signer: PrincipalId,
        target: &KeyContext,
        depth: usize,
    ) -> bool {
        if signer == self.roles.creator {
            return true;
        }
        if depth > MAX_ROLE_DEPTH {
            return false;
        }
        all.iter().any(|g| {
            matches!(&g.statement.claim, KeyClaim::Grant { context, role, recipient, .. }
                if *recipient == signer
                    && *role == StatementRole::Admin
                    && self.roles.covers(context, target))
                && self.legit_grant(all, g, depth + 1)
        })
    }

    /// Whether grant statement `g` is one its signer could make: an admin over its scope
    /// granting, a joiner claiming no more than its signed invite, or a device copying its own
    /// grant to a device it admitted.
    fn legit_grant(
        &mut self,
        all: &[SignedKeyStatement],
        g: &SignedKeyStatement,
        depth: usize,
    ) -> bool {
        let KeyClaim::Grant {
            context,
            role,
            recipient,
            ..
        } = g.statement.claim
        else {
            return false;
        };
        let hash = g.hash();
        match self.roles.legit.get(&hash) {
            Some(Some(known)) => return *known,
            Some(None) => return false,
            None => {}
        }
        if depth > MAX_ROLE_DEPTH || !self.valid(g) {
            return false;
        }
        self.roles.legit.insert(hash, None);
        let signer = g.statement.signer;
        let mut ok = self.authorized(all, signer, &context, depth);
        if !ok && signer == recipient {
            // A joiner's own grant: the invite that admitted it, signed by an admin, names
            // at least this role.
            if let Some((invite_id, invite_key)) = self.roles.invite_of(signer) {
                ok = all.iter().any(|v| {
                    matches!(&v.statement.claim, KeyClaim::Invite { context: c, role: r, invite, invite_key: k, .. }
                        if *invite == invite_id && *k == invite_key && *c == context && *r >= role)
                        && self.valid(v)
                        && self.authorized(all, v.statement.signer, &context, depth + 1)
                });
            }
        }
        if !ok && self.roles.admitter_of(recipient) == Some(signer) {
            // A device copying its own grant to a device it admitted.
            ok = all.iter().any(|h| {
                matches!(&h.statement.claim, KeyClaim::Grant { context: c, role: r, recipient: to, .. }
                    if *to == signer && *c == context && *r >= role)
                    && self.legit_grant(all, h, depth + 1)
            });
        }
        self.roles.legit.insert(hash, Some(ok));
        ok
    }

    /// The error to report: an untrusted signer explains more than a missing statement.
    fn fail(&mut self, missing: KeyAuthError) -> KeyAuthError {
        match self.last_signer_error.take() {
            Some(e) => KeyAuthError::Signer(format!("{missing}; {e}")),
            None => missing,
        }
    }

    fn store_notes(&self) {
        for note in self.verifier.notes() {
            tracing::info!(note = %note, "key statements");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::EnvironmentChain;
    use crate::verify::make::StatementMaker;
    use rand_core::OsRng;
    use zopp_crypto::keys::{AgreementSecret, ScopeKey, SigningKey};
    use zopp_crypto::statement::StatementRole;
    use zopp_crypto::wrap::{wrap_to_recipient, wrap_under};

    const WS: [u8; 16] = [0xa1; 16];
    const PR: [u8; 16] = [0xb2; 16];
    const ENV: [u8; 16] = [0xc3; 16];
    const ME: [u8; 16] = [0x01; 16];
    const ADMIN: [u8; 16] = [0x02; 16];

    fn ctx(kind: ScopeKind, id: [u8; 16], epoch: u32) -> KeyContext {
        KeyContext { kind, id, epoch }
    }

    fn text(b: [u8; 16]) -> String {
        WorkspaceId::from_bytes(b).to_string()
    }

    struct World {
        me_secret: AgreementSecret,
        me_signing: SigningKey,
        admin_signing: SigningKey,
        keys: pb::EnvironmentKeys,
    }

    fn info(
        id: [u8; 16],
        signing: &SigningKey,
        admitter: Option<(&[u8; 16], &SigningKey)>,
    ) -> pb::PrincipalInfo {
        let pid = PrincipalId::from_bytes(id);
        let ak = AgreementSecret::from_bytes([id[0]; 32]).public_key();
        let vk = signing.verifying_key();
        let (admitted_by, sig) = match admitter {
            Some((a, k)) => {
                let aid = PrincipalId::from_bytes(*a);
                (
                    aid.to_string(),
                    k.sign(&zopp_crypto::sign::admission_message(
                        &pid,
                        &vk,
                        &ak,
                        Some(&aid),
                    ))
                    .to_vec(),
                )
            }
            None => (String::new(), Vec::new()),
        };
        pb::PrincipalInfo {
            principal: Some(pb::PrincipalPublic {
                principal_id: pid.to_string(),
                signing_key: vk.to_bytes().to_vec(),
                agreement_key: ak.to_bytes().to_vec(),
                name: "laptop".into(),
                user_email: "x@example.com".into(),
                admitted_by,
                admission_signature: sig,
                created_at_ms: 0,
                revoked: false,
            }),
            ..Default::default()
        }
    }

    /// An admin created everything and granted the project to me (a principal it admitted).
    fn world(epochs: u32) -> World {
        let me_secret = AgreementSecret::from_bytes([ME[0]; 32]);
        let me_signing = SigningKey::from_seed(&[0x11; 32]);
        let admin_signing = SigningKey::from_seed(&[0x22; 32]);
        let ws = WorkspaceId::from_bytes(WS);
        let admin = StatementMaker::new(ws, PrincipalId::from_bytes(ADMIN), &admin_signing);
        let pk = ScopeKey::from_bytes([0x20; 32]);
        let eks: Vec<ScopeKey> = (1..=epochs)
            .map(|n| ScopeKey::from_bytes([0x30 + n as u8; 32]))
            .collect();
        let pr_ctx = ctx(ScopeKind::Project, PR, 1);
        let env = |n: u32| ctx(ScopeKind::Environment, ENV, n);
        let me = PrincipalId::from_bytes(ME);
        let grant = wrap_to_recipient(&pk, &pr_ctx, &me, &me_secret.public_key(), &mut OsRng)
            .expect("wrap")
            .into_bytes();
        let current = &eks[(epochs - 1) as usize];
        let env_wrap = wrap_under(current, &env(epochs), &pk, &pr_ctx, &mut OsRng).into_bytes();
        let mut statements = vec![
            admin.scope_key(&pr_ctx, 1, &pk),
            admin.grant(&pr_ctx, 1, StatementRole::Read, me, &grant),
            admin.child((&env(epochs), epochs), (&pr_ctx, 1), &env_wrap),
        ];
        let mut links = Vec::new();
        for n in 1..=epochs {
            statements.push(admin.scope_key(&env(n), n, &eks[(n - 1) as usize]));
        }
        for n in (1..epochs).rev() {
            let w = wrap_under(
                &eks[(n - 1) as usize],
                &env(n),
                &eks[n as usize],
                &env(n + 1),
                &mut OsRng,
            )
            .into_bytes();
            statements.push(admin.child((&env(n), n), (&env(n + 1), n + 1), &w));
            links.push(pb::EpochLink {
                epoch: n,
                wrapped_key: w,
            });
        }
        let keys = pb::EnvironmentKeys {
            workspace_id: text(WS),
            project_id: text(PR),
            environment_id: text(ENV),
            grant_scope: pb::ScopeKind::Project as i32,
            grant_scope_id: text(PR),
            grant_wrapped_key: grant,
            environment_wrapped_key: env_wrap,
            key_epoch: epochs,
            epoch_links: links,
            statements,
            signers: vec![
                info(ADMIN, &admin_signing, None),
                info(ME, &me_signing, Some((&ADMIN, &admin_signing))),
            ],
            workspace_creator_id: PrincipalId::from_bytes(ADMIN).to_string(),
            ..Default::default()
        };
        World {
            me_secret,
            me_signing,
            admin_signing,
            keys,
        }
    }

    fn run(w: &World) -> Result<(), KeyAuthError> {
        let me = PrincipalId::from_bytes(ME);
        let chain = EnvironmentChain::derive(&w.keys, me, &w.me_secret).expect("derives");
        let mut store = TrustStore::in_memory();
        check(
            chain.trail(),
            WorkspaceId::from_bytes(WS),
            me,
            w.me_signing.verifying_key(),
            ChainStatements::of_environment(&w.keys),
            &mut store,
        )
    }

    #[test]
    fn an_honest_chain_verifies_at_every_epoch() {
        for epochs in [1, 3] {
            run(&world(epochs)).expect("honest chain");
        }
    }

    #[test]
    fn a_substituted_key_that_decrypts_is_refused() {
        // The server wraps a key it knows to me and re-wraps the environment key under it.
        let mut w = world(1);
        let fake = ScopeKey::from_bytes([0x66; 32]);
        let pr_ctx = ctx(ScopeKind::Project, PR, 1);
        let me = PrincipalId::from_bytes(ME);
        w.keys.grant_wrapped_key =
            wrap_to_recipient(&fake, &pr_ctx, &me, &w.me_secret.public_key(), &mut OsRng)
                .expect("wrap")
                .into_bytes();
        let fake_ek = ScopeKey::from_bytes([0x67; 32]);
        w.keys.environment_wrapped_key = wrap_under(
            &fake_ek,
            &ctx(ScopeKind::Environment, ENV, 1),
            &fake,
            &pr_ctx,
            &mut OsRng,
        )
        .into_bytes();
        let err = run(&w).expect_err("substituted");
        assert_eq!(err, KeyAuthError::Substituted("project key".into()));
        assert!(err.to_string().contains("substituted"), "{err}");
    }

    #[test]
    fn statements_signed_by_an_unvouched_principal_count_for_nothing() {
        // The server signs its own statements with a key it made up and lists itself as a
        // root: no pinned root vouches for it.
        let mut w = world(1);
        let mallory = SigningKey::from_seed(&[0x99; 32]);
        let ws = WorkspaceId::from_bytes(WS);
        let m_id = PrincipalId::from_bytes([0x09; 16]);
        let maker = StatementMaker::new(ws, m_id, &mallory);
        let fake = ScopeKey::from_bytes([0x66; 32]);
        let pr_ctx = ctx(ScopeKind::Project, PR, 1);
        let me = PrincipalId::from_bytes(ME);
        let grant = wrap_to_recipient(&fake, &pr_ctx, &me, &w.me_secret.public_key(), &mut OsRng)
            .expect("wrap")
            .into_bytes();
        let fake_ek = ScopeKey::from_bytes([0x67; 32]);
        let env_ctx = ctx(ScopeKind::Environment, ENV, 1);
        let env_wrap = wrap_under(&fake_ek, &env_ctx, &fake, &pr_ctx, &mut OsRng).into_bytes();
        w.keys.statements = vec![
            maker.scope_key(&pr_ctx, 1, &fake),
            maker.scope_key(&env_ctx, 1, &fake_ek),
            maker.grant(&pr_ctx, 1, StatementRole::Admin, me, &grant),
            maker.child((&env_ctx, 1), (&pr_ctx, 1), &env_wrap),
        ];
        w.keys.grant_wrapped_key = grant;
        w.keys.environment_wrapped_key = env_wrap;
        w.keys.signers.push(info([0x09; 16], &mallory, None));
        let err = run(&w).expect_err("unvouched");
        assert!(matches!(err, KeyAuthError::Signer(_)), "{err}");
        let _ = &w.admin_signing;
    }

    /// Replaces the environment key of `w` (epoch 1) with `ek`, vouched for by `signer`
    /// (principal `id`, admitted by the admin) through a commitment and a child statement.
    fn env_key_vouched_by(w: &mut World, id: [u8; 16], signer: &SigningKey, ek: &ScopeKey) {
        let ws = WorkspaceId::from_bytes(WS);
        let maker = StatementMaker::new(ws, PrincipalId::from_bytes(id), signer);
        let pk = ScopeKey::from_bytes([0x20; 32]);
        let pr_ctx = ctx(ScopeKind::Project, PR, 1);
        let env_ctx = ctx(ScopeKind::Environment, ENV, 1);
        let wrap = wrap_under(ek, &env_ctx, &pk, &pr_ctx, &mut OsRng).into_bytes();
        w.keys.statements.push(maker.scope_key(&env_ctx, 1, ek));
        w.keys
            .statements
            .push(maker.child((&env_ctx, 1), (&pr_ctx, 1), &wrap));
        w.keys.environment_wrapped_key = wrap;
        w.keys
            .signers
            .push(info(id, signer, Some((&ADMIN, &w.admin_signing))));
    }

    #[test]
    fn an_insider_without_the_admin_role_cannot_vouch_for_a_key() {
        // Mallory, a member the admin admitted, makes a key, grants herself admin and signs
        // the key's statements; the server serves her key to me.
        let mut w = world(1);
        let mallory = SigningKey::from_seed(&[0x77; 32]);
        let m_id = [0x07; 16];
        env_key_vouched_by(&mut w, m_id, &mallory, &ScopeKey::from_bytes([0x71; 32]));
        let self_grant = StatementMaker::new(
            WorkspaceId::from_bytes(WS),
            PrincipalId::from_bytes(m_id),
            &mallory,
        )
        .grant(
            &ctx(ScopeKind::Workspace, WS, 1),
            1,
            StatementRole::Admin,
            PrincipalId::from_bytes(m_id),
            b"any wrap",
        );
        w.keys.statements.push(self_grant);
        let err = run(&w).expect_err("not an admin");
        assert_eq!(
            err,
            KeyAuthError::Unauthorized {
                key: "environment key of epoch 1".into(),
                signer: PrincipalId::from_bytes(m_id),
            }
        );
    }

    #[test]
    fn an_admin_granted_by_the_creator_may_vouch_for_a_key() {
        let mut w = world(1);
        let bob = SigningKey::from_seed(&[0x88; 32]);
        let b_id = [0x08; 16];
        let ws = WorkspaceId::from_bytes(WS);
        // Without a grant, bob is just a member.
        let mut plain = world(1);
        env_key_vouched_by(&mut plain, b_id, &bob, &ScopeKey::from_bytes([0x81; 32]));
        assert!(matches!(
            run(&plain),
            Err(KeyAuthError::Unauthorized { .. })
        ));
        // The creator made bob an admin of the project: his statements now count.
        env_key_vouched_by(&mut w, b_id, &bob, &ScopeKey::from_bytes([0x81; 32]));
        let grant = StatementMaker::new(ws, PrincipalId::from_bytes(ADMIN), &w.admin_signing)
            .grant(
                &ctx(ScopeKind::Project, PR, 1),
                1,
                StatementRole::Admin,
                PrincipalId::from_bytes(b_id),
                b"bob's wrap",
            );
        w.keys.statements.push(grant);
        run(&w).expect("a project admin may make the project's environment keys");
    }

    #[test]
    fn missing_or_altered_statements_are_refused() {
        let w = world(2);
        run(&w).expect("honest");
        // No statements at all: the caller must fetch them.
        let mut bare = world(1);
        bare.keys.statements.clear();
        assert_eq!(run(&bare), Err(KeyAuthError::NoStatements));
        // Each statement matters: dropping any one refuses the chain.
        for i in 0..w.keys.statements.len() {
            let mut fewer = world(2);
            fewer.keys.statements.remove(i);
            assert!(run(&fewer).is_err(), "statement {i} was not needed");
        }
        // A flipped signature byte.
        let mut flipped = world(1);
        flipped.keys.statements[0].signature[0] ^= 1;
        assert!(run(&flipped).is_err());
    }
}
