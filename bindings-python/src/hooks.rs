//! The core's `Hooks`, implemented by calling the Python handlers registered on a `Server`.
//!
//! Each method converts the core's question to Python objects, calls the handler through
//! `handler::call` (the core's time box and fail-closed defaults apply on top) and converts the
//! answer back. The mapping of answers is the whole of this module:
//!
//! - `authenticate(info, identity)`: the return value, as JSON, is parsed by the core's one parser
//!   (`AuthenticateAnswer::from_json`: `True`, `False`, `{"deny": reason}` or
//!   `{roles?, scopes?, claims?}`, merged by the core's rule). An invalid answer or an exception
//!   denies, with the reason in the logs.
//! - `authorize(request)`: only `True` allows; anything else, or an exception, denies.
//! - `rpc(session, payload)`: the return value (any JSON value) is the result; an exception gives
//!   the client `rpc_failed` with `str(exc)` as the message.
//! - `on_event(event)`: the event as a dict (`kind` names it). The returned future completes when
//!   the handler has finished (a coroutine is awaited), so a slow handler fills the core's one
//!   event queue and the overflow is counted (`stats()["events_dropped"]`).
//!
//! With no handler registered the core's own decision stands, without touching the GIL.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, PoisonError, RwLock};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyTuple};
use serde_json::Value;
use wsguard::hooks::{
    AuthenticateAnswer, AuthorizeRequest, Decision, HandshakeInfo, HookFuture, Hooks, RpcCall, RpcError,
};
use wsguard::{Event, Identity};

use crate::handler::{self, Args, Convert, EventLoop, Handler, exception_message, log_exception};
use crate::json;
use crate::types::{PyAuthorizeRequest, PyHandshakeInfo, PyIdentity, PySession};

/// Where a handler is registered: one per hook, one per RPC method.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    Authenticate,
    Authorize,
    OnEvent,
    Rpc(String),
}

/// The handlers registered on one `Server`; they may change while it runs.
#[derive(Default)]
pub(crate) struct Handlers(RwLock<HashMap<Slot, Handler>>);

impl Handlers {
    pub(crate) fn set(&self, slot: Slot, handler: Handler) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).insert(slot, handler);
    }

    fn get(&self, slot: &Slot) -> Option<Handler> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).get(slot).cloned()
    }

    /// Every registered handler (to find coroutine functions before a loop-less start).
    pub(crate) fn all(&self) -> Vec<Handler> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }
}

/// The hooks one running server calls.
pub(crate) struct PyHooks {
    pub(crate) handlers: Arc<Handlers>,
    pub(crate) event_loop: EventLoop,
}

/// The core's answer for what an `authenticate` handler returned or raised.
fn authenticate_answer(py: Python<'_>, returned: PyResult<Bound<'_, PyAny>>) -> AuthenticateAnswer {
    let returned = match returned {
        Ok(returned) => returned,
        Err(e) => {
            log_exception(py, "authenticate", &e);
            return AuthenticateAnswer::Deny(format!("the authenticate hook raised: {}", exception_message(py, &e)));
        }
    };
    match json::to_value(&returned) {
        Ok(value) => {
            AuthenticateAnswer::from_json(value).unwrap_or_else(|invalid| AuthenticateAnswer::Deny(invalid.to_string()))
        }
        Err(e) => AuthenticateAnswer::Deny(format!(
            "the authenticate hook returned a non-JSON value: {}",
            exception_message(py, &e)
        )),
    }
}

impl Hooks for PyHooks {
    fn authenticate(&self, info: HandshakeInfo, identity: Arc<Identity>) -> HookFuture<AuthenticateAnswer> {
        let Some(handler) = self.handlers.get(&Slot::Authenticate) else {
            return Box::pin(ready(AuthenticateAnswer::Allow));
        };
        let args: Args = Box::new(move |py| {
            let info = Bound::new(py, PyHandshakeInfo::from(info))?;
            let identity = Bound::new(py, PyIdentity { identity })?;
            PyTuple::new(py, [info.into_any(), identity.into_any()])
        });
        let convert: Convert<AuthenticateAnswer> = Arc::new(authenticate_answer);
        let fallback = AuthenticateAnswer::Deny("the authenticate hook failed".into());
        handler::call(handler, self.event_loop.clone(), args, convert, fallback)
    }

    fn authorize(&self, request: AuthorizeRequest) -> HookFuture<Decision> {
        let Some(handler) = self.handlers.get(&Slot::Authorize) else { return Box::pin(ready(Decision::Allow)) };
        let args: Args = Box::new(move |py| {
            let request = Bound::new(py, PyAuthorizeRequest::new(py, request)?)?;
            PyTuple::new(py, [request.into_any()])
        });
        let convert: Convert<Decision> = Arc::new(|py, answer| match answer {
            Ok(answer) if answer.cast::<PyBool>().is_ok_and(|b| b.is_true()) => Decision::Allow,
            Ok(answer) => {
                if answer.cast::<PyBool>().is_err() {
                    tracing::warn!(target: "wsguard::python", "authorize handler returned a non-bool; denying");
                }
                Decision::Deny
            }
            Err(e) => {
                log_exception(py, "authorize", &e);
                Decision::Deny
            }
        });
        handler::call(handler, self.event_loop.clone(), args, convert, Decision::Deny)
    }

    fn rpc(&self, call: RpcCall) -> HookFuture<Result<Value, RpcError>> {
        let RpcCall { session_id, identity, method, payload } = call;
        let Some(handler) = self.handlers.get(&Slot::Rpc(method)) else {
            return Box::pin(ready(Err(RpcError::UnknownMethod)));
        };
        let args: Args = Box::new(move |py| {
            let session = Bound::new(py, PySession { session_id, identity })?;
            let payload = json::to_py(py, &payload)?;
            PyTuple::new(py, [session.into_any(), payload])
        });
        let convert: Convert<Result<Value, RpcError>> = Arc::new(|py, answer| match answer {
            Ok(answer) => json::to_value(&answer).map_err(|e| {
                log_exception(py, "rpc", &e);
                RpcError::Failed("the handler's result is not JSON".into())
            }),
            Err(e) => {
                log_exception(py, "rpc", &e);
                Err(RpcError::Failed(exception_message(py, &e)))
            }
        });
        handler::call(handler, self.event_loop.clone(), args, convert, Err(RpcError::Failed("handler failed".into())))
    }

    fn on_event(&self, event: &Event) -> HookFuture<()> {
        let Some(handler) = self.handlers.get(&Slot::OnEvent) else { return Box::pin(ready(())) };
        let event = match serde_json::to_value(event) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(target: "wsguard::python", error = %e, "event not serializable");
                return Box::pin(ready(()));
            }
        };
        let args: Args = Box::new(move |py| PyTuple::new(py, [json::to_py(py, &event)?]));
        let convert: Convert<()> = Arc::new(|py, returned| {
            if let Err(e) = returned {
                log_exception(py, "on_event", &e);
            }
        });
        handler::call(handler, self.event_loop.clone(), args, convert, ())
    }
}
