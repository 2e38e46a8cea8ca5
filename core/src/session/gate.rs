//! Lets the session loop skip the waits that rarely fire (the session's control: a disconnect
//! request, shutdown, revocations, reloads; and its one timer: the token's expiry, the idle
//! timeout, the next ping) until one of them has woken the task. `tokio::select!` polls every enabled branch on every pass, and this loop passes
//! once or twice per message and per delivery: polling those waits each time (a mutex per
//! `Notify` waiter) was a measurable share of the per-message CPU (docs/PERFORMANCE.md).
//!
//! The gated waits are polled with the gate's own waker. When it fires, the gate records it and
//! wakes the task; the next pass of the loop polls the gated waits again ([`Gate::take_due`]).
//! A gated wait that was re-armed or reset must be polled once before it can wake anyone, so
//! the loop calls [`Gate::mark_due`] after doing so.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

struct Shared {
    is_due: AtomicBool,
    /// The session task's waker, refreshed at every poll through the gate.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.is_due.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One per session.
pub(super) struct Gate {
    shared: Arc<Shared>,
    waker: Waker,
}

impl Gate {
    /// A gate whose first pass is due (every gated wait must be polled once to register).
    pub(super) fn new() -> Gate {
        let shared = Arc::new(Shared { is_due: AtomicBool::new(true), task: AtomicWaker::new() });
        let waker = Waker::from(Arc::clone(&shared));
        Gate { shared, waker }
    }

    /// True when the gated waits must be polled in this pass; clears the mark first, so a wake
    /// during the pass is not lost.
    pub(super) fn take_due(&self) -> bool {
        self.shared.is_due.swap(false, Ordering::AcqRel)
    }

    /// Makes the next pass poll the gated waits (after one was re-armed or reset).
    pub(super) fn mark_due(&self) {
        self.shared.is_due.store(true, Ordering::Release);
    }

    /// Polls `wait` with the gate's waker.
    pub(super) fn gated<'a, F: Future + ?Sized>(&'a self, mut wait: Pin<&'a mut F>) -> impl Future<Output = F::Output> {
        self.gated_poll(move |cx| wait.as_mut().poll(cx))
    }

    /// Calls `poll` (a `poll_*` method of a timer, say) with the gate's waker.
    pub(super) fn gated_poll<'a, T>(
        &'a self,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T> + 'a,
    ) -> impl Future<Output = T> + 'a {
        poll_fn(move |cx| {
            self.shared.task.register(cx.waker());
            poll(&mut Context::from_waker(&self.waker))
        })
    }

    /// Resolves once a gated wait has woken (the branch that stands in for them in a pass that
    /// does not poll them).
    pub(super) fn woken(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            self.shared.task.register(cx.waker());
            if self.shared.is_due.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gated_wait_marks_the_gate_due_when_it_fires() {
        let gate = Gate::new();
        assert!(gate.take_due());
        let notify = Arc::new(tokio::sync::Notify::new());
        let wait = notify.notified();
        tokio::pin!(wait);
        // Registers the gate's waker without completing.
        let polled = futures_util::FutureExt::now_or_never(gate.gated(wait.as_mut()));
        assert!(polled.is_none());
        assert!(!gate.take_due());
        notify.notify_one();
        assert!(gate.take_due());
        assert!(futures_util::FutureExt::now_or_never(gate.gated(wait.as_mut())).is_some());
        gate.mark_due();
        assert!(futures_util::FutureExt::now_or_never(gate.woken()).is_some());
    }
}
