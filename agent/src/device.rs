//! The device's identity: its key and certificate in the agent's state directory, enrolled
//! with the managed configuration's one-time token, renewed with the certificate at half its
//! lifetime, and given up when the controllers say it no longer counts (the device was wiped
//! or revoked): then the device needs a new enrollment token.
//!
//! The key is made here and never leaves the device (`device.key`, mode 0600). What the agent
//! learned from the controllers (a refused token, the last posture report) is kept in
//! `agent-state.json` beside it, so that `status` and a restarted agent know it too. A token
//! is never written there, only its SHA-256.

use std::path::{Path, PathBuf};

use palisade_link::device_client::{self, DeviceCallError};
use palisade_link::managed::ManagedConfig;
use palisade_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The device's private key in the state directory.
pub const KEY_FILE: &str = "device.key";
/// The device's certificate chain in the state directory.
pub const CERT_FILE: &str = "device.pem";
/// What the agent learned from the controllers.
pub const RECORD_FILE: &str = "agent-state.json";

/// What the agent learned from the controllers, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// SHA-256 (hex) of an enrollment token the controllers refused: not tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_token: Option<String>,
    /// Why the controllers last refused this device (its token, or its certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// When posture was last reported (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture_reported_at: Option<i64>,
    /// What went wrong at the last step, if anything (an unreachable controller, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Record {
    /// The record in `dir` (empty when there is none or it cannot be read).
    pub fn load(dir: &Path) -> Record {
        std::fs::read(dir.join(RECORD_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&dir.join(RECORD_FILE), &text, false)
    }
}

/// The device's enrolled identity.
#[derive(Clone)]
pub struct Identity {
    /// The device id the certificate names.
    pub device_id: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    chain_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity in `dir`: `None` when the device has not enrolled.
    pub fn load(dir: &Path) -> Result<Option<Identity>, String> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if !cert.exists() && !key.exists() {
            return Ok(None);
        }
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let (chain_pem, key_pem) = (read(&cert)?, read(&key)?);
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
        let presented = palisade_link::device::PresentedDevice::from_der(&leaf)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        let (not_before, not_after) = palisade_link::device::validity(&leaf)
            .ok_or_else(|| format!("{}: unreadable validity", cert.display()))?;
        Ok(Some(Identity {
            device_id: presented.id,
            fingerprint: presented.fingerprint,
            not_before,
            not_after,
            chain_pem,
            key_pem,
        }))
    }

    /// Whether the certificate is past half its lifetime (renewed then, so a device that is
    /// off for a while still comes back with a valid one).
    pub fn renewal_due(&self, now: i64) -> bool {
        now >= self.not_before + (self.not_after - self.not_before) / 2
    }

    fn tls(&self, ca_pem: &str) -> Result<palisade_link::LinkTls, DeviceCallError> {
        device_client::device_tls(&self.chain_pem, &self.key_pem, ca_pem)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (`private`: mode 0600).
fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Creates `dir` (mode 0700) if it is not there.
fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

fn store(dir: &Path, key_pem: &str, chain_pem: &str) -> Result<(), String> {
    create_private_dir(dir)?;
    write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), true)?;
    write_atomic(&dir.join(CERT_FILE), chain_pem.as_bytes(), false)
}

/// Gives the identity up: the key and certificate are deleted.
fn discard(dir: &Path) {
    for f in [KEY_FILE, CERT_FILE] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What one step did with the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Enrolled now, as this device.
    Enrolled(String),
    /// The certificate was renewed.
    Renewed,
    /// Posture was reported.
    Reported,
    /// Nothing was due.
    Idle,
    /// The controllers no longer accept the certificate: it was given up (the device must
    /// enroll again, with a new token).
    GivenUp(String),
    /// Something failed: the problem (tried again at the next step, unless it is a refused
    /// token).
    Failed(String),
}

/// One step of the identity's life: enroll when there is none, renew when due, report
/// posture every `posture_every` seconds. `posture` is what the device reports now.
pub async fn step(
    dir: &Path,
    config: &ManagedConfig,
    posture: pb::DevicePosture,
    posture_every: i64,
    now: i64,
) -> Step {
    if let Err(e) = create_private_dir(dir) {
        return Step::Failed(e);
    }
    let mut record = Record::load(dir);
    let outcome = step_with(dir, config, posture, posture_every, now, &mut record).await;
    record.problem = match &outcome {
        Step::Failed(p) => Some(p.clone()),
        _ => None,
    };
    if let Err(e) = record.save(dir) {
        return Step::Failed(e);
    }
    outcome
}

async fn step_with(
    dir: &Path,
    config: &ManagedConfig,
    posture: pb::DevicePosture,
    posture_every: i64,
    now: i64,
    record: &mut Record,
) -> Step {
    let opts = device_client::options();
    let ca = &config.controller_ca_pem;
    let endpoints = &config.controllers;
    let identity = match Identity::load(dir) {
        // a certificate for another device (the MDM re-provisioned this one): enroll anew
        Ok(Some(id)) if id.device_id != config.device_id => {
            discard(dir);
            None
        }
        Ok(id) => id,
        Err(e) => {
            discard(dir);
            return Step::Failed(format!(
                "the device identity was unreadable and is discarded: {e}"
            ));
        }
    };
    let Some(id) = identity else {
        let hash = token_hash(&config.enrollment.token);
        if record.refused_token.as_deref() == Some(hash.as_str()) {
            return Step::Failed(format!(
                "enrollment refused ({}): this device needs a new enrollment token",
                record.refusal.as_deref().unwrap_or("no reason given")
            ));
        }
        let (key_pem, csr_der) = match device_client::key_and_csr() {
            Ok(k) => k,
            Err(e) => return Step::Failed(e.to_string()),
        };
        let req = pb::EnrollRequest {
            enrollment_token: config.enrollment.token.clone(),
            csr_der,
            posture: Some(posture),
        };
        return match device_client::enroll(ca, endpoints, req, &opts).await {
            Ok(r) => match store(dir, &key_pem, &r.certificate_chain_pem) {
                Ok(()) => {
                    record.refused_token = None;
                    record.refusal = None;
                    record.posture_reported_at = Some(now);
                    Step::Enrolled(r.device.map(|d| d.id).unwrap_or_default())
                }
                Err(e) => Step::Failed(e),
            },
            Err(DeviceCallError::Refused(s)) => {
                record.refused_token = Some(hash);
                record.refusal = Some(s.message().to_string());
                Step::Failed(format!(
                    "enrollment refused ({}): this device needs a new enrollment token",
                    s.message()
                ))
            }
            Err(e) => Step::Failed(format!("enrollment: {e}")),
        };
    };
    let tls = match id.tls(ca) {
        Ok(t) => t,
        Err(e) => return Step::Failed(e.to_string()),
    };
    let given_up = |dir: &Path, record: &mut Record, e: &DeviceCallError| {
        discard(dir);
        record.refusal = Some(e.to_string());
        record.posture_reported_at = None;
        Step::GivenUp(e.to_string())
    };
    if id.renewal_due(now) {
        let (key_pem, csr_der) = match device_client::key_and_csr() {
            Ok(k) => k,
            Err(e) => return Step::Failed(e.to_string()),
        };
        return match device_client::renew(&tls, endpoints, csr_der, &opts).await {
            Ok(r) => match store(dir, &key_pem, &r.certificate_chain_pem) {
                Ok(()) => Step::Renewed,
                Err(e) => Step::Failed(e),
            },
            Err(e) if e.certificate_refused() => given_up(dir, record, &e),
            Err(e) => Step::Failed(format!("renewal: {e}")),
        };
    }
    if record
        .posture_reported_at
        .is_some_and(|at| now - at < posture_every)
    {
        return Step::Idle;
    }
    match device_client::report_posture(&tls, endpoints, posture, &opts).await {
        Ok(_) => {
            record.posture_reported_at = Some(now);
            Step::Reported
        }
        Err(e) if e.certificate_refused() => given_up(dir, record, &e),
        Err(e) => Step::Failed(format!("posture report: {e}")),
    }
}
