//! [`Connection`]: one client's WebSocket, as the session uses it. Every operation that can wait
//! on the client is bounded (by the write timeout the session passes, by [`CLOSE_WAIT`], or by
//! the lingering close's bounds).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::SinkExt;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

use super::gate::ReadGate;
use super::linger::Linger;
use super::socket::Socket;
use super::write::{WriteFrames, finish_delivery};
use super::{CLOSE_WAIT, Disconnect};

/// A client message, as the transport hands it to the session.
pub(crate) enum Inbound {
    /// A text or binary message (frame and message caps and UTF-8 already checked by tungstenite).
    Data(Data),
    /// A ping (its pong is queued and goes out with the next flush), a pong or a raw frame:
    /// nothing for the session to do.
    Control,
    /// The client sent a Close with this code (1005 when it gave none); answered by
    /// [`Connection::answer_close`].
    Closed(u16),
    /// The connection ended or broke.
    Lost(Disconnect),
}

/// A data message's payload.
pub(crate) enum Data {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message (what it means is the session's decision).
    Binary(Bytes),
}

/// One client's WebSocket (see the module docs of `transport` for how it reads and writes).
pub(crate) struct Connection<S> {
    socket: Socket<S>,
    reads: ReadGate,
    /// Deliveries (or notices) drained for the next [`Connection::write_deliveries`] or
    /// [`Connection::write_batch`]; one buffer, reused for the connection's life.
    batch: Vec<Utf8Bytes>,
    /// Replies handed to tungstenite since the last flush (counted as sent once flushed).
    unflushed_replies: u64,
    /// Something (a reply or tungstenite's own pong) waits for a flush.
    needs_flush: bool,
    /// A delivery write was cut off inside a frame ([`finish_delivery`]): no close frame.
    is_mid_frame: bool,
    /// A data message was read since the socket last ran dry (a connection parks only after a
    /// drain with none: `socket.rs`).
    read_data: bool,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The WebSocket over `stream` once the server's 101 is written; `leftover` is what the
    /// handshake read past the request head. It starts parked when that is nothing (`socket.rs`).
    pub(crate) fn upgraded(stream: S, leftover: Vec<u8>, config: Arc<WebSocketConfig>) -> Self {
        Connection {
            socket: Socket::new(stream, leftover, config),
            reads: ReadGate::new(),
            batch: Vec::new(),
            unflushed_replies: 0,
            needs_flush: false,
            is_mid_frame: false,
            read_data: false,
        }
    }

    /// The next client message, through the read gate: a poll that is not due returns `Pending`
    /// without touching the socket.
    pub(crate) fn next(&mut self) -> impl Future<Output = Inbound> + '_ {
        poll_fn(move |cx| self.poll_next(cx))
    }

    /// The next message the socket already delivered, if any. When nothing is buffered this
    /// leaves the read gate registered for the socket (tokio then skips the read system call: it
    /// knows the socket is drained after a short read), so the session loop's next pass does not
    /// poll the stream again until the socket wakes it.
    pub(crate) async fn next_buffered(&mut self) -> Option<Inbound> {
        match poll_fn(|cx| Poll::Ready(self.poll_next(cx))).await {
            Poll::Ready(inbound) => Some(inbound),
            Poll::Pending => None,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        let socket = &mut self.socket;
        let polled = std::task::ready!(self.reads.poll_next(cx, |gated| {
            // Parked: tungstenite is built only once the socket has something.
            if socket.is_parked() {
                std::task::ready!(socket.reader().poll_fill(gated));
            }
            socket.ws().poll_next_unpin(gated)
        }));
        Poll::Ready(match polled {
            Some(Ok(Message::Text(text))) => {
                self.read_data = true;
                Inbound::Data(Data::Text(text))
            }
            Some(Ok(Message::Binary(bytes))) => {
                self.read_data = true;
                Inbound::Data(Data::Binary(bytes))
            }
            // tungstenite queues the pong itself; the next flush sends it.
            Some(Ok(Message::Ping(_))) => {
                self.needs_flush = true;
                Inbound::Control
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => Inbound::Control,
            Some(Ok(Message::Close(frame))) => Inbound::Closed(frame.map_or(1005, |f| u16::from(f.code))),
            Some(Err(e)) => Inbound::Lost(Disconnect::from_ws_error(&e)),
            None => Inbound::Lost(Disconnect::ClientClosed(1005)),
        })
    }

    /// After a batch of client messages that ended because the socket ran dry, with its replies
    /// flushed: parks the connection if only control frames came since the last time the socket
    /// ran dry (a heartbeat's pong) and tungstenite holds nothing (`socket.rs`).
    pub(crate) fn park_if_quiet(&mut self) {
        let quiet = !std::mem::take(&mut self.read_data);
        if quiet && !self.is_mid_frame {
            let drained = self.reads.is_armed();
            if self.socket.park(drained, !self.needs_flush && self.unflushed_replies == 0) {
                // The socket's waker is still tungstenite's (a proxy it allocated): the next poll
                // waits on the bare stream with the gate's own, and the proxy is freed.
                self.reads.mark_due();
            }
        }
    }

    /// Hands a reply to tungstenite without flushing it ([`Connection::flush`] sends it).
    pub(crate) async fn feed_reply(&mut self, frame: Utf8Bytes, limit: Duration) -> Result<(), Disconnect> {
        bounded_write(limit, self.socket.ws().feed(Message::Text(frame))).await?;
        self.unflushed_replies += 1;
        self.needs_flush = true;
        Ok(())
    }

    /// Flushes what the last messages queued, if anything; returns how many replies that sent.
    pub(crate) async fn flush(&mut self, limit: Duration) -> Result<u64, Disconnect> {
        if !std::mem::take(&mut self.needs_flush) {
            return Ok(0);
        }
        bounded_write(limit, self.socket.ws().flush()).await?;
        Ok(std::mem::take(&mut self.unflushed_replies))
    }

    /// After [`Inbound::Closed`]: drives out tungstenite's answer to the client's Close (after the
    /// replies still queued), within [`CLOSE_WAIT`]. Returns how many replies went with it.
    pub(crate) async fn answer_close(&mut self) -> u64 {
        let _ = tokio::time::timeout(CLOSE_WAIT, self.socket.ws().flush()).await;
        self.needs_flush = false;
        std::mem::take(&mut self.unflushed_replies)
    }

    /// Sends a data message back unchanged, flushed (the conformance mode's echo).
    pub(crate) async fn echo(&mut self, data: Data, limit: Duration) -> Result<(), Disconnect> {
        let message = match data {
            Data::Text(text) => Message::Text(text),
            Data::Binary(bytes) => Message::Binary(bytes),
        };
        bounded_write(limit, self.socket.ws().send(message)).await
    }

    /// Sends a heartbeat ping, flushed. A parked connection writes the frame to the stream
    /// directly, and stays parked.
    pub(crate) async fn ping(&mut self, limit: Duration) -> Result<(), Disconnect> {
        if self.socket.is_parked() {
            // FIN + ping, no payload; a server's frames are not masked (RFC 6455 §5.1).
            const PING: [u8; 2] = [0x89, 0x00];
            let write = async {
                let reader = self.socket.reader();
                tokio::io::AsyncWriteExt::write_all(reader, &PING).await?;
                tokio::io::AsyncWriteExt::flush(reader).await
            };
            return bounded_write(limit, async { write.await.map_err(WsError::Io) }).await;
        }
        bounded_write(limit, self.socket.ws().send(Message::Ping(Bytes::new()))).await
    }

    /// The buffer the next [`Connection::write_deliveries`] or [`Connection::write_batch`]
    /// writes; empty, with the capacity of earlier batches.
    pub(crate) fn batch(&mut self) -> &mut Vec<Utf8Bytes> {
        &mut self.batch
    }

    /// Writes the batch (notices) with one flush, bounded by `limit`, and leaves it empty.
    pub(crate) async fn write_batch(&mut self, limit: Duration) -> Result<(), Disconnect> {
        if self.batch.is_empty() {
            return Ok(());
        }
        bounded_write(limit, WriteFrames::new(&mut self.socket, &mut self.batch)).await
    }

    /// Writes the batch (deliveries) with one flush and leaves it empty. Usually done at the first
    /// poll; only a write that has to wait is bounded by `limit` and raced against `overflowed`
    /// (the outbox's `poll_overflowed`): a stalled client must not hide its overflow behind the
    /// write timeout.
    // The session loop holds this future inline, in every connection's task.
    #[allow(clippy::manual_async_fn, reason = "the async fn form doubles the arguments in the future")]
    pub(crate) fn write_deliveries<'a>(
        &'a mut self,
        overflowed: impl FnMut(&mut Context<'_>) -> Poll<()> + 'a,
        limit: Duration,
    ) -> impl Future<Output = Result<(), Disconnect>> + 'a {
        async move {
            let mut write = WriteFrames::new(&mut self.socket, &mut self.batch);
            // Scoped, so that the first attempt's result is not kept across the await below.
            {
                let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut write).poll(cx))).await;
                if let Poll::Ready(written) = first {
                    return written.map_err(|e| Disconnect::from_ws_error(&e));
                }
            }
            // Boxed: rare, and inline it would be the largest state of the session's future.
            Box::pin(finish_delivery(write, overflowed, limit, &mut self.is_mid_frame)).await
        }
    }

    /// Ends the connection for `disconnect`: sends its close frame, if it has one and a cut-off
    /// delivery does not stand in the way, within [`CLOSE_WAIT`]. Returns the bare socket for the
    /// lingering close (`linger.rs`) once the frame is out, and everything else of the connection
    /// is freed; `None` when no close frame went out (the socket is then simply dropped). `reason`
    /// replaces the disconnect's reason name in the close frame (an operator's reason).
    pub(crate) async fn close(self, disconnect: Disconnect, reason: Option<&str>) -> Option<Linger<S>> {
        let frame = disconnect.close_frame(reason).filter(|_| !self.is_mid_frame)?;
        let mut ws = self.socket.into_ws();
        match tokio::time::timeout(CLOSE_WAIT, ws.close(Some(frame))).await {
            Ok(Ok(())) => {
                let (stream, unread) = ws.into_inner().into_inner();
                Some(Linger::new(stream, unread))
            }
            _ => None,
        }
    }
}

/// Runs a write to the client, bounded by `limit` (a stalled client ends as `WriteTimeout`). A
/// write that completes on its first poll, the usual case when the socket has room, never arms a
/// timer.
async fn bounded_write<F>(limit: Duration, write: F) -> Result<(), Disconnect>
where
    F: Future<Output = Result<(), WsError>>,
{
    let mut write = pin!(write);
    let result = match poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        Poll::Ready(result) => result,
        Poll::Pending => match tokio::time::timeout(limit, write).await {
            Ok(result) => result,
            Err(_) => return Err(Disconnect::WriteTimeout),
        },
    };
    result.map_err(|e| Disconnect::from_ws_error(&e))
}
