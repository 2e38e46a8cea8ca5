//! A session's outbound queue as the hub sees it: bounded, never awaited. When it is full the
//! session is flagged as a slow consumer and its task closes it; the hub never blocks on a client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The sending half, held by the hub for each subscription.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    overflow: Arc<Overflow>,
}

/// The receiving half, held by the session task.
#[derive(Debug)]
pub(crate) struct OutboxReceiver {
    pub(crate) rx: mpsc::Receiver<Utf8Bytes>,
    pub(crate) overflow: Arc<Overflow>,
}

/// Set once when a push finds the queue full.
#[derive(Debug, Default)]
pub(crate) struct Overflow {
    is_overflowed: AtomicBool,
    notify: Notify,
}

impl Overflow {
    /// Resolves once the queue has overflowed.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Pushing into an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Full: the session was flagged as a slow consumer (reported once).
    Overflowed,
    /// Already flagged or closed: nothing to do.
    Gone,
}

pub(crate) fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Overflow::default());
    (Outbox { tx, overflow: Arc::clone(&overflow) }, OutboxReceiver { rx, overflow })
}

impl Outbox {
    pub(crate) fn push(&self, frame: Utf8Bytes) -> Push {
        if self.overflow.is_overflowed.load(Ordering::Acquire) {
            return Push::Gone;
        }
        match self.tx.try_send(frame) {
            Ok(()) => Push::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Gone,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.overflow.is_overflowed.swap(true, Ordering::AcqRel) {
                    Push::Gone
                } else {
                    self.overflow.notify.notify_one();
                    Push::Overflowed
                }
            }
        }
    }
}
