//! wsguard load generator. Drives any server speaking the benchmark subset of wsguard's wire
//! protocol v1 (wsguard itself, or a baseline in this crate) over loopback, and prints ONE JSON
//! line per run on stdout: operations, rate, latency percentiles (hdrhistogram), and the server's
//! own CPU time per operation (utime + stime of `--server-pid` from `/proc/PID/stat`, read at the
//! start and the end of the measured window, after a warm-up).
//!
//! Scenarios (subcommands): `echo` (C connections, a window of W pings in flight each; with
//! `--publish`, schema-checked publishes to the `bench` channel, each acked, instead of pings),
//! `fanout` (N subscribers on one channel, one publisher, max rate with end-to-end flow control or
//! a fixed rate; with `--via api` the publisher is a backend calling the server API, with `--via
//! host` the server process publishes by itself: the `api-publish` scenario), `handshake` (connect + authenticate + close, C in parallel), `idle` (hold N
//! connections; used by `idle-multi`, which spreads connections over several processes and
//! 127.0.0.x source addresses and reports server RSS per connection), `cluster` (subscribers on
//! one node, a publisher at a fixed rate on another, each node's CPU; loadgen/cluster.rs),
//! `churn` (connect, authenticate, subscribe, receive, close in loops; server RSS growth;
//! loadgen/churn.rs), and the channel-history scenarios of loadgen/history.rs: `history-memory`
//! (server memory per stored publication) and `history-recover` (recovering missed publications
//! with `since`, against receiving them live).
//!
//! Timing assertions never belong in a test suite; this is a measuring tool only.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsguard_bench::api_publisher::ApiPublisher;
use wsguard_bench::{PAYLOAD_PAD_BYTES, clock_nanos};

#[path = "../loadgen/churn.rs"]
mod churn;
#[path = "../loadgen/cluster.rs"]
mod cluster;
#[path = "../loadgen/history.rs"]
mod history;

type Ws = WebSocketStream<Stream>;

/// A plain or TLS client connection (`ws://` or `wss://`).
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The TLS client configuration for `wss://` URLs: trusts only `--ca-file` (built once).
fn tls_connector(ca_file: &str) -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file).expect("--ca-file readable") {
                roots.add(cert.expect("--ca-file PEM")).expect("a CA certificate");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// Linux `USER_HZ`: /proc/PID/stat counts CPU time in these ticks (`getconf CLK_TCK`).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Server URL, e.g. ws://127.0.0.1:9001/ws
    #[arg(long)]
    url: String,
    /// Origin header to send.
    #[arg(long, default_value = "http://bench.local")]
    origin: String,
    /// Bearer token (sent as `Authorization: Bearer`); a raw baseline ignores it.
    #[arg(long, default_value = "")]
    token: String,
    /// Server process whose CPU time and RSS are read from /proc.
    #[arg(long)]
    server_pid: u32,
    /// Warm-up before measuring (seconds).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Measured window (seconds).
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Comma-separated local source addresses to spread connections over (default: kernel's).
    #[arg(long, default_value = "")]
    src_addrs: String,
    /// Label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// PEM file with the CA (or self-signed) certificate to trust for `wss://` URLs.
    #[arg(long, default_value = "")]
    ca_file: String,
    /// Tag copied into the JSON output: sets a scenario's rows apart from another scenario's
    /// with the same arguments (`history` for the history comparisons).
    #[arg(long, default_value = "")]
    tag: String,
}

/// Who publishes in the `fanout` scenario.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Via {
    Ws,
    Api,
    Host,
}

#[derive(Subcommand)]
enum Cmd {
    /// C connections, W pings in flight on each.
    Echo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        conns: usize,
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Send publishes (payload checked against the channel's schema, answered `ack`) instead
        /// of pings: the per-message cost of the security layer, next to the echo of the same run.
        #[arg(long)]
        publish: bool,
    },
    /// N subscribers on one channel, one publisher.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        subs: usize,
        /// Publications per second; 0 = as fast as the subscribers keep up (window below).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Max publications not yet delivered to every subscriber (rate 0 only).
        #[arg(long, default_value_t = 8)]
        window: u64,
        #[arg(long, default_value = "bench")]
        channel: String,
        /// Who publishes: `ws` a WebSocket client of this process; `api` this process through the
        /// server API (`--api-url`, `--api-key`), at `--rate`; `host` the server process itself
        /// (an embedding host publishing at `--rate`; nothing is published from here).
        #[arg(long, value_enum, default_value_t = Via::Ws)]
        via: Via,
        /// The server API's base URL (`--via api`), e.g. http://127.0.0.1:9501
        #[arg(long, default_value = "")]
        api_url: String,
        /// The server API key (`--via api`).
        #[arg(long, default_value = "")]
        api_key: String,
    },
    /// Connect + authenticate + close, C loops in parallel.
    Handshake {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 16)]
        conns: usize,
    },
    /// Hold N connections open until stdin closes (a child of idle-multi).
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        conns: usize,
    },
    /// Spread N idle connections over P child processes; report server RSS per connection.
    IdleMulti {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        conns: usize,
        #[arg(long, default_value_t = 1)]
        procs: usize,
    },
    /// Subscribers on one node, a publisher at a fixed rate on another (or the same): each node's
    /// CPU per delivery and per publication, end-to-end latency.
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: cluster::ClusterArgs,
    },
    /// Connect, authenticate, subscribe, receive, close, in C loops: server RSS growth per cycle.
    Churn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: churn::ChurnArgs,
    },
    /// Publish `--per-channel` messages into each of `--channels` channels `<prefix>:<k>` of a
    /// server with history; report its RSS (and history gauges) before and after.
    HistoryMemory {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        channels: usize,
        #[arg(long, default_value_t = 1000)]
        per_channel: usize,
        #[arg(long, default_value = "bench")]
        prefix: String,
        /// Length of the payload's `pad` string.
        #[arg(long, default_value_t = 64)]
        pad: usize,
        /// Publishing connections.
        #[arg(long, default_value_t = 10)]
        conns: usize,
        /// Publishes in flight per connection.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// The server's metrics endpoint (`http://ip:port/metrics`) for `wsguard_history_*`.
        #[arg(long, default_value = "")]
        metrics_url: String,
    },
    /// Rounds of: N publications delivered live, the subscriber leaves, N more, it subscribes
    /// again with `since`; recovery time and server CPU per message against live delivery.
    HistoryRecover {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Publishes in flight on the publisher's connection.
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value = "bench")]
        channel: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let out = match cli.cmd {
        Cmd::Echo { common, conns, window, publish } => rt.block_on(echo(common, conns, window, publish)),
        Cmd::Fanout { common, subs, rate, window, channel, via, api_url, api_key } => {
            if via != Via::Ws && rate <= 0.0 {
                eprintln!("error: --via api and --via host need a fixed --rate");
                std::process::exit(2);
            }
            let publisher = Publisher { via, rate, window, channel, api_url, api_key };
            rt.block_on(fanout(common, subs, publisher))
        }
        Cmd::Handshake { common, conns } => rt.block_on(handshake(common, conns)),
        Cmd::Idle { common, conns } => rt.block_on(idle(common, conns)),
        Cmd::IdleMulti { common, conns, procs } => idle_multi(common, conns, procs),
        Cmd::Cluster { common, args } => rt.block_on(cluster::run(common, args)),
        Cmd::Churn { common, args } => rt.block_on(churn::run(common, args)),
        Cmd::HistoryMemory { common, channels, per_channel, prefix, pad, conns, window, metrics_url } => {
            let load = history::MemoryLoad { channels, per_channel, prefix, pad, conns, window, metrics_url };
            rt.block_on(history::memory(common, load))
        }
        Cmd::HistoryRecover { common, messages, window, channel } => {
            let ctx = history::RecoverCtx { pid: common.server_pid, channel, messages, window };
            rt.block_on(history::recover(common, ctx))
        }
    };
    println!("{out}");
    // Do not wait for lingering client tasks.
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// /proc readings

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: index 0 is field 3 (state); utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Connecting

fn src_addrs(c: &Common) -> Vec<IpAddr> {
    c.src_addrs.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("src addr")).collect()
}

fn target(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    host.parse().expect("url host must be ip:port")
}

async fn connect(c: &Common, src: Option<IpAddr>) -> Result<Ws, String> {
    let addr = target(&c.url);
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(ip) = src {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
    }
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let stream = if c.url.starts_with("wss://") {
        let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = tls_connector(&c.ca_file).connect(name, stream).await.map_err(|e| e.to_string())?;
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(stream)
    };
    let mut req = c.url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert("origin", HeaderValue::from_str(&c.origin).map_err(|e| e.to_string())?);
    if !c.token.is_empty() {
        let v = format!("Bearer {}", c.token);
        h.insert("authorization", HeaderValue::from_str(&v).map_err(|e| e.to_string())?);
    }
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn connect_many(c: &Common, n: usize, parallel: usize) -> (Vec<Ws>, u64) {
    let srcs = src_addrs(c);
    let mut out = Vec::with_capacity(n);
    let mut errors = 0u64;
    let mut i = 0;
    while i < n {
        let batch = parallel.min(n - i);
        let futs = (0..batch).map(|k| {
            let src = if srcs.is_empty() { None } else { Some(srcs[(i + k) % srcs.len()]) };
            connect(c, src)
        });
        for r in futures_util::future::join_all(futs).await {
            match r {
                Ok(ws) => out.push(ws),
                Err(e) => {
                    if errors == 0 {
                        eprintln!("connect error: {e}");
                    }
                    errors += 1;
                }
            }
        }
        i += batch;
    }
    (out, errors)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram")
}

/// Runs warm-up then the measured window; returns (elapsed secs, server CPU ticks).
async fn measure_window(c: &Common, phase: &AtomicU8) -> (f64, u64) {
    tokio::time::sleep(Duration::from_secs_f64(c.warmup_secs)).await;
    let cpu0 = cpu_ticks(c.server_pid);
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(c.secs)).await;
    phase.store(STOP, Ordering::SeqCst);
    let cpu1 = cpu_ticks(c.server_pid);
    (t0.elapsed().as_secs_f64(), cpu1.saturating_sub(cpu0))
}

// One flat JSON line; the arguments are its fields, so a struct would only restate them.
#[allow(clippy::too_many_arguments)]
fn report(
    c: &Common,
    scenario: &str,
    ops: u64,
    secs: f64,
    ticks: u64,
    hist: &Histogram<u64>,
    errors: u64,
    extra: serde_json::Value,
) -> String {
    let cpu_us = ticks as f64 / CLOCK_TICKS_PER_SEC * 1e6;
    let mut v = json!({
        "scenario": scenario,
        "label": c.label,
        "tag": c.tag,
        "tls": c.url.starts_with("wss://"),
        "ops": ops,
        "secs": secs,
        "ops_per_sec": ops as f64 / secs,
        "p50_us": hist.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_us": hist.value_at_quantile(0.99) as f64 / 1000.0,
        "server_cpu_ticks": ticks,
        "server_cpu_util": cpu_us / 1e6 / secs,
        "server_cpu_us_per_op": if ops > 0 { cpu_us / ops as f64 } else { f64::NAN },
        "errors": errors,
        "server_rss_kb": rss_kb(c.server_pid),
    });
    if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    v.to_string()
}

// ---------------------------------------------------------------------------------------------
// echo / pipelined

async fn echo(c: Common, conns: usize, window: usize, publish: bool) -> String {
    let (sockets, mut errors) = connect_many(&c, conns, 64).await;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let total = Arc::new(Mutex::new(new_hist()));
    let ops = Arc::new(AtomicU64::new(0));
    let errs = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for ws in sockets {
        let (phase, total, ops, errs) = (phase.clone(), total.clone(), ops.clone(), errs.clone());
        tasks.push(tokio::spawn(async move {
            let (h, n, e) = echo_conn(ws, window, publish, &phase).await;
            total.lock().expect("hist").add(&h).expect("hist add");
            ops.fetch_add(n, Ordering::Relaxed);
            errs.fetch_add(e, Ordering::Relaxed);
        }));
    }
    let (secs, ticks) = measure_window(&c, &phase).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    errors += errs.load(Ordering::Relaxed);
    let hist = total.lock().expect("hist").clone();
    let scenario = match (publish, window > 1) {
        (false, false) => "echo",
        (false, true) => "pipelined",
        (true, false) => "publish",
        (true, true) => "pipelined_publish",
    };
    let extra = json!({"conns": conns, "window": window});
    report(&c, scenario, ops.load(Ordering::Relaxed), secs, ticks, &hist, errors, extra)
}

fn ping(id: u64) -> Message {
    Message::Text(format!("{{\"action\":\"ping\",\"id\":{id}}}").into())
}

/// A publish to `bench` whose payload satisfies bench/config/payload.schema.json.
fn publish(id: u64) -> Message {
    Message::Text(
        format!(
            "{{\"action\":\"publish\",\"id\":{id},\"channel\":\"bench\",\"payload\":{{\"t\":{},\"n\":{id},\"pad\":\"{}\"}}}}",
            clock_nanos(),
            *PAD
        )
        .into(),
    )
}

static PAD: LazyLock<String> = LazyLock::new(|| "x".repeat(PAYLOAD_PAD_BYTES));

async fn echo_conn(mut ws: Ws, window: usize, publishes: bool, phase: &AtomicU8) -> (Histogram<u64>, u64, u64) {
    let request = if publishes { publish } else { ping };
    let answer = if publishes { "\"ack\"" } else { "\"pong\"" };
    let mut hist = new_hist();
    let (mut n, mut errors, mut id) = (0u64, 0u64, 0u64);
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(window);
    for _ in 0..window {
        id += 1;
        if ws.feed(request(id)).await.is_err() {
            return (hist, n, errors + 1);
        }
        inflight.push_back(Instant::now());
    }
    if ws.flush().await.is_err() {
        return (hist, n, errors + 1);
    }
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => {
                errors += 1;
                break;
            }
        };
        let sent = inflight.pop_front().unwrap_or_else(Instant::now);
        let p = phase.load(Ordering::Relaxed);
        if !text.as_str().contains(answer) {
            errors += 1;
        } else if p == MEASURE {
            let _ = hist.record(sent.elapsed().as_nanos() as u64);
            n += 1;
        }
        if p == STOP {
            break;
        }
        id += 1;
        if ws.send(request(id)).await.is_err() {
            errors += 1;
            break;
        }
        inflight.push_back(Instant::now());
    }
    (hist, n, errors)
}

// ---------------------------------------------------------------------------------------------
// fan-out

/// Extracts the `"t":<nanos>` field written by the publisher (the server may reorder keys).
fn payload_t(text: &str) -> Option<u64> {
    let i = text.find("\"t\":")? + 4;
    let digits: &str = &text[i..];
    let end = digits.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The publisher side of `fanout`.
struct Publisher {
    via: Via,
    /// Publications per second; 0 = flow-controlled by `window` (`ws` only).
    rate: f64,
    window: u64,
    channel: String,
    api_url: String,
    api_key: String,
}

/// Subscribes `ws` to `channel`; true once acknowledged. Publications that arrive before the ack
/// (an embedding host publishes from its start) are skipped.
async fn subscribe(ws: &mut Ws, channel: &str) -> bool {
    let frame = format!("{{\"action\":\"subscribe\",\"id\":1,\"channel\":{}}}", json!(channel));
    if ws.send(Message::text(frame)).await.is_err() {
        return false;
    }
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(t) if t.as_str().contains("\"ack\"") => return true,
            Message::Text(t) if t.as_str().contains("\"message\"") => {}
            Message::Ping(_) | Message::Pong(_) => {}
            _ => return false,
        }
    }
    false
}

async fn fanout(c: Common, subs: usize, publisher: Publisher) -> String {
    let extra_conn = usize::from(publisher.via == Via::Ws);
    let (mut sockets, mut errors) = connect_many(&c, subs + extra_conn, 64).await;
    let ws_publisher = if extra_conn == 1 { sockets.pop() } else { None };
    if sockets.is_empty() || (extra_conn == 1 && ws_publisher.is_none()) {
        return json!({"scenario": "fanout", "error": "no connections"}).to_string();
    }
    for ws in sockets.iter_mut() {
        if !subscribe(ws, &publisher.channel).await {
            errors += 1;
        }
    }
    let subs = sockets.len() as u64;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let delivered = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let errs = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let total = Arc::new(Mutex::new(new_hist()));
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let (phase, delivered, measured, errs, notify, total) =
            (phase.clone(), delivered.clone(), measured.clone(), errs.clone(), notify.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut n = 0u64;
            loop {
                let text = match ws.next().await {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(_)) => continue,
                    _ => {
                        if phase.load(Ordering::Relaxed) != STOP {
                            errs.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                };
                let now = clock_nanos();
                match payload_t(text.as_str()) {
                    Some(t) if text.as_str().contains("\"message\"") => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        notify.notify_one();
                        let p = phase.load(Ordering::Relaxed);
                        if p == MEASURE {
                            let _ = hist.record(now.saturating_sub(t).max(1));
                            n += 1;
                        } else if p == STOP {
                            break;
                        }
                    }
                    _ => {
                        errs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            total.lock().expect("hist").add(&hist).expect("hist add");
            measured.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let published = Arc::new(AtomicU64::new(0));
    let (via, rate, window) = (publisher.via, publisher.rate, publisher.window);
    let pub_task = {
        let (phase, delivered, notify, errs, published) =
            (phase.clone(), delivered.clone(), notify.clone(), errs.clone(), published.clone());
        tokio::spawn(async move {
            let mut api = None;
            let mut sink = None;
            match via {
                Via::Host => return,
                Via::Api => {
                    match ApiPublisher::connect(&publisher.api_url, &publisher.api_key, &publisher.channel).await {
                        Ok(client) => api = Some(client),
                        Err(e) => {
                            eprintln!("api publisher: {e}");
                            errs.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                Via::Ws => {
                    let Some(ws) = ws_publisher else { return };
                    let (ws_sink, mut stream) = ws.split();
                    sink = Some(ws_sink);
                    // Drain acks (and count anything that is not an ack).
                    let errs2 = errs.clone();
                    tokio::spawn(async move {
                        while let Some(Ok(m)) = stream.next().await {
                            if let Message::Text(t) = m
                                && !t.as_str().contains("\"ack\"")
                            {
                                errs2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            }
            let channel = json!(publisher.channel).to_string();
            let pad = "x".repeat(PAYLOAD_PAD_BYTES);
            let mut ticker = (rate > 0.0).then(|| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            let mut k = 0u64;
            while phase.load(Ordering::Relaxed) != STOP {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => {
                        // End-to-end flow control: at most `window` publications not yet seen
                        // by every subscriber, so no outbound queue can overflow.
                        while k.saturating_sub(delivered.load(Ordering::Relaxed) / subs.max(1)) >= window {
                            let _ = tokio::time::timeout(Duration::from_millis(50), notify.notified()).await;
                            if phase.load(Ordering::Relaxed) == STOP {
                                return;
                            }
                        }
                    }
                }
                k += 1;
                let payload = format!("{{\"t\":{},\"n\":{k},\"pad\":\"{pad}\"}}", clock_nanos());
                let sent = match (sink.as_mut(), api.as_mut()) {
                    (Some(sink), _) => {
                        let frame = format!(
                            "{{\"action\":\"publish\",\"id\":{k},\"channel\":{channel},\"payload\":{payload}}}"
                        );
                        sink.send(Message::Text(Utf8Bytes::from(frame))).await.map_err(|e| e.to_string())
                    }
                    (None, Some(api)) => api.publish(&payload).await,
                    (None, None) => return,
                };
                if let Err(e) = sent {
                    if errs.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("publish failed: {e}");
                    }
                    return;
                }
                published.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (secs, ticks) = {
        tokio::time::sleep(Duration::from_secs_f64(c.warmup_secs)).await;
        let cpu0 = cpu_ticks(c.server_pid);
        let pub0 = published.load(Ordering::Relaxed);
        let t0 = Instant::now();
        phase.store(MEASURE, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs_f64(c.secs)).await;
        phase.store(STOP, Ordering::SeqCst);
        let cpu1 = cpu_ticks(c.server_pid);
        published.fetch_sub(pub0, Ordering::Relaxed);
        (t0.elapsed().as_secs_f64(), cpu1.saturating_sub(cpu0))
    };
    let pubs = published.load(Ordering::Relaxed);
    notify.notify_waiters();
    let _ = tokio::time::timeout(Duration::from_secs(2), pub_task).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_millis(500), t).await;
    }
    errors += errs.load(Ordering::Relaxed);
    let hist = total.lock().expect("hist").clone();
    let deliveries = measured.load(Ordering::Relaxed);
    // Publications in the window as the subscribers saw them: the same count whoever publishes
    // (an embedding host's publications are not counted here otherwise).
    let seen = deliveries as f64 / subs.max(1) as f64;
    let cpu_us = ticks as f64 / CLOCK_TICKS_PER_SEC * 1e6;
    let scenario = match (via, rate > 0.0) {
        (Via::Ws, true) => "fanout_rate",
        (Via::Ws, false) => "fanout_max",
        (Via::Api | Via::Host, _) => "api_publish",
    };
    let via_name = match via {
        Via::Ws => "ws",
        Via::Api => "api",
        Via::Host => "host",
    };
    let publications_per_sec = if via == Via::Host { seen / secs } else { pubs as f64 / secs };
    let extra = json!({"subs": subs, "rate": rate, "window": window, "via": via_name,
        "publications_per_sec": publications_per_sec,
        "server_cpu_us_per_publication": if seen > 0.0 { cpu_us / seen } else { f64::NAN }});
    report(&c, scenario, deliveries, secs, ticks, &hist, errors, extra)
}

// ---------------------------------------------------------------------------------------------
// handshake

async fn handshake(c: Common, conns: usize) -> String {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let total = Arc::new(Mutex::new(new_hist()));
    // Connect + upgrade only (the 101 received), to split the cycle's latency.
    let upgrades = Arc::new(Mutex::new(new_hist()));
    let ops = Arc::new(AtomicU64::new(0));
    let errs = Arc::new(AtomicU64::new(0));
    let srcs = Arc::new(src_addrs(&c));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (c, phase, total, ops, errs, srcs) =
            (c.clone(), phase.clone(), total.clone(), ops.clone(), errs.clone(), srcs.clone());
        let upgrades = upgrades.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut upgrade_hist = new_hist();
            let mut k = i;
            while phase.load(Ordering::Relaxed) != STOP {
                k += conns;
                let src = if srcs.is_empty() { None } else { Some(srcs[k % srcs.len()]) };
                let t0 = Instant::now();
                let ok = match connect(&c, src).await {
                    Ok(mut ws) => {
                        if phase.load(Ordering::Relaxed) == MEASURE {
                            let _ = upgrade_hist.record(t0.elapsed().as_nanos() as u64);
                        }
                        let closed = ws.close(None).await.is_ok();
                        // Wait for the server's Close reply, then EOF, so the cycle is complete. A
                        // server that drops the socket without answering (RFC 6455 5.5.1) saves a
                        // write per cycle: that counts as an error, not as a handshake.
                        let mut answered = false;
                        while let Some(Ok(message)) = ws.next().await {
                            answered |= message.is_close();
                        }
                        if closed && !answered && errs.load(Ordering::Relaxed) == 0 {
                            eprintln!("handshake error: the server did not answer the Close");
                        }
                        closed && answered
                    }
                    Err(e) => {
                        if errs.load(Ordering::Relaxed) == 0 {
                            eprintln!("handshake error: {e}");
                        }
                        false
                    }
                };
                if !ok {
                    errs.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else if phase.load(Ordering::Relaxed) == MEASURE {
                    let _ = hist.record(t0.elapsed().as_nanos() as u64);
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
            total.lock().expect("hist").add(&hist).expect("hist add");
            upgrades.lock().expect("hist").add(&upgrade_hist).expect("hist add");
        }));
    }
    let (secs, ticks) = measure_window(&c, &phase).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let hist = total.lock().expect("hist").clone();
    let up = upgrades.lock().expect("hist").clone();
    let extra = json!({"conns": conns,
        "upgrade_p50_us": up.value_at_quantile(0.5) as f64 / 1000.0,
        "upgrade_p99_us": up.value_at_quantile(0.99) as f64 / 1000.0});
    let errors = errs.load(Ordering::Relaxed);
    report(&c, "handshake", ops.load(Ordering::Relaxed), secs, ticks, &hist, errors, extra)
}

// ---------------------------------------------------------------------------------------------
// idle connections

async fn idle(c: Common, conns: usize) -> String {
    let (sockets, errors) = connect_many(&c, conns, 64).await;
    let held = sockets.len();
    for mut ws in sockets {
        // Keep reading so protocol pings are answered and the server never times us out.
        tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    }
    println!("{}", json!({"ready": held, "errors": errors}));
    let _ = std::io::stdout().flush();
    // Hold until the parent closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
    json!({"released": held}).to_string()
}

fn idle_multi(c: Common, conns: usize, procs: usize) -> String {
    let rss0 = rss_kb(c.server_pid);
    let srcs = src_addrs(&c);
    let exe = std::env::current_exe().expect("exe");
    let t0 = Instant::now();
    let mut children = Vec::new();
    for p in 0..procs {
        let share = conns / procs + usize::from(p < conns % procs);
        let src = if srcs.is_empty() { String::new() } else { srcs[p % srcs.len()].to_string() };
        let child = std::process::Command::new(&exe)
            .args(["idle", "--url", &c.url, "--origin", &c.origin, "--token", &c.token])
            .args(["--server-pid", &c.server_pid.to_string(), "--conns", &share.to_string()])
            .args(["--src-addrs", &src, "--ca-file", &c.ca_file])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn idle child");
        children.push(child);
    }
    let (mut held, mut errors) = (0u64, 0u64);
    for ch in children.iter_mut() {
        let mut line = String::new();
        if let Some(out) = ch.stdout.as_mut() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        held += v["ready"].as_u64().unwrap_or(0);
        errors += v["errors"].as_u64().unwrap_or(0);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    // Let the server settle (handshake buffers freed, allocator quiet).
    std::thread::sleep(Duration::from_secs(2));
    let rss1 = rss_kb(c.server_pid);
    for mut ch in children {
        drop(ch.stdin.take());
        let _ = ch.wait();
    }
    json!({
        "scenario": "idle",
        "label": c.label,
        "tls": c.url.starts_with("wss://"),
        "conns": conns,
        "held": held,
        "errors": errors,
        "connect_secs": connect_secs,
        "server_rss_before_kb": rss0,
        "server_rss_after_kb": rss1,
        "rss_kb_per_conn": if held > 0 { (rss1.saturating_sub(rss0)) as f64 / held as f64 } else { f64::NAN },
    })
    .to_string()
}
