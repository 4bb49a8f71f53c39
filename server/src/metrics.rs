//! Prometheus metrics: names, descriptions, the recorder and the `/metrics` HTTP endpoint.
//!
//! Labels carry only method names, status codes, check names and operation names: never ids,
//! names or anything a client sent, so the metrics cannot leak data and their cardinality stays
//! bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Counter: RPCs by `method` and gRPC `code`.
pub const RPC_TOTAL: &str = "zopp_rpc_requests_total";
/// Histogram: RPC latency in seconds by `method`.
pub const RPC_DURATION: &str = "zopp_rpc_duration_seconds";
/// Counter: authentication failures by `reason`.
pub const AUTH_FAILURES: &str = "zopp_auth_failures_total";
/// Counter: requests refused by the per-principal rate limit.
pub const RATE_LIMITED: &str = "zopp_rate_limited_total";
/// Histogram: storage operation latency in seconds by `backend` and `op`.
pub const DB_DURATION: &str = "zopp_db_operation_duration_seconds";
/// Counter: storage operations that failed (unavailable or corrupt) by `backend` and `op`.
pub const DB_ERRORS: &str = "zopp_db_errors_total";
/// Gauge: open client connections.
pub const OPEN_CONNECTIONS: &str = "zopp_open_connections";
/// Gauge: open `WatchEnvironment` streams.
pub const OPEN_WATCHES: &str = "zopp_open_watch_streams";
/// Histogram: audit entries committed per group-commit batch.
pub const AUDIT_BATCH: &str = "zopp_audit_batch_size";

/// Latency buckets (seconds): sub-millisecond reads up to slow imports.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the global Prometheus recorder and returns the handle that renders it.
///
/// # Errors
/// When a recorder is already installed (only one per process).
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(AUDIT_BATCH.to_string()),
            BATCH_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RPC_TOTAL, "RPCs handled, by method and gRPC code");
    describe_histogram!(RPC_DURATION, Unit::Seconds, "RPC latency by method");
    describe_counter!(AUTH_FAILURES, "Refused request signatures, by failed check");
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by the per-principal rate limit"
    );
    describe_histogram!(
        DB_DURATION,
        Unit::Seconds,
        "Storage operation latency by backend and operation"
    );
    describe_counter!(DB_ERRORS, "Storage operations that failed");
    describe_gauge!(OPEN_CONNECTIONS, "Open client connections");
    describe_gauge!(OPEN_WATCHES, "Open WatchEnvironment streams");
    describe_histogram!(AUDIT_BATCH, "Audit entries per group commit");
}

/// Serves `GET /metrics` on `listener` until `shutdown` flips, and runs the recorder's upkeep.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let upkeep = handle.clone();
    let mut upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = upkeep_stop.changed() => break,
            }
        }
    });
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| respond(req, handle.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    handle: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(ctype),
        );
        r
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "zopp-server metrics: GET /metrics\n".to_string(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
    })
}

/// Binds the metrics listener (port 0 allowed) and returns it with its actual address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_prometheus_text_and_nothing_else() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(RPC_TOTAL, "method" => "GetSecret", "code" => "ok").increment(3);
        });
        let (listener, addr) = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, handle, stopped));

        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(
            ok.contains(r#"zopp_rpc_requests_total{method="GetSecret",code="ok"} 3"#),
            "{ok}"
        );
        let missing = get(addr, "/secrets").await;
        assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");

        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("metrics server stops")
            .expect("task");
    }
}
