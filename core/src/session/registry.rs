//! Live sessions by id, so the server side can disconnect a session or every session of a user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::disconnect::Disconnect;

/// A request, from outside the session task, to end it.
#[derive(Debug, Default)]
pub(crate) struct SessionControl {
    requested: Mutex<Option<Disconnect>>,
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

    /// Resolves with the first request.
    pub(crate) async fn wait(&self) -> Disconnect {
        loop {
            let notified = self.notify.notified();
            if let Some(d) = *self.requested.lock().unwrap_or_else(PoisonError::into_inner) {
                return d;
            }
            notified.await;
        }
    }
}

struct Entry {
    user: String,
    control: Arc<SessionControl>,
}

/// Every live session.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    pub(crate) fn register(&self, id: u64, user: &str) -> Arc<SessionControl> {
        let control = Arc::new(SessionControl::default());
        let entry = Entry { user: user.to_string(), control: Arc::clone(&control) };
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).insert(id, entry);
        control
    }

    pub(crate) fn remove(&self, id: u64) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Ends one session; false when there is no such session.
    pub(crate) fn disconnect_session(&self, id: u64, disconnect: Disconnect) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&id).map(|e| e.control.request(disconnect)).is_some()
    }

    /// Ends every session of `user`; returns how many.
    pub(crate) fn disconnect_user(&self, user: &str, disconnect: Disconnect) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.values().filter(|e| e.user == user).map(|e| e.control.request(disconnect)).count()
    }
}
