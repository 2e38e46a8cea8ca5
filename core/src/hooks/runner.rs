//! `HookRunner`: calls the host's hooks with a time box, catching panics, failing closed, then
//! the backend proxy's endpoints (`[proxy]`), and applies their answers. The only place a hook's
//! or a backend's answer turns into a core decision.
//!
//! Order, when both are present: the core's own checks, then the host hook, then the proxy
//! endpoint. Each can only narrow: a refusal by the first ends the request before the second is
//! asked, and `connect` sees the identity as the `authenticate` hook left it. An RPC method with a
//! proxy endpoint is answered by the backend only (the host's `rpc` hook is not called for it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;

use super::{AuthorizeRequest, Decision, HandshakeInfo, HookFuture, Hooks, RpcCall, RpcError};
use crate::auth::Identity;
use crate::error::ErrorCode;
use crate::observe::{Event, Stats};
use crate::proxy::{Proxy, ProxyFailure};

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
    /// The backend proxy, when `[proxy]` names an endpoint.
    proxy: Option<Arc<Proxy>>,
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
    /// A backend proxy endpoint gave no answer (unreachable, non-2xx, over its concurrency cap).
    #[error("the backend is unavailable")]
    Unavailable,
}

/// Why the `authenticate` hook refused a handshake or a refresh (fail closed: anything but an
/// allowing answer, in time, is a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthenticateRefusal {
    /// The host denied, or its answer was invalid; the reason is for logs and events only.
    #[error("{0}")]
    Denied(String),
    /// The hook did not answer within `hooks.timeout_secs`.
    #[error("authenticate hook timed out")]
    TimedOut,
    /// The hook panicked.
    #[error("authenticate hook panicked")]
    Panicked,
    /// The backend's `connect` endpoint gave no answer; the detail is for logs and events only.
    #[error("connect endpoint unavailable: {0}")]
    Unavailable(String),
}

impl AuthenticateRefusal {
    /// `hook_timeout` (503) for a hook that did not answer, `rejected_by_hook` (403) otherwise.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            AuthenticateRefusal::TimedOut => ErrorCode::HookTimeout,
            AuthenticateRefusal::Unavailable(_) => ErrorCode::ProxyUnavailable,
            _ => ErrorCode::RejectedByHook,
        }
    }
}

impl HookFailure {
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            HookFailure::TimedOut => ErrorCode::HookTimeout,
            HookFailure::Panicked => ErrorCode::RpcFailed,
            HookFailure::Unavailable => ErrorCode::ProxyUnavailable,
        }
    }
}

impl HookRunner {
    pub(crate) fn new(hooks: Arc<dyn Hooks>, has_host_hooks: bool, timeout: Duration, stats: Arc<Stats>) -> Self {
        HookRunner { hooks, has_host_hooks, timeout, stats, proxy: None }
    }

    /// The runner that also asks the backend proxy's endpoints.
    pub(crate) fn with_proxy(mut self, proxy: Option<Arc<Proxy>>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The handshake headers the proxy forwards (none without a proxy).
    pub(crate) fn forward_headers(&self) -> &[String] {
        self.proxy.as_deref().map_or(&[], Proxy::forward_headers)
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
            Err(HookFailure::Unavailable) => Some("unavailable"),
        };
        self.stats.record_hook(hook, started.elapsed().as_secs_f64(), failure);
        result
    }

    /// The `authenticate` hook with the core's guarantees: fail closed, the answer applied by
    /// [`AuthenticateAnswer`](super::AuthenticateAnswer)'s merge rule, and the token's facts
    /// (`sub`, `exp`, `iat`, `jti` and the registered claims) as the token carried them.
    ///
    /// Then the proxy's `connect` endpoint, when configured, with the identity the hook left;
    /// its answer is applied by the same rule. `session_id` is the refreshing session (None at
    /// the handshake).
    pub(crate) async fn authenticate(
        &self,
        info: HandshakeInfo,
        identity: Identity,
        session_id: Option<u64>,
    ) -> Result<Identity, AuthenticateRefusal> {
        let identity = if self.has_host_hooks {
            let identity = Arc::new(identity);
            let asked = Arc::clone(&identity);
            let answer = match self.run("authenticate", |h| h.authenticate(info.clone(), asked)).await {
                Ok(answer) => answer,
                Err(HookFailure::TimedOut) => return Err(AuthenticateRefusal::TimedOut),
                Err(_) => return Err(AuthenticateRefusal::Panicked),
            };
            // The merge rule cannot reach `sub`, `exp`, `iat`, `jti` or a registered claim: `apply`
            // refuses an update that names one, and has no field for the others.
            answer.apply(Arc::unwrap_or_clone(identity)).map_err(AuthenticateRefusal::Denied)?
        } else {
            identity
        };
        let Some(proxy) = self.proxy.as_deref().filter(|p| p.has_connect()) else { return Ok(identity) };
        match proxy.connect(&info, &identity, session_id).await {
            None => Ok(identity),
            Some(Ok(answer)) => answer.apply(identity).map_err(AuthenticateRefusal::Denied),
            Some(Err(ProxyFailure::TimedOut)) => Err(AuthenticateRefusal::TimedOut),
            // An answer that is not one is treated like an embedded hook's invalid answer.
            Some(Err(failure)) if failure.is_invalid_answer() => Err(AuthenticateRefusal::Denied(failure.to_string())),
            Some(Err(failure)) => Err(AuthenticateRefusal::Unavailable(failure.to_string())),
        }
    }

    /// Fail-closed: anything but an explicit `Allow` in time is a denial. The request is built only
    /// when the host installed hooks (it copies the channel name, once per subscribe and publish).
    /// Then the proxy's `subscribe` or `publish` endpoint, when configured, with `info` (the
    /// client's address and forwarded headers) and the publication's payload; an invalid answer
    /// denies, as an embedded hook's does.
    pub(crate) async fn authorize(
        &self,
        request: impl FnOnce() -> AuthorizeRequest,
        info: &HandshakeInfo,
        payload: Option<&Value>,
    ) -> Result<Decision, HookFailure> {
        let proxy = self.proxy.as_deref();
        if !self.has_host_hooks && proxy.is_none() {
            return Ok(Decision::Allow);
        }
        let request = request();
        let proxy = proxy.filter(|p| p.has_channel(request.action));
        if self.has_host_hooks {
            if proxy.is_none() {
                return self.run("authorize", |h| h.authorize(request)).await;
            }
            let asked = request.clone();
            if self.run("authorize", |h| h.authorize(asked)).await? == Decision::Deny {
                return Ok(Decision::Deny);
            }
        }
        let Some(proxy) = proxy else { return Ok(Decision::Allow) };
        let answer = proxy
            .authorize(request.action, request.session_id, info, &request.identity, &request.channel, payload)
            .await;
        match answer {
            None => Ok(Decision::Allow),
            Some(Ok(decision)) => Ok(decision),
            Some(Err(ProxyFailure::TimedOut)) => Err(HookFailure::TimedOut),
            Some(Err(failure)) if failure.is_invalid_answer() => Ok(Decision::Deny),
            Some(Err(_)) => Err(HookFailure::Unavailable),
        }
    }

    /// RPC handlers get their own budget (`limits.rpc_timeout_secs`). A method with a proxy
    /// endpoint is answered by the backend within that endpoint's `timeout_secs`: a failure other
    /// than the timeout, or an invalid answer, fails the call (`rpc_failed`) without detail for
    /// the client.
    pub(crate) async fn rpc(
        &self,
        call: RpcCall,
        info: &HandshakeInfo,
        limit: Duration,
    ) -> Result<Result<Value, RpcError>, HookFailure> {
        if let Some(proxy) = self.proxy.as_deref().filter(|p| p.has_rpc(&call.method)) {
            return match proxy.rpc(call.session_id, info, &call.identity, &call.method, &call.payload).await {
                None => Ok(Err(RpcError::UnknownMethod)),
                Some(Ok(answer)) => Ok(answer),
                Some(Err(ProxyFailure::TimedOut)) => Err(HookFailure::TimedOut),
                Some(Err(_)) => Ok(Err(RpcError::Failed("the backend failed to answer".into()))),
            };
        }
        self.run_within(limit, "rpc", |h| h.rpc(call)).await
    }

    /// Hands one event to the host and waits until it took it (or its time box ended); the
    /// event queue's single consumer calls this, so events stay in order.
    pub(crate) async fn on_event(&self, event: &Event) {
        if self.run("on_event", |h| h.on_event(event)).await.is_err() {
            tracing::warn!(target: "wsguard::events", "on_event hook timed out or panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::auth::Claims;
    use crate::hooks::{AuthenticateAnswer, ChannelAction};

    /// Hooks that refuse everything: installed, they decide; not installed, the core's decision
    /// stands.
    struct DenyAll;

    impl Hooks for DenyAll {
        fn authenticate(&self, _info: HandshakeInfo, _identity: Arc<Identity>) -> HookFuture<AuthenticateAnswer> {
            Box::pin(std::future::ready(AuthenticateAnswer::Deny("refused".to_string())))
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
        HandshakeInfo {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            origin: None,
            user_agent: None,
            forwarded_headers: Vec::new(),
        }
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
        assert!(runner.authenticate(info(), identity(), None).await.is_err());
        assert_eq!(runner.authorize(request, &info(), None).await, Ok(Decision::Deny));
    }

    #[tokio::test]
    async fn without_host_hooks_the_core_decision_stands_and_nothing_is_called() {
        // The runner is told no hooks were installed: even hooks that would refuse are not asked.
        let runner = HookRunner::new(Arc::new(DenyAll), false, Duration::from_secs(1), Arc::new(Stats::default()));
        assert!(!runner.has_host_hooks());
        let kept = runner.authenticate(info(), identity(), None).await.map(|i| i.subject);
        assert_eq!(kept, Ok("alice".to_string()));
        assert_eq!(runner.authorize(request, &info(), None).await, Ok(Decision::Allow));
    }
}
