//! Node.js bindings over the wsguard core: the native half of the npm package `wsguard`.
//!
//! This crate adapts, the core decides (STYLE.md, "Bindings adapt, core decides"): each exported
//! method converts its JavaScript arguments, calls one core function and converts the result. It
//! holds no default, validation or security check of its own.
//!
//! - `server`: `JsServer`, exported as `Server` (lifecycle, publish, disconnect, revoke, stats,
//!   reload);
//! - `bans`: `Server.bans()`, `ban()` and `liftBan()` over the core's ban list;
//! - `hooks`: the core's `Hooks` trait answered by registered JavaScript functions;
//! - `callback`: `JsCallback`, the one typed wrapper over napi's `ThreadsafeFunction` through
//!   which every JavaScript function is called;
//! - `errors`: core errors as JavaScript `Error`s with `code`, `errno` and `problems`;
//! - `json`: JSON values from JavaScript, with integral numbers restored as integers.
//!
//! The generated `index.js` / `index.d.ts` load and describe this module; the package's public
//! API (EventEmitter, Promises) is the small wrapper in `lib/`.

mod callback;
mod errors;
mod hooks;
mod json;
mod server;

// After `server`: napi-derive names the second `#[napi] impl JsServer` block (in `bans`) after
// the struct's `js_name` (`Server`) only when it has already expanded `server`'s struct.
mod bans;

pub use bans::JsBanTarget;
pub use errors::ConfigProblem;
pub use server::{Close, CloseOptions, DisconnectTarget, JsServer, Listen, Reload, RevokeTarget};
