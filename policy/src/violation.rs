//! Validation errors: every problem in an input, each addressed by its JSON path.

use std::fmt;

/// One problem in a policy document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// JSON path, e.g. `apps[3].rules[1].require[0].ip`; `$` for the document itself.
    pub path: String,
    /// Why it is wrong, e.g. `"10.0.0.300/8" is not a CIDR`.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every violation found in one input, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s): {}", .0.len(), .0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Violations(pub Vec<Violation>);

/// Collects violations while walking a document.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub(crate) violations: Vec<Violation>,
}

impl Collector {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.violations.push(Violation {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// Reports every unknown field kept in a struct's `extra` map.
    pub(crate) fn unknown_fields(&mut self, path: &str, extra: &crate::document::Extra) {
        for key in extra.keys() {
            let p = if path.is_empty() || path == "$" {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            self.push(p, "unknown field");
        }
    }
}

/// Quotes a user-supplied value for an error message, shortening very long values.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{:?}…", cut)
    } else {
        format!("{s:?}")
    }
}
