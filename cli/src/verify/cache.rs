//! The key chains this client has already checked against their statements (FORMAT.md §13.6),
//! so a warm read derives its keys and checks no signature again (DESIGN.md §10).
//!
//! # Security
//! An entry is SHA-256 of a [`KeyTrail`](crate::chain::KeyTrail) digest: the exact wraps opened
//! and the commitments of the exact keys they opened to. The file carries an HMAC under a key
//! derived from this principal's X25519 secret ([`VERIFIED_CHAINS_LABEL`]), bound to the server
//! and principal, so nobody without that secret can add an entry; a file that does not check out
//! is ignored (everything is checked again). Nothing secret is stored.
//!
//! Layout: `0x01 ‖ tag (32) ‖ count: u32 BE ‖ count × entry (32)`, entries sorted.

use std::collections::BTreeSet;
use std::path::PathBuf;

use zopp_crypto::local::LocalKey;

use crate::home::{create_private_dir, read_bounded, replace_private, Identity};

/// HKDF info of the key tagging the verified-chains file.
pub const VERIFIED_CHAINS_LABEL: &[u8] = b"zopp/v1/verified-chains";
/// Version byte of the layout.
const CHAINS_V1: u8 = 1;
/// Entries kept at most; beyond it the file starts over (only costs a check).
const MAX_ENTRIES: usize = 4096;

/// The verified-chains file of one principal on one server.
pub struct ChainCache {
    enabled: bool,
    path: PathBuf,
    dir: PathBuf,
    key: LocalKey,
    context: Vec<u8>,
}

impl std::fmt::Debug for ChainCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainCache({})", self.path.display())
    }
}

impl ChainCache {
    /// The cache in `dir` for `identity` on `server`; `enabled = false` never reads or writes
    /// (principal-token mode keeps nothing on disk).
    pub fn new(dir: PathBuf, server: &str, identity: &Identity, enabled: bool) -> Self {
        let mut context = Vec::with_capacity(64);
        for part in [server.as_bytes(), identity.principal().as_bytes()] {
            context.extend_from_slice(&(part.len() as u32).to_be_bytes());
            context.extend_from_slice(part);
        }
        let name = format!(
            "chains-{}.bin",
            hex::encode(&zopp_crypto::sha256(&context)[..16])
        );
        Self {
            enabled,
            path: dir.join(name),
            dir,
            key: LocalKey::derive(&identity.keys().agreement, VERIFIED_CHAINS_LABEL),
            context,
        }
    }

    fn entry(digest: &[u8; 32]) -> [u8; 32] {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(b"zopp/v1/verified-chain");
        b.extend_from_slice(digest);
        zopp_crypto::sha256(&b)
    }

    fn tag(&self, body: &[u8]) -> [u8; 32] {
        let mut data = Vec::with_capacity(self.context.len() + body.len());
        data.extend_from_slice(&self.context);
        data.extend_from_slice(body);
        self.key.tag(&data)
    }

    fn load(&self) -> BTreeSet<[u8; 32]> {
        if !self.enabled {
            return BTreeSet::new();
        }
        let Ok(bytes) = read_bounded(&self.path, (1 + 32 + 4 + 32 * MAX_ENTRIES) as u64) else {
            return BTreeSet::new();
        };
        let Some((&CHAINS_V1, rest)) = bytes.split_first() else {
            return BTreeSet::new();
        };
        if rest.len() < 36 {
            return BTreeSet::new();
        }
        let (tag, rest) = rest.split_at(32);
        let (count, body) = rest.split_at(4);
        let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
        if body.len() != count * 32 || !zopp_crypto::ct_eq(tag, &self.tag(body)) {
            return BTreeSet::new();
        }
        body.chunks_exact(32)
            .map(|c| c.try_into().expect("chunks of 32"))
            .collect()
    }

    /// Whether the chain with trail digest `digest` was verified before.
    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.load().contains(&Self::entry(digest))
    }

    /// Records the chain with trail digest `digest` as verified. Failures only cost a check
    /// next time, so they are logged, not returned.
    pub fn insert(&self, digest: &[u8; 32]) {
        if !self.enabled {
            return;
        }
        let mut set = self.load();
        if set.len() >= MAX_ENTRIES {
            set.clear();
        }
        if !set.insert(Self::entry(digest)) {
            return;
        }
        let body: Vec<u8> = set.iter().flatten().copied().collect();
        let mut bytes = Vec::with_capacity(1 + 32 + 4 + body.len());
        bytes.push(CHAINS_V1);
        bytes.extend_from_slice(&self.tag(&body));
        bytes.extend_from_slice(&(set.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        let result = create_private_dir(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| replace_private(&self.path, &bytes).map_err(|e| e.to_string()));
        if let Err(error) = result {
            tracing::warn!(%error, "cannot update the verified key-chain cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::test_identity as identity;

    #[test]
    fn entries_persist_and_forged_files_are_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = ChainCache::new(tmp.path().join("cache"), "http://s", &identity(1), true);
        assert!(!c.contains(&[1; 32]));
        c.insert(&[1; 32]);
        c.insert(&[2; 32]);
        let again = ChainCache::new(tmp.path().join("cache"), "http://s", &identity(1), true);
        assert!(again.contains(&[1; 32]) && again.contains(&[2; 32]));
        // Another principal's secret cannot read or extend it.
        let other = ChainCache::new(tmp.path().join("cache"), "http://s", &identity(2), true);
        assert!(!other.contains(&[1; 32]));
        let mut bytes = std::fs::read(&c.path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&c.path, &bytes).expect("tamper");
        assert!(!c.contains(&[1; 32]));
        // Disabled: never hits, never writes.
        let off = ChainCache::new(tmp.path().join("off"), "http://s", &identity(1), false);
        off.insert(&[3; 32]);
        assert!(!off.contains(&[3; 32]) && !tmp.path().join("off").exists());
    }
}
