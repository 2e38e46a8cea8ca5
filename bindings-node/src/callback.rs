//! `JsCallback`: the one way this binding calls a JavaScript function from the core's threads.
//!
//! It owns a napi v3 `ThreadsafeFunction` and turns each call into a future: the arguments are
//! converted on the JavaScript thread, the function runs there, and its answer comes back through a
//! oneshot channel. A returned Promise is awaited (its settlement travels back the same way), so
//! handlers and event listeners may be plain or `async` functions, and a call is over only once
//! the function has run and its Promise settled. A throw, a rejection or an answer of the wrong
//! type becomes `Err(message)`: it never reaches Node's uncaught-exception path, and the hook code
//! in `hooks.rs` turns it into the core's fail-closed answer.
//!
//! Calls are queued with `NonBlocking` on an unbounded threadsafe-function queue: the core's
//! threads never wait for Node's event loop to accept a call, and the JavaScript side of a call
//! never waits for the core. Backpressure is the core's (its time boxes and its one bounded event
//! queue).
//!
//! This module must not time calls out or decide anything: the core's dispatcher time-boxes every
//! hook and drops the future when the time is up (a late answer is then discarded).
//!
//! Every function is *weak* (unreferenced): it never keeps Node's event loop alive. While the server
//! listens, `KeepAlive` (in `server.rs`) holds the loop open; after `close()` nothing does.

use std::marker::PhantomData;

use napi::bindgen_prelude::{FromNapiValue, Function, JsValuesTupleIntoVec, Promise, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{JsValue, Status};
use tokio::sync::oneshot;

/// An unreferenced threadsafe function that passes `Args` and hands back the raw returned value.
type WeakFunction<Args> = ThreadsafeFunction<Args, Unknown<'static>, Args, Status, false, true>;

/// A JavaScript function callable from any thread, answering `Ret`.
pub(crate) struct JsCallback<Args: JsValuesTupleIntoVec + 'static, Ret: 'static> {
    function: WeakFunction<Args>,
    _answers: PhantomData<fn() -> Ret>,
}

/// What the JavaScript thread sends back: a finished answer, or a Promise still to settle.
enum Answer<Ret: FromNapiValue + 'static> {
    Ready(Result<Ret, String>),
    Later(Promise<Ret>),
}

impl<Args, Ret> JsCallback<Args, Ret>
where
    Args: JsValuesTupleIntoVec + Send + 'static,
    Ret: FromNapiValue + Send + 'static,
{
    /// Wraps a function received from JavaScript. Call on the JavaScript thread.
    pub(crate) fn new(function: &Function<'_, Args, Unknown<'static>>) -> napi::Result<Self> {
        let function = function.build_threadsafe_function::<Args>().callee_handled::<false>().weak::<true>().build()?;
        Ok(JsCallback { function, _answers: PhantomData })
    }

    /// Calls the function and waits for its answer (awaiting a returned Promise).
    ///
    /// Errors: the message of what was thrown or rejected, a conversion failure when the answer
    /// is not a `Ret`, or a note that Node is shutting down and can no longer run JavaScript.
    pub(crate) async fn call(&self, args: Args) -> Result<Ret, String> {
        let (sender, receiver) = oneshot::channel::<Answer<Ret>>();
        let status = self.function.call_with_return_value(
            args,
            ThreadsafeFunctionCallMode::NonBlocking,
            move |returned: napi::Result<Unknown<'static>>, _env| {
                // The receiver is gone when the core stopped waiting (timeout): nothing to do.
                let _ = sender.send(settle(returned));
                Ok(())
            },
        );
        if status != Status::Ok {
            return Err(format!("the JavaScript function cannot be called ({status})"));
        }
        match receiver.await {
            Ok(Answer::Ready(answer)) => answer,
            Ok(Answer::Later(promise)) => promise.await.map_err(|e| message(&e)),
            Err(_) => Err("the JavaScript function was released before it answered".to_string()),
        }
    }
}

/// Runs on the JavaScript thread: converts a plain answer now, or keeps a Promise to await.
fn settle<Ret: FromNapiValue + 'static>(returned: napi::Result<Unknown<'_>>) -> Answer<Ret> {
    let value = match returned {
        Ok(value) => value,
        Err(thrown) => return Answer::Ready(Err(message(&thrown))),
    };
    match value.is_promise() {
        Ok(true) => match Promise::<Ret>::from_unknown(value) {
            Ok(promise) => Answer::Later(promise),
            Err(e) => Answer::Ready(Err(message(&e))),
        },
        _ => Answer::Ready(Ret::from_unknown(value).map_err(|e| message(&e))),
    }
}

/// The human-readable part of a JavaScript failure (an `Error`'s `message`, a thrown string).
fn message(error: &napi::Error) -> String {
    if error.reason.is_empty() { "the JavaScript function failed".to_string() } else { error.reason.clone() }
}
