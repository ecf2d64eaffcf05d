//! `cargo bench -p palisade-chaos --bench edge`: requests per second and latency through one
//! edge for an authenticated request, against a local keep-alive upstream, with a policy of
//! 10,000 applications and 100,000 revocations in force (`PALISADE_BENCH_APPS`,
//! `PALISADE_BENCH_REVOCATIONS`, `PALISADE_BENCH_SECONDS`, `PALISADE_BENCH_CONNECTIONS` change the
//! defaults).
//!
//! Real processes (3 controllers, 1 edge, release build), a real sign-in through the development
//! identity provider, then N keep-alive HTTPS/1.1 connections each sending requests back to back
//! for a fixed time. The same load straight at the upstream (plain HTTP) is the baseline. The
//! load generator runs on the same 2 cores as the edge; the figures are a report, not a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Bench, env_or, load, report, sign_in, through_edge, tls_client};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use palisade_chaos::cluster::LocalCluster;
use serde_json::json;

mod common;

const HOST: &str = "bench.palisade.localhost";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn policy(issuer: &str, upstream: std::net::SocketAddr, apps: usize) -> String {
    let up = format!("http://{upstream}");
    let mut list = vec![json!({
        "id": "bench", "hosts": [HOST], "upstreams": [up], "mfa": {"required": false},
        "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]
    })];
    list.extend((0..apps).map(|a| {
        json!({
            "id": format!("app-{a}"), "hosts": [format!("app-{a}.example.com")], "upstreams": [up],
            "mfa": {"required": false},
            "rules": (0..10).map(|r| json!({"name": format!("r{r}"), "decision": "allow",
                "include": [{"group": format!("g{}", (a + r) % 300)}]})).collect::<Vec<_>>()
        })
    }));
    json!({
        "schema_version": 1,
        "identity_providers": [{"id": "dev", "issuer": issuer, "client_id": "bench",
            "client_secret_ref": "dev-oidc", "scopes": ["openid", "email", "groups"]}],
        "apps": list
    })
    .to_string()
}

async fn revoke_many(c: &LocalCluster, n: usize) {
    let admin = Arc::new(c.admin().expect("admin"));
    let per = n.div_ceil(64);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let id = format!("bench-{w}-{i}");
                palisade_chaos::cluster::revoke_session(&admin, &id, "bench")
                    .await
                    .expect("revoke");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

async fn run() {
    let apps = env_or("PALISADE_BENCH_APPS", 10_000);
    let revocations = env_or("PALISADE_BENCH_REVOCATIONS", 100_000);
    let seconds = env_or("PALISADE_BENCH_SECONDS", 10) as u64;
    let connections = env_or("PALISADE_BENCH_CONNECTIONS", 32);
    let bench = Bench::start().await;
    let (cluster, up, idp) = (&bench.cluster, bench.upstream, &bench.idp);
    let t = Instant::now();
    let rev = cluster
        .apply_policy(&policy(&idp.issuer, up, apps), "bench")
        .await
        .expect("policy");
    println!(
        "policy with {apps} applications applied in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    revoke_many(cluster, revocations).await;
    println!("{revocations} revocations written in {:?}", t.elapsed());
    let commit = cluster.latest_revision().await.expect("status").max(rev);
    cluster
        .wait_edges(commit, Duration::from_secs(120))
        .await
        .expect("edge applies everything");
    let ca = cluster.pki_file("ingress-ca.pem").expect("ca");
    let port = cluster.edges[0].https().port();
    let cookie = sign_in(&ca, HOST, port, None).await;

    let tls = tls_client(&ca, None);
    let through_edge = through_edge(tls, HOST, port, "/", cookie);
    let direct = move || async move {
        let tcp = tokio::net::TcpStream::connect(up).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header("host", up.to_string())
            .body(Empty::new())
            .expect("request");
        (sender, req)
    };
    println!(
        "\n{connections} keep-alive connections, {seconds} s each, {apps} applications, {revocations} revocations in force\n"
    );
    let base = load(connections, seconds, direct).await;
    report("upstream directly (plain HTTP, baseline)", &base);
    let edge = load(connections, seconds, through_edge.clone()).await;
    report("through the edge (HTTPS, session + decide + proxy)", &edge);
    let single = load(1, seconds, through_edge).await;
    report("through the edge, one connection", &single);
}
