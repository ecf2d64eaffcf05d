//! Bounds on what one client or one user can make an edge do: token-bucket rate limits per key
//! (client address, user) and the store of sign-in states already used. Both are bounded in
//! memory and cost O(1) per request, whatever an attacker sends.
//!
//! Keys are hashed into a fixed table of buckets (like a count-min sketch with one row): two
//! keys that share a bucket share its budget, which only ever limits sooner, never later, and
//! an attacker cycling through keys cannot grow memory. The table is sized so that real
//! clients rarely collide.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

impl Rate {
    /// `per_second` sustained with a burst of `burst`.
    pub const fn new(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for many keys in a fixed table.
#[derive(Debug)]
pub struct RateLimiter {
    /// What is limited, for logs and metrics.
    pub name: &'static str,
    rate: Rate,
    hasher: std::collections::hash_map::RandomState,
    slots: Vec<Mutex<Option<Bucket>>>,
}

impl RateLimiter {
    /// A limiter named `name` of `rate` per key, with `slots` buckets.
    pub fn new(name: &'static str, rate: Rate, slots: usize) -> RateLimiter {
        RateLimiter {
            name,
            rate,
            hasher: std::collections::hash_map::RandomState::new(),
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Takes one token for `key` at `now`: `Ok` when allowed, or how long until the next
    /// token when not.
    pub fn check<K: Hash + ?Sized>(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let i = (self.hasher.hash_one(key) % self.slots.len() as u64) as usize;
        let mut slot = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        let b = slot.get_or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate.per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

/// Sign-in states already used (a replayed callback is refused), in two generations that
/// rotate every `ttl`: a state is remembered at least `ttl`, at most twice that, and each
/// generation holds at most `cap` entries. A state lives at most `ttl`, so nothing older is
/// needed.
#[derive(Debug)]
pub struct UsedStates {
    ttl: Duration,
    cap: usize,
    inner: Mutex<Generations>,
}

#[derive(Debug)]
struct Generations {
    current: HashSet<String>,
    previous: HashSet<String>,
    rotated: Instant,
}

/// The outcome of recording a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// First use.
    First,
    /// Seen before: a replay.
    Replayed,
    /// The store is full: too many sign-ins in progress on this edge.
    Full,
}

impl UsedStates {
    /// States remembered for `ttl`, at most `cap` per generation.
    pub fn new(ttl: Duration, cap: usize) -> UsedStates {
        UsedStates {
            ttl,
            cap,
            inner: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                rotated: Instant::now(),
            }),
        }
    }

    /// Records `state` at `now`.
    pub fn record(&self, state: &str, now: Instant) -> Use {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(g.rotated) >= self.ttl {
            let two = now.saturating_duration_since(g.rotated) >= self.ttl * 2;
            g.previous = std::mem::take(&mut g.current);
            if two {
                g.previous.clear();
            }
            g.rotated = now;
        }
        if g.current.contains(state) || g.previous.contains(state) {
            return Use::Replayed;
        }
        if g.current.len() >= self.cap {
            return Use::Full;
        }
        g.current.insert(state.to_string());
        Use::First
    }

    /// How many states are remembered.
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.current.len() + g.previous.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The edge's rate limits, by what is being done.
#[derive(Debug)]
pub struct Limiters {
    /// Starting a sign-in and returning from the provider, per client address.
    pub sign_in: RateLimiter,
    /// MFA prompts and checks, per user.
    pub mfa: RateLimiter,
    /// Portal pages and changes, per user.
    pub portal: RateLimiter,
    /// Every reserved (`/.palisade/`) page, per client address.
    pub reserved: RateLimiter,
}

/// Rates for `Limiters`.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Sign-in starts and callbacks per client address.
    pub sign_in: Rate,
    /// MFA requests per user.
    pub mfa: Rate,
    /// Portal requests per user.
    pub portal: Rate,
    /// Reserved-path requests per client address.
    pub reserved: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            sign_in: Rate::new(2.0, 30.0),
            mfa: Rate::new(2.0, 40.0),
            portal: Rate::new(2.0, 60.0),
            reserved: Rate::new(20.0, 200.0),
        }
    }
}

impl Limiters {
    /// Limiters at `rates`.
    pub fn new(rates: Rates) -> Limiters {
        const SLOTS: usize = 1 << 16;
        Limiters {
            sign_in: RateLimiter::new("sign_in", rates.sign_in, SLOTS),
            mfa: RateLimiter::new("mfa", rates.mfa, SLOTS),
            portal: RateLimiter::new("portal", rates.portal, SLOTS),
            reserved: RateLimiter::new("reserved", rates.reserved, SLOTS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let l = RateLimiter::new("t", Rate::new(10.0, 5.0), 1024);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check("a", t0).is_ok());
        }
        let wait = l.check("a", t0).expect_err("over the burst");
        assert!(wait <= Duration::from_millis(101), "{wait:?}");
        assert!(l.check("b", t0).is_ok(), "another key has its own bucket");
        assert!(l.check("a", t0 + Duration::from_millis(100)).is_ok());
        assert!(l.check("a", t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn used_states_are_bounded_and_forget_after_two_generations() {
        let u = UsedStates::new(Duration::from_secs(600), 3);
        let t0 = Instant::now();
        assert_eq!(u.record("s1", t0), Use::First);
        assert_eq!(u.record("s1", t0), Use::Replayed);
        assert_eq!(u.record("s2", t0), Use::First);
        assert_eq!(u.record("s3", t0), Use::First);
        assert_eq!(u.record("s4", t0), Use::Full, "bounded");
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(u.record("s1", t1), Use::Replayed, "remembered a full ttl");
        assert_eq!(u.record("s4", t1), Use::First);
        let t2 = t1 + Duration::from_secs(1200);
        assert_eq!(u.record("s1", t2), Use::First, "forgotten after two ttls");
        assert!(u.len() <= 6);
    }

    #[test]
    fn a_flood_of_keys_costs_no_memory() {
        let l = RateLimiter::new("t", Rate::new(1.0, 1.0), 64);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let _ = l.check(&i, t0);
        }
        assert_eq!(l.slots.len(), 64);
    }
}
