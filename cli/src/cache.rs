//! Cache of wrapped environment key chains in `$ZOPP_HOME/cache/`, so a warm `secret get` is one
//! round trip: the name digest needs the key chain before the request can be built.
//!
//! # Security
//! Only the server's [`pb::EnvironmentKeys`] is stored: every key in it is wrapped, and opening
//! it still needs this principal's private key. Nothing unwrapped ever reaches the disk. A stale
//! or damaged entry is harmless: callers refresh it from the server.

use std::path::PathBuf;

use prost::Message;
use zopp_crypto::ids::PrincipalId;
use zopp_proto::v1 as pb;

use crate::home::{create_private_dir, read_bounded, replace_private_unsynced};
use crate::scope::EnvRef;

/// Version byte at the start of every cache file.
const CACHE_V1: u8 = 1;
/// Largest cache file read back (a chain with thousands of epochs is still far below this).
const MAX_CACHE_FILE: u64 = 1024 * 1024;

/// The environment key-chain cache of one principal on one server.
#[derive(Clone, Debug)]
pub struct KeyCache {
    dir: PathBuf,
    server: String,
    principal: PrincipalId,
    /// `false` in principal-token mode, which must not write anything to disk.
    enabled: bool,
}

impl KeyCache {
    /// A cache in `dir` for `principal` talking to `server`.
    pub fn new(dir: PathBuf, server: &str, principal: PrincipalId) -> Self {
        Self {
            dir,
            server: server.to_owned(),
            principal,
            enabled: true,
        }
    }

    /// A cache that never hits and never writes (CI runners with a principal token).
    pub fn disabled(server: &str, principal: PrincipalId) -> Self {
        Self {
            dir: PathBuf::new(),
            server: server.to_owned(),
            principal,
            enabled: false,
        }
    }

    /// Whether anything may be kept on disk (`false` in principal-token mode).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cache directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The file of `env`: a hash of server, principal and the three names, so neither the names
    /// nor the server appear in file names and no two environments can collide.
    fn path(&self, env: &EnvRef) -> PathBuf {
        let mut key = Vec::with_capacity(256);
        for part in [
            self.server.as_bytes(),
            self.principal.as_bytes(),
            env.workspace().as_bytes(),
            env.project().as_bytes(),
            env.environment().as_bytes(),
        ] {
            key.extend_from_slice(&(part.len() as u32).to_be_bytes());
            key.extend_from_slice(part);
        }
        let h = zopp_crypto::sha256(&key);
        self.dir.join(format!("env-{}.pb", hex::encode(&h[..16])))
    }

    /// The cached chain of `env`, if any. A damaged entry reads as a miss.
    pub fn load(&self, env: &EnvRef) -> Option<pb::EnvironmentKeys> {
        if !self.enabled {
            return None;
        }
        let bytes = read_bounded(&self.path(env), MAX_CACHE_FILE).ok()?;
        match bytes.split_first() {
            Some((&CACHE_V1, rest)) => pb::EnvironmentKeys::decode(rest).ok(),
            _ => None,
        }
    }

    /// Stores `keys` for `env` unless the same chain is already there. Failures only cost a
    /// round trip next time, so they are logged, not returned.
    pub fn store(&self, env: &EnvRef, keys: &pb::EnvironmentKeys) {
        if !self.enabled {
            return;
        }
        if self
            .load(env)
            .is_some_and(|cached| same_chain(&cached, keys))
        {
            return;
        }
        let mut bytes = Vec::with_capacity(1 + keys.encoded_len());
        bytes.push(CACHE_V1);
        keys.encode(&mut bytes)
            .expect("a Vec grows to fit any message");
        let result = create_private_dir(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                replace_private_unsynced(&self.path(env), &bytes).map_err(|e| e.to_string())
            });
        if let Err(error) = result {
            tracing::warn!(%error, "cannot update the key cache");
        }
    }

    /// Forgets `env`.
    pub fn remove(&self, env: &EnvRef) {
        if !self.enabled {
            return;
        }
        let _ = std::fs::remove_file(self.path(env));
    }

    /// Forgets every cached chain (after deleting a workspace or project, whose environments
    /// cannot be enumerated from hashed file names).
    pub fn clear(&self) {
        if !self.enabled {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("env-") && name.ends_with(".pb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Whether two chains hold the same key material. `env_version` and `role` change without any
/// key changing (every write bumps the version), so they do not count: comparing whole messages
/// would re-derive keys and rewrite the cache after every write.
pub fn same_chain(a: &pb::EnvironmentKeys, b: &pb::EnvironmentKeys) -> bool {
    a.workspace_id == b.workspace_id
        && a.project_id == b.project_id
        && a.environment_id == b.environment_id
        && a.grant_scope == b.grant_scope
        && a.grant_scope_id == b.grant_scope_id
        && a.grant_wrapped_key == b.grant_wrapped_key
        && a.project_wrapped_key == b.project_wrapped_key
        && a.environment_wrapped_key == b.environment_wrapped_key
        && a.key_epoch == b.key_epoch
        && a.epoch_links == b.epoch_links
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(e: &str) -> EnvRef {
        EnvRef::try_new("acme", "api", e).expect("valid")
    }

    fn keys(epoch: u32) -> pb::EnvironmentKeys {
        pb::EnvironmentKeys {
            environment_id: "e".into(),
            key_epoch: epoch,
            grant_wrapped_key: vec![7; 90],
            ..Default::default()
        }
    }

    #[test]
    fn stores_loads_and_forgets() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = KeyCache::new(
            tmp.path().join("cache"),
            "http://s",
            PrincipalId::from_bytes([1; 16]),
        );
        assert_eq!(cache.load(&env("dev")), None);
        cache.store(&env("dev"), &keys(1));
        assert_eq!(cache.load(&env("dev")), Some(keys(1)));
        assert_eq!(cache.load(&env("prod")), None);
        let file = cache.path(&env("dev"));
        assert_eq!(
            std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        // File names reveal neither the server nor the names.
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(!name.contains("acme") && !name.contains("dev"));

        cache.store(&env("dev"), &keys(2));
        assert_eq!(cache.load(&env("dev")), Some(keys(2)));
        cache.remove(&env("dev"));
        assert_eq!(cache.load(&env("dev")), None);

        cache.store(&env("dev"), &keys(1));
        cache.store(&env("prod"), &keys(1));
        cache.clear();
        assert_eq!(cache.load(&env("dev")), None);
        assert_eq!(cache.load(&env("prod")), None);
    }

    #[test]
    fn entries_are_per_server_and_principal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = KeyCache::new(
            tmp.path().into(),
            "http://a",
            PrincipalId::from_bytes([1; 16]),
        );
        let b = KeyCache::new(
            tmp.path().into(),
            "http://b",
            PrincipalId::from_bytes([1; 16]),
        );
        let c = KeyCache::new(
            tmp.path().into(),
            "http://a",
            PrincipalId::from_bytes([2; 16]),
        );
        a.store(&env("dev"), &keys(1));
        assert_eq!(b.load(&env("dev")), None);
        assert_eq!(c.load(&env("dev")), None);
    }

    #[test]
    fn version_and_role_changes_are_not_chain_changes() {
        let a = keys(1);
        let mut b = a.clone();
        b.env_version = 99;
        b.role = 3;
        assert!(same_chain(&a, &b));
        b.grant_wrapped_key[0] ^= 1;
        assert!(!same_chain(&a, &b));
        assert!(!same_chain(&keys(1), &keys(2)));
        let mut c = keys(1);
        c.environment_id = "other".into();
        assert!(!same_chain(&keys(1), &c));
    }

    #[test]
    fn damaged_entries_read_as_misses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = KeyCache::new(tmp.path().into(), "s", PrincipalId::from_bytes([1; 16]));
        std::fs::write(cache.path(&env("dev")), [9u8, 1, 2, 3]).expect("write");
        assert_eq!(cache.load(&env("dev")), None);
        std::fs::write(cache.path(&env("dev")), [CACHE_V1, 0xff, 0xff]).expect("write");
        assert_eq!(cache.load(&env("dev")), None);
    }
}
