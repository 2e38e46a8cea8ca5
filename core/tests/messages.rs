//! Message enforcement over real loopback sockets with real tokens: channel policy (captures,
//! scopes, roles, dry run), payload schemas, declared RPC, rates, violations, subscription caps,
//! replay protection, binary frames, liveness, slow consumers and the token lifecycle (refresh,
//! revocation, single use). One test per rule, each asserting the exact reply code or close code.

#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::{
    AUDIENCE, ISSUER, RawRequest, SECRET, Setup, TOKEN_TTL_SECS, TempDir, TestServer, WAIT, Ws, assert_frame,
    expect_close, now_secs, ping, recv_json, request, send, send_json,
};
use tokio_tungstenite::tungstenite::Message;
use wsguard::auth::{Revocation, TokenRequest};
use wsguard::hooks::{HookFuture, RpcCall, RpcError};
use wsguard::{Config, ErrorCode, Hooks, Server};

// ---- helpers ------------------------------------------------------------------------------------

/// The tenant-scoped rule from docs/CONFIG.md: read with `orders:read` in your own tenant, write
/// with `orders:write` and the `admin` or `service` role in your own tenant.
const TENANT_ORDERS: &str = r#"
[[channels]]
pattern = "tenant:{tenant}:orders"
subscribe = { scopes = ["orders:read"], claims = { tenant = "{tenant}" } }
publish = { scopes = ["orders:write"], claims = { tenant = "{tenant}" }, roles = ["admin", "service"] }
"#;

/// A token for `subject` with these scopes, roles and extra claims (`tenant`, `jti`).
fn token(server: &TestServer, subject: &str, scopes: &[&str], roles: &[&str], extra: Value) -> String {
    token_with_ttl(server, subject, scopes, roles, extra, TOKEN_TTL_SECS)
}

fn token_with_ttl(
    server: &TestServer,
    subject: &str,
    scopes: &[&str],
    roles: &[&str],
    extra: Value,
    ttl_secs: u64,
) -> String {
    server.mint(&TokenRequest {
        subject: subject.to_string(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        extra_claims: extra.as_object().cloned().unwrap_or_default(),
        ttl_secs,
        key_id: None,
    })
}

/// A session authenticated with `token`.
async fn session_with(server: &TestServer, token: &str) -> Ws {
    server.ws(&support::Connect::new().bearer(token)).await
}

fn subscribe(id: u64, channel: &str) -> Value {
    json!({"action": "subscribe", "id": id, "channel": channel})
}

fn publish(id: u64, channel: &str, payload: Value) -> Value {
    json!({"action": "publish", "id": id, "channel": channel, "payload": payload})
}

fn ack(id: u64) -> Value {
    json!({"type": "ack", "id": id})
}

fn error(id: u64, code: &str) -> Value {
    json!({"type": "error", "id": id, "code": code})
}

/// Asserts the reply to `frame` is an `error` with `code` and the frame's id.
async fn assert_refused(ws: &mut Ws, frame: &Value, code: &str) {
    let id = frame["id"].as_u64().expect("the frame carries an id");
    let reply = request(ws, frame).await;
    assert_frame(&reply, &error(id, code));
}

/// The next WebSocket message of any kind, bounded by [`WAIT`].
async fn next_message(ws: &mut Ws) -> Message {
    match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
        Some(Ok(message)) => message,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// A payload of about 4 KB, numbered.
fn bulky(seq: u64) -> Value {
    json!({"seq": seq, "data": "x".repeat(4096)})
}

// ---- 1. channel authorization -------------------------------------------------------------------

#[tokio::test]
async fn own_tenant_subscribe_is_acked_and_other_tenant_is_forbidden() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let alice = token(&server, "alice", &["orders:read"], &[], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &alice).await;
    assert_frame(&request(&mut ws, &subscribe(1, "tenant:acme:orders")).await, &ack(1));
    assert_refused(&mut ws, &subscribe(2, "tenant:globex:orders"), "forbidden").await;
}

#[tokio::test]
async fn publish_needs_the_write_scope_and_a_role() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let channel = "tenant:acme:orders";
    let order = json!({"order": 1});

    let reader = token(&server, "alice", &["orders:read"], &["admin"], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &reader).await;
    assert_refused(&mut ws, &publish(1, channel, order.clone()), "forbidden").await;

    let no_role = token(&server, "carol", &["orders:read", "orders:write"], &["viewer"], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &no_role).await;
    assert_refused(&mut ws, &publish(2, channel, order.clone()), "forbidden").await;

    // Positive control: scope, role and tenant all present.
    let service = token(&server, "svc", &["orders:write"], &["service"], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &service).await;
    assert_frame(&request(&mut ws, &publish(3, channel, order.clone())).await, &ack(3));
    // ... but not into another tenant.
    assert_refused(&mut ws, &publish(4, "tenant:globex:orders", order), "forbidden").await;
}

#[tokio::test]
async fn crafted_channel_names_are_invalid_or_forbidden() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let alice = token(&server, "alice", &["orders:read"], &[], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &alice).await;
    // Wildcards and path characters are not channel characters at all.
    assert_refused(&mut ws, &subscribe(1, "tenant:*:orders"), "invalid_channel").await;
    assert_refused(&mut ws, &subscribe(2, "tenant:acme/../b:orders"), "invalid_channel").await;
    // Valid names: an extra segment matches no rule; `..` is captured as the tenant and does not
    // equal the token's `acme`.
    assert_refused(&mut ws, &subscribe(3, "tenant:acme:orders:x"), "forbidden").await;
    assert_refused(&mut ws, &subscribe(4, "tenant:..:orders"), "forbidden").await;
    // The session survived all of it and still holds no subscription.
    ping(&mut ws, 5).await;
    assert_eq!(server.stats().await.channels, 0);
}

#[tokio::test]
async fn channel_without_a_matching_rule_is_forbidden() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let admin = token(&server, "root", &["orders:read", "orders:write"], &["admin"], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &admin).await;
    assert_refused(&mut ws, &subscribe(1, "billing:acme"), "forbidden").await;
    assert_refused(&mut ws, &publish(2, "billing:acme", json!({})), "forbidden").await;
}

#[tokio::test]
async fn client_invented_scope_or_roles_fields_are_invalid_frame() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let nobody = token(&server, "mallory", &[], &[], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &nobody).await;
    let with_scope = json!({"action": "subscribe", "id": 1, "channel": "tenant:acme:orders", "scope": "orders:read"});
    assert_refused(&mut ws, &with_scope, "invalid_frame").await;
    let with_roles = json!({"action": "subscribe", "id": 2, "channel": "tenant:acme:orders", "roles": ["admin"]});
    assert_refused(&mut ws, &with_roles, "invalid_frame").await;
    // Without the invented fields the real identity decides.
    assert_refused(&mut ws, &subscribe(3, "tenant:acme:orders"), "forbidden").await;
}

#[tokio::test]
async fn dry_run_rule_allows_a_denied_subscribe_and_counts_it() {
    let server = Setup::new()
        .extra("[[channels]]\npattern = \"beta:{n}\"\nsubscribe = { scopes = [\"beta\"] }\nenforce = false")
        .start()
        .await;
    let mut ws = server.session("alice").await;
    assert_eq!(server.stats().await.dry_run_denials, 0);
    assert_frame(&request(&mut ws, &subscribe(1, "beta:1")).await, &ack(1));
    assert_eq!(server.stats().await.dry_run_denials, 1);
    // The subscription is real.
    assert_eq!(server.handle.publish("beta:1", &json!({"n": 1})).expect("publish"), 1);
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "message", "channel": "beta:1", "payload": {"n": 1}}));
}

// ---- 2. payload schemas -------------------------------------------------------------------------

const QTY_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["qty"],
  "properties": { "qty": { "type": "integer" } }
}"#;

fn schema_rule(pattern: &str, schema: &std::path::Path) -> String {
    format!(
        "[[channels]]\npattern = \"{pattern}\"\nsubscribe = {{}}\npublish = {{}}\nschema_file = {:?}",
        schema.display().to_string()
    )
}

#[tokio::test]
async fn publish_payload_must_match_the_rule_schema() {
    let dir = TempDir::new();
    let schema = dir.write("qty.json", QTY_SCHEMA.as_bytes());
    let server = Setup::new().extra(&schema_rule("cart:{n}", &schema)).start().await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &publish(1, "cart:1", json!({"qty": 3}))).await, &ack(1));
    assert_refused(&mut ws, &publish(2, "cart:1", json!({"qty": "three"})), "payload_invalid").await;
    assert_refused(&mut ws, &publish(3, "cart:1", json!({"item": "apple"})), "payload_invalid").await;
    ping(&mut ws, 4).await;
}

#[tokio::test]
async fn schema_with_a_remote_ref_fails_bind_with_a_config_error() {
    let dir = TempDir::new();
    let schema = dir
        .write("remote.json", br#"{"type": "object", "properties": {"qty": {"$ref": "https://example.com/x.json"}}}"#);
    let (text, _) = Setup::new().extra(&schema_rule("cart:{n}", &schema)).toml(&dir);
    let config = Config::from_toml_str(&text).expect("the config text itself is valid");
    let bound = tokio::time::timeout(WAIT, Server::builder(config).bind()).await.expect("bind answers at once");
    let err = match bound {
        Ok(_) => panic!("a schema with a remote $ref must not load"),
        Err(err) => err,
    };
    assert_eq!(err.code(), ErrorCode::ConfigFile, "{err}");
    let wsguard::Error::Config(config_error) = &err else { panic!("expected a config error, got {err:?}") };
    // channels[0] is the default `room:{n}` rule.
    assert!(config_error.problems().iter().any(|p| p.path == "channels[1].schema_file"), "{err}");
}

// ---- 3. RPC -------------------------------------------------------------------------------------

const RPC_METHODS: &str = r#"
[[rpc]]
method = "orders.create"
[[rpc]]
method = "orders.slow"
[[rpc]]
method = "orders.fail"
[[rpc]]
method = "orders.purge"
roles = ["admin"]
"#;

/// Answers `orders.create` (and any other method it is handed), sleeps past the RPC budget for
/// `orders.slow`, fails `orders.fail`; counts every call.
struct RpcHooks {
    calls: Arc<AtomicUsize>,
}

impl Hooks for RpcHooks {
    fn rpc(&self, call: RpcCall) -> HookFuture<Result<Value, RpcError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match call.method.as_str() {
                "orders.slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok(json!({"late": true}))
                }
                "orders.fail" => Err(RpcError::Failed("nope".into())),
                method => Ok(json!({"ok": true, "method": method})),
            }
        })
    }
}

async fn rpc_server() -> (TestServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = Setup::new()
        .limits("rpc_timeout_secs = 0.2")
        .extra(RPC_METHODS)
        .hooks(Arc::new(RpcHooks { calls: Arc::clone(&calls) }))
        .start()
        .await;
    (server, calls)
}

fn rpc(id: u64, method: &str) -> Value {
    json!({"action": "rpc", "id": id, "method": method, "payload": {"sku": "A-1"}})
}

#[tokio::test]
async fn declared_rpc_returns_the_handler_result() {
    let (server, calls) = rpc_server().await;
    let mut ws = server.session("alice").await;
    let reply = request(&mut ws, &rpc(7, "orders.create")).await;
    assert_eq!(reply, json!({"type": "result", "id": 7, "payload": {"ok": true, "method": "orders.create"}}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn undeclared_rpc_is_unknown_method_and_never_reaches_the_host() {
    let (server, calls) = rpc_server().await;
    let mut ws = server.session("alice").await;
    assert_refused(&mut ws, &rpc(1, "orders.delete_all"), "unknown_method").await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rpc_without_the_declared_role_is_forbidden_before_the_host() {
    let (server, calls) = rpc_server().await;
    let mut ws = server.session("alice").await;
    assert_refused(&mut ws, &rpc(1, "orders.purge"), "forbidden").await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // With the role it goes through.
    let admin = token(&server, "root", &[], &["admin"], json!({}));
    let mut ws = session_with(&server, &admin).await;
    let reply = request(&mut ws, &rpc(2, "orders.purge")).await;
    assert_frame(&reply, &json!({"type": "result", "id": 2, "payload": {"ok": true, "method": "orders.purge"}}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_rpc_handler_is_hook_timeout() {
    let (server, calls) = rpc_server().await;
    let mut ws = server.session("alice").await;
    assert_refused(&mut ws, &rpc(1, "orders.slow"), "hook_timeout").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    ping(&mut ws, 2).await;
}

#[tokio::test]
async fn failing_rpc_handler_is_rpc_failed_with_its_message() {
    let (server, _calls) = rpc_server().await;
    let mut ws = server.session("alice").await;
    let reply = request(&mut ws, &rpc(1, "orders.fail")).await;
    assert_frame(&reply, &json!({"type": "error", "id": 1, "code": "rpc_failed", "message": "nope"}));
}

#[tokio::test]
async fn declared_rpc_without_a_host_handler_is_rpc_failed() {
    // NoHooks: the method is declared, but the host registered no handler. That is the host's
    // fault, not the client's: `rpc_failed`, not `unknown_method` (docs/PROTOCOL.md).
    let server = Setup::new().extra(RPC_METHODS).start().await;
    let mut ws = server.session("alice").await;
    assert_refused(&mut ws, &rpc(1, "orders.create"), "rpc_failed").await;
    assert_refused(&mut ws, &rpc(2, "orders.unknown"), "unknown_method").await;
}

// ---- 4. rates -----------------------------------------------------------------------------------

/// Asserts a `rate_limited` reply with the request id and a positive `retry_after_ms`.
fn assert_rate_limited(reply: &Value, id: u64) {
    assert_frame(reply, &error(id, "rate_limited"));
    let retry = reply["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("retry_after_ms missing: {reply}"));
    assert!(retry > 0, "{reply}");
}

#[tokio::test]
async fn connection_message_burst_is_rate_limited_per_connection() {
    let server = Setup::new().limits("messages_per_sec = 1").limits("message_burst = 3").start().await;
    let mut greedy = server.session("alice").await;
    let mut polite = server.session("bob").await;
    // Sent back to back so the bucket cannot refill in between.
    for id in 1..=4 {
        send_json(&mut greedy, &json!({"action": "ping", "id": id})).await;
    }
    for id in 1..=3 {
        assert_frame(&recv_json(&mut greedy).await, &json!({"type": "pong", "id": id}));
    }
    assert_rate_limited(&recv_json(&mut greedy).await, 4);
    // Another connection has its own bucket.
    ping(&mut polite, 1).await;
}

#[tokio::test]
async fn user_message_rate_is_shared_by_the_user_connections() {
    // 0.2 per second: a burst of one frame per user, refilled after five seconds.
    let server = Setup::new().limits("user_messages_per_sec = 0.2").start().await;
    let mut first = server.session("alice").await;
    let mut second = server.session("alice").await;
    let mut other = server.session("bob").await;
    ping(&mut first, 1).await;
    // The second connection has sent nothing yet; only the user's shared bucket can refuse it.
    let reply = request(&mut second, &json!({"action": "ping", "id": 2})).await;
    assert_rate_limited(&reply, 2);
    ping(&mut other, 3).await;
}

#[tokio::test]
async fn channel_publish_rate_is_rate_limited() {
    // 1 per second per channel, burst 2.
    let server = Setup::new()
        .extra("[[channels]]\npattern = \"ticker:{n}\"\nsubscribe = {}\npublish = {}\npublish_per_sec = 1")
        .start()
        .await;
    let mut ws = server.session("alice").await;
    for id in 1..=3 {
        send_json(&mut ws, &publish(id, "ticker:1", json!({"px": id}))).await;
    }
    assert_frame(&recv_json(&mut ws).await, &ack(1));
    assert_frame(&recv_json(&mut ws).await, &ack(2));
    assert_rate_limited(&recv_json(&mut ws).await, 3);
    // The bucket is per channel.
    assert_frame(&request(&mut ws, &publish(4, "ticker:2", json!({"px": 4}))).await, &ack(4));
}

// ---- 5. violations ------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_violations_close_with_1008() {
    let server = Setup::new().limits("max_violations = 3").start().await;
    let mut ws = server.session("alice").await;
    for id in 1..=3 {
        assert_refused(&mut ws, &json!({"action": "nope", "id": id}), "invalid_frame").await;
    }
    // Tolerated so far.
    ping(&mut ws, 4).await;
    // The fourth violation is still answered, then the session is closed.
    assert_refused(&mut ws, &json!({"action": "nope", "id": 5}), "invalid_frame").await;
    assert_eq!(expect_close(&mut ws).await, 1008);
}

#[tokio::test]
async fn benign_replies_are_not_violations() {
    // `not_subscribed` and `too_many_subscriptions` are marked benign in the error registry.
    assert!(!ErrorCode::NotSubscribed.is_violation() && !ErrorCode::TooManySubscriptions.is_violation());
    let server = Setup::new().limits("max_violations = 1\nmax_subscriptions = 1").start().await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &subscribe(1, "room:1")).await, &ack(1));
    for id in 2..=4 {
        assert_refused(&mut ws, &subscribe(id, "room:2"), "too_many_subscriptions").await;
        assert_refused(
            &mut ws,
            &json!({"action": "unsubscribe", "id": id + 10, "channel": "room:3"}),
            "not_subscribed",
        )
        .await;
    }
    ping(&mut ws, 20).await;
}

// ---- 6. subscription cap ------------------------------------------------------------------------

#[tokio::test]
async fn third_subscription_is_too_many_subscriptions() {
    let server = Setup::new().limits("max_subscriptions = 2").start().await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &subscribe(1, "room:1")).await, &ack(1));
    assert_frame(&request(&mut ws, &subscribe(2, "room:2")).await, &ack(2));
    assert_refused(&mut ws, &subscribe(3, "room:3"), "too_many_subscriptions").await;
    // Re-subscribing a held channel is not a new subscription.
    assert_frame(&request(&mut ws, &subscribe(4, "room:1")).await, &ack(4));
}

// ---- 7. replay protection -----------------------------------------------------------------------

#[tokio::test]
async fn require_seq_refuses_missing_and_repeated_seq() {
    let server = Setup::new().extra("[protocol]\nrequire_seq = true").start().await;
    let mut ws = server.session("alice").await;
    assert_refused(&mut ws, &json!({"action": "ping", "id": 1}), "replay").await;
    let pong = request(&mut ws, &json!({"action": "ping", "id": 2, "seq": 1})).await;
    assert_frame(&pong, &json!({"type": "pong", "id": 2}));
    assert_refused(&mut ws, &json!({"action": "ping", "id": 3, "seq": 1}), "replay").await;
    let pong = request(&mut ws, &json!({"action": "ping", "id": 4, "seq": 2})).await;
    assert_frame(&pong, &json!({"type": "pong", "id": 4}));
    let pong = request(&mut ws, &json!({"action": "ping", "id": 5, "seq": 10})).await;
    assert_frame(&pong, &json!({"type": "pong", "id": 5}));
    assert_refused(&mut ws, &json!({"action": "ping", "id": 6, "seq": 9}), "replay").await;
}

// ---- 8. binary frames ---------------------------------------------------------------------------

#[tokio::test]
async fn binary_frame_closes_with_1003_by_default() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    send(&mut ws, Message::binary(br#"{"action":"ping","id":1}"#.to_vec())).await;
    assert_eq!(expect_close(&mut ws).await, 1003);
}

#[tokio::test]
async fn binary_frame_is_decoded_when_allowed() {
    let server = Setup::new().extra("[protocol]\nallow_binary = true").start().await;
    let mut ws = server.session("alice").await;
    send(&mut ws, Message::binary(br#"{"action":"ping","id":1}"#.to_vec())).await;
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "pong", "id": 1}));
}

// ---- 9. liveness --------------------------------------------------------------------------------

fn lively() -> Setup {
    Setup::new().limits("ping_interval_secs = 0.2").limits("idle_timeout_secs = 0.5")
}

#[tokio::test]
async fn client_that_never_answers_pings_is_closed_with_4003() {
    let server = lively().start().await;
    let mut ws = server.session("alice").await;
    // tungstenite answers pings only while it is polled: leave it alone past the idle timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(expect_close(&mut ws).await, 4003);
}

#[tokio::test]
async fn server_pings_and_a_polled_client_stays_alive() {
    let server = lively().start().await;
    let mut ws = server.session("alice").await;
    // Three pings span more than the idle timeout; the automatic pongs keep the session open.
    let mut pings = 0;
    while pings < 3 {
        match next_message(&mut ws).await {
            Message::Ping(_) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    ping(&mut ws, 1).await;
}

/// A masked client frame (RFC 6455 §5.2) with `first` as its first byte (FIN and opcode).
fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
    assert!(payload.len() < 126, "a short frame");
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

/// An idle connection is parked between heartbeats (tungstenite taken apart, built again when the
/// client sends): a frame cut in two by a pause, and a fragmented message with a ping between its
/// fragments and a pause before its end, must still arrive whole, across heartbeats.
#[tokio::test]
async fn messages_cut_by_pauses_arrive_whole_across_idle_heartbeats() {
    use tokio::io::AsyncWriteExt;
    let server = Setup::new().limits("ping_interval_secs = 0.1").limits("idle_timeout_secs = 5").start().await;
    let mut ws = server.session("alice").await;
    let pause = Duration::from_millis(250);
    // A heartbeat and its pong: nothing but control frames, so the connection parks after it.
    loop {
        if let Message::Ping(_) = next_message(&mut ws).await {
            break;
        }
    }
    futures_util::SinkExt::flush(&mut ws).await.expect("the pong goes out");
    tokio::time::sleep(pause).await;

    // One frame in two writes, heartbeats in between.
    let frame = masked_frame(0x81, br#"{"action":"ping","id":2}"#);
    ws.get_mut().write_all(&frame[..3]).await.expect("write");
    tokio::time::sleep(pause).await;
    ws.get_mut().write_all(&frame[3..]).await.expect("write");
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "pong", "id": 2}));
    tokio::time::sleep(pause).await;

    // A fragmented message: its first fragment, a ping, a pause, its last fragment.
    let text = br#"{"action":"ping","id":3}"#;
    let mut bytes = masked_frame(0x01, &text[..10]);
    bytes.extend(masked_frame(0x89, b"hb"));
    ws.get_mut().write_all(&bytes).await.expect("write");
    tokio::time::sleep(pause).await;
    ws.get_mut().write_all(&masked_frame(0x80, &text[10..])).await.expect("write");
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "pong", "id": 3}));
    ping(&mut ws, 4).await;
}

// ---- 10. slow consumers -------------------------------------------------------------------------

/// Small outboxes: 4 messages or 16 KiB, so three ~4 KB publications fill one.
fn small_outboxes() -> Setup {
    Setup::new().limits("outbound_queue_messages = 4").limits("outbound_queue_bytes = 16384")
}

/// Current-thread runtime: the session tasks cannot run while the test publishes synchronously,
/// so the burst lands in the outbox before anything drains it.
#[tokio::test]
async fn outbox_overflow_closes_the_subscriber_with_4000() {
    let server = small_outboxes().start().await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &subscribe(1, "room:1")).await, &ack(1));
    for seq in 0..200 {
        server.handle.publish("room:1", &bulky(seq)).expect("publish");
    }
    assert_eq!(server.stats().await.slow_consumer_disconnects, 1);
    assert_eq!(expect_close(&mut ws).await, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reader_is_closed_with_4000_while_a_reader_gets_every_message() {
    let server = small_outboxes().start().await;
    let mut reader = server.session("alice").await;
    let mut sleeper = server.session("bob").await;
    assert_frame(&request(&mut reader, &subscribe(1, "room:1")).await, &ack(1));
    assert_frame(&request(&mut sleeper, &subscribe(1, "room:1")).await, &ack(1));

    // Publish in rounds of two (well inside the reader's outbox) and let the reader catch up each
    // round, until the never-reader's socket buffers are full and its outbox overflows. The loop
    // is bounded by WAIT and by a byte budget far beyond any loopback buffering.
    let mut seq = 0u64;
    let flood = tokio::time::timeout(WAIT, async {
        while server.stats().await.slow_consumer_disconnects == 0 && seq < 20_000 {
            for _ in 0..2 {
                server.handle.publish("room:1", &bulky(seq)).expect("publish");
                seq += 1;
            }
            for expected in seq - 2..seq {
                let frame = recv_json(&mut reader).await;
                assert_frame(&frame, &json!({"type": "message", "channel": "room:1"}));
                assert_eq!(frame["payload"]["seq"], json!(expected), "the reader gets every message in order");
            }
        }
    })
    .await;
    assert!(flood.is_ok(), "the flood did not finish in time ({seq} messages)");
    assert!(server.stats().await.slow_consumer_disconnects >= 1, "no overflow after {seq} messages");

    // Reading now lets the blocked write finish; the session then sees the overflow and closes.
    assert_eq!(expect_close(&mut sleeper).await, 4000);
    ping(&mut reader, 2).await;
}

/// A session whose delivery write never finishes (the client stopped reading, `drop_oldest`
/// keeps it from overflowing, and the write timeout is an hour) holds up a shutdown only until
/// the grace period is over: then its task is aborted and `serve` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_a_session_stuck_in_a_write_after_the_grace() {
    let server = small_outboxes()
        .limits("write_timeout_secs = 3600")
        .extra("[[channels]]\npattern = \"feed:{n}\"\nsubscribe = {}\npublish = {}\nslow_consumer = \"drop_oldest\"")
        .start()
        .await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &subscribe(1, "feed:1")).await, &ack(1));
    // Publish until frames stay queued through a pause: the socket buffers are full and the
    // session is blocked in its write.
    let mut seq = 0u64;
    let flood = tokio::time::timeout(WAIT, async {
        while seq < 20_000 {
            for _ in 0..500 {
                server.handle.publish("feed:1", &bulky(seq)).expect("publish");
                seq += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if server.stats().await.outbound_queued_bytes > 0 {
                break;
            }
        }
    })
    .await;
    assert!(flood.is_ok() && server.stats().await.outbound_queued_bytes > 0, "not blocked after {seq} messages");
    server.handle.shutdown_within(Duration::from_millis(200));
    let stopped = tokio::time::timeout(WAIT, server.handle.stopped()).await;
    assert!(stopped.is_ok(), "serve did not return: the stuck session was not aborted");
    drop(ws);
}

#[tokio::test]
async fn drop_oldest_sends_a_gap_frame_and_keeps_the_session() {
    let server = small_outboxes()
        .extra("[[channels]]\npattern = \"feed:{n}\"\nsubscribe = {}\npublish = {}\nslow_consumer = \"drop_oldest\"")
        .start()
        .await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &subscribe(1, "feed:1")).await, &ack(1));
    // Current-thread runtime: the session cannot drain while we publish, as if the client paused.
    let published = 50u64;
    for seq in 0..published {
        server.handle.publish("feed:1", &bulky(seq)).expect("publish");
    }
    let gap = recv_json(&mut ws).await;
    assert_frame(&gap, &json!({"type": "gap", "channel": "feed:1"}));
    let missed = gap["missed"].as_u64().expect("missed is a count");
    assert!(missed >= 1 && missed < published, "{gap}");
    // Exactly the newest messages follow the gap, in order.
    for seq in missed..published {
        let frame = recv_json(&mut ws).await;
        assert_frame(&frame, &json!({"type": "message", "channel": "feed:1"}));
        assert_eq!(frame["payload"]["seq"], json!(seq));
    }
    assert_eq!(server.stats().await.slow_consumer_disconnects, 0);
    ping(&mut ws, 2).await;
}

// ---- 11. token lifecycle ------------------------------------------------------------------------

fn refresh(id: u64, token: &str) -> Value {
    json!({"action": "refresh", "id": id, "token": token})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_the_session_beyond_the_first_token() {
    let server = Setup::new().auth("leeway_secs = 0").start().await;
    let mut ws = session_with(&server, &server.token_with_ttl("alice", 2)).await;
    let reply = request(&mut ws, &refresh(1, &server.token_with_ttl("alice", 60))).await;
    assert_frame(&reply, &ack(1));
    // Past the first token's exp: without the refresh this session would be closed with 4100.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ping(&mut ws, 2).await;
}

#[tokio::test]
async fn refresh_for_another_subject_is_refresh_mismatch() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    assert_refused(&mut ws, &refresh(1, &server.token("mallory")), "refresh_mismatch").await;
    ping(&mut ws, 2).await;
}

#[tokio::test]
async fn refresh_into_another_tenant_is_refresh_mismatch() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let acme = token(&server, "alice", &["orders:read"], &[], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &acme).await;
    let globex = token(&server, "alice", &["orders:read"], &[], json!({"tenant": "globex"}));
    assert_refused(&mut ws, &refresh(1, &globex), "refresh_mismatch").await;
    // The session is still bound to acme.
    assert_refused(&mut ws, &subscribe(2, "tenant:globex:orders"), "forbidden").await;
}

#[tokio::test]
async fn refresh_with_an_expired_token_is_token_expired() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    let now = now_secs();
    let expired = support::sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now - 400, "exp": now - 100}),
    );
    assert_refused(&mut ws, &refresh(1, &expired), "token_expired").await;
}

#[tokio::test]
async fn refresh_without_a_needed_scope_drops_the_subscription() {
    let server = Setup::new().extra(TENANT_ORDERS).start().await;
    let reader = token(&server, "alice", &["orders:read"], &[], json!({"tenant": "acme"}));
    let mut ws = session_with(&server, &reader).await;
    assert_frame(&request(&mut ws, &subscribe(1, "tenant:acme:orders")).await, &ack(1));
    let narrower = token(&server, "alice", &[], &[], json!({"tenant": "acme"}));
    send_json(&mut ws, &refresh(2, &narrower)).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "unsubscribed", "channel": "tenant:acme:orders", "reason": "forbidden"})
    );
    assert_frame(&recv_json(&mut ws).await, &ack(2));
    // The hub no longer delivers to it.
    assert_eq!(server.handle.publish("tenant:acme:orders", &json!({"order": 1})).expect("publish"), 0);
}

#[tokio::test]
async fn revoking_a_subject_closes_its_sessions_with_4501_and_refuses_its_tokens() {
    let server = Setup::new().start().await;
    let alice = server.token("alice");
    let mut ws = session_with(&server, &alice).await;
    let mut bob = server.session("bob").await;
    ping(&mut ws, 1).await;
    server.handle.revoke(Revocation::Subject("alice".into()));
    assert_eq!(expect_close(&mut ws).await, 4501);
    server.exchange(&RawRequest::authorized(&alice)).await.assert_refused(401, "token_revoked");
    ping(&mut bob, 2).await;
}

#[tokio::test]
async fn revoking_a_token_id_closes_only_that_session() {
    let server = Setup::new().start().await;
    let first = token(&server, "alice", &[], &[], json!({"jti": "jti-first"}));
    let second = token(&server, "alice", &[], &[], json!({"jti": "jti-second"}));
    let mut revoked = session_with(&server, &first).await;
    let mut kept = session_with(&server, &second).await;
    ping(&mut revoked, 1).await;
    ping(&mut kept, 2).await;
    server.handle.revoke(Revocation::TokenId("jti-first".into()));
    assert_eq!(expect_close(&mut revoked).await, 4501);
    server.exchange(&RawRequest::authorized(&first)).await.assert_refused(401, "token_revoked");
    ping(&mut kept, 3).await;
}

#[tokio::test]
async fn single_use_token_is_refused_the_second_time() {
    let server = Setup::new().auth("single_use_jti = true").start().await;
    let once = token(&server, "alice", &[], &[], json!({"jti": "jti-once"}));
    let mut ws = session_with(&server, &once).await;
    ping(&mut ws, 1).await;
    server.exchange(&RawRequest::authorized(&once)).await.assert_refused(401, "token_replayed");
}
