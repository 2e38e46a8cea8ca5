//! The one `Hooks` trait hosts implement (Rust directly; C, Python and Node through their
//! bindings), and the dispatcher that calls it. Every call is time-boxed by `hooks.timeout_secs`
//! and fails closed: a hook that is slow, panics or errors never lets a request through.
//!
//! Hooks run *after* the core's own checks: `authenticate` after the JWT is verified, `authorize`
//! after the channel name is validated. They can only narrow what the core allowed.
//!
//! One contract for every host: the same arguments in the same order and the same answers in
//! Rust, C, Python and Node. Bindings convert; the core's [`HookRunner`] applies the answer
//! (the `authenticate` merge rule is [`IdentityUpdate`]'s), times it and fails closed.

mod answer;
mod runner;

pub use answer::{AuthenticateAnswer, IdentityUpdate, InvalidAnswer};
pub(crate) use runner::HookRunner;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Identity;
use crate::config::problems::Problems;
use crate::observe::Event;

/// A boxed future returned by hooks; owned inputs keep it `'static` so bindings can await host
/// callbacks on any thread.
pub type HookFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// `[hooks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Seconds a hook may take before the core answers for it (deny / error). Default 2.
    pub timeout_secs: f64,
    /// Events buffered for `on_event`; when full, events are dropped and counted, never waited
    /// for. Default 1024.
    #[schemars(range(min = 1))]
    pub event_queue_capacity: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig { timeout_secs: 2.0, event_queue_capacity: 1024 }
    }
}

impl HooksConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        problems.positive_secs("hooks.timeout_secs", self.timeout_secs);
    }
}

/// What the `authenticate` hook sees of the handshake (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeInfo {
    /// Resolved client IP.
    pub client_ip: IpAddr,
    /// The `Origin` header, when present.
    pub origin: Option<String>,
    /// The `User-Agent` header, when present.
    pub user_agent: Option<String>,
    /// The handshake headers of `proxy.forward_headers` (name, value), the token's cookie taken
    /// out; sent to the backend proxy only, never to host hooks.
    #[serde(skip)]
    pub(crate) forwarded_headers: Vec<(String, String)>,
}

/// An action a session asks to perform on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelAction {
    /// Receive publications on the channel.
    Subscribe,
    /// Send a publication to the channel.
    Publish,
    /// Read the channel's kept publications (the `history` action).
    History,
}

/// The question put to the `authorize` hook.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizeRequest {
    /// The session asking.
    pub session_id: u64,
    /// Its verified identity.
    pub identity: Arc<Identity>,
    /// What it wants to do.
    pub action: ChannelAction,
    /// On which channel (already validated).
    pub channel: String,
}

/// The answer of the `authorize` hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Refuse with `forbidden`.
    Deny,
}

/// An RPC call from a client.
#[derive(Debug, Clone, Serialize)]
pub struct RpcCall {
    /// The calling session.
    pub session_id: u64,
    /// Its verified identity.
    pub identity: Arc<Identity>,
    /// The method name from the frame.
    pub method: String,
    /// The payload object from the frame.
    pub payload: Value,
}

/// Why an RPC failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// No handler for the (declared) method: the client gets `rpc_failed`.
    UnknownMethod,
    /// The handler failed: the client gets `rpc_failed` with this message (keep it free of
    /// internals).
    Failed(String),
}

/// Host callbacks. Every method has a default that keeps the core's decision.
pub trait Hooks: Send + Sync + 'static {
    /// Custom authentication after the JWT check, at the handshake and again at every in-band
    /// `refresh`, with what the handshake showed (`info`) and the verified identity. The answer
    /// ([`AuthenticateAnswer`]) allows, denies with a reason for the logs (the client gets 403
    /// `rejected_by_hook`, or a `rejected_by_hook` reply to the refresh), or updates roles, scopes
    /// and claims by [`IdentityUpdate`]'s merge rule. The token's registered claims and `sub`,
    /// `exp`, `iat`, `jti` cannot be changed.
    fn authenticate(&self, info: HandshakeInfo, identity: Arc<Identity>) -> HookFuture<AuthenticateAnswer> {
        let _ = (info, identity);
        Box::pin(std::future::ready(AuthenticateAnswer::Allow))
    }

    /// Custom authorization after the core's checks. Only `Allow` lets the request through.
    fn authorize(&self, request: AuthorizeRequest) -> HookFuture<Decision> {
        let _ = request;
        Box::pin(std::future::ready(Decision::Allow))
    }

    /// Handles an `rpc` frame for a method declared in `[[rpc]]` (undeclared methods never reach
    /// the host).
    fn rpc(&self, call: RpcCall) -> HookFuture<Result<Value, RpcError>> {
        let _ = call;
        Box::pin(std::future::ready(Err(RpcError::UnknownMethod)))
    }

    /// Receives security and lifecycle events, one at a time and in order, from the core's one
    /// bounded queue (`hooks.event_queue_capacity`): the core awaits the returned future (within
    /// `hooks.timeout_secs`) before it hands over the next event, so a slow host fills the queue
    /// and the events that do not fit are dropped and counted in `wsguard_events_dropped_total`.
    fn on_event(&self, event: &Event) -> HookFuture<()> {
        let _ = event;
        Box::pin(std::future::ready(()))
    }
}

/// Runs a blocking host callback (a C function, a Python call that takes the GIL) on tokio's
/// blocking pool, so it never stalls a connection thread. The core's timeout still applies; when
/// the callback panics or the pool is gone, `fallback` (the fail-closed answer) is returned.
pub fn run_blocking<T, F>(callback: F, fallback: T) -> HookFuture<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Box::pin(async move { tokio::task::spawn_blocking(callback).await.unwrap_or(fallback) })
}

/// Hooks that keep every core decision.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}
