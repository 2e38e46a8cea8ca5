/**
 * Typed errors. Every error the client surfaces is a `WsguardError` with a numeric `code` and a
 * snake_case `codeName`:
 *
 * - from the server (a reply `error` frame, a refused handshake): the registry's number and name
 *   (docs/PROTOCOL.md §4), for example 4004 `forbidden`;
 * - a close frame that ends the client: the close code and its reason name, for example 4501
 *   `token_revoked`;
 * - conditions only the client sees (a timeout, a full send queue): code 0 and a client name.
 *
 * Branch on `codeName` (or `instanceof`); `message` is for people and may change.
 */
/** The registry's names and numbers for codes a client can meet (reply errors, handshake refusals). */
export const ERROR_CODES = Object.freeze({
    bad_request: 2001,
    not_found: 2002,
    method_not_allowed: 2003,
    upgrade_required: 2004,
    headers_too_large: 2005,
    handshake_timeout: 2006,
    origin_not_allowed: 2007,
    server_full: 2008,
    too_many_connections_per_ip: 2009,
    too_many_connections_per_user: 2010,
    handshake_rate_limited: 2011,
    bad_forwarded_header: 2013,
    rejected_by_hook: 2014,
    subprotocol_required: 2015,
    shutting_down: 2016,
    replay_cache_full: 2017,
    banned: 2018,
    over_memory_budget: 2019,
    quota_unavailable: 2020,
    keys_unavailable: 2021,
    too_many_pending_handshakes_per_ip: 2025,
    jti_store_unavailable: 2026,
    proxy_unavailable: 2030,
    token_missing: 3001,
    token_malformed: 3002,
    token_expired: 3003,
    token_not_yet_valid: 3004,
    token_bad_signature: 3005,
    token_alg_not_allowed: 3006,
    token_wrong_issuer: 3007,
    token_wrong_audience: 3008,
    token_lifetime_too_long: 3009,
    token_missing_claim: 3010,
    token_unknown_key: 3011,
    token_invalid_claim: 3012,
    token_revoked: 3013,
    token_replayed: 3014,
    invalid_json: 4001,
    invalid_frame: 4002,
    invalid_channel: 4003,
    forbidden: 4004,
    not_subscribed: 4005,
    too_many_subscriptions: 4006,
    payload_too_deep: 4007,
    unknown_method: 4008,
    rpc_failed: 4009,
    hook_timeout: 4010,
    rate_limited: 4011,
    replay: 4012,
    payload_invalid: 4013,
    refresh_mismatch: 4014,
    broker_unavailable: 4015,
    history_not_kept: 4020,
    history_offset_ahead: 4021,
    history_limit_invalid: 4022,
    history_epoch_changed: 4023,
    presence_unavailable: 4030,
    cluster_state_unavailable: 5007,
});
/** The registry number of a code name, or 0 when this client version does not know it. */
export function codeNumber(name) {
    return Object.prototype.hasOwnProperty.call(ERROR_CODES, name) ? ERROR_CODES[name] : 0;
}
/** Base class of every error the client surfaces. */
export class WsguardError extends Error {
    /** Registry number, close code, or 0 for a client-side condition. */
    code;
    /** Stable snake_case name (registry name, close reason name, or a client-side name). */
    codeName;
    constructor(code, codeName, message) {
        super(message);
        this.code = code;
        this.codeName = codeName;
        this.name = new.target.name;
    }
}
/** The server answered a request with an `error` frame. The session stays open. */
export class ReplyError extends WsguardError {
    /** With `rate_limited`: milliseconds until a retry can succeed. */
    retryAfterMs;
    /** The action of the refused request (`publish`, `subscribe`, `rpc`, ...). */
    action;
    constructor(codeName, message, action, retryAfterMs) {
        super(codeNumber(codeName), codeName, message);
        this.action = action;
        this.retryAfterMs = retryAfterMs;
    }
}
/**
 * The server refused the handshake with an HTTP status the runtime could see (Node with the `ws`
 * package; browsers and Node's global WebSocket hide it).
 */
export class HandshakeError extends WsguardError {
    /** HTTP status of the refusal (401, 403, 429, 503, ...). */
    status;
    /** `Retry-After` in seconds, when the response had one. */
    retryAfterSecs;
    constructor(status, codeName, retryAfterSecs) {
        super(codeNumber(codeName), codeName || `http_${status}`, `handshake refused: HTTP ${status} ${codeName}`.trim());
        this.status = status;
        this.retryAfterSecs = retryAfterSecs;
    }
}
/** The server closed the session with a code after which the client does not reconnect. */
export class CloseError extends WsguardError {
    constructor(closeCode, reason) {
        super(closeCode, reason || `close_${closeCode}`, `session closed by the server: ${closeCode} ${reason}`.trim());
    }
}
/** A request got no reply within its timeout (`requestTimeoutMs` or the call's `timeoutMs`). */
export class TimeoutError extends WsguardError {
    constructor(action, timeoutMs) {
        super(0, "timeout", `${action}: no reply within ${timeoutMs} ms`);
    }
}
/** The send queue (`maxQueue`) is full while disconnected: the call was refused, nothing was sent. */
export class QueueFullError extends WsguardError {
    constructor(maxQueue) {
        super(0, "queue_full", `send queue full (${maxQueue} requests waiting for a connection)`);
    }
}
/**
 * The connection dropped after the request was sent and before its reply: whether the server
 * handled it is unknown. The client never resends it by itself (a publication could arrive twice).
 */
export class ConnectionLostError extends WsguardError {
    constructor(action) {
        super(0, "connection_lost", `${action}: connection lost before the reply (outcome unknown)`);
    }
}
/** The client was closed (`close()`) or stopped for good; the call cannot complete. */
export class ClientClosedError extends WsguardError {
    constructor(cause) {
        super(0, "client_closed", cause ? `client stopped: ${cause.message}` : "client closed");
        if (cause)
            this.cause = cause;
    }
}
/** The `getToken()` callback threw or returned something that is not a non-empty string. */
export class TokenError extends WsguardError {
    constructor(detail) {
        super(0, "get_token_failed", `getToken() failed: ${detail}`);
    }
}
