/** Wire shapes (docs/PROTOCOL.md §2) and the client's public option and event types. */
export {};
