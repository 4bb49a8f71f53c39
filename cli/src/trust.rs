//! Whose key is it? (DESIGN.md §3, FORMAT.md §6, THREAT-MODEL.md §3 item 3.)
//!
//! The server hands out principals' public keys, so it could slip in its own when a client wraps
//! a key to someone. Before wrapping, a client therefore walks the principal's **admission
//! chain**: each principal's keys are signed by the principal that admitted it (directly, or
//! through the one-time key of a workspace invite that the admitter signed), up to a root that
//! joined without an admitter. The chain must verify link by link and end at a root this client
//! trusts:
//!
//! - itself (its own keys, as it holds them);
//! - the workspace's creator, pinned in `$ZOPP_HOME/trust.toml` the first time this client sees
//!   the workspace (trust on first use; the fingerprint is shown so it can be compared);
//! - a principal the user vouched for by fingerprint (`--fingerprint`), pinned likewise.
//!
//! A pinned key that changes is an error, never silently re-pinned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zopp_crypto::code::invite_statement;
use zopp_crypto::ids::{InviteId, PrincipalId, WorkspaceId};
use zopp_crypto::keys::{AgreementPublic, VerifyingKey};
use zopp_crypto::sign::admission_message;
use zopp_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::home::{create_private_dir, read_bounded, replace_private, ZoppHome};

/// Name of the trust store in `$ZOPP_HOME`.
pub const TRUST_FILE: &str = "trust.toml";
/// Longest admission chain followed.
pub const MAX_CHAIN: usize = 64;
const MAX_TRUST_FILE: u64 = 1024 * 1024;

/// Why a principal's keys are not trusted. Messages name principals, never key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustError {
    /// The server's answer lacks a principal the chain needs.
    #[error("the server did not describe principal {0}, which the admission chain needs")]
    Missing(PrincipalId),
    /// A public key does not parse or is a weak or low-order point.
    #[error("principal {principal} ({label}) has an invalid public key")]
    BadKey {
        /// The principal.
        principal: PrincipalId,
        /// Its email or name.
        label: String,
    },
    /// An admission signature does not verify: the keys are not the ones the admitter vouched
    /// for (the server may have substituted a key).
    #[error(
        "the keys of principal {principal} ({label}) are not the ones {admitter} vouched for: \
         its admission signature does not verify (the server may have substituted a key)"
    )]
    BadAdmission {
        /// The principal.
        principal: PrincipalId,
        /// Its email or name.
        label: String,
        /// The admitter, as `principal ID (label)`.
        admitter: String,
    },
    /// The chain loops or is too long.
    #[error("the admission chain of principal {principal} ({label}) loops or is longer than {MAX_CHAIN} links")]
    Chain {
        /// The principal.
        principal: PrincipalId,
        /// Its email or name.
        label: String,
    },
    /// The principal is revoked: no key is ever wrapped to it.
    #[error("principal {principal} ({label}) is revoked")]
    Revoked {
        /// The principal.
        principal: PrincipalId,
        /// Its email or name.
        label: String,
    },
    /// The chain is sound but ends at a root nobody trusted vouched for.
    #[error("{}", unknown_root(principal, label, root, root_label, fingerprint))]
    UnknownRoot {
        /// The principal.
        principal: PrincipalId,
        /// Its email or name.
        label: String,
        /// The chain's root.
        root: PrincipalId,
        /// The root's email or name.
        root_label: String,
        /// The root's fingerprint, to compare out of band.
        fingerprint: String,
    },
    /// A pinned key or creator differs from what the server now presents.
    #[error("{0}")]
    PinMismatch(String),
}

fn unknown_root(
    principal: &PrincipalId,
    label: &str,
    root: &PrincipalId,
    root_label: &str,
    fingerprint: &str,
) -> String {
    if principal == root {
        format!(
            "principal {principal} ({label}) joined without an admitter and nobody you trust \
             vouched for its keys (fingerprint {fingerprint})"
        )
    } else {
        format!(
            "principal {principal} ({label}) is not vouched for by anyone you trust: its \
             admission chain ends at principal {root} ({root_label}), fingerprint {fingerprint}"
        )
    }
}

impl From<TrustError> for Error {
    fn from(e: TrustError) -> Self {
        let hint_fingerprint = match &e {
            TrustError::UnknownRoot { fingerprint, .. } => Some(fingerprint.clone()),
            _ => None,
        };
        Error::Untrusted {
            message: e.to_string(),
            fingerprint: hint_fingerprint,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PinnedRoot {
    principal: String,
    signing_key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TrustDoc {
    /// Workspace id → the creator principal and its Ed25519 key (hex).
    #[serde(default)]
    workspaces: BTreeMap<String, PinnedRoot>,
    /// Principal id → Ed25519 key (hex) of roots vouched for by fingerprint.
    #[serde(default)]
    principals: BTreeMap<String, String>,
}

/// Pinned chain roots. Public keys only: nothing here is secret, but it decides whom keys are
/// wrapped to, so it lives in the private `$ZOPP_HOME` (mode 0600).
#[derive(Clone, Debug)]
pub struct TrustStore {
    path: Option<PathBuf>,
    doc: TrustDoc,
    dirty: bool,
}

impl TrustStore {
    /// Loads `$ZOPP_HOME/trust.toml` (missing: empty).
    ///
    /// # Errors
    /// [`Error::LocalIo`] or [`Error::LocalFormat`] for an unreadable file.
    pub fn load(home: &ZoppHome) -> Result<Self> {
        let path = home.dir().join(TRUST_FILE);
        let doc = match read_bounded(&path, MAX_TRUST_FILE) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| Error::LocalFormat {
                    path: path.clone(),
                    message: "not UTF-8".into(),
                })?;
                toml::from_str(&text).map_err(|e| Error::LocalFormat {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TrustDoc::default(),
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        Ok(Self {
            path: Some(path),
            doc,
            dirty: false,
        })
    }

    /// A store that is never written (principal-token mode writes nothing to disk).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            doc: TrustDoc::default(),
            dirty: false,
        }
    }

    /// Writes the store if anything was pinned since it was loaded.
    ///
    /// # Errors
    /// [`Error::LocalIo`] when the file cannot be written.
    pub fn save(&mut self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let text = toml::to_string(&self.doc).map_err(|e| Error::LocalFormat {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        replace_private(path, text.as_bytes()).map_err(|e| Error::io("cannot write", path, e))?;
        self.dirty = false;
        Ok(())
    }

    /// Pins `root` as the creator of `workspace`.
    pub fn pin_workspace(&mut self, workspace: WorkspaceId, root: PrincipalId, key: &VerifyingKey) {
        self.doc.workspaces.insert(
            workspace.to_string(),
            PinnedRoot {
                principal: root.to_string(),
                signing_key: hex::encode(key.to_bytes()),
            },
        );
        self.dirty = true;
    }

    /// Trusts `root` (vouched for by fingerprint) as a chain root.
    pub fn trust_principal(&mut self, root: PrincipalId, key: &VerifyingKey) {
        self.doc
            .principals
            .insert(root.to_string(), hex::encode(key.to_bytes()));
        self.dirty = true;
    }

    fn workspace_pin(&self, workspace: WorkspaceId) -> Option<&PinnedRoot> {
        self.doc.workspaces.get(&workspace.to_string())
    }

    fn principal_pin(&self, id: PrincipalId) -> Option<&String> {
        self.doc.principals.get(&id.to_string())
    }
}

/// A principal whose keys check out: what a client may wrap keys to.
#[derive(Clone, Debug)]
pub struct TrustedPrincipal {
    /// The principal.
    pub id: PrincipalId,
    /// Its Ed25519 key.
    pub signing: VerifyingKey,
    /// Its X25519 key.
    pub agreement: AgreementPublic,
    /// Email (devices) or name (service principals), for messages.
    pub label: String,
}

/// How a principal describes itself in messages: its email, else its name.
pub fn label(p: &pb::PrincipalPublic) -> String {
    if !p.user_email.is_empty() {
        format!("{}, device '{}'", p.user_email, p.name)
    } else if !p.name.is_empty() {
        format!("service principal '{}'", p.name)
    } else {
        "unnamed".to_string()
    }
}

/// Verifies admission chains against one server answer ([`pb::GetPrincipalsResponse`]).
pub struct Verifier<'a> {
    infos: HashMap<PrincipalId, &'a pb::PrincipalInfo>,
    workspace: Option<(WorkspaceId, PrincipalId)>,
    me: PrincipalId,
    my_key: VerifyingKey,
    fingerprints: Vec<String>,
    verified: HashSet<PrincipalId>,
    notes: Vec<String>,
}

impl<'a> Verifier<'a> {
    /// A verifier for `resp`, run by principal `me` holding `my_key`, also accepting roots whose
    /// fingerprint is in `fingerprints` (as `zopp principal fingerprint` prints them).
    ///
    /// # Errors
    /// [`TrustError::PinMismatch`] when the server names another creator for a workspace than
    /// the one pinned.
    pub fn new(
        resp: &'a pb::GetPrincipalsResponse,
        me: PrincipalId,
        my_key: VerifyingKey,
        fingerprints: &[String],
        store: &mut TrustStore,
    ) -> Result<Self, TrustError> {
        let mut infos = HashMap::new();
        for info in &resp.principals {
            if let Some(p) = &info.principal {
                if let Ok(id) = PrincipalId::try_parse(&p.principal_id) {
                    infos.insert(id, info);
                }
            }
        }
        let workspace = match (
            WorkspaceId::try_parse(&resp.workspace_id),
            PrincipalId::try_parse(&resp.workspace_creator_id),
        ) {
            (Ok(w), Ok(c)) => Some((w, c)),
            _ => None,
        };
        let v = Self {
            infos,
            workspace,
            me,
            my_key,
            fingerprints: fingerprints
                .iter()
                .map(|f| f.trim().to_ascii_lowercase())
                .collect(),
            verified: HashSet::new(),
            notes: Vec::new(),
        };
        if let Some((ws, creator)) = v.workspace {
            if let Some(pin) = store.workspace_pin(ws) {
                if pin.principal != creator.to_string() {
                    return Err(TrustError::PinMismatch(format!(
                        "the server says principal {creator} created this workspace, but you \
                         pinned principal {} as its creator",
                        pin.principal
                    )));
                }
            } else if creator == me {
                // Pin ourselves as soon as we see it: a later claim of another creator is then
                // detected instead of trusted on first use.
                store.pin_workspace(ws, me, &my_key);
            }
        }
        Ok(v)
    }

    /// Notes for the user (roots trusted on first use), to print on stderr.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    fn info(&self, id: PrincipalId) -> Result<&'a pb::PrincipalPublic, TrustError> {
        self.infos
            .get(&id)
            .and_then(|i| i.principal.as_ref())
            .ok_or(TrustError::Missing(id))
    }

    fn keys(
        &self,
        id: PrincipalId,
        p: &pb::PrincipalPublic,
    ) -> Result<(VerifyingKey, AgreementPublic), TrustError> {
        let bad = || TrustError::BadKey {
            principal: id,
            label: label(p),
        };
        let signing = VerifyingKey::try_from_slice(&p.signing_key).map_err(|_| bad())?;
        let agreement = AgreementPublic::try_from_slice(&p.agreement_key)
            .ok()
            .filter(|k| k.is_canonical() && !k.is_low_order())
            .ok_or_else(bad)?;
        Ok((signing, agreement))
    }

    /// Verifies principal `id` and returns the keys that may be wrapped to.
    ///
    /// # Errors
    /// [`TrustError`] naming the first problem found.
    pub fn verify(
        &mut self,
        id: PrincipalId,
        store: &mut TrustStore,
    ) -> Result<TrustedPrincipal, TrustError> {
        self.verify_inner(id, store, false)
    }

    /// Verifies the admission chain of principal `id` as the maker of a key statement
    /// (FORMAT.md §13.6): as [`Verifier::verify`], except that a revoked principal's keys still
    /// count, since what it signed while it was a member stays valid.
    ///
    /// # Errors
    /// [`TrustError`] naming the first problem found.
    pub fn verify_signer(
        &mut self,
        id: PrincipalId,
        store: &mut TrustStore,
    ) -> Result<TrustedPrincipal, TrustError> {
        self.verify_inner(id, store, true)
    }

    fn verify_inner(
        &mut self,
        id: PrincipalId,
        store: &mut TrustStore,
        allow_revoked: bool,
    ) -> Result<TrustedPrincipal, TrustError> {
        let target = self.info(id)?;
        let (signing, agreement) = self.keys(id, target)?;
        let revoked = target.revoked || self.infos.get(&id).is_some_and(|i| i.revoked_at_ms != 0);
        if revoked && !allow_revoked {
            return Err(TrustError::Revoked {
                principal: id,
                label: label(target),
            });
        }
        let trusted = TrustedPrincipal {
            id,
            signing,
            agreement,
            label: label(target),
        };
        if self.verified.contains(&id) {
            return Ok(trusted);
        }
        let mut path = vec![id];
        let mut cur = id;
        loop {
            let p = self.info(cur)?;
            let (cur_signing, cur_agreement) = self.keys(cur, p)?;
            if self.verified.contains(&cur) {
                break;
            }
            if p.admitted_by.is_empty() {
                self.accept_root(id, target, cur, p, &cur_signing, store)?;
                break;
            }
            let admitter_id =
                PrincipalId::try_parse(&p.admitted_by).map_err(|_| TrustError::BadAdmission {
                    principal: cur,
                    label: label(p),
                    admitter: "an invalid principal id".into(),
                })?;
            let admitter = self.info(admitter_id)?;
            let (admitter_key, _) = self.keys(admitter_id, admitter)?;
            let bad = || TrustError::BadAdmission {
                principal: cur,
                label: label(p),
                admitter: format!("principal {admitter_id} ({})", label(admitter)),
            };
            let message = admission_message(&cur, &cur_signing, &cur_agreement, Some(&admitter_id));
            let info = self.infos.get(&cur).ok_or(TrustError::Missing(cur))?;
            if info.admission_invite_key.is_empty() {
                admitter_key
                    .verify(&message, &p.admission_signature)
                    .map_err(|_| bad())?;
            } else {
                // Admitted through a workspace invite: the admitter vouched for the invite's
                // one-time key, and that key signed the admission (FORMAT.md §6.3).
                let invite_key =
                    VerifyingKey::try_from_slice(&info.admission_invite_key).map_err(|_| bad())?;
                let invite = InviteId::try_parse(&info.admission_invite_id).map_err(|_| bad())?;
                admitter_key
                    .verify(
                        &invite_statement(&invite, &invite_key),
                        &info.admission_invite_signature,
                    )
                    .map_err(|_| bad())?;
                invite_key
                    .verify(&message, &p.admission_signature)
                    .map_err(|_| bad())?;
            }
            if path.contains(&admitter_id) || path.len() > MAX_CHAIN {
                return Err(TrustError::Chain {
                    principal: id,
                    label: label(target),
                });
            }
            path.push(admitter_id);
            cur = admitter_id;
        }
        self.verified.extend(path);
        Ok(trusted)
    }

    fn accept_root(
        &mut self,
        id: PrincipalId,
        target: &pb::PrincipalPublic,
        root: PrincipalId,
        root_public: &pb::PrincipalPublic,
        root_key: &VerifyingKey,
        store: &mut TrustStore,
    ) -> Result<(), TrustError> {
        let pinned_key = |hex_key: &str| hex::encode(root_key.to_bytes()) == hex_key;
        if root == self.me {
            return if *root_key == self.my_key {
                Ok(())
            } else {
                Err(TrustError::PinMismatch(format!(
                    "the server presents another key for your own principal {root}"
                )))
            };
        }
        if let Some(k) = store.principal_pin(root) {
            return if pinned_key(k) {
                Ok(())
            } else {
                Err(TrustError::PinMismatch(format!(
                    "the server presents another key for principal {root} ({}) than the one you \
                     vouched for",
                    label(root_public)
                )))
            };
        }
        if let Some((ws, creator)) = self.workspace {
            if creator == root {
                match store.workspace_pin(ws) {
                    Some(pin) if pin.principal == root.to_string() => {
                        return if pinned_key(&pin.signing_key) {
                            Ok(())
                        } else {
                            Err(TrustError::PinMismatch(format!(
                                "the server presents another key for principal {root} ({}), the \
                                 workspace's creator, than the one pinned",
                                label(root_public)
                            )))
                        };
                    }
                    Some(_) => {}
                    None => {
                        store.pin_workspace(ws, root, root_key);
                        self.notes.push(format!(
                            "trusting principal {root} ({}) as the creator of this workspace on \
                             first use; its fingerprint is {}: compare it with theirs",
                            label(root_public),
                            root_key.fingerprint()
                        ));
                        return Ok(());
                    }
                }
            }
        }
        let fingerprint = root_key.fingerprint();
        if self.fingerprints.contains(&fingerprint) {
            store.trust_principal(root, root_key);
            return Ok(());
        }
        Err(TrustError::UnknownRoot {
            principal: id,
            label: label(target),
            root,
            root_label: label(root_public),
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use zopp_crypto::code::OneTimeCode;
    use zopp_crypto::keys::{AgreementSecret, SigningKey};

    const WS: &str = "7d1a3e2c-0000-4000-8000-000000000001";

    struct P {
        id: PrincipalId,
        signing: SigningKey,
        agreement: AgreementSecret,
    }

    fn p(n: u8) -> P {
        P {
            id: PrincipalId::from_bytes([n; 16]),
            signing: SigningKey::from_seed(&[n; 32]),
            agreement: AgreementSecret::from_bytes([n; 32]),
        }
    }

    fn public(x: &P, admitter: Option<&P>) -> pb::PrincipalInfo {
        let vk = x.signing.verifying_key();
        let ak = x.agreement.public_key();
        let sig = admitter
            .map(|a| {
                a.signing
                    .sign(&admission_message(&x.id, &vk, &ak, Some(&a.id)))
                    .to_vec()
            })
            .unwrap_or_default();
        pb::PrincipalInfo {
            principal: Some(pb::PrincipalPublic {
                principal_id: x.id.to_string(),
                signing_key: vk.to_bytes().to_vec(),
                agreement_key: ak.to_bytes().to_vec(),
                name: "laptop".into(),
                user_email: format!("u{}@example.com", x.id.as_bytes()[0]),
                admitted_by: admitter.map(|a| a.id.to_string()).unwrap_or_default(),
                admission_signature: sig,
                created_at_ms: 0,
                revoked: false,
            }),
            ..Default::default()
        }
    }

    /// `x` admitted by `inviter` through a workspace invite.
    fn invited(x: &P, inviter: &P) -> pb::PrincipalInfo {
        let code = OneTimeCode::generate(&mut OsRng);
        let invite_key = code.signing_key();
        let vk = x.signing.verifying_key();
        let ak = x.agreement.public_key();
        let mut info = public(x, None);
        let pp = info.principal.as_mut().expect("set");
        pp.admitted_by = inviter.id.to_string();
        pp.admission_signature = invite_key
            .sign(&admission_message(&x.id, &vk, &ak, Some(&inviter.id)))
            .to_vec();
        info.admission_invite_id = code.id().to_string();
        info.admission_invite_key = invite_key.verifying_key().to_bytes().to_vec();
        info.admission_invite_signature = inviter
            .signing
            .sign(&invite_statement(&code.id(), &invite_key.verifying_key()))
            .to_vec();
        info
    }

    fn resp(creator: &P, infos: Vec<pb::PrincipalInfo>) -> pb::GetPrincipalsResponse {
        pb::GetPrincipalsResponse {
            target_ids: vec![],
            principals: infos,
            workspace_id: WS.into(),
            workspace_creator_id: creator.id.to_string(),
        }
    }

    #[test]
    fn chains_to_the_creator_verify_and_pin_the_creator_on_first_use() {
        let (admin, bob, carol, me) = (p(1), p(2), p(3), p(4));
        let r = resp(
            &admin,
            vec![
                public(&admin, None),
                invited(&bob, &admin),
                public(&carol, Some(&bob)),
                public(&me, None),
            ],
        );
        let mut store = TrustStore::in_memory();
        let mut v = Verifier::new(&r, me.id, me.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        let t = v.verify(carol.id, &mut store).expect("carol checks out");
        assert_eq!(t.agreement, carol.agreement.public_key());
        assert_eq!(v.notes().len(), 1, "the creator was trusted on first use");
        assert!(v.verify(bob.id, &mut store).is_ok());
        // A second answer naming another creator for the same workspace is refused.
        let other = resp(&carol, vec![public(&carol, None)]);
        assert!(matches!(
            Verifier::new(&other, me.id, me.signing.verifying_key(), &[], &mut store),
            Err(TrustError::PinMismatch(_))
        ));
    }

    #[test]
    fn a_substituted_agreement_key_breaks_the_chain() {
        let (admin, bob) = (p(1), p(2));
        let mut swapped = invited(&bob, &admin);
        swapped.principal.as_mut().expect("set").agreement_key =
            AgreementSecret::from_bytes([9; 32])
                .public_key()
                .to_bytes()
                .to_vec();
        let r = resp(&admin, vec![public(&admin, None), swapped]);
        let mut store = TrustStore::in_memory();
        let mut v = Verifier::new(&r, admin.id, admin.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        let err = v.verify(bob.id, &mut store).expect_err("refused");
        assert!(matches!(err, TrustError::BadAdmission { .. }), "{err}");
        assert!(err.to_string().contains("substituted"), "{err}");
    }

    #[test]
    fn a_forged_invite_statement_breaks_the_chain() {
        let (admin, bob, mallory) = (p(1), p(2), p(5));
        // Mallory made the invite but claims the admin admitted bob.
        let mut info = invited(&bob, &mallory);
        info.principal.as_mut().expect("set").admitted_by = admin.id.to_string();
        let r = resp(&admin, vec![public(&admin, None), info]);
        let mut store = TrustStore::in_memory();
        let mut v = Verifier::new(&r, admin.id, admin.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        assert!(matches!(
            v.verify(bob.id, &mut store),
            Err(TrustError::BadAdmission { .. })
        ));
    }

    #[test]
    fn unknown_roots_need_a_fingerprint_and_loops_are_refused() {
        let (admin, stranger, me) = (p(1), p(6), p(4));
        let r = resp(&admin, vec![public(&admin, None), public(&stranger, None)]);
        let mut store = TrustStore::in_memory();
        let mut v = Verifier::new(&r, me.id, me.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        let err = v.verify(stranger.id, &mut store).expect_err("unknown root");
        let TrustError::UnknownRoot { fingerprint, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*fingerprint, stranger.signing.verifying_key().fingerprint());
        let fp = vec![fingerprint.clone()];
        let mut v = Verifier::new(&r, me.id, me.signing.verifying_key(), &fp, &mut store)
            .expect("verifier");
        assert!(v.verify(stranger.id, &mut store).is_ok());
        // Now pinned: no fingerprint needed any more.
        let mut v = Verifier::new(&r, me.id, me.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        assert!(v.verify(stranger.id, &mut store).is_ok());

        let (a, b) = (p(7), p(8));
        let r = resp(&admin, vec![public(&a, Some(&b)), public(&b, Some(&a))]);
        let mut v = Verifier::new(&r, me.id, me.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        assert!(matches!(
            v.verify(a.id, &mut store),
            Err(TrustError::Chain { .. })
        ));
    }

    #[test]
    fn revoked_principals_are_refused() {
        let (admin, bob) = (p(1), p(2));
        let mut info = invited(&bob, &admin);
        info.principal.as_mut().expect("set").revoked = true;
        let r = resp(&admin, vec![public(&admin, None), info]);
        let mut store = TrustStore::in_memory();
        let mut v = Verifier::new(&r, admin.id, admin.signing.verifying_key(), &[], &mut store)
            .expect("verifier");
        assert!(matches!(
            v.verify(bob.id, &mut store),
            Err(TrustError::Revoked { .. })
        ));
    }

    #[test]
    fn the_store_round_trips_through_its_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path());
        let mut s = TrustStore::load(&home).expect("empty");
        let a = p(1);
        s.pin_workspace(
            WorkspaceId::try_parse(WS).expect("id"),
            a.id,
            &a.signing.verifying_key(),
        );
        s.save().expect("save");
        let back = TrustStore::load(&home).expect("load");
        assert_eq!(back.doc, s.doc);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(TRUST_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
