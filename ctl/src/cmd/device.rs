//! `palisadectl devices`: managed devices and their one-time enrollment tokens.

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::{Value, json};

use crate::input::first_page;
use crate::report::{Failure, Report, enum_name, ts};

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCmd {
    /// List devices.
    List {
        /// Only this owner's.
        #[arg(long, default_value = "")]
        owner: String,
    },
    /// Show one device.
    Get {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Create a device and print its one-time enrollment token.
    Enroll {
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

fn device_json(d: &pb::Device) -> Value {
    let state = pb::DeviceState::try_from(d.state)
        .map(|s| enum_name(s.as_str_name(), "DEVICE_STATE_"))
        .unwrap_or_default();
    let posture = d.posture.clone().unwrap_or_default();
    json!({"id": d.id, "owner": d.owner, "serial": d.serial, "name": d.display_name, "state": state, "groups": d.groups, "client_version": posture.client_version, "revision": d.revision})
}

/// The device after a wipe or a revocation.
fn changed(verb: &str, r: pb::DeviceActionResponse) -> Report {
    let d = device_json(&r.device.unwrap_or_default());
    Report::new(
        format!("device {} {verb}\n", d["id"].as_str().unwrap_or("")),
        d,
    )
}

pub(crate) async fn run(c: &AdminClient, cmd: DeviceCmd) -> Result<Report, Failure> {
    Ok(match cmd {
        DeviceCmd::List { owner } => {
            let r = call!(
                c,
                device_service_client::DeviceServiceClient,
                list_devices,
                pb::ListDevicesRequest {
                    owner,
                    state: 0,
                    page: first_page(1000),
                    consistency: 0
                }
            );
            Report::table(
                &[
                    ("ID", "id"),
                    ("STATE", "state"),
                    ("OWNER", "owner"),
                    ("SERIAL", "serial"),
                    ("NAME", "name"),
                ],
                r.devices.iter().map(device_json).collect(),
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
        DeviceCmd::Enroll {
            owner,
            serial,
            name,
            groups,
        } => {
            let r = call!(
                c,
                device_service_client::DeviceServiceClient,
                enroll_device,
                pb::EnrollDeviceRequest {
                    owner,
                    serial,
                    display_name: name,
                    groups,
                    token_ttl: None
                }
            );
            let d = r.device.unwrap_or_default();
            Report::new(
                format!(
                    "device {} created; one-time enrollment token (shown once):\n{}\nexpires {}\n",
                    d.id,
                    r.enrollment_token,
                    ts(&r.token_expires_at)
                ),
                json!({"device": device_json(&d), "enrollment_token": r.enrollment_token, "expires_at": ts(&r.token_expires_at)}),
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
