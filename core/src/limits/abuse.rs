//! `[abuse]`: automatic temporary bans (fail2ban, built in) and publish-rate anomaly detection.
//! Off unless the section is present. An IP that reaches `max_auth_failures` refused tokens, or an
//! IP or user that reaches `max_violations` message violations, within `window_secs`, is refused
//! at the handshake with 403 `banned` for `ban_secs`. `exempt` CIDRs are never banned. Bans can be
//! listed, applied and lifted through the `ServerHandle`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::settings::AbuseSettings;
use crate::observe::{Event, EventSink, Stats};

/// `[abuse]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// Refused tokens (401) from one IP within `window_secs` that ban the IP. Default 20.
    #[schemars(range(min = 1))]
    pub max_auth_failures: u32,
    /// Message violations from one IP or one user within `window_secs` that ban it. Default 50.
    #[schemars(range(min = 1))]
    pub max_violations: u32,
    /// The counting window in seconds. Default 60.
    pub window_secs: f64,
    /// How long a ban lasts, in seconds. Default 300.
    pub ban_secs: f64,
    /// CIDRs (or single addresses) never banned, e.g. monitoring probes. Default empty.
    pub exempt: Vec<String>,
    /// A channel rule whose publish rate exceeds this many times its moving baseline emits an
    /// `anomaly` event. Default 10.
    pub anomaly_factor: f64,
    /// Publish rates (per second) below this never count as anomalies (quiet rules are noisy in
    /// ratio terms). Default 10.
    pub anomaly_min_rate_per_sec: f64,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            max_auth_failures: 20,
            max_violations: 50,
            window_secs: 60.0,
            ban_secs: 300.0,
            exempt: Vec::new(),
            anomaly_factor: 10.0,
            anomaly_min_rate_per_sec: 10.0,
        }
    }
}

/// Who a ban applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum BanTarget {
    /// A client IP (as resolved through trusted proxies).
    Ip(IpAddr),
    /// A user (`sub`).
    User(String),
}

impl BanTarget {
    /// The one parser of a host's ban target: exactly one of an IP (IPv4 or IPv6 text) or a user
    /// (`sub`). Every binding calls it (through [`crate::host::ban_target`]).
    ///
    /// Errors: [`crate::Error::InvalidArgument`] for none or both, or an IP that does not parse.
    pub fn from_parts(ip: Option<&str>, user: Option<&str>) -> Result<BanTarget, crate::Error> {
        match (ip, user) {
            (Some(ip), None) => ip
                .parse::<IpAddr>()
                .map(BanTarget::Ip)
                .map_err(|_| crate::Error::InvalidArgument(format!("ip is not an IPv4 or IPv6 address: {ip:?}"))),
            (None, Some(user)) => Ok(BanTarget::User(user.to_owned())),
            _ => Err(crate::Error::InvalidArgument("a ban target takes exactly one of ip, user".into())),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            BanTarget::Ip(_) => "ip",
            BanTarget::User(_) => "user",
        }
    }
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BanInfo {
    /// Who.
    pub target: BanTarget,
    /// Why: `auth_failures`, `violations` or `operator`.
    pub reason: &'static str,
    /// Seconds until it lifts by itself.
    pub remaining_secs: f64,
}

struct Ban {
    reason: &'static str,
    until: Instant,
}

/// What a recorded strike led to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Strike {
    Counted,
    Banned { target: BanTarget, reason: &'static str, ban_secs: f64 },
}

/// Told of every ban applied or lifted on this node, to tell the other nodes (the cluster).
pub(crate) trait BanBroadcast: Send + Sync {
    /// `target` was banned here for `duration`.
    fn banned(&self, target: &BanTarget, reason: &'static str, duration: Duration);
    /// An operator lifted the ban of `target` here (whether or not this node had it).
    fn lifted(&self, target: &BanTarget);
}

/// Ban state, and the one owner of a ban's side effects: every ban applied or lifted, here or by
/// another node, automatic or an operator's, is counted, reported as an event and (when made
/// here) broadcast by the methods below. Without `[abuse]` it still holds operator bans; automatic
/// bans need the section.
pub(crate) struct Bans {
    /// `[abuse]`, compiled; `None` without the section.
    config: Option<AbuseSettings>,
    bans: Mutex<HashMap<BanTarget, Ban>>,
    strikes: Mutex<HashMap<(BanTarget, &'static str), VecDeque<Instant>>>,
    events: EventSink,
    stats: Arc<Stats>,
    broadcast: std::sync::OnceLock<Box<dyn BanBroadcast>>,
}

/// The `&'static str` for a ban reason received from another node.
pub(crate) fn ban_reason(reason: &str) -> &'static str {
    match reason {
        "auth_failures" => "auth_failures",
        "violations" => "violations",
        _ => "operator",
    }
}

impl Bans {
    pub(crate) fn new(config: Option<AbuseSettings>, events: EventSink, stats: Arc<Stats>) -> Self {
        Bans {
            config,
            bans: Mutex::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
            events,
            stats,
            broadcast: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn anomaly_settings(&self) -> Option<(f64, f64)> {
        self.config.as_ref().map(|c| (c.anomaly_factor, c.anomaly_min_rate_per_sec))
    }

    fn is_exempt(&self, target: &BanTarget) -> bool {
        match (target, &self.config) {
            (BanTarget::Ip(ip), Some(c)) => c.exempt.iter().any(|n| n.contains(ip)),
            _ => false,
        }
    }

    /// Seconds left on a ban of `target`, if it is banned.
    pub(crate) fn remaining(&self, target: &BanTarget) -> Option<u64> {
        let bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        let ban = bans.get(target)?;
        let left = ban.until.checked_duration_since(Instant::now())?;
        // Round up: a client told to come back must not come back while still banned.
        Some(crate::limits::retry_after_secs(left))
    }

    /// Counts an auth failure (401) from `ip`; the ban it may lead to is applied like any other.
    pub(crate) fn record_auth_failure(&self, ip: IpAddr) -> Strike {
        match &self.config {
            Some(c) => self.strike(BanTarget::Ip(ip), "auth_failures", c.max_auth_failures),
            None => Strike::Counted,
        }
    }

    /// Counts a message violation against an IP and a user; the bans it may lead to are applied
    /// like any other.
    pub(crate) fn record_violation(&self, ip: IpAddr, user: &str) {
        if let Some(c) = &self.config {
            self.strike(BanTarget::Ip(ip), "violations", c.max_violations);
            self.strike(BanTarget::User(user.to_string()), "violations", c.max_violations);
        }
    }

    fn strike(&self, target: BanTarget, reason: &'static str, limit: u32) -> Strike {
        let Some(AbuseSettings { window, ban, .. }) = &self.config else { return Strike::Counted };
        if self.is_exempt(&target) {
            return Strike::Counted;
        }
        let now = Instant::now();
        let reached = {
            let mut strikes = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
            let times = strikes.entry((target.clone(), reason)).or_default();
            while times.front().is_some_and(|t| now.duration_since(*t) > *window) {
                times.pop_front();
            }
            times.push_back(now);
            let reached = times.len() >= limit as usize;
            if reached {
                strikes.remove(&(target.clone(), reason));
            }
            reached
        };
        if !reached {
            return Strike::Counted;
        }
        self.ban(target.clone(), *ban, reason);
        Strike::Banned { target, reason, ban_secs: ban.as_secs_f64() }
    }

    /// Installs what tells the other nodes of this node's bans (once).
    pub(crate) fn set_broadcast(&self, broadcast: Box<dyn BanBroadcast>) {
        let _ = self.broadcast.set(broadcast);
    }

    /// Bans `target` for `duration` (exempt IPs excepted); true when applied. Counted, reported
    /// and broadcast.
    pub(crate) fn ban(&self, target: BanTarget, duration: Duration, reason: &'static str) -> bool {
        let applied = self.insert(target.clone(), duration, reason, false);
        if applied {
            if let Some(broadcast) = self.broadcast.get() {
                broadcast.banned(&target, reason, duration);
            }
            self.applied(target, reason, duration);
        }
        applied
    }

    /// Applies a ban another node made (exempt IPs excepted); true when it is new or lasts
    /// longer than the one in force. Counted and reported, not broadcast.
    pub(crate) fn apply_remote(&self, target: BanTarget, duration: Duration, reason: &'static str) -> bool {
        let applied = self.insert(target.clone(), duration, reason, true);
        if applied {
            self.applied(target, reason, duration);
        }
        applied
    }

    fn applied(&self, target: BanTarget, reason: &'static str, duration: Duration) {
        self.stats.record_ban(target.kind());
        self.stats.set_bans_active(self.active());
        self.events.emit(Event::BanApplied { target, reason, ban_secs: duration.as_secs_f64() });
    }

    fn insert(&self, target: BanTarget, duration: Duration, reason: &'static str, only_if_longer: bool) -> bool {
        if self.is_exempt(&target) {
            return false;
        }
        // Saturate: an absurd duration (an operator typo, a host passing u64::MAX) is "very long",
        // never a panic.
        let now = Instant::now();
        let until = now.checked_add(duration).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        // Remote bans travel with whole seconds: a re-sent ban is not "longer" by rounding.
        if only_if_longer && bans.get(&target).is_some_and(|b| b.until + Duration::from_secs(1) >= until) {
            return false;
        }
        bans.insert(target, Ban { reason, until });
        true
    }

    /// An operator lifts a ban; true when there was one here. Broadcast in any case (other nodes
    /// may hold it), reported when there was one.
    pub(crate) fn lift(&self, target: &BanTarget) -> bool {
        if let Some(broadcast) = self.broadcast.get() {
            broadcast.lifted(target);
        }
        self.lift_remote(target)
    }

    /// Lifts a ban another node's operator lifted; true when there was one here (then reported).
    pub(crate) fn lift_remote(&self, target: &BanTarget) -> bool {
        let lifted = self.bans.lock().unwrap_or_else(PoisonError::into_inner).remove(target).is_some();
        if lifted {
            self.stats.set_bans_active(self.active());
            self.events.emit(Event::BanLifted { target: target.clone(), reason: "operator" });
        }
        lifted
    }

    /// Bans in force.
    pub(crate) fn list(&self) -> Vec<BanInfo> {
        let now = Instant::now();
        let bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        bans.iter()
            .filter_map(|(target, ban)| {
                let left = ban.until.checked_duration_since(now)?;
                Some(BanInfo { target: target.clone(), reason: ban.reason, remaining_secs: left.as_secs_f64() })
            })
            .collect()
    }

    /// Removes expired bans (reporting each) and stale strike windows, and refreshes the gauge.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.bans.lock().unwrap_or_else(PoisonError::into_inner).retain(|target, ban| {
            let keep = ban.until > now;
            if !keep {
                expired.push(target.clone());
            }
            keep
        });
        if let Some(AbuseSettings { window, .. }) = &self.config {
            self.strikes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) <= *window));
        }
        for target in expired {
            self.events.emit(Event::BanLifted { target, reason: "expired" });
        }
        self.stats.set_bans_active(self.active());
    }

    pub(crate) fn active(&self) -> usize {
        self.bans.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A moving baseline of one rule's publish rate.
#[derive(Debug, Default)]
pub(crate) struct RateBaseline {
    last_count: u64,
    baseline: Option<f64>,
}

impl RateBaseline {
    /// Feeds the rule's publication total; returns `(rate, baseline)` when the rate is anomalous.
    pub(crate) fn observe(&mut self, count: u64, interval_secs: f64, factor: f64, min_rate: f64) -> Option<(f64, f64)> {
        let rate = count.saturating_sub(self.last_count) as f64 / interval_secs.max(1e-3);
        self.last_count = count;
        let anomalous = match self.baseline {
            Some(b) => rate >= min_rate && rate > factor * b.max(1e-9),
            None => false,
        };
        let previous = self.baseline.unwrap_or(rate);
        // EWMA with alpha 0.2; anomalous samples move the baseline slowly so a sustained attack
        // keeps being reported for a while instead of becoming the new normal at once.
        let alpha = if anomalous { 0.02 } else { 0.2 };
        self.baseline = Some(previous + alpha * (rate - previous));
        anomalous.then_some((rate, previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreported(config: Option<AbuseSettings>) -> Bans {
        let stats = Arc::new(Stats::default());
        Bans::new(config, EventSink::spawn(None, 1, Arc::clone(&stats)), stats)
    }

    fn bans(max: u32) -> Bans {
        let config =
            AbuseConfig { max_auth_failures: max, exempt: vec!["10.0.0.0/8".into()], ..AbuseConfig::default() };
        let mut problems = crate::config::problems::Problems::default();
        let settings = AbuseSettings::compile(&config, &mut problems);
        assert!(problems.is_empty());
        unreported(Some(settings))
    }

    #[test]
    fn strikes_ban_after_the_limit_and_exempt_nets_are_spared() {
        let b = bans(3);
        let ip: IpAddr = "203.0.113.1".parse().expect("ip");
        assert_eq!(b.record_auth_failure(ip), Strike::Counted);
        assert_eq!(b.record_auth_failure(ip), Strike::Counted);
        assert!(matches!(b.record_auth_failure(ip), Strike::Banned { .. }));
        assert!(b.remaining(&BanTarget::Ip(ip)).is_some());
        assert_eq!(b.list().len(), 1);
        assert!(b.lift(&BanTarget::Ip(ip)));
        assert!(b.remaining(&BanTarget::Ip(ip)).is_none());
        let exempt: IpAddr = "10.1.2.3".parse().expect("ip");
        for _ in 0..10 {
            assert_eq!(b.record_auth_failure(exempt), Strike::Counted);
        }
    }

    #[test]
    fn without_the_section_nothing_is_banned_automatically() {
        let b = unreported(None);
        let ip: IpAddr = "203.0.113.1".parse().expect("ip");
        for _ in 0..100 {
            assert_eq!(b.record_auth_failure(ip), Strike::Counted);
        }
        assert!(b.ban(BanTarget::Ip(ip), Duration::from_secs(5), "operator"));
        assert!(b.remaining(&BanTarget::Ip(ip)).is_some());
    }

    /// Records what would go to the other nodes.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl BanBroadcast for Arc<Recorded> {
        fn banned(&self, target: &BanTarget, reason: &'static str, _: Duration) {
            self.0.lock().expect("lock").push(format!("ban {} {reason}", target.kind()));
        }
        fn lifted(&self, target: &BanTarget) {
            self.0.lock().expect("lock").push(format!("lift {}", target.kind()));
        }
    }

    #[test]
    fn every_ban_is_counted_and_only_this_nodes_are_broadcast() {
        let stats = Arc::new(Stats::default());
        let b = Bans::new(None, EventSink::spawn(None, 1, Arc::clone(&stats)), Arc::clone(&stats));
        let recorded = Arc::new(Recorded::default());
        b.set_broadcast(Box::new(Arc::clone(&recorded)));
        let ip = BanTarget::Ip("203.0.113.1".parse().expect("ip"));
        let user = BanTarget::User("mallory".into());
        assert!(b.ban(ip.clone(), Duration::from_secs(60), "operator"));
        assert!(b.apply_remote(user.clone(), Duration::from_secs(60), "violations"));
        assert_eq!(stats.snapshot(0).bans_active, 2);
        assert!(b.lift_remote(&user));
        assert!(!b.lift(&user), "already lifted here, still told to the other nodes");
        assert!(b.lift(&ip));
        assert_eq!(stats.snapshot(0).bans_active, 0);
        assert_eq!(*recorded.0.lock().expect("lock"), ["ban ip operator", "lift user", "lift ip"]);
    }

    #[test]
    fn baseline_flags_a_burst() {
        let mut r = RateBaseline::default();
        let mut count = 0;
        for _ in 0..10 {
            count += 50;
            assert!(r.observe(count, 5.0, 10.0, 10.0).is_none());
        }
        count += 5000;
        assert!(r.observe(count, 5.0, 10.0, 10.0).is_some());
    }
}
