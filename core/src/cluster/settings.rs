//! `[cluster]` compiled once into what the node's cluster side uses: durations typed, the quota
//! store's URL resolved. Validation happens here (the URL and name rules in config.rs) and nowhere
//! else; a new `[cluster]` key is declared in config.rs and compiled here.

use std::time::Duration;

use super::config::{BrokerKind, ClusterConfig, JtiFailure, QuotaFailure, StateFailure};
use crate::config::problems::Problems;

/// `[cluster]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterSettings {
    /// `broker`.
    pub(crate) broker: BrokerKind,
    /// `url` (empty for the memory broker).
    pub(crate) url: String,
    /// `node_id` (empty: generated when the node starts).
    pub(crate) node_id: String,
    /// `channel_prefix`.
    pub(crate) channel_prefix: String,
    /// The Redis URL holding cluster-wide quotas: `quota_redis_url`, else the broker's `url` when
    /// the broker is Redis; `None`: per-user quotas stay per node.
    pub(crate) quota_url: Option<String>,
    /// `quota_failure`.
    pub(crate) quota_failure: QuotaFailure,
    /// `lease_ttl_secs`.
    pub(crate) lease_ttl: Duration,
    /// `broker_timeout_secs`.
    pub(crate) broker_timeout: Duration,
    /// `reconnect_max_secs`.
    pub(crate) reconnect_max: Duration,

    // --- Broker TLS and the cluster-wide single-use jti (the `tls_*` files: cluster/tls.rs) ---
    /// `jti_failure`.
    pub(crate) jti_failure: JtiFailure,
    // --- Signed messages and persisted state (the keys themselves are read at bind:
    // `read_secrets`) ---
    /// `state_failure`.
    pub(crate) state_failure: StateFailure,
}

impl ClusterSettings {
    /// Compiles `[cluster]`, recording every problem (the settings are meaningless when any was
    /// recorded). Reads no environment variable (see `read_secrets`).
    pub(crate) fn compile(config: &ClusterConfig, problems: &mut Problems) -> ClusterSettings {
        config.check_urls_and_names(problems);
        let quota_url = match (config.broker, config.quota_redis_url.as_str()) {
            (BrokerKind::Memory, _) => None,
            (_, url) if !url.is_empty() => Some(url.to_string()),
            (BrokerKind::Redis, _) => Some(config.url.clone()),
            _ => None,
        };
        ClusterSettings {
            broker: config.broker,
            url: config.url.clone(),
            node_id: config.node_id.clone(),
            channel_prefix: config.channel_prefix.clone(),
            quota_url,
            quota_failure: config.quota_failure,
            lease_ttl: problems.positive_secs("cluster.lease_ttl_secs", config.lease_ttl_secs),
            broker_timeout: problems.positive_secs("cluster.broker_timeout_secs", config.broker_timeout_secs),
            reconnect_max: problems.positive_secs("cluster.reconnect_max_secs", config.reconnect_max_secs),
            jti_failure: config.jti_failure,
            state_failure: config.state_failure,
        }
    }
}
