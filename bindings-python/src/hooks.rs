//! The core's `Hooks`, implemented by calling the Python handlers registered on a `Server`.
//!
//! Each method converts the core's question to Python objects, calls the handler through
//! `handler::call` (the core's time box and fail-closed defaults apply on top) and converts the
//! answer back. The mapping of answers is the whole of this module:
//!
//! - `authenticate(info, identity)`: `True` keeps the identity; a dict may replace `roles` and
//!   `scopes` and add `claims`; anything else, or an exception, refuses the handshake.
//! - `authorize(request)`: only `True` allows; anything else, or an exception, denies.
//! - `rpc(session, payload)`: the return value (any JSON value) is the result; an exception gives
//!   the client `rpc_failed` with `str(exc)` as the message.
//! - `on_event(event)`: the event as a dict (`kind` names it), delivered by `events`.
//!
//! With no handler registered the core's own decision stands, without touching the GIL.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, PoisonError, RwLock};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyTuple};
use serde::Deserialize;
use serde_json::{Map, Value};
use wsguard::hooks::{AuthorizeRequest, Decision, HandshakeInfo, HookFuture, Hooks, RpcCall, RpcError};
use wsguard::{Event, Identity};

use crate::events::EventQueue;
use crate::handler::{self, Args, Convert, EventLoop, Handler, exception_message, log_exception};
use crate::json;
use crate::types::{PyAuthorizeRequest, PyHandshakeInfo, PyIdentity, PySession};

/// The handlers registered on one `Server`; they may change while it runs.
#[derive(Default)]
pub(crate) struct Handlers {
    rpc: RwLock<HashMap<String, Handler>>,
    authenticate: RwLock<Option<Handler>>,
    authorize: RwLock<Option<Handler>>,
    on_event: RwLock<Option<Handler>>,
}

impl Handlers {
    pub(crate) fn set_rpc(&self, method: String, handler: Handler) {
        self.rpc.write().unwrap_or_else(PoisonError::into_inner).insert(method, handler);
    }
    pub(crate) fn set_authenticate(&self, handler: Handler) {
        *self.authenticate.write().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }
    pub(crate) fn set_authorize(&self, handler: Handler) {
        *self.authorize.write().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }
    pub(crate) fn set_on_event(&self, handler: Handler) {
        *self.on_event.write().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }
    fn rpc(&self, method: &str) -> Option<Handler> {
        self.rpc.read().unwrap_or_else(PoisonError::into_inner).get(method).cloned()
    }
    fn authenticate(&self) -> Option<Handler> {
        self.authenticate.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn authorize(&self) -> Option<Handler> {
        self.authorize.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
    pub(crate) fn on_event(&self) -> Option<Handler> {
        self.on_event.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
    /// Every registered handler (to find coroutine functions before a loop-less start).
    pub(crate) fn all(&self) -> Vec<Handler> {
        let mut all: Vec<Handler> = self.rpc.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        all.extend(self.authenticate());
        all.extend(self.authorize());
        all.extend(self.on_event());
        all
    }
}

/// The hooks one running server calls.
pub(crate) struct PyHooks {
    pub(crate) handlers: Arc<Handlers>,
    pub(crate) event_loop: EventLoop,
    pub(crate) events: Arc<EventQueue>,
}

/// What an `authenticate` handler may return besides `True`: replacement roles and scopes,
/// extra claims. Unknown keys refuse the handshake (a typo must not pass silently).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityUpdate {
    roles: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    claims: Option<Map<String, Value>>,
}

fn authenticate_answer(identity: &Identity, answer: &Bound<'_, PyAny>) -> Result<Identity, String> {
    if let Ok(flag) = answer.cast::<PyBool>() {
        return if flag.is_true() { Ok(identity.clone()) } else { Err("refused by the authenticate hook".into()) };
    }
    if answer.is_none() {
        return Err("the authenticate hook returned None".into());
    }
    let value = json::to_value(answer).map_err(|e| format!("the authenticate hook returned a non-JSON value: {e}"))?;
    let update: IdentityUpdate = serde_json::from_value(value)
        .map_err(|e| format!("the authenticate hook returned an invalid identity update: {e}"))?;
    let mut identity = identity.clone();
    if let Some(roles) = update.roles {
        identity.roles = roles;
    }
    if let Some(scopes) = update.scopes {
        identity.scopes = scopes;
    }
    identity.claims.extend(update.claims.unwrap_or_default());
    Ok(identity)
}

impl Hooks for PyHooks {
    fn authenticate(&self, info: HandshakeInfo, identity: Identity) -> HookFuture<Result<Identity, String>> {
        let Some(handler) = self.handlers.authenticate() else { return Box::pin(ready(Ok(identity))) };
        let identity = Arc::new(identity);
        let for_call = Arc::clone(&identity);
        let args: Args = Box::new(move |py| {
            let info = Bound::new(py, PyHandshakeInfo::from(info))?;
            let identity = Bound::new(py, PyIdentity { identity: for_call })?;
            PyTuple::new(py, [info.into_any(), identity.into_any()])
        });
        let convert: Convert<Result<Identity, String>> = Arc::new(move |py, answer| match answer {
            Ok(answer) => authenticate_answer(&identity, &answer),
            Err(e) => {
                log_exception(py, "authenticate", &e);
                Err(format!("the authenticate hook raised: {}", exception_message(py, &e)))
            }
        });
        handler::call(handler, self.event_loop.clone(), args, convert, Err("the authenticate hook failed".into()))
    }

    fn authorize(&self, request: AuthorizeRequest) -> HookFuture<Decision> {
        let Some(handler) = self.handlers.authorize() else { return Box::pin(ready(Decision::Allow)) };
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
        let Some(handler) = self.handlers.rpc(&call.method) else {
            return Box::pin(ready(Err(RpcError::UnknownMethod)));
        };
        let args: Args = Box::new(move |py| {
            let session = Bound::new(py, PySession { session_id: call.session_id, identity: call.identity })?;
            let payload = json::to_py(py, &call.payload)?;
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

    fn on_event(&self, event: &Event) {
        if self.handlers.on_event().is_none() {
            return;
        }
        match serde_json::to_value(event) {
            Ok(value) => self.events.push(value),
            Err(e) => tracing::warn!(target: "wsguard::python", error = %e, "event not serializable"),
        }
    }
}
