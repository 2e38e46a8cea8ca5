// Types of the public `wsguard` API (lib/index.js). The option shapes (`CloseOptions`,
// `DisconnectTarget`, `ConfigProblem`) are generated from the Rust binding into ../index.d.ts;
// the data shapes below are the Rust core's serialized structs, with their snake_case keys.
// `RevokeTarget` and `BanTarget` are stricter here than the generated interfaces: exactly one
// field.

import { EventEmitter } from 'node:events'

import type {
  ChannelsOptions,
  CloseOptions,
  ConfigProblem,
  DisconnectTarget,
  HistoryOptions,
  PresenceOptions,
  SessionTarget,
  SessionsOptions,
} from '../index'

export type {
  ChannelsOptions,
  CloseOptions,
  ConfigProblem,
  DisconnectTarget,
  HistoryOptions,
  PresenceOptions,
  SessionTarget,
  SessionsOptions,
}

/** A configuration object: the same schema and snake_case keys as the TOML file (docs/CONFIG.md). */
export type Config = Record<string, unknown>

/** What a session operation did on this node (the core's `Applied`). */
export interface Applied {
  node: string
  matched: number
  changed: number
  at_limit: number
  is_forwarded: boolean
}

/** A page of `sessions()`. */
export interface SessionPage {
  node: string
  sessions: Array<{ id: number; user: string; client_ip: string; connected_at_ms: number; subscriptions: string[] }>
  next_cursor: number | null
}

/** A page of `channels()`. */
export interface ChannelPage {
  node: string
  channels: Array<{ channel: string; subscribers: number }>
  next_cursor: string | null
}

/** A page of `history()`: the channel's position when read, and its kept publications. */
export interface HistoryPage {
  offset: number
  epoch: string
  publications: Array<{ offset: number; payload: Record<string, unknown> }>
}

/** A page of `presence()`: members by user, and the `after` of the next page (null on the last). */
export interface PresencePage {
  members: Array<{ user: string; sessions: number; claims?: Record<string, unknown> }>
  next: string | null
}

/** `presenceStats()`: distinct users and sessions subscribed, cluster-wide. */
export interface PresenceStats {
  users: number
  clients: number
}

/** What every error thrown or rejected by `Server` carries (docs/ERROR_CODES.md). */
export interface WsguardError extends Error {
  /** The stable snake_case name, e.g. `'config_invalid'`. */
  code: string
  /** The stable number, e.g. `1002`. */
  errno: number
  /** Every configuration problem with its key path (empty for other errors). */
  problems: ConfigProblem[]
}

/** The verified identity of a session (from its token, possibly updated by `authenticate`). */
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

/**
 * Changes an `authenticate` answer makes to the verified identity (the core's merge rule):
 * `roles` / `scopes`, when present, replace the token's; `claims` is merged key by key (a value
 * adds or replaces that claim, `null` removes it, claims not named are kept). Naming a registered
 * claim (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`) or any other key refuses the client.
 */
export interface IdentityUpdate {
  roles?: string[]
  scopes?: string[]
  claims?: Record<string, unknown>
}

/**
 * What the `authenticate` hook answers, the same in every host language: `true` admits the
 * verified identity, `false` or `{ deny: reason }` refuses (the reason goes to the logs and the
 * `handshake_rejected` event, never to the client), an `IdentityUpdate` admits it updated.
 */
export type AuthenticateAnswer = boolean | { deny: string } | IdentityUpdate

/** The question put to the `authorize` hook. */
export interface AuthorizeRequest {
  session_id: number
  identity: Identity
  action: 'subscribe' | 'publish' | 'history'
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
   * Loads and fully checks the configuration, secrets and key and certificate files included: an
   * object, TOML or JSON text, or the path of a `.toml` / `.json` file (a one-line string without
   * `=` that names no file is a missing file, `config_file`). Throws a `WsguardError` listing
   * every problem.
   */
  constructor(config: Config | string)
  /** Binds and starts serving; resolves with the bound port. */
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
   * Custom authentication after the token check, at the handshake and at every `refresh`, with
   * the handshake first and the verified identity second. The answer is an `AuthenticateAnswer`;
   * anything else (a whole identity included), a throw or a rejection refuses with 403
   * `rejected_by_hook` (a `rejected_by_hook` reply to a refresh).
   */
  authenticate(
    handler: (handshake: HandshakeInfo, identity: Identity) => MaybePromise<AuthenticateAnswer>,
  ): this
  /** Custom channel authorization after the core's rules: only `true` allows. */
  authorize(handler: (request: AuthorizeRequest) => MaybePromise<boolean>): this
  /** Publishes an object to every subscriber of `channel`; returns how many it was queued for. */
  publish(channel: string, payload: Record<string, unknown>): number
  /**
   * Closes one session by id, or every session of a user, with 4001; returns how many. Throws
   * `unknown_session` for an id that is not open, `invalid_argument` for a negative one.
   */
  disconnect(target: number | DisconnectTarget): number
  /**
   * Sends `payload` as a `{"type":"push","payload":...}` frame to one session (`{ sessionId }`,
   * on `node` when another node holds it) or every session of `{ user }` on every node. Throws
   * `invalid_argument`, `unknown_session`, `invalid_frame`, `payload_too_deep`,
   * `payload_too_large`.
   */
  send(target: SessionTarget, payload: Record<string, unknown>): Applied
  /**
   * Closes the sessions of `target` with `code` (4000-4999 except 4000, 4002, 4003, 4100, 4501)
   * and `reason` (at most 123 bytes of UTF-8; default `disconnected`). Throws `invalid_argument`.
   */
  disconnectWith(target: SessionTarget, code: number, reason?: string | null): Applied
  /**
   * Subscribes the sessions of `target` to `channel`: channel rules and hooks are bypassed, the
   * subscription survives reloads, counts towards `limits.max_subscriptions` (sessions at the cap
   * are left out: `at_limit`); the client gets a `subscribed` frame.
   */
  subscribe(target: SessionTarget, channel: string): Applied
  /** Removes `channel` from the sessions of `target`; the client gets `unsubscribed` (`server`). */
  unsubscribe(target: SessionTarget, channel: string): Applied
  /** One page of this node's sessions, in id order (`limit` 1-1000, default 100). */
  sessions(options?: SessionsOptions | null): SessionPage
  /** One page of this node's channels with subscribers, in name order. */
  channels(options?: ChannelsOptions | null): ChannelPage
  /**
   * One page of `channel`'s kept publications, oldest first (after `sinceOffset`) or newest
   * first (before it); `sinceOffset` and `sinceEpoch` together or not at all; `limit` 1-1000,
   * default 100. The rule's `history` requirement does not apply (the host is trusted). Throws
   * `history_not_kept`, `history_limit_invalid`, `history_offset_ahead`, `history_epoch_changed`,
   * `invalid_argument`, `invalid_channel`.
   */
  history(channel: string, options?: HistoryOptions | null): HistoryPage
  /**
   * One page of `channel`'s members, cluster-wide (`limit` 1-1000, default 100; `after`: the
   * previous page's `next`), read off the JavaScript thread. Rejects with `presence_not_tracked`,
   * `presence_unavailable`, `invalid_argument`, `invalid_channel`.
   */
  presence(channel: string, options?: PresenceOptions | null): Promise<PresencePage>
  /** `channel`'s presence counts, cluster-wide; rejects as `presence()`. */
  presenceStats(channel: string): Promise<PresenceStats>
  /**
   * Revokes tokens; matching sessions close with 4501 and later handshakes are refused. Throws
   * `invalid_argument` unless exactly one field is given.
   */
  revoke(target: RevokeTarget): void
  /** A snapshot of the server's counters. */
  stats(): Stats
  /** The bans in force, operator and automatic (`[abuse]`) alike. */
  bans(): BanInfo[]
  /**
   * Bans an IP or a user for `secs` seconds: new handshakes get 403 `banned` (open sessions stay
   * open: combine with `disconnect()` or `revoke()`). Replaces a ban in force. Returns whether it
   * was applied (`false` for an IP in `abuse.exempt`). Throws `invalid_argument` for a malformed
   * target or a `secs` that is negative, not finite or longer than 100 years.
   */
  ban(target: BanTarget, secs: number): boolean
  /** Lifts the ban of an IP or a user; returns whether there was one (`invalid_argument`). */
  liftBan(target: BanTarget): boolean
  /**
   * Applies a new configuration (an object, TOML/JSON text or a file path, as the constructor)
   * without dropping a connection. Everything is checked first; on any problem nothing changes
   * and it rejects with a `WsguardError` listing every problem (keys that need a restart, such as
   * `server.listen`, included). Subscriptions the new channel rules forbid are dropped with an
   * `unsubscribed` frame.
   */
  reload(config: Config | string): Promise<void>

  /**
   * Every event; also emitted under its `kind` (`server.on('session_closed', ...)`). Events come
   * one at a time: the next one once every listener has returned and the Promises they returned
   * have settled (at most `hooks.timeout_secs`). Meanwhile the core keeps up to
   * `hooks.event_queue_capacity` events and drops the rest, counted in `stats().events_dropped`.
   * A throw or a rejection is an uncaught exception, as for any EventEmitter listener.
   */
  on(event: 'event', listener: (event: ServerEvent) => void | Promise<unknown>): this
  on(event: string, listener: (event: ServerEvent) => void | Promise<unknown>): this
  once(event: 'event', listener: (event: ServerEvent) => void | Promise<unknown>): this
  once(event: string, listener: (event: ServerEvent) => void | Promise<unknown>): this
}

declare const wsguard: { Server: typeof Server }
export default wsguard
