//! Revisions at each edge: no gap, no duplicate, no regression. Read from every install the
//! edges logged (`crate::applied`), and no edge refused a delta.

use super::super::Invariant;
use super::super::setup::Bed;

pub(super) fn check(bed: &Bed) -> Invariant {
    let mut regressions = Vec::new();
    let mut refused_updates = Vec::new();
    let mut installs = 0;
    for e in &bed.cluster.edges {
        let log = std::fs::read_to_string(&e.log).unwrap_or_default();
        let history = crate::applied::parse(&log);
        installs += history.installs();
        regressions.extend(
            history
                .violations()
                .into_iter()
                .map(|v| format!("{}: {v}", e.id)),
        );
        let n = log.matches("refused an update").count();
        if n > 0 {
            refused_updates.push(format!(
                "{}: {n} refused updates (gap or invalid delta)",
                e.id
            ));
        }
    }
    Invariant {
        name: "revisions at each edge: no gap, no duplicate, no regression",
        ok: installs > 0 && regressions.is_empty() && refused_updates.is_empty(),
        detail: if installs == 0 {
            "no install was logged: the check saw nothing".into()
        } else if regressions.is_empty() && refused_updates.is_empty() {
            format!(
                "{installs} installs at {} edges, each after the one before, policy versions never going back; no edge refused a delta",
                bed.cluster.edges.len()
            )
        } else {
            format!("{regressions:?} {refused_updates:?}")
        },
    }
}
