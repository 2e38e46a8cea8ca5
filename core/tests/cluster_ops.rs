//! Server-side session operations across nodes (Redis and NATS on 127.0.0.1, signed control
//! messages): `send`, `subscribe`, `unsubscribe` and `disconnect_with` of a user act on every
//! node; a session-targeted operation naming another node reaches that node's session only.
//! Without the brokers the tests print `SKIPPED` and pass (never under
//! `WSGUARD_REQUIRE_BROKERS=1`).

#![allow(missing_docs)]

mod support;

use futures_util::StreamExt;
use serde_json::json;
use support::brokers::{self, Kind, broker_or_skip, prefix, wait_ready};
use support::{Setup, TempDir, WAIT, Ws, assert_frame, ping, recv_json, request};
use tokio_tungstenite::tungstenite::Message;
use wsguard::Target;

const KEY: &[u8] = b"cluster-ops-tests-signing-key-0123456789-abcdefgh";

fn node(kind: Kind, prefix: &str, id: &str, dir: &TempDir) -> Setup {
    let key = dir.write("cluster.key", KEY);
    brokers::node(kind, &kind.shared_url(), prefix, id, &format!("signing_key_file = {:?}\n", key.to_string_lossy()))
}

async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next()).await.expect("a close frame in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn operations_reach_other_nodes(kind: Kind, test: &str) {
    if !broker_or_skip(test, kind.name(), kind.shared_addr()) {
        return;
    }
    let p = prefix(test);
    let dir = TempDir::new();
    let a = node(kind, &p, "a", &dir).start().await;
    let b = node(kind, &p, "b", &dir).start().await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let mut alice = b.session("alice").await;
    let mut bob = b.session("bob").await;
    ping(&mut alice, 1).await;
    ping(&mut bob, 1).await;
    let bob_id = b.handle.sessions(Some("bob"), None, 1).expect("a listing").sessions[0].id;
    let alice_user = Target::User("alice".into());

    // From node a, which holds none of alice's sessions.
    let applied = a.handle.send(&alice_user, &json!({"hello": "from a"})).expect("sent");
    assert_eq!((applied.node.as_str(), applied.matched, applied.is_forwarded), ("a", 0, true));
    assert_eq!(recv_json(&mut alice).await, json!({"type": "push", "payload": {"hello": "from a"}}));

    a.handle.subscribe(&alice_user, "room:7").expect("subscribed");
    assert_eq!(recv_json(&mut alice).await, json!({"type": "subscribed", "channel": "room:7", "by": "server"}));
    assert_eq!(b.handle.publish("room:7", &json!({"n": 1})).expect("published"), 1);
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "message", "channel": "room:7"}));
    a.handle.unsubscribe(&alice_user, "room:7").expect("unsubscribed");
    assert_eq!(recv_json(&mut alice).await, json!({"type": "unsubscribed", "channel": "room:7", "reason": "server"}));

    // One session of node b, addressed from node a; node a's own session ids are not touched.
    let on_b = Target::Session { id: bob_id, node: Some("b".into()) };
    let applied = a.handle.send(&on_b, &json!({"only": "bob"})).expect("sent");
    assert_eq!((applied.matched, applied.is_forwarded), (0, true));
    assert_eq!(recv_json(&mut bob).await, json!({"type": "push", "payload": {"only": "bob"}}));
    let reply = request(&mut alice, &json!({"action": "ping", "id": 2})).await;
    assert_frame(&reply, &json!({"type": "pong", "id": 2}));

    a.handle.disconnect_with(&alice_user, 4300, "bye from a").expect("closing");
    assert_eq!(close_frame(&mut alice).await, (4300, "bye from a".to_string()));
    a.handle.disconnect_with(&on_b, 4301, "").expect("closing");
    assert_eq!(close_frame(&mut bob).await, (4301, "disconnected".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_session_operations_reach_other_nodes() {
    operations_reach_other_nodes(Kind::Redis, "redis_session_operations_reach_other_nodes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_session_operations_reach_other_nodes() {
    operations_reach_other_nodes(Kind::Nats, "nats_session_operations_reach_other_nodes").await;
}
