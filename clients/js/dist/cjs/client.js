"use strict";
/**
 * `Client`: one logical session with a wsguard server over as many WebSocket connections as it
 * takes. It owns the connection loop (token, handshake, reconnect by the close-code table), the
 * request/reply matching, the send queue, the subscriptions with their recovery positions, and the
 * in-band token refresh. The rules themselves are in policy.ts.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.Client = void 0;
const errors_js_1 = require("./errors.js");
const emitter_js_1 = require("./emitter.js");
const policy_js_1 = require("./policy.js");
const OPEN = 1;
// The library targets plain ES2022 (no DOM or Node typings); both runtimes have these globals.
const timers = globalThis;
/** A wsguard client. Create it, add listeners, then `connect()`. */
class Client extends emitter_js_1.Emitter {
    #options;
    #state = "idle";
    #ws;
    #nextId = 1;
    #pending = new Map();
    #queue = [];
    #subs = new Map();
    #attempt = 0;
    #reconnectTimer;
    #refreshTimer;
    #stableTimer;
    #connectWaiters = [];
    #closeError;
    constructor(options) {
        super();
        if (typeof options?.url !== "string" || !/^wss?:\/\//i.test(options.url)) {
            throw new TypeError("options.url must be a ws:// or wss:// URL");
        }
        if (/[?&]access_token=/i.test(options.url)) {
            throw new TypeError("options.url must not carry a token; getToken() supplies it");
        }
        if (typeof options.getToken !== "function")
            throw new TypeError("options.getToken must be a function");
        const WebSocketCtor = options.WebSocket ?? globalThis.WebSocket;
        if (typeof WebSocketCtor !== "function") {
            throw new TypeError("no global WebSocket: pass options.WebSocket (for example the `ws` package)");
        }
        this.#options = {
            url: options.url,
            getToken: options.getToken,
            WebSocket: WebSocketCtor,
            reconnectBaseMs: positive(options.reconnectBaseMs, 500, "reconnectBaseMs"),
            reconnectCapMs: positive(options.reconnectCapMs, 30_000, "reconnectCapMs"),
            reconnectResetAfterMs: positive(options.reconnectResetAfterMs, 10_000, "reconnectResetAfterMs"),
            maxReconnectAttempts: positive(options.maxReconnectAttempts, Infinity, "maxReconnectAttempts"),
            requestTimeoutMs: positive(options.requestTimeoutMs, 10_000, "requestTimeoutMs"),
            maxQueue: positive(options.maxQueue, 1000, "maxQueue"),
            refresh: options.refresh ?? true,
        };
    }
    /** The lifecycle state. */
    get state() {
        return this.#state;
    }
    /** Why the client stopped, when a close or refusal (not `close()`) stopped it. */
    get closeError() {
        return this.#closeError;
    }
    /** Requests waiting in the send queue for a connection. */
    get queued() {
        return this.#queue.length;
    }
    /** The recovery position of a subscribed channel (channels with history). */
    position(channel) {
        const position = this.#subs.get(channel)?.position;
        return position ? { ...position } : undefined;
    }
    /**
     * Starts connecting (and reconnecting, by the table). Resolves on the first open connection;
     * rejects when the client stops first.
     */
    connect() {
        if (this.#state === "closed")
            return Promise.reject(new errors_js_1.ClientClosedError(this.#closeError));
        if (this.#state === "connected")
            return Promise.resolve();
        const opened = new Promise((resolve, reject) => this.#connectWaiters.push({ resolve, reject }));
        if (this.#state === "idle")
            void this.#open();
        return opened;
    }
    /** Closes the connection and stops for good. Pending and queued calls reject with `ClientClosedError`. */
    close() {
        this.#stop(undefined);
    }
    /**
     * Subscribes to `channel`. The subscription is kept across reconnects (resubscribed with `since`
     * on channels with history) until `unsubscribe()` or a refusal. Resolves on the server's `ack`.
     */
    subscribe(channel, options = {}) {
        if (this.#state === "closed")
            return Promise.reject(new errors_js_1.ClientClosedError(this.#closeError));
        let sub = this.#subs.get(channel);
        if (sub && sub.acked)
            return Promise.resolve(snapshot(sub));
        if (!sub) {
            sub = {
                channel,
                onMessage: options.onMessage,
                position: options.since ? { ...options.since } : undefined,
                acked: false,
                resyncing: false,
                everAcked: false,
                waiters: [],
            };
            this.#subs.set(channel, sub);
            if (this.#state === "connected")
                this.#sendSubscribe(sub);
        }
        const target = sub;
        const timeoutMs = options.timeoutMs ?? this.#options.requestTimeoutMs;
        return new Promise((resolve, reject) => {
            const timer = timers.setTimeout(() => {
                target.waiters = target.waiters.filter((w) => w.resolve !== resolve);
                reject(new errors_js_1.TimeoutError("subscribe", timeoutMs));
            }, timeoutMs);
            target.waiters.push({
                resolve: (s) => {
                    timers.clearTimeout(timer);
                    resolve(s);
                },
                reject: (e) => {
                    timers.clearTimeout(timer);
                    reject(e);
                },
            });
        });
    }
    /** Drops the subscription (and tells the server when connected). */
    async unsubscribe(channel, options = {}) {
        const sub = this.#subs.get(channel);
        if (!sub)
            return;
        this.#subs.delete(channel);
        for (const w of sub.waiters)
            w.reject(new errors_js_1.ReplyError("not_subscribed", "unsubscribed before the ack", "subscribe"));
        if (this.#state !== "connected" || !sub.acked)
            return;
        try {
            await this.#request({ action: "unsubscribe", channel }, options.timeoutMs, false);
        }
        catch (e) {
            if (!(e instanceof errors_js_1.ReplyError && e.codeName === "not_subscribed"))
                throw e;
        }
    }
    /** Publishes `payload` on `channel`; resolves on the server's `ack`. Queued while disconnected. */
    async publish(channel, payload, options = {}) {
        assertObject(payload, "payload");
        await this.#request({ action: "publish", channel, payload }, options.timeoutMs);
    }
    /** Calls a declared RPC method; resolves with the handler's result. Queued while disconnected. */
    async rpc(method, payload = {}, options = {}) {
        assertObject(payload, "payload");
        const reply = await this.#request({ action: "rpc", method, payload }, options.timeoutMs);
        return reply.payload;
    }
    /** An application-level round trip (`ping` -> `pong`). */
    async ping(options = {}) {
        await this.#request({ action: "ping" }, options.timeoutMs);
    }
    /** Reads kept publications of a channel with history (see PROTOCOL.md, History and recovery). */
    async history(channel, options = {}) {
        const frame = { action: "history", channel };
        if (options.limit !== undefined)
            frame.limit = options.limit;
        if (options.since !== undefined)
            frame.since = { offset: options.since.offset, epoch: options.since.epoch };
        if (options.newestFirst !== undefined)
            frame.newest_first = options.newestFirst;
        const reply = await this.#request(frame, options.timeoutMs);
        return {
            channel: String(reply.channel),
            offset: Number(reply.offset),
            epoch: String(reply.epoch),
            publications: (Array.isArray(reply.publications) ? reply.publications : []).map((p) => toMessage(p)),
        };
    }
    /** One page of a channel's members (rules with `presence`); pass `next` as `after` for the next. */
    async presence(channel, options = {}) {
        const frame = { action: "presence", channel };
        if (options.limit !== undefined)
            frame.limit = options.limit;
        if (options.after !== undefined)
            frame.after = options.after;
        const reply = await this.#request(frame, options.timeoutMs);
        const page = { channel: String(reply.channel), members: reply.members };
        if (typeof reply.next === "string")
            page.next = reply.next;
        return page;
    }
    /** Distinct users and subscribed sessions of a channel (rules with `presence`). */
    async presenceStats(channel, options = {}) {
        const reply = await this.#request({ action: "presence_stats", channel }, options.timeoutMs);
        return { channel: String(reply.channel), users: Number(reply.users), clients: Number(reply.clients) };
    }
    // ---- connection loop -------------------------------------------------------------------
    async #open() {
        this.#state = "connecting";
        this.emit("connecting", { attempt: this.#attempt });
        let token;
        try {
            token = await this.#options.getToken();
            if (typeof token !== "string" || token.length === 0)
                throw new Error("not a non-empty string");
        }
        catch (e) {
            if (this.#state !== "connecting")
                return;
            this.emit("error", new errors_js_1.TokenError(e instanceof Error ? e.message : String(e)));
            this.#afterConnection({ code: 1006, reason: "", wasOpen: false, openedForMs: 0 }, "backoff");
            return;
        }
        if (this.#state !== "connecting")
            return;
        let ws;
        try {
            ws = new this.#options.WebSocket(this.#options.url, ["wsguard.v1", `bearer.${token}`]);
        }
        catch (e) {
            // A malformed URL or subprotocol: nothing a retry changes.
            this.#stop(new errors_js_1.WsguardError(0, "invalid_url", e instanceof Error ? e.message : String(e)));
            return;
        }
        this.#ws = ws;
        let openedAt = 0;
        let refusal;
        watchRefusal(ws, (r) => (refusal = r));
        ws.onopen = () => {
            if (this.#ws !== ws)
                return;
            openedAt = Date.now();
            this.#state = "connected";
            this.#stableTimer = timers.setTimeout(() => (this.#attempt = 0), this.#options.reconnectResetAfterMs);
            this.emit("connected", { protocol: ws.protocol });
            for (const w of this.#connectWaiters.splice(0))
                w.resolve();
            for (const sub of this.#subs.values())
                this.#sendSubscribe(sub);
            for (const p of this.#queue.splice(0))
                this.#transmit(p);
            this.#scheduleRefresh(token, Date.now());
        };
        ws.onmessage = (event) => {
            if (this.#ws !== ws)
                return;
            this.#onFrame(typeof event.data === "string" ? event.data : String(event.data));
        };
        ws.onerror = () => {
            // The close event follows and carries what can be known.
        };
        ws.onclose = (event) => {
            if (this.#ws !== ws)
                return;
            this.#ws = undefined;
            const wasOpen = openedAt > 0;
            const info = { code: event.code, reason: event.reason, wasOpen, openedForMs: wasOpen ? Date.now() - openedAt : 0 };
            if (!wasOpen && refusal) {
                this.#afterConnection(info, (0, policy_js_1.handshakeAction)(refusal.status), refusal);
            }
            else {
                this.#afterConnection(info, wasOpen ? (0, policy_js_1.closeAction)(event.code) : "backoff");
            }
        };
    }
    /** One connection (or attempt) ended: settle its requests, then reconnect or stop by `action`. */
    #afterConnection(info, action, refusal) {
        timers.clearTimeout(this.#refreshTimer);
        timers.clearTimeout(this.#stableTimer);
        for (const sub of this.#subs.values()) {
            sub.acked = false;
            sub.resyncing = false;
        }
        for (const p of [...this.#pending.values()]) {
            if (!p.sent)
                continue;
            this.#pending.delete(p.id);
            timers.clearTimeout(p.timer);
            p.reject(new errors_js_1.ConnectionLostError(p.action));
        }
        if (this.#state === "closed")
            return;
        let error;
        if (refusal)
            error = new errors_js_1.HandshakeError(refusal.status, refusal.codeName, refusal.retryAfterSecs);
        else if (action === "stop")
            error = new errors_js_1.CloseError(info.code, info.reason);
        this.#attempt += 1;
        if (action !== "stop" && this.#attempt > this.#options.maxReconnectAttempts)
            action = "stop";
        let delayMs;
        if (action === "immediate" && info.openedForMs >= 1000) {
            delayMs = 0;
        }
        else if (action !== "stop") {
            // `immediate` right after the previous connection opened would loop: back off instead.
            delayMs = (0, policy_js_1.backoffDelay)(this.#attempt - 1, { baseMs: this.#options.reconnectBaseMs, capMs: this.#options.reconnectCapMs }, refusal?.retryAfterSecs);
        }
        this.emit("disconnected", {
            code: info.code,
            reason: info.reason,
            wasOpen: info.wasOpen,
            ...(refusal ? { status: refusal.status, retryAfterSecs: refusal.retryAfterSecs } : {}),
            action,
            ...(delayMs !== undefined ? { delayMs } : {}),
        });
        if (action === "stop" || delayMs === undefined) {
            this.#stop(error ?? new errors_js_1.CloseError(info.code, info.reason));
            return;
        }
        this.#state = "connecting";
        this.#reconnectTimer = timers.setTimeout(() => {
            if (this.#state === "connecting")
                void this.#open();
        }, delayMs);
    }
    #stop(error) {
        if (this.#state === "closed")
            return;
        this.#state = "closed";
        this.#closeError = error;
        timers.clearTimeout(this.#reconnectTimer);
        timers.clearTimeout(this.#refreshTimer);
        timers.clearTimeout(this.#stableTimer);
        const ws = this.#ws;
        this.#ws = undefined;
        if (ws && ws.readyState <= OPEN) {
            try {
                ws.close(1000, "client closed");
            }
            catch {
                // Already closing.
            }
        }
        const closed = () => new errors_js_1.ClientClosedError(error);
        for (const p of this.#pending.values()) {
            timers.clearTimeout(p.timer);
            p.reject(closed());
        }
        this.#pending.clear();
        this.#queue = [];
        for (const sub of this.#subs.values())
            for (const w of sub.waiters.splice(0))
                w.reject(closed());
        for (const w of this.#connectWaiters.splice(0))
            w.reject(error ?? closed());
        this.emit("closed", error ? { error } : {});
    }
    // ---- requests ---------------------------------------------------------------------------
    /** Sends a request (or queues it while disconnected) and resolves with its reply frame. */
    #request(frame, timeoutMs, queueable = true) {
        if (this.#state === "closed")
            return Promise.reject(new errors_js_1.ClientClosedError(this.#closeError));
        const connected = this.#state === "connected";
        if (!connected && !queueable)
            return Promise.reject(new errors_js_1.ConnectionLostError(String(frame.action)));
        if (!connected && this.#queue.length >= this.#options.maxQueue) {
            return Promise.reject(new errors_js_1.QueueFullError(this.#options.maxQueue));
        }
        const ms = timeoutMs ?? this.#options.requestTimeoutMs;
        return new Promise((resolve, reject) => {
            const p = {
                id: this.#nextId++,
                action: String(frame.action),
                frame,
                sent: false,
                control: false,
                timer: undefined,
                resolve,
                reject,
            };
            p.timer = timers.setTimeout(() => {
                this.#pending.delete(p.id);
                this.#queue = this.#queue.filter((q) => q !== p);
                reject(new errors_js_1.TimeoutError(p.action, ms));
            }, ms);
            this.#pending.set(p.id, p);
            if (connected)
                this.#transmit(p);
            else
                this.#queue.push(p);
        });
    }
    /** Sends an internal request whose reply is handled by `onReply` (never queued, no timeout). */
    #control(frame, onReply) {
        const p = {
            id: this.#nextId++,
            action: String(frame.action),
            frame,
            sent: false,
            control: true,
            timer: undefined,
            resolve: onReply,
            reject: () => { },
        };
        this.#pending.set(p.id, p);
        this.#transmit(p);
    }
    #transmit(p) {
        const ws = this.#ws;
        if (!ws || ws.readyState !== OPEN) {
            // Closing under us: the close handler settles sent requests; keep this one queued.
            if (!p.control)
                this.#queue.push(p);
            else
                this.#pending.delete(p.id);
            return;
        }
        const text = JSON.stringify({ ...p.frame, id: p.id });
        p.sent = true;
        if (this.listenerCount("frame") > 0) {
            const shown = p.frame.action === "refresh" ? { ...p.frame, id: p.id, token: "<redacted>" } : JSON.parse(text);
            this.emit("frame", { direction: "out", text: JSON.stringify(shown) });
        }
        ws.send(text);
    }
    // ---- incoming frames --------------------------------------------------------------------
    #onFrame(text) {
        this.emit("frame", { direction: "in", text });
        let frame;
        try {
            frame = JSON.parse(text);
        }
        catch {
            this.emit("error", new errors_js_1.WsguardError(0, "bad_server_frame", "the server sent a frame that is not JSON"));
            return;
        }
        switch (frame.type) {
            case "message":
                this.#onMessage(frame);
                return;
            case "gap":
                this.#onGap(frame);
                return;
            case "join":
                this.emit("join", {
                    channel: String(frame.channel),
                    user: String(frame.user),
                    ...(isObject(frame.claims) ? { claims: frame.claims } : {}),
                });
                return;
            case "leave":
                this.emit("leave", { channel: String(frame.channel), user: String(frame.user) });
                return;
            case "push":
                this.emit("push", { payload: isObject(frame.payload) ? frame.payload : {} });
                return;
            case "subscribed":
                this.emit("serverSubscribed", { channel: String(frame.channel) });
                return;
            case "unsubscribed": {
                const channel = String(frame.channel);
                const sub = this.#subs.get(channel);
                this.#subs.delete(channel);
                const reason = String(frame.reason ?? "forbidden");
                for (const w of sub?.waiters.splice(0) ?? [])
                    w.reject(new errors_js_1.ReplyError(reason, "unsubscribed by the server", "subscribe"));
                this.emit("unsubscribed", { channel, reason });
                return;
            }
            default:
                break;
        }
        const p = typeof frame.id === "number" ? this.#pending.get(frame.id) : undefined;
        if (!p) {
            if (frame.type === "error") {
                const retry = typeof frame.retry_after_ms === "number" ? frame.retry_after_ms : undefined;
                this.emit("error", new errors_js_1.ReplyError(String(frame.code), String(frame.message ?? ""), "unknown", retry));
            }
            return;
        }
        this.#pending.delete(p.id);
        timers.clearTimeout(p.timer);
        if (frame.type === "error" && !p.control) {
            const retry = typeof frame.retry_after_ms === "number" ? frame.retry_after_ms : undefined;
            p.reject(new errors_js_1.ReplyError(String(frame.code), String(frame.message ?? ""), p.action, retry));
        }
        else {
            p.resolve(frame);
        }
    }
    #onMessage(frame) {
        const message = toMessage(frame);
        const sub = this.#subs.get(message.channel);
        if (sub) {
            if (sub.resyncing)
                return;
            if (message.offset !== undefined && sub.position) {
                // Never deliver an offset twice (recovery overlapping what was already seen).
                if (message.offset <= sub.position.offset)
                    return;
                sub.position.offset = message.offset;
            }
            if (sub.onMessage) {
                try {
                    sub.onMessage(message);
                }
                catch (e) {
                    // Like an event listener: a throwing callback never breaks the client's frame handling.
                    globalThis.queueMicrotask(() => {
                        throw e;
                    });
                }
            }
        }
        this.emit("message", message);
    }
    #onGap(frame) {
        const channel = String(frame.channel);
        const gap = {
            channel,
            ...(typeof frame.missed === "number" ? { missed: frame.missed } : {}),
            ...(typeof frame.reason === "string" ? { reason: frame.reason } : {}),
        };
        this.emit("gap", gap);
        const sub = this.#subs.get(channel);
        // PROTOCOL.md, History and recovery, step 3: after a slow-consumer drop or a broker outage,
        // resubscribe from the position held before the gap and drop the channel's frames until the ack.
        const recoverable = gap.missed !== undefined || gap.reason === "broker_reconnected";
        if (sub && sub.position && recoverable && this.#state === "connected" && !sub.resyncing) {
            sub.resyncing = true;
            sub.acked = false;
            this.#control({ action: "unsubscribe", channel }, () => { });
            this.#sendSubscribe(sub);
        }
    }
    /** Sends `subscribe` (with `since` when the channel has a position) and handles its reply. */
    #sendSubscribe(sub) {
        const frame = { action: "subscribe", channel: sub.channel };
        const since = sub.position;
        if (since)
            frame.since = { offset: since.offset, epoch: since.epoch };
        if (since?.proof !== undefined)
            frame.proof = since.proof;
        this.#control(frame, (reply) => {
            if (this.#subs.get(sub.channel) !== sub)
                return;
            if (reply.type === "error") {
                const error = new errors_js_1.ReplyError(String(reply.code), String(reply.message ?? ""), "subscribe");
                if (since && (error.codeName === "history_not_kept" || error.codeName === "history_offset_ahead")) {
                    // The position cannot be used (the rule stopped keeping history): subscribe without it.
                    this.emit("error", error);
                    this.emit("gap", { channel: sub.channel, reason: error.codeName });
                    sub.position = undefined;
                    this.#sendSubscribe(sub);
                    return;
                }
                this.#subs.delete(sub.channel);
                for (const w of sub.waiters.splice(0))
                    w.reject(error);
                if (sub.everAcked)
                    this.emit("unsubscribed", { channel: sub.channel, reason: error.codeName, error });
                return;
            }
            const proof = typeof reply.proof === "string" ? { proof: reply.proof } : {};
            if (reply.recovered === true && since) {
                // The recovered messages move the position; the new proof vouches for it.
                if (sub.position)
                    Object.assign(sub.position, proof);
                this.emit("recovered", { channel: sub.channel, offset: Number(reply.offset), epoch: String(reply.epoch) });
            }
            else if (typeof reply.offset === "number" && typeof reply.epoch === "string") {
                sub.position = { offset: reply.offset, epoch: reply.epoch, ...proof };
            }
            const resubscribed = sub.everAcked;
            sub.acked = true;
            sub.everAcked = true;
            sub.resyncing = false;
            this.emit("subscribed", {
                channel: sub.channel,
                ...(typeof reply.offset === "number" ? { offset: reply.offset } : {}),
                ...(typeof reply.epoch === "string" ? { epoch: reply.epoch } : {}),
                ...(typeof reply.recovered === "boolean" ? { recovered: reply.recovered } : {}),
                resubscribed,
            });
            const result = snapshot(sub);
            if (typeof reply.recovered === "boolean")
                result.recovered = reply.recovered;
            for (const w of sub.waiters.splice(0))
                w.resolve(result);
        });
    }
    // ---- token refresh ----------------------------------------------------------------------
    #scheduleRefresh(token, receivedMs) {
        timers.clearTimeout(this.#refreshTimer);
        if (!this.#options.refresh)
            return;
        const times = (0, policy_js_1.tokenTimes)(token);
        if (!times)
            return; // Not a readable JWT: the session ends at its expiry (4100) and reconnects.
        const delay = (0, policy_js_1.refreshDelay)(times, Date.now(), receivedMs);
        this.#refreshTimer = timers.setTimeout(() => void this.#refresh(times.exp), delay);
    }
    async #refresh(currentExp) {
        const ws = this.#ws;
        let token;
        try {
            token = await this.#options.getToken();
            if (typeof token !== "string" || token.length === 0)
                throw new Error("not a non-empty string");
        }
        catch (e) {
            if (this.#ws !== ws || this.#state !== "connected")
                return;
            this.emit("error", new errors_js_1.TokenError(e instanceof Error ? e.message : String(e)));
            this.#retryRefresh(currentExp);
            return;
        }
        if (this.#ws !== ws || this.#state !== "connected")
            return;
        const receivedMs = Date.now();
        this.#control({ action: "refresh", token }, (reply) => {
            if (this.#ws !== ws)
                return;
            if (reply.type === "error") {
                this.emit("error", new errors_js_1.ReplyError(String(reply.code), String(reply.message ?? ""), "refresh"));
                this.#retryRefresh(currentExp);
                return;
            }
            const exp = (0, policy_js_1.tokenTimes)(token)?.exp;
            this.emit("tokenRefreshed", exp !== undefined ? { exp } : {});
            this.#scheduleRefresh(token, receivedMs);
        });
    }
    /** After a failed refresh: try again halfway to the current expiry, if that leaves time. */
    #retryRefresh(currentExp) {
        const left = currentExp * 1000 - Date.now();
        if (left < 2000)
            return; // The session ends at expiry (4100) and reconnects with a fresh token.
        this.#refreshTimer = timers.setTimeout(() => void this.#refresh(currentExp), Math.max(1000, left / 2));
    }
}
exports.Client = Client;
function snapshot(sub) {
    return { channel: sub.channel, ...(sub.position ? { position: { ...sub.position } } : {}) };
}
function toMessage(frame) {
    const message = { channel: String(frame.channel), payload: (frame.payload ?? {}) };
    if (typeof frame.offset === "number")
        message.offset = frame.offset;
    if (isObject(frame.from))
        message.from = frame.from;
    return message;
}
function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}
function assertObject(value, what) {
    if (!isObject(value))
        throw new TypeError(`${what} must be a JSON object`);
}
function positive(value, fallback, name) {
    if (value === undefined)
        return fallback;
    if (typeof value !== "number" || !(value > 0))
        throw new TypeError(`options.${name} must be a positive number`);
    return value;
}
/**
 * Where the WebSocket implementation exposes a refused handshake's response (the `ws` package's
 * `unexpected-response` event), reads its status, `Retry-After` and the body's code name, then
 * aborts the attempt (the close event follows). Browsers and Node's global WebSocket hide the
 * response; there the refusal is a plain 1006 close.
 */
function watchRefusal(ws, found) {
    const emitter = ws;
    if (typeof emitter.on !== "function" || typeof emitter.terminate !== "function")
        return;
    emitter.on("unexpected-response", (_req, res) => {
        const retry = Number.parseInt(String(res.headers?.["retry-after"] ?? ""), 10);
        const status = Number(res.statusCode);
        let body = "";
        let done = false;
        const finish = () => {
            if (done)
                return;
            done = true;
            let codeName = "";
            try {
                const parsed = JSON.parse(body);
                if (typeof parsed.error === "string")
                    codeName = parsed.error;
            }
            catch {
                // Not the server's JSON body (a proxy's page): the status alone decides.
            }
            found({ status, retryAfterSecs: Number.isFinite(retry) && retry >= 0 ? retry : undefined, codeName });
            emitter.terminate?.();
        };
        res.setEncoding?.("utf8");
        res.on?.("data", (chunk) => {
            if (body.length < 4096)
                body += String(chunk);
        });
        res.on?.("end", finish);
        res.on?.("error", finish);
        res.on?.("close", finish);
    });
}
