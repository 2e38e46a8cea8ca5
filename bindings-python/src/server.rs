//! `Server` (exported as `wsguard._native.Server`, subclassed by `wsguard.Server`): a core
//! `EmbeddedServer` plus the Python handlers its hooks call.
//!
//! Lifecycle: `Idle -> Starting -> Running -> Stopping -> Idle`. The state lock is only ever
//! held for a moment and never across a GIL release: `start` and `stop` leave a marker state,
//! release the lock, then run the core's blocking call with the GIL released.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use wsguard::host::{self, DisconnectTarget};
use wsguard::{Config, EmbeddedServer, ServerHandle};

use crate::errors::{not_running, to_py};
use crate::handler::EventLoop;
use crate::hooks::{Handlers, PyHooks, Slot};
use crate::{config, json};

/// How often `serve_forever` wakes up to run Python's signal handlers (Ctrl-C).
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

enum State {
    Idle,
    Starting,
    Running(Box<EmbeddedServer>),
    Stopping(ServerHandle),
}

/// What a `Server` object holds; shared with the exit registry.
struct Inner {
    /// The configuration the next `start` uses (the last one applied by `reload`).
    config: Mutex<Config>,
    handlers: Arc<Handlers>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Servers that may be running, stopped by `stop_all` when the interpreter exits (registered
/// with `atexit` by the package), so no runtime thread outlives the interpreter.
static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

impl Inner {
    fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, state: State) {
        *self.lock() = state;
        self.changed.notify_all();
    }

    /// The control handle while the server runs.
    fn handle(&self, py: Python<'_>) -> PyResult<ServerHandle> {
        match &*self.lock() {
            State::Running(server) => Ok(server.handle().clone()),
            State::Stopping(handle) => Ok(handle.clone()),
            State::Idle | State::Starting => Err(not_running(py)),
        }
    }

    fn start(self: &Arc<Self>, py: Python<'_>, event_loop: EventLoop) -> PyResult<()> {
        {
            let mut state = self.lock();
            match &*state {
                State::Running(_) => return Ok(()),
                State::Starting | State::Stopping(_) => {
                    return Err(PyErr::new::<pyo3::exceptions::PyRuntimeError, _>(
                        "the server is starting or stopping",
                    ));
                }
                State::Idle => *state = State::Starting,
            }
        }
        let started = self.start_idle(py, event_loop);
        match started {
            Ok(server) => {
                self.set(State::Running(Box::new(server)));
                let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
                live.retain(|w| w.strong_count() > 0);
                live.push(Arc::downgrade(self));
                Ok(())
            }
            Err(e) => {
                self.set(State::Idle);
                Err(e)
            }
        }
    }

    /// Starts the core's server; on a handler's thread the core refuses with `wrong_thread`.
    fn start_idle(&self, py: Python<'_>, event_loop: EventLoop) -> PyResult<EmbeddedServer> {
        if event_loop.is_none() {
            let inspect = py.import("inspect")?;
            for handler in self.handlers.all() {
                if inspect.call_method1("iscoroutinefunction", (handler.bind(py),))?.is_truthy()? {
                    return Err(PyTypeError::new_err(
                        "coroutine handlers run on the event loop that starts the server: \
                         use `await server.start_async()` or `async with wsguard.serve(...)`",
                    ));
                }
            }
        }
        crate::refresh_log_levels();
        let config = self.config();
        let hooks = Arc::new(PyHooks { handlers: Arc::clone(&self.handlers), event_loop });
        // Worker threads: 0 leaves the choice to `server.worker_threads`.
        py.detach(move || EmbeddedServer::start(config, hooks, None, 0)).map_err(|e| to_py(py, e))
    }

    fn stop(&self, py: Python<'_>, grace: Option<Duration>) -> PyResult<()> {
        if host::is_server_thread() {
            // Called from a handler, where the core refuses to block (`wrong_thread`): start the
            // shutdown; `serve_forever` or a later `stop` from the host's own thread completes it.
            if let Ok(handle) = self.handle(py) {
                match grace {
                    Some(grace) => handle.shutdown_within(grace),
                    None => handle.shutdown(),
                }
            }
            return Ok(());
        }
        let stopping = {
            let mut state = self.lock();
            loop {
                match std::mem::replace(&mut *state, State::Idle) {
                    State::Running(server) => {
                        *state = State::Stopping(server.handle().clone());
                        break Some(server);
                    }
                    State::Idle => break None,
                    other => {
                        // Another thread is starting or stopping it: wait for that to finish.
                        *state = other;
                        drop(state);
                        py.detach(|| {
                            let state = self.lock();
                            let _ = self.changed.wait_timeout(state, SIGNAL_CHECK_INTERVAL);
                        });
                        state = self.lock();
                    }
                }
            }
        };
        let Some(mut server) = stopping else { return Ok(()) };
        let result = py.detach(move || server.stop(grace));
        self.set(State::Idle);
        result.map_err(|e| to_py(py, e))
    }

    fn serve_forever(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        if matches!(&*self.lock(), State::Idle) {
            self.start(py, None)?;
        }
        loop {
            let shutdown_requested = py.detach(|| {
                let state = self.lock();
                let (state, _) =
                    self.changed.wait_timeout(state, SIGNAL_CHECK_INTERVAL).unwrap_or_else(PoisonError::into_inner);
                match &*state {
                    State::Idle => None,
                    State::Running(server) => Some(server.handle().is_shutting_down()),
                    State::Starting | State::Stopping(_) => Some(false),
                }
            });
            match shutdown_requested {
                None => return Ok(()),
                Some(true) => return self.stop(py, None),
                Some(false) => {}
            }
            if let Err(interrupted) = py.check_signals() {
                self.stop(py, None)?;
                return Err(interrupted);
            }
        }
    }
}

/// A wsguard server. See `wsguard.Server` for the documented, typed interface.
#[pyclass(name = "Server", module = "wsguard._native", subclass, frozen)]
pub(crate) struct PyServer {
    inner: Arc<Inner>,
}

#[pymethods]
impl PyServer {
    #[new]
    fn new(config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let config = config::load(config)?;
        Ok(PyServer {
            inner: Arc::new(Inner {
                config: Mutex::new(config),
                handlers: Arc::default(),
                state: Mutex::new(State::Idle),
                changed: Condvar::new(),
            }),
        })
    }

    /// Binds and starts serving on the server's own threads; returns once listening. Coroutine
    /// handlers run on `event_loop`. Idempotent while running.
    #[pyo3(signature = (event_loop = None))]
    fn start(&self, py: Python<'_>, event_loop: Option<Py<PyAny>>) -> PyResult<()> {
        self.inner.start(py, event_loop.map(Arc::new))
    }

    /// Closes every session with 1001, waits up to `grace_secs` (default
    /// `server.shutdown_grace_secs`) and stops the threads. Idempotent.
    #[pyo3(signature = (grace_secs = None))]
    fn stop(&self, py: Python<'_>, grace_secs: Option<f64>) -> PyResult<()> {
        let grace = grace_secs
            .map(|secs| {
                Duration::try_from_secs_f64(secs).map_err(|e| PyValueError::new_err(format!("grace_secs: {e}")))
            })
            .transpose()?;
        self.inner.stop(py, grace)
    }

    /// Starts the server if needed and blocks until it is stopped (from another thread, from a
    /// handler, or by Ctrl-C, which stops it and raises `KeyboardInterrupt`).
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.serve_forever(py)
    }

    /// True between a successful `start` and `stop`.
    #[getter]
    fn is_running(&self) -> bool {
        matches!(&*self.inner.lock(), State::Running(_))
    }

    /// The bound port (useful with port 0).
    #[getter]
    fn port(&self, py: Python<'_>) -> PyResult<u16> {
        Ok(self.inner.handle(py)?.local_addr().port())
    }

    /// The bound address as `(host, port)`.
    #[getter]
    fn address(&self, py: Python<'_>) -> PyResult<(String, u16)> {
        let addr: SocketAddr = self.inner.handle(py)?.local_addr();
        Ok((addr.ip().to_string(), addr.port()))
    }

    #[pyo3(name = "_set_rpc_handler")]
    fn set_rpc_handler(&self, method: String, handler: Py<PyAny>) {
        self.inner.handlers.set(Slot::Rpc(method), Arc::new(handler));
    }

    #[pyo3(name = "_set_authenticate_handler")]
    fn set_authenticate_handler(&self, handler: Py<PyAny>) {
        self.inner.handlers.set(Slot::Authenticate, Arc::new(handler));
    }

    #[pyo3(name = "_set_authorize_handler")]
    fn set_authorize_handler(&self, handler: Py<PyAny>) {
        self.inner.handlers.set(Slot::Authorize, Arc::new(handler));
    }

    #[pyo3(name = "_set_event_handler")]
    fn set_event_handler(&self, handler: Py<PyAny>) {
        self.inner.handlers.set(Slot::OnEvent, Arc::new(handler));
    }

    /// Publishes `payload` (a JSON object) to every subscriber of `channel`; returns how many
    /// sessions it was queued for.
    fn publish(&self, py: Python<'_>, channel: &str, payload: &Bound<'_, PyAny>) -> PyResult<usize> {
        let payload = json::to_value(payload)?;
        let handle = self.inner.handle(py)?;
        py.detach(|| handle.publish(channel, &payload)).map_err(|e| to_py(py, e))
    }

    /// Closes one session (`session_id`) or every session of a user (`user`, the `sub` claim)
    /// with 4001; returns how many were closed. Not exactly one: `InvalidArgumentError`.
    #[pyo3(signature = (session_id = None, user = None))]
    fn disconnect(&self, py: Python<'_>, session_id: Option<u64>, user: Option<&str>) -> PyResult<usize> {
        let target = host::disconnect_target(session_id, user).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        match target {
            DisconnectTarget::Session(id) => {
                py.detach(|| handle.disconnect_session(id)).map(|()| 1).map_err(|e| to_py(py, e))
            }
            DisconnectTarget::User(user) => Ok(py.detach(|| handle.disconnect_user(&user))),
        }
    }

    /// Sends `payload` (a dict) as a `push` frame to the sessions of `session_id=` (on `node=`,
    /// this node by default) or `user=` (on every node); returns the core's result dict (`node`,
    /// `matched`, `changed`, `at_limit`, `is_forwarded`).
    #[pyo3(signature = (payload, *, session_id = None, user = None, node = None))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'_, PyAny>,
        session_id: Option<u64>,
        user: Option<&str>,
        node: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = json::to_value(payload)?;
        let target = host::target(session_id, user, node).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| handle.send(&target, &payload)))
    }

    /// Closes the sessions of `session_id=` or `user=` with close `code` (4000-4999 except
    /// wsguard's own) and `reason` (at most 123 bytes); returns the core's result dict.
    #[pyo3(signature = (code, reason = "", *, session_id = None, user = None, node = None))]
    fn disconnect_with<'py>(
        &self,
        py: Python<'py>,
        code: u16,
        reason: &str,
        session_id: Option<u64>,
        user: Option<&str>,
        node: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let target = host::target(session_id, user, node).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| handle.disconnect_with(&target, code, reason)))
    }

    /// Subscribes the sessions of `session_id=` or `user=` to `channel` (rules bypassed, marked
    /// server-made); returns the core's result dict.
    #[pyo3(signature = (channel, *, session_id = None, user = None, node = None))]
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        channel: &str,
        session_id: Option<u64>,
        user: Option<&str>,
        node: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let target = host::target(session_id, user, node).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| handle.subscribe(&target, channel)))
    }

    /// Unsubscribes the sessions of `session_id=` or `user=` from `channel`; returns the core's
    /// result dict.
    #[pyo3(signature = (channel, *, session_id = None, user = None, node = None))]
    fn unsubscribe<'py>(
        &self,
        py: Python<'py>,
        channel: &str,
        session_id: Option<u64>,
        user: Option<&str>,
        node: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let target = host::target(session_id, user, node).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| handle.unsubscribe(&target, channel)))
    }

    /// One page of this node's sessions (of `user=` only, when given): a dict with `node`,
    /// `sessions` and `next_cursor`.
    #[pyo3(signature = (*, user = None, cursor = None, limit = None))]
    fn sessions<'py>(
        &self,
        py: Python<'py>,
        user: Option<&str>,
        cursor: Option<u64>,
        limit: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = host::page_limit(limit).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| handle.sessions(user, cursor, limit)))
    }

    /// One page of this node's channels with subscribers (matching `pattern=`, when given): a
    /// dict with `node`, `channels` and `next_cursor`.
    #[pyo3(signature = (*, pattern = None, cursor = None, limit = None))]
    fn channels<'py>(
        &self,
        py: Python<'py>,
        pattern: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = host::page_limit(limit).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| handle.channels(pattern, cursor, limit)))
    }

    /// One page of `channel`'s kept publications: a dict with `offset` and `epoch` (the
    /// channel's position) and `publications` (each `offset`, `payload`). `since_offset=` and
    /// `since_epoch=` together name a position (oldest first after it, or newest first before it
    /// with `newest_first=True`); `limit=` 1-1000 (default 100). The host is trusted: the rule's
    /// `history` requirement does not apply.
    #[pyo3(signature = (channel, *, since_offset = None, since_epoch = None, limit = None, newest_first = false))]
    fn history<'py>(
        &self,
        py: Python<'py>,
        channel: &str,
        since_offset: Option<u64>,
        since_epoch: Option<&str>,
        limit: Option<u64>,
        newest_first: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| host::history(&handle, channel, since_offset, since_epoch, limit, newest_first)))
    }

    /// One page of `channel`'s members, cluster-wide: a dict with `members` (each `user`,
    /// `sessions`, and `claims` when the rule lists any) and `next` (pass it as `after=`).
    /// `limit=` 1-1000 (default 100). Blocks on the server's runtime with the GIL released (it
    /// may wait for Redis); refused in a handler that runs on the server's threads.
    #[pyo3(signature = (channel, *, limit = None, after = None))]
    fn presence<'py>(
        &self,
        py: Python<'py>,
        channel: &str,
        limit: Option<u64>,
        after: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| host::presence(&handle, channel, limit, after)))
    }

    /// `channel`'s presence counts, cluster-wide: a dict with `users` and `clients`. Blocking as
    /// `presence`.
    fn presence_stats<'py>(&self, py: Python<'py>, channel: &str) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.handle(py)?;
        result(py, py.detach(|| host::presence_stats(&handle, channel)))
    }

    /// Revokes tokens by `jti`, by subject (`sub`, tokens issued until now) or by time
    /// (`issued_before`, seconds since the epoch): matching sessions close with 4501 and matching
    /// tokens are refused from now on. Not exactly one: `InvalidArgumentError`.
    #[pyo3(signature = (jti = None, sub = None, issued_before = None))]
    fn revoke(&self, py: Python<'_>, jti: Option<&str>, sub: Option<&str>, issued_before: Option<u64>) -> PyResult<()> {
        let revocation = host::revocation(jti, sub, issued_before).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        py.detach(|| handle.revoke(revocation));
        Ok(())
    }

    /// Applies a new configuration (same forms as the constructor) without dropping a
    /// connection. Everything is checked first; on any problem nothing changes and
    /// `ConfigError` lists every problem (keys that need a restart included).
    fn reload(&self, py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<()> {
        let config = config::parse(config)?;
        let handle = self.inner.handle(py)?;
        let applied = config.clone();
        py.detach(|| handle.reload(config)).map_err(|e| crate::errors::to_py(py, e.into()))?;
        *self.inner.config.lock().unwrap_or_else(PoisonError::into_inner) = applied;
        Ok(())
    }

    /// The bans in force, each as `{"target": {"kind": "ip"|"user", "value": ...}, "reason": ...,
    /// "remaining_secs": ...}`.
    fn bans<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.handle(py)?;
        let bans = py.detach(|| serde_json::to_value(handle.bans()));
        let bans = bans.map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        json::to_py(py, &bans)
    }

    /// Bans `ip=` or `user=` (exactly one) for `secs` seconds; returns False when the target is
    /// exempt (`abuse.exempt`). Open sessions are not closed. A wrong target or length:
    /// `InvalidArgumentError`.
    #[pyo3(signature = (*, ip=None, user=None, secs))]
    fn ban(&self, py: Python<'_>, ip: Option<&str>, user: Option<&str>, secs: f64) -> PyResult<bool> {
        let target = host::ban_target(ip, user).map_err(|e| to_py(py, e))?;
        let duration = host::ban_duration(secs).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        Ok(py.detach(|| handle.ban(target, duration)))
    }

    /// Lifts the ban of `ip=` or `user=` (exactly one); returns whether there was one.
    #[pyo3(signature = (*, ip=None, user=None))]
    fn lift_ban(&self, py: Python<'_>, ip: Option<&str>, user: Option<&str>) -> PyResult<bool> {
        let target = host::ban_target(ip, user).map_err(|e| to_py(py, e))?;
        let handle = self.inner.handle(py)?;
        Ok(py.detach(|| handle.lift_ban(&target)))
    }

    /// A snapshot of the server's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.inner.handle(py)?;
        let snapshot = py.detach(|| serde_json::to_value(handle.stats()));
        let snapshot = snapshot.map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        json::to_py(py, &snapshot)
    }
}

/// A core result as Python values (its JSON form), or its error.
fn result<'py>(py: Python<'py>, outcome: Result<impl serde::Serialize, wsguard::Error>) -> PyResult<Bound<'py, PyAny>> {
    let value = outcome.map_err(|e| to_py(py, e))?;
    let value = serde_json::to_value(value).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    json::to_py(py, &value)
}

/// Stops every server still running (registered with `atexit` by the package).
#[pyfunction]
pub(crate) fn stop_all(py: Python<'_>) -> PyResult<()> {
    let live: Vec<Arc<Inner>> = std::mem::take(&mut *LIVE.lock().unwrap_or_else(PoisonError::into_inner))
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for inner in live {
        inner.stop(py, None)?;
    }
    Ok(())
}
