//! Palisade's internal links: every gRPC connection one Palisade process opens to another
//! (edge → controller, controller → controller, `palisadectl` → controller).
//!
//! Mutual TLS alone only proves that the server holds *some* certificate from the cluster's
//! CA. Edges, admins and the public ingress hold such certificates too, so a client that only
//! checked the CA would take any of them for a controller (contract 9: only the holder of a
//! controller identity speaks for the cluster). Here every client checks the server's Palisade
//! identity, the SAN URI `urn:palisade:controller:<id>`, and the Raft client checks that it is
//! the member it dialled. Host names play no part: controllers are found by address, and a
//! certificate proves who it is by its identity, not by the name it was reached under.
//!
//! Links also carry what a client needs to notice a frozen peer: HTTP/2 keepalive pings with a
//! timeout, a connect timeout and a deadline on every call.
//!
//! This crate must never accept a server for anything but the identity it was asked to expect.

#![forbid(unsafe_code)]

pub mod admin;
pub mod device;
#[cfg(feature = "device-client")]
pub mod device_client;
pub mod idempotency;
pub mod identity;
pub mod managed;
#[cfg(feature = "dev-pki")]
pub mod pki;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Identity};

pub use idempotency::{IDEMPOTENCY_HEADER, IdempotencyKey, KeyHeader};
pub use identity::{Principal, Role};
pub use verify::ServerIdentityVerifier;

/// Which server identity a link accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any controller of the cluster (edges and admins reach whichever member answers).
    AnyController,
    /// Exactly this controller (Raft peers and forwarded writes dial one member).
    Controller(u64),
}

impl Expect {
    /// Whether `p` is acceptable.
    pub fn accepts(self, p: &Principal) -> bool {
        match (self, p) {
            (Expect::AnyController, Principal::Controller(_)) => true,
            (Expect::Controller(want), Principal::Controller(got)) => want == *got,
            _ => false,
        }
    }
}

/// The TCP connector under every link (TLS is added by tonic from the endpoint, and the
/// endpoint's connect timeout then covers both).
fn tcp(opts: &LinkOptions) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(opts.connect_timeout));
    http
}

/// An error with its causes, for logs and operator messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer could not be reached, or did not finish the handshake in time.
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The CA bundle holds no usable certificate.
    #[error("the CA bundle holds no usable certificate: {0}")]
    Ca(String),
    /// The address does not form a URI.
    #[error("bad address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Timeouts of one link. The defaults detect a frozen peer (one that accepts TCP but never
/// answers) in about two seconds.
#[derive(Debug, Clone, Copy)]
pub struct LinkOptions {
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Deadline of every call, unless the call sets a shorter one (`None`: streams that live
    /// as long as the connection, such as the edge subscription).
    pub call_timeout: Option<Duration>,
    /// Interval of HTTP/2 keepalive pings, also while idle.
    pub keepalive_interval: Duration,
    /// A ping not answered within this closes the connection, failing every call on it.
    pub keepalive_timeout: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Some(Duration::from_secs(10)),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
        }
    }
}

/// This process's client identity and the cluster's CA: everything needed to open links.
#[derive(Clone)]
pub struct LinkTls {
    identity: Option<Identity>,
    roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// The CA certificates in `ca_pem` as a root store (at least one).
fn roots(ca_pem: &str) -> Result<RootCertStore, LinkError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| LinkError::Ca(e.to_string()))?;
        roots.add(c).map_err(|e| LinkError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(LinkError::Ca("no certificate in it".into()));
    }
    Ok(roots)
}

impl LinkTls {
    /// Presents `cert_pem`/`key_pem` and trusts the CA certificates in `ca_pem`.
    pub fn new(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, LinkError> {
        Ok(Self {
            identity: Some(Identity::from_pem(cert_pem, key_pem)),
            roots: Arc::new(roots(ca_pem)?),
        })
    }

    /// Trusts the CA certificates in `ca_pem` and presents no certificate: a device that has
    /// none yet (enrollment with a one-time token).
    pub fn anonymous(ca_pem: &str) -> Result<Self, LinkError> {
        Ok(Self {
            identity: None,
            roots: Arc::new(roots(ca_pem)?),
        })
    }

    /// A channel to `addr` (`host:port`) that accepts only a server holding `expect`,
    /// connecting now. The whole connection, TCP and TLS, must be up within
    /// `opts.connect_timeout`: a frozen peer accepts TCP connections (the kernel answers) but
    /// never finishes a TLS handshake.
    pub async fn connect(
        &self,
        addr: &str,
        expect: Expect,
        opts: &LinkOptions,
    ) -> Result<Channel, LinkError> {
        self.endpoint(addr, expect, opts)?
            .connect_with_connector(tcp(opts))
            .await
            .map_err(|e| LinkError::Connect {
                addr: addr.to_string(),
                reason: error_chain(&e),
            })
    }

    /// As `connect`, connecting on first use (and again after the connection is lost), each
    /// time within `opts.connect_timeout`.
    pub fn connect_lazy(
        &self,
        addr: &str,
        expect: Expect,
        opts: &LinkOptions,
    ) -> Result<Channel, LinkError> {
        Ok(self
            .endpoint(addr, expect, opts)?
            .connect_with_connector_lazy(tcp(opts)))
    }

    /// An endpoint to `addr` (`host:port`) that accepts only a server holding `expect`. Not
    /// public: tonic's own `connect` bounds only the TCP connect, not the TLS handshake.
    fn endpoint(
        &self,
        addr: &str,
        expect: Expect,
        opts: &LinkOptions,
    ) -> Result<Endpoint, LinkError> {
        let bad = |reason: String| LinkError::Address {
            addr: addr.to_string(),
            reason,
        };
        let verifier = Arc::new(ServerIdentityVerifier::new(self.roots.clone(), expect));
        let mut tls = ClientTlsConfig::new().assume_http2(true);
        if let Some(identity) = &self.identity {
            tls = tls.identity(identity.clone());
        }
        let mut ep = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .tls_config_with_verifier(tls, verifier)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(opts.keepalive_interval)
            .keep_alive_timeout(opts.keepalive_timeout)
            .keep_alive_while_idle(true);
        if let Some(t) = opts.call_timeout {
            ep = ep.timeout(t);
        }
        Ok(ep)
    }
}

#[cfg(test)]
mod tests;
