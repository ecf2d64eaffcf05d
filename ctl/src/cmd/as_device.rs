//! `palisadectl as-device`: what a managed device does with the device listener, for
//! development and tests (on real devices `palisade-agent` does it): enroll with a one-time
//! token and renew with the current certificate. The private key is generated here and never
//! leaves the machine; only a certificate signing request is sent.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use palisade_link::device_client::{self, DeviceCallError};
use palisade_link::managed::ManagedConfig;
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
    device_client::key_and_csr().map_err(failure)
}

/// A device-listener failure as the command's: refusals keep their gRPC code's exit code,
/// an unreachable cluster is 6.
fn failure(e: DeviceCallError) -> Failure {
    match e {
        DeviceCallError::Refused(s) => from_status(s),
        DeviceCallError::Unreachable(m) => Failure::new(6, m),
        DeviceCallError::Local(m) => local(m),
    }
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

pub(crate) async fn run(ca: Option<&Path>, cmd: AsDeviceCmd) -> Result<Report, Failure> {
    let ca = || {
        read_file(ca.ok_or_else(|| {
            local("--ca (or PALISADE_CA): the CA that signs the controllers is required")
        })?)
    };
    let opts = device_client::options();
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
            let r = device_client::enroll(&ca, &endpoints, req, &opts)
                .await
                .map_err(failure)?;
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
            let tls = device_client::device_tls(&cert, &key, &ca()?).map_err(failure)?;
            let revision = device_client::report_posture(&tls, &[endpoint], posture, &opts)
                .await
                .map_err(failure)?;
            Ok(Report::new(
                format!("posture reported (revision {revision})\n"),
                json!({"revision": revision}),
            ))
        }
        AsDeviceCmd::Renew { endpoint, dir } => {
            let cert = read_file(&dir.join(CERT_FILE))?;
            let key = read_file(&dir.join(KEY_FILE))?;
            let (key_pem, csr_der) = key_and_csr()?;
            let tls = device_client::device_tls(&cert, &key, &ca()?).map_err(failure)?;
            let r = device_client::renew(&tls, &[endpoint], csr_der, &opts)
                .await
                .map_err(failure)?;
            store(&dir, &key_pem, &r.certificate_chain_pem)?;
            Ok(enrolled("renewed", r, &dir))
        }
    }
}
