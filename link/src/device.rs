//! Device certificates: the identity a managed device presents (a SAN URI
//! `urn:palisade:device:<device id>`, issued by the device CA, never the internal CA), and the
//! TLS client-certificate check that listeners facing devices use.
//!
//! The device CA lives in the catalog, so a listener starts before it knows it (a new cluster
//! creates it with its first leader). `DeviceClientVerifier` asks for a certificate, lets a
//! client without one through (devices are optional on these listeners: browsers on unmanaged
//! machines, devices enrolling with a token), and verifies a presented one against the device
//! CA installed so far; with none installed, every presented certificate is refused. Whether
//! the certificate still belongs to an enrolled device is decided above TLS, from its
//! fingerprint in the catalog.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The SAN URI prefix of a device identity.
pub const DEVICE_URI_PREFIX: &str = "urn:palisade:device:";

/// SHA-256 of a certificate (DER), lowercase hex: how the catalog names a device certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A certificate's validity (DER): not before, not after, in Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// A device certificate as presented: the device it names and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresentedDevice {
    /// The device id from the SAN URI.
    pub id: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
}

impl PresentedDevice {
    /// Reads a device certificate (DER): exactly one `urn:palisade:device:` SAN URI.
    pub fn from_der(der: &[u8]) -> Result<Self, crate::identity::IdentityError> {
        use crate::identity::IdentityError;
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
        let mut ids = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && let Some(id) = uri.strip_prefix(DEVICE_URI_PREFIX)
                {
                    ids.push(id.to_string());
                }
            }
        }
        match ids.as_slice() {
            [] => Err(IdentityError::Missing),
            [id] if !id.is_empty() && id.len() <= 128 => Ok(PresentedDevice {
                id: id.clone(),
                fingerprint: fingerprint(der),
            }),
            [id] => Err(IdentityError::Malformed(id.chars().take(64).collect())),
            _ => Err(IdentityError::Ambiguous),
        }
    }
}

/// Why a device CA could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceCaError {
    /// No certificate in the PEM.
    #[error("the device CA PEM holds no certificate")]
    Empty,
    /// A certificate rustls refuses as a root.
    #[error("the device CA certificate is refused: {0}")]
    Refused(String),
}

/// The optional client-certificate check of a listener facing devices; see the module doc.
#[derive(Debug)]
pub struct DeviceClientVerifier {
    inner: RwLock<Option<(String, Arc<dyn ClientCertVerifier>)>>,
    algs: WebPkiSupportedAlgorithms,
}

impl Default for DeviceClientVerifier {
    fn default() -> Self {
        Self {
            inner: RwLock::new(None),
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl DeviceClientVerifier {
    /// A verifier that knows no device CA yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Installs the device CA (PEM). Installing the same CA again does nothing.
    pub fn set_ca(&self, ca_pem: &str) -> Result<(), DeviceCaError> {
        if self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|(pem, _)| pem == ca_pem)
        {
            return Ok(());
        }
        let mut roots = RootCertStore::empty();
        let mut any = false;
        for der in pem_certs(ca_pem) {
            roots
                .add(der)
                .map_err(|e| DeviceCaError::Refused(e.to_string()))?;
            any = true;
        }
        if !any {
            return Err(DeviceCaError::Empty);
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| DeviceCaError::Refused(e.to_string()))?;
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) =
            Some((ca_pem.to_string(), verifier));
        Ok(())
    }

    /// Whether a device CA is installed.
    pub fn has_ca(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// The certificates in a PEM text.
fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

impl ClientCertVerifier for DeviceClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // no hints: the CA may change under a shared reference, and a browser then offers
        // whatever certificates it has, which the check below sorts out
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, v)| v.clone());
        match inner {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
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
