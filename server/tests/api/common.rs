//! Test harness: an in-process server on 127.0.0.1:0 over a temporary SQLite database, and
//! clients that sign their requests like a real zopp client (FORMAT.md §4) and hold real keys, so
//! tests can wrap, seal, unwrap and open exactly as the CLI does.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ::zopp_server::service::methods;
use ::zopp_server::storage::sqlite::SqliteStorage;
use ::zopp_server::storage::Storage;
use ::zopp_server::ServeOptions;
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Status};
use zopp_crypto::envelope::{
    EnvelopeContext, NameDigest, NameKey, SealKey, SecretKind, SecretPayload,
};
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId, ServerId, WorkspaceId};
use zopp_crypto::keys::{PrincipalKeys, ScopeKey, ScopeKind as CryptoScope};
use zopp_crypto::sign::{join_message, VersionClaims, ZERO_HASH};
use zopp_crypto::wrap::{
    unwrap_from_recipient, unwrap_under, wrap_to_recipient, wrap_under, KeyContext,
};
use zopp_proto::v1::zopp_client::ZoppClient;
use zopp_proto::v1::*;
use zopp_proto::{MD_NONCE, MD_PRINCIPAL, MD_SIGNATURE, MD_TIMESTAMP};

/// The server id every test server runs with (set before it starts), so requests can be signed
/// without asking.
pub const TEST_SERVER_ID: ServerId = ServerId::from_bytes([0x7e; 16]);

/// A running in-process server.
pub struct Server {
    /// `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
    /// The concrete SQLite backend (tests poke at it directly).
    pub sqlite: Arc<SqliteStorage>,
    /// The same backend as the server sees it.
    pub storage: Arc<dyn Storage>,
    /// Path of the database file.
    pub db_path: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts with default options.
    pub async fn start() -> Self {
        Self::start_with(ServeOptions {
            rate_limit: ::zopp_server::ratelimit::RateLimit::unlimited(),
            ..ServeOptions::default()
        })
        .await
    }

    /// Starts with `opts`.
    pub async fn start_with(opts: ServeOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("server.db");
        let sqlite = Arc::new(
            SqliteStorage::open(&format!("sqlite://{}", db_path.display()))
                .await
                .expect("open sqlite"),
        );
        let storage: Arc<dyn Storage> = sqlite.clone();
        storage
            .reset_server_id(TEST_SERVER_ID)
            .await
            .expect("set the server id");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let storage = storage.clone();
            async move {
                ::zopp_server::serve(listener, storage, opts, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            }
        });
        Self {
            addr,
            sqlite,
            storage,
            db_path,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A second server process over the same database with default options (a new, empty
    /// replay cache), as after a restart. It stops when dropped.
    pub async fn restart_on_same_database(&self) -> Restarted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let storage = self.storage.clone();
        tokio::spawn(async move {
            ::zopp_server::serve(listener, storage, ServeOptions::default(), async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Restarted { addr, _stop: stop }
    }

    /// A client channel to the server.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    /// An unauthenticated client.
    pub async fn client(&self) -> ZoppClient<Channel> {
        ZoppClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Creates an invite directly in the database (like `zopp-server invite create`).
    pub async fn invite(&self) -> String {
        self.invite_at(::zopp_server::now_ms(), 1).await
    }

    /// Creates an invite as if made at `now_ms`, valid `hours`.
    pub async fn invite_at(&self, now_ms: i64, hours: u32) -> String {
        let c = ::zopp_server::invite::create_server_invite(
            self.storage.as_ref(),
            hours,
            now_ms,
            &mut OsRng,
        )
        .await
        .expect("create invite");
        c.token.as_str().to_string()
    }

    /// Joins a new user.
    pub async fn join(&self, email: &str) -> User {
        let token = self.invite().await;
        let keys = PrincipalKeys::generate(&mut OsRng);
        let req = join_request(&keys, &token, email);
        let resp = self
            .client()
            .await
            .join(req)
            .await
            .expect("join")
            .into_inner();
        User {
            keys,
            id: PrincipalId::try_parse(&resp.principal_id).expect("principal id"),
            user_id: resp.user_id,
            email: email.to_string(),
            client: self.client().await,
        }
    }

    /// Stops the server and waits for the drain.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server drained in time")
                .expect("server task");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A server started by [`Server::restart_on_same_database`].
pub struct Restarted {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Restarted {
    /// An unauthenticated client.
    pub async fn client(&self) -> ZoppClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        ZoppClient::new(channel)
    }
}

/// A well-formed join request for `keys`.
pub fn join_request(keys: &PrincipalKeys, token: &str, email: &str) -> JoinRequest {
    let sk = keys.signing.verifying_key();
    let ak = keys.agreement.public_key();
    let proof = join_message(&sk, &ak, email, &zopp_crypto::sha256(token.as_bytes()));
    JoinRequest {
        token: token.to_string(),
        email: email.to_string(),
        principal_name: "laptop".to_string(),
        signing_key: sk.to_bytes().to_vec(),
        agreement_key: ak.to_bytes().to_vec(),
        self_signature: keys.signing.sign(&proof).to_vec(),
        admission_signature: Vec::new(),
    }
}

/// Signing overrides for negative tests.
#[derive(Clone, Debug, Default)]
pub struct SignAs {
    /// Server id to sign for (default: [`TEST_SERVER_ID`], every test server's).
    pub server: Option<ServerId>,
    /// Timestamp to sign (default: now).
    pub timestamp_ms: Option<i64>,
    /// Nonce (default: random).
    pub nonce: Option<[u8; 16]>,
    /// Principal id to claim (default: the signer's).
    pub principal: Option<PrincipalId>,
}

/// A joined user with its keys and a client.
pub struct User {
    /// Private keys.
    pub keys: PrincipalKeys,
    /// Principal id.
    pub id: PrincipalId,
    /// User id (text).
    pub user_id: String,
    /// Email.
    pub email: String,
    /// Client (cheap to clone).
    pub client: ZoppClient<Channel>,
}

/// Signs `msg` for `method` with `keys`, claiming `principal`.
pub fn sign_with<T: prost::Message>(
    keys: &PrincipalKeys,
    principal: PrincipalId,
    method: &str,
    msg: T,
    opts: &SignAs,
) -> Request<T> {
    let ts = opts.timestamp_ms.unwrap_or_else(::zopp_server::now_ms);
    let nonce = opts.nonce.unwrap_or_else(|| {
        let mut n = [0u8; 16];
        OsRng.fill_bytes(&mut n);
        n
    });
    let sig = zopp_crypto::sign::sign_request(
        &keys.signing,
        &opts.server.unwrap_or(TEST_SERVER_ID),
        method,
        ts,
        &nonce,
        &msg.encode_to_vec(),
    );
    let mut req = Request::new(msg);
    let md = req.metadata_mut();
    md.insert(
        MD_PRINCIPAL,
        opts.principal
            .unwrap_or(principal)
            .to_string()
            .parse()
            .expect("ascii"),
    );
    md.insert(MD_TIMESTAMP, ts.to_string().parse().expect("ascii"));
    md.insert(MD_NONCE, hex::encode(nonce).parse().expect("ascii"));
    md.insert(MD_SIGNATURE, hex::encode(sig).parse().expect("ascii"));
    req
}

/// A scaffolded environment with its plaintext keys (client side).
pub struct Env {
    /// Names.
    pub workspace: String,
    /// Names.
    pub project: String,
    /// Names.
    pub environment: String,
    /// Ids.
    pub ws_id: WorkspaceId,
    /// Ids.
    pub project_id: ProjectId,
    /// Ids.
    pub env_id: EnvironmentId,
    /// Keys (the creator knows them).
    pub wk: ScopeKey,
    /// Project key.
    pub pk: ScopeKey,
    /// Environment key (epoch 1).
    pub ek: ScopeKey,
}

impl Env {
    /// The wire reference.
    pub fn r(&self) -> Option<EnvironmentRef> {
        Some(EnvironmentRef {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            environment: self.environment.clone(),
        })
    }
    /// Name digest of `name`.
    pub fn digest(&self, name: &str) -> NameDigest {
        NameKey::derive(&self.ek).digest(name)
    }
}

pub fn ctx(kind: CryptoScope, id: [u8; 16]) -> KeyContext {
    KeyContext { kind, id, epoch: 1 }
}

impl User {
    /// Signs `msg` for `method` now.
    pub fn sign<T: prost::Message>(&self, method: &str, msg: T) -> Request<T> {
        sign_with(&self.keys, self.id, method, msg, &SignAs::default())
    }

    /// A client clone.
    pub fn c(&self) -> ZoppClient<Channel> {
        self.client.clone()
    }

    /// Creates workspace `w`, project `p` and environment `e` the way the CLI does.
    pub async fn scaffold(&self, w: &str, p: &str, e: &str) -> Env {
        let ws_id = WorkspaceId::random(&mut OsRng);
        let project_id = ProjectId::random(&mut OsRng);
        let env_id = EnvironmentId::random(&mut OsRng);
        let wk = ScopeKey::generate(&mut OsRng);
        let pk = ScopeKey::generate(&mut OsRng);
        let ek = ScopeKey::generate(&mut OsRng);
        let wctx = ctx(CryptoScope::Workspace, *ws_id.as_bytes());
        let pctx = ctx(CryptoScope::Project, *project_id.as_bytes());
        let ectx = ctx(CryptoScope::Environment, *env_id.as_bytes());
        let wrapped_wk = wrap_to_recipient(
            &wk,
            &wctx,
            &self.id,
            &self.keys.agreement.public_key(),
            &mut OsRng,
        )
        .expect("wrap wk");
        self.c()
            .create_workspace(self.sign(
                methods::CREATE_WORKSPACE,
                CreateWorkspaceRequest {
                    statements: Vec::new(),
                    id: ws_id.to_string(),
                    name: w.to_string(),
                    wrapped_key: wrapped_wk.into_bytes(),
                },
            ))
            .await
            .expect("create workspace");
        self.c()
            .create_project(self.sign(
                methods::CREATE_PROJECT,
                CreateProjectRequest {
                    statements: Vec::new(),
                    workspace: w.to_string(),
                    id: project_id.to_string(),
                    name: p.to_string(),
                    wrapped_key: wrap_under(&pk, &pctx, &wk, &wctx, &mut OsRng).into_bytes(),
                },
            ))
            .await
            .expect("create project");
        self.c()
            .create_environment(self.sign(
                methods::CREATE_ENVIRONMENT,
                CreateEnvironmentRequest {
                    statements: Vec::new(),
                    workspace: w.to_string(),
                    project: p.to_string(),
                    id: env_id.to_string(),
                    name: e.to_string(),
                    wrapped_key: wrap_under(&ek, &ectx, &pk, &pctx, &mut OsRng).into_bytes(),
                },
            ))
            .await
            .expect("create environment");
        Env {
            workspace: w.into(),
            project: p.into(),
            environment: e.into(),
            ws_id,
            project_id,
            env_id,
            wk,
            pk,
            ek,
        }
    }

    /// Builds a signed write of `name` = `value` at `version` after `prev_hash`.
    pub fn secret_write(
        &self,
        env: &Env,
        name: &str,
        value: Option<&[u8]>,
        version: u64,
        prev_hash: [u8; 32],
    ) -> SecretWrite {
        let digest = env.digest(name);
        let envelope = match value {
            Some(v) => SealKey::derive(&env.ek)
                .seal(
                    &EnvelopeContext {
                        environment: env.env_id,
                        name_digest: digest,
                        version,
                        key_epoch: 1,
                    },
                    &SecretPayload::new(
                        SecretKind::Secret,
                        name.to_string(),
                        v.to_vec(),
                        Vec::new(),
                    ),
                    &mut OsRng,
                )
                .into_bytes(),
            None => Vec::new(),
        };
        let claims = VersionClaims {
            environment: env.env_id,
            name_digest: digest,
            version,
            key_epoch: 1,
            deleted: value.is_none(),
            envelope: &envelope,
            prev_hash,
            writer: self.id,
            env_version: 0,
            created_at_ms: 0,
        };
        let signature = claims.sign(&self.keys.signing).to_vec();
        // `write` stamps the point in history and signs again.
        SecretWrite {
            name_digest: digest.as_bytes().to_vec(),
            version,
            key_epoch: 1,
            deleted: value.is_none(),
            envelope,
            prev_hash: prev_hash.to_vec(),
            signature,
            env_version: 0,
            created_at_ms: 0,
        }
    }

    /// Writes several secrets as new (version 1) in one call.
    pub async fn write_new(
        &self,
        env: &Env,
        pairs: &[(&str, &[u8])],
    ) -> Result<WriteSecretsResponse, Status> {
        let writes = pairs
            .iter()
            .map(|(n, v)| self.secret_write(env, n, Some(v), 1, ZERO_HASH))
            .collect();
        self.write(env, writes, 0).await
    }

    /// Sends a write batch. Every write claims the point in history it takes (FORMAT.md §7):
    /// the environment version after `if_env_version`, or after the last one this process saw
    /// for the environment, and the time now. Writes this user signed without a point are
    /// signed again with it; anything else (a deliberately bad signature) is sent as is. An
    /// unconditional write that meets a newer environment version is tried once more after it.
    pub async fn write(
        &self,
        env: &Env,
        writes: Vec<SecretWrite>,
        if_env_version: u64,
    ) -> Result<WriteSecretsResponse, Status> {
        let mut base = if if_env_version != 0 {
            if_env_version
        } else {
            known_env_version(env.env_id)
        };
        for attempt in 0..2 {
            let now = now_ms();
            let stamped = writes
                .iter()
                .map(|w| self.stamp(env, w, base + 1, now))
                .collect();
            let r = self
                .c()
                .write_secrets(self.sign(
                    methods::WRITE_SECRETS,
                    WriteSecretsRequest {
                        env: env.r(),
                        environment_id: env.env_id.to_string(),
                        writes: stamped,
                        if_env_version,
                    },
                ))
                .await
                .map(|r| r.into_inner());
            match r {
                Ok(resp) => {
                    note_env_version(env.env_id, resp.env_version);
                    return Ok(resp);
                }
                Err(s) if attempt == 0 && if_env_version == 0 => {
                    match s
                        .message()
                        .strip_prefix("environment changed: now at version ")
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        Some(current) => {
                            note_env_version(env.env_id, current);
                            base = current;
                        }
                        None => return Err(s),
                    }
                }
                Err(s) => return Err(s),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// `w` claiming environment version `env_version` at time `now`: re-signed when this
    /// user signed it without a point in history.
    pub fn stamp(&self, env: &Env, w: &SecretWrite, env_version: u64, now: i64) -> SecretWrite {
        let mut out = w.clone();
        let digest = NameDigest::try_from_slice(&w.name_digest).ok();
        let prev: Option<[u8; 32]> = w.prev_hash.as_slice().try_into().ok();
        if let (Some(name_digest), Some(prev_hash)) = (digest, prev) {
            let mut c = VersionClaims {
                environment: env.env_id,
                name_digest,
                version: w.version,
                key_epoch: w.key_epoch,
                deleted: w.deleted,
                envelope: &w.envelope,
                prev_hash,
                writer: self.id,
                env_version: w.env_version,
                created_at_ms: w.created_at_ms,
            };
            if c.verify(&self.keys.signing.verifying_key(), &w.signature)
                .is_ok()
            {
                c.env_version = env_version;
                c.created_at_ms = now;
                out.signature = c.sign(&self.keys.signing).to_vec();
            }
        }
        out.env_version = env_version;
        out.created_at_ms = now;
        out
    }

    /// Reads a secret by name and decrypts it with the key chain the server returns.
    pub async fn read(
        &self,
        env: &Env,
        name: &str,
    ) -> Result<(Vec<u8>, GetSecretResponse), Status> {
        let resp = self
            .c()
            .get_secret(self.sign(
                methods::GET_SECRET,
                GetSecretRequest {
                    env: env.r(),
                    name_digest: env.digest(name).as_bytes().to_vec(),
                    version: 0,
                    include_deleted: false,
                },
            ))
            .await?
            .into_inner();
        let keys = resp.keys.as_ref().expect("keys");
        let ek = self.derive_ek(keys);
        let s = resp.secret.as_ref().expect("secret");
        let digest = NameDigest::try_from_slice(&s.name_digest).expect("digest");
        let payload = SealKey::derive(&ek)
            .open(
                &EnvelopeContext {
                    environment: env.env_id,
                    name_digest: digest,
                    version: s.version,
                    key_epoch: s.key_epoch,
                },
                &zopp_crypto::envelope::Envelope::from_bytes(s.envelope.clone()),
            )
            .expect("open envelope");
        assert_eq!(payload.name(), name);
        Ok((payload.expose_secret().to_vec(), resp))
    }

    /// Derives the environment key from `EnvironmentKeys`, like a client.
    pub fn derive_ek(&self, k: &EnvironmentKeys) -> ScopeKey {
        let ws = WorkspaceId::try_parse(&k.workspace_id).expect("ws id");
        let p = ProjectId::try_parse(&k.project_id).expect("project id");
        let e = EnvironmentId::try_parse(&k.environment_id).expect("env id");
        let wctx = ctx(CryptoScope::Workspace, *ws.as_bytes());
        let pctx = ctx(CryptoScope::Project, *p.as_bytes());
        let ectx = KeyContext {
            kind: CryptoScope::Environment,
            id: *e.as_bytes(),
            epoch: k.key_epoch,
        };
        let wrapped = |b: &[u8]| zopp_crypto::wrap::WrappedKey::from_bytes(b.to_vec());
        match ScopeKind::try_from(k.grant_scope).expect("scope kind") {
            ScopeKind::Workspace => {
                let wk = unwrap_from_recipient(
                    &wrapped(&k.grant_wrapped_key),
                    &wctx,
                    &self.id,
                    &self.keys.agreement,
                )
                .expect("unwrap wk");
                let pk = unwrap_under(&wrapped(&k.project_wrapped_key), &pctx, &wk, &wctx)
                    .expect("unwrap pk");
                unwrap_under(&wrapped(&k.environment_wrapped_key), &ectx, &pk, &pctx)
                    .expect("unwrap ek")
            }
            ScopeKind::Project => {
                let pk = unwrap_from_recipient(
                    &wrapped(&k.grant_wrapped_key),
                    &pctx,
                    &self.id,
                    &self.keys.agreement,
                )
                .expect("unwrap pk");
                unwrap_under(&wrapped(&k.environment_wrapped_key), &ectx, &pk, &pctx)
                    .expect("unwrap ek")
            }
            ScopeKind::Environment => unwrap_from_recipient(
                &wrapped(&k.grant_wrapped_key),
                &ectx,
                &self.id,
                &self.keys.agreement,
            )
            .expect("unwrap ek"),
            ScopeKind::Unspecified => panic!("unspecified grant scope"),
        }
    }

    /// The workspace's audit chain, all pages.
    pub async fn audit(&self, workspace: &str) -> ListAuditResponse {
        let mut all = ListAuditResponse::default();
        let mut after = 0;
        loop {
            let page = self
                .c()
                .list_audit(self.sign(
                    methods::LIST_AUDIT,
                    ListAuditRequest {
                        workspace: workspace.to_string(),
                        after_seq: after,
                        limit: 1000,
                        ..Default::default()
                    },
                ))
                .await
                .expect("list audit")
                .into_inner();
            let n = page.entries.len();
            after = page.entries.last().map(|e| e.seq).unwrap_or(after);
            all.entries.extend(page.entries);
            all.actors.extend(page.actors);
            all.head_seq = page.head_seq;
            all.head_hash = page.head_hash;
            if n < 1000 {
                return all;
            }
        }
    }
}

/// Asserts a gRPC error's code and message.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: tonic::Code, message: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} '{message}', got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert_eq!(s.message(), message);
        }
    }
}

/// The newest environment version this test process saw per environment (tests run in
/// parallel threads, each on its own environments).
fn env_versions() -> &'static std::sync::Mutex<std::collections::HashMap<EnvironmentId, u64>> {
    static V: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<EnvironmentId, u64>>> =
        std::sync::OnceLock::new();
    V.get_or_init(Default::default)
}

fn known_env_version(env: EnvironmentId) -> u64 {
    env_versions()
        .lock()
        .expect("not poisoned")
        .get(&env)
        .copied()
        .unwrap_or(0)
}

fn note_env_version(env: EnvironmentId, v: u64) {
    let mut m = env_versions().lock().expect("not poisoned");
    let e = m.entry(env).or_insert(0);
    *e = (*e).max(v);
}

/// This machine's clock, unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The hash of a returned version, as the next version's `prev_hash` (FORMAT.md §7).
pub fn hash_of(env: &Env, v: &SecretVersion) -> [u8; 32] {
    VersionClaims {
        environment: env.env_id,
        name_digest: NameDigest::try_from_slice(&v.name_digest).expect("digest"),
        version: v.version,
        key_epoch: v.key_epoch,
        deleted: v.deleted,
        envelope: &v.envelope,
        prev_hash: v.prev_hash.clone().try_into().expect("32 bytes"),
        writer: PrincipalId::try_parse(&v.writer_principal_id).expect("writer id"),
        env_version: v.env_version,
        created_at_ms: v.created_at_ms,
    }
    .hash(&v.signature)
}

impl User {
    /// `GetSecret` with options, raw.
    pub async fn get(
        &self,
        env: &Env,
        name: &str,
        version: u64,
        include_deleted: bool,
    ) -> Result<GetSecretResponse, Status> {
        self.c()
            .get_secret(self.sign(
                methods::GET_SECRET,
                GetSecretRequest {
                    env: env.r(),
                    name_digest: env.digest(name).as_bytes().to_vec(),
                    version,
                    include_deleted,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// `FetchEnvironment`, raw.
    pub async fn fetch(
        &self,
        env: &Env,
        at_ms: i64,
        at_env_version: u64,
    ) -> Result<FetchEnvironmentResponse, Status> {
        self.c()
            .fetch_environment(self.sign(
                methods::FETCH_ENVIRONMENT,
                FetchEnvironmentRequest {
                    env: env.r(),
                    at_ms,
                    at_env_version,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }
}
