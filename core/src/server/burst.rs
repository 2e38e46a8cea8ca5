//! The read side under tungstenite: a read buffer that exists only while data is arriving.
//!
//! tungstenite keeps a read buffer for the connection's whole life and reads at most its size per
//! call. Sized for throughput (4 KiB or more) it is most of what an idle connection costs; sized
//! small, a burst of pipelined messages or one large message takes many system calls.
//! [`BurstReader`] lets tungstenite's buffer be small (`SESSION_READ_BUFFER`): a read goes straight
//! into tungstenite's buffer, and only when that comes back full (more is probably waiting) does
//! the next read go through a [`BURST_READ`]-byte buffer of our own, which is freed as soon as it
//! is drained after a short read (the burst is over) or the socket has nothing more. An idle
//! connection holds no buffer here at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// tungstenite's own read buffer per connection (`WebSocketConfig::read_buffer_size`): a typical
/// client message fits in one read.
pub(crate) const SESSION_READ_BUFFER: usize = 512;

/// The size of one read from the socket during a burst.
pub(crate) const BURST_READ: usize = 16 * 1024;

/// A stream whose reads are buffered only during bursts (see the module docs). Writes pass
/// through unchanged.
pub(crate) struct BurstReader<S> {
    inner: S,
    /// Read from `inner` and not handed out yet; no allocation between bursts.
    pending: BytesMut,
    /// The last read filled what it was given: read through `pending` until a read comes back short.
    in_burst: bool,
}

impl<S> BurstReader<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, pending: BytesMut::new(), in_burst: false }
    }

    fn end_burst(&mut self) {
        self.in_burst = false;
        self.pending = BytesMut::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BurstReader<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            if !this.in_burst {
                let before = out.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                // Filled to the brim: more is probably waiting, read it in larger reads.
                this.in_burst = out.filled().len() > before && out.remaining() == 0;
                return Poll::Ready(Ok(()));
            }
            this.pending.reserve(BURST_READ);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.pending) {
                Poll::Ready(Ok(0)) => {
                    this.end_burst();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(read)) => this.in_burst = read >= BURST_READ,
                Poll::Ready(Err(e)) => {
                    this.end_burst();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    this.end_burst();
                    return Poll::Pending;
                }
            }
        }
        let count = this.pending.len().min(out.remaining());
        out.put_slice(&this.pending[..count]);
        this.pending.advance(count);
        if this.pending.is_empty() && !this.in_burst {
            this.end_burst();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BurstReader<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads `total` bytes through a `BurstReader` in `chunk`-byte reads, the way tungstenite does.
    async fn read_through(data: Vec<u8>, chunk: usize) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let total = data.len();
        let writer = tokio::spawn(async move {
            client.write_all(&data).await.unwrap_or_default();
            client
        });
        let mut reader = BurstReader::new(server);
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        let mut saw_burst = false;
        while got.len() < total {
            let read = reader.read(&mut buf).await.unwrap_or(0);
            assert!(read > 0, "early EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..read]);
            saw_burst |= reader.pending.capacity() > 0;
        }
        let _client = writer.await;
        (got, saw_burst)
    }

    #[tokio::test]
    async fn a_large_message_read_in_small_chunks_arrives_whole_and_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (got, saw_burst) = read_through(data.clone(), SESSION_READ_BUFFER).await;
        assert_eq!(got, data);
        assert!(saw_burst, "a read that fills the caller's buffer must switch to burst reads");
    }

    #[tokio::test]
    async fn a_small_message_is_read_straight_through_and_nothing_stays_allocated() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut reader = BurstReader::new(server);
        client.write_all(b"hello").await.unwrap_or_default();
        let mut buf = [0u8; SESSION_READ_BUFFER];
        let read = reader.read(&mut buf).await.unwrap_or(0);
        assert_eq!(&buf[..read], b"hello");
        assert_eq!(reader.pending.capacity(), 0);
        assert!(!reader.in_burst);
    }

    #[tokio::test]
    async fn the_burst_buffer_is_freed_once_the_socket_has_nothing_more() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = BurstReader::new(server);
        client.write_all(&[7u8; 3000]).await.unwrap_or_default();
        let mut buf = [0u8; SESSION_READ_BUFFER];
        let mut total = 0;
        while total < 3000 {
            total += reader.read(&mut buf).await.unwrap_or(0);
        }
        // Drained; the next read finds nothing and must give the buffer back while it waits.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), reader.read(&mut buf)).await;
        assert!(waiting.is_err(), "nothing was sent, the read must wait");
        assert_eq!(reader.pending.capacity(), 0);
        assert!(!reader.in_burst);
        // And the stream still works afterwards.
        client.write_all(b"more").await.unwrap_or_default();
        let read = reader.read(&mut buf).await.unwrap_or(0);
        assert_eq!(&buf[..read], b"more");
    }

    #[tokio::test]
    async fn eof_and_writes_pass_through() {
        let (client, server) = tokio::io::duplex(1024);
        let mut reader = BurstReader::new(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        reader.write_all(b"to client").await.unwrap_or_default();
        reader.flush().await.unwrap_or_default();
        let mut got = [0u8; 9];
        client_read.read_exact(&mut got).await.unwrap_or_default();
        assert_eq!(&got, b"to client");
        client_write.shutdown().await.unwrap_or_default();
        drop(client_write);
        drop(client_read);
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).await.unwrap_or(1), 0);
    }
}
