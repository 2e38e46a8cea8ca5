//! Core errors as JavaScript `Error`s: `code` is the stable snake_case name and `errno` the
//! number from the core's `ErrorCode` registry; `problems` lists every configuration problem with
//! its key path (empty for other errors). The message is the core's `Display` text, which for a
//! configuration error names every problem too.

use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::{Env, JsValue, Status};

/// One configuration problem, as listed in `error.problems`.
#[napi_derive::napi(object)]
pub struct ConfigProblem {
    /// Dotted key path (`server.listen`, `channels[0].pattern`), or `<root>` / `<file>`.
    pub path: String,
    /// What is wrong, for humans.
    pub message: String,
}

/// Builds the JavaScript error for a core error. Call on the JavaScript thread.
pub(crate) fn core_error(env: &Env, error: &wsguard::Error) -> napi::Error {
    let problems = match error {
        wsguard::Error::Config(config) => config
            .problems()
            .iter()
            .map(|p| ConfigProblem { path: p.path.clone(), message: p.message.clone() })
            .collect(),
        _ => Vec::new(),
    };
    let code = error.code();
    build(env, error.to_string(), code.name(), code.number(), problems)
        .unwrap_or_else(|e| napi::Error::new(Status::GenericFailure, format!("{error} ({e})")))
}

fn build(
    env: &Env,
    message: String,
    code: &str,
    errno: u32,
    problems: Vec<ConfigProblem>,
) -> napi::Result<napi::Error> {
    let mut object: Object<'_> = env.create_error(napi::Error::new(Status::GenericFailure, message))?;
    object.set_named_property("code", code)?;
    object.set_named_property("errno", errno)?;
    object.set_named_property("problems", problems)?;
    Ok(napi::Error::from(object.to_unknown()))
}

/// A JavaScript value the binding cannot convert (a `graceSecs` that is no duration); thrown
/// with napi's `code` `'InvalidArg'`. Arguments the core's rules refuse (`wsguard::host`) go
/// through [`core_error`] instead, as `invalid_argument`.
pub(crate) fn invalid_argument(message: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, message.into())
}
