//! A session's subscriptions, shared between its task (the client's `subscribe` and
//! `unsubscribe`, re-authorization, the end of the session) and the registry (server-side
//! subscribe and unsubscribe, listings). Every change to the set and the matching hub change are
//! made under its one lock, so the two never disagree and a session that has left can never be
//! subscribed again.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Who made a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The client's own `subscribe`, allowed by the channel rules and the `authorize` hook;
    /// re-authorized after a refresh or a reload.
    Client,
    /// The host or an operator (`ServerHandle::subscribe`): the host is trusted, so no rule or
    /// hook re-checks it; only a server-side unsubscribe or the end of the session removes it.
    Server,
}

/// The set itself.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Ordered: listings and re-authorization want the names sorted, and an empty ordered map is
    /// three words where a hash map and its hasher's keys take six (every session holds one).
    channels: BTreeMap<String, Origin>,
    /// Set when the session left the hub: nothing may be added any more.
    is_closed: bool,
}

impl Subscriptions {
    pub(crate) fn contains(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed
    }

    /// Adds a subscription (keeping the origin of one that exists).
    pub(crate) fn insert(&mut self, channel: &str, origin: Origin) {
        self.channels.entry(channel.to_string()).or_insert(origin);
    }

    /// Removes a subscription; its origin, or None when there was none.
    pub(crate) fn remove(&mut self, channel: &str) -> Option<Origin> {
        self.channels.remove(channel)
    }

    /// The channels the client subscribed to itself, sorted (those re-authorization checks).
    pub(crate) fn client_made(&self) -> Vec<String> {
        self.channels.iter().filter(|(_, o)| **o == Origin::Client).map(|(c, _)| c.clone()).collect()
    }

    /// Every channel, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    /// Closes the set and takes every channel (the session is leaving).
    pub(crate) fn close(&mut self) -> Vec<String> {
        self.is_closed = true;
        std::mem::take(&mut self.channels).into_keys().collect()
    }
}

/// The set as the session and the registry share it (in the session's `Link`).
#[derive(Debug, Default)]
pub(crate) struct SharedSubscriptions(Mutex<Subscriptions>);

impl SharedSubscriptions {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Subscriptions> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_kept_and_a_closed_set_is_empty() {
        let shared = SharedSubscriptions::default();
        let mut subs = shared.lock();
        subs.insert("b", Origin::Server);
        subs.insert("a", Origin::Client);
        subs.insert("b", Origin::Client);
        assert_eq!(subs.client_made(), ["a"]);
        assert_eq!(subs.names(), ["a", "b"]);
        assert_eq!(subs.remove("b"), Some(Origin::Server));
        assert_eq!(subs.close(), ["a"]);
        assert!(subs.is_closed() && subs.len() == 0);
    }
}
