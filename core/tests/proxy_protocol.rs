//! The client's address behind an L4 load balancer, over real sockets: PROXY protocol v1 and v2
//! headers from a trusted peer set the connection's address (seen in events, bans and per-IP
//! quotas), a header from any other peer and a missing, malformed or late header close the
//! connection before TLS, TLS works after the header, and `limits.pending_handshakes_per_ip` caps
//! the handshakes one address holds (by TCP peer, or by PROXY source).

mod support;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use wsguard::limits::BanTarget;
use wsguard::{Event, Hooks};

use support::*;

/// A host that records every event it is handed.
#[derive(Default)]
struct EventLog(Mutex<Vec<Event>>);

impl Hooks for EventLog {
    fn on_event(&self, event: &Event) -> wsguard::hooks::HookFuture<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(event.clone());
        Box::pin(std::future::ready(()))
    }
}

impl EventLog {
    /// Waits (bounded) until an event matching `probe` has arrived and returns it.
    async fn wait_for(&self, what: &str, probe: impl Fn(&Event) -> bool) -> Event {
        let polled = tokio::time::timeout(WAIT, async {
            loop {
                let found = self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|e| probe(e)).cloned();
                if let Some(event) = found {
                    return event;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        polled.unwrap_or_else(|_| {
            panic!(
                "no {what} event arrived; events so far: {:#?}",
                self.0.lock().unwrap_or_else(PoisonError::into_inner)
            )
        })
    }
}

/// A server behind a load balancer on 127.0.0.1 speaking `mode`, with extra `[server]` and
/// `[limits]` lines, recording its events.
async fn behind_proxy(mode: &str, server: &[&str], limits: &[&str], tls: bool) -> (TestServer, Arc<EventLog>) {
    let events = Arc::new(EventLog::default());
    let mut setup = Setup::new().hooks(Arc::clone(&events) as Arc<dyn Hooks>);
    setup = setup.server(&format!("proxy_protocol = \"{mode}\""));
    if !server.iter().any(|l| l.starts_with("trusted_proxies")) {
        setup = setup.server("trusted_proxies = [\"127.0.0.1\"]");
    }
    for line in server {
        setup = setup.server(line);
    }
    for line in limits {
        setup = setup.limits(line);
    }
    if tls {
        setup = setup.tls();
    }
    (setup.start().await, events)
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    let family = if source.contains(':') { "TCP6" } else { "TCP4" };
    let dest = if source.contains(':') { "::1" } else { "127.0.0.1" };
    format!("PROXY {family} {source} {dest} {port} 443\r\n").into_bytes()
}

/// A version 2 header: `command` 1 (PROXY) or 0 (LOCAL), TCP over IPv4 from `source`.
fn v2(command: u8, source: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x20 | command, 0x11, 0, 12]);
    out.extend_from_slice(&source);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&443u16.to_be_bytes());
    out
}

/// A TCP connection to the server that has already sent `header`.
async fn with_header(server: &TestServer, header: &[u8]) -> TcpStream {
    let mut tcp = server.tcp().await;
    write_all(&mut tcp, header).await;
    tcp
}

/// A WebSocket handshake for `subject` on a stream that already carried its PROXY header.
async fn ws_after(server: &TestServer, tcp: TcpStream, subject: &str) -> Result<Ws, String> {
    let connect = Connect::new().bearer(&server.token(subject));
    handshake(tcp, &format!("ws://{}{PATH}", server.addr), &connect).await.map(|(ws, _)| ws).map_err(|e| describe(&e))
}

/// The refusal status and code of a handshake refused over HTTP.
async fn refusal_after(server: &TestServer, mut tcp: TcpStream, subject: &str) -> (u16, String) {
    write_all(&mut tcp, &RawRequest::authorized(&server.token(subject)).to_bytes()).await;
    let response = read_response(&mut tcp).await;
    (response.status, response.error_name())
}

/// Asserts that the server closes `tcp` without writing a byte (a reset counts as closed).
async fn assert_closed_silently(mut tcp: TcpStream) {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut received)).await.expect("the server closes in time");
    assert!(received.is_empty(), "expected a silent close, got {:?} ({read:?})", String::from_utf8_lossy(&received));
}

/// Scrapes `/metrics` until `series` reaches `value`; bounded by [`WAIT`].
async fn metric_reaches(server: &TestServer, series: &str, value: f64) {
    let polled = tokio::time::timeout(WAIT, async {
        while server.scrape().await.get(series) != value {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if polled.is_err() {
        panic!("{series} never reached {value}; last scrape: {:?}", server.scrape().await);
    }
}

fn proxy_result(result: &str) -> String {
    format!("wsguard_proxy_headers_total{{result=\"{result}\"}}")
}

fn rejected(code: &str) -> String {
    format!("wsguard_handshakes_total{{result=\"rejected\",code=\"{code}\"}}")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

fn refused_with(event: &Event, wanted: &str) -> Option<(IpAddr, u16)> {
    match event {
        Event::HandshakeRejected { client_ip, code, status, .. } if *code == wanted => Some((*client_ip, *status)),
        _ => None,
    }
}

#[tokio::test]
async fn v1_header_sets_the_address_of_sessions_events_and_bans() {
    let (server, events) = behind_proxy("v1", &[], &[], false).await;
    let mut ws =
        ws_after(&server, with_header(&server, &v1("203.0.113.7", 50000)).await, "alice").await.expect("admitted");
    let opened =
        events.wait_for("session_opened", |e| matches!(e, Event::SessionOpened { user, .. } if user == "alice")).await;
    assert!(matches!(opened, Event::SessionOpened { client_ip, .. } if client_ip == ip("203.0.113.7")), "{opened:?}");
    ping(&mut ws, 1).await;

    // A ban of the PROXY source refuses it, and only it: the proxy's own address is not banned.
    assert!(server.handle.ban(BanTarget::Ip(ip("203.0.113.7")), Duration::from_secs(60)));
    let banned = refusal_after(&server, with_header(&server, &v1("203.0.113.7", 50001)).await, "alice").await;
    assert_eq!(banned, (403, "banned".to_string()));
    let event = events.wait_for("banned", |e| refused_with(e, "banned").is_some()).await;
    assert_eq!(refused_with(&event, "banned"), Some((ip("203.0.113.7"), 403)));
    ws_after(&server, with_header(&server, &v1("2001:db8::9", 50002)).await, "bob").await.expect("another source");
    metric_reaches(&server, &proxy_result("accepted"), 3.0).await;
}

#[tokio::test]
async fn v2_header_sets_the_address_of_the_per_ip_quota() {
    let (server, _events) = behind_proxy("v2", &[], &["connections_per_ip = 1"], false).await;
    let _first =
        ws_after(&server, with_header(&server, &v2(1, [198, 51, 100, 1], 4000)).await, "a").await.expect("first");
    let second = refusal_after(&server, with_header(&server, &v2(1, [198, 51, 100, 1], 4001)).await, "b").await;
    assert_eq!(second, (429, "too_many_connections_per_ip".to_string()), "the PROXY source holds its one session");
    // Every connection comes from 127.0.0.1; only the PROXY source is counted.
    let _other =
        ws_after(&server, with_header(&server, &v2(1, [198, 51, 100, 2], 4002)).await, "c").await.expect("other");
}

#[tokio::test]
async fn v2_local_keeps_the_proxy_address() {
    let (server, events) = behind_proxy("any", &[], &[], false).await;
    let _ws = ws_after(&server, with_header(&server, &v2(0, [0, 0, 0, 0], 0)).await, "health").await.expect("LOCAL");
    let opened =
        events.wait_for("session_opened", |e| matches!(e, Event::SessionOpened { user, .. } if user == "health")).await;
    assert!(matches!(opened, Event::SessionOpened { client_ip, .. } if client_ip == ip("127.0.0.1")), "{opened:?}");
    metric_reaches(&server, &proxy_result("local"), 1.0).await;
}

#[tokio::test]
async fn header_from_an_untrusted_peer_is_dropped_and_direct_clients_still_work() {
    let (server, events) = behind_proxy("any", &["trusted_proxies = [\"10.255.255.1\"]"], &[], false).await;
    assert_closed_silently(with_header(&server, &v1("203.0.113.7", 1234)).await).await;
    assert_closed_silently(with_header(&server, &v2(1, [203, 0, 113, 7], 1234)).await).await;
    // A signature sent a byte at a time is still recognized.
    let mut tcp = server.tcp().await;
    for byte in b"PROXY " {
        write_all(&mut tcp, &[*byte]).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert_closed_silently(tcp).await;
    metric_reaches(&server, &proxy_result("untrusted"), 3.0).await;
    metric_reaches(&server, &rejected("proxy_header_untrusted"), 3.0).await;
    let event = events.wait_for("untrusted", |e| refused_with(e, "proxy_header_untrusted").is_some()).await;
    assert_eq!(
        refused_with(&event, "proxy_header_untrusted"),
        Some((ip("127.0.0.1"), 0)),
        "the TCP peer, nothing sent"
    );
    // A peer that is no proxy and sends no header is an ordinary client.
    let mut ws = server.session("direct").await;
    ping(&mut ws, 1).await;
}

#[tokio::test]
async fn malformed_and_addressless_headers_are_dropped() {
    let (server, _events) = behind_proxy("any", &[], &[], false).await;
    let too_long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100], b"\r\n"].concat();
    let malformed: [&[u8]; 4] = [
        b"PROXY TCP4 203.0.113.999 127.0.0.1 1 443\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1\r\n",
        &too_long,
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04",
    ];
    for header in malformed {
        assert_closed_silently(with_header(&server, header).await).await;
    }
    assert_closed_silently(with_header(&server, b"PROXY UNKNOWN\r\n").await).await;
    let mut unspec = v2(1, [0; 4], 0);
    unspec[13] = 0x00;
    unspec[15] = 0;
    unspec.truncate(16);
    assert_closed_silently(with_header(&server, &unspec).await).await;
    metric_reaches(&server, &proxy_result("invalid"), 4.0).await;
    metric_reaches(&server, &proxy_result("no_address"), 2.0).await;
    metric_reaches(&server, &rejected("proxy_header_invalid"), 6.0).await;
    // The wrong version for the mode is invalid too.
    let (v1_only, _events) = behind_proxy("v1", &[], &[], false).await;
    assert_closed_silently(with_header(&v1_only, &v2(1, [203, 0, 113, 7], 1)).await).await;
    metric_reaches(&v1_only, &proxy_result("invalid"), 1.0).await;
}

#[tokio::test]
async fn missing_header_from_a_trusted_proxy_is_dropped() {
    let (server, _events) = behind_proxy("any", &[], &[], false).await;
    let tcp = with_header(&server, &RawRequest::authorized(&server.token("a")).to_bytes()).await;
    assert_closed_silently(tcp).await;
    // Closing before any byte counts as missing too.
    drop(server.tcp().await);
    metric_reaches(&server, &proxy_result("missing"), 2.0).await;
    metric_reaches(&server, &rejected("proxy_header_missing"), 2.0).await;
}

#[tokio::test]
async fn header_arriving_too_late_is_dropped() {
    let (server, events) = behind_proxy("any", &["handshake_timeout_secs = 0.3"], &[], false).await;
    // Nothing at all, then half a header: both wait past the deadline.
    let silent = server.tcp().await;
    let half = with_header(&server, b"PROXY TCP4 203.0.").await;
    assert_closed_silently(silent).await;
    assert_closed_silently(half).await;
    metric_reaches(&server, &proxy_result("timeout"), 2.0).await;
    let event = events.wait_for("timeout", |e| refused_with(e, "handshake_timeout").is_some()).await;
    assert_eq!(refused_with(&event, "handshake_timeout"), Some((ip("127.0.0.1"), 0)));
}

#[tokio::test]
async fn header_split_across_writes_is_assembled() {
    let (server, events) = behind_proxy("any", &[], &[], false).await;
    for (header, subject, source) in
        [(v1("192.0.2.44", 7000), "split-v1", "192.0.2.44"), (v2(1, [192, 0, 2, 45], 7001), "split-v2", "192.0.2.45")]
    {
        let mut tcp = server.tcp().await;
        tcp.set_nodelay(true).expect("nodelay");
        for piece in header.chunks(5) {
            write_all(&mut tcp, piece).await;
            tcp.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ws = ws_after(&server, tcp, subject).await.expect("admitted after a split header");
        let opened = events
            .wait_for("session_opened", |e| matches!(e, Event::SessionOpened { user, .. } if user == subject))
            .await;
        assert!(matches!(opened, Event::SessionOpened { client_ip, .. } if client_ip == ip(source)), "{opened:?}");
    }
}

#[tokio::test]
async fn tls_after_the_header() {
    let (server, events) = behind_proxy("any", &[], &[], true).await;
    for (header, subject, source) in
        [(v2(1, [192, 0, 2, 77], 9000), "tls-v2", "192.0.2.77"), (v1("192.0.2.78", 9001), "tls-v1", "192.0.2.78")]
    {
        let tls = tls_over(&server, with_header(&server, &header).await).await;
        let url = format!("wss://localhost:{}{PATH}", server.addr.port());
        let connect = Connect::new().bearer(&server.token(subject));
        let (mut ws, _) = handshake(tls, &url, &connect).await.unwrap_or_else(|e| panic!("{}", describe(&e)));
        ping(&mut ws, 1).await;
        let opened = events
            .wait_for("session_opened", |e| matches!(e, Event::SessionOpened { user, .. } if user == subject))
            .await;
        assert!(matches!(opened, Event::SessionOpened { client_ip, .. } if client_ip == ip(source)), "{opened:?}");
    }
    // A trusted peer that starts TLS without a header is closed before TLS.
    let cert = server.cert.clone().expect("TLS setup");
    let connector = support::tls_connector(&cert);
    let tried = tokio::time::timeout(
        WAIT,
        connector.connect(ServerName::try_from("localhost").expect("name"), server.tcp().await),
    )
    .await
    .expect("the server answers in time");
    assert!(tried.is_err(), "TLS without a PROXY header must fail");
    metric_reaches(&server, &proxy_result("missing"), 1.0).await;
}

async fn tls_over(server: &TestServer, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = support::tls_connector(server.cert.as_ref().expect("TLS setup"));
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake after the PROXY header")
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_when_the_proxy_source_is_trusted() {
    // The L4 balancer (127.0.0.1) and an L7 proxy behind it (192.0.2.10) are trusted.
    let trusted = "trusted_proxies = [\"127.0.0.1\", \"192.0.2.10\"]";
    let (server, events) = behind_proxy("v1", &[trusted], &[], false).await;
    let spoof = RawRequest::authorized(&server.token("spoofer")).header("X-Forwarded-For", "198.51.100.200");
    let mut tcp = with_header(&server, &v1("203.0.113.50", 1)).await;
    write_all(&mut tcp, &spoof.to_bytes()).await;
    assert_eq!(read_response(&mut tcp).await.status, 101);
    let relayed = RawRequest::authorized(&server.token("relayed")).header("X-Forwarded-For", "198.51.100.201");
    let mut tcp = with_header(&server, &v1("192.0.2.10", 2)).await;
    write_all(&mut tcp, &relayed.to_bytes()).await;
    assert_eq!(read_response(&mut tcp).await.status, 101);
    for (user_wanted, address) in [("spoofer", "203.0.113.50"), ("relayed", "198.51.100.201")] {
        let opened = events
            .wait_for("session_opened", |e| matches!(e, Event::SessionOpened { user, .. } if user == user_wanted))
            .await;
        assert!(matches!(opened, Event::SessionOpened { client_ip, .. } if client_ip == ip(address)), "{opened:?}");
    }
}

#[tokio::test]
async fn pending_handshakes_are_capped_per_tcp_peer() {
    let server = Setup::new().limits("pending_handshakes_per_ip = 2").start().await;
    // Two connections that say nothing hold the address's two slots.
    let idle = [server.tcp().await, server.tcp().await];
    let third = server.exchange(&RawRequest::authorized(&server.token("a"))).await;
    third.assert_refused(429, "too_many_pending_handshakes_per_ip");
    third.assert_retry_after();
    metric_reaches(&server, &rejected("too_many_pending_handshakes_per_ip"), 1.0).await;
    drop(idle);
    // The slots come back when those connections end.
    let polled = tokio::time::timeout(WAIT, async {
        loop {
            if server.try_ws(&Connect::new().bearer(&server.token("b"))).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "the address got its slots back");

    let tls = Setup::new().limits("pending_handshakes_per_ip = 1").tls().start().await;
    let _idle = tls.tcp().await;
    assert_closed_silently(tls.tcp().await).await;
    metric_reaches(&tls, &rejected("too_many_pending_handshakes_per_ip"), 1.0).await;
}

#[tokio::test]
async fn pending_handshakes_are_capped_per_proxy_source() {
    let (server, events) = behind_proxy("v2", &[], &["pending_handshakes_per_ip = 2"], false).await;
    // All from 127.0.0.1, the trusted balancer, which is not counted itself.
    // Each header is read before the next connection is opened, so the third is the one refused.
    let _a1 = with_header(&server, &v2(1, [203, 0, 113, 1], 1)).await;
    metric_reaches(&server, &proxy_result("accepted"), 1.0).await;
    let _a2 = with_header(&server, &v2(1, [203, 0, 113, 1], 2)).await;
    metric_reaches(&server, &proxy_result("accepted"), 2.0).await;
    let mut a3 = with_header(&server, &v2(1, [203, 0, 113, 1], 3)).await;
    let refused = read_response(&mut a3).await;
    refused.assert_refused(429, "too_many_pending_handshakes_per_ip");
    let event =
        events.wait_for("pending per ip", |e| refused_with(e, "too_many_pending_handshakes_per_ip").is_some()).await;
    assert_eq!(refused_with(&event, "too_many_pending_handshakes_per_ip"), Some((ip("203.0.113.1"), 429)));
    let _b =
        ws_after(&server, with_header(&server, &v2(1, [203, 0, 113, 2], 4)).await, "b").await.expect("other source");
}
