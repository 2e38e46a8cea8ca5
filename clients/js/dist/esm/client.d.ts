/**
 * `Client`: one logical session with a wsguard server over as many WebSocket connections as it
 * takes. It owns the connection loop (token, handshake, reconnect by the close-code table), the
 * request/reply matching, the send queue, the subscriptions with their recovery positions, and the
 * in-band token refresh. The rules themselves are in policy.ts.
 */
import { WsguardError } from "./errors.js";
import { Emitter } from "./emitter.js";
import type { ClientEvents, ClientOptions, HistoryPage, JsonObject, MessageEvent, Position, PresencePage, PresenceStats } from "./types.js";
/** The client's lifecycle. */
export type ClientState = "idle" | "connecting" | "connected" | "closed";
/** Per-call options of requests. */
export interface RequestOptions {
    /** Overrides `requestTimeoutMs` for this call. */
    timeoutMs?: number;
}
/** Options of `subscribe()`. */
export interface SubscribeOptions extends RequestOptions {
    /** Called with each publication of this channel (as well as the `message` event). */
    onMessage?: (message: MessageEvent) => void;
    /** Start from this position (recovery from a position kept elsewhere). */
    since?: Position;
}
/** What `subscribe()` resolves to. */
export interface Subscription {
    channel: string;
    /** The channel's position at the ack (channels with history). */
    position?: Position;
    recovered?: boolean;
}
/** A wsguard client. Create it, add listeners, then `connect()`. */
export declare class Client extends Emitter<ClientEvents> {
    #private;
    constructor(options: ClientOptions);
    /** The lifecycle state. */
    get state(): ClientState;
    /** Why the client stopped, when a close or refusal (not `close()`) stopped it. */
    get closeError(): WsguardError | undefined;
    /** Requests waiting in the send queue for a connection. */
    get queued(): number;
    /** The recovery position of a subscribed channel (channels with history). */
    position(channel: string): Position | undefined;
    /**
     * Starts connecting (and reconnecting, by the table). Resolves on the first open connection;
     * rejects when the client stops first.
     */
    connect(): Promise<void>;
    /** Closes the connection and stops for good. Pending and queued calls reject with `ClientClosedError`. */
    close(): void;
    /**
     * Subscribes to `channel`. The subscription is kept across reconnects (resubscribed with `since`
     * on channels with history) until `unsubscribe()` or a refusal. Resolves on the server's `ack`.
     */
    subscribe(channel: string, options?: SubscribeOptions): Promise<Subscription>;
    /** Drops the subscription (and tells the server when connected). */
    unsubscribe(channel: string, options?: RequestOptions): Promise<void>;
    /** Publishes `payload` on `channel`; resolves on the server's `ack`. Queued while disconnected. */
    publish(channel: string, payload: JsonObject, options?: RequestOptions): Promise<void>;
    /** Calls a declared RPC method; resolves with the handler's result. Queued while disconnected. */
    rpc(method: string, payload?: JsonObject, options?: RequestOptions): Promise<unknown>;
    /** An application-level round trip (`ping` -> `pong`). */
    ping(options?: RequestOptions): Promise<void>;
    /** Reads kept publications of a channel with history (see PROTOCOL.md, History and recovery). */
    history(channel: string, options?: RequestOptions & {
        limit?: number;
        since?: Position;
        newestFirst?: boolean;
    }): Promise<HistoryPage>;
    /** One page of a channel's members (rules with `presence`); pass `next` as `after` for the next. */
    presence(channel: string, options?: RequestOptions & {
        limit?: number;
        after?: string;
    }): Promise<PresencePage>;
    /** Distinct users and subscribed sessions of a channel (rules with `presence`). */
    presenceStats(channel: string, options?: RequestOptions): Promise<PresenceStats>;
}
