//! `DeviceEnrollment`: what devices call, on the device listener (`listener.rs`).
//!
//! - `Enroll` takes a one-time token and a CSR. The token names a pending device; the
//!   controller issues that device a certificate from the device CA and writes
//!   `EnrollDevice`, which consumes the token in the state machine. Two devices racing with one
//!   token: both may be issued a certificate, but only the write that consumed the token
//!   records its fingerprint, and edges accept only the recorded one.
//! - `Renew` is authenticated by the device's current certificate (verified by TLS against the
//!   device CA, then by its fingerprint against the catalog) and replaces it.

use std::time::Duration;

use palisade_link::device::PresentedDevice;
use palisade_policy::catalog::{Actor, Command, DeviceRecord, Posture};
use palisade_proto::v1 as pb;
use palisade_proto::v1::device_enrollment_server::DeviceEnrollment;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::ca::{self, IssueError};
use crate::controller::{Controller, now_ms};
use crate::convert;
use crate::seal::Slot;

/// Longest enrollment token accepted.
const MAX_TOKEN_BYTES: usize = 256;
/// How long a posture nonce is accepted.
const NONCE_TTL_MS: i64 = 5 * 60 * 1000;
/// How far ahead of this controller's clock another member may have issued a nonce.
const NONCE_SKEW_MS: i64 = 5_000;
/// How long an enrollment keeps looking for a token it does not find: a device created through
/// another member a moment ago reaches this one with the leader's next heartbeat or two.
const CATCH_UP: Duration = Duration::from_secs(1);
/// How often a lookup that missed looks again while catching up.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The service.
#[derive(Debug, Clone)]
pub struct EnrollmentService {
    ctl: Controller,
    cert_ttl: Duration,
}

impl EnrollmentService {
    /// Issues certificates valid for `cert_ttl`.
    pub fn new(ctl: Controller, cert_ttl: Duration) -> Self {
        Self { ctl, cert_ttl }
    }

    /// Waits until this member applied what it knows is committed, then a little longer (at
    /// most until `deadline`). A member learns the commit index from the leader's next message,
    /// so what was committed through another member a moment ago can still be unknown here:
    /// the caller looks again after each wait.
    async fn caught_up(&self, deadline: tokio::time::Instant) {
        let commit = self.ctl.raft_status().commit_index;
        let mut applied = self.ctl.state.applied();
        let _ = tokio::time::timeout_at(deadline, applied.wait_for(|r| *r >= commit)).await;
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LOOK_AGAIN)).await;
    }

    /// Issues device `id` a certificate for `csr_der`.
    fn issue(&self, id: &str, csr_der: &[u8]) -> Result<ca::Issued, Status> {
        let Some(dca) = self.ctl.state.read(|s| s.catalog.device_ca.clone()) else {
            return Err(Status::unavailable(
                "the device CA is not created yet; try again in a few seconds",
            ));
        };
        let key = self
            .ctl
            .key
            .open(Slot::DeviceCaKey, &dca.key.0)
            .map_err(|e| {
                tracing::error!(error = %e, "the device CA key does not open with this data key");
                Status::internal("the device CA is unusable on this controller")
            })?;
        ca::issue(
            &dca.certificate_pem,
            &key,
            csr_der,
            id,
            self.cert_ttl,
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|e| match e {
            IssueError::Ca => {
                tracing::error!("the device CA cannot sign");
                Status::internal(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        })
    }

    fn device(&self, id: &str) -> Option<pb::Device> {
        self.ctl
            .state
            .read(|s| s.catalog.devices.get(id).map(convert::device))
    }
}

impl EnrollmentService {
    /// When the nonce was issued to device `id`, if it is one of ours, for it, and fresh.
    fn nonce_issued_at(&self, id: &str, nonce: &str) -> Result<i64, Status> {
        use base64::Engine;
        let refused = || Status::invalid_argument("the posture nonce is not valid for this device");
        if nonce.is_empty() || nonce.len() > 256 {
            return Err(Status::invalid_argument(
                "a posture nonce is required (PostureNonce)",
            ));
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| refused())?;
        let plain = self
            .ctl
            .key
            .open(Slot::PostureNonce(id), &sealed)
            .map_err(|_| refused())?;
        let issued = i64::from_be_bytes(plain.try_into().map_err(|_| refused())?);
        let age = now_ms() - issued;
        if !(-NONCE_SKEW_MS..=NONCE_TTL_MS).contains(&age) {
            return Err(Status::invalid_argument(
                "the posture nonce has expired; ask for a new one",
            ));
        }
        Ok(issued)
    }
}

/// The writer of a device's own writes (kept in the user trail, so devices cannot flush the
/// admin trail).
fn device_actor(id: &str) -> Actor {
    Actor {
        subject: id.to_string(),
        kind: "device".into(),
    }
}

/// The device certificate the caller presented, if TLS verified one.
fn presented<T>(req: &Request<T>) -> Result<PresentedDevice, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("this call needs the device's certificate (TLS client certificate)")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate was presented"))?;
    PresentedDevice::from_der(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("not a device certificate: {e}")))
}

/// The enrolled device that holds `p`, or why not.
fn holder(ctl: &Controller, p: &PresentedDevice) -> Result<DeviceRecord, Status> {
    let d = ctl
        .state
        .read(|s| s.catalog.devices.get(&p.id).cloned())
        .ok_or_else(|| Status::unauthenticated("this device is not known"))?;
    if !d.holds(&p.fingerprint, now_ms()) {
        return Err(Status::unauthenticated(
            "this certificate is no longer the device's (wiped, revoked, renewed or expired)",
        ));
    }
    Ok(d)
}

#[tonic::async_trait]
impl DeviceEnrollment for EnrollmentService {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        if r.enrollment_token.is_empty() || r.enrollment_token.len() > MAX_TOKEN_BYTES {
            return Err(Status::invalid_argument("an enrollment token is required"));
        }
        let posture = match r.posture {
            Some(p) => convert::posture_from_pb(p, now_ms())?,
            None => Posture::default(),
        };
        let token_sha256: String = Sha256::digest(r.enrollment_token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let lookup = || {
            self.ctl.state.read(|s| {
                s.catalog
                    .device_by_token(&token_sha256)
                    .map(|d| d.id.clone())
            })
        };
        // A device created a moment ago through another member may not be applied here yet:
        // look again as this member catches up, for up to CATCH_UP (an unknown token waits
        // that long, which also slows guessing).
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let found = loop {
            let found = lookup();
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                break found;
            }
            self.caught_up(deadline).await;
        };
        let Some(id) = found else {
            return Err(Status::unauthenticated(
                "the enrollment token is unknown or already used",
            ));
        };
        let issued = self.issue(&id, &r.csr_der)?;
        let written = self
            .ctl
            .write(
                device_actor(&id),
                Command::EnrollDevice {
                    id: id.clone(),
                    token_sha256,
                    certificate: issued.certificate.clone(),
                    posture,
                },
            )
            .await?;
        tracing::info!(device = %id, fingerprint = %issued.certificate.fingerprint_sha256, "device enrolled");
        metrics::counter!("palisade_device_enrollments_total").increment(1);
        Ok(Response::new(pb::EnrollResponse {
            device: self.device(&id),
            certificate_chain_pem: issued.chain_pem,
            write: Some(written.to_pb()),
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let p = presented(&req)?;
        let d = holder(&self.ctl, &p)?;
        let issued = self.issue(&d.id, &req.into_inner().csr_der)?;
        let written = self
            .ctl
            .write(
                device_actor(&d.id),
                Command::RenewDeviceCertificate {
                    id: d.id.clone(),
                    presented_sha256: p.fingerprint,
                    certificate: issued.certificate.clone(),
                },
            )
            .await?;
        tracing::info!(device = %d.id, fingerprint = %issued.certificate.fingerprint_sha256, "device certificate renewed");
        Ok(Response::new(pb::EnrollResponse {
            device: self.device(&d.id),
            certificate_chain_pem: issued.chain_pem,
            write: Some(written.to_pb()),
        }))
    }

    async fn posture_nonce(
        &self,
        req: Request<pb::PostureNonceRequest>,
    ) -> Result<Response<pb::PostureNonceResponse>, Status> {
        let p = presented(&req)?;
        let d = holder(&self.ctl, &p)?;
        let issued = now_ms();
        let sealed = self
            .ctl
            .key
            .seal(Slot::PostureNonce(&d.id), &issued.to_be_bytes())
            .map_err(|_| Status::unavailable("no nonce can be issued now"))?;
        use base64::Engine;
        Ok(Response::new(pb::PostureNonceResponse {
            nonce: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
            expires_at: Some(crate::controller::ts(issued + NONCE_TTL_MS)),
        }))
    }

    async fn report_posture(
        &self,
        req: Request<pb::ReportPostureRequest>,
    ) -> Result<Response<pb::ReportPostureResponse>, Status> {
        let p = presented(&req)?;
        let d = holder(&self.ctl, &p)?;
        let r = req.into_inner();
        let issued = self.nonce_issued_at(&d.id, &r.nonce)?;
        let posture = convert::posture_from_pb(
            r.posture
                .ok_or_else(|| Status::invalid_argument("posture is required"))?,
            now_ms(),
        )?;
        let written = self
            .ctl
            .write(
                device_actor(&d.id),
                Command::ReportPosture {
                    id: d.id.clone(),
                    posture,
                    nonce_issued_at_ms: issued,
                },
            )
            .await?;
        metrics::counter!("palisade_device_posture_reports_total").increment(1);
        Ok(Response::new(pb::ReportPostureResponse {
            write: Some(written.to_pb()),
        }))
    }
}
