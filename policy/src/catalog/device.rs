//! Devices in the catalog: their lifecycle (pending → enrolled → wiped or revoked), the
//! certificate each enrolled device holds, its last posture, and the device CA that issues
//! the certificates.
//!
//! A device certificate is only as good as its entry here: an edge accepts a presented
//! certificate when it chains to the device CA **and** its SHA-256 fingerprint is the one this
//! catalog records for an enrolled device. So wiping, revoking or re-enrolling a device refuses
//! its old certificate at the next request, with no revocation list to distribute.

use serde::{Deserialize, Serialize};

use super::{Catalog, Change, Command, CommandError, Outcome, Sealed, not_found};

/// Device lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Waiting for the enrollment token.
    Pending,
    /// Enrolled.
    Enrolled,
    /// Wiped: must enroll again, with a new token.
    Wiped,
    /// Revoked.
    Revoked,
}

/// Reported posture: the device's own report (or an MDM's), hygiene rather than proof. A field
/// that was never reported reads `false` or empty: not proven.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posture {
    /// OS family (`macos`, `windows`, `linux`, `ios`, `android`, `chromeos`), empty if unknown.
    pub os: String,
    /// OS version.
    pub os_version: String,
    /// Palisade client version (semver).
    pub client_version: String,
    /// Mandatory authentication enforced by the client.
    pub mandatory_auth: bool,
    /// Disk encrypted.
    pub disk_encrypted: bool,
    /// Host firewall on (for the agent: its block rule present).
    #[serde(default)]
    pub firewall_enabled: bool,
    /// Screen lock configured.
    #[serde(default)]
    pub screen_lock: bool,
    /// The MDM that vouched for this posture, empty when self-reported.
    #[serde(default)]
    pub mdm_provider: String,
    /// Whether that MDM considers the device compliant.
    #[serde(default)]
    pub mdm_compliant: bool,
    /// Reported at (unix ms); 0: never.
    pub reported_at_ms: i64,
}

/// The certificate an enrolled device holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint_sha256: String,
    /// Not valid after (unix ms).
    pub not_after_ms: i64,
}

/// A device record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// `dev-<revision>`.
    pub id: String,
    /// Owner email or subject.
    pub owner: String,
    /// Serial number.
    pub serial: String,
    /// Friendly name.
    pub display_name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// State.
    pub state: DeviceState,
    /// Last posture.
    pub posture: Posture,
    /// SHA-256 of the one-time enrollment token, hex (empty once redeemed).
    pub enrollment_token_sha256: String,
    /// Token expiry (unix ms).
    pub enrollment_expires_at_ms: i64,
    /// The certificate it holds, while enrolled.
    #[serde(default)]
    pub certificate: Option<DeviceCertificate>,
    /// When it last enrolled (unix ms); 0: never.
    #[serde(default)]
    pub enrolled_at_ms: i64,
    /// When the nonce of its last accepted posture report was issued (unix ms): a report must
    /// bring a later one (controllers only; edges do not receive it).
    #[serde(default)]
    pub posture_nonce_ms: i64,
    /// Revision of the last change.
    pub revision: u64,
}

impl DeviceRecord {
    /// Whether `fingerprint` (SHA-256 hex of a certificate) is this device's current
    /// certificate, valid at `now_ms`, on an enrolled device.
    pub fn holds(&self, fingerprint: &str, now_ms: i64) -> bool {
        self.state == DeviceState::Enrolled
            && self.certificate.as_ref().is_some_and(|c| {
                c.fingerprint_sha256.eq_ignore_ascii_case(fingerprint) && c.not_after_ms > now_ms
            })
    }
}

impl DeviceRecord {
    /// The device as `decide()` sees it: its state, groups and last posture (a client version
    /// that is not semver, or an OS that is not a known family, counts as not reported).
    pub fn for_decision(&self) -> crate::request::Device {
        use crate::request::DeviceState as S;
        crate::request::Device {
            id: self.id.clone(),
            state: match self.state {
                DeviceState::Pending => S::Pending,
                DeviceState::Enrolled => S::Enrolled,
                DeviceState::Wiped => S::Wiped,
                DeviceState::Revoked => S::Revoked,
            },
            client_version: semver::Version::parse(&self.posture.client_version).ok(),
            mandatory_auth: self.posture.mandatory_auth,
            os: crate::document::Os::parse(&self.posture.os),
            groups: self.groups.clone(),
            disk_encrypted: self.posture.disk_encrypted,
            firewall: self.posture.firewall_enabled,
            screen_lock: self.posture.screen_lock,
            mdm_compliant: self.posture.mdm_compliant,
            posture_reported_at: (self.posture.reported_at_ms > 0)
                .then(|| jiff::Timestamp::from_millisecond(self.posture.reported_at_ms).ok())
                .flatten(),
        }
    }
}

/// The CA that issues device certificates: separate from the internal CA, its key sealed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCa {
    /// The CA certificate, PEM.
    pub certificate_pem: String,
    /// Its private key (PKCS#8 DER), sealed by the controller; never sent to edges.
    pub key: Sealed,
    /// Revision it was created at.
    pub revision: u64,
}

impl Catalog {
    /// The device whose pending enrollment token hashes to `token_sha256`.
    pub fn device_by_token(&self, token_sha256: &str) -> Option<&DeviceRecord> {
        if token_sha256.is_empty() {
            return None;
        }
        self.devices
            .values()
            .find(|d| d.enrollment_token_sha256 == token_sha256)
    }

    /// The devices commands.
    pub(super) fn apply_device(
        &mut self,
        revision: u64,
        at: i64,
        command: &Command,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, CommandError> {
        match command {
            Command::CreateDevice {
                owner,
                serial,
                display_name,
                groups,
                token_sha256,
                token_expires_at_ms,
            } => {
                if owner.trim().is_empty() {
                    return Err(CommandError::Invalid("a device needs an owner".into()));
                }
                if token_sha256.len() != 64 {
                    return Err(CommandError::Invalid(
                        "enrollment token hash must be SHA-256 hex".into(),
                    ));
                }
                let id = format!("dev-{revision}");
                self.devices.insert(
                    id.clone(),
                    DeviceRecord {
                        id: id.clone(),
                        owner: owner.clone(),
                        serial: serial.clone(),
                        display_name: display_name.clone(),
                        groups: groups.clone(),
                        state: DeviceState::Pending,
                        posture: Posture::default(),
                        enrollment_token_sha256: token_sha256.clone(),
                        enrollment_expires_at_ms: *token_expires_at_ms,
                        certificate: None,
                        enrolled_at_ms: 0,
                        posture_nonce_ms: 0,
                        revision,
                    },
                );
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id))
            }
            Command::SetDeviceState { id, state } => {
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                let ok = match (d.state, state) {
                    (DeviceState::Revoked, _) => false,
                    (_, DeviceState::Wiped | DeviceState::Revoked) => true,
                    // enrolling takes a certificate: `EnrollDevice`
                    _ => false,
                };
                if !ok {
                    return Err(CommandError::Invalid(
                        format!("a {:?} device cannot become {:?}", d.state, state).to_lowercase(),
                    ));
                }
                // a wiped device enrolls again only with a new token
                d.enrollment_token_sha256.clear();
                d.certificate = None;
                d.state = *state;
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            Command::RecordPosture { id, posture } => {
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                d.posture = posture.clone();
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            Command::CreateDeviceCa {
                certificate_pem,
                key,
            } => {
                if self.device_ca.is_some() {
                    return Err(CommandError::Invalid("the device CA exists".into()));
                }
                if !certificate_pem.contains("BEGIN CERTIFICATE") || key.0.is_empty() {
                    return Err(CommandError::Invalid(
                        "a device CA needs a certificate and a sealed key".into(),
                    ));
                }
                self.device_ca = Some(DeviceCa {
                    certificate_pem: certificate_pem.clone(),
                    key: key.clone(),
                    revision,
                });
                changes.push(Change::DeviceCa);
                Ok(Outcome::Done)
            }
            Command::EnrollDevice {
                id,
                token_sha256,
                certificate,
                posture,
            } => {
                check_certificate(certificate, at)?;
                let d = self
                    .devices
                    .get(id)
                    .ok_or_else(|| not_found("device", id))?;
                if d.enrollment_token_sha256.is_empty()
                    || d.enrollment_token_sha256 != *token_sha256
                {
                    return Err(CommandError::Invalid(
                        "the enrollment token is unknown or already used".into(),
                    ));
                }
                if d.enrollment_expires_at_ms <= at {
                    return Err(CommandError::Invalid(
                        "the enrollment token has expired".into(),
                    ));
                }
                // The same hardware enrolled before under another record: that record's
                // certificate must stop working now (a restored or reissued machine).
                let serial = d.serial.clone();
                if !serial.is_empty() {
                    let earlier: Vec<String> = self
                        .devices
                        .values()
                        .filter(|o| {
                            o.id != *id && o.serial == serial && o.state == DeviceState::Enrolled
                        })
                        .map(|o| o.id.clone())
                        .collect();
                    for other in earlier {
                        if let Some(o) = self.devices.get_mut(&other) {
                            o.state = DeviceState::Wiped;
                            o.certificate = None;
                            o.revision = revision;
                            changes.push(Change::Device(other));
                        }
                    }
                }
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                d.enrollment_token_sha256.clear();
                d.state = DeviceState::Enrolled;
                d.certificate = Some(certificate.clone());
                d.enrolled_at_ms = at;
                d.posture = Posture {
                    reported_at_ms: at,
                    ..posture.clone()
                };
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            Command::ReportPosture {
                id,
                posture,
                nonce_issued_at_ms,
            } => {
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                if d.state != DeviceState::Enrolled {
                    return Err(CommandError::Invalid(
                        "only an enrolled device reports posture".into(),
                    ));
                }
                if *nonce_issued_at_ms <= d.posture_nonce_ms {
                    return Err(CommandError::Invalid(
                        "this posture nonce was already used".into(),
                    ));
                }
                d.posture_nonce_ms = *nonce_issued_at_ms;
                d.posture = Posture {
                    reported_at_ms: at,
                    ..posture.clone()
                };
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            Command::RenewDeviceCertificate {
                id,
                presented_sha256,
                certificate,
            } => {
                check_certificate(certificate, at)?;
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                if !d.holds(presented_sha256, at) {
                    return Err(CommandError::CertificateNotCurrent);
                }
                d.certificate = Some(certificate.clone());
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            _ => Err(CommandError::Invalid("not a device command".into())),
        }
    }
}

/// A certificate record must name a SHA-256 and still be valid.
fn check_certificate(c: &DeviceCertificate, at: i64) -> Result<(), CommandError> {
    let hex = c.fingerprint_sha256.len() == 64
        && c.fingerprint_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(CommandError::Invalid(
            "a certificate fingerprint is SHA-256 in lowercase hex".into(),
        ));
    }
    if c.not_after_ms <= at {
        return Err(CommandError::Invalid(
            "the certificate has already expired".into(),
        ));
    }
    Ok(())
}
