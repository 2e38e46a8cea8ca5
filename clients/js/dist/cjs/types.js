"use strict";
/** Wire shapes (docs/PROTOCOL.md §2) and the client's public option and event types. */
Object.defineProperty(exports, "__esModule", { value: true });
