//! Fail closed, seen from outside over HTTPS, with real controller and edge processes:
//!
//! - an application marked fail-closed is refused (503) once the edge's view is older than its
//!   limit (all controllers gone), while a fail-open one is still served; both are served again
//!   after the edge reconnects;
//! - an edge without a snapshot serves nothing (503 on the ingress, 503 on `/readyz`), and
//!   serves once it has one.

use std::time::{Duration, Instant};

use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_chaos::upstream::Upstream;
use serde_json::json;

const HOST: &str = "public.palisade.localhost";
const OPEN_HOST: &str = "open.palisade.localhost";

async fn get(client: &reqwest::Client, host: &str, port: u16) -> u16 {
    match client.get(format!("https://{host}:{port}/")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(port: u16) -> u16 {
    palisade_chaos::cluster::ops_status(port, "/readyz")
        .await
        .unwrap_or(0)
}

async fn ops_metrics(port: u16) -> String {
    palisade_chaos::cluster::ops_get(port, "/metrics")
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("palisade_edge"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fail_closed_apps_and_edges_without_a_snapshot_refuse_traffic() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = ClusterSpec::new(
        3,
        1,
        env!("CARGO_BIN_EXE_palisade-e2e-host").into(),
        dir.path().to_path_buf(),
    );
    let mut c = LocalCluster::start(spec).await.expect("cluster");
    let ca = c.pki_file("ingress-ca.pem").expect("ca");
    let port = c.edges[0].https().port();
    let up = Upstream::start(
        "127.0.0.1:0".parse().expect("addr"),
        format!("https://localhost:{port}/.well-known/palisade/jwks.json"),
        Some(&ca),
        None,
    )
    .await
    .expect("upstream");
    let upstream = format!("http://{}", up.addr);
    let policy = json!({
        "schema_version": 1,
        "identity_providers": [{"id": "corp", "issuer": "https://login.example.com",
            "client_id": "edge", "client_secret_ref": "corp"}],
        "apps": [
            {"id": "public", "hosts": [HOST], "upstreams": [upstream], "mfa": {"required": false},
             "staleness": {"mode": "fail_closed", "max_staleness": "2s"},
             "rules": [{"name": "everyone", "decision": "bypass", "include": [{"everyone": true}]}]},
            {"id": "open", "hosts": [OPEN_HOST], "upstreams": [upstream], "mfa": {"required": false},
             "staleness": {"mode": "fail_open"},
             "rules": [{"name": "everyone", "decision": "bypass", "include": [{"everyone": true}]}]}
        ]
    });
    let rev = c
        .apply_policy(&policy.to_string(), "fail-closed test")
        .await
        .expect("policy");
    c.wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("applied");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve(HOST, "127.0.0.1:0".parse().expect("addr"))
        .resolve(OPEN_HOST, "127.0.0.1:0".parse().expect("addr"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert_eq!(get(&client, HOST, port).await, 200);
    assert_eq!(get(&client, OPEN_HOST, port).await, 200);

    // every controller gone: the view ages; after 2 s the fail-closed app is refused
    let ids: Vec<u64> = c.controllers.keys().copied().collect();
    for id in &ids {
        c.kill_controller(*id);
    }
    let killed = Instant::now();
    until(
        "the fail-closed app to be refused",
        Duration::from_secs(15),
        async || get(&client, HOST, port).await == 503,
    )
    .await;
    // the view's age counts from the last heartbeat (every 200 ms here), before the kill
    assert!(
        killed.elapsed() >= Duration::from_millis(1750),
        "refused only once the view is older than the limit: refused {:?} after the kill; edge metrics: {}",
        killed.elapsed(),
        ops_metrics(c.edges[0].addrs.as_ref().expect("addrs").ops.port()).await
    );
    assert_eq!(
        get(&client, OPEN_HOST, port).await,
        200,
        "fail-open keeps serving"
    );

    // an edge restarted now has no snapshot: it serves nothing and is not ready
    c.kill_edge(0);
    c.spawn_edge(0).await.expect("edge restarts");
    let ops = c.edges[0].addrs.as_ref().expect("addrs").ops.port();
    assert_eq!(
        get(&client, OPEN_HOST, port).await,
        503,
        "no snapshot, no traffic"
    );
    assert_eq!(get(&client, HOST, port).await, 503);
    assert_eq!(readyz(ops).await, 503);

    // controllers back: the edge gets its snapshot and serves both again
    for id in &ids {
        c.spawn_controller(*id).expect("restart");
    }
    until(
        "the edge to be ready",
        Duration::from_secs(30),
        async || readyz(ops).await == 200,
    )
    .await;
    until(
        "the fail-closed app to be served again",
        Duration::from_secs(15),
        async || get(&client, HOST, port).await == 200,
    )
    .await;
    assert_eq!(get(&client, OPEN_HOST, port).await, 200);
}
