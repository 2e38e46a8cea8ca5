//! `wsguard connect`: a minimal line-oriented client for trying a server from a terminal. It adds
//! nothing to the server's security; it only speaks the documented handshake.

use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::fail;

/// Arguments of `wsguard connect`.
#[derive(clap::Args)]
pub(crate) struct ConnectArgs {
    /// `ws://host:port/path` (plain ws only; use a TLS-capable client for wss://).
    url: String,
    /// Bearer token.
    #[arg(long)]
    token: String,
    /// `Origin` header to send (browsers always send one).
    #[arg(long)]
    origin: Option<String>,
    /// Carry the token in `Sec-WebSocket-Protocol` (as browsers must) instead of `Authorization`.
    #[arg(long)]
    subprotocol: bool,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) async fn run(args: ConnectArgs) -> ExitCode {
    let mut request = match args.url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return fail(&format!("bad url: {e}")),
    };
    if request.uri().scheme_str() != Some("ws") {
        return fail("only ws:// URLs are supported by this client");
    }
    let headers = request.headers_mut();
    let header = |v: String| HeaderValue::from_str(&v).map_err(|e| e.to_string());
    let extra = if args.subprotocol {
        header(format!("wsguard.v1, bearer.{}", args.token)).map(|v| ("sec-websocket-protocol", v))
    } else {
        header(format!("Bearer {}", args.token)).map(|v| ("authorization", v))
    };
    match extra {
        Ok((name, value)) => {
            headers.insert(name, value);
        }
        Err(e) => return fail(&format!("bad token: {e}")),
    }
    if let Some(origin) = &args.origin {
        match header(origin.clone()) {
            Ok(v) => {
                headers.insert("origin", v);
            }
            Err(e) => return fail(&format!("bad origin: {e}")),
        }
    }
    let host = request.uri().host().unwrap_or("127.0.0.1").trim_matches(['[', ']']).to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let tcp = match TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot connect to {host}:{port}: {e}")),
    };
    let (ws, _response) = match client_async(request, tcp).await {
        Ok(pair) => pair,
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            return fail(&format!("refused: HTTP {} {}", response.status(), body.trim()));
        }
        Err(e) => return fail(&format!("handshake failed: {e}")),
    };
    eprintln!("connected; type one JSON frame per line, Ctrl-D to close");
    let (mut sink, mut stream) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => {
                    if let Err(e) = sink.send(Message::Text(line.into())).await {
                        return fail(&format!("send failed: {e}"));
                    }
                }
                _ => {
                    stdin_open = false;
                    let _ = sink.send(Message::Close(None)).await;
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => println!("{text}"),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => eprintln!("closed: {} {}", u16::from(f.code), f.reason),
                        None => eprintln!("closed"),
                    }
                    return ExitCode::SUCCESS;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return fail(&format!("connection error: {e}")),
                None => return ExitCode::SUCCESS,
            },
        }
    }
}
