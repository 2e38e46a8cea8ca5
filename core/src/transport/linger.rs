//! The lingering close: what happens to the socket after the server's close frame went out, so
//! that the client reads that frame and then an orderly end of stream, never a reset.
//!
//! A server that drops its socket while the client's bytes are still arriving (the rest of an
//! oversized frame, messages written before the client saw the close) makes the kernel answer
//! them with a TCP reset. A client still writing then sees its write fail, and a stack that
//! discards received data on a reset (Windows) or a library that stops at the failed write never
//! reads the close code: the user sees 1006 instead of, say, 1009. So, like an HTTP server's
//! lingering close and as RFC 6455 §7.1.1 asks (the server closes the TCP connection first, once
//! the client could see the close), the transport:
//!
//! 1. has sent the close frame ([`super::Connection::close`]);
//! 2. shuts down its write side: over TLS a `close_notify` alert, then the TCP FIN;
//! 3. reads and throws away what the client still sends, until the client's end of stream, at
//!    most [`LINGER_BYTES`] and never past [`LINGER_WAIT`];
//! 4. closes.
//!
//! The client's bytes are not parsed: after a 1009 or a 1002 the stream may stand inside a frame,
//! and nothing the client sends now changes the outcome. A client that answers the close frame
//! and closes its side ends the linger at once. The linger runs after the session gave back what
//! it held (quota slots, the connection permit, its place among live sessions): a lingering
//! socket counts toward no admission limit, holds no buffer (reads go into the worker thread's
//! scratch buffer) and ends within its bounds whatever the client does.

use std::future::poll_fn;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::burst::poll_discard;

/// The longest a lingering close lasts, write-side shutdown included. A client that keeps the
/// connection open past it is cut off (a reset if it is still sending). Enough for a client on a
/// slow link to read the close frame and answer it; short enough that a socket that no longer
/// belongs to any session is soon gone (docs/PROTOCOL.md §3).
const LINGER_WAIT: Duration = Duration::from_secs(2);

/// The most a lingering close reads from the client, in bytes. A client's writes in flight when
/// the close frame reaches it (a large upload, a pipeline of messages) fit many times over; a
/// client that keeps sending past it is not reading, and is cut off (docs/PROTOCOL.md §3).
const LINGER_BYTES: u64 = 256 * 1024;

/// How a lingering close ended (the `end` label of `wsguard_close_lingers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LingerEnd {
    /// The client closed its side (end of stream; over TLS its `close_notify`): an orderly close.
    Eof,
    /// The connection broke first (a reset, a TLS error): there is no orderly close left to give.
    Broken,
    /// [`LINGER_WAIT`] passed first.
    TimeLimit,
    /// The client sent more than [`LINGER_BYTES`] first.
    ByteLimit,
}

impl LingerEnd {
    /// The metric label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LingerEnd::Eof => "eof",
            LingerEnd::Broken => "broken",
            LingerEnd::TimeLimit => "time_limit",
            LingerEnd::ByteLimit => "byte_limit",
        }
    }
}

/// A connection's socket after its close frame went out, with nothing else of the connection
/// left: see the module docs.
pub(crate) struct Linger<S> {
    stream: S,
    /// Client bytes thrown away so far (the rest of a read burst counts).
    discarded: u64,
}

impl<S> Linger<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The lingering close of `stream`, `discarded` bytes of the client's already read.
    pub(super) fn new(stream: S, discarded: usize) -> Self {
        Linger { stream, discarded: u64::try_from(discarded).unwrap_or(u64::MAX) }
    }

    /// Shuts the write side down, reads until the client's end of stream or a bound, then closes
    /// the socket (dropped here). Ends within [`LINGER_WAIT`].
    pub(crate) async fn finish(mut self) -> LingerEnd {
        tokio::time::timeout(LINGER_WAIT, self.drain()).await.unwrap_or(LingerEnd::TimeLimit)
    }

    async fn drain(&mut self) -> LingerEnd {
        // Over TLS: `close_notify`, then the TCP FIN (tokio-rustls); plain: the FIN. Reading stays
        // open (a half close).
        if self.stream.shutdown().await.is_err() {
            return LingerEnd::Broken;
        }
        loop {
            if self.discarded > LINGER_BYTES {
                return LingerEnd::ByteLimit;
            }
            match poll_fn(|cx| poll_discard(&mut self.stream, cx)).await {
                Ok(0) => return LingerEnd::Eof,
                Ok(read) => self.discarded += u64::try_from(read).unwrap_or(u64::MAX),
                Err(_) => return LingerEnd::Broken,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, duplex};

    use super::*;

    #[tokio::test]
    async fn ends_at_the_clients_end_of_stream_after_shutting_down_the_write_side() {
        let (mut client, server) = duplex(1024);
        let lingering = tokio::spawn(Linger::new(server, 0).finish());
        let mut got = [0u8; 8];
        assert_eq!(client.read(&mut got).await.unwrap_or(1), 0, "the server's side is shut down first");
        client.write_all(b"still writing").await.unwrap_or_default();
        client.shutdown().await.unwrap_or_default();
        assert_eq!(lingering.await.ok(), Some(LingerEnd::Eof));
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_cut_off_at_the_byte_bound() {
        let (mut client, server) = duplex(64 * 1024);
        let lingering = tokio::spawn(Linger::new(server, 0).finish());
        let chunk = [7u8; 4096];
        let mut sent = 0u64;
        // The server stops reading once past the bound, so the write fails (the other side is
        // gone) a little after it.
        while client.write_all(&chunk).await.is_ok() {
            sent += chunk.len() as u64;
            assert!(sent < 4 * LINGER_BYTES, "the linger read far past its bound");
        }
        assert!(sent > LINGER_BYTES);
        assert_eq!(lingering.await.ok(), Some(LingerEnd::ByteLimit));
    }

    #[test]
    fn protocol_md_states_the_bounds() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        assert!(doc.contains(&format!("**{} s**", LINGER_WAIT.as_secs())), "PROTOCOL.md §3: the time bound");
        assert!(doc.contains(&format!("**{} KiB**", LINGER_BYTES / 1024)), "PROTOCOL.md §3: the byte bound");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_closes_is_cut_off_at_the_time_bound() {
        let (_client, server) = duplex(1024);
        assert_eq!(Linger::new(server, 0).finish().await, LingerEnd::TimeLimit);
    }

    #[tokio::test]
    async fn the_rest_of_a_read_burst_counts_toward_the_byte_bound() {
        let (_client, server) = duplex(1024);
        let bound = usize::try_from(LINGER_BYTES).unwrap_or(usize::MAX);
        assert_eq!(Linger::new(server, bound + 1).finish().await, LingerEnd::ByteLimit);
    }
}
