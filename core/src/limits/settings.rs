//! `[limits]` and `[abuse]` compiled once into what the server and its sessions use: durations
//! typed, rates with their bursts derived, networks parsed, counts in the types they are compared
//! with. Validation happens here and nowhere else; a new key is declared in config.rs (abuse.rs
//! for `[abuse]`) and compiled here.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::abuse::AbuseConfig;
use super::config::LimitsConfig;
use super::rate::Rate;
use crate::config::problems::Problems;

/// `[limits]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LimitsSettings {
    /// `connections_per_ip`.
    pub(crate) connections_per_ip: u32,
    /// `connections_per_user`.
    pub(crate) connections_per_user: u32,
    /// `pending_handshakes_per_ip`.
    pub(crate) pending_handshakes_per_ip: u32,
    /// `handshakes_per_ip_per_sec`, burst twice the rate.
    pub(crate) handshake_rate: Rate,
    /// `max_frame_bytes`.
    pub(crate) max_frame_bytes: usize,
    /// `max_message_bytes`.
    pub(crate) max_message_bytes: usize,
    /// `max_subscriptions`.
    pub(crate) max_subscriptions: usize,
    /// `max_payload_depth`.
    pub(crate) max_payload_depth: u32,
    /// `outbound_queue_messages`.
    pub(crate) outbox_messages: u32,
    /// `outbound_queue_bytes`.
    pub(crate) outbox_bytes: usize,
    /// `messages_per_sec` with `message_burst`.
    pub(crate) message_rate: Rate,
    /// `bytes_per_sec`; the bucket holds two seconds' worth, and always one maximal message.
    pub(crate) byte_rate: Rate,
    /// `user_messages_per_sec`, burst twice the rate.
    pub(crate) user_message_rate: Rate,
    /// `max_violations`.
    pub(crate) max_violations: usize,
    /// `violation_window_secs`.
    pub(crate) violation_window: Duration,
    /// `ping_interval_secs`.
    pub(crate) ping_interval: Duration,
    /// `idle_timeout_secs`; longer than `ping_interval`.
    pub(crate) idle_timeout: Duration,
    /// `rpc_timeout_secs`.
    pub(crate) rpc_timeout: Duration,
    /// `max_memory_bytes` (0: no budget).
    pub(crate) max_memory_bytes: u64,
    /// `write_timeout_secs`.
    pub(crate) write_timeout: Duration,
}

impl LimitsSettings {
    /// Compiles `[limits]`, recording every problem (the settings are meaningless when any was
    /// recorded).
    pub(crate) fn compile(config: &LimitsConfig, problems: &mut Problems) -> LimitsSettings {
        let rate = |problems: &mut Problems, key: &str, per_sec: f64| problems.positive_rate(key, per_sec);
        let handshakes = rate(problems, "limits.handshakes_per_ip_per_sec", config.handshakes_per_ip_per_sec);
        let messages = rate(problems, "limits.messages_per_sec", config.messages_per_sec);
        let bytes = rate(problems, "limits.bytes_per_sec", config.bytes_per_sec);
        let user_messages = rate(problems, "limits.user_messages_per_sec", config.user_messages_per_sec);
        let violation_window = problems.positive_secs("limits.violation_window_secs", config.violation_window_secs);
        let ping_interval = problems.positive_secs("limits.ping_interval_secs", config.ping_interval_secs);
        let idle_timeout = problems.positive_secs("limits.idle_timeout_secs", config.idle_timeout_secs);
        if idle_timeout <= ping_interval {
            problems.push("limits.idle_timeout_secs", "must be longer than limits.ping_interval_secs");
        }
        let rpc_timeout = problems.positive_secs("limits.rpc_timeout_secs", config.rpc_timeout_secs);
        if config.max_frame_bytes > config.max_message_bytes {
            problems.push("limits.max_frame_bytes", "must not exceed limits.max_message_bytes");
        }
        let write_timeout = problems.positive_secs("limits.write_timeout_secs", config.write_timeout_secs);
        // Two seconds' worth, and always room for one maximal message; `as` saturates.
        let bytes_burst = (bytes * 2.0).max(config.max_message_bytes as f64) as u32;
        LimitsSettings {
            connections_per_ip: config.connections_per_ip,
            connections_per_user: config.connections_per_user,
            pending_handshakes_per_ip: config.pending_handshakes_per_ip,
            handshake_rate: Rate::with_double_burst(handshakes),
            max_frame_bytes: config.max_frame_bytes,
            max_message_bytes: config.max_message_bytes,
            max_subscriptions: config.max_subscriptions as usize,
            max_payload_depth: config.max_payload_depth,
            outbox_messages: config.outbound_queue_messages,
            outbox_bytes: config.outbound_queue_bytes,
            message_rate: Rate::new(messages, config.message_burst),
            byte_rate: Rate::new(bytes, bytes_burst),
            user_message_rate: Rate::with_double_burst(user_messages),
            max_violations: config.max_violations as usize,
            violation_window,
            ping_interval,
            idle_timeout,
            rpc_timeout,
            max_memory_bytes: config.max_memory_bytes,
            write_timeout,
        }
    }
}

/// `[abuse]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AbuseSettings {
    /// `max_auth_failures`.
    pub(crate) max_auth_failures: u32,
    /// `max_violations`.
    pub(crate) max_violations: u32,
    /// `window_secs`.
    pub(crate) window: Duration,
    /// `ban_secs`.
    pub(crate) ban: Duration,
    /// `exempt`, a bare address as a single-host network.
    pub(crate) exempt: Vec<IpNet>,
    /// `anomaly_factor`; greater than 1.
    pub(crate) anomaly_factor: f64,
    /// `anomaly_min_rate_per_sec`; not negative.
    pub(crate) anomaly_min_rate_per_sec: f64,
}

impl AbuseSettings {
    /// Compiles `[abuse]`, recording every problem (the settings are meaningless when any was
    /// recorded).
    pub(crate) fn compile(config: &AbuseConfig, problems: &mut Problems) -> AbuseSettings {
        let window = problems.positive_secs("abuse.window_secs", config.window_secs);
        let ban = problems.positive_secs("abuse.ban_secs", config.ban_secs);
        let mut exempt = Vec::new();
        for (i, raw) in config.exempt.iter().enumerate() {
            match raw.parse::<IpNet>().or_else(|_| raw.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => exempt.push(net.trunc()),
                Err(_) => problems.push(format!("abuse.exempt[{i}]"), format!("not a CIDR or IP address: {raw:?}")),
            }
        }
        if !(config.anomaly_factor.is_finite() && config.anomaly_factor > 1.0) {
            problems.push("abuse.anomaly_factor", "must be a number greater than 1");
        }
        if !(config.anomaly_min_rate_per_sec.is_finite() && config.anomaly_min_rate_per_sec >= 0.0) {
            problems.push("abuse.anomaly_min_rate_per_sec", "must be a non-negative number");
        }
        AbuseSettings {
            max_auth_failures: config.max_auth_failures,
            max_violations: config.max_violations,
            window,
            ban,
            exempt,
            anomaly_factor: config.anomaly_factor,
            anomaly_min_rate_per_sec: config.anomaly_min_rate_per_sec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile_with_derived_bursts() {
        let mut problems = Problems::default();
        let settings = LimitsSettings::compile(&LimitsConfig::default(), &mut problems);
        assert!(problems.is_empty());
        assert_eq!(settings.handshake_rate, Rate::new(20.0, 40));
        assert_eq!(settings.user_message_rate, Rate::new(50.0, 100));
        assert_eq!(settings.byte_rate, Rate::new(262_144.0, 524_288));
        assert_eq!(settings.write_timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_problem_is_reported() {
        let config = LimitsConfig {
            messages_per_sec: 0.0,
            bytes_per_sec: f64::NAN,
            ping_interval_secs: 30.0,
            idle_timeout_secs: 30.0,
            write_timeout_secs: -1.0,
            max_frame_bytes: 1 << 20,
            ..LimitsConfig::default()
        };
        let mut problems = Problems::default();
        let _ = LimitsSettings::compile(&config, &mut problems);
        assert_eq!(problems.len(), 5, "{problems:?}");
    }
}
