//! `[observability]`: the admin listener and logging.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::problems::Problems;

/// Log output format (the CLI installs the subscriber; the library never does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers. Default.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[observability]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityConfig {
    /// Address of the admin listener serving `/metrics`, `/healthz` and `/readyz`, separate from
    /// the WebSocket port so it can stay private. Empty string: no admin listener. Default
    /// `127.0.0.1:9090`.
    pub metrics_listen: String,
    /// Log format of the `wsguard` CLI. Default `json`.
    pub log_format: LogFormat,
    /// Log filter of the `wsguard` CLI (`tracing` env-filter syntax, e.g. `info` or
    /// `wsguard=debug`); the `WSGUARD_LOG` environment variable overrides it. Default `info`.
    pub log_level: String,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            metrics_listen: "127.0.0.1:9090".into(),
            log_format: LogFormat::Json,
            log_level: "info".into(),
        }
    }
}

impl ObservabilityConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<SocketAddr>().is_err() {
            problems.push("observability.metrics_listen", format!("not a socket address: {:?}", self.metrics_listen));
        }
        if self.log_level.trim().is_empty() {
            problems.push("observability.log_level", "must not be empty");
        }
    }
}
