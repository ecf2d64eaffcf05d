//! What the edge benchmarks share: the cluster with its identity provider, a keep-alive
//! upstream, the sign-in, the load generator (N keep-alive connections sending requests back to
//! back for a fixed time) and the report line.

// Each benchmark compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_chaos::devidp::DevIdp;

/// What every edge benchmark runs: 3 controllers and one edge (real processes of the release
/// harness binary), the keep-alive upstream, and the development identity provider with its
/// client secret in the cluster. `PALISADE_BENCH_DIR` keeps the cluster's files (logs) for a
/// look afterwards.
pub struct Bench {
    pub cluster: LocalCluster,
    pub upstream: std::net::SocketAddr,
    pub idp: DevIdp,
    _dir: tempfile::TempDir,
}

impl Bench {
    pub async fn start() -> Bench {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = std::env::var("PALISADE_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| dir.path().to_path_buf());
        let mut spec = ClusterSpec::new(3, 1, env!("CARGO_BIN_EXE_palisade-chaos").into(), path);
        spec.log_filter = "warn".into();
        let cluster = LocalCluster::start(spec).await.expect("cluster");
        let upstream = upstream().await;
        let idp = DevIdp::start("127.0.0.1:0".parse().expect("addr"), "bench")
            .await
            .expect("idp");
        cluster
            .put_secret("dev-oidc", idp.client_secret.as_bytes())
            .await
            .expect("secret");
        Bench {
            cluster,
            upstream,
            idp,
            _dir: dir,
        }
    }
}

/// Signs alice in at `host` on the edge at 127.0.0.1:`port` through the development provider,
/// presenting the device `identity` (key + chain PEM) when given; returns the session cookie.
pub async fn sign_in(ca: &str, host: &'static str, port: u16, identity: Option<String>) -> String {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve(host, "127.0.0.1:0".parse().expect("addr"));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    let http = b.build().expect("client");
    palisade_chaos::devidp::sign_in(&http, host, port, "alice")
        .await
        .expect("sign-in")
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A plain HTTP/1.1 upstream answering `ok` to everything.
pub async fn upstream() -> std::net::SocketAddr {
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

/// A connection ready to send, and the request to repeat on it.
pub type Conn = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    hyper::Request<Empty<Bytes>>,
);

/// Opening a [`Conn`].
pub type Connecting = std::pin::Pin<Box<dyn std::future::Future<Output = Conn> + Send>>;

/// What one load run measured.
pub struct Load {
    pub requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

pub async fn load<F, Fut>(connections: usize, seconds: u64, connect: F) -> Load
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Conn> + Send,
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

pub fn report(label: &str, l: &Load) {
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

/// A TLS client trusting `ca_pem` (HTTP/1.1 by ALPN), presenting `client` (the certificate
/// chain and key, PEM) when given.
pub fn tls_client(ca_pem: &str, client: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("ca");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("chain"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client certificate"),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Opens keep-alive HTTPS/1.1 connections to the edge on 127.0.0.1:`port` for `host`, each
/// with a GET of `path` carrying the session `cookie`.
pub fn through_edge(
    tls: Arc<rustls::ClientConfig>,
    host: &'static str,
    port: u16,
    path: &'static str,
    cookie: String,
) -> impl Fn() -> Connecting + Send + Sync + Clone + 'static {
    move || {
        let tls = tls.clone();
        let cookie = cookie.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let _ = tcp.set_nodelay(true);
            let s = tokio_rustls::TlsConnector::from(tls)
                .connect(host.try_into().expect("name"), tcp)
                .await
                .expect("tls");
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let req = hyper::Request::get(path)
                .header("host", format!("{host}:{port}"))
                .header("cookie", format!("__Host-palisade-session={cookie}"))
                .body(Empty::new())
                .expect("request");
            (sender, req)
        })
    }
}
