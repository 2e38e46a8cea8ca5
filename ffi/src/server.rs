//! `wsg_server`: a running server (the core's `EmbeddedServer`, which owns its runtime threads)
//! and the control functions over its `ServerHandle`.

use std::ffi::c_char;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wsguard::auth::Revocation;
use wsguard::hooks::Hooks;
use wsguard::{EmbeddedServer, NoHooks, ServerHandle};

use crate::boundary::{borrow_bytes, borrow_handle, borrow_str, give_string, parse_json, require_out, write_out};
use crate::config::wsg_config;
use crate::hooks::{HostHooks, HostTable, wsg_hooks};
use crate::result::{Failure, WSG_INVALID_ARGUMENT, guard, guard_infallible, wsg_result};

/// A running (or stopped) server (opaque). Created by `wsg_server_start`, freed by
/// `wsg_server_free`. Every function taking a `const wsg_server *` may be called from any thread,
/// concurrently, including from inside hook callbacks.
#[allow(non_camel_case_types)]
pub struct wsg_server {
    pub(crate) handle: ServerHandle,
    embedded: Mutex<EmbeddedServer>,
}

/// Refuses to block on a server's runtime from one of its own threads (a hook callback), where
/// `block_on` would panic or the wait would deadlock: the core's one check.
fn refuse_on_runtime_thread(function: &'static str) -> Result<(), Failure> {
    Ok(wsguard::host::refuse_on_server_thread(function)?)
}

/// Starts a server: loads the secret, keys and certificates the configuration names, binds the
/// listener (`server.listen`; port 0 picks a free port, see `wsg_server_local_port`) and serves on
/// the server's own runtime threads. Returns as soon as the listener is bound.
///
/// `config` is copied (it may be freed right away). `hooks` may be NULL (no callbacks); the table
/// is copied, and on success the server owns `hooks->user_data` (see `wsg_hooks.user_data_drop`);
/// on failure the caller keeps it and no callback is ever called.
///
/// On success `*server_out` receives a server the caller owns: stop it with `wsg_server_stop`
/// and free it with `wsg_server_free`. Errors: `WSG_CONFIG_FILE`, `WSG_CONFIG_SECRET_MISSING`,
/// `WSG_CONFIG_INVALID` (every problem with its key path), `WSG_IO` (the address cannot be
/// bound), `WSG_WRONG_THREAD` (called from a hook callback), `WSG_NULL_ARGUMENT`. Blocking (for
/// the bind); any thread of your own.
///
/// # Safety
///
/// `config` must be a live configuration; `hooks` NULL or a readable `wsg_hooks` whose callbacks
/// honour the contract in its documentation; `server_out` valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_start(
    config: *const wsg_config,
    hooks: *const wsg_hooks,
    server_out: *mut *mut wsg_server,
) -> wsg_result {
    guard("wsg_server_start", || {
        // SAFETY: caller contract on `config`.
        let config = unsafe { borrow_handle(config, "config") }?;
        require_out(server_out, "server_out")?;
        refuse_on_runtime_thread("wsg_server_start")?;
        // SAFETY: caller contract: NULL or a readable `wsg_hooks`, copied here.
        let table = unsafe { hooks.as_ref() }.map(|h| Arc::new(HostTable::new(*h)));
        let core_hooks: Arc<dyn Hooks> = match &table {
            Some(table) => Arc::new(HostHooks(Arc::clone(table))),
            None => Arc::new(NoHooks),
        };
        let embedded = EmbeddedServer::start(config.config.clone(), core_hooks, None, 0)?;
        if let Some(table) = &table {
            table.take_user_data();
        }
        let server = Box::new(wsg_server { handle: embedded.handle().clone(), embedded: Mutex::new(embedded) });
        // SAFETY: `server_out` checked non-NULL; valid for one write by the caller's contract.
        unsafe { write_out(server_out, Box::into_raw(server)) };
        Ok(())
    })
}

/// Stops the server gracefully: stops accepting, closes every session with close code 1001
/// ("going away"), waits for them to finish for up to `grace_secs` seconds (a negative value means
/// the configured `server.shutdown_grace_secs`), drops the rest, then stops the runtime threads.
/// Blocks until done. Idempotent: stopping a stopped server returns `WSG_OK`.
///
/// Errors: `WSG_INVALID_ARGUMENT` (NaN or infinite grace), `WSG_WRONG_THREAD` (called from a hook
/// callback), `WSG_NULL_ARGUMENT`. Any thread of your own; concurrent calls wait for each other.
///
/// # Safety
///
/// `server` must be a live server from `wsg_server_start`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_stop(server: *mut wsg_server, grace_secs: f64) -> wsg_result {
    guard("wsg_server_stop", || {
        // SAFETY: caller contract on `server`.
        let server = unsafe { borrow_handle(server.cast_const(), "server") }?;
        let grace = if grace_secs.is_nan() || grace_secs.is_infinite() {
            return Err(Failure::new(WSG_INVALID_ARGUMENT, format!("grace_secs must be finite, got {grace_secs}")));
        } else if grace_secs < 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(grace_secs))
        };
        refuse_on_runtime_thread("wsg_server_stop")?;
        server.embedded.lock().unwrap_or_else(PoisonError::into_inner).stop(grace)?;
        Ok(())
    })
}

/// Frees a server. A server still running is stopped at once without grace (sessions are
/// dropped); this never blocks. `wsg_server_free(NULL)` is a no-op. The hooks' `user_data_drop`
/// runs during this call when the server was stopped first, otherwise shortly after on a server
/// thread. No other call may use `server` concurrently or afterwards.
///
/// # Safety
///
/// `server` must be NULL or a server from `wsg_server_start`, not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_free(server: *mut wsg_server) {
    guard_infallible((), || {
        if server.is_null() {
            return;
        }
        // SAFETY: the pointer came from `Box::into_raw` in `wsg_server_start` and is freed exactly
        // once (caller contract).
        let server = unsafe { Box::from_raw(server) };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside a hook callback: never tear a runtime down from one of its own threads.
            let _ = std::thread::Builder::new().name("wsguard-free".into()).spawn(move || drop(server));
        }
    })
}

/// The bound TCP port (useful with `server.listen = "127.0.0.1:0"`). On success writes
/// `*port_out`. Errors: `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `server` must be a live server; `port_out` valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_local_port(server: *const wsg_server, port_out: *mut u16) -> wsg_result {
    guard("wsg_server_local_port", || {
        // SAFETY: caller contract on `server`.
        let server = unsafe { borrow_handle(server, "server") }?;
        require_out(port_out, "port_out")?;
        // SAFETY: checked non-NULL; valid for one write by the caller's contract.
        unsafe { write_out(port_out, server.handle.local_addr().port()) };
        Ok(())
    })
}

/// Publishes a JSON object (`payload_len` bytes of JSON text at `payload_json`) to every current
/// subscriber of `channel` (`channel_len` bytes), encoded once. Host publications do not go
/// through the channel rules or hooks. On success writes the number of sessions it was queued for
/// to `*delivered_out` (which may be NULL).
///
/// Errors: `WSG_INVALID_CHANNEL`, `WSG_INVALID_JSON`, `WSG_INVALID_FRAME` (not an object),
/// `WSG_PAYLOAD_TOO_DEEP`, `WSG_NOT_RUNNING`, `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread,
/// including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; the two buffers readable for their lengths; `delivered_out`
/// NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_publish(
    server: *const wsg_server,
    channel: *const c_char,
    channel_len: usize,
    payload_json: *const c_char,
    payload_len: usize,
    delivered_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_publish", || {
        // SAFETY: caller contract on `server`, `channel` and `payload_json`.
        let (server, channel, payload) = unsafe {
            (
                borrow_handle(server, "server")?,
                borrow_str(channel, channel_len, "channel")?,
                borrow_bytes(payload_json, payload_len, "payload_json")?,
            )
        };
        let delivered = server.handle.publish(channel, &parse_json(payload, "payload_json")?)?;
        // SAFETY: NULL or valid for one write (caller contract).
        unsafe { write_out(delivered_out, delivered) };
        Ok(())
    })
}

/// Closes one session (the `session_id` of events, `wsg_authorize_request` and RPC calls) with
/// close code 4001. Errors: `WSG_UNKNOWN_SESSION`, `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `server` must be a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_disconnect_session(server: *const wsg_server, session_id: u64) -> wsg_result {
    guard("wsg_server_disconnect_session", || {
        // SAFETY: caller contract on `server`.
        let server = unsafe { borrow_handle(server, "server") }?;
        server.handle.disconnect_session(session_id)?;
        Ok(())
    })
}

/// Closes every session of a user (`user_len` bytes: the `sub` claim) with close code 4001. On
/// success writes how many were closed to `*disconnected_out` (which may be NULL). Errors:
/// `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `server` must be a live server; `user` readable for `user_len` bytes; `disconnected_out` NULL
/// or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_disconnect_user(
    server: *const wsg_server,
    user: *const c_char,
    user_len: usize,
    disconnected_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_disconnect_user", || {
        // SAFETY: caller contract on `server` and `user`.
        let (server, user) = unsafe { (borrow_handle(server, "server")?, borrow_str(user, user_len, "user")?) };
        let closed = server.handle.disconnect_user(user);
        // SAFETY: NULL or valid for one write (caller contract).
        unsafe { write_out(disconnected_out, closed) };
        Ok(())
    })
}

/// Applies a revocation on behalf of one of the `wsg_server_revoke_*` exports.
///
/// # Safety
///
/// `server` must be NULL or a live server.
unsafe fn revoke(
    function: &str,
    server: *const wsg_server,
    revocation: impl FnOnce() -> Result<Revocation, Failure>,
) -> wsg_result {
    guard(function, || {
        // SAFETY: forwarded caller contract.
        let server = unsafe { borrow_handle(server, "server") }?;
        server.handle.revoke(revocation()?);
        Ok(())
    })
}

/// Revokes one token by its `jti` (`jti_len` bytes): live sessions holding it close at once with
/// 4501, and it is refused at later handshakes and refreshes. Errors: `WSG_INVALID_UTF8`,
/// `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `server` must be a live server; `jti` readable for `jti_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_revoke_jti(
    server: *const wsg_server,
    jti: *const c_char,
    jti_len: usize,
) -> wsg_result {
    // SAFETY: forwarded caller contract on `server` and `jti`.
    unsafe {
        revoke("wsg_server_revoke_jti", server, || Ok(Revocation::TokenId(borrow_str(jti, jti_len, "jti")?.into())))
    }
}

/// Revokes every token of a subject (`sub_len` bytes) issued up to now; tokens issued later stay
/// valid. Live sessions close with 4501. Errors: `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`.
/// Any thread.
///
/// # Safety
///
/// `server` must be a live server; `sub` readable for `sub_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_revoke_sub(
    server: *const wsg_server,
    sub: *const c_char,
    sub_len: usize,
) -> wsg_result {
    // SAFETY: forwarded caller contract on `server` and `sub`.
    unsafe {
        revoke("wsg_server_revoke_sub", server, || Ok(Revocation::Subject(borrow_str(sub, sub_len, "sub")?.into())))
    }
}

/// Revokes every token issued before `unix_secs` (seconds since the Unix epoch; a token without
/// `iat` counts as issued at 0). Live sessions close with 4501. Errors: `WSG_NULL_ARGUMENT`.
/// Any thread.
///
/// # Safety
///
/// `server` must be a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_revoke_issued_before(server: *const wsg_server, unix_secs: u64) -> wsg_result {
    // SAFETY: forwarded caller contract on `server`.
    unsafe { revoke("wsg_server_revoke_issued_before", server, || Ok(Revocation::IssuedBefore(unix_secs))) }
}

/// The server's counters as a JSON object (`sessions_active`, `sessions_total`,
/// `handshakes_rejected`, `messages_in`, `messages_out`, `messages_rejected`, `publications`,
/// `slow_consumer_disconnects`, `events_dropped`, `dry_run_denials`, `channels`). On success
/// `*json_out` receives a NUL-terminated string the caller frees with `wsg_string_free`, and
/// `*len_out` (which may be NULL) its length without the NUL. Errors: `WSG_NULL_ARGUMENT`.
/// Any thread; works after `wsg_server_stop` too.
///
/// # Safety
///
/// `server` must be a live server; `json_out` valid for one write; `len_out` NULL or valid for one
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_stats_json(
    server: *const wsg_server,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_stats_json", || {
        // SAFETY: caller contract on `server`.
        let server = unsafe { borrow_handle(server, "server") }?;
        require_out(json_out, "json_out")?;
        let json = serde_json::to_string(&server.handle.stats())
            .map_err(|e| Failure::new(crate::result::WSG_PANIC, format!("cannot serialize stats: {e}")))?;
        let (json, len) = give_string(json);
        // SAFETY: `json_out` checked non-NULL, `len_out` NULL or valid (caller contract).
        unsafe {
            write_out(json_out, json);
            write_out(len_out, len);
        }
        Ok(())
    })
}

/// Applies a new configuration to a running server without dropping a connection: TLS
/// certificate and key, JWT keys, origins, channel and RPC rules, limits and timeouts. `config`
/// is copied (it may be freed right away).
///
/// The core checks the new configuration completely first, reading its secret, keys,
/// certificates and schema files; on any problem nothing changes, the server keeps serving under
/// its current configuration and the result is the problem's code, with every problem and its
/// key path in `wsg_last_error_message` (as `wsguard check-config` prints them). Keys that shape
/// listeners or long-lived state (`server.listen`, `server.max_connections`, `tls` on/off,
/// `observability`, `abuse`, ...) cannot change and are reported as problems too. Once applied,
/// new handshakes use the new settings, open sessions keep running, and subscriptions the new
/// channel rules forbid are dropped with an `unsubscribed` frame. Either way the event hook
/// receives a `config_reloaded` event.
///
/// Errors: `WSG_CONFIG_INVALID`, `WSG_CONFIG_FILE`, `WSG_CONFIG_SECRET_MISSING`,
/// `WSG_NULL_ARGUMENT`. Any thread, including hook callbacks (it reads files, so it may take a
/// moment); concurrent reloads of one server apply one after the other.
///
/// # Safety
///
/// `server` must be a live server; `config` a live configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_reload(server: *const wsg_server, config: *const wsg_config) -> wsg_result {
    guard("wsg_server_reload", || {
        // SAFETY: caller contract on `server` and `config`.
        let (server, config) = unsafe { (borrow_handle(server, "server")?, borrow_handle(config, "config")?) };
        server.handle.reload(config.config.clone())?;
        Ok(())
    })
}
