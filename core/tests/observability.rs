//! Observability and abuse response over real loopback sockets with real tokens: `/metrics`
//! scraped over HTTP after every handshake outcome and message kind, the admin endpoints,
//! events reaching the host's `on_event` hook, `/readyz` during a drain, automatic and operator
//! bans, memory admission, and hot reload (certificate swap, refused reloads, new channel rules).

#![allow(missing_docs)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;
use support::{
    Connect, Metrics, OTHER_SECRET, RawRequest, Setup, TestServer, WAIT, assert_frame, claims, expect_close, ping,
    recv_json, request, sign,
};
use tokio_tungstenite::tungstenite::Error as WsError;
use wsguard::limits::BanTarget;
use wsguard::{ErrorCode, Event, Hooks};

// ---- helpers ------------------------------------------------------------------------------------

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The handshakes counter for a refusal code.
fn rejected(code: &str) -> String {
    format!("wsguard_handshakes_total{{result=\"rejected\",code=\"{code}\"}}")
}

const ACCEPTED: &str = "wsguard_handshakes_total{result=\"accepted\",code=\"ok\"}";
const SESSIONS_ACTIVE: &str = "wsguard_sessions_active";

/// A token signed with a secret the server does not know (401 `token_bad_signature`).
fn forged_token(subject: &str) -> String {
    sign(Algorithm::HS256, OTHER_SECRET, &claims(subject))
}

/// Scrapes `/metrics` until `series` has `value` (host-side counters trail the client by a
/// moment: a session is counted closed after its close handshake, a TLS failure after the
/// client gave up). Bounded by [`WAIT`].
async fn metric_reaches(server: &TestServer, series: &str, value: f64) -> Metrics {
    let polled = tokio::time::timeout(WAIT, async {
        loop {
            let metrics = server.scrape().await;
            if metrics.get(series) == value {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match polled {
        Ok(metrics) => metrics,
        Err(_) => panic!("{series} never reached {value}; last scrape: {:?}", server.scrape().await),
    }
}

/// A host that records every event it is handed.
#[derive(Default)]
struct EventLog(Mutex<Vec<Event>>);

impl Hooks for EventLog {
    fn on_event(&self, event: &Event) -> wsguard::hooks::HookFuture<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(event.clone());
        Box::pin(std::future::ready(()))
    }
}

impl EventLog {
    fn snapshot(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits (bounded) until an event matching `probe` has arrived and returns it.
    async fn wait_for(&self, what: &str, probe: impl Fn(&Event) -> bool) -> Event {
        let polled = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(event) = self.snapshot().into_iter().find(|e| probe(e)) {
                    return event;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        match polled {
            Ok(event) => event,
            Err(_) => panic!("no {what} event arrived; events so far: {:#?}", self.snapshot()),
        }
    }
}

/// A server recording its events, and the log.
async fn start_with_events(setup: Setup) -> (TestServer, Arc<EventLog>) {
    let events = Arc::new(EventLog::default());
    let server = setup.hooks(Arc::clone(&events) as Arc<dyn Hooks>).start().await;
    (server, events)
}

/// Sends a frame the codec refuses and asserts the `invalid_frame` reply (the session stays open).
async fn send_invalid_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, id: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let reply = request(ws, &json!({"action": "admin", "id": id})).await;
    assert_frame(&reply, &json!({"type": "error", "id": id, "code": "invalid_frame"}));
}

/// Asserts a 403 `banned` refusal with a `Retry-After` of at least one second.
fn assert_banned(response: &support::HttpResponse) {
    response.assert_refused(403, ErrorCode::Banned.name());
    let secs: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After missing: {response:?}"))
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(secs >= 1, "{response:?}");
}

// ---- metrics and admin endpoints ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_handshake_outcome_message_and_disconnect() {
    // A burst of three frames, then the connection's message rate refuses the fourth.
    let server = Setup::new().limits("messages_per_sec = 0.01").limits("message_burst = 3").start().await;
    let before = server.scrape().await;
    assert_eq!(before.get(SESSIONS_ACTIVE), 0.0);
    assert!(before.has(SESSIONS_ACTIVE), "the gauge is exported from the start: {before:?}");

    // Four refusals, one per reason.
    let token = server.token("alice");
    server
        .exchange(&RawRequest::upgrade("/ws").header("Origin", support::ORIGIN))
        .await
        .assert_refused(401, "token_missing");
    server
        .exchange(&RawRequest::authorized(&token).set("Origin", "https://evil.example"))
        .await
        .assert_refused(403, "origin_not_allowed");
    server
        .exchange(
            &RawRequest::upgrade("/nope")
                .header("Origin", support::ORIGIN)
                .header("Authorization", &format!("Bearer {token}")),
        )
        .await
        .assert_refused(404, "not_found");
    server.exchange(&RawRequest::authorized(&forged_token("alice"))).await.assert_refused(401, "token_bad_signature");

    let metrics = server.scrape().await;
    for code in ["token_missing", "origin_not_allowed", "not_found", "token_bad_signature"] {
        assert_eq!(metrics.get(&rejected(code)), 1.0, "{code}: {metrics:?}");
    }
    assert_eq!(metrics.get(ACCEPTED), 0.0, "{metrics:?}");

    // One session: a ping, an invalid frame, a second ping, then a rate-limited frame.
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    send_invalid_frame(&mut ws, 2).await;
    ping(&mut ws, 3).await;
    let reply = request(&mut ws, &json!({"action": "ping", "id": 4})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 4, "code": "rate_limited"}));

    let metrics = server.scrape().await;
    assert_eq!(metrics.get(ACCEPTED), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_sessions_total"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get(SESSIONS_ACTIVE), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_messages_in_total{action=\"ping\"}"), 2.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_messages_in_total{action=\"invalid\"}"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_messages_in_total{action=\"rate_limited\"}"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_messages_rejected_total{code=\"invalid_frame\"}"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_messages_rejected_total{code=\"rate_limited\"}"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_rate_limited_total{scope=\"connection_messages\"}"), 1.0, "{metrics:?}");
    // Two pongs and two error replies.
    assert_eq!(metrics.get("wsguard_messages_out_total{kind=\"reply\"}"), 4.0, "{metrics:?}");

    // The operator closes the session: 4001 `disconnected`.
    assert_eq!(server.handle.disconnect_user("alice"), 1);
    assert_eq!(expect_close(&mut ws).await, 4001);
    let metrics = metric_reaches(&server, SESSIONS_ACTIVE, 0.0).await;
    assert_eq!(metrics.get("wsguard_disconnects_total{code=\"4001\",reason=\"disconnected\"}"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_session_duration_seconds_count"), 1.0, "{metrics:?}");

    // The host's snapshot agrees with the exposition.
    let stats = server.stats().await;
    assert_eq!(stats.handshakes_rejected, 4);
    assert_eq!((stats.sessions_active, stats.sessions_total), (0, 1));
    assert_eq!(stats.messages_in, 4);
    assert_eq!(stats.messages_rejected, 2);
    assert_eq!(stats.messages_out, 4);
    assert_eq!(server.handle.metrics_text().lines().filter(|l| l.starts_with("wsguard_handshakes_total")).count(), 5);
}

#[tokio::test]
async fn admin_endpoints_answer_health_and_refuse_other_paths_and_methods() {
    let server = Setup::new().start().await;
    assert_ne!(server.metrics_addr(), server.addr, "the admin listener is separate from the WebSocket port");

    let metrics = server.admin("GET", "/metrics").await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{metrics:?}"
    );
    assert!(metrics.body.contains("# TYPE wsguard_sessions_active gauge"), "{}", metrics.body);
    assert!(metrics.body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF: {}", metrics.body);

    let health = server.admin("GET", "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "{health:?}");
    let ready = server.admin("GET", "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"), "{ready:?}");
    // A query string does not change the route.
    assert_eq!(server.admin("GET", "/healthz?verbose=1").await.status, 200);

    assert_eq!(server.admin("GET", "/nope").await.status, 404);
    assert_eq!(server.admin("GET", "/ws").await.status, 404, "the admin port does not serve WebSockets");
    assert_eq!(server.admin("POST", "/metrics").await.status, 405);
    assert_eq!(server.admin("DELETE", "/healthz").await.status, 405);

    // Admin requests are not handshakes.
    assert_eq!(server.stats().await.handshakes_rejected, 0);
}

// ---- events -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_host_hook() {
    let (server, events) = start_with_events(Setup::new()).await;

    server
        .exchange(&RawRequest::upgrade("/ws").header("Origin", support::ORIGIN))
        .await
        .assert_refused(401, "token_missing");
    let event = events.wait_for("handshake_rejected", |e| matches!(e, Event::HandshakeRejected { .. })).await;
    let Event::HandshakeRejected { client_ip, status, code, origin, .. } = event else { unreachable!() };
    assert_eq!((client_ip, status, code), (LOCALHOST, 401, "token_missing"));
    assert_eq!(origin.as_deref(), Some(support::ORIGIN));

    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    let event = events.wait_for("session_opened", |e| matches!(e, Event::SessionOpened { .. })).await;
    let Event::SessionOpened { session_id, user, client_ip } = event else { unreachable!() };
    assert_eq!((user.as_str(), client_ip), ("alice", LOCALHOST));

    send_invalid_frame(&mut ws, 2).await;
    let event = events.wait_for("message_rejected", |e| matches!(e, Event::MessageRejected { .. })).await;
    let Event::MessageRejected { session_id: rejected_in, user, code, .. } = event else { unreachable!() };
    assert_eq!((rejected_in, user.as_str(), code), (session_id, "alice", "invalid_frame"));

    assert_eq!(server.handle.disconnect_user("alice"), 1);
    assert_eq!(expect_close(&mut ws).await, 4001);
    let event = events.wait_for("session_closed", |e| matches!(e, Event::SessionClosed { .. })).await;
    let Event::SessionClosed { session_id: closed, user, close_code, reason, messages_in, messages_out, .. } = event
    else {
        unreachable!()
    };
    assert_eq!((closed, user.as_str(), close_code, reason), (session_id, "alice", 4001, "disconnected"));
    assert_eq!((messages_in, messages_out), (2, 2));

    // Events never carry the token.
    let token = server.token("alice");
    let rendered = format!("{:?}", events.snapshot());
    assert!(!rendered.contains(&token[..20]), "{rendered}");
    assert_eq!(server.stats().await.events_dropped, 0);
}

/// A host whose event handler takes its time: the core awaits each delivery, so its one bounded
/// queue fills and the events that do not fit are counted, whichever language the host is in.
struct SlowEvents(Mutex<usize>);

impl Hooks for SlowEvents {
    fn on_event(&self, _event: &Event) -> wsguard::hooks::HookFuture<()> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        // Longer than the whole test: the first delivery is still running when the stats are read.
        Box::pin(tokio::time::sleep(Duration::from_secs(30)))
    }
}

#[tokio::test]
async fn a_slow_event_handler_fills_the_one_queue_and_drops_are_counted() {
    let hooks = Arc::new(SlowEvents(Mutex::new(0)));
    let server = Setup::new()
        .extra("[hooks]\nevent_queue_capacity = 2\ntimeout_secs = 60")
        .hooks(Arc::clone(&hooks) as Arc<dyn Hooks>)
        .start()
        .await;
    // Each refused handshake is one event; ten arrive while the handler holds the first.
    for _ in 0..10 {
        let refused = server.try_ws(&support::Connect::new().bearer("not-a-token")).await;
        assert!(refused.is_err());
    }
    let dropped = server.stats().await.events_dropped;
    assert!(dropped >= 7, "only {dropped} events dropped");
    assert_eq!(*hooks.0.lock().unwrap_or_else(PoisonError::into_inner), 1, "the handler was not awaited");
}

// ---- readiness during the drain -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_draining_and_the_admin_listener_closes_after() {
    let server = Setup::new().server("shutdown_grace_secs = 2").start().await;
    let admin = server.metrics_addr();
    // A client that never reads again, so it never answers the server's close: the drain has to
    // wait for it (the session's close wait, bounded by the grace).
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    let ready = server.admin("GET", "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");

    server.handle.shutdown();
    let draining = server.admin("GET", "/readyz").await;
    assert_eq!((draining.status, draining.body.as_str()), (503, "draining\n"), "{draining:?}");
    // Liveness and metrics stay up during the drain.
    assert_eq!(server.admin("GET", "/healthz").await.status, 200);
    assert_eq!(server.admin("GET", "/metrics").await.status, 200);

    tokio::time::timeout(WAIT, server.handle.stopped()).await.expect("serve returns after the drain");
    let connect = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(admin)).await.expect("connect in time");
    assert!(connect.is_err(), "the admin listener is closed once serve has returned");
    drop(ws);
}

// ---- bans ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_ban_the_ip_until_lifted() {
    // A long ban: this test lifts it (expiry is the next test's subject).
    let (server, events) = start_with_events(Setup::new().extra("[abuse]\nmax_auth_failures = 3\nban_secs = 60")).await;
    for _ in 0..3 {
        server
            .exchange(&RawRequest::authorized(&forged_token("mallory")))
            .await
            .assert_refused(401, "token_bad_signature");
    }
    // The fourth handshake is refused before its token is even looked at.
    let banned = server.exchange(&RawRequest::authorized(&server.token("alice"))).await;
    assert_banned(&banned);
    let bans = server.handle.bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((&bans[0].target, bans[0].reason), (&BanTarget::Ip(LOCALHOST), "auth_failures"));
    assert!(bans[0].remaining_secs > 0.0 && bans[0].remaining_secs <= 60.0, "{bans:?}");

    let event = events.wait_for("ban_applied", |e| matches!(e, Event::BanApplied { .. })).await;
    let Event::BanApplied { target, reason, ban_secs } = event else { unreachable!() };
    assert_eq!((target, reason, ban_secs), (BanTarget::Ip(LOCALHOST), "auth_failures", 60.0));
    let metrics = server.scrape().await;
    assert_eq!(metrics.get("wsguard_bans_total{kind=\"ip\"}"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get("wsguard_bans_active"), 1.0, "{metrics:?}");
    assert_eq!(metrics.get(&rejected("banned")), 1.0, "{metrics:?}");

    assert!(server.handle.lift_ban(&BanTarget::Ip(LOCALHOST)));
    assert!(!server.handle.lift_ban(&BanTarget::Ip(LOCALHOST)), "nothing left to lift");
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    assert!(server.handle.bans().is_empty());
    let event = events.wait_for("ban_lifted", |e| matches!(e, Event::BanLifted { .. })).await;
    let Event::BanLifted { target, reason } = event else { unreachable!() };
    assert_eq!((target, reason), (BanTarget::Ip(LOCALHOST), "operator"));
    assert_eq!(server.scrape().await.get("wsguard_bans_active"), 0.0);
    assert_eq!(server.stats().await.handshakes_rejected, 4);
}

/// The one slow test: the upkeep tick that sweeps expired bans runs every 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_expires_by_itself() {
    let (server, events) =
        start_with_events(Setup::new().extra("[abuse]\nmax_auth_failures = 3\nban_secs = 0.5")).await;
    for _ in 0..3 {
        server
            .exchange(&RawRequest::authorized(&forged_token("mallory")))
            .await
            .assert_refused(401, "token_bad_signature");
    }
    assert_banned(&server.exchange(&RawRequest::authorized(&server.token("alice"))).await);

    // Handshakes are admitted again as soon as the ban runs out.
    let admitted = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match server.try_ws(&Connect::new().bearer(&server.token("alice"))).await {
                Ok((ws, _)) => return ws,
                Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
                Err(other) => panic!("unexpected handshake failure: {other}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut ws = admitted.expect("the ban ends after ban_secs");
    ping(&mut ws, 1).await;
    assert!(server.handle.bans().is_empty(), "{:?}", server.handle.bans());

    // The sweep (every 5 s) reports the expiry and updates the gauge.
    let lifted = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let expired =
                events.snapshot().into_iter().any(|e| matches!(e, Event::BanLifted { reason: "expired", .. }));
            if expired && server.scrape().await.get("wsguard_bans_active") == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(lifted.is_ok(), "no ban_lifted(expired) within one upkeep tick: {:#?}", events.snapshot());
}

#[tokio::test]
async fn exempt_addresses_are_never_banned() {
    let server =
        Setup::new().extra("[abuse]\nmax_auth_failures = 3\nban_secs = 60\nexempt = [\"127.0.0.0/8\"]").start().await;
    for _ in 0..5 {
        server
            .exchange(&RawRequest::authorized(&forged_token("mallory")))
            .await
            .assert_refused(401, "token_bad_signature");
    }
    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    assert!(server.handle.bans().is_empty());
    // Not even an operator can ban an exempt address.
    assert!(!server.handle.ban(BanTarget::Ip(LOCALHOST), Duration::from_secs(60)));
    assert!(server.handle.bans().is_empty());
    assert_eq!(server.scrape().await.get("wsguard_bans_total{kind=\"ip\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_ban_refuses_only_that_user() {
    let (server, events) = start_with_events(Setup::new()).await;
    // Sessions opened before the ban keep running (docs/OPERATIONS.md).
    let mut open = server.session("mallory").await;
    ping(&mut open, 1).await;

    let mallory = BanTarget::User("mallory".into());
    assert!(server.handle.ban(mallory.clone(), Duration::from_secs(60)));
    assert_banned(&server.exchange(&RawRequest::authorized(&server.token("mallory"))).await);
    let mut alice = server.session("alice").await;
    ping(&mut alice, 1).await;
    ping(&mut open, 2).await;

    let bans = server.handle.bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((&bans[0].target, bans[0].reason), (&mallory, "operator"));
    let event = events.wait_for("ban_applied", |e| matches!(e, Event::BanApplied { .. })).await;
    assert!(matches!(event, Event::BanApplied { reason: "operator", .. }), "{event:?}");
    assert_eq!(server.scrape().await.get("wsguard_bans_total{kind=\"user\"}"), 1.0);

    assert!(server.handle.lift_ban(&mallory));
    let mut again = server.session("mallory").await;
    ping(&mut again, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_violations_ban_the_user() {
    // The loopback address is exempt, so only the user is banned.
    let (server, events) =
        start_with_events(Setup::new().extra("[abuse]\nmax_violations = 3\nban_secs = 60\nexempt = [\"127.0.0.0/8\"]"))
            .await;
    let mut ws = server.session("mallory").await;
    for id in 1..=3 {
        send_invalid_frame(&mut ws, id).await;
    }
    // Under `limits.max_violations` (10) the session itself stays open.
    ping(&mut ws, 4).await;

    let refused = server.exchange(&RawRequest::authorized(&server.token("mallory"))).await;
    assert_banned(&refused);
    let mut alice = server.session("alice").await;
    ping(&mut alice, 1).await;

    let bans = server.handle.bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((&bans[0].target, bans[0].reason), (&BanTarget::User("mallory".into()), "violations"));
    let event = events.wait_for("ban_applied", |e| matches!(e, Event::BanApplied { .. })).await;
    assert!(matches!(event, Event::BanApplied { reason: "violations", .. }), "{event:?}");
}

#[tokio::test]
async fn message_violations_ban_the_ip_too() {
    let server = Setup::new().extra("[abuse]\nmax_violations = 3\nban_secs = 60").start().await;
    let mut ws = server.session("mallory").await;
    for id in 1..=3 {
        send_invalid_frame(&mut ws, id).await;
    }
    // Another user from the same address is refused as well.
    assert_banned(&server.exchange(&RawRequest::authorized(&server.token("alice"))).await);
    let mut targets: Vec<BanTarget> = server.handle.bans().into_iter().map(|b| b.target).collect();
    targets.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(targets, vec![BanTarget::Ip(LOCALHOST), BanTarget::User("mallory".into())]);
}

// ---- memory admission ---------------------------------------------------------------------------

#[tokio::test]
async fn a_memory_budget_below_one_session_refuses_with_503() {
    let server = Setup::new().limits("max_memory_bytes = 1").start().await;
    // The estimate counts open sessions and queued bytes; with nothing open it is 0, under any
    // budget, so the first session is admitted (docs/OPERATIONS.md: refused "once that estimate
    // reaches the budget").
    let mut first = server.session("alice").await;
    ping(&mut first, 1).await;
    for subject in ["alice", "bob"] {
        let refused = server.exchange(&RawRequest::authorized(&server.token(subject))).await;
        refused.assert_refused(503, ErrorCode::OverMemoryBudget.name());
    }
    let metrics = server.scrape().await;
    assert_eq!(metrics.get(&rejected("over_memory_budget")), 2.0, "{metrics:?}");
    assert_eq!(server.stats().await.handshakes_rejected, 2);
}

// ---- reload -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_while_open_sessions_keep_working() {
    let (server, events) = start_with_events(Setup::new().tls()).await;
    let cert_a = server.cert.clone().expect("the TLS setup's certificate");
    let (mut open, _) =
        server.try_wss_trusting(&cert_a, &Connect::new().bearer(&server.token("alice"))).await.expect("a session on A");
    ping(&mut open, 1).await;

    let (config, cert_b) = server.config_with_new_certificate();
    server.handle.reload(config).expect("a reload with a new certificate is applied");
    let event = events.wait_for("config_reloaded", |e| matches!(e, Event::ConfigReloaded { .. })).await;
    assert!(matches!(event, Event::ConfigReloaded { is_applied: true, .. }), "{event:?}");

    // New handshakes present B.
    let (mut fresh, _) =
        server.try_wss_trusting(&cert_b, &Connect::new().bearer(&server.token("bob"))).await.expect("a session on B");
    ping(&mut fresh, 1).await;
    let stale = server.try_wss_trusting(&cert_a, &Connect::new().bearer(&server.token("carol"))).await;
    match stale {
        Err(WsError::Io(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
        Err(other) => panic!("expected a TLS failure, got {other}"),
        Ok(_) => panic!("a client trusting only the old certificate connected after the reload"),
    }
    // The session opened before the reload is untouched.
    ping(&mut open, 2).await;
    metric_reaches(&server, &rejected("tls_handshake_failed"), 1.0).await;
}

#[tokio::test]
async fn reload_with_a_missing_key_file_is_refused_and_the_certificate_stays() {
    let server = Setup::new().tls().start().await;
    let cert_a = server.cert.clone().expect("the TLS setup's certificate");
    let (mut config, _) = server.config_with_new_certificate();
    config.tls.as_mut().expect("tls").key_file = server.missing_file("absent-key.pem");

    let refused = server.handle.reload(config).expect_err("a missing key file is refused");
    assert_eq!(refused.code(), ErrorCode::ConfigFile, "{refused}");
    assert!(refused.problems().iter().any(|p| p.path == "tls.key_file"), "{refused}");
    let (mut ws, _) =
        server.try_wss_trusting(&cert_a, &Connect::new().bearer(&server.token("alice"))).await.expect("still cert A");
    ping(&mut ws, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_with_every_problem_and_nothing_changes() {
    let (server, events) = start_with_events(Setup::new()).await;
    let mut open = server.session("alice").await;
    ping(&mut open, 1).await;

    // Two semantic problems, and a change that would be visible if anything were applied.
    let mut config = server.config.clone();
    config.auth.issuer = None;
    config.limits.messages_per_sec = 0.0;
    config.origins.allow = vec!["https://other.example".into()];
    let refused = server.handle.reload(config).expect_err("an invalid config is refused");
    assert_eq!(refused.code(), ErrorCode::ConfigInvalid, "{refused}");
    let paths: Vec<&str> = refused.problems().iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"auth.issuer") && paths.contains(&"limits.messages_per_sec"), "{refused}");

    let event = events.wait_for("config_reloaded", |e| matches!(e, Event::ConfigReloaded { .. })).await;
    let Event::ConfigReloaded { is_applied, problems } = event else { unreachable!() };
    assert!(!is_applied);
    assert_eq!(problems.len(), refused.problems().len(), "{problems:?}");

    // The old config stays: the old origin is still allowed, and the open session runs on.
    let mut fresh = server.session("bob").await;
    ping(&mut fresh, 1).await;
    ping(&mut open, 2).await;

    // A key file that cannot be read is caught before anything applies too.
    let mut config = server.config.clone();
    config.auth.hmac_secret_file = Some(server.missing_file("absent.secret"));
    let refused = server.handle.reload(config).expect_err("a missing secret file is refused");
    assert!(refused.problems().iter().any(|p| p.path.starts_with("auth")), "{refused}");
    let mut again = server.session("carol").await;
    ping(&mut again, 1).await;
}

#[tokio::test]
async fn reload_refuses_restart_only_changes() {
    let server = Setup::new().start().await;
    let mut config = server.config.clone();
    config.server.listen = "127.0.0.1:1".into();
    config.observability.metrics_listen = "127.0.0.1:2".into();
    let refused = server.handle.reload(config).expect_err("listen addresses cannot change on reload");
    let paths: Vec<&str> = refused.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["server.listen", "observability"], "{refused}");

    // Enabling `[abuse]` needs a restart as well.
    let mut config = server.config.clone();
    config.abuse = Some(wsguard::limits::AbuseConfig::default());
    let refused = server.handle.reload(config).expect_err("[abuse] cannot be switched on by a reload");
    assert!(refused.problems().iter().any(|p| p.path == "abuse"), "{refused}");

    let mut ws = server.session("alice").await;
    ping(&mut ws, 1).await;
    // The unchanged config reloads fine.
    server.handle.reload(server.config.clone()).expect("an identical config reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_rules_unsubscribes_what_they_forbid() {
    let news = "[[channels]]\npattern = \"news:{n}\"\nsubscribe = {}\npublish = {}";
    let server = Setup::new().extra(news).start().await;
    let mut ws = server.session("alice").await;
    for (id, channel) in [(1, "news:1"), (2, "room:1")] {
        let reply = request(&mut ws, &json!({"action": "subscribe", "id": id, "channel": channel})).await;
        assert_frame(&reply, &json!({"type": "ack", "id": id}));
    }

    let mut config = server.config.clone();
    config.channels.retain(|rule| rule.pattern != "news:{n}");
    server.handle.reload(config).expect("new channel rules are applied");
    assert_frame(
        &recv_json(&mut ws).await,
        &json!({"type": "unsubscribed", "channel": "news:1", "reason": "forbidden"}),
    );

    let reply = request(&mut ws, &json!({"action": "subscribe", "id": 3, "channel": "news:1"})).await;
    assert_frame(&reply, &json!({"type": "error", "id": 3, "code": "forbidden"}));
    // The subscription the new rules still allow is kept.
    assert_eq!(server.handle.publish("room:1", &json!({"n": 1})).expect("publish"), 1);
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "message", "channel": "room:1", "payload": {"n": 1}}));
    assert_eq!(server.handle.publish("news:1", &json!({"n": 2})).expect("publish"), 0);
}

// ---- core bugs found by this suite (ignored until fixed in core) --------------------------------

/// RFC 9110 §9.3.2: a response to HEAD carries no content. core/src/observe/admin.rs answers HEAD
/// exactly like GET, body included.
#[tokio::test]

async fn head_is_answered_without_a_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Setup::new().start().await;
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(server.metrics_addr()))
        .await
        .expect("connect in time")
        .expect("connect to the admin listener");
    stream.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: admin\r\n\r\n").await.expect("write the request");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("EOF in time").expect("read the response");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"), "nothing may follow the head of a HEAD response: {text:?}");
}

/// `Retry-After` must not send a client back before the ban ends; the rate-limit refusals round
/// up (limits/rate.rs `retry_after_secs`), bans round down (limits/abuse.rs `Bans::remaining`).
#[tokio::test]

async fn a_ban_retry_after_does_not_undershoot_the_ban() {
    let server = Setup::new().start().await;
    assert!(server.handle.ban(BanTarget::User("mallory".into()), Duration::from_millis(2900)));
    let refused = server.exchange(&RawRequest::authorized(&server.token("mallory"))).await;
    assert_banned(&refused);
    assert_eq!(refused.header("retry-after"), Some("3"), "{refused:?}");
}

/// The memory check counts open sessions only: handshakes that passed it but have not started
/// their session yet (here held by a slow `authenticate` hook) are not counted, so concurrent
/// handshakes overshoot the budget by up to `max_pending_handshakes` sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn concurrent_handshakes_cannot_overshoot_the_memory_budget() {
    struct SlowAuthenticate;
    impl Hooks for SlowAuthenticate {
        fn authenticate(
            &self,
            _info: wsguard::hooks::HandshakeInfo,
            _identity: Arc<wsguard::Identity>,
        ) -> wsguard::hooks::HookFuture<wsguard::hooks::AuthenticateAnswer> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                wsguard::hooks::AuthenticateAnswer::Allow
            })
        }
    }
    // Room for one session (the per-session estimate is 32 KiB), not two.
    let server =
        Arc::new(Setup::new().limits("max_memory_bytes = 40000").hooks(Arc::new(SlowAuthenticate)).start().await);
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.try_ws(&Connect::new().bearer(&server.token(&format!("user{i}")))).await })
        })
        .collect();
    let mut admitted = Vec::new();
    for attempt in attempts {
        if let Ok((ws, _)) = attempt.await.expect("the handshake task did not panic") {
            admitted.push(ws);
        }
    }
    assert!(admitted.len() <= 2, "{} sessions admitted under a budget for one", admitted.len());
}

/// docs/OPERATIONS.md lists `server.worker_threads` as not reloadable; live.rs
/// `restart_only_changes` does not check it, so a reload that changes it is accepted and ignored.
#[tokio::test]

async fn reload_refuses_a_worker_threads_change() {
    let server = Setup::new().start().await;
    let mut config = server.config.clone();
    config.server.worker_threads = 7;
    let refused = server.handle.reload(config).expect_err("worker_threads needs a restart");
    assert!(refused.problems().iter().any(|p| p.path == "server.worker_threads"), "{refused}");
}

/// docs/OPERATIONS.md: a refused reload returns every problem; `compile` (server/live.rs) stops
/// at the first failing stage, so file problems are not reported beside semantic ones.
#[tokio::test]

async fn a_refused_reload_reports_semantic_and_file_problems_together() {
    let server = Setup::new().start().await;
    let mut config = server.config.clone();
    config.auth.issuer = None;
    config.auth.hmac_secret_file = Some(server.missing_file("absent.secret"));
    let refused = server.handle.reload(config).expect_err("an invalid config is refused");
    let paths: Vec<&str> = refused.problems().iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"auth.issuer") && paths.len() >= 2, "{refused}");
}
