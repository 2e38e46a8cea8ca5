//! The channel-history scenarios (docs/PERFORMANCE.md, "History") that need more than the
//! generic ones: `history-memory`, the server's memory per stored publication, and
//! `history-recover`, recovering N missed publications with `subscribe` + `since` against
//! receiving the same N live. (Publish CPU and fan-out with history on reuse `echo --publish`
//! and `fanout` against two servers.)

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use wsguard_bench::clock_nanos;

use super::cluster::cpu_ns;
use super::{CLOCK_TICKS_PER_SEC, Common, PAD, Ws, connect_many, cpu_ticks, new_hist, rss_kb};

/// How long one step of a round may take before the run is abandoned (a server that stopped
/// answering must not hang the benchmark).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// `wsguard_history_bytes` and `wsguard_history_messages` from a Prometheus text endpoint
/// (`http://ip:port/metrics`); `None` without an endpoint or when it does not answer them.
fn history_gauges(url: &str) -> Option<(f64, f64)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "metrics"), |(h, p)| (h, p));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).ok()?;
    let gauge = |name: &str| {
        body.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            if key == name { value.trim().parse::<f64>().ok() } else { None }
        })
    };
    Some((gauge("wsguard_history_bytes")?, gauge("wsguard_history_messages")?))
}

/// The `"offset":<n>` of a server frame (the last one: the payload comes before it).
fn frame_offset(text: &str) -> Option<u64> {
    let digits = &text[text.rfind("\"offset\":")? + 9..];
    let end = digits.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The next text frame (protocol pings and pongs skipped), within [`STEP_TIMEOUT`].
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match tokio::time::timeout(STEP_TIMEOUT, ws.next()).await {
            Err(_) => return Err("no frame from the server in time".into()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => return Err(format!("connection ended: {other:?}")),
        }
    }
}

/// Sends `frames` with at most `window` not yet acknowledged, and waits for every reply;
/// returns the replies that were not an `ack` (refusals), or an error if the connection failed.
async fn send_acked(ws: &mut Ws, frames: impl IntoIterator<Item = String>, window: usize) -> Result<u64, String> {
    let (mut in_flight, mut refused) = (0usize, 0u64);
    let mut frames = frames.into_iter().peekable();
    while frames.peek().is_some() || in_flight > 0 {
        while in_flight < window.max(1)
            && let Some(frame) = frames.next()
        {
            ws.feed(Message::text(frame)).await.map_err(|e| e.to_string())?;
            in_flight += 1;
        }
        ws.flush().await.map_err(|e| e.to_string())?;
        let reply = next_text(ws).await?;
        if !reply.contains("\"ack\"") {
            if refused == 0 {
                eprintln!("publish refused: {reply}");
            }
            refused += 1;
        }
        in_flight -= 1;
    }
    Ok(refused)
}

/// A publish whose payload satisfies bench/config/payload.schema.json.
fn publish_frame(id: u64, channel: &str, payload: &str) -> String {
    format!("{{\"action\":\"publish\",\"id\":{id},\"channel\":{},\"payload\":{payload}}}", json!(channel))
}

// ---------------------------------------------------------------------------------------------
// history-memory

/// What `history-memory` publishes.
pub(super) struct MemoryLoad {
    /// Channels `<prefix>:0` to `<prefix>:<channels - 1>`.
    pub(super) channels: usize,
    pub(super) per_channel: usize,
    pub(super) prefix: String,
    /// Length of the payload's `pad` string.
    pub(super) pad: usize,
    /// Publishing connections (each takes every `conns`-th channel).
    pub(super) conns: usize,
    /// Publishes in flight per connection.
    pub(super) window: usize,
    /// The server's Prometheus endpoint, for the history gauges ("" for none).
    pub(super) metrics_url: String,
}

/// Publishes `per_channel` messages into each channel, round robin over `channels`; returns
/// (publishes acknowledged, payload bytes sent, refusals).
async fn publish_channels(
    mut ws: Ws,
    channels: Vec<String>,
    per_channel: usize,
    window: usize,
    pad: String,
) -> Result<(u64, u64, u64), String> {
    let mut payload_bytes = 0u64;
    let mut id = 0u64;
    let mut frames = Vec::with_capacity(per_channel * channels.len());
    for _ in 0..per_channel {
        for channel in &channels {
            id += 1;
            // `t` is fixed so that every payload has the same size but for `n`'s digits.
            let payload = format!("{{\"t\":0,\"n\":{id},\"pad\":\"{pad}\"}}");
            payload_bytes += payload.len() as u64;
            frames.push(publish_frame(id, channel, &payload));
        }
    }
    let refused = send_acked(&mut ws, frames, window).await?;
    let sent = (per_channel * channels.len()) as u64;
    Ok((sent - refused, payload_bytes, refused))
}

/// Publishes `channels x per_channel` messages of a known payload size and reads the server's
/// RSS (and the history gauges) before and after: the memory each stored publication costs.
pub(super) async fn memory(c: Common, load: MemoryLoad) -> String {
    let (sockets, mut errors) = connect_many(&c, load.conns, 64).await;
    if sockets.is_empty() {
        return json!({"scenario": "history_memory", "label": c.label, "error": "no connections"}).to_string();
    }
    // Let the handshakes' buffers go before the first reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss0, gauges0) = (rss_kb(c.server_pid), history_gauges(&load.metrics_url));
    let (ticks0, t0) = (cpu_ticks(c.server_pid), Instant::now());
    let n = sockets.len();
    let pad = "x".repeat(load.pad);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let mine = (i..load.channels).step_by(n).map(|k| format!("{}:{k}", load.prefix)).collect();
            tokio::spawn(publish_channels(ws, mine, load.per_channel, load.window, pad.clone()))
        })
        .collect();
    let (mut published, mut payload_bytes) = (0u64, 0u64);
    for task in tasks {
        match task.await {
            Ok(Ok((acked, bytes, refused))) => {
                published += acked;
                payload_bytes += bytes;
                errors += refused;
            }
            Ok(Err(e)) => {
                eprintln!("history-memory: {e}");
                errors += 1;
            }
            Err(e) => {
                eprintln!("history-memory: {e}");
                errors += 1;
            }
        }
    }
    let (secs, ticks) = (t0.elapsed().as_secs_f64(), cpu_ticks(c.server_pid).saturating_sub(ticks0));
    // Let the allocator settle (the publishers' buffers freed) before the second reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, gauges1) = (rss_kb(c.server_pid), history_gauges(&load.metrics_url));
    let sent = (load.channels * load.per_channel) as u64;
    json!({
        "scenario": "history_memory",
        "label": c.label,
        "tag": c.tag,
        "tls": c.url.starts_with("wss://"),
        "channels": load.channels,
        "per_channel": load.per_channel,
        "published": published,
        "payload_bytes_mean": payload_bytes as f64 / sent.max(1) as f64,
        "secs": secs,
        "server_cpu_us_per_op": ticks as f64 / CLOCK_TICKS_PER_SEC * 1e6 / published.max(1) as f64,
        "server_rss_before_kb": rss0,
        "server_rss_after_kb": rss1,
        "history_bytes_before": gauges0.map(|g| g.0),
        "history_bytes_after": gauges1.map(|g| g.0),
        "history_messages_before": gauges0.map(|g| g.1),
        "history_messages_after": gauges1.map(|g| g.1),
        "errors": errors,
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// history-recover

/// One subscriber's view of the channel: its position (with the ack's proof, which a recovery
/// sends back) and its socket.
struct Subscriber {
    ws: Ws,
    offset: u64,
    epoch: String,
    proof: String,
}

impl Subscriber {
    /// Subscribes (with `since` its position when `recover`) and reads the ack; returns whether
    /// the ack said `recovered: true`, and takes the ack's position when nothing is recovered.
    async fn subscribe(&mut self, channel: &str, recover: bool) -> Result<bool, String> {
        let mut frame = json!({"action": "subscribe", "id": 1, "channel": channel});
        if recover {
            frame["since"] = json!({"offset": self.offset, "epoch": self.epoch});
            frame["proof"] = json!(self.proof);
        }
        self.ws.send(Message::text(frame.to_string())).await.map_err(|e| e.to_string())?;
        let reply = next_text(&mut self.ws).await?;
        let ack: Value = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
        let (Some(offset), Some(epoch)) = (ack["offset"].as_u64(), ack["epoch"].as_str()) else {
            return Err(format!("not a subscribe ack with a position (is history on?): {reply}"));
        };
        let recovered = ack["recovered"] == Value::Bool(true);
        if !recovered {
            (self.offset, self.epoch) = (offset, epoch.to_owned());
        }
        if let Some(proof) = ack["proof"].as_str() {
            self.proof = proof.to_owned();
        }
        Ok(recovered)
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<(), String> {
        let frame = json!({"action": "unsubscribe", "id": 2, "channel": channel});
        self.ws.send(Message::text(frame.to_string())).await.map_err(|e| e.to_string())?;
        let reply = next_text(&mut self.ws).await?;
        if reply.contains("\"ack\"") { Ok(()) } else { Err(format!("unsubscribe refused: {reply}")) }
    }

    /// Reads `n` `message` frames, which must carry the offsets after the position, in order;
    /// returns when the last arrived and how many broke the order (or were not messages).
    async fn receive(&mut self, n: usize) -> Result<(Instant, u64), String> {
        let mut wrong = 0u64;
        for _ in 0..n {
            let text = next_text(&mut self.ws).await?;
            match frame_offset(&text) {
                Some(offset) if text.contains("\"message\"") => {
                    wrong += u64::from(offset != self.offset + 1);
                    self.offset = offset;
                }
                _ => {
                    if wrong == 0 {
                        eprintln!("history-recover: not a message: {text}");
                    }
                    wrong += 1;
                }
            }
        }
        Ok((Instant::now(), wrong))
    }
}

/// What one round measured: wall time in nanoseconds and server CPU in nanoseconds.
#[derive(Default)]
struct Round {
    live_ns: u64,
    live_cpu_ns: u64,
    publish_cpu_ns: u64,
    recover_ns: u64,
    recover_cpu_ns: u64,
    errors: u64,
}

/// The publisher's side of a round: `n` schema-checked publishes, `window` in flight.
async fn publish_n(ws: &mut Ws, channel: &str, n: usize, window: usize, next_id: &mut u64) -> Result<u64, String> {
    let frames: Vec<String> = (0..n)
        .map(|_| {
            *next_id += 1;
            let t = clock_nanos();
            publish_frame(*next_id, channel, &format!("{{\"t\":{t},\"n\":{next_id},\"pad\":\"{}\"}}", *PAD))
        })
        .collect();
    send_acked(ws, frames, window).await
}

/// One round, the subscriber subscribed at its start and at its end:
/// 1. live: `n` publications while subscribed (time from the first publish to the last delivery);
/// 2. the subscriber unsubscribes (not measured);
/// 3. publish only: `n` publications with nobody subscribed, stored in history;
/// 4. recovery: `subscribe` with `since`, until the n-th recovered message arrives.
async fn round(sub: &mut Subscriber, publisher: &mut Ws, ctx: &RecoverCtx, next_id: &mut u64) -> Result<Round, String> {
    let (pid, n) = (ctx.pid, ctx.messages);
    let mut r = Round::default();
    let (cpu0, t0) = (cpu_ns(pid), Instant::now());
    let (published, received) =
        tokio::join!(publish_n(publisher, &ctx.channel, n, ctx.window, next_id), sub.receive(n));
    let (last, wrong) = received?;
    r.errors += published? + wrong;
    (r.live_ns, r.live_cpu_ns) = (nanos(last - t0), cpu_ns(pid) - cpu0);

    sub.unsubscribe(&ctx.channel).await?;
    let cpu0 = cpu_ns(pid);
    r.errors += publish_n(publisher, &ctx.channel, n, ctx.window, next_id).await?;
    r.publish_cpu_ns = cpu_ns(pid) - cpu0;

    let (cpu0, t0) = (cpu_ns(pid), Instant::now());
    if !sub.subscribe(&ctx.channel, true).await? {
        // Not recovered (the history did not hold them all): nothing to time this round.
        eprintln!("history-recover: recovered: false (is history_size at least --messages?)");
        return Err("not recovered".into());
    }
    let (last, wrong) = sub.receive(n).await?;
    (r.recover_ns, r.recover_cpu_ns) = (nanos(last - t0), cpu_ns(pid) - cpu0);
    r.errors += wrong;
    Ok(r)
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// What `history-recover` runs.
pub(super) struct RecoverCtx {
    pub(super) pid: u32,
    pub(super) channel: String,
    /// Publications missed and recovered per round.
    pub(super) messages: usize,
    /// Publishes in flight on the publisher's connection.
    pub(super) window: usize,
}

/// What the measured rounds add up to.
struct Totals {
    rounds: u64,
    live: Histogram<u64>,
    recover: Histogram<u64>,
    /// The rounds' CPU times and errors, summed.
    sum: Round,
}

/// Subscribes, then runs [`round`]s through the warm-up (discarded) and the measured window (at
/// least one round is measured), adding the measured ones to `totals`.
async fn run_rounds(
    sub: &mut Subscriber,
    publisher: &mut Ws,
    ctx: &RecoverCtx,
    (warmup, window): (Duration, Duration),
    totals: &mut Totals,
) -> Result<(), String> {
    sub.subscribe(&ctx.channel, false).await?;
    let measure_from = Instant::now() + warmup;
    let measure_until = measure_from + window;
    let mut next_id = 0u64;
    loop {
        let is_measured = Instant::now() >= measure_from;
        let r = round(sub, publisher, ctx, &mut next_id).await?;
        if is_measured {
            totals.rounds += 1;
            let _ = totals.live.record(r.live_ns.max(1));
            let _ = totals.recover.record(r.recover_ns.max(1));
            totals.sum.live_cpu_ns += r.live_cpu_ns;
            totals.sum.publish_cpu_ns += r.publish_cpu_ns;
            totals.sum.recover_cpu_ns += r.recover_cpu_ns;
            totals.sum.errors += r.errors;
            if Instant::now() >= measure_until {
                return Ok(());
            }
        }
    }
}

/// Recovery time and server CPU per recovered message, against the same number delivered live.
pub(super) async fn recover(c: Common, ctx: RecoverCtx) -> String {
    let (mut sockets, errors) = connect_many(&c, 2, 2).await;
    let (Some(mut publisher), Some(ws)) = (sockets.pop(), sockets.pop()) else {
        return json!({"scenario": "history_recover", "label": c.label, "error": "no connections"}).to_string();
    };
    let mut sub = Subscriber { ws, offset: 0, epoch: String::new(), proof: String::new() };
    let mut totals =
        Totals { rounds: 0, live: new_hist(), recover: new_hist(), sum: Round { errors, ..Round::default() } };
    let times = (Duration::from_secs_f64(c.warmup_secs), Duration::from_secs_f64(c.secs));
    if let Err(e) = run_rounds(&mut sub, &mut publisher, &ctx, times, &mut totals).await {
        eprintln!("history-recover: {e}");
        totals.sum.errors += 1;
    }
    let per_msg = |ns: u64| ns as f64 / 1e3 / (totals.rounds as f64 * ctx.messages as f64);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    json!({
        "scenario": "history_recover",
        "label": c.label,
        "tag": c.tag,
        "tls": c.url.starts_with("wss://"),
        "messages": ctx.messages,
        "window": ctx.window,
        "rounds": totals.rounds,
        "recover_ms_p50": ms(&totals.recover, 0.5),
        "recover_ms_p99": ms(&totals.recover, 0.99),
        "live_ms_p50": ms(&totals.live, 0.5),
        "live_ms_p99": ms(&totals.live, 0.99),
        "recover_cpu_us_per_msg": per_msg(totals.sum.recover_cpu_ns),
        "live_cpu_us_per_msg": per_msg(totals.sum.live_cpu_ns),
        "publish_cpu_us_per_msg": per_msg(totals.sum.publish_cpu_ns),
        "errors": totals.sum.errors,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_frames_last() {
        let frame = r#"{"type":"message","channel":"bench","payload":{"t":1,"n":2,"pad":"x"},"offset":42}"#;
        assert_eq!(frame_offset(frame), Some(42));
        assert_eq!(frame_offset(r#"{"type":"ack","id":1}"#), None);
    }
}
