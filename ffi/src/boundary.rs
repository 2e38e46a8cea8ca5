//! What crosses the boundary besides handles: borrowed `(pointer, length)` arguments coming in,
//! `wsg_str` views and out-parameters going out, and Rust-allocated strings handed to C.
//!
//! Every raw pointer the exports receive is checked and converted here, so the rest of the crate
//! deals in slices, `&str` and `serde_json::Value`.

use std::ffi::{CString, c_char};

use serde_json::Value;

use crate::result::{Failure, WSG_INVALID_ARGUMENT, WSG_INVALID_JSON, WSG_INVALID_UTF8};

/// A borrowed string from the library: `len` bytes of UTF-8 at `data`, followed by a NUL byte
/// that `len` does not count (so `data` can be printed with `%s` when the text has no interior
/// NUL; channel and method names never do). An absent value has `data == NULL` and `len == 0`.
/// Valid only for as long as the function documenting it says.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct wsg_str {
    /// First byte, or NULL when the value is absent.
    pub data: *const c_char,
    /// Length in bytes, without the terminating NUL.
    pub len: usize,
}

impl wsg_str {
    /// The absent value.
    pub(crate) const ABSENT: wsg_str = wsg_str { data: std::ptr::null(), len: 0 };
}

/// Text owned by the library and lent to C as a [`wsg_str`]: the bytes plus a trailing NUL.
#[derive(Debug)]
pub(crate) struct LentText(Box<[u8]>);

impl LentText {
    pub(crate) fn new(text: &str) -> Self {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0);
        LentText(bytes.into_boxed_slice())
    }

    /// Serializes a value to JSON text (`null` if it cannot be serialized, which the core's
    /// types never cause).
    pub(crate) fn json(value: &impl serde::Serialize) -> Self {
        LentText::new(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }

    /// A view valid while `self` lives.
    pub(crate) fn view(&self) -> wsg_str {
        wsg_str { data: self.0.as_ptr().cast(), len: self.0.len() - 1 }
    }
}

/// Borrows `len` bytes at `data`. NULL is accepted only with `len == 0`.
///
/// # Safety
///
/// Unless NULL, `data` must be valid for reads of `len` bytes for `'a`, and not mutated meanwhile.
pub(crate) unsafe fn borrow_bytes<'a>(data: *const c_char, len: usize, argument: &str) -> Result<&'a [u8], Failure> {
    if data.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(Failure::null(argument)) };
    }
    if len > isize::MAX as usize {
        return Err(Failure::new(WSG_INVALID_ARGUMENT, format!("{argument}: length {len} exceeds PTRDIFF_MAX")));
    }
    // SAFETY: non-NULL and `len <= isize::MAX` checked above; readability for `len` bytes and
    // immutability for 'a are the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// Borrows `len` bytes at `data` as UTF-8 text.
///
/// # Safety
///
/// As [`borrow_bytes`].
pub(crate) unsafe fn borrow_str<'a>(data: *const c_char, len: usize, argument: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded caller contract.
    let bytes = unsafe { borrow_bytes(data, len, argument) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::new(WSG_INVALID_UTF8, format!("{argument} is not valid UTF-8 (at byte {})", e.valid_up_to()))
    })
}

/// Parses a JSON argument.
pub(crate) fn parse_json(bytes: &[u8], argument: &str) -> Result<Value, Failure> {
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::new(WSG_INVALID_JSON, format!("{argument} is not valid JSON: {e}")))
}

/// Borrows the object behind a handle argument.
///
/// # Safety
///
/// Unless NULL, `handle` must point to a live `T` for `'a` (a handle returned by this library and
/// not yet freed).
pub(crate) unsafe fn borrow_handle<'a, T>(handle: *const T, argument: &str) -> Result<&'a T, Failure> {
    // SAFETY: caller contract; NULL becomes an error.
    unsafe { handle.as_ref() }.ok_or_else(|| Failure::null(argument))
}

/// Checks a required out-parameter before any work is done, so nothing happens when it is NULL.
pub(crate) fn require_out<T>(out: *mut T, argument: &str) -> Result<(), Failure> {
    if out.is_null() { Err(Failure::null(argument)) } else { Ok(()) }
}

/// Writes an out-parameter that may be NULL (then the value is dropped).
///
/// # Safety
///
/// Unless NULL, `out` must be valid for one write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL checked; validity is the caller's contract. `write` does not read or
        // drop the (possibly uninitialized) old value.
        unsafe { out.write(value) };
    }
}

/// Hands a Rust string to C as a NUL-terminated allocation, freed with `wsg_string_free`.
pub(crate) fn give_string(text: String) -> (*mut c_char, usize) {
    let len = text.len();
    // JSON text produced by serde_json never holds a raw NUL (it is escaped as \u0000).
    let c = CString::new(text).unwrap_or_default();
    (c.into_raw(), len)
}

/// Frees a string this library allocated (`wsg_server_stats_json`, `wsg_server_bans_json`).
/// `wsg_string_free(NULL)` is a no-op. Any thread.
///
/// # Safety
///
/// `string` must be NULL or a pointer this library returned as an allocated string, not yet freed.
/// Never pass it to `free()`, and never pass this function memory from anywhere else.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_string_free(string: *mut c_char) {
    crate::result::guard_infallible((), || {
        if !string.is_null() {
            // SAFETY: the pointer came from `CString::into_raw` in `give_string` (caller contract)
            // and is freed exactly once.
            drop(unsafe { CString::from_raw(string) });
        }
    })
}
