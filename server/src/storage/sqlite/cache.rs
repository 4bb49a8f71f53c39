//! Cached results of the two reads on every signed secret read (the principal look-up and the
//! fused resolution-and-secret read), kept while the rows they came from are unchanged.
//!
//! migrations/sqlite/0004_read_epoch.sql keeps a counter, the *read epoch*, that triggers raise
//! in the same transaction as any change to those rows, whoever makes it (this server, another
//! process, a hand edit). A result is stored under the epoch of the snapshot it was read in and
//! served only while a fresh read of the epoch still returns that value, so the cache can never
//! serve a state the database has left: a revoked principal or grant, a newer secret version,
//! a renamed environment all raise the epoch. Checking it is one single-row read instead of the
//! two joins it replaces. Audit appends do not raise it: every read appends one, and no cached
//! read depends on the trail.
//!
//! Nothing here is plaintext: results are ciphertext, wrapped keys and public keys, as stored.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use zopp_crypto::ids::{PrincipalId, UserId};

use super::super::{PrincipalRecord, Resolution, SecretRead};

/// Principals remembered before the cache starts over (a few hundred bytes each).
const PRINCIPALS: usize = 4096;
/// Secret reads remembered before the cache starts over.
const READS: usize = 1024;
/// Largest envelope bytes (the version read plus its predecessor) a cached read may hold, so
/// the cache stays within a few MiB: a read of a larger secret is answered, not remembered.
const MAX_CACHED_ENVELOPES: usize = 4096;

/// What a fused read was asked for: caller, names, secret and version.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct ReadKey {
    pub principal: PrincipalId,
    pub user: Option<UserId>,
    pub workspace: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    pub digest: [u8; 32],
    pub version: Option<u64>,
}

/// A fused read's result.
pub(super) type ReadValue = (Resolution, Option<SecretRead>);

/// Results read under one epoch.
struct Generation<K, V> {
    epoch: i64,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> Generation<K, V> {
    fn new() -> Self {
        Self {
            epoch: 0,
            map: HashMap::new(),
        }
    }

    fn get(&mut self, epoch: i64, key: &K) -> Option<V> {
        if epoch < self.epoch {
            // The counter went back: the file was replaced in place (a restore) or edited.
            // Nothing remembered can be trusted once it climbs to the same values again.
            self.map.clear();
            self.epoch = epoch;
        }
        if self.epoch != epoch {
            return None;
        }
        self.map.get(key).cloned()
    }

    fn put(&mut self, epoch: i64, key: K, value: V, capacity: usize) {
        if epoch < self.epoch {
            // Read before a change another reader has already seen (or the counter went back,
            // which the next look-up notices).
            return;
        }
        if epoch > self.epoch {
            self.map.clear();
            self.epoch = epoch;
        }
        if self.map.len() >= capacity {
            self.map.clear();
        }
        self.map.insert(key, value);
    }
}

/// Results by the read epoch they were read under.
pub(super) struct ReadCache {
    principals: Mutex<Generation<PrincipalId, PrincipalRecord>>,
    reads: Mutex<Generation<ReadKey, ReadValue>>,
}

impl ReadCache {
    pub(super) fn new() -> Self {
        Self {
            principals: Mutex::new(Generation::new()),
            reads: Mutex::new(Generation::new()),
        }
    }

    /// The principal, if it was read under `epoch` (the database's current one).
    pub(super) fn principal(&self, epoch: i64, id: &PrincipalId) -> Option<PrincipalRecord> {
        crate::lock(&self.principals).get(epoch, id)
    }

    /// Remembers a principal read in a snapshot at `epoch`.
    pub(super) fn put_principal(&self, epoch: i64, record: PrincipalRecord) {
        crate::lock(&self.principals).put(epoch, record.id, record, PRINCIPALS);
    }

    /// The fused read, if it was made under `epoch` (the database's current one).
    pub(super) fn read(&self, epoch: i64, key: &ReadKey) -> Option<ReadValue> {
        crate::lock(&self.reads).get(epoch, key)
    }

    /// Remembers a fused read made in a snapshot at `epoch`, unless its envelopes are large.
    pub(super) fn put_read(&self, epoch: i64, key: ReadKey, value: ReadValue) {
        let envelopes = value.1.as_ref().map_or(0, |r| {
            r.secret.envelope.as_bytes().len()
                + r.previous
                    .as_ref()
                    .map_or(0, |p| p.envelope.as_bytes().len())
        });
        if envelopes <= MAX_CACHED_ENVELOPES {
            crate::lock(&self.reads).put(epoch, key, value, READS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ReadKey {
        ReadKey {
            principal: PrincipalId::try_parse("f4e56127-9512-48d2-8f8c-8c0945c94bc7")
                .expect("uuid"),
            user: None,
            workspace: "w".into(),
            project: Some("p".into()),
            environment: Some("e".into()),
            digest: [n; 32],
            version: None,
        }
    }

    #[test]
    fn a_result_is_served_only_under_the_epoch_it_was_read_in() {
        let c = ReadCache::new();
        c.put_read(7, key(1), (Resolution::default(), None));
        assert!(c.read(7, &key(1)).is_some());
        assert!(c.read(7, &key(2)).is_none());
        assert!(c.read(8, &key(1)).is_none(), "a change retires it");
    }

    #[test]
    fn a_result_read_before_a_change_another_reader_saw_is_not_kept() {
        let c = ReadCache::new();
        c.put_read(8, key(1), (Resolution::default(), None));
        c.put_read(7, key(2), (Resolution::default(), None));
        assert!(c.read(8, &key(2)).is_none(), "the older read was dropped");
        assert!(c.read(8, &key(1)).is_some(), "the newer one stays");
    }

    #[test]
    fn a_counter_that_went_back_empties_the_cache() {
        let c = ReadCache::new();
        c.put_read(9, key(1), (Resolution::default(), None));
        assert!(c.read(5, &key(1)).is_none(), "a restored file starts over");
        c.put_read(5, key(2), (Resolution::default(), None));
        assert!(
            c.read(9, &key(1)).is_none(),
            "nothing from before the restore comes back"
        );
        assert!(
            c.read(5, &key(2)).is_some(),
            "the restored file's own reads are kept"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut g: Generation<u32, u32> = Generation::new();
        for i in 0..(READS as u32 * 3) {
            g.put(1, i, i, READS);
            assert!(g.map.len() <= READS);
        }
    }
}
