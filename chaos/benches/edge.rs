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

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_chaos::devidp::DevIdp;
use serde_json::json;

const HOST: &str = "bench.palisade.localhost";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"ok\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
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

/// Signs in through the development provider; returns the session cookie value.
async fn sign_in(ca: &str, port: u16) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve(HOST, "127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("client");
    palisade_chaos::devidp::sign_in(&http, HOST, port, "alice")
        .await
        .expect("sign-in")
}

struct Load {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn load<F, Fut>(connections: usize, seconds: u64, connect: F) -> Load
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<
            Output = (
                hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
                hyper::Request<Empty<Bytes>>,
            ),
        > + Send,
{
    let warmup = Duration::from_secs(1);
    let run = Duration::from_secs(seconds);
    let start = Instant::now() + warmup;
    let end = start + run;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let connect = connect.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sender, template) = connect().await;
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut req = hyper::Request::new(Empty::new());
                *req.uri_mut() = template.uri().clone();
                *req.headers_mut() = template.headers().clone();
                let ok = match sender.send_request(req).await {
                    Ok(r) => {
                        let good = r.status() == 200;
                        let _ = r.into_body().collect().await;
                        good
                    }
                    Err(_) => false,
                };
                if now >= start {
                    if ok {
                        lat.push(now.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    let (s, _) = connect().await;
                    sender = s;
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    Load {
        requests: latencies.len(),
        errors,
        elapsed: run,
        latencies,
    }
}

fn report(label: &str, l: &Load) {
    let p = |q: f64| {
        l.latencies
            .get(((l.latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    println!(
        "{label:<52} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   errors {}",
        l.requests as f64 / l.elapsed.as_secs_f64(),
        p(0.5),
        p(0.99),
        p(1.0),
        l.errors
    );
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let apps = env_or("PALISADE_BENCH_APPS", 10_000);
    let revocations = env_or("PALISADE_BENCH_REVOCATIONS", 100_000);
    let seconds = env_or("PALISADE_BENCH_SECONDS", 10) as u64;
    let connections = env_or("PALISADE_BENCH_CONNECTIONS", 32);
    let dir = tempfile::tempdir().expect("tempdir");
    // PALISADE_BENCH_DIR keeps the cluster's files (logs) for a look afterwards
    let path = std::env::var("PALISADE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_path_buf());
    let mut spec = ClusterSpec::new(3, 1, env!("CARGO_BIN_EXE_palisade-chaos").into(), path);
    spec.log_filter = "warn".into();
    let cluster = LocalCluster::start(spec).await.expect("cluster");
    let up = upstream().await;
    let idp = DevIdp::start("127.0.0.1:0".parse().expect("addr"), "bench")
        .await
        .expect("idp");
    cluster
        .put_secret("dev-oidc", idp.client_secret.as_bytes())
        .await
        .expect("secret");
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
    revoke_many(&cluster, revocations).await;
    println!("{revocations} revocations written in {:?}", t.elapsed());
    let commit = cluster.latest_revision().await.expect("status").max(rev);
    cluster
        .wait_edges(commit, Duration::from_secs(120))
        .await
        .expect("edge applies everything");
    let ca = cluster.pki_file("ingress-ca.pem").expect("ca");
    let port = cluster.edges[0].https().port();
    let cookie = sign_in(&ca, port).await;

    let tls = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.expect("ca")).expect("ca");
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    };
    let through_edge = {
        let cookie = cookie.clone();
        move || {
            let tls = tls.clone();
            let cookie = cookie.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let _ = tcp.set_nodelay(true);
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(HOST.try_into().expect("name"), tcp)
                    .await
                    .expect("tls");
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                let req = hyper::Request::get("/")
                    .header("host", format!("{HOST}:{port}"))
                    .header("cookie", format!("__Host-palisade-session={cookie}"))
                    .body(Empty::new())
                    .expect("request");
                (sender, req)
            }
        }
    };
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
