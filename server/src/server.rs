//! Assembling and running the gRPC server: the zopp service, gRPC health and reflection, TLS,
//! `TCP_NODELAY` and connection counting on accepted sockets, message-size limits, and a
//! graceful drain when the shutdown future completes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use zopp_crypto::ids::ServerId;
use zopp_proto::v1::zopp_server::ZoppServer;

use crate::audit::AuditAppender;
use crate::auth::{Authenticator, MemoryReplayCache, ReplayCache};
use crate::feed::{ChangeFeed, LocalFeed};
use crate::limits::{BodyLimitLayer, BodyLimits};
use crate::metrics::OPEN_CONNECTIONS;
use crate::ratelimit::{RateLimit, RateLimiter};
use crate::service::{AppState, ZoppService};
use crate::storage::Storage;
use crate::validate::MAX_MESSAGE_BYTES;
use crate::{Clock, SystemClock};

/// How long a drain may take before the server stops waiting for open connections.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Open client connections served at once; further ones wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a connection may stay silent (no byte from the client, not even the answer to a
/// keepalive ping, sent every 30 s) before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Unauthenticated requests per second allowed per client address (bursts of twice that).
pub const DEFAULT_UNSIGNED_RATE_PER_SEC: u32 = 10;

/// PEM files for TLS.
#[derive(Clone)]
pub struct TlsOptions {
    /// Server certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Server private key (PEM).
    pub key_pem: Vec<u8>,
    /// CA that client certificates must chain to; enables mutual TLS when set.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Why TLS material was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsCheckError {
    /// The certificate file holds no usable PEM certificate.
    #[error("the TLS certificate is not a PEM certificate chain: {0}")]
    Certificate(String),
    /// The key file holds no usable PEM private key.
    #[error("the TLS key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    Key(String),
    /// The key is not the one the certificate was issued for.
    #[error("the TLS key does not belong to the certificate: {0}")]
    Mismatch(String),
    /// The client CA file holds no usable PEM certificate.
    #[error("the TLS client CA is not a PEM certificate: {0}")]
    ClientCa(String),
}

impl TlsOptions {
    /// Parses the certificate chain, the key and the client CA, and checks that the key is the
    /// certificate's, so a wrong file fails at start instead of at every client's handshake.
    ///
    /// # Errors
    /// [`TlsCheckError`] naming the file that is wrong.
    pub fn check(&self) -> Result<(), TlsCheckError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            if certs.is_empty() {
                return Err("no CERTIFICATE block".into());
            }
            Ok(certs)
        };
        let chain = certs(&self.cert_pem).map_err(TlsCheckError::Certificate)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| TlsCheckError::Key(e.to_string()))?;
        let signer = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsCheckError::Key(e.to_string()))?;
        rustls::sign::CertifiedKey::new(chain, signer)
            .keys_match()
            .map_err(|e| TlsCheckError::Mismatch(e.to_string()))?;
        if let Some(ca) = &self.client_ca_pem {
            certs(ca).map_err(TlsCheckError::ClientCa)?;
        }
        Ok(())
    }
}

/// How to run the server.
#[derive(Clone)]
pub struct ServeOptions {
    /// Per-principal rate limit.
    pub rate_limit: RateLimit,
    /// TLS, when set.
    pub tls: Option<TlsOptions>,
    /// Longest graceful drain.
    pub drain_timeout: Duration,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Replay cache (in-memory by default).
    pub replay: Arc<dyn ReplayCache>,
    /// Change feed for watchers (in-process by default).
    pub feed: Arc<dyn ChangeFeed>,
    /// Open client connections served at once.
    pub max_connections: usize,
    /// Silence after which a client connection is closed.
    pub idle_timeout: Duration,
    /// Per-address rate limit of unauthenticated calls (`LookupInvite`, `Join`, ...).
    pub unsigned_rate_limit: RateLimit,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            rate_limit: RateLimit::default(),
            tls: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            clock: Arc::new(SystemClock),
            replay: Arc::new(MemoryReplayCache::new()),
            feed: Arc::new(LocalFeed::new()),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            unsigned_rate_limit: RateLimit::per_second(DEFAULT_UNSIGNED_RATE_PER_SEC),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS material or server setup was refused.
    #[error("cannot configure the server: {0}")]
    Setup(#[from] tonic::transport::Error),
    /// Reflection descriptors failed to load.
    #[error("cannot load gRPC reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS certificate, key or client CA is unusable.
    #[error(transparent)]
    Tls(#[from] TlsCheckError),
    /// The server id could not be read or stored.
    #[error("cannot read the server id: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// Serves zopp on `listener` until `shutdown` completes, then drains: health turns NOT_SERVING,
/// watch streams end, new connections are refused and in-flight calls finish (up to the drain
/// timeout).
///
/// # Errors
/// [`ServeError`] when the server cannot be configured.
pub async fn serve(
    listener: TcpListener,
    storage: Arc<dyn Storage>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Some(tls) = &opts.tls {
        tls.check()?;
    }
    let server_id = storage
        .server_id(ServerId::random(&mut rand_core::OsRng))
        .await?;
    tracing::info!(server_id = %server_id, "server id");
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        storage: storage.clone(),
        auth: Authenticator::new(
            storage.clone(),
            opts.replay.clone(),
            opts.clock.clone(),
            server_id,
        ),
        audit: AuditAppender::spawn(storage.clone()),
        feed: opts.feed.clone(),
        limiter: RateLimiter::new(opts.rate_limit),
        open_limiter: RateLimiter::new(opts.unsigned_rate_limit),
        clock: opts.clock.clone(),
        shutdown: stop_rx.clone(),
    });
    let zopp = ZoppServer::new(ZoppService::new(state))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let reporter = HealthReporter::new();
    let health = HealthServer::new(DrainingHealth {
        inner: HealthService::from_health_reporter(reporter.clone()),
        draining: stop_rx.clone(),
    });
    reporter.set_serving::<ZoppServer<ZoppService>>().await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    // Both reflection versions: grpcurl speaks v1, grpcio's reflection client only v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(zopp_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let mut builder = tonic::transport::Server::builder()
        // Detect dead peers on long-lived watch streams.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &opts.tls {
        let mut cfg =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            cfg = cfg.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(cfg)?;
    }

    let mut drained = stop_rx.clone();
    crate::metrics::READY.store(true, std::sync::atomic::Ordering::Relaxed);
    let signal = async move {
        shutdown.await;
        crate::metrics::READY.store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutting down: draining connections");
        reporter.set_not_serving::<ZoppServer<ZoppService>>().await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // Receivers keep seeing `true` after this sender is dropped.
        let _ = stop_tx.send(true);
    };
    let limits = Arc::new(BodyLimits::new(storage.clone(), opts.clock.clone()));
    let router = builder
        .layer(BodyLimitLayer::new(limits))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(zopp);
    let conns = ConnLimits {
        gather: opts.tls.is_none(),
        slots: Arc::new(Semaphore::new(opts.max_connections.max(1))),
        idle: opts.idle_timeout,
    };
    let server = router.serve_with_incoming_shutdown(accept(listener, conns), signal);
    tokio::pin!(server);
    let drain_timeout = opts.drain_timeout;
    tokio::select! {
        r = &mut server => r?,
        _ = async {
            // Bind the result first: the borrowed value must not live across the sleep.
            let draining = drained.wait_for(|d| *d).await.is_ok();
            if draining {
                tokio::time::sleep(drain_timeout).await;
            } else {
                // The server future owns the sender; it is only dropped once serving ended.
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(timeout_s = drain_timeout.as_secs(), "drain timed out; closing remaining connections");
        }
    }
    Ok(())
}

/// What every accepted connection gets: write gathering, a slot among the open connections,
/// and an idle timeout.
#[derive(Clone)]
struct ConnLimits {
    gather: bool,
    slots: Arc<Semaphore>,
    idle: Duration,
}

/// How long a health watch stream stays open once draining starts: long enough to carry the
/// NOT_SERVING update.
const WATCH_GRACE: Duration = Duration::from_millis(100);

/// gRPC health whose watch streams end shortly after draining starts, so a probe or a load
/// balancer watching health never holds the drain open.
struct DrainingHealth {
    inner: HealthService,
    draining: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        self.inner.check(request).await
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>>;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        use futures::StreamExt;
        let updates = self.inner.watch(request).await?.into_inner();
        let mut draining = self.draining.clone();
        let drained = async move {
            // An error means the server is gone, which ends the stream as well.
            let _ = draining.wait_for(|d| *d).await.is_ok();
            tokio::time::sleep(WATCH_GRACE).await;
        };
        Ok(tonic::Response::new(Box::pin(updates.take_until(drained))))
    }
}

/// Accepted sockets with `TCP_NODELAY` set (small gRPC frames must not wait for Nagle) and
/// counted in the open-connections gauge; `gather` as [`TrackedConn`] says. No connection is
/// accepted while all slots are taken: further clients wait in the kernel's listen backlog.
fn accept(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = io::Result<TrackedConn>> {
    futures::stream::unfold(listener, move |listener| {
        let limits = limits.clone();
        async move {
            let slot = limits
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            let next = match listener.accept().await {
                Ok((stream, _peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    Ok(TrackedConn::new(stream, limits.gather, slot, limits.idle))
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(e)
                }
            };
            Some((next, listener))
        }
    })
}

/// Bytes a connection gathers before it writes them to the socket.
const WRITE_BUFFER: usize = 32 * 1024;

/// A client connection that keeps the open-connections gauge up to date and writes each HTTP/2
/// flush with as few system calls as it can.
///
/// The HTTP/2 encoder (h2) copies a DATA frame into its own buffer only when the frame is under
/// 256 bytes on a socket that takes vectored writes, or under 1 KiB on one that does not; a
/// larger frame is written on its own, and the frames queued after it wait for the next flush.
/// A unary gRPC response is HEADERS, one DATA frame of a few hundred bytes and a HEADERS frame
/// of trailers: with vectored writes the trailers always went out in a second system call and
/// TCP segment, waking the client twice per call. Declaring the socket non-vectored raises the
/// copy limit, so a typical response leaves in one write; the [`BufWriter`] in front gathers
/// what h2 then hands over in pieces (a frame head, a large payload) until it flushes, so bulk
/// responses do not pay a system call per piece either.
///
/// Under TLS none of this applies (h2 writes to rustls, which declares itself vectored), and
/// rustls writes a failed handshake's alert without flushing it: such connections pass every
/// write straight through, vectored as before, so the alert reaches the client.
///
/// It also holds one of the server's connection slots, and fails its reads once the client has
/// sent nothing for the idle timeout, which makes the server close it.
pub struct TrackedConn {
    inner: BufWriter<TcpStream>,
    gather: bool,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TrackedConn {
    fn new(inner: TcpStream, gather: bool, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
        // A zero-capacity BufWriter forwards every write at once.
        let capacity = if gather { WRITE_BUFFER } else { 0 };
        Self {
            inner: BufWriter::with_capacity(capacity, inner),
            gather,
            _slot: slot,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl Drop for TrackedConn {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

impl Connected for TrackedConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.get_ref().connect_info()
    }
}

impl AsyncRead for TrackedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::debug!("closing a connection idle for {:?}", self.idle);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client connection idle",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for TrackedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        // See the type's documentation: declaring no vectored writes makes h2 copy small frames.
        !self.gather && self.inner.get_ref().is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
