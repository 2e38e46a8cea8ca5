//! `server.bans()`, `server.ban(target, secs)` and `server.liftBan(target)`: the core's ban list
//! (`ServerHandle::bans`, `ban`, `lift_ban`). Operator bans and the automatic bans of the
//! `[abuse]` section share one list; a banned IP or user is refused at the handshake with 403
//! `banned`. Exemptions, expiry and what a ban covers are the core's.

use std::net::IpAddr;
use std::time::Duration;

use napi::{Env, Status};
use napi_derive::napi;
use serde_json::Value;
use wsguard::limits::BanTarget;

use crate::errors::invalid_argument;
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

impl TryFrom<JsBanTarget> for BanTarget {
    type Error = napi::Error;

    /// Parsing the IP text is the conversion the core's own `BanTarget` deserializer makes; no
    /// other check happens here.
    fn try_from(target: JsBanTarget) -> napi::Result<Self> {
        match target {
            JsBanTarget { ip: Some(ip), user: None } => ip
                .parse::<IpAddr>()
                .map(BanTarget::Ip)
                .map_err(|_| invalid_argument(format!("ip is not an IPv4 or IPv6 address: {ip:?}"))),
            JsBanTarget { ip: None, user: Some(user) } => Ok(BanTarget::User(user)),
            _ => Err(invalid_argument("a ban target takes exactly one of ip, user")),
        }
    }
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
    /// Throws `InvalidArg` for a malformed target or a negative or non-finite `secs`.
    //
    // `catch_unwind`: the core adds `secs` to `Instant::now()` unchecked, so an enormous ban
    // (beyond about 9.2e18 s on Linux) panics there; caught, it is a thrown error instead of an aborted process.
    #[napi(catch_unwind)]
    pub fn ban(&self, env: Env, target: JsBanTarget, secs: f64) -> napi::Result<bool> {
        let target = BanTarget::try_from(target)?;
        let duration = Duration::try_from_secs_f64(secs)
            .map_err(|_| invalid_argument("secs must be a finite, non-negative number of seconds"))?;
        Ok(self.handle(&env)?.ban(target, duration))
    }

    /// Lifts the ban of an IP or a user (operator or automatic); returns whether there was one.
    #[napi]
    pub fn lift_ban(&self, env: Env, target: JsBanTarget) -> napi::Result<bool> {
        let target = BanTarget::try_from(target)?;
        Ok(self.handle(&env)?.lift_ban(&target))
    }
}
