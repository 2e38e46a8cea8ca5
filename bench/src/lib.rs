//! What the two raw baselines share: the listening socket and the client frames they understand.
//! Each baseline keeps its own WebSocket library and connection handling.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` with the same explicit backlog a hardened server should use: tokio's default
/// of 128 overflows under connection bursts.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// A client frame, parsed with borrowed fields (the payload kept raw).
#[derive(Deserialize)]
pub struct ClientFrame<'a> {
    pub action: &'a str,
    pub id: Option<u64>,
    #[serde(borrow)]
    pub channel: Option<&'a str>,
    #[serde(borrow)]
    pub payload: Option<&'a RawValue>,
}

/// A `{"type":kind,"id":id}` reply.
pub fn reply(kind: &str, id: Option<u64>) -> String {
    match id {
        Some(id) => format!("{{\"type\":\"{kind}\",\"id\":{id}}}"),
        None => format!("{{\"type\":\"{kind}\"}}"),
    }
}
