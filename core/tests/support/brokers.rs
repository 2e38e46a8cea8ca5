//! What the cluster tests share: the machine's brokers, skipping when one is missing (never under
//! `WSGUARD_REQUIRE_BROKERS=1`), unique channel prefixes and a node's `[cluster]` setup.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Setup, TestServer, Ws, admin_request, assert_frame, request};

/// The machine's Redis and NATS (tests that restart or reconfigure a broker start their own).
pub const REDIS: &str = "127.0.0.1:6379";
pub const NATS: &str = "127.0.0.1:4222";

/// How long a cross-node effect may take here before a test fails (the documented bound is
/// broker latency; this is generous for a loaded 2-core machine).
pub const CROSS_NODE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Redis,
    Nats,
}

impl Kind {
    /// The `cluster.broker` value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }

    /// The machine's broker of this kind, as a `cluster.url`.
    pub fn shared_url(self) -> String {
        match self {
            Kind::Redis => format!("redis://{REDIS}"),
            Kind::Nats => format!("nats://{NATS}"),
        }
    }

    pub fn shared_addr(self) -> &'static str {
        match self {
            Kind::Redis => REDIS,
            Kind::Nats => NATS,
        }
    }

    /// The server binary a test starts for a private broker.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        }
    }

    /// The broker subject of `channel` (names without NATS escapes).
    pub fn channel_subject(self, prefix: &str, channel: &str) -> String {
        match self {
            Kind::Redis => format!("{prefix}:c:{channel}"),
            Kind::Nats => format!("{prefix}.c.{}", channel.replace(':', ".")),
        }
    }

    pub fn control_subject(self, prefix: &str) -> String {
        match self {
            Kind::Redis => format!("{prefix}:control"),
            Kind::Nats => format!("{prefix}.control"),
        }
    }
}

/// True when `addr` accepts TCP connections; otherwise skips (or fails under
/// `WSGUARD_REQUIRE_BROKERS=1`).
pub fn broker_or_skip(test: &str, what: &str, addr: &str) -> bool {
    let reachable = addr
        .parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok());
    if !reachable {
        skip(test, &format!("{what} is not reachable at {addr}"));
    }
    reachable
}

pub fn binary_or_skip(test: &str, binary: &str) -> bool {
    let found = Command::new(binary).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        skip(test, &format!("`{binary}` is not installed (needed for a private broker)"));
    }
    found
}

/// Says so on stderr: a skipped test must be visible in the test output.
#[allow(clippy::print_stderr)]
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("WSGUARD_REQUIRE_BROKERS").as_deref() != Ok("1"),
        "{test}: {why}, and WSGUARD_REQUIRE_BROKERS=1 forbids skipping"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// A channel prefix no other test (or earlier run) uses.
pub fn prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("t{}-{}-{nanos:x}-{test}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("address").port()
}

/// A node's setup: the test defaults plus `[cluster]` with `cluster_lines`.
pub fn node(kind: Kind, url: &str, prefix: &str, id: &str, cluster_lines: &str) -> Setup {
    Setup::new().limits("connections_per_ip = 100").extra(&format!(
        "[cluster]\nbroker = \"{}\"\nurl = \"{url}\"\nnode_id = \"{id}\"\nchannel_prefix = \"{prefix}\"\n\
         reconnect_max_secs = 0.5\n{cluster_lines}",
        kind.name()
    ))
}

/// Waits (bounded) until `/readyz` answers 200.
pub async fn wait_ready(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = admin_request(server.metrics_addr(), "GET", "/readyz").await.status;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` until it holds, for at most [`CROSS_NODE`].
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + CROSS_NODE;
    while !f().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {CROSS_NODE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscribes with id 1 and expects the ack.
pub async fn subscribe(ws: &mut Ws, channel: &str) {
    let reply = request(ws, &json!({"action": "subscribe", "id": 1, "channel": channel})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 1}));
}
