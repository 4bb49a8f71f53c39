//! Every RPC of `zopp.v1.Zopp` through the real server: `zopp_server::serve` on loopback over a
//! temporary SQLite database, so each input crosses tonic's decoding, the limits, request
//! signature authentication, the handlers and storage exactly as a client's call does.
//!
//! Input: byte 0 picks the method (from the service descriptor, so RPCs added later are fuzzed
//! too), byte 1 how the call is signed, the rest is the request body. A signed call is signed
//! over SHA-256 of exactly those bytes by a principal that joined at start-up: a body that is
//! the canonical encoding of its message passes authentication and reaches the handler. The
//! server must answer every call with a status (never a dropped connection), never answer
//! `INTERNAL` or `UNKNOWN`, and keep serving.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rand::RngCore;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use zopp_crypto::keys::{PrincipalKeys, SigningKey};
use zopp_crypto::sign::{join_message, request_message};
use zopp_proto::{MD_NONCE, MD_PRINCIPAL, MD_SIGNATURE, MD_TIMESTAMP};
use zopp_server::storage::sqlite::SqliteStorage;
use zopp_server::storage::Storage;

/// Passes request and response bodies through as bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// One method of the service.
struct Method {
    path: String,
    streaming: bool,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    methods: Vec<Method>,
    principal: String,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

/// The methods of `zopp.v1.Zopp`, read from the compiled descriptor set.
fn methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(zopp_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    let mut out = Vec::new();
    for file in &set.file {
        if file.package() != "zopp.v1" {
            continue;
        }
        for service in file.service.iter().filter(|s| s.name() == "Zopp") {
            for m in &service.method {
                out.push(Method {
                    path: format!("/zopp.v1.Zopp/{}", m.name()),
                    streaming: m.server_streaming(),
                });
            }
        }
    }
    assert!(!out.is_empty(), "no methods in the descriptor");
    out
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let (channel, principal, key) = runtime.block_on(async {
            let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
            let storage: Arc<dyn Storage> =
                Arc::new(SqliteStorage::open(&url).await.expect("open sqlite"));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let opts = zopp_server::ServeOptions {
                rate_limit: zopp_server::ratelimit::RateLimit::unlimited(),
                ..zopp_server::ServeOptions::default()
            };
            let served = storage.clone();
            tokio::spawn(async move {
                zopp_server::serve(listener, served, opts, std::future::pending())
                    .await
                    .expect("serve");
            });
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("url")
                .connect()
                .await
                .expect("connect");

            // A principal to sign with: joined through the real Join RPC.
            let invite = zopp_server::invite::create_server_invite(
                storage.as_ref(),
                24,
                zopp_server::now_ms(),
                &mut rand::rngs::OsRng,
            )
            .await
            .expect("invite");
            let keys = PrincipalKeys::generate(&mut rand::rngs::OsRng);
            let email = "fuzz@example.com";
            let (sk, ak) = (keys.signing.verifying_key(), keys.agreement.public_key());
            let proof = join_message(
                &sk,
                &ak,
                email,
                &zopp_crypto::sha256(invite.token.as_bytes()),
            );
            let join = zopp_proto::v1::JoinRequest {
                token: invite.token.to_string(),
                email: email.into(),
                principal_name: "fuzz".into(),
                signing_key: sk.to_bytes().to_vec(),
                agreement_key: ak.to_bytes().to_vec(),
                self_signature: keys.signing.sign(&proof).to_vec(),
                admission_signature: Vec::new(),
            };
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.expect("ready");
            let resp = grpc
                .unary(
                    Request::new(Bytes::from(join.encode_to_vec())),
                    "/zopp.v1.Zopp/Join".parse().expect("path"),
                    Raw,
                )
                .await
                .expect("join");
            let joined =
                zopp_proto::v1::JoinResponse::decode(resp.into_inner()).expect("a join response");
            (channel, joined.principal_id, keys.signing)
        });
        Harness {
            runtime,
            channel,
            methods: methods(),
            principal,
            key,
            _dir: dir,
        }
    })
}

fn call(h: &Harness, method: &Method, mode: u8, body: &[u8]) -> Result<(), Status> {
    let mut request = Request::new(Bytes::copy_from_slice(body));
    if mode % 4 != 3 {
        // 0, 1: signed correctly; 2: signed over other bytes; 3: unsigned.
        let ts = zopp_server::now_ms();
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let signed_body = if mode % 4 == 2 {
            b"other".as_slice()
        } else {
            body
        };
        let sig = h.key.sign(&request_message(
            &method.path,
            ts,
            &nonce,
            &zopp_crypto::sha256(signed_body),
        ));
        let md = request.metadata_mut();
        md.insert(MD_PRINCIPAL, h.principal.parse().expect("ascii"));
        md.insert(MD_TIMESTAMP, ts.to_string().parse().expect("ascii"));
        md.insert(MD_NONCE, hex::encode(nonce).parse().expect("ascii"));
        md.insert(MD_SIGNATURE, hex::encode(sig).parse().expect("ascii"));
    }
    let path = method.path.parse().expect("path");
    h.runtime.block_on(async {
        let mut grpc = tonic::client::Grpc::new(h.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let call = async {
            if method.streaming {
                let mut stream = grpc
                    .server_streaming(request, path, Raw)
                    .await?
                    .into_inner();
                // The first event or the end of the stream, whichever comes; then hang up.
                let _ = tokio::time::timeout(Duration::from_millis(50), stream.message()).await;
                Ok(())
            } else {
                grpc.unary(request, path, Raw).await.map(|_| ())
            }
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(
                    "the server did not answer in 10 s",
                ))
            })
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let [pick, mode, body @ ..] = data else {
        return;
    };
    let method = &h.methods[usize::from(*pick) % h.methods.len()];
    if let Err(status) = call(h, method, *mode, body) {
        assert!(
            !matches!(
                status.code(),
                Code::Internal | Code::Unknown | Code::DeadlineExceeded | Code::Unavailable
            ),
            "{} answered {:?}: {}",
            method.path,
            status.code(),
            status.message()
        );
    }
});
