//! Several nodes in one test, joined through the real Redis (127.0.0.1:6379) and NATS
//! (127.0.0.1:4222) servers of the development and CI machines, plus private `redis-server` /
//! `nats-server` processes for broker restarts. Every test uses its own `channel_prefix`, so
//! tests running in parallel never see each other's traffic.
//!
//! Without those servers the broker tests print `SKIPPED` with the reason and pass;
//! `WSGUARD_REQUIRE_BROKERS=1` (set by `.ci/run`) turns such a skip into a failure.

#![allow(missing_docs)]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::brokers::{
    Kind, NATS, REDIS, binary_or_skip, broker_or_skip, eventually, free_port, node, prefix, subscribe,
};
use support::{RawRequest, Setup, TestServer, Ws, admin_request, assert_frame, expect_close, recv_json, request};
use wsguard::auth::Revocation;
use wsguard::limits::BanTarget;

async fn readyz(server: &TestServer) -> u16 {
    admin_request(server.metrics_addr(), "GET", "/readyz").await.status
}

/// Waits until `/readyz` answers `status`.
async fn wait_readyz(server: &TestServer, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = readyz(server).await;
        if now == status {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now}, expected {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(ws: &mut Ws, id: u64, channel: &str, payload: Value) -> Value {
    request(ws, &json!({"action": "publish", "id": id, "channel": channel, "payload": payload})).await
}

// --- publications -------------------------------------------------------------------------

async fn publication_crosses_nodes(kind: Kind, test: &str) {
    if !broker_or_skip(test, kind.name(), kind.shared_addr()) {
        return;
    }
    let p = prefix(test);
    let a = node(kind, &kind.shared_url(), &p, "a", "").start().await;
    let b = node(kind, &kind.shared_url(), &p, "b", "").start().await;
    wait_readyz(&a, 200).await;
    wait_readyz(&b, 200).await;

    let mut on_a = a.session("alice").await;
    let mut also_on_b = b.session("carol").await;
    subscribe(&mut on_a, "room:1").await;
    subscribe(&mut also_on_b, "room:1").await;
    let mut publisher = b.session("bob").await;
    assert_frame(&publish(&mut publisher, 2, "room:1", json!({"n": 1})).await, &json!({"type": "ack", "id": 2}));
    let expected = json!({"type": "message", "channel": "room:1", "payload": {"n": 1}});
    assert_frame(&recv_json(&mut on_a).await, &expected);
    assert_frame(&recv_json(&mut also_on_b).await, &expected);

    // The host's publish on A reaches B; each subscriber gets each message exactly once.
    a.handle.publish("room:1", &json!({"n": 2})).expect("host publish");
    let second = json!({"type": "message", "channel": "room:1", "payload": {"n": 2}});
    assert_frame(&recv_json(&mut also_on_b).await, &second);
    assert_frame(&recv_json(&mut on_a).await, &second);
    publish(&mut publisher, 3, "room:1", json!({"n": 3})).await;
    assert_eq!(recv_json(&mut on_a).await["payload"]["n"], 3, "no duplicate of n=2 on A");
    assert_eq!(recv_json(&mut also_on_b).await["payload"]["n"], 3, "no duplicate of n=2 on B");

    // A name with NATS separators and the escape character maps to one literal subject and back.
    subscribe(&mut on_a, "room:v1.2_x").await;
    publish(&mut publisher, 4, "room:v1.2_x", json!({"n": 4})).await;
    assert_frame(
        &recv_json(&mut on_a).await,
        &json!({"type": "message", "channel": "room:v1.2_x", "payload": {"n": 4}}),
    );

    let metrics = a.scrape().await;
    assert_eq!(metrics.get("wsguard_broker_connected"), 1.0);
    assert!(metrics.get("wsguard_broker_messages_total{direction=\"received\",kind=\"publication\"}") >= 2.0);
    assert!(metrics.get("wsguard_broker_messages_total{direction=\"published\",kind=\"publication\"}") >= 1.0);
    assert_eq!(metrics.get("wsguard_broker_subscriptions"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_publication_on_one_node_reaches_subscribers_on_another() {
    publication_crosses_nodes(Kind::Redis, "redis_publication").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publication_on_one_node_reaches_subscribers_on_another() {
    publication_crosses_nodes(Kind::Nats, "nats_publication").await;
}

/// Subscribe-on-demand: the node holds a broker subscription only while it has a local
/// subscriber.
async fn broker_subscriptions_follow_local_interest(kind: Kind, test: &str) {
    if !broker_or_skip(test, kind.name(), kind.shared_addr()) {
        return;
    }
    let p = prefix(test);
    let a = node(kind, &kind.shared_url(), &p, "a", "").start().await;
    wait_readyz(&a, 200).await;
    assert_eq!(a.scrape().await.get("wsguard_broker_subscriptions"), 0.0);
    let mut ws = a.session("alice").await;
    subscribe(&mut ws, "room:7").await;
    assert_eq!(a.scrape().await.get("wsguard_broker_subscriptions"), 1.0, "subscribed before the ack");
    let reply = request(&mut ws, &json!({"action": "unsubscribe", "id": 2, "channel": "room:7"})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 2}));
    eventually("the broker unsubscription", async || a.scrape().await.get("wsguard_broker_subscriptions") == 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_follow_local_interest() {
    broker_subscriptions_follow_local_interest(Kind::Redis, "redis_interest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_subscriptions_follow_local_interest() {
    broker_subscriptions_follow_local_interest(Kind::Nats, "nats_interest").await;
}

// --- revocations and bans -------------------------------------------------------------------

async fn revocations_and_bans_hold_across_nodes(kind: Kind, test: &str) {
    if !broker_or_skip(test, kind.name(), kind.shared_addr()) {
        return;
    }
    let p = prefix(test);
    let a = node(kind, &kind.shared_url(), &p, "a", "").start().await;
    let b = node(kind, &kind.shared_url(), &p, "b", "").start().await;
    wait_readyz(&a, 200).await;
    wait_readyz(&b, 200).await;

    let token = b.token("alice");
    let mut on_b = b.ws(&support::Connect::new().bearer(&token)).await;
    support::ping(&mut on_b, 1).await;
    a.handle.revoke(Revocation::Subject("alice".into()));
    assert_eq!(expect_close(&mut on_b).await, 4501, "revoked on A, closed on B");
    b.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_revoked");

    a.handle.ban(BanTarget::User("mallory".into()), Duration::from_secs(60));
    let mallory = b.token("mallory");
    eventually("the ban on B", async || b.exchange(&RawRequest::authorized(&mallory)).await.status == 403).await;
    b.exchange(&RawRequest::authorized(&mallory)).await.assert_refused(403, "banned");
    assert_eq!(b.handle.bans().len(), 1);

    // Lifting on B lifts on A too.
    assert!(b.handle.lift_ban(&BanTarget::User("mallory".into())));
    eventually("the lift on A", async || a.handle.bans().is_empty()).await;

    // A node that joins later learns what is still in force from the others' re-sends.
    let c = node(kind, &kind.shared_url(), &p, "c", "").start().await;
    wait_readyz(&c, 200).await;
    eventually("the revocation on the late node C", async || {
        c.exchange(&RawRequest::authorized(&token)).await.status == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocation_and_ban_on_one_node_apply_on_the_others() {
    revocations_and_bans_hold_across_nodes(Kind::Redis, "redis_revocation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_revocation_and_ban_on_one_node_apply_on_the_others() {
    revocations_and_bans_hold_across_nodes(Kind::Nats, "nats_revocation").await;
}

// --- cluster-wide per-user quota -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_quota_counts_sessions_on_every_node() {
    let test = "redis_quota";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let setup = |id| node(Kind::Redis, &Kind::Redis.shared_url(), &p, id, "").limits("connections_per_user = 2");
    let a = setup("a").start().await;
    let b = setup("b").start().await;
    wait_readyz(&a, 200).await;
    wait_readyz(&b, 200).await;

    let _first = a.session("alice").await;
    let mut second = b.session("alice").await;
    let refused = a.exchange(&RawRequest::authorized(&a.token("alice"))).await;
    refused.assert_refused(429, "too_many_connections_per_user");
    refused.assert_retry_after();
    b.exchange(&RawRequest::authorized(&b.token("alice"))).await.assert_refused(429, "too_many_connections_per_user");
    let _bob = a.session("bob").await;

    // Closing the session on B frees a slot for A.
    second.close(None).await.expect("close");
    drop(second);
    eventually("the slot freed on B to be usable on A", async || {
        a.exchange(&RawRequest::authorized(&a.token("alice"))).await.status != 429
    })
    .await;
}

/// With the store unreachable, `quota_failure` decides: `closed` refuses with 503, `open`
/// admits (this node's own quota still applies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_quota_store_fails_closed_or_open_as_configured() {
    let test = "quota_failure";
    if !broker_or_skip(test, "nats", NATS) {
        return;
    }
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let quota = |policy: &str| {
        // state_failure = "open": this test is about the quota store alone (the same dead Redis
        // would otherwise hold the node closed until it has loaded the persisted bans).
        format!(
            "quota_redis_url = \"{dead}\"\nquota_failure = \"{policy}\"\nbroker_timeout_secs = 0.5\nstate_failure = \"open\"\n"
        )
    };
    let p = prefix(test);
    let closed = node(Kind::Nats, &Kind::Nats.shared_url(), &p, "c", &quota("closed")).start().await;
    closed.exchange(&RawRequest::authorized(&closed.token("alice"))).await.assert_refused(503, "quota_unavailable");
    let open = node(Kind::Nats, &Kind::Nats.shared_url(), &p, "o", &quota("open"))
        .limits("connections_per_user = 1")
        .start()
        .await;
    let _admitted = open.session("alice").await;
    open.exchange(&RawRequest::authorized(&open.token("alice")))
        .await
        .assert_refused(429, "too_many_connections_per_user");
    assert!(open.scrape().await.get("wsguard_broker_errors_total{op=\"quota\"}") >= 1.0);
}

// --- node failure ---------------------------------------------------------------------------

/// A node on its own runtime and thread, so the test can kill it without any graceful step:
/// the runtime is dropped with every task, like a crashed process (its quota leases are never
/// released and must expire).
struct Doomed {
    addr: SocketAddr,
    token: String,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Doomed {
    fn start(setup: Setup, subject: &str) -> Doomed {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let subject = subject.to_string();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let server = setup.start().await;
                wait_readyz(&server, 200).await;
                let _ = ready_tx.send((server.addr, server.token(&subject)));
                let _ = kill_rx.await;
                // No shutdown: the runtime is dropped under the server.
                std::mem::forget(server);
            });
            runtime.shutdown_background();
        });
        let (addr, token) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("doomed node started");
        Doomed { addr, token, kill: Some(kill), thread: Some(thread) }
    }

    fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_leaves_the_others_working_and_its_quota_entries_expire() {
    let test = "redis_kill";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let setup = |id| {
        node(Kind::Redis, &Kind::Redis.shared_url(), &p, id, "lease_ttl_secs = 1.5\n")
            .limits("connections_per_user = 1")
    };
    let a = setup("a").start().await;
    let c = setup("c").start().await;
    let mut b = Doomed::start(setup("b"), "alice");
    wait_readyz(&a, 200).await;
    wait_readyz(&c, 200).await;

    // alice's one session lives on B.
    let stream = tokio::net::TcpStream::connect(b.addr).await.expect("connect to B");
    let url = format!("ws://{}{}", b.addr, support::PATH);
    let (mut on_b, _) =
        support::handshake(stream, &url, &support::Connect::new().bearer(&b.token)).await.expect("alice on B");
    support::ping(&mut on_b, 1).await;
    a.exchange(&RawRequest::authorized(&a.token("alice"))).await.assert_refused(429, "too_many_connections_per_user");

    let mut subscriber = c.session("carol").await;
    subscribe(&mut subscriber, "room:9").await;
    let mut publisher = a.session("bob").await;

    b.kill();

    // The survivors carry on: A -> C fan-out works.
    assert_frame(&publish(&mut publisher, 2, "room:9", json!({"n": 1})).await, &json!({"type": "ack", "id": 2}));
    assert_frame(
        &recv_json(&mut subscriber).await,
        &json!({"type": "message", "channel": "room:9", "payload": {"n": 1}}),
    );
    assert_eq!(readyz(&a).await, 200);
    assert_eq!(readyz(&c).await, 200);
    // B's lease expires (1.5 s) and alice may connect elsewhere.
    eventually("B's quota entry to expire", async || {
        a.exchange(&RawRequest::authorized(&a.token("alice"))).await.status != 429
    })
    .await;
}

// --- broker outage --------------------------------------------------------------------------

/// A private broker process on its own port, restartable.
struct PrivateBroker {
    kind: Kind,
    port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    fn start(kind: Kind) -> PrivateBroker {
        let mut broker = PrivateBroker { kind, port: free_port(), child: None };
        broker.spawn();
        broker
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
                c
            }
            Kind::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port]);
                c
            }
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start a private broker");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "private {} did not start", self.kind.name());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn broker_restart(kind: Kind, test: &str) {
    let binary = match kind {
        Kind::Redis => "redis-server",
        Kind::Nats => "nats-server",
    };
    if !binary_or_skip(test, binary) {
        return;
    }
    let mut broker = PrivateBroker::start(kind);
    let p = prefix(test);
    let a = node(kind, &broker.url(), &p, "a", "broker_timeout_secs = 0.5\n").start().await;
    let b = node(kind, &broker.url(), &p, "b", "broker_timeout_secs = 0.5\n").start().await;
    wait_readyz(&a, 200).await;
    wait_readyz(&b, 200).await;
    let mut subscriber = a.session("alice").await;
    subscribe(&mut subscriber, "room:1").await;
    let mut local_publisher = a.session("dave").await;
    let mut remote_publisher = b.session("bob").await;
    publish(&mut remote_publisher, 2, "room:1", json!({"n": 1})).await;
    assert_eq!(recv_json(&mut subscriber).await["payload"]["n"], 1);

    broker.stop();
    wait_readyz(&a, 503).await;
    // Never a silent success: the publisher is told, and the local subscriber still gets it.
    let reply = publish(&mut local_publisher, 3, "room:1", json!({"n": 2})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 3, "code": "broker_unavailable"}));
    assert_eq!(recv_json(&mut subscriber).await["payload"]["n"], 2);
    let host = a.handle.publish("room:1", &json!({"n": 3})).expect_err("host publish during the outage");
    assert_eq!(host.code(), wsguard::ErrorCode::BrokerUnavailable);
    assert_eq!(recv_json(&mut subscriber).await["payload"]["n"], 3);

    broker.spawn();
    wait_readyz(&a, 200).await;
    wait_readyz(&b, 200).await;
    assert_frame(
        &recv_json(&mut subscriber).await,
        &json!({"type": "gap", "channel": "room:1", "reason": "broker_reconnected"}),
    );
    // Re-subscribed: B's publications reach A again.
    eventually("re-subscription", async || {
        publish(&mut remote_publisher, 4, "room:1", json!({"n": 4})).await["type"] == "ack"
    })
    .await;
    assert_eq!(recv_json(&mut subscriber).await["payload"]["n"], 4);
    let metrics = a.scrape().await;
    assert!(metrics.get("wsguard_broker_reconnects_total") >= 1.0);
    assert!(metrics.get("wsguard_broker_errors_total{op=\"publish\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_leads_to_reconnect_resubscribe_and_a_gap_frame() {
    broker_restart(Kind::Redis, "redis_restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_leads_to_reconnect_resubscribe_and_a_gap_frame() {
    broker_restart(Kind::Nats, "nats_restart").await;
}

/// Needs no broker at all: a node whose broker is unreachable from the start is not ready,
/// refuses to pretend a publish reached the cluster, and still serves local subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_means_not_ready_and_error_replies_but_local_fan_out() {
    for kind in [Kind::Redis, Kind::Nats] {
        let dead = match kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", free_port()),
            Kind::Nats => format!("nats://127.0.0.1:{}", free_port()),
        };
        // state_failure = "open": a Redis broker that was never reachable also holds the
        // persisted bans, and the default would admit no one (tested in cluster_integrity.rs).
        let lines = "broker_timeout_secs = 0.5\nstate_failure = \"open\"\n";
        let a = node(kind, &dead, &prefix("dead"), "a", lines).start().await;
        assert_eq!(readyz(&a).await, 503, "{kind:?}");
        let mut subscriber = a.session("alice").await;
        subscribe(&mut subscriber, "room:1").await;
        let mut publisher = a.session("bob").await;
        let reply = publish(&mut publisher, 2, "room:1", json!({"n": 1})).await;
        assert_frame(&reply, &json!({"type": "error", "id": 2, "code": "broker_unavailable"}));
        assert!(reply["message"].as_str().is_some_and(|m| m.contains("this node only")), "{reply}");
        assert_eq!(recv_json(&mut subscriber).await["payload"]["n"], 1, "{kind:?}");
        // Not a violation: the session stays open and usable.
        support::ping(&mut publisher, 3).await;
        assert_eq!(a.scrape().await.get("wsguard_broker_connected"), 0.0);
    }
}
