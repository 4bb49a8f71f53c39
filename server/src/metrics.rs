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
/// Histogram: RPC latency in seconds by `method` and gRPC `code`.
pub const RPC_DURATION: &str = "zopp_rpc_duration_seconds";
/// Counter: authentication failures by `reason` (see [`AUTH_FAILURE_REASONS`]).
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

/// Whether the gRPC server is serving (false before it starts and once it drains): what
/// `/readyz` on the metrics listener reports, for probes that cannot speak gRPC over TLS.
pub static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Gauge: always 1, with the server's `version` as label.
pub const BUILD_INFO: &str = "zopp_build_info";

/// Every `reason` of [`AUTH_FAILURES`]: the request-signature checks, plus refused
/// unauthenticated calls (`invite`) and unauthenticated calls over the per-address rate limit
/// (`rate_limited`). Each is exported from start, at zero, so alerts on `rate()` see a series
/// before the first failure.
pub const AUTH_FAILURE_REASONS: [&str; 10] = [
    "missing_metadata",
    "malformed_metadata",
    "clock_skew",
    "replay",
    "unknown_principal",
    "revoked",
    "expired",
    "bad_signature",
    "invite",
    "rate_limited",
];

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
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for reason in AUTH_FAILURE_REASONS {
        metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(0);
    }
    metrics::counter!(RATE_LIMITED).increment(0);
    metrics::gauge!(OPEN_CONNECTIONS).increment(0.0);
    metrics::gauge!(OPEN_WATCHES).increment(0.0);
    Ok(handle)
}

/// The standard `process_*` metrics of Prometheus client libraries, read from `/proc/self`.
/// Empty where `/proc` is not available.
fn process_metrics() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the parenthesised command name, which may itself contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    // utime and stime are fields 14 and 15 of stat(5), 11 and 12 after the name.
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        gauge(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            (user + system) / ticks,
        );
    }
    if let Some(threads) = field(17) {
        gauge("process_threads", "Number of OS threads.", threads);
    }
    if let (Some(start), Ok(uptime)) = (field(19), std::fs::read_to_string("/proc/uptime")) {
        let since_boot = uptime
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .ok();
        if let (Some(since_boot), Some(now)) = (since_boot, now) {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                (now - since_boot + start / ticks).round(),
            );
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let Some(rss) = kib("VmRSS:") {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss * 1024.0,
            );
        }
        if let Some(vm) = kib("VmSize:") {
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                vm * 1024.0,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        if let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
        {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            );
        }
    }
    out
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RPC_TOTAL, "RPCs handled, by method and gRPC code");
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "RPC latency by method and gRPC code"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the server version is the label");
    describe_counter!(
        AUTH_FAILURES,
        "Refused request signatures and refused unauthenticated calls, by reason"
    );
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
            handle.render() + &process_metrics(),
        ),
        (&Method::GET, "/healthz") => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_string(),
        ),
        (&Method::GET, "/readyz") => {
            if READY.load(std::sync::atomic::Ordering::Relaxed) {
                reply(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "serving\n".to_string(),
                )
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "not serving\n".to_string(),
                )
            }
        }
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "zopp-server metrics: GET /metrics, /healthz (live), /readyz (serving)\n".to_string(),
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
