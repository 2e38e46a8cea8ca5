//! `wsg_server_send`, `wsg_server_disconnect_with`, `wsg_server_subscribe`,
//! `wsg_server_unsubscribe`, `wsg_server_sessions_json` and `wsg_server_channels_json`: the
//! core's server-side session operations and listings (`ServerHandle::send`, `disconnect_with`,
//! `subscribe`, `unsubscribe`, `sessions`, `channels`). Which sessions a [`wsg_target`] names,
//! the close code range, the page limits and every other rule are the core's (`wsguard::host`);
//! results are the core's JSON.

use std::ffi::c_char;

use wsguard::{Target, host};

use crate::boundary::{borrow_bytes, borrow_handle, borrow_str, give_string, parse_json, require_out, write_out};
use crate::result::{Failure, WSG_PANIC, guard, wsg_result};
use crate::server::wsg_server;

/// Which sessions an operation reaches: exactly one of a session (`has_session_id` and
/// `session_id`, optionally on the node `node`) or a user (`user`, the `sub` claim, on every
/// node). Unused text fields are NULL with length 0. The caller owns the struct and its buffers;
/// they are only read during the call.
#[repr(C)]
#[derive(Debug)]
pub struct wsg_target {
    /// True when `session_id` names the session.
    pub has_session_id: bool,
    /// The session id (node-local: events, listings, `wsg_authorize_request`).
    pub session_id: u64,
    /// The user (`user_len` bytes of UTF-8), or NULL.
    pub user: *const c_char,
    /// Length of `user` in bytes.
    pub user_len: usize,
    /// The node that holds the session (`cluster.node_id`; `node_len` bytes), or NULL for this
    /// node.
    pub node: *const c_char,
    /// Length of `node` in bytes.
    pub node_len: usize,
}

/// An optional text argument: NULL is `None`.
///
/// # Safety
///
/// `data` must be NULL or readable for `len` bytes.
pub(crate) unsafe fn optional_str<'a>(
    data: *const c_char,
    len: usize,
    argument: &str,
) -> Result<Option<&'a str>, Failure> {
    if data.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract.
    unsafe { borrow_str(data, len, argument) }.map(Some)
}

/// The core's target from a `wsg_target`.
///
/// # Safety
///
/// `target` must be NULL or point to a `wsg_target` whose buffers follow its contract.
unsafe fn target(target: *const wsg_target) -> Result<Target, Failure> {
    // SAFETY: forwarded caller contract.
    let target = unsafe { borrow_handle(target, "target") }?;
    // SAFETY: forwarded caller contract on the struct's buffers.
    let (user, node) = unsafe {
        (optional_str(target.user, target.user_len, "user")?, optional_str(target.node, target.node_len, "node")?)
    };
    Ok(host::target(target.has_session_id.then_some(target.session_id), user, node)?)
}

/// Writes `value` as JSON to `*json_out` (when not NULL) and its length to `*len_out` (when not
/// NULL).
///
/// # Safety
///
/// `json_out` and `len_out` NULL or valid for one write.
pub(crate) unsafe fn write_json(
    value: &impl serde::Serialize,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> Result<(), Failure> {
    if json_out.is_null() {
        return Ok(());
    }
    let json = serde_json::to_string(value).map_err(|e| Failure::new(WSG_PANIC, format!("cannot serialize: {e}")))?;
    let (json, len) = give_string(json);
    // SAFETY: caller contract.
    unsafe {
        write_out(json_out, json);
        write_out(len_out, len);
    }
    Ok(())
}

/// Sends a JSON object (`payload_len` bytes of JSON text) to the sessions of `target` as a
/// `{"type":"push","payload":...}` frame, outside any channel (docs/PROTOCOL.md). On success
/// `*applied_json_out` (which may be NULL) receives the result as a JSON object (`node`,
/// `matched`, `changed`, `at_limit`, `is_forwarded`), freed with `wsg_string_free`, and
/// `*len_out` (which may be NULL) its length.
///
/// Errors: `WSG_INVALID_ARGUMENT` (the target), `WSG_UNKNOWN_SESSION`, `WSG_INVALID_JSON`,
/// `WSG_INVALID_FRAME` (not an object), `WSG_PAYLOAD_TOO_DEEP`, `WSG_PAYLOAD_TOO_LARGE`,
/// `WSG_NOT_RUNNING`, `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread, including hook
/// callbacks.
///
/// # Safety
///
/// `server` must be a live server; `target` a valid `wsg_target`; `payload_json` readable for
/// `payload_len` bytes; the out-pointers NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_send(
    server: *const wsg_server,
    target: *const wsg_target,
    payload_json: *const c_char,
    payload_len: usize,
    applied_json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_send", || {
        // SAFETY: caller contract on every pointer.
        let (server, target, payload) = unsafe {
            (
                borrow_handle(server, "server")?,
                self::target(target)?,
                borrow_bytes(payload_json, payload_len, "payload_json")?,
            )
        };
        let applied = server.handle.send(&target, &parse_json(payload, "payload_json")?)?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&applied, applied_json_out, len_out) }
    })
}

/// Closes the sessions of `target` with close code `code` (4000-4999 except 4000, 4002, 4003,
/// 4100 and 4501: docs/PROTOCOL.md §3) and the reason `reason` (`reason_len` bytes of UTF-8, at
/// most 123; NULL or empty: `disconnected`). The result as for `wsg_server_send`.
///
/// Errors: `WSG_INVALID_ARGUMENT` (target, code or reason), `WSG_UNKNOWN_SESSION`,
/// `WSG_NOT_RUNNING`, `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// As `wsg_server_send`; `reason` NULL or readable for `reason_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_disconnect_with(
    server: *const wsg_server,
    target: *const wsg_target,
    code: u16,
    reason: *const c_char,
    reason_len: usize,
    applied_json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_disconnect_with", || {
        // SAFETY: caller contract on every pointer.
        let (server, target, reason) = unsafe {
            (borrow_handle(server, "server")?, self::target(target)?, optional_str(reason, reason_len, "reason")?)
        };
        let applied = server.handle.disconnect_with(&target, code, reason.unwrap_or_default())?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&applied, applied_json_out, len_out) }
    })
}

/// Subscribes or unsubscribes on behalf of `wsg_server_subscribe` and `wsg_server_unsubscribe`.
///
/// # Safety
///
/// As `wsg_server_subscribe`.
unsafe fn subscription(
    function: &str,
    is_subscribe: bool,
    server: *const wsg_server,
    target: *const wsg_target,
    channel: (*const c_char, usize),
    applied_json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard(function, || {
        // SAFETY: forwarded caller contract on every pointer.
        let (server, target, channel) = unsafe {
            (borrow_handle(server, "server")?, self::target(target)?, borrow_str(channel.0, channel.1, "channel")?)
        };
        let applied = if is_subscribe {
            server.handle.subscribe(&target, channel)?
        } else {
            server.handle.unsubscribe(&target, channel)?
        };
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&applied, applied_json_out, len_out) }
    })
}

/// Subscribes the sessions of `target` to `channel` (`channel_len` bytes). A server-made
/// subscription bypasses the channel rules and hooks (the host is trusted), counts towards
/// `limits.max_subscriptions` (a session at the cap is left out: `at_limit`) and survives
/// reloads; the client gets a `subscribed` frame (docs/OPERATIONS.md). The result as for
/// `wsg_server_send`.
///
/// Errors: `WSG_INVALID_ARGUMENT` (the target), `WSG_INVALID_CHANNEL`, `WSG_UNKNOWN_SESSION`,
/// `WSG_NOT_RUNNING`, `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// As `wsg_server_send`; `channel` readable for `channel_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_subscribe(
    server: *const wsg_server,
    target: *const wsg_target,
    channel: *const c_char,
    channel_len: usize,
    applied_json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        subscription("wsg_server_subscribe", true, server, target, (channel, channel_len), applied_json_out, len_out)
    }
}

/// Unsubscribes the sessions of `target` from `channel`, whoever made the subscription; the
/// client gets an `unsubscribed` frame with the reason `server`. The result, errors and safety
/// as for `wsg_server_subscribe`.
///
/// # Safety
///
/// As `wsg_server_subscribe`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_unsubscribe(
    server: *const wsg_server,
    target: *const wsg_target,
    channel: *const c_char,
    channel_len: usize,
    applied_json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        subscription("wsg_server_unsubscribe", false, server, target, (channel, channel_len), applied_json_out, len_out)
    }
}

/// One page of this node's sessions (of `user` only, unless NULL) as a JSON object: `node`,
/// `sessions` (each `id`, `user`, `client_ip`, `connected_at_ms`, `subscriptions`) in id order,
/// and `next_cursor` (null on the last page). `has_cursor`/`cursor`: the previous page's
/// `next_cursor`; `limit`: 1 to 1000. `*json_out` is freed with `wsg_string_free`; `*len_out`
/// (which may be NULL) receives its length.
///
/// Errors: `WSG_INVALID_ARGUMENT` (limit), `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `server` must be a live server; `user` NULL or readable for `user_len` bytes; `json_out` valid
/// for one write; `len_out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_sessions_json(
    server: *const wsg_server,
    user: *const c_char,
    user_len: usize,
    has_cursor: bool,
    cursor: u64,
    limit: u64,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_sessions_json", || {
        // SAFETY: caller contract on `server` and `user`.
        let (server, user) = unsafe { (borrow_handle(server, "server")?, optional_str(user, user_len, "user")?) };
        require_out(json_out, "json_out")?;
        let limit = host::page_limit(Some(limit))?;
        let page = server.handle.sessions(user, has_cursor.then_some(cursor), limit)?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&page, json_out, len_out) }
    })
}

/// One page of this node's channels with subscribers as a JSON object: `node`, `channels` (each
/// `channel`, `subscribers`) in name order, and `next_cursor` (null on the last page). `pattern`
/// (NULL: every channel) uses the channel-rule syntax (`{name}` for any one segment); `cursor`
/// (NULL: the first page) is the previous page's `next_cursor`; `limit`: 1 to 1000. Output as
/// for `wsg_server_sessions_json`.
///
/// Errors: `WSG_INVALID_ARGUMENT` (limit, pattern), `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`.
/// Any thread.
///
/// # Safety
///
/// `server` must be a live server; `pattern` and `cursor` NULL or readable for their lengths;
/// `json_out` valid for one write; `len_out` NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_channels_json(
    server: *const wsg_server,
    pattern: *const c_char,
    pattern_len: usize,
    cursor: *const c_char,
    cursor_len: usize,
    limit: u64,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_channels_json", || {
        // SAFETY: caller contract on every pointer.
        let (server, pattern, cursor) = unsafe {
            (
                borrow_handle(server, "server")?,
                optional_str(pattern, pattern_len, "pattern")?,
                optional_str(cursor, cursor_len, "cursor")?,
            )
        };
        require_out(json_out, "json_out")?;
        let limit = host::page_limit(Some(limit))?;
        let page = server.handle.channels(pattern, cursor, limit)?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&page, json_out, len_out) }
    })
}
