//! No protected request is served by an edge without a snapshot: each restarted edge was
//! probed from its first seconds (`faults.rs`).

use super::super::Invariant;
use super::super::faults::SnapshotCheck;

pub(super) async fn check(checks: Vec<SnapshotCheck>) -> Invariant {
    let mut unready = Vec::new();
    let mut checked = 0;
    for c in checks {
        if let Ok((edge, n)) = c.await {
            checked += 1;
            if n > 0 {
                unready.push(format!(
                    "edge {edge}: {n} requests served without a snapshot"
                ));
            }
        }
    }
    Invariant {
        name: "no protected request is served by an edge without a snapshot",
        ok: unready.is_empty(),
        detail: if unready.is_empty() {
            format!("{checked} edge restarts probed from their first second")
        } else {
            format!("{unready:?}")
        },
    }
}
