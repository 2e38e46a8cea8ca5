//! One accepted TCP connection: the per-IP pending-handshake cap, the PROXY protocol header (when
//! `server.proxy_protocol` is on), TLS (when configured), the handshake gate, the 101 or the
//! refusal, then the session. The connection uses one snapshot of the reloadable configuration
//! throughout.
//!
//! The connection's address is the TCP peer, or the source a trusted proxy's PROXY header names;
//! everything after (quotas, rates, bans, events, forwarded headers) sees only that address. So a
//! client behind an L4 load balancer is judged by its own address, and its `X-Forwarded-For` is
//! believed only if that address is itself in `server.trusted_proxies`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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
use crate::handshake::proxy_header::{self, ProxyHeader, ProxyProtocol};
use crate::handshake::{Admission, Refused, Rejection, canonical};
use crate::limits::QuotaSlot;
use crate::observe::Event;
use crate::session::{self, SessionEnv, SessionStart};
use crate::transport::{Connection, TlsStream};

/// `Retry-After` of a `too_many_pending_handshakes_per_ip` refusal: a handshake takes
/// milliseconds, so a slot comes free soon.
const PENDING_RETRY_AFTER_SECS: u64 = 1;

/// A connection's place among the handshakes in flight: the server-wide permit
/// (`server.max_pending_handshakes`) and, when its address is counted, its slot under
/// `limits.pending_handshakes_per_ip`. Both are given back when the 101 is written or the
/// connection ends.
pub(crate) struct Pending {
    _permit: OwnedSemaphorePermit,
    _per_ip: Option<QuotaSlot<IpAddr>>,
}

/// Starts the task that handles one connection to the end of its session, or refuses it at once
/// when its TCP peer already holds `limits.pending_handshakes_per_ip` handshakes. A plain and a TLS
/// connection get tasks of different types: a task's future is sized for its largest state, and
/// one type for both would give every plain connection the TLS path's size (TLS stream, acceptor).
pub(crate) fn spawn(
    tracker: &TaskTracker,
    shared: Arc<Shared>,
    live: Arc<Live>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let mut pending = Pending { _permit: permit, _per_ip: None };
    // A trusted proxy carries many clients: it is not counted, the PROXY header's source is
    // (`proxy_phase`), or nobody before the request head (forwarded headers).
    if !live.gate.proxies.contains(peer.ip()) {
        match shared.core.pending_per_ip.try_acquire(canonical(peer.ip())) {
            Some(slot) => pending._per_ip = Some(slot),
            None => {
                refuse_at_accept(&shared.core, &live, &tcp, peer, pending_per_ip_rejection());
                return;
            }
        }
    }
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + live.server.handshake_timeout;
    let list = Arc::clone(&shared);
    // Locked across the spawn, so the task cannot leave the list before it is on it.
    let mut tasks = list.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let slot = tasks.vacant_entry();
    let key = slot.key();
    let env = Arc::clone(&live.session_env);
    let task = if live.tls.is_some() {
        tracker.spawn(connection_task(Arc::clone(&shared), key, env, async move {
            let peer = proxied(&shared.core, &live, &mut tcp, peer, deadline, &mut pending).await?;
            let tls = accept_tls(&shared, &live, tcp, peer, deadline).await?;
            handshake(&shared, &live, tls, peer, deadline, pending).await
        }))
    } else {
        tracker.spawn(connection_task(Arc::clone(&shared), key, env, async move {
            let peer = proxied(&shared.core, &live, &mut tcp, peer, deadline, &mut pending).await?;
            handshake(&shared, &live, tcp, peer, deadline, pending).await
        }))
    };
    slot.insert(task.abort_handle());
}

fn pending_per_ip_rejection() -> Rejection {
    Rejection::new(ErrorCode::TooManyPendingHandshakesPerIp, "limits.pending_handshakes_per_ip reached")
        .retry_after(PENDING_RETRY_AFTER_SECS)
}

/// Refuses a connection from the accept loop without spending a task on it. The socket is fresh,
/// so a short non-blocking write of the response fits in its send buffer. Over TLS nothing can be
/// written before the TLS handshake, so the connection is only closed.
pub(super) fn refuse_at_accept(core: &Core, live: &Live, tcp: &TcpStream, peer: SocketAddr, rejection: Rejection) {
    let rejection = if live.tls.is_none() {
        let _ = tcp.try_write(&rejection.to_response());
        rejection
    } else {
        rejection.silent()
    };
    record_refusal(core, &Refused { rejection, client_ip: canonical(peer.ip()), origin: None });
}

/// The connection's address: the TCP peer, or with `server.proxy_protocol` on, what a trusted
/// proxy's header says. `None` when the connection was refused (and recorded). The header phase
/// is boxed, so that only connections that have one pay for its state.
async fn proxied(
    core: &Core,
    live: &Live,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    pending: &mut Pending,
) -> Option<SocketAddr> {
    if live.server.proxy_protocol == ProxyProtocol::Off {
        return Some(peer);
    }
    Box::pin(proxy_phase(core, live, tcp, peer, deadline, pending)).await
}

/// The PROXY protocol phase (docs/SECURITY.md, client IP behind a load balancer): a trusted proxy
/// must send a header of an accepted version within the handshake deadline, any other peer must
/// not send one. Every refusal closes the connection before TLS, with the `HandshakeRejected`
/// event and `wsguard_proxy_headers_total{result}`.
async fn proxy_phase(
    core: &Core,
    live: &Live,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    pending: &mut Pending,
) -> Option<SocketAddr> {
    let refuse = |result: &'static str, code: ErrorCode, detail: String| {
        core.stats.record_proxy_header(result);
        reject_silently(core, peer, code, detail);
        None
    };
    if !live.gate.proxies.contains(peer.ip()) {
        // Nothing is consumed: the TLS or HTTP phase reads what this one peeked, under the same
        // deadline (and answers a silent peer as it always does).
        return match tokio::time::timeout_at(deadline, proxy_header::starts_with_header(tcp)).await {
            Ok(Ok(true)) => refuse(
                "untrusted",
                ErrorCode::ProxyHeaderUntrusted,
                "PROXY header from a peer outside server.trusted_proxies".into(),
            ),
            _ => Some(peer),
        };
    }
    let header = match tokio::time::timeout_at(deadline, proxy_header::read(tcp, live.server.proxy_protocol)).await {
        Ok(Ok(header)) => header,
        Ok(Err(refusal)) => return refuse(refusal.result(), refusal.code(), refusal.detail().to_string()),
        Err(_) => return refuse("timeout", ErrorCode::HandshakeTimeout, "PROXY header not received in time".into()),
    };
    let client = match header {
        ProxyHeader::Local => {
            core.stats.record_proxy_header("local");
            return Some(peer);
        }
        ProxyHeader::Client(client) => client,
    };
    core.stats.record_proxy_header("accepted");
    if !live.gate.proxies.contains(client.ip()) {
        match core.pending_per_ip.try_acquire(client.ip()) {
            Some(slot) => pending._per_ip = Some(slot),
            None => {
                refuse_after_header(core, live, tcp, client).await;
                return None;
            }
        }
    }
    Some(client)
}

/// `limits.pending_handshakes_per_ip` refused a PROXY header's source: answered like a refusal at
/// accept (429 over plain TCP, closed over TLS), now from the task.
async fn refuse_after_header(core: &Core, live: &Live, tcp: &mut TcpStream, client: SocketAddr) {
    let rejection = pending_per_ip_rejection();
    let rejection = if live.tls.is_none() {
        let write = async {
            tcp.write_all(&rejection.to_response()).await?;
            tcp.shutdown().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
        rejection
    } else {
        rejection.silent()
    };
    record_refusal(core, &Refused { rejection, client_ip: client.ip(), origin: None });
}

/// A connection task's place in [`Shared::tasks`], given up when the task ends.
struct Listed {
    shared: Arc<Shared>,
    key: usize,
}

impl Drop for Listed {
    fn drop(&mut self) {
        // After the hard stop the list is empty: nothing to remove.
        self.shared.tasks.lock().unwrap_or_else(PoisonError::into_inner).try_remove(self.key);
    }
}

/// The TLS handshake, within the connection's handshake deadline; `None` when it failed (refused
/// and recorded here).
async fn accept_tls(
    shared: &Shared,
    live: &Live,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<TlsStream<TcpStream>> {
    let acceptor = live.tls.as_ref()?;
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            reject_silently(&shared.core, peer, ErrorCode::TlsHandshakeFailed, e.to_string());
            None
        }
        Err(_) => {
            let detail = "TLS handshake not completed in time".into();
            reject_silently(&shared.core, peer, ErrorCode::HandshakeTimeout, detail);
            None
        }
    }
}

fn reject_silently(core: &Core, peer: SocketAddr, code: ErrorCode, detail: String) {
    record_refusal(
        core,
        &Refused { rejection: Rejection::new(code, detail).silent(), client_ip: canonical(peer.ip()), origin: None },
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

/// One connection's task: `prelude` (the PROXY header, the TLS handshake, the WebSocket
/// handshake), then the session; its place in [`Shared::tasks`] (`key`) is given back when the
/// task ends, however it ends. The prelude's future is boxed and freed when it ends, and only the session's future stays in the
/// task for the connection's life: a task's future is sized for its largest state, a local moved
/// into an `.await` keeps its slot, and an `async` block keeps what it captured for its whole
/// life, so the plain `async` form (`let conn = ..; run(conn, ..).await`) would hold the
/// admission's buffers, the accepted socket's arguments and a second copy of the stream in every
/// idle connection (docs/PERFORMANCE.md, idle memory).
fn connection_task<S, P>(shared: Arc<Shared>, key: usize, env: Arc<SessionEnv>, prelude: P) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: Future<Output = Option<(Connection<S>, SessionStart)>>,
{
    let prelude = async move {
        // Made at the first poll, not before the spawn: a task dropped unpolled (spawned while
        // the runtime shuts down, which drops it inside `spawn`, with the list still locked by
        // the spawner) has no place to give back, and must not take the lock.
        let listed = Listed { shared, key };
        (listed, prelude.await)
    };
    Box::pin(prelude).then(move |(listed, admitted)| match admitted {
        Some((conn, start)) => Either::Left(session::run(conn, env, start).map(move |()| drop(listed))),
        None => {
            drop(listed);
            Either::Right(std::future::ready(()))
        }
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
    pending: Pending,
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
    let conn = Connection::upgraded(stream, admitted.leftover, Arc::clone(&live.ws_config));
    let start = SessionStart {
        id: shared.next_session_id.fetch_add(1, Ordering::Relaxed),
        identity: Arc::new(admitted.identity),
        client_ip: admitted.client_ip,
        held: admitted.held,
        info: admitted.info,
    };
    Some((conn, start))
}
