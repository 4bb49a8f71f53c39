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
