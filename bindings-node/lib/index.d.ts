// Types of the public `wsguard` API (lib/index.js). The option shapes (`CloseOptions`,
// `DisconnectTarget`, `ConfigProblem`) are generated from the Rust binding into ../index.d.ts;
// the data shapes below are the Rust core's serialized structs, with their snake_case keys.
// `RevokeTarget` and `BanTarget` are stricter here than the generated interfaces: exactly one
// field.

import { EventEmitter } from 'node:events'

import type { CloseOptions, ConfigProblem, DisconnectTarget } from '../index'

export type { CloseOptions, ConfigProblem, DisconnectTarget }

/** A configuration object: the same schema and snake_case keys as the TOML file (docs/CONFIG.md). */
export type Config = Record<string, unknown>

/** What every error thrown or rejected by `Server` carries (docs/ERROR_CODES.md). */
export interface WsguardError extends Error {
  /** The stable snake_case name, e.g. `'config_invalid'`. */
  code: string
  /** The stable number, e.g. `1002`. */
  errno: number
  /** Every configuration problem with its key path (empty for other errors). */
  problems: ConfigProblem[]
}

/** The verified identity of a session (from its token, possibly enriched by `authenticate`). */
export interface Identity {
  subject: string
  roles: string[]
  scopes: string[]
  /** `exp`, seconds since the Unix epoch. */
  expires_at: number
  /** `iat`, when present. */
  issued_at: number | null
  /** `jti`, when present. */
  token_id: string | null
  /** Every claim of the token. */
  claims: Record<string, unknown>
}

/** What the `authenticate` hook sees of the handshake (never the token). */
export interface HandshakeInfo {
  client_ip: string
  origin: string | null
  user_agent: string | null
}

/** The question put to the `authorize` hook. */
export interface AuthorizeRequest {
  session_id: number
  identity: Identity
  action: 'subscribe' | 'publish'
  channel: string
}

/** The calling session of an RPC. */
export interface RpcSession {
  session_id: number
  identity: Identity
  method: string
}

/** A security or lifecycle event from the core (`handshake_rejected`, `session_opened`, ...). */
export interface ServerEvent {
  kind: string
  [field: string]: unknown
}

/** The server's counters (the core's `StatsSnapshot`). */
export interface Stats {
  sessions_active: number
  sessions_total: number
  handshakes_rejected: number
  messages_in: number
  messages_out: number
  messages_rejected: number
  publications: number
  [counter: string]: number
}

/** Whom `ban()` and `liftBan()` target: a client IP (IPv4 or IPv6 text) or a user (`sub`). */
export type BanTarget = { ip: string } | { user: string }

/** A ban in force (the core's `BanInfo`). */
export interface BanInfo {
  /** Whom: `{ kind: 'ip', value: '203.0.113.7' }` or `{ kind: 'user', value: sub }`. */
  target: { kind: 'ip' | 'user'; value: string }
  /** Why: `auth_failures` or `violations` (automatic, `[abuse]`) or `operator` (`ban()`). */
  reason: 'auth_failures' | 'violations' | 'operator'
  /** Seconds until it lifts by itself. */
  remaining_secs: number
}

/** What `revoke()` revokes: exactly one of the fields. */
export type RevokeTarget =
  | { jti: string }
  | { sub: string }
  /** A Date, or seconds since the Unix epoch (like `iat`). */
  | { issuedBefore: Date | number }

type MaybePromise<T> = T | Promise<T>

export declare class Server extends EventEmitter {
  /**
   * Loads and validates the configuration: an object, TOML or JSON text, or the path of an
   * existing `.toml` / `.json` file. Throws a `WsguardError` listing every problem.
   */
  constructor(config: Config | string)
  /** Loads keys, binds and starts serving; resolves with the bound port. */
  listen(): Promise<number>
  /**
   * Stops accepting, closes sessions with 1001, waits up to `graceSecs` (default
   * `server.shutdown_grace_secs`) and stops. Idempotent. After it the process can exit.
   */
  close(options?: CloseOptions): Promise<void>
  /** The bound port once listening, else `null`. */
  readonly port: number | null
  /** The bound `ip:port` once listening, else `null`. */
  readonly address: string | null
  /**
   * Handles `rpc` frames for a method declared in `[[rpc]]`. The value (or the Promise's value)
   * is the client's `result` (`undefined` becomes `null`); a throw or rejection answers
   * `rpc_failed` with the error's message. A slow handler is cut off (`limits.rpc_timeout_secs`).
   */
  rpc(method: string, handler: (session: RpcSession, payload: Record<string, unknown>) => unknown): this
  /**
   * Custom authentication after the token check, at the handshake and at every `refresh`:
   * `true` admits, an identity (`{ ...identity, roles: [...] }`) admits it enriched, anything else
   * or a throw refuses with 403 `rejected_by_hook`.
   */
  authenticate(handler: (identity: Identity, handshake: HandshakeInfo) => MaybePromise<boolean | Identity>): this
  /** Custom channel authorization after the core's rules: only `true` allows. */
  authorize(handler: (request: AuthorizeRequest) => MaybePromise<boolean>): this
  /** Publishes an object to every subscriber of `channel`; returns how many it was queued for. */
  publish(channel: string, payload: Record<string, unknown>): number
  /** Closes one session by id, or every session of a user, with 4001; returns how many. */
  disconnect(target: number | DisconnectTarget): number
  /** Revokes tokens; matching sessions close with 4501 and later handshakes are refused. */
  revoke(target: RevokeTarget): void
  /** A snapshot of the server's counters. */
  stats(): Stats
  /** The bans in force, operator and automatic (`[abuse]`) alike. */
  bans(): BanInfo[]
  /**
   * Bans an IP or a user for `secs` seconds: new handshakes get 403 `banned` (open sessions stay
   * open: combine with `disconnect()` or `revoke()`). Replaces a ban in force. Returns whether it
   * was applied (`false` for an IP in `abuse.exempt`). Throws `InvalidArg` for a malformed target
   * or a negative or non-finite `secs`.
   */
  ban(target: BanTarget, secs: number): boolean
  /** Lifts the ban of an IP or a user; returns whether there was one. */
  liftBan(target: BanTarget): boolean
  /**
   * Applies a new configuration (an object, TOML/JSON text or a file path, as the constructor)
   * without dropping a connection. Everything is checked first; on any problem nothing changes
   * and it rejects with a `WsguardError` listing every problem (keys that need a restart, such as
   * `server.listen`, included). Subscriptions the new channel rules forbid are dropped with an
   * `unsubscribed` frame.
   */
  reload(config: Config | string): Promise<void>

  /** Every event; also emitted under its `kind` (`server.on('session_closed', ...)`). */
  on(event: 'event', listener: (event: ServerEvent) => void): this
  on(event: string, listener: (event: ServerEvent) => void): this
  once(event: 'event', listener: (event: ServerEvent) => void): this
  once(event: string, listener: (event: ServerEvent) => void): this
}

declare const wsguard: { Server: typeof Server }
export default wsguard
