//! Keyed token-bucket rate limits (governor's GCRA), with the wait time turned into `Retry-After`.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// governor's TSC clock (quanta), one for the process: a `DefaultClock` in every limiter cost each
/// session 80 bytes (two limiters, each with a 40-byte copy of the clock), and building one
/// calibrates the TSC. This one is a zero-sized handle on the process's clock, read the same way.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SharedClock;

/// Nanoseconds on [`SharedClock`] since its reference point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u64);

impl Add<Nanos> for Tick {
    type Output = Tick;

    fn add(self, other: Nanos) -> Tick {
        Tick(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for Tick {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Tick(self.0.saturating_sub(duration.as_u64()))
    }
}

impl Clock for SharedClock {
    type Instant = Tick;

    fn now(&self) -> Tick {
        static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
        let clock = CLOCK.get_or_init(quanta::Clock::new);
        Tick(clock.delta_as_nanos(0, clock.raw()))
    }
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, SharedClock, NoOpMiddleware<Tick>>;

/// A token bucket: `per_sec` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Cells per second; positive and finite (checked when the config is compiled).
    pub(crate) per_sec: f64,
    /// Cells accepted at once.
    pub(crate) burst: u32,
}

impl Rate {
    pub(crate) const fn new(per_sec: f64, burst: u32) -> Self {
        Rate { per_sec, burst }
    }

    /// `per_sec` with the house's default burst: twice the rate (at least 1). Used for every rate
    /// whose burst is not configured on its own.
    pub(crate) fn with_double_burst(per_sec: f64) -> Self {
        // `as` saturates: an absurd rate gets the largest bucket, never a panic.
        Rate { per_sec, burst: (per_sec * 2.0).ceil() as u32 }
    }
}

fn quota(Rate { per_sec, burst }: Rate) -> Quota {
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
    limiter: DirectLimiter,
}

impl DirectRate {
    pub(crate) fn new(rate: Rate) -> Self {
        DirectRate { limiter: DirectLimiter::direct_with_clock(quota(rate), SharedClock) }
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
    pub(crate) fn new(rate: Rate) -> Self {
        KeyedRate { limiter: DefaultKeyedRateLimiter::keyed(quota(rate)), clock: DefaultClock::default() }
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

/// Per-user buckets (`limits.user_messages_per_sec`), one per user, shared by that user's
/// sessions. A session takes its user's bucket once, when it starts, and checks it directly: a
/// keyed limiter hashed the user name and looked the bucket up for every message.
pub(crate) struct UserRates {
    rate: Rate,
    buckets: Mutex<HashMap<Box<str>, UserBucket>>,
}

struct UserBucket {
    rate: Arc<DirectRate>,
    /// When a sweep first found no session holding the bucket.
    unused_since: Option<Instant>,
}

impl UserRates {
    pub(crate) fn new(rate: Rate) -> Self {
        UserRates { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// The bucket of `user`, shared with the user's other sessions.
    pub(crate) fn bucket(&self, user: &str) -> Arc<DirectRate> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = buckets.get_mut(user) {
            held.unused_since = None;
            return Arc::clone(&held.rate);
        }
        let rate = Arc::new(DirectRate::new(self.rate));
        buckets.insert(user.into(), UserBucket { rate: Arc::clone(&rate), unused_since: None });
        rate
    }

    /// Forgets the buckets no session has held for as long as a bucket takes to refill: such a
    /// bucket is full again, the same as a new one, so a user cannot reset a drained bucket by
    /// reconnecting.
    pub(crate) fn forget_idle(&self) {
        let refill = Duration::from_secs_f64((f64::from(self.rate.burst) / self.rate.per_sec.max(1e-6)).min(86_400.0));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.retain(|_, held| {
            if Arc::strong_count(&held.rate) > 1 {
                held.unused_since = None;
                return true;
            }
            let since = *held.unused_since.get_or_insert(now);
            now.duration_since(since) < refill
        });
        buckets.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_wait() {
        let rate = KeyedRate::new(Rate::new(1.0, 2));
        assert!(rate.check(&1).is_ok());
        assert!(rate.check(&1).is_ok());
        let wait = rate.check(&1).expect_err("limited");
        assert!(retry_after_secs(wait) >= 1);
        let direct = DirectRate::new(Rate::new(10.0, 5));
        let unlimited = DirectRate::new(Rate::new(1e10, 10));
        assert!((0..1000).all(|_| unlimited.check_n(1).is_ok()));
        assert!(direct.check_n(5).is_ok());
        assert!(direct.check_n(1).is_err());
        assert!(rate.check(&2).is_ok());
    }

    #[test]
    fn a_users_sessions_share_one_bucket_kept_until_it_refilled() {
        // One cell per 100 s: nothing refills during the test.
        let slow = UserRates::new(Rate::new(0.01, 2));
        let first = slow.bucket("alice");
        let second = slow.bucket("alice");
        assert!(first.check_n(1).is_ok());
        assert!(second.check_n(1).is_ok());
        assert!(first.check_n(1).is_err(), "the second session drained the shared bucket");
        assert!(slow.bucket("bob").check_n(1).is_ok(), "another user has a bucket of their own");

        // Refilled in 2 ms: unused since the first sweep, forgotten by a sweep after that.
        let rates = UserRates::new(Rate::new(1000.0, 2));
        drop((rates.bucket("alice"), rates.bucket("bob")));
        rates.forget_idle();
        assert_eq!(rates.len(), 2);
        std::thread::sleep(Duration::from_millis(5));
        let held = rates.bucket("carol");
        rates.forget_idle();
        assert_eq!(rates.len(), 1, "alice and bob forgotten, carol held");
        drop(held);
    }
}
