//! Forwarding an allowed request to the application's upstream: a pooled keep-alive client,
//! streaming bodies both ways, hop-by-hop and `X-Forwarded-*` handling, WebSocket upgrades,
//! body limits and timeouts.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Boxed error of bodies.
pub type BoxError = Box<dyn StdError + Send + Sync>;
/// The body type of every response the edge produces, and of every request it forwards.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Header names Palisade sets for the upstream; whatever the client sent under them is dropped.
pub const IDENTITY_HEADER_PREFIX: &str = "x-palisade-";

/// Upstream settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Time until the upstream's response headers.
    pub response_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle: Duration,
    /// Extra CA certificates for `https://` upstreams (PEM).
    pub extra_roots: Option<String>,
    /// A request body that sends nothing for this long fails the request (408).
    pub body_idle_timeout: Duration,
}

/// The pooled upstream client.
#[derive(Debug, Clone)]
pub struct Upstreams {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    response_timeout: Duration,
    body_idle_timeout: Duration,
    next: Arc<AtomicUsize>,
}

/// What the edge adds to a forwarded request.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The client's address.
    pub client_ip: std::net::IpAddr,
    /// The host the client asked for (with port, as sent).
    pub authority: String,
    /// The normalised path and the query.
    pub path_and_query: String,
    /// Identity headers (`x-palisade-*`), already built.
    pub identity: Vec<(HeaderName, HeaderValue)>,
    /// The request id.
    pub request_id: String,
    /// The application's body limit.
    pub max_body: Option<u64>,
}

/// A forwarding failure, mapped to a status for the client.
#[derive(Debug)]
pub struct ProxyError {
    /// The status to answer with.
    pub status: StatusCode,
    /// What the client is told.
    pub public: &'static str,
    /// What the log says.
    pub detail: String,
}

impl Upstreams {
    /// Builds the client.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs_roots();
        roots.add_parsable_certificates(native);
        if let Some(pem) = &cfg.extra_roots {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| format!("upstream CA bundle: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("upstream CA bundle: {e}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle)
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Self {
            client,
            response_timeout: cfg.response_timeout,
            body_idle_timeout: cfg.body_idle_timeout,
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn pick<'a>(&self, upstreams: &'a [String]) -> Option<&'a str> {
        if upstreams.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % upstreams.len();
        Some(upstreams[i].as_str())
    }

    /// Forwards `req` to one of `upstreams`. `on_upgrade` is called with the two upgraded
    /// connections when the upstream switches protocols (WebSocket); it owns them from then on.
    pub async fn forward(
        &self,
        upstreams: &[String],
        mut req: Request<Body>,
        fwd: Forwarding,
        on_upgrade: impl FnOnce(hyper::upgrade::OnUpgrade, hyper::upgrade::OnUpgrade) + Send + 'static,
    ) -> Result<Response<Body>, ProxyError> {
        let base = self.pick(upstreams).ok_or_else(|| ProxyError {
            status: StatusCode::BAD_GATEWAY,
            public: "the application has no upstream",
            detail: "no upstream configured".into(),
        })?;
        let uri = target_uri(base, &fwd.path_and_query).map_err(|e| ProxyError {
            status: StatusCode::BAD_GATEWAY,
            public: "the application's upstream address is invalid",
            detail: e,
        })?;
        if let (Some(max), Some(len)) = (fwd.max_body, content_length(req.headers()))
            && len > max
        {
            return Err(ProxyError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                public: "the request body is larger than this application accepts",
                detail: format!("content-length {len} > {max}"),
            });
        }
        let upgrade = wants_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        prepare_request_headers(&mut headers, &fwd, upgrade);
        let body: Body = match fwd.max_body {
            Some(max) => {
                Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed_unsync()
            }
            None => body,
        };
        let body = IdleTimeout::new(body, self.body_idle_timeout).boxed_unsync();
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;
        let sent = tokio::time::timeout(self.response_timeout, self.client.request(out)).await;
        let mut resp = match sent {
            Err(_) => {
                return Err(ProxyError {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    public: "the application did not answer in time",
                    detail: format!("no response within {:?}", self.response_timeout),
                });
            }
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(r)) => r,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_side) = client_upgrade else {
                return Err(ProxyError {
                    status: StatusCode::BAD_GATEWAY,
                    public: "the application switched protocols unasked",
                    detail: "101 without an upgrade request".into(),
                });
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            on_upgrade(client_side, upstream_side);
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, full(Bytes::new())));
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        strip_own_set_cookies(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
        ))
    }
}

fn rustls_native_certs_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let r = rustls_native_certs::load_native_certs();
    for e in &r.errors {
        tracing::debug!(error = %e, "a system CA certificate could not be loaded");
    }
    r.certs
}

/// Why a request body was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for too long")]
pub struct BodyStalled;

/// A body that fails when no frame arrives for `timeout` (a slow or stalled upload).
pub struct IdleTimeout {
    inner: Body,
    timeout: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl IdleTimeout {
    /// Wraps `inner`.
    pub fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                let next = tokio::time::Instant::now() + self.timeout;
                self.sleep.as_mut().reset(next);
                Poll::Ready(f)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Removes `Set-Cookie` headers that name one of Palisade's cookies: an application (buggy or
/// hostile) must not fixate or overwrite a session on the host.
pub fn strip_own_set_cookies(h: &mut HeaderMap) {
    let all: Vec<HeaderValue> = h.get_all(header::SET_COOKIE).iter().cloned().collect();
    let own = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .map(|s| s.trim_start().to_ascii_lowercase())
            .is_none_or(|s| s.starts_with(&crate::cookie::OWN_PREFIX.to_ascii_lowercase()))
    };
    if !all.iter().any(own) {
        return;
    }
    h.remove(header::SET_COOKIE);
    for v in all.into_iter().filter(|v| !own(v)) {
        h.append(header::SET_COOKIE, v);
    }
}

/// Copies bytes between the two sides of an upgraded connection until either closes.
pub async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(c), Ok(u)) = (client.await, upstream.await) else {
        return;
    };
    let mut c = TokioIo::new(c);
    let mut u = TokioIo::new(u);
    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
}

fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut src: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = src {
        if s.is::<BodyStalled>() {
            return ProxyError {
                status: StatusCode::REQUEST_TIMEOUT,
                public: "the request body stopped arriving",
                detail: "request body idle timeout".into(),
            };
        }
        if s.is::<http_body_util::LengthLimitError>() {
            return ProxyError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                public: "the request body is larger than this application accepts",
                detail: "body limit reached while streaming".into(),
            };
        }
        src = s.source();
    }
    ProxyError {
        status: StatusCode::BAD_GATEWAY,
        public: "the application could not be reached",
        detail: format!(
            "{e}: {}",
            e.source().map(|s| s.to_string()).unwrap_or_default()
        ),
    }
}

fn target_uri(base: &str, path_and_query: &str) -> Result<Uri, String> {
    let base: Uri = base.parse().map_err(|e| format!("{base}: {e}"))?;
    let prefix = base.path().trim_end_matches('/');
    let pq = format!("{prefix}{path_and_query}");
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(
            base.authority()
                .map(|a| a.as_str())
                .ok_or_else(|| "upstream without host".to_string())?,
        )
        .path_and_query(pq)
        .build()
        .map_err(|e| e.to_string())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP/1.1 protocol upgrade (WebSocket).
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

/// Removes hop-by-hop headers and those the `Connection` header names. With `keep_upgrade`, the
/// `Connection: upgrade` and `Upgrade` pair survives (WebSocket handshakes).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    let upgrade = keep_upgrade
        .then(|| h.get(header::UPGRADE).cloned())
        .flatten();
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
    if let Some(u) = upgrade {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Headers some servers take as the request's real path or method instead of the request line
/// (IIS URL Rewrite, older Symfony and Zend, method-override middleware): the decision was made
/// on the request line, so they never reach an upstream.
const OVERRIDE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Rewrites request headers for the upstream: hop-by-hop out, anything claiming to be
/// Palisade's identity or an earlier proxy's `Forwarded` information out, path and method
/// overrides out, Palisade's cookies out, then `X-Forwarded-*`, the request id and the
/// identity headers in.
pub fn prepare_request_headers(h: &mut HeaderMap, fwd: &Forwarding, upgrade: bool) {
    strip_hop_by_hop(h, upgrade);
    let spoofable: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with(IDENTITY_HEADER_PREFIX)
                || k.starts_with("x-forwarded-")
                || k == "forwarded"
                || k == "x-real-ip"
                || OVERRIDE_HEADERS.contains(&k)
        })
        .cloned()
        .collect();
    for k in spoofable {
        h.remove(k);
    }
    crate::cookie::strip_own(h);
    if let Ok(v) = HeaderValue::from_str(&fwd.authority) {
        h.insert(header::HOST, v);
    }
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    set(h, "x-forwarded-for", &fwd.client_ip.to_string());
    set(h, "x-forwarded-proto", "https");
    set(h, "x-forwarded-host", &fwd.authority);
    set(h, "x-request-id", &fwd.request_id);
    for (k, v) in &fwd.identity {
        h.insert(k.clone(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd() -> Forwarding {
        Forwarding {
            client_ip: "192.0.2.7".parse().unwrap(),
            authority: "app.test:8443".into(),
            path_and_query: "/a?b=c".into(),
            identity: vec![(
                HeaderName::from_static("x-palisade-user"),
                HeaderValue::from_static("alice"),
            )],
            request_id: "r1".into(),
            max_body: None,
        }
    }

    #[test]
    fn request_headers_are_rewritten() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-palisade-user", "mallory"),
            ("X-Palisade-Email", "mallory@evil"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("cookie", "app=1; __Host-palisade-session=tok"),
            ("accept", "text/html"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        prepare_request_headers(&mut h, &fwd(), false);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "x-palisade-email",
            "forwarded",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h["x-palisade-user"], "alice");
        assert_eq!(h.get_all("x-palisade-user").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.test:8443");
        assert_eq!(h["cookie"], "app=1");
        assert_eq!(h["accept"], "text/html");
        assert_eq!(h["host"], "app.test:8443");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        prepare_request_headers(&mut h, &fwd(), true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn target_uri_joins_base_path() {
        assert_eq!(
            target_uri("http://10.0.0.1:8080", "/x?y=1").unwrap(),
            "http://10.0.0.1:8080/x?y=1"
        );
        assert_eq!(
            target_uri("https://up.test/base/", "/x").unwrap(),
            "https://up.test/base/x"
        );
    }
}
