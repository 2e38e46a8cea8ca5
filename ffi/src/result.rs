//! `wsg_result` (the return code of every fallible export), the per-thread last-error message, and
//! `guard`, the one place where a Rust result or panic becomes a code for C.
//!
//! The numbers are the core's `ErrorCode` numbers, so C, Python and Node branch on the same values;
//! only the 9xxx block is the C ABI's own (conditions other languages cannot produce: a NULL
//! pointer, bytes that are not UTF-8, a panic caught at the boundary).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use wsguard::{ConfigError, Error, ErrorCode, ReloadError};

/// The return code of every fallible function: `WSG_OK` (0) on success, otherwise the number of
/// a core error code (1xxx config, 2xxx handshake, 3xxx authentication, 4xxx per-message,
/// 5xxx server runtime) or of a C-ABI-only code (9xxx). `wsg_result_name` gives the stable
/// snake_case name; `wsg_last_error_message` the detailed message of the failure.
#[allow(non_camel_case_types)]
pub type wsg_result = u32;

/// Success.
pub const WSG_OK: wsg_result = 0;

/// The configuration text is not valid TOML or JSON.
pub const WSG_CONFIG_SYNTAX: wsg_result = 1001;
/// One or more configuration keys are unknown, mistyped or out of range.
pub const WSG_CONFIG_INVALID: wsg_result = 1002;
/// A file named by the configuration (certificate, key, JWKS) could not be read or parsed.
pub const WSG_CONFIG_FILE: wsg_result = 1003;
/// A secret is unusable: its `*_env` variable (`auth.hmac_secret_env`, `cluster.password_env`) is not
/// set, or the HMAC secret is shorter than 32 bytes.
pub const WSG_CONFIG_SECRET_MISSING: wsg_result = 1004;

/// The upgrade request is malformed.
pub const WSG_BAD_REQUEST: wsg_result = 2001;
/// The request path is not the configured WebSocket path.
pub const WSG_NOT_FOUND: wsg_result = 2002;
/// The request method is not GET.
pub const WSG_METHOD_NOT_ALLOWED: wsg_result = 2003;
/// The request is not a WebSocket upgrade, or asks for an unsupported protocol version.
pub const WSG_UPGRADE_REQUIRED: wsg_result = 2004;
/// The request head is larger than `server.max_header_bytes`.
pub const WSG_HEADERS_TOO_LARGE: wsg_result = 2005;
/// The TLS handshake and request head did not arrive within `server.handshake_timeout_secs`.
pub const WSG_HANDSHAKE_TIMEOUT: wsg_result = 2006;
/// The `Origin` header is missing, `null` or not in the allowlist.
pub const WSG_ORIGIN_NOT_ALLOWED: wsg_result = 2007;
/// The server holds `server.max_connections` sessions or `max_pending_handshakes` handshakes.
pub const WSG_SERVER_FULL: wsg_result = 2008;
/// The client IP holds `limits.connections_per_ip` sessions.
pub const WSG_TOO_MANY_CONNECTIONS_PER_IP: wsg_result = 2009;
/// The user holds `limits.connections_per_user` sessions.
pub const WSG_TOO_MANY_CONNECTIONS_PER_USER: wsg_result = 2010;
/// The client IP exceeded `limits.handshakes_per_ip_per_sec`.
pub const WSG_HANDSHAKE_RATE_LIMITED: wsg_result = 2011;
/// The TLS handshake failed.
pub const WSG_TLS_HANDSHAKE_FAILED: wsg_result = 2012;
/// A trusted proxy sent an unparseable `X-Forwarded-For` / `Forwarded` header.
pub const WSG_BAD_FORWARDED_HEADER: wsg_result = 2013;
/// The `authenticate` hook refused the connection.
pub const WSG_REJECTED_BY_HOOK: wsg_result = 2014;
/// The client sent `bearer.<token>` without also offering the `wsguard.v1` subprotocol.
pub const WSG_SUBPROTOCOL_REQUIRED: wsg_result = 2015;
/// The server is shutting down and accepts no new sessions.
pub const WSG_SHUTTING_DOWN: wsg_result = 2016;
/// `auth.single_use_jti` is on and the used-jti cache is full of unexpired entries.
pub const WSG_REPLAY_CACHE_FULL: wsg_result = 2017;
/// The client IP or user is temporarily banned; answered 403.
pub const WSG_BANNED: wsg_result = 2018;
/// The estimated memory of sessions and queues reached `limits.max_memory_bytes`; answered 503.
pub const WSG_OVER_MEMORY_BUDGET: wsg_result = 2019;
/// The cluster-wide per-user quota store (Redis) could not be reached and
/// `cluster.quota_failure = "closed"`; answered 503.
pub const WSG_QUOTA_UNAVAILABLE: wsg_result = 2020;
/// The token's issuer gets its keys from an identity provider and no key set has been loaded yet;
/// answered 503.
pub const WSG_KEYS_UNAVAILABLE: wsg_result = 2021;
/// A peer outside `server.trusted_proxies` started with a PROXY protocol header.
pub const WSG_PROXY_HEADER_UNTRUSTED: wsg_result = 2022;
/// A trusted proxy did not start with a PROXY protocol header.
pub const WSG_PROXY_HEADER_MISSING: wsg_result = 2023;
/// A trusted proxy's PROXY protocol header is malformed, of a refused version, or has no address.
pub const WSG_PROXY_HEADER_INVALID: wsg_result = 2024;
/// The client IP already holds `limits.pending_handshakes_per_ip` handshakes; answered 429.
pub const WSG_TOO_MANY_PENDING_HANDSHAKES_PER_IP: wsg_result = 2025;
/// The cluster's used-jti store (Redis) could not be reached and `cluster.jti_failure = "closed"`;
/// answered 503.
pub const WSG_JTI_STORE_UNAVAILABLE: wsg_result = 2026;
/// A `[proxy]` backend endpoint gave no answer (unreachable, non-2xx, over its concurrency cap).
pub const WSG_PROXY_UNAVAILABLE: wsg_result = 2030;

/// No token was found in any configured source.
pub const WSG_TOKEN_MISSING: wsg_result = 3001;
/// The token is not a well-formed JWT.
pub const WSG_TOKEN_MALFORMED: wsg_result = 3002;
/// The token's `exp` is in the past (beyond the leeway).
pub const WSG_TOKEN_EXPIRED: wsg_result = 3003;
/// The token's `nbf` or `iat` is in the future (beyond the leeway).
pub const WSG_TOKEN_NOT_YET_VALID: wsg_result = 3004;
/// The signature does not verify with the configured key.
pub const WSG_TOKEN_BAD_SIGNATURE: wsg_result = 3005;
/// The token's `alg` is not in `auth.algorithms` or does not fit the key type.
pub const WSG_TOKEN_ALG_NOT_ALLOWED: wsg_result = 3006;
/// The token's `iss` is not `auth.issuer`.
pub const WSG_TOKEN_WRONG_ISSUER: wsg_result = 3007;
/// The token's `aud` does not contain `auth.audience`.
pub const WSG_TOKEN_WRONG_AUDIENCE: wsg_result = 3008;
/// `exp - iat` is longer than `auth.max_token_lifetime_secs`.
pub const WSG_TOKEN_LIFETIME_TOO_LONG: wsg_result = 3009;
/// A required claim is absent.
pub const WSG_TOKEN_MISSING_CLAIM: wsg_result = 3010;
/// The token's `kid` is absent or unknown to the JWKS.
pub const WSG_TOKEN_UNKNOWN_KEY: wsg_result = 3011;
/// A registered claim has the wrong type.
pub const WSG_TOKEN_INVALID_CLAIM: wsg_result = 3012;
/// The token was revoked.
pub const WSG_TOKEN_REVOKED: wsg_result = 3013;
/// `auth.single_use_jti` is on and this token's `jti` was already used.
pub const WSG_TOKEN_REPLAYED: wsg_result = 3014;

/// Text that must be JSON is not (a client frame, or a JSON argument such as a publish payload
/// or an RPC result).
pub const WSG_INVALID_JSON: wsg_result = 4001;
/// The frame is JSON but not a valid v1 frame; for `wsg_server_publish`: the payload is not a
/// JSON object.
pub const WSG_INVALID_FRAME: wsg_result = 4002;
/// The channel name is empty, too long or uses characters outside the allowed set.
pub const WSG_INVALID_CHANNEL: wsg_result = 4003;
/// The identity may not perform this action on this channel.
pub const WSG_FORBIDDEN: wsg_result = 4004;
/// `unsubscribe` for a channel the session is not subscribed to.
pub const WSG_NOT_SUBSCRIBED: wsg_result = 4005;
/// The session already holds `limits.max_subscriptions` subscriptions.
pub const WSG_TOO_MANY_SUBSCRIPTIONS: wsg_result = 4006;
/// The payload nests deeper than `limits.max_payload_depth`.
pub const WSG_PAYLOAD_TOO_DEEP: wsg_result = 4007;
/// The RPC method is not declared in `[[rpc]]`.
pub const WSG_UNKNOWN_METHOD: wsg_result = 4008;
/// The RPC handler failed, or no handler is registered for a declared method.
pub const WSG_RPC_FAILED: wsg_result = 4009;
/// A host hook did not answer in time; for `wsg_rpc_call_respond` / `_fail`: the client was
/// already answered (time box elapsed or session closed) and this answer was discarded.
pub const WSG_HOOK_TIMEOUT: wsg_result = 4010;
/// A message rate was exceeded.
pub const WSG_RATE_LIMITED: wsg_result = 4011;
/// `protocol.require_seq` is on and `seq` is missing, repeated or lower than a previous one.
pub const WSG_REPLAY: wsg_result = 4012;
/// The payload does not satisfy the channel rule's or RPC method's JSON Schema.
pub const WSG_PAYLOAD_INVALID: wsg_result = 4013;
/// The refresh token's `sub` or session-bound claims differ from the session's.
pub const WSG_REFRESH_MISMATCH: wsg_result = 4014;
/// The cluster broker is unreachable or did not confirm the publication in time: it reached the
/// subscribers on this node only (`wsg_server_publish`, or a client's `publish`).
pub const WSG_BROKER_UNAVAILABLE: wsg_result = 4015;
/// The channel's rule keeps no history: nothing to recover or read.
pub const WSG_HISTORY_NOT_KEPT: wsg_result = 4020;
/// `since.offset` is beyond the channel's latest offset in that epoch.
pub const WSG_HISTORY_OFFSET_AHEAD: wsg_result = 4021;
/// A history page's `limit` is below 1 or above 1000.
pub const WSG_HISTORY_LIMIT_INVALID: wsg_result = 4022;
/// `since.epoch` is not the channel's current epoch: its history was lost.
pub const WSG_HISTORY_EPOCH_CHANGED: wsg_result = 4023;
/// The cluster's presence store (Redis) is unreachable: presence is not answered.
pub const WSG_PRESENCE_UNAVAILABLE: wsg_result = 4030;

/// An I/O error (bind, accept, read a file, start the runtime threads).
pub const WSG_IO: wsg_result = 5001;
/// The server is not running (already stopped).
pub const WSG_NOT_RUNNING: wsg_result = 5003;
/// No session has this id.
pub const WSG_UNKNOWN_SESSION: wsg_result = 5004;
/// A token could not be minted.
pub const WSG_TOKEN_MINT: wsg_result = 5005;
/// `wsg_server_start`: the TLS handshake with a `[cluster]` broker failed (untrusted certificate,
/// wrong host name, or the broker refused the client certificate).
pub const WSG_BROKER_TLS: wsg_result = 5006;
/// The node has not yet loaded the cluster's persisted revocations and bans; answered 503.
pub const WSG_CLUSTER_STATE_UNAVAILABLE: wsg_result = 5007;
/// `wsg_server_send`: the `push` frame would exceed `limits.max_message_bytes`.
pub const WSG_PAYLOAD_TOO_LARGE: wsg_result = 5010;
/// The channel's rule does not track presence (`presence = true`), or no rule matches it.
pub const WSG_PRESENCE_NOT_TRACKED: wsg_result = 5030;

/// Server API (`[api]`, over HTTP only; listed so every code has its constant): no or a wrong key.
pub const WSG_API_UNAUTHORIZED: wsg_result = 6001;
/// Server API: the caller exceeded `api.requests_per_sec` and its burst.
pub const WSG_API_RATE_LIMITED: wsg_result = 6002;
/// Server API: the request body is larger than `api.max_body_bytes`.
pub const WSG_API_BODY_TOO_LARGE: wsg_result = 6003;
/// Server API: the body is not JSON or not the endpoint's shape.
pub const WSG_API_BAD_JSON: wsg_result = 6004;
/// Server API: no endpoint has this path.
pub const WSG_API_UNKNOWN_ENDPOINT: wsg_result = 6005;
/// Server API: the endpoint exists but not with this method.
pub const WSG_API_METHOD_NOT_ALLOWED: wsg_result = 6006;
/// Server API: a POST without `Content-Type: application/json`.
pub const WSG_API_UNSUPPORTED_MEDIA_TYPE: wsg_result = 6007;
/// Server API: a parameter is well-typed but out of range.
pub const WSG_API_INVALID_PARAMETER: wsg_result = 6008;
/// Server API: `reload` on a server without a configuration file to re-read.
pub const WSG_API_RELOAD_UNAVAILABLE: wsg_result = 6009;

/// C ABI only: a required pointer argument was NULL (or a buffer pointer was NULL with a
/// non-zero length).
pub const WSG_NULL_ARGUMENT: wsg_result = 9001;
/// C ABI only: the library panicked; the panic was caught at the boundary and the operation had
/// no effect that can be relied on. Please report it.
pub const WSG_PANIC: wsg_result = 9002;
/// C ABI only: a string argument is not valid UTF-8.
pub const WSG_INVALID_UTF8: wsg_result = 9003;
/// An argument is out of range or does not parse (a NaN grace period or ban length, a length
/// above `PTRDIFF_MAX`, text that is not an IP address, an invalid `authenticate` answer); the
/// core's `invalid_argument`, the same code in every host.
pub const WSG_INVALID_ARGUMENT: wsg_result = 9004;
/// C ABI only: the caller's buffer is too small; nothing was written.
pub const WSG_INSUFFICIENT_BUFFER: wsg_result = 9005;
/// A blocking function was called from a thread of a server's runtime (inside a hook callback),
/// where it would deadlock the server it waits for; the core's `wrong_thread`, the same code in
/// every host.
pub const WSG_WRONG_THREAD: wsg_result = 9006;

/// The C-ABI-only codes and their names (the core's come from `ErrorCode::ALL`).
const FFI_CODES: &[(wsg_result, &str)] = &[
    (WSG_NULL_ARGUMENT, "null_argument"),
    (WSG_PANIC, "panic"),
    (WSG_INVALID_UTF8, "invalid_utf8"),
    (WSG_INSUFFICIENT_BUFFER, "insufficient_buffer"),
];

/// A failure on its way to C: the code returned and the message kept for `wsg_last_error_*`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: wsg_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: wsg_result, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }

    pub(crate) fn null(argument: &str) -> Self {
        Failure::new(WSG_NULL_ARGUMENT, format!("{argument} must not be NULL"))
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::new(error.code().number(), error.to_string())
    }
}

impl From<ConfigError> for Failure {
    /// The message is the CLI's: `invalid configuration (N problems):` and one `path: message`
    /// line per problem.
    fn from(error: ConfigError) -> Self {
        Failure::new(error.code().number(), error.to_string())
    }
}

impl From<ReloadError> for Failure {
    /// A refused configuration gives the same message as `From<ConfigError>`.
    fn from(error: ReloadError) -> Self {
        Failure::new(error.code().number(), error.to_string())
    }
}

thread_local! {
    /// The message of the last failure on this thread, NUL-terminated for C.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: String) {
    // A message with an interior NUL (only possible from foreign text) is cut there rather than lost.
    let message = match CString::new(message) {
        Ok(c) => c,
        Err(e) => {
            let at = e.nul_position();
            let mut bytes = e.into_vec();
            bytes.truncate(at);
            CString::new(bytes).unwrap_or_default()
        }
    };
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(message));
}

fn clear_last_error() {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = None);
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Runs the body of a fallible export: `Ok` clears this thread's last error and gives `WSG_OK`;
/// a failure or a panic records its message and gives its code. Nothing unwinds into C.
pub(crate) fn guard(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> wsg_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            WSG_OK
        }
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.code
        }
        Err(payload) => {
            set_last_error(format!("{function} panicked: {}", panic_message(payload.as_ref())));
            WSG_PANIC
        }
    }
}

/// Runs the body of an infallible export (a `_free`, an accessor), answering `fallback` on panic.
pub(crate) fn guard_infallible<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The length in bytes of this thread's last error message, without the terminating NUL; 0 when
/// the last fallible call on this thread succeeded (or none was made).
///
/// Never fails and never changes the last error. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn wsg_last_error_length() -> usize {
    guard_infallible(0, || LAST_ERROR.with(|slot| slot.borrow().as_ref().map_or(0, |m| m.as_bytes().len())))
}

/// Copies this thread's last error message (UTF-8, NUL-terminated) into `buf`.
///
/// Every fallible function sets the message on failure and clears it on success, on the calling
/// thread only. The message is for humans (for a bad configuration: one `key.path: problem` line
/// per problem, exactly as `wsguard check-config` prints them); branch on the `wsg_result`.
///
/// `buf` must hold `len` bytes and `len` must be at least `wsg_last_error_length() + 1`. On
/// success `*written_out` receives the number of bytes written, without the NUL (0 and an empty
/// string when there is no message). Errors: `WSG_NULL_ARGUMENT`, `WSG_INSUFFICIENT_BUFFER`
/// (nothing written). This function never changes the last error. Any thread.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes and `written_out` valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_last_error_message(buf: *mut c_char, len: usize, written_out: *mut usize) -> wsg_result {
    guard_infallible(WSG_PANIC, || {
        if buf.is_null() || written_out.is_null() {
            return WSG_NULL_ARGUMENT;
        }
        LAST_ERROR.with(|slot| {
            let slot = slot.borrow();
            let message = slot.as_ref().map_or(&[0u8][..], |m| m.as_bytes_with_nul());
            if message.len() > len {
                return WSG_INSUFFICIENT_BUFFER;
            }
            // SAFETY: `buf` holds `len >= message.len()` writable bytes (caller contract); the
            // source is our own CString, which cannot overlap the caller's buffer.
            unsafe { std::ptr::copy_nonoverlapping(message.as_ptr().cast::<c_char>(), buf, message.len()) };
            // SAFETY: checked non-NULL above; valid for one write (caller contract).
            unsafe { written_out.write(message.len() - 1) };
            WSG_OK
        })
    })
}

/// The stable snake_case name of a result code (`"ok"`, `"config_invalid"`, `"null_argument"`),
/// the same name every wsguard binding and client sees; `"unknown"` for a number that is not a
/// code. The returned string is static: never free it. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn wsg_result_name(result: wsg_result) -> *const c_char {
    static NAMES: OnceLock<Vec<(wsg_result, CString)>> = OnceLock::new();
    const UNKNOWN: &std::ffi::CStr = c"unknown";
    guard_infallible(UNKNOWN.as_ptr(), || {
        let names = NAMES.get_or_init(|| {
            let core = ErrorCode::ALL.iter().map(|c| (c.number(), c.name()));
            std::iter::once((WSG_OK, "ok"))
                .chain(core)
                .chain(FFI_CODES.iter().copied())
                .filter_map(|(n, name)| CString::new(name).ok().map(|c| (n, c)))
                .collect()
        });
        names.iter().find(|(n, _)| *n == result).map_or(UNKNOWN.as_ptr(), |(_, name)| name.as_ptr())
    })
}

/// The library version (`"0.1.0"`), a static NUL-terminated string: never free it. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn wsg_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn name(code: wsg_result) -> String {
        // SAFETY: wsg_result_name always returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(wsg_result_name(code)) }.to_string_lossy().into_owned()
    }

    /// The committed header must define `WSG_<NAME> <number>` for every core code, so a code added
    /// to the core registry without a constant here fails the build's tests.
    #[test]
    fn header_defines_every_core_code_with_its_number() {
        let header = include_str!("../../include/wsguard.h");
        for code in ErrorCode::ALL {
            let define = format!("#define WSG_{} {}", code.name().to_ascii_uppercase(), code.number());
            assert!(header.lines().any(|l| l.trim_end() == define), "include/wsguard.h lacks `{define}`");
        }
        for (number, ffi_name) in FFI_CODES {
            assert!(ErrorCode::from_number(*number).is_none(), "{ffi_name} collides with a core code");
            let define = format!("#define WSG_{} {number}", ffi_name.to_ascii_uppercase());
            assert!(header.lines().any(|l| l.trim_end() == define), "include/wsguard.h lacks `{define}`");
        }
    }

    /// The other direction: every result constant in the header (from `WSG_OK` through the 9xxx
    /// block, less the C-ABI-only codes) is a core code with the same number and name, so a code renumbered or removed
    /// in the core registry cannot leave a stale constant behind. (The constants are hand-written
    /// because cbindgen does not expand `macro_rules!` on a stable toolchain.)
    #[test]
    fn header_result_constants_are_all_core_codes() {
        let header = include_str!("../../include/wsguard.h");
        let mut results = 0;
        let mut in_results = false;
        let mut in_9xxx = false;
        for line in header.lines() {
            let mut words = line.split_whitespace();
            let (Some("#define"), Some(name), Some(value)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = value.parse::<wsg_result>() else { continue };
            // The result constants run from `WSG_OK` through the 9xxx block; anything after is
            // another enumeration (decisions, channel actions).
            in_results = match name {
                "WSG_OK" => true,
                _ if (9000..10000).contains(&number) => {
                    in_9xxx = true;
                    true
                }
                _ if in_9xxx => false,
                _ => in_results,
            };
            if !in_results || number == WSG_OK {
                continue;
            }
            // The 9xxx block holds the C-ABI-only codes and the core's host-API codes
            // (`invalid_argument`, `wrong_thread`), which every binding shares.
            if FFI_CODES.iter().any(|(n, _)| *n == number) {
                continue;
            }
            let code = ErrorCode::from_number(number);
            assert!(code.is_some(), "include/wsguard.h: {name} = {number} is not a core code");
            let expected = code.map(|c| format!("WSG_{}", c.name().to_ascii_uppercase()));
            assert_eq!(expected.as_deref(), Some(name), "include/wsguard.h: {name} = {number}");
            results += 1;
        }
        assert_eq!(results, ErrorCode::ALL.len(), "one constant per core code");
    }

    #[test]
    fn names_come_from_the_core_registry() {
        assert_eq!(name(WSG_OK), "ok");
        assert_eq!(name(WSG_CONFIG_INVALID), "config_invalid");
        assert_eq!(name(WSG_PANIC), "panic");
        assert_eq!(name(4242), "unknown");
        for code in ErrorCode::ALL {
            assert_eq!(name(code.number()), code.name());
        }
    }

    #[test]
    fn guard_records_failures_and_panics_per_thread() {
        assert_eq!(guard("t", || Err(Failure::new(WSG_IO, "boom"))), WSG_IO);
        assert_eq!(wsg_last_error_length(), 4);
        let mut buf = [0 as c_char; 8];
        let mut written = 99;
        // SAFETY: buf holds 8 bytes, written is a valid usize.
        assert_eq!(unsafe { wsg_last_error_message(buf.as_mut_ptr(), 4, &mut written) }, WSG_INSUFFICIENT_BUFFER);
        assert_eq!(written, 99, "nothing written on failure");
        // SAFETY: as above.
        assert_eq!(unsafe { wsg_last_error_message(buf.as_mut_ptr(), buf.len(), &mut written) }, WSG_OK);
        assert_eq!(written, 4);
        // SAFETY: the function wrote a NUL-terminated string into buf.
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().ok(), Some("boom"));
        std::thread::spawn(|| assert_eq!(wsg_last_error_length(), 0)).join().ok();
        assert_eq!(guard("wsg_test", || panic!("kaboom")), WSG_PANIC);
        assert_eq!(wsg_last_error_length(), "wsg_test panicked: kaboom".len());
        assert_eq!(guard("t", || Ok(())), WSG_OK);
        assert_eq!(wsg_last_error_length(), 0);
    }
}
