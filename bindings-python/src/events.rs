//! Delivery of core events to the `on_event` handler.
//!
//! The core calls `Hooks::on_event` on one of its runtime threads and asks that it never block.
//! Taking the GIL there could, so events are queued (bounded, dropped with a warning when full,
//! like the core's own queue) and one thread per server, `wsguard-events`, calls the handler in
//! order with the GIL held for the call only. A coroutine handler is scheduled on the server's
//! loop and not awaited; its exceptions are logged.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use serde_json::Value;

use crate::handler::{EventLoop, is_coroutine, log_exception};
use crate::hooks::Handlers;
use crate::json;

/// The name of the dispatcher thread (a handler running on it must not wait for it to end).
pub(crate) const THREAD_NAME: &str = "wsguard-events";

/// The producer side, held by the hooks.
pub(crate) struct EventQueue {
    sender: Mutex<Option<SyncSender<Value>>>,
}

impl EventQueue {
    /// Queues an event without blocking; drops it (with a warning) when the queue is full.
    pub(crate) fn push(&self, event: Value) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = sender.as_ref() else { return };
        if let Err(TrySendError::Full(_)) = sender.try_send(event) {
            tracing::warn!(target: "wsguard::python", "on_event handler is behind: event dropped");
        }
    }

    /// No more events: the dispatcher drains what is queued, then ends.
    pub(crate) fn close(&self) {
        self.sender.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// The dispatcher thread.
pub(crate) struct Dispatcher {
    thread: Option<JoinHandle<()>>,
    finished: Receiver<()>,
}

impl Dispatcher {
    /// Waits up to `limit` for the thread to deliver what was queued and end. A handler that
    /// never returns is left behind rather than hanging `stop`.
    pub(crate) fn finish(mut self, limit: Duration) {
        if std::thread::current().name() == Some(THREAD_NAME) {
            return;
        }
        match self.finished.recv_timeout(limit) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(target: "wsguard::python", "on_event handler still running at stop; not waiting for it");
            }
        }
    }
}

/// Starts the dispatcher for `handlers` with a queue of `capacity` events.
pub(crate) fn spawn(
    handlers: Arc<Handlers>,
    event_loop: EventLoop,
    capacity: usize,
) -> std::io::Result<(Arc<EventQueue>, Dispatcher)> {
    let (sender, receiver) = mpsc::sync_channel::<Value>(capacity.max(1));
    let (done, finished) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
        for event in receiver {
            let Some(handler) = handlers.on_event() else { continue };
            // `try_attach`: the interpreter may be finalizing if the host never stopped the server.
            let delivered = Python::try_attach(|py| deliver(py, &handler, event_loop.as_deref(), &event));
            if delivered.is_none() {
                break;
            }
        }
        let _ = done.send(());
    })?;
    let queue = Arc::new(EventQueue { sender: Mutex::new(Some(sender)) });
    Ok((queue, Dispatcher { thread: Some(thread), finished }))
}

fn deliver(py: Python<'_>, handler: &Py<PyAny>, event_loop: Option<&Py<PyAny>>, event: &Value) {
    let result = json::to_py(py, event).and_then(|event| handler.bind(py).call1((event,)));
    match result {
        Ok(obj) if is_coroutine(&obj).unwrap_or(false) => {
            if let Err(e) = schedule(py, obj, event_loop) {
                log_exception(py, "on_event", &e);
            }
        }
        Ok(_) => {}
        Err(e) => log_exception(py, "on_event", &e),
    }
}

/// Runs an `async def on_event` on the server's loop, logging its exception if it raises.
fn schedule(py: Python<'_>, coroutine: Bound<'_, PyAny>, event_loop: Option<&Py<PyAny>>) -> PyResult<()> {
    let Some(event_loop) = event_loop else {
        coroutine.call_method0("close")?;
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "a coroutine handler needs a server started from asyncio (start_async() or serve())",
        ));
    };
    let asyncio = py.import("asyncio")?;
    let future = match asyncio.call_method1("run_coroutine_threadsafe", (&coroutine, event_loop.bind(py))) {
        Ok(future) => future,
        Err(e) => {
            let _ = coroutine.call_method0("close");
            return Err(e);
        }
    };
    let on_done = PyCFunction::new_closure(
        py,
        None,
        None,
        |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let future = args.get_item(0)?;
            if !future.call_method0("cancelled")?.is_truthy()?
                && let Err(e) = future.call_method0("result")
            {
                log_exception(args.py(), "on_event", &e);
            }
            Ok(())
        },
    )?;
    future.call_method1("add_done_callback", (on_done,))?;
    Ok(())
}
