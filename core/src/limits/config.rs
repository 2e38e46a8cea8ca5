//! `[limits]`: quotas, rates and size caps.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open sessions per client IP; past it 429 with `Retry-After`. Default 50 (room for NAT).
    #[schemars(range(min = 1))]
    pub connections_per_ip: u32,
    /// Open sessions per user (`sub`); past it 429 with `Retry-After`. Default 10.
    #[schemars(range(min = 1))]
    pub connections_per_user: u32,
    /// Sustained handshakes per client IP per second (fractional allowed), token bucket with a
    /// burst of twice the rate; past it 429 with `Retry-After`. Default 20.
    pub handshakes_per_ip_per_sec: f64,
    /// Largest single WebSocket frame in bytes; a larger one closes the session with 1009.
    /// Default 65536.
    #[schemars(range(min = 128))]
    pub max_frame_bytes: usize,
    /// Largest assembled (possibly fragmented) message in bytes; a larger one closes with 1009
    /// before more than this is buffered. Default 65536.
    #[schemars(range(min = 128))]
    pub max_message_bytes: usize,
    /// Most channels one session may be subscribed to. Default 100.
    #[schemars(range(min = 1))]
    pub max_subscriptions_per_connection: u32,
    /// Deepest JSON nesting accepted in a frame's `payload`. Default 32.
    #[schemars(range(min = 1, max = 128))]
    pub max_payload_depth: u32,
    /// Messages queued for one session before it counts as a slow consumer and is closed with
    /// 4000. Default 1024.
    #[schemars(range(min = 1))]
    pub outbound_queue_messages: u32,
    /// A write to the client that does not complete within this many seconds closes the
    /// session. Default 10.
    pub write_timeout_secs: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connections_per_ip: 50,
            connections_per_user: 10,
            handshakes_per_ip_per_sec: 20.0,
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 64 * 1024,
            max_subscriptions_per_connection: 100,
            max_payload_depth: 32,
            outbound_queue_messages: 1024,
            write_timeout_secs: 10.0,
        }
    }
}

impl LimitsConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if !(self.handshakes_per_ip_per_sec.is_finite() && self.handshakes_per_ip_per_sec > 0.0) {
            problems.push("limits.handshakes_per_ip_per_sec", "must be a positive number");
        }
        if self.max_frame_bytes > self.max_message_bytes {
            problems.push("limits.max_frame_bytes", "must not exceed limits.max_message_bytes");
        }
        problems.positive_secs("limits.write_timeout_secs", self.write_timeout_secs);
    }
}
