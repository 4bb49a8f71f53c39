//! What an operator relies on, against the real `zopp-server`: limits that hold before a request
//! is authenticated (message size, connections, idle sockets, unauthenticated call rate), clean
//! rollouts (drain bounded, health watches ending, client retries across a restart), and the
//! observability surface (metrics, reflection, status codes, logs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use zopp_proto::v1::zopp_client::ZoppClient;
use zopp_proto::v1::LookupInviteRequest;
use zopp_tests::{ServerOptions, TestServer, TestUser};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn server_with(args: &[&str]) -> TestServer {
    TestServer::start_with(ServerOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..ServerOptions::default()
    })
}

async fn channel(server: &TestServer) -> Channel {
    Endpoint::from_shared(server.url())
        .expect("url")
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect")
}

fn client(ch: Channel) -> ZoppClient<Channel> {
    ZoppClient::new(ch)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// `GET /metrics` of the server, as text.
fn scrape(server: &TestServer) -> String {
    let addr = server.metrics_addr.as_ref().expect("metrics on");
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read metrics");
    out
}

/// The value of the series `line_prefix` (name and labels, exactly as rendered).
fn series(metrics: &str, line_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Peak resident memory of a process, in bytes (`VmHWM` of /proc/PID/status).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// Sends one unary call to `path` whose body announces and streams `len` bytes of protobuf
/// without holding them in memory, over its own HTTP/2 connection; returns the gRPC status the
/// server answered with (or `None` if it only reset the stream).
async fn stream_large_call(addr: &str, path: &str, len: usize) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = h2.send_request(req, false).expect("send headers");
    // gRPC frame: uncompressed, then the length; the message: field 1 (a string) of len - 6.
    let mut head = vec![0u8];
    head.extend_from_slice(&u32::try_from(len).expect("len fits").to_be_bytes());
    head.push(0x0a);
    let inner = len - 6;
    let mut v = inner;
    while v >= 0x80 {
        head.push((v as u8) | 0x80);
        v >>= 7;
    }
    head.push(v as u8);
    let chunk = bytes::Bytes::from(vec![b'a'; 64 * 1024]);
    let sender = async {
        let _ = body.send_data(bytes::Bytes::from(head), false);
        let mut sent = 0;
        while sent < len {
            body.reserve_capacity(chunk.len());
            match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(n)) => {
                    let n = n.min(chunk.len());
                    if body.send_data(chunk.slice(..n), false).is_err() {
                        return;
                    }
                    sent += n;
                }
                _ => return,
            }
        }
    };
    let answer = async {
        let resp = response.await.ok()?;
        let status = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(s) = status(resp.headers()) {
            return Some(s);
        }
        let mut recv = resp.into_body();
        while let Some(d) = recv.data().await {
            if d.is_err() {
                return None;
            }
        }
        recv.trailers()
            .await
            .ok()
            .flatten()
            .and_then(|t| status(&t))
    };
    tokio::select! {
        a = answer => a,
        _ = async { sender.await; std::future::pending::<()>().await } => None,
    }
}

#[test]
fn unauthenticated_requests_are_capped_small_and_memory_stays_bounded() {
    let server = TestServer::start();
    let rt = runtime();
    rt.block_on(async {
        let mut c = client(channel(&server).await);
        // Small and malformed: decoded and refused on its merits.
        let small = c
            .lookup_invite(LookupInviteRequest {
                token: "zinv_x".repeat(1000),
            })
            .await
            .expect_err("bad token");
        assert_eq!(small.code(), Code::InvalidArgument, "{small:?}");
        // Over 64 KiB without a signature: refused before it is decoded.
        let big = c
            .lookup_invite(LookupInviteRequest {
                token: "a".repeat(100 * 1024),
            })
            .await
            .expect_err("too large");
        assert_eq!(big.code(), Code::ResourceExhausted, "{big:?}");
        assert!(big.message().contains("65536"), "{}", big.message());
    });

    // Eight concurrent 60 MiB unauthenticated calls, streamed by raw HTTP/2 clients.
    let pid = server.pid().expect("pid");
    let before = peak_rss(pid);
    let addr = server.addr.clone();
    let answers: Vec<Option<String>> = rt.block_on(async {
        let calls = (0..8).map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                stream_large_call(&addr, "/zopp.v1.Zopp/LookupInvite", 60 * 1024 * 1024).await
            })
        });
        futures_join(calls).await
    });
    let after = peak_rss(pid);
    eprintln!(
        "zopp-server peak RSS: {:.1} MiB before, {:.1} MiB after 8 concurrent 60 MiB unauthenticated calls",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    for a in &answers {
        assert_eq!(
            a.as_deref(),
            Some("8"),
            "RESOURCE_EXHAUSTED for each: {answers:?}"
        );
    }
    assert!(
        after.saturating_sub(before) < 32 * 1024 * 1024,
        "peak RSS grew by {} bytes",
        after.saturating_sub(before)
    );
    // The server still serves.
    server.wait_healthy(Duration::from_secs(5));
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[test]
fn signed_bulk_writes_keep_the_large_limit() {
    let server = TestServer::start();
    let user = TestUser::joined(&server, "bulk@example.com");
    user.scaffold("acme", "api", "dev");
    // Six values of 900 KB: one WriteSecrets of about 5.5 MB, over the 4 MiB of other calls.
    let value = "v".repeat(900_000);
    let dotenv: String = (0..6).map(|i| format!("BIG_{i}={value}\n")).collect();
    let file = user.cwd.path().join("big.env");
    std::fs::write(&file, dotenv).expect("write");
    user.zopp(&[
        "secret",
        "import",
        "--in",
        file.to_str().expect("utf-8"),
        "--format",
        "dotenv",
        "-w",
        "acme",
        "-p",
        "api",
        "-e",
        "dev",
    ])
    .assert_success();
    let got = user.zopp(&[
        "secret", "get", "BIG_5", "-w", "acme", "-p", "api", "-e", "dev",
    ]);
    assert_eq!(got.assert_success().stdout().trim_end().len(), 900_000);
}

#[test]
fn connections_are_capped_and_silent_ones_closed() {
    let server = server_with(&["--max-connections", "2", "--idle-timeout", "1s"]);
    // Two silent sockets take both slots.
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&server.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let rt = runtime();
    let health = |timeout: Duration| {
        rt.block_on(async {
            let ch = Endpoint::from_shared(server.url())
                .expect("url")
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_lazy();
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
        })
    };
    assert!(
        health(Duration::from_millis(500)).is_err(),
        "a third connection was served past --max-connections 2"
    );
    // The idle timeout closes the silent sockets, which frees the slots.
    let started = Instant::now();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The server's HTTP/2 SETTINGS may arrive first; then the connection must end.
        let mut buf = Vec::new();
        let closed = s.read_to_end(&mut buf).is_ok();
        assert!(closed, "a silent connection was not closed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "silent connections lived {:?}",
        started.elapsed()
    );
    health(Duration::from_secs(5)).expect("served once slots are free");
}

#[test]
fn unauthenticated_calls_are_rate_limited_per_address_and_counted() {
    let server = server_with(&["--unsigned-rate-limit", "5"]);
    let rt = runtime();
    let codes: Vec<Code> = rt.block_on(async {
        let mut c = client(channel(&server).await);
        let mut codes = Vec::new();
        for i in 0..40 {
            let r = c
                .lookup_invite(LookupInviteRequest {
                    token: format!("zinv_guess{i}"),
                })
                .await;
            codes.push(r.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
        }
        codes
    });
    let limited = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert!(
        limited >= 25,
        "only {limited} of 40 guesses were limited: {codes:?}"
    );
    assert!(
        codes[..10].iter().all(|c| *c != Code::ResourceExhausted),
        "{codes:?}"
    );
    let m = scrape(&server);
    let rate_limited = series(&m, r#"zopp_auth_failures_total{reason="rate_limited"} "#);
    let invite = series(&m, r#"zopp_auth_failures_total{reason="invite"} "#);
    assert_eq!(rate_limited, Some(limited as f64), "{m}");
    assert_eq!(invite, Some((40 - limited) as f64), "{m}");
    // The log line of a refused guess names the client's address and the reason.
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"auth_failure\":\"rate_limited\""))
        .unwrap_or_else(|| panic!("no rate-limited log line:\n{logs}"));
    assert!(line.contains("\"peer\":\"127.0.0.1:"), "{line}");
}

#[test]
fn join_checks_the_invite_before_waiting_for_the_write_lock() {
    use sqlx::{Connection, Executor};
    let server = TestServer::start();
    let rt = runtime();
    rt.block_on(async {
        // Another writer holds SQLite's write lock (as a long import would).
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(server.db_path());
        let mut holder = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .expect("open");
        holder.execute("BEGIN IMMEDIATE").await.expect("lock");
        let user = TestUser::new(&server);
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            user.zopp(&[
                "join",
                "zinv_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "guess@example.com",
            ])
        })
        .await
        .expect("join");
        assert_ne!(out.code(), 0, "{}", out.stderr());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a join with an unknown invite waited {:?} for the write lock",
            started.elapsed()
        );
        holder.execute("ROLLBACK").await.expect("unlock");
    });
}

#[test]
fn a_command_spanning_a_server_restart_succeeds() {
    let first = TestServer::start();
    let user = TestUser::joined(&first, "restart@example.com");
    user.scaffold("acme", "api", "dev");
    user.zopp_stdin(
        &[
            "secret", "set", "TOKEN", "-", "-w", "acme", "-p", "api", "-e", "dev",
        ],
        b"t0ken",
    )
    .assert_success();
    let addr = first.addr.clone();
    let db = first.db_url.clone();
    // The new process reuses the database; the old home (and database file) must outlive it.
    let mut first = first;
    first.terminate();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        TestServer::start_with(ServerOptions {
            listen: Some(addr),
            db_url: Some(db),
            ..ServerOptions::default()
        })
    });
    // Started while nothing listens: it must wait for the new server instead of failing.
    let got = user.zopp(&[
        "secret", "get", "TOKEN", "-w", "acme", "-p", "api", "-e", "dev",
    ]);
    let second = restarter.join().expect("restart");
    assert_eq!(got.assert_success().stdout(), "t0ken\n");
    drop(second);
    drop(first);
}

#[test]
fn health_watch_streams_do_not_hold_the_drain() {
    let mut server = server_with(&["--drain-timeout", "30s"]);
    let rt = runtime();
    let mut stream = rt.block_on(async {
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel(&server).await);
        let mut s = h
            .watch(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("watch")
            .into_inner();
        s.message().await.expect("first").expect("SERVING");
        s
    });
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain took {:?} with a health watch open",
        started.elapsed()
    );
    rt.block_on(async {
        // The stream may carry NOT_SERVING first; then it ends.
        while let Ok(Some(_)) = stream.message().await {}
    });
}

#[test]
fn a_call_blocked_in_the_database_does_not_outlast_the_drain_timeout() {
    use sqlx::{Connection, Executor};
    let mut server = server_with(&["--drain-timeout", "1s"]);
    let user = TestUser::joined(&server, "blocked@example.com");
    user.scaffold("acme", "api", "dev");
    let rt = runtime();
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(server.db_path());
    let mut holder = rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .expect("open");
        c.execute("BEGIN IMMEDIATE").await.expect("lock");
        c
    });
    // A write that waits for the lock the test holds (up to SQLite's 10 s busy timeout).
    let mut writer = user.cmd(&[
        "secret", "set", "K", "v", "-w", "acme", "-p", "api", "-e", "dev",
    ]);
    writer
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut writer = writer.spawn().expect("spawn writer");
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    server.terminate();
    let took = started.elapsed();
    rt.block_on(async { holder.execute("ROLLBACK").await.expect("unlock") });
    let _ = writer.wait();
    assert!(
        took < Duration::from_secs(4),
        "the server took {took:?} to exit with --drain-timeout 1s"
    );
}

#[test]
fn metrics_and_reflection_serve_what_operators_query() {
    let server = TestServer::start();
    let user = TestUser::joined(&server, "obs@example.com");
    user.zopp(&["workspace", "list"]).assert_success();
    let m = scrape(&server);
    // Error counters exist from start, at zero.
    for reason in ["bad_signature", "replay", "unknown_principal", "clock_skew"] {
        let line = format!("zopp_auth_failures_total{{reason=\"{reason}\"}} ");
        assert_eq!(series(&m, &line), Some(0.0), "{line} missing:\n{m}");
    }
    assert_eq!(series(&m, "zopp_rate_limited_total "), Some(0.0), "{m}");
    // The latency histogram carries the code.
    assert!(
        m.lines()
            .any(|l| l.starts_with("zopp_rpc_duration_seconds_count{")
                && l.contains("method=\"ListWorkspaces\"")
                && l.contains("code=\"ok\"")),
        "{m}"
    );
    // Process and build metrics.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        series(&m, &format!("zopp_build_info{{version=\"{version}\"}} ")),
        Some(1.0),
        "{m}"
    );
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(series(&m, name).is_some_and(|v| v > 0.0), "{name}:\n{m}");
    }

    let rt = runtime();
    rt.block_on(async {
        let ch = channel(&server).await;
        // Reflection, both versions, lists the zopp service.
        {
            use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
            let mut r = ServerReflectionClient::new(ch.clone());
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut s = r
                .server_reflection_info(futures_stream(req))
                .await
                .expect("v1alpha reflection")
                .into_inner();
            let resp = s.message().await.expect("answer").expect("one");
            let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
                panic!("not a service list: {resp:?}")
            };
            assert!(list.service.iter().any(|s| s.name == "zopp.v1.Zopp"));
        }
        {
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            let mut r = ServerReflectionClient::new(ch.clone());
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut s = r
                .server_reflection_info(futures_stream(req))
                .await
                .expect("v1 reflection")
                .into_inner();
            assert!(s.message().await.expect("answer").is_some());
        }
        // Bytes that are not protobuf: the client's fault, INVALID_ARGUMENT.
        let mut raw = tonic::client::Grpc::new(ch.clone());
        raw.ready().await.expect("ready");
        let garbage: Result<tonic::Response<()>, _> = raw
            .unary(
                tonic::Request::new(vec![0xffu8, 0xff, 0xff]),
                http::uri::PathAndQuery::from_static("/zopp.v1.Zopp/LookupInvite"),
                RawCodec,
            )
            .await;
        assert_eq!(garbage.expect_err("garbage").code(), Code::InvalidArgument);

        // A client's x-request-id comes back and is logged.
        let mut c = client(ch);
        let mut req = tonic::Request::new(LookupInviteRequest {
            token: "zinv_x".into(),
        });
        req.metadata_mut()
            .insert("x-request-id", "trace-abc-123".parse().expect("ascii"));
        let err = c.lookup_invite(req).await.expect_err("bad token");
        assert_eq!(
            err.metadata()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("trace-abc-123")
        );
    });
    assert!(
        server.logs().contains("\"request_id\":\"trace-abc-123\""),
        "{}",
        server.logs()
    );
}

fn futures_stream<T: Send + 'static>(item: T) -> impl tokio_stream::Stream<Item = T> + Send {
    tokio_stream::once(item)
}

/// Sends raw bytes as a request message and ignores the response's content.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
