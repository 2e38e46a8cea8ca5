//! The hub: channel registry and fan-out. A publication is encoded once by the caller and the same
//! bytes are pushed into every subscriber's outbox. The hub never calls into session code and
//! never waits on a client.

mod outbox;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio_tungstenite::tungstenite::Utf8Bytes;

pub(crate) use outbox::{Outbox, Push};

use crate::observe::Stats;
use crate::policy::SlowConsumerPolicy;

type Subscribers = HashMap<u64, (Outbox, SlowConsumerPolicy)>;

/// Channel name -> (session id -> outbox and the rule's slow-consumer policy).
pub(crate) struct Hub {
    channels: RwLock<HashMap<Arc<str>, Subscribers>>,
    stats: Arc<Stats>,
}

impl Hub {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Hub { channels: RwLock::new(HashMap::new()), stats }
    }

    /// Adds a subscription; false when it already existed.
    pub(crate) fn subscribe(
        &self,
        channel: &str,
        session_id: u64,
        outbox: &Outbox,
        policy: SlowConsumerPolicy,
    ) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(PoisonError::into_inner);
        let subscribers = channels.entry(Arc::from(channel)).or_default();
        if subscribers.contains_key(&session_id) {
            return false;
        }
        subscribers.insert(session_id, (outbox.clone(), policy));
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
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        let Some((key, subscribers)) = channels.get_key_value(channel) else { return 0 };
        let mut queued = 0;
        for (outbox, policy) in subscribers.values() {
            match outbox.push(key, frame, *policy) {
                Push::Queued => queued += 1,
                Push::Lossy(dropped) => {
                    queued += 1;
                    self.stats.record_outbound_dropped(dropped);
                }
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
        let stats = Arc::new(Stats::default());
        let fast = Outbox::new(8, 1024, Arc::clone(&stats));
        let slow = Outbox::new(1, 1024, stats);
        assert!(hub.subscribe("c", 1, &fast, SlowConsumerPolicy::Disconnect));
        assert!(!hub.subscribe("c", 1, &fast, SlowConsumerPolicy::Disconnect));
        assert!(hub.subscribe("c", 2, &slow, SlowConsumerPolicy::Disconnect));
        let frame = Utf8Bytes::from("x");
        assert_eq!(hub.publish("c", &frame), 2);
        assert_eq!(hub.publish("c", &frame), 1);
        assert_eq!(fast.drain(1)[0].as_str(), "x");
        assert!(slow.is_overflowed());
        assert!(hub.unsubscribe("c", 1));
        assert!(hub.unsubscribe("c", 2));
        assert_eq!(hub.channel_count(), 0);
        assert_eq!(hub.publish("c", &frame), 0);
    }
}
