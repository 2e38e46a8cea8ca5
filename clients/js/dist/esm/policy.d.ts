/**
 * The client's decisions as pure functions: what a close code or a refused handshake means
 * (the reconnect table of docs/PROTOCOL.md, "Client reconnect table"), the backoff delay, and when
 * to refresh a token. No I/O and no timers here, so each rule is testable on its own.
 */
/** What to do after a connection ends. */
export type ReconnectAction = 
/** Reconnect after an exponential backoff with full jitter (or the server's `Retry-After`). */
"backoff"
/** Reconnect at once, with a fresh token from `getToken()`. */
 | "immediate"
/** Never reconnect: stop the client and surface the error. */
 | "stop";
/**
 * The action for a close code of a session that was open (PROTOCOL.md, "Client reconnect table").
 * 1001, 1006, 1011-1014 and 4000-4099 (4000 `slow_consumer`, 4001 `disconnected`, 4003
 * `idle_timeout`, a host's own code) reconnect with backoff; 4100-4199 (4100 `token_expired`) at
 * once with a fresh token; everything else stops: 4500-4599 (4501 `token_revoked`), 1008
 * `too_many_violations`, 1002, 1003, 1007, 1009, and any code the table does not name (1000, the
 * application's 4200-4499 and 4600-4999).
 */
export declare function closeAction(code: number): ReconnectAction;
/**
 * The action for a handshake the server refused with an HTTP status (only visible where the runtime
 * exposes it). 401 and 403 (authentication, origin, ban, hook) stop; 408, 429 and 5xx back off,
 * honouring `Retry-After`; any other status (400, 404, 405, 426, 431: a misconfigured client) stops.
 */
export declare function handshakeAction(status: number): ReconnectAction;
/** Backoff settings (milliseconds). */
export interface BackoffOptions {
    /** First delay's upper bound. Default 500. */
    baseMs: number;
    /** Largest delay. Default 30 000. */
    capMs: number;
}
/**
 * Full-jitter exponential backoff: a uniformly random delay in `[0, min(cap, base * 2^attempt))`,
 * `attempt` counting the failures since the last stable connection (0 for the first retry).
 * `retryAfterSecs` (from a 429/503) is a floor: the delay is never shorter.
 */
export declare function backoffDelay(attempt: number, options: BackoffOptions, retryAfterSecs?: number, random?: () => number): number;
/** The claims of a JWT the client needs for scheduling (it never verifies a token). */
export interface TokenTimes {
    /** `exp`, seconds since the epoch. */
    exp: number;
    /** `iat`, seconds since the epoch, when present. */
    iat: number | undefined;
}
/** Reads `exp` and `iat` from a JWT's payload; undefined when it is not a JWT with a numeric `exp`. */
export declare function tokenTimes(token: string): TokenTimes | undefined;
/** The shortest wait before a refresh (milliseconds), so a very short token never loops. */
export declare const MIN_REFRESH_DELAY_MS = 1000;
/**
 * Milliseconds from `nowMs` until the in-band `refresh` of a token with these times:
 * the earlier of 80 % of its lifetime (`iat + 0.8 * (exp - iat)`) and `exp - 30 s`, but never
 * sooner than 1 s from now. Without `iat`, the lifetime counts from `receivedMs` (when the client
 * got the token).
 */
export declare function refreshDelay(times: TokenTimes, nowMs: number, receivedMs?: number): number;
