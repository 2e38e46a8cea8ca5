//! [`Session`]: everything one session knows, in one struct, and the decisions about it that need
//! no I/O: its start and end, what a control wake means, an identity change, a violation.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::alarms::Alarm;
use super::registry::{Link, Signal, Wake};
use super::timers::{Due, Timers};
use super::{Disconnect, SessionEnv, SessionStart};
use crate::auth::Identity;
use crate::handshake::Held;
use crate::hub::Outbox;
use crate::limits::DirectRate;
use crate::observe::Event;

/// Per-session state; the session loop and the dispatcher work on it.
pub(crate) struct Session {
    pub(crate) identity: Arc<Identity>,
    /// Shared with the registry: the session's control, its subscriptions (server-side subscribe
    /// and unsubscribe, listings), its outbox (shared with the hub) and what the handshake saw.
    pub(crate) link: Arc<Link>,
    pub(crate) env: Arc<SessionEnv>,
    pub(super) message_rate: DirectRate,
    pub(super) byte_rate: DirectRate,
    /// The user's bucket, shared with the user's other sessions.
    pub(super) user_rate: Arc<DirectRate>,
    /// The violations within the window; made at the first one (most sessions never have one).
    #[allow(clippy::box_collection, reason = "one word in every session, the queue only after a violation")]
    violations: Option<Box<VecDeque<Instant>>>,
    pub(super) last_seq: Option<u64>,
    pub(super) timers: Timers,
    /// The session's alarm in `env.alarms`, set to the next deadline of `timers`.
    alarm: Alarm,
    pub(super) traffic: Traffic,
}

/// A session's message counts, reported when it closes.
#[derive(Default)]
pub(super) struct Traffic {
    pub(super) messages_in: u64,
    pub(super) messages_out: u64,
}

impl Session {
    /// The state of an admitted connection, starting now, and what the handshake holds for it
    /// (quota slots and the connection permit, released when the session ends; not in the
    /// session, which `dispatch` shares across awaits and must therefore be `Sync`).
    pub(super) fn new(start: SessionStart, env: Arc<SessionEnv>) -> (Session, Box<Held>) {
        let SessionStart { id, identity, client_ip, held, info } = start;
        debug_assert_eq!(client_ip, info.client_ip, "one client address");
        let limits = &env.limits;
        let outbox = Outbox::new(limits.outbox_messages, limits.outbox_bytes, Arc::clone(&env.stats));
        let session = Session {
            user_rate: env.user_rates.bucket(&identity.subject),
            timers: Timers::new(&identity, env.leeway_secs, limits.ping_interval),
            alarm: Alarm::default(),
            identity,
            link: Link::new(id, outbox, info),
            message_rate: DirectRate::new(limits.message_rate),
            byte_rate: DirectRate::new(limits.byte_rate),
            violations: None,
            last_seq: None,
            traffic: Traffic::default(),
            env,
        };
        (session, held)
    }

    /// Registers the session (so it can be disconnected and signalled) and reports it open;
    /// returns its link, whose control the session loop waits on.
    pub(super) fn open(&self) -> Arc<Link> {
        let env = &self.env;
        env.registry.register(&self.identity, &self.link);
        let control = &self.link.control;
        // A shutdown or a revocation between the handshake's checks and the registration would
        // otherwise be missed: the relay (`server::relay_signals`) only reaches registered
        // sessions. A reload would not matter yet (no subscriptions).
        if env.shutdown.is_cancelled() {
            control.signal(Signal::Shutdown);
        }
        if env.revocations.is_revoked(&self.identity) {
            control.signal(Signal::Revocation);
        }
        env.stats.session_opened();
        env.events.emit(Event::SessionOpened {
            session_id: self.link.id,
            user: self.identity.subject.clone(),
            client_ip: self.link.info.client_ip,
        });
        Arc::clone(&self.link)
    }

    /// Whether a wake of the session's control ends it. A shutdown wins over a disconnect
    /// request, which wins over a revocation.
    pub(super) fn ends_on(&self, wake: &Wake) -> Option<Disconnect> {
        if wake.has(Signal::Shutdown) {
            return Some(Disconnect::ServerShutdown);
        }
        if let Some(requested) = wake.requested {
            return Some(requested);
        }
        if wake.has(Signal::Revocation) && self.env.revocations.is_revoked(&self.identity) {
            return Some(Disconnect::Revoked);
        }
        None
    }

    /// The session's identity after an in-band refresh: shared with the registry (which must not
    /// keep the old one alive), and its expiry is the session's new deadline.
    pub(super) fn set_identity(&mut self, identity: Arc<Identity>) {
        self.identity = identity;
        self.env.registry.update_identity(self.link.id, &self.identity);
        self.timers.set_expiry(&self.identity, self.env.leeway_secs);
    }

    /// Sets the session's alarm to the next deadline of its timers.
    pub(super) fn set_alarm(&mut self) {
        let deadline = self.timers.next_deadline(self.env.limits.idle_timeout);
        self.alarm = self.env.alarms.set(self.link.id, self.alarm, deadline);
    }

    /// What is due now that the session's alarm fired. A due ping is counted as sent: the next
    /// one is due an interval from now.
    pub(super) fn due(&mut self) -> Due {
        let now = Instant::now();
        let due = self.timers.due(now, self.env.limits.idle_timeout);
        if due == Due::Ping {
            self.timers.ping_sent(now, self.env.limits.ping_interval);
        }
        due
    }

    /// Records a violation; true when the session has now exceeded `limits.max_violations` within
    /// the window.
    pub(crate) fn record_violation(&mut self) -> bool {
        let now = Instant::now();
        let window = self.env.limits.violation_window;
        let violations = self.violations.get_or_insert_default();
        while violations.front().is_some_and(|t| now.duration_since(*t) > window) {
            violations.pop_front();
        }
        violations.push_back(now);
        let count = violations.len();
        self.env.bans.record_violation(self.link.info.client_ip, &self.identity.subject);
        count > self.env.limits.max_violations
    }

    /// Gives every subscription back to the hub and leaves the registry (before the close
    /// handshake: nothing reaches the session any more).
    pub(super) fn leave(&mut self) {
        // Closed under its lock: a server-side subscribe can no longer add to it.
        let channels = self.link.subscriptions.lock().close();
        for channel in channels {
            self.env.hub.unsubscribe(&channel, self.link.id);
            self.env.presence.leave_later(&channel, &self.identity.subject, self.link.id);
        }
        self.env.registry.remove(self.link.id);
        self.env.alarms.clear(self.link.id, std::mem::take(&mut self.alarm));
    }

    /// Reports the session closed (after [`Session::leave`], the close handshake and the release
    /// of what the handshake held).
    pub(super) fn report_closed(&self, disconnect: Disconnect) {
        let duration_secs = self.timers.started().elapsed().as_secs_f64();
        self.env.stats.session_closed(disconnect.code(), disconnect.reason(), duration_secs);
        self.env.events.emit(Event::SessionClosed {
            session_id: self.link.id,
            user: self.identity.subject.clone(),
            client_ip: self.link.info.client_ip,
            close_code: disconnect.code(),
            reason: disconnect.reason(),
            duration_secs,
            messages_in: self.traffic.messages_in,
            messages_out: self.traffic.messages_out,
        });
    }
}
