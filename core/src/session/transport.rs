//! The session's side of the WebSocket: reading client messages in batches (each through the
//! pipeline of [`Session::handle_text`]), writing replies and deliveries with one flush per batch,
//! and bounding every write by `limits.write_timeout_secs`. It owns no state beyond the counts
//! in [`Traffic`]; the loop in `mod.rs` decides when to read and when to write.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

use super::gate::ReadGate;
use super::{CLOSE_WAIT, Disconnect, Session, SessionEnv, expiry_deadline};
use crate::hub::Outbox;

/// Most client messages handled, from what the socket already delivered, before the session
/// looks at its other events (deliveries, timers, revocations) again.
const READ_BATCH: usize = 32;

/// A session's message counts, and the replies written but not flushed yet.
#[derive(Default)]
pub(super) struct Traffic {
    pub(super) messages_in: u64,
    pub(super) messages_out: u64,
    /// Replies handed to tungstenite since the last flush (counted as sent once flushed).
    unflushed_replies: u64,
    /// Something (a reply or tungstenite's own pong) waits for a flush.
    needs_flush: bool,
}

/// What one client message did to the session.
enum Step {
    Continue,
    /// The transport ended or failed: nothing more can be flushed (the close frame, if any, goes
    /// out with whatever is queued).
    Stop(Disconnect),
    /// The session ends after its replies are flushed.
    StopAfterReplies(Disconnect),
}

/// Handles `first` and then every message already read from the socket (a pipelining client
/// sends many per read), up to [`READ_BATCH`], before the loop looks at its other events again;
/// the replies of the batch go out with one flush. Returns the disconnect that ends the session.
pub(super) async fn read_batch<S>(
    ws: &mut WebSocketStream<S>,
    reads: &ReadGate,
    session: &mut Session,
    env: &SessionEnv,
    first: Option<Result<Message, WsError>>,
    expires_at: &mut Instant,
    traffic: &mut Traffic,
) -> Option<Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = first;
    for handled in 1..=READ_BATCH {
        match on_message(ws, session, env, incoming, expires_at, traffic).await {
            Step::Continue => {}
            Step::Stop(d) => return Some(d),
            Step::StopAfterReplies(d) => return Some(flush_replies(ws, env, traffic).await.err().unwrap_or(d)),
        }
        if handled == READ_BATCH {
            break;
        }
        // Through the read gate, like the `select!`: when nothing is buffered this registers the
        // gate for the socket (tokio then skips the read syscall, as it knows the socket is
        // drained after a short read), and the loop's next pass does not poll the stream again.
        match poll_fn(|cx| Poll::Ready(reads.poll_next(cx, ws))).await {
            Poll::Ready(next) => incoming = next,
            Poll::Pending => break,
        }
    }
    flush_replies(ws, env, traffic).await.err()
}

/// One client message: transport frames are handled here, text goes through the pipeline
/// ([`Session::handle_text`]) and its replies are handed to tungstenite, not flushed.
async fn on_message<S>(
    ws: &mut WebSocketStream<S>,
    session: &mut Session,
    env: &SessionEnv,
    incoming: Option<Result<Message, WsError>>,
    expires_at: &mut Instant,
    traffic: &mut Traffic,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &env.limits;
    let text = match incoming {
        // Conformance mode: the message went through every transport check (size caps, UTF-8,
        // framing) and is sent back unchanged, nothing decoded.
        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) if limits.is_echo => {
            traffic.messages_in += 1;
            traffic.messages_out += 1;
            return match bounded_write(limits.write_timeout, ws.send(message)).await {
                Ok(()) => Step::Continue,
                Err(d) => Step::Stop(d),
            };
        }
        None => return Step::Stop(Disconnect::ClientClosed(1005)),
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Binary(bytes))) if limits.allow_binary => match Utf8Bytes::try_from(bytes) {
            Ok(text) => text,
            Err(_) => return Step::Stop(Disconnect::InvalidUtf8),
        },
        Some(Ok(Message::Binary(_))) => return Step::Stop(Disconnect::UnsupportedData),
        // tungstenite queues the pong itself; the batch's flush sends it.
        Some(Ok(Message::Ping(_))) => {
            traffic.needs_flush = true;
            return Step::Continue;
        }
        Some(Ok(Message::Pong(_) | Message::Frame(_))) => return Step::Continue,
        Some(Ok(Message::Close(frame))) => {
            let code = frame.map_or(1005, |f| u16::from(f.code));
            // tungstenite answers the close; drive it out (after the replies still queued), then
            // end.
            let _ = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
            env.stats.record_messages_out(false, std::mem::take(&mut traffic.unflushed_replies));
            traffic.needs_flush = false;
            return Step::Stop(Disconnect::ClientClosed(code));
        }
        Some(Err(e)) => return Step::Stop(classify(&e)),
    };
    traffic.messages_in += 1;
    let previous_exp = session.identity.expires_at;
    let outcome = session.handle_text(&text).await;
    if session.identity.expires_at != previous_exp {
        *expires_at = expiry_deadline(&session.identity, limits.leeway_secs);
    }
    traffic.messages_out += outcome.frames.len() as u64;
    for frame in outcome.frames {
        if let Err(d) = bounded_write(limits.write_timeout, ws.feed(Message::Text(frame))).await {
            return Step::Stop(d);
        }
        traffic.unflushed_replies += 1;
        traffic.needs_flush = true;
    }
    match outcome.disconnect {
        Some(d) => Step::StopAfterReplies(d),
        None => Step::Continue,
    }
}

/// Flushes what the last messages queued, if anything, and counts the replies as sent.
async fn flush_replies<S>(
    ws: &mut WebSocketStream<S>,
    env: &SessionEnv,
    traffic: &mut Traffic,
) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !std::mem::take(&mut traffic.needs_flush) {
        return Ok(());
    }
    bounded_write(env.limits.write_timeout, ws.flush()).await?;
    env.stats.record_messages_out(false, std::mem::take(&mut traffic.unflushed_replies));
    Ok(())
}

/// Writes and flushes `frames`, leaving the buffer empty (its capacity is kept for the next batch).
pub(super) async fn write_all<S>(
    ws: &mut WebSocketStream<S>,
    frames: &mut Vec<Utf8Bytes>,
    is_delivery: bool,
    env: &SessionEnv,
) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if frames.is_empty() {
        return Ok(());
    }
    let count = frames.len() as u64;
    bounded_write(env.limits.write_timeout, WriteFrames::new(ws, frames)).await?;
    env.stats.record_messages_out(is_delivery, count);
    Ok(())
}

/// Writes `frames` in order with one flush, then leaves the buffer empty (also when the write
/// fails). A future of three words: the session's delivery wait, which every idle connection
/// holds for its whole life, polls it inline, where the `feed`/`flush` futures and a timer took
/// about 570 bytes (docs/PERFORMANCE.md, idle memory).
pub(super) struct WriteFrames<'a, S> {
    ws: &'a mut WebSocketStream<S>,
    frames: &'a mut Vec<Utf8Bytes>,
    /// The first frame not handed to tungstenite yet.
    next: usize,
}

impl<'a, S> WriteFrames<'a, S> {
    pub(super) fn new(ws: &'a mut WebSocketStream<S>, frames: &'a mut Vec<Utf8Bytes>) -> Self {
        WriteFrames { ws, frames, next: 0 }
    }
}

impl<S> Future for WriteFrames<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<(), WsError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = loop {
            if this.next == this.frames.len() {
                break ready!(this.ws.poll_flush_unpin(cx));
            }
            // `SinkExt::feed`, one frame at a time: tungstenite takes a frame once the previous
            // ones fit its write buffer.
            if let Err(e) = ready!(this.ws.poll_ready_unpin(cx)) {
                break Err(e);
            }
            let frame = std::mem::take(&mut this.frames[this.next]);
            this.next += 1;
            if let Err(e) = this.ws.start_send_unpin(Message::Text(frame)) {
                break Err(e);
            }
        };
        this.frames.clear();
        Poll::Ready(result)
    }
}

/// The rest of a delivery write that could not finish at once (the client's socket is full):
/// bounded by `limit`, and raced against the outbox overflowing, so that a stalled client is cut
/// off as a slow consumer as soon as its queue is full rather than after the write timeout.
pub(super) async fn finish_delivery<S>(
    write: WriteFrames<'_, S>,
    outbox: &Outbox,
    limit: Duration,
) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        written = tokio::time::timeout(limit, write) => match written {
            Ok(result) => result.map_err(|e| classify(&e)),
            Err(_) => Err(Disconnect::WriteTimeout),
        },
        () = poll_fn(|cx| outbox.poll_overflowed(cx)) => Err(Disconnect::SlowConsumer),
    }
}

pub(super) async fn send_ping<S>(ws: &mut WebSocketStream<S>, env: &SessionEnv) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    bounded_write(env.limits.write_timeout, ws.send(Message::Ping(Bytes::new()))).await
}

/// Runs a write to the client, bounded by `limit` (a stalled client ends as `WriteTimeout`). A
/// write that completes on its first poll, the usual case when the socket has room, never arms a
/// timer: a timer entry per message showed up in the profiles (docs/PERFORMANCE.md).
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
    result.map_err(|e| classify(&e))
}

/// Maps a tungstenite error to the close code RFC 6455 §7.4.1 prescribes.
pub(super) fn classify(error: &WsError) -> Disconnect {
    match error {
        WsError::Capacity(_) => Disconnect::MessageTooBig,
        WsError::Utf8(_) => Disconnect::InvalidUtf8,
        WsError::Protocol(_) => Disconnect::ProtocolError,
        _ => Disconnect::ConnectionLost,
    }
}
