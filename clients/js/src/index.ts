/**
 * wsguard-client: the TypeScript/JavaScript client of wsguard, for browsers and Node >= 20.
 *
 * ```ts
 * import { Client } from "wsguard-client";
 * const client = new Client({ url: "wss://ws.example.com/ws", getToken: () => fetchToken() });
 * client.on("message", (m) => console.log(m.channel, m.payload));
 * await client.connect();
 * await client.subscribe("news");
 * await client.publish("news", { headline: "hello" });
 * ```
 */

export { Client } from "./client.js";
export type { ClientState, RequestOptions, SubscribeOptions, Subscription } from "./client.js";
export {
  ClientClosedError,
  CloseError,
  ConnectionLostError,
  ERROR_CODES,
  HandshakeError,
  QueueFullError,
  ReplyError,
  TimeoutError,
  TokenError,
  WsguardError,
  codeNumber,
} from "./errors.js";
export { MIN_REFRESH_DELAY_MS, backoffDelay, closeAction, handshakeAction, refreshDelay, tokenTimes } from "./policy.js";
export type { BackoffOptions, ReconnectAction, TokenTimes } from "./policy.js";
export type * from "./types.js";
