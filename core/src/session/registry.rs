//! Live sessions by id, so the server side can reach a session or every session of a user:
//! disconnect it, send it a frame, subscribe or unsubscribe it, list it. Ordered by id, so a
//! listing pages by the last id it returned.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Disconnect;
use super::subscriptions::{Origin, SharedSubscriptions};
use crate::auth::Identity;
use crate::hooks::HandshakeInfo;
use crate::hub::{Hub, Outbox, Push};
use crate::observe::Stats;
use crate::policy::SlowConsumerPolicy;
use crate::protocol::ServerFrame;

/// A server-wide change every session must look at, relayed to each session's control by
/// [`Registry::signal_all`] (one wait per session instead of one per source).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(crate) enum Signal {
    /// The server is shutting down.
    Shutdown = 1,
    /// A revocation was added: is this session's token revoked now?
    Revocation = 2,
    /// The policy was reloaded: re-authorize the subscriptions.
    Reload = 4,
    /// The session's alarm is due (`Alarms`): a deadline of its `Timers` may have passed.
    Timer = 8,
}

/// What woke a session's control wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wake {
    /// The request to end the session, when there is one (it stays pending).
    pub(crate) requested: Option<Disconnect>,
    /// The signals received since the last wake, taken by this one (bits of [`Signal`]).
    signals: u8,
}

impl Wake {
    pub(crate) fn has(&self, signal: Signal) -> bool {
        self.signals & signal as u8 != 0
    }
}

/// The bit of `SessionControl::signals` that says a request is pending (it stays set).
const REQUESTED: u8 = 0x80;

/// Events for one session from outside its task: a request to end it, the server-wide signals
/// and its alarm. The session loop polls its wait in every pass; with nothing pending that is one
/// atomic read-modify-write and the waker's registration, and no lock.
#[derive(Debug, Default)]
pub(crate) struct SessionControl {
    /// The request to end the session, with the operator's close reason when there is one.
    requested: Mutex<Option<(Disconnect, Option<Arc<str>>)>>,
    /// Bits of [`Signal`], and `REQUESTED`.
    signals: AtomicU8,
    /// The session task, woken by a request or a signal. (A waker, not a `Notify`: the session's
    /// wait is then one word in its future rather than a `Notified` of 88 bytes.)
    task: AtomicWaker,
}

impl SessionControl {
    /// Asks the session to end; the first request wins.
    pub(crate) fn request(&self, disconnect: Disconnect) {
        self.request_with_reason(disconnect, None);
    }

    /// Asks the session to end with a close reason of the caller's (checked by
    /// `host::close_reason`); the first request wins.
    pub(crate) fn request_with_reason(&self, disconnect: Disconnect, reason: Option<Arc<str>>) {
        let mut requested = self.requested.lock().unwrap_or_else(PoisonError::into_inner);
        if requested.is_none() {
            *requested = Some((disconnect, reason));
            drop(requested);
            self.signals.fetch_or(REQUESTED, Ordering::AcqRel);
            self.task.wake();
        }
    }

    /// The close reason of the pending request, when its caller gave one.
    pub(crate) fn close_reason(&self) -> Option<Arc<str>> {
        self.requested.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(|(_, r)| r.clone())
    }

    /// Tells the session about a server-wide change.
    pub(crate) fn signal(&self, signal: Signal) {
        self.signals.fetch_or(signal as u8, Ordering::AcqRel);
        self.task.wake();
    }

    /// A wait on the control, for tests (the session waits through [`Link::wait_owned`]).
    #[cfg(test)]
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = Wake> + '_ {
        std::future::poll_fn(move |cx| self.poll_wait(cx))
    }

    /// Ready once a request is pending or a signal has arrived (the signals are taken; a request
    /// stays).
    fn poll_wait(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Wake> {
        let mut signals = self.signals.fetch_and(REQUESTED, Ordering::AcqRel);
        if signals == 0 {
            // Registered, then read again: a request or signal made after the first read either
            // shows in the second or wakes this registration.
            self.task.register(cx.waker());
            signals = self.signals.fetch_and(REQUESTED, Ordering::AcqRel);
            if signals == 0 {
                return std::task::Poll::Pending;
            }
        }
        let requested = if signals & REQUESTED == 0 {
            None
        } else {
            self.requested.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|(d, _)| *d)
        };
        std::task::Poll::Ready(Wake { requested, signals: signals & !REQUESTED })
    }
}

/// What a session shares with the server side, made once per session in one allocation: its
/// control, its subscriptions, its outbox and its handshake record. The registry holds it next to
/// the identity, which a refresh replaces.
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) control: SessionControl,
    /// Changed by the session's task and by server-side subscribes and unsubscribes.
    pub(crate) subscriptions: SharedSubscriptions,
    pub(crate) outbox: Outbox,
    /// What the `authenticate` hook saw at the handshake (the client address among it).
    pub(crate) info: HandshakeInfo,
    /// When the session started, in milliseconds since the Unix epoch.
    pub(crate) connected_at_ms: u64,
}

impl Link {
    /// A wait on the link's control (see `SessionControl::poll_wait`) that holds the link: one
    /// word in the session's future, where a borrow would need the link kept beside it.
    pub(crate) fn wait_owned(self: Arc<Self>) -> impl std::future::Future<Output = Wake> {
        std::future::poll_fn(move |cx| self.control.poll_wait(cx))
    }

    pub(crate) fn new(id: u64, outbox: Outbox, info: HandshakeInfo) -> Arc<Link> {
        Arc::new(Link {
            id,
            control: SessionControl::default(),
            subscriptions: SharedSubscriptions::default(),
            outbox,
            info,
            connected_at_ms: crate::cluster::now_ms(),
        })
    }
}

/// A registered session: two words, so the ordered map's nodes stay small.
struct Entry {
    /// The session's identity, shared (its subject names the user).
    identity: Arc<Identity>,
    link: Arc<Link>,
}

impl std::ops::Deref for Entry {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.link
    }
}

/// The sessions a server-side operation reaches on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local<'a> {
    /// One session, by id.
    Session(u64),
    /// Every session of a user (`sub`).
    User(&'a str),
}

/// What a server-side operation did on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reach {
    /// Sessions that matched the target.
    pub(crate) matched: usize,
    /// Sessions the operation changed or reached.
    pub(crate) changed: usize,
    /// Subscribe: sessions skipped because they hold `limits.max_subscriptions` subscriptions.
    pub(crate) at_limit: usize,
}

/// One session as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) id: u64,
    pub(crate) user: String,
    pub(crate) client_ip: IpAddr,
    pub(crate) connected_at_ms: u64,
    pub(crate) subscriptions: Vec<String>,
}

/// Every live session.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<BTreeMap<u64, Entry>>,
}

impl Registry {
    /// Registers a session, so it can be reached, signalled and listed until [`Registry::remove`].
    pub(crate) fn register(&self, identity: &Arc<Identity>, link: &Arc<Link>) {
        let entry = Entry { identity: Arc::clone(identity), link: Arc::clone(link) };
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).insert(link.id, entry);
    }

    /// Runs `f` on every session `target` names (ids in order); how many it ran on.
    fn each(&self, target: Local<'_>, f: impl FnMut(&Entry)) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match target {
            Local::Session(id) => sessions.get(&id).map(f).is_some() as usize,
            Local::User(user) => sessions.values().filter(|e| e.identity.subject == user).map(f).count(),
        }
    }

    /// Queues `frame` (encoded once by the caller) in the outbox of every session of `target`,
    /// like a delivery: a full outbox makes the session a slow consumer.
    pub(crate) fn send(&self, target: Local<'_>, frame: &Utf8Bytes, stats: &Stats) -> Reach {
        let mut reach = Reach::default();
        reach.matched = self.each(target, |entry| match entry.outbox.push_direct(frame) {
            Push::Queued | Push::Lossy(_) => reach.changed += 1,
            Push::Overflowed => stats.record_slow_consumer(),
            Push::Gone => {}
        });
        reach
    }

    /// Removes `channel` from every session of `target`, whoever made the subscription, and
    /// queues an `unsubscribed` frame with the reason `server` for each. `on_removed` runs for
    /// each session unsubscribed now, under its subscriptions' lock (so a session ending at the
    /// same time never sees the channel as well: presence leaves exactly once).
    pub(crate) fn unsubscribe(
        &self,
        target: Local<'_>,
        channel: &str,
        hub: &Hub,
        mut on_removed: impl FnMut(u64, &Arc<Identity>),
    ) -> Reach {
        let frame = ServerFrame::Unsubscribed { channel, reason: "server" }.encode();
        let mut reach = Reach::default();
        reach.matched = self.each(target, |entry| {
            let mut subscriptions = entry.subscriptions.lock();
            if subscriptions.remove(channel).is_some() {
                hub.unsubscribe(channel, entry.id);
                // After the hub change: no message of the channel can follow the notice.
                entry.outbox.push_direct(&frame);
                on_removed(entry.id, &entry.identity);
                reach.changed += 1;
            }
        });
        reach
    }

    /// Up to `limit` sessions with an id above `after` (of `user` only, when given), in id order.
    pub(crate) fn list(&self, user: Option<&str>, after: Option<u64>, limit: usize) -> Vec<Listed> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        sessions
            .range((start, std::ops::Bound::Unbounded))
            .filter(|(_, e)| user.is_none_or(|u| e.identity.subject == u))
            .take(limit)
            .map(|(id, e)| Listed {
                id: *id,
                user: e.identity.subject.clone(),
                client_ip: e.info.client_ip,
                connected_at_ms: e.connected_at_ms,
                subscriptions: e.subscriptions.lock().names(),
            })
            .collect()
    }

    /// Ends every session of `target` with `disconnect` and the caller's close reason.
    pub(crate) fn disconnect(&self, target: Local<'_>, disconnect: Disconnect, reason: Option<&Arc<str>>) -> Reach {
        let matched = self.each(target, |e| e.control.request_with_reason(disconnect, reason.cloned()));
        Reach { matched, changed: matched, at_limit: 0 }
    }

    /// Subscribes every session of `target` to `channel` as a server-made subscription (see
    /// `Origin::Server`): the `subscribed` frame is queued first, so the client sees it before
    /// the channel's messages. A session already subscribed is left as it is; one holding
    /// `max_subscriptions` subscriptions is skipped. `on_added` runs for each session subscribed
    /// now, under its subscriptions' lock.
    pub(crate) fn subscribe(
        &self,
        target: Local<'_>,
        channel: &str,
        policy: SlowConsumerPolicy,
        max_subscriptions: usize,
        hub: &Hub,
        mut on_added: impl FnMut(u64, &Arc<Identity>),
    ) -> Reach {
        let frame = ServerFrame::Subscribed { channel, by: "server" }.encode();
        let mut reach = Reach::default();
        reach.matched = self.each(target, |entry| {
            let mut subscriptions = entry.subscriptions.lock();
            if subscriptions.is_closed() || subscriptions.contains(channel) {
                return;
            }
            if subscriptions.len() >= max_subscriptions {
                reach.at_limit += 1;
                return;
            }
            if matches!(entry.outbox.push_direct(&frame), Push::Overflowed | Push::Gone) {
                return;
            }
            hub.subscribe(channel, entry.id, &entry.outbox, policy);
            subscriptions.insert(channel, Origin::Server);
            on_added(entry.id, &entry.identity);
            reach.changed += 1;
        });
        reach
    }

    /// True while session `id` is live and subscribed to `channel`.
    pub(crate) fn is_subscribed(&self, id: u64, channel: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&id).is_some_and(|e| {
            let subscriptions = e.subscriptions.lock();
            !subscriptions.is_closed() && subscriptions.contains(channel)
        })
    }

    /// Replaces a session's identity after an in-band refresh (same subject).
    pub(crate) fn update_identity(&self, id: u64, identity: &Arc<Identity>) {
        if let Some(entry) = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
            entry.identity = Arc::clone(identity);
        }
    }

    pub(crate) fn remove(&self, id: u64) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Ends one session; false when there is no such session.
    pub(crate) fn disconnect_session(&self, id: u64, disconnect: Disconnect) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&id).map(|e| e.control.request(disconnect)).is_some()
    }

    /// Sends `signal` to every live session.
    pub(crate) fn signal_all(&self, signal: Signal) {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in sessions.values() {
            entry.control.signal(signal);
        }
    }

    /// Sends `signal` to each session of `ids` that is still live.
    pub(crate) fn signal_each(&self, ids: &[u64], signal: Signal) {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in ids.iter().filter_map(|id| sessions.get(id)) {
            entry.control.signal(signal);
        }
    }

    /// Ends every session of `user`; returns how many.
    pub(crate) fn disconnect_user(&self, user: &str, disconnect: Disconnect) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.values().filter(|e| e.identity.subject == user).map(|e| e.control.request(disconnect)).count()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// An identity of `subject` (also for the alarms' tests).
    pub(in crate::session) fn identity(subject: &str) -> Arc<Identity> {
        Arc::new(Identity {
            subject: subject.into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            expires_at: 0,
            issued_at: None,
            token_id: None,
            claims: Default::default(),
        })
    }

    /// A session's link from 127.0.0.1 (also for the alarms' tests).
    pub(in crate::session) fn link(id: u64, outbox: Outbox) -> Arc<Link> {
        let info = HandshakeInfo {
            client_ip: IpAddr::from([127, 0, 0, 1]),
            origin: None,
            user_agent: None,
            forwarded_headers: Vec::new(),
        };
        Link::new(id, outbox, info)
    }

    #[test]
    fn signals_are_taken_once_requests_stay_and_a_refresh_releases_the_old_identity() {
        let registry = Registry::default();
        let old = identity("alice");
        let link = link(7, Outbox::new(8, 1024, Arc::new(Stats::default())));
        registry.register(&old, &link);
        let control = &link.control;
        assert!(control.wait().now_or_never().is_none());
        registry.signal_all(Signal::Reload);
        registry.signal_all(Signal::Revocation);
        let wake = control.wait().now_or_never().expect("signalled");
        assert!(wake.has(Signal::Reload) && wake.has(Signal::Revocation) && !wake.has(Signal::Shutdown));
        assert!(wake.requested.is_none());
        assert!(control.wait().now_or_never().is_none(), "signals are taken by the wake");

        registry.update_identity(7, &identity("alice"));
        assert_eq!(Arc::strong_count(&old), 1, "the registry let go of the old identity");
        assert_eq!(registry.disconnect_user("bob", Disconnect::DisconnectedByServer), 0);
        assert_eq!(registry.disconnect_user("alice", Disconnect::DisconnectedByServer), 1);
        for _ in 0..2 {
            let wake = control.wait().now_or_never().expect("requested");
            assert_eq!(wake.requested, Some(Disconnect::DisconnectedByServer));
        }
        registry.remove(7);
        assert!(!registry.disconnect_session(7, Disconnect::DisconnectedByServer));
    }

    #[test]
    fn server_made_subscriptions_respect_the_cap_and_a_closed_set() {
        let registry = Registry::default();
        let stats = Arc::new(Stats::default());
        let hub = Hub::new(Arc::clone(&stats));
        let alice = identity("alice");
        let links: Vec<Arc<Link>> = (0..3).map(|id| link(id, Outbox::new(8, 1024, Arc::clone(&stats)))).collect();
        for link in &links {
            registry.register(&alice, link);
        }
        links[1].subscriptions.lock().insert("other", Origin::Client);
        links[2].subscriptions.lock().close();
        let reach =
            registry.subscribe(Local::User("alice"), "news", SlowConsumerPolicy::Disconnect, 1, &hub, |_, _| {});
        assert_eq!(reach, Reach { matched: 3, changed: 1, at_limit: 1 });
        assert_eq!(links[0].outbox.drain(8)[0].as_str(), r#"{"type":"subscribed","channel":"news","by":"server"}"#);
        assert_eq!(hub.publish("news", &Utf8Bytes::from("m")), 1);
        let listed = registry.list(Some("alice"), Some(0), 10);
        assert_eq!(listed.iter().map(|l| l.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(registry.list(None, None, 1)[0].subscriptions, ["news"]);
        let reach = registry.unsubscribe(Local::Session(0), "news", &hub, |_, _| {});
        assert_eq!(reach.changed, 1);
        assert_eq!(hub.channel_count(), 0);
        let pushed = registry.send(Local::Session(9), &Utf8Bytes::from("p"), &stats);
        assert_eq!(pushed.matched, 0);
    }
}
