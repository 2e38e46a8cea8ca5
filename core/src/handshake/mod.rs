//! The handshake gate: everything decided before the upgrade is accepted and before any
//! per-connection state exists. Cheapest checks first:
//!
//! 1. read the request head within the deadline and `server.max_header_bytes` (408 / 431);
//! 2. resolve the client IP (trusted proxies only; 400 for an unparseable forwarded header),
//!    refuse a duplicated `Origin` header (400), refuse a banned IP (403) and take a
//!    handshake-rate token (429);
//! 3. path, method, upgrade headers, version, key (404 / 405 / 426 / 400);
//! 4. Origin allowlist (403);
//! 5. global capacity and the memory budget, checked before any signature work (503);
//! 6. token from the configured sources, JWT verification (401, counted towards an IP ban; 503
//!    `keys_unavailable` while the issuer's identity-provider keys are not loaded yet; an unknown
//!    `kid` of such an issuer may wait for one shared refetch), user ban (403);
//! 7. revocation list (401 `token_revoked`);
//! 8. per-IP and per-user quotas (429 + Retry-After);
//! 9. the host's `authenticate` hook (403, or 503 if it does not answer); it may enrich the
//!    identity but not change its `sub`;
//! 10. the connection permit is taken (503), the single-use `jti` is spent on this node and, with
//!     a cluster Redis, cluster-wide (401 / 503 when the cache is full or the cluster record
//!     cannot be asked) and the 101 response is built.

mod client_ip;
mod origin;
pub(crate) mod proxy_header;
mod rejection;
pub(crate) mod request;
pub(crate) mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

pub(crate) use client_ip::{TrustedProxies, canonical};
pub(crate) use origin::OriginAllowlist;
pub use origin::OriginsConfig;
pub use proxy_header::ProxyProtocol;
pub use rejection::Rejection;
pub use token::{BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL};

use crate::auth::{Identity, JtiCache, JtiRefusal, RevocationList, TokenError, TokenSource, TokenVerifier};
use crate::cluster::{Lease, LeaseOutcome, LeaseQuota, StateGate};
use crate::error::ErrorCode;
use crate::hooks::{HandshakeInfo, HookRunner};
use crate::limits::{BanTarget, Bans, ConnectionQuota, KeyedRate, QuotaSlot, retry_after_secs};
use crate::observe::Stats;

/// Seconds a client is told to wait when a connection quota is full: sessions are long-lived, so
/// an immediate retry would only be refused again.
const QUOTA_RETRY_AFTER_SECS: u64 = 5;
/// Seconds a client is told to wait while the identity provider's keys are not loaded yet.
const KEYS_RETRY_AFTER_SECS: u64 = 5;

/// Everything the handshake needs, compiled from the config once.
pub(crate) struct HandshakeGate {
    pub(crate) path: String,
    pub(crate) max_header_bytes: usize,
    pub(crate) origins: OriginAllowlist,
    pub(crate) proxies: TrustedProxies,
    pub(crate) token_sources: Vec<TokenSource>,
    pub(crate) cookie_name: String,
    pub(crate) verifier: Arc<TokenVerifier>,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) jti_cache: Option<Arc<JtiCache>>,
    pub(crate) per_ip: Arc<ConnectionQuota<IpAddr>>,
    pub(crate) per_user: Arc<ConnectionQuota<String>>,
    pub(crate) rate: KeyedRate<IpAddr>,
    pub(crate) capacity: Arc<Semaphore>,
    pub(crate) hooks: HookRunner,
    pub(crate) bans: Arc<Bans>,
    pub(crate) stats: Arc<Stats>,
    /// `limits.max_memory_bytes` (0: off).
    pub(crate) max_memory_bytes: u64,
    /// Sessions (and handshakes past the memory check) counted against `max_memory_bytes`;
    /// shared across reloads.
    pub(crate) memory: Arc<MemoryBudget>,
    /// `server.demo_page`.
    pub(crate) demo_page: bool,
    /// Cluster-wide per-user quota (`[cluster]` with Redis), checked after this node's own.
    pub(crate) cluster_quota: Option<Arc<LeaseQuota>>,
    /// Closed until the cluster's persisted revocations and bans are loaded
    /// (`cluster.state_failure = "closed"` with a Redis); `None`: always open.
    pub(crate) cluster_state: Option<Arc<StateGate>>,
}

/// Admission against `limits.max_memory_bytes`: each admitted handshake reserves one session's
/// estimate until its session ends (also without a budget, so that
/// `wsguard_memory_estimate_bytes` always shows the estimate).
pub(crate) struct MemoryBudget {
    reserved_sessions: std::sync::atomic::AtomicU64,
    stats: Arc<Stats>,
}

/// One reserved session estimate, returned on drop.
pub(crate) struct MemoryReservation(Arc<MemoryBudget>);

/// What an admitted connection holds for its session's life, given back when dropped: the
/// connection permit, its quota slots, its memory reservation and a cluster quota lease (boxed:
/// most servers have none, and every session holds this).
pub(crate) struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: QuotaSlot<IpAddr>,
    _user_slot: QuotaSlot<String>,
    _cluster_lease: Option<Box<Lease>>,
    _memory: MemoryReservation,
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        self.0.reserved_sessions.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.stats.add_memory_reserved(-SESSION_MEMORY_ESTIMATE);
    }
}

impl MemoryBudget {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        MemoryBudget { reserved_sessions: std::sync::atomic::AtomicU64::new(0), stats }
    }

    /// Reserves one session's estimate, or None when that would reach `max_bytes` (0: no limit).
    fn reserve(self: &Arc<Self>, max_bytes: u64, queued_bytes: u64) -> Option<MemoryReservation> {
        let before = self.reserved_sessions.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if max_bytes != 0 && before * SESSION_MEMORY_ESTIMATE_BYTES + queued_bytes >= max_bytes {
            self.reserved_sessions.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return None;
        }
        self.stats.add_memory_reserved(SESSION_MEMORY_ESTIMATE);
        Some(MemoryReservation(Arc::clone(self)))
    }
}

/// Per-session memory estimate for admission: tungstenite's read (4 KiB) and write (8 KiB)
/// buffers, the task, the outbox and bookkeeping, rounded up.
const SESSION_MEMORY_ESTIMATE_BYTES: u64 = 32 * 1024;
/// The same, as the metrics' gauge type.
const SESSION_MEMORY_ESTIMATE: i64 = SESSION_MEMORY_ESTIMATE_BYTES as i64;

/// The demo page (`server.demo_page`), served at `/` to plain GETs.
const DEMO_PAGE: &str = include_str!("demo.html");

/// The TypeScript client's built ES modules (`clients/js/dist/esm`, committed and drift-checked by
/// `clients/js/test.sh`), served with the demo page at `/wsguard-client/<file>` so that the page
/// runs on the SDK. Only with `server.demo_page`; the same response rules as the page.
const CLIENT_MODULES: &[(&str, &str)] = &[
    ("/wsguard-client/index.js", include_str!("../../../clients/js/dist/esm/index.js")),
    ("/wsguard-client/client.js", include_str!("../../../clients/js/dist/esm/client.js")),
    ("/wsguard-client/emitter.js", include_str!("../../../clients/js/dist/esm/emitter.js")),
    ("/wsguard-client/errors.js", include_str!("../../../clients/js/dist/esm/errors.js")),
    ("/wsguard-client/policy.js", include_str!("../../../clients/js/dist/esm/policy.js")),
    ("/wsguard-client/types.js", include_str!("../../../clients/js/dist/esm/types.js")),
];

/// What the gate decided for a request that was not refused.
pub(crate) enum Admission {
    /// Upgrade to a session.
    Upgrade(Box<Admitted>),
    /// Answer with this complete HTTP response and close (the demo page).
    Page(Vec<u8>),
}

/// A handshake that passed every check.
pub(crate) struct Admitted {
    pub(crate) identity: Identity,
    pub(crate) client_ip: IpAddr,
    /// Bytes that followed the request head (early frames).
    pub(crate) leftover: Vec<u8>,
    /// The 101 response to write.
    pub(crate) response: Vec<u8>,
    /// Permit and quota slots, held for the session's lifetime.
    pub(crate) held: Box<Held>,
    /// What the `authenticate` hook saw (it sees the same again at every refresh).
    pub(crate) info: HandshakeInfo,
}

/// A refused handshake with what is known about the client, for the event.
pub(crate) struct Refused {
    pub(crate) rejection: Rejection,
    pub(crate) client_ip: IpAddr,
    pub(crate) origin: Option<String>,
}

impl HandshakeGate {
    /// Runs the gate. `deadline` bounds the read of the request head and any wait for a refetch of
    /// an identity provider's keys.
    pub(crate) async fn admit<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        peer: IpAddr,
        deadline: Instant,
    ) -> Result<Admission, Refused> {
        let refuse = |rejection, client_ip, origin| Refused { rejection, client_ip, origin };
        let (head, leftover) =
            match tokio::time::timeout_at(deadline, request::read_head(stream, self.max_header_bytes)).await {
                Ok(Ok(read)) => read,
                Ok(Err(rejection)) => return Err(refuse(rejection, peer, None)),
                Err(_) => {
                    return Err(refuse(
                        Rejection::new(ErrorCode::HandshakeTimeout, "request head not received in time"),
                        peer,
                        None,
                    ));
                }
            };
        let client_ip = self.proxies.client_ip(peer, &head).map_err(|r| refuse(r, peer, None))?;
        let origin_header = head.single("origin").map_err(|r| refuse(r, client_ip, None))?;
        let origin = origin_header.map(|o| String::from_utf8_lossy(o).into_owned());
        let refuse = |rejection: Rejection| Refused { rejection, client_ip, origin: origin.clone() };

        // Before any ban or revocation is consulted: they may not be known yet.
        if self.cluster_state.as_ref().is_some_and(|gate| !gate.is_loaded()) {
            return Err(refuse(
                Rejection::new(ErrorCode::ClusterStateUnavailable, "cluster revocations and bans not loaded yet")
                    .retry_after(QUOTA_RETRY_AFTER_SECS),
            ));
        }
        if let Some(secs) = self.bans.remaining(&BanTarget::Ip(client_ip)) {
            return Err(refuse(Rejection::new(ErrorCode::Banned, "client IP is banned").retry_after(secs)));
        }
        if let Err(wait) = self.rate.check(&client_ip) {
            return Err(refuse(
                Rejection::new(ErrorCode::HandshakeRateLimited, "handshake rate exceeded")
                    .retry_after(retry_after_secs(wait)),
            ));
        }
        if self.demo_page && head.method == "GET" {
            if head.path == "/" {
                return Ok(Admission::Page(page_response("text/html", DEMO_PAGE)));
            }
            if let Some((_, module)) = CLIENT_MODULES.iter().find(|(path, _)| *path == head.path) {
                return Ok(Admission::Page(page_response("text/javascript", module)));
            }
        }
        let key = request::check_upgrade(&head, &self.path).map_err(refuse)?;
        if let Err(why) = self.origins.check(origin_header) {
            return Err(refuse(Rejection::new(ErrorCode::OriginNotAllowed, format!("origin {}", why.as_str()))));
        }
        if self.capacity.available_permits() == 0 {
            return Err(refuse(Rejection::new(ErrorCode::ServerFull, "max_connections reached")));
        }
        // Reserved, not just checked: concurrent handshakes cannot all pass on the same reading.
        let memory = self
            .memory
            .reserve(self.max_memory_bytes, self.stats.queued_bytes())
            .ok_or_else(|| refuse(Rejection::new(ErrorCode::OverMemoryBudget, "limits.max_memory_bytes reached")))?;
        let search = token::find_token(&head, &self.token_sources, &self.cookie_name).map_err(refuse)?;
        let auth_failure = |rejection: Rejection| {
            self.bans.record_auth_failure(client_ip);
            refuse(rejection)
        };
        let Some((token, source)) = search.token else {
            return Err(auth_failure(Rejection::new(ErrorCode::TokenMissing, "no token in any configured source")));
        };
        // An unknown `kid` may wait for a refetch of the issuer's keys: never past the handshake
        // deadline (the connection holds its pending slots meanwhile); out of time, the `kid`
        // stays unknown. A known key answers at once: `timeout_at` polls the verification first.
        let verified = tokio::time::timeout_at(deadline, self.verifier.verify_fetching(&token)).await;
        let identity = verified.unwrap_or(Err(TokenError::UnknownKey)).map_err(|e| {
            let rejection = Rejection::new(e.code(), format!("{e} (via {source:?})"));
            if e.is_client_fault() {
                auth_failure(rejection)
            } else {
                // The server cannot check tokens yet: not the client's fault, not counted.
                refuse(rejection.retry_after(KEYS_RETRY_AFTER_SECS))
            }
        })?;
        drop(token);
        if let Some(secs) = self.bans.remaining(&BanTarget::User(identity.subject.clone())) {
            return Err(refuse(Rejection::new(ErrorCode::Banned, "user is banned").retry_after(secs)));
        }
        if self.revocations.is_revoked(&identity) {
            return Err(auth_failure(Rejection::new(
                ErrorCode::TokenRevoked,
                format!("{} (via {source:?})", TokenError::Revoked),
            )));
        }

        let ip_slot = self.per_ip.try_acquire(client_ip).ok_or_else(|| {
            refuse(
                Rejection::new(ErrorCode::TooManyConnectionsPerIp, "per-IP connection quota full")
                    .retry_after(QUOTA_RETRY_AFTER_SECS),
            )
        })?;
        let user_full = || {
            refuse(
                Rejection::new(ErrorCode::TooManyConnectionsPerUser, "per-user connection quota full")
                    .retry_after(QUOTA_RETRY_AFTER_SECS),
            )
        };
        let user_slot = self.per_user.try_acquire(identity.subject.clone()).ok_or_else(user_full)?;
        let cluster_lease = match &self.cluster_quota {
            None => None,
            Some(quota) => match quota.acquire(&identity.subject, self.per_user.limit()).await {
                LeaseOutcome::Admitted(lease) => lease,
                LeaseOutcome::Full => return Err(user_full()),
                LeaseOutcome::Unavailable => {
                    return Err(refuse(
                        Rejection::new(ErrorCode::QuotaUnavailable, "cluster quota store unreachable")
                            .retry_after(QUOTA_RETRY_AFTER_SECS),
                    ));
                }
            },
        };

        let info = HandshakeInfo {
            client_ip,
            origin: origin.clone(),
            user_agent: head.single("user-agent").ok().flatten().map(|v| String::from_utf8_lossy(v).into_owned()),
            forwarded_headers: request::forwarded_headers(&head, self.hooks.forward_headers(), &self.cookie_name),
        };
        let identity = self
            .hooks
            .authenticate(info.clone(), identity, None)
            .await
            .map_err(|refusal| refuse(Rejection::new(refusal.code(), refusal.to_string())))?;
        let permit = Arc::clone(&self.capacity)
            .try_acquire_owned()
            .map_err(|_| refuse(Rejection::new(ErrorCode::ServerFull, "max_connections reached")))?;
        // Spent last, so a token refused for any other reason stays usable.
        if let Some(cache) = &self.jti_cache {
            match cache.use_once(&identity).await {
                Ok(()) => {}
                Err(JtiRefusal::Token(e)) => return Err(auth_failure(Rejection::new(e.code(), e.to_string()))),
                Err(JtiRefusal::Full) => {
                    return Err(refuse(Rejection::new(
                        ErrorCode::ReplayCacheFull,
                        "used-jti cache full of unexpired entries",
                    )));
                }
                Err(JtiRefusal::Unavailable) => {
                    return Err(refuse(
                        Rejection::new(ErrorCode::JtiStoreUnavailable, "cluster used-jti store unreachable")
                            .retry_after(QUOTA_RETRY_AFTER_SECS),
                    ));
                }
            }
        }

        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            derive_accept_key(key.as_bytes())
        );
        if search.selects_subprotocol {
            // Only `wsguard.v1` is ever selected: the `bearer.<token>` entry is never echoed.
            response.push_str(&format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"));
        }
        response.push_str("\r\n");
        Ok(Admission::Upgrade(Box::new(Admitted {
            identity,
            client_ip,
            leftover,
            response: response.into_bytes(),
            held: Box::new(Held {
                _permit: permit,
                _ip_slot: ip_slot,
                _user_slot: user_slot,
                _cluster_lease: cluster_lease.map(Box::new),
                _memory: memory,
            }),
            info,
        })))
    }

    /// Periodic upkeep: forget idle handshake-rate buckets.
    pub(crate) fn forget_idle(&self) {
        self.rate.forget_idle();
    }
}

/// A complete `200 OK` response: the demo page, or one of the client modules it imports. The page's
/// script is inline and imports the modules from this host, so the content security policy allows
/// exactly those scripts and connections to this host only.
fn page_response(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How often the server's upkeep runs (ban expiry, anomaly baselines).
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::CLIENT_MODULES;

    /// Every ES module the client build produces is served, so the demo page's imports resolve.
    #[test]
    fn every_built_client_module_is_served() {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js/dist/esm");
        let mut built: Vec<String> = std::fs::read_dir(&dist)
            .expect("clients/js/dist/esm is committed")
            .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".js"))
            .map(|name| format!("/wsguard-client/{name}"))
            .collect();
        built.sort();
        let mut served: Vec<String> = CLIENT_MODULES.iter().map(|(path, _)| (*path).to_string()).collect();
        served.sort();
        assert_eq!(served, built);
    }
}
