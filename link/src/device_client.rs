//! The device's side of the controllers' device listener (`DeviceEnrollment`): enroll with a
//! one-time token, renew and report posture with the device certificate. `palisade-agent` does
//! this on managed devices; `palisadectl as-device` does the same for development and tests.
//!
//! The private key is generated here and never leaves the machine: only a certificate signing
//! request is sent.

use std::time::Duration;

use palisade_proto::v1 as pb;
use tonic::Code;

use crate::{Expect, LinkOptions, LinkTls};

/// Why a call to the device listener did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceCallError {
    /// No controller could be reached: worth trying again later.
    #[error("no controller answered: {0}")]
    Unreachable(String),
    /// A controller answered no: final for this request (a used token, a certificate that no
    /// longer counts, a bad request).
    #[error("{}", .0.message())]
    Refused(tonic::Status),
    /// Something on this side is wrong (the CA, the key, the certificate files).
    #[error("{0}")]
    Local(String),
}

impl DeviceCallError {
    /// Whether the controllers no longer accept this device's certificate (wiped, revoked,
    /// renewed elsewhere, expired): the device must enroll again.
    pub fn certificate_refused(&self) -> bool {
        matches!(self, DeviceCallError::Refused(s) if s.code() == Code::Unauthenticated)
    }
}

/// A new ECDSA P-256 key and a certificate request for it: the key as PEM, the request as DER.
pub fn key_and_csr() -> Result<(String, Vec<u8>), DeviceCallError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| DeviceCallError::Local(format!("generating a key: {e}")))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| DeviceCallError::Local(format!("making a certificate request: {e}")))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// Link options for the device listener: short connects, bounded calls.
pub fn options() -> LinkOptions {
    LinkOptions {
        connect_timeout: Duration::from_secs(5),
        call_timeout: Some(Duration::from_secs(30)),
        ..LinkOptions::default()
    }
}

/// A client of the first of `endpoints` that answers, over `tls`.
async fn client(
    tls: &LinkTls,
    endpoints: &[String],
    opts: &LinkOptions,
) -> Result<
    pb::device_enrollment_client::DeviceEnrollmentClient<tonic::transport::Channel>,
    DeviceCallError,
> {
    let mut unreachable = Vec::new();
    for endpoint in endpoints {
        match tls.connect(endpoint, Expect::AnyController, opts).await {
            Ok(ch) => {
                return Ok(pb::device_enrollment_client::DeviceEnrollmentClient::new(
                    ch,
                ));
            }
            Err(e) => unreachable.push(format!("{endpoint}: {e}")),
        }
    }
    Err(DeviceCallError::Unreachable(unreachable.join("; ")))
}

/// Enrolls through the first of `endpoints` that answers (the controllers signed by `ca_pem`):
/// a refusal is final, an unreachable controller is not.
pub async fn enroll(
    ca_pem: &str,
    endpoints: &[String],
    req: pb::EnrollRequest,
    opts: &LinkOptions,
) -> Result<pb::EnrollResponse, DeviceCallError> {
    let tls = LinkTls::anonymous(ca_pem)
        .map_err(|e| DeviceCallError::Local(format!("the controllers' CA: {e}")))?;
    client(&tls, endpoints, opts)
        .await?
        .enroll(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(DeviceCallError::Refused)
}

/// The device's certificate chain and key, as a TLS client identity for the device listener.
pub fn device_tls(
    chain_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<LinkTls, DeviceCallError> {
    LinkTls::new(chain_pem, key_pem, ca_pem)
        .map_err(|e| DeviceCallError::Local(format!("the device certificate or the CA: {e}")))
}

/// Renews the device certificate with a new key (`csr_der`), authorised by the current one.
pub async fn renew(
    tls: &LinkTls,
    endpoints: &[String],
    csr_der: Vec<u8>,
    opts: &LinkOptions,
) -> Result<pb::EnrollResponse, DeviceCallError> {
    client(tls, endpoints, opts)
        .await?
        .renew(pb::RenewRequest { csr_der })
        .await
        .map(tonic::Response::into_inner)
        .map_err(DeviceCallError::Refused)
}

/// Reports posture (with a fresh nonce from the controller); the write's revision.
pub async fn report_posture(
    tls: &LinkTls,
    endpoints: &[String],
    posture: pb::DevicePosture,
    opts: &LinkOptions,
) -> Result<u64, DeviceCallError> {
    let mut c = client(tls, endpoints, opts).await?;
    let nonce = c
        .posture_nonce(pb::PostureNonceRequest {})
        .await
        .map_err(DeviceCallError::Refused)?
        .into_inner()
        .nonce;
    let r = c
        .report_posture(pb::ReportPostureRequest {
            posture: Some(posture),
            nonce,
        })
        .await
        .map_err(DeviceCallError::Refused)?
        .into_inner();
    Ok(r.write.map(|w| w.revision).unwrap_or(0))
}
