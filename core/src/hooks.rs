//! The one `Hooks` trait hosts implement (Rust directly; C, Python and Node through their
//! bindings), and the dispatcher that calls it. Every call is time-boxed by `hooks.timeout_secs`
//! and fails closed: a hook that is slow, panics or errors never lets a request through.
//!
//! Hooks run *after* the core's own checks: `authenticate` after the JWT is verified, `authorize`
//! after the channel name is validated. They can only narrow what the core allowed.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Identity;
use crate::config::Problems;
use crate::error::ErrorCode;
use crate::observe::{Event, Stats};

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
}

/// An action a session asks to perform on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelAction {
    /// Receive publications on the channel.
    Subscribe,
    /// Send a publication to the channel.
    Publish,
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
    /// `refresh`: return the identity with roles, scopes or claims enriched, or a refusal message
    /// for the logs (the client gets 403 `rejected_by_hook`, or a `rejected_by_hook` reply to the
    /// refresh). The token's registered facts (`sub`, `exp`, `iat`, `jti`) cannot be changed: a
    /// changed `sub` is refused, the others are restored.
    fn authenticate(&self, info: HandshakeInfo, identity: Identity) -> HookFuture<Result<Identity, String>> {
        let _ = info;
        Box::pin(std::future::ready(Ok(identity)))
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

    /// Receives security and lifecycle events from a bounded queue, one at a time, off the
    /// connection tasks. Must not block for long: the queue drops events while it is full.
    fn on_event(&self, event: &Event) {
        let _ = event;
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

/// JWT registered claims (RFC 7519 §4.1) a hook can never change.
const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// Calls hooks with a time box, catching panics, failing closed.
#[derive(Clone)]
pub(crate) struct HookRunner {
    hooks: Arc<dyn Hooks>,
    /// False when the host installed no hooks ([`ServerBuilder::hooks`](crate::ServerBuilder::hooks)
    /// never called): every hook then keeps the core's decision, so `authenticate` and `authorize`
    /// are answered here without the call, its time box, its copies, its request and its metric.
    has_host_hooks: bool,
    timeout: Duration,
    stats: Arc<Stats>,
}

/// Why a hook call did not produce an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HookFailure {
    /// No answer within the time box (`hooks.timeout_secs`, `limits.rpc_timeout_secs`).
    #[error("the hook did not answer in time")]
    TimedOut,
    /// The hook panicked (or its future did); caught, never propagated.
    #[error("the hook panicked")]
    Panicked,
}

impl HookFailure {
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            HookFailure::TimedOut => ErrorCode::HookTimeout,
            HookFailure::Panicked => ErrorCode::RpcFailed,
        }
    }
}

/// Why the `authenticate` hook refused a handshake (fail closed: anything but an identity with
/// the same `sub`, in time, is a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthenticateRefusal {
    /// The host denied, with its reason (for logs and events only).
    #[error("{0}")]
    Denied(String),
    /// The hook returned an identity with another `sub`.
    #[error("authenticate hook changed the subject")]
    ChangedSubject,
    /// The hook did not answer within `hooks.timeout_secs`.
    #[error("authenticate hook timed out")]
    TimedOut,
    /// The hook panicked.
    #[error("authenticate hook panicked")]
    Panicked,
}

impl AuthenticateRefusal {
    /// `hook_timeout` (503) for a hook that did not answer, `rejected_by_hook` (403) otherwise.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            AuthenticateRefusal::TimedOut => ErrorCode::HookTimeout,
            _ => ErrorCode::RejectedByHook,
        }
    }
}

impl HookRunner {
    pub(crate) fn new(hooks: Arc<dyn Hooks>, has_host_hooks: bool, timeout: Duration, stats: Arc<Stats>) -> Self {
        HookRunner { hooks, has_host_hooks, timeout, stats }
    }

    /// True when the host installed hooks.
    #[cfg(test)]
    pub(crate) fn has_host_hooks(&self) -> bool {
        self.has_host_hooks
    }

    async fn run<T>(
        &self,
        hook: &'static str,
        call: impl FnOnce(&dyn Hooks) -> HookFuture<T>,
    ) -> Result<T, HookFailure> {
        self.run_within(self.timeout, hook, call).await
    }

    async fn run_within<T>(
        &self,
        limit: Duration,
        hook: &'static str,
        call: impl FnOnce(&dyn Hooks) -> HookFuture<T>,
    ) -> Result<T, HookFailure> {
        let started = std::time::Instant::now();
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(self.hooks.as_ref()))) {
            Err(_) => Err(HookFailure::Panicked),
            Ok(future) => {
                match tokio::time::timeout(limit, std::panic::AssertUnwindSafe(future).catch_unwind()).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(_)) => Err(HookFailure::Panicked),
                    Err(_) => Err(HookFailure::TimedOut),
                }
            }
        };
        let failure = match &result {
            Ok(_) => None,
            Err(HookFailure::TimedOut) => Some("timeout"),
            Err(HookFailure::Panicked) => Some("panic"),
        };
        self.stats.record_hook(hook, started.elapsed().as_secs_f64(), failure);
        result
    }

    /// The `authenticate` hook with the core's guarantees: fail closed, `sub` unchanged, the
    /// token's registered facts (`exp`, `iat`, `jti`) restored whatever the hook returned.
    pub(crate) async fn authenticate(
        &self,
        info: HandshakeInfo,
        identity: Identity,
    ) -> Result<Identity, AuthenticateRefusal> {
        if !self.has_host_hooks {
            return Ok(identity);
        }
        let original = identity.clone();
        match self.run("authenticate", |h| h.authenticate(info, identity)).await {
            Ok(Ok(identity)) if identity.subject != original.subject => Err(AuthenticateRefusal::ChangedSubject),
            Ok(Ok(mut identity)) => {
                identity.expires_at = original.expires_at;
                identity.issued_at = original.issued_at;
                identity.token_id = original.token_id;
                // The registered claims as the token carried them, whatever the hook returned.
                let registered = original.claims.to_map();
                let mut claims = identity.claims.to_map();
                for name in REGISTERED_CLAIMS {
                    match registered.get(name) {
                        Some(value) => claims.insert(name.to_string(), value.clone()),
                        None => claims.remove(name),
                    };
                }
                identity.claims = claims.into();
                Ok(identity)
            }
            Ok(Err(message)) => Err(AuthenticateRefusal::Denied(message)),
            Err(HookFailure::TimedOut) => Err(AuthenticateRefusal::TimedOut),
            Err(HookFailure::Panicked) => Err(AuthenticateRefusal::Panicked),
        }
    }

    /// Fail-closed: anything but an explicit `Allow` in time is a denial. The request is built only
    /// when the host installed hooks (it copies the channel name, once per subscribe and publish).
    pub(crate) async fn authorize(&self, request: impl FnOnce() -> AuthorizeRequest) -> Result<Decision, HookFailure> {
        if !self.has_host_hooks {
            return Ok(Decision::Allow);
        }
        let request = request();
        self.run("authorize", |h| h.authorize(request)).await
    }

    /// RPC handlers get their own budget (`limits.rpc_timeout_secs`).
    pub(crate) async fn rpc(&self, call: RpcCall, limit: Duration) -> Result<Result<Value, RpcError>, HookFailure> {
        self.run_within(limit, "rpc", |h| h.rpc(call)).await
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use crate::auth::Claims;

    use super::*;

    /// Hooks that refuse everything: installed, they decide; not installed, the core's decision
    /// stands.
    struct DenyAll;

    impl Hooks for DenyAll {
        fn authenticate(&self, _info: HandshakeInfo, _identity: Identity) -> HookFuture<Result<Identity, String>> {
            Box::pin(std::future::ready(Err("refused".to_string())))
        }
        fn authorize(&self, _request: AuthorizeRequest) -> HookFuture<Decision> {
            Box::pin(std::future::ready(Decision::Deny))
        }
    }

    fn identity() -> Identity {
        Identity {
            subject: "alice".into(),
            roles: vec![],
            scopes: vec![],
            expires_at: 4_000_000_000,
            issued_at: None,
            token_id: None,
            claims: Claims::new(),
        }
    }

    fn info() -> HandshakeInfo {
        HandshakeInfo { client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), origin: None, user_agent: None }
    }

    fn request() -> AuthorizeRequest {
        AuthorizeRequest {
            session_id: 1,
            identity: Arc::new(identity()),
            action: ChannelAction::Subscribe,
            channel: "c".into(),
        }
    }

    #[tokio::test]
    async fn installed_hooks_are_called_and_decide() {
        let runner = HookRunner::new(Arc::new(DenyAll), true, Duration::from_secs(1), Arc::new(Stats::default()));
        assert!(runner.has_host_hooks());
        assert!(runner.authenticate(info(), identity()).await.is_err());
        assert_eq!(runner.authorize(request).await, Ok(Decision::Deny));
    }

    #[tokio::test]
    async fn without_host_hooks_the_core_decision_stands_and_nothing_is_called() {
        // The runner is told no hooks were installed: even hooks that would refuse are not asked.
        let runner = HookRunner::new(Arc::new(DenyAll), false, Duration::from_secs(1), Arc::new(Stats::default()));
        assert!(!runner.has_host_hooks());
        let kept = runner.authenticate(info(), identity()).await.map(|i| i.subject);
        assert_eq!(kept, Ok("alice".to_string()));
        assert_eq!(runner.authorize(request).await, Ok(Decision::Allow));
    }
}
