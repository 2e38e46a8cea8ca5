//! Channel history over real sockets: offsets on `message` frames, the subscribe ack's position,
//! exact recovery with `since` (also under concurrent publishing and after a slow-consumer cut),
//! `recovered: false` + `gap` when history was lost, the `history` action's pages and refusals,
//! the memory cap, TTL expiry and the host's `ServerHandle::history`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Setup, TestServer, Ws, assert_frame, eventually, ping, recv_json, request};
use wsguard::ErrorCode;
use wsguard::history::Since;

/// `feed:{n}` keeps history and lets anyone subscribe, publish and read it; `audit:{n}` keeps
/// history but only `auditor`s may read it; `quiet:{n}` keeps history and says nothing about who
/// reads it (default deny).
const RULES: &str = r#"
[[channels]]
pattern = "feed:{n}"
subscribe = {}
publish = {}
history = {}
history_size = 10000
history_ttl_secs = 300
[[channels]]
pattern = "audit:{n}"
subscribe = {}
history = { roles = ["auditor"] }
history_size = 10
[[channels]]
pattern = "quiet:{n}"
subscribe = {}
history_size = 10
"#;

fn setup() -> Setup {
    Setup::new().extra(RULES)
}

/// Subscribes and returns the ack; with `since`, from that offset of an earlier ack's epoch,
/// with that ack's `proof` (what a client keeps per channel).
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

fn publish(server: &TestServer, channel: &str, n: u64) {
    server.handle.publish(channel, &json!({"n": n})).expect("host publish");
}

#[tokio::test]
async fn offsets_are_on_history_channels_only_and_the_ack_gives_the_position() {
    let server = setup().start().await;
    let mut ws = server.session("alice").await;
    let ack = subscribe(&mut ws, "feed:1", None).await;
    assert_frame(&ack, &json!({"type": "ack", "id": 1, "offset": 0}));
    assert!(ack.get("recovered").is_none(), "no since, no recovered: {ack}");
    let epoch = epoch_of(&ack);
    publish(&server, "feed:1", 0);
    publish(&server, "feed:1", 1);
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "message", "payload": {"n": 0}, "offset": 1}));
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "message", "payload": {"n": 1}, "offset": 2}));
    let again = server.session("bob").await;
    let mut again = again;
    assert_frame(&subscribe(&mut again, "feed:1", None).await, &json!({"offset": 2, "epoch": epoch}));

    // Subscribing again changes nothing: the current position, no replay even with `since`.
    let again_ack = subscribe(&mut ws, "feed:1", Some((0, &ack))).await;
    assert_frame(&again_ack, &json!({"type": "ack", "id": 1, "offset": 2, "epoch": epoch}));
    assert!(again_ack.get("recovered").is_none(), "{again_ack}");
    ping(&mut ws, 3).await;

    // A channel without history: the frames are exactly as before.
    assert_eq!(subscribe(&mut ws, "room:1", None).await, json!({"type": "ack", "id": 1}));
    publish(&server, "room:1", 7);
    assert_eq!(recv_json(&mut ws).await, json!({"type": "message", "channel": "room:1", "payload": {"n": 7}}));
}

/// The issue's recovery test: a subscriber leaves, thousands of publications go on, it comes
/// back with `since` while publishing continues, and gets exactly the missed ones, then the
/// live ones, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_under_concurrent_publishing_is_exact() {
    // Phases of the publisher: up to `AWAY` while the subscriber is away, up to `RACING` from the
    // moment it sends its `subscribe` with `since` (racing the recovery), the rest once it has
    // the ack (certainly live).
    const AWAY: u64 = 3000;
    const RACING: u64 = 5000;
    const TOTAL: u64 = 6000;
    let server =
        setup().limits("outbound_queue_messages = 20000").limits("outbound_queue_bytes = 16777216").start().await;
    let mut ws = server.session("alice").await;
    let first = subscribe(&mut ws, "feed:1", None).await;
    let epoch = epoch_of(&first);

    let (go_tx, mut go) = tokio::sync::mpsc::unbounded_channel::<()>();
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let handle = server.handle.clone();
        let published = Arc::clone(&published);
        tokio::spawn(async move {
            for n in 0..TOTAL {
                if n == AWAY || n == RACING {
                    go.recv().await.expect("the next phase");
                }
                handle.publish("feed:1", &json!({"n": n})).expect("host publish");
                published.store(n + 1, Ordering::SeqCst);
                if n % 50 == 0 {
                    // Spread out, so that the racing phase overlaps the recovery.
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Some live messages, then the subscriber goes away.
    let mut last = 0;
    while last < 100 {
        let frame = recv_json(&mut ws).await;
        assert_eq!(offset_of(&frame), last + 1, "live messages arrive in order");
        last = offset_of(&frame);
    }
    drop(ws);
    eventually("thousands of publications while away", || published.load(Ordering::SeqCst) == AWAY).await;
    let mut ws = server.session("alice").await;
    go_tx.send(()).expect("racing phase");
    let ack = subscribe(&mut ws, "feed:1", Some((last, &first))).await;
    go_tx.send(()).expect("live phase");
    assert_frame(&ack, &json!({"type": "ack", "recovered": true, "epoch": epoch}));
    let at_join = offset_of(&ack);
    assert!((AWAY..=RACING).contains(&at_join), "joined between the phases: {ack}");
    for expected in last + 1..=TOTAL {
        let frame = recv_json(&mut ws).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(offset_of(&frame), expected, "recovered then live, in order, no duplicate");
        assert_eq!(frame["payload"]["n"], expected - 1);
    }
    publisher.await.expect("publisher");
    ping(&mut ws, 9).await;
    let metrics = server.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_history_recoveries_total{result="recovered"}"#), 1.0);
}

/// A recovery replays only what was published while this identity was subscribed: `since` needs
/// the `proof` of an earlier ack, for the same `sub`, channel and epoch, from no later than
/// `since.offset`. Without it the subscription is made from now, with a `gap`; nothing is
/// replayed, and the publications from before the subscription stay the `history` action's.
#[tokio::test]
async fn recovery_replays_only_from_a_proven_position() {
    let server = setup().start().await;
    for n in 0..5 {
        publish(&server, "feed:5", n);
    }
    let mut ws = server.session("alice").await;
    let first = subscribe(&mut ws, "feed:5", None).await;
    assert_frame(&first, &json!({"offset": 5}));
    let proof = first["proof"].as_str().expect("proof").to_string();
    assert!(proof.starts_with("5."), "the proof names where the subscription started: {proof}");
    let other = subscribe(&mut ws, "feed:6", None).await;
    for n in 5..8 {
        publish(&server, "feed:5", n);
    }
    for offset in 6..=8 {
        assert_eq!(offset_of(&recv_json(&mut ws).await), offset);
    }
    drop(ws);
    publish(&server, "feed:5", 8);
    publish(&server, "feed:5", 9);
    let epoch = epoch_of(&first);
    let unproven = |ws_ack: &Value| assert_frame(ws_ack, &json!({"type": "ack", "recovered": false, "offset": 10}));
    let gap = json!({"type": "gap", "channel": "feed:5", "reason": "position_unproven"});
    let attempt = |offset: u64, proof: Option<&str>| {
        let mut frame =
            json!({"action": "subscribe", "id": 1, "channel": "feed:5", "since": {"offset": offset, "epoch": epoch}});
        if let Some(proof) = proof {
            frame["proof"] = json!(proof);
        }
        frame
    };
    let tag = proof.split_once('.').expect("start.tag").1.to_string();
    let other_proof = other["proof"].as_str().expect("proof").to_string();
    let refused: [(&str, u64, Option<String>); 6] = [
        ("alice", 8, None),                                    // no proof
        ("bob", 8, Some(proof.clone())),                       // another user's proof
        ("alice", 2, Some(proof.clone())),                     // from before the subscription started
        ("alice", 0, Some(format!("0.{tag}"))),                // its start rewritten
        ("alice", 8, Some(other_proof)),                       // another channel's proof
        ("alice", 8, Some("5.AAAAAAAAAAAAAAAAAAAAAA".into())), // forged
    ];
    for (who, offset, proof) in refused {
        let mut ws = server.session(who).await;
        let ack = request(&mut ws, &attempt(offset, proof.as_deref())).await;
        unproven(&ack);
        assert_eq!(recv_json(&mut ws).await, gap, "{who} from {offset}: no replay");
        // Subscribed from now: the next publication is live, the ack's proof starts there.
        assert!(ack["proof"].as_str().expect("proof").starts_with("10."), "{ack}");
        ping(&mut ws, 2).await;
    }
    // Proven: exactly what was missed, then live.
    let mut ws = server.session("alice").await;
    let ack = request(&mut ws, &attempt(8, Some(&proof))).await;
    assert_frame(&ack, &json!({"type": "ack", "recovered": true, "offset": 10, "epoch": epoch}));
    assert!(ack["proof"].as_str().expect("proof").starts_with("8."), "from the recovered position: {ack}");
    assert_eq!(offset_of(&recv_json(&mut ws).await), 9);
    assert_eq!(offset_of(&recv_json(&mut ws).await), 10);
    publish(&server, "feed:5", 10);
    assert_eq!(offset_of(&recv_json(&mut ws).await), 11);
    // `proof` goes with `since` on `subscribe` only.
    let alone = json!({"action": "subscribe", "channel": "feed:7", "proof": proof});
    assert_frame(&request(&mut ws, &alone).await, &json!({"type": "error", "code": "invalid_frame"}));
    let paging =
        json!({"action": "history", "channel": "feed:5", "since": {"offset": 8, "epoch": epoch}, "proof": proof});
    assert_frame(&request(&mut ws, &paging).await, &json!({"type": "error", "code": "invalid_frame"}));
    let metrics = server.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_history_recoveries_total{result="gap"}"#), 6.0);
    assert_eq!(metrics.get(r#"wsguard_history_recoveries_total{result="recovered"}"#), 1.0);
}

#[tokio::test]
async fn a_lost_history_is_a_gap_never_a_wrong_replay() {
    // The store is lost with the process: a new server is a new epoch.
    let first = setup().start().await;
    let mut ws = first.session("alice").await;
    let old_ack = subscribe(&mut ws, "feed:1", None).await;
    let old_epoch = epoch_of(&old_ack);
    for n in 0..5 {
        publish(&first, "feed:1", n);
    }
    drop(ws);
    drop(first);
    let second = setup().start().await;
    publish(&second, "feed:1", 100);
    let mut ws = second.session("alice").await;
    let ack = subscribe(&mut ws, "feed:1", Some((5, &old_ack))).await;
    assert_frame(&ack, &json!({"type": "ack", "recovered": false, "offset": 1}));
    assert_ne!(epoch_of(&ack), old_epoch);
    assert_eq!(recv_json(&mut ws).await, json!({"type": "gap", "channel": "feed:1", "reason": "epoch_changed"}));
    // Subscribed all the same, and what follows is live, not a replay of the new epoch's history.
    publish(&second, "feed:1", 101);
    assert_frame(&recv_json(&mut ws).await, &json!({"type": "message", "payload": {"n": 101}, "offset": 2}));
    let metrics = second.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_history_recoveries_total{result="gap"}"#), 1.0);
}

#[tokio::test]
async fn expired_publications_cannot_be_recovered() {
    let rule = "[[channels]]\npattern = \"brief:{n}\"\nsubscribe = {}\nhistory = {}\nhistory_size = 10\nhistory_ttl_secs = 1\n";
    let server = Setup::new().extra(rule).start().await;
    let mut ws = server.session("alice").await;
    let first = subscribe(&mut ws, "brief:1", None).await;
    let epoch = epoch_of(&first);
    drop(ws);
    for n in 0..3 {
        publish(&server, "brief:1", n);
    }
    assert_eq!(server.handle.history("brief:1", None, 10, false).expect("history").publications.len(), 3);
    eventually("the publications expire", || {
        server.handle.history("brief:1", None, 10, false).expect("history").publications.is_empty()
    })
    .await;
    let mut ws = server.session("alice").await;
    let ack = subscribe(&mut ws, "brief:1", Some((0, &first))).await;
    assert_frame(&ack, &json!({"recovered": false, "offset": 3, "epoch": epoch}));
    assert_eq!(recv_json(&mut ws).await, json!({"type": "gap", "channel": "brief:1", "reason": "history_trimmed"}));
}

#[tokio::test]
async fn the_memory_cap_holds_and_the_oldest_go_first() {
    const CAP: u64 = 65536;
    let server = setup().limits(&format!("history_memory_bytes = {CAP}")).start().await;
    let filler = "x".repeat(900);
    for n in 0..400u64 {
        let channel = format!("feed:{}", n % 20);
        server.handle.publish(&channel, &json!({"n": n, "filler": filler})).expect("host publish");
    }
    // The stored frames, re-encoded exactly as the server encoded them.
    let mut frame_bytes = 0;
    let mut kept = Vec::new();
    for c in 0..20 {
        let channel = format!("feed:{c}");
        let page = server.handle.history(&channel, None, 1000, false).expect("history");
        for publication in page.publications {
            let frame = json!({"type": "message", "channel": channel, "payload": publication.payload, "offset": publication.offset});
            frame_bytes += serde_json::to_string(&frame).expect("JSON").len() as u64;
            kept.push(publication.payload["n"].as_u64().expect("n"));
        }
    }
    assert!(frame_bytes <= CAP, "{frame_bytes} bytes of frames kept under a {CAP}-byte cap");
    assert!(frame_bytes > CAP / 2, "the cap was used, not an empty store: {frame_bytes}");
    kept.sort_unstable();
    let oldest_kept = kept[0];
    assert_eq!(kept, (oldest_kept..400).collect::<Vec<_>>(), "exactly the newest are kept");
    let metrics = server.scrape().await;
    let counted = metrics.get("wsguard_history_bytes");
    assert!(counted <= CAP as f64 && counted >= frame_bytes as f64, "gauge {counted}, frames {frame_bytes}");
    assert_eq!(metrics.get("wsguard_history_messages"), kept.len() as f64);
}

#[tokio::test]
async fn the_history_action_pages_both_ways() {
    let server = setup().start().await;
    for n in 0..10 {
        publish(&server, "feed:2", n);
    }
    let mut ws = server.session("alice").await;
    let offsets = |reply: &Value| -> Vec<u64> {
        reply["publications"].as_array().expect("publications").iter().map(offset_of).collect()
    };
    let first = request(&mut ws, &json!({"action": "history", "id": 3, "channel": "feed:2", "limit": 3})).await;
    assert_frame(&first, &json!({"type": "history", "id": 3, "channel": "feed:2", "offset": 10}));
    assert_eq!(offsets(&first), [1, 2, 3]);
    assert_frame(&first["publications"][0], &json!({"type": "message", "channel": "feed:2", "payload": {"n": 0}}));
    let epoch = epoch_of(&first);
    let since = json!({"offset": 3, "epoch": epoch});
    let next = request(&mut ws, &json!({"action": "history", "channel": "feed:2", "limit": 3, "since": since})).await;
    assert_eq!(offsets(&next), [4, 5, 6]);
    let newest =
        request(&mut ws, &json!({"action": "history", "channel": "feed:2", "limit": 2, "newest_first": true})).await;
    assert_eq!(offsets(&newest), [10, 9]);
    let since = json!({"offset": 9, "epoch": epoch});
    let older = request(
        &mut ws,
        &json!({"action": "history", "channel": "feed:2", "limit": 2, "newest_first": true, "since": since}),
    )
    .await;
    assert_eq!(offsets(&older), [8, 7]);
    let all = request(&mut ws, &json!({"action": "history", "channel": "feed:2"})).await;
    assert_eq!(offsets(&all), (1..=10).collect::<Vec<_>>());

    // The host reads the same pages.
    let page =
        server.handle.history("feed:2", Some(&Since { offset: 8, epoch: epoch.clone() }), 5, false).expect("history");
    assert_eq!(page.position.offset, 10);
    assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [9, 10]);
    assert_eq!(page.publications[0].payload, json!({"n": 8}));
}

#[tokio::test]
async fn bad_history_input_gets_a_documented_error_and_changes_nothing() {
    // Many refusals in a row are violations: room for all of them before the session is closed.
    let server = setup().limits("max_violations = 100").start().await;
    for n in 0..3 {
        publish(&server, "feed:3", n);
    }
    let mut ws = server.session("alice").await;
    let epoch = server.handle.history("feed:3", None, 1, false).expect("history").position.epoch.to_string();
    let error = |code: ErrorCode| json!({"type": "error", "code": code.name()});

    // `since` ahead of the channel: refused, and not subscribed.
    let since = |channel: &str, offset: u64| json!({"action": "subscribe", "channel": channel, "since": {"offset": offset, "epoch": epoch}});
    let ahead = request(&mut ws, &since("feed:3", 4)).await;
    assert_frame(&ahead, &error(ErrorCode::HistoryOffsetAhead));
    let unsubscribe = request(&mut ws, &json!({"action": "unsubscribe", "channel": "feed:3"})).await;
    assert_frame(&unsubscribe, &error(ErrorCode::NotSubscribed));
    // `since` on a channel without history: refused, not subscribed.
    assert_frame(&request(&mut ws, &since("room:3", 0)).await, &error(ErrorCode::HistoryNotKept));
    let unsubscribe = request(&mut ws, &json!({"action": "unsubscribe", "channel": "room:3"})).await;
    assert_frame(&unsubscribe, &error(ErrorCode::NotSubscribed));
    // Negative offsets and limits, huge limits, unknown fields in `since`.
    let negative = json!({"action": "subscribe", "channel": "feed:3", "since": {"offset": -1, "epoch": epoch}});
    assert_frame(&request(&mut ws, &negative).await, &error(ErrorCode::InvalidFrame));
    let invented = json!({"action": "subscribe", "channel": "feed:3", "since": {"offset": 1, "epoch": epoch, "x": 1}});
    assert_frame(&request(&mut ws, &invented).await, &error(ErrorCode::InvalidFrame));
    for limit in [json!(-1), json!(0), json!(1001), json!(i64::MAX)] {
        let frame = json!({"action": "history", "channel": "feed:3", "limit": limit});
        assert_frame(&request(&mut ws, &frame).await, &error(ErrorCode::HistoryLimitInvalid));
    }
    let frame = json!({"action": "history", "channel": "feed:3", "limit": 1e30});
    assert_frame(&request(&mut ws, &frame).await, &error(ErrorCode::InvalidFrame));
    // Paging from a position that does not exist or belongs to a lost epoch.
    let frame = json!({"action": "history", "channel": "feed:3", "since": {"offset": 9, "epoch": epoch}});
    assert_frame(&request(&mut ws, &frame).await, &error(ErrorCode::HistoryOffsetAhead));
    let frame = json!({"action": "history", "channel": "feed:3", "since": {"offset": 1, "epoch": "gone"}});
    assert_frame(&request(&mut ws, &frame).await, &error(ErrorCode::HistoryEpochChanged));
    // `history` where none is kept, and without permission (default deny, and a missing role).
    let frame = json!({"action": "history", "channel": "room:3"});
    assert_frame(&request(&mut ws, &frame).await, &error(ErrorCode::HistoryNotKept));
    for channel in ["quiet:1", "audit:1"] {
        let frame = json!({"action": "history", "id": 5, "channel": channel});
        assert_frame(&request(&mut ws, &frame).await, &json!({"type": "error", "id": 5, "code": "forbidden"}));
    }
    // The host API refuses the same way.
    let code = |r: Result<wsguard::history::Page, wsguard::Error>| r.expect_err("refused").code();
    assert_eq!(code(server.handle.history("room:3", None, 10, false)), ErrorCode::HistoryNotKept);
    assert_eq!(code(server.handle.history("feed:3", None, 0, false)), ErrorCode::HistoryLimitInvalid);
    let gone = Since { offset: 1, epoch: "gone".into() };
    assert_eq!(code(server.handle.history("feed:3", Some(&gone), 10, false)), ErrorCode::HistoryEpochChanged);
    // Nothing was harmed: the session is open and the channel's history is intact.
    ping(&mut ws, 8).await;
    assert_eq!(server.handle.history("feed:3", None, 10, false).expect("history").publications.len(), 3);
}

#[tokio::test]
async fn an_auditor_may_read_what_others_may_not() {
    let server = setup().start().await;
    server.handle.publish("audit:1", &json!({"n": 1})).expect("publish");
    let request_for = |roles: &[&str]| wsguard::auth::TokenRequest {
        subject: "carol".into(),
        ttl_secs: 600,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    let token = server.mint(&request_for(&["auditor"]));
    let mut ws = server.ws(&support::Connect::new().bearer(&token)).await;
    let reply = request(&mut ws, &json!({"action": "history", "channel": "audit:1"})).await;
    assert_eq!(reply["publications"][0]["payload"], json!({"n": 1}));
}

/// Publishes `total` large publications on `channel` (its subscriber is not reading meanwhile).
async fn flood(server: &TestServer, channel: &str, total: u64) {
    let filler = "y".repeat(4000);
    for n in 0..total {
        server.handle.publish(channel, &json!({"n": n, "filler": filler})).expect("host publish");
        if n % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_cut_off_recovers_what_it_missed() {
    const TOTAL: u64 = 3000;
    let server = setup().limits("outbound_queue_messages = 16").limits("outbound_queue_bytes = 65536").start().await;
    let mut ws = server.session("alice").await;
    let first = subscribe(&mut ws, "feed:4", None).await;
    flood(&server, "feed:4", TOTAL).await;
    // What arrived before the cut, in order. The server closes with 4000, or the client's unread
    // bytes make the close a reset: either way the session is gone.
    let mut last = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut ws))
            .await
            .expect("frames in time");
        match next {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(offset_of(&frame), last + 1);
                last += 1;
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(4000));
                break;
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    let metrics = server.scrape().await;
    assert_eq!(metrics.get("wsguard_slow_consumer_disconnects_total"), 1.0, "cut as a slow consumer");
    assert!(last < TOTAL, "it missed some");
    let mut ws = server.session("alice").await;
    let ack = subscribe(&mut ws, "feed:4", Some((last, &first))).await;
    assert_frame(&ack, &json!({"recovered": true, "offset": TOTAL}));
    for expected in last + 1..=TOTAL {
        assert_eq!(offset_of(&recv_json(&mut ws).await), expected);
    }
    ping(&mut ws, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_dropped_from_by_drop_oldest_recovers_after_the_gap() {
    const TOTAL: u64 = 3000;
    let rule =
        "[[channels]]\npattern = \"lossy:{n}\"\nsubscribe = {}\nslow_consumer = \"drop_oldest\"\nhistory_size = 5000\n";
    let server = Setup::new()
        .extra(rule)
        .limits("outbound_queue_messages = 16")
        .limits("outbound_queue_bytes = 65536")
        .start()
        .await;
    let mut ws = server.session("alice").await;
    let first = subscribe(&mut ws, "lossy:1", None).await;
    flood(&server, "lossy:1", TOTAL).await;
    // Read everything: messages up to the first gap are contiguous; the newest always arrive.
    let mut contiguous = 0;
    let mut seen_gap = false;
    loop {
        let frame = recv_json(&mut ws).await;
        if frame["type"] == "gap" {
            seen_gap = true;
            continue;
        }
        let offset = offset_of(&frame);
        if !seen_gap {
            assert_eq!(offset, contiguous + 1);
            contiguous = offset;
        }
        if offset == TOTAL {
            break;
        }
    }
    assert!(seen_gap, "drop_oldest dropped some");
    let unsubscribed = request(&mut ws, &json!({"action": "unsubscribe", "id": 4, "channel": "lossy:1"})).await;
    assert_frame(&unsubscribed, &json!({"type": "ack", "id": 4}));
    let ack = subscribe(&mut ws, "lossy:1", Some((contiguous, &first))).await;
    assert_frame(&ack, &json!({"recovered": true, "offset": TOTAL}));
    for expected in contiguous + 1..=TOTAL {
        assert_eq!(offset_of(&recv_json(&mut ws).await), expected);
    }
    ping(&mut ws, 5).await;
}

#[test]
fn history_with_a_nats_cluster_is_refused_at_config_time() {
    let text = format!(
        "[auth]\nhmac_secret_env = \"X\"\n[cluster]\nbroker = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n{RULES}"
    );
    let error = wsguard::Config::from_toml_str(&text).expect_err("refused");
    let paths: Vec<_> = error.problems().iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"channels[0].history_size"), "{paths:?}");
    assert!(paths.contains(&"channels[2].history_size"), "{paths:?}");
    let redis = text.replace("nats", "redis").replace("4222", "6379");
    // With a Redis broker, history is kept in Redis: no problem about it (the text still lacks
    // other required keys).
    let problems = match wsguard::Config::from_toml_str(&redis) {
        Ok(_) => Vec::new(),
        Err(error) => error.problems().iter().map(|p| p.path.clone()).collect(),
    };
    assert!(!problems.iter().any(|p| p.contains("history")), "{problems:?}");
}

#[test]
fn history_keys_out_of_range_are_refused_with_their_paths() {
    let text = r#"
        [auth]
        hmac_secret_env = "X"
        issuer = "i"
        audience = "a"
        [limits]
        history_memory_bytes = 1000
        [[channels]]
        pattern = "a"
        subscribe = {}
        history_size = 200000
        history_ttl_secs = 0
        [[channels]]
        pattern = "b"
        subscribe = {}
        history = {}
    "#;
    let error = wsguard::Config::from_toml_str(text).expect_err("refused");
    let paths: Vec<_> = error.problems().iter().map(|p| p.path.as_str()).collect();
    for path in ["limits.history_memory_bytes", "channels[0].history_size", "channels[0].history_ttl_secs"] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    // Past the shape checks, a `history` requirement on a rule that keeps none.
    let text = text
        .replace("history_memory_bytes = 1000", "")
        .replace("history_size = 200000", "")
        .replace("history_ttl_secs = 0", "");
    let error = wsguard::Config::from_toml_str(&text).expect_err("refused");
    let paths: Vec<_> = error.problems().iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"channels[1].history"), "{paths:?}");
}
