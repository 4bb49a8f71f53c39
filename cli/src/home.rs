//! The local identity in `$ZOPP_HOME` (docs/ARCHITECTURE.md "Local files"): `config.toml` (who
//! this principal is and which server it joined) and `principal.key` (FORMAT.md §9, plain or
//! Argon2id-sealed). The directory is 0700 and every file 0600, created with an explicit mode.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;
use zopp_crypto::ids::{PrincipalId, ServerId, UserId};
use zopp_crypto::keyfile::{self, KdfParams};
use zopp_crypto::keys::PrincipalKeys;

use crate::error::{Error, Result};

/// Environment variable naming the zopp home directory.
pub const HOME_ENV: &str = "ZOPP_HOME";
/// Environment variable holding the key file passphrase (for non-interactive use).
pub const PASSPHRASE_ENV: &str = "ZOPP_PASSPHRASE";
/// Name of the identity file.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the private key file.
pub const KEY_FILE: &str = "principal.key";
/// Name of the cache directory.
pub const CACHE_DIR: &str = "cache";
/// Largest key file accepted: real ones are under 200 bytes, so anything bigger is not ours.
const MAX_KEY_FILE: u64 = 4096;
/// Largest config file accepted.
const MAX_CONFIG_FILE: u64 = 64 * 1024;

/// The zopp home directory.
#[derive(Clone, Debug)]
pub struct ZoppHome {
    dir: PathBuf,
}

/// The identity recorded in `config.toml`. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalConfig {
    /// Server this principal joined (used when neither `--server` nor `ZOPP_SERVER` is given).
    pub server: String,
    /// The principal's id.
    pub principal_id: String,
    /// The owning user's id.
    pub user_id: String,
    /// The owning user's email.
    pub email: String,
    /// This device's principal name.
    pub principal_name: String,
}

/// TLS files chosen at join (`[tls]` in `config.toml`), used again for the same server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTls {
    /// CA certificate trusted for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate presented to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// The part of `config.toml` that [`RecordedTls`] lives in.
#[derive(Deserialize)]
struct TlsSection {
    #[serde(default)]
    tls: RecordedTls,
}

/// An unlocked local identity: ids plus both private keys.
pub struct Identity {
    config: LocalConfig,
    principal: PrincipalId,
    /// `None` for a service principal (principal-token mode).
    user: Option<UserId>,
    keys: PrincipalKeys,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({}, ..)", self.principal)
    }
}

impl Identity {
    /// Builds an identity from its parts (used by join and by tests).
    pub fn new(config: LocalConfig, keys: PrincipalKeys) -> Result<Self> {
        let bad = |what: &str| Error::LocalFormat {
            path: PathBuf::from(CONFIG_FILE),
            message: format!("{what} is not a valid id"),
        };
        let principal =
            PrincipalId::try_parse(&config.principal_id).map_err(|_| bad("principal_id"))?;
        let user = UserId::try_parse(&config.user_id).map_err(|_| bad("user_id"))?;
        Ok(Self {
            config,
            principal,
            user: Some(user),
            keys,
        })
    }
    /// The identity of a service principal, built from its token: it has no user and nothing on
    /// disk.
    pub fn service(principal: PrincipalId, keys: PrincipalKeys, server: &str) -> Self {
        Self {
            config: LocalConfig {
                server: server.to_owned(),
                principal_id: principal.to_string(),
                user_id: String::new(),
                email: String::new(),
                principal_name: String::new(),
            },
            principal,
            user: None,
            keys,
        }
    }
    /// The principal's id.
    pub fn principal(&self) -> PrincipalId {
        self.principal
    }
    /// The owning user's id (`None` for a service principal).
    pub fn user(&self) -> Option<UserId> {
        self.user
    }
    /// The recorded configuration.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }
    /// Both private keys.
    ///
    /// # Security
    /// Secret: never log or persist what this returns.
    pub fn keys(&self) -> &PrincipalKeys {
        &self.keys
    }
}

impl ZoppHome {
    /// A home at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$ZOPP_HOME`, else `~/.zopp`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when neither `ZOPP_HOME` nor `HOME` is set.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Self::new(dir));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(Self::new(PathBuf::from(home).join(".zopp"))),
            None => Err(Error::InvalidInput(
                "cannot locate the zopp home: set ZOPP_HOME or HOME".into(),
            )),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Path of `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
    /// Path of `principal.key`.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
    /// Path of the cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join(CACHE_DIR)
    }

    /// Whether an identity (or what is left of one) is present.
    pub fn has_identity(&self) -> bool {
        self.config_path().exists() || self.key_path().exists()
    }

    /// Creates the directory (mode 0700) if missing.
    ///
    /// # Errors
    /// [`Error::LocalIo`] when it cannot be created.
    pub fn ensure_dir(&self) -> Result<()> {
        create_private_dir(&self.dir)
    }

    /// Reads `config.toml`.
    ///
    /// # Errors
    /// [`Error::NoIdentity`] when it is missing; [`Error::LocalFormat`] when it is unreadable.
    pub fn read_config(&self) -> Result<LocalConfig> {
        let path = self.config_path();
        let text = match read_bounded(&path, MAX_CONFIG_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoIdentity {
                    home: self.dir.clone(),
                })
            }
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        let text = String::from_utf8(text).map_err(|_| Error::LocalFormat {
            path: path.clone(),
            message: "not UTF-8".into(),
        })?;
        toml::from_str(&text).map_err(|e| Error::LocalFormat {
            path,
            message: e.message().to_owned(),
        })
    }

    /// The server recorded at join, if there is a readable config.
    pub fn configured_server(&self) -> Option<String> {
        self.read_config()
            .ok()
            .map(|c| c.server)
            .filter(|s| !s.is_empty())
    }

    /// The TLS files recorded at join for the recorded server (`[tls]` in `config.toml`); empty
    /// when none were, or the file cannot be read.
    pub fn recorded_tls(&self) -> RecordedTls {
        let Ok(bytes) = read_bounded(&self.config_path(), MAX_CONFIG_FILE) else {
            return RecordedTls::default();
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return RecordedTls::default();
        };
        toml::from_str::<TlsSection>(&text)
            .map(|s| s.tls)
            .unwrap_or_default()
    }

    /// Records the TLS files `server` uses (its CA and client certificate, as absolute paths) in
    /// `config.toml`, so later commands to the same server use them too. Does nothing for a
    /// server without them.
    ///
    /// # Errors
    /// I/O and format errors of `config.toml`.
    pub fn remember_tls(&self, server: &crate::ServerConfig) -> Result<()> {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let tls = RecordedTls {
            ca: server.tls_ca().map(absolute),
            cert: server.client_identity().map(|i| absolute(&i.cert)),
            key: server.client_identity().map(|i| absolute(&i.key)),
        };
        if tls == RecordedTls::default() {
            return Ok(());
        }
        let path = self.config_path();
        let format_error = |message: String| Error::LocalFormat {
            path: path.clone(),
            message,
        };
        let text = read_bounded(&path, MAX_CONFIG_FILE)
            .map_err(|e| Error::io("cannot read", path.clone(), e))?;
        let text = String::from_utf8(text).map_err(|_| format_error("not UTF-8".into()))?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| format_error(e.message().to_owned()))?;
        let value = toml::Value::try_from(&tls).map_err(|e| format_error(e.to_string()))?;
        table.insert("tls".into(), value);
        let text = toml::to_string(&table).map_err(|e| format_error(e.to_string()))?;
        replace_private(&path, text.as_bytes()).map_err(|e| Error::io("cannot write", path, e))
    }

    /// Loads and unlocks the identity. `passphrase` is asked only when the key file is sealed.
    ///
    /// # Errors
    /// [`Error::NoIdentity`] when either file is missing; [`Error::WrongPassphrase`] when the
    /// passphrase does not open the key; format errors for damaged files.
    pub fn load_identity(
        &self,
        passphrase: impl FnOnce(&Path) -> Result<Zeroizing<String>>,
    ) -> Result<Identity> {
        let config = self.read_config()?;
        let path = self.key_path();
        let encoded = match read_bounded(&path, MAX_KEY_FILE) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoIdentity {
                    home: self.dir.clone(),
                })
            }
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        warn_if_exposed(&path);
        let keys = if keyfile::is_sealed(&encoded) {
            let pass = passphrase(&path)?;
            keyfile::decode(&encoded, Some(pass.as_bytes()))
        } else {
            keyfile::decode(&encoded, None)
        }
        .map_err(|e| match e {
            zopp_crypto::CryptoError::DecryptionFailed => {
                Error::WrongPassphrase { path: path.clone() }
            }
            other => Error::LocalFormat {
                path: path.clone(),
                message: other.to_string(),
            },
        })?;
        Identity::new(config, keys).map_err(|e| match e {
            Error::LocalFormat { message, .. } => Error::LocalFormat {
                path: self.config_path(),
                message,
            },
            other => other,
        })
    }

    /// Writes a new key file, refusing to replace an existing one.
    ///
    /// # Errors
    /// [`Error::IdentityExists`] when a key file is already there; I/O and KDF errors.
    pub fn write_key_file(
        &self,
        keys: &PrincipalKeys,
        passphrase: Option<&[u8]>,
        params: KdfParams,
    ) -> Result<()> {
        let encoded: Zeroizing<Vec<u8>> = match passphrase {
            None => keyfile::encode_plain(keys),
            Some(p) => Zeroizing::new(
                keyfile::encode_sealed(keys, p, params, &mut rand_core::OsRng).map_err(|e| {
                    Error::InvalidInput(format!("cannot protect the key file: {e}"))
                })?,
            ),
        };
        let path = self.key_path();
        match create_private(&path, &encoded) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::IdentityExists {
                home: self.dir.clone(),
            }),
            Err(e) => Err(Error::io("cannot write", path, e)),
            Ok(()) => Ok(()),
        }
    }

    /// Removes the key file (undoing a join that the server refused).
    pub fn remove_key_file(&self) {
        if let Err(e) = fs::remove_file(self.key_path()) {
            tracing::warn!(error = %e, "cannot remove the unused key file");
        }
    }

    /// Writes `config.toml` (atomically: a reader sees the old or the new file, never half).
    ///
    /// # Errors
    /// [`Error::LocalIo`] when it cannot be written.
    pub fn write_config(&self, config: &LocalConfig) -> Result<()> {
        let text = toml::to_string(config).map_err(|e| Error::LocalFormat {
            path: self.config_path(),
            message: e.to_string(),
        })?;
        let path = self.config_path();
        replace_private(&path, text.as_bytes()).map_err(|e| Error::io("cannot write", path, e))
    }

    /// Path of the pinned server id.
    pub fn server_id_path(&self) -> PathBuf {
        self.dir.join(SERVER_ID_FILE)
    }

    /// The server id pinned at join (FORMAT.md §4), if any.
    ///
    /// # Errors
    /// [`Error::LocalFormat`] when the file holds something else; [`Error::LocalIo`].
    pub fn server_id(&self) -> Result<Option<ServerId>> {
        let path = self.server_id_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read", path, e)),
        };
        ServerId::try_parse(text.trim())
            .map(Some)
            .map_err(|e| Error::LocalFormat {
                path,
                message: e.to_string(),
            })
    }

    /// Pins `id` as the server this identity signs its requests for.
    ///
    /// # Errors
    /// [`Error::LocalIo`] when it cannot be written.
    pub fn pin_server_id(&self, id: ServerId) -> Result<()> {
        let path = self.server_id_path();
        replace_private(&path, format!("{id}\n").as_bytes())
            .map_err(|e| Error::io("cannot write", path, e))
    }
}

/// Creates `dir` and missing parents with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("cannot create", dir, e))
}

/// Creates a new file with mode 0600; fails if it exists.
pub(crate) fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` atomically with a 0600 file holding `bytes`.
pub(crate) fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".zopp-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Like [`replace_private`] but without waiting for the disk: for caches, where a file lost or
/// emptied by a crash only costs a refetch, and an fsync would cost milliseconds on every update.
pub(crate) fn replace_private_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".zopp-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads a whole file, refusing one larger than `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(buf)
}

fn warn_if_exposed(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key file is readable by other users; run chmod 600 on it");
        }
    }
}

/// File of `$ZOPP_HOME` holding the pinned server id.
pub const SERVER_ID_FILE: &str = "server_id";

/// Set to `1` to store a new key file without a passphrase, like `zopp join --no-passphrase`.
pub const NO_PASSPHRASE_ENV: &str = "ZOPP_NO_PASSPHRASE";

/// The passphrase for a new key file. `no_passphrase` (`--no-passphrase`, or
/// `ZOPP_NO_PASSPHRASE=1`) stores the key unencrypted on purpose; otherwise `ZOPP_PASSPHRASE`
/// when set, else a prompt (asked twice, empty for none) when stdin is a terminal. Without a
/// terminal, none of these is an error: a key file is never written unencrypted without the
/// user having said so.
///
/// # Errors
/// [`Error::NewKeyPassphraseRequired`] without a terminal, a passphrase or an explicit
/// `--no-passphrase`, or with an empty `ZOPP_PASSPHRASE`; [`Error::InvalidInput`] when the two
/// entries differ; [`Error::LocalIo`] when the terminal cannot be read.
pub fn new_key_passphrase(no_passphrase: bool) -> Result<Option<Zeroizing<String>>> {
    if no_passphrase {
        return Ok(None);
    }
    if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
        let p = Zeroizing::new(p.to_string_lossy().into_owned());
        if p.is_empty() {
            return Err(Error::NewKeyPassphraseRequired {
                reason: "ZOPP_PASSPHRASE is set but empty",
            });
        }
        check_new_passphrase(&p)?;
        return Ok(Some(p));
    }
    if std::env::var_os(NO_PASSPHRASE_ENV).is_some_and(|v| v == "1") {
        return Ok(None);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::NewKeyPassphraseRequired {
            reason: "stdin is not a terminal to ask for one",
        });
    }
    let first = prompt("passphrase to protect your key (empty for none): ")?;
    if first.is_empty() {
        return Ok(None);
    }
    check_new_passphrase(&first)?;
    let second = prompt("repeat the passphrase: ")?;
    if !zopp_crypto::ct_eq(first.as_bytes(), second.as_bytes()) {
        return Err(Error::InvalidInput("the passphrases do not match".into()));
    }
    Ok(Some(first))
}

/// Fewest characters a new passphrase may have.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Fewest distinct characters a new passphrase may have (refuses `aaaaaaaaaaaa`).
const MIN_DISTINCT_CHARS: usize = 5;

/// Refuses a new passphrase that Argon2 cannot save: fewer than [`MIN_PASSPHRASE_CHARS`]
/// characters, or fewer than 5 different ones. Passphrases that unlock an existing key are
/// never checked (they are what they are).
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong and what would do.
pub fn check_new_passphrase(p: &str) -> Result<()> {
    let chars = p.chars().count();
    let distinct = p.chars().collect::<std::collections::HashSet<_>>().len();
    if chars < MIN_PASSPHRASE_CHARS {
        return Err(Error::InvalidInput(format!(
            "the passphrase is too short ({chars} characters): use at least {MIN_PASSPHRASE_CHARS}, e.g. four random words"
        )));
    }
    if distinct < MIN_DISTINCT_CHARS {
        return Err(Error::InvalidInput(format!(
            "the passphrase repeats too few characters ({distinct} different): use at least {MIN_DISTINCT_CHARS} different ones, e.g. four random words"
        )));
    }
    Ok(())
}

/// The passphrase that unlocks the key file at `path`: `ZOPP_PASSPHRASE`, else a prompt when
/// stdin is a terminal.
///
/// # Errors
/// [`Error::PassphraseRequired`] when neither is available.
pub fn unlock_passphrase(path: &Path) -> Result<Zeroizing<String>> {
    if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
        return Ok(Zeroizing::new(p.to_string_lossy().into_owned()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::PassphraseRequired {
            path: path.to_owned(),
        });
    }
    prompt(&format!("passphrase for {}: ", path.display()))
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Error::io("cannot read a passphrase from", "/dev/tty", e))
}

/// A fixed identity for the caches' unit tests; `secret` fills the X25519 secret, so two values
/// give two principals whose cache keys differ.
#[cfg(test)]
pub(crate) fn test_identity(secret: u8) -> Identity {
    use zopp_crypto::keys::{AgreementSecret, PrincipalKeys, SigningKey};
    Identity::new(
        LocalConfig {
            server: "http://127.0.0.1:1".into(),
            principal_id: "6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11".into(),
            user_id: "0b6b0f7e-3c43-4f43-8a51-7f3c4f0f1d22".into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use zopp_crypto::keys::{AgreementSecret, SigningKey};

    /// Argon2 parameters small enough for tests (the minimum the KDF accepts).
    const TINY_KDF: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };
    const PRINCIPAL: &str = "6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11";
    const USER: &str = "0b6b0f7e-3c43-4f43-8a51-7f3c4f0f1d22";

    fn config() -> LocalConfig {
        LocalConfig {
            server: "http://127.0.0.1:50051".into(),
            principal_id: PRINCIPAL.into(),
            user_id: USER.into(),
            email: "alice@example.com".into(),
            principal_name: "laptop".into(),
        }
    }

    /// Fixed Ed25519 seed of the test principal.
    const SIGNING_SEED: [u8; 32] = [0x11; 32];
    /// Fixed X25519 secret of the test principal.
    const AGREEMENT: [u8; 32] = [0x22; 32];

    fn keys() -> PrincipalKeys {
        PrincipalKeys {
            signing: SigningKey::from_seed(&SIGNING_SEED),
            agreement: AgreementSecret::from_bytes(AGREEMENT),
        }
    }

    fn no_prompt(_: &Path) -> Result<Zeroizing<String>> {
        panic!("a plain key file must not ask for a passphrase")
    }

    #[test]
    fn new_passphrases_need_twelve_characters_and_some_variety() {
        assert!(check_new_passphrase("correct horse battery").is_ok());
        assert!(
            check_new_passphrase("ÄÖÜäöüßéèêëî").is_ok(),
            "characters, not bytes"
        );
        let short = check_new_passphrase("abc").expect_err("short");
        assert_eq!(
            short.to_string(),
            "the passphrase is too short (3 characters): use at least 12, e.g. four random words"
        );
        assert!(
            check_new_passphrase("abcdabcdabc").is_err(),
            "11 characters"
        );
        assert!(
            check_new_passphrase("aaaabbbbaaaa").is_err(),
            "2 different characters"
        );
        assert!(check_new_passphrase("abcdeabcdeab").is_ok());
    }

    #[test]
    fn plain_key_file_round_trips_with_private_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path().join("nested/home"));
        home.ensure_dir().expect("dir");
        home.write_key_file(&keys(), None, TINY_KDF).expect("key");
        home.write_config(&config()).expect("config");
        assert!(home.has_identity());

        let id = home.load_identity(no_prompt).expect("load");
        assert_eq!(id.principal().to_string(), PRINCIPAL);
        assert_eq!(id.config(), &config());
        assert_eq!(
            id.keys().signing.verifying_key(),
            keys().signing.verifying_key()
        );
        assert_eq!(
            id.keys().agreement.public_key(),
            keys().agreement.public_key()
        );
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(home.dir()), 0o700);
        assert_eq!(mode(&home.key_path()), 0o600);
        assert_eq!(mode(&home.config_path()), 0o600);
    }

    #[test]
    fn sealed_key_file_needs_the_right_passphrase() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path());
        home.write_key_file(&keys(), Some(b"correct horse"), TINY_KDF)
            .expect("key");
        home.write_config(&config()).expect("config");

        let id = home
            .load_identity(|_| Ok(Zeroizing::new("correct horse".into())))
            .expect("unlock");
        assert_eq!(
            id.keys().signing.verifying_key(),
            keys().signing.verifying_key()
        );
        let err = home
            .load_identity(|_| Ok(Zeroizing::new("wrong".into())))
            .expect_err("wrong passphrase");
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
        let err = home
            .load_identity(|p| Err(Error::PassphraseRequired { path: p.to_owned() }))
            .expect_err("no passphrase");
        assert!(matches!(err, Error::PassphraseRequired { .. }), "{err}");
    }

    #[test]
    fn key_file_is_never_overwritten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path());
        home.write_key_file(&keys(), None, TINY_KDF).expect("first");
        let before = fs::read(home.key_path()).expect("read");
        let err = home
            .write_key_file(
                &PrincipalKeys::generate(&mut rand_core::OsRng),
                None,
                TINY_KDF,
            )
            .expect_err("second");
        assert!(matches!(err, Error::IdentityExists { .. }));
        assert_eq!(fs::read(home.key_path()).expect("read"), before);
    }

    #[test]
    fn missing_identity_is_reported_as_such() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path());
        assert!(!home.has_identity());
        let err = home.load_identity(no_prompt).expect_err("nothing there");
        assert!(matches!(err, Error::NoIdentity { .. }));
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        // A config without its key is not an identity either.
        home.write_config(&config()).expect("config");
        let err = home.load_identity(no_prompt).expect_err("no key");
        assert!(matches!(err, Error::NoIdentity { .. }));
    }

    #[test]
    fn damaged_files_are_format_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = ZoppHome::new(tmp.path());
        fs::write(home.config_path(), "server = 3").expect("write");
        assert!(matches!(home.read_config(), Err(Error::LocalFormat { .. })));
        home.write_config(&config()).expect("config");
        fs::write(home.key_path(), [1u8, 0, 1, 2]).expect("write");
        assert!(matches!(
            home.load_identity(no_prompt),
            Err(Error::LocalFormat { .. })
        ));
    }
}
