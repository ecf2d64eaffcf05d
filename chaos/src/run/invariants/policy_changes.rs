//! Every policy change is applied by every edge (within the bound, and it stays applied).

use super::super::Invariant;

pub(super) fn check(violations: &[String]) -> Invariant {
    let bad: Vec<&String> = violations
        .iter()
        .filter(|v| v.contains("policy change"))
        .collect();
    Invariant {
        name: "every policy change is applied by every edge",
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            "all applied".into()
        } else {
            format!("{bad:?}")
        },
    }
}
