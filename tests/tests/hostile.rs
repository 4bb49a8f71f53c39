//! Hostile input through every interface of the real binaries: bytes that are not gRPC on the
//! gRPC port (HTTP/1.1, a TLS ClientHello on the plaintext port, plaintext on a TLS port, noise,
//! a cut-off HTTP/2 preface), gRPC frames that lie about their length, are cut short, carry
//! invalid UTF-8, nest without end or exceed the size limit, enum values no client sends,
//! names with NUL bytes, signed requests from skewed and far-future clocks, and on the command
//! line a 10,000-key import with one bad line and arguments that are not UTF-8.
//!
//! Each is refused with a clear status or exit code and changes nothing, the server never
//! panics, and it answers a health check after each one.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tonic::Code;
use zopp_proto::v1 as pb;
use zopp_tests::signed::{connect, Signer};
use zopp_tests::{ServerOptions, TestServer, TestUser};

const ENV: [&str; 6] = ["-w", "acme", "-p", "api", "-e", "dev"];
/// How long the server may take to close a connection it refuses.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

fn with_env<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend_from_slice(&ENV);
    v
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The server answered its health check, and has logged no panic so far.
fn still_serving(server: &TestServer, after: &str) {
    server.wait_healthy(Duration::from_secs(10));
    let log = server.logs();
    assert!(
        !log.contains("panicked"),
        "the server panicked after {after}:\n{log}"
    );
}

/// Sends `bytes` on a fresh TCP connection, half-closes it, and returns what the server sent
/// back before it closed the connection (which it must do within [`CLOSE_WITHIN`]).
fn raw_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(CLOSE_WITHIN)).expect("timeout");
    // The server may close before it has read everything: a failed write is an answer too.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server neither answered nor closed the connection within {:?}: {e}",
                started.elapsed()
            ),
        }
    }
    got
}

/// A TLS 1.2/1.3 ClientHello record as a client opening a TLS connection sends it.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03]; // client_version TLS 1.2
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // two TLS 1.3 suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
                                           // extensions: supported_versions (TLS 1.3) and server_name "localhost"
    let sni = b"localhost";
    let mut ext = vec![0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04];
    ext.extend_from_slice(&[0x00, 0x00]);
    let list_len = sni.len() + 3;
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(sni);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn garbage_on_the_plaintext_grpc_port_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let mut noise = vec![0u8; 64 * 1024];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\n\r\n".to_vec(),
        ),
        (
            "an HTTP/1.1 POST of a gRPC method",
            b"POST /zopp.v1.Zopp/WhoAmI HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0".to_vec(),
        ),
        ("a TLS ClientHello", client_hello()),
        ("64 KiB of noise", noise),
        (
            "a cut-off HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n".to_vec(),
        ),
        ("nothing at all", Vec::new()),
    ];
    for (what, bytes) in &cases {
        let answer = raw_exchange(&server.addr, bytes);
        // Whatever it says (an HTTP/2 GOAWAY, an HTTP/1.1 error), it says nothing that looks
        // like serving the request.
        assert!(
            !String::from_utf8_lossy(&answer).contains("200 OK"),
            "{what}: {answer:?}"
        );
        still_serving(&server, what);
    }
}

#[test]
fn plaintext_on_a_tls_port_is_refused_and_the_server_keeps_serving() {
    let tls_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../server/tests/data/tls");
    let cert = tls_dir.join("server.pem");
    let key = tls_dir.join("server.key");
    let ca = std::fs::read(tls_dir.join("ca.pem")).expect("test CA");
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..ServerOptions::default()
    });
    let port = server.addr.rsplit(':').next().expect("port").to_owned();
    // Waits (up to 30 s) until a health check over TLS reports SERVING.
    let tls_healthy = || {
        runtime().block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ep =
                    tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
                        .expect("url")
                        .tls_config(
                            tonic::transport::ClientTlsConfig::new()
                                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                                .domain_name("localhost"),
                        )
                        .expect("tls config")
                        .timeout(Duration::from_secs(5));
                if let Ok(ch) = ep.connect().await {
                    let r = tonic_health::pb::health_client::HealthClient::new(ch)
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: "zopp.v1.Zopp".into(),
                        })
                        .await;
                    if r.is_ok_and(|r| {
                        r.into_inner().status
                            == tonic_health::pb::health_check_response::ServingStatus::Serving
                                as i32
                    }) {
                        return;
                    }
                }
                assert!(Instant::now() < deadline, "TLS server never healthy");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tls_healthy();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an HTTP/2 preface in the clear",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec(),
        ),
        (
            "an HTTP/1.1 request in the clear",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "a ClientHello cut off in the middle",
            client_hello()[..20].to_vec(),
        ),
    ];
    for (what, bytes) in &cases {
        let answer = raw_exchange(&server.addr, bytes);
        // Nothing but, at most, a TLS alert record (content type 21).
        assert!(
            answer.is_empty() || answer[0] == 21,
            "{what}: the TLS port answered {answer:?}"
        );
        tls_healthy();
        let log = server.logs();
        assert!(!log.contains("panicked"), "{what}:\n{log}");
    }
    // A plaintext gRPC client is refused with a transport error, not an answer.
    let plain = runtime().block_on(async {
        let ep = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        match ep.connect().await {
            Err(_) => Code::Unavailable,
            Ok(ch) => tonic_health::pb::health_client::HealthClient::new(ch)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map_or_else(|s| s.code(), |_| Code::Ok),
        }
    });
    assert_ne!(plain, Code::Ok);
    tls_healthy();
}

/// The outcome of one raw gRPC call: the grpc-status code and message.
#[derive(Debug)]
struct Outcome {
    code: Code,
    message: String,
}

/// A gRPC request on its own HTTP/2 stream, with exactly `body` as the request body (frames
/// included: nothing is added or checked), and the status the server ends it with.
async fn raw_grpc(addr: &str, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Outcome {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.expect("HTTP/2 ready");
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let (response, mut send) = match client.send_request(req.body(()).expect("request"), false) {
        Ok(sent) => sent,
        // Refused before it left: headers larger than the server said it accepts.
        Err(e) => {
            return Outcome {
                code: Code::Unavailable,
                message: format!("not sent: {e}"),
            }
        }
    };
    // h2 queues what exceeds the flow-control window. The server may refuse before it has
    // read the whole body: stop sending when it does.
    let mut rest = Bytes::from(body);
    loop {
        let chunk = rest.split_to(rest.len().min(1 << 20));
        let last = rest.is_empty();
        if send.send_data(chunk, last).is_err() || last {
            break;
        }
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                code: Code::Unavailable,
                message: format!("stream reset: {e}"),
            }
        }
    };
    let (parts, mut recv) = response.into_parts();
    let status_of = |h: &http::HeaderMap| {
        h.get("grpc-status").map(|v| {
            let code: i32 = v.to_str().expect("ascii").parse().expect("number");
            Outcome {
                code: Code::from(code),
                message: h
                    .get("grpc-message")
                    .map(|m| m.to_str().unwrap_or("").to_owned())
                    .unwrap_or_default(),
            }
        })
    };
    // A trailers-only response carries the status in its headers.
    if let Some(o) = status_of(&parts.headers) {
        return o;
    }
    assert_eq!(parts.status, http::StatusCode::OK, "{path}: {parts:?}");
    while let Some(chunk) = recv.data().await {
        match chunk {
            Ok(c) => {
                let _ = recv.flow_control().release_capacity(c.len());
            }
            Err(e) => {
                return Outcome {
                    code: Code::Unavailable,
                    message: format!("stream reset: {e}"),
                }
            }
        }
    }
    match recv.trailers().await {
        Ok(Some(t)) => status_of(&t).expect("grpc-status in trailers"),
        other => panic!("{path}: no trailers: {other:?}"),
    }
}

/// A gRPC length-prefixed message frame.
fn frame(flags: u8, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flags];
    f.extend_from_slice(&declared_len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `payload` in a correct frame.
fn framed(payload: &[u8]) -> Vec<u8> {
    frame(0, payload.len() as u32, payload)
}

/// Refusals a caller can act on: never "unknown", and never success.
fn assert_refused(what: &str, o: &Outcome, codes: &[Code]) {
    assert!(
        codes.contains(&o.code),
        "{what}: expected one of {codes:?}, got {o:?}"
    );
    // UNIMPLEMENTED says it all (tonic's router sends it without a message).
    assert!(
        o.code == Code::Unimplemented || !o.message.is_empty(),
        "{what}: a status without a message"
    );
}

#[test]
fn malformed_grpc_messages_are_refused_with_a_clear_status() {
    let server = TestServer::start();
    let rt = runtime();
    let addr = server.addr.clone();
    let whoami = "/zopp.v1.Zopp/WhoAmI";
    let create_ws = "/zopp.v1.Zopp/CreateWorkspace";
    let join = "/zopp.v1.Zopp/Join";
    // A string field (name, field 2) holding bytes that are not UTF-8.
    let bad_utf8 = [0x12, 0x02, 0xff, 0xfe];
    // An unknown field opening a group 10,000 times without closing it.
    let deep: Vec<u8> = std::iter::repeat_n(0x7b, 10_000).collect();
    // A length-delimited field that claims more bytes than the message has.
    let overrun = [0x12, 0x7f, b'a'];
    let cases: Vec<(&str, &str, Vec<u8>, &[Code])> = vec![
        (
            "a frame declaring 100 bytes and carrying 3",
            join,
            frame(0, 100, b"abc"),
            &[Code::Internal, Code::InvalidArgument, Code::Cancelled],
        ),
        (
            "a frame declaring 4 GiB",
            join,
            frame(0, u32::MAX, b"abc"),
            &[Code::OutOfRange, Code::ResourceExhausted],
        ),
        (
            "a frame cut inside its 5-byte prefix",
            join,
            vec![0, 0, 0],
            &[Code::Internal, Code::InvalidArgument, Code::Cancelled],
        ),
        (
            "a compressed frame without a grpc-encoding",
            join,
            frame(1, 3, b"abc"),
            &[Code::Internal, Code::Unimplemented, Code::InvalidArgument],
        ),
        (
            "invalid UTF-8 in a string field",
            join,
            framed(&bad_utf8),
            &[Code::Internal, Code::InvalidArgument],
        ),
        (
            "groups nested 10,000 deep",
            join,
            framed(&deep),
            &[Code::Internal, Code::InvalidArgument],
        ),
        (
            "a field longer than its message",
            create_ws,
            framed(&overrun),
            &[Code::Internal, Code::InvalidArgument, Code::Unauthenticated],
        ),
        (
            "an unsigned call",
            whoami,
            framed(&[]),
            &[Code::Unauthenticated],
        ),
        (
            "a method that does not exist",
            "/zopp.v1.Zopp/DropAllTables",
            framed(&[]),
            &[Code::Unimplemented],
        ),
        (
            "a service that does not exist",
            "/grpc.admin.v1.Admin/Shell",
            framed(&[]),
            &[Code::Unimplemented],
        ),
    ];
    for (what, path, body, codes) in cases {
        let o = rt.block_on(raw_grpc(&addr, path, &[], body));
        eprintln!("{what}: {o:?}");
        assert_refused(what, &o, codes);
        still_serving(&server, what);
    }

    // A message over the 64 MiB limit, actually sent.
    let mut big = pb::JoinRequest {
        token: "zinv_x".into(),
        ..Default::default()
    };
    big.signing_key = vec![7; 64 * 1024 * 1024];
    let o = rt.block_on(raw_grpc(&addr, join, &[], framed(&big.encode_to_vec())));
    assert_refused(
        "a 64 MiB message",
        &o,
        &[Code::OutOfRange, Code::ResourceExhausted],
    );
    still_serving(&server, "a 64 MiB message");

    // Oversized metadata: a 1 MiB signature header.
    let o = rt.block_on(raw_grpc(
        &addr,
        whoami,
        &[("x-zopp-signature", "a".repeat(1 << 20))],
        framed(&[]),
    ));
    assert_ne!(o.code, Code::Ok, "{o:?}");
    still_serving(&server, "a 1 MiB header");
}

#[test]
fn unknown_enum_values_nul_bytes_and_skewed_clocks_are_refused() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let signer = Signer::load(alice.home.path());
    let rt = runtime();
    let url = server.url();
    rt.block_on(async {
        let mut c = connect(&url).await;
        let scope = || {
            Some(pb::ScopeRef {
                workspace: "acme".into(),
                ..Default::default()
            })
        };

        // Enum values no client sends.
        for role in [4, 99, -1, i32::MAX] {
            let r = c
                .create_invite(signer.request(
                    "/zopp.v1.Zopp/CreateInvite",
                    pb::CreateInviteRequest {
                        workspace: "acme".into(),
                        invite_id: "0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7a".into(),
                        role,
                        expires_hours: 1,
                        auth_hash: vec![1; 32],
                        ..Default::default()
                    },
                ))
                .await
                .expect_err("an invite with an unknown role");
            assert_eq!(r.code(), Code::InvalidArgument, "role {role}: {r:?}");
            assert!(r.message().contains("role"), "role {role}: {r:?}");
            let r = c
                .set_permission(signer.request(
                    "/zopp.v1.Zopp/SetPermission",
                    pb::SetPermissionRequest {
                        scope: scope(),
                        grantee: Some(pb::Grantee {
                            user_email: "alice@example.com".into(),
                            ..Default::default()
                        }),
                        role,
                        ..Default::default()
                    },
                ))
                .await
                .expect_err("a grant of an unknown role");
            assert_eq!(r.code(), Code::InvalidArgument, "role {role}: {r:?}");
            assert!(r.message().contains("role"), "role {role}: {r:?}");
        }

        // NUL bytes and other control characters in names, through the signed API (the CLI
        // cannot even pass them: argv strings end at NUL).
        for name in ["a\0b", "\0", "ws\u{7f}", "tab\tname", "a/b"] {
            let r = c
                .create_workspace(signer.request(
                    "/zopp.v1.Zopp/CreateWorkspace",
                    pb::CreateWorkspaceRequest {
                        id: "0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7b".into(),
                        name: name.into(),
                        wrapped_key: vec![1, 2, 3],
                        statements: Vec::new(),
                    },
                ))
                .await
                .expect_err("a workspace name with a control character");
            assert_eq!(r.code(), Code::InvalidArgument, "{name:?}: {r:?}");
            let r = c
                .create_project(signer.request(
                    "/zopp.v1.Zopp/CreateProject",
                    pb::CreateProjectRequest {
                        workspace: "acme".into(),
                        id: "0190b7e4-8c5e-4cc1-9a1b-2f3e4d5c6b7c".into(),
                        name: name.into(),
                        wrapped_key: vec![1, 2, 3],
                        statements: Vec::new(),
                    },
                ))
                .await
                .expect_err("a project name with a control character");
            assert_eq!(r.code(), Code::InvalidArgument, "{name:?}: {r:?}");
        }
        // A NUL in a looked-up name is a plain "not found", not a storage error.
        let r = c
            .list_projects(signer.request(
                "/zopp.v1.Zopp/ListProjects",
                pb::ListProjectsRequest {
                    workspace: "ac\0me".into(),
                },
            ))
            .await
            .expect_err("no such workspace");
        assert!(
            [Code::NotFound, Code::InvalidArgument].contains(&r.code()),
            "{r:?}"
        );

        // Requests signed by skewed, far-future and nonsensical clocks.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        for ts in [
            now - 61_000,
            now + 61_000,
            now + 86_400_000 * 365 * 100,
            253_402_300_800_000, // year 10000
            i64::MAX,
            i64::MIN,
            0,
            -1,
        ] {
            let msg = pb::WhoAmIRequest {};
            let mut md = signer.metadata("/zopp.v1.Zopp/WhoAmI", &msg);
            // Re-sign with the skewed timestamp, so only the clock is wrong.
            let mut nonce = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
            let sig = zopp_crypto::sign::sign_request(
                &signer.keys().signing,
                &signer.server_id(),
                "/zopp.v1.Zopp/WhoAmI",
                ts,
                &nonce,
                &msg.encode_to_vec(),
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
            let r = c
                .who_am_i(zopp_tests::signed::with_metadata(md, msg))
                .await
                .expect_err("a skewed clock");
            assert_eq!(r.code(), Code::Unauthenticated, "timestamp {ts}: {r:?}");
            assert!(
                r.message().contains("clock") || r.message().contains("timestamp"),
                "timestamp {ts}: the refusal should say it is the time: {r:?}"
            );
        }
        // A timestamp that is not a number at all.
        let msg = pb::WhoAmIRequest {};
        let mut md = signer.metadata("/zopp.v1.Zopp/WhoAmI", &msg);
        md.insert(
            zopp_proto::MD_TIMESTAMP,
            "99999999999999999999999".parse().expect("ascii"),
        );
        let r = c
            .who_am_i(zopp_tests::signed::with_metadata(md, msg))
            .await
            .expect_err("an unparseable timestamp");
        assert_eq!(r.code(), Code::Unauthenticated, "{r:?}");
        // The same identity, on time, still works.
        c.who_am_i(signer.request("/zopp.v1.Zopp/WhoAmI", pb::WhoAmIRequest {}))
            .await
            .expect("a request on time");
    });
    still_serving(&server, "enum, name and clock attacks");
    let ws = alice.zopp(&["workspace", "list", "--output", "json"]);
    assert_eq!(
        ws.assert_success().json().as_array().expect("list").len(),
        1
    );
    let invites = alice.zopp(&["invite", "list", "-w", "acme", "--output", "json"]);
    assert_eq!(invites.assert_success().json(), serde_json::json!([]));
}

#[test]
fn a_10000_key_import_with_one_bad_line_writes_nothing_and_names_the_line() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let mut lines: Vec<String> = (0..10_000)
        .map(|i| format!("KEY_{i:05}=value-{i}"))
        .collect();
    // Line 7,778: a key with a space in it.
    lines[7_777] = "BAD KEY=1".into();
    let path = alice.cwd.path().join("big.env");
    std::fs::write(&path, lines.join("\n")).expect("write big.env");
    let path_s = path.to_str().expect("utf-8 path");
    let out = alice.zopp(&with_env(&["secret", "import", "-i", path_s]));
    out.assert_exit_code(2)
        .assert_stderr_contains(&format!("{path_s}:7778"));
    let list = alice.zopp(&with_env(&["secret", "list", "--output", "json"]));
    assert_eq!(list.assert_success().json(), serde_json::json!([]));
    still_serving(&server, "a bad import");

    // A NUL byte in a key, and a file that is not UTF-8: refused, nothing written.
    lines[7_777] = "NUL\0KEY=1".into();
    std::fs::write(&path, lines.join("\n")).expect("write big.env");
    alice
        .zopp(&with_env(&["secret", "import", "-i", path_s]))
        .assert_exit_code(2)
        .assert_stderr_contains(&format!("{path_s}:7778"));
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\nLATIN1=caf\xe9\n");
    std::fs::write(&path, &bytes).expect("write big.env");
    alice
        .zopp(&with_env(&["secret", "import", "-i", path_s]))
        .assert_exit_code(2)
        .assert_stderr_contains("not UTF-8");
    let list = alice.zopp(&with_env(&["secret", "list", "--output", "json"]));
    assert_eq!(list.assert_success().json(), serde_json::json!([]));

    // Fixed, the same file imports whole.
    lines[7_777] = "GOOD_KEY=1".into();
    std::fs::write(&path, lines.join("\n")).expect("write big.env");
    let out = alice.zopp(&with_env(&[
        "secret", "import", "-i", path_s, "--output", "json",
    ]));
    let j = out.assert_success().json();
    assert_eq!(j["added"].as_array().expect("added").len(), 10_000);
    still_serving(&server, "a good import");
}

#[test]
fn command_line_arguments_that_are_not_utf8_are_refused() {
    let server = TestServer::start();
    let alice = TestUser::joined(&server, "alice@example.com");
    alice.scaffold("acme", "api", "dev");
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    for args in [
        vec![OsStr::new("workspace"), OsStr::new("create"), latin1],
        vec![
            OsStr::new("secret"),
            OsStr::new("get"),
            latin1,
            OsStr::new("-w"),
            OsStr::new("acme"),
            OsStr::new("-p"),
            OsStr::new("api"),
            OsStr::new("-e"),
            OsStr::new("dev"),
        ],
        vec![
            OsStr::new("secret"),
            OsStr::new("list"),
            OsStr::new("-w"),
            latin1,
            OsStr::new("-p"),
            OsStr::new("api"),
            OsStr::new("-e"),
            OsStr::new("dev"),
        ],
    ] {
        let mut cmd = alice.cmd(&[]);
        cmd.args(&args);
        let out = zopp_tests::TestOutput::run(cmd, None);
        out.assert_exit_code(2);
        assert!(out.stderr().contains("UTF-8"), "{}", out.stderr());
    }
    // A pair whose value is not UTF-8 is refused; the single form stores the bytes as given.
    let mut cmd = alice.cmd(&with_env(&["secret", "set", "A=1"]));
    cmd.arg(OsStr::from_bytes(b"B=caf\xe9"));
    zopp_tests::TestOutput::run(cmd, None)
        .assert_exit_code(2)
        .assert_stderr_contains("not valid UTF-8");
    let mut cmd = alice.cmd(&with_env(&["secret", "set", "BIN"]));
    cmd.arg(latin1);
    zopp_tests::TestOutput::run(cmd, None).assert_success();
    let got = alice.zopp(&with_env(&["secret", "get", "BIN"]));
    assert_eq!(got.assert_success().output.stdout, b"caf\xe9\n");
    let names = alice.zopp(&with_env(&["secret", "list", "--output", "json"]));
    assert_eq!(
        names
            .assert_success()
            .json()
            .as_array()
            .expect("list")
            .len(),
        1
    );
    still_serving(&server, "non-UTF-8 arguments");
}
