//! The native module `wsguard._native`: a thin adapter from Python to the wsguard core.
//!
//! The curated, typed package `wsguard` (bindings-python/python/wsguard) re-exports what is here
//! and adds the asyncio forms. Everything this crate does is conversion: Python input becomes the
//! core's inputs (`wsguard::host`: the config input, the control operations' arguments) and JSON
//! values; the core's `Identity`, `Event`, stats and errors become Python objects; Python
//! callables become the core's `Hooks`. It owns no default, no validation and no security check:
//! the core decides, and its `ErrorCode` reaches Python as `WsguardError.code` / `.code_name`.
//!
//! Threads and the GIL (STYLE.md, "Host callbacks never stall the core"):
//!
//! - the server runs on the tokio runtime its `EmbeddedServer` owns; `start` and `stop` block only
//!   their caller, with the GIL released;
//! - a synchronous handler runs on the runtime's blocking pool (`wsguard::hooks::run_blocking`) and
//!   holds the GIL only for the call; a coroutine handler runs on the asyncio loop that started
//!   the server, and its result comes back through a oneshot channel, so no thread waits for it;
//! - events reach `on_event` like any other hook call: the core's one bounded queue awaits each
//!   handler call, so a slow handler shows up as dropped events in the core's counters;
//! - core `tracing` events reach Python's `logging` (logger `wsguard`) through pyo3-log. That is
//!   the only logger this library installs; it never installs a tracing subscriber.

mod config;
mod errors;
mod handler;
mod hooks;
mod json;
mod server;
mod types;

use std::sync::OnceLock;

use pyo3::prelude::*;

/// Clears pyo3-log's cache of Python logger levels, so that logging configured after import is
/// honoured (called at each `Server.start`).
static LOG_RESET: OnceLock<pyo3_log::ResetHandle> = OnceLock::new();

pub(crate) fn refresh_log_levels() {
    if let Some(handle) = LOG_RESET.get() {
        handle.reset();
    }
}

/// `wsguard._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Another extension in this process has its own `log` globals, so this only fails when this
    // module is initialised twice (sub-interpreters); the first bridge then stays in place.
    if let Ok(handle) = pyo3_log::try_init() {
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<server::PyServer>()?;
    m.add_class::<types::PyIdentity>()?;
    m.add_class::<types::PySession>()?;
    m.add_class::<types::PyHandshakeInfo>()?;
    m.add_class::<types::PyAuthorizeRequest>()?;
    m.add_function(wrap_pyfunction!(server::stop_all, m)?)?;
    Ok(())
}
