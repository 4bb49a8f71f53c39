//! The signatures this client has already verified, per environment, so a warm
//! `zopp run`/`secret list`/`export` checks only the versions that changed since the last
//! fetch: with 1,000 secrets the batch verification alone costs ~30 ms, the whole budget of
//! `zopp run` (DESIGN.md §10: "the client never repeats … a signature check it has already
//! done").
//!
//! # Security
//! An entry is SHA-256 of a version's hash (which covers everything the writer signed and the
//! signature itself) and the writer's public key: it matches only the exact version, signed by
//! the exact key, that passed verification before. The file carries an HMAC under a key
//! derived from this principal's X25519 secret ([`VERIFIED_CACHE_LABEL`]), bound to the server,
//! principal and environment, so nobody without that secret can add an entry; a file that does
//! not check out is ignored (everything is verified again). Nothing secret is stored: hashes of
//! public data only.
//!
//! Layout: `0x01 ‖ tag (32) ‖ count: u32 BE ‖ count × entry (32)`, entries sorted.

use std::collections::HashSet;
use std::path::PathBuf;

use zopp_crypto::ids::PrincipalId;
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::local::{LocalKey, VERIFIED_CACHE_LABEL};
use zopp_proto::v1 as pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::home::{create_private_dir, read_bounded, replace_private, Identity};
use crate::scope::EnvRef;

/// Version byte of the file layout.
const VERIFIED_V1: u8 = 1;
/// Entries kept at most (a bit over the 20,000 versions one write may add).
const MAX_ENTRIES: usize = 65_536;

/// One verified version: what the cache stores.
pub(crate) type Entry = [u8; 32];

/// The entry of the version with hash `version_hash`, signed by `key`.
pub(crate) fn entry(version_hash: &[u8; 32], key: &VerifyingKey) -> Entry {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(version_hash);
    b[32..].copy_from_slice(&key.to_bytes());
    zopp_crypto::sha256(&b)
}

/// The verified-signature cache of one environment.
pub(crate) struct VerifiedCache {
    /// `false` in principal-token mode, which must not write anything to disk.
    enabled: bool,
    path: PathBuf,
    dir: PathBuf,
    key: LocalKey,
    context: Vec<u8>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifiedCache({})", self.path.display())
    }
}

impl VerifiedCache {
    /// The cache of `env` on `server` for `identity`, in `dir`.
    pub(crate) fn new(dir: PathBuf, server: &str, identity: &Identity, env: &EnvRef) -> Self {
        let mut context = Vec::with_capacity(128);
        for part in [
            server.as_bytes(),
            identity.principal().as_bytes(),
            env.workspace().as_bytes(),
            env.project().as_bytes(),
            env.environment().as_bytes(),
        ] {
            context.extend_from_slice(&(part.len() as u32).to_be_bytes());
            context.extend_from_slice(part);
        }
        // File names reveal nothing about the server or the environment.
        let name = format!(
            "verified-{}.bin",
            hex::encode(&zopp_crypto::sha256(&context)[..16])
        );
        Self {
            enabled: true,
            path: dir.join(name),
            dir,
            key: LocalKey::derive(&identity.keys().agreement, VERIFIED_CACHE_LABEL),
            context,
        }
    }

    fn tag(&self, entries: &[u8]) -> [u8; 32] {
        let mut data = Vec::with_capacity(self.context.len() + entries.len());
        data.extend_from_slice(&self.context);
        data.extend_from_slice(entries);
        self.key.tag(&data)
    }

    /// The entries recorded last time; empty when there is no valid file.
    pub(crate) fn load(&self) -> HashSet<Entry> {
        if !self.enabled {
            return HashSet::new();
        }
        let Ok(bytes) = read_bounded(&self.path, (1 + 32 + 4 + 32 * MAX_ENTRIES) as u64) else {
            return HashSet::new();
        };
        let Some((&VERIFIED_V1, rest)) = bytes.split_first() else {
            return HashSet::new();
        };
        if rest.len() < 36 {
            return HashSet::new();
        }
        let (tag, rest) = rest.split_at(32);
        let (count, body) = rest.split_at(4);
        let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
        if body.len() != count * 32 || !zopp_crypto::ct_eq(tag, &self.tag(body)) {
            return HashSet::new();
        }
        body.chunks_exact(32)
            .map(|c| {
                let mut e = [0u8; 32];
                e.copy_from_slice(c);
                e
            })
            .collect()
    }

    /// Records `entries` as the verified set (replacing the old one), unless it is unchanged.
    /// Failures only cost a verification next time, so they are logged, not returned.
    pub(crate) fn store(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        previous: &HashSet<Entry>,
    ) {
        if !self.enabled {
            return;
        }
        let mut list: Vec<Entry> = entries.into_iter().collect();
        list.sort_unstable();
        list.dedup();
        list.truncate(MAX_ENTRIES);
        if list.len() == previous.len() && list.iter().all(|e| previous.contains(e)) {
            return;
        }
        let body: Vec<u8> = list.concat();
        let mut bytes = Vec::with_capacity(1 + 32 + 4 + body.len());
        bytes.push(VERIFIED_V1);
        bytes.extend_from_slice(&self.tag(&body));
        bytes.extend_from_slice(&(list.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        let result = create_private_dir(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| replace_private(&self.path, &bytes).map_err(|e| e.to_string()));
        if let Err(error) = result {
            tracing::warn!(%error, "cannot update the verified-signature cache");
        }
    }
}

impl Client {
    /// The verified-signature cache of `env` for this client's identity and server.
    pub(crate) fn verified_cache(&self, env: &EnvRef) -> VerifiedCache {
        let mut cache = VerifiedCache::new(
            self.cache().dir().to_owned(),
            self.server().url(),
            self.identity(),
            env,
        );
        // A disabled key cache has no directory: writing would land in the working directory.
        cache.enabled = self.cache().enabled();
        cache
    }
}

/// Domain separation of a verified writer's entry.
const WRITER_LABEL: &[u8] = b"zopp/v1/verified-writer";

/// The entry recording that principal `principal` of workspace `workspace`, with signing key
/// `key`, verified through the workspace's admission chain.
pub(crate) fn writer_entry(workspace: &str, principal: &str, key: &[u8]) -> String {
    let mut b =
        Vec::with_capacity(WRITER_LABEL.len() + 12 + workspace.len() + principal.len() + key.len());
    for part in [
        WRITER_LABEL,
        workspace.as_bytes(),
        principal.as_bytes(),
        key,
    ] {
        b.extend_from_slice(&(part.len() as u32).to_be_bytes());
        b.extend_from_slice(part);
    }
    hex::encode(zopp_crypto::sha256(&b))
}

impl Client {
    /// Checks that every writer key in `writers` belongs to a principal whose admission chain
    /// verifies to the workspace's pinned root (FORMAT.md §6, §7), not merely a key the server
    /// sent along: a server that signs versions with a key of its own, under a member's id, is
    /// refused. Writers verified before cost nothing (they are kept with the scope pins); new
    /// ones cost one `GetPrincipals` round trip for all of them.
    ///
    /// A writer removed since stays a valid writer of what it wrote while admitted.
    ///
    /// # Errors
    /// [`Error::Untrusted`] when a chain does not verify; [`Error::WriterKeyMismatch`] when the
    /// server presents another key than the chain vouches for; transport errors.
    pub(crate) async fn vouch_writers(
        &self,
        env: &EnvRef,
        workspace_id: &str,
        writers: &[&pb::PrincipalPublic],
    ) -> Result<()> {
        let pins = self.scope_pins();
        let mut floor = pins.load();
        let mut unknown: Vec<(&pb::PrincipalPublic, String, PrincipalId)> = Vec::new();
        let me = self.identity().principal().to_string();
        let my_key = self.identity().keys().signing.verifying_key().to_bytes();
        for w in writers {
            // This client's own key needs no chain: it holds the private half.
            if w.principal_id == me && w.signing_key.as_slice() == my_key.as_slice() {
                continue;
            }
            let entry = writer_entry(workspace_id, &w.principal_id, &w.signing_key);
            if floor.writers.contains(&entry) || unknown.iter().any(|(_, e, _)| *e == entry) {
                continue;
            }
            let id = PrincipalId::try_parse(&w.principal_id)
                .map_err(|_| Error::BadResponse("the server sent an invalid writer id".into()))?;
            unknown.push((w, entry, id));
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let ids: Vec<PrincipalId> = unknown.iter().map(|(_, _, id)| *id).collect();
        let mut described = self
            .get_principals(Some(env.workspace()), None, &ids)
            .await?;
        if described.workspace_id != workspace_id {
            return Err(Error::BadResponse(
                "the server describes the writers of another workspace".into(),
            ));
        }
        for info in &mut described.principals {
            let Some(p) = info.principal.as_mut() else {
                continue;
            };
            if unknown
                .iter()
                .any(|(w, _, _)| w.principal_id == p.principal_id)
            {
                p.revoked = false;
                info.revoked_at_ms = 0;
            }
        }
        let (verified, _) = self
            .verify_principals(&described, &ids, &[])
            .map_err(|e| match e {
                Error::Untrusted { message, .. } => Error::WriterUnverified { detail: message },
                other => other,
            })?;
        for ((w, entry, _), trusted) in unknown.into_iter().zip(&verified) {
            if trusted.signing.to_bytes().as_slice() != w.signing_key.as_slice() {
                return Err(Error::WriterKeyMismatch {
                    writer: crate::trust::label(w),
                    principal: w.principal_id.clone(),
                });
            }
            floor.writers.insert(entry);
        }
        pins.store(&floor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::test_identity as identity;
    use zopp_crypto::keys::SigningKey;

    #[test]
    fn entries_round_trip_and_forged_files_are_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = EnvRef::try_new("acme", "api", "dev").expect("valid");
        let cache = VerifiedCache::new(tmp.path().join("cache"), "http://s", &identity(1), &env);
        assert!(cache.load().is_empty());
        let key = SigningKey::from_seed(&[7; 32]).verifying_key();
        let a = entry(&[1; 32], &key);
        let b = entry(&[2; 32], &key);
        assert_ne!(
            a,
            entry(&[1; 32], &SigningKey::from_seed(&[8; 32]).verifying_key())
        );
        cache.store([a, b], &HashSet::new());
        assert_eq!(cache.load(), HashSet::from([a, b]));
        // Another principal's key (or another environment) cannot use or extend the file.
        let other = VerifiedCache::new(tmp.path().join("cache"), "http://s", &identity(2), &env);
        assert!(other.load().is_empty());
        let prod = EnvRef::try_new("acme", "api", "prod").expect("valid");
        let mut bytes = std::fs::read(&cache.path).expect("read");
        let moved = VerifiedCache::new(tmp.path().join("cache"), "http://s", &identity(1), &prod);
        std::fs::write(&moved.path, &bytes).expect("copy");
        assert!(moved.load().is_empty());
        // An added entry breaks the tag.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&cache.path, &bytes).expect("tamper");
        assert!(cache.load().is_empty());
    }
}
