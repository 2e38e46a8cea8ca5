//! Raw fastwebsockets baseline: the same minimal behaviour as `baseline_tt` (ping -> pong,
//! subscribe -> ack, publish -> encode the `message` frame once and push the shared bytes to every
//! subscriber), on fastwebsockets 0.10 behind a hyper 1 HTTP/1.1 upgrade. No auth, no origin
//! check, no limits.
//!
//! Each connection is split: its read task answers requests inline and its write task drains the
//! subscriber queue; the write half is shared through a mutex (fastwebsockets writes each frame
//! to the socket at once, there is no separate flush).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use wsguard_bench::{ClientFrame, listen, reply};

#[derive(Parser)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9002")]
    listen: std::net::SocketAddr,
    /// Per-subscriber outbound queue (publications); a full queue drops the publication.
    #[arg(long, default_value_t = 4096)]
    queue: usize,
}

/// Channel name -> (subscriber id, sender of pre-encoded publications).
type Hub = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Bytes>)>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = listen(args.listen)?;
    let hub: Hub = Arc::default();
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let (hub, conn_id, queue) = (hub.clone(), next_id, args.queue);
        tokio::spawn(async move {
            let service = service_fn(move |req| upgrade(req, hub.clone(), conn_id, queue));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
        });
    }
}

async fn upgrade(
    mut req: Request<Incoming>,
    hub: Hub,
    conn_id: u64,
    queue: usize,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        if let Ok(ws) = fut.await {
            serve(ws, hub, conn_id, queue).await;
        }
    });
    Ok(response)
}

async fn serve(
    mut ws: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
    hub: Hub,
    conn_id: u64,
    queue: usize,
) {
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let (mut read, write) = ws.split(tokio::io::split);
    let write = Arc::new(tokio::sync::Mutex::new(write));
    let (tx, mut rx) = mpsc::channel::<Bytes>(queue);

    let writer = {
        let write = Arc::clone(&write);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut w = write.lock().await;
                if w.write_frame(Frame::text(Payload::Borrowed(&first))).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if w.write_frame(Frame::text(Payload::Borrowed(&more))).await.is_err() {
                        return;
                    }
                }
            }
        })
    };

    let mut subscribed: Vec<String> = Vec::new();
    let mut obligated = |frame: Frame<'static>| {
        let write = Arc::clone(&write);
        async move { write.lock().await.write_frame(frame).await }
    };
    loop {
        let frame = match read.read_frame(&mut obligated).await {
            Ok(frame) => frame,
            Err(_) => break,
        };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text => {}
            _ => continue,
        }
        let out = match serde_json::from_slice::<ClientFrame>(&frame.payload) {
            Err(_) => b"{\"type\":\"error\",\"code\":\"invalid_json\"}".to_vec(),
            Ok(f) => match (f.action, f.channel, f.payload) {
                ("ping", _, _) => reply("pong", f.id).into_bytes(),
                ("subscribe", Some(ch), _) => {
                    hub.lock().expect("hub").entry(ch.to_owned()).or_default().push((conn_id, tx.clone()));
                    subscribed.push(ch.to_owned());
                    reply("ack", f.id).into_bytes()
                }
                ("publish", Some(ch), Some(payload)) => {
                    // Encode once; every subscriber gets a clone of the same bytes.
                    let msg = Bytes::from(format!(
                        "{{\"type\":\"message\",\"channel\":{},\"payload\":{}}}",
                        serde_json::to_string(ch).unwrap_or_default(),
                        payload.get()
                    ));
                    if let Some(subs) = hub.lock().expect("hub").get(ch) {
                        for (_, sub) in subs {
                            let _ = sub.try_send(msg.clone());
                        }
                    }
                    reply("ack", f.id).into_bytes()
                }
                _ => b"{\"type\":\"error\",\"code\":\"invalid_frame\"}".to_vec(),
            },
        };
        if write.lock().await.write_frame(Frame::text(Payload::Owned(out))).await.is_err() {
            break;
        }
    }
    writer.abort();
    let mut hub = hub.lock().expect("hub");
    for ch in subscribed {
        if let Some(subs) = hub.get_mut(&ch) {
            subs.retain(|(id, _)| *id != conn_id);
        }
    }
}
