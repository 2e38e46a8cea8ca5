//! Keys from an identity provider: a JWKS fetched over HTTPS from `auth.jwks_url` or from the
//! `jwks_uri` of the issuer's OpenID Connect discovery document, cached and refreshed.
//!
//! - The URL comes from the config only; a token's `jku`, `x5u` or embedded `jwk` is never read.
//! - A redirect is followed only within the same origin (scheme, host, port), at most
//!   [`MAX_REDIRECTS`] times; a response is read up to `auth.jwks_max_bytes` within
//!   `auth.jwks_timeout_secs`; anything else is a failed fetch.
//! - A failed fetch keeps the last good key set, emits `jwks_fetch_failed` and counts
//!   `wsguard_jwks_fetches_total{result=<reason>}`; the background task retries with backoff.
//! - A fetched set replaces the cached one for `Cache-Control: max-age`, clamped to
//!   `[jwks_cache_min_secs, jwks_cache_max_secs]`.
//! - A token with an unknown `kid` refetches at most once per `auth.jwks_min_refetch_secs`, one
//!   request for every connection waiting at that moment (single flight).
//!
//! Until a first set is loaded the issuer has no keys: its tokens are answered `keys_unavailable`
//! (503) and `/readyz` says not ready.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{AuthConfig, IssuerSpec, JwtAlgorithm, KeySourceSpec, check_fetch_url};
use super::keys::KeySet;
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;
use crate::observe::{Event, EventSink, Stats};

/// Redirects followed within one origin before a fetch fails.
pub(crate) const MAX_REDIRECTS: usize = 3;
/// First retry delay after a failed fetch; doubled per failure up to [`MAX_RETRY`] (or
/// `jwks_cache_min_secs` when smaller).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Path of the OpenID Connect discovery document under the issuer.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// What the fetchers report to: the server's metrics and events. Set when the server starts them.
#[derive(Clone)]
pub(crate) struct JwksRuntime {
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: EventSink,
    pub(crate) shutdown: CancellationToken,
}

/// The `[auth]` keys that shape fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    cache_min: Duration,
    cache_max: Duration,
    min_refetch: Duration,
    timeout: Duration,
    max_bytes: u64,
}

/// Everything a source was built from: a reload whose source is equal keeps the running one (its
/// cache and its task).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    issuer: String,
    source: KeySourceSpec,
    algorithms: Vec<JwtAlgorithm>,
    settings: Settings,
    ca: Option<(PathBuf, Vec<u8>)>,
}

/// Why a fetch failed; `reason` is the metric label and the event's reason.
#[derive(Debug)]
pub(crate) struct FetchError {
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

impl FetchError {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        FetchError { reason, detail: detail.into() }
    }
}

/// State owned by whoever holds the fetch lock (one fetch at a time per source).
#[derive(Default)]
struct FetchState {
    /// The discovered `jwks_uri` (discovery only), forgotten after a failed JWKS fetch.
    jwks_uri: Option<Url>,
    /// When an unknown `kid` last caused a fetch (scheduled fetches do not count).
    last_refetch: Option<Instant>,
}

/// One issuer's remote key source.
pub(crate) struct RemoteKeys {
    identity: Identity,
    algorithms: Vec<Algorithm>,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    /// Bumped after every successful fetch (a waiter for the lock sees whether a set arrived).
    generation: AtomicU64,
    fetch: tokio::sync::Mutex<FetchState>,
    /// True once the first fetch attempt has ended (success or failure).
    attempted: tokio::sync::watch::Sender<bool>,
    runtime: OnceLock<JwksRuntime>,
    started: AtomicBool,
    /// Cancelled when a reload replaced this source: its fetcher stops, and an unknown `kid`
    /// no longer refetches (sessions that still hold it keep its last key set).
    retired: CancellationToken,
}

impl RemoteKeys {
    /// Builds the source (no request yet). The HTTP client trusts `auth.jwks_ca_file` only when
    /// set, the platform's roots otherwise.
    pub(crate) fn new(config: &AuthConfig, spec: &IssuerSpec) -> Result<Arc<RemoteKeys>, ConfigError> {
        let settings = Settings {
            cache_min: Duration::from_secs(config.jwks_cache_min_secs),
            cache_max: Duration::from_secs(config.jwks_cache_max_secs.max(config.jwks_cache_min_secs)),
            min_refetch: Duration::from_secs(config.jwks_min_refetch_secs),
            timeout: Duration::from_secs(config.jwks_timeout_secs.max(1)),
            max_bytes: config.jwks_max_bytes,
        };
        let ca = match &config.jwks_ca_file {
            None => None,
            Some(path) => Some((
                path.clone(),
                std::fs::read(path)
                    .map_err(|e| problem("auth.jwks_ca_file", format!("cannot read {}: {e}", path.display())))?,
            )),
        };
        let tls = tls_config(ca.as_ref(), "auth.jwks_ca_file")?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            .user_agent(concat!("wsguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| problem(&spec.key, format!("cannot build the JWKS HTTP client: {e}")))?;
        Ok(Arc::new(RemoteKeys {
            identity: Identity {
                issuer: spec.issuer.clone(),
                source: spec.source.clone(),
                algorithms: spec.algorithms.clone(),
                settings,
                ca,
            },
            algorithms: spec.algorithms.iter().map(|a| a.to_jwt()).collect(),
            client,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            attempted: tokio::sync::watch::Sender::new(false),
            runtime: OnceLock::new(),
            started: AtomicBool::new(false),
            retired: CancellationToken::new(),
        }))
    }

    /// True when `other` was built from the same configuration (a reload keeps `other`).
    pub(crate) fn same_source(&self, other: &RemoteKeys) -> bool {
        self.identity == other.identity
    }

    /// True when `other` fetches the same keys (issuer, URL or discovery, algorithms) and only the
    /// cache or fetch settings, or the CA the fetches trust, differ. A CA change (a routine bundle
    /// rotation) keeps the keys fetched under the old one in force until the new source's first
    /// fetch replaces them, instead of refusing the issuer's tokens meanwhile.
    pub(crate) fn same_keys(&self, other: &RemoteKeys) -> bool {
        let (a, b) = (&self.identity, &other.identity);
        a.issuer == b.issuer && a.source == b.source && a.algorithms == b.algorithms
    }

    /// Starts from `other`'s key set (a reload that changed only the cache or fetch settings), so
    /// the issuer has keys without a gap; the new fetcher refreshes them at once.
    pub(crate) fn seed_from(&self, other: &RemoteKeys) {
        if let Some(set) = other.current() {
            self.keys.store(Some(set));
        }
    }

    /// The issuer this source serves.
    pub(crate) fn issuer(&self) -> &str {
        &self.identity.issuer
    }

    /// The key set in force, if one was ever loaded.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// True once a key set is loaded.
    pub(crate) fn is_ready(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Starts the background fetcher (once per source; a source kept across a reload keeps its
    /// task). It holds the source weakly and ends when the source is dropped or at shutdown.
    pub(crate) fn start(self: &Arc<Self>, runtime: &JwksRuntime) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.runtime.set(runtime.clone());
        runtime.stats.set_jwks_keys(&self.identity.issuer, 0);
        tokio::spawn(refresh_loop(Arc::downgrade(self), runtime.shutdown.clone()));
    }

    /// Stops this source's fetching for good: a reload replaced it. Without this, the fetcher of a
    /// source a reload dropped would run (and report under the issuer's name) for as long as any
    /// session built before the reload holds the old verifier.
    pub(crate) fn retire(&self) {
        self.retired.cancel();
    }

    /// Waits until the first fetch attempt has ended, at most `limit`.
    pub(crate) async fn first_attempt(&self, limit: Duration) {
        let mut attempted = self.attempted.subscribe();
        let _ = tokio::time::timeout(limit, attempted.wait_for(|done| *done)).await;
    }

    /// Longest a fetch attempt can take (discovery and JWKS requests).
    pub(crate) fn attempt_limit(&self) -> Duration {
        self.identity.settings.timeout * 2
    }

    /// A token named a `kid` the cached set lacks: refetch, unless a fetch was attempted less than
    /// `jwks_min_refetch_secs` ago. Connections arriving while a fetch runs wait for that one
    /// instead of starting another. True when a newer set than the caller's may now be in force.
    pub(crate) async fn refetch_for_unknown_kid(&self) -> bool {
        if self.retired.is_cancelled() {
            return false;
        }
        let seen = self.generation.load(Ordering::Acquire);
        let mut state = match self.fetch.try_lock() {
            Ok(state) => state,
            Err(_) => self.fetch.lock().await,
        };
        // A set that arrived since `seen` (while waiting, or just before the lock) may hold the
        // `kid`: no fetch, and the refetch budget stays unspent.
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        if state.last_refetch.is_some_and(|at| at.elapsed() < self.identity.settings.min_refetch) {
            return false;
        }
        state.last_refetch = Some(Instant::now());
        self.fetch_locked(&mut state, "unknown_kid").await.is_ok()
    }

    /// One fetch under the lock; on success the new set is in force and the time to the next
    /// scheduled fetch is returned.
    async fn fetch_locked(&self, state: &mut FetchState, trigger: &'static str) -> Result<Duration, FetchError> {
        let outcome = self.fetch_set(state).await;
        let issuer = &self.identity.issuer;
        let runtime = self.runtime.get();
        let result = match outcome {
            Ok((set, ttl)) => {
                let count = set.len();
                let changed = self.keys.load().as_ref().is_none_or(|old| old.kids() != set.kids());
                self.keys.store(Some(Arc::new(set)));
                self.generation.fetch_add(1, Ordering::AcqRel);
                if let Some(rt) = runtime {
                    rt.stats.record_jwks_fetch(issuer, "ok");
                    rt.stats.set_jwks_keys(issuer, count);
                }
                if changed {
                    tracing::info!(target: "wsguard::auth", issuer, keys = count, trigger, "identity provider keys loaded");
                }
                Ok(ttl)
            }
            Err(error) => {
                if let Some(rt) = runtime {
                    rt.stats.record_jwks_fetch(issuer, error.reason);
                    rt.events.emit(Event::JwksFetchFailed {
                        issuer: issuer.clone(),
                        reason: error.reason,
                        detail: error.detail.clone(),
                        has_keys: self.is_ready(),
                    });
                }
                Err(error)
            }
        };
        self.attempted.send_replace(true);
        result
    }

    /// Fetches and parses the key set (discovering the JWKS URL first when configured).
    async fn fetch_set(&self, state: &mut FetchState) -> Result<(KeySet, Duration), FetchError> {
        let url = match &self.identity.source {
            KeySourceSpec::JwksUrl(url) => check_fetch_url(url).map_err(|e| FetchError::new("bad_url", e))?,
            KeySourceSpec::Discovery => match &state.jwks_uri {
                Some(url) => url.clone(),
                None => {
                    let url = self.discover().await?;
                    state.jwks_uri = Some(url.clone());
                    url
                }
            },
            other => return Err(FetchError::new("bad_url", format!("{other:?} is not a remote source"))),
        };
        let fetched = self.get(url).await;
        if fetched.is_err() {
            // The JWKS may have moved: discover again next time.
            state.jwks_uri = None;
        }
        let (body, max_age) = fetched?;
        let (set, skipped) = KeySet::parse(&body, &self.algorithms).map_err(|e| FetchError::new("malformed", e))?;
        if !skipped.is_empty() {
            tracing::debug!(target: "wsguard::auth", issuer = %self.identity.issuer, ignored = ?skipped, "JWKS keys ignored");
        }
        if set.len() == 0 {
            return Err(FetchError::new(
                "no_usable_keys",
                format!("no key fits the allowed algorithms ({} ignored)", skipped.len()),
            ));
        }
        let settings = &self.identity.settings;
        let ttl = max_age.map_or(settings.cache_min, Duration::from_secs).clamp(settings.cache_min, settings.cache_max);
        Ok((set, ttl))
    }

    /// Reads the discovery document and returns its `jwks_uri`, checking that its `issuer` is the
    /// configured one.
    async fn discover(&self) -> Result<Url, FetchError> {
        let issuer = &self.identity.issuer;
        let url = format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'));
        let url = check_fetch_url(&url).map_err(|e| FetchError::new("bad_url", e))?;
        let (body, _) = self.get(url).await?;
        let document: Value =
            serde_json::from_slice(&body).map_err(|e| FetchError::new("malformed", format!("discovery: {e}")))?;
        match document.get("issuer").and_then(Value::as_str) {
            Some(found) if found == issuer => {}
            found => {
                return Err(FetchError::new(
                    "issuer_mismatch",
                    format!("the discovery document names issuer {found:?}, not {issuer:?}"),
                ));
            }
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::new("malformed", "the discovery document has no jwks_uri"))?;
        check_fetch_url(jwks_uri).map_err(|e| FetchError::new("bad_url", format!("jwks_uri {jwks_uri:?}: {e}")))
    }

    /// One GET: status 200, a body of at most `jwks_max_bytes`, and the `max-age` it may be cached.
    async fn get(&self, url: Url) -> Result<(Vec<u8>, Option<u64>), FetchError> {
        let max_bytes = self.identity.settings.max_bytes;
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::new("redirect", format!("HTTP {status} without a followable Location")));
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::new("http_status", format!("HTTP {status}")));
        }
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(FetchError::new("too_large", format!("Content-Length over {max_bytes} bytes")));
        }
        let max_age = response
            .headers()
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let max_age = parse_max_age(&max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(FetchError::new("too_large", format!("body over {max_bytes} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// The background fetcher: the first fetch, then one per cache lifetime; after a failure, retries
/// with doubling delays (the last good set stays in force meanwhile).
async fn refresh_loop(source: Weak<RemoteKeys>, shutdown: CancellationToken) {
    let mut retry = FIRST_RETRY;
    let retired = match source.upgrade() {
        Some(source) => source.retired.clone(),
        None => return,
    };
    loop {
        let wait = {
            let Some(source) = source.upgrade() else { return };
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                () = retired.cancelled() => return,
                outcome = async {
                    let mut state = source.fetch.lock().await;
                    let trigger = if source.is_ready() { "scheduled" } else { "initial" };
                    source.fetch_locked(&mut state, trigger).await
                } => outcome,
            };
            match outcome {
                Ok(ttl) => {
                    retry = FIRST_RETRY;
                    ttl
                }
                Err(_) => {
                    let cap = MAX_RETRY.min(source.identity.settings.cache_min).max(FIRST_RETRY);
                    let wait = retry.min(cap);
                    retry = (retry * 2).min(cap);
                    // Jitter, so the nodes of a cluster do not retry in step.
                    wait + jitter(wait / 4)
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = retired.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A pseudo-random delay in `[0, max]` (clock-derived: it only spreads retries).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(u64::from(nanos) % max_ms.saturating_add(1))
}

/// Follows a redirect only to the origin (scheme, host, port) of the first request.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let previous = attempt.previous();
    if previous.len() > MAX_REDIRECTS {
        return attempt.error("too many redirects");
    }
    let Some(first) = previous.first() else { return attempt.error("redirect without a request") };
    let next = attempt.url();
    let same = next.scheme() == first.scheme()
        && next.host_str() == first.host_str()
        && next.port_or_known_default() == first.port_or_known_default();
    if same { attempt.follow() } else { attempt.error("redirect to another origin refused") }
}

fn request_error(error: reqwest::Error) -> FetchError {
    let reason = if error.is_redirect() {
        "redirect"
    } else if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    // The whole chain: reqwest's own message is generic ("error sending request").
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::new(reason, detail)
}

/// `max-age` of a `Cache-Control` value; None without one, or with `no-cache` / `no-store`.
pub(crate) fn parse_max_age(value: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return None;
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            max_age = secs.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
}

/// The rustls client configuration of an outbound HTTP client (JWKS fetches, the backend proxy):
/// ring, TLS 1.2 and 1.3, HTTP/1.1, trusting the PEM file `ca` (read by the caller; problems
/// reported under `key`) or, without one, the platform's roots.
pub(crate) fn tls_config(ca: Option<&(PathBuf, Vec<u8>)>, key: &str) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some((path, pem)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| problem(key, format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(problem(key, format!("{}: no certificate found", path.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| problem(key, format!("{}: unusable certificate: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                tracing::warn!(
                    target: "wsguard::auth",
                    "no platform trust roots found: https fetches will fail; install CA certificates or set {key}"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| problem(key, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn problem(key: &str, message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigFile, vec![ConfigProblem::new(key, message)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_no_cache_wins() {
        assert_eq!(parse_max_age("public, max-age=300"), Some(300));
        assert_eq!(parse_max_age("max-age=60, must-revalidate"), Some(60));
        assert_eq!(parse_max_age("no-cache, max-age=300"), None);
        assert_eq!(parse_max_age("no-store"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
        assert_eq!(parse_max_age(""), None);
    }

    #[test]
    fn fetch_urls_are_https_or_loopback_http() {
        assert!(check_fetch_url("https://idp.example/jwks").is_ok());
        assert!(check_fetch_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_fetch_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_fetch_url("http://localhost/jwks").is_ok());
        assert!(check_fetch_url("http://idp.example/jwks").is_err());
        assert!(check_fetch_url("ftp://idp.example/jwks").is_err());
        assert!(check_fetch_url("https://user:pw@idp.example/jwks").is_err());
        assert!(check_fetch_url("not a url").is_err());
    }
}
