//! `loadgen churn`: C loops, each repeating one connection's whole life: connect and authenticate
//! (the token in the upgrade), subscribe to a channel of its own (`<prefix>:l<loop>c<cycle>`, a new
//! name every cycle, so the server creates and drops the channel's state too), publish one message
//! on it, receive that message and the publish's `ack`, close (the server's Close and EOF awaited).
//! The server's RSS is read every half second of the measured window; the growth is reported per
//! 100,000 cycles, from the window's first and last readings and as the least-squares slope of all
//! of them, with the cycles per second and the server CPU per cycle.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::cluster::cpu_ns;
use super::{Common, MEASURE, STOP, WARMUP, connect, cpu_ticks, new_hist, rss_kb, src_addrs};

#[derive(Args, Clone)]
pub(crate) struct ChurnArgs {
    /// Connection loops in parallel.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// First segment of every cycle's channel (the server needs a rule `<prefix>:{x}`).
    #[arg(long, default_value = "churn")]
    channel_prefix: String,
}

/// RSS readings are taken this often during the window.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

pub(crate) async fn run(c: Common, a: ChurnArgs) -> String {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let total = Arc::new(Mutex::new(new_hist()));
    let srcs: Arc<Vec<IpAddr>> = Arc::new(src_addrs(&c));
    let mut tasks = Vec::new();
    for i in 0..a.conns {
        let (c, a, phase, cycles, errors, total, srcs) =
            (c.clone(), a.clone(), phase.clone(), cycles.clone(), errors.clone(), total.clone(), srcs.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut k = 0u64;
            while phase.load(Ordering::Relaxed) != STOP {
                k += 1;
                let src = if srcs.is_empty() { None } else { Some(srcs[(i + k as usize) % srcs.len()]) };
                let channel = format!("{}:l{i}c{k}", a.channel_prefix);
                let t0 = Instant::now();
                match cycle(&c, src, &channel, k).await {
                    Ok(()) if phase.load(Ordering::Relaxed) == MEASURE => {
                        let _ = hist.record(t0.elapsed().as_nanos() as u64);
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("churn: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            total.lock().expect("hist").add(&hist).expect("hist add");
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(c.warmup_secs)).await;
    let (ns0, ticks0) = (cpu_ns(c.server_pid), cpu_ticks(c.server_pid));
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    // (cycles so far, RSS KiB), from the window's start to its end.
    let mut samples = vec![(0u64, rss_kb(c.server_pid))];
    let end = t0 + Duration::from_secs_f64(c.secs);
    while Instant::now() < end {
        tokio::time::sleep(SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        samples.push((cycles.load(Ordering::Relaxed), rss_kb(c.server_pid)));
    }
    phase.store(STOP, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let cpu_us = cpu_ns(c.server_pid).saturating_sub(ns0) as f64 / 1000.0;
    let ticks = cpu_ticks(c.server_pid).saturating_sub(ticks0);
    let n = cycles.load(Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // With every connection closed and the server's per-connection work done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_settled = rss_kb(c.server_pid);
    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    let per_100k = |bytes: f64| if n > 0 { bytes / n as f64 * 100_000.0 } else { f64::NAN };
    let hist = total.lock().expect("hist").clone();
    json!({
        "scenario": "churn",
        "label": c.label,
        "tls": c.url.starts_with("wss://"),
        "conns": a.conns,
        "secs": secs,
        "ops": n,
        "ops_per_sec": n as f64 / secs,
        "p50_us": hist.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_us": hist.value_at_quantile(0.99) as f64 / 1000.0,
        "server_cpu_us_per_op": if n > 0 { cpu_us / n as f64 } else { f64::NAN },
        "server_cpu_ticks": ticks,
        "server_cpu_util": cpu_us / 1e6 / secs,
        "rss_start_kb": first,
        "rss_end_kb": last,
        "rss_settled_kb": rss_settled,
        "rss_growth_bytes_per_100k": per_100k((last as f64 - first as f64) * 1024.0),
        "rss_slope_bytes_per_100k": slope_per_cycle(&samples) * 1024.0 * 100_000.0,
        "rss_samples": samples.len(),
        "errors": errors.load(Ordering::Relaxed),
    })
    .to_string()
}

/// One connection's life; an error names the step that failed.
async fn cycle(c: &Common, src: Option<IpAddr>, channel: &str, k: u64) -> Result<(), String> {
    let mut ws = connect(c, src).await.map_err(|e| format!("connect: {e}"))?;
    let channel = json!(channel);
    let subscribe = json!({"action": "subscribe", "id": 1, "channel": channel}).to_string();
    ws.send(Message::text(subscribe)).await.map_err(|e| format!("subscribe: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => {}
        other => return Err(format!("subscribe answered {other:?}")),
    }
    let payload = json!({"t": k, "n": k, "pad": "churn"});
    let publish = json!({"action": "publish", "id": 2, "channel": channel, "payload": payload}).to_string();
    ws.send(Message::text(publish)).await.map_err(|e| format!("publish: {e}"))?;
    // The message and the ack, in either order.
    let (mut has_message, mut has_ack) = (false, false);
    while !(has_message && has_ack) {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => has_ack = true,
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"message\"") => has_message = true,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("publish answered {other:?}")),
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    let mut answered = false;
    while let Some(Ok(message)) = ws.next().await {
        answered |= message.is_close();
    }
    if answered { Ok(()) } else { Err("the server did not answer the Close".to_string()) }
}

/// Least-squares slope of RSS (KiB) over cycles: KiB per cycle (0 without two distinct counts).
fn slope_per_cycle(samples: &[(u64, u64)]) -> f64 {
    let n = samples.len() as f64;
    let mean_x = samples.iter().map(|s| s.0 as f64).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(x, y) in samples {
        sxy += (x as f64 - mean_x) * (y as f64 - mean_y);
        sxx += (x as f64 - mean_x) * (x as f64 - mean_x);
    }
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}
