//! Security and lifecycle events. Every event is logged through `tracing` with structured fields
//! and handed to `Hooks::on_event` through the one bounded queue of the server, which drops (and
//! counts in `wsguard_events_dropped_total`) rather than block a connection task. Its single
//! consumer awaits each host delivery, so a slow handler in any host language fills this queue,
//! not one of its own. Events never carry a token, cookie or subprotocol value.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::stats::Stats;
use crate::auth::Revocation;
use crate::hooks::{ChannelAction, HookRunner};
use crate::limits::BanTarget;

/// A security or lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A handshake was refused before the upgrade.
    HandshakeRejected {
        /// Resolved client IP (the TCP peer when the refusal came before resolution).
        client_ip: IpAddr,
        /// HTTP status sent (0 when nothing could be sent).
        status: u16,
        /// Stable error code name.
        code: &'static str,
        /// Detail for operators.
        detail: String,
        /// The `Origin` header, when known.
        origin: Option<String>,
    },
    /// A session started.
    SessionOpened {
        /// Session id.
        session_id: u64,
        /// `sub` of the identity.
        user: String,
        /// Client IP.
        client_ip: IpAddr,
    },
    /// A session ended.
    SessionClosed {
        /// Session id.
        session_id: u64,
        /// `sub` of the identity.
        user: String,
        /// Client IP.
        client_ip: IpAddr,
        /// WebSocket close code sent or received.
        close_code: u16,
        /// Stable reason name.
        reason: &'static str,
        /// Session length in seconds.
        duration_secs: f64,
        /// Frames received.
        messages_in: u64,
        /// Frames sent.
        messages_out: u64,
    },
    /// A client frame was refused with an error reply.
    MessageRejected {
        /// Session id.
        session_id: u64,
        /// `sub` of the identity.
        user: String,
        /// Stable error code name.
        code: &'static str,
        /// The channel rule involved, when one was (`id (reason)` for policy denials).
        rule: Option<String>,
    },
    /// An IP or user was banned.
    BanApplied {
        /// Who.
        target: BanTarget,
        /// `auth_failures`, `violations` or `operator`.
        reason: &'static str,
        /// For how long.
        ban_secs: f64,
    },
    /// A ban ended.
    BanLifted {
        /// Who.
        target: BanTarget,
        /// `expired` or `operator`.
        reason: &'static str,
    },
    /// A channel rule's publish rate jumped above `abuse.anomaly_factor` times its baseline.
    Anomaly {
        /// The rule id.
        rule: String,
        /// Publishes per second over the last interval.
        rate_per_sec: f64,
        /// The moving baseline before this interval.
        baseline_per_sec: f64,
    },
    /// A configuration reload was applied, or refused (then nothing changed).
    ConfigReloaded {
        /// Whether the new configuration is in force.
        is_applied: bool,
        /// Every problem, when refused.
        problems: Vec<String>,
    },
    /// Tokens were revoked.
    RevocationApplied {
        /// What was revoked.
        revocation: Revocation,
    },
    /// The cluster broker connection is up (subscriptions restored).
    BrokerConnected {
        /// `redis` or `nats`.
        broker: &'static str,
        /// True after an outage: local subscribers were sent a `gap` frame.
        is_reconnect: bool,
    },
    /// The cluster broker connection was lost; the node reconnects with backoff and is not ready
    /// meanwhile.
    BrokerDisconnected {
        /// `redis` or `nats`.
        broker: &'static str,
        /// Why.
        error: String,
    },
    /// Fetching an identity provider's keys (`auth.jwks_url`, `auth.oidc_discovery`) failed; the
    /// last good key set stays in force and the fetch is retried with backoff.
    JwksFetchFailed {
        /// The issuer whose keys were fetched.
        issuer: String,
        /// `connect`, `timeout`, `request`, `redirect`, `http_status`, `too_large`, `malformed`,
        /// `no_usable_keys`, `issuer_mismatch` or `bad_url`.
        reason: &'static str,
        /// Detail for operators.
        detail: String,
        /// True when an earlier key set is still in force; false while the issuer has none (its
        /// tokens are answered `keys_unavailable`).
        has_keys: bool,
    },
    /// A message taken from the cluster broker (or an entry of the persisted state) was dropped:
    /// unsigned, badly signed, stale or replayed at a node with `cluster.signing_key_env`, or
    /// malformed. At most one per reason per second; `wsguard_broker_rejected_total` counts all.
    BrokerMessageRejected {
        /// `publication`, `control` or `state` (an entry of the persisted revocations and bans).
        message: &'static str,
        /// `unsigned`, `bad_signature`, `stale`, `replayed` or `malformed`.
        reason: &'static str,
        /// The node the message claims to come from (unverified; may be empty).
        node: String,
        /// Rejections of this reason not reported since the previous event.
        suppressed: u64,
    },
    /// A server API call (`[api]`), accepted or refused. Never carries the key.
    ApiRequest {
        /// `key:<name>` for a key, `cert:<subject>` for a client certificate alone, empty when
        /// the caller was not authenticated.
        caller: String,
        /// The caller's IP (the TCP peer).
        client_ip: IpAddr,
        /// `publish`, `broadcast`, `disconnect`, `revoke`, `ban`, `unban`, `bans`, `stats`,
        /// `reload`, or `unknown` (no endpoint matched).
        operation: &'static str,
        /// What the call acts on (`channel=...`, `channels=N`, `session=...`, `user=...`,
        /// `ip=...`, `jti=...`, `sub=...`, `issued_before=...`, `file=...`); empty when the body
        /// was not read.
        target: String,
        /// `ok` or the error code name.
        result: &'static str,
        /// The HTTP status answered.
        status: u16,
    },
    /// A dry-run rule (`enforce = false`) would have denied; the action went ahead.
    PolicyDryRunDenied {
        /// Session id.
        session_id: u64,
        /// `sub` of the identity.
        user: String,
        /// The action.
        action: ChannelAction,
        /// The rule's id.
        rule: String,
        /// Why it would have denied.
        reason: &'static str,
    },
    /// A backend proxy endpoint (`[proxy]`) gave no usable answer; the request failed closed.
    ProxyFailed {
        /// `connect`, `subscribe`, `publish` or `rpc`.
        endpoint: &'static str,
        /// `overloaded`, `unreachable`, `timeout`, `http_status`, `too_large`, `malformed` or
        /// `invalid`.
        result: &'static str,
        /// Detail for operators (never sent to the client).
        detail: String,
    },
}

/// Fans events out to `tracing` and, through a bounded queue, to the hooks.
#[derive(Clone)]
pub(crate) struct EventSink {
    /// `None` when the host installed no hooks: nobody reads the events but `tracing`.
    queue: Option<mpsc::Sender<Event>>,
    stats: Arc<Stats>,
}

impl EventSink {
    /// Spawns the delivery task on the current runtime (none without host hooks). `hooks` time-boxes
    /// each delivery (`hooks.timeout_secs`).
    pub(crate) fn spawn(hooks: Option<HookRunner>, capacity: usize, stats: Arc<Stats>) -> Self {
        let Some(hooks) = hooks else {
            return EventSink { queue: None, stats };
        };
        let (queue, mut rx) = mpsc::channel::<Event>(capacity.max(1));
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                // The runner catches a panicking or stuck handler and counts it.
                hooks.on_event(&event).await;
            }
        });
        EventSink { queue: Some(queue), stats }
    }

    pub(crate) fn emit(&self, event: Event) {
        trace(&event);
        if let Some(queue) = &self.queue
            && queue.try_send(event).is_err()
        {
            self.stats.record_event_dropped();
        }
    }
}

fn trace(event: &Event) {
    match event {
        Event::HandshakeRejected { client_ip, status, code, detail, origin } => tracing::info!(
            target: "wsguard::security", event = "handshake_rejected", %client_ip, status, code, detail, origin = origin.as_deref()
        ),
        Event::SessionOpened { session_id, user, client_ip } => {
            tracing::info!(target: "wsguard::session", event = "session_opened", session_id, user, %client_ip)
        }
        Event::SessionClosed {
            session_id,
            user,
            client_ip,
            close_code,
            reason,
            duration_secs,
            messages_in,
            messages_out,
        } => {
            tracing::info!(
                target: "wsguard::session", event = "session_closed", session_id, user, %client_ip, close_code, reason,
                duration_secs, messages_in, messages_out
            )
        }
        Event::MessageRejected { session_id, user, code, rule } => {
            tracing::info!(target: "wsguard::security", event = "message_rejected", session_id, user, code, rule = rule.as_deref())
        }
        Event::BanApplied { target, reason, ban_secs } => {
            tracing::warn!(target: "wsguard::security", event = "ban_applied", ban_target = ?target, reason, ban_secs)
        }
        Event::BanLifted { target, reason } => {
            tracing::info!(target: "wsguard::security", event = "ban_lifted", ban_target = ?target, reason)
        }
        Event::Anomaly { rule, rate_per_sec, baseline_per_sec } => {
            tracing::warn!(target: "wsguard::security", event = "anomaly", rule, rate_per_sec, baseline_per_sec)
        }
        Event::ConfigReloaded { is_applied: true, .. } => {
            tracing::info!(target: "wsguard::server", event = "config_reloaded", applied = true)
        }
        Event::ConfigReloaded { problems, .. } => {
            tracing::error!(target: "wsguard::server", event = "config_reloaded", applied = false, problems = ?problems)
        }
        Event::RevocationApplied { revocation } => {
            tracing::info!(target: "wsguard::security", event = "revocation_applied", revocation = ?revocation)
        }
        Event::BrokerConnected { broker, is_reconnect } => {
            tracing::info!(target: "wsguard::cluster", event = "broker_connected", broker, is_reconnect)
        }
        Event::BrokerDisconnected { broker, error } => {
            tracing::warn!(target: "wsguard::cluster", event = "broker_disconnected", broker, error)
        }
        Event::JwksFetchFailed { issuer, reason, detail, has_keys } => tracing::warn!(
            target: "wsguard::security", event = "jwks_fetch_failed", issuer, reason, detail, has_keys
        ),
        Event::BrokerMessageRejected { message, reason, node, suppressed } => tracing::warn!(
            target: "wsguard::security", event = "broker_message_rejected", message, reason, node, suppressed
        ),
        Event::ApiRequest { caller, client_ip, operation, target, result, status } => tracing::info!(
            target: "wsguard::api", event = "api_request", caller, %client_ip, operation, target, result, status
        ),
        Event::PolicyDryRunDenied { session_id, user, action, rule, reason } => tracing::warn!(
            target: "wsguard::security", event = "policy_dry_run_denied", session_id, user, action = ?action, rule, reason
        ),
        Event::ProxyFailed { endpoint, result, detail } => {
            tracing::warn!(target: "wsguard::proxy", event = "proxy_failed", endpoint, result, detail)
        }
    }
}
