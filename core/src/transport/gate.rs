//! Lets the session loop skip polling the socket until the socket has woken the task
//! ([`ReadGate`]): a pass woken by a delivery or by the session's control does not poll the read
//! side, which found nothing the last time and has not been woken since.
//!
//! The socket is polled with the gate's own waker. When it fires, the gate records it and wakes
//! the task; the next pass polls the socket again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::{ArcWake, AtomicWaker, waker_ref};

/// A flag and the task to wake when it is set: the waker a gate polls its waits with.
struct Shared {
    is_due: AtomicBool,
    /// The session task's waker, refreshed at every poll through the gate.
    task: AtomicWaker,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared { is_due: AtomicBool::new(true), task: AtomicWaker::new() })
    }

    /// Polls `poll` with this flag's waker, after registering the task's.
    fn poll_with<T>(self: &Arc<Self>, cx: &Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        self.task.register(cx.waker());
        // Borrowed, not cloned: no reference count traffic per poll, and no second pointer held
        // in every session.
        let waker = waker_ref(self);
        poll(&mut Context::from_waker(&waker))
    }
}

impl ArcWake for Shared {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.is_due.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// The read side of the session's WebSocket, polled only when it may have something: when the
/// socket woke the task (any readiness: tokio-tungstenite wakes its read and write wakers
/// together) or when the last poll returned a message (more may be buffered). Every poll goes
/// through here, so the socket always holds the gate's waker: a poll with the task's own waker
/// would leave a later readiness unseen by the gate.
pub(super) struct ReadGate {
    shared: Arc<Shared>,
}

impl ReadGate {
    /// Due at first: the stream has not been polled yet.
    pub(super) fn new() -> ReadGate {
        ReadGate { shared: Shared::new() }
    }

    /// The next client message from `poll` (the stream, polled with the gate's waker); `Pending`
    /// without calling it when it is not due.
    pub(super) fn poll_next<T>(&self, cx: &Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        let polled = self.shared.poll_with(cx, |gated| {
            if self.shared.is_due.swap(false, Ordering::AcqRel) { poll(gated) } else { Poll::Pending }
        });
        if polled.is_ready() {
            self.shared.is_due.store(true, Ordering::Release);
        }
        polled
    }

    /// Makes the next poll call the stream (after the stream changed under the gate).
    pub(super) fn mark_due(&self) {
        self.shared.is_due.store(true, Ordering::Release);
    }

    /// True when the stream's last poll was `Pending` and nothing woke it since: whatever the
    /// stream had was read, and its waker is the gate's.
    pub(super) fn is_armed(&self) -> bool {
        !self.shared.is_due.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream is polled when due, not again until the socket wakes the gate, and then the
    /// message arrives; after a message the next poll is due (more may be buffered).
    #[tokio::test]
    async fn the_read_gate_polls_the_stream_only_after_a_wake_or_a_message() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let (server_io, client_io) = tokio::io::duplex(4096);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let reads = ReadGate::new();
        let wakes = Arc::new(Wakes::default());
        let waker = futures_util::task::waker(Arc::clone(&wakes));
        let cx = Context::from_waker(&waker);

        assert!(reads.poll_next(&cx, |gated| server.poll_next_unpin(gated)).is_pending(), "nothing sent yet");
        assert!(!reads.shared.is_due.load(Ordering::Acquire), "the pending poll left the gate armed");
        assert!(reads.poll_next(&cx, |gated| server.poll_next_unpin(gated)).is_pending());

        client.send(Message::text("one")).await.expect("send");
        client.send(Message::text("two")).await.expect("send");
        assert!(wakes.0.load(Ordering::Acquire) >= 1, "the socket woke the task through the gate");
        let Poll::Ready(Some(Ok(first))) = reads.poll_next(&cx, |gated| server.poll_next_unpin(gated)) else {
            panic!("first message")
        };
        assert_eq!(first.to_text().ok(), Some("one"));
        let Poll::Ready(Some(Ok(second))) = reads.poll_next(&cx, |gated| server.poll_next_unpin(gated)) else {
            panic!("second message")
        };
        assert_eq!(second.to_text().ok(), Some("two"));
        assert!(reads.poll_next(&cx, |gated| server.poll_next_unpin(gated)).is_pending());
    }

    /// Counts wake-ups.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::AcqRel);
        }
    }
}
