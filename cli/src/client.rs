//! The connection to a zopp server: channel setup, request signing (FORMAT.md §4), status
//! mapping, and the workspace/project/environment operations. Secret operations live in
//! [`crate::secrets`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rand_core::{OsRng, RngCore};
use std::path::{Path, PathBuf};
use tonic::metadata::MetadataValue;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use tonic::{Code, Request, Response, Status};
use zeroize::Zeroizing;
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId, ServerId, WorkspaceId};
use zopp_crypto::keyfile::KdfParams;
use zopp_crypto::keys::{PrincipalKeys, ScopeKey, ScopeKind, SigningKey, VerifyingKey};
use zopp_crypto::sign::{join_message, sign_request, NONCE_LEN, UNBOUND_SERVER};
use zopp_crypto::statement::StatementRole;
use zopp_crypto::token::PrincipalToken;
use zopp_crypto::wrap::{wrap_to_recipient, wrap_under, KeyContext};
use zopp_proto::v1 as pb;
use zopp_proto::v1::zopp_client::ZoppClient;

use crate::cache::KeyCache;
use crate::chain::{EnvironmentChain, ScopeChain};
use crate::error::{Error, Missing, Result, TlsProblem};
use crate::home::{Identity, LocalConfig, ZoppHome};
use crate::scope::EnvRef;
use crate::validate::{check_name, NameKind};
use crate::verify::keys::ChainStatements;
use crate::verify::make::StatementMaker;

/// Server used when neither `--server`, `ZOPP_SERVER` nor `config.toml` names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// Largest gRPC message accepted or sent (docs/ARCHITECTURE.md "Limits").
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Full gRPC method paths, as signed (FORMAT.md §4).
pub mod method {
    /// `Join`.
    pub const JOIN: &str = "/zopp.v1.Zopp/Join";
    /// `WhoAmI`.
    pub const WHO_AM_I: &str = "/zopp.v1.Zopp/WhoAmI";
    /// `CreateWorkspace`.
    pub const CREATE_WORKSPACE: &str = "/zopp.v1.Zopp/CreateWorkspace";
    /// `ListWorkspaces`.
    pub const LIST_WORKSPACES: &str = "/zopp.v1.Zopp/ListWorkspaces";
    /// `DeleteWorkspace`.
    pub const DELETE_WORKSPACE: &str = "/zopp.v1.Zopp/DeleteWorkspace";
    /// `CreateProject`.
    pub const CREATE_PROJECT: &str = "/zopp.v1.Zopp/CreateProject";
    /// `ListProjects`.
    pub const LIST_PROJECTS: &str = "/zopp.v1.Zopp/ListProjects";
    /// `DeleteProject`.
    pub const DELETE_PROJECT: &str = "/zopp.v1.Zopp/DeleteProject";
    /// `CreateEnvironment`.
    pub const CREATE_ENVIRONMENT: &str = "/zopp.v1.Zopp/CreateEnvironment";
    /// `ListEnvironments`.
    pub const LIST_ENVIRONMENTS: &str = "/zopp.v1.Zopp/ListEnvironments";
    /// `DeleteEnvironment`.
    pub const DELETE_ENVIRONMENT: &str = "/zopp.v1.Zopp/DeleteEnvironment";
    /// `SetRetention`.
    pub const SET_RETENTION: &str = "/zopp.v1.Zopp/SetRetention";
    /// `GetEnvironment`.
    pub const GET_ENVIRONMENT: &str = "/zopp.v1.Zopp/GetEnvironment";
    /// `GetScopeKeys`.
    pub const GET_SCOPE_KEYS: &str = "/zopp.v1.Zopp/GetScopeKeys";
    /// `FetchEnvironment`.
    pub const FETCH_ENVIRONMENT: &str = "/zopp.v1.Zopp/FetchEnvironment";
    /// `GetSecret`.
    pub const GET_SECRET: &str = "/zopp.v1.Zopp/GetSecret";
    /// `SecretHistory`.
    pub const SECRET_HISTORY: &str = "/zopp.v1.Zopp/SecretHistory";
    /// `WriteSecrets`.
    pub const WRITE_SECRETS: &str = "/zopp.v1.Zopp/WriteSecrets";
    /// `WatchEnvironment`.
    pub const WATCH_ENVIRONMENT: &str = "/zopp.v1.Zopp/WatchEnvironment";
}

static RPC_COUNT: AtomicU64 = AtomicU64::new(0);

/// How many RPCs this process has sent (for `ZOPP_DEBUG_RPC_COUNT`).
pub fn rpc_count() -> u64 {
    RPC_COUNT.load(Ordering::Relaxed)
}

pub(crate) fn count_rpc() {
    RPC_COUNT.fetch_add(1, Ordering::Relaxed);
}

/// Where the server is and how to trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    url: String,
    tls_ca: Option<PathBuf>,
    client_identity: Option<ClientIdentity>,
}

/// PEM files of the client certificate presented to a server that asks for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl ServerConfig {
    /// Parses a server address; a bare `host:port` means `http://host:port`.
    ///
    /// # Errors
    /// [`Error::BadServer`] for an unusable address, or a CA file with a plain-text address.
    pub fn try_new(address: &str, tls_ca: Option<PathBuf>) -> Result<Self> {
        let bad = |reason: &str| Error::BadServer {
            server: address.to_owned(),
            reason: reason.to_owned(),
        };
        let address = address.trim();
        if address.is_empty() {
            return Err(bad("empty"));
        }
        let url = if address.contains("://") {
            address.trim_end_matches('/').to_owned()
        } else {
            format!("http://{address}")
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("use http:// or https://"));
        }
        Endpoint::from_shared(url.clone()).map_err(|_| bad("not a valid URL"))?;
        if tls_ca.is_some() && !url.starts_with("https://") {
            return Err(bad("--tls-ca needs an https:// address"));
        }
        Ok(Self {
            url,
            tls_ca,
            client_identity: None,
        })
    }

    /// The same server, presenting `identity` as client certificate (mutual TLS).
    ///
    /// # Errors
    /// [`Error::BadServer`] for a plain-text address.
    pub fn with_client_identity(mut self, identity: ClientIdentity) -> Result<Self> {
        if !self.is_tls() {
            return Err(Error::BadServer {
                server: self.url,
                reason: "--tls-cert needs an https:// address".into(),
            });
        }
        self.client_identity = Some(identity);
        Ok(self)
    }

    /// Refuses a plain-text address whose host is not this machine, unless `insecure`.
    ///
    /// # Errors
    /// [`Error::Plaintext`] for `http://` to any host but a loopback address or `localhost`.
    pub fn check_plaintext(&self, insecure: bool) -> Result<()> {
        if self.is_tls() || insecure || self.is_loopback() {
            return Ok(());
        }
        Err(Error::Plaintext {
            server: self.url.clone(),
        })
    }

    fn is_loopback(&self) -> bool {
        let Ok(uri) = self.url.parse::<tonic::codegen::http::Uri>() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the address is `https://`.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// The CA file trusted instead of the system's roots, if any.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }

    /// The client certificate presented, if any.
    pub fn client_identity(&self) -> Option<&ClientIdentity> {
        self.client_identity.as_ref()
    }

    /// The endpoint with zopp's transport settings and, for https://, its TLS trust.
    fn endpoint(&self) -> Result<Endpoint> {
        let bad = |reason: String| Error::BadServer {
            server: self.url.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| bad(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if self.is_tls() {
            let read =
                |path: &Path| std::fs::read(path).map_err(|e| Error::io("cannot read", path, e));
            let mut tls = ClientTlsConfig::new();
            tls = match &self.tls_ca {
                Some(path) => tls.ca_certificate(Certificate::from_pem(read(path)?)),
                None => tls.with_native_roots(),
            };
            if let Some(id) = &self.client_identity {
                tls = tls.identity(TlsIdentity::from_pem(read(&id.cert)?, read(&id.key)?));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| bad(format!("TLS setup failed: {}", root_cause(&e))))?;
        }
        Ok(endpoint)
    }

    /// Connects, trying again with a short backoff while the connection is refused (a server
    /// restarting): a timeout or a TLS failure is reported at once.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let endpoint = self.endpoint()?;
        let mut delay = FIRST_BACKOFF;
        let mut tries = 1;
        loop {
            match endpoint.connect().await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    if let Some(tls) = tls_failure(&self.url, &e) {
                        return Err(tls);
                    }
                    let detail = root_cause(&e);
                    if tries < READ_ATTEMPTS && detail.contains("Connection refused") {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        tries += 1;
                        continue;
                    }
                    return Err(Error::Unreachable {
                        server: self.url.clone(),
                        detail,
                    });
                }
            }
        }
    }

    /// Like [`ServerConfig::channel`], but connects on the first call (and reconnects after a
    /// drop), so a server that is down surfaces as `UNAVAILABLE` on that call instead of here.
    fn lazy_channel(&self) -> Result<Channel> {
        Ok(self.endpoint()?.connect_lazy())
    }

    /// Why calls to a TLS server fail, found with a fresh connection and a cheap unauthenticated
    /// call: when a handshake is refused after the client considered it done (TLS 1.3 client
    /// certificates), the call that was under way may only see a cancelled stream.
    pub(crate) async fn diagnose_tls(&self) -> Option<Error> {
        if !self.is_tls() {
            return None;
        }
        let channel = match self.endpoint().ok()?.connect().await {
            Ok(c) => c,
            Err(e) => return tls_failure(&self.url, &e),
        };
        let probe = grpc(channel)
            .lookup_invite(pb::LookupInviteRequest {
                token: String::new(),
            })
            .await;
        probe.err().and_then(|s| tls_failure(&self.url, &s))
    }

    /// The error for a failed call whose status carries a transport failure: a TLS problem
    /// when the chain of causes names one, else `None`.
    pub(crate) fn transport_failure(&self, status: &Status) -> Option<Error> {
        if let Some(e) = tls_failure(&self.url, status) {
            return Some(e);
        }
        // A connection that broke under the call carries no gRPC code of its own (tonic says
        // UNKNOWN "transport error"): it is the network, not the server's answer.
        let cut = status.message() == "transport error"
            || status.message().starts_with("h2 protocol error");
        (std::error::Error::source(status).is_some() && cut).then(|| Error::Unreachable {
            server: self.url.clone(),
            detail: root_cause(status),
        })
    }
}

/// Every message in an error's chain of causes, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e;
    while let Some(next) = cur.source() {
        out.push_str(": ");
        out.push_str(&next.to_string());
        cur = next;
    }
    out
}

/// Classifies a transport error by the words rustls uses for each failure: the server's
/// certificate as the client judged it, or an alert the server sent about the client's.
pub(crate) fn classify_tls(chain: &str) -> Option<TlsProblem> {
    let has = |needle: &str| chain.contains(needle);
    Some(if has("UnknownIssuer") || has("unknown issuer") {
        TlsProblem::UnknownIssuer
    } else if has("NotValidForName") || has("not valid for name") {
        TlsProblem::NameMismatch
    } else if has("invalid peer certificate: Expired")
        || has("certificate expired")
        || has("NotValidYet")
    {
        TlsProblem::Expired
    } else if has("CertificateRequired") {
        TlsProblem::ClientCertificateRequired
    } else if has("received fatal alert: UnknownCA")
        || has("received fatal alert: BadCertificate")
        || has("received fatal alert: DecryptError")
        || has("received fatal alert: CertificateExpired")
        || has("received fatal alert: UnsupportedCertificate")
    {
        TlsProblem::ClientCertificateRefused
    } else if has("InvalidContentType") || has("CorruptMessage") || has("invalid content type") {
        TlsProblem::NotTls
    } else {
        return None;
    })
}

fn tls_failure(server: &str, e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let chain = error_chain(e);
    let problem = classify_tls(&chain)?;
    Some(Error::Tls {
        server: server.to_owned(),
        problem,
        detail: root_cause(e),
    })
}

/// The innermost error message: transport errors nest the useful part ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Attempts of an idempotent read whose connection failed, e.g. across a server restart.
const READ_ATTEMPTS: u32 = 6;
/// Wait before the second attempt; doubled before each further one (0.1 + 0.2 + 0.4 + 0.8 +
/// 1.6 s in all).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a failed call never got an answer from the zopp service: the connection was refused,
/// reset or closed (a server restarting, a replica draining), so trying again is safe for a
/// read.
pub(crate) fn is_connection_failure(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        Code::Unknown => {
            std::error::Error::source(s).is_some() && classify_tls(&error_chain(s)).is_none()
        }
        _ => false,
    }
}

/// Runs an idempotent read, trying again with a short backoff while the connection fails.
/// `attempt` builds a freshly signed request each time: a signature is never sent twice.
pub(crate) async fn retry_read<R, Fut>(mut attempt: impl FnMut() -> Fut) -> Result<R, Status>
where
    Fut: std::future::Future<Output = Result<R, Status>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(s) if tries < READ_ATTEMPTS && is_connection_failure(&s) => {
                tracing::debug!(code = ?s.code(), message = s.message(), "read failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            other => return other,
        }
    }
}

pub(crate) fn grpc(channel: Channel) -> ZoppClient<Channel> {
    ZoppClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Wraps `msg` in a request signed per FORMAT.md §4 by `principal`'s `key`: the signature covers
/// the server id, the method, a fresh timestamp and nonce, and the SHA-256 of the message's
/// prost encoding.
pub(crate) fn signed_request<T: Message>(
    key: &SigningKey,
    server_id: &ServerId,
    principal: PrincipalId,
    method: &'static str,
    msg: T,
) -> Request<T> {
    let body = msg.encode_to_vec();
    let ts = now_ms();
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sig = sign_request(key, server_id, method, ts, &nonce, &body);
    let mut req = Request::new(msg);
    let md = req.metadata_mut();
    let ascii = |s: String| {
        MetadataValue::try_from(s).expect("ids, decimal numbers and hex are valid ASCII metadata")
    };
    md.insert(zopp_proto::MD_PRINCIPAL, ascii(principal.to_string()));
    md.insert(zopp_proto::MD_TIMESTAMP, ascii(ts.to_string()));
    md.insert(zopp_proto::MD_NONCE, ascii(hex::encode(nonce)));
    md.insert(zopp_proto::MD_SIGNATURE, ascii(hex::encode(sig)));
    count_rpc();
    req
}

/// What a request was about, so a NOT_FOUND can name the right object.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// Nothing nameable (server-level calls).
    Server,
    /// A workspace.
    Workspace(&'a str),
    /// A project.
    Project {
        workspace: &'a str,
        project: &'a str,
    },
    /// An environment.
    Environment(&'a EnvRef),
    /// A secret (optionally one version).
    Secret {
        env: &'a EnvRef,
        name: &'a str,
        version: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Workspace,
    Project,
    Environment,
    Secret,
}

/// Names what is missing from a NOT_FOUND. The server's message says which level it could not
/// find (the first of the level words it contains); the target supplies the names. When the
/// message names no level, or one below what the request reached, the target's own object is
/// the one missing.
pub(crate) fn missing(message: &str, target: Target<'_>) -> Missing {
    let lower = message.to_ascii_lowercase();
    let said = [
        ("secret", Level::Secret),
        ("version", Level::Secret),
        ("environment", Level::Environment),
        ("project", Level::Project),
        ("workspace", Level::Workspace),
    ]
    .into_iter()
    .filter_map(|(word, level)| lower.find(word).map(|at| (at, level)))
    .min_by_key(|(at, _)| *at)
    .map(|(_, level)| level);
    let (reached, ws, pr, env, secret) = match target {
        Target::Server => return Missing::Other(message.to_owned()),
        Target::Workspace(w) => (Level::Workspace, w, "", None, None),
        Target::Project { workspace, project } => (Level::Project, workspace, project, None, None),
        Target::Environment(e) => (
            Level::Environment,
            e.workspace(),
            e.project(),
            Some(e),
            None,
        ),
        Target::Secret { env, name, version } => (
            Level::Secret,
            env.workspace(),
            env.project(),
            Some(env),
            Some((name, version)),
        ),
    };
    let level = said.filter(|l| *l <= reached).unwrap_or(reached);
    match (level, env, secret) {
        (Level::Workspace, _, _) => Missing::Workspace { name: ws.into() },
        (Level::Project, _, _) => Missing::Project {
            workspace: ws.into(),
            name: pr.into(),
        },
        (Level::Environment, Some(e), _) => Missing::Environment {
            workspace: e.workspace().into(),
            project: e.project().into(),
            name: e.environment().into(),
        },
        (Level::Secret, _, Some((name, Some(version)))) if lower.contains("version") => {
            Missing::Version {
                name: name.into(),
                version,
            }
        }
        (Level::Secret, Some(e), Some((name, _))) => Missing::Secret {
            environment: e.environment().into(),
            name: name.into(),
        },
        _ => Missing::Other(message.to_owned()),
    }
}

/// The server id in a response: 16 bytes.
fn server_id_from(bytes: &[u8]) -> Result<ServerId> {
    <[u8; 16]>::try_from(bytes)
        .map(ServerId::from_bytes)
        .map_err(|_| Error::BadResponse("the server id is not 16 bytes".into()))
}

/// Asks the server for its id (`GetServerInfo`, unsigned).
async fn fetch_server_id(server: &ServerConfig, rpc: &mut ZoppClient<Channel>) -> Result<ServerId> {
    let info = rpc
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .map(Response::into_inner)
        .map_err(|s| match s.code() {
            Code::Unavailable => Error::Unreachable {
                server: server.url().to_owned(),
                detail: s.message().to_owned(),
            },
            code => Error::Refused {
                code,
                message: s.message().to_owned(),
            },
        })?;
    server_id_from(&info.server_id)
}

/// Makes sure `home` has a pinned server id: a home made before server ids asks the server
/// once (`GetServerInfo`) and pins the answer, trusting it on first use like the rest of the
/// state that home pinned then. An unreachable server leaves it unpinned (the next call that
/// reaches the server reports the outage).
///
/// # Errors
/// Reading or writing the pin; a malformed answer.
pub async fn ensure_server_id(server: &ServerConfig, home: &ZoppHome) -> Result<()> {
    if home.server_id()?.is_some() {
        return Ok(());
    }
    let mut rpc = match server.channel().await {
        Ok(c) => grpc(c),
        Err(Error::Unreachable { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    match fetch_server_id(server, &mut rpc).await {
        Ok(id) => home.pin_server_id(id),
        Err(Error::Unreachable { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A signed-in connection to one zopp server.
pub struct Client {
    rpc: ZoppClient<Channel>,
    server: ServerConfig,
    /// The deployment every request is signed for (FORMAT.md §4).
    server_id: ServerId,
    identity: Identity,
    cache: KeyCache,
    /// The zopp home of a device identity; `None` for a principal token, which writes nothing.
    home: Option<ZoppHome>,
    /// What a principal token was minted for (scope ids, key epochs): the pins of a client
    /// that keeps nothing on disk.
    token_floor: Option<crate::pins::ScopeFloor>,
    /// The workspace root a principal token was minted under.
    token_root: Option<(WorkspaceId, PrincipalId, VerifyingKey)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}, {:?})", self.server.url, self.identity)
    }
}

impl Client {
    /// Connects to `server` as `identity`.
    ///
    /// # Errors
    /// [`Error::Unreachable`] when the server cannot be reached; [`Error::BadServer`] for TLS
    /// setup problems.
    pub async fn connect(
        server: ServerConfig,
        identity: Identity,
        home: &ZoppHome,
    ) -> Result<Self> {
        let channel = server.channel().await?;
        let mut rpc = grpc(channel);
        let server_id = match home.server_id()? {
            Some(id) => id,
            None => {
                let id = fetch_server_id(&server, &mut rpc).await?;
                home.pin_server_id(id)?;
                id
            }
        };
        let cache = KeyCache::new(home.cache_dir(), server.url(), identity.principal());
        Ok(Self {
            rpc,
            server,
            server_id,
            identity,
            cache,
            home: Some(home.clone()),
            token_floor: None,
            token_root: None,
        })
    }

    /// Connects as the service principal of a principal token (`ZOPP_TOKEN`, FORMAT.md §10):
    /// fetches the server's share of its X25519 secret and recombines it with the token's. Reads
    /// and writes no file: no identity, no cache, no trust store on disk.
    ///
    /// # Errors
    /// [`Error::BadToken`] for a malformed token (before any network call);
    /// [`Error::TokenRefused`] when the server refuses it (revoked, expired, unknown);
    /// [`Error::Unreachable`] when the server cannot be reached.
    pub async fn connect_token(server: ServerConfig, token: &str) -> Result<Self> {
        let token = PrincipalToken::try_parse(token).map_err(|e| match e {
            zopp_crypto::CryptoError::UnsupportedFormat
                if zopp_crypto::token::token_version(token)
                    == Some(zopp_crypto::token::TOKEN_V1) =>
            {
                Error::OutdatedToken
            }
            zopp_crypto::CryptoError::UnsupportedFormat => {
                Error::BadToken("unknown token version".into())
            }
            _ => Error::BadToken("expected zopp_ followed by base64url characters".into()),
        })?;
        let channel = server.channel().await?;
        let rpc = grpc(channel);
        let share = retry_read(|| {
            // The one call signed before the server id is known: its answer names it.
            let req = signed_request(
                &token.signing,
                &UNBOUND_SERVER,
                token.principal,
                crate::teams::method::GET_KEY_SHARE,
                pb::GetKeyShareRequest {},
            );
            let mut rpc = rpc.clone();
            async move { rpc.get_key_share(req).await }
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| match s.code() {
            _ if server.transport_failure(&s).is_some() => {
                server.transport_failure(&s).expect("checked by the guard")
            }
            // A stream cut under the call on a TLS connection: see `join`.
            _ if server.is_tls() && s.message() == "operation was canceled" => Error::Tls {
                server: server.url().to_owned(),
                problem: TlsProblem::HandshakeClosed,
                detail: s.message().to_owned(),
            },
            Code::Unauthenticated | Code::NotFound => Error::TokenRefused(s.message().to_owned()),
            Code::Unavailable => Error::Unreachable {
                server: server.url().to_owned(),
                detail: s.message().to_owned(),
            },
            code => Error::Refused {
                code,
                message: s.message().to_owned(),
            },
        })?;
        let server_id = server_id_from(&share.server_id)?;
        let server_share: [u8; 32] = share
            .server_key_share
            .as_slice()
            .try_into()
            .map_err(|_| Error::BadResponse("the server key share is not 32 bytes".into()))?;
        let agreement = zopp_crypto::token::combine(
            &token.share,
            &zopp_crypto::token::KeyShare::from_bytes(server_share),
        );
        // A token with a changed character in its share still signs (the seed is intact) but
        // combines to a key that opens nothing: say so here, not as a grant problem later.
        if !share.agreement_key.is_empty()
            && !zopp_crypto::ct_eq(&share.agreement_key, &agreement.public_key().to_bytes())
        {
            return Err(Error::BadToken(
                "its key share does not match the principal's key: the token is damaged or \
                 mistyped (compare it with the one `zopp principal create-service` printed)"
                    .into(),
            ));
        }
        let identity = Identity::service(
            token.principal,
            PrincipalKeys {
                signing: token.signing.clone(),
                agreement,
            },
            server.url(),
        );
        let cache = KeyCache::disabled(server.url(), token.principal);
        let token_floor = Some(crate::pins::ScopeFloor::of_token(&token.binding));
        let token_root = VerifyingKey::try_from_slice(&token.binding.root_key)
            .ok()
            .map(|key| {
                (
                    WorkspaceId::from_bytes(token.binding.workspace.id),
                    token.binding.root,
                    key,
                )
            });
        Ok(Self {
            rpc,
            server,
            server_id,
            identity,
            cache,
            home: None,
            token_floor,
            token_root,
        })
    }

    /// A client that connects on its first call and reconnects after the server comes back:
    /// for long-running commands (`zopp run --watch`) and for ones that can do without the
    /// server (`zopp run --fallback`).
    ///
    /// # Errors
    /// [`Error::BadServer`] for TLS setup problems. An unreachable server is reported by the
    /// first call, as [`Error::Unreachable`].
    /// Signs for the server id pinned in `home` (see [`ensure_server_id`]); a home without one
    /// (the server was unreachable when it was asked) signs for none, which the server refuses.
    pub fn connect_lazy(server: ServerConfig, identity: Identity, home: &ZoppHome) -> Result<Self> {
        let channel = server.lazy_channel()?;
        let cache = KeyCache::new(home.cache_dir(), server.url(), identity.principal());
        Ok(Self {
            rpc: grpc(channel),
            server,
            server_id: home.server_id()?.unwrap_or(UNBOUND_SERVER),
            identity,
            cache,
            home: Some(home.clone()),
            token_floor: None,
            token_root: None,
        })
    }

    /// The identity this client signs as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// The server this client talks to.
    pub fn server(&self) -> &ServerConfig {
        &self.server
    }
    /// The server id this client signs its requests for.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }
    pub(crate) fn cache(&self) -> &KeyCache {
        &self.cache
    }
    /// The floor a principal token carries (`None` for a device identity).
    pub(crate) fn token_floor(&self) -> Option<&crate::pins::ScopeFloor> {
        self.token_floor.as_ref()
    }
    /// The workspace root a principal token carries (`None` for a device identity).
    pub(crate) fn token_root(&self) -> Option<(WorkspaceId, PrincipalId, VerifyingKey)> {
        self.token_root
    }
    /// The zopp home of a device identity (`None` in principal-token mode).
    pub fn home(&self) -> Option<&ZoppHome> {
        self.home.as_ref()
    }
    pub(crate) fn rpc(&self) -> ZoppClient<Channel> {
        self.rpc.clone()
    }

    /// Wraps `msg` in a request signed per FORMAT.md §4: the signature covers the method, a
    /// fresh timestamp and nonce, and the SHA-256 of the message's prost encoding.
    pub(crate) fn signed<T: Message>(&self, method: &'static str, msg: T) -> Request<T> {
        signed_request(
            &self.identity.keys().signing,
            &self.server_id,
            self.identity.principal(),
            method,
            msg,
        )
    }

    /// Maps a gRPC status to an SDK error, naming what `target` was about.
    pub(crate) fn status_error(&self, status: Status, target: Target<'_>) -> Error {
        if let Some(e) = self.server.transport_failure(&status) {
            return e;
        }
        match status.code() {
            Code::NotFound => Error::NotFound(missing(status.message(), target)),
            Code::Unavailable => Error::Unreachable {
                server: self.server.url.clone(),
                detail: status.message().to_owned(),
            },
            code => Error::Refused {
                code,
                message: status.message().to_owned(),
            },
        }
    }

    /// Who the server thinks this principal is.
    ///
    /// # Errors
    /// Transport and server errors.
    pub async fn whoami(&self) -> Result<pb::WhoAmIResponse> {
        retry_read(|| {
            let req = self.signed(method::WHO_AM_I, pb::WhoAmIRequest {});
            let mut rpc = self.rpc();
            async move { rpc.who_am_i(req).await }
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| self.status_error(s, Target::Server))
    }

    /// Creates a workspace: a fresh WK, wrapped to this principal, under a client-chosen id.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] for a taken name; transport and server errors.
    pub async fn create_workspace(&self, name: &str) -> Result<pb::Workspace> {
        check_name(NameKind::Workspace, name)?;
        let id = WorkspaceId::random(&mut OsRng);
        let wk = ScopeKey::generate(&mut OsRng);
        let ctx = KeyContext {
            kind: ScopeKind::Workspace,
            id: *id.as_bytes(),
            epoch: 1,
        };
        let keys = self.identity.keys();
        let wrapped = wrap_to_recipient(
            &wk,
            &ctx,
            &self.identity.principal(),
            &keys.agreement.public_key(),
            &mut OsRng,
        )
        .map_err(|e| Error::KeyChain {
            scope: format!("workspace '{name}'"),
            reason: e.to_string(),
        })?;
        // The creator vouches for the key it made and for its own grant (FORMAT.md §13).
        let maker = StatementMaker::new(id, self.identity.principal(), &keys.signing);
        let statements = vec![
            maker.scope_key(&ctx, 1, &wk),
            maker.grant(
                &ctx,
                1,
                StatementRole::Admin,
                self.identity.principal(),
                wrapped.as_bytes(),
            ),
        ];
        let req = self.signed(
            method::CREATE_WORKSPACE,
            pb::CreateWorkspaceRequest {
                id: id.to_string(),
                name: name.to_owned(),
                wrapped_key: wrapped.into_bytes(),
                statements,
            },
        );
        let created = self
            .rpc()
            .create_workspace(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| {
                self.created_error(s, format!("workspace '{name}'"), Target::Workspace(name))
            })?;
        self.pin_created(crate::pins::Sighting {
            level: crate::pins::Level::Workspace,
            parent: String::new(),
            name: name.to_owned(),
            id: id.to_string(),
            epoch: Some(1),
        });
        Ok(created)
    }

    fn created_error(&self, status: Status, what: String, target: Target<'_>) -> Error {
        if status.code() == Code::AlreadyExists {
            return Error::AlreadyExists { what };
        }
        self.status_error(status, target)
    }

    /// Workspaces this principal can see.
    ///
    /// # Errors
    /// Transport and server errors.
    pub async fn list_workspaces(&self) -> Result<Vec<pb::Workspace>> {
        retry_read(|| {
            let req = self.signed(method::LIST_WORKSPACES, pb::ListWorkspacesRequest {});
            let mut rpc = self.rpc();
            async move { rpc.list_workspaces(req).await }
        })
        .await
        .map(|r| r.into_inner().workspaces)
        .map_err(|s| self.status_error(s, Target::Server))
    }

    /// Deletes a workspace and everything in it.
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn delete_workspace(&self, name: &str) -> Result<()> {
        check_name(NameKind::Workspace, name)?;
        let req = self.signed(
            method::DELETE_WORKSPACE,
            pb::DeleteWorkspaceRequest {
                workspace: name.to_owned(),
            },
        );
        self.rpc()
            .delete_workspace(req)
            .await
            .map_err(|s| self.status_error(s, Target::Workspace(name)))?;
        self.cache.clear();
        self.forget_scope(crate::pins::Level::Workspace, None, name);
        Ok(())
    }

    /// Derives the key of a workspace (no project) or a project with one `GetScopeKeys`.
    pub(crate) async fn scope_chain(
        &self,
        workspace: &str,
        project: Option<&str>,
    ) -> Result<ScopeChain> {
        let req = self.signed(
            method::GET_SCOPE_KEYS,
            pb::GetScopeKeysRequest {
                workspace: workspace.to_owned(),
                project: project.unwrap_or_default().to_owned(),
            },
        );
        let target = match project {
            None => Target::Workspace(workspace),
            Some(project) => Target::Project { workspace, project },
        };
        let keys = self
            .rpc()
            .get_scope_keys(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.status_error(s, target))?;
        self.check_scopes(&crate::pins::scope_sightings(workspace, project, &keys))?;
        let scope = match project {
            None => format!("workspace '{workspace}'"),
            Some(p) => format!("project '{p}'"),
        };
        let chain = ScopeChain::derive(
            &keys,
            self.identity.principal(),
            &self.identity.keys().agreement,
        )
        .map_err(|e| Error::KeyChain {
            scope: scope.clone(),
            reason: e.to_string(),
        })?;
        self.authenticate_chain(
            chain.trail(),
            chain.workspace(),
            ChainStatements::of_scope(&keys),
            &scope,
        )?;
        Ok(chain)
    }

    /// Creates a project: a fresh PK wrapped under the workspace's key.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::NotFound`]; transport and server errors.
    pub async fn create_project(&self, workspace: &str, name: &str) -> Result<pb::Project> {
        check_name(NameKind::Workspace, workspace)?;
        check_name(NameKind::Project, name)?;
        let parent = self.scope_chain(workspace, None).await?;
        let id = ProjectId::random(&mut OsRng);
        let pk = ScopeKey::generate(&mut OsRng);
        let ctx = KeyContext {
            kind: ScopeKind::Project,
            id: *id.as_bytes(),
            epoch: 1,
        };
        let wrapped = wrap_under(&pk, &ctx, parent.key(), &parent.context(), &mut OsRng);
        let statements = self.creation_statements(&parent, &ctx, &pk, wrapped.as_bytes());
        let req = self.signed(
            method::CREATE_PROJECT,
            pb::CreateProjectRequest {
                workspace: workspace.to_owned(),
                id: id.to_string(),
                name: name.to_owned(),
                wrapped_key: wrapped.into_bytes(),
                statements,
            },
        );
        let created = self
            .rpc()
            .create_project(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| {
                self.created_error(
                    s,
                    format!("project '{name}' in workspace '{workspace}'"),
                    Target::Workspace(workspace),
                )
            })?;
        self.pin_created(crate::pins::Sighting {
            level: crate::pins::Level::Project,
            parent: parent.workspace().to_string(),
            name: name.to_owned(),
            id: id.to_string(),
            epoch: Some(1),
        });
        Ok(created)
    }

    /// The statements of a new scope key `key` (context `ctx`, generation 1) wrapped under
    /// `parent`'s key as `wrapped` (FORMAT.md §13.3, §13.5).
    fn creation_statements(
        &self,
        parent: &ScopeChain,
        ctx: &KeyContext,
        key: &ScopeKey,
        wrapped: &[u8],
    ) -> Vec<pb::KeyStatement> {
        let maker = StatementMaker::new(
            parent.workspace(),
            self.identity.principal(),
            &self.identity.keys().signing,
        );
        vec![
            maker.scope_key(ctx, 1, key),
            maker.child((ctx, 1), (&parent.context(), parent.generation()), wrapped),
        ]
    }

    /// Projects of a workspace.
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn list_projects(&self, workspace: &str) -> Result<Vec<pb::Project>> {
        check_name(NameKind::Workspace, workspace)?;
        let req = self.signed(
            method::LIST_PROJECTS,
            pb::ListProjectsRequest {
                workspace: workspace.to_owned(),
            },
        );
        self.rpc()
            .list_projects(req)
            .await
            .map(|r| r.into_inner().projects)
            .map_err(|s| self.status_error(s, Target::Workspace(workspace)))
    }

    /// Deletes a project and everything in it.
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn delete_project(&self, workspace: &str, name: &str) -> Result<()> {
        check_name(NameKind::Workspace, workspace)?;
        check_name(NameKind::Project, name)?;
        let req = self.signed(
            method::DELETE_PROJECT,
            pb::DeleteProjectRequest {
                workspace: workspace.to_owned(),
                project: name.to_owned(),
            },
        );
        self.rpc().delete_project(req).await.map_err(|s| {
            self.status_error(
                s,
                Target::Project {
                    workspace,
                    project: name,
                },
            )
        })?;
        self.cache.clear();
        let ws = self.pinned_id(crate::pins::Level::Workspace, "", workspace);
        self.forget_scope(crate::pins::Level::Project, ws.as_deref(), name);
        Ok(())
    }

    /// Creates an environment: a fresh EK (epoch 1) wrapped under the project's key.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::NotFound`]; transport and server errors.
    pub async fn create_environment(
        &self,
        workspace: &str,
        project: &str,
        name: &str,
    ) -> Result<pb::Environment> {
        let env = EnvRef::try_new(workspace, project, name)?;
        let parent = self.scope_chain(workspace, Some(project)).await?;
        let id = EnvironmentId::random(&mut OsRng);
        let ek = ScopeKey::generate(&mut OsRng);
        let ctx = KeyContext {
            kind: ScopeKind::Environment,
            id: *id.as_bytes(),
            epoch: 1,
        };
        let wrapped = wrap_under(&ek, &ctx, parent.key(), &parent.context(), &mut OsRng);
        let statements = self.creation_statements(&parent, &ctx, &ek, wrapped.as_bytes());
        let req = self.signed(
            method::CREATE_ENVIRONMENT,
            pb::CreateEnvironmentRequest {
                workspace: workspace.to_owned(),
                project: project.to_owned(),
                id: id.to_string(),
                name: name.to_owned(),
                wrapped_key: wrapped.into_bytes(),
                statements,
            },
        );
        let created = self
            .rpc()
            .create_environment(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| {
                self.created_error(
                    s,
                    format!("environment '{name}' in project '{project}'"),
                    Target::Project { workspace, project },
                )
            })?;
        // A same-named environment may have existed before: its cached chain is stale now.
        self.cache.remove(&env);
        if let Some(project_id) = parent.project() {
            self.pin_created(crate::pins::Sighting {
                level: crate::pins::Level::Environment,
                parent: project_id.to_string(),
                name: name.to_owned(),
                id: id.to_string(),
                epoch: Some(1),
            });
        }
        Ok(created)
    }

    /// Environments of a project.
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn list_environments(
        &self,
        workspace: &str,
        project: &str,
    ) -> Result<Vec<pb::Environment>> {
        check_name(NameKind::Workspace, workspace)?;
        check_name(NameKind::Project, project)?;
        let req = self.signed(
            method::LIST_ENVIRONMENTS,
            pb::ListEnvironmentsRequest {
                workspace: workspace.to_owned(),
                project: project.to_owned(),
            },
        );
        self.rpc()
            .list_environments(req)
            .await
            .map(|r| r.into_inner().environments)
            .map_err(|s| self.status_error(s, Target::Project { workspace, project }))
    }

    /// Deletes an environment and its secrets.
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn delete_environment(&self, env: &EnvRef) -> Result<()> {
        let req = self.signed(
            method::DELETE_ENVIRONMENT,
            pb::DeleteEnvironmentRequest {
                env: Some(env.to_proto()),
            },
        );
        self.rpc()
            .delete_environment(req)
            .await
            .map_err(|s| self.status_error(s, Target::Environment(env)))?;
        self.cache.remove(env);
        let ws = self.pinned_id(crate::pins::Level::Workspace, "", env.workspace());
        let project =
            ws.and_then(|w| self.pinned_id(crate::pins::Level::Project, &w, env.project()));
        self.forget_scope(
            crate::pins::Level::Environment,
            project.as_deref(),
            env.environment(),
        );
        Ok(())
    }

    /// Sets (`Some(n)`: keep the newest n versions of each secret) or clears (`None`: keep
    /// every version) an environment's retention limit. Returns the environment as it is now
    /// and how many versions the new limit pruned at once.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit of 0; [`Error::NotFound`]; permission (admin of
    /// the environment), transport and server errors.
    pub async fn set_retention(
        &self,
        env: &EnvRef,
        keep_versions: Option<u64>,
    ) -> Result<(pb::Environment, u64)> {
        if keep_versions == Some(0) {
            return Err(Error::InvalidInput(
                "a retention limit keeps at least 1 version; use --keep-all to keep every version"
                    .into(),
            ));
        }
        let req = self.signed(
            method::SET_RETENTION,
            pb::SetRetentionRequest {
                env: Some(env.to_proto()),
                keep_versions: keep_versions.unwrap_or(0),
            },
        );
        let resp = self
            .rpc()
            .set_retention(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.status_error(s, Target::Environment(env)))?;
        let e = resp
            .environment
            .ok_or_else(|| Error::BadResponse("the response carries no environment".into()))?;
        Ok((e, resp.pruned))
    }

    /// The environment's wrapped key chain, fresh from the server (`GetEnvironment`); also
    /// refreshes the cache.
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn environment_keys(&self, env: &EnvRef) -> Result<pb::EnvironmentKeys> {
        let attempt = || {
            let req = self.signed(
                method::GET_ENVIRONMENT,
                pb::GetEnvironmentRequest {
                    env: Some(env.to_proto()),
                },
            );
            let mut rpc = self.rpc();
            async move { rpc.get_environment(req).await }
        };
        match retry_read(attempt).await {
            Ok(r) => {
                let keys = r.into_inner();
                self.cache.store(env, &keys);
                Ok(keys)
            }
            Err(s) => {
                if s.code() == Code::NotFound {
                    self.cache.remove(env);
                }
                Err(self.status_error(s, Target::Environment(env)))
            }
        }
    }

    /// Derives an environment's keys from a chain the server returned, and checks the chain's
    /// key statements (FORMAT.md §13.6) unless it was verified before.
    pub(crate) fn derive(
        &self,
        env: &EnvRef,
        keys: &pb::EnvironmentKeys,
    ) -> Result<EnvironmentChain> {
        // Before any key is opened: a swapped scope or a hidden rotation is refused outright.
        self.check_scopes(&crate::pins::environment_sightings(env, keys))?;
        let chain = self.derive_unchecked(env, keys)?;
        self.authenticate_chain(
            chain.trail(),
            chain.workspace(),
            ChainStatements::of_environment(keys),
            &format!("environment '{}'", env.environment()),
        )?;
        Ok(chain)
    }

    fn derive_unchecked(
        &self,
        env: &EnvRef,
        keys: &pb::EnvironmentKeys,
    ) -> Result<EnvironmentChain> {
        EnvironmentChain::derive(
            keys,
            self.identity.principal(),
            &self.identity.keys().agreement,
        )
        .map_err(|e| Error::KeyChain {
            scope: format!("environment '{}'", env.environment()),
            reason: e.to_string(),
        })
    }

    /// Whether the chain in `keys` opens to keys already verified against their statements.
    pub(crate) fn chain_was_verified(
        &self,
        env: &EnvRef,
        keys: &pb::EnvironmentKeys,
    ) -> Result<bool> {
        let chain = self.derive_unchecked(env, keys)?;
        Ok(self.chain_cache().contains(&chain.trail().digest()))
    }
}

/// What `join` needs besides the server and the home.
pub struct JoinParams<'a> {
    /// The invite token, as printed by `zopp-server invite create`.
    pub token: &'a str,
    /// The user's email.
    pub email: &'a str,
    /// Name of this device's principal.
    pub device_name: &'a str,
    /// Passphrase protecting the key file (none = stored plain, 0600).
    pub passphrase: Option<Zeroizing<String>>,
    /// Argon2id cost when a passphrase is set.
    pub kdf: KdfParams,
}

impl std::fmt::Debug for JoinParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinParams")
            .field("email", &self.email)
            .field("device_name", &self.device_name)
            .finish_non_exhaustive()
    }
}

fn check_join_input(p: &JoinParams<'_>) -> Result<()> {
    let token = p.token.trim();
    if token.is_empty() || token.len() > 4096 || token.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidInput("the invite token is malformed".into()));
    }
    check_join_fields(p.email, p.device_name)
}

/// Checks the email and device name of a new principal (before any network call).
pub(crate) fn check_join_fields(email: &str, device_name: &str) -> Result<()> {
    if email.is_empty()
        || email.len() > 256
        || !email.contains('@')
        || email.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::InvalidInput(format!(
            "'{}' is not an email address",
            email.escape_debug()
        )));
    }
    let name = device_name;
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "the device name must be 1-256 bytes without control characters".into(),
        ));
    }
    Ok(())
}

/// Redeems an invite: generates this device's keys locally, registers their public halves with
/// a self-signature binding the email and the token (FORMAT.md §6), and saves the identity in
/// `home`. Never overwrites an existing identity.
///
/// # Errors
/// [`Error::IdentityExists`] before any network call when `home` holds an identity;
/// [`Error::JoinRefused`] when the server refuses the invite; transport and I/O errors.
pub async fn join(
    server: &ServerConfig,
    home: &ZoppHome,
    params: JoinParams<'_>,
) -> Result<LocalConfig> {
    check_join_input(&params)?;
    if home.has_identity() {
        return Err(Error::IdentityExists {
            home: home.dir().to_owned(),
        });
    }
    let token = params
        .token
        .trim_matches(zopp_crypto::token::is_format_whitespace);
    let keys = PrincipalKeys::generate(&mut OsRng);
    let signing_pub = keys.signing.verifying_key();
    let agreement_pub = keys.agreement.public_key();
    let self_signature = keys.signing.sign(&join_message(
        &signing_pub,
        &agreement_pub,
        params.email,
        &zopp_crypto::sha256(token.as_bytes()),
    ));
    home.ensure_dir()?;
    // Written before the call so the key cannot be lost once the server has registered it, and
    // with create-new so two concurrent joins cannot both succeed.
    home.write_key_file(
        &keys,
        params.passphrase.as_ref().map(|p| p.as_bytes()),
        params.kdf,
    )?;
    let joined = async {
        let mut rpc = grpc(server.channel().await?);
        count_rpc();
        rpc.join(pb::JoinRequest {
            token: token.to_owned(),
            email: params.email.to_owned(),
            principal_name: params.device_name.to_owned(),
            signing_key: signing_pub.to_bytes().to_vec(),
            agreement_key: agreement_pub.to_bytes().to_vec(),
            self_signature: self_signature.to_vec(),
            admission_signature: Vec::new(),
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| match s.code() {
            _ if server.transport_failure(&s).is_some() => {
                server.transport_failure(&s).expect("checked by the guard")
            }
            Code::Unavailable => Error::Unreachable {
                server: server.url().to_owned(),
                detail: s.message().to_owned(),
            },
            code => Error::JoinRefused {
                code,
                message: s.message().to_owned(),
            },
        })
    }
    .await;
    let joined = match joined {
        Ok(j) => j,
        Err(e) => {
            home.remove_key_file();
            // A stream cut under the call (no gRPC answer at all), not a refusal of the invite.
            let cut = match &e {
                Error::JoinRefused { message, .. } => {
                    message == "operation was canceled" || message == "transport error"
                }
                Error::Unreachable { detail, .. } => {
                    detail.contains("broken pipe") || detail.contains("reset")
                }
                _ => false,
            };
            if cut {
                if let Some(tls) = server.diagnose_tls().await {
                    return Err(tls);
                }
                if server.is_tls() {
                    return Err(Error::Tls {
                        server: server.url().to_owned(),
                        problem: TlsProblem::HandshakeClosed,
                        detail: e.to_string(),
                    });
                }
            }
            return Err(e);
        }
    };
    let config = LocalConfig {
        server: server.url().to_owned(),
        principal_id: joined.principal_id,
        user_id: joined.user_id,
        email: params.email.to_owned(),
        principal_name: params.device_name.to_owned(),
    };
    // Refuse ids we could not use later, before recording them.
    Identity::new(config.clone(), keys).map_err(|_| {
        Error::BadResponse("the server returned invalid principal or user ids".into())
    })?;
    home.write_config(&config)?;
    // A server too old to name its id leaves the pin to the first connection.
    if let Ok(id) = server_id_from(&joined.server_id) {
        home.pin_server_id(id)?;
    }
    Ok(config)
}

/// Checks that a principal id from the server parses (used for writer ids).
pub(crate) fn parse_principal(id: &str) -> Option<PrincipalId> {
    PrincipalId::try_parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn env() -> EnvRef {
        EnvRef::try_new("acme", "api", "dev").expect("valid")
    }

    #[rstest]
    #[case::workspace("workspace 'acme' not found", "workspace 'acme' not found")]
    #[case::project_in_ws(
        "project 'nope' not found in workspace 'acme'",
        "project 'api' not found in workspace 'acme'"
    )]
    #[case::environment(
        "environment not found",
        "environment 'dev' not found in project 'api'"
    )]
    #[case::secret("secret not found", "secret 'X' not found in environment 'dev'")]
    #[case::generic("not found", "secret 'X' not found in environment 'dev'")]
    #[case::no_message("", "secret 'X' not found in environment 'dev'")]
    #[case::capitalised("Workspace does not exist", "workspace 'acme' not found")]
    fn not_found_names_the_missing_level(#[case] message: &str, #[case] want: &str) {
        let e = env();
        let m = missing(
            message,
            Target::Secret {
                env: &e,
                name: "X",
                version: None,
            },
        );
        assert_eq!(m.to_string(), want);
    }

    #[test]
    fn not_found_never_claims_a_level_below_the_request() {
        // Listing projects of a workspace: a message about a "secret" cannot apply.
        let m = missing("secret not found", Target::Workspace("acme"));
        assert_eq!(
            m,
            Missing::Workspace {
                name: "acme".into()
            }
        );
        let e = env();
        let m = missing(
            "version 9 not found",
            Target::Secret {
                env: &e,
                name: "X",
                version: Some(9),
            },
        );
        assert_eq!(
            m,
            Missing::Version {
                name: "X".into(),
                version: 9
            }
        );
        let m = missing("no such thing", Target::Server);
        assert_eq!(m, Missing::Other("no such thing".into()));
    }

    #[rstest]
    #[case::bare("127.0.0.1:50051", "http://127.0.0.1:50051")]
    #[case::http("http://zopp.internal:1234/", "http://zopp.internal:1234")]
    #[case::https("https://zopp.example.com", "https://zopp.example.com")]
    fn server_addresses_normalise(#[case] given: &str, #[case] url: &str) {
        assert_eq!(
            ServerConfig::try_new(given, None).expect("valid").url(),
            url
        );
    }

    #[rstest]
    #[case::empty("")]
    #[case::scheme("ftp://host")]
    #[case::garbage("http://[::1")]
    fn bad_server_addresses_are_refused(#[case] given: &str) {
        assert!(matches!(
            ServerConfig::try_new(given, None),
            Err(Error::BadServer { .. })
        ));
    }

    #[test]
    fn tls_ca_needs_https() {
        assert!(ServerConfig::try_new("http://h:1", Some("ca.pem".into())).is_err());
        assert!(ServerConfig::try_new("https://h:1", Some("ca.pem".into())).is_ok());
    }

    #[rstest]
    #[case::unknown_issuer(
        "invalid peer certificate: UnknownIssuer",
        Some(TlsProblem::UnknownIssuer)
    )]
    #[case::name("invalid peer certificate: certificate not valid for name \"x\"; certificate is only valid for DnsName(\"localhost\")", Some(TlsProblem::NameMismatch))]
    #[case::name_old(
        "invalid peer certificate: NotValidForName",
        Some(TlsProblem::NameMismatch)
    )]
    #[case::expired("invalid peer certificate: Expired", Some(TlsProblem::Expired))]
    #[case::required(
        "received fatal alert: CertificateRequired",
        Some(TlsProblem::ClientCertificateRequired)
    )]
    #[case::refused(
        "received fatal alert: UnknownCA",
        Some(TlsProblem::ClientCertificateRefused)
    )]
    #[case::refused_bad(
        "received fatal alert: BadCertificate",
        Some(TlsProblem::ClientCertificateRefused)
    )]
    #[case::plain(
        "received corrupt message of type InvalidContentType",
        Some(TlsProblem::NotTls)
    )]
    #[case::refused_tcp("tcp connect error: Connection refused (os error 111)", None)]
    fn tls_failures_are_told_apart(#[case] chain: &str, #[case] want: Option<TlsProblem>) {
        assert_eq!(classify_tls(chain), want);
    }

    #[test]
    fn client_certificates_need_https() {
        let id = || ClientIdentity {
            cert: "c.pem".into(),
            key: "c.key".into(),
        };
        let plain = ServerConfig::try_new("http://127.0.0.1:1", None).expect("url");
        assert!(matches!(
            plain.with_client_identity(id()),
            Err(Error::BadServer { .. })
        ));
        let tls = ServerConfig::try_new("https://h:1", None).expect("url");
        assert_eq!(
            tls.with_client_identity(id())
                .expect("https")
                .client_identity(),
            Some(&id())
        );
    }

    #[test]
    fn join_input_is_checked() {
        let params = |token, email| JoinParams {
            token,
            email,
            device_name: "laptop",
            passphrase: None,
            kdf: KdfParams::DEFAULT,
        };
        assert!(check_join_input(&params("zinv_abc", "a@example.com")).is_ok());
        for email in ["", "no-at-sign", "a b@example.com", "a@\u{7}"] {
            assert!(
                check_join_input(&params("zinv_abc", email)).is_err(),
                "{email:?}"
            );
        }
        assert!(check_join_input(&params(" ", "a@example.com")).is_err());
    }
}
