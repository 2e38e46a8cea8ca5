//! `wsg_rpc_call`: one RPC handed to the host, completed exactly once (now or later, from any
//! thread) through a oneshot channel the core's RPC future awaits.
//!
//! The handle owns copies of everything it shows and only the sending half of the channel, so it
//! never refers to the server: completing it after the time box, after the session closed or
//! after the server was freed is safe and has no effect on the client.

use std::ffi::c_char;

use serde_json::Value;
use tokio::sync::oneshot;
use wsguard::hooks::{RpcCall, RpcError};

use crate::boundary::{LentText, borrow_bytes, borrow_str, parse_json, wsg_str};
use crate::result::{Failure, WSG_HOOK_TIMEOUT, guard, guard_infallible, wsg_result};

/// One RPC call from a client (opaque), owned by the host from the moment the `rpc` callback
/// receives it until it is completed by exactly one of `wsg_rpc_call_respond`,
/// `wsg_rpc_call_fail` or `wsg_rpc_call_free`, each of which frees it. The accessors may be used
/// from any thread until then, but not concurrently with its completion.
#[allow(non_camel_case_types)]
pub struct wsg_rpc_call {
    session_id: u64,
    method: LentText,
    payload_json: LentText,
    subject: LentText,
    identity_json: LentText,
    reply: oneshot::Sender<Result<Value, RpcError>>,
}

impl wsg_rpc_call {
    pub(crate) fn new(call: RpcCall) -> (Box<wsg_rpc_call>, oneshot::Receiver<Result<Value, RpcError>>) {
        let (reply, answer) = oneshot::channel();
        let handle = wsg_rpc_call {
            session_id: call.session_id,
            method: LentText::new(&call.method),
            payload_json: LentText::json(&call.payload),
            subject: LentText::new(&call.identity.subject),
            identity_json: LentText::json(&call.identity),
            reply,
        };
        (Box::new(handle), answer)
    }

    /// Sends the answer; a gone receiver means the client was already answered for us.
    fn complete(self, answer: Result<Value, RpcError>) -> Result<(), Failure> {
        self.reply.send(answer).map_err(|_| {
            Failure::new(
                WSG_HOOK_TIMEOUT,
                "the call was already answered without this result (limits.rpc_timeout_secs elapsed, or the session or server closed)",
            )
        })
    }
}

/// Takes ownership of a call handle back from C.
///
/// # Safety
///
/// `call` must be a live handle from the `rpc` callback, not yet completed; it is consumed.
unsafe fn take(call: *mut wsg_rpc_call) -> Result<wsg_rpc_call, Failure> {
    if call.is_null() {
        return Err(Failure::null("call"));
    }
    // SAFETY: the handle came from `Box::into_raw` in `HostHooks::rpc` and is completed exactly
    // once (caller contract).
    Ok(*unsafe { Box::from_raw(call) })
}

/// Reads a field of a live call; NULL gives `fallback`.
///
/// # Safety
///
/// `call` must be NULL or a live, not yet completed handle.
unsafe fn read<T>(call: *const wsg_rpc_call, fallback: T, field: impl FnOnce(&wsg_rpc_call) -> T) -> T {
    // SAFETY: caller contract (NULL or live); `as_ref` maps NULL to None.
    match unsafe { call.as_ref() } {
        Some(call) => guard_infallible(fallback, || field(call)),
        None => fallback,
    }
}

/// The session that made the call (0 when `call` is NULL).
///
/// # Safety
///
/// `call` must be NULL or a live, not yet completed call handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_session_id(call: *const wsg_rpc_call) -> u64 {
    // SAFETY: forwarded caller contract.
    unsafe { read(call, 0, |c| c.session_id) }
}

/// The method name (declared in `[[rpc]]`), valid until the call is completed (absent when `call`
/// is NULL).
///
/// # Safety
///
/// `call` must be NULL or a live, not yet completed call handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_method(call: *const wsg_rpc_call) -> wsg_str {
    // SAFETY: forwarded caller contract.
    unsafe { read(call, wsg_str::ABSENT, |c| c.method.view()) }
}

/// The call's payload as JSON text (an object; `{}` when the client sent none), valid until the
/// call is completed.
///
/// # Safety
///
/// `call` must be NULL or a live, not yet completed call handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_payload_json(call: *const wsg_rpc_call) -> wsg_str {
    // SAFETY: forwarded caller contract.
    unsafe { read(call, wsg_str::ABSENT, |c| c.payload_json.view()) }
}

/// The caller's verified `sub` claim, valid until the call is completed.
///
/// # Safety
///
/// `call` must be NULL or a live, not yet completed call handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_subject(call: *const wsg_rpc_call) -> wsg_str {
    // SAFETY: forwarded caller contract.
    unsafe { read(call, wsg_str::ABSENT, |c| c.subject.view()) }
}

/// The caller's verified identity as JSON (see `wsg_handshake.identity_json`), valid until the
/// call is completed.
///
/// # Safety
///
/// `call` must be NULL or a live, not yet completed call handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_identity_json(call: *const wsg_rpc_call) -> wsg_str {
    // SAFETY: forwarded caller contract.
    unsafe { read(call, wsg_str::ABSENT, |c| c.identity_json.view()) }
}

/// Answers the call with `len` bytes of JSON text (any JSON value) at `json`; the client receives
/// it as `{"type":"result","payload":...}`. Consumes `call` in every case, including errors.
///
/// Errors: `WSG_INVALID_JSON` / `WSG_INVALID_UTF8` (the client gets `rpc_failed` instead),
/// `WSG_HOOK_TIMEOUT` (the time box had already answered the client, or the session or server
/// is gone: this answer was discarded, which is harmless), `WSG_NULL_ARGUMENT`. Any thread,
/// including inside the `rpc` callback.
///
/// # Safety
///
/// `call` must be a live call handle, not yet completed; it must not be used afterwards. `json`
/// must point to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_respond(call: *mut wsg_rpc_call, json: *const c_char, len: usize) -> wsg_result {
    guard("wsg_rpc_call_respond", || {
        // SAFETY: caller contract on `call`.
        let call = unsafe { take(call) }?;
        // SAFETY: caller contract on `json` / `len`.
        let parsed = unsafe { borrow_bytes(json, len, "json") }.and_then(|bytes| parse_json(bytes, "json"));
        match parsed {
            Ok(value) => call.complete(Ok(value)),
            Err(failure) => {
                let _ = call.complete(Err(RpcError::Failed("the handler returned an invalid result".into())));
                Err(failure)
            }
        }
    })
}

/// Fails the call: the client receives the reply error `rpc_failed` with this message (`len`
/// bytes of UTF-8; keep it free of internals). Consumes `call` in every case, including errors.
///
/// Errors: `WSG_INVALID_UTF8` (the client still gets `rpc_failed`, with a generic message),
/// `WSG_HOOK_TIMEOUT` (already answered; discarded), `WSG_NULL_ARGUMENT`. Any thread, including
/// inside the `rpc` callback.
///
/// # Safety
///
/// `call` must be a live call handle, not yet completed; it must not be used afterwards.
/// `message` must point to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_fail(call: *mut wsg_rpc_call, message: *const c_char, len: usize) -> wsg_result {
    guard("wsg_rpc_call_fail", || {
        // SAFETY: caller contract on `call`.
        let call = unsafe { take(call) }?;
        // SAFETY: caller contract on `message` / `len`.
        match unsafe { borrow_str(message, len, "message") } {
            Ok(text) => call.complete(Err(RpcError::Failed(text.to_string()))),
            Err(failure) => {
                let _ = call.complete(Err(RpcError::Failed("the handler failed".into())));
                Err(failure)
            }
        }
    })
}

/// Abandons the call without an answer: the client receives `rpc_failed`. Frees `call`;
/// `wsg_rpc_call_free(NULL)` is a no-op. Any thread.
///
/// # Safety
///
/// `call` must be NULL or a live call handle, not yet completed; it must not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_rpc_call_free(call: *mut wsg_rpc_call) {
    guard_infallible((), || {
        // SAFETY: caller contract on `call`; dropping the handle drops the reply sender, which
        // the waiting RPC future turns into `rpc_failed`.
        let _ = unsafe { take(call) };
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::result::{WSG_INVALID_JSON, WSG_OK};
    use wsguard::Identity;

    fn call() -> (*mut wsg_rpc_call, oneshot::Receiver<Result<Value, RpcError>>) {
        let identity = Identity {
            subject: "alice".into(),
            roles: vec![],
            scopes: vec![],
            expires_at: 0,
            issued_at: None,
            token_id: None,
            claims: Default::default(),
        };
        let rpc = RpcCall {
            session_id: 7,
            identity: Arc::new(identity),
            method: "echo".into(),
            payload: serde_json::json!({}),
        };
        let (handle, answer) = wsg_rpc_call::new(rpc);
        (Box::into_raw(handle), answer)
    }

    fn text(s: wsg_str) -> &'static str {
        // SAFETY: test-only; the handle outlives every use of the view below.
        std::str::from_utf8(unsafe { std::slice::from_raw_parts(s.data.cast::<u8>(), s.len) }).unwrap_or("")
    }

    #[test]
    fn respond_delivers_once_and_late_answers_are_refused() {
        let (handle, mut answer) = call();
        // SAFETY: `handle` is live until respond consumes it.
        unsafe {
            assert_eq!(wsg_rpc_call_session_id(handle), 7);
            assert_eq!(text(wsg_rpc_call_method(handle)), "echo");
            assert_eq!(text(wsg_rpc_call_subject(handle)), "alice");
            assert_eq!(text(wsg_rpc_call_payload_json(handle)), "{}");
            assert_eq!(wsg_rpc_call_respond(handle, c"[1]".as_ptr(), 3), WSG_OK);
        }
        assert_eq!(answer.try_recv().ok(), Some(Ok(serde_json::json!([1]))));

        let (handle, answer) = call();
        drop(answer); // the core's time box elapsed
        // SAFETY: live handle, consumed here.
        assert_eq!(unsafe { wsg_rpc_call_fail(handle, c"x".as_ptr(), 1) }, WSG_HOOK_TIMEOUT);
    }

    #[test]
    fn invalid_results_and_dropped_calls_fail_the_rpc() {
        let (handle, mut answer) = call();
        // SAFETY: live handle, consumed here.
        assert_eq!(unsafe { wsg_rpc_call_respond(handle, c"{".as_ptr(), 1) }, WSG_INVALID_JSON);
        assert!(matches!(answer.try_recv(), Ok(Err(RpcError::Failed(_)))));
        let (handle, mut answer) = call();
        // SAFETY: live handle, consumed here.
        unsafe { wsg_rpc_call_free(handle) };
        assert!(answer.try_recv().is_err(), "the sender is gone: the core answers rpc_failed");
    }
}
