//! `wsg_config`: a parsed, validated configuration (the core's `Config`), from TOML or JSON text
//! or from a file. Parsing and every message come from the core, exactly as the CLI shows them.

use std::ffi::c_char;

use wsguard::Config;
use wsguard::host::ConfigInput;

use crate::boundary::{borrow_bytes, borrow_handle, borrow_str, require_out, write_out};
use crate::result::{guard, guard_infallible, wsg_result};

/// A parsed configuration (opaque). Created by `wsg_config_from_text` / `wsg_config_from_file`,
/// freed by `wsg_config_free`. Immutable: it may be read from several threads at once, and one
/// configuration may start several servers.
#[allow(non_camel_case_types)]
pub struct wsg_config {
    pub(crate) config: Config,
}

/// Moves a configuration to the heap and gives it to C.
///
/// # Safety
///
/// `config_out` must be valid for one write (NULL was already refused by `require_out`).
unsafe fn give(config: Config, config_out: *mut *mut wsg_config) {
    let handle = Box::into_raw(Box::new(wsg_config { config }));
    // SAFETY: forwarded caller contract.
    unsafe { write_out(config_out, handle) };
}

/// Loads a configuration from `len` bytes of UTF-8 at `text`, by the core's one input rule for
/// every host: configuration text (JSON when the first non-blank character is `{`, TOML
/// otherwise), or the path of a file when the string names an existing file or cannot be
/// configuration text (one line without `=`, `[` or `{`). The text need not be NUL-terminated.
///
/// Performs every check a server start would, reporting every problem at once: unknown keys,
/// types, ranges, semantic rules, then the HMAC secret (file or environment), keys, certificates
/// and schema files — as Python's `Server(...)` and Node's `new Server(...)` do, with the same
/// codes.
///
/// On success `*config_out` receives a new configuration the caller owns and frees with
/// `wsg_config_free`. Errors: `WSG_CONFIG_SYNTAX` (not TOML/JSON; the message names the line),
/// `WSG_CONFIG_INVALID` (the message lists every problem with its key path, e.g.
/// `server.lisen: unknown key`), `WSG_CONFIG_FILE` (a file it names cannot be read),
/// `WSG_CONFIG_SECRET_MISSING`, `WSG_INVALID_UTF8`, `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `text` must point to `len` readable bytes (or be NULL with `len == 0`); `config_out` must be
/// valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_config_from_text(
    text: *const c_char,
    len: usize,
    config_out: *mut *mut wsg_config,
) -> wsg_result {
    guard("wsg_config_from_text", || {
        require_out(config_out, "config_out")?;
        // SAFETY: caller contract on `text` / `len`.
        let text = unsafe { borrow_str(text, len, "text") }?;
        let config = ConfigInput::text_or_path(text).load()?;
        // SAFETY: `config_out` checked non-NULL; valid for one write by the caller's contract.
        unsafe { give(config, config_out) };
        Ok(())
    })
}

/// Loads a configuration file: a path ending in `.json` is JSON, anything else TOML. `path` is
/// `len` bytes (not NUL-terminated; on Unix any bytes, elsewhere UTF-8). Every check of
/// `wsg_config_from_text` is made.
///
/// On success `*config_out` receives a new configuration the caller owns and frees with
/// `wsg_config_free`. Errors: `WSG_CONFIG_FILE` (cannot read the file, or a file it names),
/// `WSG_CONFIG_SYNTAX`, `WSG_CONFIG_INVALID`, `WSG_CONFIG_SECRET_MISSING`, `WSG_INVALID_UTF8`
/// (non-Unix only), `WSG_NULL_ARGUMENT`. Any thread.
///
/// # Safety
///
/// `path` must point to `len` readable bytes; `config_out` must be valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_config_from_file(
    path: *const c_char,
    len: usize,
    config_out: *mut *mut wsg_config,
) -> wsg_result {
    guard("wsg_config_from_file", || {
        require_out(config_out, "config_out")?;
        #[cfg(unix)]
        let path = {
            use std::os::unix::ffi::OsStrExt;
            // SAFETY: caller contract on `path` / `len`.
            std::path::Path::new(std::ffi::OsStr::from_bytes(unsafe { borrow_bytes(path, len, "path") }?))
        };
        #[cfg(not(unix))]
        // SAFETY: caller contract on `path` / `len`.
        let path = std::path::Path::new(unsafe { borrow_str(path, len, "path") }?);
        let config = ConfigInput::Path(path.to_path_buf()).load()?;
        // SAFETY: `config_out` checked non-NULL; valid for one write by the caller's contract.
        unsafe { give(config, config_out) };
        Ok(())
    })
}

/// Runs again the checks `wsg_server_start` would run except binding the address, as
/// `wsguard check-config` does: reads the HMAC secret (file or environment), keys, certificates
/// and schema files (`wsg_config_from_text` / `_file` made them once already; a file may have
/// changed since). Errors: `WSG_CONFIG_FILE`, `WSG_CONFIG_SECRET_MISSING`,
/// `WSG_CONFIG_INVALID` (each with every problem and its key path), `WSG_NULL_ARGUMENT`.
/// Any thread.
///
/// # Safety
///
/// `config` must be NULL or a live configuration from this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_config_check(config: *const wsg_config) -> wsg_result {
    guard("wsg_config_check", || {
        // SAFETY: caller contract on `config`.
        let config = unsafe { borrow_handle(config, "config") }?;
        wsguard::check_config(&config.config)?;
        Ok(())
    })
}

/// Frees a configuration. `wsg_config_free(NULL)` is a no-op. Servers started from it keep their
/// own copy, so it may be freed right after `wsg_server_start`. Not concurrently with other uses
/// of the same configuration.
///
/// # Safety
///
/// `config` must be NULL or a configuration from this library, not yet freed; it must not be
/// used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wsg_config_free(config: *mut wsg_config) {
    guard_infallible((), || {
        if !config.is_null() {
            // SAFETY: the pointer came from `Box::into_raw` in `give` and is freed exactly once
            // (caller contract).
            drop(unsafe { Box::from_raw(config) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{
        WSG_CONFIG_INVALID, WSG_CONFIG_SECRET_MISSING, WSG_CONFIG_SYNTAX, WSG_NULL_ARGUMENT, WSG_OK,
        wsg_last_error_length,
    };

    fn parse(text: &str) -> (wsg_result, *mut wsg_config) {
        let mut out = std::ptr::null_mut();
        // SAFETY: text is a live &str, out a valid pointer slot.
        let result = unsafe { wsg_config_from_text(text.as_ptr().cast(), text.len(), &mut out) };
        (result, out)
    }

    #[test]
    fn text_parses_and_errors_carry_codes() {
        let secret = std::env::temp_dir().join(format!("wsguard-ffi-config-{}.secret", std::process::id()));
        std::fs::write(&secret, [7u8; 48]).expect("write a test secret");
        let text = format!(
            "[auth]\nhmac_secret_file = {:?}\nissuer = \"https://i.test\"\naudience = \"a\"\n",
            secret.display().to_string()
        );
        let (result, config) = parse(&text);
        std::fs::remove_file(&secret).ok();
        assert_eq!(result, WSG_OK);
        assert!(!config.is_null());
        // SAFETY: config came from wsg_config_from_text.
        unsafe { wsg_config_free(config) };
        let unset =
            "[auth]\nhmac_secret_env = \"WSGUARD_FFI_NEVER_SET\"\nissuer = \"https://i.test\"\naudience = \"a\"\n";
        assert_eq!(parse(unset).0, WSG_CONFIG_SECRET_MISSING, "secrets are checked at construction");
        let (result, config) = parse("[server]\nlisen = 1\n");
        assert_eq!((result, config), (WSG_CONFIG_INVALID, std::ptr::null_mut()), "out written only on success");
        assert!(wsg_last_error_length() > 0);
        assert_eq!(parse("[server\n").0, WSG_CONFIG_SYNTAX);
        // SAFETY: NULL out-pointer is refused before anything is read.
        assert_eq!(unsafe { wsg_config_from_text(c"".as_ptr(), 0, std::ptr::null_mut()) }, WSG_NULL_ARGUMENT);
        // SAFETY: NULL is a no-op.
        unsafe { wsg_config_free(std::ptr::null_mut()) };
    }
}
