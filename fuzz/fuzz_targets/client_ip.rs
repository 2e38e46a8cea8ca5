//! Client IP resolution (`X-Forwarded-For`, RFC 7239 `Forwarded`). Input: the first line is the TCP
//! peer address (unparseable: 127.0.0.1), the rest is the request head. Trusted proxies are fixed.
//! Beyond "never panics": an untrusted peer is always the client whatever it sends, an address is
//! never reported in IPv4-mapped IPv6 form, and a forwarded address is only ever taken from a
//! trusted peer.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use wsguard::fuzzing::client_ip;

const TRUSTED: [&str; 4] = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8"];

fuzz_target!(|data: &[u8]| {
    let (peer_line, head) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let peer: IpAddr =
        std::str::from_utf8(peer_line).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let canonical_peer = canonical(peer);
    let Some(client) = client_ip(&TRUSTED, peer, head) else { return };
    assert_eq!(client, canonical(client), "client {client} reported in IPv4-mapped form");
    if !is_trusted(canonical_peer) {
        assert_eq!(client, canonical_peer, "untrusted peer {peer} chose its client IP");
    }
});

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127 || v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.is_loopback() || v6.octets()[0] == 0xfd,
    }
}
