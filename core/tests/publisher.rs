//! Who published it (`channels[].publisher`), over real sockets: a stamped rule puts the
//! publisher's `sub` and only the listed claims in `from`; an unstamped rule leaves frames
//! byte-identical to a server without the option; a client cannot set `from` (refused as an
//! unknown field) and a `from` in the payload is only payload; the host's publishes carry
//! `{"server":true}`; and the stamp crosses a signed two-node cluster through the machine's Redis
//! unchanged, covered by the envelope's MAC (a tampered stamp is rejected, never delivered).

#![allow(missing_docs)]

mod support;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use support::brokers::{self, CROSS_NODE, Kind, broker_or_skip, eventually, prefix, subscribe, wait_ready};
use support::{Connect, Setup, TempDir, TestServer, WAIT, Ws, assert_frame, recv_json, request};
use tokio_tungstenite::tungstenite::Message;
use wsguard::Config;
use wsguard::auth::TokenRequest;
use wsguard::policy::PublisherStamp;

/// `chat:*` stamps the `sub` and the `name` and `team` claims; `ops:*` stamps the `sub` only;
/// `room:*` (the test default) does not stamp.
const RULES: &str = "[[channels]]\npattern = \"chat:{n}\"\nsubscribe = {}\npublish = {}\n\
                     publisher = { claims = [\"name\", \"team\"] }\n\
                     [[channels]]\npattern = \"ops:{n}\"\nsubscribe = {}\npublish = {}\npublisher = {}\n";

fn setup() -> Setup {
    Setup::new().extra(RULES)
}

/// A session for `subject` whose token carries `claims` besides the registered ones.
async fn session_with(server: &TestServer, subject: &str, claims: Value) -> Ws {
    let extra_claims: Map<String, Value> = claims.as_object().cloned().expect("claims are an object");
    let token =
        server.mint(&TokenRequest { subject: subject.into(), ttl_secs: 300, extra_claims, ..TokenRequest::default() });
    server.ws(&Connect::new().bearer(&token)).await
}

/// The next text frame, as the exact text the server sent.
async fn recv_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn publish(ws: &mut Ws, id: u64, channel: &str, payload: Value) {
    let reply = request(ws, &json!({"action": "publish", "id": id, "channel": channel, "payload": payload})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": id}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamped_rule_carries_the_sub_and_only_the_listed_claims() {
    let server = setup().start().await;
    let mut reader = server.session("reader").await;
    subscribe(&mut reader, "chat:1").await;
    subscribe(&mut reader, "ops:1").await;
    // `team` is listed but absent from the token; `email` and `roles`-like claims are not listed.
    let mut alice = session_with(&server, "alice", json!({"name": "Alice", "email": "alice@example.com"})).await;

    publish(&mut alice, 2, "chat:1", json!({"text": "hi"})).await;
    let frame = recv_json(&mut reader).await;
    assert_frame(&frame, &json!({"type": "message", "channel": "chat:1", "payload": {"text": "hi"}}));
    assert_eq!(frame["from"], json!({"sub": "alice", "claims": {"name": "Alice"}}), "{frame}");

    // `publisher = {}`: the sub only, no `claims` member.
    publish(&mut alice, 3, "ops:1", json!({"text": "deploying"})).await;
    let frame = recv_json(&mut reader).await;
    assert_eq!(frame["from"], json!({"sub": "alice"}), "{frame}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstamped_rule_frames_are_byte_identical_to_before() {
    let server = setup().start().await;
    let mut reader = server.session("reader").await;
    subscribe(&mut reader, "room:1").await;
    let mut alice = session_with(&server, "alice", json!({"name": "Alice"})).await;

    publish(&mut alice, 2, "room:1", json!({"text": "hi"})).await;
    assert_eq!(recv_text(&mut reader).await, r#"{"type":"message","channel":"room:1","payload":{"text":"hi"}}"#);
    server.handle.publish("room:1", &json!({"text": "host"})).expect("host publish");
    assert_eq!(recv_text(&mut reader).await, r#"{"type":"message","channel":"room:1","payload":{"text":"host"}}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_set_from_and_a_payload_from_is_only_payload() {
    let server = setup().start().await;
    let mut reader = server.session("reader").await;
    subscribe(&mut reader, "chat:1").await;
    let mut mallory = session_with(&server, "mallory", json!({"name": "Mallory"})).await;

    // A top-level `from` is an unknown field: refused, nothing delivered.
    let forged = json!({"action": "publish", "id": 2, "channel": "chat:1", "payload": {"text": "x"},
                        "from": {"server": true}});
    assert_frame(&request(&mut mallory, &forged).await, &json!({"type": "error", "id": 2, "code": "invalid_frame"}));

    // In the payload, `from` is data; the stamp still says who published.
    let fake = json!({"sub": "admin", "server": true});
    publish(&mut mallory, 3, "chat:1", json!({"text": "y", "from": fake})).await;
    let frame = recv_json(&mut reader).await;
    assert_eq!(frame["payload"], json!({"text": "y", "from": fake}), "the refused frame was not delivered: {frame}");
    assert_eq!(frame["from"], json!({"sub": "mallory", "claims": {"name": "Mallory"}}), "{frame}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_publications_on_a_stamped_channel_carry_the_server_marker() {
    let server = setup().start().await;
    let mut reader = server.session("reader").await;
    subscribe(&mut reader, "chat:1").await;
    subscribe(&mut reader, "ops:1").await;

    server.handle.publish("chat:1", &json!({"text": "maintenance"})).expect("host publish");
    assert_eq!(
        recv_text(&mut reader).await,
        r#"{"type":"message","channel":"chat:1","payload":{"text":"maintenance"},"from":{"server":true}}"#
    );
    server.handle.publish("ops:1", &json!({"n": 1})).expect("host publish");
    assert_eq!(recv_json(&mut reader).await["from"], json!({"server": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_a_stamp_applies_to_the_next_publication() {
    let server = Setup::new().start().await;
    let mut reader = server.session("reader").await;
    subscribe(&mut reader, "room:1").await;
    let mut alice = session_with(&server, "alice", json!({"name": "Alice"})).await;
    publish(&mut alice, 2, "room:1", json!({"n": 1})).await;
    assert_eq!(recv_json(&mut reader).await.get("from"), None);

    let mut config = server.config.clone();
    config.channels[0].publisher = Some(PublisherStamp { claims: vec!["name".into()] });
    server.handle.reload(config).expect("reload");
    publish(&mut alice, 3, "room:1", json!({"n": 2})).await;
    let frame = recv_json(&mut reader).await;
    assert_eq!(frame["from"], json!({"sub": "alice", "claims": {"name": "Alice"}}), "{frame}");
}

#[test]
fn bad_publisher_settings_are_refused_with_their_key_paths() {
    let dir = TempDir::new();
    let (base, _) = Setup::new().toml(&dir);
    let text = format!(
        "{base}[[channels]]\npattern = \"chat:{{n}}\"\nsubscribe = {{}}\npublisher = {{ claims = [\"sub\", \"name\", \"name\", \"\"] }}\n"
    );
    let message = Config::from_toml_str(&text).expect_err("refused").to_string();
    for path in
        ["channels[1].publisher.claims[0]", "channels[1].publisher.claims[2]", "channels[1].publisher.claims[3]"]
    {
        assert!(message.contains(path), "{path} missing from: {message}");
    }
    assert!(!message.contains("claims[1]"), "a valid claim is not reported: {message}");

    let text =
        format!("{base}[[channels]]\npattern = \"chat:{{n}}\"\nsubscribe = {{}}\npublisher = {{ sub = true }}\n");
    let message = Config::from_toml_str(&text).expect_err("unknown key refused").to_string();
    assert!(message.contains("publisher"), "{message}");
}

/// Two nodes signing with the same key. A publication on B is delivered on A with the stamp B
/// made; the broker carries it inside the signed body, so the same bytes with another `sub` are
/// rejected as `bad_signature` and never delivered. The host's publish on A reaches B with the
/// server marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stamp_crosses_signed_nodes_and_cannot_be_altered() {
    let test = "redis_publisher_stamp";
    if !broker_or_skip(test, "redis", brokers::REDIS) {
        return;
    }
    let kind = Kind::Redis;
    let p = prefix(test);
    let dir = TempDir::new();
    let key = dir.write("cluster.key", b"publisher-stamp-tests-signing-key-0123456789ab");
    let signed = format!("signing_key_file = {:?}\n", key.to_string_lossy());
    let a = brokers::node(kind, &kind.shared_url(), &p, "a", &signed).extra(RULES).start().await;
    let b = brokers::node(kind, &kind.shared_url(), &p, "b", &signed).extra(RULES).start().await;
    wait_ready(&a).await;
    wait_ready(&b).await;

    // The attacker watches the broker subject of chat:1.
    let subject = kind.channel_subject(&p, "chat:1");
    let client = redis::Client::open(kind.shared_url()).expect("redis client");
    let mut attacker = client.get_multiplexed_async_connection().await.expect("redis connection");
    let mut pubsub = client.get_async_pubsub().await.expect("redis pubsub");
    pubsub.subscribe(&subject).await.expect("subscribe");
    let mut captured = pubsub.into_on_message();

    let mut on_a = a.session("reader-a").await;
    let mut on_b = b.session("reader-b").await;
    subscribe(&mut on_a, "chat:1").await;
    subscribe(&mut on_b, "chat:1").await;
    let mut bob = session_with(&b, "bob", json!({"name": "Bob", "team": "blue", "email": "bob@example.com"})).await;

    publish(&mut bob, 2, "chat:1", json!({"n": 1})).await;
    let local = recv_text(&mut on_b).await;
    let remote = recv_text(&mut on_a).await;
    assert_eq!(remote, local, "the other node delivers the bytes the publishing node encoded");
    let frame: Value = serde_json::from_str(&remote).expect("JSON");
    assert_eq!(frame["from"], json!({"sub": "bob", "claims": {"name": "Bob", "team": "blue"}}), "{frame}");

    // The captured envelope's signed body is that frame; alter the stamp and replay it.
    let envelope = tokio::time::timeout(CROSS_NODE, captured.next())
        .await
        .expect("captured in time")
        .expect("pubsub open")
        .get_payload_bytes()
        .to_vec();
    assert!(envelope.starts_with(b"~wsg1\nb\n"), "a signed envelope from b");
    assert!(envelope.ends_with(local.as_bytes()), "the signed body is the delivered frame");
    let forged = String::from_utf8(envelope).expect("UTF-8").replace(r#""sub":"bob""#, r#""sub":"eve""#);
    let series = "wsguard_broker_rejected_total{kind=\"publication\",reason=\"bad_signature\"}";
    let before = a.scrape().await.get(series);
    redis::cmd("PUBLISH")
        .arg(&subject)
        .arg(forged.as_bytes())
        .query_async::<i64>(&mut attacker)
        .await
        .expect("PUBLISH");
    eventually("the altered stamp to be rejected", async || a.scrape().await.get(series) > before).await;

    // Nothing of it reached A's subscriber: the next frame there is the host's publication.
    a.handle.publish("chat:1", &json!({"n": 2})).expect("host publish");
    let next = recv_json(&mut on_a).await;
    assert_eq!(next["payload"], json!({"n": 2}), "the forged frame was not delivered: {next}");
    assert_eq!(next["from"], json!({"server": true}));
    let on_b_next = recv_json(&mut on_b).await;
    assert_eq!(on_b_next["from"], json!({"server": true}), "the marker crosses nodes: {on_b_next}");
}
