//! `wsg_hooks`: the host's callbacks as a C struct of optional function pointers, adapted to the
//! core's `Hooks` trait.
//!
//! Every blocking callback runs through `wsguard::hooks::run_blocking` (tokio's blocking pool),
//! so a slow C function never stalls a connection thread, and the core's time box answers for it
//! (fail closed) when it is late. The inputs a callback sees are built on that pool thread and
//! live until it returns. This module adds no decision of its own: a missing callback keeps the
//! core's default.

use std::ffi::{c_char, c_int, c_void};
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use wsguard::hooks::{
    AuthenticateAnswer, AuthorizeRequest, ChannelAction, Decision, HandshakeInfo, HookFuture, Hooks, RpcCall, RpcError,
    run_blocking,
};
use wsguard::{Event, Identity};

use crate::boundary::{LentText, borrow_str, wsg_str};
use crate::result::{Failure, guard, wsg_result};
use crate::rpc::wsg_rpc_call;

/// A hook's verdict: `WSG_DECISION_ALLOW` lets the request through; any other value (including
/// `WSG_DECISION_DENY`) refuses it. Fail closed: only an explicit allow allows.
#[allow(non_camel_case_types)]
pub type wsg_decision = c_int;
/// Refuse.
pub const WSG_DECISION_DENY: wsg_decision = 0;
/// Allow.
pub const WSG_DECISION_ALLOW: wsg_decision = 1;

/// What a session asks to do on a channel (`wsg_authorize_request.action`).
#[allow(non_camel_case_types)]
pub type wsg_channel_action = u32;
/// Receive publications on the channel.
pub const WSG_CHANNEL_ACTION_SUBSCRIBE: wsg_channel_action = 1;
/// Send a publication to the channel.
pub const WSG_CHANNEL_ACTION_PUBLISH: wsg_channel_action = 2;
/// Read the channel's kept publications (the `history` action).
pub const WSG_CHANNEL_ACTION_HISTORY: wsg_channel_action = 3;

/// What the `authenticate` callback sees of a handshake whose token already verified (never the
/// token itself). Every string is valid only during the callback.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct wsg_handshake {
    /// The resolved client IP, as text (`127.0.0.1`, `::1`).
    pub client_ip: wsg_str,
    /// The `Origin` header; absent (`data == NULL`) when the request had none.
    pub origin: wsg_str,
    /// The `User-Agent` header; absent when the request had none.
    pub user_agent: wsg_str,
    /// The verified `sub` claim.
    pub subject: wsg_str,
    /// The verified identity as a JSON object: `subject`, `roles`, `scopes`, `expires_at`,
    /// `issued_at`, `token_id` and `claims` (every claim of the token).
    pub identity_json: wsg_str,
}

/// The question put to the `authorize` callback, after the core's own channel rules allowed the
/// action. Every string is valid only during the callback.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct wsg_authorize_request {
    /// The session asking (the id `wsg_server_disconnect_session` takes).
    pub session_id: u64,
    /// `WSG_CHANNEL_ACTION_SUBSCRIBE`, `WSG_CHANNEL_ACTION_PUBLISH` or `WSG_CHANNEL_ACTION_HISTORY`.
    pub action: wsg_channel_action,
    /// The channel, already validated (1 to 128 bytes of `[A-Za-z0-9_.@:-]`).
    pub channel: wsg_str,
    /// The session's verified `sub` claim.
    pub subject: wsg_str,
    /// The session's verified identity as JSON (see `wsg_handshake.identity_json`).
    pub identity_json: wsg_str,
}

/// Where the `authenticate` callback may put a richer answer than allow/deny (opaque). Valid only
/// during the callback that received it; never free it.
#[allow(non_camel_case_types)]
pub struct wsg_authenticate_answer {
    /// `None` until `wsg_authenticate_answer_set_json` is called; an invalid answer is kept as
    /// its error, which refuses the handshake (fail closed).
    answer: Option<Result<AuthenticateAnswer, String>>,
}

/// Sets the `authenticate` answer in its JSON form, the same answer every host gives (parsed by
/// the core): `true`, `false`, `{"deny": "reason"}` (the reason goes to the logs), or an update
/// `{"roles": [...], "scopes": [...], "claims": {...}}` where each field is optional: `roles` and
/// `scopes` replace the token's, `claims` are merged key by key (`null` removes a claim), and
/// naming a registered claim (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`) or any other key
/// is invalid. `json` is `len` bytes of UTF-8, not necessarily NUL-terminated; it is copied.
///
/// The answer applies when the callback returns `WSG_DECISION_ALLOW` (a callback returning
/// anything else refuses whatever it set). Calling it again replaces the answer.
///
/// Errors: `WSG_INVALID_ARGUMENT` (not JSON, or not an answer; the handshake or refresh is then
/// refused, fail closed), `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Only from the callback that
/// received `answer`, on its thread.
///
/// # Safety
///
/// `answer` must be the pointer the running `authenticate` callback received; `json` must point
/// to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_authenticate_answer_set_json(
    answer: *mut wsg_authenticate_answer,
    json: *const c_char,
    len: usize,
) -> wsg_result {
    guard("wsg_authenticate_answer_set_json", || {
        if answer.is_null() {
            return Err(Failure::null("answer"));
        }
        // SAFETY: caller contract on `json` / `len`.
        let text = unsafe { borrow_str(json, len, "json") }?;
        let parsed = AuthenticateAnswer::from_json_text(text);
        // SAFETY: non-NULL, and by the caller's contract the live answer of this callback, used
        // from this thread only.
        let slot = unsafe { &mut *answer };
        match parsed {
            Ok(parsed) => {
                slot.answer = Some(Ok(parsed));
                Ok(())
            }
            Err(invalid) => {
                slot.answer = Some(Err(invalid.to_string()));
                Err(wsguard::Error::InvalidArgument(invalid.to_string()).into())
            }
        }
    })
}

/// Releases `wsg_hooks.user_data` once the server no longer needs it.
#[allow(non_camel_case_types)]
pub type wsg_user_data_drop_callback = Option<unsafe extern "C" fn(user_data: *mut c_void)>;
/// Decides a session after its token verified, at the handshake and again at each in-band
/// `refresh`, from what the handshake showed and the verified identity (`handshake`): the same
/// arguments, in the same order, as in Rust, Python and Node. `WSG_DECISION_ALLOW` accepts, with
/// roles, scopes or claims changed when the callback set an update with
/// `wsg_authenticate_answer_set_json(answer, ...)`; anything else refuses (HTTP 403
/// `rejected_by_hook` at the handshake, a `rejected_by_hook` reply to a refresh), as does an
/// answer set to `false`, `{"deny": ...}` or an invalid one. Time box: `hooks.timeout_secs` (then
/// 503 `hook_timeout`).
#[allow(non_camel_case_types)]
pub type wsg_authenticate_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        handshake: *const wsg_handshake,
        answer: *mut wsg_authenticate_answer,
    ) -> wsg_decision,
>;
/// Decides a subscribe, publish or history read after the channel rules allowed it; anything but
/// `WSG_DECISION_ALLOW` gives the client the reply error `forbidden`. Time box:
/// `hooks.timeout_secs` (then `hook_timeout`).
#[allow(non_camel_case_types)]
pub type wsg_authorize_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, request: *const wsg_authorize_request) -> wsg_decision>;
/// Handles an RPC for a method declared in `[[rpc]]`. The callback receives ownership of `call`
/// and must complete it exactly once, now or later from any thread, with `wsg_rpc_call_respond`,
/// `wsg_rpc_call_fail` or `wsg_rpc_call_free`. Time box: `limits.rpc_timeout_secs` (then the
/// client gets `hook_timeout`, and a later completion returns `WSG_HOOK_TIMEOUT`).
#[allow(non_camel_case_types)]
pub type wsg_rpc_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, call: *mut wsg_rpc_call)>;
/// Receives one security or lifecycle event as a JSON object with a `kind` field
/// (`handshake_rejected`, `session_opened`, `session_closed`, `message_rejected`, `ban_applied`,
/// `ban_lifted`, `anomaly`, `config_reloaded`, `revocation_applied`, `broker_connected`,
/// `broker_disconnected`, `jwks_fetch_failed`, `broker_message_rejected`, `policy_dry_run_denied`,
/// `api_request`, `proxy_failed`;
/// docs/OPERATIONS.md lists their fields);
/// `event_json` is NUL-terminated, valid only during the callback. Events arrive one at a time,
/// in order, from the server's one bounded queue (`hooks.event_queue_capacity`): the next waits
/// until this callback returns (at most `hooks.timeout_secs`), and events that do not fit while
/// it is slow are dropped and counted in `events_dropped` / `wsguard_events_dropped_total`.
#[allow(non_camel_case_types)]
pub type wsg_event_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event_json: *const c_char, event_json_len: usize)>;

/// The host's callbacks, copied by `wsg_server_start`. Zero-initialize it (`wsg_hooks hooks = {0};`)
/// and set what you need: a NULL callback keeps the core's default (authenticate and authorize
/// allow what the core allowed; a declared RPC method without a handler gets the core's "no
/// handler" answer; events are only logged).
///
/// Callbacks run on the server's threads, several at once: `user_data` and everything the
/// callbacks touch must be thread-safe. They must not unwind (a C++ callback must catch every
/// exception) and must not call `wsg_server_stop` or `wsg_server_start` (they return
/// `WSG_WRONG_THREAD` there). A callback that blocks holds one thread of the server's blocking
/// pool; the core answers for it when its time box ends.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct wsg_hooks {
    /// Passed unchanged to every callback.
    pub user_data: *mut c_void,
    /// Optional. When the server is started successfully it owns `user_data` and calls this
    /// exactly once, from any thread, when it no longer needs the callbacks: during
    /// `wsg_server_free` (after `wsg_server_stop`) or shortly after it. When `wsg_server_start`
    /// fails it is never called: the caller keeps `user_data`.
    pub user_data_drop: wsg_user_data_drop_callback,
    /// Optional, see `wsg_authenticate_callback`.
    pub authenticate: wsg_authenticate_callback,
    /// Optional, see `wsg_authorize_callback`.
    pub authorize: wsg_authorize_callback,
    /// Optional, see `wsg_rpc_callback`.
    pub rpc: wsg_rpc_callback,
    /// Optional, see `wsg_event_callback`.
    pub event: wsg_event_callback,
}

/// The copied table plus whether the server owns `user_data` yet.
pub(crate) struct HostTable {
    table: wsg_hooks,
    owns_user_data: AtomicBool,
}

// SAFETY: the header's contract for `wsg_hooks` requires `user_data` and the callbacks to be
// usable from any thread, concurrently; the table itself is never mutated after the copy.
unsafe impl Send for HostTable {}
// SAFETY: as above.
unsafe impl Sync for HostTable {}

impl HostTable {
    pub(crate) fn new(table: wsg_hooks) -> Self {
        HostTable { table, owns_user_data: AtomicBool::new(false) }
    }

    /// Called once the server started: from now on dropping the table releases `user_data`.
    pub(crate) fn take_user_data(&self) {
        self.owns_user_data.store(true, Ordering::Release);
    }
}

impl Drop for HostTable {
    fn drop(&mut self) {
        if let (true, Some(drop_fn)) = (self.owns_user_data.load(Ordering::Acquire), self.table.user_data_drop) {
            // SAFETY: the server owned `user_data` (it started); this is the last reference to
            // the table, so no callback can run any more and this runs exactly once.
            unsafe { drop_fn(self.table.user_data) };
        }
    }
}

/// The core's `Hooks` over a C table.
pub(crate) struct HostHooks(pub(crate) Arc<HostTable>);

impl Hooks for HostHooks {
    fn authenticate(&self, info: HandshakeInfo, identity: Arc<Identity>) -> HookFuture<AuthenticateAnswer> {
        let Some(callback) = self.0.table.authenticate else { return Box::pin(ready(AuthenticateAnswer::Allow)) };
        let host = Arc::clone(&self.0);
        run_blocking(
            move || {
                let texts = [
                    LentText::new(&info.client_ip.to_string()),
                    LentText::new(info.origin.as_deref().unwrap_or_default()),
                    LentText::new(info.user_agent.as_deref().unwrap_or_default()),
                    LentText::new(&identity.subject),
                    LentText::json(identity.as_ref()),
                ];
                let optional = |present: bool, text: &LentText| if present { text.view() } else { wsg_str::ABSENT };
                let handshake = wsg_handshake {
                    client_ip: texts[0].view(),
                    origin: optional(info.origin.is_some(), &texts[1]),
                    user_agent: optional(info.user_agent.is_some(), &texts[2]),
                    subject: texts[3].view(),
                    identity_json: texts[4].view(),
                };
                let mut answer = wsg_authenticate_answer { answer: None };
                // SAFETY: a C function pointer the host supplied for this signature; `handshake`,
                // the texts it points into and `answer` outlive the call.
                let decision = unsafe { callback(host.table.user_data, &handshake, &mut answer) };
                match (decision, answer.answer) {
                    (WSG_DECISION_ALLOW, None) => AuthenticateAnswer::Allow,
                    (WSG_DECISION_ALLOW, Some(Ok(answer))) => answer,
                    (WSG_DECISION_ALLOW, Some(Err(invalid))) => AuthenticateAnswer::Deny(invalid),
                    _ => AuthenticateAnswer::Deny("refused by the host's authenticate callback".to_string()),
                }
            },
            AuthenticateAnswer::Deny("the authenticate callback could not run".to_string()),
        )
    }

    fn authorize(&self, request: AuthorizeRequest) -> HookFuture<Decision> {
        let Some(callback) = self.0.table.authorize else { return Box::pin(ready(Decision::Allow)) };
        let host = Arc::clone(&self.0);
        run_blocking(
            move || {
                let channel = LentText::new(&request.channel);
                let subject = LentText::new(&request.identity.subject);
                let identity = LentText::json(&request.identity);
                let question = wsg_authorize_request {
                    session_id: request.session_id,
                    action: match request.action {
                        ChannelAction::Subscribe => WSG_CHANNEL_ACTION_SUBSCRIBE,
                        ChannelAction::Publish => WSG_CHANNEL_ACTION_PUBLISH,
                        ChannelAction::History => WSG_CHANNEL_ACTION_HISTORY,
                    },
                    channel: channel.view(),
                    subject: subject.view(),
                    identity_json: identity.view(),
                };
                // SAFETY: a C function pointer the host supplied for this signature; `question`
                // and the texts it points into outlive the call.
                match unsafe { callback(host.table.user_data, &question) } {
                    WSG_DECISION_ALLOW => Decision::Allow,
                    _ => Decision::Deny,
                }
            },
            Decision::Deny,
        )
    }

    fn rpc(&self, call: RpcCall) -> HookFuture<Result<Value, RpcError>> {
        let Some(callback) = self.0.table.rpc else { return Box::pin(ready(Err(RpcError::UnknownMethod))) };
        let (handle, answer) = wsg_rpc_call::new(call);
        let host = Arc::clone(&self.0);
        // The handle moves into the closure boxed: if the pool never runs it (runtime shutting
        // down), dropping it drops the reply sender and the call fails closed.
        let invoked = run_blocking(
            move || {
                let call = Box::into_raw(handle);
                // SAFETY: a C function pointer the host supplied for this signature; ownership of
                // `call` passes to the host, which completes or frees it exactly once.
                unsafe { callback(host.table.user_data, call) };
            },
            (),
        );
        Box::pin(async move {
            invoked.await;
            // The core's time box (`limits.rpc_timeout_secs`) drops this future when it ends; a
            // later completion then finds the receiver gone.
            answer
                .await
                .unwrap_or_else(|_| Err(RpcError::Failed("the handler dropped the call without answering".into())))
        })
    }

    fn on_event(&self, event: &Event) -> HookFuture<()> {
        let Some(callback) = self.0.table.event else { return Box::pin(ready(())) };
        let json = LentText::json(event);
        let host = Arc::clone(&self.0);
        // On the blocking pool like every other callback; the core's event queue awaits it, so
        // events stay in order and a slow callback fills (and is counted by) that one queue.
        run_blocking(
            move || {
                let view = json.view();
                // SAFETY: a C function pointer the host supplied for this signature; the text
                // outlives the call.
                unsafe { callback(host.table.user_data, view.data, view.len) }
            },
            (),
        )
    }
}

#[cfg(test)]
mod tests {
    /// The event callback's documentation in the committed header names every event kind the core
    /// emits (each variant of `wsguard::Event`, snake_case), so a new kind cannot go unlisted.
    #[test]
    fn header_lists_every_event_kind() {
        let header = include_str!("../../include/wsguard.h");
        let events = include_str!("../../core/src/observe/events.rs");
        let body = &events[events.find("pub enum Event {").expect("the Event enum")..];
        let body = &body[..body.find("\n}\n").expect("its end")];
        let kinds: Vec<String> = body
            .lines()
            .filter_map(|line| line.strip_prefix("    ")?.strip_suffix(" {"))
            .filter(|name| name.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
            .map(|name| {
                name.chars().enumerate().fold(String::new(), |mut kind, (i, c)| {
                    if c.is_ascii_uppercase() && i > 0 {
                        kind.push('_');
                    }
                    kind.push(c.to_ascii_lowercase());
                    kind
                })
            })
            .collect();
        assert!(kinds.len() >= 12, "found only {kinds:?}");
        let doc = &header[..header.find("typedef void (*wsg_event_callback)").expect("the event callback")];
        let doc = &doc[doc.rfind("/**").expect("its doc")..];
        for kind in kinds {
            assert!(doc.contains(&format!("`{kind}`")), "wsg_event_callback's doc lacks `{kind}`");
        }
    }
}
