//! The device listener: TLS with the controller's own certificate, asking for (never
//! requiring) a client certificate from the device CA, serving `DeviceEnrollment` only. It is
//! apart from the cluster listener, which admits only internal-CA certificates: a device never
//! reaches the admin API, the Raft transport or the edge services, and an internal identity is
//! never read from a device certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_link::device::DeviceClientVerifier;
use palisade_proto::v1 as pb;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::service::EnrollmentService;
use crate::controller::Controller;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more wait in the accept queue.
const MAX_HANDSHAKES: usize = 256;

/// TLS for the device listener: the controller's certificate, device client certificates
/// optional and checked against the device CA `verifier` holds.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    verifier: Arc<DeviceClientVerifier>,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("--tls-cert")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("--tls-key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_client_cert_verifier(verifier)
    .with_single_cert(certs, key)
    .context("the controller's certificate and key")?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Serves `DeviceEnrollment` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    verifier: Arc<DeviceClientVerifier>,
    ctl: Controller,
    cert_ttl: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let (tx, rx) = mpsc::channel::<Result<TlsStream<tokio::net::TcpStream>, std::io::Error>>(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let state = ctl.state.clone();
    let mut accept_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = accept_stop.changed() => return,
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            // the CA the handshake checks against: whatever the catalog holds now
            if let Some(pem) = state.read(|s| {
                s.catalog
                    .device_ca
                    .as_ref()
                    .map(|c| c.certificate_pem.clone())
            }) && let Err(e) = verifier.set_ca(&pem)
            {
                tracing::error!(error = %e, "the catalog's device CA is unusable");
            }
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "device TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(client = %peer, "device TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(crate::rpc_metrics::RpcMetricsLayer)
        .add_service(pb::device_enrollment_server::DeviceEnrollmentServer::new(
            EnrollmentService::new(ctl, cert_ttl),
        ))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

/// Binds the device listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the device listener {addr}"))
}
