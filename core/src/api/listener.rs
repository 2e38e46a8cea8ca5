//! The server API's listener: at most `api.max_connections` connections at once (more wait in the
//! kernel backlog), TLS when configured (client certificates verified by rustls under mutual
//! TLS), HTTP/1.1 with one request per connection so that `api.request_timeout_secs` bounds the
//! whole exchange, handshake included. Runs until the server's drain is over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access::certificate_subject;
use super::{Api, Peer, router};

/// Pause after an accept error (typically EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Idle callers' rate state is forgotten this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Serves until `stop` is cancelled, then waits for the requests in flight (each time-boxed).
pub(crate) async fn serve(listener: TcpListener, api: Arc<Api>, stop: CancellationToken) {
    let routes = router(Arc::clone(&api));
    let slots = Arc::new(Semaphore::new(api.settings.max_connections));
    let tracker = TaskTracker::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            _ = sweep.tick() => {
                api.access.forget_idle();
                continue;
            }
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(target: "wsguard::api", error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let tls = api.settings.tls.clone();
        let routes = routes.clone();
        let deadline = api.settings.request_timeout;
        tracker.spawn(async move {
            let _permit = permit;
            if tokio::time::timeout(deadline, connection(tcp, addr, tls, routes)).await.is_err() {
                tracing::debug!(target: "wsguard::api", %addr, "request timed out");
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn connection(tcp: TcpStream, addr: SocketAddr, tls: Option<TlsAcceptor>, routes: axum::Router) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => exchange(tcp, Peer { ip: addr.ip(), subject: None }, routes).await,
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => {
                let subject = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| certificate_subject(cert.as_ref()));
                exchange(stream, Peer { ip: addr.ip(), subject }, routes).await;
            }
            // A refused client certificate ends here, inside TLS (no HTTP answer is possible).
            Err(e) => tracing::info!(target: "wsguard::api", %addr, error = %e, "API TLS handshake failed"),
        },
    }
}

/// One HTTP/1.1 request on `io`, with the peer attached for `Api::begin`.
async fn exchange<S>(io: S, peer: Peer, routes: axum::Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(routes.layer(Extension(peer)));
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(target: "wsguard::api", error = %e, "API connection ended with an error");
    }
}
