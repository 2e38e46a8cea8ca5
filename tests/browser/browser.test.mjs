// Real-browser tests: headless Debian Chromium (playwright-core) against `wsguard serve`.
//
// 1. The demo page from the allowed origin connects with its token (subprotocol), subscribes and
//    receives a publication made by another client.
// 2. The same page from a disallowed origin (http://localhost:PORT — same server, other origin) is
//    refused before the upgrade: the socket never opens, the server logs `origin_not_allowed`.
// 3. Cross-site WebSocket hijacking: the server reads the token from a cookie; a page on another
//    origin opens a socket to it. The browser attaches the victim's cookie (shown by a recording
//    endpoint), yet the server refuses with 403 `origin_not_allowed` and the page never gets an open
//    socket. A page on the allowed origin with the same cookie does connect (the control).
// 4. The wsguard-client SDK (clients/js, the modules served with the demo page) in the browser:
//    publish/subscribe, a typed reply error, in-band token refresh past the first token's expiry, and a
//    reconnect with resubscription after the server restarts.
//
// The screenshot of the demo page after a publication is written to a temporary directory whose
// path is printed (kept for inspection, never committed).

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";

import WebSocket from "ws";

import { WsguardServer, launchChromium, startPageServer, stopAll, tempDir, waitFor } from "./harness.mjs";

const STEP_MS = 10_000;

let browser;
/** Screenshots for a person to look at; kept after the run, never committed. */
const shotDir = tempDir("wsguard-browser-shots-", { keep: true });

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await stopAll();
});

/** Records what a page's socket went through (set up on the page by the page's own script). */
const EVIL_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>totally harmless page</title></head>
<body><pre id="out">running</pre>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const result = { opened: false, errored: false, closed: false, code: null, messages: [] };
window.__result = result;
const show = () => { document.getElementById("out").textContent = JSON.stringify(result); };
// A socket to a recording endpoint on the victim's host: shows which cookies the browser attaches
// to a WebSocket handshake made from this origin.
const spy = new WebSocket(params.get("spy"));
spy.onerror = () => {};
const ws = new WebSocket(params.get("target"));
ws.onopen = () => {
  result.opened = true;
  ws.send(JSON.stringify({ action: "subscribe", id: 1, channel: "demo" }));
  show();
};
ws.onmessage = (e) => { result.messages.push(e.data); show(); };
ws.onerror = () => { result.errored = true; show(); };
ws.onclose = (e) => { result.closed = true; result.code = e.code; show(); };
</script></body></html>`;

test("the demo page on the allowed origin connects, subscribes and receives a publication", async () => {
  const server = await WsguardServer.start();
  const origin = `http://127.0.0.1:${server.port}`;
  const token = await server.token("browser-alice");
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  await page.goto(`${origin}/#token=${token}`);
  assert.equal(await page.inputValue("#token"), token, "the page takes the token from the fragment");
  await page.click("#connect");
  await page.waitForFunction(
    () => document.getElementById("state").textContent === "connected (wsguard.v1)",
    null,
    { timeout: STEP_MS },
  );

  await page.click("#subscribe");
  await page.waitForFunction(
    () => document.getElementById("log").textContent.includes('{"type":"ack","id":1}'),
    null,
    { timeout: STEP_MS },
  );

  // Another client (Node, Authorization header) publishes on `demo`; the page must receive it.
  const publisherToken = await server.token("node-bob");
  const publisher = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, {
    headers: { Origin: origin, Authorization: `Bearer ${publisherToken}` },
  });
  await new Promise((resolve, reject) => {
    publisher.once("open", resolve);
    publisher.once("error", reject);
  });
  const acked = new Promise((resolve) =>
    publisher.on("message", (data) => JSON.parse(String(data)).type === "ack" && resolve()),
  );
  publisher.send(
    JSON.stringify({ action: "publish", id: 1, channel: "demo", payload: { text: "hello from node-bob" } }),
  );
  await acked;
  publisher.close();
  await page.waitForFunction(
    () =>
      document
        .getElementById("log")
        .textContent.includes('{"type":"message","channel":"demo","payload":{"text":"hello from node-bob"}}'),
    null,
    { timeout: STEP_MS },
  );

  // The page's own Publish button: ack, then its own publication (it is subscribed).
  await page.fill("#payload", '{"text":"hello from the page"}');
  await page.click("#publish");
  await page.waitForFunction(
    () => document.getElementById("log").textContent.includes('"payload":{"text":"hello from the page"}'),
    null,
    { timeout: STEP_MS },
  );

  const shot = path.join(shotDir, "demo-after-publish.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  assert.deepEqual(consoleErrors, [], "no script errors on the demo page");
  assert.equal(server.rejections().length, 0, "no handshake was refused");
  await context.close();
});

test("the same page from a disallowed origin cannot open a socket", async () => {
  const server = await WsguardServer.start();
  const token = await server.token("browser-mallory");
  const context = await browser.newContext();
  const page = await context.newPage();
  // Same server, same page, but `localhost` is another origin than the listed 127.0.0.1.
  const disallowed = `http://localhost:${server.port}`;
  await page.goto(`${disallowed}/#token=${token}`);
  await page.click("#connect");
  await page.waitForFunction(() => document.getElementById("state").textContent.startsWith("closed"), null, {
    timeout: STEP_MS,
  });
  const state = await page.textContent("#state");
  const log = await page.$$eval("#log div", (lines) => lines.map((l) => l.textContent));
  assert.match(state, /^closed 1006/, "the handshake failed (1006: no close frame, never opened)");
  assert.ok(!log.includes("open"), `onopen never fired; page log: ${JSON.stringify(log)}`);

  const rejected = await waitFor(
    () => server.rejections("origin_not_allowed").find((l) => l.origin === disallowed),
    STEP_MS,
    "the server's origin_not_allowed log line",
  );
  assert.equal(rejected.status, 403);
  const shot = path.join(shotDir, "demo-refused-origin.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  await context.close();
});

test("cross-site WebSocket hijacking: a cookie-authenticated socket from another origin is refused", async () => {
  const server = await WsguardServer.start({ tokenSources: ["cookie"] });
  const victim = `http://127.0.0.1:${server.port}`;
  const token = await server.token("victim");
  // Same site, other port (cookies ignore ports, so the browser sends the victim's cookie), and a
  // cross-site loopback address.
  const evilSameSite = await startPageServer("127.0.0.1", { "/evil.html": EVIL_PAGE });
  const evilCrossSite = await startPageServer("127.0.0.2", { "/evil.html": EVIL_PAGE });
  const context = await browser.newContext();
  await context.addCookies([
    { name: "wsguard_token", value: token, domain: "127.0.0.1", path: "/", httpOnly: true, sameSite: "Lax" },
  ]);

  // Control: the allowed origin with the cookie connects (the cookie alone authenticates).
  const good = await context.newPage();
  await good.goto(`${victim}/`);
  const control = await good.evaluate(
    (url) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => ws.send(JSON.stringify({ action: "subscribe", id: 1, channel: "demo" }));
        ws.onmessage = (e) => {
          ws.close();
          resolve(e.data);
        };
        ws.onclose = (e) => resolve(`closed ${e.code}`);
      }),
    `ws://127.0.0.1:${server.port}/ws`,
  );
  assert.equal(control, '{"type":"ack","id":1}', "the cookie authenticates a page on the allowed origin");

  for (const evil of [evilSameSite, evilCrossSite]) {
    const page = await context.newPage();
    const target = `ws://127.0.0.1:${server.port}/ws`;
    const spy = `ws://127.0.0.1:${evilSameSite.port}/spy`;
    await page.goto(
      `${evil.origin}/evil.html?target=${encodeURIComponent(target)}&spy=${encodeURIComponent(spy)}`,
    );
    await page.waitForFunction(() => window.__result.closed, null, { timeout: STEP_MS });
    const result = await page.evaluate(() => window.__result);
    assert.equal(result.opened, false, `${evil.origin}: onopen must never fire`);
    assert.equal(result.errored, true, `${evil.origin}: onerror fires`);
    assert.equal(result.code, 1006, `${evil.origin}: closed without a handshake`);
    assert.deepEqual(result.messages, []);
    const rejected = await waitFor(
      () => server.rejections("origin_not_allowed").find((l) => l.origin === evil.origin),
      STEP_MS,
      `the server's origin_not_allowed log line for ${evil.origin}`,
    );
    assert.equal(rejected.status, 403);
    await page.close();
  }

  // The attack is real: the same-site page's handshake carried the victim's cookie.
  const sameSiteSpy = await waitFor(
    () => evilSameSite.upgrades.find((u) => u.headers.origin === evilSameSite.origin),
    STEP_MS,
    "the recorded handshake from the same-site evil page",
  );
  assert.match(sameSiteSpy.headers.cookie ?? "", new RegExp(`wsguard_token=${token.replace(/\./g, "\\.")}`));
  const crossSiteSpy = evilSameSite.upgrades.find((u) => u.headers.origin === evilCrossSite.origin);
  console.log(
    `cross-site (127.0.0.2) handshake carried the cookie: ${Boolean(crossSiteSpy?.headers.cookie)} ` +
      "(SameSite=Lax withholds it; the Origin check refuses either way)",
  );
  assert.equal(server.rejections("token_missing").length, 0, "refused on Origin, before any token check");
  await context.close();
});

/** Publishes `payload` on `demo` from Node (Authorization header) and waits for the ack. */
async function publishFromNode(server, origin, payload) {
  const token = await server.token("node-publisher");
  const publisher = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, {
    headers: { Origin: origin, Authorization: `Bearer ${token}` },
  });
  await new Promise((resolve, reject) => {
    publisher.once("open", resolve);
    publisher.once("error", reject);
  });
  const acked = new Promise((resolve) =>
    publisher.on("message", (data) => JSON.parse(String(data)).type === "ack" && resolve()),
  );
  publisher.send(JSON.stringify({ action: "publish", id: 1, channel: "demo", payload }));
  await acked;
  publisher.close();
}

test("sdk: wsguard-client in Chromium: pub/sub, typed errors, in-band refresh past expiry, reconnect after a restart", async () => {
  // Leeway 0: a session outlives its first 3 s token only through the SDK's in-band refresh.
  const server = await WsguardServer.start({ leewaySecs: 0 });
  const origin = `http://127.0.0.1:${server.port}`;
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  // Chromium logs a refused reconnect attempt during the restart ("WebSocket connection to ...
  // failed: ... ERR_CONNECTION_REFUSED") as a console error: the browser's network log, not a script
  // error, so it is left out.
  page.on(
    "console",
    (m) =>
      m.type() === "error" && !/^WebSocket connection to .* failed/.test(m.text()) && consoleErrors.push(m.text()),
  );
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.exposeFunction("mintToken", (ttlSecs) => server.token("sdk-alice", ttlSecs));
  await page.goto(`${origin}/`);

  const forbidden = await page.evaluate(async () => {
    // The modules the demo page runs on, served by wsguard next to the page.
    const { Client, ReplyError } = await import("/wsguard-client/index.js");
    const state = { events: [], messages: [], refreshed: 0, connectedAt: 0 };
    window.__sdk = state;
    const client = new Client({
      url: `ws://${location.host}/ws`,
      getToken: () => window.mintToken(3),
      reconnectBaseMs: 100,
    });
    window.__client = client;
    client.on("connected", (e) => state.events.push(`connected ${e.protocol}`));
    client.on("disconnected", (e) => state.events.push(`disconnected ${e.code} ${e.action}`));
    client.on("subscribed", (e) => state.events.push(`subscribed resubscribed=${e.resubscribed}`));
    client.on("tokenRefreshed", () => (state.refreshed += 1));
    await client.connect();
    state.connectedAt = Date.now();
    await client.subscribe("demo", { onMessage: (m) => state.messages.push(m.payload.text) });
    const error = await client.publish("not-allowed", { text: "x" }).catch((e) => e);
    return { isReplyError: error instanceof ReplyError, name: error.name, code: error.code, codeName: error.codeName };
  });
  assert.deepEqual(forbidden, { isReplyError: true, name: "ReplyError", code: 4004, codeName: "forbidden" });

  await publishFromNode(server, origin, { text: "one" });
  await page.waitForFunction(() => window.__sdk.messages.includes("one"), null, { timeout: STEP_MS });

  // Past the first token's expiry (at most 3 s after the connect), with several refreshes.
  await page.waitForFunction(
    () => window.__sdk.refreshed >= 4 && Date.now() > window.__sdk.connectedAt + 4_000,
    null,
    { timeout: 20_000 },
  );
  let events = await page.evaluate(() => window.__sdk.events);
  assert.deepEqual(events, ["connected wsguard.v1", "subscribed resubscribed=false"], "no disconnect (no 4100)");

  // A restart: 1001, then the SDK reconnects with backoff and resubscribes by itself.
  await server.restart();
  await page.waitForFunction(() => window.__sdk.events.includes("subscribed resubscribed=true"), null, {
    timeout: 20_000,
  });
  await publishFromNode(server, origin, { text: "two" });
  await page.waitForFunction(() => window.__sdk.messages.includes("two"), null, { timeout: STEP_MS });
  events = await page.evaluate(() => window.__sdk.events);
  assert.deepEqual(events.slice(2, 3), ["disconnected 1001 backoff"]);
  assert.deepEqual(await page.evaluate(() => window.__sdk.messages), ["one", "two"]);

  // The token went only in the subprotocol: the server saw no query-string token and refused nothing.
  assert.equal(server.rejections().length, 0);
  await page.evaluate(() => window.__client.close());
  assert.deepEqual(consoleErrors, [], "no script errors");
  await context.close();
});
