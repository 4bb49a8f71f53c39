//! The SDK's error type. Messages name the object involved (never a secret value); the `zopp`
//! binary adds hints and exit codes in one place (`main.rs`).

use std::fmt;
use std::path::PathBuf;

use crate::validate::NameKind;

/// Result alias for the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the client SDK can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name breaks the naming rules (refused before any network call).
    #[error("invalid {kind} name '{name}': {reason}")]
    InvalidName {
        /// What the name names.
        kind: NameKind,
        /// The name, escaped for printing.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A secret value is over the size limit (refused before any network call).
    #[error("secret value is larger than the 1 MiB limit (1,048,576 bytes)")]
    ValueTooLarge {
        /// Size of the value, or a lower bound when reading stopped past the limit.
        len: usize,
    },
    /// Some other input is unusable (refused before any network call).
    #[error("{0}")]
    InvalidInput(String),
    /// `$ZOPP_HOME` holds no identity.
    #[error("no zopp identity in {}", home.display())]
    NoIdentity {
        /// The zopp home searched.
        home: PathBuf,
    },
    /// `$ZOPP_HOME` already holds an identity, which is never overwritten.
    #[error("a zopp identity already exists in {}", home.display())]
    IdentityExists {
        /// The zopp home.
        home: PathBuf,
    },
    /// The key file is passphrase-protected and no passphrase is available.
    #[error("the key in {} is passphrase-protected and no passphrase was given", path.display())]
    PassphraseRequired {
        /// The key file.
        path: PathBuf,
    },
    /// A new key file would be written unencrypted without the user having asked for it.
    #[error("no passphrase for the new key file: {reason}")]
    NewKeyPassphraseRequired {
        /// Why none could be had.
        reason: &'static str,
    },
    /// The passphrase does not open the key file.
    #[error("wrong passphrase for {}", path.display())]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// The server address or TLS settings are unusable.
    #[error("invalid server address '{server}': {reason}")]
    BadServer {
        /// The address as given.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plaintext (`http://`) address names a host that is not this machine.
    #[error("refusing plaintext connection to {server}: requests, tokens and invites would cross the network unencrypted")]
    Plaintext {
        /// The address as given.
        server: String,
    },
    /// The TLS handshake with the server failed for a reason the user can act on.
    #[error("TLS with {server} failed: {problem}{}", detail_suffix(detail))]
    Tls {
        /// The address tried.
        server: String,
        /// What went wrong.
        problem: TlsProblem,
        /// The TLS library's explanation.
        detail: String,
    },
    /// The server could not be reached (or answered UNAVAILABLE).
    #[error("cannot reach zopp server at {server}{}", detail_suffix(detail))]
    Unreachable {
        /// The address tried.
        server: String,
        /// The transport's explanation.
        detail: String,
    },
    /// Something named does not exist (or is hidden from the caller).
    #[error("{0}")]
    NotFound(Missing),
    /// A create met an existing name.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists, e.g. `workspace 'acme'`.
        what: String,
    },
    /// A version check failed, or concurrent writers kept winning.
    #[error("{0}")]
    Conflict(String),
    /// `--if-env-version N` did not match the environment's current version; nothing was
    /// written.
    #[error("{}", describe_env_version(environment, *current, *wanted))]
    EnvVersionMismatch {
        /// The environment, as `workspace/project/environment`.
        environment: String,
        /// Workspace name (for the hint).
        workspace: String,
        /// Project name (for the hint).
        project: String,
        /// The environment's version now.
        current: u64,
        /// The version the caller expected.
        wanted: u64,
    },
    /// The server refused to admit a new principal.
    #[error("cannot join: {message}")]
    JoinRefused {
        /// gRPC status code.
        code: tonic::Code,
        /// The server's explanation.
        message: String,
    },
    /// The server refused a request.
    #[error("{}", describe_refusal(*code, message))]
    Refused {
        /// gRPC status code.
        code: tonic::Code,
        /// The server's explanation.
        message: String,
    },
    /// The server served an older state than this client has already seen: a replay of
    /// genuinely signed but outdated versions (`crate::pins`).
    #[error("{what} went back from version {seen} to {got}: the server is serving an older state than this client has already seen")]
    RolledBack {
        /// What went back, e.g. `secret 'API_KEY'` or `environment 'prod'`.
        what: String,
        /// The version seen before.
        seen: u64,
        /// The version served now.
        got: u64,
    },
    /// A version's writer key is not the key its admission chain vouches for: the server
    /// signed versions with a key of its own under a member's id (`crate::verified`).
    #[error("versions attributed to {writer} (principal {principal}) are signed with a key its admission chain does not vouch for: the server may have forged them")]
    WriterKeyMismatch {
        /// The writer's label (email or name).
        writer: String,
        /// The writer's principal id.
        principal: String,
    },
    /// A version's writer does not verify through the admission chain (`crate::verified`).
    #[error("a version's writer does not verify, so its versions cannot be trusted: {detail}")]
    WriterUnverified {
        /// Why, naming the principals involved.
        detail: String,
    },
    /// A scope name now resolves to another scope than the one this client pinned: the server
    /// is passing one environment (or project, or workspace) off as another (`crate::pins`).
    #[error("{scope} changed identity: this client knows it as {pinned}, the server now sends {got}; the server may be passing off another scope under this name")]
    ScopeSwapped {
        /// The scope, e.g. `environment 'prod'`.
        scope: String,
        /// The id pinned.
        pinned: String,
        /// The id served.
        got: String,
    },
    /// A scope's key epoch is lower than one this client has seen: the server is hiding a key
    /// rotation (`crate::pins`).
    #[error("the key epoch of {scope} went back from {seen} to {got}: the server is hiding a key rotation")]
    EpochRolledBack {
        /// The scope, e.g. `environment 'prod'`.
        scope: String,
        /// The highest epoch seen.
        seen: u32,
        /// The epoch served.
        got: u32,
    },
    /// A secret's signature, chain or envelope does not check out.
    #[error("secret '{name}' failed verification")]
    Verification {
        /// The secret's name (or digest prefix when the name could not be recovered).
        name: String,
    },
    /// The key chain the server returned cannot be opened with this identity's keys.
    #[error("cannot derive the key of {scope}: {reason}")]
    KeyChain {
        /// The scope, e.g. `environment 'dev'`.
        scope: String,
        /// What failed.
        reason: String,
    },
    /// The server's response is malformed.
    #[error("unexpected response from the zopp server: {0}")]
    BadResponse(String),
    /// A key the server returned is not vouched for by a signed key statement (FORMAT.md §13):
    /// it may be a key the server substituted, so nothing is read or written with it.
    #[error("refusing the keys of {scope}: {reason}")]
    KeyForged {
        /// The scope, e.g. `environment 'dev'`.
        scope: String,
        /// What failed, naming the key.
        reason: String,
    },
    /// A secret value cannot be shown in the requested form.
    #[error("secret '{name}' {reason}")]
    Unrepresentable {
        /// The secret's name.
        name: String,
        /// Why, e.g. `is not valid UTF-8, so it cannot be printed as JSON`.
        reason: &'static str,
    },
    /// A local file cannot be read or written.
    #[error("{action} {}: {source}", path.display())]
    LocalIo {
        /// What was being done, e.g. `cannot read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A local file has invalid content.
    #[error("invalid {}: {message}", path.display())]
    LocalFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An audit chain failed verification (`zopp audit verify`): the server's trail was altered.
    #[error("audit trail of {chain} failed verification: {failure}")]
    AuditChain {
        /// Which chain, e.g. `workspace 'acme'`.
        chain: String,
        /// The first bad entry and what is wrong with it.
        failure: crate::audit::ChainFailure,
    },
    /// A `${…}` reference cannot be resolved: malformed, missing, cyclic, or pointing into an
    /// environment that cannot be read (the cause says why).
    #[error("{message}")]
    Reference {
        /// What is wrong, naming the chain of keys (never a value).
        message: String,
        /// The error fetching the environment the reference points into, if that is the problem.
        cause: Option<Box<Error>>,
    },
    /// A reference points into another environment this run was not allowed to read for it.
    #[error("references into {environment} are not allowed here")]
    ReferenceNotAllowed {
        /// `project/environment` the reference points into.
        environment: String,
    },
    /// The local fallback copy of an environment cannot be used.
    #[error("{0}")]
    Fallback(String),
    /// A principal's keys are not vouched for by anyone this client trusts, so no key is
    /// wrapped to it (FORMAT.md §6, `crate::trust`).
    #[error("refusing to wrap a key: {message}")]
    Untrusted {
        /// What failed, naming the principals involved.
        message: String,
        /// The fingerprint of an unknown chain root, to compare out of band.
        fingerprint: Option<String>,
    },
    /// `ZOPP_TOKEN` does not hold a principal token.
    #[error("ZOPP_TOKEN is not a valid principal token ({0})")]
    BadToken(String),
    /// The principal token has the first token format, which binds no scope: it must be
    /// minted again.
    #[error("this principal token has an outdated format (version 1) that does not name what it was minted for")]
    OutdatedToken,
    /// The server refused the principal token: revoked, expired or unknown.
    #[error("the principal token was refused: {0}")]
    TokenRefused(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn describe_env_version(environment: &str, current: u64, wanted: u64) -> String {
    if wanted > current {
        // Nobody wrote first: the version asked for was never reached.
        format!(
            "{environment} is at environment version {current}; version {wanted} does not exist \
             yet, so nothing was written"
        )
    } else {
        let since = current - wanted;
        let writes = if since == 1 { "write" } else { "writes" };
        format!(
            "{environment} is at environment version {current}, not {wanted}: {since} {writes} \
             happened since; nothing was written"
        )
    }
}

fn describe_refusal(code: tonic::Code, message: &str) -> String {
    let what = match code {
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "authentication failed",
        tonic::Code::InvalidArgument => "the server refused the request",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Aborted => "conflict",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "the server refused the request",
        tonic::Code::ResourceExhausted => "the server is rate limiting or the request is too large",
        tonic::Code::Unimplemented => "the server does not support this request (upgrade it?)",
        _ => "server error",
    };
    if message.is_empty() {
        format!("{what} ({code:?})")
    } else if message.starts_with(what) {
        // The server often says it already ("permission denied: …").
        message.to_owned()
    } else {
        format!("{what}: {message}")
    }
}

impl Error {
    /// Wraps an I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::LocalIo {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What was not found, precise enough to name it and suggest the listing that helps.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missing {
    /// A workspace.
    Workspace {
        /// Its name.
        name: String,
    },
    /// A project.
    Project {
        /// Workspace searched.
        workspace: String,
        /// Its name.
        name: String,
    },
    /// An environment.
    Environment {
        /// Workspace searched.
        workspace: String,
        /// Project searched.
        project: String,
        /// Its name.
        name: String,
    },
    /// A secret (no live version).
    Secret {
        /// Environment searched.
        environment: String,
        /// The secret's name.
        name: String,
    },
    /// A specific version of a secret.
    Version {
        /// The secret's name.
        name: String,
        /// The version asked for.
        version: u64,
    },
    /// A point-in-time state of an environment that does not exist or is no longer kept.
    PointInTime {
        /// The environment.
        environment: String,
        /// The point asked for, as the user gave it (`2026-01-01T00:00:00Z`, `version 7`).
        at: String,
        /// Why, from the server.
        detail: String,
    },
    /// Something the client cannot name more precisely (the server's message).
    Other(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workspace { name } => write!(f, "workspace '{name}' not found"),
            Self::Project { workspace, name } => {
                write!(f, "project '{name}' not found in workspace '{workspace}'")
            }
            Self::Environment { project, name, .. } => {
                write!(f, "environment '{name}' not found in project '{project}'")
            }
            Self::Secret { environment, name } => {
                write!(
                    f,
                    "secret '{name}' not found in environment '{environment}'"
                )
            }
            Self::Version { name, version } => {
                write!(f, "version {version} of secret '{name}' not found")
            }
            Self::PointInTime {
                environment,
                at,
                detail,
            } => write!(
                f,
                "environment '{environment}' has no state at {at}: {detail}"
            ),
            Self::Other(msg) if msg.is_empty() => f.write_str("not found"),
            Self::Other(msg) => write!(f, "not found: {msg}"),
        }
    }
}

/// Why a TLS handshake failed, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server's certificate does not chain to a trusted CA.
    UnknownIssuer,
    /// The server's certificate is not valid for the name in the address.
    NameMismatch,
    /// The server's certificate has expired or is not yet valid.
    Expired,
    /// The server asks for a client certificate and none was presented.
    ClientCertificateRequired,
    /// The server refused the client certificate presented.
    ClientCertificateRefused,
    /// The server does not speak TLS on this port.
    NotTls,
    /// The server closed the connection during or right after the handshake without saying
    /// why, as servers that require (or refuse) a client certificate do under TLS 1.3.
    HandshakeClosed,
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownIssuer => "the server's certificate is not signed by a trusted CA",
            Self::NameMismatch => "the server's certificate is not valid for this host name",
            Self::Expired => "the server's certificate has expired or is not yet valid",
            Self::ClientCertificateRequired => "the server requires a client certificate",
            Self::ClientCertificateRefused => "the server refused the client certificate",
            Self::NotTls => "the server did not answer with TLS",
            Self::HandshakeClosed => {
                "the server closed the connection after the TLS handshake (it may require a client certificate, or refuse this one)"
            }
        })
    }
}
