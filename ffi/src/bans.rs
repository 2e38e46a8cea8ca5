//! `wsg_server_bans_json`, `wsg_server_ban_*` and `wsg_server_lift_ban_*`: the core's ban list
//! (`ServerHandle::bans`, `ban`, `lift_ban`) for operators. Automatic bans (the `[abuse]`
//! section) and operator bans share one list; a banned IP or user is refused at the handshake
//! with 403 `banned`. What a ban covers, the `abuse.exempt` exceptions and expiry are the core's.

use std::ffi::c_char;
use std::time::Duration;

use wsguard::host;
use wsguard::limits::BanTarget;

use crate::boundary::{borrow_handle, borrow_str, give_string, require_out, write_out};
use crate::result::{Failure, WSG_PANIC, guard, wsg_result};
use crate::server::wsg_server;

/// The ban target an `ip` argument names (the core's rule: IPv4 or IPv6 text).
///
/// # Safety
///
/// `ip` must be NULL with `ip_len == 0` or readable for `ip_len` bytes.
unsafe fn ip_target(ip: *const c_char, ip_len: usize) -> Result<BanTarget, Failure> {
    // SAFETY: forwarded caller contract.
    let text = unsafe { borrow_str(ip, ip_len, "ip") }?;
    Ok(host::ban_target(Some(text), None)?)
}

/// The ban target a `sub` argument names.
///
/// # Safety
///
/// `sub` must be NULL with `sub_len == 0` or readable for `sub_len` bytes.
unsafe fn user_target(sub: *const c_char, sub_len: usize) -> Result<BanTarget, Failure> {
    // SAFETY: forwarded caller contract.
    let sub = unsafe { borrow_str(sub, sub_len, "sub") }?;
    Ok(host::ban_target(None, Some(sub))?)
}

/// A ban length in seconds (the core's rule: finite, non-negative, at most 100 years).
fn ban_duration(secs: f64) -> Result<Duration, Failure> {
    Ok(host::ban_duration(secs)?)
}

/// The bans in force as a JSON array (`[]` when there is none), operator bans from
/// `wsg_server_ban_*` and automatic bans from the `[abuse]` section alike. Each element is
/// `{"target":{"kind":"ip","value":"203.0.113.7"},"reason":"operator","remaining_secs":59.5}`:
/// `kind` is `ip` or `user` (then `value` is the `sub`), `reason` is `auth_failures`,
/// `violations` or `operator`, `remaining_secs` the seconds until the ban lifts by itself. On success `*json_out` receives a NUL-terminated string the caller
/// frees with `wsg_string_free`, and `*len_out` (which may be NULL) its length without the NUL.
/// Errors: `WSG_NULL_ARGUMENT`. Any thread, including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; `json_out` valid for one write; `len_out` NULL or valid for one
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_bans_json(
    server: *const wsg_server,
    json_out: *mut *mut c_char,
    len_out: *mut usize,
) -> wsg_result {
    guard("wsg_server_bans_json", || {
        // SAFETY: caller contract on `server`.
        let server = unsafe { borrow_handle(server, "server") }?;
        require_out(json_out, "json_out")?;
        let json = serde_json::to_string(&server.handle.bans())
            .map_err(|e| Failure::new(WSG_PANIC, format!("cannot serialize bans: {e}")))?;
        let (json, len) = give_string(json);
        // SAFETY: `json_out` checked non-NULL, `len_out` NULL or valid (caller contract).
        unsafe {
            write_out(json_out, json);
            write_out(len_out, len);
        }
        Ok(())
    })
}

/// Applies an operator ban on behalf of one of the `wsg_server_ban_*` exports.
///
/// # Safety
///
/// `server` must be NULL or a live server; `applied_out` NULL or valid for one write.
unsafe fn ban(
    function: &str,
    server: *const wsg_server,
    target: impl FnOnce() -> Result<BanTarget, Failure>,
    secs: f64,
    applied_out: *mut bool,
) -> wsg_result {
    guard(function, || {
        // SAFETY: forwarded caller contract.
        let server = unsafe { borrow_handle(server, "server") }?;
        let (target, duration) = (target()?, ban_duration(secs)?);
        let applied = server.handle.ban(target, duration);
        // SAFETY: NULL or valid for one write (forwarded caller contract).
        unsafe { write_out(applied_out, applied) };
        Ok(())
    })
}

/// Lifts a ban on behalf of one of the `wsg_server_lift_ban_*` exports.
///
/// # Safety
///
/// `server` must be NULL or a live server; `lifted_out` NULL or valid for one write.
unsafe fn lift(
    function: &str,
    server: *const wsg_server,
    target: impl FnOnce() -> Result<BanTarget, Failure>,
    lifted_out: *mut bool,
) -> wsg_result {
    guard(function, || {
        // SAFETY: forwarded caller contract.
        let server = unsafe { borrow_handle(server, "server") }?;
        let lifted = server.handle.lift_ban(&target()?);
        // SAFETY: NULL or valid for one write (forwarded caller contract).
        unsafe { write_out(lifted_out, lifted) };
        Ok(())
    })
}

/// Bans a client IP (`ip_len` bytes of text, IPv4 or IPv6, e.g. `"203.0.113.7"`; the address
/// the server resolves through `server.trusted_proxies`) for `secs` seconds: its handshakes are
/// refused with 403 `banned` and a `Retry-After`. A ban already in force is replaced. Sessions
/// already open stay open (combine with `wsg_server_disconnect_*` when that is wanted); IPs in
/// `abuse.exempt` are never banned. On success `*applied_out` (which may be NULL) says whether
/// the ban was applied (false for an exempt IP).
///
/// Errors: `WSG_INVALID_ARGUMENT` (not an IP address; `secs` negative, NaN or infinite),
/// `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread, including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; `ip` readable for `ip_len` bytes; `applied_out` NULL or valid
/// for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_ban_ip(
    server: *const wsg_server,
    ip: *const c_char,
    ip_len: usize,
    secs: f64,
    applied_out: *mut bool,
) -> wsg_result {
    // SAFETY: forwarded caller contract on `server`, `ip` and `applied_out`.
    unsafe { ban("wsg_server_ban_ip", server, || ip_target(ip, ip_len), secs, applied_out) }
}

/// Bans a user (`sub_len` bytes: the token's `sub` claim) for `secs` seconds: handshakes with a
/// token of that subject are refused with 403 `banned` and a `Retry-After`. A ban already in
/// force is replaced. Sessions already open stay open (combine with
/// `wsg_server_disconnect_user` or `wsg_server_revoke_sub` when that is wanted). On success
/// `*applied_out` (which may be NULL) says whether the ban was applied.
///
/// Errors: `WSG_INVALID_ARGUMENT` (`secs` negative, NaN or infinite), `WSG_INVALID_UTF8`,
/// `WSG_NULL_ARGUMENT`. Any thread, including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; `sub` readable for `sub_len` bytes; `applied_out` NULL or
/// valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_ban_user(
    server: *const wsg_server,
    sub: *const c_char,
    sub_len: usize,
    secs: f64,
    applied_out: *mut bool,
) -> wsg_result {
    // SAFETY: forwarded caller contract on `server`, `sub` and `applied_out`.
    unsafe { ban("wsg_server_ban_user", server, || user_target(sub, sub_len), secs, applied_out) }
}

/// Lifts the ban of a client IP (`ip_len` bytes of text, IPv4 or IPv6), operator or automatic.
/// On success `*lifted_out` (which may be NULL) says whether there was one.
///
/// Errors: `WSG_INVALID_ARGUMENT` (not an IP address), `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`.
/// Any thread, including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; `ip` readable for `ip_len` bytes; `lifted_out` NULL or valid
/// for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_lift_ban_ip(
    server: *const wsg_server,
    ip: *const c_char,
    ip_len: usize,
    lifted_out: *mut bool,
) -> wsg_result {
    // SAFETY: forwarded caller contract on `server`, `ip` and `lifted_out`.
    unsafe { lift("wsg_server_lift_ban_ip", server, || ip_target(ip, ip_len), lifted_out) }
}

/// Lifts the ban of a user (`sub_len` bytes: the `sub` claim), operator or automatic. On
/// success `*lifted_out` (which may be NULL) says whether there was one.
///
/// Errors: `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread, including hook callbacks.
///
/// # Safety
///
/// `server` must be a live server; `sub` readable for `sub_len` bytes; `lifted_out` NULL or valid
/// for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_server_lift_ban_user(
    server: *const wsg_server,
    sub: *const c_char,
    sub_len: usize,
    lifted_out: *mut bool,
) -> wsg_result {
    // SAFETY: forwarded caller contract on `server`, `sub` and `lifted_out`.
    unsafe { lift("wsg_server_lift_ban_user", server, || user_target(sub, sub_len), lifted_out) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    use crate::result::{WSG_INVALID_ARGUMENT, WSG_NULL_ARGUMENT, wsg_last_error_length};

    #[test]
    fn targets_and_durations_convert_or_fail_with_invalid_argument() {
        // SAFETY: the pointers are live string literals of the given lengths (or NULL with 0).
        unsafe {
            assert_eq!(
                ip_target(c"2001:db8::1".as_ptr(), 11).ok(),
                Some(BanTarget::Ip(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])))
            );
            assert_eq!(ip_target(c"10.0.0.300".as_ptr(), 10).map_err(|f| f.code).err(), Some(WSG_INVALID_ARGUMENT));
            assert_eq!(user_target(c"eve".as_ptr(), 3).ok(), Some(BanTarget::User("eve".into())));
            assert_eq!(user_target(std::ptr::null(), 3).map_err(|f| f.code).err(), Some(WSG_NULL_ARGUMENT));
        }
        assert_eq!(ban_duration(1.5).ok(), Some(Duration::from_millis(1500)));
        for secs in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(ban_duration(secs).map_err(|f| f.code).err(), Some(WSG_INVALID_ARGUMENT), "{secs}");
        }
    }

    #[test]
    fn null_server_is_refused_before_anything_happens() {
        let mut applied = true;
        // SAFETY: NULL server is refused; `applied` is a valid bool slot.
        let result = unsafe { wsg_server_ban_user(std::ptr::null(), c"eve".as_ptr(), 3, 1.0, &mut applied) };
        assert_eq!(result, WSG_NULL_ARGUMENT);
        assert!(applied, "out-parameter untouched on failure");
        assert!(wsg_last_error_length() > 0);
    }
}
