//! The read side under tungstenite: [`BurstReader`], a read buffer that exists only while data is
//! arriving (the module docs of `transport` say why). Every read from the socket goes into one
//! scratch buffer per worker thread; tungstenite gets what fits in its own small buffer, and only
//! the rest of the burst is kept, in a buffer of its exact size, freed once tungstenite took it.
//!
//! It also follows the frame boundaries of what it hands tungstenite ([`Boundaries`]), so that
//! the connection knows when tungstenite holds no partial frame or message and can be set aside
//! (`socket.rs`), and it can wait for the socket with no tungstenite above it
//! ([`BurstReader::poll_fill`]).

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
    /// Where the bytes handed out so far stand in the client's frames.
    boundaries: Boundaries,
    /// What [`BurstReader::poll_fill`] found after the data (the end of the stream or an error),
    /// for the read that reaches it.
    held_end: Option<io::Result<()>>,
}

impl<S> BurstReader<S> {
    /// A reader over `inner`; `before` is what the reader above already has of the client's
    /// frames (the bytes the handshake read past the request head), followed for [`Boundaries`].
    pub(super) fn new(inner: S, before: &[u8]) -> Self {
        let mut boundaries = Boundaries::default();
        boundaries.follow(before);
        Self { inner, pending: BytesMut::new(), boundaries, held_end: None }
    }

    /// True when everything handed out ends a frame, outside a fragmented message: a reader above
    /// that has parsed every complete frame it was given holds nothing of the client's.
    pub(super) fn is_at_message_boundary(&self) -> bool {
        self.boundaries.is_at_message_boundary()
    }

    /// The stream under the reader (deliveries are written to it directly).
    pub(super) fn get_ref(&self) -> &S {
        &self.inner
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
    poll_scratch(stream, cx, |read| read.map(<[u8]>::len))
}

/// One read from `stream` into this worker thread's scratch buffer (a stack buffer if the scratch
/// is in use); `take` gets what was read, or the error, before the buffer is reused.
fn poll_scratch<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    cx: &mut Context<'_>,
    take: impl FnOnce(io::Result<&[u8]>) -> T,
) -> Poll<T> {
    SCRATCH.with(|scratch| {
        let mut fallback = [0u8; SESSION_READ_BUFFER];
        // Not borrowed elsewhere: a read from the stream never calls back into this code.
        let mut borrowed = scratch.try_borrow_mut();
        let buffer = match borrowed.as_deref_mut() {
            Ok(scratch) => &mut scratch[..],
            Err(_) => &mut fallback[..],
        };
        let mut read = ReadBuf::new(buffer);
        let polled = std::task::ready!(Pin::new(stream).poll_read(cx, &mut read));
        Poll::Ready(take(polled.map(|()| read.filled())))
    })
}

impl<S: AsyncRead + Unpin> BurstReader<S> {
    /// Waits until the socket has something (data, its end, or an error) without handing it out:
    /// the data is kept for the next read, the end or error for the read after the data. Ready at
    /// once when something is kept already. The wait of a connection with no tungstenite above
    /// it: the socket's waker is `cx`'s.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.pending.is_empty() || self.held_end.is_some() {
            return Poll::Ready(());
        }
        let (pending, held_end) = (&mut self.pending, &mut self.held_end);
        poll_scratch(&mut self.inner, cx, |read| match read {
            Ok(bytes) if !bytes.is_empty() => *pending = BytesMut::from(bytes),
            ended => *held_end = Some(ended.map(|_| ())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BurstReader<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = out.filled().len();
        let polled = this.poll_read_untracked(cx, out);
        this.boundaries.follow(&out.filled()[before..]);
        polled
    }
}

impl<S: AsyncRead + Unpin> BurstReader<S> {
    fn poll_read_untracked(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self;
        if this.pending.is_empty()
            && let Some(ended) = this.held_end.take()
        {
            return Poll::Ready(ended);
        }
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

/// Follows the frames of a client's byte stream (RFC 6455 §5.2: a 2-byte head, a 2- or 8-byte
/// extended length, a 4-byte mask, the payload) just far enough to tell whether the bytes so far
/// end a frame, and whether a fragmented data message is still open. It checks nothing: the
/// parser above rejects a bad frame, and a connection whose parser failed is never set aside.
#[derive(Default)]
struct Boundaries {
    /// The current frame's header bytes so far (14 at most).
    head: [u8; 14],
    head_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A data frame without FIN came, and its final continuation has not.
    in_fragmented_message: bool,
}

impl Boundaries {
    fn is_at_message_boundary(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0 && !self.in_fragmented_message
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        loop {
            if self.payload_left > 0 {
                let skipped = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len());
                self.payload_left -= skipped as u64;
                bytes = &bytes[skipped..];
            }
            if bytes.is_empty() {
                return;
            }
            // The usual case: the whole header in hand, read in place.
            if self.head_len == 0
                && let Some((first, payload, used)) = parse_header(bytes)
            {
                self.start_frame(first, payload);
                bytes = &bytes[used..];
                continue;
            }
            // A header cut by the end of a read: gathered until it is whole (14 bytes at most).
            self.head[usize::from(self.head_len)] = bytes[0];
            self.head_len += 1;
            bytes = &bytes[1..];
            if let Some((first, payload, _)) = parse_header(&self.head[..usize::from(self.head_len)]) {
                self.start_frame(first, payload);
                self.head_len = 0;
            }
        }
    }

    /// A frame whose header (first byte `first`) is complete: `payload` bytes follow.
    fn start_frame(&mut self, first: u8, payload: u64) {
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
        match opcode {
            // Text or binary: a message that continues when FIN is clear.
            1 | 2 => self.in_fragmented_message = !fin,
            // A continuation: FIN ends the message.
            0 if fin => self.in_fragmented_message = false,
            // Control frames (and continuations without FIN) leave the message as it is.
            _ => {}
        }
        self.payload_left = payload;
    }
}

/// A frame header at the start of `bytes`, when it is all there: its first byte (FIN and
/// opcode), its payload length and its own length.
fn parse_header(bytes: &[u8]) -> Option<(u8, u64, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let head = bytes.get(..2 + extended + mask)?;
    let payload = match extended {
        2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        8 => u64::from_be_bytes(head[2..10].try_into().ok()?),
        _ => u64::from(second & 0x7f),
    };
    Some((first, payload, head.len()))
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
        let mut reader = BurstReader::new(server, &[]);
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
        let mut reader = BurstReader::new(server, &[]);
        client.write_all(b"hello").await.unwrap_or_default();
        let mut buf = [0u8; SESSION_READ_BUFFER];
        let read = reader.read(&mut buf).await.unwrap_or(0);
        assert_eq!(&buf[..read], b"hello");
        assert_eq!(reader.pending.capacity(), 0);
    }

    #[tokio::test]
    async fn a_burst_is_one_read_from_the_stream_and_its_rest_is_freed_once_taken() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = BurstReader::new(server, &[]);
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
        let mut reader = BurstReader::new(server, &[]);
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

    /// A masked client frame (RFC 6455 §5.2) with the given first byte and payload length.
    fn client_frame(first: u8, len: usize) -> Vec<u8> {
        let mut frame = vec![first];
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&short.to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(std::iter::repeat_n(b'x', len));
        frame
    }

    #[test]
    fn boundaries_are_seen_at_every_frame_end_and_outside_fragmented_messages_only() {
        const TEXT: u8 = 0x81;
        const TEXT_FIRST_FRAGMENT: u8 = 0x01;
        const CONTINUATION: u8 = 0x00;
        const LAST_CONTINUATION: u8 = 0x80;
        const PING: u8 = 0x89;
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let frame = client_frame(TEXT, len);
            // Fed whole, and cut at every split point of its header and at the payload's ends.
            for cut in [0, 1, 2, 3, 4, 5, 6, 9, 13, 14, frame.len() - 1, frame.len()] {
                let cut = cut.min(frame.len());
                let mut boundaries = Boundaries::default();
                boundaries.follow(&frame[..cut]);
                assert_eq!(boundaries.is_at_message_boundary(), cut == 0 || cut == frame.len(), "{len} cut {cut}");
                boundaries.follow(&frame[cut..]);
                assert!(boundaries.is_at_message_boundary(), "{len} whole");
            }
        }
        let mut boundaries = Boundaries::default();
        boundaries.follow(&client_frame(TEXT_FIRST_FRAGMENT, 3));
        assert!(!boundaries.is_at_message_boundary(), "a message's first fragment");
        boundaries.follow(&client_frame(PING, 0));
        assert!(!boundaries.is_at_message_boundary(), "a ping inside a fragmented message");
        boundaries.follow(&client_frame(CONTINUATION, 200));
        assert!(!boundaries.is_at_message_boundary(), "a middle fragment");
        boundaries.follow(&client_frame(LAST_CONTINUATION, 2));
        assert!(boundaries.is_at_message_boundary(), "the last fragment ends the message");
        // Byte by byte, several frames.
        let mut stream = client_frame(TEXT, 130);
        stream.extend(client_frame(PING, 4));
        stream.extend(client_frame(TEXT, 0));
        let mut boundaries = Boundaries::default();
        let mut ends = 0;
        for byte in &stream {
            boundaries.follow(std::slice::from_ref(byte));
            ends += usize::from(boundaries.is_at_message_boundary());
        }
        assert_eq!(ends, 3, "one boundary per frame end");
    }

    #[tokio::test]
    async fn the_reader_follows_what_it_hands_out_and_the_handshake_leftover() {
        let frame = client_frame(0x81, 300);
        let (mut client, server) = tokio::io::duplex(4096);
        let mut reader = BurstReader::new(server, &frame[..5]);
        assert!(!reader.is_at_message_boundary(), "the leftover holds part of a frame");
        client.write_all(&frame[5..]).await.unwrap_or_default();
        let mut buf = [0u8; 100];
        let mut handed = reader.read(&mut buf).await.unwrap_or(0) + 5;
        assert!(!reader.is_at_message_boundary(), "part of the rest handed out");
        while handed < frame.len() {
            handed += reader.read(&mut buf).await.unwrap_or(0);
        }
        assert!(reader.is_at_message_boundary());
    }

    #[tokio::test]
    async fn a_fill_waits_for_the_socket_and_keeps_what_came_for_the_next_read() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut reader = BurstReader::new(server, &[]);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(reader.poll_fill(&mut cx).is_pending(), "nothing sent yet");
        client.write_all(b"ping").await.unwrap_or_default();
        assert!(reader.poll_fill(&mut cx).is_ready());
        assert!(reader.is_at_message_boundary(), "kept, not handed out");
        assert!(reader.poll_fill(&mut cx).is_ready(), "ready while something is kept");
        drop(client);
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).await.unwrap_or(0), 4);
        assert_eq!(&buf[..4], b"ping");
        assert!(reader.poll_fill(&mut cx).is_ready(), "the end of the stream");
        assert_eq!(reader.read(&mut buf).await.unwrap_or(1), 0, "the kept end reaches the read");
    }
}
