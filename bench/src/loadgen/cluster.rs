//! `loadgen cluster`: N subscribers on one node (`--url`, process `--server-pid`), a publisher at a
//! fixed rate on another (`--pub-url`, process `--pub-pid`; both default to the first node, which
//! is the single-node run of the same script). Reports the end-to-end latency of every delivery
//! (publisher's timestamp to arrival), the latency of every publish's `ack` (which, on a cluster
//! node, waits for the broker's confirmation), and each node's CPU: per delivery on the receiving
//! node, per publication on the publishing node. With `--subs 0` only the publisher runs: the
//! local publish's own cost, the reference for the publishing node.
//!
//! CPU comes from `/proc/PID/task/*/schedstat` (nanoseconds on the CPU, every thread summed), so a
//! publishing node that spends a few milliseconds in a window is still measured; `/proc/PID/stat`'s
//! clock ticks are reported beside it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use wsguard_bench::clock_nanos;

use super::{Common, MEASURE, STOP, WARMUP, connect_many, cpu_ticks, new_hist, payload_t, rss_kb};

#[derive(Args, Clone)]
pub(crate) struct ClusterArgs {
    /// The publishing node's URL (default: `--url`, one node).
    #[arg(long, default_value = "")]
    pub_url: String,
    /// The publishing node's process (default: `--server-pid`).
    #[arg(long, default_value_t = 0)]
    pub_pid: u32,
    /// Subscribers on the receiving node; 0 runs the publisher alone.
    #[arg(long, default_value_t = 1000)]
    subs: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    #[arg(long, default_value = "bench")]
    channel: String,
}

/// Nanoseconds the process `pid` spent on a CPU (user and system), summed over its threads from
/// `/proc/PID/task/*/schedstat` (field 1). A thread that ends inside a window takes its time with
/// it; the nodes' threads (tokio's workers) live as long as the process.
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// CPU readings of one process at the start of the window.
struct CpuMark {
    pid: u32,
    ns: u64,
    ticks: u64,
}

impl CpuMark {
    fn take(pid: u32) -> Self {
        CpuMark { pid, ns: cpu_ns(pid), ticks: cpu_ticks(pid) }
    }

    /// (µs of CPU, clock ticks) since the mark.
    fn since(&self) -> (f64, u64) {
        let ns = cpu_ns(self.pid).saturating_sub(self.ns);
        (ns as f64 / 1000.0, cpu_ticks(self.pid).saturating_sub(self.ticks))
    }
}

/// Counters and histograms the tasks share.
struct Shared {
    phase: AtomicU8,
    /// Deliveries that arrived inside the measured window.
    deliveries: AtomicU64,
    /// Every delivery, warm-up and drain included (against every publication, for lost ones).
    received: AtomicU64,
    /// Set once the deliveries in flight after the window have arrived (or were waited for).
    done: tokio::sync::watch::Sender<bool>,
    errors: AtomicU64,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
    acks: Mutex<hdrhistogram::Histogram<u64>>,
}

pub(crate) async fn run(c: Common, a: ClusterArgs) -> String {
    let pub_common = Common {
        url: if a.pub_url.is_empty() { c.url.clone() } else { a.pub_url.clone() },
        server_pid: if a.pub_pid == 0 { c.server_pid } else { a.pub_pid },
        ..c.clone()
    };
    let one_node = pub_common.server_pid == c.server_pid;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        deliveries: AtomicU64::new(0),
        received: AtomicU64::new(0),
        done: tokio::sync::watch::Sender::new(false),
        errors: AtomicU64::new(0),
        latency: Mutex::new(new_hist()),
        acks: Mutex::new(new_hist()),
    });
    let (subscribers, mut errors) = connect_many(&c, a.subs, 64).await;
    let (mut publisher, pub_errors) = connect_many(&pub_common, 1, 1).await;
    errors += pub_errors;
    let Some(publisher) = publisher.pop() else {
        return json!({"scenario": "cluster", "label": c.label, "error": "the publisher could not connect"})
            .to_string();
    };
    let mut tasks = Vec::new();
    let subscribe = format!("{{\"action\":\"subscribe\",\"id\":1,\"channel\":{}}}", json!(a.channel));
    let mut subscribed = 0u64;
    for mut ws in subscribers {
        let ok = ws.send(Message::text(subscribe.clone())).await.is_ok()
            && matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\""));
        if !ok {
            errors += 1;
            continue;
        }
        subscribed += 1;
        tasks.push(tokio::spawn(subscriber(ws, Arc::clone(&shared))));
    }
    let published = Arc::new(AtomicU64::new(0));
    let pub_task = tokio::spawn(publish(publisher, a.clone(), Arc::clone(&shared), Arc::clone(&published)));

    tokio::time::sleep(Duration::from_secs_f64(c.warmup_secs)).await;
    let (sub_mark, pub_mark) = (CpuMark::take(c.server_pid), CpuMark::take(pub_common.server_pid));
    let (pubs0, dels0) = (published.load(Ordering::Relaxed), shared.deliveries.load(Ordering::Relaxed));
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(c.secs)).await;
    shared.phase.store(STOP, Ordering::SeqCst);
    let (sub_cpu_us, sub_ticks) = sub_mark.since();
    let (pub_cpu_us, pub_ticks) = pub_mark.since();
    let secs = t0.elapsed().as_secs_f64();
    let pubs = published.load(Ordering::Relaxed) - pubs0;
    let deliveries = shared.deliveries.load(Ordering::Relaxed) - dels0;
    let _ = tokio::time::timeout(Duration::from_secs(2), pub_task).await;
    // Every publication should reach every subscriber: wait for the last ones, then count.
    let expected = published.load(Ordering::Relaxed) * subscribed;
    let drain = Instant::now() + Duration::from_secs(3);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = expected.saturating_sub(shared.received.load(Ordering::Relaxed));
    shared.done.send_replace(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    errors += shared.errors.load(Ordering::Relaxed);
    let per = |us: f64, n: u64| if n > 0 { us / n as f64 } else { f64::NAN };
    let lat = shared.latency.lock().expect("hist").clone();
    let acks = shared.acks.lock().expect("hist").clone();
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let role = if a.subs == 0 {
        "publish-only"
    } else if one_node {
        "one-node"
    } else {
        "two-nodes"
    };
    // server_cpu_us_per_op is what report.py's main table shows: the receiving node's CPU per
    // delivery (per publication when there is no subscriber).
    let (ops, op_cpu) =
        if a.subs == 0 { (pubs, per(pub_cpu_us, pubs)) } else { (deliveries, per(sub_cpu_us, deliveries)) };
    json!({
        "scenario": "cluster",
        "role": role,
        "label": c.label,
        "tls": false,
        "subs": subscribed,
        "rate": a.rate,
        "secs": secs,
        "ops": ops,
        "ops_per_sec": ops as f64 / secs,
        "publications": pubs,
        "deliveries": deliveries,
        "lost": lost,
        "p50_us": q(&lat, 0.50),
        "p99_us": q(&lat, 0.99),
        "p999_us": q(&lat, 0.999),
        "max_us": lat.max() as f64 / 1000.0,
        "ack_p50_us": q(&acks, 0.50),
        "ack_p99_us": q(&acks, 0.99),
        "server_cpu_us_per_op": op_cpu,
        "sub_cpu_us_per_delivery": per(sub_cpu_us, deliveries),
        "pub_cpu_us_per_publication": per(pub_cpu_us, pubs),
        "sub_cpu_util": sub_cpu_us / 1e6 / secs,
        "pub_cpu_util": pub_cpu_us / 1e6 / secs,
        "sub_cpu_ticks": sub_ticks,
        "pub_cpu_ticks": pub_ticks,
        "sub_rss_kb": rss_kb(c.server_pid),
        "pub_rss_kb": rss_kb(pub_common.server_pid),
        "errors": errors,
    })
    .to_string()
}

/// Reads deliveries; records each one's end-to-end latency inside the measured window.
async fn subscriber(mut ws: super::Ws, shared: Arc<Shared>) {
    let mut hist = new_hist();
    let mut done = shared.done.subscribe();
    loop {
        let next = tokio::select! {
            next = ws.next() => next,
            _ = done.wait_for(|done| *done) => break,
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let now = clock_nanos();
        let phase = shared.phase.load(Ordering::Relaxed);
        match payload_t(text.as_str()) {
            Some(t) if text.as_str().contains("\"message\"") => {
                shared.received.fetch_add(1, Ordering::Relaxed);
                if phase == MEASURE {
                    shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    let _ = hist.record(now.saturating_sub(t).max(1));
                }
            }
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    shared.latency.lock().expect("hist").add(&hist).expect("hist add");
}

/// Publishes at the fixed rate until the window ends; every `ack` is timed against its publish.
async fn publish(publisher: super::Ws, a: ClusterArgs, shared: Arc<Shared>, published: Arc<AtomicU64>) {
    let (mut sink, mut stream) = publisher.split();
    let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let reader = {
        let (sent, shared) = (Arc::clone(&sent), Arc::clone(&shared));
        tokio::spawn(async move {
            let mut hist = new_hist();
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                // Acks come in publish order; anything else (an error reply) is counted.
                let front = sent.lock().expect("sent").pop_front();
                match front {
                    Some(at) if t.as_str().contains("\"ack\"") => {
                        if shared.phase.load(Ordering::Relaxed) == MEASURE {
                            let _ = hist.record(at.elapsed().as_nanos() as u64);
                        }
                    }
                    _ => {
                        if shared.errors.load(Ordering::Relaxed) == 0 {
                            eprintln!("cluster: publish answered {}", t.as_str());
                        }
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if shared.phase.load(Ordering::Relaxed) == STOP && sent.lock().expect("sent").is_empty() {
                    break;
                }
            }
            shared.acks.lock().expect("hist").add(&hist).expect("hist add");
        })
    };
    let channel = json!(a.channel).to_string();
    let pad = "x".repeat(64);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut k = 0u64;
    while shared.phase.load(Ordering::Relaxed) != STOP {
        ticker.tick().await;
        k += 1;
        let t = clock_nanos();
        let frame = format!(
            "{{\"action\":\"publish\",\"id\":{k},\"channel\":{channel},\"payload\":{{\"t\":{t},\"n\":{k},\"pad\":\"{pad}\"}}}}"
        );
        sent.lock().expect("sent").push_back(Instant::now());
        if sink.send(Message::Text(Utf8Bytes::from(frame))).await.is_err() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        published.fetch_add(1, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
}
