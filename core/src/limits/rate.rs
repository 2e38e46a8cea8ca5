//! Keyed token-bucket rate limits (governor's GCRA), with the wait time turned into `Retry-After`.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

fn quota(per_sec: f64, burst: u32) -> Quota {
    // Clamped to 1 ns: above ~1e9/s the period rounds to zero, and `with_period(0)` is None,
    // which must never fall back to the tightest quota (found by fuzzing review).
    let period = Duration::from_secs_f64(1.0 / per_sec.max(1e-6)).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
}

/// Whole seconds to announce in `Retry-After` (at least 1).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// One bucket (per connection): `per_sec` sustained, `burst` at once. The limiter's own clock
/// tells the wait (a second copy of the clock here cost every session 80 bytes).
pub(crate) struct DirectRate {
    limiter: DefaultDirectRateLimiter,
}

impl DirectRate {
    /// `clock` is shared: building a clock calibrates the TSC (CPUID), far too costly per session.
    pub(crate) fn new(per_sec: f64, burst: u32, clock: &DefaultClock) -> Self {
        DirectRate { limiter: DefaultDirectRateLimiter::direct_with_clock(quota(per_sec, burst), clock.clone()) }
    }

    /// Takes `n` cells at once; on refusal returns how long to wait.
    pub(crate) fn check_n(&self, n: u32) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(n) else { return Ok(()) };
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.limiter.clock().now())),
            // More than the bucket holds: can never pass; the size caps make this unreachable.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

/// A per-key rate: `per_sec` sustained, `burst` at once.
pub(crate) struct KeyedRate<K: Eq + Hash + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Eq + Hash + Clone> KeyedRate<K> {
    /// `per_sec` must be positive and finite (checked by config validation).
    pub(crate) fn new(per_sec: f64, burst: u32) -> Self {
        KeyedRate { limiter: DefaultKeyedRateLimiter::keyed(quota(per_sec, burst)), clock: DefaultClock::default() }
    }

    /// Takes one cell; on refusal returns how long to wait.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose buckets are full again (bounds memory under IP churn).
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_wait() {
        let rate = KeyedRate::new(1.0, 2);
        assert!(rate.check(&1).is_ok());
        assert!(rate.check(&1).is_ok());
        let wait = rate.check(&1).expect_err("limited");
        assert!(retry_after_secs(wait) >= 1);
        let direct = DirectRate::new(10.0, 5, &DefaultClock::default());
        let unlimited = DirectRate::new(1e10, 10, &DefaultClock::default());
        assert!((0..1000).all(|_| unlimited.check_n(1).is_ok()));
        assert!(direct.check_n(5).is_ok());
        assert!(direct.check_n(1).is_err());
        assert!(rate.check(&2).is_ok());
    }
}
