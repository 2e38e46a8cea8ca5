"use strict";
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
Object.defineProperty(exports, "__esModule", { value: true });
exports.tokenTimes = exports.refreshDelay = exports.handshakeAction = exports.closeAction = exports.backoffDelay = exports.MIN_REFRESH_DELAY_MS = exports.codeNumber = exports.WsguardError = exports.TokenError = exports.TimeoutError = exports.ReplyError = exports.QueueFullError = exports.HandshakeError = exports.ERROR_CODES = exports.ConnectionLostError = exports.CloseError = exports.ClientClosedError = exports.Client = void 0;
var client_js_1 = require("./client.js");
Object.defineProperty(exports, "Client", { enumerable: true, get: function () { return client_js_1.Client; } });
var errors_js_1 = require("./errors.js");
Object.defineProperty(exports, "ClientClosedError", { enumerable: true, get: function () { return errors_js_1.ClientClosedError; } });
Object.defineProperty(exports, "CloseError", { enumerable: true, get: function () { return errors_js_1.CloseError; } });
Object.defineProperty(exports, "ConnectionLostError", { enumerable: true, get: function () { return errors_js_1.ConnectionLostError; } });
Object.defineProperty(exports, "ERROR_CODES", { enumerable: true, get: function () { return errors_js_1.ERROR_CODES; } });
Object.defineProperty(exports, "HandshakeError", { enumerable: true, get: function () { return errors_js_1.HandshakeError; } });
Object.defineProperty(exports, "QueueFullError", { enumerable: true, get: function () { return errors_js_1.QueueFullError; } });
Object.defineProperty(exports, "ReplyError", { enumerable: true, get: function () { return errors_js_1.ReplyError; } });
Object.defineProperty(exports, "TimeoutError", { enumerable: true, get: function () { return errors_js_1.TimeoutError; } });
Object.defineProperty(exports, "TokenError", { enumerable: true, get: function () { return errors_js_1.TokenError; } });
Object.defineProperty(exports, "WsguardError", { enumerable: true, get: function () { return errors_js_1.WsguardError; } });
Object.defineProperty(exports, "codeNumber", { enumerable: true, get: function () { return errors_js_1.codeNumber; } });
var policy_js_1 = require("./policy.js");
Object.defineProperty(exports, "MIN_REFRESH_DELAY_MS", { enumerable: true, get: function () { return policy_js_1.MIN_REFRESH_DELAY_MS; } });
Object.defineProperty(exports, "backoffDelay", { enumerable: true, get: function () { return policy_js_1.backoffDelay; } });
Object.defineProperty(exports, "closeAction", { enumerable: true, get: function () { return policy_js_1.closeAction; } });
Object.defineProperty(exports, "handshakeAction", { enumerable: true, get: function () { return policy_js_1.handshakeAction; } });
Object.defineProperty(exports, "refreshDelay", { enumerable: true, get: function () { return policy_js_1.refreshDelay; } });
Object.defineProperty(exports, "tokenTimes", { enumerable: true, get: function () { return policy_js_1.tokenTimes; } });
