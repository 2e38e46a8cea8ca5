//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that an L4 load
//! balancer sends before the client's bytes to say whose connection it is. This module owns
//! reading that header off the socket and what it means for the connection's address; `ppp`
//! parses it. It reads exactly the header's bytes and never one byte of the TLS ClientHello or
//! the HTTP request behind it: bytes are peeked first and only header bytes are consumed, so the
//! TLS acceptor and the request reader get the untouched stream.
//!
//! It never decides trust (the connection code asks `server.trusted_proxies` and calls
//! [`read`] for a trusted peer, [`starts_with_header`] for any other) and never writes to the
//! socket: every refusal here is a silent close.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v1;
use ppp::v2;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::client_ip::canonical;
use crate::error::ErrorCode;

/// `server.proxy_protocol`: whether connections from `server.trusted_proxies` start with a PROXY
/// protocol header, and which versions are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    /// No PROXY header is read; the TCP peer is the connection's address (the default).
    #[default]
    Off,
    /// Trusted peers send a version 1 (text) header.
    V1,
    /// Trusted peers send a version 2 (binary) header.
    V2,
    /// Trusted peers send a header of either version.
    Any,
}

impl ProxyProtocol {
    fn accepts_v1(self) -> bool {
        matches!(self, ProxyProtocol::V1 | ProxyProtocol::Any)
    }

    fn accepts_v2(self) -> bool {
        matches!(self, ProxyProtocol::V2 | ProxyProtocol::Any)
    }
}

/// A version 1 header starts with these bytes (the spec's `"PROXY" + SP`).
const V1_PREFIX: &[u8] = b"PROXY ";
/// The spec's bound on a version 1 header, CRLF included.
const V1_MAX_BYTES: usize = 107;
/// The version 2 signature, then version/command, family/protocol and a big-endian length.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;
const V2_FIXED_BYTES: usize = 16;
/// Largest version 2 header accepted, TLVs included. Load balancers send a few dozen bytes of
/// TLVs (an endpoint id, a TLS summary); a bound keeps a pending connection's buffer small.
pub(crate) const V2_MAX_BYTES: usize = 2048;
/// How soon an untrusted peer's first bytes are looked at again while they are still a prefix
/// of a PROXY signature (a peek shows the same bytes until more arrive, so it cannot wait); the
/// pause doubles up to [`UNDECIDED_RETRY_MAX`], so a peer that stalls there costs a few wake-ups
/// per second, not a hundred.
const UNDECIDED_RETRY: Duration = Duration::from_millis(10);
const UNDECIDED_RETRY_MAX: Duration = Duration::from_millis(500);

/// What a PROXY header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// `PROXY` command (v2) or `TCP4` / `TCP6` (v1): the client's address and port.
    Client(SocketAddr),
    /// Version 2 `LOCAL` command: the proxy's own connection (a health check). The spec says the
    /// real connection endpoints stand, so the TCP peer stays the connection's address.
    Local,
}

/// Why a trusted peer's PROXY header was refused; the connection is closed before TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyRefusal {
    /// The stream does not start with a PROXY header (or the peer closed before one).
    Missing(String),
    /// The header is malformed, too long or of a version `server.proxy_protocol` does not accept.
    Invalid(String),
    /// A well-formed header without a client IP address: v1 `UNKNOWN`, or a v2 `PROXY` command
    /// with the `UNSPEC` or `UNIX` family. Refused rather than falling back to the proxy's address:
    /// that would put every such client under one address for quotas and bans, and let them send
    /// forwarded headers that the proxy's address makes believed.
    NoAddress(String),
}

impl ProxyRefusal {
    /// The stable code of the `HandshakeRejected` event.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ProxyRefusal::Missing(_) => ErrorCode::ProxyHeaderMissing,
            ProxyRefusal::Invalid(_) | ProxyRefusal::NoAddress(_) => ErrorCode::ProxyHeaderInvalid,
        }
    }

    /// The `result` label of `wsguard_proxy_headers_total`.
    pub(crate) fn result(&self) -> &'static str {
        match self {
            ProxyRefusal::Missing(_) => "missing",
            ProxyRefusal::Invalid(_) => "invalid",
            ProxyRefusal::NoAddress(_) => "no_address",
        }
    }

    /// What happened, for the event and the log.
    pub(crate) fn detail(&self) -> &str {
        match self {
            ProxyRefusal::Missing(d) | ProxyRefusal::Invalid(d) | ProxyRefusal::NoAddress(d) => d,
        }
    }
}

/// Which signature the first bytes of a stream carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    V1,
    V2,
    /// The bytes (possibly none) are a strict prefix of a signature: more are needed.
    Undecided,
    /// Neither.
    None,
}

fn signature(bytes: &[u8]) -> Signature {
    if bytes.starts_with(V1_PREFIX) {
        Signature::V1
    } else if bytes.starts_with(V2_SIGNATURE) {
        Signature::V2
    } else if V1_PREFIX.starts_with(bytes) || V2_SIGNATURE.starts_with(bytes) {
        Signature::Undecided
    } else {
        Signature::None
    }
}

/// How much of the bytes seen at the start of a stream is a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Every byte seen belongs to a header that has not ended yet (or may still turn out to be
    /// one): more are needed.
    Incomplete,
    /// The header is the first this many bytes.
    Complete(usize),
    /// The stream does not start with a PROXY header.
    NotHeader,
    /// It starts like a header that cannot be accepted.
    Invalid(&'static str),
}

/// Decides from the bytes seen so far where the header ends, without parsing it.
pub(crate) fn scan(bytes: &[u8], mode: ProxyProtocol) -> Scan {
    match signature(bytes) {
        Signature::Undecided => Scan::Incomplete,
        Signature::None => Scan::NotHeader,
        Signature::V1 if !mode.accepts_v1() => Scan::Invalid("a version 1 header; server.proxy_protocol accepts v2"),
        Signature::V2 if !mode.accepts_v2() => Scan::Invalid("a version 2 header; server.proxy_protocol accepts v1"),
        Signature::V1 => {
            let window = &bytes[..bytes.len().min(V1_MAX_BYTES)];
            match window.windows(2).position(|w| w == b"\r\n") {
                Some(i) => Scan::Complete(i + 2),
                None if bytes.len() >= V1_MAX_BYTES => Scan::Invalid("version 1 header longer than 107 bytes"),
                None => Scan::Incomplete,
            }
        }
        Signature::V2 if bytes.len() < V2_FIXED_BYTES => Scan::Incomplete,
        Signature::V2 => {
            let total = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
            if total > V2_MAX_BYTES {
                Scan::Invalid("version 2 header longer than 2048 bytes")
            } else if bytes.len() >= total {
                Scan::Complete(total)
            } else {
                Scan::Incomplete
            }
        }
    }
}

/// Parses one complete header (exactly the bytes [`scan`] delimited) with `ppp`.
pub(crate) fn interpret(header: &[u8]) -> Result<ProxyHeader, ProxyRefusal> {
    let invalid = |why: String| ProxyRefusal::Invalid(why);
    match signature(header) {
        Signature::V1 => {
            let parsed = v1::Header::try_from(header).map_err(|e| invalid(format!("version 1: {e}")))?;
            // `ppp` ends the line at the first CR; a header with a bare CR inside is not one line.
            if parsed.header.len() != header.len() {
                return Err(invalid("version 1: CR inside the line".into()));
            }
            match parsed.addresses {
                v1::Addresses::Tcp4(a) => Ok(client(a.source_address.into(), a.source_port)),
                v1::Addresses::Tcp6(a) => Ok(client(a.source_address.into(), a.source_port)),
                v1::Addresses::Unknown => Err(ProxyRefusal::NoAddress("version 1 UNKNOWN".into())),
            }
        }
        Signature::V2 => {
            let parsed = v2::Header::try_from(header).map_err(|e| invalid(format!("version 2: {e}")))?;
            if parsed.len() != header.len() {
                return Err(invalid("version 2: length mismatch".into()));
            }
            if let Some(Err(e)) = parsed.tlvs().find(Result::is_err) {
                return Err(invalid(format!("version 2 TLV: {e}")));
            }
            if parsed.command == v2::Command::Local {
                return Ok(ProxyHeader::Local);
            }
            if parsed.protocol == v2::Protocol::Datagram {
                return Err(invalid("version 2: a datagram (UDP) connection".into()));
            }
            match parsed.addresses {
                v2::Addresses::IPv4(a) => Ok(client(a.source_address.into(), a.source_port)),
                v2::Addresses::IPv6(a) => Ok(client(a.source_address.into(), a.source_port)),
                v2::Addresses::Unspecified => Err(ProxyRefusal::NoAddress("version 2 UNSPEC family".into())),
                v2::Addresses::Unix(_) => Err(ProxyRefusal::NoAddress("version 2 UNIX family".into())),
            }
        }
        Signature::Undecided | Signature::None => Err(ProxyRefusal::Missing("no PROXY signature".into())),
    }
}

fn client(ip: std::net::IpAddr, port: u16) -> ProxyHeader {
    ProxyHeader::Client(SocketAddr::new(canonical(ip), port))
}

/// A stream the header is read from: peek shows the next bytes without consuming them, and
/// `read_exact` consumes bytes already peeked. The socket, and in-memory sources for the fuzz
/// target and the unit tests.
pub(crate) trait HeaderSource {
    /// Copies the next bytes into `buf` without consuming them, waiting until there is at least
    /// one; 0 at the end of the stream.
    async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Consumes exactly `buf.len()` bytes.
    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

impl HeaderSource for TcpStream {
    async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf).await
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        AsyncReadExt::read_exact(self, buf).await.map(|_| ())
    }
}

/// Reads the header a trusted peer must send, consuming exactly its bytes. The caller bounds the
/// wait (`server.handshake_timeout_secs`). A header split over many TCP segments is assembled: the
/// bytes of an unfinished header are consumed as they come, since they can belong to nothing
/// else.
pub(crate) async fn read<S: HeaderSource>(source: &mut S, mode: ProxyProtocol) -> Result<ProxyHeader, ProxyRefusal> {
    let mut buf = vec![0u8; V2_MAX_BYTES];
    let mut consumed = 0;
    let ended = |consumed: usize, why: String| {
        if consumed == 0 {
            ProxyRefusal::Missing(format!("{why} before a PROXY header"))
        } else {
            ProxyRefusal::Invalid(format!("{why} inside the PROXY header"))
        }
    };
    loop {
        let seen = match source.peek(&mut buf[consumed..]).await {
            Ok(0) => return Err(ended(consumed, "closed".into())),
            Ok(n) => consumed + n,
            Err(e) => return Err(ended(consumed, e.to_string())),
        };
        let (end, is_complete) = match scan(&buf[..seen], mode) {
            Scan::Incomplete => (seen, false),
            Scan::Complete(end) => (end, true),
            Scan::NotHeader => {
                return Err(ProxyRefusal::Missing("the stream does not start with a PROXY header".into()));
            }
            Scan::Invalid(why) => return Err(ProxyRefusal::Invalid(why.into())),
        };
        // The end of a header lies past every byte an earlier scan called unfinished.
        if end > consumed {
            source.read_exact(&mut buf[consumed..end]).await.map_err(|e| ended(consumed, e.to_string()))?;
            consumed = end;
        }
        if is_complete {
            return interpret(&buf[..end]);
        }
    }
}

/// Whether a peer that may not send a header (not in `server.trusted_proxies`) starts with one,
/// consuming nothing. While its first bytes are still a prefix of a signature it looks again
/// again after a pause that doubles from 10 ms to 500 ms; the caller bounds the wait. `false` at
/// the end of the stream.
pub(crate) async fn starts_with_header(tcp: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 12];
    let mut pause = UNDECIDED_RETRY;
    loop {
        let n = tcp.peek(&mut buf).await?;
        match (n, signature(&buf[..n])) {
            (0, _) | (_, Signature::None) => return Ok(false),
            (_, Signature::V1 | Signature::V2) => return Ok(true),
            (_, Signature::Undecided) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(UNDECIDED_RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// An in-memory stream whose bytes arrive `chunk` at a time (one more chunk per peek).
    struct Chunked<'a> {
        data: &'a [u8],
        pos: usize,
        arrived: usize,
        chunk: usize,
    }

    impl HeaderSource for Chunked<'_> {
        async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.arrived = (self.arrived + self.chunk).min(self.data.len());
            let visible = &self.data[self.pos..self.arrived];
            let n = visible.len().min(buf.len());
            buf[..n].copy_from_slice(&visible[..n]);
            Ok(n)
        }

        async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
            assert!(self.pos + buf.len() <= self.arrived, "consumed bytes that were never peeked");
            buf.copy_from_slice(&self.data[self.pos..self.pos + buf.len()]);
            self.pos += buf.len();
            Ok(())
        }
    }

    /// Reads with every chunk size from 1 to the whole input; all must agree. Returns the result
    /// and how many bytes were consumed.
    fn read_all_ways(data: &[u8], mode: ProxyProtocol) -> (Result<ProxyHeader, ProxyRefusal>, usize) {
        let mut first = None;
        for chunk in 1..=data.len().max(1) {
            let mut source = Chunked { data, pos: 0, arrived: 0, chunk };
            let result = read(&mut source, mode).now_or_never().expect("in-memory reads never wait");
            let outcome = (result, source.pos);
            match &first {
                None => first = Some(outcome),
                Some(f) => assert_eq!(f.0.is_ok(), outcome.0.is_ok(), "chunk {chunk} disagrees"),
            }
        }
        first.expect("at least one run")
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).expect("short body").to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    const TLS_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

    #[test]
    fn v1_is_read_exactly() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
        let data = [&header[..], TLS_HELLO].concat();
        let (result, consumed) = read_all_ways(&data, ProxyProtocol::V1);
        assert_eq!(result, Ok(ProxyHeader::Client("203.0.113.7:51000".parse().expect("addr"))));
        assert_eq!(consumed, header.len());
        let six = b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 443\r\nGET";
        let (result, consumed) = read_all_ways(six, ProxyProtocol::Any);
        assert_eq!(result, Ok(ProxyHeader::Client("[2001:db8::5]:4000".parse().expect("addr"))));
        assert_eq!(consumed, six.len() - 3);
    }

    #[test]
    fn v2_is_read_exactly_with_tlvs() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xab, 0xcd]); // a NOOP TLV
        let header = v2(1, 0x11, &body);
        let data = [&header[..], TLS_HELLO].concat();
        let (result, consumed) = read_all_ways(&data, ProxyProtocol::V2);
        assert_eq!(result, Ok(ProxyHeader::Client("198.51.100.9:8080".parse().expect("addr"))));
        assert_eq!(consumed, header.len());
        let mapped = [[0u8; 10].as_slice(), &[0xff, 0xff, 192, 0, 2, 1], &[0; 16], &[0, 80, 1, 187]].concat();
        let (result, _) = read_all_ways(&v2(1, 0x21, &mapped), ProxyProtocol::Any);
        assert_eq!(result, Ok(ProxyHeader::Client("192.0.2.1:80".parse().expect("addr"))), "canonical IPv4");
    }

    #[test]
    fn local_and_addressless_headers() {
        assert_eq!(read_all_ways(&v2(0, 0x00, &[]), ProxyProtocol::V2).0, Ok(ProxyHeader::Local));
        let (unspec, _) = read_all_ways(&v2(1, 0x00, &[]), ProxyProtocol::V2);
        assert!(matches!(unspec, Err(ProxyRefusal::NoAddress(_))), "{unspec:?}");
        let (unix, _) = read_all_ways(&v2(1, 0x31, &[0; 216]), ProxyProtocol::V2);
        assert!(matches!(unix, Err(ProxyRefusal::NoAddress(_))), "{unix:?}");
        let (unknown, _) = read_all_ways(b"PROXY UNKNOWN\r\n", ProxyProtocol::V1);
        assert!(matches!(unknown, Err(ProxyRefusal::NoAddress(_))), "{unknown:?}");
        let udp = v2(1, 0x12, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        assert!(matches!(read_all_ways(&udp, ProxyProtocol::V2).0, Err(ProxyRefusal::Invalid(_))));
    }

    #[test]
    fn missing_wrong_version_and_malformed_are_refused() {
        let missing = read_all_ways(b"GET /ws HTTP/1.1\r\n\r\n", ProxyProtocol::Any).0;
        assert!(matches!(missing, Err(ProxyRefusal::Missing(_))), "{missing:?}");
        assert!(matches!(read_all_ways(TLS_HELLO, ProxyProtocol::V1).0, Err(ProxyRefusal::Missing(_))));
        let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        assert!(matches!(read_all_ways(v1, ProxyProtocol::V2).0, Err(ProxyRefusal::Invalid(_))));
        assert!(matches!(read_all_ways(&v2(0, 0, &[]), ProxyProtocol::V1).0, Err(ProxyRefusal::Invalid(_))));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            &[b"PROXY ".as_slice(), &[b'x'; 120]].concat(),
        ] {
            let (result, consumed) = read_all_ways(bad, ProxyProtocol::Any);
            assert!(matches!(result, Err(ProxyRefusal::Invalid(_))), "{:?}: {result:?}", String::from_utf8_lossy(bad));
            assert!(consumed <= V1_MAX_BYTES);
        }
        let too_long = [&v2(1, 0x11, &[0; 12])[..14], &[0xff, 0xff]].concat();
        assert!(matches!(read_all_ways(&too_long, ProxyProtocol::V2).0, Err(ProxyRefusal::Invalid(_))));
        let bad_tlv = v2(1, 0x11, &[[1u8; 12].as_slice(), &[0x04, 0x00, 0x09]].concat());
        assert!(matches!(read_all_ways(&bad_tlv, ProxyProtocol::V2).0, Err(ProxyRefusal::Invalid(_))));
    }

    #[test]
    fn a_stream_that_ends_early() {
        assert!(matches!(read_all_ways(b"", ProxyProtocol::Any).0, Err(ProxyRefusal::Missing(_))));
        assert!(matches!(read_all_ways(b"PROXY TCP4 1.2", ProxyProtocol::Any).0, Err(ProxyRefusal::Invalid(_))));
        assert!(matches!(read_all_ways(&V2_SIGNATURE[..7], ProxyProtocol::Any).0, Err(ProxyRefusal::Invalid(_))));
    }

    #[test]
    fn signatures() {
        assert_eq!(signature(b"PRO"), Signature::Undecided);
        assert_eq!(signature(b"POST"), Signature::None);
        assert_eq!(signature(b"\r\n\r\n\0"), Signature::Undecided);
        assert_eq!(signature(b"\r\nGET"), Signature::None);
        assert_eq!(signature(b"PROXY UNKNOWN"), Signature::V1);
        assert_eq!(signature(TLS_HELLO), Signature::None);
    }
}
