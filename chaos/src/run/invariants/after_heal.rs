//! Fail-closed applications are served again after the heal, at every edge (checked only when
//! a stale window was).

use std::time::Duration;

use super::super::setup::Bed;
use super::super::{GUARDED_HOST, Invariant};

pub(super) async fn check(bed: &Bed) -> Invariant {
    let mut back = true;
    for e in 0..bed.cluster.edges.len() {
        let mut ok = false;
        for _ in 0..100 {
            if bed.probe.status(GUARDED_HOST, e, None).await == Some(200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        back &= ok;
    }
    Invariant {
        name: "fail-closed applications are served again after the heal",
        ok: back,
        detail: if back {
            "served at every edge".into()
        } else {
            "still refused somewhere".into()
        },
    }
}
