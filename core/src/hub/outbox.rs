//! A session's outbound queue as the hub sees it: bounded in messages and bytes, never awaited.
//! When it is full the channel rule's slow-consumer policy decides: flag the session for
//! disconnection, drop the oldest queued messages, or coalesce to the newest message per channel.
//! Lost messages are counted per channel and announced with a `gap` frame before the next message
//! of that channel. A reader that never reads costs at most the caps, and never slows the
//! publisher or other subscribers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::observe::Stats;
use crate::policy::SlowConsumerPolicy;
use crate::protocol::ServerFrame;

struct Queued {
    channel: Arc<str>,
    frame: Utf8Bytes,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    bytes: usize,
    per_channel: PerChannel,
    is_overflowed: bool,
}

/// Numbers per channel that most outboxes never need, made at the first use of either: neither
/// a map nor its hasher's state until then, since every session holds an outbox for its whole
/// life (docs/PERFORMANCE.md, "Idle memory").
#[derive(Default)]
struct PerChannel(Option<Box<Maps>>);

#[derive(Default)]
struct Maps {
    /// Messages lost per channel since its last delivery (announced by a `gap` frame).
    lost: HashMap<Arc<str>, u64>,
    /// Per channel, the last offset a recovery already gave the client: live frames of that
    /// channel up to it are duplicates and dropped, until the first one beyond it (shared history,
    /// where the subscription joins before the history is read).
    recovered: HashMap<Arc<str>, u64>,
}

impl PerChannel {
    fn maps(&mut self) -> &mut Maps {
        self.0.get_or_insert_default()
    }

    /// Counts a lost message of `channel`.
    fn lose(&mut self, channel: Arc<str>) {
        *self.maps().lost.entry(channel).or_insert(0) += 1;
    }

    /// Takes the count of `channel`'s lost messages.
    fn take_lost(&mut self, channel: &str) -> Option<u64> {
        let maps = self.0.as_mut()?;
        if maps.lost.is_empty() { None } else { maps.lost.remove(channel) }
    }

    fn recovered_through(&self, channel: &str) -> Option<u64> {
        let maps = self.0.as_ref()?;
        if maps.recovered.is_empty() { None } else { maps.recovered.get(channel).copied() }
    }

    fn forget_recovered(&mut self, channel: &str) {
        if let Some(maps) = self.0.as_mut() {
            maps.recovered.remove(channel);
        }
    }
}

struct Inner {
    state: Mutex<State>,
    /// Set by a push (or an overflow) since the session last looked; cleared by
    /// [`Outbox::poll_ready`]. With the waker below it replaces a `Notify`: only one task, the
    /// session, ever waits on an outbox, and a `Notify` took a lock of its own to register that
    /// waiter again after every delivery.
    is_signalled: AtomicBool,
    /// The session task, registered by [`Outbox::poll_ready`] and [`Outbox::poll_overflowed`].
    waker: AtomicWaker,
    max_bytes: usize,
    /// `limits.outbound_queue_messages`.
    max_messages: u32,
    /// Keeps `wsguard_outbound_queued_bytes` (the memory-admission estimate) current.
    stats: Arc<Stats>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let bytes = self.state.get_mut().map(|s| s.bytes).unwrap_or(0);
        self.stats.add_queued_bytes(-(bytes as i64));
    }
}

/// Shared by the hub (pushing) and the session (draining).
#[derive(Clone)]
pub(crate) struct Outbox {
    inner: Arc<Inner>,
}

/// The outbox overflowed under the `disconnect` policy: the session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflowed;

/// The result of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Queued after dropping or replacing this many older messages (or the new one was dropped).
    Lossy(u64),
    /// Full under `disconnect`: the session was flagged (reported once).
    Overflowed,
    /// Already flagged: nothing queued.
    Gone,
}

impl Outbox {
    pub(crate) fn new(max_messages: u32, max_bytes: usize, stats: Arc<Stats>) -> Self {
        Outbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                is_signalled: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                max_messages: max_messages.max(1),
                max_bytes: max_bytes.max(1),
                stats,
            }),
        }
    }

    fn is_full(&self, state: &State, extra: usize) -> bool {
        state.queue.len() >= self.inner.max_messages as usize || state.bytes + extra > self.inner.max_bytes
    }

    pub(crate) fn push(&self, channel: &Arc<str>, frame: &Utf8Bytes, policy: SlowConsumerPolicy) -> Push {
        let size = frame.len();
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.is_overflowed {
            return Push::Gone;
        }
        let bytes_before = state.bytes;
        let mut dropped = 0;
        if self.is_full(&state, size) {
            match policy {
                SlowConsumerPolicy::Disconnect => {
                    state.is_overflowed = true;
                    drop(state);
                    // Always woken: a session whose delivery write is stalled polls
                    // `poll_overflowed` with the flag still set by an earlier push, and `signal`
                    // would not wake it again.
                    self.inner.is_signalled.store(true, Ordering::Release);
                    self.inner.waker.wake();
                    return Push::Overflowed;
                }
                SlowConsumerPolicy::Coalesce if state.queue.iter().any(|q| q.channel == *channel) => {
                    if let Some(i) = state.queue.iter().rposition(|q| q.channel == *channel) {
                        let old = std::mem::replace(&mut state.queue[i].frame, frame.clone());
                        state.bytes = state.bytes - old.len() + size;
                        state.per_channel.lose(Arc::clone(channel));
                        dropped += 1;
                    }
                    // Replacing in place can still leave the byte cap exceeded by a larger
                    // frame: drop from the front like drop_oldest until it fits.
                    dropped += self.trim(&mut state, 0, false);
                    self.account(&state, bytes_before);
                    drop(state);
                    self.signal();
                    return Push::Lossy(dropped);
                }
                SlowConsumerPolicy::Coalesce | SlowConsumerPolicy::DropOldest => {
                    dropped += self.trim(&mut state, size, true);
                }
            }
            if size > self.inner.max_bytes {
                state.per_channel.lose(Arc::clone(channel));
                self.account(&state, bytes_before);
                return Push::Lossy(dropped + 1);
            }
        }
        state.bytes += size;
        state.queue.push_back(Queued { channel: Arc::clone(channel), frame: frame.clone() });
        self.account(&state, bytes_before);
        drop(state);
        self.signal();
        if dropped == 0 { Push::Queued } else { Push::Lossy(dropped) }
    }

    /// Queues a frame that belongs to no channel (a `push`, a server-made `subscribed` or
    /// `unsubscribed` notice) under the `disconnect` slow-consumer policy: a session that cannot
    /// take it is flagged like any slow consumer. A lossy channel policy making room for its own
    /// messages may still drop it (counted, never announced by a `gap`).
    pub(crate) fn push_direct(&self, frame: &Utf8Bytes) -> Push {
        static DIRECT: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
        self.push(&DIRECT, frame, SlowConsumerPolicy::Disconnect)
    }

    fn account(&self, state: &State, bytes_before: usize) {
        self.inner.stats.add_queued_bytes(state.bytes as i64 - bytes_before as i64);
    }

    /// Drops the oldest messages until `extra` more bytes (and, with `room_for_one`, one more
    /// message) fit; returns how many were dropped.
    fn trim(&self, state: &mut State, extra: usize, room_for_one: bool) -> u64 {
        let mut dropped = 0;
        while !state.queue.is_empty()
            && ((room_for_one && state.queue.len() >= self.inner.max_messages as usize)
                || state.bytes + extra > self.inner.max_bytes)
        {
            if let Some(old) = state.queue.pop_front() {
                state.bytes -= old.frame.len();
                // A direct frame belongs to no channel: no `gap` can announce it.
                if !old.channel.is_empty() {
                    state.per_channel.lose(old.channel);
                }
                dropped += 1;
            }
        }
        dropped
    }

    /// Wakes the session, unless it was signalled and has not looked since.
    fn signal(&self) {
        if !self.inner.is_signalled.swap(true, Ordering::AcqRel) {
            self.inner.waker.wake();
        }
    }

    /// Ready when something was queued (or the outbox overflowed) since the last ready poll;
    /// registers the session task otherwise. A ready poll may find nothing left to drain.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flag is read: a push in between finds the waker.
        self.inner.waker.register(cx.waker());
        if self.inner.is_signalled.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Ready once the outbox has overflowed (raced against a stalled delivery write). Leaves the
    /// signal for [`Outbox::poll_ready`].
    pub(crate) fn poll_overflowed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.waker.register(cx.waker());
        if self.is_overflowed() { Poll::Ready(()) } else { Poll::Pending }
    }

    pub(crate) fn is_overflowed(&self) -> bool {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).is_overflowed
    }

    /// Drops the live frames of `channel` with an offset up to `offset` (already delivered by a
    /// recovery), until the first one beyond it; None forgets any such filter for the channel.
    pub(crate) fn skip_through(&self, channel: &str, offset: Option<u64>) {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match offset {
            Some(offset) => {
                state.per_channel.maps().recovered.insert(Arc::from(channel), offset);
            }
            None => {
                state.per_channel.forget_recovered(channel);
            }
        }
    }

    /// Moves up to `max` queued frames to the end of `out`, each preceded by a `gap` frame when
    /// its channel lost messages since the last delivery. `out` is the session's reusable write
    /// buffer: once it has grown to a batch, draining allocates nothing (only a `gap` frame, when
    /// one is due, is encoded into a new string). Moves nothing and returns `Err` when the outbox
    /// has overflowed (one lock for both questions: this runs once per delivery wake-up).
    pub(crate) fn drain_into(&self, max: usize, out: &mut Vec<Utf8Bytes>) -> Result<(), Overflowed> {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.is_overflowed {
            return Err(Overflowed);
        }
        let bytes_before = state.bytes;
        let limit = out.len() + max;
        while out.len() < limit {
            let Some(item) = state.queue.pop_front() else { break };
            state.bytes -= item.frame.len();
            // Checked first: hashing the channel name for every delivery showed in the profile.
            if let Some(missed) = state.per_channel.take_lost(&item.channel) {
                out.push(ServerFrame::Gap { channel: &item.channel, missed: Some(missed), reason: None }.encode());
            }
            if let Some(through) = state.per_channel.recovered_through(&item.channel) {
                match frame_offset(&item.frame) {
                    Some(offset) if offset <= through => continue,
                    _ => state.per_channel.forget_recovered(&item.channel),
                }
            }
            out.push(item.frame);
        }
        if !state.queue.is_empty() {
            // More than a batch was queued: the session's next poll must find the rest.
            self.inner.is_signalled.store(true, Ordering::Release);
        }
        self.account(&state, bytes_before);
        Ok(())
    }

    /// [`Outbox::drain_into`] a fresh vector.
    #[cfg(test)]
    pub(crate) fn drain(&self, max: usize) -> Vec<Utf8Bytes> {
        let mut out = Vec::new();
        let _ = self.drain_into(max, &mut out);
        out
    }
}

/// The `offset` of a `message` frame (None for other frames or without one).
fn frame_offset(frame: &Utf8Bytes) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Offset {
        offset: Option<u64>,
    }
    serde_json::from_str::<Offset>(frame.as_str()).ok()?.offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn outbox(messages: u32, bytes: usize) -> Outbox {
        Outbox::new(messages, bytes, Arc::new(Stats::default()))
    }

    #[test]
    fn disconnect_policy_flags_once() {
        let o = outbox(1, 1024);
        let f = Utf8Bytes::from("a");
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::Disconnect), Push::Queued);
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::Disconnect), Push::Overflowed);
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::Disconnect), Push::Gone);
        assert!(o.is_overflowed());
    }

    /// Counts wake-ups.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_push_wakes_the_session_once_until_it_looks_and_an_overflow_always() {
        let o = outbox(1, 1024);
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let count = || wakes.0.load(Ordering::SeqCst);
        assert!(o.poll_ready(&mut cx).is_pending());
        let f = Utf8Bytes::from("a");
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::DropOldest), Push::Queued);
        assert_eq!(count(), 1);
        // Not looked at yet: a second push does not wake again.
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::DropOldest), Push::Lossy(1));
        assert_eq!(count(), 1);
        assert!(o.poll_ready(&mut cx).is_ready());
        assert!(o.poll_ready(&mut cx).is_pending());
        assert_eq!(o.drain(8).len(), 2); // the gap, then the frame
        // A stalled write: the session waits for an overflow while a push's signal is pending.
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::Disconnect), Push::Queued);
        assert_eq!(count(), 2);
        assert!(o.poll_overflowed(&mut cx).is_pending());
        assert_eq!(o.push(&ch("c"), &f, SlowConsumerPolicy::Disconnect), Push::Overflowed);
        assert_eq!(count(), 3);
        assert!(o.poll_overflowed(&mut cx).is_ready());
    }

    #[test]
    fn a_drain_that_leaves_frames_behind_keeps_the_session_ready() {
        let o = outbox(8, 1024);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..3 {
            o.push(&ch("c"), &Utf8Bytes::from("a"), SlowConsumerPolicy::Disconnect);
        }
        assert!(o.poll_ready(&mut cx).is_ready());
        let mut out = Vec::new();
        assert!(o.drain_into(2, &mut out).is_ok());
        assert!(o.poll_ready(&mut cx).is_ready());
        assert!(o.drain_into(2, &mut out).is_ok());
        assert_eq!(out.len(), 3);
        assert!(o.poll_ready(&mut cx).is_pending());
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_announces_the_gap() {
        let o = outbox(2, 1024);
        for i in 0..5 {
            o.push(&ch("c"), &Utf8Bytes::from(format!("m{i}")), SlowConsumerPolicy::DropOldest);
        }
        let out: Vec<String> = o.drain(10).iter().map(|f| f.as_str().to_string()).collect();
        assert_eq!(out, vec![r#"{"type":"gap","channel":"c","missed":3}"#, "m3", "m4"]);
    }

    #[test]
    fn coalesce_replaces_the_queued_message_of_the_channel() {
        let o = outbox(2, 1024);
        o.push(&ch("a"), &Utf8Bytes::from("a1"), SlowConsumerPolicy::Coalesce);
        o.push(&ch("b"), &Utf8Bytes::from("b1"), SlowConsumerPolicy::Coalesce);
        o.push(&ch("a"), &Utf8Bytes::from("a2"), SlowConsumerPolicy::Coalesce);
        o.push(&ch("a"), &Utf8Bytes::from("a3"), SlowConsumerPolicy::Coalesce);
        let out: Vec<String> = o.drain(10).iter().map(|f| f.as_str().to_string()).collect();
        assert_eq!(out, vec![r#"{"type":"gap","channel":"a","missed":2}"#, "a3", "b1"]);
    }

    #[test]
    fn direct_frames_overflow_like_deliveries_and_are_never_announced_by_a_gap() {
        let o = outbox(2, 1024);
        assert_eq!(o.push_direct(&Utf8Bytes::from("p1")), Push::Queued);
        o.push(&ch("c"), &Utf8Bytes::from("c1"), SlowConsumerPolicy::DropOldest);
        o.push(&ch("c"), &Utf8Bytes::from("c2"), SlowConsumerPolicy::DropOldest);
        let out: Vec<String> = o.drain(10).iter().map(|f| f.as_str().to_string()).collect();
        assert_eq!(out, vec!["c1", "c2"], "the push was dropped to make room, with no gap frame");
        let full = outbox(1, 1024);
        assert_eq!(full.push_direct(&Utf8Bytes::from("p1")), Push::Queued);
        assert_eq!(full.push_direct(&Utf8Bytes::from("p2")), Push::Overflowed);
    }

    #[test]
    fn byte_cap_bounds_memory() {
        let o = outbox(1000, 10);
        for _ in 0..100 {
            o.push(&ch("c"), &Utf8Bytes::from("12345"), SlowConsumerPolicy::DropOldest);
        }
        assert_eq!(o.drain(1000).len(), 3);
    }

    #[test]
    fn queued_bytes_are_accounted_and_released() {
        let stats = Arc::new(Stats::default());
        let o = Outbox::new(10, 1024, Arc::clone(&stats));
        o.push(&ch("c"), &Utf8Bytes::from("12345"), SlowConsumerPolicy::DropOldest);
        o.push(&ch("c"), &Utf8Bytes::from("123"), SlowConsumerPolicy::DropOldest);
        assert_eq!(stats.queued_bytes(), 8);
        o.drain(1);
        assert_eq!(stats.queued_bytes(), 3);
        drop(o);
        assert_eq!(stats.queued_bytes(), 0);
    }
}
