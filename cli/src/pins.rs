//! Environment-version pins: the newest state of each environment this client has seen, so a
//! server that later serves an older one is caught (issue #5, DESIGN.md §3 "Signed versions").
//!
//! Every version is signed and chained, so a server (or anyone with its database) cannot forge
//! a value; what it can still do is replay an older, genuinely signed state. The client
//! remembers, per environment id, the highest environment version and, per name digest, the
//! highest secret version it has read as current; a later current read that goes backwards is
//! refused, naming the secret. Point-in-time reads ask for old states on purpose and are neither
//! checked nor recorded.
//!
//! # Security
//! Trust on first use: a client that never read the environment has nothing to compare with.
//! A CI runner in principal-token mode keeps nothing on disk, so it pins nothing either.
//! The file holds only public data (digests and version numbers) and carries an HMAC under a key
//! derived from this principal's X25519 secret, bound to the server, principal and environment
//! id, so nobody without that secret can lower a pin by editing it; a file that does not check
//! out is ignored and rewritten.
//!
//! Layout: `0x01 ‖ tag (32) ‖ env_version: u64 BE ‖ count: u32 BE ‖ count × (digest (32) ‖
//! version: u64 BE)`, entries sorted by digest.

use std::collections::HashMap;
use std::path::PathBuf;

use zopp_crypto::envelope::NameDigest;
use zopp_crypto::ids::EnvironmentId;
use zopp_crypto::local::{LocalKey, VERIFIED_CACHE_LABEL};

use crate::client::Client;
use crate::home::{create_private_dir, read_bounded, replace_private};

/// Version byte of the file layout.
const PINS_V1: u8 = 1;
/// Domain separation from the verified-signature cache, which derives its key the same way.
const PINS_CONTEXT: &[u8] = b"zopp/v1/environment-pins";
/// Secrets pinned at most per environment (more than one write may hold).
const MAX_ENTRIES: usize = 65_536;
/// Bytes of one entry.
const ENTRY_LEN: usize = 32 + 8;

/// What a client has seen of one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Highest environment version read as current.
    pub(crate) env_version: u64,
    /// Highest version of each secret read as current, by name digest.
    pub(crate) versions: HashMap<[u8; 32], u64>,
}

/// A step backwards found by [`Seen::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Regression {
    /// A secret is at an older version than one already seen.
    Secret {
        /// Its digest.
        digest: NameDigest,
        /// Version seen before.
        seen: u64,
        /// Version served now.
        got: u64,
    },
    /// The environment is at an older version than one already seen.
    Environment {
        /// Version seen before.
        seen: u64,
        /// Version served now.
        got: u64,
    },
}

impl Seen {
    /// The first step backwards of a current state at `env_version` holding `versions`, if any.
    /// A secret that went back is reported before the environment, so the user learns which
    /// secret is affected.
    pub(crate) fn check<'a>(
        &self,
        env_version: u64,
        versions: impl IntoIterator<Item = (&'a NameDigest, u64)>,
    ) -> Option<Regression> {
        let mut worst = None;
        for (digest, got) in versions {
            if let Some(&seen) = self.versions.get(digest.as_bytes()) {
                if got < seen && worst.is_none() {
                    worst = Some(Regression::Secret {
                        digest: *digest,
                        seen,
                        got,
                    });
                }
            }
        }
        worst.or_else(|| {
            (env_version < self.env_version).then_some(Regression::Environment {
                seen: self.env_version,
                got: env_version,
            })
        })
    }

    /// Raises the pins to what a current read at `env_version` showed; whether anything changed.
    pub(crate) fn raise<'a>(
        &mut self,
        env_version: u64,
        versions: impl IntoIterator<Item = (&'a NameDigest, u64)>,
    ) -> bool {
        let mut changed = env_version > self.env_version;
        self.env_version = self.env_version.max(env_version);
        for (digest, v) in versions {
            let pin = self.versions.entry(*digest.as_bytes()).or_insert(0);
            if v > *pin {
                *pin = v;
                changed = true;
            }
        }
        changed
    }
}

/// The pin file of one environment.
pub(crate) struct Pins {
    /// `false` in principal-token mode, which keeps nothing on disk (and so pins nothing).
    enabled: bool,
    path: PathBuf,
    dir: PathBuf,
    key: LocalKey,
    context: Vec<u8>,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pins({})", self.path.display())
    }
}

impl Pins {
    fn tag(&self, body: &[u8]) -> [u8; 32] {
        let mut data = Vec::with_capacity(self.context.len() + body.len());
        data.extend_from_slice(&self.context);
        data.extend_from_slice(body);
        self.key.tag(&data)
    }

    /// What was seen before; empty when there is no valid file.
    pub(crate) fn load(&self) -> Seen {
        if !self.enabled {
            return Seen::default();
        }
        let max = (1 + 32 + 8 + 4 + ENTRY_LEN * MAX_ENTRIES) as u64;
        let Ok(bytes) = read_bounded(&self.path, max) else {
            return Seen::default();
        };
        parse(&bytes, |body| self.tag(body)).unwrap_or_default()
    }

    /// Records `seen`. A failure only weakens the next check, so it is logged, not returned.
    pub(crate) fn store(&self, seen: &Seen) {
        if !self.enabled {
            return;
        }
        let mut list: Vec<(&[u8; 32], &u64)> = seen.versions.iter().collect();
        list.sort_unstable();
        list.truncate(MAX_ENTRIES);
        let mut body = Vec::with_capacity(12 + list.len() * ENTRY_LEN);
        body.extend_from_slice(&seen.env_version.to_be_bytes());
        body.extend_from_slice(&(list.len() as u32).to_be_bytes());
        for (d, v) in list {
            body.extend_from_slice(d);
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut bytes = Vec::with_capacity(33 + body.len());
        bytes.push(PINS_V1);
        bytes.extend_from_slice(&self.tag(&body));
        bytes.extend_from_slice(&body);
        let result = create_private_dir(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| replace_private(&self.path, &bytes).map_err(|e| e.to_string()));
        if let Err(error) = result {
            tracing::warn!(%error, "cannot update the environment pins");
        }
    }
}

/// Decodes a pin file whose tag `tag` computes; `None` when malformed or forged.
fn parse(bytes: &[u8], tag: impl Fn(&[u8]) -> [u8; 32]) -> Option<Seen> {
    let (&PINS_V1, rest) = bytes.split_first()? else {
        return None;
    };
    if rest.len() < 32 + 12 {
        return None;
    }
    let (file_tag, body) = rest.split_at(32);
    if !zopp_crypto::ct_eq(file_tag, &tag(body)) {
        return None;
    }
    let env_version = u64::from_be_bytes(body[..8].try_into().ok()?);
    let count = u32::from_be_bytes(body[8..12].try_into().ok()?) as usize;
    let entries = &body[12..];
    if entries.len() != count.checked_mul(ENTRY_LEN)? {
        return None;
    }
    let versions = entries
        .chunks_exact(ENTRY_LEN)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(&c[..32]);
            let v = u64::from_be_bytes(c[32..].try_into().expect("8 bytes"));
            (d, v)
        })
        .collect();
    Some(Seen {
        env_version,
        versions,
    })
}

impl Client {
    /// The pins of environment `env` (by id: an environment deleted and recreated under the
    /// same name starts afresh) for this client's identity and server.
    pub(crate) fn pins(&self, env: EnvironmentId) -> Pins {
        let mut context = Vec::with_capacity(160);
        for part in [
            PINS_CONTEXT,
            self.server().url().as_bytes(),
            self.identity().principal().as_bytes(),
            env.to_string().as_bytes(),
        ] {
            context.extend_from_slice(&(part.len() as u32).to_be_bytes());
            context.extend_from_slice(part);
        }
        // File names reveal nothing about the server or the environment.
        let name = format!(
            "pins-{}.bin",
            hex::encode(&zopp_crypto::sha256(&context)[..16])
        );
        let dir = self.cache().dir().to_owned();
        Pins {
            enabled: self.cache().enabled(),
            path: dir.join(name),
            dir,
            key: LocalKey::derive(&self.identity().keys().agreement, VERIFIED_CACHE_LABEL),
            context,
        }
    }
}

/// Version byte of the scope-pin file layout.
const SCOPES_V1: u8 = 1;
/// Domain separation of the scope-pin file's tag.
const SCOPES_CONTEXT: &[u8] = b"zopp/v1/scope-pins";
/// Largest scope-pin file read back.
const MAX_SCOPES_FILE: u64 = 4 * 1024 * 1024;

/// A scope level, as pins name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// A workspace: its name is global on the server.
    Workspace,
    /// A project: its name is unique in its workspace.
    Project,
    /// An environment: its name is unique in its project.
    Environment,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Workspace => "w",
            Level::Project => "p",
            Level::Environment => "e",
        }
    }
    /// How messages name the level.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Level::Workspace => "workspace",
            Level::Project => "project",
            Level::Environment => "environment",
        }
    }
}

/// What one response says about one scope: its id under a name, and the key epoch it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sighting {
    /// Which level.
    pub(crate) level: Level,
    /// Id of the parent scope (empty for a workspace): names are unique only under it.
    pub(crate) parent: String,
    /// The scope's name.
    pub(crate) name: String,
    /// The id the response gives it.
    pub(crate) id: String,
    /// The key epoch (environments) or key generation (workspaces, projects) the response
    /// serves; `None` when it serves no key of this scope.
    pub(crate) epoch: Option<u32>,
}

/// A response that contradicts the pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tampering {
    /// A name now resolves to another scope.
    Swapped {
        /// The scope, e.g. `environment 'prod'`.
        scope: String,
        /// The id pinned.
        pinned: String,
        /// The id served.
        got: String,
    },
    /// A key epoch went down.
    EpochBack {
        /// The scope.
        scope: String,
        /// The highest epoch seen.
        seen: u32,
        /// The epoch served.
        got: u32,
    },
}

/// Everything pinned about scopes: name → id under each parent, and the highest key epoch seen
/// of each scope id. Only ever raised, except when this client deletes a scope itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ScopeFloor {
    /// `"{level}/{parent id}/{name}"` → id.
    #[serde(default)]
    pub(crate) ids: std::collections::BTreeMap<String, String>,
    /// `"{level}/{id}"` → highest key epoch (or generation) seen.
    #[serde(default)]
    pub(crate) epochs: std::collections::BTreeMap<String, u32>,
    /// Writers whose key this client verified through the admission chain, as
    /// [`crate::verified::writer_entry`] (a warm read checks no chain again).
    #[serde(default)]
    pub(crate) writers: std::collections::BTreeSet<String>,
}

impl ScopeFloor {
    fn name_key(s: &Sighting) -> String {
        format!("{}/{}/{}", s.level.tag(), s.parent, s.name)
    }
    fn epoch_key(level: Level, id: &str) -> String {
        format!("{}/{id}", level.tag())
    }

    /// The first contradiction between `sightings` and the pins, if any.
    pub(crate) fn check(&self, sightings: &[Sighting]) -> Option<Tampering> {
        for s in sightings {
            let scope = format!("{} '{}'", s.level.noun(), s.name);
            if let Some(pinned) = self.ids.get(&Self::name_key(s)) {
                if *pinned != s.id {
                    return Some(Tampering::Swapped {
                        scope,
                        pinned: pinned.clone(),
                        got: s.id.clone(),
                    });
                }
            }
            if let (Some(got), Some(&seen)) =
                (s.epoch, self.epochs.get(&Self::epoch_key(s.level, &s.id)))
            {
                if got < seen {
                    return Some(Tampering::EpochBack { scope, seen, got });
                }
            }
        }
        None
    }

    /// Raises the pins to `sightings`; whether anything changed.
    pub(crate) fn raise(&mut self, sightings: &[Sighting]) -> bool {
        let mut changed = false;
        for s in sightings {
            let key = Self::name_key(s);
            if let std::collections::btree_map::Entry::Vacant(e) = self.ids.entry(key) {
                e.insert(s.id.clone());
                changed = true;
            }
            if let Some(got) = s.epoch {
                let e = self
                    .epochs
                    .entry(Self::epoch_key(s.level, &s.id))
                    .or_insert(0);
                if got > *e {
                    *e = got;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Forgets the name `name` under `parent` at `level` (this client deleted that scope, so a
    /// new one may take the name); whether anything changed.
    pub(crate) fn forget(&mut self, level: Level, parent: &str, name: &str) -> bool {
        let key = format!("{}/{parent}/{name}", level.tag());
        self.ids.remove(&key).is_some()
    }

    /// The pins a principal token carries: names to ids along the scope it was minted for,
    /// and the key epoch floors it knew.
    pub(crate) fn of_token(b: &zopp_crypto::token::TokenBinding) -> Self {
        use zopp_crypto::ids::{ProjectId, WorkspaceId};
        let mut floor = Self::default();
        let ws = WorkspaceId::from_bytes(b.workspace.id).to_string();
        let mut add =
            |level: Level, parent: &str, scope: &zopp_crypto::token::BoundScope, id: String| {
                floor.raise(&[Sighting {
                    level,
                    parent: parent.to_owned(),
                    name: scope.name.clone(),
                    id,
                    epoch: (scope.epoch_floor > 0).then_some(scope.epoch_floor),
                }]);
            };
        add(Level::Workspace, "", &b.workspace, ws.clone());
        if let Some(p) = &b.project {
            let pid = ProjectId::from_bytes(p.id).to_string();
            add(Level::Project, &ws, p, pid.clone());
            for e in &b.environments {
                add(
                    Level::Environment,
                    &pid,
                    e,
                    EnvironmentId::from_bytes(e.id).to_string(),
                );
            }
        }
        floor
    }

    /// The id pinned for `name` under `parent` at `level`.
    pub(crate) fn id_of(&self, level: Level, parent: &str, name: &str) -> Option<&str> {
        self.ids
            .get(&format!("{}/{parent}/{name}", level.tag()))
            .map(String::as_str)
    }
}

/// The scope-pin file of one identity on one server (FORMAT.md has no section for it: it is
/// local state, like the verified-signature cache).
///
/// Layout: `0x01 ‖ tag (32) ‖ JSON of [`ScopeFloor`]`; the tag is the HMAC of the JSON under the
/// same local key as the environment pins, bound to the server and principal.
pub(crate) struct ScopePins {
    /// `None` in principal-token mode: nothing on disk, the floor comes from the token.
    pub(crate) path: Option<PathBuf>,
    dir: PathBuf,
    key: LocalKey,
    context: Vec<u8>,
}

impl ScopePins {
    fn tag(&self, body: &[u8]) -> [u8; 32] {
        let mut data = Vec::with_capacity(self.context.len() + body.len());
        data.extend_from_slice(&self.context);
        data.extend_from_slice(body);
        self.key.tag(&data)
    }

    /// The pins on disk; empty when there is no valid file.
    pub(crate) fn load(&self) -> ScopeFloor {
        let Some(path) = &self.path else {
            return ScopeFloor::default();
        };
        let Ok(bytes) = read_bounded(path, MAX_SCOPES_FILE) else {
            return ScopeFloor::default();
        };
        let Some((&SCOPES_V1, rest)) = bytes.split_first() else {
            return ScopeFloor::default();
        };
        if rest.len() < 32 {
            return ScopeFloor::default();
        }
        let (tag, body) = rest.split_at(32);
        if !zopp_crypto::ct_eq(tag, &self.tag(body)) {
            return ScopeFloor::default();
        }
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// Records `floor`. A failure only weakens the next check, so it is logged, not returned.
    pub(crate) fn store(&self, floor: &ScopeFloor) {
        let Some(path) = &self.path else {
            return;
        };
        let body = serde_json::to_vec(floor).expect("plain maps serialize");
        let mut bytes = Vec::with_capacity(33 + body.len());
        bytes.push(SCOPES_V1);
        bytes.extend_from_slice(&self.tag(&body));
        bytes.extend_from_slice(&body);
        let result = create_private_dir(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| replace_private(path, &bytes).map_err(|e| e.to_string()));
        if let Err(error) = result {
            tracing::warn!(%error, "cannot update the scope pins");
        }
    }
}

/// The error a contradiction becomes.
pub(crate) fn tampering_error(t: Tampering) -> crate::error::Error {
    match t {
        Tampering::Swapped { scope, pinned, got } => {
            crate::error::Error::ScopeSwapped { scope, pinned, got }
        }
        Tampering::EpochBack { scope, seen, got } => {
            crate::error::Error::EpochRolledBack { scope, seen, got }
        }
    }
}

impl Client {
    /// The scope pins of this client's identity and server.
    pub(crate) fn scope_pins(&self) -> ScopePins {
        let mut context = Vec::with_capacity(128);
        for part in [
            SCOPES_CONTEXT,
            self.server().url().as_bytes(),
            self.identity().principal().as_bytes(),
        ] {
            context.extend_from_slice(&(part.len() as u32).to_be_bytes());
            context.extend_from_slice(part);
        }
        let name = format!(
            "scopes-{}.bin",
            hex::encode(&zopp_crypto::sha256(&context)[..16])
        );
        let dir = self.cache().dir().to_owned();
        ScopePins {
            path: self.cache().enabled().then(|| dir.join(name)),
            dir,
            key: LocalKey::derive(&self.identity().keys().agreement, VERIFIED_CACHE_LABEL),
            context,
        }
    }

    /// Checks what a response says about scopes against the pins (and, in principal-token
    /// mode, against the floor the token carries), then raises the pins.
    ///
    /// # Errors
    /// [`crate::error::Error::ScopeSwapped`] when a name now resolves to another id;
    /// [`crate::error::Error::EpochRolledBack`] when a key epoch went down.
    pub(crate) fn check_scopes(&self, sightings: &[Sighting]) -> crate::error::Result<()> {
        if let Some(t) = self.token_floor().and_then(|f| f.check(sightings)) {
            return Err(tampering_error(t));
        }
        let pins = self.scope_pins();
        if pins.path.is_none() {
            return Ok(());
        }
        let mut floor = pins.load();
        if let Some(t) = floor.check(sightings) {
            return Err(tampering_error(t));
        }
        if floor.raise(sightings) {
            pins.store(&floor);
        }
        Ok(())
    }

    /// Forgets a name this client just deleted, so that creating it again starts afresh.
    pub(crate) fn forget_scope(&self, level: Level, parent: Option<&str>, name: &str) {
        let pins = self.scope_pins();
        let mut floor = pins.load();
        let parent = match (level, parent) {
            (Level::Workspace, _) => String::new(),
            (_, Some(p)) => p.to_owned(),
            (_, None) => return,
        };
        if floor.forget(level, &parent, name) {
            pins.store(&floor);
        }
    }

    /// Pins a scope this client just created: it knows the id first-hand, so it replaces
    /// whatever the name was pinned to (a scope of that name deleted by someone else).
    pub(crate) fn pin_created(&self, sighting: Sighting) {
        let pins = self.scope_pins();
        let mut floor = pins.load();
        floor.forget(sighting.level, &sighting.parent, &sighting.name);
        floor.raise(std::slice::from_ref(&sighting));
        pins.store(&floor);
    }

    /// The id pinned for a name, if any (to find a deleted scope's children).
    pub(crate) fn pinned_id(&self, level: Level, parent: &str, name: &str) -> Option<String> {
        self.scope_pins()
            .load()
            .id_of(level, parent, name)
            .map(str::to_owned)
    }
}

/// What an environment key chain says about its three scopes.
pub(crate) fn environment_sightings(
    env: &crate::scope::EnvRef,
    keys: &zopp_proto::v1::EnvironmentKeys,
) -> [Sighting; 3] {
    [
        Sighting {
            level: Level::Workspace,
            parent: String::new(),
            name: env.workspace().to_owned(),
            id: keys.workspace_id.clone(),
            epoch: None,
        },
        Sighting {
            level: Level::Project,
            parent: keys.workspace_id.clone(),
            name: env.project().to_owned(),
            id: keys.project_id.clone(),
            epoch: None,
        },
        Sighting {
            level: Level::Environment,
            parent: keys.project_id.clone(),
            name: env.environment().to_owned(),
            id: keys.environment_id.clone(),
            epoch: Some(keys.key_epoch),
        },
    ]
}

/// What a workspace or project key chain says: the workspace, and the project when one was
/// named; the generation belongs to the deepest of them.
pub(crate) fn scope_sightings(
    workspace: &str,
    project: Option<&str>,
    keys: &zopp_proto::v1::ScopeKeys,
) -> Vec<Sighting> {
    let generation = keys.key_epoch.max(1);
    let mut out = vec![Sighting {
        level: Level::Workspace,
        parent: String::new(),
        name: workspace.to_owned(),
        id: keys.workspace_id.clone(),
        epoch: project.is_none().then_some(generation),
    }];
    if let Some(p) = project {
        out.push(Sighting {
            level: Level::Project,
            parent: keys.workspace_id.clone(),
            name: p.to_owned(),
            id: keys.project_id.clone(),
            epoch: Some(generation),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> NameDigest {
        NameDigest::try_from_slice(&[b; 32]).expect("32 bytes")
    }

    #[test]
    fn going_backwards_is_caught_and_names_the_secret_first() {
        let mut seen = Seen::default();
        assert!(seen.raise(5, [(&d(1), 3), (&d(2), 1)]));
        assert!(!seen.raise(5, [(&d(1), 2)]), "pins never go down");
        assert_eq!(seen.check(5, [(&d(1), 3), (&d(2), 1)]), None);
        assert_eq!(seen.check(7, [(&d(1), 4)]), None, "newer is fine");
        assert_eq!(
            seen.check(4, [(&d(2), 1), (&d(1), 2)]),
            Some(Regression::Secret {
                digest: d(1),
                seen: 3,
                got: 2
            })
        );
        assert_eq!(
            seen.check(4, [(&d(1), 3)]),
            Some(Regression::Environment { seen: 5, got: 4 })
        );
    }

    #[test]
    fn files_round_trip_and_forgeries_are_ignored() {
        let key = |body: &[u8]| zopp_crypto::sha256(body);
        let mut seen = Seen::default();
        seen.raise(9, [(&d(1), 3), (&d(2), 7)]);
        let mut body = Vec::new();
        body.extend_from_slice(&9u64.to_be_bytes());
        body.extend_from_slice(&2u32.to_be_bytes());
        for (b, v) in [(1u8, 3u64), (2, 7)] {
            body.extend_from_slice(&[b; 32]);
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut file = vec![PINS_V1];
        file.extend_from_slice(&key(&body));
        file.extend_from_slice(&body);
        assert_eq!(parse(&file, key), Some(seen));
        // Lowering a pin without the key breaks the tag.
        let mut forged = file.clone();
        let last = forged.len() - 1;
        forged[last] = 1;
        assert_eq!(parse(&forged, key), None);
        assert_eq!(parse(&file[..40], key), None);
        assert_eq!(parse(&[], key), None);
    }
}
