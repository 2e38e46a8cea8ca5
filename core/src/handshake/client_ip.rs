//! Client IP resolution. The TCP peer is the client unless the peer is a trusted proxy; then the
//! forwarding headers are walked from the right (the hop our proxy appended) and the first address
//! that is not itself a trusted proxy is the client. Headers from anyone else are ignored: a client
//! cannot choose its own IP for quotas, rate limits or bans.

use std::net::IpAddr;

use ipnet::IpNet;

use super::rejection::Rejection;
use super::request::RequestHead;
use crate::error::ErrorCode;

/// The compiled `server.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped address compares as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Resolves the client IP for a request received from `peer`.
    pub(crate) fn client_ip(&self, peer: IpAddr, head: &RequestHead) -> Result<IpAddr, Rejection> {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return Ok(peer);
        }
        // RFC 7239 `Forwarded` is preferred when present; otherwise `X-Forwarded-For`.
        let hops: Vec<String> = if head.all("forwarded").next().is_some() {
            head.all("forwarded").flat_map(forwarded_for_values).collect::<Result<_, _>>()?
        } else {
            head.all("x-forwarded-for")
                .flat_map(|v| String::from_utf8_lossy(v).split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
                .collect()
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            // RFC 7239 §6: `unknown` and obfuscated (`_x`) identifiers hide the next hop; the last
            // address we could verify stands for the client.
            if hop.eq_ignore_ascii_case("unknown") || hop.starts_with('_') {
                break;
            }
            let ip = parse_hop(hop).ok_or_else(|| {
                Rejection::new(ErrorCode::BadForwardedHeader, format!("unparseable forwarded hop {hop:?}"))
            })?;
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        Ok(client)
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The `for=` values of one `Forwarded` header, in order.
fn forwarded_for_values(value: &[u8]) -> Vec<Result<String, Rejection>> {
    let text = String::from_utf8_lossy(value);
    let mut out = Vec::new();
    for element in text.split(',') {
        for pair in element.split(';') {
            if let Some((k, v)) = pair.split_once('=')
                && k.trim().eq_ignore_ascii_case("for")
            {
                out.push(Ok(v.trim().trim_matches('"').to_string()));
            }
        }
    }
    if out.is_empty() {
        out.push(Err(Rejection::new(ErrorCode::BadForwardedHeader, "Forwarded header without for=")));
    }
    out
}

/// Parses `1.2.3.4`, `1.2.3.4:5678`, `[::1]`, `[::1]:5678`, `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(a, _)| a.parse().ok()).map(canonical);
    }
    hop.rsplit_once(':')
        .and_then(|(a, p)| p.parse::<u16>().ok().and(a.parse::<std::net::Ipv4Addr>().ok()))
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::from_parts("GET", "/ws", None, headers)
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().expect("net")).collect())
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let p = proxies(&["10.0.0.0/8"]);
        let ip = p.client_ip("203.0.113.9".parse().expect("ip"), &head(&[("x-forwarded-for", "1.1.1.1")]));
        assert_eq!(ip, Ok("203.0.113.9".parse().expect("ip")));
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = head(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(p.client_ip("10.0.0.2".parse().expect("ip"), &h), Ok("198.51.100.7".parse().expect("ip")));
    }

    #[test]
    fn forwarded_header_is_understood() {
        let p = proxies(&["127.0.0.1/32"]);
        let h = head(&[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(p.client_ip("127.0.0.1".parse().expect("ip"), &h), Ok("2001:db8::1".parse().expect("ip")));
    }

    #[test]
    fn garbage_from_a_trusted_proxy_is_refused() {
        let p = proxies(&["127.0.0.1/32"]);
        let h = head(&[("x-forwarded-for", "not-an-ip")]);
        let err = p.client_ip("127.0.0.1".parse().expect("ip"), &h).expect_err("garbage");
        assert_eq!(err.code(), ErrorCode::BadForwardedHeader);
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let p = proxies(&["127.0.0.1/32"]);
        assert_eq!(p.client_ip("127.0.0.1".parse().expect("ip"), &head(&[])), Ok("127.0.0.1".parse().expect("ip")));
    }
}
