//! `palisadectl as-device`: what a managed device does with the device listener, for
//! development and tests (on real devices `palisade-agent` does it): enroll with a one-time
//! token and renew with the current certificate. The private key is generated here and never
//! leaves the machine; only a certificate signing request is sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use palisade_link::managed::ManagedConfig;
use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::input::{local, read_file, write_private};
use crate::report::{Failure, Report, from_status};

/// The device's key file in `--dir`.
pub const KEY_FILE: &str = "device.key";
/// The device's certificate chain in `--dir`.
pub const CERT_FILE: &str = "device.pem";

#[derive(Debug, Subcommand)]
pub(crate) enum AsDeviceCmd {
    /// Enroll with a one-time token: writes `device.key` and `device.pem` into `--dir`.
    Enroll {
        /// The controller's device listener (`host:port`).
        #[arg(long, required_unless_present = "config")]
        endpoint: Option<String>,
        /// The one-time enrollment token (`palisadectl devices enroll`).
        #[arg(long, env = "PALISADE_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A managed configuration file (`palisadectl devices provision`): the controllers,
        /// the CA that signs them and the token come from it, as a device agent takes them.
        #[arg(long, conflicts_with = "endpoint")]
        config: Option<PathBuf>,
        /// Where the key and certificate go.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        posture: PostureArgs,
    },
    /// Report posture now, with the certificate in `--dir` (a fresh nonce each time).
    Posture {
        /// The controller's device listener (`host:port`).
        #[arg(long)]
        endpoint: String,
        /// Where the key and certificate are.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        posture: PostureArgs,
    },
    /// Renew: a new key and certificate in `--dir`, authorised by the current ones there.
    Renew {
        /// The controller's device listener (`host:port`).
        #[arg(long)]
        endpoint: String,
        /// Where the current key and certificate are, and the new ones go.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Posture as a device reports it.
#[derive(Debug, Clone, Args)]
pub(crate) struct PostureArgs {
    /// OS family: macos, windows, linux, ios, android, chromeos.
    #[arg(long, default_value = "")]
    os: String,
    /// OS version.
    #[arg(long, default_value = "")]
    os_version: String,
    /// Palisade client version (semver).
    #[arg(long, default_value = "")]
    client_version: String,
    /// The client enforces mandatory authentication.
    #[arg(long)]
    mandatory_auth: bool,
    /// Full-disk encryption on.
    #[arg(long)]
    disk_encrypted: bool,
    /// Host firewall on.
    #[arg(long)]
    firewall: bool,
    /// Screen lock configured.
    #[arg(long)]
    screen_lock: bool,
    /// The MDM that vouches for this posture.
    #[arg(long, default_value = "")]
    mdm_provider: String,
    /// The MDM considers the device compliant.
    #[arg(long)]
    mdm_compliant: bool,
}

impl PostureArgs {
    fn to_pb(&self) -> Result<pb::DevicePosture, Failure> {
        let os = pb::OsFamily::from_name(&self.os)
            .ok_or_else(|| local(format!("--os {:?}: not an OS family", self.os)))?;
        Ok(pb::DevicePosture {
            os: os as i32,
            os_version: self.os_version.clone(),
            client_version: self.client_version.clone(),
            mandatory_auth: self.mandatory_auth,
            disk_encrypted: self.disk_encrypted,
            firewall_enabled: self.firewall,
            screen_lock: self.screen_lock,
            mdm_provider: self.mdm_provider.clone(),
            mdm_compliant: self.mdm_compliant,
            reported_at: None,
        })
    }
}

/// A new P-256 key and a CSR for it (PEM key, DER request).
fn key_and_csr() -> Result<(String, Vec<u8>), Failure> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| local(format!("generating a key: {e}")))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| local(format!("making a certificate request: {e}")))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// Writes the key (owner-only) and the chain into `dir`.
fn store(dir: &Path, key_pem: &str, chain_pem: &str) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| local(format!("creating {}: {e}", dir.display())))?;
    std::fs::write(dir.join(CERT_FILE), chain_pem)
        .map_err(|e| local(format!("writing into {}: {e}", dir.display())))?;
    write_private(&dir.join(KEY_FILE), key_pem.as_bytes())
}

fn enrolled(verb: &str, r: pb::EnrollResponse, dir: &Path) -> Report {
    let d = r.device.unwrap_or_default();
    Report::new(
        format!(
            "device {} {verb}; certificate {} in {}\n",
            d.id,
            d.certificate_fingerprint,
            dir.display()
        ),
        json!({"device": d.id, "fingerprint": d.certificate_fingerprint, "dir": dir.display().to_string()}),
    )
}

/// Enrolls through the first of `endpoints` that answers: a refusal (a used token, a bad
/// request) is final, an unreachable controller is not.
async fn enroll(
    ca: &str,
    endpoints: &[String],
    req: pb::EnrollRequest,
    opts: &LinkOptions,
) -> Result<pb::EnrollResponse, Failure> {
    let tls = LinkTls::anonymous(ca).map_err(|e| local(format!("the controllers' CA: {e}")))?;
    let mut unreachable = Vec::new();
    for endpoint in endpoints {
        match tls.connect(endpoint, Expect::AnyController, opts).await {
            Ok(ch) => {
                return pb::device_enrollment_client::DeviceEnrollmentClient::new(ch)
                    .enroll(req)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(from_status);
            }
            Err(e) => unreachable.push(format!("{endpoint}: {e}")),
        }
    }
    Err(Failure::new(6, unreachable.join("; ")))
}

pub(crate) async fn run(ca: Option<&Path>, cmd: AsDeviceCmd) -> Result<Report, Failure> {
    let ca = || {
        read_file(ca.ok_or_else(|| {
            local("--ca (or PALISADE_CA): the CA that signs the controllers is required")
        })?)
    };
    let opts = LinkOptions {
        connect_timeout: Duration::from_secs(5),
        call_timeout: Some(Duration::from_secs(30)),
        ..LinkOptions::default()
    };
    match cmd {
        AsDeviceCmd::Enroll {
            endpoint,
            token,
            config,
            dir,
            posture,
        } => {
            let posture = posture.to_pb()?;
            let (ca, endpoints, token) = match config {
                Some(path) => {
                    let managed = ManagedConfig::from_json(&read_file(&path)?)
                        .map_err(|e| local(format!("{}: {e}", path.display())))?;
                    (
                        managed.controller_ca_pem,
                        managed.controllers,
                        managed.enrollment.token,
                    )
                }
                None => (
                    ca()?,
                    endpoint.into_iter().collect(),
                    token.ok_or_else(|| {
                        local("--token (or PALISADE_ENROLLMENT_TOKEN) or --config is required")
                    })?,
                ),
            };
            let (key_pem, csr_der) = key_and_csr()?;
            let req = pb::EnrollRequest {
                enrollment_token: token,
                csr_der,
                posture: Some(posture),
            };
            let r = enroll(&ca, &endpoints, req, &opts).await?;
            store(&dir, &key_pem, &r.certificate_chain_pem)?;
            Ok(enrolled("enrolled", r, &dir))
        }
        AsDeviceCmd::Posture {
            endpoint,
            dir,
            posture,
        } => {
            let posture = posture.to_pb()?;
            let cert = read_file(&dir.join(CERT_FILE))?;
            let key = read_file(&dir.join(KEY_FILE))?;
            let tls = LinkTls::new(&cert, &key, &ca()?).map_err(|e| local(format!("--ca: {e}")))?;
            let ch = tls
                .connect(&endpoint, Expect::AnyController, &opts)
                .await
                .map_err(|e| Failure::new(6, format!("{endpoint}: {e}")))?;
            let mut client = pb::device_enrollment_client::DeviceEnrollmentClient::new(ch);
            let nonce = client
                .posture_nonce(pb::PostureNonceRequest {})
                .await
                .map_err(from_status)?
                .into_inner()
                .nonce;
            let r = client
                .report_posture(pb::ReportPostureRequest {
                    posture: Some(posture),
                    nonce,
                })
                .await
                .map_err(from_status)?
                .into_inner();
            let revision = r.write.map(|w| w.revision).unwrap_or(0);
            Ok(Report::new(
                format!("posture reported (revision {revision})\n"),
                json!({"revision": revision}),
            ))
        }
        AsDeviceCmd::Renew { endpoint, dir } => {
            let cert = read_file(&dir.join(CERT_FILE))?;
            let key = read_file(&dir.join(KEY_FILE))?;
            let (key_pem, csr_der) = key_and_csr()?;
            let tls = LinkTls::new(&cert, &key, &ca()?).map_err(|e| local(format!("--ca: {e}")))?;
            let ch = tls
                .connect(&endpoint, Expect::AnyController, &opts)
                .await
                .map_err(|e| Failure::new(6, format!("{endpoint}: {e}")))?;
            let r = pb::device_enrollment_client::DeviceEnrollmentClient::new(ch)
                .renew(pb::RenewRequest { csr_der })
                .await
                .map_err(from_status)?
                .into_inner();
            store(&dir, &key_pem, &r.certificate_chain_pem)?;
            Ok(enrolled("renewed", r, &dir))
        }
    }
}
