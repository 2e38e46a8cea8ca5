//! The session's deadlines: the token's expiry, the idle timeout counted from the last client
//! message, and the next heartbeat ping. One value, served by the session's one alarm (`alarms.rs`)
//! set to [`Timers::next_deadline`]; when it fires, [`Timers::due`] says which deadline passed.
//! No I/O and no clock reads beyond `Instant::now()` where a method says so.

use std::time::Duration;

use tokio::time::Instant;

use crate::auth::{Identity, now_secs};

/// What is due when the session's alarm fires, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// The token expired (after the configured leeway).
    TokenExpiry,
    /// Nothing came from the client for `limits.idle_timeout_secs`.
    Idle,
    /// Time for the heartbeat ping.
    Ping,
    /// Nothing: the alarm fired for a deadline that has moved since (the idle deadline moves
    /// with every client message without setting the alarm again).
    Nothing,
}

/// The session's deadlines, in milliseconds since the session started (three words and the
/// start, where three `Instant`s took twice that in every session's future).
pub(super) struct Timers {
    /// When the session started: the origin of the deadlines, and of its reported duration.
    started: Instant,
    expires_at_ms: u64,
    last_activity_ms: u64,
    next_ping_ms: u64,
    /// The expiry moved since the loop last read the next deadline (an in-band refresh).
    is_rescheduled: bool,
}

impl Timers {
    /// The deadlines of a session starting now for `identity` (`limits.leeway_secs`,
    /// `limits.ping_interval`).
    pub(super) fn new(identity: &Identity, leeway_secs: u64, ping_interval: Duration) -> Timers {
        let started = Instant::now();
        Timers {
            started,
            expires_at_ms: millis(expiry_deadline(identity, leeway_secs).saturating_duration_since(started)),
            last_activity_ms: 0,
            next_ping_ms: millis(ping_interval),
            is_rescheduled: false,
        }
    }

    /// When the session started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// `at` in milliseconds since the start (rounded down).
    fn since_start(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.started))
    }

    /// The earliest deadline: the token's expiry, the idle timeout or the next ping.
    pub(super) fn next_deadline(&self, idle_timeout: Duration) -> Instant {
        let idle_at = self.last_activity_ms.saturating_add(millis(idle_timeout));
        let earliest = self.expires_at_ms.min(idle_at).min(self.next_ping_ms);
        self.started + Duration::from_millis(earliest)
    }

    /// What is due at `now`. The idle deadline is not moved per message: the alarm fires at the
    /// old one, nothing is due, and the loop sets the alarm again from the last activity.
    pub(super) fn due(&self, now: Instant, idle_timeout: Duration) -> Due {
        let now = self.since_start(now);
        if self.expires_at_ms <= now {
            Due::TokenExpiry
        } else if self.last_activity_ms.saturating_add(millis(idle_timeout)) <= now {
            Due::Idle
        } else if self.next_ping_ms <= now {
            Due::Ping
        } else {
            Due::Nothing
        }
    }

    /// A ping goes out at `now`: the next one is due an interval later.
    pub(super) fn ping_sent(&mut self, now: Instant, ping_interval: Duration) {
        self.next_ping_ms = self.since_start(now).saturating_add(millis(ping_interval));
    }

    /// The client sent something (reads `Instant::now()`).
    pub(super) fn record_activity(&mut self) {
        self.last_activity_ms = self.since_start(Instant::now());
    }

    /// The session's identity changed (an in-band refresh): its expiry is the new deadline.
    pub(super) fn set_expiry(&mut self, identity: &Identity, leeway_secs: u64) {
        self.expires_at_ms = self.since_start(expiry_deadline(identity, leeway_secs));
        self.is_rescheduled = true;
    }

    /// True once after [`Timers::set_expiry`]: the session's alarm must be set again.
    pub(super) fn take_rescheduled(&mut self) -> bool {
        std::mem::take(&mut self.is_rescheduled)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn expiry_deadline(identity: &Identity, leeway_secs: u64) -> Instant {
    let remaining = identity.expires_at.saturating_add(leeway_secs).saturating_sub(now_secs());
    Instant::now() + Duration::from_secs(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING: Duration = Duration::from_secs(20);
    const IDLE: Duration = Duration::from_secs(60);

    fn identity(expires_in_secs: u64) -> Identity {
        Identity {
            subject: "alice".into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            expires_at: now_secs() + expires_in_secs,
            issued_at: None,
            token_id: None,
            claims: Default::default(),
        }
    }

    #[test]
    fn the_earliest_deadline_wins_and_the_expiry_takes_precedence() {
        let mut timers = Timers::new(&identity(3600), 0, PING);
        let start = timers.started();
        assert_eq!(timers.next_deadline(IDLE), start + PING);
        assert_eq!(timers.due(start, IDLE), Due::Nothing);
        assert_eq!(timers.due(start + PING, IDLE), Due::Ping);
        timers.ping_sent(start + PING, PING);
        assert_eq!(timers.next_deadline(IDLE), start + 2 * PING);
        assert_eq!(timers.due(start + IDLE, IDLE), Due::Idle);
        assert_eq!(timers.due(start + Duration::from_secs(3601), IDLE), Due::TokenExpiry);
    }

    #[test]
    fn a_new_expiry_reschedules_the_timer_once() {
        let mut timers = Timers::new(&identity(5), 0, PING);
        assert!(timers.next_deadline(IDLE) <= Instant::now() + Duration::from_secs(5));
        assert!(!timers.take_rescheduled());
        timers.set_expiry(&identity(3600), 0);
        assert!(timers.take_rescheduled());
        assert!(!timers.take_rescheduled(), "taken once");
        assert_eq!(timers.next_deadline(IDLE), timers.started() + PING);
    }
}
