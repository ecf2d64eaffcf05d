//! All edges converge after the heal: every edge applies the cluster's latest revision.

use std::time::Duration;

use super::super::Invariant;
use super::super::setup::Bed;

/// Waits (at most 30 s) until every edge applied the latest revision.
pub(super) async fn wait(bed: &Bed) -> Result<String, String> {
    let rev = bed
        .cluster
        .latest_revision()
        .await
        .map_err(|e| e.to_string())?;
    bed.cluster
        .wait_edges(rev, Duration::from_secs(30))
        .await
        .map(|_| format!("every edge applied revision {rev}"))
        .map_err(|e| e.to_string())
}

/// The invariant, from what `wait` found.
pub(super) fn check(converged: Result<String, String>) -> Invariant {
    Invariant {
        name: "all edges converge after the heal",
        ok: converged.is_ok(),
        detail: converged.unwrap_or_else(|e| e),
    }
}
