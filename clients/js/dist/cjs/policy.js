"use strict";
/**
 * The client's decisions as pure functions: what a close code or a refused handshake means
 * (the reconnect table of docs/PROTOCOL.md, "Client reconnect table"), the backoff delay, and when
 * to refresh a token. No I/O and no timers here, so each rule is testable on its own.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.MIN_REFRESH_DELAY_MS = void 0;
exports.closeAction = closeAction;
exports.handshakeAction = handshakeAction;
exports.backoffDelay = backoffDelay;
exports.tokenTimes = tokenTimes;
exports.refreshDelay = refreshDelay;
/** Standard close codes after which the client reconnects with backoff. */
const BACKOFF_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);
/**
 * The action for a close code of a session that was open (PROTOCOL.md, "Client reconnect table").
 * 1001, 1006, 1011-1014 and 4000-4099 (4000 `slow_consumer`, 4001 `disconnected`, 4003
 * `idle_timeout`, a host's own code) reconnect with backoff; 4100-4199 (4100 `token_expired`) at
 * once with a fresh token; everything else stops: 4500-4599 (4501 `token_revoked`), 1008
 * `too_many_violations`, 1002, 1003, 1007, 1009, and any code the table does not name (1000, the
 * application's 4200-4499 and 4600-4999).
 */
function closeAction(code) {
    if (code >= 4100 && code <= 4199)
        return "immediate";
    if (code >= 4000 && code <= 4099)
        return "backoff";
    return BACKOFF_CLOSE_CODES.has(code) ? "backoff" : "stop";
}
/**
 * The action for a handshake the server refused with an HTTP status (only visible where the runtime
 * exposes it). 401 and 403 (authentication, origin, ban, hook) stop; 408, 429 and 5xx back off,
 * honouring `Retry-After`; any other status (400, 404, 405, 426, 431: a misconfigured client) stops.
 */
function handshakeAction(status) {
    if (status === 408 || status === 429 || (status >= 500 && status <= 599))
        return "backoff";
    return "stop";
}
/**
 * Full-jitter exponential backoff: a uniformly random delay in `[0, min(cap, base * 2^attempt))`,
 * `attempt` counting the failures since the last stable connection (0 for the first retry).
 * `retryAfterSecs` (from a 429/503) is a floor: the delay is never shorter.
 */
function backoffDelay(attempt, options, retryAfterSecs, random = Math.random) {
    const ceiling = Math.min(options.capMs, options.baseMs * 2 ** Math.min(attempt, 30));
    const jittered = Math.floor(random() * ceiling);
    const floor = retryAfterSecs !== undefined && retryAfterSecs > 0 ? retryAfterSecs * 1000 : 0;
    return Math.max(jittered, floor);
}
/** Reads `exp` and `iat` from a JWT's payload; undefined when it is not a JWT with a numeric `exp`. */
function tokenTimes(token) {
    const parts = token.split(".");
    if (parts.length !== 3)
        return undefined;
    try {
        const g = globalThis;
        const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
        const binary = g.atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
        const claims = JSON.parse(binary);
        if (typeof claims.exp !== "number" || !Number.isFinite(claims.exp))
            return undefined;
        return { exp: claims.exp, iat: typeof claims.iat === "number" ? claims.iat : undefined };
    }
    catch {
        return undefined;
    }
}
/** The shortest wait before a refresh (milliseconds), so a very short token never loops. */
exports.MIN_REFRESH_DELAY_MS = 1000;
/**
 * Milliseconds from `nowMs` until the in-band `refresh` of a token with these times:
 * the earlier of 80 % of its lifetime (`iat + 0.8 * (exp - iat)`) and `exp - 30 s`, but never
 * sooner than 1 s from now. Without `iat`, the lifetime counts from `receivedMs` (when the client
 * got the token).
 */
function refreshDelay(times, nowMs, receivedMs = nowMs) {
    const expMs = times.exp * 1000;
    const issuedMs = times.iat !== undefined ? times.iat * 1000 : receivedMs;
    const at80 = issuedMs + 0.8 * (expMs - issuedMs);
    const target = Math.min(at80, expMs - 30_000);
    return Math.max(exports.MIN_REFRESH_DELAY_MS, Math.round(target - nowMs));
}
