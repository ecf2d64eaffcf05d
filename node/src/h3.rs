//! HTTP/3 ingress: QUIC (quinn) carrying h3, the second protocol adapter onto the one request
//! path. Every request stream becomes an `http::Request` (version `HTTP/3`) and goes through
//! the same [`EdgeService`] as HTTP/1.1 and HTTP/2: the same routing, sessions, device
//! certificate (QUIC's client certificate), decision, pages and proxy. Nothing about a request
//! is decided here.
//!
//! What is QUIC's own: 0-RTT stays off (the TLS configuration allows no early data, so nothing
//! can be replayed); connection-specific headers (`Connection`, `Keep-Alive`,
//! `Transfer-Encoding`, `Upgrade`) never go out on a response, and a request carrying one is
//! malformed (its stream is reset with `H3_MESSAGE_ERROR`), as RFC 9114 4.2 says;
//! a request whose pseudo-header fields break RFC 9114 4.3 (one repeated, one after a regular
//! field, `:status`, an uppercase name) is refused before h3 reads it ([`head`], [`checked`]),
//! since h3 would take the last of a repeated `:path`;
//! a request body must carry exactly the bytes its `content-length` says, or the request fails;
//! a connection whose device is revoked or wiped is closed with [`DEVICE_ENDED`];
//! a handshake from an unvalidated address gets a Retry first while many handshakes are in
//! flight; and the listener reports its health for `Alt-Svc` on the TCP listener.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::watch;
use tower::Service;

use palisade_edge_core::device::DeviceCredential;
use palisade_link::device::PresentedDevice;
use palisade_policy::catalog::DeviceState;

use crate::http::Gateway;
use crate::http::service::EdgeService;
use crate::proxy::BoxError;
use crate::sync::Replica;

mod checked;
pub mod head;

use checked::{Checked, Checking};

/// Limits on HTTP/3 connections.
#[derive(Debug, Clone, Copy)]
pub struct H3Limits {
    /// Request streams open at once on one connection.
    pub max_streams: u32,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Largest request header section (QPACK-decoded), bytes.
    pub max_header_bytes: usize,
    /// Time allowed for the QUIC handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in flight above which a client whose address is not validated yet is sent a
    /// Retry (proving its address costs it a round trip, and the edge nothing).
    pub retry_above: usize,
    /// Most connections open at once; more are refused.
    pub max_connections: usize,
}

impl H3Limits {
    /// The most bytes of a request stream's head (its first HEADERS frame, encoded, and any
    /// unknown frames before it) held before h3 reads it. A QPACK field line never encodes in
    /// more than four times the size it counts for once decoded (name, value and 32 bytes),
    /// so a longer head could not decode within `max_header_bytes` anyway.
    pub fn head_bytes(&self) -> usize {
        self.max_header_bytes.saturating_mul(4).saturating_add(4096)
    }
}

impl Default for H3Limits {
    fn default() -> Self {
        Self {
            max_streams: 100,
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            retry_above: 64,
            max_connections: 10_000,
        }
    }
}

/// Whether the UDP listener is serving, for `Alt-Svc` on the TCP listener (RFC 7838: only
/// advertise what answers).
#[derive(Debug, Clone, Default)]
pub struct H3Health(Arc<AtomicBool>);

impl H3Health {
    /// Serving now.
    pub fn serving(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

/// The QUIC endpoint on `addr`, with the ingress's TLS configuration (certificates by SNI, the
/// device certificate asked for) offering ALPN `h3`.
pub fn endpoint(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    limits: H3Limits,
) -> Result<quinn::Endpoint, String> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("QUIC TLS configuration: {e}"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams))
        // h3's control and QPACK streams, and a little room for GREASE
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(8))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(limits.idle_timeout)
                .map_err(|_| "the HTTP/3 idle timeout is too long".to_string())?,
        ));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server, addr).map_err(|e| format!("binding UDP {addr}: {e}"))
}

/// Serves HTTP/3 on `endpoint` until `stop` turns true.
pub async fn serve(
    endpoint: quinn::Endpoint,
    devices: Arc<palisade_link::device::DeviceClientVerifier>,
    gateway: Arc<Gateway>,
    limits: H3Limits,
    health: H3Health,
    mut stop: watch::Receiver<bool>,
) {
    health.set(true);
    let handshaking = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = stop.changed() => break,
        };
        if endpoint.open_connections() >= limits.max_connections {
            incoming.refuse();
            continue;
        }
        if handshaking.load(Ordering::Relaxed) >= limits.retry_above
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            let _ = incoming.retry();
            continue;
        }
        // the device CA this handshake checks against: the one the replica holds now
        if let Some(pem) = gateway.replica.view().and_then(|v| v.device_ca.clone())
            && let Err(e) = devices.set_ca(&pem)
        {
            tracing::error!(error = %e, "the catalog's device CA is unusable");
        }
        let peer = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "QUIC connection refused");
                continue;
            }
        };
        let gateway = gateway.clone();
        let handshaking = handshaking.clone();
        tokio::spawn(async move {
            handshaking.fetch_add(1, Ordering::Relaxed);
            let conn = tokio::time::timeout(limits.handshake_timeout, connecting).await;
            handshaking.fetch_sub(1, Ordering::Relaxed);
            match conn {
                Ok(Ok(conn)) => connection(conn, gateway, limits).await,
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "QUIC handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "QUIC handshake timed out"),
            }
        });
    }
    health.set(false);
    endpoint.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// RFC 9114 error codes used here.
const H3_NO_ERROR: u32 = 0x100;

/// The application error code closing a QUIC connection whose device certificate stopped
/// counting (the device revoked, wiped, renewed or re-enrolled): `PDEV`.
pub const DEVICE_ENDED: u32 = 0x5044_4556;

/// Closes `conn` with [`DEVICE_ENDED`] once the device it presented is no longer the enrolled
/// holder of that certificate: checked on every replica change and every few seconds (the
/// certificate expires too), until the connection closes. Streams are decided one by one
/// anyway; this ends the connection itself, as a revoked device's connection should.
async fn watch_device(
    conn: quinn::Connection,
    replica: Arc<Replica>,
    device: Arc<PresentedDevice>,
) {
    let mut applied = replica.watch();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        let credential = DeviceCredential {
            id: &device.id,
            fingerprint: &device.fingerprint,
        };
        let current = replica.view().is_some_and(|v| {
            palisade_edge_core::device::resolve(&v, credential, crate::http::now_secs())
                .is_ok_and(|d| d.state == DeviceState::Enrolled)
        });
        if !current {
            tracing::info!(client = %conn.remote_address(), device = %device.id, "closing a QUIC connection: the device certificate no longer counts");
            conn.close(
                quinn::VarInt::from_u32(DEVICE_ENDED),
                b"the device certificate no longer counts",
            );
            return;
        }
    }
}

/// Serves the request streams of one connection.
async fn connection(conn: quinn::Connection, gateway: Arc<Gateway>, limits: H3Limits) {
    let peer = conn.remote_address();
    let device = presented_device(&conn, peer);
    if let Some(d) = &device {
        tokio::spawn(watch_device(
            conn.clone(),
            gateway.replica.clone(),
            d.clone(),
        ));
    }
    let svc = EdgeService::new(gateway, peer, device);
    let mut builder = h3::server::builder();
    builder.max_field_section_size(limits.max_header_bytes as u64);
    let mut h3 = match builder
        .build::<_, Bytes>(Checking::new(conn, limits.head_bytes()))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(client = %peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let svc = svc.clone();
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => request(req, stream, svc, peer).await,
                        Err(e) => {
                            tracing::debug!(client = %peer, error = %e, "HTTP/3 request refused")
                        }
                    }
                });
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "HTTP/3 connection ended");
                return;
            }
        }
    }
}

type Stream = h3::server::RequestStream<Checked<h3_quinn::BidiStream<Bytes>>, Bytes>;

/// One request stream: through the edge service, the answer back.
async fn request(req: Request<()>, stream: Stream, mut svc: EdgeService, peer: SocketAddr) {
    let (mut send, mut recv) = stream.split();
    if let Some(name) = connection_specific(req.headers()) {
        // RFC 9114 4.2: malformed, a stream error of type H3_MESSAGE_ERROR
        tracing::info!(client = %peer, header = name, "refused an HTTP/3 request with a connection-specific header");
        recv.stop_sending(h3::error::Code::H3_MESSAGE_ERROR);
        send.stop_stream(h3::error::Code::H3_MESSAGE_ERROR);
        return;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (mut parts, ()) = req.into_parts();
    parts.version = http::Version::HTTP_3;
    let req = Request::from_parts(
        parts,
        RequestBody {
            stream: recv,
            declared,
            seen: 0,
            data_done: false,
            done: false,
        },
    );
    let Ok(resp) = svc.call(req).await;
    let (mut parts, mut body) = resp.into_parts();
    strip_connection_headers(&mut parts.headers);
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(client = %peer, error = %e, "HTTP/3 response not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => send.send_data(data).await,
                Err(f) => match f.into_trailers() {
                    Ok(t) => send.send_trailers(t).await,
                    Err(_) => Ok(()),
                },
            },
            Err(e) => {
                // the answer was cut (access ended, or the upstream failed): the stream
                // ends in an error, never in a clean but truncated answer
                tracing::debug!(client = %peer, error = %e, "HTTP/3 response cut");
                send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                return;
            }
        };
        if let Err(e) = sent {
            tracing::debug!(client = %peer, error = %e, "HTTP/3 response not delivered");
            return;
        }
    }
    let _ = send.finish().await;
}

/// Headers that describe an HTTP/1.1 connection: forbidden in HTTP/3 (RFC 9114 4.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Removes connection-specific headers from an answer going out on HTTP/3.
fn strip_connection_headers(h: &mut HeaderMap) {
    for name in CONNECTION_SPECIFIC {
        h.remove(name);
    }
}

/// The connection-specific header a request carries, if any (`te` other than `trailers`
/// counts): such a request is malformed in HTTP/3.
fn connection_specific(h: &HeaderMap) -> Option<&'static str> {
    if let Some(name) = CONNECTION_SPECIFIC.iter().find(|n| h.contains_key(**n)) {
        return Some(name);
    }
    h.get_all(header::TE)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        .then_some("te")
}

/// The device certificate the QUIC handshake verified, read once per connection.
fn presented_device(conn: &quinn::Connection, peer: SocketAddr) -> Option<Arc<PresentedDevice>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let leaf = certs.first()?;
    match PresentedDevice::from_der(leaf.as_ref()) {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::info!(client = %peer, error = %e, "a client certificate names no device");
            None
        }
    }
}

/// A request body read from an HTTP/3 stream: its DATA frames, then its trailers. A body that
/// carries more or fewer bytes than its `content-length` fails (RFC 9114 4.1.2: malformed).
struct RequestBody {
    stream: h3::server::RequestStream<Checked<h3_quinn::RecvStream>, Bytes>,
    declared: Option<u64>,
    seen: u64,
    data_done: bool,
    done: bool,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match this.stream.poll_recv_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(Some(mut buf))) => {
                    let data = buf.copy_to_bytes(buf.remaining());
                    this.seen += data.len() as u64;
                    if this.declared.is_some_and(|d| this.seen > d) {
                        this.done = true;
                        return Poll::Ready(Some(Err(
                            "the request body is longer than its content-length".into(),
                        )));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Ok(None)) => {
                    this.data_done = true;
                    if this.declared.is_some_and(|d| this.seen != d) {
                        this.done = true;
                        return Poll::Ready(Some(Err(
                            "the request body is shorter than its content-length".into(),
                        )));
                    }
                }
            }
        }
        match this.stream.poll_recv_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.done = true;
                match r {
                    Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    Ok(None) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.declared {
            Some(d) => hyper::body::SizeHint::with_exact(d.saturating_sub(self.seen)),
            None => hyper::body::SizeHint::default(),
        }
    }
}

/// The `Alt-Svc` value advertising HTTP/3 on `port`.
pub fn alt_svc(port: u16) -> HeaderValue {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or_else(|_| HeaderValue::from_static("clear"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    #[test]
    fn connection_headers_never_go_out_on_http3() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/html"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn requests_with_connection_headers_are_malformed() {
        let with = |k: &'static str, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            connection_specific(&h)
        };
        assert_eq!(with("connection", "close"), Some("connection"));
        assert_eq!(
            with("transfer-encoding", "chunked"),
            Some("transfer-encoding")
        );
        assert_eq!(with("te", "gzip"), Some("te"));
        assert_eq!(with("te", "trailers"), None);
        assert_eq!(with("accept", "*/*"), None);
    }

    #[test]
    fn alt_svc_names_the_port() {
        assert_eq!(alt_svc(8443), "h3=\":8443\"; ma=86400");
    }
}
