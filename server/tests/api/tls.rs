//! TLS and mutual TLS on the gRPC listener (fixtures in tests/data/tls).

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use zopp_proto::v1::zopp_client::ZoppClient;
use zopp_proto::v1::LookupInviteRequest;

use crate::common::*;

const CA: &[u8] = include_bytes!("../data/tls/ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("../data/tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../data/tls/server.key");
const CLIENT_CERT: &[u8] = include_bytes!("../data/tls/client.pem");
const CLIENT_KEY: &[u8] = include_bytes!("../data/tls/client.key");

async fn tls_server(mutual: bool) -> Server {
    Server::start_with(::zopp_server::ServeOptions {
        tls: Some(::zopp_server::TlsOptions {
            cert_pem: SERVER_CERT.to_vec(),
            key_pem: SERVER_KEY.to_vec(),
            client_ca_pem: mutual.then(|| CA.to_vec()),
        }),
        ..::zopp_server::ServeOptions::default()
    })
    .await
}

/// Calls `LookupInvite` with a malformed token: INVALID_ARGUMENT proves a full round trip.
async fn probe(s: &Server, tls: Option<ClientTlsConfig>) -> Result<Code, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://localhost:{}", s.addr.port()))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        ep = ep.tls_config(t).map_err(|e| e.to_string())?;
    }
    let ch = ep.connect().await.map_err(|e| e.to_string())?;
    let r = ZoppClient::new(ch)
        .lookup_invite(LookupInviteRequest {
            token: "zinv_x".into(),
        })
        .await;
    Ok(r.map(|_| Code::Ok).unwrap_or_else(|s| s.code()))
}

fn trusting() -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(CA))
        .domain_name("localhost")
}

#[tokio::test]
async fn serves_grpc_over_tls() {
    let s = tls_server(false).await;
    assert_eq!(probe(&s, Some(trusting())).await, Ok(Code::InvalidArgument));
    // A plaintext client gets no answer from a TLS listener.
    assert_ne!(probe(&s, None).await, Ok(Code::InvalidArgument));
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let s = tls_server(true).await;
    let with_cert = trusting().identity(Identity::from_pem(CLIENT_CERT, CLIENT_KEY));
    assert_eq!(probe(&s, Some(with_cert)).await, Ok(Code::InvalidArgument));
    let anonymous = probe(&s, Some(trusting())).await;
    assert!(
        !matches!(anonymous, Ok(Code::InvalidArgument)),
        "a client without a certificate was served: {anonymous:?}"
    );
}
