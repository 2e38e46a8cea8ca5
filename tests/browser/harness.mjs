// Test harness for the real-browser suite: starts `wsguard serve` processes on loopback with
// generated configs, collects their JSON log lines, mints tokens with `wsguard token`, serves static
// "other origin" pages, and launches Debian's Chromium through playwright-core. Everything started
// here is stopped by `stopAll()`; nothing else is touched.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

const execFileAsync = promisify(execFile);

/** The `wsguard` binary under test (run.sh builds it and sets WSGUARD_BIN). */
export const WSGUARD_BIN = process.env.WSGUARD_BIN ?? path.resolve(import.meta.dirname, "../../target/debug/wsguard");
/** Debian's Chromium; no browser is downloaded. */
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
/** A per-run random HMAC secret shared by the servers and the token minting. */
const HMAC_SECRET = Buffer.from(crypto.getRandomValues(new Uint8Array(48))).toString("base64");

const started = [];
const tempDirs = [];

/** A fresh temporary directory, removed by `stopAll()` unless `keep` is set. */
export function tempDir(prefix, { keep = false } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  if (!keep) tempDirs.push(dir);
  return dir;
}

/** A port that was free a moment ago on `host` (the config needs it before the server binds). */
export async function freePort(host = "127.0.0.1") {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, host, () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Resolves when `predicate()` is truthy, polling every 25 ms; rejects after `timeoutMs`. */
export async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * The TOML config of one test server: loopback, plain ws://, the demo page on, no admin listener,
 * JSON logs, exactly one allowed origin and an open `demo` channel.
 */
export function serverConfig({ port, allowOrigin, tokenSources, leewaySecs }) {
  return `
[server]
listen = "127.0.0.1:${port}"
path = "/ws"
demo_page = true

[observability]
metrics_listen = ""
log_format = "json"
log_level = "info"

[origins]
allow = ["${allowOrigin}"]

[auth]
algorithms = ["HS256"]
hmac_secret_env = "WSGUARD_HMAC_SECRET"
issuer = "wsguard-browser-test"
audience = "wsguard"
${tokenSources ? `token_sources = ${JSON.stringify(tokenSources)}` : ""}
${leewaySecs !== undefined ? `leeway_secs = ${leewaySecs}` : ""}

[[channels]]
id = "demo"
pattern = "demo"
subscribe = {}
publish = {}
`;
}

/** A running `wsguard serve`, with its parsed JSON log lines. */
export class WsguardServer {
  static async start({ allowOrigin, tokenSources, portHint, leewaySecs } = {}) {
    const port = portHint ?? (await freePort());
    const dir = tempDir("wsguard-browser-");
    const configPath = path.join(dir, "wsguard.toml");
    writeFileSync(
      configPath,
      serverConfig({ port, allowOrigin: allowOrigin ?? `http://127.0.0.1:${port}`, tokenSources, leewaySecs }),
    );
    const server = new WsguardServer(port, configPath);
    await server.#spawn();
    return server;
  }

  constructor(port, configPath) {
    this.port = port;
    this.configPath = configPath;
    this.logs = [];
    this.rawStderr = "";
    this.exited = null;
  }

  async #spawn() {
    // WSGUARD_LOG would override the config's log level; the tests read info-level events.
    const { WSGUARD_LOG: _ignored, ...env } = process.env;
    const child = spawn(WSGUARD_BIN, ["serve", "--config", this.configPath], {
      env: { ...env, WSGUARD_HMAC_SECRET: HMAC_SECRET },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    started.push(this);
    let pending = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      this.rawStderr += chunk;
      pending += chunk;
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        try {
          this.logs.push(JSON.parse(line));
        } catch {
          // Not a JSON log line (a start-up failure message): kept in rawStderr.
        }
      }
    });
    child.on("exit", (code, signal) => {
      this.exited = { code, signal };
    });
    await waitFor(
      async () => {
        if (this.exited) throw new Error(`wsguard exited early (${JSON.stringify(this.exited)}):\n${this.rawStderr}`);
        const response = await fetch(`http://127.0.0.1:${this.port}/`).catch(() => null);
        return response?.ok;
      },
      15_000,
      `wsguard serve on port ${this.port}`,
    );
  }

  /** `handshake_rejected` events, optionally only those with `code`. */
  rejections(code) {
    return this.logs.filter((l) => l.event === "handshake_rejected" && (code === undefined || l.code === code));
  }

  /** Mints a token with the CLI (the same HMAC secret the server reads). */
  async token(sub, ttlSecs = 300) {
    const { stdout } = await execFileAsync(
      WSGUARD_BIN,
      ["token", "--config", this.configPath, "--sub", sub, "--ttl-secs", String(ttlSecs)],
      { env: { ...process.env, WSGUARD_HMAC_SECRET: HMAC_SECRET } },
    );
    return stdout.trim();
  }

  /** Stops the process (sessions get 1001) and starts it again on the same port and config. */
  async restart() {
    await this.stop();
    this.exited = null;
    await this.#spawn();
  }

  async stop() {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await gone;
    clearTimeout(timer);
  }
}

/**
 * A tiny static HTTP server for pages on another origin. `pages` maps a path to HTML. Upgrade
 * requests are recorded (headers only) and refused, so a page can show which cookies the browser
 * attaches to a cross-origin WebSocket handshake.
 */
export async function startPageServer(host, pages) {
  const upgrades = [];
  const server = createServer((req, res) => {
    const page = pages[new URL(req.url, "http://x").pathname];
    if (page === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(page);
  });
  server.on("upgrade", (req, socket) => {
    upgrades.push({ url: req.url, headers: req.headers });
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  const handle = {
    origin: `http://${host}:${server.address().port}`,
    port: server.address().port,
    upgrades,
    stop: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
  started.push(handle);
  return handle;
}

/**
 * Launches headless Debian Chromium with no background traffic. playwright-core gives the browser
 * a fresh temporary `--user-data-dir` and removes it on close; each test opens its own context, so
 * cookies never leak from one test to another.
 */
export async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
  started.push({ stop: () => browser.close() });
  return browser;
}

/** Stops everything this harness started, newest first, and removes its temporary directories. */
export async function stopAll() {
  while (started.length > 0) {
    const item = started.pop();
    await item.stop().catch(() => {});
  }
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}
