//! The admin listener: `/metrics` (Prometheus/OpenMetrics text), `/healthz` (the process is
//! alive) and `/readyz` (503 while draining, while a `[cluster]` broker is unreachable, or while an
//! issuer's identity-provider keys are not loaded yet). It stays up until the drain is over so an
//! orchestrator sees the drain happen. Requests are tiny, read with a deadline and a byte cap.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;

use super::stats::Stats;
use crate::auth::TokenVerifier;
use crate::cluster::Cluster;

const MAX_REQUEST_BYTES: usize = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until `stop` is cancelled. `draining`, or the cluster not being ready, turns `/readyz`
/// to 503.
pub(crate) async fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    cluster: Arc<Cluster>,
    verifier: Arc<ArcSwap<TokenVerifier>>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let stats = Arc::clone(&stats);
        let cluster = Arc::clone(&cluster);
        let verifier = Arc::clone(&verifier);
        let draining = draining.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &stats, &cluster, &verifier, &draining)).await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    stats: &Stats,
    cluster: &Cluster,
    verifier: &ArcSwap<TokenVerifier>,
    draining: &CancellationToken,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let (method, path) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = request.path.unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                break (request.method.unwrap_or("").to_string(), path);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => {}
            _ => return respond(&mut stream, "400 Bad Request", "text/plain", "bad request\n", true).await,
        }
    };
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", "GET only\n", true).await;
    }
    let has_body = method == "GET";
    match path.as_str() {
        "/metrics" => {
            let body = stats.encode();
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
                has_body,
            )
            .await
        }
        "/healthz" => respond(&mut stream, "200 OK", "text/plain", "ok\n", has_body).await,
        "/readyz" if draining.is_cancelled() => {
            respond(&mut stream, "503 Service Unavailable", "text/plain", "draining\n", has_body).await
        }
        "/readyz" if !cluster.is_ready() => {
            respond(&mut stream, "503 Service Unavailable", "text/plain", "broker unreachable\n", has_body).await
        }
        "/readyz" if !verifier.load().is_ready() => {
            let body =
                format!("identity provider keys not loaded: {}\n", verifier.load().issuers_without_keys().join(" "));
            respond(&mut stream, "503 Service Unavailable", "text/plain", &body, has_body).await
        }
        "/readyz" => respond(&mut stream, "200 OK", "text/plain", "ready\n", has_body).await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n", has_body).await,
    }
}

/// Writes a response; `has_body` is false for HEAD (same headers, no body: RFC 9110 §9.3.2).
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    has_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if has_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
