//! [`Socket`]: the client's stream with tungstenite above it only while the connection is in use.
//!
//! An idle connection's WebSocket state is all defaults: no partial frame, no fragmented message,
//! nothing queued to write. tungstenite still holds its read buffer, its write buffer, two waker
//! proxies and the stream's state for the connection's life (about 1 KiB). So a connection is
//! *parked*: the WebSocket is taken apart and only the [`BurstReader`] (the stream) is kept; it is
//! built again, with the same configuration, when the client sends something or a write needs
//! tungstenite. A connection starts parked (unless the handshake read frames past the request
//! head), and parks again when a read finds the socket drained after nothing but control frames
//! since the last drain (a heartbeat's pong), with nothing left to flush: a connection that only
//! receives deliveries stays parked, since deliveries are written to the stream directly
//! (`write.rs`), and one whose client went quiet parks at its next heartbeat.
//!
//! Parking only happens where rebuilding gives back the same connection: the reader says the
//! bytes handed to tungstenite end a frame outside a fragmented message
//! ([`BurstReader::is_at_message_boundary`]), tungstenite's last read ran out of data (so it
//! parsed every complete frame), and nothing waits for a flush.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::burst::BurstReader;

/// The WebSocket over one client's stream, open or parked (see the module docs).
pub(super) struct Socket<S> {
    state: State<S>,
    /// The server's, shared by its connections.
    config: Arc<WebSocketConfig>,
}

enum State<S> {
    /// tungstenite is built; boxed, so that a parked connection does not carry its size.
    Open(Box<WebSocketStream<BurstReader<S>>>),
    /// Only the stream.
    Parked(BurstReader<S>),
    /// Between the two, never seen outside a method.
    Moving,
}

impl<S> Socket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The socket of a connection whose handshake read `leftover` past the request head: parked
    /// when that is nothing, open with those bytes in tungstenite's buffer otherwise.
    pub(super) fn new(stream: S, leftover: Vec<u8>, config: Arc<WebSocketConfig>) -> Self {
        let reader = BurstReader::new(stream, &leftover);
        let state = if leftover.is_empty() {
            State::Parked(reader)
        } else {
            let built = WebSocketStream::from_partially_read(reader, leftover, Role::Server, Some(*config));
            State::Open(Box::new(ready_now(built)))
        };
        Socket { state, config }
    }

    /// tungstenite's stream, built first if the connection is parked.
    pub(super) fn ws(&mut self) -> &mut WebSocketStream<BurstReader<S>> {
        if let State::Parked(_) = self.state {
            let State::Parked(reader) = std::mem::replace(&mut self.state, State::Moving) else {
                unreachable!("checked above")
            };
            let built = WebSocketStream::from_raw_socket(reader, Role::Server, Some(*self.config));
            self.state = State::Open(Box::new(ready_now(built)));
        }
        match &mut self.state {
            State::Open(ws) => ws,
            State::Parked(_) | State::Moving => unreachable!("opened above"),
        }
    }

    /// The stream under tungstenite, in either state.
    pub(super) fn reader(&mut self) -> &mut BurstReader<S> {
        match &mut self.state {
            State::Open(ws) => ws.get_mut(),
            State::Parked(reader) => reader,
            State::Moving => unreachable!("never seen outside a method"),
        }
    }

    /// True while the connection is parked.
    pub(super) fn is_parked(&self) -> bool {
        matches!(self.state, State::Parked(_))
    }

    /// Flushes what tungstenite holds (nothing, when parked).
    pub(super) fn poll_flush_ws(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), tokio_tungstenite::tungstenite::Error>> {
        use futures_util::SinkExt;
        match &mut self.state {
            State::Open(ws) => ws.poll_flush_unpin(cx),
            State::Parked(_) | State::Moving => Poll::Ready(Ok(())),
        }
    }

    /// Parks the connection if tungstenite holds nothing of it: its last read ran out of data
    /// (`read_drained`, the caller's knowledge), the bytes it was handed end a message, and
    /// nothing waits for a flush (`flushed`, the caller's). Returns whether it parked (false
    /// also when it was parked already).
    pub(super) fn park(&mut self, read_drained: bool, flushed: bool) -> bool {
        let State::Open(ws) = &self.state else {
            return false;
        };
        if !(read_drained && flushed && ws.get_ref().is_at_message_boundary()) {
            return false;
        }
        let State::Open(ws) = std::mem::replace(&mut self.state, State::Moving) else { unreachable!("checked above") };
        self.state = State::Parked(ws.into_inner());
        true
    }

    /// The WebSocket, taken apart for the close: built first if parked.
    pub(super) fn into_ws(mut self) -> WebSocketStream<BurstReader<S>> {
        self.ws();
        match self.state {
            State::Open(ws) => *ws,
            State::Parked(_) | State::Moving => unreachable!("opened above"),
        }
    }
}

/// The value of a future that is ready at its first poll: tokio-tungstenite's constructors are
/// `async` but do no I/O (they wrap the stream, registering no waker).
fn ready_now<F: std::future::Future>(future: F) -> F::Output {
    future.now_or_never().expect("tokio-tungstenite builds a stream without waiting")
}
