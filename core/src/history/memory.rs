//! The memory store: one node's history, lost when the process stops (every log then starts a
//! new epoch). Bounded by `limits.history_memory_bytes`: past it the oldest retained publication
//! of the whole store goes first, and a channel log with nothing left to evict goes with its
//! epoch, so a subscriber that comes back to it learns that its history was lost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::store::{HistoryStore, Position, Query, Retention, Slice, Usage};

/// Counted per retained publication on top of its frame's length: the entry in the log's queue
/// (counted twice: a queue grows by doubling, so up to half its slots are spare), the frame's
/// allocation (the allocator's header and rounding, 16 bytes each here) and the shared header
/// `Bytes` allocates once the stored frame is first read.
const ENTRY_OVERHEAD: u64 = 2 * std::mem::size_of::<Entry>() as u64 + 32 + 32;
/// Counted per channel log on top of its name: the log, its map slot and its age-index slot.
const LOG_OVERHEAD: u64 =
    (std::mem::size_of::<Log>() + 2 * std::mem::size_of::<Arc<str>>() + 3 * std::mem::size_of::<u64>()) as u64;

struct Entry {
    offset: u64,
    frame: Utf8Bytes,
    expires: Instant,
    /// Store-wide append order: the age used to evict the oldest first.
    age: u64,
}

struct Log {
    epoch: Arc<str>,
    last_offset: u64,
    entries: VecDeque<Entry>,
    /// Its key in `State::ages`: the oldest entry's age, or its last activity when empty.
    age: u64,
}

#[derive(Default)]
struct State {
    logs: HashMap<Arc<str>, Log>,
    /// Each log by age, oldest first: eviction takes the first.
    ages: BTreeMap<u64, Arc<str>>,
    next_age: u64,
    bytes: u64,
    messages: u64,
}

/// The single-node store.
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    capacity_bytes: u64,
}

fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

fn entry_cost(frame: &Utf8Bytes) -> u64 {
    frame.len() as u64 + ENTRY_OVERHEAD
}

fn log_cost(channel: &str) -> u64 {
    channel.len() as u64 + LOG_OVERHEAD
}

impl MemoryStore {
    /// A store that counts at most `capacity_bytes` (see [`Usage::bytes`]).
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        MemoryStore { state: Mutex::new(State::default()), capacity_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn take_age(&mut self) -> u64 {
        self.next_age += 1;
        self.next_age
    }

    /// The log of `channel`, created (new epoch, offset 0) when there is none.
    fn log(&mut self, channel: &str) -> &mut Log {
        if !self.logs.contains_key(channel) {
            let age = self.take_age();
            let key: Arc<str> = Arc::from(channel);
            self.bytes += log_cost(channel);
            self.ages.insert(age, Arc::clone(&key));
            self.logs.insert(key, Log { epoch: new_epoch(), last_offset: 0, entries: VecDeque::new(), age });
        }
        self.logs.get_mut(channel).expect("inserted above")
    }

    /// Re-keys `channel`'s log in the age index after its oldest entry changed.
    fn reindex(&mut self, channel: &str, activity: u64) {
        let Some(log) = self.logs.get_mut(channel) else { return };
        let age = log.entries.front().map_or(activity, |e| e.age);
        if age != log.age {
            let key = self.ages.remove(&log.age).expect("every log is indexed");
            log.age = age;
            self.ages.insert(age, key);
        }
    }

    /// Drops the oldest entries of `channel` while `is_stale` says so; returns how many.
    fn trim(&mut self, channel: &str, mut is_stale: impl FnMut(&Entry, usize) -> bool) -> usize {
        let Some(log) = self.logs.get_mut(channel) else { return 0 };
        let mut dropped = 0;
        let mut freed = 0;
        while let Some(front) = log.entries.front() {
            if !is_stale(front, log.entries.len()) {
                break;
            }
            freed += entry_cost(&front.frame);
            log.entries.pop_front();
            dropped += 1;
        }
        self.bytes -= freed;
        self.messages -= dropped as u64;
        if dropped > 0 {
            let activity = log.age;
            self.reindex(channel, activity);
        }
        dropped
    }

    /// Evicts the store's oldest publication, or its oldest empty log; false when empty.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, channel)) = self.ages.first_key_value() else { return false };
        let channel = Arc::clone(channel);
        self.evict_one(&channel)
    }

    fn evict_one(&mut self, channel: &Arc<str>) -> bool {
        let Some(log) = self.logs.get(&**channel) else { return false };
        if log.entries.is_empty() {
            // Nothing left but the log itself: it goes, and its epoch with it.
            let age = log.age;
            self.ages.remove(&age);
            self.logs.remove(&**channel);
            self.bytes -= log_cost(channel);
            return true;
        }
        let mut first = true;
        self.trim(channel, |_, _| std::mem::take(&mut first)) > 0
    }
}

impl HistoryStore for MemoryStore {
    fn append(&self, channel: &str, retention: Retention, encode: &mut dyn FnMut(u64) -> Utf8Bytes) -> Utf8Bytes {
        let now = Instant::now();
        let mut state = self.lock();
        let age = state.take_age();
        let log = state.log(channel);
        log.last_offset += 1;
        let frame = encode(log.last_offset);
        // Kept in an allocation of its exact size: the encoder's buffer grows by doubling, so
        // sharing it would keep up to twice the counted bytes for as long as history keeps it.
        let kept = Utf8Bytes::from(frame.as_str().to_owned());
        let cost = entry_cost(&kept);
        log.entries.push_back(Entry { offset: log.last_offset, frame: kept, expires: now + retention.ttl, age });
        let was_empty = log.entries.len() == 1;
        state.bytes += cost;
        state.messages += 1;
        if was_empty {
            state.reindex(channel, age);
        }
        state.trim(channel, |e, len| len > retention.size || e.expires <= now);
        // Past the cap the store's oldest go first (possibly this channel's, never the entry
        // just stored unless it alone is over the cap).
        while state.bytes > self.capacity_bytes && state.evict_oldest() {}
        frame
    }

    fn read(&self, channel: &str, query: Query) -> Slice {
        let now = Instant::now();
        let mut state = self.lock();
        state.log(channel);
        state.trim(channel, |e, _| e.expires <= now);
        while state.bytes > self.capacity_bytes && state.evict_oldest() {}
        let log = state.log(channel);
        let position = Position { offset: log.last_offset, epoch: Arc::clone(&log.epoch) };
        let oldest = log.entries.front().map(|e| e.offset);
        let selected = |e: &&Entry| {
            query.after.is_none_or(|after| e.offset > after) && query.before.is_none_or(|before| e.offset < before)
        };
        let pick = |e: &Entry| (e.offset, e.frame.clone());
        let publications = if query.is_newest_first {
            log.entries.iter().rev().filter(selected).take(query.limit).map(pick).collect()
        } else {
            log.entries.iter().filter(selected).take(query.limit).map(pick).collect()
        };
        Slice { position, oldest, publications }
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<Arc<str>> = state
            .logs
            .iter()
            .filter(|(_, log)| log.entries.front().is_some_and(|e| e.expires <= now))
            .map(|(channel, _)| Arc::clone(channel))
            .collect();
        for channel in expired {
            state.trim(&channel, |e, _| e.expires <= now);
        }
    }

    fn usage(&self) -> Usage {
        let state = self.lock();
        Usage { bytes: state.bytes, messages: state.messages }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KEEP: Retention = Retention { size: 3, ttl: Duration::from_secs(60) };

    fn frame(offset: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("{{\"offset\":{offset}}}"))
    }

    fn all() -> Query {
        Query { after: None, before: None, limit: usize::MAX, is_newest_first: false }
    }

    fn offsets(slice: &Slice) -> Vec<u64> {
        slice.publications.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn offsets_increase_and_the_size_keeps_the_newest() {
        let store = MemoryStore::new(u64::MAX);
        for _ in 0..5 {
            store.append("c", KEEP, &mut frame);
        }
        let slice = store.read("c", all());
        assert_eq!(offsets(&slice), [3, 4, 5]);
        assert_eq!(slice.position.offset, 5);
        assert_eq!(slice.oldest, Some(3));
        assert_eq!(slice.publications[0].1.as_str(), r#"{"offset":3}"#);
        let page = store.read("c", Query { after: None, before: Some(5), limit: 1, is_newest_first: true });
        assert_eq!(offsets(&page), [4]);
        assert_eq!(store.usage().messages, 3);
    }

    #[test]
    fn the_cap_evicts_the_oldest_of_the_store_then_whole_logs_with_their_epoch() {
        let one = entry_cost(&frame(1));
        let cap = log_cost("a") + log_cost("b") + 2 * one;
        let store = MemoryStore::new(cap);
        store.append("a", KEEP, &mut frame);
        let epoch_a = store.read("a", all()).position.epoch;
        store.append("b", KEEP, &mut frame);
        assert_eq!(store.usage().bytes, cap);
        store.append("b", KEEP, &mut frame);
        assert!(store.usage().bytes <= cap);
        // a's publication was the oldest; a's empty log is next, then b's oldest.
        assert!(offsets(&store.read("b", all())).contains(&2));
        store.append("b", KEEP, &mut frame);
        store.append("b", KEEP, &mut frame);
        assert!(store.usage().bytes <= cap);
        assert_ne!(store.read("a", all()).position.epoch, epoch_a, "a's log was evicted: new epoch");
    }

    #[test]
    fn expired_publications_are_never_read() {
        let store = MemoryStore::new(u64::MAX);
        store.append("c", Retention { size: 10, ttl: Duration::ZERO }, &mut frame);
        let slice = store.read("c", all());
        assert!(slice.publications.is_empty());
        assert_eq!((slice.position.offset, slice.oldest), (1, None));
        store.sweep();
        assert_eq!(store.usage().messages, 0);
    }
}
