//! Bytes <-> WebSocket messages for one connection, behind [`Connection`]: reading client
//! messages, handing replies to tungstenite and flushing them, writing deliveries, pings, and the
//! close handshake with the close code of a [`Disconnect`], then the lingering close (`linger.rs`).
//!
//! The transport decides nothing about what a message means and keeps no session state: it never
//! imports from `session`, decodes no frame and counts nothing (a flush reports how many replies
//! it sent; the session counts them). The session decides when to read and when to write.
//!
//! # How it keeps an idle connection small and a busy one cheap
//!
//! Every idle connection holds the session task's future for its whole life, and every message
//! and delivery goes through the code below, so the techniques here were chosen by measurement
//! (the figures, and what each change bought, are in docs/PERFORMANCE.md; keep them there):
//!
//! - **tungstenite only while the connection is in use** (`socket.rs`). An idle connection is
//!   *parked*: its WebSocket state is taken apart and only the stream is kept (the task waits on
//!   the bare socket); it is built again when the client sends something or a reply needs it.
//!   Deliveries and heartbeat pings are written to a parked connection's stream directly. The
//!   burst reader follows the client's frame boundaries, so a connection parks only where
//!   tungstenite holds no partial frame or message.
//! - **A small read buffer, and a burst reader under it** (`burst.rs`). tungstenite keeps its
//!   read buffer for the connection's life and reads at most its size per call; it is set to
//!   `SESSION_READ_BUFFER` ([`websocket_config`]). `BurstReader` reads from the socket into
//!   one scratch buffer per worker thread (`SCRATCH_BYTES`), so a pipelined burst or a large
//!   message is still one read system call, hands tungstenite what fits and keeps only the rest
//!   of the burst, in a buffer of its exact size freed once taken. An idle connection holds no
//!   read buffer of ours.
//! - **Gated polling** (`gate.rs`). `tokio::select!` polls every branch on every pass of the
//!   session loop, which passes once or twice per message and per delivery. The socket is polled
//!   only when it woke the task or its last poll returned a message ([`Connection::next`]). The
//!   session's one other wait, its control (requests, signals and its alarm), costs one atomic
//!   operation per pass when nothing is pending.
//! - **Batched replies.** The session handles the messages the socket already delivered
//!   ([`Connection::next_buffered`]) before looking at anything else; their replies are handed to
//!   tungstenite ([`Connection::feed_reply`]) and go out with one flush ([`Connection::flush`]).
//! - **Deliveries written around tungstenite** (`write.rs`). A server's frames are not masked
//!   (RFC 6455 §5.1), so every subscriber's frame is the same header and the same shared bytes:
//!   the header is built on the stack and header and bytes go to one vectored write, or, for a
//!   small batch, are copied into one buffer per worker thread for a plain write (a socket's
//!   `writev` costs the kernel more than `send`). Nothing is allocated per delivery.
//! - **Timers only when a write waits.** A write that completes at its first poll (the socket
//!   had room: the usual case) arms no timer; only one that has to wait gets the write timeout,
//!   and a delivery the race against its outbox overflowing.
//! - **Small futures.** The delivery write is polled inline (four words); what is rare (a write
//!   that waits, a ping, notices after a reload, the close handshake) is boxed, so that none of it
//!   is the largest state of the session's future.
//! - **TLS without a record buffer per connection** (`tls.rs`). `wss://` runs on rustls's
//!   unbuffered API: ciphertext is read into, and encrypted into, per-thread scratch buffers, and
//!   a connection keeps only a record a read cut in two or what its socket did not take yet.
//! - **A lingering close that keeps only the socket** (`linger.rs`). After the close frame the
//!   connection is taken apart: tungstenite's buffers and the batch are freed, and only the bare
//!   stream stays, for the bounded read that lets the client see the close frame and an orderly
//!   end of stream rather than a reset.
//!
//! The buffer sizes and batch limits are constants next to the code they bound, each with its
//! reason; change them only with a new measurement (docs/PERFORMANCE.md, "The command").

mod burst;
mod connection;
mod disconnect;
mod gate;
mod linger;
mod socket;
mod tls;
mod write;

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use burst::SESSION_READ_BUFFER;
pub(crate) use connection::{Connection, Data, Inbound};
pub use disconnect::{Disconnect, Reconnect};
pub(crate) use tls::{TlsAcceptor, TlsStream};

/// How long a closing connection has to write its close frame, and to finish a cut-off delivery
/// frame before it. (What follows the close frame, the lingering close, has its own bounds in
/// `linger.rs`.)
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// tungstenite's own write buffer per connection, in bytes: replies and pings are written
/// through it (deliveries go around it).
const WRITE_BUFFER: usize = 8192;

/// tungstenite's settings for a session's WebSocket. Its defaults are not hardened: frames and
/// messages are capped at the configured limits (`limits.max_frame_bytes`,
/// `limits.max_message_bytes`), and the per-connection buffers are kept small.
pub(crate) fn websocket_config(max_frame_bytes: usize, max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(max_frame_bytes))
        .max_message_size(Some(max_message_bytes))
        .read_buffer_size(SESSION_READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 4 * max_message_bytes)
}
