//! Channel history across a cluster, through the machine's Redis (127.0.0.1:6379): offsets
//! stay strictly increasing per channel whichever node publishes, a subscriber that leaves one
//! node (killed) recovers on another exactly (missed ones, then live ones, in order, none twice),
//! and a history lost in Redis (its keys deleted) gives `recovered: false` and a `gap`, never a
//! wrong replay. Each test uses its own `channel_prefix`.
//!
//! Without that Redis the tests print `SKIPPED` and pass; `WSGUARD_REQUIRE_BROKERS=1` forbids it.

#![allow(missing_docs)]

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::brokers::{Kind, REDIS, broker_or_skip, node, prefix, wait_ready};
use support::{Setup, TempDir, Ws, assert_frame, ping, recv_json, request, send_json};

/// `feed:{n}` keeps history; anyone may subscribe, publish and read it.
const RULES: &str = r#"
[[channels]]
pattern = "feed:{n}"
subscribe = {}
publish = {}
history = {}
history_size = 10000
history_ttl_secs = 300
"#;

/// The nodes share a signing key: a subscribe ack's `proof` from one verifies on the other.
const KEY: &[u8] = b"history-cluster-tests-signing-key-0123456789-abc";

fn redis_node(p: &str, id: &str, dir: &TempDir) -> Setup {
    let key = dir.write("cluster.key", KEY);
    node(Kind::Redis, &Kind::Redis.shared_url(), p, id, &format!("signing_key_file = {:?}\n", key.to_string_lossy()))
        .extra(RULES)
        .limits("outbound_queue_messages = 20000")
        .limits("outbound_queue_bytes = 16777216")
        .limits("messages_per_sec = 100000")
        .limits("message_burst = 100000")
        .limits("user_messages_per_sec = 100000")
}

/// Subscribes; with `since`, from that offset of an earlier ack's epoch, with its `proof`.
async fn subscribe(ws: &mut Ws, channel: &str, since: Option<(u64, &Value)>) -> Value {
    let mut frame = json!({"action": "subscribe", "id": 1, "channel": channel});
    if let Some((offset, ack)) = since {
        frame["since"] = json!({"offset": offset, "epoch": epoch_of(ack)});
        frame["proof"] = ack["proof"].clone();
    }
    request(ws, &frame).await
}

fn epoch_of(ack: &Value) -> String {
    ack["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {ack}")).to_string()
}

fn offset_of(frame: &Value) -> u64 {
    frame["offset"].as_u64().unwrap_or_else(|| panic!("no offset in {frame}"))
}

/// Publishes `count` messages `{"p": who, "n": first..}` from one session (all sent, then every
/// ack read: the session takes them one after the other).
async fn publish_many(ws: &mut Ws, who: u64, first: u64, count: u64) {
    for n in first..first + count {
        send_json(ws, &json!({"action": "publish", "id": n + 1, "channel": "feed:1", "payload": {"p": who, "n": n}}))
            .await;
    }
    for _ in 0..count {
        let ack = recv_json(ws).await;
        assert_eq!(ack["type"], "ack", "publish acknowledged: {ack}");
    }
}

/// The issue's cluster recovery: a subscriber on node A sees live messages published on node B,
/// then A is killed; thousands of publications go on at B from two concurrent publishers; the
/// subscriber reconnects to B with `since` while publishing continues and gets exactly every
/// missed offset, then the live ones, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_another_node_after_a_node_kill_is_exact() {
    const TEST: &str = "history_node_kill";
    if !broker_or_skip(TEST, "redis", REDIS) {
        return;
    }
    const AWAY: u64 = 1000; // per publisher while the subscriber is away
    const RACING: u64 = 500; // per publisher from its subscribe on
    let p = prefix(TEST);
    let dir = TempDir::new();
    let a = redis_node(&p, "a", &dir).start().await;
    let b = redis_node(&p, "b", &dir).start().await;
    wait_ready(&a).await;
    wait_ready(&b).await;

    let mut on_a = a.session("alice").await;
    let joined = subscribe(&mut on_a, "feed:1", None).await;
    assert_frame(&joined, &json!({"type": "ack", "offset": 0}));
    let epoch = epoch_of(&joined);
    let mut publishers = [b.session("bob").await, b.session("carol").await];
    publish_many(&mut publishers[0], 0, 0, 10).await;
    for expected in 1..=10 {
        let frame = recv_json(&mut on_a).await;
        assert_eq!(offset_of(&frame), expected, "cross-node deliveries carry consecutive offsets: {frame}");
    }
    let last = 10;
    drop(on_a);
    drop(a); // the node is gone: its server and runtime stop

    let [mut first, mut second] = publishers;
    let away = tokio::spawn(async move {
        let (x, y) = tokio::join!(publish_many(&mut first, 0, 10, AWAY), publish_many(&mut second, 1, 0, AWAY));
        let ((), ()) = (x, y);
        (first, second)
    });
    let (mut first, mut second) = away.await.expect("publishers");
    let racing = tokio::spawn(async move {
        tokio::join!(publish_many(&mut first, 0, 10 + AWAY, RACING), publish_many(&mut second, 1, AWAY, RACING));
    });
    let mut on_b = b.session("alice").await;
    let ack = subscribe(&mut on_b, "feed:1", Some((last, &joined))).await;
    assert_frame(&ack, &json!({"type": "ack", "recovered": true, "epoch": epoch}));
    assert!(offset_of(&ack) >= last + 2 * AWAY, "everything published while away is before the join: {ack}");
    racing.await.expect("racing publishers");

    let total = 10 + 2 * (AWAY + RACING);
    let mut seen = HashSet::new();
    for expected in last + 1..=total {
        let frame = recv_json(&mut on_b).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(offset_of(&frame), expected, "recovered then live, in order, no duplicate");
        let key = (frame["payload"]["p"].as_u64(), frame["payload"]["n"].as_u64());
        assert!(seen.insert(key), "each publication once: {frame}");
    }
    ping(&mut on_b, 9).await;
    let metrics = b.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_history_recoveries_total{result="recovered"}"#), 1.0);
}

/// The channel's keys deleted in Redis (as by eviction or a FLUSH): a new epoch, so a `since`
/// of the old one gets `recovered: false` and a `gap`, never a replay of the new epoch's history;
/// `since` beyond the channel's offset is refused and subscribes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_lost_in_redis_is_a_gap_never_a_wrong_replay() {
    const TEST: &str = "history_epoch";
    if !broker_or_skip(TEST, "redis", REDIS) {
        return;
    }
    let p = prefix(TEST);
    let dir = TempDir::new();
    let a = redis_node(&p, "a", &dir).start().await;
    wait_ready(&a).await;
    let mut ws = a.session("alice").await;
    let first = subscribe(&mut ws, "feed:1", None).await;
    let epoch = epoch_of(&first);
    let mut publisher = a.session("bob").await;
    publish_many(&mut publisher, 0, 0, 5).await;
    for expected in 1..=5 {
        assert_eq!(offset_of(&recv_json(&mut ws).await), expected);
    }
    drop(ws);

    let ahead = request(
        &mut a.session("carol").await,
        &json!({"action": "subscribe", "id": 1, "channel": "feed:1", "since": {"offset": 6, "epoch": epoch}}),
    )
    .await;
    assert_frame(&ahead, &json!({"type": "error", "code": "history_offset_ahead"}));

    let client = redis::Client::open(Kind::Redis.shared_url()).expect("redis url");
    let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{p}:h:feed:1:*")).query_async(&mut redis).await.expect("KEYS");
    assert_eq!(keys.len(), 3, "epoch, offset and log: {keys:?}");
    let _: u64 = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await.expect("DEL");
    publish_many(&mut publisher, 0, 100, 1).await;

    let mut ws = a.session("alice").await;
    let ack = subscribe(&mut ws, "feed:1", Some((5, &first))).await;
    assert_frame(&ack, &json!({"type": "ack", "recovered": false, "offset": 1}));
    assert_ne!(epoch_of(&ack), epoch);
    assert_eq!(recv_json(&mut ws).await, json!({"type": "gap", "channel": "feed:1", "reason": "epoch_changed"}));
    publish_many(&mut publisher, 0, 101, 1).await;
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "message", "payload": {"p": 0, "n": 101}, "offset": 2}));
    ping(&mut ws, 5).await;
}
