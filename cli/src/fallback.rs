//! The encrypted fallback copy of an environment for `zopp run --fallback FILE`: written after
//! every successful fetch, read when the server cannot be reached.
//!
//! # Security
//! The copy is sealed with a key derived from this principal's X25519 secret
//! ([`zopp_crypto::local::FALLBACK_LABEL`]), so only the principal that wrote it can read it;
//! its AAD binds the principal id and the environment's workspace/project/environment names,
//! so a copy cannot be passed off as another environment's. The file is created 0600 and
//! replaced atomically (a temporary file in the same directory, then a rename), so a reader
//! never sees half a copy. A copy holds resolved values: treat it like the secrets themselves.
//!
//! Plaintext layout (inside the seal; changing it makes older copies unreadable):
//! `0x01 ‖ fetched_at_ms: i64 BE ‖ env_version: u64 BE ‖ count: u32 BE ‖
//! count × (name_len: u32 BE ‖ name ‖ value_len: u32 BE ‖ value)`.

use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use zeroize::Zeroizing;
use zopp_crypto::local::{LocalKey, FALLBACK_LABEL};

use crate::error::{Error, Result};
use crate::home::{read_bounded, replace_private, Identity};
use crate::resolve::{ResolvedEnvironment, ResolvedSecret};
use crate::scope::EnvRef;

/// Version byte of the plaintext layout.
const FALLBACK_V1: u8 = 1;
/// AAD context prefix, so a fallback seal can never be confused with another local file.
const CONTEXT_LABEL: &[u8] = b"fallback";
/// Largest copy read back: 20,000 secrets of 1 MiB would be more, but no environment that
/// large can be run anyway (the kernel limits a process environment far below this).
const MAX_FILE: u64 = 512 * 1024 * 1024;

/// A decrypted fallback copy.
#[derive(Debug)]
pub struct FallbackCopy {
    /// When the values were fetched from the server (unix ms).
    pub fetched_at_ms: i64,
    /// The environment version they are.
    pub env_version: u64,
    /// The resolved secrets, sorted by name.
    pub secrets: Vec<ResolvedSecret>,
}

impl FallbackCopy {
    /// How long ago the values were fetched (zero if the clock went backwards).
    pub fn age(&self) -> Duration {
        let fetched = Duration::from_millis(u64::try_from(self.fetched_at_ms).unwrap_or(0));
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(fetched)
    }

    /// The copy as a resolved environment.
    pub fn into_environment(self) -> ResolvedEnvironment {
        ResolvedEnvironment {
            env_version: self.env_version,
            secrets: self.secrets,
        }
    }
}

/// What the seal binds: who wrote the copy and for which environment.
fn context(identity: &Identity, env: &EnvRef) -> Vec<u8> {
    let mut c = Vec::with_capacity(64);
    c.extend_from_slice(CONTEXT_LABEL);
    c.extend_from_slice(identity.principal().as_bytes());
    for part in [env.workspace(), env.project(), env.environment()] {
        c.extend_from_slice(&(part.len() as u32).to_be_bytes());
        c.extend_from_slice(part.as_bytes());
    }
    c
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn encode(env: &ResolvedEnvironment, fetched_at_ms: i64) -> Zeroizing<Vec<u8>> {
    let len = 1
        + 8
        + 8
        + 4
        + env
            .secrets
            .iter()
            .map(|s| 8 + s.name.len() + s.expose_value().len())
            .sum::<usize>();
    // Sized up front so no reallocation leaves a copy of a value behind.
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.push(FALLBACK_V1);
    out.extend_from_slice(&fetched_at_ms.to_be_bytes());
    out.extend_from_slice(&env.env_version.to_be_bytes());
    out.extend_from_slice(&(env.secrets.len() as u32).to_be_bytes());
    for s in &env.secrets {
        out.extend_from_slice(&(s.name.len() as u32).to_be_bytes());
        out.extend_from_slice(s.name.as_bytes());
        out.extend_from_slice(&(s.expose_value().len() as u32).to_be_bytes());
        out.extend_from_slice(s.expose_value());
    }
    out
}

/// Reads the plaintext layout; `None` when it is malformed.
fn decode(b: &[u8]) -> Option<FallbackCopy> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn u32_at(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    let mut b = b;
    if take(&mut b, 1)? != [FALLBACK_V1] {
        return None;
    }
    let fetched_at_ms = i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
    let env_version = u64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
    let count = u32_at(&mut b)?;
    // Each secret takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    if count > b.len() / 8 {
        return None;
    }
    let mut secrets = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u32_at(&mut b)?;
        let name = std::str::from_utf8(take(&mut b, n)?).ok()?.to_owned();
        let n = u32_at(&mut b)?;
        let value = Zeroizing::new(take(&mut b, n)?.to_vec());
        secrets.push(ResolvedSecret::new(name, value));
    }
    b.is_empty().then_some(FallbackCopy {
        fetched_at_ms,
        env_version,
        secrets,
    })
}

/// Writes `env` as the fallback copy at `path` (0600, atomic replace), stamped now. A missing
/// directory is created, 0700 (parents included), so that `--fallback ~/.cache/zopp/app.copy`
/// works on a fresh machine instead of leaving no copy behind.
///
/// # Errors
/// [`Error::LocalIo`] when the directory cannot be created or the file cannot be written.
pub fn write(
    path: &Path,
    identity: &Identity,
    env_ref: &EnvRef,
    env: &ResolvedEnvironment,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    Error::io("cannot create the directory of the fallback copy", dir, e)
                })?;
        }
    }
    let key = LocalKey::derive(&identity.keys().agreement, FALLBACK_LABEL);
    let plain = encode(env, now_ms());
    let sealed = key.seal(&context(identity, env_ref), &plain, &mut OsRng);
    replace_private(path, &sealed).map_err(|e| Error::io("cannot write the fallback copy", path, e))
}

/// Reads the fallback copy at `path`; `None` when there is no file.
///
/// # Errors
/// [`Error::Fallback`] when the file was written by another principal, for another
/// environment, or was altered; [`Error::LocalIo`] when it cannot be read.
pub fn read(path: &Path, identity: &Identity, env_ref: &EnvRef) -> Result<Option<FallbackCopy>> {
    let sealed = match read_bounded(path, MAX_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read the fallback copy", path, e)),
    };
    let key = LocalKey::derive(&identity.keys().agreement, FALLBACK_LABEL);
    let refuse = || {
        Error::Fallback(format!(
            "the fallback copy {} was not written by this identity for {env_ref}, or was altered",
            path.display()
        ))
    };
    let plain = key
        .open(&context(identity, env_ref), &sealed)
        .map_err(|_| refuse())?;
    decode(&plain).map(Some).ok_or_else(refuse)
}

/// Deletes the fallback copy at `path` (after the server refused this principal). A missing
/// file is not an error.
///
/// # Errors
/// [`Error::LocalIo`] when it exists and cannot be removed.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(Error::io("cannot remove the fallback copy", path, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::LocalConfig;
    use std::os::unix::fs::PermissionsExt;
    use zopp_crypto::keys::{AgreementSecret, PrincipalKeys, SigningKey};

    const PRINCIPAL: &str = "6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11";
    const OTHER: &str = "7f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11";
    const USER: &str = "0b6b0f7e-3c43-4f43-8a51-7f3c4f0f1d22";

    fn identity(principal: &str, secret: u8) -> Identity {
        Identity::new(
            LocalConfig {
                server: "http://127.0.0.1:1".into(),
                principal_id: principal.into(),
                user_id: USER.into(),
                email: "a@example.com".into(),
                principal_name: "laptop".into(),
            },
            PrincipalKeys {
                signing: SigningKey::from_seed(&[0x11; 32]),
                agreement: AgreementSecret::from_bytes([secret; 32]),
            },
        )
        .expect("valid ids")
    }

    fn env() -> ResolvedEnvironment {
        ResolvedEnvironment {
            env_version: 7,
            secrets: vec![
                ResolvedSecret::new("A".into(), Zeroizing::new(b"alpha".to_vec())),
                ResolvedSecret::new("BIN".into(), Zeroizing::new(vec![0xff, 0, 1])),
                ResolvedSecret::new("EMPTY".into(), Zeroizing::new(Vec::new())),
            ],
        }
    }

    #[test]
    fn round_trip_private_and_atomic() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("dev.fallback");
        let me = identity(PRINCIPAL, 0x22);
        let dev = EnvRef::try_new("acme", "api", "dev").expect("valid");
        assert!(read(&path, &me, &dev).expect("no file").is_none());
        write(&path, &me, &dev, &env()).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let copy = read(&path, &me, &dev).expect("read").expect("present");
        assert_eq!(copy.env_version, 7);
        assert!(copy.age() < Duration::from_secs(60));
        let got: Vec<(&str, &[u8])> = copy
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.expose_value()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A", &b"alpha"[..]),
                ("BIN", &[0xff, 0, 1][..]),
                ("EMPTY", &b""[..])
            ]
        );
        // The bytes on disk hold no value.
        let raw = std::fs::read(&path).expect("raw");
        assert!(!raw.windows(5).any(|w| w == b"alpha"));
        // Rewriting replaces the file; no temporary is left behind.
        write(&path, &me, &dev, &env()).expect("rewrite");
        assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 1);
        remove(&path).expect("remove");
        remove(&path).expect("removing twice is fine");
        assert!(!path.exists());
    }

    #[test]
    fn another_principal_environment_or_altered_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("copy");
        let me = identity(PRINCIPAL, 0x22);
        let dev = EnvRef::try_new("acme", "api", "dev").expect("valid");
        write(&path, &me, &dev, &env()).expect("write");
        let prod = EnvRef::try_new("acme", "api", "prod").expect("valid");
        assert!(matches!(read(&path, &me, &prod), Err(Error::Fallback(_))));
        // Same keys under another principal id, and another key under the same id.
        assert!(matches!(
            read(&path, &identity(OTHER, 0x22), &dev),
            Err(Error::Fallback(_))
        ));
        assert!(matches!(
            read(&path, &identity(PRINCIPAL, 0x23), &dev),
            Err(Error::Fallback(_))
        ));
        let mut raw = std::fs::read(&path).expect("raw");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, raw).expect("tamper");
        assert!(matches!(read(&path, &me, &dev), Err(Error::Fallback(_))));
    }

    #[test]
    fn malformed_plaintext_is_refused_without_allocating() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[2]).is_none());
        let mut lie = vec![FALLBACK_V1];
        lie.extend_from_slice(&0i64.to_be_bytes());
        lie.extend_from_slice(&0u64.to_be_bytes());
        lie.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&lie).is_none());
        let good = encode(&env(), 5);
        assert!(decode(&good).is_some());
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(decode(&trailing).is_none());
    }
}
