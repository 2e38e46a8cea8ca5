// Test support: a real `wsguard serve` process on loopback with a config written per test, HS256
// tokens minted here with the same secret, and small waiting helpers. Everything started is
// stopped by `stopAll()`.

import { execFileSync, spawn } from "node:child_process";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

const REPO = path.resolve(import.meta.dirname, "../../..");

/** The binary: $WSGUARD_BIN, else the repo's target/debug/wsguard, else built with cargo. */
export function wsguardBin() {
  if (process.env.WSGUARD_BIN) return process.env.WSGUARD_BIN;
  const built = path.join(REPO, "target/debug/wsguard");
  if (!existsSync(built)) execFileSync("cargo", ["build", "-q", "-p", "wsguard-cli", "--locked"], { cwd: REPO, stdio: "inherit" });
  return built;
}

const started = [];
const ISSUER = "wsguard-js-client-test";

/** A port that was free a moment ago (the config needs it before the server binds). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Resolves with `predicate()`'s first truthy value, polling every 20 ms; rejects after `ms`. */
export async function waitFor(predicate, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next `event` of `client` that satisfies `filter`. */
export function nextEvent(client, event, filter = () => true, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for the ${event} event`));
    }, ms);
    const off = client.on(event, (value) => {
      if (!filter(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** A running `wsguard serve` with its config, secret and JSON log lines. */
export class WsguardServer {
  /**
   * `extra` is TOML appended to the base config (more [[channels]], [limits], [api], ...);
   * `limits` is TOML lines for the [limits] table; `leewaySecs` for [auth].
   */
  static async start({ extra = "", limits = "", leewaySecs = 1, apiKey } = {}) {
    const server = new WsguardServer();
    server.port = await freePort();
    server.secret = randomBytes(48).toString("base64");
    server.apiKey = apiKey ? randomBytes(24).toString("hex") : undefined;
    server.apiPort = apiKey ? await freePort() : undefined;
    server.dir = mkdtempSync(path.join(tmpdir(), "wsguard-js-client-"));
    server.configPath = path.join(server.dir, "wsguard.toml");
    writeFileSync(
      server.configPath,
      `
[server]
listen = "127.0.0.1:${server.port}"
path = "/ws"

[observability]
metrics_listen = ""
log_format = "json"
log_level = "info"

[origins]
allow = []
allow_missing = true

[auth]
algorithms = ["HS256"]
hmac_secret_env = "WSGUARD_HMAC_SECRET"
issuer = "${ISSUER}"
audience = "wsguard"
leeway_secs = ${leewaySecs}

[limits]
${limits}

[[channels]]
id = "open"
pattern = "open:{name}"
subscribe = {}
publish = {}

[[rpc]]
method = "no.handler"
${server.apiKey ? `\n[api]\nlisten = "127.0.0.1:${server.apiPort}"\nkey_env = "WSGUARD_API_KEY"\n` : ""}
${extra}
`,
    );
    started.push(server);
    await server.spawn();
    return server;
  }

  /** Starts the process (again, after `kill()`: same port, same config). */
  async spawn() {
    this.logs = [];
    this.stderr = "";
    this.exited = null;
    const { WSGUARD_LOG: _ignored, ...env } = process.env;
    const child = spawn(wsguardBin(), ["serve", "--config", this.configPath], {
      env: { ...env, WSGUARD_HMAC_SECRET: this.secret, ...(this.apiKey ? { WSGUARD_API_KEY: this.apiKey } : {}) },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    let pending = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      this.stderr += chunk;
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        try {
          this.logs.push(JSON.parse(line));
        } catch {
          // A start-up message that is not a JSON log line: kept in stderr.
        }
      }
    });
    child.on("exit", (code, signal) => (this.exited = { code, signal }));
    await waitFor(
      () => {
        if (this.exited) throw new Error(`wsguard exited (${JSON.stringify(this.exited)}):\n${this.stderr}`);
        return new Promise((resolve) => {
          const socket = net.connect(this.port, "127.0.0.1", () => {
            socket.destroy();
            resolve(true);
          });
          socket.on("error", () => resolve(false));
        });
      },
      15_000,
      `wsguard serve on port ${this.port}`,
    );
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** An HS256 token for `sub`, valid `ttlSecs` from now. */
  token(sub, { ttlSecs = 300, claims = {} } = {}) {
    const iat = Math.floor(Date.now() / 1000);
    const header = b64url({ alg: "HS256", typ: "JWT" });
    const payload = b64url({ iss: ISSUER, aud: "wsguard", sub, iat, exp: iat + ttlSecs, jti: randomUUID(), ...claims });
    const signature = createHmac("sha256", this.secret).update(`${header}.${payload}`).digest("base64url");
    return `${header}.${payload}.${signature}`;
  }

  /** Log lines of `event` (optionally with `code`). */
  events(event, code) {
    return this.logs.filter((l) => l.event === event && (code === undefined || l.code === code));
  }

  /** A call to the server API (issue 20). */
  async api(endpoint, body) {
    const response = await fetch(`http://127.0.0.1:${this.apiPort}/api/v1/${endpoint}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${this.apiKey}` },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }

  /** Stops the process with SIGTERM (sessions get 1001), waiting for it to exit. */
  async kill() {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await gone;
    clearTimeout(timer);
  }

  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Stops every server started here. */
export async function stopAll() {
  while (started.length > 0) await started.pop().stop().catch(() => {});
}
