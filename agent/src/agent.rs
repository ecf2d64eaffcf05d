//! The agent's loop: the block first, before anything else, then kept in place.
//!
//! Each round reads the managed configuration again (an MDM may push a new one) and the
//! kernel's ruleset, and puts the block back if it is missing or changed. The first round
//! installs the block before any name is resolved, so a device is blocked from its first
//! second even when DNS does not answer; edges given by name join the allowances once they
//! resolve. A configuration that cannot be read gets the strictest block (loopback and DHCP).
//! A device outside the rollout (mandatory authentication off) has its block removed.

use std::path::Path;
use std::time::Duration;

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
            let problems = if resolve {
                unresolved
                    .into_iter()
                    .map(|e| format!("edge {e} does not resolve"))
                    .collect()
            } else {
                Vec::new()
            };
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

/// Runs rounds every `every` until the process is stopped. The block stays in the kernel when
/// it is.
pub fn run(path: &Path, firewall: &dyn Firewall, every: Duration) -> ! {
    let mut first = true;
    let mut last_problems = Vec::new();
    loop {
        match round(path, firewall, !first) {
            Ok((r, problems)) => {
                match &r {
                    Round::Held => {}
                    Round::Installed { .. } if first => {
                        tracing::info!(
                            "block installed: only loopback, the grace set and the edges go out"
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
                }
                if problems != last_problems {
                    for p in &problems {
                        tracing::error!(problem = %p, "managed configuration");
                    }
                    last_problems = problems;
                }
                if first {
                    first = false;
                    // resolve the edges' names now that the block is in place
                    continue;
                }
            }
            // the firewall failed: nothing to do but say so and try again
            Err(e) => tracing::error!(error = %e, "the block could not be checked or installed"),
        }
        std::thread::sleep(every);
    }
}
