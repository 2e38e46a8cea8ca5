//! `wsg_server_history_json`, `wsg_server_presence_json` and `wsg_server_presence_stats_json`:
//! the host's reads of a channel's history and presence (`wsguard::host::history`, `presence`,
//! `presence_stats`). The optional arguments, the page limits and the JSON shapes are the core's;
//! the presence reads wait on the server's runtime (so they are refused on its own threads).

use std::ffi::c_char;

use wsguard::host;

use crate::boundary::{borrow_handle, borrow_str, require_out};
use crate::result::{guard, wsg_result};
use crate::server::wsg_server;
use crate::sessions::{optional_str, write_json};

/// One page of `channel`'s kept publications (its rule's `history_size`, `history_ttl_secs`), as
/// a JSON object: `offset` and `epoch` (the channel's position when read) and `publications`
/// (each `offset`, `payload`). `has_since`, `since_offset` and `since_epoch` (NULL unless
/// `has_since`): a position; oldest first after it, or newest first before it when
/// `is_newest_first`; without it from the oldest or the newest kept. `limit`: 1 to 1000, 0 for
/// the default (100). The host is trusted: the rule's `history` requirement does not apply.
/// `*json_out` is freed with `wsg_string_free`; `*len_out` (which may be NULL) receives its length.
///
/// Errors: `WSG_INVALID_CHANNEL`, `WSG_HISTORY_NOT_KEPT`, `WSG_HISTORY_LIMIT_INVALID`,
/// `WSG_HISTORY_OFFSET_AHEAD`, `WSG_HISTORY_EPOCH_CHANGED`, `WSG_INVALID_ARGUMENT` (an epoch
/// without `has_since`, or `has_since` without one), `WSG_NOT_RUNNING`, `WSG_INVALID_UTF8`,
/// `WSG_NULL_ARGUMENT`. Any thread, including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; `channel` readable for `channel_len` bytes; `since_epoch` NULL
/// or readable for `since_epoch_len` bytes; `json_out` valid for one write; `len_out` NULL or
/// valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_history_json(
    server: *const wsg_server,
    channel: *const c_char,
    channel_len: usize,
    has_since: bool,
    since_offset: u64,
    since_epoch: *const c_char,
    since_epoch_len: usize,
    limit: u64,
    is_newest_first: bool,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_history_json", || {
        // SAFETY: caller contract on every pointer.
        let (server, channel, epoch) = unsafe {
            (
                borrow_handle(server, "server")?,
                borrow_str(channel, channel_len, "channel")?,
                optional_str(since_epoch, since_epoch_len, "since_epoch")?,
            )
        };
        require_out(json_out, "json_out")?;
        let limit = (limit != 0).then_some(limit);
        let page =
            host::history(&server.handle, channel, has_since.then_some(since_offset), epoch, limit, is_newest_first)?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&page, json_out, len_out) }
    })
}

/// One page of `channel`'s members, cluster-wide, as a JSON object: `members` (each `user`,
/// `sessions` and the `claims` its rule's `presence_claims` lists, when any) ordered by user,
/// and `next` (the `after` of the next page; null on the last). `after` (NULL: the first page);
/// `limit`: 1 to 1000, 0 for the default (100). The rule's `presence_access` does not apply.
/// Output as for `wsg_server_history_json`. Blocking (it may wait for Redis).
///
/// Errors: `WSG_INVALID_CHANNEL`, `WSG_INVALID_ARGUMENT` (limit), `WSG_PRESENCE_NOT_TRACKED`,
/// `WSG_PRESENCE_UNAVAILABLE`, `WSG_NOT_RUNNING`, `WSG_WRONG_THREAD` (called from a hook
/// callback), `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread but the server's own.
///
/// # Safety
///
/// `server` must be a live server; `channel` readable for `channel_len` bytes; `after` NULL or
/// readable for `after_len` bytes; the out-pointers as for `wsg_server_history_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_presence_json(
    server: *const wsg_server,
    channel: *const c_char,
    channel_len: usize,
    after: *const c_char,
    after_len: usize,
    limit: u64,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_presence_json", || {
        // SAFETY: caller contract on every pointer.
        let (server, channel, after) = unsafe {
            (
                borrow_handle(server, "server")?,
                borrow_str(channel, channel_len, "channel")?,
                optional_str(after, after_len, "after")?,
            )
        };
        require_out(json_out, "json_out")?;
        let page = host::presence(&server.handle, channel, (limit != 0).then_some(limit), after)?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&page, json_out, len_out) }
    })
}

/// `channel`'s presence counts, cluster-wide, as a JSON object: `users` (distinct) and
/// `clients` (sessions). Output, errors (but `WSG_INVALID_ARGUMENT`) and threads as for
/// `wsg_server_presence_json`.
///
/// # Safety
///
/// `server` must be a live server; `channel` readable for `channel_len` bytes; the out-pointers
/// as for `wsg_server_history_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_presence_stats_json(
    server: *const wsg_server,
    channel: *const c_char,
    channel_len: usize,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_presence_stats_json", || {
        // SAFETY: caller contract on every pointer.
        let (server, channel) =
            unsafe { (borrow_handle(server, "server")?, borrow_str(channel, channel_len, "channel")?) };
        require_out(json_out, "json_out")?;
        let stats = host::presence_stats(&server.handle, channel)?;
        // SAFETY: caller contract on the out-pointers.
        unsafe { write_json(&stats, json_out, len_out) }
    })
}
