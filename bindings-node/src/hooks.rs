//! `JsHooks`: the core's `Hooks` trait answered by JavaScript functions.
//!
//! Each hook converts the core's question to JSON, calls the registered function through
//! `JsCallback` and converts the answer back. It decides nothing itself: without a function the
//! core's own decision stands (the trait's defaults), an `authenticate` answer is parsed by the
//! core's one parser (`AuthenticateAnswer::from_json`), and any failure becomes the fail-closed
//! answer the core documents (`rpc_failed`, a refused handshake, a denial). Time limits are the
//! core's (`hooks.timeout_secs`, `limits.rpc_timeout_secs`), and so is the one bounded event queue.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use napi::bindgen_prelude::FnArgs;
use serde_json::{Value, json};
use wsguard::hooks::{AuthenticateAnswer, AuthorizeRequest, Decision, HandshakeInfo, HookFuture, RpcCall, RpcError};
use wsguard::{Event, Hooks, Identity};

use crate::callback::JsCallback;
use crate::json;

/// `(session, payload) => result`; `undefined` answers `null`.
pub(crate) type RpcHandler = JsCallback<FnArgs<(Value, Value)>, Option<Value>>;
/// `(handshake, identity) => true | false | {deny} | {roles?, scopes?, claims?}`.
pub(crate) type AuthenticateHandler = JsCallback<FnArgs<(Value, Value)>, Option<Value>>;
/// `(request) => boolean`.
pub(crate) type AuthorizeHandler = JsCallback<Value, bool>;
/// `(event) => void | Promise`: done once it returned and its Promise, if any, settled.
pub(crate) type EventListener = JsCallback<Value, ()>;

/// The functions registered from JavaScript; replaceable at any time, also while serving.
#[derive(Default)]
pub(crate) struct JsHooks {
    rpc: RwLock<HashMap<String, Arc<RpcHandler>>>,
    authenticate: RwLock<Option<Arc<AuthenticateHandler>>>,
    authorize: RwLock<Option<Arc<AuthorizeHandler>>>,
    events: RwLock<Option<Arc<EventListener>>>,
}

impl JsHooks {
    pub(crate) fn set_rpc(&self, method: String, handler: RpcHandler) {
        self.rpc.write().unwrap_or_else(PoisonError::into_inner).insert(method, Arc::new(handler));
    }

    pub(crate) fn set_authenticate(&self, handler: AuthenticateHandler) {
        *self.authenticate.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(handler));
    }

    pub(crate) fn set_authorize(&self, handler: AuthorizeHandler) {
        *self.authorize.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(handler));
    }

    pub(crate) fn set_event_listener(&self, listener: EventListener) {
        *self.events.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(listener));
    }

    /// Releases every JavaScript function (after `close()`), so none of them stays reachable.
    pub(crate) fn release(&self) {
        self.rpc.write().unwrap_or_else(PoisonError::into_inner).clear();
        *self.authenticate.write().unwrap_or_else(PoisonError::into_inner) = None;
        *self.authorize.write().unwrap_or_else(PoisonError::into_inner) = None;
        *self.events.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

fn current<T>(slot: &RwLock<Option<Arc<T>>>) -> Option<Arc<T>> {
    slot.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn to_json(value: &impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot convert for JavaScript: {e}"))
}

/// The core's answer for what the handler returned (`undefined` is `null`: an invalid answer) or
/// for why it did not answer (a throw, a rejection, a value that is not JSON).
fn authenticate_answer(returned: Result<Option<Value>, String>) -> AuthenticateAnswer {
    match returned {
        Ok(value) => AuthenticateAnswer::from_json(value.map_or(Value::Null, json::from_js))
            .unwrap_or_else(|invalid| AuthenticateAnswer::Deny(invalid.to_string())),
        Err(message) => AuthenticateAnswer::Deny(message),
    }
}

impl Hooks for JsHooks {
    fn authenticate(&self, info: HandshakeInfo, identity: Arc<Identity>) -> HookFuture<AuthenticateAnswer> {
        let Some(handler) = current(&self.authenticate) else {
            return Box::pin(std::future::ready(AuthenticateAnswer::Allow));
        };
        Box::pin(async move {
            let returned = match (to_json(&info), to_json(identity.as_ref())) {
                (Ok(info), Ok(identity)) => handler.call(FnArgs::from((info, identity))).await,
                (Err(message), _) | (_, Err(message)) => Err(message),
            };
            authenticate_answer(returned)
        })
    }

    fn authorize(&self, request: AuthorizeRequest) -> HookFuture<Decision> {
        let Some(handler) = current(&self.authorize) else {
            return Box::pin(std::future::ready(Decision::Allow));
        };
        Box::pin(async move {
            let Ok(request) = to_json(&request) else { return Decision::Deny };
            match handler.call(request).await {
                Ok(true) => Decision::Allow,
                Ok(false) | Err(_) => Decision::Deny,
            }
        })
    }

    fn rpc(&self, call: RpcCall) -> HookFuture<Result<Value, RpcError>> {
        let handler = self.rpc.read().unwrap_or_else(PoisonError::into_inner).get(&call.method).cloned();
        let Some(handler) = handler else {
            return Box::pin(std::future::ready(Err(RpcError::UnknownMethod)));
        };
        Box::pin(async move {
            let RpcCall { session_id, identity, method, payload } = call;
            let session = json!({ "session_id": session_id, "identity": identity.as_ref(), "method": method });
            match handler.call(FnArgs::from((session, payload))).await {
                Ok(result) => Ok(result.map_or(Value::Null, json::from_js)),
                Err(message) => Err(RpcError::Failed(message)),
            }
        })
    }

    /// Done when the listener has run and its returned Promise, if any, has settled: the core
    /// awaits this (within `hooks.timeout_secs`) before the next event, so a slow listener fills
    /// the core's one bounded queue. What a failing listener means is the package's rule
    /// (`lib/index.js`: an uncaught exception, as for any `EventEmitter` listener); here the event
    /// has been delivered either way.
    fn on_event(&self, event: &Event) -> HookFuture<()> {
        let Some(listener) = current(&self.events) else { return Box::pin(std::future::ready(())) };
        let Ok(event) = to_json(event) else { return Box::pin(std::future::ready(())) };
        Box::pin(async move {
            let _ = listener.call(event).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_handler_returned_is_parsed_by_the_core() {
        assert_eq!(authenticate_answer(Ok(Some(json!(true)))), AuthenticateAnswer::Allow);
        let update = authenticate_answer(Ok(Some(json!({ "roles": ["vip"], "claims": { "n": 5_000_000_000.0 } }))));
        let AuthenticateAnswer::Update(update) = update else { panic!("{update:?}") };
        assert!(update.claims.expect("claims")["n"].is_u64(), "integral numbers restored");
    }

    #[test]
    fn no_answer_a_throw_or_an_invalid_answer_denies() {
        for returned in [Ok(None), Ok(Some(json!("yes"))), Ok(Some(json!({ "role": [] }))), Err("down".to_string())] {
            assert!(matches!(authenticate_answer(returned), AuthenticateAnswer::Deny(_)));
        }
        assert_eq!(authenticate_answer(Err("down".into())), AuthenticateAnswer::Deny("down".into()));
    }
}
