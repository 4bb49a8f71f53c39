//! Read-throughput benchmark (DESIGN.md §10): signed single-secret reads (`GetSecret`) from many
//! concurrent in-process clients against a server on loopback over a temporary SQLite database.
//!
//! ```text
//! cargo run --release -p zopp-server --example read_bench -- [CLIENTS] [SECONDS] [OTHER_SECRETS] [RPC]
//! ```
//!
//! `RPC` is `get` (default: `GetSecret`) or `whoami` (`WhoAmI`: signature check and principal
//! look-up only, no secret read, no audit entry), to separate the fixed cost of a signed call
//! from the cost of a read.
//!
//! `OTHER_SECRETS` fills a second environment first, to show that a read's cost does not depend
//! on other environments' data. Prints requests per second and latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rand::RngCore;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::Request;
use zopp_crypto::envelope::{EnvelopeContext, NameKey, SealKey, SecretKind, SecretPayload};
use zopp_crypto::ids::{EnvironmentId, PrincipalId, ProjectId, WorkspaceId};
use zopp_crypto::keys::{PrincipalKeys, ScopeKey, ScopeKind};
use zopp_crypto::sign::{join_message, VersionClaims, ZERO_HASH};
use zopp_crypto::wrap::{wrap_to_recipient, wrap_under, KeyContext};
use zopp_proto::v1::zopp_client::ZoppClient;
use zopp_proto::v1::{
    CreateEnvironmentRequest, CreateProjectRequest, CreateWorkspaceRequest, EnvironmentRef,
    GetSecretRequest, JoinRequest, SecretWrite, WhoAmIRequest, WriteSecretsRequest,
};
use zopp_server::ratelimit::RateLimit;
use zopp_server::service::methods;
use zopp_server::storage::Storage;

struct Signer {
    keys: PrincipalKeys,
    id: PrincipalId,
    server_id: zopp_crypto::ids::ServerId,
}

impl Signer {
    fn sign<T: prost::Message>(&self, method: &str, msg: T) -> Request<T> {
        let ts = zopp_server::now_ms();
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let sig = zopp_crypto::sign::sign_request(
            &self.keys.signing,
            &self.server_id,
            method,
            ts,
            &nonce,
            &msg.encode_to_vec(),
        );
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert(
            zopp_proto::MD_PRINCIPAL,
            self.id.to_string().parse().expect("ascii"),
        );
        md.insert(
            zopp_proto::MD_TIMESTAMP,
            ts.to_string().parse().expect("ascii"),
        );
        md.insert(
            zopp_proto::MD_NONCE,
            hex::encode(nonce).parse().expect("ascii"),
        );
        md.insert(
            zopp_proto::MD_SIGNATURE,
            hex::encode(sig).parse().expect("ascii"),
        );
        r
    }
}

fn ctx(kind: ScopeKind, id: [u8; 16]) -> KeyContext {
    KeyContext { kind, id, epoch: 1 }
}

struct Env {
    r: EnvironmentRef,
    id: EnvironmentId,
    ek: ScopeKey,
}

async fn scaffold(
    c: &mut ZoppClient<Channel>,
    s: &Signer,
    w: &str,
    e: &str,
) -> anyhow::Result<Env> {
    let ws = WorkspaceId::random(&mut OsRng);
    let p = ProjectId::random(&mut OsRng);
    let id = EnvironmentId::random(&mut OsRng);
    let (wk, pk, ek) = (
        ScopeKey::generate(&mut OsRng),
        ScopeKey::generate(&mut OsRng),
        ScopeKey::generate(&mut OsRng),
    );
    let (wc, pc, ec) = (
        ctx(ScopeKind::Workspace, *ws.as_bytes()),
        ctx(ScopeKind::Project, *p.as_bytes()),
        ctx(ScopeKind::Environment, *id.as_bytes()),
    );
    let wrapped = wrap_to_recipient(&wk, &wc, &s.id, &s.keys.agreement.public_key(), &mut OsRng)?;
    c.create_workspace(s.sign(
        methods::CREATE_WORKSPACE,
        CreateWorkspaceRequest {
            statements: Vec::new(),
            id: ws.to_string(),
            name: w.into(),
            wrapped_key: wrapped.into_bytes(),
        },
    ))
    .await?;
    c.create_project(s.sign(
        methods::CREATE_PROJECT,
        CreateProjectRequest {
            statements: Vec::new(),
            workspace: w.into(),
            id: p.to_string(),
            name: "api".into(),
            wrapped_key: wrap_under(&pk, &pc, &wk, &wc, &mut OsRng).into_bytes(),
        },
    ))
    .await?;
    c.create_environment(s.sign(
        methods::CREATE_ENVIRONMENT,
        CreateEnvironmentRequest {
            statements: Vec::new(),
            workspace: w.into(),
            project: "api".into(),
            id: id.to_string(),
            name: e.into(),
            wrapped_key: wrap_under(&ek, &ec, &pk, &pc, &mut OsRng).into_bytes(),
        },
    ))
    .await?;
    Ok(Env {
        r: EnvironmentRef {
            workspace: w.into(),
            project: "api".into(),
            environment: e.into(),
        },
        id,
        ek,
    })
}

async fn write_many(
    c: &mut ZoppClient<Channel>,
    s: &Signer,
    env: &Env,
    names: &[String],
) -> anyhow::Result<()> {
    let nk = NameKey::derive(&env.ek);
    let seal = SealKey::derive(&env.ek);
    // Each call is the next environment version, signed as such (FORMAT.md §7).
    for (calls, chunk) in names.chunks(5000).enumerate() {
        let env_version = calls as u64 + 1;
        let created_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let writes = chunk
            .iter()
            .map(|n| {
                let d = nk.digest(n);
                let envelope = seal
                    .seal(
                        &EnvelopeContext {
                            environment: env.id,
                            name_digest: d,
                            version: 1,
                            key_epoch: 1,
                        },
                        &SecretPayload::new(SecretKind::Secret, n.clone(), vec![b'v'; 64], vec![]),
                        &mut OsRng,
                    )
                    .into_bytes();
                let sig = VersionClaims {
                    environment: env.id,
                    name_digest: d,
                    version: 1,
                    key_epoch: 1,
                    deleted: false,
                    envelope: &envelope,
                    prev_hash: ZERO_HASH,
                    writer: s.id,
                    env_version,
                    created_at_ms,
                }
                .sign(&s.keys.signing);
                SecretWrite {
                    name_digest: d.as_bytes().to_vec(),
                    version: 1,
                    key_epoch: 1,
                    envelope,
                    deleted: false,
                    prev_hash: ZERO_HASH.to_vec(),
                    signature: sig.to_vec(),
                    env_version,
                    created_at_ms,
                }
            })
            .collect();
        c.write_secrets(s.sign(
            methods::WRITE_SECRETS,
            WriteSecretsRequest {
                env: Some(env.r.clone()),
                environment_id: env.id.to_string(),
                writes,
                if_env_version: 0,
            },
        ))
        .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(5);
    let others: usize = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(0);
    let whoami = match args.get(4).map(String::as_str) {
        None | Some("get") => false,
        Some("whoami") => true,
        Some(other) => anyhow::bail!("unknown RPC '{other}': use get or whoami"),
    };

    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    // ZOPP_BENCH_READERS overrides the number of SQLite read connections.
    let readers = match std::env::var("ZOPP_BENCH_READERS") {
        Ok(v) => v.parse()?,
        Err(_) => zopp_server::storage::sqlite::DEFAULT_READERS,
    };
    let storage: Arc<dyn Storage> = Arc::new(zopp_server::storage::Metered::new(
        zopp_server::storage::sqlite::SqliteStorage::open_with(&url, readers).await?,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(zopp_server::serve(
        listener,
        storage.clone(),
        zopp_server::ServeOptions {
            rate_limit: RateLimit::unlimited(),
            ..Default::default()
        },
        std::future::pending(),
    ));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    let mut c = ZoppClient::new(endpoint.connect().await?);

    let token = zopp_server::invite::create_server_invite(
        storage.as_ref(),
        1,
        zopp_server::now_ms(),
        &mut OsRng,
    )
    .await?;
    let keys = PrincipalKeys::generate(&mut OsRng);
    let proof = join_message(
        &keys.signing.verifying_key(),
        &keys.agreement.public_key(),
        "bench@example.com",
        &zopp_crypto::sha256(token.token.as_bytes()),
    );
    let joined = c
        .join(JoinRequest {
            token: token.token.to_string(),
            email: "bench@example.com".into(),
            principal_name: "bench".into(),
            signing_key: keys.signing.verifying_key().to_bytes().to_vec(),
            agreement_key: keys.agreement.public_key().to_bytes().to_vec(),
            self_signature: keys.signing.sign(&proof).to_vec(),
            admission_signature: vec![],
        })
        .await?
        .into_inner();
    let server_id = <[u8; 16]>::try_from(joined.server_id.as_slice())
        .map(zopp_crypto::ids::ServerId::from_bytes)
        .map_err(|_| anyhow::anyhow!("the join response names no server id"))?;
    let signer = Arc::new(Signer {
        keys,
        id: PrincipalId::try_parse(&joined.principal_id)?,
        server_id,
    });

    let env = scaffold(&mut c, &signer, "bench", "prod").await?;
    if others > 0 {
        let noisy = scaffold(&mut c, &signer, "noise", "prod").await?;
        let names: Vec<String> = (0..others).map(|i| format!("OTHER_{i}")).collect();
        let t = Instant::now();
        write_many(&mut c, &signer, &noisy, &names).await?;
        eprintln!(
            "filled another environment with {others} secrets in {:?}",
            t.elapsed()
        );
    }
    write_many(&mut c, &signer, &env, &["TARGET".to_string()]).await?;
    let digest = NameKey::derive(&env.ek)
        .digest("TARGET")
        .as_bytes()
        .to_vec();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let signer = signer.clone();
        let r = env.r.clone();
        let digest = digest.clone();
        // One connection per client, like separate processes would have.
        let mut c = ZoppClient::new(endpoint.connect().await?);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                if whoami {
                    c.who_am_i(signer.sign(methods::WHO_AM_I, WhoAmIRequest {}))
                        .await
                        .expect("whoami");
                } else {
                    c.get_secret(signer.sign(
                        methods::GET_SECRET,
                        GetSecretRequest {
                            env: Some(r.clone()),
                            name_digest: digest.clone(),
                            version: 0,
                            include_deleted: false,
                        },
                    ))
                    .await
                    .expect("read");
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{} calls by {clients} clients in {elapsed:.1}s: {:.0} calls/s, p50 {:?}, p99 {:?}, max {:?}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all[all.len() - 1]
    );
    Ok(())
}
