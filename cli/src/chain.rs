//! Key-chain derivation (docs/ARCHITECTURE.md "Keys a client derives", FORMAT.md §3): from the
//! grant key wrapped to this principal down to the environment's keys.
//!
//! A workspace grant opens WK, then PK (wrapped under WK), then EK (wrapped under PK); a project
//! grant starts at PK; an environment grant holds EK of the current epoch directly. Epoch links
//! then walk EK(n) → EK(n-1) down to epoch 1, whose key derives the name-digest key (stable across
//! rotations); the current epoch's key derives the sealing key for new versions.

use zopp_crypto::envelope::{NameDigest, NameKey, SealKey};
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId, WorkspaceId};
use zopp_crypto::keys::{AgreementSecret, ScopeKey, ScopeKind};
use zopp_crypto::statement::{key_commitment, wrap_hash};
use zopp_crypto::wrap::{unwrap_from_recipient, unwrap_under, KeyContext, WrappedKey};
use zopp_proto::v1 as pb;

/// Why a key chain could not be derived. Deliberately coarse about crypto failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// A field the grant level needs is absent.
    #[error("the server sent no {0}")]
    Missing(&'static str),
    /// An id is not a UUID.
    #[error("the server sent an invalid {0} id")]
    BadId(&'static str),
    /// The grant level is not one zopp knows.
    #[error("unknown grant level {0}")]
    UnknownGrant(i32),
    /// The grant names a different scope than the keys it should open.
    #[error("the grant does not belong to this {0}")]
    GrantMismatch(&'static str),
    /// The key epochs or their links are inconsistent.
    #[error("inconsistent key epochs")]
    Epochs,
    /// A wrapped key does not open with the key below it.
    #[error("the {0} does not open with this identity's keys")]
    Unwrap(&'static str),
}

/// What a derivation opened, so that the statements vouching for it can be checked
/// (FORMAT.md §13.6). Public data only: wrap hashes and key commitments, never a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTrail {
    /// The grant wrap the chain starts from: the granted key's context and the wrap's hash.
    pub grant: Option<(KeyContext, [u8; 32])>,
    /// Child wraps and epoch links opened: child context, parent context, wrap hash.
    pub children: Vec<(KeyContext, KeyContext, [u8; 32])>,
    /// Every key opened: its context and commitment (FORMAT.md §13.1).
    pub keys: Vec<(KeyContext, [u8; 32])>,
}

impl KeyTrail {
    /// A digest of everything in the trail: equal digests mean the same wraps opened to the
    /// same keys, so a chain verified once need not be verified again.
    pub fn digest(&self) -> [u8; 32] {
        let mut b = Vec::with_capacity(64 + 96 * (self.children.len() + self.keys.len()));
        b.extend_from_slice(b"zopp/v1/key-trail");
        let ctx = |c: &KeyContext, b: &mut Vec<u8>| {
            b.push(c.kind as u8);
            b.extend_from_slice(&c.id);
            b.extend_from_slice(&c.epoch.to_be_bytes());
        };
        match &self.grant {
            Some((c, h)) => {
                b.push(1);
                ctx(c, &mut b);
                b.extend_from_slice(h);
            }
            None => b.push(0),
        }
        b.extend_from_slice(&(self.children.len() as u32).to_be_bytes());
        for (c, p, h) in &self.children {
            ctx(c, &mut b);
            ctx(p, &mut b);
            b.extend_from_slice(h);
        }
        b.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for (c, k) in &self.keys {
            ctx(c, &mut b);
            b.extend_from_slice(k);
        }
        zopp_crypto::sha256(&b)
    }

    fn key(&mut self, ctx: &KeyContext, key: &ScopeKey) {
        self.keys.push((*ctx, key_commitment(key, ctx)));
    }
}

/// Keys of one environment, derived and ready: the name key and one sealing key per epoch.
/// Never persisted; only the wrapped chain is cached.
pub struct EnvironmentChain {
    /// Boxed: a chain travels inside results that should stay small.
    trail: Box<KeyTrail>,
    workspace: WorkspaceId,
    project: ProjectId,
    environment: EnvironmentId,
    key_epoch: u32,
    name_key: NameKey,
    /// Index `n - 1` holds the sealing key of epoch `n`.
    seal_keys: Vec<SealKey>,
}

impl std::fmt::Debug for EnvironmentChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EnvironmentChain({}, epoch {}, ..)",
            self.environment, self.key_epoch
        )
    }
}

fn ctx(kind: ScopeKind, id: &[u8; 16], epoch: u32) -> KeyContext {
    KeyContext {
        kind,
        id: *id,
        epoch,
    }
}

fn wrapped(bytes: &[u8], what: &'static str) -> Result<WrappedKey, ChainError> {
    if bytes.is_empty() {
        return Err(ChainError::Missing(what));
    }
    Ok(WrappedKey::from_bytes(bytes.to_vec()))
}

fn grant_kind(raw: i32) -> Result<ScopeKind, ChainError> {
    match pb::ScopeKind::try_from(raw) {
        Ok(pb::ScopeKind::Workspace) => Ok(ScopeKind::Workspace),
        Ok(pb::ScopeKind::Project) => Ok(ScopeKind::Project),
        Ok(pb::ScopeKind::Environment) => Ok(ScopeKind::Environment),
        _ => Err(ChainError::UnknownGrant(raw)),
    }
}

/// Opens the grant key wrapped to `me` at `ctx`, recording it in `trail`.
fn open_grant(
    trail: &mut KeyTrail,
    wrapped_key: &[u8],
    ctx: &KeyContext,
    me: PrincipalId,
    secret: &AgreementSecret,
    what: &'static str,
) -> Result<ScopeKey, ChainError> {
    let key = unwrap_from_recipient(&wrapped(wrapped_key, what)?, ctx, &me, secret)
        .map_err(|_| ChainError::Unwrap(what))?;
    trail.grant = Some((*ctx, wrap_hash(wrapped_key)));
    trail.key(ctx, &key);
    Ok(key)
}

/// Opens a child key wrapped under `parent_key`, recording it in `trail`.
fn open_child(
    trail: &mut KeyTrail,
    wrapped_key: &[u8],
    child: &KeyContext,
    parent_key: &ScopeKey,
    parent: &KeyContext,
    what: &'static str,
) -> Result<ScopeKey, ChainError> {
    let key = unwrap_under(&wrapped(wrapped_key, what)?, child, parent_key, parent)
        .map_err(|_| ChainError::Unwrap(what))?;
    trail
        .children
        .push((*child, *parent, wrap_hash(wrapped_key)));
    trail.key(child, &key);
    Ok(key)
}

/// An environment's key of its current epoch, opened from the chain the server returned (what a
/// client wraps to a new grantee, or links under the next epoch's key when rotating).
pub struct CurrentEnvironmentKey {
    /// The environment.
    pub environment: EnvironmentId,
    /// Its current epoch.
    pub epoch: u32,
    /// EK(epoch).
    ///
    /// # Security
    /// Secret: wrap it, never persist or print it.
    pub key: ScopeKey,
    /// What was opened to reach it, for its statements to be checked.
    pub trail: KeyTrail,
}

impl std::fmt::Debug for CurrentEnvironmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CurrentEnvironmentKey({}, epoch {}, ..)",
            self.environment, self.epoch
        )
    }
}

impl CurrentEnvironmentKey {
    /// Opens EK of the current epoch from `keys`.
    ///
    /// # Errors
    /// [`ChainError`] when a piece is missing or a key does not open.
    pub fn derive(
        keys: &pb::EnvironmentKeys,
        me: PrincipalId,
        secret: &AgreementSecret,
    ) -> Result<Self, ChainError> {
        let chain = EnvironmentChain::derive_current(keys, me, secret)?;
        Ok(Self {
            environment: chain.environment,
            epoch: keys.key_epoch,
            key: chain.current,
            trail: chain.trail,
        })
    }
}

/// The first half of [`EnvironmentChain::derive`]: ids and the current epoch's key.
struct Current {
    trail: KeyTrail,
    workspace: WorkspaceId,
    project: ProjectId,
    environment: EnvironmentId,
    current: ScopeKey,
}

impl EnvironmentChain {
    /// Derives the environment's keys from the chain the server returned.
    ///
    /// # Errors
    /// [`ChainError`] when a piece is missing or a key does not open.
    pub fn derive(
        keys: &pb::EnvironmentKeys,
        me: PrincipalId,
        secret: &AgreementSecret,
    ) -> Result<Self, ChainError> {
        let Current {
            mut trail,
            workspace,
            project,
            environment,
            current,
        } = Self::derive_current(keys, me, secret)?;
        let epoch = keys.key_epoch;
        let env_ctx = |n: u32| ctx(ScopeKind::Environment, environment.as_bytes(), n);
        // Walk the links down: EK(n) is wrapped under EK(n + 1).
        let mut seal_keys = Vec::with_capacity(epoch as usize);
        seal_keys.push(SealKey::derive(&current));
        let mut newer = current;
        for n in (1..epoch).rev() {
            let link = keys
                .epoch_links
                .iter()
                .find(|l| l.epoch == n)
                .ok_or(ChainError::Epochs)?;
            let older = open_child(
                &mut trail,
                &link.wrapped_key,
                &env_ctx(n),
                &newer,
                &env_ctx(n + 1),
                "key of an earlier epoch",
            )?;
            seal_keys.push(SealKey::derive(&older));
            newer = older;
        }
        seal_keys.reverse();
        // `newer` is now EK(1): names digest under it so they survive rotations.
        let name_key = NameKey::derive(&newer);
        Ok(Self {
            trail: Box::new(trail),
            workspace,
            project,
            environment,
            key_epoch: epoch,
            name_key,
            seal_keys,
        })
    }

    fn derive_current(
        keys: &pb::EnvironmentKeys,
        me: PrincipalId,
        secret: &AgreementSecret,
    ) -> Result<Current, ChainError> {
        let workspace = WorkspaceId::try_parse(&keys.workspace_id)
            .map_err(|_| ChainError::BadId("workspace"))?;
        let project =
            ProjectId::try_parse(&keys.project_id).map_err(|_| ChainError::BadId("project"))?;
        let environment = EnvironmentId::try_parse(&keys.environment_id)
            .map_err(|_| ChainError::BadId("environment"))?;
        let epoch = keys.key_epoch;
        // Each older epoch needs its own link, so an epoch beyond the links is a lie; checking
        // first also bounds the work a hostile response can ask for.
        if epoch == 0 || (epoch - 1) as usize > keys.epoch_links.len() {
            return Err(ChainError::Epochs);
        }
        let ws_ctx = ctx(ScopeKind::Workspace, workspace.as_bytes(), 1);
        let pr_ctx = ctx(ScopeKind::Project, project.as_bytes(), 1);
        let env_ctx = |n: u32| ctx(ScopeKind::Environment, environment.as_bytes(), n);

        let grant_id = keys.grant_scope_id.as_str();
        let mut trail = KeyTrail::default();
        let t = &mut trail;
        let current = match grant_kind(keys.grant_scope)? {
            ScopeKind::Workspace => {
                if grant_id != keys.workspace_id {
                    return Err(ChainError::GrantMismatch("workspace"));
                }
                let wk = open_grant(
                    t,
                    &keys.grant_wrapped_key,
                    &ws_ctx,
                    me,
                    secret,
                    "workspace key",
                )?;
                let pk = open_child(
                    t,
                    &keys.project_wrapped_key,
                    &pr_ctx,
                    &wk,
                    &ws_ctx,
                    "project key",
                )?;
                open_child(
                    t,
                    &keys.environment_wrapped_key,
                    &env_ctx(epoch),
                    &pk,
                    &pr_ctx,
                    "environment key",
                )?
            }
            ScopeKind::Project => {
                if grant_id != keys.project_id {
                    return Err(ChainError::GrantMismatch("project"));
                }
                let pk = open_grant(
                    t,
                    &keys.grant_wrapped_key,
                    &pr_ctx,
                    me,
                    secret,
                    "project key",
                )?;
                open_child(
                    t,
                    &keys.environment_wrapped_key,
                    &env_ctx(epoch),
                    &pk,
                    &pr_ctx,
                    "environment key",
                )?
            }
            ScopeKind::Environment => {
                if grant_id != keys.environment_id {
                    return Err(ChainError::GrantMismatch("environment"));
                }
                open_grant(
                    t,
                    &keys.grant_wrapped_key,
                    &env_ctx(epoch),
                    me,
                    secret,
                    "environment key",
                )?
            }
        };

        Ok(Current {
            trail,
            workspace,
            project,
            environment,
            current,
        })
    }

    /// What was opened to derive the chain, for its statements to be checked.
    pub fn trail(&self) -> &KeyTrail {
        &self.trail
    }
    /// The workspace id.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }
    /// The project id.
    pub fn project(&self) -> ProjectId {
        self.project
    }
    /// The environment id.
    pub fn environment(&self) -> EnvironmentId {
        self.environment
    }
    /// The current key epoch (new versions are sealed under it).
    pub fn key_epoch(&self) -> u32 {
        self.key_epoch
    }
    /// The digest under which `name` is stored.
    pub fn digest(&self, name: &str) -> NameDigest {
        self.name_key.digest(name)
    }
    /// The sealing key of `epoch`, if this chain reaches it.
    pub fn seal_key(&self, epoch: u32) -> Option<&SealKey> {
        let i = usize::try_from(epoch.checked_sub(1)?).ok()?;
        self.seal_keys.get(i)
    }
    /// The sealing key of the current epoch.
    pub fn current_seal_key(&self) -> &SealKey {
        self.seal_keys
            .last()
            .expect("derive always yields at least the current epoch's key")
    }
}

/// The key of a workspace or project, derived from [`pb::ScopeKeys`]: what a client wraps a new
/// child scope's key under.
pub struct ScopeChain {
    trail: KeyTrail,
    workspace: WorkspaceId,
    project: Option<ProjectId>,
    key: ScopeKey,
    generation: u32,
}

impl std::fmt::Debug for ScopeChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ScopeChain({:?}, {:?}, ..)",
            self.workspace, self.project
        )
    }
}

impl ScopeChain {
    /// Derives WK (no project in `keys`) or PK.
    ///
    /// # Errors
    /// [`ChainError`] when a piece is missing or a key does not open.
    pub fn derive(
        keys: &pb::ScopeKeys,
        me: PrincipalId,
        secret: &AgreementSecret,
    ) -> Result<Self, ChainError> {
        let workspace = WorkspaceId::try_parse(&keys.workspace_id)
            .map_err(|_| ChainError::BadId("workspace"))?;
        let ws_ctx = ctx(ScopeKind::Workspace, workspace.as_bytes(), 1);
        let grant = grant_kind(keys.grant_scope)?;
        let mut trail = KeyTrail::default();
        let t = &mut trail;
        if keys.project_id.is_empty() {
            if grant != ScopeKind::Workspace || keys.grant_scope_id != keys.workspace_id {
                return Err(ChainError::GrantMismatch("workspace"));
            }
            let key = open_grant(
                t,
                &keys.grant_wrapped_key,
                &ws_ctx,
                me,
                secret,
                "workspace key",
            )?;
            return Ok(Self {
                trail,
                workspace,
                project: None,
                key,
                generation: keys.key_epoch.max(1),
            });
        }
        let project =
            ProjectId::try_parse(&keys.project_id).map_err(|_| ChainError::BadId("project"))?;
        let pr_ctx = ctx(ScopeKind::Project, project.as_bytes(), 1);
        let key = match grant {
            ScopeKind::Workspace if keys.grant_scope_id == keys.workspace_id => {
                let wk = open_grant(
                    t,
                    &keys.grant_wrapped_key,
                    &ws_ctx,
                    me,
                    secret,
                    "workspace key",
                )?;
                open_child(
                    t,
                    &keys.project_wrapped_key,
                    &pr_ctx,
                    &wk,
                    &ws_ctx,
                    "project key",
                )?
            }
            ScopeKind::Project if keys.grant_scope_id == keys.project_id => open_grant(
                t,
                &keys.grant_wrapped_key,
                &pr_ctx,
                me,
                secret,
                "project key",
            )?,
            _ => return Err(ChainError::GrantMismatch("project")),
        };
        Ok(Self {
            trail,
            workspace,
            project: Some(project),
            key,
            generation: keys.key_epoch.max(1),
        })
    }

    /// The workspace id.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }
    /// What was opened to derive the key, for its statements to be checked.
    pub fn trail(&self) -> &KeyTrail {
        &self.trail
    }
    /// The project id, when the chain reaches a project.
    pub fn project(&self) -> Option<ProjectId> {
        self.project
    }
    /// The derived key (WK, or PK when a project was named).
    ///
    /// # Security
    /// Secret: use it to wrap child keys, never persist it.
    pub fn key(&self) -> &ScopeKey {
        &self.key
    }
    /// The derived key's generation: workspace and project keys are rotated by replacement,
    /// and grants record which generation they carry.
    pub fn generation(&self) -> u32 {
        self.generation
    }
    /// The key context the derived key is bound to.
    pub fn context(&self) -> KeyContext {
        match self.project {
            None => ctx(ScopeKind::Workspace, self.workspace.as_bytes(), 1),
            Some(p) => ctx(ScopeKind::Project, p.as_bytes(), 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use rstest::rstest;
    use zopp_crypto::envelope::{EnvelopeContext, SecretKind, SecretPayload};
    use zopp_crypto::keys::AgreementPublic;
    use zopp_crypto::wrap::{wrap_to_recipient, wrap_under};

    const ME: [u8; 16] = [0x01; 16];
    const SOMEONE_ELSE: [u8; 16] = [0x02; 16];
    const MY_SECRET: [u8; 32] = [0x33; 32];
    const WS: [u8; 16] = [0xa1; 16];
    const PR: [u8; 16] = [0xb2; 16];
    const ENV: [u8; 16] = [0xc3; 16];
    const WK: [u8; 32] = [0x10; 32];
    const PK: [u8; 32] = [0x20; 32];
    /// EK of epochs 1, 2, 3.
    const EKS: [[u8; 32]; 3] = [[0x31; 32], [0x32; 32], [0x33; 32]];

    fn me() -> PrincipalId {
        PrincipalId::from_bytes(ME)
    }
    fn my_secret() -> AgreementSecret {
        AgreementSecret::from_bytes(MY_SECRET)
    }
    fn my_public() -> AgreementPublic {
        my_secret().public_key()
    }
    fn key(b: [u8; 32]) -> ScopeKey {
        ScopeKey::from_bytes(b)
    }
    fn id_text(b: [u8; 16]) -> String {
        EnvironmentId::from_bytes(b).to_string()
    }
    fn to_me(k: [u8; 32], c: KeyContext) -> Vec<u8> {
        wrap_to_recipient(&key(k), &c, &me(), &my_public(), &mut OsRng)
            .expect("wrap")
            .into_bytes()
    }
    fn under(child: [u8; 32], cc: KeyContext, parent: [u8; 32], pc: KeyContext) -> Vec<u8> {
        wrap_under(&key(child), &cc, &key(parent), &pc, &mut OsRng).into_bytes()
    }

    /// The chain a server would return for a grant at `level` with `epochs` key epochs.
    fn keys_for(level: ScopeKind, epochs: u32) -> pb::EnvironmentKeys {
        let ws = ctx(ScopeKind::Workspace, &WS, 1);
        let pr = ctx(ScopeKind::Project, &PR, 1);
        let env = |n: u32| ctx(ScopeKind::Environment, &ENV, n);
        let ek = |n: u32| EKS[(n - 1) as usize];
        let mut k = pb::EnvironmentKeys {
            workspace_id: id_text(WS),
            project_id: id_text(PR),
            environment_id: id_text(ENV),
            key_epoch: epochs,
            ..Default::default()
        };
        match level {
            ScopeKind::Workspace => {
                k.grant_scope = pb::ScopeKind::Workspace as i32;
                k.grant_scope_id = id_text(WS);
                k.grant_wrapped_key = to_me(WK, ws);
                k.project_wrapped_key = under(PK, pr, WK, ws);
                k.environment_wrapped_key = under(ek(epochs), env(epochs), PK, pr);
            }
            ScopeKind::Project => {
                k.grant_scope = pb::ScopeKind::Project as i32;
                k.grant_scope_id = id_text(PR);
                k.grant_wrapped_key = to_me(PK, pr);
                k.environment_wrapped_key = under(ek(epochs), env(epochs), PK, pr);
            }
            ScopeKind::Environment => {
                k.grant_scope = pb::ScopeKind::Environment as i32;
                k.grant_scope_id = id_text(ENV);
                k.grant_wrapped_key = to_me(ek(epochs), env(epochs));
            }
        }
        k.epoch_links = (1..epochs)
            .rev()
            .map(|n| pb::EpochLink {
                epoch: n,
                wrapped_key: under(ek(n), env(n), ek(n + 1), env(n + 1)),
            })
            .collect();
        k
    }

    fn open_with(expected_epoch_key: [u8; 32], chain: &EnvironmentChain, epoch: u32) {
        let c = EnvelopeContext {
            environment: chain.environment(),
            name_digest: chain.digest("A"),
            version: 1,
            key_epoch: epoch,
        };
        let p = SecretPayload::new(SecretKind::Secret, "A".into(), b"v".to_vec(), Vec::new());
        let sealed = chain
            .seal_key(epoch)
            .expect("epoch reachable")
            .seal(&c, &p, &mut OsRng);
        let opened = SealKey::derive(&key(expected_epoch_key))
            .open(&c, &sealed)
            .expect("derived seal key matches the real one");
        assert_eq!(opened.expose_secret(), b"v");
    }

    #[rstest]
    fn derives_every_grant_level_and_epoch(
        #[values(ScopeKind::Workspace, ScopeKind::Project, ScopeKind::Environment)]
        level: ScopeKind,
        #[values(1, 3)] epochs: u32,
    ) {
        let chain =
            EnvironmentChain::derive(&keys_for(level, epochs), me(), &my_secret()).expect("derive");
        assert_eq!(chain.environment(), EnvironmentId::from_bytes(ENV));
        assert_eq!(chain.key_epoch(), epochs);
        // Names always digest under EK(1), whatever the current epoch.
        assert_eq!(
            chain.digest("DATABASE_URL"),
            NameKey::derive(&key(EKS[0])).digest("DATABASE_URL")
        );
        for n in 1..=epochs {
            open_with(EKS[(n - 1) as usize], &chain, n);
        }
        assert!(chain.seal_key(0).is_none());
        assert!(chain.seal_key(epochs + 1).is_none());
        // The current key is the newest.
        let c = EnvelopeContext {
            environment: chain.environment(),
            name_digest: chain.digest("A"),
            version: 1,
            key_epoch: epochs,
        };
        let p = SecretPayload::new(SecretKind::Secret, "A".into(), b"v".to_vec(), Vec::new());
        let sealed = chain.current_seal_key().seal(&c, &p, &mut OsRng);
        SealKey::derive(&key(EKS[(epochs - 1) as usize]))
            .open(&c, &sealed)
            .expect("current epoch");
    }

    #[rstest]
    fn another_principal_cannot_derive(
        #[values(ScopeKind::Workspace, ScopeKind::Project, ScopeKind::Environment)]
        level: ScopeKind,
    ) {
        let keys = keys_for(level, 2);
        let err =
            EnvironmentChain::derive(&keys, PrincipalId::from_bytes(SOMEONE_ELSE), &my_secret())
                .expect_err("recipient id is bound into the wrap");
        assert!(matches!(err, ChainError::Unwrap(_)), "{err}");
        let err = EnvironmentChain::derive(&keys, me(), &AgreementSecret::from_bytes([0x44; 32]))
            .expect_err("wrong secret");
        assert!(matches!(err, ChainError::Unwrap(_)), "{err}");
    }

    #[test]
    fn inconsistent_chains_are_refused() {
        let mut k = keys_for(ScopeKind::Project, 3);
        k.epoch_links.pop();
        assert_eq!(
            EnvironmentChain::derive(&k, me(), &my_secret()).expect_err("link missing"),
            ChainError::Epochs
        );
        let mut k = keys_for(ScopeKind::Project, 1);
        k.key_epoch = 0;
        assert_eq!(
            EnvironmentChain::derive(&k, me(), &my_secret()).expect_err("epoch 0"),
            ChainError::Epochs
        );
        let mut k = keys_for(ScopeKind::Workspace, 1);
        k.project_wrapped_key.clear();
        assert_eq!(
            EnvironmentChain::derive(&k, me(), &my_secret()).expect_err("no PK"),
            ChainError::Missing("project key")
        );
        let mut k = keys_for(ScopeKind::Environment, 2);
        k.grant_scope_id = id_text(PR);
        assert_eq!(
            EnvironmentChain::derive(&k, me(), &my_secret()).expect_err("grant elsewhere"),
            ChainError::GrantMismatch("environment")
        );
        // Moving the chain to another environment id breaks the AAD.
        let mut k = keys_for(ScopeKind::Project, 1);
        k.environment_id = id_text([0xdd; 16]);
        assert!(matches!(
            EnvironmentChain::derive(&k, me(), &my_secret()),
            Err(ChainError::Unwrap(_))
        ));
        let mut k = keys_for(ScopeKind::Project, 1);
        k.grant_scope = 42;
        assert_eq!(
            EnvironmentChain::derive(&k, me(), &my_secret()).expect_err("unknown level"),
            ChainError::UnknownGrant(42)
        );
    }

    #[test]
    fn scope_chain_reaches_workspace_and_project_keys() {
        let ws = ctx(ScopeKind::Workspace, &WS, 1);
        let pr = ctx(ScopeKind::Project, &PR, 1);
        let only_ws = pb::ScopeKeys {
            workspace_id: id_text(WS),
            grant_scope: pb::ScopeKind::Workspace as i32,
            grant_scope_id: id_text(WS),
            grant_wrapped_key: to_me(WK, ws),
            ..Default::default()
        };
        let c = ScopeChain::derive(&only_ws, me(), &my_secret()).expect("WK");
        assert!(c.key() == &key(WK));
        assert_eq!(c.context(), ws);

        let via_ws = pb::ScopeKeys {
            project_id: id_text(PR),
            project_wrapped_key: under(PK, pr, WK, ws),
            ..only_ws.clone()
        };
        let c = ScopeChain::derive(&via_ws, me(), &my_secret()).expect("PK via WK");
        assert!(c.key() == &key(PK));
        assert_eq!(c.context(), pr);

        let direct = pb::ScopeKeys {
            workspace_id: id_text(WS),
            project_id: id_text(PR),
            grant_scope: pb::ScopeKind::Project as i32,
            grant_scope_id: id_text(PR),
            grant_wrapped_key: to_me(PK, pr),
            ..Default::default()
        };
        let c = ScopeChain::derive(&direct, me(), &my_secret()).expect("PK direct");
        assert!(c.key() == &key(PK));

        let env_grant = pb::ScopeKeys {
            grant_scope: pb::ScopeKind::Environment as i32,
            ..direct
        };
        assert!(ScopeChain::derive(&env_grant, me(), &my_secret()).is_err());
    }
}
