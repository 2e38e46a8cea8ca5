//! Live sessions by id, so the server side can disconnect a session or every session of a user.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::Disconnect;
use crate::auth::Identity;

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

/// Events for one session from outside its task: a request to end it, and the server-wide
/// signals.
#[derive(Debug, Default)]
pub(crate) struct SessionControl {
    requested: Mutex<Option<Disconnect>>,
    signals: AtomicU8,
    notify: Notify,
}

impl SessionControl {
    /// Asks the session to end; the first request wins.
    pub(crate) fn request(&self, disconnect: Disconnect) {
        let mut requested = self.requested.lock().unwrap_or_else(PoisonError::into_inner);
        if requested.is_none() {
            *requested = Some(disconnect);
            self.notify.notify_one();
        }
    }

    /// Tells the session about a server-wide change.
    pub(crate) fn signal(&self, signal: Signal) {
        self.signals.fetch_or(signal as u8, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Resolves once a request is pending or a signal has arrived (the signals are taken).
    pub(crate) async fn wait(&self) -> Wake {
        loop {
            let notified = self.notify.notified();
            let signals = self.signals.swap(0, Ordering::AcqRel);
            let requested = *self.requested.lock().unwrap_or_else(PoisonError::into_inner);
            if requested.is_some() || signals != 0 {
                return Wake { requested, signals };
            }
            notified.await;
        }
    }
}

struct Entry {
    /// The session's identity, shared (its subject names the user).
    identity: Arc<Identity>,
    control: Arc<SessionControl>,
}

/// Every live session.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    pub(crate) fn register(&self, id: u64, identity: &Arc<Identity>) -> Arc<SessionControl> {
        let control = Arc::new(SessionControl::default());
        let entry = Entry { identity: Arc::clone(identity), control: Arc::clone(&control) };
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).insert(id, entry);
        control
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

    /// Ends every session of `user`; returns how many.
    pub(crate) fn disconnect_user(&self, user: &str, disconnect: Disconnect) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.values().filter(|e| e.identity.subject == user).map(|e| e.control.request(disconnect)).count()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn identity(subject: &str) -> Arc<Identity> {
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

    #[test]
    fn signals_are_taken_once_requests_stay_and_a_refresh_releases_the_old_identity() {
        let registry = Registry::default();
        let old = identity("alice");
        let control = registry.register(7, &old);
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
}
