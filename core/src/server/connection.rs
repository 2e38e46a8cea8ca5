//! One accepted TCP connection: TLS (when configured), the handshake gate, the 101 or the refusal,
//! then the session. The connection uses one snapshot of the reloadable configuration throughout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::live::{Core, Live};
use crate::error::ErrorCode;
use crate::handshake::{Admission, Refused, Rejection};
use crate::observe::Event;
use crate::session::{self, SessionStart};
use crate::transport::Connection;

/// Starts the task that handles one connection to the end of its session. A plain and a TLS
/// connection get tasks of different types: a task's future is sized for its largest state, and
/// one type for both would give every plain connection the TLS path's size (TLS stream, acceptor).
pub(crate) fn spawn(
    tracker: &TaskTracker,
    shared: Arc<Shared>,
    live: Arc<Live>,
    tcp: TcpStream,
    peer: SocketAddr,
    pending: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + live.server.handshake_timeout;
    let list = Arc::clone(&shared);
    // Locked across the spawn, so the task cannot leave the list before it is on it.
    let mut tasks = list.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let slot = tasks.vacant_entry();
    let key = slot.key();
    let task = if live.tls.is_some() {
        tracker.spawn(async move {
            let _listed = Listed { shared: &shared, key };
            accept_tls(&shared, &live, tcp, peer, deadline, pending).await;
        })
    } else {
        tracker.spawn(async move {
            let _listed = Listed { shared: &shared, key };
            upgrade(&shared, &live, tcp, peer, deadline, pending).await;
        })
    };
    slot.insert(task.abort_handle());
}

/// A connection task's place in [`Shared::tasks`], given up when the task ends.
struct Listed<'a> {
    shared: &'a Shared,
    key: usize,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        // After the hard stop the list is empty: nothing to remove.
        self.shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).try_remove(self.key);
    }
}

async fn accept_tls(
    shared: &Shared,
    live: &Live,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
) {
    let Some(acceptor) = &live.tls else { return };
    // Boxed, like the handshake in `upgrade`: freed once the TLS handshake is done.
    match tokio::time::timeout_at(deadline, Box::pin(acceptor.accept(tcp))).await {
        Ok(Ok(tls)) => upgrade(shared, live, tls, peer, deadline, pending).await,
        Ok(Err(e)) => reject_silently(&shared.core, peer, ErrorCode::TlsHandshakeFailed, e.to_string()),
        Err(_) => reject_silently(
            &shared.core,
            peer,
            ErrorCode::HandshakeTimeout,
            "TLS handshake not completed in time".into(),
        ),
    }
}

fn reject_silently(core: &Core, peer: SocketAddr, code: ErrorCode, detail: String) {
    record_refusal(
        core,
        &Refused { rejection: Rejection::new(code, detail).silent(), client_ip: peer.ip(), origin: None },
    );
}

/// Records a refused handshake, the one place that does: the `wsguard_handshakes_total` counter
/// and the `HandshakeRejected` event (which is also the log line). The status is 0 when nothing
/// is written to the client.
pub(super) fn record_refusal(core: &Core, refused: &Refused) {
    let rejection = &refused.rejection;
    core.stats.record_handshake(Some(rejection.code().name()));
    core.events.emit(Event::HandshakeRejected {
        client_ip: refused.client_ip,
        status: if rejection.is_silent() { 0 } else { rejection.status().as_u16() },
        code: rejection.code().name(),
        detail: rejection.detail().to_string(),
        origin: refused.origin.clone(),
    });
}

/// The handshake, then the session. The two run one after the other in one place: the handshake's
/// future is boxed and freed when it ends, and only the session's future stays in this task for
/// the connection's life. A task's future is sized for its largest state, and a local moved into
/// an `.await` keeps its slot, so the plain `async` form (`let ws = ..; run(ws, ..).await`) held the
/// admission's request head buffer and a second copy of the stream (1.2 KiB over TLS) in every idle
/// connection: 8.4 KiB of future where the session needs about 3 KiB (docs/PERFORMANCE.md, idle
/// memory).
fn upgrade<'a, S>(
    shared: &'a Shared,
    live: &'a Live,
    stream: S,
    peer: SocketAddr,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    let env = Arc::clone(&live.session_env);
    Box::pin(handshake(shared, live, stream, peer, deadline, pending)).then(move |admitted| match admitted {
        Some((conn, start)) => Either::Left(session::run(conn, env, start)),
        None => Either::Right(std::future::ready(())),
    })
}

/// The WebSocket handshake on an accepted (and decrypted) stream: the admission gate, then the 101
/// or the refusal. Returns the session's connection and start record once the 101 is written.
async fn handshake<S>(
    shared: &Shared,
    live: &Live,
    mut stream: S,
    peer: SocketAddr,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
) -> Option<(Connection<S>, SessionStart)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let core = &shared.core;
    let admitted = live.gate.admit(&mut stream, peer.ip(), deadline).await;
    // A handshake that finishes while the server drains must not start a session.
    let admitted = match admitted {
        Ok(Admission::Upgrade(_)) if core.shutdown.is_cancelled() => Err(Refused {
            rejection: Rejection::new(ErrorCode::ShuttingDown, "server is shutting down"),
            client_ip: peer.ip(),
            origin: None,
        }),
        other => other,
    };
    let admitted = match admitted {
        Ok(Admission::Upgrade(admitted)) => admitted,
        Ok(Admission::Page(response)) => {
            let write = async {
                stream.write_all(&response).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), write).await;
            return None;
        }
        Err(refused) => {
            record_refusal(core, &refused);
            let rejection = &refused.rejection;
            if !rejection.is_silent() {
                let write = async {
                    stream.write_all(&rejection.to_response()).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
            }
            return None;
        }
    };
    let write = async {
        stream.write_all(&admitted.response).await?;
        stream.flush().await
    };
    if !matches!(tokio::time::timeout_at(deadline + live.server.handshake_timeout, write).await, Ok(Ok(()))) {
        return None;
    }
    drop(pending);
    core.stats.record_handshake(None);
    let conn = Connection::upgraded(stream, admitted.leftover, live.ws_config).await;
    let start = SessionStart {
        id: shared.next_session_id.fetch_add(1, Ordering::Relaxed),
        identity: Arc::new(admitted.identity),
        client_ip: admitted.client_ip,
        held: admitted.held,
        info: admitted.info,
    };
    Some((conn, start))
}
