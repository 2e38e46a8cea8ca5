//! Deliveries written around tungstenite: [`WriteFrames`] (the inline first attempt) and
//! [`finish_delivery`] (the rest, when the client's socket is full). See the module docs of
//! `transport` for why.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::socket::Socket;
use super::{CLOSE_WAIT, Disconnect};

/// Writes `frames` in order with one flush, then leaves the buffer empty (also when the write
/// fails). Polled inline by the session loop: it is four words, and no timer.
///
/// Over a stream that takes vectored writes (TCP and TLS do), the frames go around tungstenite
/// (module docs of `transport`): once tungstenite's own buffer is flushed (a queued pong, say,
/// keeps its place), each frame is a header built on the stack and the shared bytes of the
/// message, all handed to one vectored write or, up to [`COPY_LIMIT`] bytes, copied into one
/// buffer for a plain write. Other streams get the frames through tungstenite, one by one. The
/// connection is only written to while it is open (the session leaves its loop on the client's
/// Close and sends its own Close after that, through tungstenite), which is the state check
/// tungstenite would make. A parked connection (`socket.rs`) stays parked: it has nothing in
/// tungstenite to flush first.
pub(super) struct WriteFrames<'a, S> {
    ws: &'a mut Socket<S>,
    frames: &'a mut Vec<Utf8Bytes>,
    /// The first frame not written (or, through tungstenite, not handed to it) yet.
    next: usize,
    /// How much of frame `next`, header included, is written already.
    offset: usize,
}

impl<'a, S> WriteFrames<'a, S> {
    pub(super) fn new(ws: &'a mut Socket<S>, frames: &'a mut Vec<Utf8Bytes>) -> Self {
        WriteFrames { ws, frames, next: 0, offset: 0 }
    }
}

/// Frames per vectored write: two slices each, well under any `IOV_MAX`.
const FRAMES_PER_WRITE: usize = 32;
/// Up to this many bytes, the frames are copied into the worker thread's buffer ([`COPY`]) and
/// written with a plain write instead of a vectored one.
const COPY_LIMIT: usize = 4096;

thread_local! {
    /// The buffer of those copies, one per worker thread.
    static COPY: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(COPY_LIMIT));
}

/// The header of a final, unmasked text frame of `len` bytes (RFC 6455 5.2) into `out`; returns
/// its length.
fn text_header(len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x81; // FIN, opcode 1 (text)
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= usize::from(u16::MAX) {
        4
    } else {
        10
    }
}

impl<S> WriteFrames<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Through tungstenite, frame by frame (`SinkExt::feed`): tungstenite takes a frame once the
    /// previous ones fit its write buffer.
    fn poll_through_tungstenite(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let ws = self.ws.ws();
        loop {
            if self.next == self.frames.len() {
                return ws.poll_flush_unpin(cx);
            }
            ready!(ws.poll_ready_unpin(cx))?;
            let frame = std::mem::take(&mut self.frames[self.next]);
            self.next += 1;
            ws.start_send_unpin(Message::Text(frame))?;
        }
    }

    /// Around tungstenite, with vectored writes (see the type's comment).
    fn poll_vectored(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.next == 0 && self.offset == 0 {
            // Nothing of ours written yet: whatever tungstenite holds goes first.
            ready!(self.ws.poll_flush_ws(cx))?;
        }
        let WriteFrames { ws, frames, next, offset } = self;
        while *next < frames.len() {
            let batch = &frames[*next..frames.len().min(*next + FRAMES_PER_WRITE)];
            let mut headers = [[0u8; 10]; FRAMES_PER_WRITE];
            let mut header_lens = [0usize; FRAMES_PER_WRITE];
            for ((frame, header), header_len) in batch.iter().zip(&mut headers).zip(&mut header_lens) {
                *header_len = text_header(frame.len(), header);
            }
            let mut slices = [std::io::IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let mut used = 0;
            for (i, frame) in batch.iter().enumerate() {
                let (header, body) = (&headers[i][..header_lens[i]], frame.as_bytes());
                let skip = if i == 0 { *offset } else { 0 };
                if skip < header.len() {
                    slices[used] = std::io::IoSlice::new(&header[skip..]);
                    slices[used + 1] = std::io::IoSlice::new(body);
                    used += 2;
                } else {
                    slices[used] = std::io::IoSlice::new(&body[skip - header.len()..]);
                    used += 1;
                }
            }
            let slices = &slices[..used];
            let total: usize = slices.iter().map(|slice| slice.len()).sum();
            // Up to COPY_LIMIT bytes, a plain write of a copy: for a socket, a vectored write
            // (`writev`) costs the kernel more than `send` does, which matters when each write
            // carries one delivery. The copy buffer is the worker thread's, never zeroed.
            let copied = (total <= COPY_LIMIT).then(|| {
                COPY.with(|copy| {
                    let mut copy = copy.try_borrow_mut().ok()?;
                    copy.clear();
                    for slice in slices {
                        copy.extend_from_slice(slice);
                    }
                    Some(Pin::new(&mut *ws.reader()).poll_write(cx, &copy))
                })
            });
            let mut written = match copied.flatten() {
                Some(polled) => ready!(polled)?,
                None => ready!(Pin::new(ws.reader()).poll_write_vectored(cx, slices))?,
            };
            if written == 0 {
                return Poll::Ready(Err(WsError::Io(std::io::ErrorKind::WriteZero.into())));
            }
            while written > 0 && *next < frames.len() {
                let len = frames[*next].len();
                let rest = header_len(len) + len - *offset;
                if written >= rest {
                    written -= rest;
                    *next += 1;
                    *offset = 0;
                } else {
                    *offset += written;
                    written = 0;
                }
            }
        }
        Poll::Ready(ready!(Pin::new(ws.reader()).poll_flush(cx)).map_err(WsError::Io))
    }
}

impl<S> Future for WriteFrames<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<(), WsError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = ready!(if this.ws.reader().get_ref().is_write_vectored() {
            this.poll_vectored(cx)
        } else {
            this.poll_through_tungstenite(cx)
        });
        this.frames.clear();
        Poll::Ready(result)
    }
}

/// The rest of a delivery write that could not finish at once (the client's socket is full):
/// bounded by `limit`, and raced against the outbox overflowing (`overflowed`, the outbox's
/// `poll_overflowed`), so that a stalled client is cut off as a slow consumer as soon as its queue
/// is full rather than after the write timeout.
///
/// A write cut off in the middle of a frame (written around tungstenite, see [`WriteFrames`])
/// first gets that frame finished, within [`CLOSE_WAIT`] (the time the close frame has after it
/// anyway), so that the close frame that follows is read as one. When even that does not go
/// out, `mid_frame` is set: the session then ends without a close frame, which could only reach
/// the client inside the unfinished frame's bytes.
pub(super) async fn finish_delivery<S>(
    mut write: WriteFrames<'_, S>,
    mut overflowed: impl FnMut(&mut Context<'_>) -> Poll<()>,
    limit: Duration,
    mid_frame: &mut bool,
) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        // A timed-out write sends no close frame in any case (`Disconnect::close_frame`).
        written = tokio::time::timeout(limit, &mut write) => return match written {
            Ok(result) => result.map_err(|e| Disconnect::from_ws_error(&e)),
            Err(_) => Err(Disconnect::WriteTimeout),
        },
        () = poll_fn(&mut overflowed) => {}
    }
    if write.offset > 0 {
        write.frames.truncate(write.next + 1);
        let finished = tokio::time::timeout(CLOSE_WAIT, &mut write).await;
        *mid_frame = !matches!(finished, Ok(Ok(())));
    }
    Err(Disconnect::SlowConsumer)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

    use super::{Socket, WriteFrames};

    /// A stream that takes at most `chunk` bytes per write, says `Pending` (after waking itself)
    /// every other write, and may refuse vectored writes: every way a write can stop half-way.
    struct Stingy {
        inner: DuplexStream,
        chunk: usize,
        vectored: bool,
        stall: bool,
    }

    impl AsyncRead for Stingy {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Stingy {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut taken = Vec::new();
            for buf in bufs {
                taken.extend_from_slice(&buf[..buf.len().min(self.chunk - taken.len())]);
                if taken.len() == self.chunk {
                    break;
                }
            }
            Pin::new(&mut self.inner).poll_write(cx, &taken)
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Every length class of the frame header (7-bit, 16-bit, 64-bit), at both edges, and
    /// multi-byte text cut anywhere.
    fn texts() -> Vec<String> {
        let mut texts: Vec<String> =
            [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_001].iter().map(|&n| "x".repeat(n)).collect();
        texts.push("é€𝄞".repeat(50));
        texts.push(r#"{"type":"message","channel":"room:1","payload":{"n":1}}"#.to_owned());
        texts
    }

    /// What the client reads after the server queued `queued` in tungstenite (none: the
    /// connection stays parked) and wrote `texts()` with [`WriteFrames`].
    async fn written_and_read(chunk: usize, vectored: bool, queued: Option<&str>) -> Vec<Message> {
        let (server_io, client_io) = tokio::io::duplex(1024);
        let stingy = Stingy { inner: server_io, chunk, vectored, stall: false };
        let mut server = Socket::new(stingy, Vec::new(), std::sync::Arc::new(WebSocketConfig::default()));
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let texts = texts();
        let expected = texts.len() + usize::from(queued.is_some());
        let write = async {
            if let Some(queued) = queued {
                // Handed to tungstenite and not flushed: it must still go out first.
                server.ws().feed(Message::text(queued)).await.expect("feed");
            }
            let mut frames: Vec<Utf8Bytes> = texts.iter().map(|t| Utf8Bytes::from(t.clone())).collect();
            WriteFrames::new(&mut server, &mut frames).await.expect("write");
            assert!(frames.is_empty(), "the buffer is left empty");
            if queued.is_none() && vectored {
                assert!(server.is_parked(), "frames written around tungstenite do not build it");
            }
        };
        let read = async {
            let mut got = Vec::new();
            while got.len() < expected {
                got.push(client.next().await.expect("a message").expect("a valid frame"));
            }
            got
        };
        let ((), got) = tokio::join!(write, read);
        got
    }

    #[tokio::test]
    async fn frames_written_around_tungstenite_read_back_as_tungstenite_writes_them() {
        let mut expected = vec![Message::text("queued before")];
        expected.extend(texts().into_iter().map(Message::text));
        for chunk in [3, 7, 64, 5000, 100_000] {
            let got = written_and_read(chunk, true, Some("queued before")).await;
            assert_eq!(got, expected, "vectored, {chunk} bytes per write");
        }
        assert_eq!(written_and_read(7, false, Some("queued before")).await, expected, "through tungstenite");
        let parked = written_and_read(7, true, None).await;
        assert_eq!(parked, expected[1..], "written to a parked connection's stream");
        assert_eq!(written_and_read(7, false, None).await, expected[1..], "a parked one, through tungstenite");
    }

    #[test]
    fn headers_follow_rfc_6455() {
        let header = |len: usize| {
            let mut out = [0u8; 10];
            let n = super::text_header(len, &mut out);
            assert_eq!(n, super::header_len(len), "header_len({len})");
            out[..n].to_vec()
        };
        assert_eq!(header(0), [0x81, 0]);
        assert_eq!(header(125), [0x81, 125]);
        assert_eq!(header(126), [0x81, 126, 0, 126]);
        assert_eq!(header(65_535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(header(65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
