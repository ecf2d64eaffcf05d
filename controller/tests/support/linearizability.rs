//! A linearizability checker for a single register (Wing & Gong's search with Lowe's
//! memoization). Operations whose outcome is unknown (the client timed out or lost the
//! connection) may take effect at any time after their call, or never.

use std::collections::HashSet;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Wrote a value.
    Write(String),
    /// Read a value (`None`: the register was empty).
    Read(Option<String>),
}

/// One operation in the history.
#[derive(Debug, Clone)]
pub struct Op {
    /// When the call started (ns since the test began).
    pub call: u64,
    /// When it returned; `None` when the outcome is unknown (a write that may or may not have
    /// happened; unknown reads are left out of the history).
    pub ret: Option<u64>,
    /// What it did.
    pub kind: Kind,
}

/// The search gives up (and reports failure) after this many states.
const MAX_STEPS: u64 = 20_000_000;

/// Checks that `history` is linearizable for a register starting empty. Returns the number of
/// operations checked.
pub fn check(history: &[Op]) -> Result<usize, String> {
    // A write with an unknown outcome whose value no read observed can always be placed last
    // (or never): it cannot help any read, so it is dropped from the search.
    let observed: HashSet<&str> = history
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let mut h: Vec<Op> = history
        .iter()
        .filter(|o| {
            o.ret.is_some() || matches!(&o.kind, Kind::Write(v) if observed.contains(v.as_str()))
        })
        .cloned()
        .collect();
    // Determinate operations first, each group by call time, so the search tries likely orders
    // before exotic ones.
    h.sort_by_key(|o| (o.ret.is_none(), o.call));
    let n = h.len();
    let mut done = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut steps = 0u64;
    if search(&h, &mut done, None, &mut seen, &mut steps) {
        Ok(history.len())
    } else if steps >= MAX_STEPS {
        Err(format!(
            "gave up after {steps} states on a history of {n} operations"
        ))
    } else {
        Err(format!(
            "history of {n} operations is not linearizable (searched {steps} states)"
        ))
    }
}

fn is_done(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

fn search(
    h: &[Op],
    done: &mut Vec<u64>,
    state: Option<String>,
    seen: &mut HashSet<(Vec<u64>, Option<String>)>,
    steps: &mut u64,
) -> bool {
    *steps += 1;
    if *steps >= MAX_STEPS {
        return false;
    }
    // Finished when every operation with a known outcome is linearized.
    if (0..h.len()).all(|i| is_done(done, i) || h[i].ret.is_none()) {
        return true;
    }
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    // An operation can go next only if no pending operation returned before it was called.
    let min_ret = (0..h.len())
        .filter(|i| !is_done(done, *i))
        .filter_map(|i| h[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..h.len() {
        if is_done(done, i) || h[i].call > min_ret {
            continue;
        }
        let next = match &h[i].kind {
            Kind::Write(v) => Some(Some(v.clone())),
            Kind::Read(v) if *v == state => Some(state.clone()),
            Kind::Read(_) => None,
        };
        if let Some(next) = next {
            done[i / 64] |= 1 << (i % 64);
            if search(h, done, next, seen, steps) {
                return true;
            }
            done[i / 64] &= !(1 << (i % 64));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(call: u64, ret: u64, v: &str) -> Op {
        Op {
            call,
            ret: Some(ret),
            kind: Kind::Write(v.into()),
        }
    }
    fn r(call: u64, ret: u64, v: Option<&str>) -> Op {
        Op {
            call,
            ret: Some(ret),
            kind: Kind::Read(v.map(String::from)),
        }
    }

    #[test]
    fn accepts_linearizable_and_rejects_stale_reads() {
        assert!(check(&[w(0, 10, "a"), r(11, 20, Some("a"))]).is_ok());
        assert!(
            check(&[w(0, 10, "a"), r(5, 20, None)]).is_ok(),
            "concurrent read may see the old value"
        );
        assert!(
            check(&[w(0, 10, "a"), r(11, 20, None)]).is_err(),
            "stale read after the write completed"
        );
        assert!(check(&[w(0, 10, "a"), w(11, 20, "b"), r(21, 30, Some("a"))]).is_err());
        assert!(
            check(&[w(0, 10, "a"), r(11, 20, Some("b"))]).is_err(),
            "read of a value never written"
        );
        // An unknown write may or may not have happened.
        let unknown = Op {
            call: 0,
            ret: None,
            kind: Kind::Write("x".into()),
        };
        assert!(check(&[unknown.clone(), r(5, 6, None), r(7, 8, Some("x"))]).is_ok());
        assert!(
            check(&[unknown, r(5, 6, Some("x")), r(7, 8, None)]).is_err(),
            "cannot un-happen"
        );
    }
}
