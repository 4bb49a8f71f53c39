//! Limits that apply before a request is authenticated: how many bytes a request body may carry
//! depending on who appears to send it, enforced as the body streams in, so an anonymous peer
//! cannot make the server buffer a large message only for its signature check to fail.
//!
//! A request without signature metadata may carry [`UNAUTHENTICATED_MESSAGE_BYTES`]. One whose
//! metadata names a registered, unrevoked principal with a fresh timestamp may carry
//! [`SIGNED_MESSAGE_BYTES`], or [`MAX_MESSAGE_BYTES`] for the bulk writes that need it
//! (`WriteSecrets`, `RotateKeys`). The signature itself is still checked by the service after
//! decoding: this layer only decides how much may be read before that check.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tonic::Status;
use zopp_crypto::ids::PrincipalId;

use crate::auth::MAX_SKEW_MS;
use crate::storage::Storage;
use crate::validate::MAX_MESSAGE_BYTES;
use crate::{lock, Clock};

/// Largest request body (gRPC framing included) from a caller that is not (yet) known.
pub const UNAUTHENTICATED_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest request body from a registered principal, for methods other than bulk writes.
pub const SIGNED_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Methods whose signed requests may carry up to [`MAX_MESSAGE_BYTES`].
const BULK_METHODS: [&str; 2] = ["/zopp.v1.Zopp/WriteSecrets", "/zopp.v1.Zopp/RotateKeys"];

/// How long a principal seen in the database counts as registered without another look.
const KNOWN_TTL: Duration = Duration::from_secs(60);
/// Principals remembered before the list starts over.
const KNOWN_MAX: usize = 10_000;

/// The body limit a request gets, from its path and metadata.
pub struct BodyLimits {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    known: Mutex<HashMap<PrincipalId, Instant>>,
}

impl BodyLimits {
    /// Limits that look principals up in `storage`.
    pub fn new(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Self {
        Self {
            storage,
            clock,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The largest body `headers` may be followed by on `path`.
    pub async fn limit_for(&self, path: &str, headers: &http::HeaderMap) -> usize {
        let Some(principal) = self.claimed_principal(headers) else {
            return UNAUTHENTICATED_MESSAGE_BYTES;
        };
        if !self.is_registered(principal).await {
            return UNAUTHENTICATED_MESSAGE_BYTES;
        }
        if BULK_METHODS.contains(&path) {
            MAX_MESSAGE_BYTES
        } else {
            SIGNED_MESSAGE_BYTES
        }
    }

    /// The principal named by well-formed signature metadata with a fresh timestamp.
    fn claimed_principal(&self, headers: &http::HeaderMap) -> Option<PrincipalId> {
        let text = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
        let principal = PrincipalId::try_parse(text(zopp_proto::MD_PRINCIPAL)?).ok()?;
        let ts: i64 = text(zopp_proto::MD_TIMESTAMP)?.parse().ok()?;
        let signature = text(zopp_proto::MD_SIGNATURE)?;
        if signature.len() != 128 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // abs_diff: `i64::MIN - now` saturates to i64::MIN, whose `abs` overflows.
        (ts.abs_diff(self.clock.now_ms()) <= MAX_SKEW_MS.unsigned_abs()).then_some(principal)
    }

    async fn is_registered(&self, principal: PrincipalId) -> bool {
        let now = Instant::now();
        if lock(&self.known)
            .get(&principal)
            .is_some_and(|seen| now.duration_since(*seen) < KNOWN_TTL)
        {
            return true;
        }
        let registered = matches!(
            self.storage.principal(principal).await,
            Ok(Some(r)) if r.revoked_at_ms.is_none()
        );
        if registered {
            let mut known = lock(&self.known);
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
            known.insert(principal, now);
        }
        registered
    }
}

/// Tower layer applying [`BodyLimits`] to every request.
#[derive(Clone)]
pub struct BodyLimitLayer {
    limits: Arc<BodyLimits>,
}

impl BodyLimitLayer {
    /// A layer over `limits`.
    pub fn new(limits: Arc<BodyLimits>) -> Self {
        Self { limits }
    }
}

impl<S> tower::Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limits: Arc<BodyLimits>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<Body>> for BodyLimit<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<B>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was made ready is the one to call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        Box::pin(async move {
            let limit = limits.limit_for(req.uri().path(), req.headers()).await;
            let (parts, body) = req.into_parts();
            let body = Body::new(body.with_limit(limit));
            let mut response = inner.call(http::Request::from_parts(parts, body)).await?;
            invalid_argument_for_undecodable(response.headers_mut());
            Ok(response)
        })
    }
}

/// gRPC status of a request whose protobuf does not decode: tonic answers INTERNAL ("failed to
/// decode Protobuf message"), but the fault is the client's, so it becomes INVALID_ARGUMENT (a
/// server fault stays INTERNAL, and alerts on INTERNAL stay meaningful).
fn invalid_argument_for_undecodable(headers: &mut http::HeaderMap) {
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"13");
    let undecodable = headers.get("grpc-message").is_some_and(|v| {
        let m = v.as_bytes();
        [
            &b"failed to decode Protobuf"[..],
            b"failed%20to%20decode%20Protobuf",
        ]
        .iter()
        .any(|needle| m.windows(needle.len()).any(|w| w == *needle))
    });
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

trait WithLimit: Sized {
    fn with_limit(self, limit: usize) -> Limited<Self>;
}

impl<B> WithLimit for B {
    fn with_limit(self, limit: usize) -> Limited<Self> {
        Limited {
            inner: self,
            remaining: limit,
            limit,
        }
    }
}

/// A request body that fails with RESOURCE_EXHAUSTED once it has carried more than `limit`
/// bytes, so the decoder never buffers more than that.
struct Limited<B> {
    inner: B,
    remaining: usize,
    limit: usize,
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body<Data = bytes::Bytes, Error = Status> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            match self.remaining.checked_sub(data.len()) {
                Some(left) => self.remaining = left,
                None => {
                    let limit = self.limit;
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "request larger than {limit} bytes: unauthenticated requests carry at \
                         most {UNAUTHENTICATED_MESSAGE_BYTES} bytes, signed ones at most \
                         {SIGNED_MESSAGE_BYTES} (bulk writes {MAX_MESSAGE_BYTES})"
                    )))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
