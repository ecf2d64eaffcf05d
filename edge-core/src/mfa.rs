//! The rules about factors that the edge applies, each in one place: which of a user's factors
//! a rule accepts, whether the user is locked out, and whether the caller passed a factor
//! recently enough to manage factors. The controllers enforce the same rules authoritatively
//! (`palisade_policy::catalog`); the edge uses them to decide what to offer and to refuse early.

use palisade_policy::catalog::{FactorKind, FactorRecord, RECENT_MFA_MS, UserKey};
use palisade_policy::document::MfaMethod;

use crate::session::Caller;
use crate::view::View;

/// Passing a factor this recently (seconds) allows adding or removing factors: the catalog's
/// `RECENT_MFA_MS`, which the controllers hold authoritatively.
pub const RECENT_SECS: i64 = RECENT_MFA_MS / 1000;

/// The method a factor of `kind` satisfies.
pub fn method(kind: FactorKind) -> MfaMethod {
    kind.method()
}

/// The factors among `factors` that satisfy one of `methods`.
pub fn eligible<'a>(factors: &[&'a FactorRecord], methods: &[MfaMethod]) -> Vec<&'a FactorRecord> {
    factors
        .iter()
        .copied()
        .filter(|f| methods.contains(&f.kind.method()))
        .collect()
}

/// Until when (unix seconds) `user` is locked out of MFA, if they are at `now`.
pub fn locked_until(view: &View, user: &UserKey, now: i64) -> Option<i64> {
    let until_ms = view.counters(user).locked_until_ms;
    if until_ms <= 0 {
        return None;
    }
    let until = until_ms / 1000;
    (until > now).then_some(until)
}

/// Whether the caller's MFA assertion was earned within `RECENT_SECS` of `now`.
pub fn recently_verified(caller: &Caller, now: i64) -> bool {
    caller
        .identity
        .mfa
        .as_ref()
        .is_some_and(|m| now - m.authenticated_at.as_second() <= RECENT_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{factor, user};
    use crate::view::Change;
    use palisade_policy::catalog::Counters;

    #[test]
    fn eligibility_follows_the_methods() {
        let totp = factor("fac-1", "alice", FactorKind::Totp);
        let key = factor("fac-2", "alice", FactorKind::SecurityKey);
        let touch = factor("fac-3", "alice", FactorKind::Platform);
        let all = [&totp, &key, &touch];
        let ids = |v: Vec<&FactorRecord>| v.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(eligible(&all, &MfaMethod::ALL)),
            ["fac-1", "fac-2", "fac-3"]
        );
        assert_eq!(ids(eligible(&all, &[MfaMethod::Platform])), ["fac-3"]);
        assert_eq!(
            ids(eligible(
                &all,
                &[MfaMethod::SecurityKey, MfaMethod::Platform]
            )),
            ["fac-2", "fac-3"]
        );
        assert!(eligible(&[&totp], &[MfaMethod::SecurityKey]).is_empty());
    }

    #[test]
    fn lockout_is_read_from_the_counters() {
        let locked = |until_ms: i64| {
            View::from_snapshot(
                1,
                [Change::CountersUpdated(
                    user("alice"),
                    Counters {
                        failed_attempts: 7,
                        locked_until_ms: until_ms,
                        ..Counters::default()
                    },
                )],
            )
            .expect("snapshot")
        };
        let now = 1_000;
        assert_eq!(
            locked_until(&locked(1_030_000), &user("alice"), now),
            Some(1_030)
        );
        assert_eq!(
            locked_until(&locked(1_001_500), &user("alice"), now),
            Some(1_001)
        );
        assert_eq!(
            locked_until(&locked(1_000_000), &user("alice"), now),
            None,
            "over"
        );
        assert_eq!(locked_until(&locked(0), &user("alice"), now), None);
        assert_eq!(locked_until(&locked(1_030_000), &user("bob"), now), None);
    }

    #[test]
    fn the_recent_window_is_the_catalogs() {
        let c = crate::fixtures::caller_with_mfa(1_000);
        assert!(recently_verified(&c, 1_000 + RECENT_SECS));
        assert!(!recently_verified(&c, 1_001 + RECENT_SECS));
        let mut none = c;
        none.identity.mfa = None;
        assert!(!recently_verified(&none, 1_000));
    }
}
