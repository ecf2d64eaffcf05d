//! What `palisade-agent status` shows, and an MDM's health check reads (`--json`): the
//! device's state, the block as the kernel holds it, the configuration's problems, the posture.
//! Everything is read when asked (the configuration file, the kernel's ruleset, the OS), never
//! taken from the agent's memory: a crashed agent's device reports the same truth.

use std::path::Path;

use palisade_link::managed::{FailMode, ManagedConfig};
use serde::Serialize;

use crate::firewall::{Allowances, Firewall, Inspection};

/// The device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Mandatory authentication is on and the block holds: nothing leaves the device but the
    /// grace set and the way to the edges.
    Blocked,
    /// The block is lifted into an authenticated tunnel.
    Connected,
    /// Mandatory authentication is on, but the kernel does not hold the block as installed
    /// (removed or changed from outside): the agent puts it back when it runs.
    Unprotected,
    /// Mandatory authentication is off for this device (outside the rollout): it reports, but
    /// does not block.
    NotEnforced,
    /// Mandatory authentication is on, but no edge answers and the configuration's fail mode
    /// is `open`: no block until an edge answers again.
    FailedOpen,
}

/// What the device reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Posture {
    /// This agent's version.
    pub client_version: &'static str,
    /// Whether mandatory authentication is on for the device.
    pub mandatory_active: bool,
    /// Whether the kernel holds the block whole (read from the ruleset).
    pub block_present: bool,
    /// The operating system and kernel.
    pub os_version: String,
}

/// The device's enrollment, from the state directory.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Enrollment {
    /// Enrolled: the certificate in the state directory.
    Enrolled {
        /// The device id the certificate names.
        device_id: String,
        /// SHA-256 of the certificate.
        fingerprint: String,
        /// When the certificate expires (RFC 3339).
        certificate_expires_at: String,
        /// When posture was last reported (RFC 3339).
        posture_reported_at: Option<String>,
    },
    /// Not enrolled (yet): why, if the controllers refused it.
    NotEnrolled {
        /// The controllers' last refusal: a wiped or revoked device, a used or expired token.
        refusal: Option<String>,
    },
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The state.
    pub state: State,
    /// The device id from the managed configuration.
    pub device_id: Option<String>,
    /// The device's enrollment.
    pub enrollment: Enrollment,
    /// The block as the kernel holds it.
    pub block: Inspection,
    /// What the block lets out.
    pub allowances: Allowances,
    /// The tunnel session's expiry (RFC 3339), while connected.
    pub session_expires_at: Option<String>,
    /// The posture report.
    pub posture: Posture,
    /// Problems: the configuration's, edges that do not resolve.
    pub problems: Vec<String>,
}

/// The managed configuration at `path`, or every problem with it.
pub fn load(path: &Path) -> Result<ManagedConfig, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("reading {}: {e}", path.display())])?;
    ManagedConfig::from_json(&text).map_err(|e| e.0)
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The enrollment as the state directory `dir` holds it.
pub fn enrollment(dir: &Path) -> (Enrollment, Option<String>) {
    let record = crate::device::Record::load(dir);
    match crate::device::Identity::load(dir) {
        Ok(Some(id)) => (
            Enrollment::Enrolled {
                device_id: id.device_id.clone(),
                fingerprint: id.fingerprint.clone(),
                certificate_expires_at: rfc3339(id.not_after),
                posture_reported_at: record.posture_reported_at.map(rfc3339),
            },
            None,
        ),
        Ok(None) => (
            Enrollment::NotEnrolled {
                refusal: record.refusal,
            },
            None,
        ),
        Err(e) => (
            Enrollment::NotEnrolled {
                refusal: record.refusal,
            },
            Some(e),
        ),
    }
}

/// The status now: the configuration at `path` read, the state directory `state_dir` read,
/// the kernel asked.
pub fn read(path: &Path, state_dir: &Path, firewall: &dyn Firewall) -> Status {
    let (config, mut problems) = match load(path) {
        Ok(c) => (Some(c), Vec::new()),
        Err(p) => (None, p),
    };
    // a device whose configuration cannot be read is held to the strictest block
    let mandatory = config.as_ref().is_none_or(|c| c.mandatory_auth.enabled);
    let allowances = match &config {
        Some(c) => {
            let (allow, unresolved) = Allowances::of(c, true);
            problems.extend(
                unresolved
                    .into_iter()
                    .map(|e| format!("{e} does not resolve")),
            );
            allow
        }
        None => Allowances::strictest(),
    };
    let block = firewall
        .inspect(&allowances)
        .unwrap_or_else(|e| Inspection::Altered {
            difference: format!("the firewall could not be read: {e}"),
        });
    let (enrollment, unreadable) = enrollment(state_dir);
    problems.extend(unreadable);
    match crate::device::Record::load(state_dir).problem {
        Some(p) => problems.push(p),
        None => {
            if let Enrollment::NotEnrolled { refusal: Some(r) } = &enrollment {
                problems.push(format!(
                    "the controllers refused this device ({r}): it needs a new enrollment token"
                ));
            }
        }
    }
    let fail_open = config
        .as_ref()
        .is_some_and(|c| c.mandatory_auth.fail_mode == FailMode::Open);
    let state = match (&block, mandatory) {
        (Inspection::Lifted { .. }, true) => State::Connected,
        (Inspection::Blocking { .. }, true) => State::Blocked,
        (Inspection::Absent, true)
            if fail_open
                && !crate::agent::edges_answer(
                    &allowances.edges,
                    crate::agent::EDGE_PROBE_TIMEOUT,
                ) =>
        {
            State::FailedOpen
        }
        (_, true) => State::Unprotected,
        (_, false) => State::NotEnforced,
    };
    Status {
        state,
        device_id: config.as_ref().map(|c| c.device_id.clone()),
        enrollment,
        posture: Posture {
            client_version: env!("CARGO_PKG_VERSION"),
            mandatory_active: mandatory,
            block_present: block.intact(),
            os_version: os_version(),
        },
        block,
        allowances,
        session_expires_at: None,
        problems,
    }
}

/// `PRETTY_NAME` from os-release, and the kernel release.
pub fn os_version() -> String {
    let name = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(kernel) => format!("{name}, kernel {}", kernel.trim()),
        Err(_) => name,
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Blocked => "blocked: sign in to reach anything beyond the edges",
            State::Connected => "connected through the tunnel",
            State::Unprotected => "UNPROTECTED: the block is not in place as installed",
            State::NotEnforced => "not enforced: mandatory authentication is off for this device",
            State::FailedOpen => {
                "failed open: no edge answers, so the block is lifted until one does"
            }
        };
        writeln!(f, "state:    {state}")?;
        if let Some(id) = &self.device_id {
            writeln!(f, "device:   {id}")?;
        }
        match &self.enrollment {
            Enrollment::Enrolled {
                certificate_expires_at,
                posture_reported_at,
                ..
            } => {
                writeln!(
                    f,
                    "enrolled: certificate until {certificate_expires_at}, posture reported {}",
                    posture_reported_at.as_deref().unwrap_or("never")
                )?;
            }
            Enrollment::NotEnrolled { .. } => writeln!(f, "enrolled: no")?,
        }
        match &self.block {
            Inspection::Absent => writeln!(f, "block:    absent")?,
            Inspection::Blocking { dropped_packets } => {
                writeln!(f, "block:    in place, {dropped_packets} packets dropped")?
            }
            Inspection::Lifted {
                tunnel,
                dropped_packets,
            } => writeln!(
                f,
                "block:    lifted into {tunnel}, {dropped_packets} packets dropped"
            )?,
            Inspection::Altered { difference } => {
                writeln!(f, "block:    changed from outside ({difference})")?
            }
        }
        if let Some(e) = &self.session_expires_at {
            writeln!(f, "session:  until {e}")?;
        }
        writeln!(
            f,
            "posture:  agent {}, {}",
            self.posture.client_version, self.posture.os_version
        )?;
        for p in &self.problems {
            writeln!(f, "problem:  {p}")?;
        }
        Ok(())
    }
}
