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
export declare const ERROR_CODES: Readonly<Record<string, number>>;
/** The registry number of a code name, or 0 when this client version does not know it. */
export declare function codeNumber(name: string): number;
/** Base class of every error the client surfaces. */
export declare class WsguardError extends Error {
    /** Registry number, close code, or 0 for a client-side condition. */
    readonly code: number;
    /** Stable snake_case name (registry name, close reason name, or a client-side name). */
    readonly codeName: string;
    constructor(code: number, codeName: string, message: string);
}
/** The server answered a request with an `error` frame. The session stays open. */
export declare class ReplyError extends WsguardError {
    /** With `rate_limited`: milliseconds until a retry can succeed. */
    readonly retryAfterMs: number | undefined;
    /** The action of the refused request (`publish`, `subscribe`, `rpc`, ...). */
    readonly action: string;
    constructor(codeName: string, message: string, action: string, retryAfterMs?: number);
}
/**
 * The server refused the handshake with an HTTP status the runtime could see (Node with the `ws`
 * package; browsers and Node's global WebSocket hide it).
 */
export declare class HandshakeError extends WsguardError {
    /** HTTP status of the refusal (401, 403, 429, 503, ...). */
    readonly status: number;
    /** `Retry-After` in seconds, when the response had one. */
    readonly retryAfterSecs: number | undefined;
    constructor(status: number, codeName: string, retryAfterSecs?: number);
}
/** The server closed the session with a code after which the client does not reconnect. */
export declare class CloseError extends WsguardError {
    constructor(closeCode: number, reason: string);
}
/** A request got no reply within its timeout (`requestTimeoutMs` or the call's `timeoutMs`). */
export declare class TimeoutError extends WsguardError {
    constructor(action: string, timeoutMs: number);
}
/** The send queue (`maxQueue`) is full while disconnected: the call was refused, nothing was sent. */
export declare class QueueFullError extends WsguardError {
    constructor(maxQueue: number);
}
/**
 * The connection dropped after the request was sent and before its reply: whether the server
 * handled it is unknown. The client never resends it by itself (a publication could arrive twice).
 */
export declare class ConnectionLostError extends WsguardError {
    constructor(action: string);
}
/** The client was closed (`close()`) or stopped for good; the call cannot complete. */
export declare class ClientClosedError extends WsguardError {
    constructor(cause?: WsguardError);
}
/** The `getToken()` callback threw or returned something that is not a non-empty string. */
export declare class TokenError extends WsguardError {
    constructor(detail: string);
}
