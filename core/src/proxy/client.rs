//! One backend endpoint: a POST of JSON within the endpoint's bounds (concurrency, time, answer
//! size), every way it can go wrong named by a [`ProxyFailure`]. It reads no answer's meaning;
//! the caller parses the JSON it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::config::ProxyEndpointConfig;
use crate::observe::{Event, EventSink, Stats};

/// The header that carries `proxy.secret_env`'s value.
pub(crate) const SECRET_HEADER: &str = "x-wsguard-secret";

/// Why an endpoint gave no usable answer. Each is a `result` label of
/// `wsguard_proxy_requests_total` and of the `proxy_failed` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyFailure {
    /// `max_concurrency` requests were already in flight: refused at once, never queued.
    #[error("{0} requests already in flight")]
    Overloaded(u32),
    /// No connection, a TLS failure, a reset, a redirect (never followed).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within `timeout_secs`.
    #[error("no answer within the endpoint's timeout")]
    TimedOut,
    /// An HTTP status other than 2xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is longer than `max_response_bytes` (by `Content-Length` or as streamed).
    #[error("answer longer than {0} bytes")]
    TooLarge(u64),
    /// The body is not JSON.
    #[error("answer is not JSON: {0}")]
    Malformed(String),
    /// The JSON is not an answer of this endpoint's kind.
    #[error("invalid answer: {0}")]
    Invalid(String),
}

impl ProxyFailure {
    /// The metric and event label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ProxyFailure::Overloaded(_) => "overloaded",
            ProxyFailure::Unreachable(_) => "unreachable",
            ProxyFailure::TimedOut => "timeout",
            ProxyFailure::Status(_) => "http_status",
            ProxyFailure::TooLarge(_) => "too_large",
            ProxyFailure::Malformed(_) => "malformed",
            ProxyFailure::Invalid(_) => "invalid",
        }
    }

    /// True when the backend answered, but not with a valid answer (too long, not JSON, wrong
    /// shape): treated like an invalid answer from an embedded hook.
    pub(crate) fn is_invalid_answer(&self) -> bool {
        matches!(self, ProxyFailure::TooLarge(_) | ProxyFailure::Malformed(_) | ProxyFailure::Invalid(_))
    }
}

/// One configured endpoint.
pub(crate) struct Endpoint {
    /// `connect`, `subscribe`, `publish` or `rpc` (per-method endpoints too): the metric label.
    pub(crate) name: &'static str,
    url: Url,
    timeout: Duration,
    max_response_bytes: u64,
    max_concurrency: u32,
    in_flight: Arc<Semaphore>,
}

/// What every endpoint shares: the HTTP client, the secret, the observers.
pub(crate) struct Shared {
    pub(crate) client: reqwest::Client,
    pub(crate) secret: Option<String>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: EventSink,
}

impl Endpoint {
    /// An endpoint from a validated config (the URL was checked by `ProxyConfig::validate`).
    pub(crate) fn new(name: &'static str, config: &ProxyEndpointConfig) -> Result<Endpoint, String> {
        let url = crate::auth::check_fetch_url(&config.url)?;
        Ok(Endpoint {
            name,
            url,
            timeout: Duration::from_secs_f64(config.timeout_secs),
            max_response_bytes: config.max_response_bytes,
            max_concurrency: config.max_concurrency,
            in_flight: Arc::new(Semaphore::new(config.max_concurrency as usize)),
        })
    }

    /// POSTs `body` (JSON) with the forwarded headers and returns the answer as `parse` reads
    /// its JSON, recording the outcome (metric, and an event on failure).
    pub(crate) async fn call<T>(
        &self,
        shared: &Shared,
        body: Vec<u8>,
        headers: &[(String, String)],
        parse: impl FnOnce(Value) -> Result<T, ProxyFailure>,
    ) -> Result<T, ProxyFailure> {
        let started = Instant::now();
        let result = self.exchange(shared, body, headers).await.and_then(parse);
        let outcome = result.as_ref().map_or_else(ProxyFailure::label, |_| "ok");
        shared.stats.record_proxy_request(self.name, outcome, started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            shared.events.emit(Event::ProxyFailed {
                endpoint: self.name,
                result: failure.label(),
                detail: failure.to_string(),
            });
        }
        result
    }

    async fn exchange(
        &self,
        shared: &Shared,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<Value, ProxyFailure> {
        // Over the cap: refused now. Waiting would hold a handshake or a session's dispatch on a
        // backend that is already behind.
        let _permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| ProxyFailure::Overloaded(self.max_concurrency))?;
        let exchange = async {
            let mut request = shared
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json");
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Some(secret) = &shared.secret {
                request = request.header(SECRET_HEADER, secret.as_str());
            }
            let mut response = request.body(body).send().await.map_err(unreachable)?;
            let status = response.status();
            if !status.is_success() {
                return Err(ProxyFailure::Status(status.as_u16()));
            }
            let cap = self.max_response_bytes;
            if response.content_length().is_some_and(|n| n > cap) {
                return Err(ProxyFailure::TooLarge(cap));
            }
            // Streamed: a body without Content-Length (chunked) is cut off at the cap too.
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                if (answer.len() + chunk.len()) as u64 > cap {
                    return Err(ProxyFailure::TooLarge(cap));
                }
                answer.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&answer).map_err(|e| ProxyFailure::Malformed(e.to_string()))
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or(Err(ProxyFailure::TimedOut))
    }
}

fn unreachable(error: reqwest::Error) -> ProxyFailure {
    if error.is_timeout() {
        return ProxyFailure::TimedOut;
    }
    // The whole chain: reqwest's own message is generic ("error sending request").
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    ProxyFailure::Unreachable(detail)
}
