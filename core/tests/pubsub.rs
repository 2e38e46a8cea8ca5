//! Sessions over real loopback sockets (ws:// and wss://): protocol v1 frames and replies, the
//! host handle (publish, stats, disconnect, shutdown) and every server-side close code.

mod support;

use serde_json::json;
use support::{Connect, Setup, Ws, assert_frame, expect_close, ping, recv_json, request, send, send_json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use wsguard::ErrorCode;

/// A session subscribed to `channel` (the ack proves the hub holds the subscription).
async fn subscribed(ws: &mut Ws, channel: &str) {
    let reply = request(ws, &json!({"action": "subscribe", "id": 1, "channel": channel})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_reaches_the_subscriber() {
    let server = Setup::new().start().await;
    let mut a = server.session("alice").await;
    let mut b = server.session("bob").await;
    subscribed(&mut a, "room:1").await;

    let publish = json!({"action": "publish", "id": 2, "channel": "room:1", "payload": {"text": "hi"}});
    assert_frame(&request(&mut b, &publish).await, &json!({"type": "ack", "id": 2}));
    assert_frame(&recv_json(&mut a).await, &json!({"type": "message", "channel": "room:1", "payload": {"text": "hi"}}));
}

#[tokio::test]
async fn ping_is_answered_with_pong_and_the_same_id() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    assert_frame(&request(&mut ws, &json!({"action": "ping", "id": 42})).await, &json!({"type": "pong", "id": 42}));
}

#[tokio::test]
async fn unknown_action_is_invalid_frame_and_the_session_stays_open() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    let reply = request(&mut ws, &json!({"action": "admin", "id": 3})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 3, "code": "invalid_frame"}));
    ping(&mut ws, 4).await;
}

#[tokio::test]
async fn unknown_field_is_invalid_frame() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    let frame = json!({"action": "subscribe", "id": 5, "channel": "room:1", "roles": ["admin"]});
    let reply = request(&mut ws, &frame).await;
    assert_frame(&reply, &json!({"type": "error", "id": 5, "code": "invalid_frame"}));
    ping(&mut ws, 6).await;
}

#[tokio::test]
async fn wildcard_channel_is_invalid_channel() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    let reply = request(&mut ws, &json!({"action": "subscribe", "id": 7, "channel": "a*"})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 7, "code": "invalid_channel"}));
}

#[tokio::test]
async fn channel_without_a_rule_is_forbidden() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    let reply = request(&mut ws, &json!({"action": "subscribe", "id": 9, "channel": "admin:1"})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 9, "code": "forbidden"}));
}

#[tokio::test]
async fn unsubscribe_without_subscription_is_not_subscribed() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    let reply = request(&mut ws, &json!({"action": "unsubscribe", "id": 8, "channel": "room:1"})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 8, "code": "not_subscribed"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_reaches_the_subscriber_over_tls() {
    let server = Setup::new().tls().start().await;
    let (mut a, _) = server.try_wss(&Connect::new().bearer(&server.token("alice"))).await.expect("wss session a");
    let (mut b, _) = server.try_wss(&Connect::new().bearer(&server.token("bob"))).await.expect("wss session b");
    let reply = request(&mut a, &json!({"action": "subscribe", "id": 1, "channel": "room:1"})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 1}));

    let publish = json!({"action": "publish", "id": 2, "channel": "room:1", "payload": {"text": "hi"}});
    assert_frame(&request(&mut b, &publish).await, &json!({"type": "ack", "id": 2}));
    assert_frame(&recv_json(&mut a).await, &json!({"type": "message", "channel": "room:1", "payload": {"text": "hi"}}));
}

/// Messages larger than a TLS record, sent back to back without waiting, cross `wss://` intact
/// both ways: the server reassembles each from several records and writes each delivery as
/// several.
#[tokio::test]
async fn large_pipelined_publications_cross_tls_intact() {
    let server = Setup::new().tls().start().await;
    let (mut a, _) = server.try_wss(&Connect::new().bearer(&server.token("alice"))).await.expect("wss session a");
    let (mut b, _) = server.try_wss(&Connect::new().bearer(&server.token("bob"))).await.expect("wss session b");
    assert_frame(
        &request(&mut a, &json!({"action": "subscribe", "id": 1, "channel": "room:1"})).await,
        &json!({"type": "ack", "id": 1}),
    );
    let texts: Vec<String> =
        (0..8u32).map(|i| (0..40_000u32).map(|j| char::from(b'a' + ((i * 7 + j) % 26) as u8)).collect()).collect();
    for (i, text) in texts.iter().enumerate() {
        send_json(&mut b, &json!({"action": "publish", "id": 10 + i, "channel": "room:1", "payload": {"text": text}}))
            .await;
    }
    for i in 0..texts.len() {
        assert_frame(&recv_json(&mut b).await, &json!({"type": "ack", "id": 10 + i}));
    }
    for text in &texts {
        assert_frame(
            &recv_json(&mut a).await,
            &json!({"type": "message", "channel": "room:1", "payload": {"text": text}}),
        );
    }
}

#[tokio::test]
async fn subprotocol_token_selects_only_wsguard_v1() {
    let server = Setup::new().start().await;
    let token = server.token("alice");
    let connect = Connect::new().protocols(&format!("wsguard.v1, bearer.{token}"));
    let (mut ws, response) =
        server.try_ws(&connect).await.unwrap_or_else(|e| panic!("refused: {}", support::describe(&e)));
    let selected: Vec<_> = response.headers().get_all("sec-websocket-protocol").iter().collect();
    assert_eq!(selected, ["wsguard.v1"], "the token must never be echoed");
    ping(&mut ws, 1).await;
}

#[tokio::test]
async fn server_side_publish_reaches_a_subscriber() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    subscribed(&mut ws, "room:1").await;
    let queued = server.handle.publish("room:1", &json!({"text": "from the host"})).expect("publish");
    assert_eq!(queued, 1);
    assert_frame(
        &recv_json(&mut ws).await,
        &json!({"type": "message", "channel": "room:1", "payload": {"text": "from the host"}}),
    );
    // Nobody listens on another channel; the host learns it from the count.
    assert_eq!(server.handle.publish("room:2", &json!({})).expect("publish"), 0);
    let refused = server.handle.publish("room:*", &json!({})).expect_err("wildcards are not channels");
    assert_eq!(refused.code(), ErrorCode::InvalidChannel);
}

#[tokio::test]
async fn stats_count_active_sessions() {
    let server = Setup::new().start().await;
    assert_eq!(server.handle.stats().sessions_active, 0);
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    let stats = server.handle.stats();
    assert_eq!((stats.sessions_active, stats.sessions_total), (1, 1));
    ws.close(None).await.expect("close");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(support::WAIT, futures_util::StreamExt::next(&mut ws)).await {}
    support::eventually("the closed session is no longer counted", || server.handle.stats().sessions_active == 0).await;
}

#[tokio::test]
async fn disconnect_user_closes_with_4001() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    assert_eq!(server.handle.disconnect_user("alice"), 1);
    assert_eq!(expect_close(&mut ws).await, 4001);
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    send(&mut ws, Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(expect_close(&mut ws).await, 1003);
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let server = Setup::new().limits("max_message_bytes = 1024").limits("max_frame_bytes = 1024").start().await;
    let mut ws = server.session("alice").await;
    let frame = json!({"action": "publish", "id": 1, "channel": "room:1", "payload": {"text": "x".repeat(2000)}});
    send_json(&mut ws, &frame).await;
    assert_eq!(expect_close(&mut ws).await, 1009);
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    // A raw text frame (tungstenite masks it as a client must) whose bytes are not UTF-8.
    let frame = Frame::message(vec![0xff_u8, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    send(&mut ws, Message::Frame(frame)).await;
    assert_eq!(expect_close(&mut ws).await, 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_1001_and_stops() {
    let mut server = Setup::new().start().await;
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    server.handle.shutdown();
    assert_eq!(expect_close(&mut ws).await, 1001);
    tokio::time::timeout(support::WAIT, server.handle.stopped()).await.expect("serve returns after the drain");
    let served = tokio::time::timeout(support::WAIT, &mut server.task)
        .await
        .expect("the serve task has ended")
        .expect("the serve task did not panic");
    assert!(served.is_ok(), "{served:?}");
    let refused = server.handle.publish("room:1", &json!({})).expect_err("publishing after shutdown");
    assert_eq!(refused.code(), ErrorCode::NotRunning);
}

#[tokio::test]
async fn expiring_token_closes_with_4100() {
    let server = Setup::new().auth("leeway_secs = 0").start().await;
    let token = server.token_with_ttl("alice", 2);
    let mut ws = server.ws(&Connect::new().bearer(&token)).await;
    assert_eq!(expect_close(&mut ws).await, 4100);
}
