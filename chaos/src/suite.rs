//! The built-in suites: `smoke` (at most 3 minutes, run by `.ci/run`) and `full` (at most 30
//! minutes, every fault kind). Their scenario files live in `chaos/scenarios/` and are compiled
//! into the binary, so a suite runs the same from any directory.

use crate::scenario::{Scenario, ScenarioError};

const SMOKE: &[(&str, &str)] = &[
    (
        "smoke/kill-leader-and-edge.json",
        include_str!("../scenarios/smoke/kill-leader-and-edge.json"),
    ),
    (
        "smoke/pause-and-stale.json",
        include_str!("../scenarios/smoke/pause-and-stale.json"),
    ),
    (
        "smoke/partition-and-membership.json",
        include_str!("../scenarios/smoke/partition-and-membership.json"),
    ),
    (
        "smoke/link-faults.json",
        include_str!("../scenarios/smoke/link-faults.json"),
    ),
];

const FULL: &[(&str, &str)] = &[
    (
        "full/steady.json",
        include_str!("../scenarios/full/steady.json"),
    ),
    (
        "full/kill-leader.json",
        include_str!("../scenarios/full/kill-leader.json"),
    ),
    (
        "full/kill-follower-and-edges.json",
        include_str!("../scenarios/full/kill-follower-and-edges.json"),
    ),
    (
        "full/pauses.json",
        include_str!("../scenarios/full/pauses.json"),
    ),
    (
        "full/rolling-restart.json",
        include_str!("../scenarios/full/rolling-restart.json"),
    ),
    (
        "full/partitions.json",
        include_str!("../scenarios/full/partitions.json"),
    ),
    (
        "full/link-faults.json",
        include_str!("../scenarios/full/link-faults.json"),
    ),
    (
        "full/membership.json",
        include_str!("../scenarios/full/membership.json"),
    ),
    (
        "full/frozen-leader-writes.json",
        include_str!("../scenarios/full/frozen-leader-writes.json"),
    ),
    (
        "full/five-by-five-partitions.json",
        include_str!("../scenarios/full/five-by-five-partitions.json"),
    ),
    (
        "full/ten-edges-lossy.json",
        include_str!("../scenarios/full/ten-edges-lossy.json"),
    ),
];

/// The scenarios of a suite, parsed.
pub fn scenarios(name: &str) -> Result<Vec<Scenario>, ScenarioError> {
    let files = match name {
        "smoke" => SMOKE,
        "full" => FULL,
        other => {
            return Err(ScenarioError::Invalid(format!(
                "unknown suite {other:?} (smoke or full)"
            )));
        }
    };
    files
        .iter()
        .map(|(path, json)| {
            Scenario::from_json(json).map_err(|e| ScenarioError::Invalid(format!("{path}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_built_in_scenario_parses_and_fits_its_budget() {
        let smoke: f64 = super::scenarios("smoke")
            .unwrap()
            .iter()
            .map(|s| s.duration_s + 20.0)
            .sum();
        assert!(smoke <= 180.0, "smoke suite budget: {smoke} s");
        let full: f64 = super::scenarios("full")
            .unwrap()
            .iter()
            .map(|s| s.duration_s + 30.0)
            .sum();
        assert!(full <= 1800.0, "full suite budget: {full} s");
        assert!(super::scenarios("nope").is_err());
    }
}
