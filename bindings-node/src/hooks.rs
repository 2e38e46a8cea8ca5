//! `JsHooks`: the core's `Hooks` trait answered by JavaScript functions.
//!
//! Each hook converts the core's question to JSON, calls the registered function through
//! `JsCallback` and converts the answer back. It decides nothing itself: without a function the
//! core's own decision stands (the trait's defaults), and any failure becomes the fail-closed
//! answer the core documents (`rpc_failed`, a refused handshake, a denial). Time limits are the
//! core's (`hooks.timeout_secs`, `limits.rpc_timeout_secs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use napi::bindgen_prelude::FnArgs;
use serde_json::{Value, json};
use wsguard::hooks::{AuthorizeRequest, Decision, HandshakeInfo, HookFuture, RpcCall, RpcError};
use wsguard::{Event, Hooks, Identity};

use crate::callback::JsCallback;
use crate::json;

/// `(session, payload) => result`; `undefined` answers `null`.
pub(crate) type RpcHandler = JsCallback<FnArgs<(Value, Value)>, Option<Value>>;
/// `(identity, handshake) => true | false | identity`.
pub(crate) type AuthenticateHandler = JsCallback<FnArgs<(Value, Value)>, Option<Value>>;
/// `(request) => boolean`.
pub(crate) type AuthorizeHandler = JsCallback<Value, bool>;
/// `(event) => void`.
pub(crate) type EventListener = JsCallback<Value, ()>;

/// The functions registered from JavaScript; replaceable at any time, also while serving.
pub(crate) struct JsHooks {
    rpc: RwLock<HashMap<String, Arc<RpcHandler>>>,
    authenticate: RwLock<Option<Arc<AuthenticateHandler>>>,
    authorize: RwLock<Option<Arc<AuthorizeHandler>>>,
    events: RwLock<Option<Arc<EventListener>>>,
    /// Events handed to Node and not yet delivered.
    events_in_flight: Arc<AtomicUsize>,
    /// `hooks.event_queue_capacity`. The core's own queue never fills while the listener is slow
    /// (handing an event to Node does not block), so the same bound is applied to the events
    /// waiting on Node's thread; past it events are dropped rather than buffered without limit.
    event_capacity: usize,
}

impl JsHooks {
    pub(crate) fn new(event_capacity: u32) -> Self {
        JsHooks {
            rpc: RwLock::default(),
            authenticate: RwLock::default(),
            authorize: RwLock::default(),
            events: RwLock::default(),
            events_in_flight: Arc::default(),
            event_capacity: event_capacity as usize,
        }
    }

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

/// An identity answered by the `authenticate` handler: every field of the identity it was given
/// (`{ ...identity, roles: [...] }`), nothing more. The core refuses a changed `subject` and
/// restores `expires_at`, `issued_at` and `token_id`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityAnswer {
    subject: String,
    roles: Vec<String>,
    scopes: Vec<String>,
    expires_at: u64,
    issued_at: Option<u64>,
    token_id: Option<String>,
    claims: serde_json::Map<String, Value>,
}

fn identity_from_json(value: Value) -> Result<Identity, String> {
    let answer: IdentityAnswer = serde_json::from_value(value)
        .map_err(|e| format!("the authenticate handler answered an invalid identity: {e}"))?;
    let IdentityAnswer { subject, roles, scopes, expires_at, issued_at, token_id, claims } = answer;
    Ok(Identity { subject, roles, scopes, expires_at, issued_at, token_id, claims: claims.into() })
}

fn to_json(value: &impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot convert for JavaScript: {e}"))
}

impl Hooks for JsHooks {
    fn authenticate(&self, info: HandshakeInfo, identity: Identity) -> HookFuture<Result<Identity, String>> {
        let Some(handler) = current(&self.authenticate) else {
            return Box::pin(std::future::ready(Ok(identity)));
        };
        Box::pin(async move {
            let args = (to_json(&identity)?, to_json(&info)?);
            match handler.call(FnArgs::from(args)).await? {
                Some(Value::Bool(true)) => Ok(identity),
                Some(Value::Bool(false)) => Err("the authenticate handler answered false".to_string()),
                Some(object @ Value::Object(_)) => identity_from_json(json::from_js(object)),
                _ => Err("the authenticate handler answered neither a boolean nor an identity".to_string()),
            }
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

    fn on_event(&self, event: &Event) {
        let Some(listener) = current(&self.events) else { return };
        if self.events_in_flight.load(Ordering::Acquire) >= self.event_capacity {
            return;
        }
        if let Ok(event) = to_json(event) {
            listener.notify(event, &self.events_in_flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_json() -> Value {
        json!({
            "subject": "alice", "roles": ["admin"], "scopes": [], "expires_at": 2_000_000_000u64,
            "issued_at": null, "token_id": "j1", "claims": { "sub": "alice" }
        })
    }

    #[test]
    fn an_answered_identity_converts_field_for_field() {
        let identity = identity_from_json(identity_json()).expect("valid");
        assert_eq!(identity.subject, "alice");
        assert!(identity.has_role("admin"));
        assert_eq!(identity.token_id.as_deref(), Some("j1"));
        assert_eq!(identity.issued_at, None);
    }

    #[test]
    fn a_partial_or_extended_identity_is_refused() {
        let mut partial = identity_json();
        partial.as_object_mut().map(|o| o.remove("claims"));
        assert!(identity_from_json(partial).is_err());
        let mut extended = identity_json();
        extended.as_object_mut().map(|o| o.insert("admin".into(), json!(true)));
        assert!(identity_from_json(extended).is_err());
    }
}
