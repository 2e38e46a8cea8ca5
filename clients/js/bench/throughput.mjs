// Client-side throughput: messages per second through wsguard-client (the SDK) against the raw `ws`
// library, on the same wsguard server, in Node. One publisher keeps `--window` acked publishes in
// flight on a channel; one subscriber of the same kind counts what it receives during `--secs`
// after `--warmup-secs`. Modes alternate (raw, sdk, raw, sdk, ...) and each figure is the median of
// `--reps`. Prints one JSON line and a readable summary; never asserts anything.
//
//   node clients/js/bench/throughput.mjs                  # starts its own server ($WSGUARD_BIN, see test/support.mjs)
//   node clients/js/bench/throughput.mjs --url ws://127.0.0.1:PORT/ws --token JWT --origin http://bench.local --channel bench
//                                                         # against a running server (bench/run.sh, ONLY=client-sdk)

import { parseArgs } from "node:util";

import WebSocket from "ws";

import { Client } from "../dist/esm/index.js";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    origin: { type: "string" },
    channel: { type: "string" },
    secs: { type: "string", default: "4" },
    "warmup-secs": { type: "string", default: "1" },
    window: { type: "string", default: "64" },
    reps: { type: "string", default: "3" },
  },
});
const SECS = Number(args.secs);
const WARMUP = Number(args["warmup-secs"]);
const WINDOW = Number(args.window);
const REPS = Number(args.reps);

let server;
let url = args.url;
let channel = args.channel ?? "open:bench";
let token = () => args.token;
if (!url) {
  const { WsguardServer } = await import("../test/support.mjs");
  server = await WsguardServer.start({
    limits: [
      "messages_per_sec = 1000000.0",
      "message_burst = 1000000",
      "bytes_per_sec = 10000000000.0",
      "user_messages_per_sec = 100000000.0",
      "outbound_queue_messages = 4096",
    ].join("\n"),
  });
  url = server.url;
  channel = "open:bench";
  token = () => server.token("bench", { ttlSecs: 600 });
}

/** `ws` with the bench's Origin (the server's allowlist), the same for both modes. */
class OriginWebSocket extends WebSocket {
  constructor(u, protocols) {
    super(u, protocols, args.origin ? { origin: args.origin } : {});
  }
}

/** Runs one timed round with raw `ws` frames; returns messages received per second. */
async function rawRound() {
  const open = (ws) =>
    new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
  const sub = new OriginWebSocket(url, ["wsguard.v1", `bearer.${token()}`]);
  const pub = new OriginWebSocket(url, ["wsguard.v1", `bearer.${token()}`]);
  await Promise.all([open(sub), open(pub)]);
  let received = 0;
  const subscribed = new Promise((resolve) => {
    sub.on("message", (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type === "message") received += 1;
      else if (frame.type === "ack") resolve();
    });
  });
  sub.send(JSON.stringify({ action: "subscribe", id: 1, channel }));
  await subscribed;
  let id = 0;
  let running = true;
  const publishOne = () => {
    id += 1;
    pub.send(JSON.stringify({ action: "publish", id, channel, payload: { t: 0, n: id } }));
  };
  pub.on("message", (data) => {
    const frame = JSON.parse(String(data));
    if (frame.type === "error") throw new Error(`publish refused: ${frame.code}`);
    if (frame.type === "ack" && running) publishOne();
  });
  for (let i = 0; i < WINDOW; i++) publishOne();
  const rate = await measure(() => received);
  running = false;
  sub.close();
  pub.close();
  return rate;
}

/** Runs one timed round through the SDK; returns messages received per second. */
async function sdkRound() {
  const make = () => new Client({ url, getToken: token, WebSocket: OriginWebSocket, maxQueue: WINDOW * 2 });
  const sub = make();
  const pub = make();
  await Promise.all([sub.connect(), pub.connect()]);
  let received = 0;
  await sub.subscribe(channel, { onMessage: () => (received += 1) });
  let n = 0;
  let running = true;
  const loop = async () => {
    while (running) {
      n += 1;
      await pub.publish(channel, { t: 0, n });
    }
  };
  const loops = Array.from({ length: WINDOW }, loop);
  const rate = await measure(() => received);
  running = false;
  await Promise.allSettled(loops);
  sub.close();
  pub.close();
  return rate;
}

/**
 * Waits the warm-up, then counts `count()` over SECS seconds. Returns messages per second and this
 * process's CPU time (user + system) per message received, in microseconds: the client side's cost
 * whatever the server's speed (publisher and subscriber both run in this process).
 */
async function measure(count) {
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const start = count();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECS * 1000));
  const messages = count() - start;
  const cpu = process.cpuUsage(cpu0);
  return { rate: (messages * 1000) / (performance.now() - t0), cpuUs: (cpu.user + cpu.system) / Math.max(1, messages) };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const raw = [];
const sdk = [];
for (let rep = 0; rep < REPS; rep++) {
  raw.push(await rawRound());
  sdk.push(await sdkRound());
}
const rawRate = median(raw.map((r) => r.rate));
const sdkRate = median(sdk.map((r) => r.rate));
const rawCpu = median(raw.map((r) => r.cpuUs));
const sdkCpu = median(sdk.map((r) => r.cpuUs));
const result = {
  scenario: "client_sdk",
  window: WINDOW,
  secs: SECS,
  reps: REPS,
  raw_ws_msgs_per_sec: Math.round(rawRate),
  sdk_msgs_per_sec: Math.round(sdkRate),
  ratio: Number((sdkRate / rawRate).toFixed(3)),
  raw_ws_client_cpu_us_per_msg: Number(rawCpu.toFixed(1)),
  sdk_client_cpu_us_per_msg: Number(sdkCpu.toFixed(1)),
};
console.log(JSON.stringify(result));
console.error(
  `client SDK: ${result.sdk_msgs_per_sec} msg/s through wsguard-client, ${result.raw_ws_msgs_per_sec} msg/s with raw ws ` +
    `(ratio ${result.ratio}); client CPU ${result.sdk_client_cpu_us_per_msg} µs/msg vs ${result.raw_ws_client_cpu_us_per_msg} ` +
    `(window ${WINDOW}, median of ${REPS})`,
);
await server?.stop();
