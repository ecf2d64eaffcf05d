//! The contracts a run checks once the workload is over, one per file. Each returns an
//! `Invariant`: its name, whether it held, and what was checked or what broke.

mod after_heal;
mod convergence;
mod edge_revisions;
mod lost_writes;
mod policy_changes;
mod revocations;
mod stale_views;
mod unready_edges;

use super::Invariant;
use super::setup::Bed;
use super::workload::Outcome;
use crate::scenario::Schedule;

/// Checks every invariant, in the report's order. Convergence is awaited first, so the others
/// read a cluster that has settled.
pub(super) async fn check(bed: &Bed, schedule: &Schedule, outcome: &mut Outcome) -> Vec<Invariant> {
    let converged = convergence::wait(bed).await;
    let violations = bed
        .probe
        .violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out = vec![
        lost_writes::check(bed, &outcome.acked).await,
        edge_revisions::check(bed),
        revocations::check(&violations),
    ];
    if !schedule.policy_changes_s.is_empty() {
        out.push(policy_changes::check(&violations));
    }
    out.push(unready_edges::check(std::mem::take(&mut outcome.faults.snapshot_checks)).await);
    let (stale, windows) =
        stale_views::check(std::mem::take(&mut outcome.faults.stale_checks)).await;
    out.push(stale);
    out.push(convergence::check(converged));
    if windows > 0 {
        out.push(after_heal::check(bed).await);
    }
    out
}
