//! The hub: channel registry and fan-out. A publication is encoded once by the caller and the same
//! bytes are pushed into every subscriber's outbox. The hub never calls into session code and
//! never waits on a client. It tells the cluster's [`Interest`] when a channel gets its first
//! local subscriber and when the last one leaves, so the node subscribes at the broker only to
//! channels someone here listens to.

mod outbox;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio_tungstenite::tungstenite::Utf8Bytes;

pub(crate) use outbox::{Outbox, Push};

use crate::cluster::Interest;
use crate::observe::Stats;
use crate::policy::SlowConsumerPolicy;
use crate::protocol::ServerFrame;

type Subscribers = HashMap<u64, (Outbox, SlowConsumerPolicy)>;

/// Channel name -> (session id -> outbox and the rule's slow-consumer policy).
pub(crate) struct Hub {
    channels: RwLock<HashMap<Arc<str>, Subscribers>>,
    stats: Arc<Stats>,
    interest: Option<Arc<Interest>>,
}

impl Hub {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Hub { channels: RwLock::new(HashMap::new()), stats, interest: None }
    }

    /// A hub that reports channel interest to the cluster.
    pub(crate) fn with_interest(stats: Arc<Stats>, interest: Arc<Interest>) -> Self {
        Hub { channels: RwLock::new(HashMap::new()), stats, interest: Some(interest) }
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
        if let Some(subscribers) = channels.get_mut(channel) {
            if subscribers.contains_key(&session_id) {
                return false;
            }
            subscribers.insert(session_id, (outbox.clone(), policy));
            return true;
        }
        let key: Arc<str> = Arc::from(channel);
        if let Some(interest) = &self.interest {
            interest.add(&key);
        }
        channels.insert(key, HashMap::from([(session_id, (outbox.clone(), policy))]));
        true
    }

    /// Removes a subscription; false when there was none.
    pub(crate) fn unsubscribe(&self, channel: &str, session_id: u64) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = channels.get_mut(channel) else { return false };
        let removed = subscribers.remove(&session_id).is_some();
        if subscribers.is_empty() {
            channels.remove(channel);
            if let Some(interest) = &self.interest {
                interest.remove(channel);
            }
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

    /// How many sessions of this node are subscribed to `channel`.
    pub(crate) fn subscriber_count(&self, channel: &str) -> usize {
        self.channels.read().unwrap_or_else(PoisonError::into_inner).get(channel).map_or(0, |s| s.len())
    }

    /// Tells every subscriber of every channel that messages may have been lost (`gap` with
    /// `reason`), e.g. after the broker was unreachable.
    pub(crate) fn announce_gap(&self, reason: &'static str) {
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        for (channel, subscribers) in channels.iter() {
            let frame = ServerFrame::Gap { channel, missed: None, reason: Some(reason) }.encode();
            for (outbox, policy) in subscribers.values() {
                if outbox.push(channel, &frame, *policy) == Push::Overflowed {
                    self.stats.record_slow_consumer();
                }
            }
        }
    }

    /// Up to `limit` channels with subscribers whose name sorts after `after` and that `matches`
    /// accepts, in name order, with their local subscriber counts. Sorts the matching names of
    /// every call (a listing is an operator's request, not a hot path).
    pub(crate) fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<(String, usize)> {
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<(&Arc<str>, usize)> = channels
            .iter()
            .filter(|(name, _)| after.is_none_or(|a| &***name > a) && matches(name))
            .map(|(name, subscribers)| (name, subscribers.len()))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        found.into_iter().take(limit).map(|(name, n)| (name.to_string(), n)).collect()
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
        assert!(hub.subscribe("b", 1, &fast, SlowConsumerPolicy::Disconnect));
        assert_eq!(hub.list(None, 10, |_| true), [("b".to_string(), 1), ("c".to_string(), 2)]);
        assert_eq!(hub.list(Some("b"), 10, |_| true), [("c".to_string(), 2)]);
        assert_eq!(hub.list(None, 1, |c| c != "b"), [("c".to_string(), 2)]);
        assert!(hub.unsubscribe("b", 1));
        assert!(hub.unsubscribe("c", 1));
        assert!(hub.unsubscribe("c", 2));
        assert_eq!(hub.channel_count(), 0);
        assert_eq!(hub.publish("c", &frame), 0);
    }

    #[test]
    fn first_subscriber_and_last_leaver_drive_interest_and_gaps_reach_everyone() {
        let interest = Arc::new(Interest::default());
        let hub = Hub::with_interest(Arc::new(Stats::default()), Arc::clone(&interest));
        let stats = Arc::new(Stats::default());
        let a = Outbox::new(8, 1024, Arc::clone(&stats));
        let b = Outbox::new(8, 1024, stats);
        hub.subscribe("c", 1, &a, SlowConsumerPolicy::Disconnect);
        hub.subscribe("c", 2, &b, SlowConsumerPolicy::Disconnect);
        hub.subscribe("d", 2, &b, SlowConsumerPolicy::Disconnect);
        let mut wanted: Vec<String> = interest.wanted().iter().map(|c| c.to_string()).collect();
        wanted.sort();
        assert_eq!(wanted, ["c", "d"]);
        hub.announce_gap("broker_reconnected");
        assert_eq!(a.drain(8)[0].as_str(), r#"{"type":"gap","channel":"c","reason":"broker_reconnected"}"#);
        assert_eq!(b.drain(8).len(), 2);
        hub.unsubscribe("c", 1);
        assert_eq!(interest.wanted().len(), 2, "c still has a subscriber");
        hub.unsubscribe("c", 2);
        hub.unsubscribe("d", 2);
        assert!(interest.wanted().is_empty());
    }
}
