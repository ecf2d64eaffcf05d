//! No request is served to a revoked session after the bound: every revoked session is refused
//! at every edge within `ENFORCEMENT_BOUND`, and keeps being refused.

use super::super::{ENFORCEMENT_BOUND, Invariant};

pub(super) fn check(violations: &[String]) -> Invariant {
    let served: Vec<&String> = violations
        .iter()
        .filter(|v| v.contains("revocation"))
        .collect();
    Invariant {
        name: "no request served to a revoked session after the bound",
        ok: served.is_empty(),
        detail: if served.is_empty() {
            format!(
                "every revoked session refused at every edge within {ENFORCEMENT_BOUND:?} and after"
            )
        } else {
            format!("{served:?}")
        },
    }
}
