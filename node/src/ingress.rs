//! The public listeners: HTTPS (HTTP/1.1 and HTTP/2 by ALPN) into the gateway, and plain HTTP,
//! which only redirects to HTTPS and answers `/healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http::Gateway;
use crate::http::service::EdgeService;
use crate::proxy::{Body, full};

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes. Larger gets 431.
    pub max_header_bytes: usize,
    /// Time allowed for the TLS handshake and for each request head.
    pub header_timeout: Duration,
    /// Most connections open at once; the listener stops accepting while at the cap, so
    /// further clients wait in the kernel's listen queue.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(20),
            max_connections: 10_000,
        }
    }
}

fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(250)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves HTTPS until `stop` turns true.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    devices: Arc<palisade_link::device::DeviceClientVerifier>,
    gateway: Arc<Gateway>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // A slot first: at the cap, nothing is accepted until a connection closes.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        metrics::gauge!("palisade_edge_connections")
            .set((limits.max_connections - slots.available_permits()) as f64);
        let _ = tcp.set_nodelay(true);
        // the device CA this handshake checks against: the one the replica holds now
        if let Some(pem) = gateway.replica.view().and_then(|v| v.device_ca.clone())
            && let Err(e) = devices.set_ca(&pem)
        {
            tracing::error!(error = %e, "the catalog's device CA is unusable");
        }
        let acceptor = acceptor.clone();
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let device = presented_device(&tls, peer);
            let svc = TowerToHyperService::new(EdgeService::new(gateway, peer, device));
            if let Err(e) = builder(limits)
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// The device certificate TLS verified on this connection, read once.
fn presented_device(
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
) -> Option<Arc<palisade_link::device::PresentedDevice>> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    match palisade_link::device::PresentedDevice::from_der(leaf.as_ref()) {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            // chained to the device CA, yet naming no device: served as no device
            tracing::info!(client = %peer, error = %e, "a client certificate names no device");
            None
        }
    }
}

/// Serves plain HTTP: `/healthz`, and a permanent redirect to HTTPS on `https_port` for the rest.
pub async fn serve_http(
    listener: TcpListener,
    https_port: u16,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(redirect_to_https(&req, https_port))
            });
            if let Err(e) = builder(limits)
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(client = %peer, error = %e, "plain connection ended with an error");
            }
        });
    }
}

fn redirect_to_https<B>(req: &Request<B>, https_port: u16) -> Response<Body> {
    let mut r = Response::new(full(""));
    if req.uri().path() == "/healthz" {
        *r.body_mut() = full("ok\n");
        return r;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let Some(host) = host else {
        *r.status_mut() = StatusCode::BAD_REQUEST;
        *r.body_mut() = full("a Host header is required\n");
        return r;
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let to = format!("https://{}{port}{pq}", host.host());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The addresses an edge listens on, written to `--addresses-file` for tools and tests.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Addresses {
    /// HTTPS ingress.
    pub https: SocketAddr,
    /// Plain HTTP (redirects, health).
    pub http: Option<SocketAddr>,
    /// HTTP/3 (UDP), unless turned off.
    #[serde(default)]
    pub h3: Option<SocketAddr>,
    /// Operational endpoints.
    pub ops: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn plain_http_only_redirects_and_answers_health() {
        let r = redirect_to_https(&req("/healthz", None), 8443);
        assert_eq!(r.status(), StatusCode::OK);
        let r = redirect_to_https(&req("/a/b?c=d", Some("wiki.example.com:8080")), 8443);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()["location"],
            "https://wiki.example.com:8443/a/b?c=d"
        );
        let r = redirect_to_https(&req("/", Some("wiki.example.com")), 443);
        assert_eq!(r.headers()["location"], "https://wiki.example.com/");
        let r = redirect_to_https(&req("/", None), 443);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = redirect_to_https(&req("/", Some("evil.test/@x")), 443);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
