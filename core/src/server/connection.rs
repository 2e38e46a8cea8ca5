//! One accepted TCP connection: TLS (when configured), the handshake gate, the 101 or the refusal,
//! then the session. The connection uses one snapshot of the reloadable configuration throughout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Shared;
use super::live::{Core, Live};
use crate::error::ErrorCode;
use crate::handshake::{Admission, Refused, Rejection};
use crate::observe::Event;
use crate::session::{self, SessionStart};

/// Handles one connection to the end of its session.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    live: Arc<Live>,
    tcp: TcpStream,
    peer: SocketAddr,
    pending: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + live.handshake_timeout;
    match &live.tls {
        None => upgrade(&shared, &live, tcp, peer, deadline, pending).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => upgrade(&shared, &live, tls, peer, deadline, pending).await,
            Ok(Err(e)) => reject_silently(&shared.core, peer, ErrorCode::TlsHandshakeFailed, e.to_string()),
            Err(_) => reject_silently(
                &shared.core,
                peer,
                ErrorCode::HandshakeTimeout,
                "TLS handshake not completed in time".into(),
            ),
        },
    }
}

fn reject_silently(core: &Core, peer: SocketAddr, code: ErrorCode, detail: String) {
    core.stats.record_handshake(Some(code.name()));
    core.events.emit(Event::HandshakeRejected {
        client_ip: peer.ip(),
        status: 0,
        code: code.name(),
        detail,
        origin: None,
    });
}

async fn upgrade<S>(
    shared: &Shared,
    live: &Live,
    mut stream: S,
    peer: SocketAddr,
    deadline: Instant,
    pending: OwnedSemaphorePermit,
) where
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
            return;
        }
        Err(refused) => {
            let rejection = &refused.rejection;
            core.stats.record_handshake(Some(rejection.code().name()));
            core.events.emit(Event::HandshakeRejected {
                client_ip: refused.client_ip,
                status: if rejection.is_silent() { 0 } else { rejection.status().as_u16() },
                code: rejection.code().name(),
                detail: rejection.detail().to_string(),
                origin: refused.origin.clone(),
            });
            if !rejection.is_silent() {
                let write = async {
                    stream.write_all(&rejection.to_response()).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
            }
            return;
        }
    };
    let write = async {
        stream.write_all(&admitted.response).await?;
        stream.flush().await
    };
    if !matches!(tokio::time::timeout_at(deadline + live.handshake_timeout, write).await, Ok(Ok(()))) {
        return;
    }
    drop(pending);
    core.stats.record_handshake(None);
    let ws = WebSocketStream::from_partially_read(stream, admitted.leftover, Role::Server, Some(live.ws_config)).await;
    let start = SessionStart {
        id: shared.next_session_id.fetch_add(1, Ordering::Relaxed),
        identity: Arc::new(admitted.identity),
        client_ip: admitted.client_ip,
        held: admitted.held,
        info: admitted.info,
    };
    session::run(ws, Arc::clone(&live.session_env), start).await;
}
