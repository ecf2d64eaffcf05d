//! `palisadectl devices`: managed devices and their one-time enrollment tokens.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use palisade_link::admin::AdminClient;
use palisade_link::managed::{self, FailMode, ManagedConfig};
use palisade_proto::v1 as pb;
use serde_json::{Value, json};

use crate::input::{duration, first_page, local, read_file, write_private};
use crate::report::{Failure, Report, enum_name, ts};

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCmd {
    /// List devices: state, last posture and its age.
    List {
        /// Only this owner's.
        #[arg(long, default_value = "")]
        owner: String,
        /// Only devices in this state: pending, enrolled, wiped, revoked.
        #[arg(long)]
        state: Option<String>,
        /// Only devices whose last posture report is older than this (`1h`, `15m`), or that
        /// never reported.
        #[arg(long, value_name = "AGE")]
        stale_posture: Option<String>,
    },
    /// List tunnel sessions (end one with `palisadectl revoke tunnel-session ID`).
    Tunnels {
        /// Only this device's.
        #[arg(long, default_value = "")]
        device: String,
    },
    /// Show one device.
    Get {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Create a device and print its one-time enrollment token.
    Enroll(NewDevice),
    /// Create a device and write the managed configuration file an MDM would push to it
    /// (controllers, edges, the CAs to trust, the enrollment token, mandatory authentication).
    /// A development stand-in for an MDM; the format is `docs/managed-config.schema.json`.
    Provision {
        #[command(flatten)]
        device: NewDevice,
        /// Where the file goes (written readable by its owner only: it holds the token).
        #[arg(long)]
        out: PathBuf,
        /// Controllers' device listeners, `host:port`, comma-separated or repeated.
        #[arg(long = "controller", value_delimiter = ',', required = true)]
        controllers: Vec<String>,
        /// Edges, `host:port`, comma-separated or repeated.
        #[arg(long = "edge", value_delimiter = ',', required = true)]
        edges: Vec<String>,
        /// The CA that signs the controllers (default: `--ca`).
        #[arg(long)]
        controller_ca: Option<PathBuf>,
        /// The CA that signs the edges' ingress certificates (omit for a public CA).
        #[arg(long)]
        edge_ca: Option<PathBuf>,
        /// Do not block the device's traffic before sign-in.
        #[arg(long)]
        no_mandatory_auth: bool,
        /// DNS resolvers allowed before sign-in, comma-separated.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Do not allow DHCP before sign-in.
        #[arg(long)]
        no_dhcp: bool,
        /// While no edge answers: `closed` (stay blocked) or `open`.
        #[arg(long, default_value = "closed")]
        fail_mode: String,
    },
    /// Mark a device wiped: it must enroll again.
    Wipe {
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a device permanently.
    Revoke {
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// A device to create.
#[derive(Debug, Args)]
pub(crate) struct NewDevice {
    /// Owner (email).
    #[arg(long)]
    owner: String,
    /// Serial number.
    #[arg(long, default_value = "")]
    serial: String,
    /// Friendly name.
    #[arg(long, default_value = "")]
    name: String,
    /// Device groups.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// How long the enrollment token is valid (`24h` when not given).
    #[arg(long, value_name = "DURATION")]
    token_ttl: Option<String>,
}

impl NewDevice {
    fn request(self) -> Result<pb::EnrollDeviceRequest, Failure> {
        Ok(pb::EnrollDeviceRequest {
            owner: self.owner,
            serial: self.serial,
            display_name: self.name,
            groups: self.groups,
            token_ttl: self.token_ttl.as_deref().map(duration).transpose()?,
        })
    }
}

fn state_name(state: i32) -> String {
    pb::DeviceState::try_from(state)
        .map(|s| enum_name(s.as_str_name(), "DEVICE_STATE_"))
        .unwrap_or_default()
}

/// Seconds since the last posture report, `None` when it never reported.
fn posture_age(d: &pb::Device, now: SystemTime) -> Option<u64> {
    let at = d.posture.as_ref()?.reported_at.as_ref()?;
    let at = UNIX_EPOCH + Duration::new(at.seconds.max(0) as u64, at.nanos.max(0) as u32);
    Some(now.duration_since(at).unwrap_or_default().as_secs())
}

/// `95` → `1m35s`; never reported → `never`.
fn age_text(age: Option<u64>) -> String {
    match age {
        None => "never".into(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        Some(s) if s < 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        Some(s) => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A device listed with its posture's age.
fn listed(d: &pb::Device, now: SystemTime) -> Value {
    let mut v = device_json(d);
    let age = posture_age(d, now);
    v["posture_age_secs"] = json!(age);
    v["posture_age"] = json!(age_text(age));
    v
}

fn device_json(d: &pb::Device) -> Value {
    let p = d.posture.clone().unwrap_or_default();
    let os = pb::OsFamily::try_from(p.os)
        .map(|o| o.name().to_string())
        .unwrap_or_default();
    json!({
        "id": d.id, "owner": d.owner, "serial": d.serial, "name": d.display_name,
        "state": state_name(d.state), "groups": d.groups, "revision": d.revision,
        "enrolled_at": ts(&d.enrolled_at),
        "certificate": {"fingerprint": d.certificate_fingerprint, "not_after": ts(&d.certificate_not_after)},
        "client_version": p.client_version,
        "posture": {
            "os": os, "os_version": p.os_version, "client_version": p.client_version,
            "mandatory_auth": p.mandatory_auth, "disk_encrypted": p.disk_encrypted,
            "firewall": p.firewall_enabled, "screen_lock": p.screen_lock,
            "mdm_provider": p.mdm_provider, "mdm_compliant": p.mdm_compliant,
            "reported_at": ts(&p.reported_at),
        },
    })
}

/// The device after a wipe or a revocation.
fn changed(verb: &str, r: pb::DeviceActionResponse) -> Report {
    let d = device_json(&r.device.unwrap_or_default());
    Report::new(
        format!("device {} {verb}\n", d["id"].as_str().unwrap_or("")),
        d,
    )
}

/// Creates a pending device: the device, its one-time token and the token's expiry.
async fn create(
    c: &AdminClient,
    device: NewDevice,
) -> Result<(pb::Device, String, String), Failure> {
    let r = call!(
        c,
        device_service_client::DeviceServiceClient,
        enroll_device,
        device.request()?
    );
    Ok((
        r.device.unwrap_or_default(),
        r.enrollment_token,
        ts(&r.token_expires_at),
    ))
}

/// `ca` is the global `--ca`, the default for the CA that signs the controllers.
pub(crate) async fn run(
    c: &AdminClient,
    ca: Option<&Path>,
    cmd: DeviceCmd,
) -> Result<Report, Failure> {
    Ok(match cmd {
        DeviceCmd::List {
            owner,
            state,
            stale_posture,
        } => {
            let state = match state.as_deref() {
                None => pb::DeviceState::Unspecified,
                Some(s) => pb::DeviceState::from_str_name(&format!(
                    "DEVICE_STATE_{}",
                    s.to_ascii_uppercase()
                ))
                .filter(|s| *s != pb::DeviceState::Unspecified)
                .ok_or_else(|| {
                    local(format!(
                        "--state {s:?}: one of pending, enrolled, wiped, revoked"
                    ))
                })?,
            };
            let stale = stale_posture.as_deref().map(duration).transpose()?;
            let r = call!(
                c,
                device_service_client::DeviceServiceClient,
                list_devices,
                pb::ListDevicesRequest {
                    owner,
                    state: state as i32,
                    page: first_page(1000),
                    consistency: 0
                }
            );
            let now = SystemTime::now();
            let rows = r
                .devices
                .iter()
                .filter(|d| match &stale {
                    None => true,
                    Some(max) => posture_age(d, now).is_none_or(|a| a > max.seconds as u64),
                })
                .map(|d| listed(d, now))
                .collect();
            Report::table(
                &[
                    ("ID", "id"),
                    ("STATE", "state"),
                    ("OWNER", "owner"),
                    ("SERIAL", "serial"),
                    ("NAME", "name"),
                    ("CLIENT", "client_version"),
                    ("POSTURE AGE", "posture_age"),
                ],
                rows,
            )
        }
        DeviceCmd::Tunnels { device } => {
            let r = call!(
                c,
                device_service_client::DeviceServiceClient,
                list_tunnel_sessions,
                pb::ListTunnelSessionsRequest {
                    device_id: device,
                    page: first_page(1000),
                    consistency: 0
                }
            );
            let rows = r
                .sessions
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id, "device": t.device_id,
                        "user": format!("{}/{}", t.identity_provider, t.subject),
                        "session": t.session_id, "edge": t.edge_id,
                        "opened_at": ts(&t.opened_at), "expires_at": ts(&t.expires_at),
                    })
                })
                .collect();
            Report::table(
                &[
                    ("ID", "id"),
                    ("DEVICE", "device"),
                    ("USER", "user"),
                    ("EDGE", "edge"),
                    ("OPENED", "opened_at"),
                    ("EXPIRES", "expires_at"),
                ],
                rows,
            )
        }
        DeviceCmd::Get { id } => {
            let r = call!(
                c,
                device_service_client::DeviceServiceClient,
                get_device,
                pb::GetDeviceRequest { id, consistency: 0 }
            );
            let d = device_json(&r.device.unwrap_or_default());
            Report::new(
                format!("{}\n", serde_json::to_string_pretty(&d).unwrap_or_default()),
                d,
            )
        }
        DeviceCmd::Enroll(device) => {
            let (d, token, expires) = create(c, device).await?;
            Report::new(
                format!(
                    "device {} created; one-time enrollment token (shown once):\n{token}\nexpires {expires}\n",
                    d.id,
                ),
                json!({"device": device_json(&d), "enrollment_token": token, "expires_at": expires}),
            )
        }
        DeviceCmd::Provision {
            device,
            out,
            controllers,
            edges,
            controller_ca,
            edge_ca,
            no_mandatory_auth,
            dns,
            no_dhcp,
            fail_mode,
        } => {
            let controller_ca = controller_ca.as_deref().or(ca).ok_or_else(|| {
                local("--controller-ca (or --ca): the CA that signs the controllers is required")
            })?;
            let fail_mode = match fail_mode.as_str() {
                "closed" => FailMode::Closed,
                "open" => FailMode::Open,
                other => return Err(local(format!("--fail-mode {other:?}: closed or open"))),
            };
            let mut managed = ManagedConfig {
                version: managed::VERSION,
                device_id: "dev-unassigned".into(),
                owner: device.owner.clone(),
                controllers,
                controller_ca_pem: read_file(controller_ca)?,
                edges,
                edge_ca_pem: edge_ca.as_deref().map(read_file).transpose()?,
                enrollment: managed::Enrollment {
                    token: "unassigned".into(),
                    expires_at: "1970-01-01T00:00:00Z".into(),
                },
                mandatory_auth: managed::MandatoryAuth {
                    enabled: !no_mandatory_auth,
                    grace: managed::Grace {
                        dhcp: !no_dhcp,
                        dns,
                    },
                    fail_mode,
                },
            };
            // Everything that can be wrong locally is found before the device is created.
            managed.check().map_err(|e| local(e.to_string()))?;
            let (d, token, expires) = create(c, device).await?;
            managed.device_id = d.id.clone();
            managed.enrollment = managed::Enrollment {
                token,
                expires_at: expires.clone(),
            };
            let text = serde_json::to_string_pretty(&managed).unwrap_or_default() + "\n";
            write_private(&out, text.as_bytes())?;
            Report::new(
                format!(
                    "device {} created; managed configuration written to {} (its enrollment token expires {expires})\n",
                    d.id,
                    out.display()
                ),
                json!({"device": device_json(&d), "file": out.display().to_string(), "expires_at": expires}),
            )
        }
        DeviceCmd::Wipe { id, reason } => changed(
            "marked wiped",
            call!(
                c,
                device_service_client::DeviceServiceClient,
                mark_device_wiped,
                pb::DeviceActionRequest { id, reason }
            ),
        ),
        DeviceCmd::Revoke { id, reason } => changed(
            "revoked",
            call!(
                c,
                device_service_client::DeviceServiceClient,
                revoke_device,
                pb::DeviceActionRequest { id, reason }
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posture_age_reads_like_a_duration() {
        assert_eq!(age_text(None), "never");
        assert_eq!(age_text(Some(59)), "59s");
        assert_eq!(age_text(Some(95)), "1m35s");
        assert_eq!(age_text(Some(3 * 3600 + 12 * 60)), "3h12m");
        assert_eq!(age_text(Some(2 * 86_400 + 3600)), "2d1h");
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut d = pb::Device::default();
        assert_eq!(posture_age(&d, now), None, "never reported");
        d.posture = Some(pb::DevicePosture {
            reported_at: Some(prost_types::Timestamp {
                seconds: 900,
                nanos: 0,
            }),
            ..Default::default()
        });
        assert_eq!(posture_age(&d, now), Some(100));
    }
}
