//! What the bench binaries share: the listening socket and the client frames the two raw
//! baselines understand (each keeps its own WebSocket library and connection handling), and the
//! fan-out payload's clock and size, common to the load generator and the embedding host.

pub mod api_publisher;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Bytes of the `pad` string in every fan-out publication's payload (`{"t", "n", "pad"}`).
pub const PAYLOAD_PAD_BYTES: usize = 64;

/// The fan-out payload's `t`: the wall clock in nanoseconds. A clock every process on the machine
/// shares, so a publication stamped by another process (the embedding host of `api-publish`) is
/// timed like one stamped by the load generator itself.
pub fn clock_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
