//! The hub: channel registry and fan-out. A publication is encoded once by the caller and the same
//! bytes are pushed into every subscriber's outbox. The hub never calls into session code and
//! never waits on a client.

mod outbox;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio_tungstenite::tungstenite::Utf8Bytes;

pub(crate) use outbox::{Outbox, Push, outbox};

use crate::observe::Stats;

/// Channel name -> (session id -> outbox).
pub(crate) struct Hub {
    channels: RwLock<HashMap<Arc<str>, HashMap<u64, Outbox>>>,
    stats: Arc<Stats>,
}

impl Hub {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Hub { channels: RwLock::new(HashMap::new()), stats }
    }

    /// Adds a subscription; false when it already existed.
    pub(crate) fn subscribe(&self, channel: &str, session_id: u64, outbox: &Outbox) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(PoisonError::into_inner);
        let subscribers = channels.entry(Arc::from(channel)).or_default();
        if subscribers.contains_key(&session_id) {
            return false;
        }
        subscribers.insert(session_id, outbox.clone());
        true
    }

    /// Removes a subscription; false when there was none.
    pub(crate) fn unsubscribe(&self, channel: &str, session_id: u64) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = channels.get_mut(channel) else { return false };
        let removed = subscribers.remove(&session_id).is_some();
        if subscribers.is_empty() {
            channels.remove(channel);
        }
        removed
    }

    /// Pushes `frame` to every subscriber of `channel`; returns how many queued it.
    pub(crate) fn publish(&self, channel: &str, frame: &Utf8Bytes) -> usize {
        self.stats.record_publication();
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = channels.get(channel) else { return 0 };
        let mut queued = 0;
        for outbox in subscribers.values() {
            match outbox.push(frame.clone()) {
                Push::Queued => queued += 1,
                Push::Overflowed => self.stats.record_slow_consumer(),
                Push::Gone => {}
            }
        }
        queued
    }

    /// Number of channels with subscribers.
    pub(crate) fn channel_count(&self) -> usize {
        self.channels.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_shares_bytes_and_flags_slow_consumers() {
        let hub = Hub::new(Arc::new(Stats::default()));
        let (fast, mut fast_rx) = outbox(8);
        let (slow, slow_rx) = outbox(1);
        assert!(hub.subscribe("c", 1, &fast));
        assert!(!hub.subscribe("c", 1, &fast));
        assert!(hub.subscribe("c", 2, &slow));
        let frame = Utf8Bytes::from("x");
        assert_eq!(hub.publish("c", &frame), 2);
        assert_eq!(hub.publish("c", &frame), 1);
        assert_eq!(fast_rx.rx.try_recv().expect("first").as_str(), "x");
        drop(slow_rx);
        assert!(hub.unsubscribe("c", 1));
        assert!(hub.unsubscribe("c", 2));
        assert_eq!(hub.channel_count(), 0);
        assert_eq!(hub.publish("c", &frame), 0);
    }
}
