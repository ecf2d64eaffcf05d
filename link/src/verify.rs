//! The server certificate check of every internal link: the chain must lead to the cluster's
//! CA with the server-authentication usage (webpki), and the certificate must carry the
//! expected controller identity. The host name the server was reached under is not checked:
//! controllers are addressed by IP or by a service name that every member shares, so a name
//! proves nothing, while the identity in the certificate does.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::Expect;
use crate::identity::Principal;

/// Accepts a server only if it chains to the roots and holds the expected identity.
#[derive(Debug)]
pub struct ServerIdentityVerifier {
    roots: Arc<RootCertStore>,
    expect: Expect,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerIdentityVerifier {
    /// A verifier trusting `roots` and accepting only `expect`.
    pub fn new(roots: Arc<RootCertStore>, expect: Expect) -> Self {
        Self {
            roots,
            expect,
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        match Principal::from_der(end_entity.as_ref()) {
            Ok(p) if self.expect.accepts(&p) => Ok(ServerCertVerified::assertion()),
            _ => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
