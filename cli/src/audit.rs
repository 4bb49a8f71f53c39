//! The audit trail from the client's side (DESIGN.md §6, FORMAT.md §8): paging through a chain
//! with filters, and verifying it without trusting the server.
//!
//! Verification recomputes every entry's hash from its fields, follows `prev_hash` from the
//! first entry, requires gap-free sequence numbers, checks each actor's request signature, checks
//! that the head the server reports is the last entry, and compares the chain with the head
//! pinned in `$ZOPP_HOME/audit-pins/` by the previous clean run, so a truncated or rewritten
//! chain is caught even when it is internally consistent.
//!
//! # Security
//! Actor keys come from the server (`ListAuditResponse.actors`). A key is trusted on first use
//! and pinned with the head: a key that later changes fails verification, and this identity's own
//! key is checked against the local key file. Before the admission chain of issue #3 exists, a
//! server could still present a key of its own for a principal this client has never seen, and
//! the action, scope, target, result and time of an entry are the server's word (the actor signs
//! the request, not the server's description of it); a rewrite of pinned history is detected.
//!
//! Signatures are checked in batches (`zopp_crypto::keys::verify_batch_grouped`, which sums the
//! terms of each actor's key: a chain has few actors and many entries) on every core while the
//! next page downloads; a failed batch is re-checked one by one to name the first bad entry.
//! Batch verification is not strict (see its `# Security`), which is harmless here: the party
//! verification guards against is the server, which holds no actor key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tonic::Response;
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::ids::{PrincipalId, ServerId, WorkspaceId};
use zopp_crypto::keys::{verify_batch_grouped, AgreementPublic, VerifyingKey};
use zopp_crypto::sign::{join_message, request_message, NONCE_LEN, UNBOUND_SERVER, ZERO_HASH};
use zopp_proto::v1 as pb;

use crate::client::{Client, Target};
use crate::error::{Error, Missing, Result};
use crate::home::{create_private_dir, read_bounded, replace_private, ZoppHome};
use crate::validate::{check_name, NameKind};

/// Full gRPC path of `ListAudit`, as signed (FORMAT.md §4).
pub const LIST_AUDIT: &str = "/zopp.v1.Zopp/ListAudit";
/// Full gRPC path of `Join`: its audit entries carry the join signature (FORMAT.md §6).
const JOIN: &str = "/zopp.v1.Zopp/Join";
/// Full gRPC path of `JoinWorkspace`: like `Join`, signed over the keys, email and token hash.
const JOIN_WORKSPACE: &str = "/zopp.v1.Zopp/JoinWorkspace";
/// Full gRPC path of `GetKeyShare`, signed for no server (FORMAT.md §4).
const GET_KEY_SHARE: &str = "/zopp.v1.Zopp/GetKeyShare";
/// Entries asked for per page (the server's largest page).
pub const PAGE_SIZE: u32 = 1000;
/// Directory of `$ZOPP_HOME` holding pinned chain heads.
pub const PINS_DIR: &str = "audit-pins";
/// Version of the pin file format.
const PIN_V1: u8 = 1;
/// Largest pin file read back: a head and the keys of its actors.
const MAX_PIN_FILE: u64 = 4 * 1024 * 1024;
/// Smallest share of a page worth a thread of its own: below it, spawning costs more than the
/// batch saves.
const MIN_BATCH_PER_THREAD: usize = 64;
/// Most threads used for signatures (the CLI is one process among others on the machine).
const MAX_THREADS: usize = 8;

/// Which chain: a workspace's, or the server's (joins and invites).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditChain {
    /// The server chain.
    Server,
    /// The chain of the workspace with this name.
    Workspace(String),
}

impl AuditChain {
    /// The chain of `workspace`, or the server chain when none is given; the name is checked.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a malformed workspace name.
    pub fn try_new(workspace: Option<&str>) -> Result<Self> {
        match workspace {
            None => Ok(Self::Server),
            Some(w) => {
                check_name(NameKind::Workspace, w)?;
                Ok(Self::Workspace(w.to_owned()))
            }
        }
    }

    /// How messages name it: `workspace 'acme'` or `the server`.
    pub fn describe(&self) -> String {
        match self {
            Self::Server => "the server".to_owned(),
            Self::Workspace(w) => format!("workspace '{w}'"),
        }
    }

    fn request_name(&self) -> &str {
        match self {
            Self::Server => "",
            Self::Workspace(w) => w,
        }
    }

    fn target(&self) -> Target<'_> {
        match self {
            Self::Server => Target::Server,
            Self::Workspace(w) => Target::Workspace(w),
        }
    }
}

/// Whose entries to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalFilter {
    /// One principal (filtered by the server).
    Id(PrincipalId),
    /// Every principal of the user with this email (filtered here, from the actors the server
    /// lists, since a user may have several devices).
    Email(String),
}

/// Filters of `zopp audit list` and `export`. Times are unix milliseconds, both ends included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries at or after this time.
    pub since_ms: Option<i64>,
    /// Only entries at or before this time.
    pub until_ms: Option<i64>,
    /// Only this action, e.g. `secret.read`.
    pub action: Option<String>,
    /// Only this principal or user.
    pub principal: Option<PrincipalFilter>,
}

/// One entry as `list` and `export` show it: the stored fields plus what the server says about
/// the actor.
#[derive(Clone, Copy, Debug)]
pub struct AuditItem<'a> {
    /// The entry as the server sent it.
    pub entry: &'a pb::AuditEntry,
    /// The actor's user email, when the actor is a user's principal.
    pub actor_email: Option<&'a str>,
}

impl Client {
    /// One page of `chain`: entries after `after_seq` that match `filter` (oldest first), the
    /// public keys of their actors and the chain's head.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown (or hidden) workspace; [`Error::Refused`] with
    /// `PERMISSION_DENIED` for a caller who is not an admin of it; transport errors.
    pub async fn audit_page(
        &self,
        chain: &AuditChain,
        filter: &AuditFilter,
        after_seq: u64,
        limit: u32,
    ) -> Result<pb::ListAuditResponse> {
        let principal_id = match &filter.principal {
            Some(PrincipalFilter::Id(p)) => p.to_string(),
            _ => String::new(),
        };
        let req = self.signed(
            LIST_AUDIT,
            pb::ListAuditRequest {
                workspace: chain.request_name().to_owned(),
                after_seq,
                limit,
                since_ms: filter.since_ms.unwrap_or(0),
                until_ms: filter.until_ms.unwrap_or(0),
                action: filter.action.clone().unwrap_or_default(),
                principal_id,
            },
        );
        self.rpc()
            .list_audit(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.status_error(s, chain.target()))
    }

    /// Calls `each` for every entry of `chain` that matches `filter`, oldest first, one page at
    /// a time (memory stays bounded however long the chain); returns how many matched.
    ///
    /// # Errors
    /// What [`Client::audit_page`] returns, and whatever `each` returns.
    pub async fn for_each_audit_entry<E: From<Error>>(
        &self,
        chain: &AuditChain,
        filter: &AuditFilter,
        mut each: impl FnMut(AuditItem<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let email = match &filter.principal {
            Some(PrincipalFilter::Email(e)) => Some(e.as_str()),
            _ => None,
        };
        let mut after = 0u64;
        let mut count = 0u64;
        loop {
            let page = self.audit_page(chain, filter, after, PAGE_SIZE).await?;
            let Some(last) = page.entries.last().map(|e| e.seq) else {
                return Ok(count);
            };
            if last <= after {
                return Err(Error::BadResponse(format!(
                    "the audit page after entry {after} went backwards to entry {last}"
                ))
                .into());
            }
            let emails: HashMap<&str, &str> = page
                .actors
                .iter()
                .filter(|a| !a.user_email.is_empty())
                .map(|a| (a.principal_id.as_str(), a.user_email.as_str()))
                .collect();
            for entry in &page.entries {
                let actor_email = emails.get(entry.actor_principal_id.as_str()).copied();
                if let Some(want) = email {
                    if !actor_email.is_some_and(|e| e.eq_ignore_ascii_case(want)) {
                        continue;
                    }
                }
                each(AuditItem { entry, actor_email })?;
                count += 1;
            }
            if last >= page.head_seq {
                return Ok(count);
            }
            after = last;
        }
    }

    /// Verifies the whole of `chain` (see the module documentation) and, when every check
    /// passes, pins its head in `home` for the next run.
    ///
    /// # Errors
    /// [`Error::AuditChain`] naming the first bad entry (or the truncation) when verification
    /// fails; [`Error::NotFound`], [`Error::Refused`] and transport errors from the listing;
    /// [`Error::LocalIo`]/[`Error::LocalFormat`] for the pin file.
    pub async fn verify_audit(&self, chain: &AuditChain, home: &ZoppHome) -> Result<Verified> {
        let (pin_name, workspace_id) = match chain {
            AuditChain::Server => ("server".to_owned(), None),
            AuditChain::Workspace(name) => {
                let id = self.workspace_id(name).await?;
                (id.to_string(), Some(id))
            }
        };
        let pin_path = pin_path(home, self.server().url(), &pin_name);
        let pin = Pin::load(&pin_path)?;
        let own = (
            self.identity().principal().to_string(),
            self.identity().keys().signing.verifying_key(),
        );
        let mut verifier = ChainVerifier::new(
            self.server_id(),
            matches!(chain, AuditChain::Server),
            pin.as_ref(),
        );
        verifier.own_key(own.0, own.1);
        let fail = |failure: ChainFailure| Error::AuditChain {
            chain: chain.describe(),
            failure,
        };
        let all = AuditFilter::default();
        let mut page = self.audit_page(chain, &all, 0, PAGE_SIZE).await?;
        let mut head: (u64, Vec<u8>);
        // Page N is checked on the blocking pool while page N+1 downloads.
        loop {
            let last = page.entries.last().map(|e| e.seq);
            let done = match last {
                None => true,
                Some(seq) => seq >= page.head_seq,
            };
            head = (page.head_seq, std::mem::take(&mut page.head_hash));
            let mut v = verifier;
            let check = tokio::task::spawn_blocking(move || {
                let r = v.page(&page);
                (v, r)
            });
            let after = last.unwrap_or(0);
            if done {
                let (v, r) = check.await.map_err(join_error)?;
                r.map_err(fail)?;
                verifier = v;
                break;
            }
            let (next, checked) =
                tokio::join!(self.audit_page(chain, &all, after, PAGE_SIZE), check);
            let (v, r) = checked.map_err(join_error)?;
            r.map_err(fail)?;
            verifier = v;
            page = next?;
        }
        let verified = verifier.finish(head.0, &head.1).map_err(fail)?;
        let pin = Pin {
            version: PIN_V1,
            server: self.server().url().to_owned(),
            workspace: match chain {
                AuditChain::Server => None,
                AuditChain::Workspace(w) => Some(w.clone()),
            },
            workspace_id: workspace_id.map(|w| w.to_string()),
            seq: verified.head_seq,
            hash: hex::encode(verified.head_hash),
            verified_at_ms: now_ms(),
            actors: verified.actor_keys.clone(),
        };
        pin.store(&pin_path)?;
        Ok(Verified {
            pin_path,
            ..verified
        })
    }

    /// The id of the workspace named `name`: pins are kept by id, so a workspace deleted and
    /// re-created under the same name starts a new pin instead of failing as "rewritten".
    async fn workspace_id(&self, name: &str) -> Result<WorkspaceId> {
        let list = self.list_workspaces().await?;
        let ws = list.iter().find(|w| w.name == name).ok_or_else(|| {
            Error::NotFound(Missing::Workspace {
                name: name.to_owned(),
            })
        })?;
        WorkspaceId::try_parse(&ws.id).map_err(|_| {
            Error::BadResponse(format!("workspace '{name}' has an invalid id '{}'", ws.id))
        })
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::BadResponse(format!("audit verification stopped: {e}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a clean verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked (the whole chain).
    pub entries: u64,
    /// Sequence number of the head.
    pub head_seq: u64,
    /// Hash of the head.
    pub head_hash: [u8; 32],
    /// Actor signatures checked (entries of one multi-write request share one signature).
    pub signatures: u64,
    /// Actor signatures of entries up to the pinned head, checked by the run that pinned it and
    /// not again: reaching the pinned hash proves those entries unchanged.
    pub pinned_signatures: u64,
    /// Entries without an actor: server events on the server chain, vouched for by the server
    /// alone.
    pub server_events: u64,
    /// The head pinned by the previous run, if there was one.
    pub previous_pin: Option<u64>,
    /// The pin file written.
    pub pin_path: PathBuf,
    /// Every actor's signing key (hex), pinned for the next run.
    actor_keys: BTreeMap<String, String>,
}

/// Why a chain failed verification: the first bad entry and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainFailure {
    /// An entry is missing.
    #[error("entry {seq}: missing (chain has a gap)")]
    Missing {
        /// The missing sequence number.
        seq: u64,
    },
    /// An entry came after a later one, or twice.
    #[error("entry {seq}: out of order (expected entry {expected})")]
    OutOfOrder {
        /// The entry's sequence number.
        seq: u64,
        /// The sequence number due at its place.
        expected: u64,
    },
    /// An entry's `prev_hash` is not its predecessor's hash.
    #[error("entry {seq}: {}", broken_link(*seq))]
    BrokenLink {
        /// The entry's sequence number.
        seq: u64,
    },
    /// An entry's fields do not hash to its stored hash.
    #[error("entry {seq}: hash mismatch (edited field?)")]
    HashMismatch {
        /// The entry's sequence number.
        seq: u64,
    },
    /// An entry's signature is not its actor's.
    #[error("entry {seq}: actor signature invalid")]
    BadSignature {
        /// The entry's sequence number.
        seq: u64,
    },
    /// The server gave no usable public key for an entry's actor.
    #[error("entry {seq}: no valid public key for actor {actor}")]
    UnknownActor {
        /// The entry's sequence number.
        seq: u64,
        /// The actor's principal id.
        actor: String,
    },
    /// An entry on a workspace chain has no actor, so nothing vouches for it.
    #[error("entry {seq}: no actor (only server events on the server chain may be unsigned)")]
    Unsigned {
        /// The entry's sequence number.
        seq: u64,
    },
    /// The server reports a different key for an actor than the one pinned at the last run.
    #[error("actor {actor}: the server reports a different public key than at the last verify")]
    KeyChanged {
        /// The actor's principal id.
        actor: String,
    },
    /// The server reports a key for this identity's own principal that is not its key.
    #[error(
        "actor {actor}: the server reports a public key for this identity that is not its own"
    )]
    NotOwnKey {
        /// This identity's principal id.
        actor: String,
    },
    /// The entry at the pinned position is not the one pinned.
    #[error(
        "entry {seq}: differs from the head pinned at the last verify (the chain was rewritten)"
    )]
    PinMismatch {
        /// The pinned sequence number.
        seq: u64,
    },
    /// The chain ends before the pinned head.
    #[error("chain truncated: pinned head is seq {pinned} but the chain ends at {end}")]
    Truncated {
        /// The pinned head's sequence number.
        pinned: u64,
        /// The last entry the server sent.
        end: u64,
    },
    /// The head the server reports is not the last entry it sent.
    #[error("head mismatch: the server reports head {head_seq} but the chain it sent ends at {end}{}", if head_seq == end { " with another hash" } else { "" })]
    HeadMismatch {
        /// The reported head.
        head_seq: u64,
        /// The last entry sent.
        end: u64,
    },
}

fn broken_link(seq: u64) -> String {
    if seq <= 1 {
        "prev_hash is not the start of a chain (inserted entry?)".to_owned()
    } else {
        format!(
            "prev_hash is not the hash of entry {} (reordered, inserted or removed entry?)",
            seq - 1
        )
    }
}

/// The keys the server lists for one actor.
#[derive(Clone, Debug)]
struct ActorKeys {
    /// `None` when the server sent an unusable key: every entry by the actor then fails.
    signing: Option<VerifyingKey>,
    agreement: Option<AgreementPublic>,
    email: String,
}

/// A signature to check: the entry's index in its page and the message its actor signed.
struct SigJob<'a> {
    index: usize,
    key: VerifyingKey,
    message: Vec<u8>,
    signature: &'a [u8],
}

/// The request fields that one signature covers; entries written by one multi-write request
/// share them, and their signature is checked once.
#[derive(Clone, Default, PartialEq, Eq)]
struct SignedRequest {
    actor: String,
    method: String,
    timestamp_ms: i64,
    nonce: Vec<u8>,
    request_hash: Vec<u8>,
    signature: Vec<u8>,
}

/// Checks a chain page by page. Pure and synchronous: the caller downloads, this checks.
pub struct ChainVerifier {
    /// The deployment the requests were signed for (FORMAT.md §4).
    server_id: ServerId,
    server_chain: bool,
    next_seq: u64,
    prev_hash: [u8; 32],
    pin: Option<(u64, [u8; 32])>,
    /// Keys pinned at the last run; the server must report the same ones.
    pinned_keys: BTreeMap<String, String>,
    own: Option<(String, VerifyingKey)>,
    actors: HashMap<String, ActorKeys>,
    last_signed: Option<SignedRequest>,
    signatures: u64,
    pinned_signatures: u64,
    server_events: u64,
}

impl std::fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainVerifier(next {})", self.next_seq)
    }
}

impl ChainVerifier {
    /// A verifier for a workspace chain (`server_chain == false`) or the server chain, starting
    /// from the first entry, with the pin of the last run if any.
    fn new(server_id: ServerId, server_chain: bool, pin: Option<&Pin>) -> Self {
        Self {
            server_id,
            server_chain,
            next_seq: 1,
            prev_hash: ZERO_HASH,
            pin: pin.map(|p| (p.seq, p.hash_bytes())),
            pinned_keys: pin.map(|p| p.actors.clone()).unwrap_or_default(),
            own: None,
            actors: HashMap::new(),
            last_signed: None,
            signatures: 0,
            pinned_signatures: 0,
            server_events: 0,
        }
    }

    /// Declares this identity's own principal and key, which the server must not replace.
    fn own_key(&mut self, principal: String, key: VerifyingKey) {
        self.own = Some((principal, key));
    }

    /// Checks one page, which must continue where the previous one ended.
    ///
    /// # Errors
    /// The first failure in the page, by sequence number.
    pub fn page(&mut self, page: &pb::ListAuditResponse) -> Result<(), ChainFailure> {
        self.learn_actors(&page.actors)?;
        let mut jobs: Vec<SigJob<'_>> = Vec::with_capacity(page.entries.len());
        let mut chain_failure = None;
        for (index, e) in page.entries.iter().enumerate() {
            if let Err(f) = self.link(index, e, &mut jobs) {
                chain_failure = Some((index, f));
                break;
            }
        }
        // Entries before a broken link still need their signatures checked: a bad signature
        // there is the first failure.
        if let Some(bad) = first_bad_signature(&jobs) {
            let seq = page.entries[jobs[bad].index].seq;
            return Err(ChainFailure::BadSignature { seq });
        }
        match chain_failure {
            Some((_, f)) => Err(f),
            None => Ok(()),
        }
    }

    /// Records the actors' keys, refusing a key that differs from the pinned or own one.
    fn learn_actors(&mut self, actors: &[pb::PrincipalPublic]) -> Result<(), ChainFailure> {
        for a in actors {
            if self.actors.contains_key(&a.principal_id) {
                let known = &self.actors[&a.principal_id];
                if known.signing.map(|k| k.to_bytes().to_vec()) != Some(a.signing_key.clone()) {
                    return Err(ChainFailure::KeyChanged {
                        actor: a.principal_id.clone(),
                    });
                }
                continue;
            }
            let signing = VerifyingKey::try_from_slice(&a.signing_key).ok();
            if let Some((id, key)) = &self.own {
                if *id == a.principal_id && signing != Some(*key) {
                    return Err(ChainFailure::NotOwnKey { actor: id.clone() });
                }
            }
            if let Some(pinned) = self.pinned_keys.get(&a.principal_id) {
                if *pinned != hex::encode(&a.signing_key) {
                    return Err(ChainFailure::KeyChanged {
                        actor: a.principal_id.clone(),
                    });
                }
            }
            self.actors.insert(
                a.principal_id.clone(),
                ActorKeys {
                    signing,
                    agreement: AgreementPublic::try_from_slice(&a.agreement_key).ok(),
                    email: a.user_email.clone(),
                },
            );
        }
        Ok(())
    }

    /// Checks one entry's place, link, hash and pin, then queues its signature.
    fn link<'p>(
        &mut self,
        index: usize,
        e: &'p pb::AuditEntry,
        jobs: &mut Vec<SigJob<'p>>,
    ) -> Result<(), ChainFailure> {
        let hash = self.check_link(e)?;
        self.signature(index, e, jobs)?;
        self.advance(hash);
        Ok(())
    }

    /// The entry's hash, if it sits where the chain expects it: the next sequence number,
    /// linked to its predecessor, hashing to its stored hash, and equal to the pin at the pinned
    /// position.
    fn check_link(&self, e: &pb::AuditEntry) -> Result<[u8; 32], ChainFailure> {
        let seq = self.next_seq;
        if e.seq > seq {
            return Err(ChainFailure::Missing { seq });
        }
        if e.seq < seq {
            return Err(ChainFailure::OutOfOrder {
                seq: e.seq,
                expected: seq,
            });
        }
        if e.prev_hash.as_slice() != self.prev_hash.as_slice() {
            return Err(ChainFailure::BrokenLink { seq });
        }
        let hash = AuditRecord {
            seq,
            time_ms: e.time_ms,
            actor: &e.actor_principal_id,
            action: &e.action,
            scope: &e.scope,
            target: &e.target,
            method: &e.method,
            request_timestamp_ms: e.request_timestamp_ms,
            nonce: &e.nonce,
            request_hash: &e.request_hash,
            signature: &e.signature,
            result: &e.result,
        }
        .chain_hash(&self.prev_hash);
        if e.hash.as_slice() != hash.as_slice() {
            return Err(ChainFailure::HashMismatch { seq });
        }
        if let Some((pinned_seq, pinned_hash)) = self.pin {
            if pinned_seq == seq && pinned_hash != hash {
                return Err(ChainFailure::PinMismatch { seq });
            }
        }
        Ok(hash)
    }

    fn advance(&mut self, hash: [u8; 32]) {
        self.prev_hash = hash;
        self.next_seq += 1;
    }

    /// Queues (or, for a join, checks) the actor signature of an entry that linked correctly.
    fn signature<'p>(
        &mut self,
        index: usize,
        e: &'p pb::AuditEntry,
        jobs: &mut Vec<SigJob<'p>>,
    ) -> Result<(), ChainFailure> {
        let seq = e.seq;
        if e.actor_principal_id.is_empty() {
            // The server acting on an operator's command (`zopp-server invite create`).
            if !self.server_chain {
                return Err(ChainFailure::Unsigned { seq });
            }
            self.server_events += 1;
            return Ok(());
        }
        let key = self
            .actors
            .get(&e.actor_principal_id)
            .and_then(|a| a.signing);
        let Some(key) = key else {
            return Err(ChainFailure::UnknownActor {
                seq,
                actor: e.actor_principal_id.clone(),
            });
        };
        if self.repeats_last_request(e) {
            return Ok(());
        }
        if self.pin.is_some_and(|(pinned, _)| seq <= pinned) {
            // Verified by the run that pinned the head. The entry is byte for byte the one
            // verified then if the chain reaches the pinned hash, and the run fails if it does
            // not (a pinned key that changed fails in `learn_actors`), so the check would only
            // repeat itself.
            self.pinned_signatures += 1;
            return Ok(());
        }
        self.signatures += 1;
        if e.method == JOIN || e.method == JOIN_WORKSPACE {
            // A join is self-signed over the new keys, the email and the token hash (FORMAT.md
            // §6): rare enough to check on the spot.
            let actor = &self.actors[&e.actor_principal_id];
            let ok = match (
                actor.agreement,
                <&[u8; 32]>::try_from(e.request_hash.as_slice()),
            ) {
                (Some(agreement), Ok(token_hash)) => key
                    .verify(
                        &join_message(&key, &agreement, &actor.email, token_hash),
                        &e.signature,
                    )
                    .is_ok(),
                _ => false,
            };
            return if ok {
                Ok(())
            } else {
                Err(ChainFailure::BadSignature { seq })
            };
        }
        let (Ok(nonce), Ok(body_hash)) = (
            <&[u8; NONCE_LEN]>::try_from(e.nonce.as_slice()),
            <&[u8; 32]>::try_from(e.request_hash.as_slice()),
        ) else {
            return Err(ChainFailure::BadSignature { seq });
        };
        jobs.push(SigJob {
            index,
            key,
            message: request_message(
                // A principal token's first call is signed before it knows the server id.
                if e.method == GET_KEY_SHARE {
                    &UNBOUND_SERVER
                } else {
                    &self.server_id
                },
                &e.method,
                e.request_timestamp_ms,
                nonce,
                body_hash,
            ),
            signature: &e.signature,
        });
        Ok(())
    }

    /// Whether `e` was written by the same signed request as the previous signed entry (one
    /// `WriteSecrets` call appends one entry per secret): its signature was already queued.
    fn repeats_last_request(&mut self, e: &pb::AuditEntry) -> bool {
        if let Some(last) = &self.last_signed {
            if last.signature == e.signature
                && last.actor == e.actor_principal_id
                && last.method == e.method
                && last.timestamp_ms == e.request_timestamp_ms
                && last.nonce == e.nonce
                && last.request_hash == e.request_hash
            {
                return true;
            }
        }
        let last = self.last_signed.get_or_insert_with(SignedRequest::default);
        last.actor.clone_from(&e.actor_principal_id);
        last.method.clone_from(&e.method);
        last.timestamp_ms = e.request_timestamp_ms;
        last.nonce.clone_from(&e.nonce);
        last.request_hash.clone_from(&e.request_hash);
        last.signature.clone_from(&e.signature);
        false
    }

    /// Final checks once the server has no more entries: its head is the last entry, and the
    /// chain still reaches the pinned head.
    ///
    /// # Errors
    /// [`ChainFailure::HeadMismatch`] or [`ChainFailure::Truncated`].
    fn finish(self, head_seq: u64, head_hash: &[u8]) -> Result<Verified, ChainFailure> {
        let end = self.next_seq - 1;
        if let Some((pinned, _)) = self.pin {
            if pinned > end {
                return Err(ChainFailure::Truncated { pinned, end });
            }
        }
        if head_seq != end || head_hash != self.prev_hash.as_slice() {
            return Err(ChainFailure::HeadMismatch { head_seq, end });
        }
        let mut actor_keys = self.pinned_keys;
        for (id, a) in &self.actors {
            if let Some(k) = a.signing {
                actor_keys
                    .entry(id.clone())
                    .or_insert_with(|| hex::encode(k.to_bytes()));
            }
        }
        Ok(Verified {
            entries: end,
            head_seq: end,
            head_hash: self.prev_hash,
            signatures: self.signatures,
            pinned_signatures: self.pinned_signatures,
            server_events: self.server_events,
            previous_pin: self.pin.map(|(seq, _)| seq),
            pin_path: PathBuf::new(),
            actor_keys,
        })
    }
}

/// Index (into `jobs`) of the first signature that fails, checking batches on every core.
fn first_bad_signature(jobs: &[SigJob<'_>]) -> Option<usize> {
    if jobs.is_empty() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores
        .min(MAX_THREADS)
        .min(jobs.len().div_ceil(MIN_BATCH_PER_THREAD))
        .max(1);
    let share = jobs.len().div_ceil(threads);
    if threads == 1 {
        return first_bad_in(jobs);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(share)
            .enumerate()
            .map(|(i, chunk)| s.spawn(move || first_bad_in(chunk).map(|j| i * share + j)))
            .collect();
        handles
            .into_iter()
            // A panicking check is a failed check, never a pass.
            .map(|h| h.join().unwrap_or(Some(0)))
            .fold(None, |acc: Option<usize>, r| match (acc, r) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
    })
}

/// One batch; when it fails, each signature on its own to find the first bad one.
fn first_bad_in(jobs: &[SigJob<'_>]) -> Option<usize> {
    let msgs: Vec<&[u8]> = jobs.iter().map(|j| j.message.as_slice()).collect();
    let sigs: Vec<&[u8]> = jobs.iter().map(|j| j.signature).collect();
    let keys: Vec<VerifyingKey> = jobs.iter().map(|j| j.key).collect();
    if verify_batch_grouped(&msgs, &sigs, &keys, &mut rand_core::OsRng).is_ok() {
        return None;
    }
    jobs.iter()
        .position(|j| j.key.verify(&j.message, j.signature).is_err())
        // The batch failed, so one of them is bad even if each passes on its own: blame the
        // first rather than pass the page.
        .or(Some(0))
}

/// `$ZOPP_HOME/audit-pins/<server hash>/<workspace id or "server">.json`. The server URL is
/// hashed so that it needs no escaping in a file name.
fn pin_path(home: &ZoppHome, server: &str, chain: &str) -> PathBuf {
    let h = zopp_crypto::sha256(server.as_bytes());
    home.dir()
        .join(PINS_DIR)
        .join(hex::encode(&h[..16]))
        .join(format!("{chain}.json"))
}

/// The head pinned by the last clean verification, with the actors' keys seen so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pin {
    version: u8,
    /// Server URL (for people reading the file).
    server: String,
    /// Workspace name at pin time (for people), absent for the server chain.
    workspace: Option<String>,
    /// Workspace id, absent for the server chain.
    workspace_id: Option<String>,
    /// Sequence number of the pinned head.
    seq: u64,
    /// Hash of the pinned head, hex.
    hash: String,
    /// When it was pinned (unix ms).
    verified_at_ms: i64,
    /// Principal id → Ed25519 public key (hex) of every actor seen.
    actors: BTreeMap<String, String>,
}

impl Pin {
    fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match read_bounded(path, MAX_PIN_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        let bad = |message: String| Error::LocalFormat {
            path: path.to_owned(),
            message,
        };
        let pin: Pin = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if pin.version != PIN_V1 {
            return Err(bad(format!("unknown pin version {}", pin.version)));
        }
        let hash_ok = hex::decode(&pin.hash).is_ok_and(|h| h.len() == 32);
        if !hash_ok {
            return Err(bad("the pinned hash is not 32 bytes of hex".into()));
        }
        Ok(Some(pin))
    }

    fn hash_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(h) = hex::decode(&self.hash) {
            if h.len() == 32 {
                out.copy_from_slice(&h);
            }
        }
        out
    }

    fn store(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| Error::LocalFormat {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        replace_private(path, &text).map_err(|e| Error::io("cannot write", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use zopp_crypto::keys::{AgreementSecret, SigningKey};
    use zopp_crypto::sign::sign_request;

    /// Signing seed of the test actor.
    const ALICE_SEED: [u8; 32] = [0xa1; 32];
    /// Signing seed of another principal.
    const MALLORY_SEED: [u8; 32] = [0x3a; 32];
    /// The test actor's principal id.
    const ALICE: &str = "6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11";
    const GET_SECRET: &str = "/zopp.v1.Zopp/GetSecret";
    /// The deployment the test requests are signed for.
    const SERVER: ServerId = ServerId::from_bytes([0x5e; 16]);

    fn alice() -> SigningKey {
        SigningKey::from_seed(&ALICE_SEED)
    }

    fn actor(id: &str, key: &SigningKey) -> pb::PrincipalPublic {
        pb::PrincipalPublic {
            principal_id: id.into(),
            signing_key: key.verifying_key().to_bytes().to_vec(),
            agreement_key: AgreementSecret::from_bytes([7; 32])
                .public_key()
                .to_bytes()
                .to_vec(),
            user_email: "alice@example.com".into(),
            ..Default::default()
        }
    }

    /// Signs a request as `key` and appends its entry to `chain`, as the server would.
    fn push(chain: &mut Vec<pb::AuditEntry>, key: &SigningKey, body: &[u8]) {
        let seq = chain.len() as u64 + 1;
        let nonce = [seq as u8; NONCE_LEN];
        let ts = 1_700_000_000_000 + seq as i64;
        let signature = sign_request(key, &SERVER, GET_SECRET, ts, &nonce, body).to_vec();
        let mut e = pb::AuditEntry {
            seq,
            time_ms: ts + 1,
            actor_principal_id: ALICE.into(),
            action: "secret.read".into(),
            scope: "environment/x".into(),
            target: format!("secret/{seq}@1"),
            nonce: nonce.to_vec(),
            signature,
            result: "ok".into(),
            request_hash: zopp_crypto::sha256(body).to_vec(),
            method: GET_SECRET.into(),
            request_timestamp_ms: ts,
            ..Default::default()
        };
        rehash_from(chain, e.clone(), &mut e);
        chain.push(e);
    }

    /// Sets `out`'s prev_hash and hash from `e`'s fields after the current end of `chain`.
    fn rehash_from(chain: &[pb::AuditEntry], e: pb::AuditEntry, out: &mut pb::AuditEntry) {
        let prev: [u8; 32] = chain
            .last()
            .map(|p| p.hash.clone().try_into().expect("32 bytes"))
            .unwrap_or(ZERO_HASH);
        *out = e;
        out.prev_hash = prev.to_vec();
        out.hash = record(out).chain_hash(&prev).to_vec();
    }

    fn record(e: &pb::AuditEntry) -> AuditRecord<'_> {
        AuditRecord {
            seq: e.seq,
            time_ms: e.time_ms,
            actor: &e.actor_principal_id,
            action: &e.action,
            scope: &e.scope,
            target: &e.target,
            method: &e.method,
            request_timestamp_ms: e.request_timestamp_ms,
            nonce: &e.nonce,
            request_hash: &e.request_hash,
            signature: &e.signature,
            result: &e.result,
        }
    }

    /// Rewrites every hash from entry `from` on, as a server hiding an edit would.
    fn rechain(chain: &mut [pb::AuditEntry], from: usize) {
        for i in from..chain.len() {
            let (before, rest) = chain.split_at_mut(i);
            let e = rest[0].clone();
            rehash_from(before, e, &mut rest[0]);
        }
    }

    fn chain(n: usize) -> Vec<pb::AuditEntry> {
        let mut c = Vec::new();
        for i in 0..n {
            push(&mut c, &alice(), format!("body {i}").as_bytes());
        }
        c
    }

    fn response(
        entries: &[pb::AuditEntry],
        head: Option<&pb::AuditEntry>,
    ) -> pb::ListAuditResponse {
        pb::ListAuditResponse {
            entries: entries.to_vec(),
            actors: vec![actor(ALICE, &alice())],
            head_seq: head.map_or(0, |h| h.seq),
            head_hash: head.map_or(ZERO_HASH.to_vec(), |h| h.hash.clone()),
        }
    }

    /// Verifies `entries` in pages of `page` entries, as the client does.
    fn verify_paged(
        entries: &[pb::AuditEntry],
        page: usize,
        pin: Option<&Pin>,
    ) -> Result<Verified, ChainFailure> {
        let mut v = ChainVerifier::new(SERVER, false, pin);
        for p in entries.chunks(page.max(1)) {
            v.page(&response(p, entries.last()))?;
        }
        let head = entries.last();
        v.finish(
            head.map_or(0, |h| h.seq),
            &head.map_or(ZERO_HASH.to_vec(), |h| h.hash.clone()),
        )
    }

    fn pin_at(entries: &[pb::AuditEntry], seq: u64) -> Pin {
        Pin {
            version: PIN_V1,
            server: "http://s".into(),
            workspace: Some("acme".into()),
            workspace_id: None,
            seq,
            hash: hex::encode(&entries[seq as usize - 1].hash),
            verified_at_ms: 0,
            actors: BTreeMap::new(),
        }
    }

    #[rstest]
    #[case::one_page(1000)]
    #[case::small_pages(7)]
    #[case::one_by_one(1)]
    fn honest_chain_verifies_in_any_paging(#[case] page: usize) {
        let c = chain(150);
        let v = verify_paged(&c, page, None).expect("verifies");
        assert_eq!((v.entries, v.head_seq, v.signatures), (150, 150, 150));
        assert_eq!(v.head_hash.to_vec(), c[149].hash);
        assert_eq!(v.actor_keys.len(), 1);
    }

    #[test]
    fn empty_chain_verifies() {
        let v = verify_paged(&[], 10, None).expect("empty");
        assert_eq!((v.entries, v.head_seq), (0, 0));
    }

    #[test]
    fn edited_field_is_a_hash_mismatch() {
        let mut c = chain(20);
        c[16].target = "secret/other@1".into();
        assert_eq!(
            verify_paged(&c, 1000, None).unwrap_err().to_string(),
            "entry 17: hash mismatch (edited field?)"
        );
    }

    #[test]
    fn deleted_entry_is_a_gap() {
        let mut c = chain(20);
        c.remove(16);
        assert_eq!(
            verify_paged(&c, 6, None).unwrap_err().to_string(),
            "entry 17: missing (chain has a gap)"
        );
    }

    #[test]
    fn renumbered_deletion_is_a_broken_link() {
        let mut c = chain(20);
        c.remove(16);
        for e in &mut c[16..] {
            e.seq -= 1;
        }
        assert_eq!(
            verify_paged(&c, 1000, None).unwrap_err(),
            ChainFailure::BrokenLink { seq: 17 }
        );
    }

    #[test]
    fn swapped_entries_break_the_chain_at_the_first() {
        let mut c = chain(20);
        c.swap(8, 9);
        c[8].seq = 9;
        c[9].seq = 10;
        let err = verify_paged(&c, 1000, None).unwrap_err();
        assert_eq!(err, ChainFailure::BrokenLink { seq: 9 });
        assert_eq!(
            err.to_string(),
            "entry 9: prev_hash is not the hash of entry 8 (reordered, inserted or removed entry?)"
        );
        // Swapped with their numbers: out of order.
        let mut c = chain(20);
        c.swap(8, 9);
        assert_eq!(
            verify_paged(&c, 1000, None).unwrap_err(),
            ChainFailure::Missing { seq: 9 }
        );
    }

    #[rstest]
    #[case::first_page(5)]
    #[case::later_page(17)]
    fn forged_entry_with_rewritten_hashes_fails_only_on_its_signature(#[case] at: usize) {
        let mut c = chain(20);
        let mut forged = c[at].clone();
        forged.action = "secret.write".into();
        forged.signature = sign_request(
            &SigningKey::from_seed(&MALLORY_SEED),
            &SERVER,
            GET_SECRET,
            1,
            &[1; 16],
            b"x",
        )
        .to_vec();
        c.insert(at, forged);
        for (i, e) in c.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        rechain(&mut c, at);
        let err = verify_paged(&c, 8, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("entry {}: actor signature invalid", at + 1)
        );
    }

    #[test]
    fn first_bad_signature_is_reported_across_threads() {
        let mut c = chain(600);
        for i in [450, 130, 599] {
            c[i].signature[0] ^= 1;
        }
        rechain(&mut c, 130);
        assert_eq!(
            verify_paged(&c, 1000, None).unwrap_err(),
            ChainFailure::BadSignature { seq: 131 }
        );
    }

    #[test]
    fn bad_signature_before_a_broken_link_comes_first() {
        let mut c = chain(30);
        c[3].signature[5] ^= 1;
        rechain(&mut c, 3);
        c[20].result = "edited".into();
        assert_eq!(
            verify_paged(&c, 1000, None).unwrap_err(),
            ChainFailure::BadSignature { seq: 4 }
        );
    }

    #[test]
    fn truncation_below_the_pin_is_detected() {
        let c = chain(40);
        let pin = pin_at(&c, 40);
        verify_paged(&c, 10, Some(&pin)).expect("same chain");
        let err = verify_paged(&c[..35], 10, Some(&pin)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chain truncated: pinned head is seq 40 but the chain ends at 35"
        );
        // Growing past the pin is fine.
        let mut longer = c.clone();
        push(&mut longer, &alice(), b"more");
        assert_eq!(
            verify_paged(&longer, 10, Some(&pin)).unwrap().previous_pin,
            Some(40)
        );
    }

    #[test]
    fn signatures_below_the_pin_are_not_checked_again() {
        let mut c = chain(40);
        let pin = pin_at(&c, 30);
        let v = verify_paged(&c, 7, Some(&pin)).expect("verifies");
        assert_eq!((v.signatures, v.pinned_signatures, v.entries), (10, 30, 40));
        // Past the pin every signature is checked.
        c[34].signature[3] ^= 1;
        rechain(&mut c, 34);
        assert_eq!(
            verify_paged(&c, 7, Some(&pin)).unwrap_err(),
            ChainFailure::BadSignature { seq: 35 }
        );
        // Below it, a changed signature changes the hashes up to the pin: the run fails.
        let mut c = chain(40);
        c[4].signature[3] ^= 1;
        rechain(&mut c, 4);
        assert_eq!(
            verify_paged(&c, 7, Some(&pin)).unwrap_err(),
            ChainFailure::PinMismatch { seq: 30 }
        );
    }

    #[test]
    fn rewritten_history_below_the_pin_is_detected() {
        let c = chain(40);
        let pin = pin_at(&c, 30);
        let mut rewritten = c.clone();
        // A consistent rewrite: dropping entry 12 and renumbering with fresh hashes.
        rewritten.remove(11);
        for (i, e) in rewritten.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        rechain(&mut rewritten, 11);
        assert_eq!(
            verify_paged(&rewritten, 1000, None).unwrap().entries,
            39,
            "internally consistent"
        );
        assert_eq!(
            verify_paged(&rewritten, 1000, Some(&pin)).unwrap_err(),
            ChainFailure::PinMismatch { seq: 30 }
        );
    }

    #[test]
    fn head_must_be_the_last_entry_sent() {
        let c = chain(10);
        let mut v = ChainVerifier::new(SERVER, false, None);
        v.page(&response(&c[..8], c.last())).expect("page");
        assert_eq!(
            v.finish(10, &c[9].hash).unwrap_err().to_string(),
            "head mismatch: the server reports head 10 but the chain it sent ends at 8"
        );
        let mut v = ChainVerifier::new(SERVER, false, None);
        v.page(&response(&c, c.last())).expect("page");
        assert_eq!(
            v.finish(10, &[0; 32]).unwrap_err(),
            ChainFailure::HeadMismatch {
                head_seq: 10,
                end: 10
            }
        );
    }

    #[test]
    fn unknown_actor_and_unsigned_entries_fail_on_workspace_chains() {
        let mut c = chain(5);
        c[2].actor_principal_id = "0b6b0f7e-3c43-4f43-8a51-7f3c4f0f1d22".into();
        rechain(&mut c, 2);
        assert!(matches!(
            verify_paged(&c, 100, None).unwrap_err(),
            ChainFailure::UnknownActor { seq: 3, .. }
        ));
        let mut c = chain(5);
        c[2].actor_principal_id.clear();
        rechain(&mut c, 2);
        assert_eq!(
            verify_paged(&c, 100, None).unwrap_err(),
            ChainFailure::Unsigned { seq: 3 }
        );
        // On the server chain an actorless entry is a server event.
        let mut v = ChainVerifier::new(SERVER, true, None);
        v.page(&response(&c, c.last())).expect("server chain");
        let done = v.finish(5, &c[4].hash).expect("verified");
        assert_eq!((done.server_events, done.signatures), (1, 4));
    }

    #[test]
    fn actor_keys_are_pinned_and_own_key_is_checked() {
        let c = chain(3);
        let mut pin = pin_at(&c, 3);
        pin.actors.insert(
            ALICE.into(),
            hex::encode(
                SigningKey::from_seed(&MALLORY_SEED)
                    .verifying_key()
                    .to_bytes(),
            ),
        );
        assert!(matches!(
            verify_paged(&c, 10, Some(&pin)).unwrap_err(),
            ChainFailure::KeyChanged { .. }
        ));
        let mut v = ChainVerifier::new(SERVER, false, None);
        v.own_key(
            ALICE.into(),
            SigningKey::from_seed(&MALLORY_SEED).verifying_key(),
        );
        assert!(matches!(
            v.page(&response(&c, c.last())).unwrap_err(),
            ChainFailure::NotOwnKey { .. }
        ));
        // A key that changes between pages of one run is refused too.
        let mut v = ChainVerifier::new(SERVER, false, None);
        v.page(&response(&c[..1], c.last())).expect("first page");
        let mut second = response(&c[1..], c.last());
        second.actors = vec![actor(ALICE, &SigningKey::from_seed(&MALLORY_SEED))];
        assert!(matches!(
            v.page(&second),
            Err(ChainFailure::KeyChanged { .. })
        ));
    }

    #[test]
    fn entries_of_one_request_share_one_signature_check() {
        let mut c = chain(2);
        let mut twin = c[1].clone();
        twin.seq = 3;
        twin.target = "secret/twin@1".into();
        rehash_from(&c, twin.clone(), &mut twin);
        c.push(twin);
        let v = verify_paged(&c, 1000, None).expect("verifies");
        assert_eq!((v.entries, v.signatures), (3, 2));
    }

    #[test]
    fn join_entries_carry_the_join_signature() {
        let key = alice();
        let agreement = AgreementSecret::from_bytes([7; 32]).public_key();
        let token_hash = [0x44; 32];
        let sig = key.sign(&join_message(
            &key.verifying_key(),
            &agreement,
            "alice@example.com",
            &token_hash,
        ));
        let mut e = pb::AuditEntry {
            seq: 1,
            actor_principal_id: ALICE.into(),
            action: "principal.join".into(),
            scope: "server".into(),
            method: JOIN.into(),
            request_hash: token_hash.to_vec(),
            signature: sig.to_vec(),
            result: "ok".into(),
            ..Default::default()
        };
        rehash_from(&[], e.clone(), &mut e);
        let mut v = ChainVerifier::new(SERVER, true, None);
        v.page(&response(std::slice::from_ref(&e), Some(&e)))
            .expect("join verifies");
        e.signature[0] ^= 1;
        rehash_from(&[], e.clone(), &mut e);
        let mut v = ChainVerifier::new(SERVER, true, None);
        assert_eq!(
            v.page(&response(std::slice::from_ref(&e), Some(&e)))
                .unwrap_err(),
            ChainFailure::BadSignature { seq: 1 }
        );
    }

    /// The FORMAT.md §8 vectors: the hashes this verifier recomputes are the reference ones.
    #[rstest]
    #[case::ok("audit-chain-ok", None)]
    #[case::altered("audit-chain-altered-entry", Some(()))]
    #[case::boundary("audit-chain-field-boundary-shift", Some(()))]
    #[case::reordered("audit-chain-reordered", Some(()))]
    fn reference_vectors(#[case] name: &str, #[case] fails: Option<()>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../threat-model/vectors")
            .join(format!("{name}.json"));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("vector")).expect("json");
        let s = |e: &serde_json::Value, k: &str| e[k].as_str().expect(k).to_owned();
        let h = |e: &serde_json::Value, k: &str| hex::decode(s(e, k)).expect(k);
        let mut prev = ZERO_HASH.to_vec();
        let mut checked = Vec::new();
        for e in v["inputs"]["entries"].as_array().expect("entries") {
            let entry = pb::AuditEntry {
                seq: e["seq"].as_u64().expect("seq"),
                time_ms: e["time_ms"].as_i64().expect("time"),
                actor_principal_id: s(e, "actor"),
                action: s(e, "action"),
                scope: s(e, "scope"),
                target: s(e, "target"),
                nonce: h(e, "nonce"),
                signature: h(e, "signature"),
                result: s(e, "result"),
                prev_hash: prev.clone(),
                hash: h(e, "hash"),
                request_hash: h(e, "request_hash"),
                method: s(e, "method"),
                request_timestamp_ms: e["request_timestamp_ms"].as_i64().expect("ts"),
            };
            prev = entry.hash.clone();
            checked.push(entry);
        }
        // The vectors carry no signer keys: check links and hashes alone.
        let mut v2 = ChainVerifier::new(SERVER, false, None);
        let result = checked.iter().try_for_each(|e| {
            let hash = v2.check_link(e)?;
            v2.advance(hash);
            Ok::<(), ChainFailure>(())
        });
        match fails {
            None => {
                result.expect("reference chain links");
                let want = v["output"]["head"].as_str().expect("head");
                assert_eq!(hex::encode(v2.prev_hash), want);
            }
            Some(()) => assert!(result.is_err(), "{name} must fail"),
        }
    }

    #[test]
    fn pins_round_trip_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path());
        let path = pin_path(&home, "http://127.0.0.1:1", "server");
        assert_eq!(Pin::load(&path).expect("none yet"), None);
        let c = chain(2);
        let pin = pin_at(&c, 2);
        pin.store(&path).expect("store");
        assert_eq!(Pin::load(&path).expect("load"), Some(pin.clone()));
        assert_eq!(pin.hash_bytes().to_vec(), c[1].hash);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(path.starts_with(tmp.path().join(PINS_DIR)));
        std::fs::write(&path, b"{\"version\": 9}").expect("write");
        assert!(matches!(Pin::load(&path), Err(Error::LocalFormat { .. })));
    }
}
