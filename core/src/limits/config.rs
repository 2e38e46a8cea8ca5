//! `[limits]`: quotas, rates and size caps, as written in the config (compiled by settings.rs).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Connections one client IP may hold in their handshake (TLS, request head, checks) at once;
    /// past it a new connection gets 429 `too_many_pending_handshakes_per_ip` at once (over TLS it
    /// is closed without a response), like `server.max_pending_handshakes`. Counted by the TCP
    /// peer, or by the PROXY header's source (`server.proxy_protocol`); connections from
    /// `server.trusted_proxies` without a PROXY header are not counted (they carry many clients).
    /// Default 64: a handshake takes milliseconds, so one address rarely holds more than a few,
    /// and one address can no longer hold every pending slot for the handshake timeout.
    #[schemars(range(min = 1))]
    pub pending_handshakes_per_ip: u32,
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
    /// Most channels one session may be subscribed to; past it `too_many_subscriptions`.
    /// Default 100.
    #[schemars(range(min = 1))]
    pub max_subscriptions: u32,
    /// Deepest JSON nesting accepted in a frame's `payload`. Default 32.
    #[schemars(range(min = 1, max = 128))]
    pub max_payload_depth: u32,
    /// Messages queued for one session before the channel rule's `slow_consumer` policy applies.
    /// Default 1024.
    #[schemars(range(min = 1))]
    pub outbound_queue_messages: u32,
    /// Bytes queued for one session before the `slow_consumer` policy applies. Default 1048576
    /// (1 MiB): with the message cap this bounds a never-reading client's cost.
    #[schemars(range(min = 1024))]
    pub outbound_queue_bytes: usize,
    /// Sustained client frames per second per connection (token bucket). Default 20.
    pub messages_per_sec: f64,
    /// Bucket size for `messages_per_sec`: frames accepted at once. Default 40.
    #[schemars(range(min = 1))]
    pub message_burst: u32,
    /// Sustained client bytes per second per connection; the bucket holds two seconds' worth, and
    /// at least one maximal message. Default 262144 (256 KiB/s).
    pub bytes_per_sec: f64,
    /// Sustained client frames per second per user across all their connections (burst: twice
    /// that). Default 50.
    pub user_messages_per_sec: f64,
    /// Violations tolerated within `violation_window_secs`; one more closes the session with 1008.
    /// Which error replies count is the error registry's answer (`ErrorCode::is_violation`,
    /// listed in docs/PROTOCOL.md, Violations). Default 10.
    #[schemars(range(min = 1))]
    pub max_violations: u32,
    /// The sliding window for `max_violations`, in seconds. Default 60.
    pub violation_window_secs: f64,
    /// The server pings every this many seconds. Default 20 (below common proxy idle timeouts).
    pub ping_interval_secs: f64,
    /// A session that sent nothing (not even a pong) for this many seconds is closed with 4003.
    /// Default 60 (three missed pings).
    pub idle_timeout_secs: f64,
    /// Seconds an RPC handler may take before the client gets `hook_timeout`. Default 5.
    pub rpc_timeout_secs: f64,
    /// New handshakes are refused with 503 `over_memory_budget` once the estimated memory of
    /// sessions (a fixed per-session estimate) plus queued outbound bytes reaches this. 0
    /// disables. Default 2147483648 (2 GiB).
    pub max_memory_bytes: u64,
    /// A write to the client that does not complete within this many seconds closes the
    /// session. Default 10.
    pub write_timeout_secs: f64,
    /// Memory the channel history store may count (every kept frame's bytes plus a fixed
    /// bookkeeping overhead per publication and per channel; see `wsguard_history_bytes`). Past
    /// it the oldest kept publications of the whole server go first, then channel logs with
    /// nothing left (whose subscribers then get `recovered: false`). A cap on this node's memory
    /// only: with `[cluster] broker = "redis"` history is kept in Redis and bounded there by each
    /// rule's `history_size` and `history_ttl_secs`. At least 65536. Restart only. Default
    /// 67108864 (64 MiB).
    #[schemars(range(min = 65536))]
    pub history_memory_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connections_per_ip: 50,
            connections_per_user: 10,
            pending_handshakes_per_ip: 64,
            handshakes_per_ip_per_sec: 20.0,
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 64 * 1024,
            max_subscriptions: 100,
            max_payload_depth: 32,
            outbound_queue_messages: 1024,
            outbound_queue_bytes: 1024 * 1024,
            messages_per_sec: 20.0,
            message_burst: 40,
            bytes_per_sec: 256.0 * 1024.0,
            user_messages_per_sec: 50.0,
            max_violations: 10,
            violation_window_secs: 60.0,
            ping_interval_secs: 20.0,
            idle_timeout_secs: 60.0,
            rpc_timeout_secs: 5.0,
            max_memory_bytes: 2 * 1024 * 1024 * 1024,
            write_timeout_secs: 10.0,
            history_memory_bytes: 64 * 1024 * 1024,
        }
    }
}
