// The SDK (built ESM bundle) against a real `wsguard serve` on loopback, with the `ws` package as
// the injected WebSocket (Node 20 has no global one), so refused handshakes show their status.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import WebSocket from "ws";

import { Client, ClientClosedError, CloseError, QueueFullError, ReplyError, TimeoutError } from "../dist/esm/index.js";
import { WsguardServer, nextEvent, stopAll, waitFor } from "./support.mjs";

after(stopAll);

const clients = [];
after(() => clients.forEach((c) => c.close()));

/** A client on `server` for `sub`; `options` override the defaults. */
function clientFor(server, sub, options = {}) {
  const client = new Client({
    url: server.url,
    getToken: () => server.token(sub),
    WebSocket,
    requestTimeoutMs: 5_000,
    ...options,
  });
  client.on("error", () => {}); // Asserted where a test expects one.
  clients.push(client);
  return client;
}

test("connect, subscribe, publish and receive; typed reply errors carry code and name", async () => {
  const server = await WsguardServer.start();
  const alice = clientFor(server, "alice");
  const bob = clientFor(server, "bob");
  const connected = nextEvent(alice, "connected");
  await Promise.all([alice.connect(), bob.connect()]);
  assert.equal((await connected).protocol, "wsguard.v1");

  const received = [];
  await alice.subscribe("open:room", { onMessage: (m) => received.push(m.payload) });
  await bob.publish("open:room", { n: 1 });
  await bob.publish("open:room", { n: 2 });
  await waitFor(() => received.length === 2, 5_000, "two messages");
  assert.deepEqual(received, [{ n: 1 }, { n: 2 }]);

  const forbidden = await alice.publish("closed", { n: 1 }).catch((e) => e);
  assert.ok(forbidden instanceof ReplyError);
  assert.equal(forbidden.code, 4004);
  assert.equal(forbidden.codeName, "forbidden");
  assert.equal(forbidden.action, "publish");

  const subRefused = await alice.subscribe("closed").catch((e) => e);
  assert.equal(subRefused.codeName, "forbidden");
  assert.equal(alice.position("closed"), undefined, "a refused subscription is not kept");

  const rpc = await alice.rpc("no.handler", { x: 1 }).catch((e) => e);
  assert.ok(rpc instanceof ReplyError);
  assert.deepEqual([rpc.code, rpc.codeName, rpc.action], [4009, "rpc_failed", "rpc"]);
  const unknown = await alice.rpc("not.declared").catch((e) => e);
  assert.deepEqual([unknown.code, unknown.codeName], [4008, "unknown_method"]);
  await alice.ping();
  await assert.rejects(alice.publish("open:room", [1, 2]), TypeError);
});

test("the token travels only as the subprotocol, never in the URL", async () => {
  const server = await WsguardServer.start();
  const seen = [];
  class Spy extends WebSocket {
    constructor(url, protocols) {
      seen.push({ url, protocols });
      super(url, protocols);
    }
  }
  const client = clientFor(server, "carol", { WebSocket: Spy });
  await client.connect();
  assert.equal(seen.length, 1);
  assert.equal(seen[0].url, server.url);
  assert.equal(seen[0].protocols[0], "wsguard.v1");
  assert.match(seen[0].protocols[1], /^bearer\.[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.throws(() => new Client({ url: `${server.url}?access_token=x`, getToken: () => "t", WebSocket }), TypeError);
});

test("requests wait in the bounded send queue while disconnected; overflow is an error", async () => {
  const server = await WsguardServer.start();
  const watcher = clientFor(server, "watcher");
  await watcher.connect();
  const got = [];
  await watcher.subscribe("open:q", { onMessage: (m) => got.push(m.payload.n) });

  let release;
  const gate = new Promise((r) => (release = r));
  const publisher = clientFor(server, "queued", { maxQueue: 3, getToken: async () => (await gate, server.token("queued")) });
  const connecting = publisher.connect();
  const sends = [1, 2, 3].map((n) => publisher.publish("open:q", { n }));
  assert.equal(publisher.queued, 3);
  const overflow = await publisher.publish("open:q", { n: 4 }).catch((e) => e);
  assert.ok(overflow instanceof QueueFullError, String(overflow));
  assert.deepEqual([overflow.code, overflow.codeName], [0, "queue_full"]);
  release();
  await connecting;
  await Promise.all(sends);
  await waitFor(() => got.length === 3, 5_000, "the queued publications");
  assert.deepEqual(got, [1, 2, 3]);

  const slow = clientFor(server, "slow", { getToken: () => new Promise(() => {}) });
  slow.connect().catch(() => {});
  const timedOut = await slow.publish("open:q", { n: 9 }, { timeoutMs: 100 }).catch((e) => e);
  assert.ok(timedOut instanceof TimeoutError);
  assert.equal(slow.queued, 0, "a timed-out request leaves the queue");
  slow.close();
  const afterClose = await slow.publish("open:q", { n: 9 }).catch((e) => e);
  assert.ok(afterClose instanceof ClientClosedError);
});

test("server restarted mid-stream: the client reconnects and resubscribes", async () => {
  const server = await WsguardServer.start();
  const sub = clientFor(server, "sub", { reconnectBaseMs: 100 });
  const pub = clientFor(server, "pub", { reconnectBaseMs: 100 });
  await Promise.all([sub.connect(), pub.connect()]);
  const got = [];
  await sub.subscribe("open:restart", { onMessage: (m) => got.push(m.payload.n) });
  await pub.publish("open:restart", { n: 1 });
  await waitFor(() => got.length === 1, 5_000, "the first message");

  const disconnected = nextEvent(sub, "disconnected");
  await server.kill();
  const d = await disconnected;
  assert.equal(d.code, 1001, "SIGTERM ends sessions with 1001 server_shutdown");
  assert.equal(d.action, "backoff");
  const resubscribed = nextEvent(sub, "subscribed", (e) => e.resubscribed, 15_000);
  await server.spawn();
  await resubscribed;
  await waitFor(() => pub.state === "connected", 15_000, "the publisher's reconnect");
  await pub.publish("open:restart", { n: 2 });
  await waitFor(() => got.length === 2, 5_000, "the message after the restart");
  assert.deepEqual(got, [1, 2]);
});

test("a short-lived token refreshed in band keeps the session across several expiries", async () => {
  const server = await WsguardServer.start({ leewaySecs: 1 });
  const tokens = [];
  const client = clientFor(server, "short", {
    getToken: () => {
      tokens.push(server.token("short", { ttlSecs: 3 }));
      return tokens.at(-1);
    },
  });
  const disconnects = [];
  client.on("disconnected", (d) => disconnects.push(d));
  const refreshed = [];
  client.on("tokenRefreshed", (r) => refreshed.push(r));
  await client.connect();
  const firstExp = JSON.parse(Buffer.from(tokens[0].split(".")[1], "base64url")).exp;
  const got = [];
  await client.subscribe("open:refresh", { onMessage: (m) => got.push(m.payload.n) });
  // Two lifetimes past the first token's expiry (+ leeway), the original session is still there.
  await waitFor(() => Date.now() / 1000 > firstExp + 7 && refreshed.length >= 3, 20_000, "several expiries");
  assert.deepEqual(disconnects, [], "no disconnect (no 4100)");
  assert.equal(tokens.length, refreshed.length + 1, "one handshake token, then one per refresh");
  await client.publish("open:refresh", { n: 1 });
  await waitFor(() => got.length === 1, 5_000, "a message on the original subscription");
  assert.equal(server.events("session_closed").length, 0);
});

test("a 429 with Retry-After is honoured: one refusal, then a connection after the delay", async () => {
  // Burst 1, one handshake per 2 s: the first client takes the only token.
  const server = await WsguardServer.start({ limits: "handshakes_per_ip_per_sec = 0.5" });
  const first = clientFor(server, "first");
  await first.connect();
  const second = clientFor(server, "second");
  const refused = nextEvent(second, "disconnected");
  const connected = second.connect();
  const d = await refused;
  assert.equal(d.status, 429);
  assert.ok(d.retryAfterSecs >= 1, `Retry-After ${d.retryAfterSecs}`);
  assert.equal(d.action, "backoff");
  assert.ok(d.delayMs >= d.retryAfterSecs * 1000, `waits ${d.delayMs} ms, at least Retry-After`);
  await connected;
  assert.equal(server.events("handshake_rejected", "handshake_rate_limited").length, 1, "no retry before Retry-After");
});

test("an authentication refusal (401) stops the client: no reconnect, the error surfaces", async () => {
  const server = await WsguardServer.start();
  const client = clientFor(server, "nobody", { getToken: () => "not.a.jwt" });
  const error = await client.connect().catch((e) => e);
  assert.equal(error.name, "HandshakeError");
  assert.deepEqual([error.status, error.code, error.codeName], [401, 3002, "token_malformed"]);
  assert.equal(client.state, "closed");
  // (The readiness probe of support.mjs shows as a `bad_request` with status 0.) The server's log
  // line can reach this process after the 401 did: wait for it. The client is closed already, so
  // no later attempt can come.
  const refused = () => server.events("handshake_rejected").filter((e) => e.status !== 0);
  await waitFor(() => refused().length > 0, 5000, "the refusal's log line");
  assert.deepEqual(refused().map((e) => e.code), ["token_malformed"], "one attempt, no retry");
});

test("revocation: the session closes with 4501, the client does not reconnect", async () => {
  const server = await WsguardServer.start({ apiKey: true });
  const client = clientFor(server, "mallory");
  await client.connect();
  const closed = nextEvent(client, "closed");
  const answer = await server.api("revoke", { sub: "mallory" });
  assert.equal(answer.status, 200);
  const { error } = await closed;
  assert.ok(error instanceof CloseError);
  assert.deepEqual([error.code, error.codeName], [4501, "token_revoked"]);
  assert.equal(client.state, "closed");
  const rejected = await client.publish("open:x", {}).catch((e) => e);
  assert.ok(rejected instanceof ClientClosedError);
});

const HISTORY_RULE = `
[[channels]]
id = "kept"
pattern = "kept:{name}"
subscribe = {}
publish = {}
history_size = 1000
history = {}
`;

test("restart mid-stream with history: a gap, then every message once (live or from history)", async () => {
  const server = await WsguardServer.start({ extra: HISTORY_RULE });
  const sub = clientFor(server, "hsub", { reconnectBaseMs: 100 });
  const pub = clientFor(server, "hpub", { reconnectBaseMs: 100 });
  await Promise.all([sub.connect(), pub.connect()]);
  const got = [];
  await sub.subscribe("kept:a", { onMessage: (m) => got.push(m.payload.n) });
  for (let n = 1; n <= 20; n++) await pub.publish("kept:a", { n });
  await waitFor(() => got.length === 20, 5_000, "20 messages");
  const before = sub.position("kept:a");
  assert.equal(before.offset, 20);
  // History lives in the node's memory: a restart starts a new epoch, announced by a gap.
  const gap = nextEvent(sub, "gap", () => true, 15_000);
  await server.kill();
  await server.spawn();
  await waitFor(() => pub.state === "connected", 15_000, "the publisher's reconnect");
  // Publications race the subscriber's resubscription: some may come before its ack.
  for (let n = 21; n <= 40; n++) await pub.publish("kept:a", { n });
  assert.equal((await gap).reason, "epoch_changed");
  const live = got.slice(20);
  const page = await sub.history("kept:a", { limit: 100 });
  const fromHistory = page.publications.map((p) => p.payload.n).filter((n) => !live.includes(n));
  const all = [...got.slice(0, 20), ...fromHistory, ...live].sort((x, y) => x - y);
  assert.deepEqual(all, Array.from({ length: 40 }, (_, i) => i + 1), "every message exactly once");
  assert.notEqual(sub.position("kept:a").epoch, before.epoch);
});

test("slow-consumer close (4000), then recovery from the position", async () => {
  const server = await WsguardServer.start({
    extra: HISTORY_RULE,
    limits: [
      "outbound_queue_messages = 4",
      "outbound_queue_bytes = 262144",
      "messages_per_sec = 100000.0",
      "message_burst = 100000",
      "bytes_per_sec = 1000000000.0",
      "user_messages_per_sec = 100000.0",
    ].join("\n"),
  });
  const sockets = [];
  class Capture extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  const sub = clientFor(server, "slow", { reconnectBaseMs: 100, WebSocket: Capture });
  const pub = clientFor(server, "fast");
  await Promise.all([sub.connect(), pub.connect()]);
  const got = [];
  await sub.subscribe("kept:slow", { onMessage: (m) => got.push(m.payload.n) });
  const dropped = nextEvent(sub, "disconnected", (d) => d.code === 4000 || d.code === 1006, 20_000);
  const recovered = nextEvent(sub, "recovered", () => true, 20_000);
  // Stop reading on the subscriber's socket so its queue on the server fills (4000 slow_consumer).
  sockets.at(-1)._socket.pause();
  // 400 x 32 KB: more than the kernel's socket buffers hold, so the server's queue fills.
  const big = "x".repeat(32_000);
  let n = 0;
  const publishing = (async () => {
    while (n < 400) await pub.publish("kept:slow", { n: ++n, big });
  })();
  await waitFor(() => server.events("session_closed").some((e) => e.close_code === 4000), 20_000, "the 4000 close");
  sockets.at(-1)._socket.resume();
  await dropped;
  await recovered;
  await publishing;
  await waitFor(() => got.length === 400, 20_000, "all 400 after recovery");
  assert.deepEqual(got, Array.from({ length: 400 }, (_, i) => i + 1));
  // The position carries the proof of the recovered subscription (the next recovery needs it).
  assert.match(sub.position("kept:slow").proof, /^\d+\.[A-Za-z0-9_-]{22}$/);
});

test("presence helpers and join/leave events", async () => {
  const server = await WsguardServer.start({
    extra: `
[[channels]]
id = "room"
pattern = "room:{name}"
subscribe = {}
publish = {}
presence = true
presence_access = {}
join_leave = true
`,
  });
  const alice = clientFor(server, "alice");
  const bob = clientFor(server, "bob");
  await Promise.all([alice.connect(), bob.connect()]);
  await alice.subscribe("room:1");
  const joined = nextEvent(alice, "join", (j) => j.user === "bob");
  await bob.subscribe("room:1");
  assert.equal((await joined).channel, "room:1");
  const stats = await alice.presenceStats("room:1");
  assert.deepEqual([stats.users, stats.clients], [2, 2]);
  const page = await alice.presence("room:1", { limit: 1 });
  assert.equal(page.members.length, 1);
  assert.equal(page.next, "alice");
  const left = nextEvent(alice, "leave", (l) => l.user === "bob");
  await bob.unsubscribe("room:1");
  await left;
});
