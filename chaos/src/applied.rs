//! Every revision an edge applied, read from its own log (contract 2: an edge never goes
//! back). Edges log each install at debug level under the target `palisade_node::applied`
//! (revision, policy version, snapshot or delta); the harness turns that target on and checks
//! the whole sequence afterwards, not samples of it.

/// The line the harness writes into an edge's log before each start of the edge.
pub const INCARNATION_MARK: &str = "=== palisade-chaos: edge starts ===";

/// The log filter that makes edges log every install.
pub const FILTER: &str = "palisade_node::applied=debug";

/// One install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The revision installed.
    pub revision: u64,
    /// The policy version in force after it.
    pub policy: u64,
    /// A snapshot (else a delta).
    pub snapshot: bool,
}

/// What the log of one edge shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Installs, per incarnation, in order.
    pub incarnations: Vec<Vec<Applied>>,
}

impl History {
    /// Installs counted.
    pub fn installs(&self) -> usize {
        self.incarnations.iter().map(Vec::len).sum()
    }

    /// Every place where the edge went back or skipped: a revision not above the one before
    /// (any install), a delta that is not the next revision, a policy version below the one
    /// before.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (n, inc) in self.incarnations.iter().enumerate() {
            for w in inc.windows(2) {
                let (a, b) = (w[0], w[1]);
                if b.revision <= a.revision {
                    out.push(format!(
                        "incarnation {n}: revision {} after {}",
                        b.revision, a.revision
                    ));
                } else if !b.snapshot && b.revision != a.revision + 1 {
                    out.push(format!(
                        "incarnation {n}: delta to {} after {} (a gap)",
                        b.revision, a.revision
                    ));
                }
                if b.policy < a.policy {
                    out.push(format!(
                        "incarnation {n}: policy version {} after {} (revision {} after {})",
                        b.policy, a.policy, b.revision, a.revision
                    ));
                }
            }
        }
        out
    }
}

/// Reads an edge's log (plain or ANSI-coloured text).
pub fn parse(log: &str) -> History {
    let mut h = History::default();
    for line in log.lines() {
        if line.starts_with(INCARNATION_MARK) {
            h.incarnations.push(Vec::new());
            continue;
        }
        if !line.contains("palisade_node::applied") {
            continue;
        }
        let plain = strip_ansi(line);
        let field = |name: &str| -> Option<&str> {
            let at = plain.find(&format!(" {name}="))? + name.len() + 2;
            plain[at..].split_whitespace().next()
        };
        let (Some(revision), Some(policy), Some(how)) = (
            field("revision").and_then(|v| v.parse().ok()),
            field("policy").and_then(|v| v.parse().ok()),
            field("how"),
        ) else {
            continue;
        };
        if h.incarnations.is_empty() {
            h.incarnations.push(Vec::new());
        }
        if let Some(inc) = h.incarnations.last_mut() {
            inc.push(Applied {
                revision,
                policy,
                snapshot: how.trim_matches('"') == "snapshot",
            });
        }
    }
    h
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(rev: u64, policy: u64, how: &str) -> String {
        format!(
            "\u{1b}[2m2026-12-01T02:00:00Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mpalisade_node::applied\u{1b}[0m\u{1b}[2m:\u{1b}[0m applied \u{1b}[3mrevision\u{1b}[0m\u{1b}[2m=\u{1b}[0m{rev} \u{1b}[3mpolicy\u{1b}[0m\u{1b}[2m=\u{1b}[0m{policy} \u{1b}[3mhow\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"{how}\""
        )
    }

    #[test]
    fn every_install_is_read_and_going_back_is_found() {
        let log = [
            INCARNATION_MARK.to_string(),
            line(10, 2, "snapshot"),
            line(11, 2, "delta"),
            line(12, 3, "delta"),
            "something else entirely".into(),
            INCARNATION_MARK.to_string(),
            line(5, 1, "snapshot"),
            line(6, 1, "delta"),
        ]
        .join("\n");
        let h = parse(&log);
        assert_eq!(h.installs(), 5);
        assert_eq!(h.incarnations.len(), 2);
        assert!(h.violations().is_empty(), "{:?}", h.violations());

        let back = [
            INCARNATION_MARK.to_string(),
            line(10, 3, "snapshot"),
            line(11, 3, "delta"),
            line(9, 2, "snapshot"),
            line(12, 3, "delta"),
            line(20, 4, "snapshot"),
            line(21, 3, "delta"),
        ]
        .join("\n");
        let v = parse(&back).violations();
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].contains("revision 9 after 11"), "{v:?}");
        assert!(v[1].contains("policy version 2 after 3"), "{v:?}");
        assert!(v[2].contains("delta to 12 after 9"), "{v:?}");
        assert!(v[3].contains("policy version 3 after 4"), "{v:?}");
    }
}
