//! The sample upstream application of the local cluster and the tests. It answers every request
//! with a JSON description of what it received, and it verifies the edge's identity assertion the
//! way a real application should: against the JWKS an edge publishes.
//!
//! - `GET /stream?bytes=N` streams N bytes back in 64 KiB chunks;
//! - `GET /events` is a server-sent event stream: one event every 100 ms, at most 6,000;
//! - `GET /set-cookie` answers with a `Set-Cookie` for Palisade's own session cookie (a hostile
//!   or buggy application) and one of its own;
//! - any request with a body gets the body's length and SHA-256 in the answer (read streaming);
//! - an `Upgrade: websocket` request switches protocols and then echoes bytes.
//!
//! The answer also says which path servers with other rules would serve (`servlet_path`: a
//! Java servlet container, which drops `;parameters` from each segment and then resolves dot
//! segments; `iis_path`: a case-insensitive server honouring `X-Original-URL` and
//! `X-Rewrite-URL`), so tests can show that routing and the application agree on the path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A running sample upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Verifier {
    jwks_url: String,
    http: reqwest::Client,
    audience: Option<String>,
    cache: Mutex<Option<JwkSet>>,
}

impl Verifier {
    async fn keys(&self, refresh: bool) -> Result<JwkSet, String> {
        if !refresh && let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(k);
        }
        let body = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| format!("fetching the edge JWKS: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("fetching the edge JWKS: {e}"))?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("the edge JWKS: {e}"))?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(set.clone());
        Ok(set)
    }

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        if header.alg != Algorithm::EdDSA {
            return Err(format!("unexpected algorithm {:?}", header.alg));
        }
        let kid = header.kid.ok_or("no kid")?;
        let mut keys = self.keys(false).await?;
        if keys.find(&kid).is_none() {
            keys = self.keys(true).await?;
        }
        let jwk = keys.find(&kid).ok_or("unknown kid")?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&["palisade"]);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

impl Upstream {
    /// Starts on `addr`. Identity assertions are verified against `jwks_url` (an edge's
    /// `/.well-known/palisade/jwks.json`), trusting `ca_pem` for it, and must name `audience`
    /// (the application id) when given.
    pub async fn start(
        addr: SocketAddr,
        jwks_url: String,
        ca_pem: Option<&str>,
        audience: Option<String>,
    ) -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
        if let Some(pem) = ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        let verifier = Arc::new(Verifier {
            jwks_url,
            http: b.build()?,
            audience,
            cache: Mutex::new(None),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let verifier = verifier.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let v = verifier.clone();
                        async move { Ok::<_, Infallible>(handle(&v, req, peer).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Upstream { addr, task })
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

async fn handle(v: &Verifier, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        return upgrade(&mut req);
    }
    if req.uri().path() == "/events" {
        let ticks = futures::stream::unfold(0u32, |i| async move {
            if i >= 6000 {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: tick {i}\n\n")))),
                i + 1,
            ))
        });
        let mut r = Response::new(StreamBody::new(ticks).boxed_unsync());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        return r;
    }
    if req.uri().path() == "/set-cookie" {
        let mut r = Response::new(full("cookies set\n"));
        r.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("__Host-palisade-session=planted; Path=/; Secure; HttpOnly"),
        );
        r.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("app-pref=dark; Path=/"),
        );
        return r;
    }
    if req.uri().path() == "/stream" {
        let n: usize = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
            .min(1 << 30);
        let chunks = (0..n.div_ceil(65536)).map(move |i| {
            let len = (n - i * 65536).min(65536);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len])))
        });
        let mut r = Response::new(StreamBody::new(futures::stream::iter(chunks)).boxed_unsync());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return r;
    }
    let identity = match req
        .headers()
        .get("x-palisade-assertion")
        .and_then(|h| h.to_str().ok())
    {
        None => json!({"verified": false, "error": "no assertion"}),
        Some(t) => match v.verify(t).await {
            Ok(claims) => json!({"verified": true, "claims": claims}),
            Err(e) => json!({"verified": false, "error": e}),
        },
    };
    let headers: Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let servlet = servlet_path(req.uri().path());
    let iis = req
        .headers()
        .get("x-original-url")
        .or_else(|| req.headers().get("x-rewrite-url"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split('?').next().unwrap_or(v).to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
        .to_ascii_lowercase();
    let mut len = 0u64;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut body = req.into_body();
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len() as u64;
                    hash.update(d);
                }
            }
            Err(_) => break,
        }
    }
    let out = json!({
        "app": "sample upstream",
        "method": method,
        "uri": uri,
        "servlet_path": servlet,
        "iis_path": iis,
        "peer": peer.to_string(),
        "identity": identity,
        "headers": headers,
        "body": {"bytes": len, "sha256": hex(hash.finish().as_ref())},
    });
    let mut r = Response::new(full(serde_json::to_string_pretty(&out).unwrap_or_default()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The path a Java servlet container serves for `raw`: `;parameters` are removed from every
/// segment first, then `.` and `..` segments are resolved (so `/a/..;/b` is `/b`).
fn servlet_path(raw: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn upgrade(req: &mut Request<Incoming>) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&key);
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = STANDARD.encode(ctx.finish().as_ref());
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(up) = on.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}
