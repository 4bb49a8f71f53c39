//! Server throughput (DESIGN.md §10): signed single-secret reads and writes per second from 1,
//! 16 and 64 concurrent in-process clients, each on its own connection, with p50/p99 latency,
//! against one or more running `zopp-server` replicas (clients are dealt to replicas in turn).
//!
//! The load generator is the signed gRPC client of `zopp_tests::signed`, not CLI processes:
//! every call is freshly signed (its own nonce), so the server runs the whole authentication,
//! replay, RBAC and audit path for each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use zopp_crypto::envelope::{EnvelopeContext, NameDigest, SealKey, SecretKind, SecretPayload};
use zopp_crypto::ids::{EnvironmentId, PrincipalId};
use zopp_crypto::keys::ScopeKey;
use zopp_crypto::sign::{VersionClaims, ZERO_HASH};
use zopp_proto::v1::zopp_client::ZoppClient;
use zopp_proto::v1::{
    EnvironmentRef, FetchEnvironmentRequest, GetSecretRequest, SecretWrite, WriteSecretsRequest,
};
use zopp_tests::signed::Signer;

use crate::{cpu_secs, percentile, rss_kib, Figure};

/// CPU seconds so far of the servers (summed) and of this load generator.
fn cpu_now(pids: &[u32]) -> Option<(f64, f64)> {
    let mut servers = 0.0;
    for p in pids {
        servers += cpu_secs(&p.to_string())?;
    }
    Some((servers, cpu_secs("self")?))
}

const GET_SECRET: &str = "/zopp.v1.Zopp/GetSecret";
const WRITE_SECRETS: &str = "/zopp.v1.Zopp/WriteSecrets";
const FETCH_ENVIRONMENT: &str = "/zopp.v1.Zopp/FetchEnvironment";

/// Concurrent clients per run.
pub const CLIENTS: [usize; 3] = [1, 16, 64];
/// The concurrency DESIGN.md §10 sets the read target at.
const TARGET_CLIENTS: usize = 64;
/// Signed single-secret reads per second at [`TARGET_CLIENTS`] (DESIGN.md §10).
const READS_TARGET: f64 = 10_000.0;
/// p99 latency of those reads (DESIGN.md §10).
const READ_P99_TARGET_MS: f64 = 20.0;

/// Which runs to make: by default reads then writes, each at every one of [`CLIENTS`].
#[derive(Clone, Debug)]
pub struct Load {
    /// Seconds of measured load per run.
    pub run: Duration,
    /// Skip the write runs.
    pub reads_only: bool,
    /// Run only at this concurrency.
    pub clients: Option<usize>,
}

impl Load {
    /// Every run, `run` long each.
    pub fn all(run: Duration) -> Self {
        Self {
            run,
            reads_only: false,
            clients: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "reads",
            Op::Write => "writes",
        }
    }
}

/// What the generator needs to address the benchmark environment.
struct Setup {
    env: EnvironmentRef,
    environment_id: EnvironmentId,
    key_epoch: u32,
    digest: Vec<u8>,
    writer: PrincipalId,
    /// The newest environment version any writer saw: the next write claims the one after.
    env_version: AtomicU64,
}

/// Sum and count of the replicas' `zopp_audit_batch_size` histograms (entries per read-audit
/// commit), scraped from their metrics endpoints; `None` when one cannot be read.
fn audit_batches(metrics: &[String]) -> Option<(f64, f64)> {
    use std::io::{Read, Write};
    let (mut sum, mut count) = (0.0, 0.0);
    for addr in metrics {
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: zopp\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        conn.read_to_string(&mut body).ok()?;
        let value = |name: &str| {
            body.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        sum += value("zopp_audit_batch_size_sum")?;
        count += value("zopp_audit_batch_size_count")?;
    }
    Some((sum, count))
}

/// Measures reads and writes at each of [`CLIENTS`] (or what `load` selects). `pids` are the replicas'
/// process ids (RSS under load is sampled from the first) and `metrics` their metrics
/// addresses. The environment must hold exactly one secret, written beforehand.
pub fn measure(
    urls: &[String],
    pids: &[u32],
    metrics: &[String],
    home: &std::path::Path,
    env: EnvironmentRef,
    load: &Load,
) -> Vec<Figure> {
    let run = load.run;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let signer = Arc::new(Signer::load(home));
        let mut first = zopp_tests::signed::connect(&urls[0]).await;
        let fetched = first
            .fetch_environment(signer.request(
                FETCH_ENVIRONMENT,
                FetchEnvironmentRequest {
                    env: Some(env.clone()),
                    ..Default::default()
                },
            ))
            .await
            .expect("fetch the benchmark environment")
            .into_inner();
        let keys = fetched.keys.expect("environment keys");
        let digest = fetched
            .secrets
            .first()
            .expect("the benchmark environment holds a secret")
            .name_digest
            .clone();
        let setup = Arc::new(Setup {
            env,
            environment_id: EnvironmentId::try_parse(&keys.environment_id).expect("environment id"),
            key_epoch: keys.key_epoch,
            digest,
            writer: PrincipalId::try_parse(signer.principal_id()).expect("principal id"),
            env_version: AtomicU64::new(fetched.env_version),
        });
        let replicas = urls.len();
        // A replica without a metrics address would make the per-commit figure partial.
        let metrics = if metrics.len() == replicas {
            metrics
        } else {
            &[]
        };
        let mut figures = Vec::new();
        let ops: &[Op] = if load.reads_only {
            &[Op::Read]
        } else {
            &[Op::Read, Op::Write]
        };
        let concurrency: Vec<usize> = load.clients.map_or(CLIENTS.to_vec(), |c| vec![c]);
        for &op in ops {
            for &clients in &concurrency {
                // One connection per client, like separate processes would have.
                let mut conns = Vec::with_capacity(clients);
                for i in 0..clients {
                    conns.push(connect_nodelay(&urls[i % replicas]).await);
                }
                // Warm up (connections, statement caches) for a tenth of the run, then measure.
                drive(op, &conns, &signer, &setup, run / 10).await;
                let rss_pid = pids.first().copied();
                let sampler = tokio::spawn(async move {
                    tokio::time::sleep(run / 2).await;
                    rss_pid.and_then(rss_kib)
                });
                // Only reads go through the audit committer. Scraped outside the CPU window, so
                // rendering the metrics does not count as server work per call.
                let audited = if op == Op::Read { metrics } else { &[] };
                let batches_before = audit_batches(audited);
                let before = cpu_now(pids);
                let (lat, elapsed) = drive(op, &conns, &signer, &setup, run).await;
                let after = cpu_now(pids);
                let batches_after = audit_batches(audited);
                let rss = sampler.await.ok().flatten();
                // CPU per call is steadier than calls per second on a shared machine, where
                // other tenants take the cores for a while.
                let cpu = before.zip(after).map(|((s0, g0), (s1, g1))| {
                    let n = lat.len().max(1) as f64;
                    ((s1 - s0) / n * 1e6, (g1 - g0) / n * 1e6)
                });
                // Each read appends an audit entry through the group committer; how many share a
                // commit says how well the committer amortises its fixed cost at this load.
                let per_commit = batches_before
                    .zip(batches_after)
                    .and_then(|((s0, c0), (s1, c1))| (c1 > c0).then(|| (s1 - s0) / (c1 - c0)));
                let measured = Measured {
                    lat: &lat,
                    elapsed,
                    rss,
                    cpu_us: cpu,
                    audit_per_commit: per_commit,
                };
                figures.extend(figures_for(op, clients, replicas, &measured));
            }
        }
        figures
    })
}

async fn connect_nodelay(url: &str) -> ZoppClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("valid url")
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    ZoppClient::new(ch)
}

/// Runs `op` in a loop on every connection until `run` has passed; returns each call's latency
/// in ms (sorted) and the wall time.
async fn drive(
    op: Op,
    conns: &[ZoppClient<Channel>],
    signer: &Arc<Signer>,
    setup: &Arc<Setup>,
    run: Duration,
) -> (Vec<f64>, f64) {
    let started = Instant::now();
    let deadline = started + run;
    let mut tasks = JoinSet::new();
    for c in conns {
        let mut c = c.clone();
        let signer = signer.clone();
        let setup = setup.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let seal = SealKey::derive(&ScopeKey::generate(&mut rand::rngs::OsRng));
            while Instant::now() < deadline {
                let t = Instant::now();
                match op {
                    Op::Read => {
                        c.get_secret(signer.request(
                            GET_SECRET,
                            GetSecretRequest {
                                env: Some(setup.env.clone()),
                                name_digest: setup.digest.clone(),
                                version: 0,
                                include_deleted: false,
                            },
                        ))
                        .await
                        .expect("signed read");
                    }
                    Op::Write => loop {
                        // Each write signs the environment version it produces (FORMAT.md §7),
                        // so concurrent writers to one environment retry after a loser's
                        // ABORTED, as the CLI does; the latency counts every attempt.
                        let claimed = setup.env_version.load(Ordering::Relaxed) + 1;
                        let write = new_secret(&signer, &setup, &seal, claimed);
                        match c
                            .write_secrets(signer.request(
                                WRITE_SECRETS,
                                WriteSecretsRequest {
                                    env: Some(setup.env.clone()),
                                    environment_id: setup.environment_id.to_string(),
                                    writes: vec![write],
                                    if_env_version: 0,
                                },
                            ))
                            .await
                        {
                            Ok(r) => {
                                setup
                                    .env_version
                                    .fetch_max(r.into_inner().env_version, Ordering::Relaxed);
                                break;
                            }
                            Err(s) if s.code() == tonic::Code::Aborted => {
                                let current = s
                                    .message()
                                    .strip_prefix("environment changed: now at version ")
                                    .and_then(|n| n.parse::<u64>().ok())
                                    .expect("an ABORTED write names the current version");
                                setup.env_version.fetch_max(current, Ordering::Relaxed);
                            }
                            Err(s) => panic!("signed write: {s}"),
                        }
                    },
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("client task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    (all, elapsed)
}

/// Version 1 of a fresh secret (random name digest), sealed under a throwaway key (the server
/// cannot tell) and signed by the caller exactly as the CLI signs its writes.
fn new_secret(signer: &Signer, setup: &Setup, seal: &SealKey, env_version: u64) -> SecretWrite {
    let created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut d = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut d);
    let name_digest = NameDigest::try_from_slice(&d).expect("32 bytes");
    let envelope = seal
        .seal(
            &EnvelopeContext {
                environment: setup.environment_id,
                name_digest,
                version: 1,
                key_epoch: setup.key_epoch,
            },
            &SecretPayload::new(SecretKind::Secret, "BENCH".into(), vec![b'v'; 64], vec![]),
            &mut rand::rngs::OsRng,
        )
        .into_bytes();
    let signature = VersionClaims {
        environment: setup.environment_id,
        name_digest,
        version: 1,
        key_epoch: setup.key_epoch,
        deleted: false,
        envelope: &envelope,
        prev_hash: ZERO_HASH,
        writer: setup.writer,
        env_version,
        created_at_ms,
    }
    .sign(&signer.keys().signing);
    SecretWrite {
        name_digest: d.to_vec(),
        version: 1,
        key_epoch: setup.key_epoch,
        envelope,
        deleted: false,
        prev_hash: ZERO_HASH.to_vec(),
        signature: signature.to_vec(),
        env_version,
        created_at_ms,
    }
}

/// What one run at one concurrency measured.
struct Measured<'a> {
    /// Each call's latency in ms, sorted.
    lat: &'a [f64],
    /// Wall time of the run in s.
    elapsed: f64,
    /// RSS of the first replica in KiB, sampled half-way.
    rss: Option<u64>,
    /// CPU µs per call: the servers', the load generator's.
    cpu_us: Option<(f64, f64)>,
    /// Mean audit entries per read-audit commit.
    audit_per_commit: Option<f64>,
}

fn figures_for(op: Op, clients: usize, replicas: usize, m: &Measured<'_>) -> Vec<Figure> {
    let Measured {
        lat,
        elapsed,
        rss,
        cpu_us,
        audit_per_commit,
    } = *m;
    let rate = lat.len() as f64 / elapsed;
    let p99 = percentile(lat, 0.99);
    let at_target = op == Op::Read && clients == TARGET_CLIENTS;
    let on = if replicas > 1 {
        format!(", {replicas} replicas")
    } else {
        String::new()
    };
    let mut out = vec![Figure {
        id: format!("server_{}_{clients}", op.name()),
        name: format!("server {}/s, {clients} clients{on}", op.name()),
        value: rate,
        unit: "ops/s".into(),
        target: at_target.then_some(READS_TARGET),
        lower_is_better: false,
        detail: format!(
            "{} calls in {elapsed:.1} s{}",
            lat.len(),
            cpu_us.map_or(String::new(), |(server, gen)| format!(
                "; CPU/call: server {server:.0} µs, load generator {gen:.0} µs"
            )),
        ) + &audit_per_commit.map_or(String::new(), |n| {
            format!("; {n:.1} audit entries per commit")
        }),
        ..Figure::percentiles(lat)
    }];
    if at_target {
        out.push(Figure {
            id: format!("server_{}_{clients}_p99", op.name()),
            name: format!("server read p99, {clients} clients{on}"),
            value: p99,
            unit: "ms".into(),
            target: Some(READ_P99_TARGET_MS),
            lower_is_better: true,
            detail: String::new(),
            ..Figure::percentiles(lat)
        });
    }
    if clients == TARGET_CLIENTS {
        if let Some(kib) = rss {
            out.push(Figure {
                id: format!("server_rss_{}_{clients}", op.name()),
                name: format!("server RSS under {clients}-client {}", op.name()),
                value: kib as f64 / 1024.0,
                unit: "MiB".into(),
                target: None,
                lower_is_better: true,
                detail: String::new(),
                ..Default::default()
            });
        }
    }
    out
}
