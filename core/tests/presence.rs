//! Presence over real loopback sockets (docs/PROTOCOL.md, "Presence"): join and leave frames
//! coalesced per user, session counts, only the listed claims, default deny, `presence_stats`,
//! paging, the host API, and across two nodes through the machine's Redis, a killed node's
//! members expiring from the survivor's view.

#![allow(missing_docs)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};
use support::brokers::{Kind, REDIS, broker_or_skip, eventually, node, prefix, wait_ready};
use support::{Connect, Setup, TestServer, Ws, assert_frame, recv_json, request, send_json};
use wsguard::ErrorCode;
use wsguard::auth::TokenRequest;

/// `chat:*` tracks presence for members (role `member`), reveals `name`, announces joins and
/// leaves; `quiet:*` tracks presence but lets no client read it.
const RULES: &str = r#"
[[channels]]
pattern = "chat:{room}"
subscribe = {}
presence = true
presence_access = { roles = ["member"] }
presence_claims = ["name"]
join_leave = true
[[channels]]
pattern = "quiet:{room}"
subscribe = {}
presence = true
"#;

fn token(server: &TestServer, subject: &str, roles: &[&str]) -> String {
    let mut extra_claims = Map::new();
    extra_claims.insert("name".into(), json!(subject.to_uppercase()));
    extra_claims.insert("email".into(), json!(format!("{subject}@example.com")));
    server.mint(&TokenRequest {
        subject: subject.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        extra_claims,
        ttl_secs: 300,
        ..TokenRequest::default()
    })
}

async fn member(server: &TestServer, subject: &str) -> Ws {
    server.ws(&Connect::new().bearer(&token(server, subject, &["member"]))).await
}

/// Subscribes and returns the frames that arrived with the ack (before a ping's pong: a frame
/// queued for the session before the ping was sent is written before the pong).
async fn subscribe(ws: &mut Ws, channel: &str) -> Vec<Value> {
    let reply = request(ws, &json!({"action": "subscribe", "id": 1, "channel": channel})).await;
    let mut frames = if reply["type"] == "ack" { Vec::new() } else { vec![reply] };
    frames.extend(until_pong(ws).await.into_iter().filter(|f| f["type"] != "ack"));
    frames
}

/// Every frame that reaches the session before the pong of a ping sent now.
async fn until_pong(ws: &mut Ws) -> Vec<Value> {
    send_json(ws, &json!({"action": "ping", "id": 999})).await;
    let mut frames = Vec::new();
    loop {
        let frame = recv_json(ws).await;
        if frame == json!({"type": "pong", "id": 999}) {
            return frames;
        }
        frames.push(frame);
    }
}

fn join(channel: &str, user: &str) -> Value {
    json!({"type": "join", "channel": channel, "user": user, "claims": {"name": user.to_uppercase()}})
}

fn leave(channel: &str, user: &str) -> Value {
    json!({"type": "leave", "channel": channel, "user": user})
}

async fn presence(ws: &mut Ws, channel: &str) -> Value {
    request(ws, &json!({"action": "presence", "id": 5, "channel": channel})).await
}

/// `(user, sessions)` of a `presence` reply.
fn counts(reply: &Value) -> Vec<(String, u64)> {
    assert_eq!(reply["type"], "presence", "{reply}");
    let members = reply["members"].as_array().unwrap_or_else(|| panic!("members in {reply}"));
    members
        .iter()
        .map(|m| (m["user"].as_str().expect("user").to_string(), m["sessions"].as_u64().expect("sessions")))
        .collect()
}

fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected.iter().map(|(u, n)| (u.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_of_one_user_join_once_and_leave_after_the_last() {
    let server = Setup::new().extra(RULES).start().await;
    let mut watcher = member(&server, "bob").await;
    // A subscriber sees its own join (it is the user's first session).
    assert_eq!(subscribe(&mut watcher, "chat:1").await, vec![join("chat:1", "bob")]);

    let mut first = member(&server, "alice").await;
    subscribe(&mut first, "chat:1").await;
    assert_eq!(until_pong(&mut watcher).await, vec![join("chat:1", "alice")]);
    let mut second = member(&server, "alice").await;
    assert_eq!(subscribe(&mut second, "chat:1").await, Vec::<Value>::new(), "no second join");
    assert_eq!(until_pong(&mut watcher).await, Vec::<Value>::new(), "no second join");

    let reply = presence(&mut watcher, "chat:1").await;
    assert_eq!(counts(&reply), pairs(&[("alice", 2), ("bob", 1)]));
    // Only the listed claim: `email` is in the token but not in `presence_claims`.
    assert_eq!(reply["members"][0]["claims"], json!({"name": "ALICE"}));
    assert!(reply.get("next").is_none(), "{reply}");

    let ack = request(&mut first, &json!({"action": "unsubscribe", "id": 2, "channel": "chat:1"})).await;
    assert_frame(&ack, &json!({"type": "ack", "id": 2}));
    assert_eq!(until_pong(&mut watcher).await, Vec::<Value>::new(), "alice still has a session");
    assert_eq!(counts(&presence(&mut watcher, "chat:1").await), pairs(&[("alice", 1), ("bob", 1)]));

    // The last session goes by disconnecting: one leave.
    drop(second);
    assert_eq!(recv_json(&mut watcher).await, leave("chat:1", "alice"));
    assert_eq!(counts(&presence(&mut watcher, "chat:1").await), pairs(&[("bob", 1)]));
    let metrics = server.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_presence_announcements_total{kind="join"}"#), 2.0);
    assert_eq!(metrics.get(r#"wsguard_presence_announcements_total{kind="leave"}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_denied_by_default_and_bad_requests_get_their_codes() {
    // Every refusal here is a violation: allow enough of them to see them all.
    let server = Setup::new().limits("max_violations = 100").extra(RULES).start().await;
    let mut outsider = server.ws(&Connect::new().bearer(&token(&server, "eve", &[]))).await;
    let mut insider = member(&server, "bob").await;
    subscribe(&mut outsider, "chat:1").await;
    subscribe(&mut outsider, "quiet:1").await;
    // No join frames on a rule without `join_leave`.
    assert_eq!(subscribe(&mut insider, "quiet:1").await, Vec::<Value>::new());

    let forbidden = json!({"type": "error", "id": 5, "code": "forbidden"});
    // Subscribed, but without the `member` role.
    assert_frame(&presence(&mut outsider, "chat:1").await, &forbidden);
    let stats = json!({"action": "presence_stats", "id": 5, "channel": "chat:1"});
    assert_frame(&request(&mut outsider, &stats).await, &forbidden);
    // `presence = true` without `presence_access`: nobody; a rule without presence; no rule.
    for channel in ["quiet:1", "room:1", "nowhere"] {
        assert_frame(&presence(&mut insider, channel).await, &forbidden);
        let stats = json!({"action": "presence_stats", "id": 5, "channel": channel});
        assert_frame(&request(&mut insider, &stats).await, &forbidden);
    }
    for (frame, code) in [
        (json!({"action": "presence", "id": 6, "channel": "chat:1", "limit": 0}), "invalid_frame"),
        (json!({"action": "presence", "id": 6, "channel": "chat:1", "limit": 1001}), "invalid_frame"),
        (json!({"action": "presence", "id": 6, "channel": "chat:1", "limit": -1}), "invalid_frame"),
        (json!({"action": "presence", "id": 6, "channel": "chat:1", "after": "x".repeat(1025)}), "invalid_frame"),
        (json!({"action": "presence_stats", "id": 6, "channel": "chat:1", "limit": 5}), "invalid_frame"),
        (json!({"action": "presence", "id": 6, "channel": "chat*"}), "invalid_channel"),
    ] {
        assert_frame(&request(&mut insider, &frame).await, &json!({"type": "error", "id": 6, "code": code}));
    }
    // The insider still reads chat:1 (eve is there, the only member).
    assert_eq!(counts(&presence(&mut insider, "chat:1").await), pairs(&[("eve", 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stats_pages_and_the_host_api_agree() {
    let server = Setup::new().extra(RULES).start().await;
    let mut sessions = Vec::new();
    for user in ["carol", "alice", "bob", "alice"] {
        let mut ws = member(&server, user).await;
        subscribe(&mut ws, "chat:7").await;
        sessions.push(ws);
    }
    let reader = &mut sessions[0];
    // carol's session saw the three joins after hers.
    assert_eq!(until_pong(reader).await.len(), 2, "alice and bob joined after carol");
    let stats = request(reader, &json!({"action": "presence_stats", "id": 3, "channel": "chat:7"})).await;
    assert_eq!(stats, json!({"type": "presence_stats", "id": 3, "channel": "chat:7", "users": 3, "clients": 4}));

    let page = request(reader, &json!({"action": "presence", "id": 4, "channel": "chat:7", "limit": 2})).await;
    assert_eq!(counts(&page), pairs(&[("alice", 2), ("bob", 1)]));
    assert_eq!(page["next"], "bob");
    let rest = json!({"action": "presence", "id": 4, "channel": "chat:7", "limit": 2, "after": "bob"});
    let page = request(reader, &rest).await;
    assert_eq!(counts(&page), pairs(&[("carol", 1)]));
    assert!(page.get("next").is_none(), "{page}");

    let handle = &server.handle;
    let all = handle.presence("chat:7", 10, None).await.expect("host presence");
    let users: Vec<_> = all.members.iter().map(|m| (m.user.clone(), m.sessions)).collect();
    assert_eq!(users, pairs(&[("alice", 2), ("bob", 1), ("carol", 1)]));
    assert_eq!(all.next, None);
    let stats = handle.presence_stats("chat:7").await.expect("host stats");
    assert_eq!((stats.users, stats.clients), (3, 4));
    let code = |r: Result<(), wsguard::Error>| r.err().map(|e| e.code());
    assert_eq!(code(handle.presence_stats("room:1").await.map(drop)), Some(ErrorCode::PresenceNotTracked));
    assert_eq!(code(handle.presence("chat:7", 0, None).await.map(drop)), Some(ErrorCode::InvalidArgument));
    assert_eq!(code(handle.presence_stats("bad channel").await.map(drop)), Some(ErrorCode::InvalidChannel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_the_subscription_is_a_leave() {
    let server = Setup::new().extra(RULES).start().await;
    let mut watcher = member(&server, "bob").await;
    subscribe(&mut watcher, "chat:2").await;
    let mut alice = member(&server, "alice").await;
    subscribe(&mut alice, "chat:2").await;
    assert_eq!(until_pong(&mut watcher).await, vec![join("chat:2", "alice")]);

    // The reloaded rule lets only the token named BOB subscribe: alice's subscription is dropped.
    let mut config = server.config.clone();
    let rule = config.channels.iter_mut().find(|r| r.pattern == "chat:{room}").expect("chat rule");
    let subscribe_requirement = rule.subscribe.as_mut().expect("subscribe");
    subscribe_requirement.claims.insert("name".into(), "BOB".into());
    server.handle.reload(config).expect("reload");
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "unsubscribed", "channel": "chat:2"}));
    assert_eq!(recv_json(&mut watcher).await, leave("chat:2", "alice"));
}

// --- two nodes through Redis ----------------------------------------------------------------

/// A node on its own runtime and thread, killed without any graceful step: the runtime is
/// dropped with every task, like a crashed process, so its presence leases are never released.
struct Doomed {
    addr: SocketAddr,
    tokens: Vec<String>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Doomed {
    fn start(setup: Setup, subjects: &'static [&'static str]) -> Doomed {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let server = setup.start().await;
                wait_ready(&server).await;
                let tokens = subjects.iter().map(|s| token(&server, s, &["member"])).collect();
                let _ = ready_tx.send((server.addr, tokens));
                let _ = kill_rx.await;
                std::mem::forget(server);
            });
            runtime.shutdown_background();
        });
        let (addr, tokens) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("doomed node started");
        Doomed { addr, tokens, kill: Some(kill), thread: Some(thread) }
    }

    async fn session(&self, index: usize) -> Ws {
        let stream = tokio::net::TcpStream::connect(self.addr).await.expect("connect to the doomed node");
        let url = format!("ws://{}{}", self.addr, support::PATH);
        let (ws, _) =
            support::handshake(stream, &url, &Connect::new().bearer(&self.tokens[index])).await.expect("a session");
        ws
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
async fn a_killed_nodes_members_expire_and_leave_across_the_cluster() {
    let test = "presence_kill";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    // A short lease so the test is quick; the bound it checks is the documented one (the lease
    // plus a third of it), awaited generously.
    let setup = |id| node(Kind::Redis, &Kind::Redis.shared_url(), &p, id, "lease_ttl_secs = 0.6\n").extra(RULES);
    let a = setup("a").start().await;
    let mut b = Doomed::start(setup("b"), &["alice", "carol"]);
    wait_ready(&a).await;

    let mut watcher = member(&a, "bob").await;
    subscribe(&mut watcher, "chat:9").await;
    let mut alice_on_b = b.session(0).await;
    subscribe(&mut alice_on_b, "chat:9").await;
    // B's join reaches A's subscriber through the broker.
    assert_eq!(recv_json(&mut watcher).await, join("chat:9", "alice"));
    let mut carol_on_b = b.session(1).await;
    subscribe(&mut carol_on_b, "chat:9").await;
    assert_eq!(recv_json(&mut watcher).await, join("chat:9", "carol"));
    // carol's second session, on A: coalesced cluster-wide, no second join.
    let mut carol_on_a = member(&a, "carol").await;
    assert_eq!(subscribe(&mut carol_on_a, "chat:9").await, Vec::<Value>::new());
    assert_eq!(counts(&presence(&mut watcher, "chat:9").await), pairs(&[("alice", 1), ("bob", 1), ("carol", 2)]));

    b.kill();

    // alice was only on B: her lease expires and A's sweep announces her leave; carol keeps her
    // session on A.
    assert_eq!(recv_json(&mut watcher).await, leave("chat:9", "alice"));
    eventually("B's sessions to expire from A's view", async || {
        counts(&presence(&mut watcher, "chat:9").await) == pairs(&[("bob", 1), ("carol", 1)])
    })
    .await;
    let stats = request(&mut watcher, &json!({"action": "presence_stats", "id": 8, "channel": "chat:9"})).await;
    assert_frame(&stats, &json!({"users": 2, "clients": 2}));
    drop(carol_on_a);
    assert_eq!(recv_json(&mut watcher).await, leave("chat:9", "carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_presence_fails_closed_and_subscriptions_still_work() {
    // A Redis URL nothing listens on (port 1): the cluster store is unreachable from the start.
    let setup = Setup::new().extra(RULES).extra(
        "[cluster]\nbroker = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nquota_redis_url = \"redis://127.0.0.1:1\"\n\
         state_failure = \"open\"\nbroker_timeout_secs = 0.5\n",
    );
    let server = setup.start().await;
    let mut ws = member(&server, "bob").await;
    assert_eq!(subscribe(&mut ws, "chat:3").await, Vec::<Value>::new(), "subscribed, no join announced");
    assert_frame(
        &presence(&mut ws, "chat:3").await,
        &json!({"type": "error", "id": 5, "code": "presence_unavailable"}),
    );
    let stats = json!({"action": "presence_stats", "id": 5, "channel": "chat:3"});
    assert_frame(&request(&mut ws, &stats).await, &json!({"type": "error", "id": 5, "code": "presence_unavailable"}));
    let err = server.handle.presence_stats("chat:3").await.expect_err("unavailable");
    assert_eq!(err.code(), ErrorCode::PresenceUnavailable);
}

#[test]
fn nats_without_a_redis_is_refused_for_presence() {
    let config = format!(
        "[auth]\nhmac_secret_env = \"X\"\nissuer = \"i\"\naudience = \"a\"\n{RULES}\n[cluster]\nbroker = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n"
    );
    let err = wsguard::Config::from_toml_str(&config).and_then(|c| c.validate()).expect_err("refused");
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["channels[0].presence", "channels[1].presence"], "{err}");
}

#[test]
fn presence_keys_need_presence() {
    let config = "[auth]\nhmac_secret_env = \"X\"\nissuer = \"i\"\naudience = \"a\"\n[[channels]]\npattern = \"x\"\nsubscribe = {}\n\
                  presence_access = {}\npresence_claims = [\"name\", \"name\"]\njoin_leave = true\n";
    let err = wsguard::Config::from_toml_str(config).and_then(|c| c.validate()).expect_err("refused");
    let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "channels[0].presence_access",
            "channels[0].presence_claims",
            "channels[0].join_leave",
            "channels[0].presence_claims[1]"
        ],
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_through_redis_are_in_byte_order_and_stats_count_sessions() {
    let test = "presence_pages";
    if !broker_or_skip(test, "redis", REDIS) {
        return;
    }
    let p = prefix(test);
    let server = node(Kind::Redis, &Kind::Redis.shared_url(), &p, "a", "").extra(RULES).start().await;
    wait_ready(&server).await;
    let mut sessions = Vec::new();
    // Byte order puts "Zed" before "amy" (a locale's collation may not).
    for user in ["amy", "Zed", "cal", "amy"] {
        let mut ws = member(&server, user).await;
        subscribe(&mut ws, "chat:4").await;
        sessions.push(ws);
    }
    let page = server.handle.presence("chat:4", 2, None).await.expect("first page");
    let users: Vec<_> = page.members.iter().map(|m| (m.user.clone(), m.sessions)).collect();
    assert_eq!(users, pairs(&[("Zed", 1), ("amy", 2)]));
    assert_eq!(page.next.as_deref(), Some("amy"));
    assert_eq!(page.members[1].claims.get("name"), Some(&json!("AMY")));
    let page = server.handle.presence("chat:4", 2, Some("amy")).await.expect("second page");
    let users: Vec<_> = page.members.iter().map(|m| (m.user.clone(), m.sessions)).collect();
    assert_eq!(users, pairs(&[("cal", 1)]));
    assert_eq!(page.next, None);
    let stats = server.handle.presence_stats("chat:4").await.expect("stats");
    assert_eq!((stats.users, stats.clients), (3, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_subscribe_and_unsubscribe_join_and_leave() {
    let server = Setup::new().extra(RULES).start().await;
    let mut watcher = member(&server, "bob").await;
    subscribe(&mut watcher, "chat:3").await;
    let mut alice = member(&server, "alice").await;
    let handle = &server.handle;
    let alice_target = wsguard::host::target(None, Some("alice"), None).expect("a user");

    let applied = handle.subscribe(&alice_target, "chat:3").expect("server subscribe");
    assert_eq!((applied.matched, applied.changed), (1, 1));
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "subscribed", "channel": "chat:3", "by": "server"}));
    // The join runs in a task after the call: awaited, not assumed.
    assert_eq!(recv_json(&mut watcher).await, join("chat:3", "alice"));
    let members = handle.presence("chat:3", 10, None).await.expect("host presence");
    let users: Vec<_> = members.members.iter().map(|m| (m.user.clone(), m.sessions)).collect();
    assert_eq!(users, pairs(&[("alice", 1), ("bob", 1)]));
    // Alice, subscribed by then, sees her own join, as a client subscriber does.
    assert_eq!(recv_json(&mut alice).await, join("chat:3", "alice"));

    let applied = handle.unsubscribe(&alice_target, "chat:3").expect("server unsubscribe");
    assert_eq!((applied.matched, applied.changed), (1, 1));
    assert_eq!(recv_json(&mut watcher).await, leave("chat:3", "alice"));
    let stats = handle.presence_stats("chat:3").await.expect("host stats");
    assert_eq!((stats.users, stats.clients), (1, 1));

    // A server subscribe then the session's end: a member no longer, whichever ran first.
    handle.subscribe(&alice_target, "chat:3").expect("server subscribe");
    assert_eq!(recv_json(&mut watcher).await, join("chat:3", "alice"));
    drop(alice);
    assert_eq!(recv_json(&mut watcher).await, leave("chat:3", "alice"));
    assert_eq!(counts(&presence(&mut watcher, "chat:3").await), pairs(&[("bob", 1)]));
    let metrics = server.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_presence_announcements_total{kind="join"}"#), 3.0);
    assert_eq!(metrics.get(r#"wsguard_presence_announcements_total{kind="leave"}"#), 2.0);
}
