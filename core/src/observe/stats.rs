//! Every metric the server exports, in one place. A registry per server (never a global recorder);
//! labels are bounded: stable code names, actions, scopes, hooks and configured rule ids — never a
//! raw channel, user or IP. `ServerHandle::stats()` reads the same figures as a snapshot.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `wsguard_sessions_active` | gauge | |
//! | `wsguard_sessions_total` | counter | |
//! | `wsguard_handshakes_total` | counter | `result` (accepted/rejected), `code` |
//! | `wsguard_proxy_headers_total` | counter | `result` (accepted/local/untrusted/missing/invalid/no_address/timeout) |
//! | `wsguard_messages_in_total` | counter | `action` |
//! | `wsguard_messages_out_total` | counter | `kind` (reply/delivery) |
//! | `wsguard_messages_rejected_total` | counter | `code` |
//! | `wsguard_rate_limited_total` | counter | `scope` |
//! | `wsguard_disconnects_total` | counter | `code`, `reason` |
//! | `wsguard_session_duration_seconds` | histogram | |
//! | `wsguard_outbound_dropped_total` | counter | |
//! | `wsguard_slow_consumer_disconnects_total` | counter | |
//! | `wsguard_close_lingers_total` | counter | `end` (eof/broken/time_limit/byte_limit) |
//! | `wsguard_publications_total` | counter | `rule` |
//! | `wsguard_policy_dry_run_denials_total` | counter | `rule` |
//! | `wsguard_hook_duration_seconds` | histogram | `hook` |
//! | `wsguard_hook_failures_total` | counter | `hook`, `failure` (timeout/panic) |
//! | `wsguard_proxy_requests_total` | counter | `endpoint` (connect/subscribe/publish/rpc), `result` (ok/overloaded/unreachable/timeout/http_status/too_large/malformed/invalid) |
//! | `wsguard_proxy_request_duration_seconds` | histogram | `endpoint` |
//! | `wsguard_bans_active` | gauge | |
//! | `wsguard_bans_total` | counter | `kind` (ip/user) |
//! | `wsguard_anomalies_total` | counter | `rule` |
//! | `wsguard_events_dropped_total` | counter | |
//! | `wsguard_outbound_queued_bytes` | gauge | |
//! | `wsguard_memory_estimate_bytes` | gauge | |
//! | `wsguard_memory_budget_bytes` | gauge | |
//! | `wsguard_broker_connected` | gauge | |
//! | `wsguard_broker_messages_total` | counter | `direction` (published/received), `kind` (publication/control) |
//! | `wsguard_broker_errors_total` | counter | `op` (connect/publish/subscribe/decode/quota/persist/state_load) |
//! | `wsguard_api_requests_total` | counter | `operation` (publish/broadcast/.../unknown), `result` (ok or the error code name) |
//! | `wsguard_broker_rejected_total` | counter | `kind` (publication/control/state), `reason` (unsigned/bad_signature/stale/replayed/malformed) |
//! | `wsguard_broker_reconnects_total` | counter | |
//! | `wsguard_broker_subscriptions` | gauge | |
//! | `wsguard_broker_lag_seconds` | histogram | |
//! | `wsguard_jwks_fetches_total` | counter | `issuer`, `result` (ok or the failure reason) |
//! | `wsguard_jwks_keys` | gauge | `issuer` |
//! | `wsguard_presence_announcements_total` | counter | `kind` (join/leave) |
//! | `wsguard_history_bytes` | gauge | |
//! | `wsguard_history_messages` | gauge | |
//! | `wsguard_history_recoveries_total` | counter | `result` (recovered/gap) |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    result: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BrokerMessageLabels {
    direction: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BrokerRejectedLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabel {
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DisconnectLabels {
    code: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksFetchLabels {
    issuer: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiRequestLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyRequestLabels {
    endpoint: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookFailureLabels {
    hook: &'static str,
    failure: &'static str,
}

/// Every `action` label value of `wsguard_messages_in_total`.
const ACTIONS: [&str; 11] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "ping",
    "rpc",
    "refresh",
    "history",
    "presence",
    "presence_stats",
    "invalid",
    "rate_limited",
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 4.0, 9))
}

/// The server's metrics (cheap to update: counters are atomics behind `Arc`s).
pub(crate) struct Stats {
    registry: Registry,
    sessions_active: Gauge,
    sessions_total: Counter,
    handshakes: Family<HandshakeLabels, Counter>,
    proxy_headers: Family<ResultLabel, Counter>,
    messages_in: Family<ActionLabel, Counter>,
    messages_out: Family<KindLabel, Counter>,
    messages_rejected: Family<CodeLabel, Counter>,
    rate_limited: Family<ScopeLabel, Counter>,
    disconnects: Family<DisconnectLabels, Counter>,
    session_duration: Histogram,
    outbound_dropped: Counter,
    slow_consumer_disconnects: Counter,
    close_lingers: Family<EndLabel, Counter>,
    publications: Family<RuleLabel, Counter>,
    dry_run_denials: Family<RuleLabel, Counter>,
    hook_duration: HistogramFamily<HookLabel>,
    hook_failures: Family<HookFailureLabels, Counter>,
    proxy_requests: Family<ProxyRequestLabels, Counter>,
    proxy_duration: HistogramFamily<EndpointLabel>,
    bans_active: Gauge,
    bans_total: Family<KindLabel, Counter>,
    anomalies: Family<RuleLabel, Counter>,
    events_dropped: Counter,
    queued_bytes: Gauge,
    /// Session estimates reserved by admitted handshakes (not exported by itself: part of
    /// `memory_estimate`, which is computed from it and `queued_bytes` at each scrape).
    memory_reserved_bytes: Gauge,
    memory_estimate: Gauge,
    memory_budget: Gauge,
    broker_connected: Gauge,
    broker_messages: Family<BrokerMessageLabels, Counter>,
    broker_errors: Family<OpLabel, Counter>,
    broker_reconnects: Counter,
    presence_announcements: Family<KindLabel, Counter>,
    broker_subscriptions: Gauge,
    broker_lag: Histogram,
    jwks_fetches: Family<JwksFetchLabels, Counter>,
    jwks_keys: Family<IssuerLabel, Gauge>,
    broker_rejected: Family<BrokerRejectedLabels, Counter>,
    api_requests: Family<ApiRequestLabels, Counter>,
    history_bytes: Gauge,
    history_messages: Gauge,
    history_recoveries: Family<ResultLabel, Counter>,
    /// `messages_out{kind="reply"}` and `{kind="delivery"}`, resolved once (hot path; and no
    /// family lock is ever held across two lookups).
    replies_out: Counter,
    deliveries_out: Counter,
    /// `messages_in{action}` for every action, resolved once (one lookup-free increment per
    /// client frame).
    messages_in_by_action: [(&'static str, Counter); ACTIONS.len()],
    /// `publications{rule}` by rule id, resolved on first use: counting a publication then
    /// neither allocates a label nor locks the family. Rule ids come from the configuration, so
    /// this stays as small as the family itself.
    publications_by_rule: RwLock<HashMap<Box<str>, Counter>>,
    // Totals kept beside the labelled families so snapshots need no family walk.
    handshakes_rejected: AtomicU64,
    messages_in_total: AtomicU64,
    messages_rejected_total: AtomicU64,
    publications_total: AtomicU64,
    dry_run_total: AtomicU64,
}

/// A snapshot of the server's counters (the same figures `/metrics` exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    /// Sessions open now.
    pub sessions_active: u64,
    /// Sessions opened since start.
    pub sessions_total: u64,
    /// Handshakes refused since start.
    pub handshakes_rejected: u64,
    /// Client frames received.
    pub messages_in: u64,
    /// Frames sent to clients (replies and deliveries).
    pub messages_out: u64,
    /// Client frames answered with an error.
    pub messages_rejected: u64,
    /// Publications accepted (from clients and from the server side).
    pub publications: u64,
    /// Messages dropped by `drop_oldest` / `coalesce` slow-consumer policies.
    pub outbound_dropped: u64,
    /// Sessions closed because their outbound queue was full.
    pub slow_consumer_disconnects: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Actions a dry-run rule (`enforce = false`) would have denied.
    pub dry_run_denials: u64,
    /// Bans in force.
    pub bans_active: u64,
    /// Bytes queued in all outboxes.
    pub outbound_queued_bytes: u64,
    /// Channels with at least one subscriber.
    pub channels: u64,
    /// False while a `[cluster]` broker is unreachable (`/readyz` answers 503); always true with
    /// `broker = "memory"`.
    pub broker_connected: bool,
}

impl Default for Stats {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wsguard");
        let stats = Stats {
            sessions_active: Gauge::default(),
            sessions_total: Counter::default(),
            handshakes: Family::default(),
            proxy_headers: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            messages_rejected: Family::default(),
            rate_limited: Family::default(),
            disconnects: Family::default(),
            session_duration: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            outbound_dropped: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            close_lingers: Family::default(),
            publications: Family::default(),
            dry_run_denials: Family::default(),
            hook_duration: HistogramFamily::new_with_constructor(latency_histogram),
            hook_failures: Family::default(),
            proxy_requests: Family::default(),
            proxy_duration: HistogramFamily::new_with_constructor(latency_histogram),
            bans_active: Gauge::default(),
            bans_total: Family::default(),
            anomalies: Family::default(),
            events_dropped: Counter::default(),
            queued_bytes: Gauge::default(),
            memory_reserved_bytes: Gauge::default(),
            memory_estimate: Gauge::default(),
            memory_budget: Gauge::default(),
            broker_connected: Gauge::default(),
            broker_messages: Family::default(),
            broker_errors: Family::default(),
            broker_reconnects: Counter::default(),
            presence_announcements: Family::default(),
            broker_subscriptions: Gauge::default(),
            broker_lag: latency_histogram(),
            jwks_fetches: Family::default(),
            jwks_keys: Family::default(),
            broker_rejected: Family::default(),
            api_requests: Family::default(),
            history_bytes: Gauge::default(),
            history_messages: Gauge::default(),
            history_recoveries: Family::default(),
            handshakes_rejected: AtomicU64::new(0),
            messages_in_total: AtomicU64::new(0),
            messages_rejected_total: AtomicU64::new(0),
            publications_total: AtomicU64::new(0),
            dry_run_total: AtomicU64::new(0),
            registry: Registry::default(),
            replies_out: Counter::default(),
            deliveries_out: Counter::default(),
            messages_in_by_action: ACTIONS.map(|a| (a, Counter::default())),
            publications_by_rule: RwLock::default(),
        };
        let messages_in_by_action =
            ACTIONS.map(|action| (action, stats.messages_in.get_or_create(&ActionLabel { action }).clone()));
        let replies_out = stats.messages_out.get_or_create(&KindLabel { kind: "reply" }).clone();
        let deliveries_out = stats.messages_out.get_or_create(&KindLabel { kind: "delivery" }).clone();
        registry.register("sessions_active", "Sessions open now", stats.sessions_active.clone());
        registry.register("sessions", "Sessions opened", stats.sessions_total.clone());
        registry.register("handshakes", "Handshakes by result and code", stats.handshakes.clone());
        registry.register(
            "proxy_headers",
            "PROXY protocol headers (server.proxy_protocol) by result",
            stats.proxy_headers.clone(),
        );
        registry.register("messages_in", "Client frames by action", stats.messages_in.clone());
        registry.register("messages_out", "Frames sent to clients by kind", stats.messages_out.clone());
        registry.register(
            "messages_rejected",
            "Client frames answered with an error, by code",
            stats.messages_rejected.clone(),
        );
        registry.register("rate_limited", "Rate-limit refusals by scope", stats.rate_limited.clone());
        registry.register("disconnects", "Sessions ended, by close code and reason", stats.disconnects.clone());
        registry.register("session_duration_seconds", "Session lifetimes", stats.session_duration.clone());
        registry.register(
            "outbound_dropped",
            "Messages dropped by slow-consumer policies",
            stats.outbound_dropped.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Sessions closed because their outbound queue was full",
            stats.slow_consumer_disconnects.clone(),
        );
        registry.register(
            "close_lingers",
            "Lingering closes after a server close frame, by how they ended",
            stats.close_lingers.clone(),
        );
        registry.register("publications", "Publications by channel rule", stats.publications.clone());
        registry.register(
            "policy_dry_run_denials",
            "Actions a dry-run rule would have denied",
            stats.dry_run_denials.clone(),
        );
        registry.register("hook_duration_seconds", "Host hook latency", stats.hook_duration.clone());
        registry.register("hook_failures", "Host hooks that timed out or panicked", stats.hook_failures.clone());
        registry.register(
            "proxy_requests",
            "Backend proxy requests by endpoint and result",
            stats.proxy_requests.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Backend proxy request latency",
            stats.proxy_duration.clone(),
        );
        registry.register("bans_active", "Bans in force", stats.bans_active.clone());
        registry.register("bans", "Bans applied, by kind", stats.bans_total.clone());
        registry.register("anomalies", "Publish-rate anomalies by channel rule", stats.anomalies.clone());
        registry.register(
            "events_dropped",
            "Events dropped because the event queue was full",
            stats.events_dropped.clone(),
        );
        registry.register("outbound_queued_bytes", "Bytes queued in all outboxes", stats.queued_bytes.clone());
        registry.register(
            "memory_estimate_bytes",
            "Estimated memory of sessions and queues, counted against limits.max_memory_bytes",
            stats.memory_estimate.clone(),
        );
        registry.register("memory_budget_bytes", "limits.max_memory_bytes (0: no budget)", stats.memory_budget.clone());
        registry.register(
            "broker_connected",
            "1 while the cluster broker is connected (always 1 with broker = memory)",
            stats.broker_connected.clone(),
        );
        registry.register(
            "broker_messages",
            "Messages exchanged with the cluster broker, by direction and kind",
            stats.broker_messages.clone(),
        );
        registry.register("broker_errors", "Cluster broker failures, by operation", stats.broker_errors.clone());
        registry.register("broker_reconnects", "Reconnections to the cluster broker", stats.broker_reconnects.clone());
        registry.register(
            "presence_announcements",
            "Join and leave frames this node announced (a user's first session in, last one out)",
            stats.presence_announcements.clone(),
        );
        registry.register(
            "broker_subscriptions",
            "Channels this node is subscribed to at the broker",
            stats.broker_subscriptions.clone(),
        );
        registry.register(
            "broker_lag_seconds",
            "Time from publication on another node to receipt here (node clocks)",
            stats.broker_lag.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Identity provider key fetches, by issuer and result (ok or the failure reason)",
            stats.jwks_fetches.clone(),
        );
        registry.register(
            "jwks_keys",
            "Usable keys cached per issuer (0 until a first key set is loaded)",
            stats.jwks_keys.clone(),
        );
        registry.register(
            "broker_rejected",
            "Broker messages and persisted entries dropped as unsigned, badly signed, stale, replayed or malformed",
            stats.broker_rejected.clone(),
        );
        registry.register(
            "api_requests",
            "Server API calls, by operation and result (ok or the error code name)",
            stats.api_requests.clone(),
        );
        registry.register(
            "history_bytes",
            "Bytes the channel history store counts (frames plus bookkeeping; capped by limits.history_memory_bytes)",
            stats.history_bytes.clone(),
        );
        registry.register(
            "history_messages",
            "Publications retained in channel history",
            stats.history_messages.clone(),
        );
        registry.register(
            "history_recoveries",
            "Subscribes with `since`, by result (recovered, or gap: history lost or trimmed)",
            stats.history_recoveries.clone(),
        );
        Stats { registry, replies_out, deliveries_out, messages_in_by_action, ..stats }
    }
}

impl Stats {
    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        // The estimate moves with every queued byte: computed here rather than on that hot path.
        self.memory_estimate.set(self.memory_reserved_bytes.get().saturating_add(self.queued_bytes.get()));
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn session_opened(&self) {
        self.sessions_active.inc();
        self.sessions_total.inc();
    }
    pub(crate) fn session_closed(&self, code: u16, reason: &'static str, duration_secs: f64) {
        self.sessions_active.dec();
        self.disconnects.get_or_create(&DisconnectLabels { code, reason }).inc();
        self.session_duration.observe(duration_secs);
    }
    pub(crate) fn record_handshake(&self, code: Option<&'static str>) {
        let labels = match code {
            None => HandshakeLabels { result: "accepted", code: "ok" },
            Some(code) => {
                self.handshakes_rejected.fetch_add(1, Relaxed);
                HandshakeLabels { result: "rejected", code }
            }
        };
        self.handshakes.get_or_create(&labels).inc();
    }
    /// One PROXY protocol outcome: `accepted`, `local`, or why the connection was closed.
    pub(crate) fn record_proxy_header(&self, result: &'static str) {
        self.proxy_headers.get_or_create(&ResultLabel { result }).inc();
    }
    pub(crate) fn record_message_in(&self, action: &'static str) {
        self.messages_in_total.fetch_add(1, Relaxed);
        match self.messages_in_by_action.iter().find(|(a, _)| *a == action) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.messages_in.get_or_create(&ActionLabel { action }).inc();
            }
        }
    }
    /// `is_delivery`: publications from the outbox, as opposed to replies.
    pub(crate) fn record_messages_out(&self, is_delivery: bool, n: u64) {
        if is_delivery { &self.deliveries_out } else { &self.replies_out }.inc_by(n);
    }
    pub(crate) fn record_message_rejected(&self, code: &'static str) {
        self.messages_rejected_total.fetch_add(1, Relaxed);
        self.messages_rejected.get_or_create(&CodeLabel { code }).inc();
    }
    pub(crate) fn record_rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&ScopeLabel { scope }).inc();
    }
    pub(crate) fn record_publication(&self, rule: &str) {
        self.publications_total.fetch_add(1, Relaxed);
        if let Some(counter) = self.publications_by_rule.read().unwrap_or_else(PoisonError::into_inner).get(rule) {
            counter.inc();
            return;
        }
        let counter = self.publications.get_or_create(&RuleLabel { rule: rule.to_string() }).clone();
        counter.inc();
        self.publications_by_rule.write().unwrap_or_else(PoisonError::into_inner).insert(rule.into(), counter);
    }
    pub(crate) fn record_outbound_dropped(&self, n: u64) {
        self.outbound_dropped.inc_by(n);
    }
    pub(crate) fn record_slow_consumer(&self) {
        self.slow_consumer_disconnects.inc();
    }
    /// A lingering close ended this way (`transport::LingerEnd::name`).
    pub(crate) fn record_linger(&self, end: &'static str) {
        self.close_lingers.get_or_create(&EndLabel { end }).inc();
    }
    pub(crate) fn record_event_dropped(&self) {
        self.events_dropped.inc();
    }
    pub(crate) fn publications_for(&self, rule: &str) -> u64 {
        self.publications.get_or_create(&RuleLabel { rule: rule.to_string() }).get()
    }
    pub(crate) fn record_dry_run_denial(&self, rule: &str) {
        self.dry_run_total.fetch_add(1, Relaxed);
        self.dry_run_denials.get_or_create(&RuleLabel { rule: rule.to_string() }).inc();
    }
    pub(crate) fn record_hook(&self, hook: &'static str, secs: f64, failure: Option<&'static str>) {
        self.hook_duration.get_or_create(&HookLabel { hook }).observe(secs);
        if let Some(failure) = failure {
            self.hook_failures.get_or_create(&HookFailureLabels { hook, failure }).inc();
        }
    }
    /// One backend proxy request: its endpoint, `ok` or the failure label, and how long it took.
    pub(crate) fn record_proxy_request(&self, endpoint: &'static str, result: &'static str, secs: f64) {
        self.proxy_requests.get_or_create(&ProxyRequestLabels { endpoint, result }).inc();
        self.proxy_duration.get_or_create(&EndpointLabel { endpoint }).observe(secs);
    }
    pub(crate) fn record_ban(&self, kind: &'static str) {
        self.bans_total.get_or_create(&KindLabel { kind }).inc();
    }
    pub(crate) fn set_bans_active(&self, n: usize) {
        self.bans_active.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn record_anomaly(&self, rule: &str) {
        self.anomalies.get_or_create(&RuleLabel { rule: rule.to_string() }).inc();
    }
    pub(crate) fn add_queued_bytes(&self, delta: i64) {
        self.queued_bytes.inc_by(delta);
    }
    /// Reserves (`delta` > 0) or returns (< 0) session estimates of the memory budget.
    pub(crate) fn add_memory_reserved(&self, delta: i64) {
        self.memory_reserved_bytes.inc_by(delta);
    }
    /// `limits.max_memory_bytes`, set at bind and at each reload.
    pub(crate) fn set_memory_budget(&self, bytes: u64) {
        self.memory_budget.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    pub(crate) fn queued_bytes(&self) -> u64 {
        u64::try_from(self.queued_bytes.get()).unwrap_or(0)
    }
    pub(crate) fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.set(i64::from(connected));
    }
    pub(crate) fn record_broker_published(&self, kind: &'static str) {
        self.broker_messages.get_or_create(&BrokerMessageLabels { direction: "published", kind }).inc();
    }
    pub(crate) fn record_broker_received(&self, kind: &'static str) {
        self.broker_messages.get_or_create(&BrokerMessageLabels { direction: "received", kind }).inc();
    }
    pub(crate) fn record_broker_error(&self, op: &'static str) {
        self.broker_errors.get_or_create(&OpLabel { op }).inc();
    }
    /// One server API call; both labels come from fixed sets (operations, code names).
    pub(crate) fn record_api_request(&self, operation: &'static str, result: &'static str) {
        self.api_requests.get_or_create(&ApiRequestLabels { operation, result }).inc();
    }

    /// What the history store holds now.
    pub(crate) fn set_history_usage(&self, bytes: u64, messages: u64) {
        self.history_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.history_messages.set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// A subscribe with `since`: `recovered` or `gap`.
    pub(crate) fn record_history_recovery(&self, result: &'static str) {
        self.history_recoveries.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn record_broker_rejected(&self, kind: &'static str, reason: &'static str) {
        self.broker_rejected.get_or_create(&BrokerRejectedLabels { kind, reason }).inc();
    }
    pub(crate) fn record_presence_announcement(&self, kind: &'static str) {
        self.presence_announcements.get_or_create(&KindLabel { kind }).inc();
    }
    pub(crate) fn record_broker_reconnect(&self) {
        self.broker_reconnects.inc();
    }
    pub(crate) fn set_broker_subscriptions(&self, n: usize) {
        self.broker_subscriptions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn observe_broker_lag(&self, secs: f64) {
        self.broker_lag.observe(secs);
    }
    pub(crate) fn record_jwks_fetch(&self, issuer: &str, result: &'static str) {
        self.jwks_fetches.get_or_create(&JwksFetchLabels { issuer: issuer.to_string(), result }).inc();
    }
    pub(crate) fn set_jwks_keys(&self, issuer: &str, n: usize) {
        self.jwks_keys
            .get_or_create(&IssuerLabel { issuer: issuer.to_string() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn sessions_active(&self) -> u64 {
        u64::try_from(self.sessions_active.get()).unwrap_or(0)
    }

    pub(crate) fn snapshot(&self, channels: u64) -> StatsSnapshot {
        let out = self.replies_out.get() + self.deliveries_out.get();
        StatsSnapshot {
            sessions_active: self.sessions_active(),
            sessions_total: self.sessions_total.get(),
            handshakes_rejected: self.handshakes_rejected.load(Relaxed),
            messages_in: self.messages_in_total.load(Relaxed),
            messages_out: out,
            messages_rejected: self.messages_rejected_total.load(Relaxed),
            publications: self.publications_total.load(Relaxed),
            outbound_dropped: self.outbound_dropped.get(),
            slow_consumer_disconnects: self.slow_consumer_disconnects.get(),
            events_dropped: self.events_dropped.get(),
            dry_run_denials: self.dry_run_total.load(Relaxed),
            bans_active: u64::try_from(self.bans_active.get()).unwrap_or(0),
            outbound_queued_bytes: self.queued_bytes(),
            channels,
            broker_connected: self.broker_connected.get() == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_the_documented_names() {
        let stats = Stats::default();
        stats.record_handshake(Some("token_expired"));
        stats.record_message_in("publish");
        stats.record_rate_limited("user");
        let text = stats.encode();
        assert!(text.contains("wsguard_handshakes_total{result=\"rejected\",code=\"token_expired\"} 1"), "{text}");
        assert!(text.contains("wsguard_messages_in_total{action=\"publish\"} 1"), "{text}");
        assert!(text.contains("wsguard_rate_limited_total{scope=\"user\"} 1"), "{text}");
        assert!(text.contains("# TYPE wsguard_session_duration_seconds histogram"), "{text}");
        assert_eq!(stats.snapshot(0).handshakes_rejected, 1);
        assert!(!stats.snapshot(0).broker_connected);
        stats.set_broker_connected(true);
        assert!(stats.snapshot(0).broker_connected);
    }
}
