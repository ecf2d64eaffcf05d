//! Operational surface: gRPC health, server reflection (v1 and v1alpha) and Prometheus metrics.

mod support;

use std::time::Duration;

use palisade_proto::v1 as pb;
use support::{Cluster, Options, eventually, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics() {
    let c = Cluster::start(1, 0, Options::default()).await;
    let admin = c.client();
    let ch = admin.channel(&c.members[&1].addr()).await.expect("channel");

    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "palisade.v1.PolicyService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::{v1, v1alpha};
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1::server_reflection_client::ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection v1")
        .into_inner();
    let resp = stream.message().await.expect("message").expect("response");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.message_response
    else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "palisade.v1.PolicyService",
        "palisade.v1.ClusterService",
        "palisade.v1.RaftTransport",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = v1alpha::server_reflection_client::ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    assert!(stream.message().await.expect("message").is_some());

    Cluster::revoke(&admin, "metrics-test")
        .await
        .expect("write");
    let body = eventually(
        "raft and admin metrics",
        Duration::from_secs(10),
        || async {
            http_get(c.members[&1].metrics_port, "/metrics")
                .await
                .ok()
                .filter(|b| {
                    b.contains("palisade_raft_append_seconds")
                        && b.contains("palisade_grpc_requests_total")
                })
        },
    )
    .await;
    for metric in [
        "palisade_raft_term",
        "palisade_raft_commit_index",
        "palisade_raft_applied_index",
        "palisade_raft_is_leader",
        "palisade_controller_write_seconds",
        "palisade_grpc_request_seconds",
    ] {
        assert!(body.contains(metric), "{metric} missing from /metrics");
    }
    assert!(
        body.contains("method=\"/palisade.v1.RevocationService/Revoke\""),
        "per-method admin metrics"
    );
    let _ = pb::ReadConsistency::Local;
}
