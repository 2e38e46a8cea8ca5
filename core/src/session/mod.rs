//! One task per connection: read -> size caps (tungstenite) -> decode -> checks -> dispatch, with
//! the outbox drained in the same loop. The session owns its subscriptions and gives every one of
//! them back to the hub on every exit path.

mod disconnect;
mod dispatch;
mod registry;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

pub use disconnect::Disconnect;
pub(crate) use registry::Registry;

use crate::auth::{Identity, now_secs};
use crate::hooks::HookRunner;
use crate::hub::{Hub, Outbox, outbox};
use crate::observe::{Event, EventSink, Stats};

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a closing session waits for the client's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What every session shares.
pub(crate) struct SessionEnv {
    pub(crate) hub: Arc<Hub>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: EventSink,
    pub(crate) hooks: HookRunner,
    pub(crate) registry: Arc<Registry>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) max_subscriptions: usize,
    pub(crate) max_payload_depth: u32,
    pub(crate) outbox_capacity: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) leeway_secs: u64,
}

/// One admitted connection.
pub(crate) struct SessionStart {
    pub(crate) id: u64,
    pub(crate) identity: Arc<Identity>,
    pub(crate) client_ip: IpAddr,
    /// Quota slots and the connection permit, released when the session ends.
    pub(crate) held: Box<dyn Send>,
}

/// Per-session state the dispatcher works on.
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) identity: Arc<Identity>,
    pub(crate) outbox: Outbox,
    pub(crate) subscriptions: HashSet<String>,
    pub(crate) env: Arc<SessionEnv>,
}

pub(crate) async fn run<S>(mut ws: WebSocketStream<S>, env: Arc<SessionEnv>, start: SessionStart)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let (outbox, mut outbox_rx) = outbox(env.outbox_capacity);
    let control = env.registry.register(start.id, &start.identity.subject);
    env.stats.session_opened();
    env.events.emit(Event::SessionOpened {
        session_id: start.id,
        user: start.identity.subject.clone(),
        client_ip: start.client_ip,
    });
    let remaining = start.identity.expires_at.saturating_add(env.leeway_secs).saturating_sub(now_secs());
    let expiry = tokio::time::sleep(Duration::from_secs(remaining));
    tokio::pin!(expiry);
    let mut session = Session {
        id: start.id,
        identity: Arc::clone(&start.identity),
        outbox,
        subscriptions: HashSet::new(),
        env: Arc::clone(&env),
    };
    let mut messages_in = 0u64;
    let mut messages_out = 0u64;

    let disconnect = loop {
        tokio::select! {
            biased;
            _ = env.shutdown.cancelled() => break Disconnect::ServerShutdown,
            requested = control.wait() => break requested,
            _ = outbox_rx.overflow.wait() => break Disconnect::SlowConsumer,
            _ = &mut expiry => break Disconnect::TokenExpired,
            Some(first) = outbox_rx.rx.recv() => {
                let mut batch = vec![first];
                while batch.len() < WRITE_BATCH {
                    match outbox_rx.rx.try_recv() {
                        Ok(frame) => batch.push(frame),
                        Err(_) => break,
                    }
                }
                messages_out += batch.len() as u64;
                if let Err(d) = write_all(&mut ws, batch, &env).await {
                    break d;
                }
            }
            incoming = ws.next() => match incoming {
                None => break Disconnect::ClientClosed(1005),
                Some(Ok(Message::Text(text))) => {
                    messages_in += 1;
                    env.stats.record_message_in();
                    let reply = session.handle_text(&text).await;
                    messages_out += 1;
                    if let Err(d) = write_all(&mut ws, vec![reply], &env).await {
                        break d;
                    }
                }
                Some(Ok(Message::Binary(_))) => break Disconnect::UnsupportedData,
                // tungstenite queues the pong itself; flushing sends it now.
                Some(Ok(Message::Ping(_))) => {
                    if let Err(d) = flush(&mut ws, &env).await {
                        break d;
                    }
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    // tungstenite answers the close; drive it out, then end.
                    let _ = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
                    break Disconnect::ClientClosed(code);
                }
                Some(Err(e)) => break classify(&e),
            },
        }
    };

    for channel in session.subscriptions.drain() {
        env.hub.unsubscribe(&channel, session.id);
    }
    env.registry.remove(session.id);
    if let Some(frame) = disconnect.close_frame() {
        // Send the close frame, then give the client a moment to answer it (RFC 6455 §7.1.1: the
        // server should let the client see the close before the TCP connection goes).
        let closing = async {
            if ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
    }
    drop(start.held);
    env.stats.session_closed();
    env.events.emit(Event::SessionClosed {
        session_id: session.id,
        user: session.identity.subject.clone(),
        client_ip: start.client_ip,
        close_code: disconnect.code(),
        reason: disconnect.reason(),
        duration_secs: started.elapsed().as_secs_f64(),
        messages_in,
        messages_out,
    });
}

async fn write_all<S>(ws: &mut WebSocketStream<S>, frames: Vec<Utf8Bytes>, env: &SessionEnv) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let count = frames.len() as u64;
    let write = async {
        for frame in frames {
            ws.feed(Message::Text(frame)).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(env.write_timeout, write).await {
        Ok(Ok(())) => {
            env.stats.record_messages_out(count);
            Ok(())
        }
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Disconnect::WriteTimeout),
    }
}

async fn flush<S>(ws: &mut WebSocketStream<S>, env: &SessionEnv) -> Result<(), Disconnect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(env.write_timeout, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Disconnect::WriteTimeout),
    }
}

/// Maps a tungstenite error to the close code RFC 6455 §7.4.1 prescribes.
fn classify(error: &WsError) -> Disconnect {
    match error {
        WsError::Capacity(_) => Disconnect::MessageTooBig,
        WsError::Utf8(_) => Disconnect::InvalidUtf8,
        WsError::Protocol(_) => Disconnect::ProtocolError,
        _ => Disconnect::ConnectionLost,
    }
}
