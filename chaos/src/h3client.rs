//! An HTTP/3 client (quinn + h3) for the chaos probes, the tests and the benchmarks: one QUIC
//! connection to an edge's UDP listener, any number of request streams on it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};

/// One HTTP/3 connection.
pub struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    /// The QUIC connection (to watch it close).
    pub conn: quinn::Connection,
    /// `host:port` for `:authority`.
    pub authority: String,
    _endpoint: quinn::Endpoint,
}

impl std::fmt::Debug for H3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Drop for H3 {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A request stream, its answer being read.
pub type Stream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// What came back on one stream.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// A QUIC connection offering ALPN `h3` to `addr` for `host` (SNI), trusting `ca`, presenting
/// `client` (certificate chain PEM, key PEM) if given; with its endpoint, which must outlive
/// it. For tests that write HTTP/3 frames by hand.
pub async fn quic(
    ca: &str,
    addr: SocketAddr,
    host: &str,
    client: Option<(&str, &str)>,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut tls = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?,
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let local = match addr {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let mut endpoint = quinn::Endpoint::client(local).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(addr, host)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok((endpoint, conn))
}

impl H3 {
    /// Connects to `addr` for `host` (SNI), trusting `ca`, presenting `client` (certificate
    /// chain PEM, key PEM) if given.
    pub async fn connect(
        ca: &str,
        addr: SocketAddr,
        host: &str,
        client: Option<(&str, &str)>,
    ) -> Result<H3, String> {
        let (endpoint, conn) = quic(ca, addr, host, client).await?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3 {
            send,
            driver,
            conn,
            authority: format!("{host}:{}", addr.port()),
            _endpoint: endpoint,
        })
    }

    /// GET `path` with the session `cookie` (if any).
    pub async fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<Answer, String> {
        let mut req = Request::get(format!("https://{}{path}", self.authority));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("__Host-palisade-session={c}"));
        }
        self.send(req.body(()).map_err(|e| e.to_string())?, None)
            .await
    }

    /// GET `path` with the session `cookie` (if any) and return once the answer's head is in:
    /// (status, the stream to read the body from).
    pub async fn open(
        &mut self,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<(u16, Stream), String> {
        let mut req = Request::get(format!("https://{}{path}", self.authority));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("__Host-palisade-session={c}"));
        }
        let mut stream = self
            .send
            .send_request(req.body(()).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
        Ok((resp.status().as_u16(), stream))
    }

    /// `n` GETs of `path` with the session `cookie` (if any), all sent at once on this
    /// connection, each on its own stream; the status of each, or why it failed.
    pub async fn flood(
        &self,
        n: usize,
        path: &str,
        cookie: Option<&str>,
    ) -> Vec<Result<u16, String>> {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut send = self.send.clone();
            let mut req = Request::get(format!("https://{}{path}", self.authority));
            if let Some(c) = cookie {
                req = req.header("cookie", format!("__Host-palisade-session={c}"));
            }
            tasks.push(tokio::spawn(async move {
                let req = req.body(()).map_err(|e| e.to_string())?;
                let mut stream = send.send_request(req).await.map_err(|e| e.to_string())?;
                stream.finish().await.map_err(|e| e.to_string())?;
                let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
                while stream
                    .recv_data()
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {}
                Ok(resp.status().as_u16())
            }));
        }
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        out
    }

    /// Sends `req` with `body`, reads the whole answer.
    pub async fn send(&mut self, req: Request<()>, body: Option<Bytes>) -> Result<Answer, String> {
        let mut stream = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(b) = body {
            stream.send_data(b).await.map_err(|e| e.to_string())?;
        }
        stream.finish().await.map_err(|e| e.to_string())?;
        let resp = stream.recv_response().await.map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok(Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
