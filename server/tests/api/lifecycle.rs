//! Health, graceful drain and storage outages.

use std::time::Duration;

use ::zopp_server::service::methods;
use futures::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use zopp_proto::v1::*;

use crate::common::*;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_service() {
    let s = Server::start().await;
    let mut h = HealthClient::new(s.channel().await);
    for service in ["", "zopp.v1.Zopp"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn shutdown_ends_watch_streams_and_drains() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    let env = u.scaffold("acme", "api", "prod").await;
    let mut stream = u
        .c()
        .watch_environment(u.sign(
            methods::WATCH_ENVIRONMENT,
            WatchEnvironmentRequest {
                env: env.r(),
                after_env_version: 0,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    // `stop` waits for the server task to finish: an open stream must not hold it up.
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("drained in time");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("stream closed in time");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no more events after shutdown: {end:?}"
    );
}

#[tokio::test]
async fn storage_outage_is_unavailable_without_detail() {
    let s = Server::start().await;
    let u = s.join("a@example.com").await;
    s.sqlite.close().await;
    assert_status(
        u.c()
            .who_am_i(u.sign(methods::WHO_AM_I, WhoAmIRequest {}))
            .await,
        Code::Unavailable,
        "storage unavailable",
    );
    assert_status(
        s.client()
            .await
            .lookup_invite(LookupInviteRequest {
                token: s_token_like(),
            })
            .await,
        Code::Unavailable,
        "storage unavailable",
    );
}

/// A well-formed token (the storage is down, so it is never looked at).
fn s_token_like() -> String {
    format!("zinv_{}", "A".repeat(64))
}

#[tokio::test]
async fn reflection_lists_the_zopp_and_health_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let s = Server::start().await;
    let mut c = ServerReflectionClient::new(s.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = c
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"zopp.v1.Zopp"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}
