//! Raw tokio-tungstenite baseline: the least a server must do to answer wsguard's benchmark
//! traffic. No auth, no origin check, no rate limits, no schema — only what the load generator
//! needs: `{"action":"ping","id":n}` -> `{"type":"pong","id":n}`, `subscribe` -> ack, and
//! `publish` -> encode the `message` frame once and push the shared bytes to every subscriber.
//!
//! The read buffer is 4 KiB (tungstenite's 128 KiB default costs ~140 KiB per idle connection and
//! makes the baseline slower, not faster). One task per connection, like wsguard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsguard_bench::{ClientFrame, listen, reply};

#[derive(Parser)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: std::net::SocketAddr,
    /// Per-subscriber outbound queue (publications); a full queue drops the publication.
    #[arg(long, default_value_t = 4096)]
    queue: usize,
    /// Serve `wss://` with this PEM certificate chain (with `--tls-key`): the TLS baseline.
    #[arg(long)]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for `--tls-cert`.
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
}

/// A rustls acceptor (ring, TLS 1.2 and 1.3), like wsguard's.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
        .expect("--tls-cert readable")
        .map(|c| c.expect("PEM certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("--tls-key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Channel name -> (subscriber id, sender of pre-encoded publications).
type Hub = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Utf8Bytes>)>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = listen(args.listen)?;
    let hub: Hub = Arc::default();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)),
        _ => None,
    };
    let mut next_id = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        match &tls {
            None => {
                tokio::spawn(serve(stream, hub.clone(), next_id, args.queue));
            }
            Some(acceptor) => {
                let (acceptor, hub, queue) = (acceptor.clone(), hub.clone(), args.queue);
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve(stream, hub, next_id, queue).await;
                    }
                });
            }
        }
    }
}

async fn serve<S>(stream: S, hub: Hub, conn_id: u64, queue: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let config =
        WebSocketConfig::default().read_buffer_size(4096).max_message_size(Some(65536)).max_frame_size(Some(65536));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(queue);
    let mut subscribed: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => {
                        // RFC 6455 5.5.1: answer the client's Close, as wsguard and fastwebsockets
                        // (auto_close) do. tungstenite has queued the reply; without this flush it
                        // would be dropped with the socket.
                        let _ = ws.flush().await;
                        break;
                    }
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(frame) = serde_json::from_str::<ClientFrame>(text.as_str()) else {
                    if ws.send(Message::text("{\"type\":\"error\",\"code\":\"invalid_json\"}")).await.is_err() { break; }
                    continue;
                };
                let out = match (frame.action, frame.channel, frame.payload) {
                    ("ping", _, _) => reply("pong", frame.id).into(),
                    ("subscribe", Some(ch), _) => {
                        hub.lock().expect("hub").entry(ch.to_owned()).or_default().push((conn_id, tx.clone()));
                        subscribed.push(ch.to_owned());
                        reply("ack", frame.id).into()
                    }
                    ("publish", Some(ch), Some(payload)) => {
                        // Encode once; every subscriber gets a clone of the same bytes.
                        let msg: Utf8Bytes = format!(
                            "{{\"type\":\"message\",\"channel\":{},\"payload\":{}}}",
                            serde_json::to_string(ch).unwrap_or_default(),
                            payload.get()
                        ).into();
                        if let Some(subs) = hub.lock().expect("hub").get(ch) {
                            for (_, sub) in subs {
                                let _ = sub.try_send(msg.clone());
                            }
                        }
                        reply("ack", frame.id).into()
                    }
                    _ => Utf8Bytes::from_static("{\"type\":\"error\",\"code\":\"invalid_frame\"}"),
                };
                if ws.send(Message::Text(out)).await.is_err() { break; }
            }
            Some(msg) = rx.recv() => {
                // Batch: queue everything already waiting, flush once.
                if ws.feed(Message::Text(msg)).await.is_err() { break; }
                let mut ok = true;
                while let Ok(more) = rx.try_recv() {
                    if ws.feed(Message::Text(more)).await.is_err() { ok = false; break; }
                }
                if !ok || ws.flush().await.is_err() { break; }
            }
        }
    }
    let mut hub = hub.lock().expect("hub");
    for ch in subscribed {
        if let Some(subs) = hub.get_mut(&ch) {
            subs.retain(|(id, _)| *id != conn_id);
        }
    }
}
