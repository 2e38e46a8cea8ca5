//! Counted quotas: how many sessions a key (client IP, user) holds. A slot is a guard; dropping it
//! gives the slot back, so no exit path can leak a count.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Per-key session counter with a fixed ceiling.
#[derive(Debug)]
pub(crate) struct ConnectionQuota<K: Eq + Hash + Clone> {
    /// Changed by a config reload; existing slots are kept even above a lowered limit.
    limit: AtomicU32,
    counts: Mutex<HashMap<K, u32>>,
}

/// One held slot.
#[derive(Debug)]
pub(crate) struct QuotaSlot<K: Eq + Hash + Clone> {
    quota: Arc<ConnectionQuota<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> ConnectionQuota<K> {
    pub(crate) fn new(limit: u32) -> Arc<Self> {
        Arc::new(ConnectionQuota { limit: AtomicU32::new(limit), counts: Mutex::new(HashMap::new()) })
    }

    /// Takes a slot, or returns None when `key` is at its ceiling.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: K) -> Option<QuotaSlot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.limit.load(Ordering::Relaxed) {
            return None;
        }
        *count += 1;
        Some(QuotaSlot { quota: Arc::clone(self), key })
    }

    /// The ceiling.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets a new ceiling (config reload).
    pub(crate) fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Current count for `key`.
    #[cfg(test)]
    pub(crate) fn count(&self, key: &K) -> u32 {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash + Clone> Drop for QuotaSlot<K> {
    fn drop(&mut self) {
        let mut counts = self.quota.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned_on_drop() {
        let q = ConnectionQuota::new(2);
        let a = q.try_acquire("k");
        let b = q.try_acquire("k");
        assert!(a.is_some() && b.is_some());
        assert!(q.try_acquire("k").is_none());
        assert!(q.try_acquire("other").is_some());
        drop(a);
        assert_eq!(q.count(&"k"), 1);
        assert!(q.try_acquire("k").is_some());
        drop(b);
        assert_eq!(q.count(&"k"), 0);
    }
}
