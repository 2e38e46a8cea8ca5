//! Server counters, readable at any time through `ServerHandle::stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Live counters (relaxed atomics: each is exact, a snapshot is not a transaction).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    sessions_active: AtomicU64,
    sessions_total: AtomicU64,
    handshakes_rejected: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    messages_rejected: AtomicU64,
    publications: AtomicU64,
    slow_consumer_disconnects: AtomicU64,
    events_dropped: AtomicU64,
    dry_run_denials: AtomicU64,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Sessions open now.
    pub sessions_active: u64,
    /// Sessions opened since start.
    pub sessions_total: u64,
    /// Handshakes refused since start.
    pub handshakes_rejected: u64,
    /// Client frames received.
    pub messages_in: u64,
    /// Frames sent to clients (replies and deliveries).
    pub messages_out: u64,
    /// Client frames answered with an error.
    pub messages_rejected: u64,
    /// Publications accepted (from clients and from the server side).
    pub publications: u64,
    /// Sessions closed because their outbound queue was full.
    pub slow_consumer_disconnects: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Actions a dry-run rule (`enforce = false`) would have denied.
    pub dry_run_denials: u64,
    /// Channels with at least one subscriber.
    pub channels: u64,
}

impl Stats {
    pub(crate) fn session_opened(&self) {
        self.sessions_active.fetch_add(1, Relaxed);
        self.sessions_total.fetch_add(1, Relaxed);
    }
    pub(crate) fn session_closed(&self) {
        self.sessions_active.fetch_sub(1, Relaxed);
    }
    pub(crate) fn record_handshake_rejected(&self) {
        self.handshakes_rejected.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_message_in(&self) {
        self.messages_in.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_messages_out(&self, n: u64) {
        self.messages_out.fetch_add(n, Relaxed);
    }
    pub(crate) fn record_message_rejected(&self) {
        self.messages_rejected.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_publication(&self) {
        self.publications.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_slow_consumer(&self) {
        self.slow_consumer_disconnects.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_event_dropped(&self) {
        self.events_dropped.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_dry_run_denial(&self) {
        self.dry_run_denials.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, channels: u64) -> StatsSnapshot {
        StatsSnapshot {
            sessions_active: self.sessions_active.load(Relaxed),
            sessions_total: self.sessions_total.load(Relaxed),
            handshakes_rejected: self.handshakes_rejected.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            messages_rejected: self.messages_rejected.load(Relaxed),
            publications: self.publications.load(Relaxed),
            slow_consumer_disconnects: self.slow_consumer_disconnects.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            dry_run_denials: self.dry_run_denials.load(Relaxed),
            channels,
        }
    }
}
