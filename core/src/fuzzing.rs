//! Entry points for the fuzz targets in `fuzz/` into parsers that are otherwise crate-private
//! (the handshake request, origin matching, token extraction, forwarded-header parsing, channel
//! patterns). Not part of the supported API: hidden from the docs and free to change.

use std::net::IpAddr;

use futures_util::FutureExt;

use crate::auth::TokenSource;
use crate::config::problems::Problems;
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
    }
}
