//! The agent's loop: the block first, before anything else, then kept in place.
//!
//! Each round reads the managed configuration again (an MDM may push a new one) and the
//! kernel's ruleset, and puts the block back if it is missing or changed. The first round
//! installs the block before any name is resolved, so a device is blocked from its first
//! second even when DNS does not answer; edges given by name join the allowances once they
//! resolve. A configuration that cannot be read gets the strictest block (loopback and DHCP).
//! A device outside the rollout (mandatory authentication off) has its block removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_link::managed::{FailMode, ManagedConfig};
use palisade_proto::v1 as pb;

use crate::device::{self, Step};
use crate::firewall::{self, Allowances, Firewall, Inspection};
use crate::status;

/// What one round found and did.
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    /// The block was in place as it should be.
    Held,
    /// The block was installed or replaced: what the kernel held before.
    Installed {
        /// The kernel's block before.
        before: Inspection,
    },
    /// Mandatory authentication is off: no block (removed if there was one).
    NotEnforced {
        /// Whether a block was removed.
        removed: bool,
    },
    /// No edge answers and the fail mode is `open`: no block until one answers again
    /// (removed if there was one).
    FailedOpen {
        /// Whether a block was removed.
        removed: bool,
    },
}

/// How long an edge has to accept a TCP connection before it counts as not answering.
pub const EDGE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether any of `edges` accepts a TCP connection (its HTTPS port) within `timeout`: what
/// fail mode `open` asks before it lifts the block.
pub fn edges_answer(edges: &[std::net::SocketAddr], timeout: Duration) -> bool {
    edges
        .iter()
        .any(|e| std::net::TcpStream::connect_timeout(e, timeout).is_ok())
}

/// One round: the configuration at `path` read, the kernel compared, the block put in place.
/// `resolve` says whether edges given by name are looked up. Returns the round and the
/// problems found (the configuration's, edges that do not resolve).
pub fn round(
    path: &Path,
    firewall: &dyn Firewall,
    resolve: bool,
) -> Result<(Round, Vec<String>), firewall::Error> {
    let (allow, problems) = match status::load(path) {
        Ok(config) if !config.mandatory_auth.enabled => {
            let before = firewall.inspect(&Allowances::strictest())?;
            let removed = before != Inspection::Absent;
            if removed {
                firewall.remove()?;
            }
            return Ok((Round::NotEnforced { removed }, Vec::new()));
        }
        Ok(config) => {
            let (allow, unresolved) = Allowances::of(&config, resolve);
            let mut problems: Vec<String> = if resolve {
                unresolved
                    .iter()
                    .map(|e| format!("{e} does not resolve"))
                    .collect()
            } else {
                Vec::new()
            };
            // Fail mode open: no block while no edge answers. Decided only once every edge
            // name had its chance to resolve, so a device never lifts its block at boot
            // merely because DNS was not asked yet.
            if config.mandatory_auth.fail_mode == FailMode::Open
                && (resolve || unresolved.is_empty())
                && !edges_answer(&allow.edges, EDGE_PROBE_TIMEOUT)
            {
                let before = firewall.inspect(&allow)?;
                let removed = before != Inspection::Absent;
                if removed {
                    firewall.remove()?;
                }
                problems.push(
                    "no edge answers, and the fail mode is open: not blocking until one does"
                        .into(),
                );
                return Ok((Round::FailedOpen { removed }, problems));
            }
            (allow, problems)
        }
        Err(problems) => (Allowances::strictest(), problems),
    };
    let before = firewall.inspect(&allow)?;
    // no tunnel session yet: a lifted block is put back too
    if matches!(before, Inspection::Blocking { .. }) {
        return Ok((Round::Held, problems));
    }
    firewall.install(&allow)?;
    Ok((Round::Installed { before }, problems))
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The managed configuration file.
    pub config: PathBuf,
    /// The state directory (the device's key and certificate, what the controllers said).
    pub state_dir: PathBuf,
    /// Between rounds.
    pub every: Duration,
    /// Between posture reports.
    pub posture_every: Duration,
}

/// What the device reports about itself now: the agent's version, the OS, and whether the
/// block is in the kernel (read from it). `mandatory_auth` is on only while the block is
/// actually in place.
pub fn posture(config: &ManagedConfig, block: &Inspection) -> pb::DevicePosture {
    pb::DevicePosture {
        os: pb::OsFamily::Linux as i32,
        os_version: status::os_version(),
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        mandatory_auth: config.mandatory_auth.enabled && block.intact(),
        firewall_enabled: block.intact(),
        ..Default::default()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs rounds until the process is stopped: the block, then the device's identity (enroll,
/// renew, posture). The block stays in the kernel when the agent stops.
pub fn run(settings: &Settings, firewall: &dyn Firewall) -> ! {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::error!(error = %e, "no async runtime: the device cannot enroll");
            None
        }
    };
    let mut first = true;
    let mut last_problems = Vec::new();
    loop {
        let mut problems = Vec::new();
        match round(&settings.config, firewall, !first) {
            Ok((r, p)) => {
                problems = p;
                match &r {
                    Round::Held => {}
                    Round::Installed { .. } if first => {
                        tracing::info!(
                            "block installed: only loopback, the grace set, the controllers and the edges go out"
                        )
                    }
                    Round::Installed { before } => {
                        tracing::warn!(?before, "the block was not in place as installed; put back")
                    }
                    Round::NotEnforced { removed: true } => tracing::info!(
                        "mandatory authentication is off for this device: block removed"
                    ),
                    Round::NotEnforced { removed: false } if first => tracing::info!(
                        "mandatory authentication is off for this device: not blocking"
                    ),
                    Round::NotEnforced { .. } => {}
                    Round::FailedOpen { removed: true } => tracing::warn!(
                        "no edge answers and the fail mode is open: block lifted until one does"
                    ),
                    Round::FailedOpen { removed: false } => {}
                }
            }
            // the firewall failed: nothing to do but say so and try again
            Err(e) => problems.push(format!("the block could not be checked or installed: {e}")),
        }
        if let (Some(rt), Ok(config)) = (&rt, status::load(&settings.config)) {
            let (allow, _) = Allowances::of(&config, false);
            let block = firewall.inspect(&allow).unwrap_or(Inspection::Absent);
            let step = rt.block_on(device::step(
                &settings.state_dir,
                &config,
                posture(&config, &block),
                settings.posture_every.as_secs() as i64,
                now_secs(),
            ));
            match step {
                Step::Enrolled(id) => tracing::info!(device = %id, "enrolled"),
                Step::Renewed => tracing::info!("device certificate renewed"),
                Step::Reported => tracing::debug!("posture reported"),
                Step::Idle => {}
                Step::GivenUp(why) => tracing::warn!(
                    reason = %why,
                    "the controllers no longer accept this device's certificate (wiped or revoked): it needs a new enrollment token"
                ),
                Step::Failed(p) => problems.push(p),
            }
        }
        if problems != last_problems {
            for p in &problems {
                tracing::error!(problem = %p, "device");
            }
            last_problems = problems;
        }
        if first {
            first = false;
            // resolve the names now that the block is in place
            continue;
        }
        std::thread::sleep(settings.every);
    }
}
