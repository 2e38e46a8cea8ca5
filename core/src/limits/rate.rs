//! Keyed token-bucket rate limits (governor's GCRA), with the wait time turned into `Retry-After`.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A per-key rate: `per_sec` sustained, `burst` at once.
pub(crate) struct KeyedRate<K: Eq + Hash + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Eq + Hash + Clone> KeyedRate<K> {
    /// `per_sec` must be positive and finite (checked by config validation).
    pub(crate) fn new(per_sec: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_sec.max(1e-6));
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        KeyedRate { limiter: DefaultKeyedRateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// Takes one cell; on refusal returns the whole seconds to wait (at least 1).
    pub(crate) fn check(&self, key: &K) -> Result<(), u64> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
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
        assert!(wait >= 1);
        assert!(rate.check(&2).is_ok());
    }
}
