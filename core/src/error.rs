//! The error registry: every failure a user, a client or a binding can meet has one stable
//! [`ErrorCode`] (a number in a per-area block and a snake_case name). Bindings branch on the code;
//! the `Display` text is for humans and may change.
//!
//! The registry also owns each code's properties, so that every question about a code has one
//! answer: where it can surface ([`ErrorCode::surfaces`]), the HTTP status of a handshake refusal
//! ([`ErrorCode::http_status`]) and whether an error reply counts towards `limits.max_violations`
//! ([`ErrorCode::is_violation`]). `handshake::Rejection` and the session ask these; the tables in
//! docs/ERROR_CODES.md and docs/PROTOCOL.md are generated from them (core/tests/generated.rs).

use std::fmt;

use http::StatusCode;

use crate::config::problems::ConfigError;

/// One way a code reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Surface {
    /// A `ConfigError` when a configuration is loaded, checked or reloaded.
    Config,
    /// A handshake refusal answered with this HTTP status.
    Refusal {
        /// The HTTP status.
        status: u16,
    },
    /// A handshake refusal that cannot be answered (nothing is written): it appears only in a
    /// `HandshakeRejected` event, with status 0.
    Unanswered {
        /// When this happens.
        when: &'static str,
    },
    /// An `error` reply frame; the session stays open.
    Reply {
        /// Whether the reply counts towards `limits.max_violations` (the client misbehaved), as
        /// opposed to a benign no-op or a host or infrastructure failure.
        is_violation: bool,
        /// The client actions that can get it (`any frame` for all).
        from: &'static str,
    },
    /// An `Error` returned by a host API call.
    Api {
        /// The calls that return it (empty for many).
        calls: &'static str,
    },
    /// An error answer of the server API over HTTP (`[api]`, docs/API.md) with this status.
    HttpApi {
        /// The HTTP status.
        status: u16,
    },
}

/// The registry's shorthand for its surfaces (kept short so that one code stays on one line).
mod short {
    use super::Surface;

    pub(super) const CONFIG: Surface = Surface::Config;
    pub(super) const API: Surface = Surface::Api { calls: "" };

    pub(super) const fn http(status: u16) -> Surface {
        Surface::Refusal { status }
    }
    pub(super) const fn unanswered(when: &'static str) -> Surface {
        Surface::Unanswered { when }
    }
    pub(super) const fn violation(from: &'static str) -> Surface {
        Surface::Reply { is_violation: true, from }
    }
    pub(super) const fn benign(from: &'static str) -> Surface {
        Surface::Reply { is_violation: false, from }
    }
    pub(super) const fn api(calls: &'static str) -> Surface {
        Surface::Api { calls }
    }
    pub(super) const fn http_api(status: u16) -> Surface {
        Surface::HttpApi { status }
    }
}

macro_rules! error_codes {
    ($( $variant:ident = $num:literal, $name:literal, [$($surface:expr),+ $(,)?], $doc:literal; )*) => {
        /// A stable error code. Numbers come in blocks per area: 1xxx config, 2xxx handshake,
        /// 3xxx authentication, 4xxx per-message replies, 5xxx server runtime, 6xxx server API over HTTP.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum ErrorCode {
            $( #[doc = $doc] $variant = $num, )*
        }

        impl ErrorCode {
            /// Every code, in registry order (used to generate the documented tables).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The stable snake_case name (what clients and bindings compare against).
            pub const fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// What the code means (the registry's documentation).
            pub const fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => $doc,)* }
            }

            /// Every way the code can reach the outside, in registry order.
            pub const fn surfaces(self) -> &'static [Surface] {
                use short::*;
                match self { $(ErrorCode::$variant => const { &[$($surface),+] },)* }
            }

            /// The stable number.
            pub const fn number(self) -> u32 {
                self as u32
            }

            /// Looks a code up by its stable number.
            pub fn from_number(number: u32) -> Option<ErrorCode> {
                match number { $($num => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

// Each line: variant = number, name, [surfaces], meaning. `violation(from)` and `benign(from)` are
// error replies that do or do not count towards `limits.max_violations`; `http(status)` a refusal.

error_codes! {
    ConfigSyntax = 1001, "config_syntax", [CONFIG, http_api(422)], "The configuration text is not valid TOML or JSON.";
    ConfigInvalid = 1002, "config_invalid", [CONFIG, http_api(422)], "One or more configuration keys are unknown, mistyped or out of range.";
    ConfigFile = 1003, "config_file", [CONFIG, http_api(422)], "A file named by the configuration (certificate, key, JWKS) could not be read or parsed.";
    ConfigSecretMissing = 1004, "config_secret_missing", [CONFIG, http_api(422)], "A secret is unusable: its `*_env` variable (`auth.hmac_secret_env`, `cluster.password_env`, `cluster.signing_key_env`, `api.key_env`, `proxy.secret_env`) is not set or an API key or proxy secret file cannot be read, or the HMAC secret or signing key is shorter than 32 bytes (an API key or proxy secret: 16 bytes).";

    BadRequest = 2001, "bad_request", [http(400), unanswered("the client closed before the request head ended")], "The upgrade request is malformed (bad header, bad key, body present, duplicated header).";
    NotFound = 2002, "not_found", [http(404)], "The request path is not the configured WebSocket path.";
    MethodNotAllowed = 2003, "method_not_allowed", [http(405)], "The request method is not GET.";
    UpgradeRequired = 2004, "upgrade_required", [http(426)], "The request is not a WebSocket upgrade, or asks for an unsupported protocol version.";
    HeadersTooLarge = 2005, "headers_too_large", [http(431)], "The request head is larger than `server.max_header_bytes`.";
    HandshakeTimeout = 2006, "handshake_timeout", [http(408), unanswered("TLS or PROXY header phase")], "The PROXY header (where required), the TLS handshake and the request head did not all arrive within `server.handshake_timeout_secs`.";
    OriginNotAllowed = 2007, "origin_not_allowed", [http(403)], "The `Origin` header is missing, `null` or not in the allowlist.";
    ServerFull = 2008, "server_full", [http(503), unanswered("over TLS, past `server.max_pending_handshakes`")], "The server holds `server.max_connections` sessions, or `server.max_pending_handshakes` handshakes are in flight.";
    TooManyConnectionsPerIp = 2009, "too_many_connections_per_ip", [http(429)], "The client IP holds `limits.connections_per_ip` sessions.";
    TooManyConnectionsPerUser = 2010, "too_many_connections_per_user", [http(429)], "The user holds `limits.connections_per_user` sessions.";
    HandshakeRateLimited = 2011, "handshake_rate_limited", [http(429)], "The client IP exceeded `limits.handshakes_per_ip_per_sec`.";
    TlsHandshakeFailed = 2012, "tls_handshake_failed", [unanswered("")], "The TLS handshake failed.";
    BadForwardedHeader = 2013, "bad_forwarded_header", [http(400)], "A trusted proxy sent an unparseable `X-Forwarded-For` / `Forwarded` header.";
    RejectedByHook = 2014, "rejected_by_hook", [http(403), violation("`refresh`")], "The `authenticate` hook or the backend proxy's `connect` endpoint refused the connection (or, at a `refresh`, the new token), or gave an invalid answer.";
    SubprotocolRequired = 2015, "subprotocol_required", [http(400)], "The client sent `bearer.<token>` without also offering the `wsguard.v1` subprotocol.";
    ShuttingDown = 2016, "shutting_down", [http(503)], "The server is shutting down and accepts no new sessions.";
    ReplayCacheFull = 2017, "replay_cache_full", [http(503), benign("`refresh`")], "`auth.single_use_jti` is on and the used-jti cache is full of unexpired entries (fails closed).";
    Banned = 2018, "banned", [http(403)], "The client IP or user is temporarily banned (`[abuse]` or an operator ban); answered 403.";
    OverMemoryBudget = 2019, "over_memory_budget", [http(503)], "The estimated memory of sessions and queues reached `limits.max_memory_bytes`; answered 503.";
    QuotaUnavailable = 2020, "quota_unavailable", [http(503)], "The cluster-wide per-user quota store (Redis) could not be reached and `cluster.quota_failure = \"closed\"`; answered 503.";
    KeysUnavailable = 2021, "keys_unavailable", [http(503), benign("`refresh`")], "The token's issuer gets its keys from an identity provider (`auth.jwks_url`, `auth.oidc_discovery`) and no key set has been loaded yet (the provider has been unreachable since start); answered 503 with `Retry-After`.";
    ProxyHeaderUntrusted = 2022, "proxy_header_untrusted", [unanswered("before TLS")], "`server.proxy_protocol` is on and a peer outside `server.trusted_proxies` started with a PROXY protocol header; the connection is closed before TLS.";
    ProxyHeaderMissing = 2023, "proxy_header_missing", [unanswered("before TLS")], "`server.proxy_protocol` is on and a peer in `server.trusted_proxies` did not start with a PROXY protocol header (or closed before one); the connection is closed before TLS.";
    ProxyHeaderInvalid = 2024, "proxy_header_invalid", [unanswered("before TLS")], "A trusted proxy's PROXY protocol header is malformed, too long, of a version `server.proxy_protocol` does not accept, or carries no client IP address (v1 `UNKNOWN`, v2 `UNSPEC`/`UNIX` family); the connection is closed before TLS.";
    TooManyPendingHandshakesPerIp = 2025, "too_many_pending_handshakes_per_ip", [http(429), unanswered("over TLS")], "The client IP (the TCP peer, or the PROXY header's source) already holds `limits.pending_handshakes_per_ip` connections in their handshake; answered 429 at once (over TLS closed without a response).";
    JtiStoreUnavailable = 2026, "jti_store_unavailable", [http(503), benign("`refresh`")], "`auth.single_use_jti` is on, the cluster's used-jti store (Redis) could not be reached and `cluster.jti_failure = \"closed\"` (the default): the token is refused, and stays unspent.";
    ProxyUnavailable = 2030, "proxy_unavailable", [http(503), benign("`subscribe`, `publish`, `refresh`")], "A `[proxy]` backend endpoint gave no answer: unreachable, an HTTP status other than 2xx, or `max_concurrency` requests already in flight (fails closed at once). Answered 503 at the handshake, an error reply in-band (a slow backend is `hook_timeout`; an invalid answer counts as a refusal).";

    TokenMissing = 3001, "token_missing", [http(401)], "No token was found in any configured source.";
    TokenMalformed = 3002, "token_malformed", [http(401), violation("`refresh`")], "The token is not a well-formed JWT.";
    TokenExpired = 3003, "token_expired", [http(401), violation("`refresh`")], "The token's `exp` is in the past (beyond the leeway).";
    TokenNotYetValid = 3004, "token_not_yet_valid", [http(401), violation("`refresh`")], "The token's `nbf` or `iat` is in the future (beyond the leeway).";
    TokenBadSignature = 3005, "token_bad_signature", [http(401), violation("`refresh`")], "The signature does not verify with the configured key.";
    TokenAlgNotAllowed = 3006, "token_alg_not_allowed", [http(401), violation("`refresh`")], "The token's `alg` is not in `auth.algorithms` or does not fit the key type.";
    TokenWrongIssuer = 3007, "token_wrong_issuer", [http(401), violation("`refresh`")], "The token's `iss` is not `auth.issuer`.";
    TokenWrongAudience = 3008, "token_wrong_audience", [http(401), violation("`refresh`")], "The token's `aud` does not contain `auth.audience`.";
    TokenLifetimeTooLong = 3009, "token_lifetime_too_long", [http(401), violation("`refresh`")], "`exp - iat` is longer than `auth.max_token_lifetime_secs`.";
    TokenMissingClaim = 3010, "token_missing_claim", [http(401), violation("`refresh`")], "A claim listed in `auth.required_claims` (or `exp`, `iss`, `aud`, `sub`) is absent; also when `auth.single_use_jti` is on and the token has no `jti`.";
    TokenUnknownKey = 3011, "token_unknown_key", [http(401), violation("`refresh`")], "The token's `kid` is absent or unknown to the JWKS.";
    TokenInvalidClaim = 3012, "token_invalid_claim", [http(401), violation("`refresh`")], "A registered claim has the wrong type (for example a string `exp`, a non-string `sub`).";
    TokenRevoked = 3013, "token_revoked", [http(401), violation("`refresh`")], "The token was revoked (by jti, by subject, or issued before a revocation time).";
    TokenReplayed = 3014, "token_replayed", [http(401), violation("`refresh`")], "`auth.single_use_jti` is on and this token's `jti` was already used (by a handshake or a refresh).";

    InvalidJson = 4001, "invalid_json", [violation("any frame")], "The frame is not valid JSON (including empty, or nested more than 128 levels).";
    InvalidFrame = 4002, "invalid_frame", [violation("any frame"), api("`publish` with a non-object payload")], "The frame is JSON but not a valid v1 frame: unknown or missing `action`, unknown or repeated field, wrong type, bad `id`/`seq`, `payload` not an object, bad `method`, or a `presence` `limit` outside 1-1000 or `after` longer than 1024 bytes.";
    InvalidChannel = 4003, "invalid_channel", [violation("`subscribe`, `unsubscribe`, `publish`, `presence`, `presence_stats`, `history`"), api("`publish`, `presence`, `presence_stats`, `history`"), http_api(400)], "The channel name is empty, too long or uses characters outside the allowed set.";
    Forbidden = 4004, "forbidden", [violation("`subscribe`, `publish`, `history`, `rpc`, `presence`, `presence_stats`")], "The identity may not perform this action on this channel: denied by the channel rules, the `authorize` hook (or the hook failed) or the backend proxy's `subscribe` / `publish` endpoint (or its answer was invalid). For `rpc`, the caller lacks the method's roles or scopes. For `presence` and `presence_stats`, the channel's rule does not track presence, lists no `presence_access`, or the identity does not meet it.";
    NotSubscribed = 4005, "not_subscribed", [benign("`unsubscribe`")], "`unsubscribe` for a channel the session is not subscribed to.";
    TooManySubscriptions = 4006, "too_many_subscriptions", [benign("`subscribe`")], "The session already holds `limits.max_subscriptions` subscriptions.";
    PayloadTooDeep = 4007, "payload_too_deep", [violation("`publish`, `rpc`"), api("`publish`"), http_api(400)], "The payload nests deeper than `limits.max_payload_depth`.";
    UnknownMethod = 4008, "unknown_method", [violation("`rpc`")], "The RPC method is not declared in `[[rpc]]` (refused before any host code runs).";
    RpcFailed = 4009, "rpc_failed", [benign("`rpc`")], "The RPC handler failed (the message is the handler's) or panicked, or no handler is registered for a declared method; or the backend proxy's RPC endpoint answered `{\"error\": message}`, failed or gave an invalid answer.";
    HookTimeout = 4010, "hook_timeout", [benign("`subscribe`, `publish`, `rpc`, `refresh`"), http(503)], "A host hook did not answer in time (`hooks.timeout_secs`, or `limits.rpc_timeout_secs` for RPC), or a backend proxy endpoint within its `timeout_secs`; the request fails closed. At the handshake (`authenticate`, `connect`) it is answered 503.";
    RateLimited = 4011, "rate_limited", [violation("any frame")], "A message rate (connection, bytes, user or channel) was exceeded; the frame was not processed. The reply carries `retry_after_ms`.";
    Replay = 4012, "replay", [violation("any frame")], "`protocol.require_seq` is on and `seq` is missing, repeated or lower than a previous one.";
    PayloadInvalid = 4013, "payload_invalid", [violation("`publish`, `rpc`")], "The payload does not satisfy the channel rule's or RPC method's JSON Schema.";
    RefreshMismatch = 4014, "refresh_mismatch", [violation("`refresh`")], "The refresh token's `sub` or session-bound claims differ from the session's.";
    BrokerUnavailable = 4015, "broker_unavailable", [benign("`publish`, `subscribe`, `history`"), api("`publish`"), http_api(503)], "The cluster broker (`[cluster]`) is unreachable or did not confirm the publication in time: it reached the subscribers on this node only, not the other nodes. Retrying may deliver it twice on this node. On a channel with history kept in the Redis broker, the publication was not stored nor delivered anywhere, and a `subscribe` or `history` that needs the channel's log could not read it (not subscribed).";
    HistoryNotKept = 4020, "history_not_kept", [benign("`subscribe` with `since`, `history`"), api("`history`"), http_api(404)], "The channel's rule keeps no history (`history_size` is 0, or no rule matches): there is nothing to recover or read. Nothing changed (a `subscribe` with `since` did not subscribe).";
    HistoryOffsetAhead = 4021, "history_offset_ahead", [violation("`subscribe` with `since`, `history`"), api("`history`"), http_api(400)], "`since.offset` is beyond the channel's latest offset in that same epoch: the position was never given out. Nothing changed.";
    HistoryLimitInvalid = 4022, "history_limit_invalid", [violation("`history`"), api("`history`"), http_api(400)], "The `history` request's `limit` is below 1 or above 1000.";
    HistoryEpochChanged = 4023, "history_epoch_changed", [benign("`history`"), api("`history`"), http_api(409)], "The `history` request's `since.epoch` is not the channel's current epoch: the history it paged through was lost. Start again without `since` (a `subscribe` with a stale `since` is answered `recovered: false` and a `gap` instead).";
    PresenceUnavailable = 4030, "presence_unavailable", [benign("`presence`, `presence_stats`"), api("`presence`, `presence_stats`"), http_api(503)], "The cluster's presence store (Redis: `cluster.quota_redis_url`, else the Redis broker) is unreachable or did not answer within `cluster.broker_timeout_secs`: presence is not answered rather than answered from this node's members only. Subscriptions are not affected.";

    Io = 5001, "io", [API], "An I/O error (bind, accept, read a file).";
    NotRunning = 5003, "not_running", [API, http_api(503)], "The server is not running (already shut down).";
    UnknownSession = 5004, "unknown_session", [api("`disconnect_session`, `send`, `disconnect_with`, `subscribe`, `unsubscribe` of a session"), http_api(404)], "No session has this id (on this node, or on the node named).";
    TokenMint = 5005, "token_mint", [api("`mint_token`")], "A token could not be minted (bad key, bad claims).";
    BrokerTls = 5006, "broker_tls", [api("`Server::bind` (the host's start)")], "The TLS handshake with a `[cluster]` broker failed when the server started: the broker's certificate does not chain to `cluster.tls_ca_file` (or the system trust store), does not name the URL's host, or the broker refused this node's client certificate.";
    ClusterStateUnavailable = 5007, "cluster_state_unavailable", [http(503)], "The node has not yet loaded the cluster's persisted revocations and bans from Redis (`cluster.state_failure = \"closed\"`): it admits no one until it has, answering 503.";
    PayloadTooLarge = 5010, "payload_too_large", [api("`send`"), http_api(413)], "A server-side `send` payload whose `push` frame would exceed `limits.max_message_bytes`: no session could have received a frame that large from a client either.";
    PresenceNotTracked = 5030, "presence_not_tracked", [api("`presence`, `presence_stats`"), http_api(404)], "The channel's rule does not track presence (`presence = true`), or no rule matches it.";

    ApiUnauthorized = 6001, "api_unauthorized", [http_api(401)], "Server API: no `Authorization: Bearer` key, or not one of `api.key_env`, `api.key_file`, `api.keys`; or, with `api.client_ca_file` and no key configured, no client certificate. Answered with `WWW-Authenticate: Bearer`.";
    ApiRateLimited = 6002, "api_rate_limited", [http_api(429)], "Server API: the caller (key or client certificate) exceeded `api.requests_per_sec` and its `api.burst`. Answered with `Retry-After` (seconds).";
    ApiBodyTooLarge = 6003, "api_body_too_large", [http_api(413)], "Server API: the request body is larger than `api.max_body_bytes`.";
    ApiBadJson = 6004, "api_bad_json", [http_api(400)], "Server API: the body is not JSON, or not the endpoint's shape (unknown field, missing field, wrong type).";
    ApiUnknownEndpoint = 6005, "api_unknown_endpoint", [http_api(404)], "Server API: no endpoint has this path.";
    ApiMethodNotAllowed = 6006, "api_method_not_allowed", [http_api(405)], "Server API: the endpoint exists but not with this method (answered with `Allow`).";
    ApiUnsupportedMediaType = 6007, "api_unsupported_media_type", [http_api(415)], "Server API: a POST without `Content-Type: application/json`.";
    ApiInvalidParameter = 6008, "api_invalid_parameter", [http_api(400)], "Server API: a parameter is well-typed but out of range (an empty or too long channel list, a repeated channel; a query parameter that is unknown, repeated, missing or does not parse; `since_offset` without `since_epoch`).";
    ApiReloadUnavailable = 6009, "api_reload_unavailable", [http_api(409)], "Server API: `reload` on a server that has no configuration file to re-read (an embedding host that did not call `ServerBuilder::config_file`); the host reloads through its own `reload` call.";

    InvalidArgument = 9004, "invalid_argument", [API, http_api(400)], "A host API argument is out of range or does not parse (exactly one of ip/user, jti/sub/issued_before or session_id/user; a node without a session id, or another node's name without a cluster broker; an IP that is not an address; a NaN or negative ban length; a close code outside the host's range or a reason over 123 bytes; a listing limit outside 1-1000 or a pattern that does not parse; an invalid `authenticate` answer).";
    WrongThread = 9006, "wrong_thread", [API], "A blocking host API call (start, stop) was made from a thread of a server's runtime (inside a hook), where it would deadlock the server it waits for.";
}

impl ErrorCode {
    /// The HTTP status of a handshake refusal with this code; `None` for a code that is never
    /// answered over HTTP.
    pub fn http_status(self) -> Option<StatusCode> {
        self.surfaces().iter().find_map(|s| match s {
            Surface::Refusal { status } => StatusCode::from_u16(*status).ok(),
            _ => None,
        })
    }

    /// The HTTP status of a server API error answer with this code; `None` for a code the server
    /// API never answers (the API then answers 500).
    pub fn api_status(self) -> Option<StatusCode> {
        self.surfaces().iter().find_map(|s| match s {
            Surface::HttpApi { status } => StatusCode::from_u16(*status).ok(),
            _ => None,
        })
    }

    /// Whether an error reply with this code counts towards `limits.max_violations` (and
    /// `abuse.max_violations`): the client misbehaved. False for a code that is never a reply.
    pub fn is_violation(self) -> bool {
        self.surfaces().iter().any(|s| matches!(s, Surface::Reply { is_violation: true, .. }))
    }

    /// Whether the code can be an `error` reply frame.
    pub fn is_reply(self) -> bool {
        self.surfaces().iter().any(|s| matches!(s, Surface::Reply { .. }))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error type of every fallible public function in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every problem is listed with its key path.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server has already shut down.
    #[error("the server is not running")]
    NotRunning,
    /// An operation on the running server was refused with a per-message code (bad channel, ...).
    #[error("{code}: {message}")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// A token could not be minted.
    #[error("cannot mint token: {0}")]
    TokenMint(#[from] crate::auth::MintError),
    /// A host API argument is out of range or does not parse (see [`crate::host`]).
    #[error("{0}")]
    InvalidArgument(String),
    /// The TLS handshake with a `[cluster]` broker failed at start-up (untrusted or misnamed
    /// certificate, refused client certificate).
    #[error("cannot connect to the {broker} broker over TLS: {detail}")]
    BrokerTls {
        /// `redis` or `nats`.
        broker: &'static str,
        /// What the TLS layer said.
        detail: String,
    },
    /// A blocking host API call was made from a server's own thread (see [`crate::host`]).
    #[error("{0} blocks and cannot be called from a hook or event handler; call it from a thread of your own")]
    WrongThread(&'static str),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Config(e) => e.code(),
            Error::Io { .. } => ErrorCode::Io,
            Error::NotRunning => ErrorCode::NotRunning,
            Error::Refused { code, .. } => *code,
            Error::TokenMint(_) => ErrorCode::TokenMint,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::WrongThread(_) => ErrorCode::WrongThread,
            Error::BrokerTls { .. } => ErrorCode::BrokerTls,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        let mut numbers = HashSet::new();
        let mut names = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(numbers.insert(code.number()), "duplicate number {}", code.number());
            assert!(names.insert(code.name()), "duplicate name {}", code.name());
            assert_eq!(ErrorCode::from_number(code.number()), Some(*code));
            assert!(code.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn refusal_statuses_are_client_or_server_errors_and_one_per_code() {
        for code in ErrorCode::ALL {
            let statuses: Vec<_> = code.surfaces().iter().filter(|s| matches!(s, Surface::Refusal { .. })).collect();
            assert!(statuses.len() <= 1, "{code} has several HTTP statuses");
            if let Some(Surface::Refusal { status }) = statuses.first() {
                let parsed = code.http_status().map(|s| s.as_u16());
                assert_eq!(parsed, Some(*status), "{code}");
                assert!((400..600).contains(status), "{code}: {status}");
            }
            let replies = code.surfaces().iter().filter(|s| matches!(s, Surface::Reply { .. })).count();
            assert!(replies <= 1, "{code} is listed as a reply twice");
        }
        assert_eq!(ErrorCode::HookTimeout.http_status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(ErrorCode::InvalidJson.http_status(), None);
    }

    #[test]
    fn only_replies_are_violations() {
        for code in ErrorCode::ALL {
            assert!(!code.is_violation() || code.is_reply(), "{code}");
        }
        assert!(ErrorCode::InvalidFrame.is_violation());
        assert!(!ErrorCode::BrokerUnavailable.is_violation());
    }
}
