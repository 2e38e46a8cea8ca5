//! Channel history: publications kept per concrete channel (per the channel rule's
//! `history_size` and `history_ttl_secs`, within `limits.history_memory_bytes`), their offsets
//! and epochs, and exact recovery. It owns the ordering rule that makes recovery exact and
//! never calls into a session: the caller hands it the fan-out and the subscription as closures.
//!
//! 1. Each publication on a channel with history takes the channel's *ordering lock*, gets the
//!    channel's next offset from the store, is encoded once with that offset, stored, and fanned
//!    out, all before the lock is released. So the order of offsets is the order of delivery.
//! 2. A subscribe takes the same lock, reads the history after the client's `since`, and joins
//!    the fan-out before releasing it. Every publication is then either in what was read (offset
//!    at most the position read) or delivered live afterwards (offset above it): none twice, none
//!    missing. (The usual "join first, buffer, read, merge" gives the same result where the lock
//!    cannot span the store, as with a shared store across nodes.)
//! 3. Recovery is exact or refused: a wrong epoch or a range the store no longer holds in full is
//!    `recovered: false` with a `gap` reason, never a partial replay.
//!
//! The store behind it is a [`HistoryStore`]: this node's memory. With `[cluster] broker =
//! "redis"` the logs are in Redis instead (cluster/history.rs), where offsets are assigned and
//! published atomically, and a subscribe joins first, then reads, and drops the live frames the
//! read already gave (the outbox's `skip_through`).

mod memory;
mod proof;
mod store;

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::observe::Stats;
pub use crate::protocol::Since;
pub(crate) use proof::PositionProofs;
pub use store::Position;
pub(crate) use store::{HistoryStore, Query, Retention, Slice};

/// Ordering locks: channels share them by hash (a bounded set, nothing to clean up).
const ORDERING_LOCKS: usize = 64;

/// Why a `since` cannot be used at all (a reply error; nothing changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinceError {
    /// The offset is beyond the channel's latest in that same epoch: the client invented it.
    Ahead,
    /// The epoch is not the channel's (only for paging; a subscribe answers with a `gap`).
    EpochChanged,
}

/// How a subscribe with `since` turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The missed publications (their `message` frames, in order; possibly none).
    Recovered(Vec<Utf8Bytes>),
    /// History cannot give them back exactly; the reason is the `gap` frame's.
    Lost(&'static str),
}

/// A subscription joined under the ordering lock.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The position when it joined: live deliveries have greater offsets.
    pub(crate) position: Position,
    /// Present when the client gave `since`.
    pub(crate) recovery: Option<Recovery>,
}

/// One page of a channel's history, as stored.
#[derive(Debug, Clone)]
pub(crate) struct FramePage {
    /// The channel's position when the page was read.
    pub(crate) position: Position,
    /// The publications, each `(offset, message frame)`, in the requested order.
    pub(crate) publications: Vec<(u64, Utf8Bytes)>,
}

/// One page of a channel's history, for the host (`ServerHandle::history`).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The channel's position when the page was read.
    pub position: Position,
    /// The publications, in the requested order.
    pub publications: Vec<Publication>,
}

/// A kept publication.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Its offset in the channel's epoch.
    pub offset: u64,
    /// Its payload, as delivered.
    pub payload: serde_json::Value,
}

impl From<FramePage> for Page {
    fn from(page: FramePage) -> Self {
        #[derive(serde::Deserialize)]
        struct Message {
            payload: serde_json::Value,
        }
        let publications = page
            .publications
            .iter()
            .filter_map(|(offset, frame)| {
                // Frames this server encoded: they always parse; a frame that did not would be
                // left out rather than invented.
                let message: Message = serde_json::from_str(frame.as_str()).ok()?;
                Some(Publication { offset: *offset, payload: message.payload })
            })
            .collect();
        Page { position: page.position, publications }
    }
}

/// The `gap` reason when the epoch differs: the channel's history was lost (store restarted,
/// log evicted whole) since the client's position.
pub(crate) const GAP_EPOCH_CHANGED: &str = "epoch_changed";
/// The `gap` reason when `since` came without a `proof` that this identity was subscribed from
/// that position on (see proof.rs): nothing is replayed.
pub(crate) const GAP_POSITION_UNPROVEN: &str = "position_unproven";
/// The `gap` reason when publications after the client's position are no longer retained
/// (trimmed by `history_size`, expired by `history_ttl_secs` or evicted by the memory cap).
pub(crate) const GAP_HISTORY_TRIMMED: &str = "history_trimmed";

/// The read a recovery from `since` needs: everything after it, oldest first.
pub(crate) fn recovery_query(since: &Since) -> Query {
    Query { after: Some(since.offset), before: None, limit: usize::MAX, is_newest_first: false }
}

/// Step 3 above, from a read made with [`recovery_query`] (by this node's store under the
/// ordering lock, or from the shared store after the subscription joined): the recovery, or a
/// refusal when `since` claims an offset the channel never reached in that epoch.
pub(crate) fn recover(slice: Slice, since: &Since) -> Result<Joined, SinceError> {
    let position = slice.position;
    let recovery = if *position.epoch != *since.epoch {
        Recovery::Lost(GAP_EPOCH_CHANGED)
    } else if since.offset > position.offset {
        return Err(SinceError::Ahead);
    } else if since.offset == position.offset {
        Recovery::Recovered(Vec::new())
    } else if slice.oldest.is_some_and(|oldest| oldest <= since.offset + 1) {
        // Retained entries are contiguous and end at `position.offset`: the read is complete.
        Recovery::Recovered(slice.publications.into_iter().map(|(_, frame)| frame).collect())
    } else {
        Recovery::Lost(GAP_HISTORY_TRIMMED)
    };
    Ok(Joined { position, recovery: Some(recovery) })
}

/// The read of a `history` page: after `since` (oldest first) or before it (newest first).
pub(crate) fn page_query(since: Option<&Since>, limit: usize, is_newest_first: bool) -> Query {
    let cursor = since.map(|s| s.offset);
    if is_newest_first {
        Query { after: None, before: cursor, limit, is_newest_first }
    } else {
        Query { after: cursor, before: None, limit, is_newest_first }
    }
}

/// A page from a read made with [`page_query`]; refused when `since` is not a position of the
/// channel's current epoch.
pub(crate) fn page_of(slice: Slice, since: Option<&Since>) -> Result<FramePage, SinceError> {
    if let Some(since) = since {
        if *slice.position.epoch != *since.epoch {
            return Err(SinceError::EpochChanged);
        }
        if since.offset > slice.position.offset {
            return Err(SinceError::Ahead);
        }
    }
    Ok(FramePage { position: slice.position, publications: slice.publications })
}

/// History for the whole server: the store, the ordering locks and the gauges.
pub(crate) struct History {
    store: Arc<dyn HistoryStore>,
    locks: Box<[Mutex<()>]>,
    hasher: RandomState,
    stats: Arc<Stats>,
    proofs: PositionProofs,
}

impl History {
    /// A node-local memory store counting at most `capacity_bytes`; positions proven with
    /// `proofs`.
    pub(crate) fn in_memory(capacity_bytes: u64, stats: Arc<Stats>, proofs: PositionProofs) -> Self {
        History {
            store: Arc::new(memory::MemoryStore::new(capacity_bytes)),
            locks: (0..ORDERING_LOCKS).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            stats,
            proofs,
        }
    }

    /// Issues and verifies the `proof` of subscribe acks.
    pub(crate) fn proofs(&self) -> &PositionProofs {
        &self.proofs
    }

    fn ordering_lock(&self, channel: &str) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one(channel) % ORDERING_LOCKS as u64) as usize;
        self.locks[stripe].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Step 1 above: gives the publication its offset, stores the frame `encode` builds with it
    /// and runs `fan_out` on those bytes, under the channel's ordering lock. Returns what
    /// `fan_out` returned.
    pub(crate) fn publish<T>(
        &self,
        channel: &str,
        retention: Retention,
        mut encode: impl FnMut(u64) -> Utf8Bytes,
        fan_out: impl FnOnce(&Utf8Bytes) -> T,
    ) -> T {
        let result = {
            let _ordered = self.ordering_lock(channel);
            let frame = self.store.append(channel, retention, &mut encode);
            fan_out(&frame)
        };
        self.report_usage();
        result
    }

    /// Step 2 and 3 above: reads what the client missed since `since` (when given) and runs
    /// `join` (the hub subscription) under the channel's ordering lock. Refused without joining
    /// when `since` claims an offset the channel never reached in that epoch.
    pub(crate) fn join(&self, channel: &str, since: Option<&Since>, join: impl FnOnce()) -> Result<Joined, SinceError> {
        let _ordered = self.ordering_lock(channel);
        let Some(since) = since else {
            let position = self.position(channel);
            join();
            return Ok(Joined { position, recovery: None });
        };
        let slice = self.store.read(channel, recovery_query(since));
        let joined = recover(slice, since)?;
        join();
        Ok(joined)
    }

    /// Counts a recovery's outcome (`wsguard_history_recoveries_total`), when there was one.
    pub(crate) fn record_recovery(&self, recovery: Option<&Recovery>) {
        if let Some(recovery) = recovery {
            self.stats.record_history_recovery(match recovery {
                Recovery::Recovered(_) => "recovered",
                Recovery::Lost(_) => "gap",
            });
        }
    }

    /// Where `channel` stands now.
    pub(crate) fn position(&self, channel: &str) -> Position {
        let nothing = Query { after: None, before: None, limit: 0, is_newest_first: false };
        self.store.read(channel, nothing).position
    }

    /// A page of `channel`'s history: after `since` (oldest first) or before it (newest first),
    /// at most `limit`. Refused when `since` is not a position of the channel's current epoch.
    pub(crate) fn page(
        &self,
        channel: &str,
        since: Option<&Since>,
        limit: usize,
        is_newest_first: bool,
    ) -> Result<FramePage, SinceError> {
        let slice = self.store.read(channel, page_query(since, limit, is_newest_first));
        page_of(slice, since)
    }

    /// Drops expired publications and refreshes the gauges (the server's upkeep).
    pub(crate) fn sweep(&self) {
        self.store.sweep();
        self.report_usage();
    }

    fn report_usage(&self) {
        let usage = self.store.usage();
        self.stats.set_history_usage(usage.bytes, usage.messages);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KEEP: Retention = Retention { size: 4, ttl: Duration::from_secs(60) };

    fn history() -> History {
        History::in_memory(u64::MAX, Arc::new(Stats::default()), PositionProofs::random())
    }

    fn publish(history: &History, n: u64) {
        for _ in 0..n {
            history.publish("c", KEEP, |o| Utf8Bytes::from(o.to_string()), |_| ());
        }
    }

    fn since(offset: u64, epoch: &str) -> Since {
        Since { offset, epoch: epoch.to_string() }
    }

    #[test]
    fn recovery_is_complete_or_a_gap() {
        let h = history();
        let epoch = h.join("c", None, || ()).expect("joins").position.epoch.to_string();
        publish(&h, 6);
        let joined = h.join("c", Some(&since(3, &epoch)), || ()).expect("joins");
        let frames = |r: Option<Recovery>| match r {
            Some(Recovery::Recovered(f)) => f.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            other => panic!("not recovered: {other:?}"),
        };
        assert_eq!(frames(joined.recovery), ["4", "5", "6"]);
        assert_eq!(joined.position.offset, 6);
        assert!(frames(h.join("c", Some(&since(6, &epoch)), || ()).expect("joins").recovery).is_empty());
        let trimmed = h.join("c", Some(&since(1, &epoch)), || ()).expect("joins");
        assert_eq!(trimmed.recovery, Some(Recovery::Lost(GAP_HISTORY_TRIMMED)));
        let other = h.join("c", Some(&since(6, "other")), || ()).expect("joins");
        assert_eq!(other.recovery, Some(Recovery::Lost(GAP_EPOCH_CHANGED)));
        let mut joined_anyway = false;
        assert_eq!(
            h.join("c", Some(&since(7, &epoch)), || joined_anyway = true).expect_err("refused"),
            SinceError::Ahead
        );
        assert!(!joined_anyway, "a refused since joins nothing");
    }

    #[test]
    fn pages_run_both_ways_from_a_cursor() {
        let h = history();
        publish(&h, 4);
        let epoch = h.page("c", None, 10, false).expect("page").position.epoch.to_string();
        let offsets = |p: FramePage| p.publications.iter().map(|(o, _)| *o).collect::<Vec<_>>();
        assert_eq!(offsets(h.page("c", Some(&since(1, &epoch)), 2, false).expect("page")), [2, 3]);
        assert_eq!(offsets(h.page("c", Some(&since(3, &epoch)), 5, true).expect("page")), [2, 1]);
        assert_eq!(offsets(h.page("c", None, 3, true).expect("page")), [4, 3, 2]);
        assert_eq!(h.page("c", Some(&since(1, "x")), 2, false).expect_err("refused"), SinceError::EpochChanged);
        assert_eq!(h.page("c", Some(&since(5, &epoch)), 2, false).expect_err("refused"), SinceError::Ahead);
    }
}
