//! Fail-closed applications are denied when stale: while every controller was paused, once
//! the view was older than the application's limit, no edge served it (`faults.rs`).

use super::super::Invariant;
use super::super::faults::StaleCheck;

/// The invariant, and how many stale windows were checked.
pub(super) async fn check(checks: Vec<StaleCheck>) -> (Invariant, usize) {
    let mut bad = Vec::new();
    let mut windows = 0;
    for c in checks {
        if let Ok((label, edges)) = c.await {
            windows += 1;
            if !edges.is_empty() {
                bad.push(format!(
                    "{label}: edges {edges:?} still served the fail-closed app"
                ));
            }
        }
    }
    let invariant = Invariant {
        name: "fail-closed applications are denied when stale",
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            format!("{windows} stale windows checked")
        } else {
            format!("{bad:?}")
        },
    };
    (invariant, windows)
}
