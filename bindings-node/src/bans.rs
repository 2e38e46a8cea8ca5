//! `server.bans()`, `server.ban(target, secs)` and `server.liftBan(target)`: the core's ban list
//! (`ServerHandle::bans`, `ban`, `lift_ban`). Operator bans and the automatic bans of the
//! `[abuse]` section share one list; a banned IP or user is refused at the handshake with 403
//! `banned`. Exemptions, expiry and what a ban covers are the core's.

use napi::{Env, Status};
use napi_derive::napi;
use serde_json::Value;
use wsguard::host;
use wsguard::limits::BanTarget;

use crate::errors::core_error;
use crate::server::JsServer;

/// Whom `ban()` and `liftBan()` target; exactly one field.
#[napi(object, js_name = "BanTarget")]
pub struct JsBanTarget {
    /// A client IP (IPv4 or IPv6 text), as the server resolves it through
    /// `server.trusted_proxies`.
    pub ip: Option<String>,
    /// A user: the token's `sub`.
    pub user: Option<String>,
}

/// The core's ban target (its "exactly one of ip, user" rule), or the JavaScript error.
fn ban_target(env: &Env, target: &JsBanTarget) -> napi::Result<BanTarget> {
    host::ban_target(target.ip.as_deref(), target.user.as_deref()).map_err(|e| core_error(env, &e))
}

#[napi]
impl JsServer {
    /// The bans in force (operator and automatic alike), each as the core's `BanInfo`:
    /// `{ target: { kind: 'ip' | 'user', value }, reason, remaining_secs }`. Throws `not_running`
    /// before `listen()`.
    #[napi(ts_return_type = "Array<Record<string, any>>")]
    pub fn bans(&self, env: Env) -> napi::Result<Value> {
        let bans = self.handle(&env)?.bans();
        serde_json::to_value(bans).map_err(|e| napi::Error::new(Status::GenericFailure, e.to_string()))
    }

    /// Bans an IP or a user for `secs` seconds: new handshakes are refused with 403 `banned`
    /// (open sessions stay open; combine with `disconnect()` or `revoke()` for that). A ban in
    /// force is replaced. Returns whether it was applied (`false` for an IP in `abuse.exempt`).
    /// Throws `invalid_argument` for a malformed target or a `secs` the core refuses (negative,
    /// not finite, longer than it can add to the clock).
    #[napi]
    pub fn ban(&self, env: Env, target: JsBanTarget, secs: f64) -> napi::Result<bool> {
        let target = ban_target(&env, &target)?;
        let duration = host::ban_duration(secs).map_err(|e| core_error(&env, &e))?;
        Ok(self.handle(&env)?.ban(target, duration))
    }

    /// Lifts the ban of an IP or a user (operator or automatic); returns whether there was one.
    /// Throws `invalid_argument` for a malformed target.
    #[napi]
    pub fn lift_ban(&self, env: Env, target: JsBanTarget) -> napi::Result<bool> {
        let target = ban_target(&env, &target)?;
        Ok(self.handle(&env)?.lift_ban(&target))
    }
}
