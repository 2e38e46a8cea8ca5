//! The read side under tungstenite: [`BurstReader`], a read buffer that exists only while data is
//! arriving (the module docs of `transport` say why). Every read from the socket goes into one
//! scratch buffer per worker thread; tungstenite gets what fits in its own small buffer, and only
//! the rest of the burst is kept, in a buffer of its exact size, freed once tungstenite took it.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// tungstenite's own read buffer per connection (`WebSocketConfig::read_buffer_size`): a typical
/// client message fits in one read.
pub(super) const SESSION_READ_BUFFER: usize = 512;

/// The largest read from the socket: one per worker thread, shared by its connections.
pub(super) const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// A stream whose reads are buffered only for the rest of a burst (see the module docs). Writes
/// pass through unchanged.
pub(super) struct BurstReader<S> {
    inner: S,
    /// Read from `inner` and not handed out yet; no allocation between bursts.
    pending: BytesMut,
}

impl<S> BurstReader<S> {
    pub(super) fn new(inner: S) -> Self {
        Self { inner, pending: BytesMut::new() }
    }

    /// The stream, and how many bytes read from it were never handed out (the rest of a burst,
    /// dropped here: only the lingering close takes the stream back).
    pub(super) fn into_inner(self) -> (S, usize) {
        (self.inner, self.pending.len())
    }
}

/// Reads what `stream` has into this worker thread's scratch buffer and throws it away; returns
/// how many bytes that was (0: end of stream). The lingering close's read: it holds no buffer of
/// its own between polls.
pub(super) fn poll_discard<S: AsyncRead + Unpin>(stream: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    SCRATCH.with(|scratch| {
        let mut fallback = [0u8; SESSION_READ_BUFFER];
        // Not borrowed elsewhere: a read from the stream never calls back into this code.
        let mut borrowed = scratch.try_borrow_mut();
        let buffer = match borrowed.as_deref_mut() {
            Ok(scratch) => &mut scratch[..],
            Err(_) => &mut fallback[..],
        };
        let mut read = ReadBuf::new(buffer);
        Pin::new(stream).poll_read(cx, &mut read).map_ok(|()| read.filled().len())
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for BurstReader<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let count = this.pending.len().min(out.remaining());
            out.put_slice(&this.pending[..count]);
            this.pending.advance(count);
            if this.pending.is_empty() {
                this.pending = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        SCRATCH.with(|scratch| {
            // Not borrowed elsewhere: a read from the stream never calls back into this code.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            };
            let mut read = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let got = read.filled();
                    let count = got.len().min(out.remaining());
                    out.put_slice(&got[..count]);
                    if got.len() > count {
                        this.pending = BytesMut::from(&got[count..]);
                    }
                    Poll::Ready(Ok(()))
                }
                other => other,
            }
        })
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

    #[tokio::test]
    async fn a_large_message_read_in_small_chunks_arrives_whole_and_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap_or_default();
            client
        });
        let mut reader = BurstReader::new(server);
        let mut got = Vec::new();
        let mut buf = [0u8; SESSION_READ_BUFFER];
        let mut saw_rest_kept = false;
        while got.len() < data.len() {
            let read = reader.read(&mut buf).await.unwrap_or(0);
            assert!(read > 0, "early EOF after {} bytes", got.len());
            got.extend_from_slice(&buf[..read]);
            saw_rest_kept |= !reader.pending.is_empty();
        }
        let _client = writer.await;
        assert_eq!(got, data);
        assert!(saw_rest_kept, "what does not fit the caller's buffer is kept for the next read");
        assert_eq!(reader.pending.capacity(), 0, "drained: nothing stays allocated");
    }

    #[tokio::test]
    async fn a_small_message_is_read_whole_and_nothing_stays_allocated() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut reader = BurstReader::new(server);
        client.write_all(b"hello").await.unwrap_or_default();
        let mut buf = [0u8; SESSION_READ_BUFFER];
        let read = reader.read(&mut buf).await.unwrap_or(0);
        assert_eq!(&buf[..read], b"hello");
        assert_eq!(reader.pending.capacity(), 0);
    }

    #[tokio::test]
    async fn a_burst_is_one_read_from_the_stream_and_its_rest_is_freed_once_taken() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = BurstReader::new(server);
        let burst: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        client.write_all(&burst).await.unwrap_or_default();
        let mut buf = [0u8; SESSION_READ_BUFFER];
        let first = reader.read(&mut buf).await.unwrap_or(0);
        assert_eq!(first, SESSION_READ_BUFFER);
        assert_eq!(reader.pending.len(), 3000 - SESSION_READ_BUFFER, "the whole burst came in one read");
        let mut got = buf[..first].to_vec();
        while got.len() < burst.len() {
            let read = reader.read(&mut buf).await.unwrap_or(0);
            got.extend_from_slice(&buf[..read]);
        }
        assert_eq!(got, burst);
        assert_eq!(reader.pending.capacity(), 0);
        // Nothing more was sent: the next read waits, holding no buffer.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), reader.read(&mut buf)).await;
        assert!(waiting.is_err(), "nothing was sent, the read must wait");
        assert_eq!(reader.pending.capacity(), 0);
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
