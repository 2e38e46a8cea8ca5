//! The broker as an attack surface, and the cluster's memory across restarts.
//!
//! - Signed cluster messages (`cluster.signing_key_file`): an attacker with its own Redis / NATS
//!   client publishes directly on the broker — unsigned, badly signed and replayed (captured and
//!   re-sent) publications, revocations and lifted bans. None is delivered or applied, each is
//!   counted by reason; legitimate traffic between two signed nodes still flows.
//! - Revocations and bans persisted in Redis: after every node stopped, a fresh node refuses the
//!   revoked token and the banned user and knows the banned IP; an unreachable store at start
//!   fails closed (or open, as configured); entries planted in Redis without a valid MAC are
//!   ignored.
//!
//! Uses the machine's Redis (127.0.0.1:6379) and NATS (127.0.0.1:4222) with a unique
//! `channel_prefix` per test; without them the tests print `SKIPPED` and pass, unless
//! `WSGUARD_REQUIRE_BROKERS=1`.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::brokers::{
    self, CROSS_NODE, Kind, NATS, REDIS, broker_or_skip, eventually, prefix, subscribe, wait_ready,
};
use support::{RawRequest, Setup, TempDir, TestServer, admin_request, assert_frame, recv_json, request};
use wsguard::ErrorCode;
use wsguard::auth::{Revocation, TokenRequest};
use wsguard::limits::BanTarget;

const KEY: &[u8] = b"cluster-integrity-tests-signing-key-0123456789";
const WRONG_KEY: &[u8] = b"an-attackers-guess-at-the-signing-key-012345678";
/// The sender instance the attacker's forged signed messages claim.
const FORGED_INSTANCE: u128 = 0xbad;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A node of the cluster `prefix`, signing with the key in `dir` (`cluster_lines` appended).
fn node(kind: Kind, url: &str, prefix: &str, id: &str, dir: &TempDir, cluster_lines: &str) -> Setup {
    let key = dir.write("cluster.key", KEY);
    brokers::node(kind, url, prefix, id, &format!("signing_key_file = {:?}\n{cluster_lines}", key.to_string_lossy()))
}

fn rejected(kind: &str, reason: &str) -> String {
    format!("wsguard_broker_rejected_total{{kind=\"{kind}\",reason=\"{reason}\"}}")
}

/// Waits until `server` counted one more rejection of `kind`/`reason` than `before`.
async fn wait_rejected(server: &TestServer, kind: &str, reason: &str, before: f64) {
    let series = rejected(kind, reason);
    eventually(&format!("{series} to grow"), async || server.scrape().await.get(&series) > before).await;
}

/// The attacker: a client of its own on the broker, subscribed to what it wants to capture.
enum Attacker {
    Redis { publisher: redis::aio::MultiplexedConnection, captured: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> },
    Nats { client: async_nats::Client, captured: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> },
}

impl Attacker {
    async fn new(kind: Kind, capture: &[String]) -> Attacker {
        let (tx, captured) = tokio::sync::mpsc::unbounded_channel();
        match kind {
            Kind::Redis => {
                let client = redis::Client::open(kind.shared_url()).expect("redis client");
                let publisher = client.get_multiplexed_async_connection().await.expect("redis connection");
                let mut pubsub = client.get_async_pubsub().await.expect("redis pubsub");
                for subject in capture {
                    pubsub.subscribe(subject).await.expect("subscribe");
                }
                tokio::spawn(async move {
                    let mut stream = pubsub.into_on_message();
                    while let Some(message) = stream.next().await {
                        if tx.send(message.get_payload_bytes().to_vec()).is_err() {
                            return;
                        }
                    }
                });
                Attacker::Redis { publisher, captured }
            }
            Kind::Nats => {
                let client = async_nats::connect(kind.shared_url()).await.expect("nats client");
                for subject in capture {
                    let mut subscriber = client.subscribe(subject.clone()).await.expect("subscribe");
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        while let Some(message) = subscriber.next().await {
                            if tx.send(message.payload.to_vec()).is_err() {
                                return;
                            }
                        }
                    });
                }
                // A request nobody answers comes back from the server after it processed the
                // SUBs before it (a flush only proves the bytes were written).
                let probe = format!("probe.{}", client.new_inbox());
                let _ = client.request(probe, Vec::new().into()).await;
                Attacker::Nats { client, captured }
            }
        }
    }

    /// Publishes raw bytes; returns once the broker has them.
    async fn publish(&mut self, subject: &str, payload: &[u8]) {
        match self {
            Attacker::Redis { publisher, .. } => {
                redis::cmd("PUBLISH").arg(subject).arg(payload).query_async::<i64>(publisher).await.expect("PUBLISH");
            }
            Attacker::Nats { client, .. } => {
                client.publish(subject.to_string(), payload.to_vec().into()).await.expect("publish");
                client.flush().await.expect("flush");
            }
        }
    }

    /// The next captured message signed by node `a` (not one of the attacker's own) whose bytes
    /// contain `needle`.
    async fn capture(&mut self, needle: &str) -> Vec<u8> {
        let forged_instance = format!("{FORGED_INSTANCE:032x}");
        let captured = match self {
            Attacker::Redis { captured, .. } | Attacker::Nats { captured, .. } => captured,
        };
        let deadline = tokio::time::Instant::now() + CROSS_NODE;
        loop {
            let message = tokio::time::timeout_at(deadline, captured.recv())
                .await
                .unwrap_or_else(|_| panic!("no message containing {needle:?} captured"))
                .expect("capture task alive");
            let contains = |n: &[u8]| message.windows(n.len()).any(|w| w == n);
            if message.starts_with(b"~wsg1\na\n")
                && !contains(forged_instance.as_bytes())
                && contains(needle.as_bytes())
            {
                return message;
            }
        }
    }
}

/// A message in the signed format, signed with `key` (the attacker's guess).
fn forge_signed(key: &[u8], subject: &str, node: &str, seq: u64, body: &str) -> Vec<u8> {
    let header = format!("~wsg1\n{node}\n{FORGED_INSTANCE:032x}\n{seq}\n{}\n", now_ms());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(subject.as_bytes());
    mac.update(b"\n");
    mac.update(header.as_bytes());
    mac.update(body.as_bytes());
    let tag: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{header}{tag}\n{body}").into_bytes()
}

/// The plain (unsigned) formats nodes without a key use.
fn plain_publication(channel: &str, payload: Value) -> Vec<u8> {
    let frame = json!({"type": "message", "channel": channel, "payload": payload}).to_string();
    format!("evil\n{}\n{frame}", now_ms()).into_bytes()
}

fn plain_control(control: Value) -> Vec<u8> {
    let mut envelope = control;
    envelope["node"] = json!("evil");
    envelope["sent_ms"] = json!(now_ms());
    envelope.to_string().into_bytes()
}

// --- forged broker messages -------------------------------------------------------------------

async fn forged_messages_are_dropped(kind: Kind, test: &str) {
    if !broker_or_skip(test, kind.name(), kind.shared_addr()) {
        return;
    }
    let p = prefix(test);
    let dir = TempDir::new();
    let a = node(kind, &kind.shared_url(), &p, "a", &dir, "").start().await;
    let b = node(kind, &kind.shared_url(), &p, "b", &dir, "").start().await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let room = kind.channel_subject(&p, "room:1");
    let control = kind.control_subject(&p);
    let mut attacker = Attacker::new(kind, &[room.clone(), control.clone()]).await;

    // Legitimate traffic between the two signed nodes: a publication from A reaches B.
    let mut on_b = b.session("carol").await;
    subscribe(&mut on_b, "room:1").await;
    let mut on_a = a.session("bob").await;
    let first = json!({"action": "publish", "id": 2, "channel": "room:1", "payload": {"n": 1}});
    assert_frame(&request(&mut on_a, &first).await, &json!({"type": "ack", "id": 2}));
    assert_eq!(recv_json(&mut on_b).await["payload"]["n"], 1);
    let captured_publication = attacker.capture("\"n\":1").await;

    // Publications: unsigned, signed with the wrong key, and the captured one re-sent. Each is
    // counted; then a legitimate one arrives and is the next frame B's subscriber sees.
    let metrics = b.scrape().await;
    attacker.publish(&room, &plain_publication("room:1", json!({"forged": "unsigned"}))).await;
    wait_rejected(&b, "publication", "unsigned", metrics.get(&rejected("publication", "unsigned"))).await;
    let frame = json!({"type": "message", "channel": "room:1", "payload": {"forged": "bad_signature"}}).to_string();
    attacker.publish(&room, &forge_signed(WRONG_KEY, &room, "a", 1_000_000, &frame)).await;
    wait_rejected(&b, "publication", "bad_signature", metrics.get(&rejected("publication", "bad_signature"))).await;
    attacker.publish(&room, &captured_publication).await;
    wait_rejected(&b, "publication", "replayed", metrics.get(&rejected("publication", "replayed"))).await;
    let second = json!({"action": "publish", "id": 3, "channel": "room:1", "payload": {"n": 2}});
    assert_frame(&request(&mut on_a, &second).await, &json!({"type": "ack", "id": 3}));
    assert_eq!(recv_json(&mut on_b).await["payload"], json!({"n": 2}), "no forged or replayed publication came first");

    // A forged revocation does not disconnect alice, unsigned or badly signed.
    let token = b.token("alice");
    let mut alice = b.ws(&support::Connect::new().bearer(&token)).await;
    support::ping(&mut alice, 1).await;
    let revoke = json!({"kind": "revoke", "revocation": {"subject": "alice"}, "at": support::now_secs() + 60});
    let metrics = b.scrape().await;
    attacker.publish(&control, &plain_control(revoke.clone())).await;
    wait_rejected(&b, "control", "unsigned", metrics.get(&rejected("control", "unsigned"))).await;
    attacker.publish(&control, &forge_signed(WRONG_KEY, &control, "a", 1_000_001, &revoke.to_string())).await;
    wait_rejected(&b, "control", "bad_signature", metrics.get(&rejected("control", "bad_signature"))).await;
    support::ping(&mut alice, 2).await;
    assert_eq!(b.exchange(&RawRequest::authorized(&token)).await.status, 101, "alice's token still admitted");

    // A ban made on A holds on B; a forged lift does not lift it, nor does a captured lift
    // replayed after the user was banned again.
    let mallory = BanTarget::User("mallory".into());
    a.handle.ban(mallory.clone(), Duration::from_secs(120));
    eventually("the ban on B", async || b.handle.bans().len() == 1).await;
    let lift = json!({"kind": "lift", "target": {"kind": "user", "value": "mallory"}});
    let metrics = b.scrape().await;
    attacker.publish(&control, &plain_control(lift.clone())).await;
    wait_rejected(&b, "control", "unsigned", metrics.get(&rejected("control", "unsigned"))).await;
    attacker.publish(&control, &forge_signed(WRONG_KEY, &control, "a", 1_000_002, &lift.to_string())).await;
    wait_rejected(&b, "control", "bad_signature", metrics.get(&rejected("control", "bad_signature"))).await;
    assert_eq!(b.handle.bans().len(), 1, "forged lifts lifted nothing");

    // Legitimate lift (captured by the attacker), a new ban, then the captured lift re-sent.
    assert!(a.handle.lift_ban(&mallory));
    eventually("the lift on B", async || b.handle.bans().is_empty()).await;
    let captured_lift = attacker.capture("\"lift\"").await;
    a.handle.ban(mallory.clone(), Duration::from_secs(120));
    eventually("the second ban on B", async || b.handle.bans().len() == 1).await;
    let metrics = b.scrape().await;
    attacker.publish(&control, &captured_lift).await;
    wait_rejected(&b, "control", "replayed", metrics.get(&rejected("control", "replayed"))).await;
    assert_eq!(b.handle.bans().len(), 1, "the replayed lift lifted nothing");
    b.exchange(&RawRequest::authorized(&b.token("mallory"))).await.assert_refused(403, "banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_forged_unsigned_and_replayed_messages_are_dropped() {
    forged_messages_are_dropped(Kind::Redis, "redis_forged").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_forged_unsigned_and_replayed_messages_are_dropped() {
    forged_messages_are_dropped(Kind::Nats, "nats_forged").await;
}

/// A node with the previous key as `signing_key_previous_file` accepts messages signed with it
/// (a key rotation); a node with only the new key does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_key_verifies_during_a_rotation() {
    let test = "rotation";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let (old_dir, new_dir) = (TempDir::new(), TempDir::new());
    let old_key = old_dir.write("cluster.key", KEY);
    let new_key = new_dir.write("new.key", WRONG_KEY);
    let with_new = |id| {
        Setup::new().extra(&format!(
            "[cluster]\nbroker = \"redis\"\nurl = \"redis://{REDIS}\"\nnode_id = \"{id}\"\nchannel_prefix = \"{p}\"\n\
             signing_key_file = {:?}\n",
            new_key.to_string_lossy()
        ))
    };
    let old = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "old", &old_dir, "").start().await;
    let rotating = with_new("rotating")
        .extra(&format!("signing_key_previous_file = {:?}\n", old_key.to_string_lossy()))
        .start()
        .await;
    let strict = with_new("strict").start().await;
    for server in [&old, &rotating, &strict] {
        wait_ready(server).await;
    }
    let mut on_rotating = rotating.session("r").await;
    subscribe(&mut on_rotating, "room:5").await;
    let mut on_strict = strict.session("s").await;
    subscribe(&mut on_strict, "room:5").await;
    let before = strict.scrape().await.get(&rejected("publication", "bad_signature"));
    old.handle.publish("room:5", &json!({"n": 5})).expect("publish");
    assert_eq!(recv_json(&mut on_rotating).await["payload"]["n"], 5, "the previous key still verifies");
    wait_rejected(&strict, "publication", "bad_signature", before).await;
    // And the rotating node signs with the new key: the strict node takes it.
    rotating.handle.publish("room:5", &json!({"n": 6})).expect("publish");
    assert_eq!(recv_json(&mut on_strict).await["payload"]["n"], 6);
}

/// During a rolling rollout of the key: a node without a key takes the signed messages of a node
/// with one; the node with a key refuses the plain messages of the one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_keyless_nodes_accept_signed_and_keyed_nodes_refuse_plain() {
    let test = "rollout";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let dir = TempDir::new();
    let keyed = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "keyed", &dir, "").start().await;
    let keyless = Setup::new()
        .extra(&format!(
            "[cluster]\nbroker = \"redis\"\nurl = \"redis://{REDIS}\"\nnode_id = \"keyless\"\nchannel_prefix = \"{p}\"\n"
        ))
        .start()
        .await;
    wait_ready(&keyed).await;
    wait_ready(&keyless).await;
    let mut on_keyed = keyed.session("k").await;
    subscribe(&mut on_keyed, "room:9").await;
    let mut on_keyless = keyless.session("l").await;
    subscribe(&mut on_keyless, "room:9").await;

    let before = keyed.scrape().await.get(&rejected("publication", "unsigned"));
    keyless.handle.publish("room:9", &json!({"from": "keyless"})).expect("publish");
    assert_eq!(recv_json(&mut on_keyless).await["payload"]["from"], "keyless", "local delivery");
    wait_rejected(&keyed, "publication", "unsigned", before).await;
    keyed.handle.publish("room:9", &json!({"from": "keyed"})).expect("publish");
    assert_eq!(recv_json(&mut on_keyless).await["payload"]["from"], "keyed", "signed, taken unverified");
    assert_eq!(recv_json(&mut on_keyed).await["payload"]["from"], "keyed", "the plain one was never delivered");
}

// --- persisted revocations and bans ----------------------------------------------------------

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{REDIS}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// Stops a node and waits until its `serve` returned (its last writes flushed).
async fn stop(mut server: TestServer) {
    server.handle.shutdown();
    let served = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await.expect("node stopped");
    served.expect("serve task").expect("serve ended cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_bans_survive_a_restart_of_every_node() {
    let test = "persisted";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let dir = TempDir::new();
    let a = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "a", &dir, "").start().await;
    let b = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "b", &dir, "").start().await;
    wait_ready(&a).await;
    wait_ready(&b).await;

    let jti_request = |jti: &str| {
        let mut extra_claims = serde_json::Map::new();
        extra_claims.insert("jti".into(), json!(jti));
        TokenRequest { subject: "alice".into(), ttl_secs: 300, extra_claims, ..TokenRequest::default() }
    };
    let revoked = a.mint(&jti_request("revoked-1"));
    let other = a.mint(&jti_request("still-good"));
    a.handle.revoke(Revocation::TokenId("revoked-1".into()));
    b.handle.ban(BanTarget::User("mallory".into()), Duration::from_secs(120));
    a.handle.ban(BanTarget::Ip("203.0.113.9".parse().expect("ip")), Duration::from_secs(120));
    // A ban made and lifted is not restored.
    b.handle.ban(BanTarget::User("trudy".into()), Duration::from_secs(120));
    assert!(b.handle.lift_ban(&BanTarget::User("trudy".into())));
    eventually("the revocation on B", async || b.exchange(&RawRequest::authorized(&revoked)).await.status == 401).await;

    let mut redis = redis_connection().await;
    eventually("both bans in Redis", async || {
        let n: usize = redis::cmd("HLEN").arg(format!("{p}:state:bans")).query_async(&mut redis).await.expect("HLEN");
        n == 2
    })
    .await;
    eventually("the revocation in Redis", async || {
        let n: usize =
            redis::cmd("ZCARD").arg(format!("{p}:state:revocations")).query_async(&mut redis).await.expect("ZCARD");
        n == 1
    })
    .await;
    stop(a).await;
    stop(b).await;

    // Every node is gone; a fresh one knows what was revoked and banned before admitting anyone.
    let c = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "c", &dir, "").start().await;
    wait_ready(&c).await;
    c.exchange(&RawRequest::authorized(&revoked)).await.assert_refused(401, "token_revoked");
    c.exchange(&RawRequest::authorized(&c.token("mallory"))).await.assert_refused(403, "banned");
    assert_eq!(c.exchange(&RawRequest::authorized(&other)).await.status, 101, "other tokens still admitted");
    let mut bans: Vec<String> = c.handle.bans().iter().map(|b| format!("{:?}", b.target)).collect();
    bans.sort();
    assert_eq!(bans, ["Ip(203.0.113.9)", "User(\"mallory\")"]);
    assert!(c.handle.bans().iter().all(|b| b.remaining_secs > 60.0 && b.remaining_secs <= 120.0));

    // An operator's lift on the fresh node removes the ban from Redis as well.
    assert!(c.handle.lift_ban(&BanTarget::User("mallory".into())));
    eventually("the lift in Redis", async || {
        let n: usize = redis::cmd("HLEN").arg(format!("{p}:state:bans")).query_async(&mut redis).await.expect("HLEN");
        n == 1
    })
    .await;
}

/// Entries written into Redis by someone without the signing key are ignored and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_state_without_a_valid_mac_is_ignored() {
    let test = "planted";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let mut redis = redis_connection().await;
    let until = support::now_secs() + 600;
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}:state:bans"))
        .arg("{\"kind\":\"user\",\"value\":\"alice\"}")
        .arg(format!("-|{{\"reason\":\"operator\",\"until\":{until}}}"))
        .arg("{\"kind\":\"user\",\"value\":\"bob\"}")
        .arg(format!("{}|{{\"reason\":\"operator\",\"until\":{until}}}", "0".repeat(64)))
        .query_async(&mut redis)
        .await
        .expect("HSET");
    let _: () = redis::cmd("ZADD")
        .arg(format!("{p}:state:revocations"))
        .arg(until)
        .arg(format!("-|{{\"revocation\":{{\"subject\":\"carol\"}},\"at\":{}}}", support::now_secs()))
        .query_async(&mut redis)
        .await
        .expect("ZADD");
    let dir = TempDir::new();
    let c = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "c", &dir, "").start().await;
    wait_ready(&c).await;
    assert!(c.handle.bans().is_empty(), "planted bans ignored");
    assert_eq!(c.exchange(&RawRequest::authorized(&c.token("carol"))).await.status, 101, "planted revocation ignored");
    let metrics = c.scrape().await;
    assert_eq!(metrics.get(&rejected("state", "unsigned")), 2.0);
    assert_eq!(metrics.get(&rejected("state", "bad_signature")), 1.0);
}

/// With the state's Redis unreachable at start, `state_failure = "closed"` (the default) admits
/// no one and is not ready; `open` admits meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_state_store_fails_closed_or_open_as_configured() {
    let test = "state_failure";
    if !broker_or_skip(test, "nats", NATS) {
        return;
    }
    let dead = format!("redis://127.0.0.1:{}", {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    });
    let p = prefix(test);
    let dir = TempDir::new();
    let lines = |policy: &str| {
        format!("quota_redis_url = \"{dead}\"\nbroker_timeout_secs = 0.5\nstate_failure = \"{policy}\"\n")
    };
    // `closed` is the default: left unset.
    let closed = node(
        Kind::Nats,
        &Kind::Nats.shared_url(),
        &p,
        "closed",
        &dir,
        &lines("closed").replace("state_failure = \"closed\"\n", ""),
    )
    .start()
    .await;
    eventually("the NATS connection", async || closed.scrape().await.get("wsguard_broker_connected") == 1.0).await;
    eventually("a failed state load", async || {
        closed.scrape().await.get("wsguard_broker_errors_total{op=\"state_load\"}") >= 1.0
    })
    .await;
    let refused = closed.exchange(&RawRequest::authorized(&closed.token("alice"))).await;
    refused.assert_refused(503, "cluster_state_unavailable");
    assert_eq!(admin_request(closed.metrics_addr(), "GET", "/readyz").await.status, 503);
    assert_eq!(ErrorCode::ClusterStateUnavailable.number(), 5007);
    let open = node(Kind::Nats, &Kind::Nats.shared_url(), &p, "open", &dir, &lines("open")).start().await;
    assert_eq!(open.exchange(&RawRequest::authorized(&open.token("alice"))).await.status, 101);
    assert!(open.scrape().await.get("wsguard_broker_errors_total{op=\"state_load\"}") >= 1.0);
}

/// A missing or short signing key is a config error (`config_secret_missing`).
#[tokio::test]
async fn a_short_signing_key_is_refused_at_load() {
    let dir = TempDir::new();
    let short = dir.write("short.key", b"not 32 bytes");
    let text = Setup::new()
        .extra(&format!(
            "[cluster]\nbroker = \"nats\"\nurl = \"nats://{NATS}\"\nsigning_key_file = {:?}\n",
            short.to_string_lossy()
        ))
        .toml(&dir)
        .0;
    let config = wsguard::Config::from_toml_str(&text).expect("valid syntax");
    let error = wsguard::check_config(&config).expect_err("short key");
    assert_eq!(error.code(), ErrorCode::ConfigSecretMissing);
    assert!(error.to_string().contains("cluster.signing_key_file"), "{error}");
}
