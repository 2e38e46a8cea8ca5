//! The sessions' timers, in one place: each session keeps one alarm here, set to its next deadline
//! (`Timers::next_deadline`), and one task per server sleeps until the earliest alarm and signals
//! the sessions whose alarm is due ([`Signal::Timer`] on their control). A session thereby holds no
//! timer of its own: tokio's `Sleep` is 112 bytes in every session's task, where an alarm is one
//! entry of three words in an ordered map (docs/PERFORMANCE.md, "Idle memory").
//!
//! Alarms are kept in whole milliseconds from the server's start, rounded up, so one never fires
//! before its deadline. A session sets its alarm again after every signal and whenever its
//! deadline moves earlier, and takes it out when it ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::{Link, Signal};

/// An alarm's place in the map: when (milliseconds from `Alarms::base`, never 0) and whose.
type Key = (u64, u64);

/// Every session's alarm.
pub(crate) struct Alarms {
    /// Millisecond 0 of the alarms.
    base: Instant,
    due: Mutex<BTreeMap<Key, Weak<Link>>>,
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
    /// Sets `link`'s session alarm to `deadline`, in place of `previous`; returns the new alarm.
    pub(crate) fn set(&self, link: &Arc<Link>, previous: Alarm, deadline: Instant) -> Alarm {
        let since = deadline.saturating_duration_since(self.base);
        let at = u64::try_from(since.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).max(1);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        if previous.0 != 0 {
            due.remove(&(previous.0, link.id));
        }
        due.insert((at, link.id), Arc::downgrade(link));
        let is_first = due.first_key_value().is_some_and(|(key, _)| key.0 == at && key.1 == link.id);
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

    /// Signals every session whose alarm is due at `now` and takes those alarms out; returns the
    /// earliest alarm left.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        let mut fired = Vec::new();
        let next = {
            let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(entry) = due.first_entry() {
                if entry.key().0 > now_ms {
                    break;
                }
                fired.push(entry.remove());
            }
            due.first_key_value().map(|(key, _)| key.0)
        };
        // Signalled outside the lock: a woken session sets its alarm again at once.
        for link in fired.iter().filter_map(Weak::upgrade) {
            link.control.signal(Signal::Timer);
        }
        next.map(|ms| self.base + Duration::from_millis(ms))
    }

    /// The alarm task: fires the due alarms and sleeps until the next one or an earlier alarm is
    /// set. Ends at shutdown (every session then ends on its own signal).
    pub(crate) async fn run(self: Arc<Alarms>, shutdown: CancellationToken) {
        loop {
            let earlier = self.earlier.notified();
            let next = self.fire(Instant::now());
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
    use std::net::IpAddr;

    use futures_util::FutureExt;

    use super::*;
    use crate::hooks::HandshakeInfo;
    use crate::hub::Outbox;
    use crate::observe::Stats;

    fn link(id: u64) -> Arc<Link> {
        let info = HandshakeInfo {
            client_ip: IpAddr::from([127, 0, 0, 1]),
            origin: None,
            user_agent: None,
            forwarded_headers: Vec::new(),
        };
        Link::new(id, Outbox::new(8, 1024, Arc::new(Stats::default())), info)
    }

    fn signalled(link: &Link) -> bool {
        link.control.wait().now_or_never().is_some_and(|wake| wake.has(Signal::Timer))
    }

    #[test]
    fn an_alarm_fires_once_at_its_deadline_never_before() {
        let alarms = Alarms::default();
        let (a, b) = (link(1), link(2));
        let start = alarms.base;
        let alarm_a = alarms.set(&a, Alarm::default(), start + Duration::from_micros(10_500));
        alarms.set(&b, Alarm::default(), start + Duration::from_millis(30));
        // Rounded up: not due at 10 ms.
        assert_eq!(alarms.fire(start + Duration::from_millis(10)), Some(start + Duration::from_millis(11)));
        assert!(!signalled(&a));
        assert_eq!(alarms.fire(start + Duration::from_millis(11)), Some(start + Duration::from_millis(30)));
        assert!(signalled(&a) && !signalled(&b));
        assert_eq!(alarms.len(), 1, "a fired alarm is taken out");
        assert_eq!(alarms.fire(start + Duration::from_millis(20)), Some(start + Duration::from_millis(30)));
        assert!(!signalled(&a), "once");

        // Set again (later, then earlier), the old alarm goes: one alarm per session.
        let alarm_a = alarms.set(&a, alarm_a, start + Duration::from_millis(50));
        let alarm_a = alarms.set(&a, alarm_a, start + Duration::from_millis(40));
        assert_eq!(alarms.len(), 2);
        alarms.clear(1, alarm_a);
        assert_eq!(alarms.fire(start + Duration::from_millis(60)), None);
        assert!(signalled(&b) && !signalled(&a));
    }

    #[test]
    fn the_alarm_of_a_session_that_is_gone_fires_nothing() {
        let alarms = Alarms::default();
        let gone = link(1);
        alarms.set(&gone, Alarm::default(), alarms.base);
        drop(gone);
        assert_eq!(alarms.fire(alarms.base + Duration::from_millis(5)), None);
        assert_eq!(alarms.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_wakes_for_an_earlier_alarm() {
        let alarms = Arc::new(Alarms::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&alarms).run(shutdown.clone()));
        let (late, early) = (link(1), link(2));
        alarms.set(&late, Alarm::default(), Instant::now() + Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(1)).await;
        alarms.set(&early, Alarm::default(), Instant::now() + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(signalled(&early) && !signalled(&late));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(signalled(&late));
        shutdown.cancel();
        task.await.expect("the task ends at shutdown");
    }
}
