//! Calling one Python handler from the core, sync or async, without stalling the core.
//!
//! The handler is called on tokio's blocking pool (`wsguard::hooks::run_blocking`) with the GIL
//! taken for the call only. When it returns a coroutine, the coroutine is handed to the asyncio
//! loop that started the server (`asyncio.run_coroutine_threadsafe`) and a done-callback sends
//! the converted result through a oneshot channel: the core awaits the channel, so no thread
//! waits on the loop. The core's time box drops the future when the handler is too slow; the
//! drop cancels the coroutine. A synchronous handler cannot be interrupted: it keeps its
//! blocking-pool thread until it returns, and its late answer is discarded.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use tokio::sync::oneshot;
use wsguard::hooks::{HookFuture, run_blocking};

/// A registered Python callable. `Arc` so the core's threads can hold it without the GIL.
pub(crate) type Handler = Arc<Py<PyAny>>;

/// The asyncio loop coroutine handlers run on (the one that started the server), if any.
pub(crate) type EventLoop = Option<Arc<Py<PyAny>>>;

static ISCOROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static RUN_COROUTINE_THREADSAFE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn asyncio_fn<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, "asyncio", name)
}

/// True when `obj` is a coroutine object (what an `async def` handler returns).
pub(crate) fn is_coroutine(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    asyncio_fn(obj.py(), &ISCOROUTINE, "iscoroutine")?.call1((obj,))?.is_truthy()
}

/// Logs a handler's exception with its traceback (logger `wsguard.python`).
pub(crate) fn log_exception(py: Python<'_>, hook: &str, error: &PyErr) {
    let traceback = error.traceback(py).and_then(|tb| tb.format().ok()).unwrap_or_default();
    tracing::warn!(target: "wsguard::python", hook, "handler raised: {traceback}{error}");
}

/// The message a raising handler leaves: `str(exc)`, or the class name when that is empty.
pub(crate) fn exception_message(py: Python<'_>, error: &PyErr) -> String {
    let value = error.value(py);
    match value.str().map(|s| s.to_string()) {
        Ok(text) if !text.is_empty() => text,
        _ => value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "error".into()),
    }
}

/// Turns what the handler returned (or raised) into the core's answer.
pub(crate) type Convert<T> = Arc<dyn for<'py> Fn(Python<'py>, PyResult<Bound<'py, PyAny>>) -> T + Send + Sync>;

/// The arguments of one call, built with the GIL held.
pub(crate) type Args = Box<dyn for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send>;

enum Started<T> {
    Done(T),
    Awaiting(oneshot::Receiver<T>, CancelOnDrop),
}

/// Calls `handler(*args)` and converts its answer; `fallback` is the fail-closed answer when the
/// call cannot complete (the blocking pool is gone, the loop dropped the coroutine).
pub(crate) fn call<T: Clone + Send + 'static>(
    handler: Handler,
    event_loop: EventLoop,
    args: Args,
    convert: Convert<T>,
    fallback: T,
) -> HookFuture<T> {
    let on_failure = fallback.clone();
    let started = run_blocking(
        move || {
            Python::attach(|py| {
                let result = args(py).and_then(|args| handler.bind(py).call1(args));
                match result {
                    Ok(obj) if is_coroutine(&obj).unwrap_or(false) => {
                        match schedule(py, obj, event_loop.as_deref(), Arc::clone(&convert)) {
                            Ok((receiver, guard)) => Started::Awaiting(receiver, guard),
                            Err(e) => Started::Done(convert(py, Err(e))),
                        }
                    }
                    other => Started::Done(convert(py, other)),
                }
            })
        },
        Started::Done(fallback),
    );
    Box::pin(async move {
        match started.await {
            Started::Done(answer) => answer,
            Started::Awaiting(receiver, mut guard) => {
                let answer = receiver.await.unwrap_or(on_failure);
                guard.disarm();
                answer
            }
        }
    })
}

/// Runs `coroutine` on the server's loop; the returned receiver gets the converted result.
fn schedule<T: Send + 'static>(
    py: Python<'_>,
    coroutine: Bound<'_, PyAny>,
    event_loop: Option<&Py<PyAny>>,
    convert: Convert<T>,
) -> PyResult<(oneshot::Receiver<T>, CancelOnDrop)> {
    let Some(event_loop) = event_loop else {
        coroutine.call_method0("close")?;
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "a coroutine handler needs a server started from asyncio (start_async() or serve())",
        ));
    };
    let future = match asyncio_fn(py, &RUN_COROUTINE_THREADSAFE, "run_coroutine_threadsafe")?
        .call1((&coroutine, event_loop.bind(py)))
    {
        Ok(future) => future,
        Err(e) => {
            // The loop is closed: the coroutine will never run.
            let _ = coroutine.call_method0("close");
            return Err(e);
        }
    };
    let (sender, receiver) = oneshot::channel();
    let sender = Mutex::new(Some(sender));
    let on_done = PyCFunction::new_closure(
        py,
        None,
        None,
        move |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let future = args.get_item(0)?;
            // Cancelled because the core gave up waiting: nobody listens any more.
            if future.call_method0("cancelled")?.is_truthy()? {
                return Ok(());
            }
            let answer = convert(args.py(), future.call_method0("result"));
            if let Some(sender) = sender.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = sender.send(answer);
            }
            Ok(())
        },
    )?;
    future.call_method1("add_done_callback", (on_done,))?;
    Ok((receiver, CancelOnDrop(Some(future.unbind()))))
}

/// Cancels a scheduled coroutine whose answer is no longer awaited (the core's timeout fired).
struct CancelOnDrop(Option<Py<PyAny>>);

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(future) = self.0.take() else { return };
        // Dropped on a runtime thread: take the GIL on the blocking pool, never here.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || {
                Python::try_attach(|py| {
                    let _ = future.bind(py).call_method0("cancel");
                })
            });
        }
    }
}
