//! `[[channels]]` and `[[rpc]]`: declarative authorization rules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pattern::ChannelPattern;
use crate::config::problems::Problems;

/// What a session needs to perform one action. Empty (`{}`) allows any authenticated session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Requirement {
    /// Scopes the token must all carry.
    pub scopes: Vec<String>,
    /// Roles of which the token must carry at least one (empty: no role needed).
    pub roles: Vec<String>,
    /// Claims the token must carry with exactly this string value; `"{name}"` stands for the
    /// segment the pattern captured as `name`.
    pub claims: BTreeMap<String, String>,
}

/// What happens when a subscriber's outbound queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close the session with 4000 (default: a consumer that cannot keep up reconnects and
    /// resynchronises instead of silently missing data).
    #[default]
    Disconnect,
    /// Drop the oldest queued messages to make room; the subscriber gets a `gap` frame.
    DropOldest,
    /// Replace the queued message of the same channel with the newest one (latest-value
    /// channels such as prices); falls back to `drop_oldest` when none is queued.
    Coalesce,
}

fn enabled() -> bool {
    true
}

/// The most claims one `publisher` stamp may list (each is copied into every stamped frame).
pub(crate) const MAX_PUBLISHER_CLAIMS: usize = 16;

/// `publisher`: stamp every `message` frame delivered on matching channels with who published it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherStamp {
    /// Token claims copied into `from.claims` besides the `sub`, which is always there (a claim
    /// the publisher's token lacks is left out). Default: none. At most 16; `sub` is not listed.
    pub claims: Vec<String>,
}

fn default_history_ttl_secs() -> u64 {
    300
}

/// One `[[channels]]` rule. Rules are matched in order; the first whose pattern matches decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// Name used in logs, events and metrics. Default: the pattern.
    #[serde(default)]
    pub id: Option<String>,
    /// The channel pattern, e.g. `tenant:{tenant}:orders`.
    pub pattern: String,
    /// Who may subscribe; absent: nobody.
    #[serde(default)]
    pub subscribe: Option<Requirement>,
    /// Who may publish; absent: nobody.
    #[serde(default)]
    pub publish: Option<Requirement>,
    /// JSON Schema file every publish payload on matching channels must satisfy. Compiled once at
    /// load; remote `$ref`s are never fetched.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// `false` is a dry run: denials are logged and counted but allowed. Default true.
    #[serde(default = "enabled")]
    pub enforce: bool,
    /// Sustained publishes per second on each matching channel (burst: twice that). Default:
    /// unlimited (the per-connection and per-user rates still apply).
    #[serde(default)]
    pub publish_per_sec: Option<f64>,
    /// Policy for subscribers whose outbound queue is full. Default `disconnect`.
    #[serde(default)]
    pub slow_consumer: SlowConsumerPolicy,
    /// Stamp delivered `message` frames with the publisher's verified identity (`from`: the
    /// `sub` and the listed claims; `{"server":true}` for the host's publishes). Default: absent,
    /// no `from` (frames are unchanged).
    #[serde(default)]
    pub publisher: Option<PublisherStamp>,
    /// Track who is subscribed to each matching channel (docs/PROTOCOL.md, "Presence"): every
    /// subscriber is a member, counted per user. Default false.
    #[serde(default)]
    pub presence: bool,
    /// Who may read a channel's presence with the `presence` and `presence_stats` actions; absent
    /// (the default): nobody, because presence reveals who is online. Requires `presence = true`.
    #[serde(default)]
    pub presence_access: Option<Requirement>,
    /// Token claims that `presence` replies and `join` frames reveal for each member (string
    /// names, e.g. `["name"]`). Default none: members are shown by subject only. Requires
    /// `presence = true`.
    #[serde(default)]
    pub presence_claims: Vec<String>,
    /// Send `join` and `leave` frames to every subscriber of a matching channel when a user's
    /// first session subscribes and when their last one leaves. Every subscriber then learns who
    /// joins, whatever `presence_access` says. Requires `presence = true`. Default false.
    #[serde(default)]
    pub join_leave: bool,
    /// Publications kept per concrete channel matching this rule, so that a subscriber can
    /// recover what it missed (`subscribe` with `since`) and the `history` action can page
    /// through them. Each publication then carries an `offset`. 0 (default): no history, and
    /// `message` frames are exactly as without this feature. At most 100000. With `[cluster]
    /// broker = "redis"` kept in the broker's Redis (shared by the nodes); refused with `nats`.
    #[serde(default)]
    #[schemars(range(max = 100000))]
    pub history_size: u32,
    /// How long a kept publication stays, in seconds (1 to 604800). Default 300.
    #[serde(default = "default_history_ttl_secs")]
    #[schemars(range(min = 1, max = 604800))]
    pub history_ttl_secs: u64,
    /// Who may read the kept publications with the `history` action; absent: nobody (default
    /// deny). Recovery with `subscribe` + `since` needs only `subscribe`: it gives back what the
    /// subscription would have delivered.
    #[serde(default)]
    pub history: Option<Requirement>,
}

/// One `[[rpc]]` method. Methods that are not declared are refused before any host code runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RpcRule {
    /// The method name, e.g. `orders.create`.
    pub method: String,
    /// Roles of which the caller must carry one (empty: none needed).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes the caller must all carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// JSON Schema file the call's payload must satisfy.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
}

fn validate_stamp(stamp: &PublisherStamp, at: &str, problems: &mut Problems) {
    if stamp.claims.len() > MAX_PUBLISHER_CLAIMS {
        problems.push(at, format!("lists {} claims; at most {MAX_PUBLISHER_CLAIMS}", stamp.claims.len()));
    }
    for (j, claim) in stamp.claims.iter().enumerate() {
        if claim.is_empty() || claim.len() > 128 {
            problems.push(format!("{at}[{j}]"), "must be 1-128 bytes");
        } else if claim == "sub" {
            problems.push(format!("{at}[{j}]"), "`sub` is always stamped; do not list it");
        } else if stamp.claims[..j].contains(claim) {
            problems.push(format!("{at}[{j}]"), format!("{claim:?} is listed twice"));
        }
    }
}

/// The presence keys only mean something with `presence = true`; claim names must be usable.
fn validate_presence(rule: &ChannelRule, at: &str, problems: &mut Problems) {
    if !rule.presence {
        let given = [
            ("presence_access", rule.presence_access.is_some()),
            ("presence_claims", !rule.presence_claims.is_empty()),
            ("join_leave", rule.join_leave),
        ];
        for (key, _) in given.iter().filter(|(_, is_given)| *is_given) {
            problems.push(format!("{at}.{key}"), "requires `presence = true`");
        }
    }
    if rule.presence && rule.subscribe.is_none() {
        problems.push(format!("{at}.presence"), "has no members: the rule allows no `subscribe`");
    }
    for (i, claim) in rule.presence_claims.iter().enumerate() {
        if claim.is_empty() || claim.len() > 64 {
            problems.push(format!("{at}.presence_claims[{i}]"), "must be 1-64 bytes");
        }
        if rule.presence_claims[..i].contains(claim) {
            problems.push(format!("{at}.presence_claims[{i}]"), format!("{claim:?} is listed twice"));
        }
    }
}

pub(crate) fn validate(channels: &[ChannelRule], rpc: &[RpcRule], problems: &mut Problems) {
    for (i, rule) in channels.iter().enumerate() {
        let at = format!("channels[{i}]");
        match ChannelPattern::parse(&rule.pattern) {
            Ok(pattern) => {
                let requirements = [
                    ("subscribe", &rule.subscribe),
                    ("publish", &rule.publish),
                    ("history", &rule.history),
                    ("presence_access", &rule.presence_access),
                ];
                for (action, req) in requirements {
                    for (claim, value) in req.iter().flat_map(|r| r.claims.iter()) {
                        if let Some(name) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}'))
                            && !pattern.has_capture(name)
                        {
                            problems.push(
                                format!("{at}.{action}.claims.{claim}"),
                                format!("the pattern has no capture {{{name}}}"),
                            );
                        }
                    }
                }
            }
            Err(e) => problems.push(format!("{at}.pattern"), e),
        }
        if rule.subscribe.is_none() && rule.publish.is_none() {
            problems
                .push(&at, "allows nothing: add `subscribe` and/or `publish` (an unmatched channel is denied anyway)");
        }
        validate_history(rule, &at, problems);
        if let Some(rate) = rule.publish_per_sec
            && !(rate.is_finite() && rate > 0.0)
        {
            problems.push(format!("{at}.publish_per_sec"), "must be a positive number");
        }
        if let Some(stamp) = &rule.publisher {
            validate_stamp(stamp, &format!("{at}.publisher.claims"), problems);
        }
        validate_presence(rule, &at, problems);
    }
    for (i, rule) in rpc.iter().enumerate() {
        if rule.method.is_empty() || rule.method.len() > 128 || !rule.method.bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(format!("rpc[{i}].method"), "must be 1-128 printable ASCII bytes");
        }
        if rpc[..i].iter().any(|r| r.method == rule.method) {
            problems.push(format!("rpc[{i}].method"), format!("{:?} is declared twice", rule.method));
        }
    }
}

fn validate_history(rule: &ChannelRule, at: &str, problems: &mut Problems) {
    if rule.history.is_some() && rule.history_size == 0 {
        problems.push(format!("{at}.history"), "the rule keeps no history: set `history_size`");
    }
}
