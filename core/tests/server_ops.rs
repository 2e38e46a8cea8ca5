//! The server-side session operations over real loopback sockets: `send` (the `push` frame),
//! `disconnect_with` (a code and a reason of the caller's), server-side `subscribe` and
//! `unsubscribe` (the `subscribed` and `unsubscribed` frames, the subscription cap, reloads), and
//! the session and channel listings with their paging. Every refused call is shown to change
//! nothing.

mod support;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Setup, TestServer, WAIT, Ws, assert_frame, expect_close, ping, recv_json, request};
use tokio_tungstenite::tungstenite::Message;
use wsguard::{ErrorCode, Target};

fn user(name: &str) -> Target {
    Target::User(name.to_string())
}

fn session(id: u64) -> Target {
    Target::Session { id, node: None }
}

/// The id of `user`'s only session (after a ping round trip, so it is registered).
async fn id_of(server: &TestServer, ws: &mut Ws, name: &str) -> u64 {
    ping(ws, 99).await;
    let page = server.handle.sessions(Some(name), None, 10).expect("a listing");
    assert_eq!(page.sessions.len(), 1, "{name} has one session");
    page.sessions[0].id
}

/// Proves nothing was queued for `ws` before now: the next frame is the pong.
async fn nothing_pending(ws: &mut Ws, id: u64) {
    let reply = request(ws, &json!({"action": "ping", "id": id})).await;
    assert_frame(&reply, &json!({"type": "pong", "id": id}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_pushes_to_a_users_sessions_or_one_session_and_refuses_bad_payloads() {
    let server = Setup::new().limits("max_frame_bytes = 1024").limits("max_message_bytes = 1024").start().await;
    let mut alice_1 = server.session("alice").await;
    let mut alice_2 = server.session("alice").await;
    let mut bob = server.session("bob").await;
    ping(&mut alice_1, 1).await;
    ping(&mut alice_2, 1).await;
    let bob_id = id_of(&server, &mut bob, "bob").await;

    let applied = server.handle.send(&user("alice"), &json!({"note": "hello"})).expect("sent");
    assert_eq!((applied.matched, applied.changed, applied.is_forwarded), (2, 2, false));
    assert_eq!(applied.node, server.handle.node_id());
    for ws in [&mut alice_1, &mut alice_2] {
        assert_eq!(recv_json(ws).await, json!({"type": "push", "payload": {"note": "hello"}}));
    }
    let applied = server.handle.send(&session(bob_id), &json!({"for": "bob"})).expect("sent");
    assert_eq!(applied.changed, 1);
    assert_eq!(recv_json(&mut bob).await, json!({"type": "push", "payload": {"for": "bob"}}));
    assert_eq!(server.handle.send(&user("nobody"), &json!({})).expect("no sessions is no error").matched, 0);

    let deep = (0..40).fold(json!(1), |inner, _| json!({ "a": inner }));
    let refusals = [
        (session(bob_id + 1000), json!({}), ErrorCode::UnknownSession),
        (user("bob"), json!([1, 2]), ErrorCode::InvalidFrame),
        (user("bob"), deep, ErrorCode::PayloadTooDeep),
        (user("bob"), json!({"big": "x".repeat(1024)}), ErrorCode::PayloadTooLarge),
    ];
    for (target, payload, code) in refusals {
        let error = server.handle.send(&target, &payload).expect_err("refused");
        assert_eq!(error.code(), code, "{payload}");
    }
    let elsewhere = Target::Session { id: bob_id, node: Some("another-node".into()) };
    assert_eq!(server.handle.send(&elsewhere, &json!({})).expect_err("no cluster").code(), ErrorCode::InvalidArgument);
    nothing_pending(&mut bob, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_made_subscription_bypasses_the_rules_and_survives_a_reload_that_forbids_it() {
    // `news:{n}` has no subscribe rule: clients may not subscribe, the host may.
    let server = Setup::new().extra("[[channels]]\npattern = \"news:{n}\"\npublish = {}\n").start().await;
    let mut alice = server.session("alice").await;
    let refused = request(&mut alice, &json!({"action": "subscribe", "id": 1, "channel": "news:1"})).await;
    assert_frame(&refused, &json!({"type": "error", "id": 1, "code": "forbidden"}));
    let reply = request(&mut alice, &json!({"action": "subscribe", "id": 2, "channel": "room:1"})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 2}));

    let applied = server.handle.subscribe(&user("alice"), "news:1").expect("subscribed");
    assert_eq!((applied.matched, applied.changed), (1, 1));
    assert_eq!(recv_json(&mut alice).await, json!({"type": "subscribed", "channel": "news:1", "by": "server"}));
    assert_eq!(server.handle.publish("news:1", &json!({"n": 1})).expect("published"), 1);
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "message", "channel": "news:1", "payload": {"n": 1}}));
    let again = server.handle.subscribe(&user("alice"), "news:1").expect("already");
    assert_eq!((again.matched, again.changed), (1, 0));

    // A reload with no rule at all: the client's room:1 goes, the server's news:1 stays.
    let mut config = server.config.clone();
    config.channels.clear();
    server.handle.reload(config).expect("reloaded");
    assert_eq!(
        recv_json(&mut alice).await,
        json!({"type": "unsubscribed", "channel": "room:1", "reason": "forbidden"})
    );
    assert_eq!(server.handle.publish("news:1", &json!({"n": 2})).expect("published"), 1);
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "message", "channel": "news:1", "payload": {"n": 2}}));

    let applied = server.handle.unsubscribe(&user("alice"), "news:1").expect("unsubscribed");
    assert_eq!(applied.changed, 1);
    assert_eq!(recv_json(&mut alice).await, json!({"type": "unsubscribed", "channel": "news:1", "reason": "server"}));
    assert_eq!(server.handle.publish("news:1", &json!({"n": 3})).expect("published"), 0);
    assert_eq!(server.handle.unsubscribe(&user("alice"), "news:1").expect("not subscribed").changed, 0);
    nothing_pending(&mut alice, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_subscribe_counts_towards_the_cap_and_bad_arguments_change_nothing() {
    let server = Setup::new().limits("max_subscriptions = 1").start().await;
    let mut alice = server.session("alice").await;
    let mut bob = server.session("bob").await;
    let bob_id = id_of(&server, &mut bob, "bob").await;
    let reply = request(&mut alice, &json!({"action": "subscribe", "id": 1, "channel": "room:1"})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 1}));

    let applied = server.handle.subscribe(&user("alice"), "room:2").expect("applied");
    assert_eq!((applied.matched, applied.changed, applied.at_limit), (1, 0, 1));
    assert_eq!(server.handle.subscribe(&session(bob_id), "room:2").expect("subscribed").changed, 1);
    assert_eq!(recv_json(&mut bob).await, json!({"type": "subscribed", "channel": "room:2", "by": "server"}));
    // The cap holds for the client too once the server filled it.
    let reply = request(&mut bob, &json!({"action": "subscribe", "id": 2, "channel": "room:3"})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 2, "code": "too_many_subscriptions"}));

    for channel in ["", "room:*", "a b"] {
        let error = server.handle.subscribe(&user("alice"), channel).expect_err("refused");
        assert_eq!(error.code(), ErrorCode::InvalidChannel);
        let error = server.handle.unsubscribe(&user("bob"), channel).expect_err("refused");
        assert_eq!(error.code(), ErrorCode::InvalidChannel);
    }
    assert_eq!(
        server.handle.subscribe(&session(bob_id + 1000), "room:4").expect_err("no such").code(),
        ErrorCode::UnknownSession
    );
    let channels = server.handle.channels(None, None, 10).expect("a listing");
    let names: Vec<(&str, usize)> = channels.channels.iter().map(|c| (c.channel.as_str(), c.subscribers)).collect();
    assert_eq!(names, [("room:1", 1), ("room:2", 1)]);
    nothing_pending(&mut alice, 5).await;
    nothing_pending(&mut bob, 5).await;
}

/// The close frame's code and reason.
async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next()).await.expect("a close frame in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_closes_with_the_callers_code_and_reason_and_refuses_wsguards_own_codes() {
    let server = Setup::new().start().await;
    let mut alice = server.session("alice").await;
    let mut bob = server.session("bob").await;
    let bob_id = id_of(&server, &mut bob, "bob").await;
    ping(&mut alice, 1).await;

    for (code, reason) in [(4000, ""), (4501, ""), (1000, ""), (5000, ""), (4200, &*"x".repeat(124))] {
        let error = server.handle.disconnect_with(&user("alice"), code, reason).expect_err("refused");
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{code}");
    }
    nothing_pending(&mut alice, 2).await;

    let applied = server.handle.disconnect_with(&user("alice"), 4200, "moved to another shard").expect("closing");
    assert_eq!(applied.changed, 1);
    assert_eq!(close_frame(&mut alice).await, (4200, "moved to another shard".to_string()));
    server.handle.disconnect_with(&session(bob_id), 4502, "").expect("closing");
    assert_eq!(expect_close(&mut bob).await, 4502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_through_sessions_and_channels_and_name_the_node() {
    let started_ms = support::now_secs() * 1000;
    let server = Setup::new().start().await;
    let mut sessions = Vec::new();
    for (i, name) in ["ann", "ben", "cat", "dan", "ann"].iter().enumerate() {
        let mut ws = server.session(name).await;
        let channel = format!("room:{}", i % 3);
        let reply = request(&mut ws, &json!({"action": "subscribe", "id": 1, "channel": channel})).await;
        assert_frame(&reply, &json!({"type": "ack", "id": 1}));
        sessions.push(ws);
    }

    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = server.handle.sessions(None, cursor, 2).expect("a page");
        assert_eq!(page.node, server.handle.node_id());
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.iter().cloned());
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 5, "every session once: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    let first = &seen[0];
    assert_eq!((first.user.as_str(), first.client_ip.to_string()), ("ann", "127.0.0.1".to_string()));
    assert_eq!(first.subscriptions, ["room:0"]);
    assert!(first.connected_at_ms >= started_ms && first.connected_at_ms <= support::now_secs() * 1000 + 1000);
    let anns = server.handle.sessions(Some("ann"), None, 10).expect("a page");
    assert_eq!(anns.sessions.iter().map(|s| s.user.as_str()).collect::<Vec<_>>(), ["ann", "ann"]);
    assert_eq!(anns.next_cursor, None);
    let as_json = serde_json::to_value(&anns).expect("serializes");
    assert_eq!(as_json["sessions"][0]["client_ip"], json!("127.0.0.1"));

    server.handle.subscribe(&user("ben"), "lobby").expect("subscribed");
    let page = server.handle.channels(Some("room:{n}"), None, 2).expect("a page");
    let names: Vec<(String, usize)> = page.channels.iter().map(|c| (c.channel.clone(), c.subscribers)).collect();
    assert_eq!(names, [("room:0".to_string(), 2), ("room:1".to_string(), 2)]);
    let next = server.handle.channels(Some("room:{n}"), page.next_cursor.as_deref(), 2).expect("a page");
    assert_eq!(next.channels.iter().map(|c| c.channel.as_str()).collect::<Vec<_>>(), ["room:2"]);
    assert_eq!(next.next_cursor, None);
    let all = server.handle.channels(None, None, 1000).expect("a page");
    assert_eq!(all.channels.len(), 4);
    assert_eq!(serde_json::to_value(&all).expect("serializes")["node"], Value::String(server.handle.node_id()));

    for limit in [0, 1001] {
        assert_eq!(server.handle.sessions(None, None, limit).expect_err("refused").code(), ErrorCode::InvalidArgument);
        assert_eq!(server.handle.channels(None, None, limit).expect_err("refused").code(), ErrorCode::InvalidArgument);
    }
    let error = server.handle.channels(Some("room:{"), None, 10).expect_err("refused");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
}
