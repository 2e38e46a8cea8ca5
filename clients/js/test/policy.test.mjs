// The client's rules on their own (reconnect table, backoff, refresh timing), each close code of the
// table against an in-process `ws` server that closes with it, and the SDK's error-code table
// against the registry in docs/PROTOCOL.md.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, test } from "node:test";

import WebSocket, { WebSocketServer } from "ws";

import {
  Client,
  CloseError,
  ERROR_CODES,
  HandshakeError,
  backoffDelay,
  closeAction,
  handshakeAction,
  refreshDelay,
  tokenTimes,
} from "../dist/esm/index.js";
import { nextEvent, waitFor } from "./support.mjs";

/** The reconnect table as docs/PROTOCOL.md ("Client reconnect table") states it. */
const TABLE = {
  backoff: [1001, 1006, 1011, 1012, 1013, 1014, 4000, 4001, 4002, 4003, 4050, 4099],
  immediate: [4100, 4150, 4199],
  stop: [4501, 4500, 4599, 1008, 1002, 1003, 1007, 1009, 1000, 4200, 4499, 4600, 4999, 3000],
};

test("close codes follow the reconnect table; unknown codes stop", () => {
  for (const [action, codes] of Object.entries(TABLE)) {
    for (const code of codes) assert.equal(closeAction(code), action, `close ${code}`);
  }
  for (const status of [401, 403, 400, 404, 405, 426, 431]) assert.equal(handshakeAction(status), "stop", `HTTP ${status}`);
  for (const status of [408, 429, 500, 503]) assert.equal(handshakeAction(status), "backoff", `HTTP ${status}`);
});

test("backoff: full jitter under min(cap, base * 2^attempt); Retry-After is a floor", () => {
  const options = { baseMs: 500, capMs: 30_000 };
  assert.equal(backoffDelay(0, options, undefined, () => 0.999999), 499);
  assert.equal(backoffDelay(3, options, undefined, () => 0.5), 2000);
  assert.equal(backoffDelay(20, options, undefined, () => 0.999999), 29_999);
  assert.equal(backoffDelay(0, options, undefined, () => 0), 0);
  assert.equal(backoffDelay(0, options, 5, () => 0.5), 5000);
  assert.equal(backoffDelay(10, options, 1, () => 0.5), 15_000);
});

test("refresh: the earlier of 80 % of the lifetime and exp - 30 s, never sooner than 1 s", () => {
  const now = 1_000_000_000_000;
  const s = now / 1000;
  // 15 min token: 80 % (720 s) is earlier than exp - 30 s (870 s).
  assert.equal(refreshDelay({ iat: s, exp: s + 900 }, now), 720_000);
  // 1 h token: 80 % = 2880 s, exp - 30 s = 3570 s: 2880 s.
  assert.equal(refreshDelay({ iat: s, exp: s + 3600 }, now), 2_880_000);
  // 100 s token: 80 s vs 70 s: 70 s.
  assert.equal(refreshDelay({ iat: s, exp: s + 100 }, now), 70_000);
  // 3 s token: both targets are in the past or within 1 s: 1 s.
  assert.equal(refreshDelay({ iat: s, exp: s + 3 }, now), 1000);
  // No iat: the lifetime counts from when the token was received.
  assert.equal(refreshDelay({ iat: undefined, exp: s + 3600 }, now, now), 2_880_000);
  const payload = Buffer.from(JSON.stringify({ sub: "ü", iat: 10, exp: 20 })).toString("base64url");
  assert.deepEqual(tokenTimes(`e30.${payload}.sig`), { iat: 10, exp: 20 });
  assert.equal(tokenTimes("opaque-token"), undefined);
  assert.equal(tokenTimes(`e30.${Buffer.from('{"exp":"x"}').toString("base64url")}.s`), undefined);
});

test("the SDK's error codes match the registry in docs/PROTOCOL.md", () => {
  const protocol = readFileSync(new URL("../../../docs/PROTOCOL.md", import.meta.url), "utf8");
  const registry = protocol.slice(protocol.indexOf("BEGIN GENERATED registry"), protocol.indexOf("END GENERATED registry"));
  const rows = [...registry.matchAll(/^\| (\d+) \| `([a-z_]+)` \| .* \| (.*) \|$/gm)].map(([, n, name, where]) => ({
    number: Number(n),
    name,
    where,
  }));
  assert.ok(rows.length > 50, "the registry table was found");
  for (const { number, name, where } of rows) {
    if (name in ERROR_CODES) assert.equal(ERROR_CODES[name], number, name);
    // Every code a client can meet (a reply, a handshake refusal) is known to the SDK.
    // (Not "server API HTTP ...": that is the operators' HTTP API, not a WebSocket client's.)
    if (/\breply\b|(^|; )HTTP \d/.test(where)) assert.ok(name in ERROR_CODES, `${name} (${number}) missing from ERROR_CODES`);
  }
  // Codes the SDK knows ahead of the registry (issue 21 history, presence) must not collide.
  const numbers = Object.values(ERROR_CODES);
  assert.equal(new Set(numbers).size, numbers.length, "numbers are unique");
});

// ---- against an in-process server that closes with a chosen code ---------------------------

const servers = [];
after(() => servers.forEach((s) => s.close()));

/** A `ws` server that selects wsguard.v1, counts connections and lets the test act on each. */
async function fakeServer({ verifyClient } = {}) {
  const wss = new WebSocketServer({
    port: 0,
    host: "127.0.0.1",
    handleProtocols: (protocols) => (protocols.has("wsguard.v1") ? "wsguard.v1" : false),
    ...(verifyClient ? { verifyClient } : {}),
  });
  await new Promise((r) => wss.once("listening", r));
  servers.push(wss);
  return { wss, url: `ws://127.0.0.1:${wss.address().port}/ws` };
}

function fakeClient(url, options = {}) {
  const client = new Client({ url, getToken: () => "a.b.c", WebSocket, reconnectBaseMs: 20, ...options });
  client.on("error", () => {});
  return client;
}

test("each close code of the table: reconnect, reconnect at once, or stop with a typed error", async () => {
  for (const [expected, codes] of Object.entries(TABLE)) {
    for (const code of codes) {
      if (code === 1006) continue; // Never sent in a close frame: the network-drop test below.
      const { wss, url } = await fakeServer();
      let connections = 0;
      wss.on("connection", (socket) => {
        connections += 1;
        if (connections === 1) socket.close(code, "test");
      });
      const client = fakeClient(url);
      const disconnected = nextEvent(client, "disconnected");
      await client.connect();
      const d = await disconnected;
      assert.equal(d.code, code);
      assert.equal(d.action, expected, `close ${code}`);
      if (expected === "stop") {
        assert.equal(client.state, "closed", `close ${code}: stopped`);
        assert.ok(client.closeError instanceof CloseError);
        assert.equal(client.closeError.code, code);
      } else {
        await nextEvent(client, "connected");
        assert.equal(connections, 2, `close ${code}: reconnected`);
      }
      client.close();
      wss.close();
    }
  }
});

test("a network drop (1006) reconnects with backoff and resubscribes", async () => {
  const { wss, url } = await fakeServer();
  const subscribes = [];
  wss.on("connection", (socket) => {
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data));
      if (frame.action === "subscribe") {
        subscribes.push(frame);
        socket.send(JSON.stringify({ type: "ack", id: frame.id, offset: 7, epoch: "e1" }));
        if (subscribes.length === 1) setTimeout(() => socket.terminate(), 10);
      }
    });
  });
  const client = fakeClient(url);
  await client.connect();
  const dropped = nextEvent(client, "disconnected");
  await client.subscribe("c");
  assert.equal((await dropped).code, 1006);
  await nextEvent(client, "subscribed", (e) => e.resubscribed);
  assert.deepEqual(subscribes[1].since, { offset: 7, epoch: "e1" }, "resubscribed from the ack's position");
  client.close();
});

test("HTTP 401 at the handshake stops with a HandshakeError; 503 + Retry-After backs off", async () => {
  const refusing = await fakeServer({ verifyClient: (_info, cb) => cb(false, 401, "Unauthorized") });
  const client = fakeClient(refusing.url);
  const error = await client.connect().catch((e) => e);
  assert.ok(error instanceof HandshakeError);
  assert.equal(error.status, 401);
  assert.equal(client.state, "closed");

  let attempts = 0;
  const busy = await fakeServer({
    verifyClient: (_info, cb) => {
      attempts += 1;
      if (attempts === 1) cb(false, 503, "Service Unavailable", { "Retry-After": "1" });
      else cb(true);
    },
  });
  const retrying = fakeClient(busy.url);
  const d = nextEvent(retrying, "disconnected");
  await retrying.connect();
  const event = await d;
  assert.deepEqual([event.status, event.retryAfterSecs, event.action], [503, 1, "backoff"]);
  assert.ok(event.delayMs >= 1000);
  retrying.close();
});

test("a gap with `missed` resubscribes from the position held before it and drops frames until the ack", async () => {
  const { wss, url } = await fakeServer();
  const frames = [];
  wss.on("connection", (socket) => {
    const send = (f) => socket.send(JSON.stringify(f));
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data));
      frames.push(frame);
      if (frame.action === "subscribe" && !frame.since) {
        send({ type: "ack", id: frame.id, offset: 10, epoch: "e" });
        send({ type: "message", channel: "c", payload: { n: 11 }, offset: 11 });
        send({ type: "gap", channel: "c", missed: 2 });
        send({ type: "message", channel: "c", payload: { n: 14 }, offset: 14 });
      } else if (frame.action === "unsubscribe") {
        send({ type: "message", channel: "c", payload: { n: 15 }, offset: 15 }); // dropped: resyncing
        send({ type: "ack", id: frame.id });
      } else if (frame.action === "subscribe") {
        send({ type: "ack", id: frame.id, offset: 15, epoch: "e", recovered: true });
        for (const n of [12, 13, 14, 15, 16]) send({ type: "message", channel: "c", payload: { n }, offset: n });
        send({ type: "message", channel: "c", payload: { n: 16 }, offset: 16 }); // a duplicate: dropped
        send({ type: "message", channel: "c", payload: { n: 17 }, offset: 17 });
      }
    });
  });
  const client = fakeClient(url);
  await client.connect();
  const got = [];
  const recovered = nextEvent(client, "recovered");
  await client.subscribe("c", { onMessage: (m) => got.push(m.payload.n) });
  await recovered;
  await waitFor(() => got.includes(17), 5_000, "the last message");
  assert.deepEqual(got, [11, 12, 13, 14, 15, 16, 17]);
  const resubscribe = frames.filter((f) => f.action === "subscribe")[1];
  assert.deepEqual(resubscribe.since, { offset: 11, epoch: "e" });
  assert.deepEqual(client.position("c"), { offset: 17, epoch: "e" });
  client.close();
});

test("the CommonJS build exports the same API as the ES modules", async () => {
  const { createRequire } = await import("node:module");
  const cjs = createRequire(import.meta.url)("../dist/cjs/index.js");
  const esm = await import("../dist/esm/index.js");
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.Client, "function");
  assert.deepEqual(cjs.ERROR_CODES, esm.ERROR_CODES);
});

test("host pushes and server-side subscriptions surface as events; they are not resubscribed", async () => {
  const { wss, url } = await fakeServer();
  let connections = 0;
  const subscribes = [];
  wss.on("connection", (socket) => {
    connections += 1;
    socket.on("message", (data) => subscribes.push(JSON.parse(String(data))));
    if (connections === 1) {
      socket.send(JSON.stringify({ type: "subscribed", channel: "alerts", by: "server" }));
      socket.send(JSON.stringify({ type: "message", channel: "alerts", payload: { level: 1 } }));
      socket.send(JSON.stringify({ type: "push", payload: { hello: "you" } }));
      socket.send(JSON.stringify({ type: "unsubscribed", channel: "alerts", reason: "server" }));
    }
  });
  const client = fakeClient(url);
  const serverSubscribed = nextEvent(client, "serverSubscribed");
  const message = nextEvent(client, "message");
  const push = nextEvent(client, "push");
  const unsubscribed = nextEvent(client, "unsubscribed");
  await client.connect();
  assert.deepEqual(await serverSubscribed, { channel: "alerts" });
  assert.deepEqual(await message, { channel: "alerts", payload: { level: 1 } });
  assert.deepEqual(await push, { payload: { hello: "you" } });
  assert.deepEqual(await unsubscribed, { channel: "alerts", reason: "server" });
  assert.equal(client.position("alerts"), undefined);
  assert.deepEqual(subscribes, [], "the client sent nothing for the host's subscription");
  client.close();
});
