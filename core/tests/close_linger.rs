//! The lingering close (docs/PROTOCOL.md §3): a client that is still writing when the server ends
//! its session reads the close frame and then an orderly end of stream, never a reset, over ws and
//! wss, for every kind of server-initiated close a test can cause. Each client keeps writing after
//! the server's close frame until it reads the end of the stream (the writes must all succeed),
//! then closes its own side; the server's lingers must all have ended at that end of stream.
//!
//! Each kind runs [`ROUNDS`] times, in concurrent batches of [`BATCH`] sessions.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use wsguard::auth::Revocation;

use support::{Connect, Setup, TestServer, WAIT};

/// Sessions per kind of close and transport.
const ROUNDS: usize = 50;
/// Sessions run at once.
const BATCH: usize = 25;
/// What a client writes at once with its trigger, in bytes of filler: more than the server reads
/// from the socket at a time, so that when the server closes, the client's bytes are still
/// waiting in the server's socket (without a linger, the kernel then answers with a reset).
const BURST: usize = 32 * 1024;
/// The gap between two of a client's later writes: slow enough that a client stays far under
/// the server's linger byte bound however late it reads, fast enough that bytes are always on
/// their way while the server closes.
const PACE: Duration = Duration::from_millis(5);
/// `limits.max_frame_bytes` and `limits.max_message_bytes` of the test server.
const MAX_FRAME: usize = 1024;

/// A way the server ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An unmasked client frame: 1002.
    ProtocolError,
    /// A binary frame (binary is off): 1003.
    BinaryFrame,
    /// A text frame that is not UTF-8: 1007.
    InvalidUtf8,
    /// Two frames that are not JSON, with `limits.max_violations = 1`: 1008.
    Violations,
    /// A frame header announcing more than `limits.max_frame_bytes`, its payload still coming: 1009.
    Oversized,
    /// `ServerHandle::disconnect_user`: 4001.
    Disconnected,
    /// `ServerHandle::revoke` of the subject: 4501.
    Revoked,
    /// `ServerHandle::shutdown`: 1001.
    Shutdown,
}

const CLIENT_TRIGGERED: [Kind; 5] =
    [Kind::ProtocolError, Kind::BinaryFrame, Kind::InvalidUtf8, Kind::Violations, Kind::Oversized];
const SERVER_TRIGGERED: [Kind; 3] = [Kind::Disconnected, Kind::Revoked, Kind::Shutdown];

impl Kind {
    fn code(self) -> u16 {
        match self {
            Kind::ProtocolError => 1002,
            Kind::BinaryFrame => 1003,
            Kind::InvalidUtf8 => 1007,
            Kind::Violations => 1008,
            Kind::Oversized => 1009,
            Kind::Disconnected => 4001,
            Kind::Revoked => 4501,
            Kind::Shutdown => 1001,
        }
    }

    /// What the client sends first (nothing when the server ends the session by itself).
    fn trigger(self) -> Vec<u8> {
        match self {
            // RFC 6455 §5.1: a server must close on an unmasked client frame.
            Kind::ProtocolError => vec![0x81, 0x02, b'h', b'i'],
            Kind::BinaryFrame => client_frame(0x2, b"{}"),
            Kind::InvalidUtf8 => client_frame(0x1, &[0xff, 0xfe, 0xfd]),
            Kind::Violations => [client_frame(0x1, b"not json"), client_frame(0x1, b"not json")].concat(),
            Kind::Oversized => {
                // A text frame of 1 MiB: its header only; the payload follows as the filler.
                let mut head = vec![0x81, 0x80 | 127];
                head.extend_from_slice(&(1u64 << 20).to_be_bytes());
                head.extend_from_slice(&[1, 2, 3, 4]);
                head
            }
            Kind::Disconnected | Kind::Revoked | Kind::Shutdown => Vec::new(),
        }
    }

    /// What the client keeps writing: the rest of the oversized frame's payload, or pongs (control
    /// frames, so they count toward no rate and no violation).
    fn filler(self) -> Vec<u8> {
        match self {
            Kind::Oversized => vec![0x55; 512],
            _ => client_frame(0xA, &[0x55; 125]),
        }
    }
}

/// A masked client frame (RFC 6455 §5.2), FIN set, payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let len = u8::try_from(payload.len()).ok().filter(|&len| len < 126).expect("a short payload");
    let mut frame = vec![0x80 | opcode, 0x80 | len];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

/// The close code of the last frame in what the server sent, which must be a close frame.
fn last_close_code(bytes: &[u8]) -> Result<u16, String> {
    let mut at = 0;
    let mut last: Option<(u8, &[u8])> = None;
    while at < bytes.len() {
        let head = bytes.get(at..at + 2).ok_or("a truncated frame header")?;
        if head[1] & 0x80 != 0 {
            return Err("a masked server frame".into());
        }
        let (len, head_len) = match head[1] & 0x7f {
            126 => {
                let ext = bytes.get(at + 2..at + 4).ok_or("a truncated length")?;
                (usize::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => return Err("a server frame over 64 KiB".into()),
            len => (usize::from(len), 2),
        };
        let payload = bytes.get(at + head_len..at + head_len + len).ok_or("a truncated frame")?;
        last = Some((head[0] & 0x0f, payload));
        at += head_len + len;
    }
    match last {
        Some((0x8, payload)) if payload.len() >= 2 => Ok(u16::from_be_bytes([payload[0], payload[1]])),
        other => Err(format!("the stream did not end with a close frame (last frame: {other:?})")),
    }
}

/// What one client saw.
#[derive(Debug)]
struct Seen {
    /// The close code of the server's last frame.
    code: Result<u16, String>,
    /// How reading ended: `Ok` for an orderly end of stream (over TLS, after `close_notify`).
    read_end: std::io::Result<()>,
    /// How writing ended: `Ok` when every write and the client's own shutdown succeeded.
    write_end: std::io::Result<()>,
}

/// The client of one session, which keeps writing through the server's close:
///
/// 1. it writes its trigger and [`BURST`] bytes of filler at once;
/// 2. then filler every [`PACE`];
/// 3. once it has read the close frame, another [`BURST`] (writes it had queued before it looked);
/// 4. once it has read the end of the stream, one more filler after [`PACE`] (the server has only
///    half closed), then it closes its side.
///
/// It reads everything the server sends until the end of the stream.
async fn keep_writing_until_the_end<S>(ws: WebSocketStream<S>, kind: Kind) -> Seen
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Nothing was read past the 101: the server sends nothing before the client writes or the
    // test triggers the close.
    let (mut reader, mut writer) = tokio::io::split(ws.into_inner());
    let (closed, mut has_closed) = oneshot::channel::<()>();
    let (ended, mut has_ended) = oneshot::channel::<()>();
    let write = async {
        let filler = kind.filler();
        let burst = || {
            let mut burst = Vec::with_capacity(BURST + filler.len());
            while burst.len() < BURST {
                burst.extend_from_slice(&filler);
            }
            burst
        };
        writer.write_all(&[kind.trigger(), burst()].concat()).await?;
        let mut is_closed = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut has_closed, if !is_closed => {
                    is_closed = true;
                    writer.write_all(&burst()).await?;
                }
                _ = &mut has_ended => break,
                () = tokio::time::sleep(PACE) => writer.write_all(&filler).await?,
            }
        }
        tokio::time::sleep(PACE).await;
        writer.write_all(&filler).await?;
        writer.shutdown().await
    };
    let read = async {
        let mut got = Vec::new();
        let mut closed = Some(closed);
        let read_end = loop {
            match reader.read_buf(&mut got).await {
                Ok(0) => break Ok(()),
                Ok(_) => {
                    if last_close_code(&got).is_ok()
                        && let Some(closed) = closed.take()
                    {
                        let _ = closed.send(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let _ = ended.send(());
        (got, read_end)
    };
    let bounded = tokio::time::timeout(2 * WAIT, futures_util::future::join(write, read));
    let (write_end, (got, read_end)) = bounded.await.expect("the session ends within the bound");
    Seen { code: last_close_code(&got), read_end, write_end }
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Ws,
    Wss,
}

fn setup(transport: Transport) -> Setup {
    let setup = Setup::new()
        .limits("connections_per_ip = 10000")
        .limits("connections_per_user = 10000")
        .limits("handshakes_per_ip_per_sec = 100000")
        .limits("max_violations = 1")
        .limits(&format!("max_frame_bytes = {MAX_FRAME}"))
        .limits(&format!("max_message_bytes = {MAX_FRAME}"));
    match transport {
        Transport::Ws => setup,
        Transport::Wss => setup.tls(),
    }
}

/// One batch: `BATCH` sessions of `subject`, each writing; the server-side kinds are triggered
/// once all of them are open. Panics with every client that did not see an orderly end.
async fn batch(server: &TestServer, transport: Transport, kind: Kind, subject: &str) {
    let connect = Connect::new().bearer(&server.token(subject));
    let opened = Arc::new(tokio::sync::Barrier::new(BATCH + 1));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..BATCH {
        let opened = Arc::clone(&opened);
        match transport {
            Transport::Ws => {
                let ws = server.ws(&connect).await;
                clients.spawn(async move {
                    opened.wait().await;
                    keep_writing_until_the_end(ws, kind).await
                });
            }
            Transport::Wss => {
                let (wss, _) = server.try_wss(&connect).await.expect("the wss handshake is accepted");
                clients.spawn(async move {
                    opened.wait().await;
                    keep_writing_until_the_end(wss, kind).await
                });
            }
        }
    }
    opened.wait().await;
    if SERVER_TRIGGERED.contains(&kind) {
        // Every session running (its 101 can reach the client before its task registers it),
        // and every client's writes begun, before the server ends the sessions.
        let deadline = Instant::now() + WAIT;
        while server.stats().await.sessions_active < BATCH as u64 {
            assert!(Instant::now() < deadline, "{BATCH} sessions did not open");
            tokio::time::sleep(PACE).await;
        }
        tokio::time::sleep(10 * PACE).await;
        match kind {
            Kind::Disconnected => assert_eq!(server.handle.disconnect_user(subject), BATCH),
            Kind::Revoked => server.handle.revoke(Revocation::Subject(subject.to_string())),
            _ => server.handle.shutdown(),
        }
    }
    let mut failures = Vec::new();
    while let Some(seen) = clients.join_next().await {
        let seen = seen.expect("a client task did not panic");
        let is_orderly =
            seen.code.as_ref().ok() == Some(&kind.code()) && seen.read_end.is_ok() && seen.write_end.is_ok();
        if !is_orderly {
            failures.push(seen);
        }
    }
    assert!(
        failures.is_empty(),
        "{kind:?} over {transport:?}: {} of {BATCH} clients saw no orderly close: {failures:?}",
        failures.len()
    );
}

/// Waits (bounded) until the server counted `expected` lingers ended by the client's end of
/// stream, and asserts that none ended any other way.
async fn assert_lingers_ended_at_eof(server: &TestServer, expected: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = server.scrape().await;
        for end in ["broken", "time_limit", "byte_limit"] {
            let series = format!("wsguard_close_lingers_total{{end=\"{end}\"}}");
            assert_eq!(metrics.get(&series), 0.0, "{series}");
        }
        let eof = metrics.get("wsguard_close_lingers_total{end=\"eof\"}");
        if eof >= expected as f64 {
            assert_eq!(eof, expected as f64, "one linger per session");
            return;
        }
        assert!(Instant::now() < deadline, "only {eof} of {expected} lingers ended at the client's end of stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client_triggered(transport: Transport) {
    let server = setup(transport).start().await;
    for kind in CLIENT_TRIGGERED {
        for round in 0..ROUNDS / BATCH {
            batch(&server, transport, kind, &format!("{kind:?}-{round}")).await;
        }
    }
    assert_lingers_ended_at_eof(&server, CLIENT_TRIGGERED.len() * ROUNDS).await;
}

async fn server_triggered(transport: Transport) {
    let server = setup(transport).start().await;
    let mut lingers = 0;
    for kind in SERVER_TRIGGERED {
        for round in 0..ROUNDS / BATCH {
            let subject = format!("{kind:?}-{round}");
            if kind == Kind::Shutdown {
                // A shutdown ends the server: one server per batch.
                batch(&setup(transport).start().await, transport, kind, &subject).await;
            } else {
                batch(&server, transport, kind, &subject).await;
                lingers += BATCH;
            }
        }
    }
    assert_lingers_ended_at_eof(&server, lingers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_triggered_closes_end_in_order_over_ws() {
    client_triggered(Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_triggered_closes_end_in_order_over_wss() {
    client_triggered(Transport::Wss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_triggered_closes_end_in_order_over_ws() {
    server_triggered(Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_triggered_closes_end_in_order_over_wss() {
    server_triggered(Transport::Wss).await;
}

/// A lingering socket belongs to no session: with room for one session per IP and per user, a new
/// session is admitted while the first one's socket still lingers (the linger then ends at the
/// first client's end of stream, after that admission).
#[tokio::test]
async fn a_lingering_socket_holds_no_session_slot() {
    let server = Setup::new()
        .limits("connections_per_ip = 1")
        .limits("connections_per_user = 1")
        .limits(&format!("max_frame_bytes = {MAX_FRAME}"))
        .limits(&format!("max_message_bytes = {MAX_FRAME}"))
        .start()
        .await;
    let connect = Connect::new().bearer(&server.token("alice"));
    let mut first = server.ws(&connect).await.into_inner();
    first.write_all(&Kind::Oversized.trigger()).await.expect("write the oversized frame's header");
    // The close frame, then the server's end of stream: the server now lingers on this socket.
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, first.read_to_end(&mut got)).await.expect("the server closes in time");
    assert!(read.is_ok(), "an orderly end of stream: {read:?}");
    assert_eq!(last_close_code(&got), Ok(1009));

    let second = server.ws(&connect).await;
    drop(first);
    assert_lingers_ended_at_eof(&server, 1).await;
    drop(second);
}
