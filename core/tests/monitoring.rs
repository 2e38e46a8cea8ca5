//! The operators' view (docs/monitoring/): every metric the Grafana dashboard and the Prometheus
//! alerting rules use is exported by a running server, and the dashboard is well formed.
//!
//! Labelled families appear in `/metrics` only once they have a series, so the test first makes
//! the traffic that creates them: accepted and refused handshakes, publications, a reply error, a
//! rate-limit refusal, a disconnect, a ban, a publication through the machine's Redis and an
//! unsigned message planted on it (rejected), and a publish on a node whose broker is down
//! (a broker error). Names are compared with the *sample* names of the scrape, so a counter must
//! be used as `..._total` and a histogram as `..._bucket`, `..._sum` or `..._count`, exactly as
//! PromQL sees them. Without Redis the two families only it produces are not checked (`SKIPPED`
//! on stderr; a failure under `WSGUARD_REQUIRE_BROKERS=1`).
//! `promtool check rules` and `promtool test rules` run in tests/monitoring/run.sh.

#![allow(missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::brokers::{self, Kind, broker_or_skip, eventually, free_port, prefix, subscribe, wait_ready};
use support::{Connect, Setup, TempDir, TestServer, assert_frame, expect_close, recv_json, request};
use wsguard::limits::BanTarget;

/// Families that only a connected Redis broker produces here.
const NEEDS_REDIS: [&str; 2] = ["wsguard_broker_messages_total", "wsguard_broker_rejected_total"];

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `wsguard_...` metric name in a PromQL expression (or any text).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("wsguard_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // `Wsguard...` alert names start with a capital and never match; a name must stand alone.
        let is_word_start = rest[..at].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if is_word_start {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names of an exposition (`name{labels} value` or `name value`).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// The dashboard's queries (panel targets and template variables), after checking its shape: a
/// Prometheus data source template variable that every panel and query uses, unique panel ids,
/// and at least one non-empty query per panel.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "a `datasource` template variable of type prometheus"
    );
    let mut queries: Vec<String> =
        variables.iter().filter_map(|v| v["query"]["query"].as_str().map(str::to_string)).collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(panel["id"].as_u64().expect("numeric id")), "panel id of {title:?} is unique");
        assert!(panel["gridPos"]["w"].as_u64().is_some_and(|w| w > 0), "{title:?} has a size");
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title:?} uses the datasource variable");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title:?} has targets"));
        assert!(!targets.is_empty(), "{title:?} has at least one query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "a query of {title:?} uses the variable");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!metric_names(expr).is_empty(), "a query of {title:?} reads a wsguard metric: {expr:?}");
            queries.push(expr.to_string());
        }
    }
    assert!(graphs >= 15, "the dashboard has its panels ({graphs})");
    queries
}

#[test]
fn names_are_read_from_queries_with_their_suffixes() {
    let names = metric_names(
        "histogram_quantile(0.9, rate(wsguard_session_duration_seconds_bucket{a=\"b\"}[5m])) / \
         wsguard_sessions_active and on() WsguardAlert{x=\"my_wsguard_y\"}",
    );
    let expected: BTreeSet<String> =
        ["wsguard_session_duration_seconds_bucket", "wsguard_sessions_active"].map(String::from).into();
    assert_eq!(names, expected);
    let exposition = "# TYPE wsguard_d histogram\nwsguard_d_bucket{le=\"1\"} 0\nwsguard_d_count 0\nwsguard_c_total 1\n";
    let samples = sample_names(exposition);
    assert!(samples.contains("wsguard_d_bucket") && samples.contains("wsguard_c_total"));
    assert!(!samples.contains("wsguard_d") && !samples.contains("wsguard_c"), "bare family names are not samples");
}

/// One node with every labelled family the dashboard and the rules use (those of [`NEEDS_REDIS`]
/// only with `redis`).
async fn busy_node(redis: Option<(&str, &TempDir)>) -> TestServer {
    let rules = "[[channels]]\npattern = \"burst:{n}\"\npublish = {}\npublish_per_sec = 0.5\n";
    let server = match redis {
        Some((p, dir)) => {
            let key = dir.write("cluster.key", b"monitoring-tests-signing-key-0123456789abcdef");
            let lines = format!("signing_key_file = {:?}\n", key.to_string_lossy());
            brokers::node(Kind::Redis, &Kind::Redis.shared_url(), p, "a", &lines).extra(rules).start().await
        }
        None => Setup::new().extra(rules).start().await,
    };
    wait_ready(&server).await;
    // Handshakes: accepted and refused (no token).
    let mut reader = server.session("reader").await;
    assert!(server.try_ws(&Connect::new()).await.is_err(), "a handshake without a token is refused");
    // Publications, deliveries and (with Redis) broker traffic.
    subscribe(&mut reader, "room:1").await;
    let mut writer = server.session("writer").await;
    let publish = json!({"action": "publish", "id": 2, "channel": "room:1", "payload": {"n": 1}});
    assert_frame(&request(&mut writer, &publish).await, &json!({"type": "ack", "id": 2}));
    assert_eq!(recv_json(&mut reader).await["payload"]["n"], 1);
    // A reply error, and a channel rate-limit refusal.
    let forbidden = json!({"action": "subscribe", "id": 3, "channel": "secret"});
    assert_frame(&request(&mut writer, &forbidden).await, &json!({"type": "error", "code": "forbidden"}));
    for id in 4..6 {
        request(&mut writer, &json!({"action": "publish", "id": id, "channel": "burst:1", "payload": {}})).await;
    }
    // A ban, and a disconnect.
    assert!(server.handle.ban(BanTarget::User("mallory".into()), Duration::from_secs(60)));
    assert_eq!(server.handle.disconnect_user("writer"), 1);
    expect_close(&mut writer).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_scraped_from_a_running_server() {
    let dashboard: Value = serde_json::from_str(&repo_file("docs/monitoring/grafana-dashboard.json"))
        .expect("docs/monitoring/grafana-dashboard.json is JSON");
    let mut used: BTreeSet<String> = dashboard_queries(&dashboard).iter().flat_map(|q| metric_names(q)).collect();
    let alerts = repo_file("docs/monitoring/alerts.yml");
    let rule_count = alerts.matches("- alert: ").count();
    assert!(rule_count >= 4, "alerting rules: {rule_count}");
    for field in ["expr: ", "for: ", "summary: ", "description: "] {
        assert_eq!(alerts.matches(field).count(), rule_count, "every alert has `{}`", field.trim());
    }
    let in_alerts = metric_names(&alerts);
    for needed in ["wsguard_handshakes_total", "wsguard_broker_connected", "wsguard_memory_budget_bytes"] {
        assert!(in_alerts.contains(needed), "an alert reads {needed}");
    }
    assert!(in_alerts.contains("wsguard_events_dropped_total"), "an alert reads the event drops");
    used.extend(in_alerts);

    let test = "monitoring_metrics";
    let has_redis = broker_or_skip(test, "redis", brokers::REDIS);
    let dir = TempDir::new();
    let p = prefix(test);
    let node = busy_node(has_redis.then_some((p.as_str(), &dir))).await;
    if has_redis {
        // An unsigned message planted on the control subject: rejected and counted.
        let client = redis::Client::open(Kind::Redis.shared_url()).expect("redis client");
        let mut connection = client.get_multiplexed_async_connection().await.expect("redis connection");
        redis::cmd("PUBLISH")
            .arg(Kind::Redis.control_subject(&p))
            .arg("{\"kind\":\"hello\"}")
            .query_async::<i64>(&mut connection)
            .await
            .expect("PUBLISH");
        let rejected = "wsguard_broker_rejected_total{kind=\"control\",reason=\"unsigned\"}";
        eventually("the planted message to be rejected", async || node.scrape().await.get(rejected) > 0.0).await;
        let published = "wsguard_broker_messages_total{direction=\"published\",kind=\"publication\"}";
        eventually("the publication to be confirmed", async || node.scrape().await.get(published) > 0.0).await;
    } else {
        used.retain(|name| !NEEDS_REDIS.contains(&name.as_str()));
    }
    // A node whose broker is down counts broker errors.
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let lines = "broker_timeout_secs = 0.5\nstate_failure = \"open\"\n";
    let down = brokers::node(Kind::Redis, &dead, &prefix("monitoring_down"), "down", lines).start().await;
    let _ = down.handle.publish("room:1", &json!({"n": 1}));

    let mut scraped = sample_names(&node.admin("GET", "/metrics").await.body);
    scraped.extend(sample_names(&down.admin("GET", "/metrics").await.body));
    let missing: Vec<&String> = used.iter().filter(|name| !scraped.contains(*name)).collect();
    assert!(missing.is_empty(), "used by docs/monitoring but not in /metrics: {missing:?}\nscraped: {scraped:?}");
    assert!(used.len() >= 20, "the dashboard and alerts read {} metrics", used.len());
}
