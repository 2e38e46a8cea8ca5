//! The store interface: what any history backend (the node's memory today, a shared store for
//! clusters next) must provide, and the values that cross it.
//!
//! A store keeps, per concrete channel, a *log*: its epoch, the last offset it assigned and the
//! publications it still retains, oldest first and contiguous (a store only ever trims from the
//! oldest end, so "the oldest retained offset" is enough to tell whether a range is complete).
//! Ordering between offset assignment and fan-out is not the store's business: the caller holds
//! the channel's ordering lock around [`HistoryStore::append`] and the fan-out (see `mod.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// How long and how much a channel rule keeps (`history_size`, `history_ttl_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Publications kept per concrete channel (at least 1).
    pub(crate) size: usize,
    /// How long each publication is kept.
    pub(crate) ttl: Duration,
}

/// Where a channel's log stands: the last offset assigned (0 before the first publication) in
/// the current epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The offset of the channel's latest publication; 0 when it has none yet in this epoch.
    pub offset: u64,
    /// The epoch: a random string that changes whenever the channel's history may have been lost.
    pub epoch: Arc<str>,
}

/// Which stored publications to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query {
    /// Only offsets greater than this.
    pub(crate) after: Option<u64>,
    /// Only offsets smaller than this.
    pub(crate) before: Option<u64>,
    /// At most this many.
    pub(crate) limit: usize,
    /// Newest first (otherwise oldest first).
    pub(crate) is_newest_first: bool,
}

/// A read: the log's position at that moment, the oldest offset still retained, and the
/// publications the query selected (each its `message` frame, as fanned out), in query order.
#[derive(Debug, Clone)]
pub(crate) struct Slice {
    pub(crate) position: Position,
    /// None when nothing is retained.
    pub(crate) oldest: Option<u64>,
    pub(crate) publications: Vec<(u64, Utf8Bytes)>,
}

/// What the store holds now (for the gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Counted bytes: every retained frame's length plus a fixed overhead per publication and
    /// per channel log (the store's own bookkeeping).
    pub(crate) bytes: u64,
    /// Retained publications.
    pub(crate) messages: u64,
}

/// A history backend. Methods are called with the channel's ordering lock held where order
/// matters (append with its fan-out; a read that precedes a subscription); a store needs only
/// its own internal consistency.
pub(crate) trait HistoryStore: Send + Sync {
    /// Assigns `channel` its next offset, builds the publication's frame with it (`encode`),
    /// retains the frame under `retention`, and returns the frame (the bytes to fan out).
    fn append(&self, channel: &str, retention: Retention, encode: &mut dyn FnMut(u64) -> Utf8Bytes) -> Utf8Bytes;

    /// Reads `channel` (expired publications are never returned). A channel without a log gets
    /// one, empty, so that its epoch is stable from the first subscriber on.
    fn read(&self, channel: &str, query: Query) -> Slice;

    /// Drops expired publications everywhere (the periodic upkeep).
    fn sweep(&self);

    /// What is retained now.
    fn usage(&self) -> Usage;
}
