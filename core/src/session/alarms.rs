//! The sessions' timers, in one place: each session keeps one alarm here, set to its next deadline
//! (`Timers::next_deadline`), and one task per server sleeps until the earliest alarm and signals
//! the sessions whose alarm is due ([`Signal::Timer`] on their control, found in the registry). A
//! session thereby holds no timer of its own: tokio's `Sleep` is 112 bytes in every session's
//! task, where an alarm is one entry of two words in an ordered set (docs/PERFORMANCE.md, "Idle
//! memory").
//!
//! Alarms are kept in whole milliseconds from the server's start, rounded up, so one never fires
//! before its deadline. A session sets its alarm again after every signal and whenever its
//! deadline moves earlier, and takes it out when it ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::{Registry, Signal};

/// An alarm's place in the map: when (milliseconds from `Alarms::base`, never 0) and whose.
type Key = (u64, u64);

/// Every session's alarm.
pub(crate) struct Alarms {
    /// Millisecond 0 of the alarms.
    base: Instant,
    due: Mutex<BTreeSet<Key>>,
    /// Wakes the alarm task when an alarm is set before the earliest it sleeps towards.
    earlier: Notify,
}

/// A session's alarm as the session remembers it: 0 when none is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Alarm(u64);

impl Default for Alarms {
    fn default() -> Alarms {
        Alarms { base: Instant::now(), due: Mutex::default(), earlier: Notify::new() }
    }
}

impl Alarms {
    /// Sets session `id`'s alarm to `deadline`, in place of `previous`; returns the new alarm.
    pub(crate) fn set(&self, id: u64, previous: Alarm, deadline: Instant) -> Alarm {
        let since = deadline.saturating_duration_since(self.base);
        let at = u64::try_from(since.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).max(1);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        if previous.0 != 0 {
            due.remove(&(previous.0, id));
        }
        due.insert((at, id));
        let is_first = due.first() == Some(&(at, id));
        drop(due);
        if is_first {
            // A permit when the task is not waiting yet: it looks again before it sleeps.
            self.earlier.notify_one();
        }
        Alarm(at)
    }

    /// Takes out session `id`'s alarm (the session is ending).
    pub(crate) fn clear(&self, id: u64, alarm: Alarm) {
        if alarm.0 != 0 {
            self.due.lock().unwrap_or_else(PoisonError::into_inner).remove(&(alarm.0, id));
        }
    }

    /// How many alarms are set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Takes out the alarms due at `now`, adding their sessions to `fired`; returns the earliest
    /// alarm left.
    fn fire(&self, now: Instant, fired: &mut Vec<u64>) -> Option<Instant> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(at, id)) = due.first() {
            if at > now_ms {
                return Some(self.base + Duration::from_millis(at));
            }
            due.pop_first();
            fired.push(id);
        }
        None
    }

    /// The alarm task: signals the sessions whose alarm is due and sleeps until the next one or an
    /// earlier alarm is set. Ends at shutdown (every session then ends on its own signal).
    pub(crate) async fn run(self: Arc<Alarms>, registry: Arc<Registry>, shutdown: CancellationToken) {
        let mut fired = Vec::new();
        loop {
            let earlier = self.earlier.notified();
            let next = self.fire(Instant::now(), &mut fired);
            // Outside the alarms' lock: a woken session sets its alarm again at once. A session
            // that has ended is no longer in the registry.
            if !fired.is_empty() {
                registry.signal_each(&fired, Signal::Timer);
                fired.clear();
            }
            let sleep = async {
                match next {
                    Some(next) => tokio::time::sleep_until(next).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = earlier => {}
                () = sleep => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(alarms: &Alarms, at_ms: u64) -> (Vec<u64>, Option<Instant>) {
        let mut fired = Vec::new();
        let next = alarms.fire(alarms.base + Duration::from_millis(at_ms), &mut fired);
        (fired, next)
    }

    #[test]
    fn an_alarm_fires_once_at_its_deadline_never_before() {
        let alarms = Alarms::default();
        let start = alarms.base;
        let ms = |n| Some(start + Duration::from_millis(n));
        let alarm_1 = alarms.set(1, Alarm::default(), start + Duration::from_micros(10_500));
        alarms.set(2, Alarm::default(), start + Duration::from_millis(30));
        // Rounded up: not due at 10 ms.
        assert_eq!(fire(&alarms, 10), (vec![], ms(11)));
        assert_eq!(fire(&alarms, 11), (vec![1], ms(30)));
        assert_eq!(alarms.len(), 1, "a fired alarm is taken out");
        assert_eq!(fire(&alarms, 20), (vec![], ms(30)), "once");

        // Set again (later, then earlier), the old alarm goes: one alarm per session.
        let alarm_1 = alarms.set(1, alarm_1, start + Duration::from_millis(50));
        let alarm_1 = alarms.set(1, alarm_1, start + Duration::from_millis(40));
        assert_eq!(alarms.len(), 2);
        assert_eq!(fire(&alarms, 35), (vec![2], ms(40)));
        alarms.clear(1, alarm_1);
        assert_eq!(fire(&alarms, 60), (vec![], None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_wakes_for_an_earlier_alarm_and_signals_registered_sessions() {
        use futures_util::FutureExt;

        use crate::hub::Outbox;
        use crate::observe::Stats;
        use crate::session::registry::Link;
        use crate::session::registry::tests::{identity, link};

        let registry = Arc::new(Registry::default());
        let alice = identity("alice");
        let links: Vec<Arc<Link>> =
            (1..=2).map(|id| link(id, Outbox::new(8, 1024, Arc::new(Stats::default())))).collect();
        for link in &links {
            registry.register(&alice, link);
        }
        let signalled = |link: &Link| link.control.wait().now_or_never().is_some_and(|wake| wake.has(Signal::Timer));

        let alarms = Arc::new(Alarms::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&alarms).run(Arc::clone(&registry), shutdown.clone()));
        alarms.set(1, Alarm::default(), Instant::now() + Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(1)).await;
        alarms.set(2, Alarm::default(), Instant::now() + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(signalled(&links[1]) && !signalled(&links[0]));
        // A session that left the registry is not signalled.
        registry.remove(1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!signalled(&links[0]));
        assert_eq!(alarms.len(), 0);
        shutdown.cancel();
        task.await.expect("the task ends at shutdown");
    }
}
