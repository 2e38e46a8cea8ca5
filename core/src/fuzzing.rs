//! Entry points for the fuzz targets in `fuzz/` into parsers that are otherwise crate-private
//! (the handshake request, origin matching, token extraction, forwarded-header parsing, the PROXY
//! protocol header, channel patterns). Not part of the supported API: hidden from the docs and free to change.

use std::net::IpAddr;

use futures_util::FutureExt;

use crate::auth::TokenSource;
use crate::config::problems::Problems;
use crate::handshake::proxy_header::{self, HeaderSource, ProxyHeader, ProxyProtocol};
use crate::handshake::{OriginAllowlist, OriginsConfig, TrustedProxies, request, token};
use crate::policy::pattern::ChannelPattern;

/// Parses a request head the way the handshake does (`max_header_bytes` = `max`). The slice
/// never blocks, so the read completes synchronously.
pub fn parse_request_head(bytes: &[u8], max: usize) -> Result<(), String> {
    let mut input = bytes;
    let parsed = request::read_head(&mut input, max.max(1))
        .now_or_never()
        .unwrap_or_else(|| Err(crate::handshake::Rejection::new(crate::ErrorCode::BadRequest, "pending")));
    match parsed {
        Ok((head, _rest)) => request::check_upgrade(&head, "/ws").map(|_| ()).map_err(|r| r.to_string()),
        Err(r) => Err(r.to_string()),
    }
}

/// Compiles `allow` like `[origins] allow` and checks `origin` (None: header absent).
pub fn check_origin(allow: &[&str], origin: Option<&[u8]>) -> bool {
    let mut problems = Problems::default();
    let config = OriginsConfig { allow: allow.iter().map(|s| s.to_string()).collect(), allow_missing: false };
    OriginAllowlist::compile(&config, &mut problems).check(origin).is_ok()
}

/// Parses a request head and looks for a token in every source (header, subprotocol, cookie,
/// query), in that order.
pub fn find_token(head_bytes: &[u8]) -> Option<String> {
    let mut input = head_bytes;
    let (head, _) = request::read_head(&mut input, 64 * 1024).now_or_never()?.ok()?;
    let sources = [TokenSource::Header, TokenSource::Subprotocol, TokenSource::Cookie, TokenSource::Query];
    token::find_token(&head, &sources, "wsguard_token").ok()?.token.map(|(t, _)| t)
}

/// Resolves the client IP of a request from `peer` with these trusted proxies.
pub fn client_ip(trusted: &[&str], peer: IpAddr, head_bytes: &[u8]) -> Option<IpAddr> {
    let mut input = head_bytes;
    let (head, _) = request::read_head(&mut input, 64 * 1024).now_or_never()?.ok()?;
    let nets = trusted.iter().filter_map(|t| t.parse().ok()).collect();
    TrustedProxies::new(nets).client_ip(peer, &head).ok()
}

/// What reading a PROXY protocol header from a stream gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRead {
    /// `Ok(Some(address))` for a client address, `Ok(None)` for a `LOCAL` header, `Err(result)`
    /// with the `wsguard_proxy_headers_total` result of a refusal.
    pub outcome: Result<Option<std::net::SocketAddr>, &'static str>,
    /// Bytes consumed from the stream.
    pub consumed: usize,
}

/// Reads a PROXY header (`mode`: 1, 2, anything else both versions) from `stream`, whose bytes
/// arrive `chunk` at a time, the way the server reads it from a trusted proxy. Panics if the
/// reader consumes a byte it has not seen.
pub fn proxy_header(mode: u8, stream: &[u8], chunk: usize) -> ProxyRead {
    let mode = match mode {
        1 => ProxyProtocol::V1,
        2 => ProxyProtocol::V2,
        _ => ProxyProtocol::Any,
    };
    let mut source = Arrivals { data: stream, pos: 0, arrived: 0, chunk: chunk.max(1) };
    let outcome = proxy_header::read(&mut source, mode).now_or_never().expect("in-memory reads never wait");
    let outcome = match outcome {
        Ok(ProxyHeader::Client(address)) => Ok(Some(address)),
        Ok(ProxyHeader::Local) => Ok(None),
        Err(refusal) => Err(refusal.result()),
    };
    ProxyRead { outcome, consumed: source.pos }
}

/// The largest PROXY header the server reads (version 2 with TLVs).
pub const PROXY_HEADER_MAX_BYTES: usize = proxy_header::V2_MAX_BYTES;

/// A stream whose bytes arrive `chunk` more at every peek.
struct Arrivals<'a> {
    data: &'a [u8],
    pos: usize,
    arrived: usize,
    chunk: usize,
}

impl HeaderSource for Arrivals<'_> {
    async fn peek(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arrived = self.arrived.saturating_add(self.chunk).min(self.data.len());
        let visible = &self.data[self.pos..self.arrived];
        let n = visible.len().min(buf.len());
        buf[..n].copy_from_slice(&visible[..n]);
        Ok(n)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        assert!(self.pos + buf.len() <= self.arrived, "the PROXY reader consumed bytes it never saw");
        buf.copy_from_slice(&self.data[self.pos..self.pos + buf.len()]);
        self.pos += buf.len();
        Ok(())
    }
}

/// Parses a channel pattern and matches a channel against it; returns the captures.
pub fn match_channel(pattern: &str, channel: &str) -> Option<Vec<(String, String)>> {
    let pattern = ChannelPattern::parse(pattern).ok()?;
    let mut captures: Vec<(String, String)> = pattern.matches(channel)?.into_iter().collect();
    captures.sort();
    Some(captures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_work_on_a_real_request() {
        let head = b"GET /ws?access_token=q HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
        assert_eq!(parse_request_head(head, 8192), Ok(()));
        assert_eq!(find_token(head), Some("q".into()));
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(&["127.0.0.1/32"], peer, head), Some("1.2.3.4".parse().expect("ip")));
        assert!(check_origin(&["https://*.example.com"], Some(b"https://a.example.com")));
        assert_eq!(match_channel("t:{x}", "t:y"), Some(vec![("x".into(), "y".into())]));
        assert!(parse_request_head(b"GET / HTTP/1.1\r\n", 8192).is_err());
        let read = proxy_header(1, b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET", 3);
        assert_eq!(read, ProxyRead { outcome: Ok(Some("192.0.2.1:1".parse().expect("addr"))), consumed: 36 });
    }
}
