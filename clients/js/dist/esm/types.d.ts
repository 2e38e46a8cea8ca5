/** Wire shapes (docs/PROTOCOL.md §2) and the client's public option and event types. */
import type { WsguardError } from "./errors.js";
import type { ReconnectAction } from "./policy.js";
/** A JSON object payload. */
export type JsonObject = {
    [key: string]: unknown;
};
/**
 * A channel position for recovery: the `offset` of the last message, the channel's `epoch`, and
 * the `proof` of the subscribe ack it follows (the server replays only from a position it can
 * verify this user was subscribed at; without the proof a recovery is a `gap`).
 */
export interface Position {
    offset: number;
    epoch: string;
    proof?: string;
}
/**
 * The part of the WebSocket API the client uses: the browser's `WebSocket`, Node's global one, or
 * the `ws` package's class all fit.
 */
export interface WebSocketLike {
    readonly readyState: number;
    readonly protocol: string;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((event: unknown) => void) | null;
}
/** A WebSocket constructor: `new WebSocket(url, protocols)`. */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;
/** Options of `new Client(...)`. Every duration is in milliseconds. */
export interface ClientOptions {
    /** `ws://` or `wss://` URL of the server's WebSocket path (no token in it, ever). */
    url: string;
    /**
     * Returns a token (a JWT). Called before every connection attempt and before each in-band
     * refresh. The token travels only as the subprotocol `bearer.<token>`.
     */
    getToken: () => string | Promise<string>;
    /** WebSocket constructor. Default: the global `WebSocket` (browsers, Node >= 22). */
    WebSocket?: WebSocketConstructor;
    /** Backoff: upper bound of the first delay. Default 500. */
    reconnectBaseMs?: number;
    /** Backoff: largest delay. Default 30 000. */
    reconnectCapMs?: number;
    /** A connection open this long resets the backoff to its first step. Default 10 000. */
    reconnectResetAfterMs?: number;
    /** Consecutive failed connection attempts before the client stops. Default Infinity. */
    maxReconnectAttempts?: number;
    /** Timeout of `publish`, `rpc`, `subscribe`, `history`, `presence`, ... Default 10 000. */
    requestTimeoutMs?: number;
    /** Requests held while disconnected; one more is refused with `QueueFullError`. Default 1000. */
    maxQueue?: number;
    /** Refresh the token in band before its `exp`. Default true. */
    refresh?: boolean;
}
/** A publication on a subscribed channel. */
export interface MessageEvent {
    channel: string;
    payload: JsonObject;
    /** Present on channels that keep history. */
    offset?: number;
    /** The publisher stamp, on channels whose rule stamps publishers. */
    from?: JsonObject;
}
/** A subscription was confirmed (first time or after a reconnect). */
export interface SubscribedEvent {
    channel: string;
    /** The channel's position at the ack (channels with history). */
    offset?: number;
    epoch?: string;
    /** Present when the subscribe asked to recover (`since`): whether every missed message follows. */
    recovered?: boolean;
    /** True when this is a resubscription after a reconnect or a gap. */
    resubscribed: boolean;
}
/** Publications may have been lost (`missed` count, or a `reason`). */
export interface GapEvent {
    channel: string;
    missed?: number;
    reason?: string;
}
export interface JoinEvent {
    channel: string;
    user: string;
    claims?: JsonObject;
}
export interface LeaveEvent {
    channel: string;
    user: string;
}
/** The client no longer holds this subscription (refused at a resubscribe, or after a refresh). */
export interface UnsubscribedEvent {
    channel: string;
    reason: string;
    error?: WsguardError;
}
/** A connection ended (or a connection attempt failed). */
export interface DisconnectedEvent {
    /** Close code (1006 when the handshake failed or the network broke). */
    code: number;
    reason: string;
    /** Whether the WebSocket had opened. */
    wasOpen: boolean;
    /** HTTP status of a refused handshake, when the runtime exposes it. */
    status?: number;
    /** `Retry-After` of a refused handshake, in seconds, when the runtime exposes it. */
    retryAfterSecs?: number;
    /** What the client does next. */
    action: ReconnectAction;
    /** With `action` other than `stop`: milliseconds until the next attempt. */
    delayMs?: number;
}
/** Events of a `Client` and the value each listener gets. */
export interface ClientEvents {
    connecting: {
        attempt: number;
    };
    connected: {
        protocol: string;
    };
    disconnected: DisconnectedEvent;
    /** The client stopped for good: `close()` (no error) or a close/refusal the table says is final. */
    closed: {
        error?: WsguardError;
    };
    message: MessageEvent;
    subscribed: SubscribedEvent;
    /** A resubscription recovered every missed publication (they follow as `message` events). */
    recovered: {
        channel: string;
        offset: number;
        epoch: string;
    };
    gap: GapEvent;
    join: JoinEvent;
    leave: LeaveEvent;
    unsubscribed: UnsubscribedEvent;
    /**
     * The host or an operator subscribed this session to a channel (`subscribed` frame, `by: "server"`).
     * Its messages arrive as `message` events. It is the host's subscription: the client does not
     * resubscribe it after a reconnect (the host decides again).
     */
    serverSubscribed: {
        channel: string;
    };
    /** A message from the host or an operator to this session, outside any channel (`push` frame). */
    push: {
        payload: JsonObject;
    };
    /** The token was refreshed in band. `exp` in seconds since the epoch, when readable. */
    tokenRefreshed: {
        exp?: number;
    };
    /** A problem that does not stop the client (a refused refresh, an uncorrelated error frame, ...). */
    error: WsguardError;
    /** Every frame, for debugging. The token of a `refresh` frame is replaced by `"<redacted>"`. */
    frame: {
        direction: "in" | "out";
        text: string;
    };
}
/** One page of `history()`. */
export interface HistoryPage {
    channel: string;
    offset: number;
    epoch: string;
    publications: MessageEvent[];
}
/** One page of `presence()`. */
export interface PresencePage {
    channel: string;
    members: {
        user: string;
        sessions: number;
        claims?: JsonObject;
    }[];
    /** Pass as `after` for the next page; absent on the last page. */
    next?: string;
}
export interface PresenceStats {
    channel: string;
    users: number;
    clients: number;
}
