//! Policy: declarative channel and RPC authorization, default deny. Rules are matched in order and
//! the first rule whose pattern matches decides; a channel no rule matches is denied; an action a
//! rule does not list is denied. This area decides *what* an identity may do; it never reads the
//! network or calls host code (the `authorize` hook runs after it, and can only deny further).

mod config;
pub(crate) mod pattern;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub(crate) use config::validate;
pub use config::{ChannelRule, PublisherStamp, Requirement, RpcRule, SlowConsumerPolicy};

use crate::auth::Identity;
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;
use crate::history::Retention;
use crate::hooks::ChannelAction;
use crate::limits::{KeyedRate, Rate};
use pattern::{Captures, ChannelPattern};

/// Why the policy denied (for logs and events; the client only sees `forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No rule matches the channel.
    NoRule,
    /// The matching rule does not list this action.
    ActionNotListed,
    /// A required scope is missing.
    MissingScope,
    /// None of the required roles is present.
    MissingRole,
    /// A required claim is absent or has another value.
    ClaimMismatch,
}

impl DenyReason {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRule => "no_rule",
            DenyReason::ActionNotListed => "action_not_listed",
            DenyReason::MissingScope => "missing_scope",
            DenyReason::MissingRole => "missing_role",
            DenyReason::ClaimMismatch => "claim_mismatch",
        }
    }
}

/// A compiled channel rule.
pub(crate) struct Rule {
    /// Shared, not copied, by every decision that names it (a publication's metrics label).
    pub(crate) id: Arc<str>,
    pattern: ChannelPattern,
    subscribe: Option<Requirement>,
    publish: Option<Requirement>,
    history_reader: Option<Requirement>,
    /// What matching channels keep; None without `history_size`.
    pub(crate) history: Option<Retention>,
    pub(crate) schema: Option<Arc<jsonschema::Validator>>,
    pub(crate) enforce: bool,
    pub(crate) publish_rate: Option<KeyedRate<String>>,
    pub(crate) slow_consumer: SlowConsumerPolicy,
    /// `publisher`: the claims stamped besides `sub`; None when the rule does not stamp.
    publisher: Option<Arc<[String]>>,
    /// `presence = true`: what the rule says about its members.
    pub(crate) presence: Option<PresenceRule>,
}

/// A rule's presence settings (`presence = true`).
pub(crate) struct PresenceRule {
    /// `presence_access`; None: no client may read presence.
    access: Option<Requirement>,
    /// `presence_claims`: the claims members reveal.
    pub(crate) claims: Arc<[String]>,
    /// `join_leave`.
    pub(crate) join_leave: bool,
}

impl Rule {
    /// The `from` of a publication by `identity` under this rule: `{"sub": ..., "claims": {...}}`
    /// with only the listed claims the token carries (`claims` absent when the rule lists none),
    /// or None when the rule does not stamp. Built from the verified identity only, so nothing a
    /// client sends can shape it.
    pub(crate) fn stamp(&self, identity: &Identity) -> Option<Value> {
        let listed = self.publisher.as_ref()?;
        let mut from = Map::new();
        from.insert("sub".into(), Value::String(identity.subject.clone()));
        if !listed.is_empty() {
            let claims: Map<String, Value> =
                listed.iter().filter_map(|name| identity.claims.get(name).map(|v| (name.clone(), v))).collect();
            from.insert("claims".into(), Value::Object(claims));
        }
        Some(Value::Object(from))
    }
}

/// A compiled RPC declaration.
pub(crate) struct RpcMethod {
    roles: Vec<String>,
    scopes: Vec<String>,
    pub(crate) schema: Option<Arc<jsonschema::Validator>>,
}

/// The policy's answer for one channel action.
pub(crate) enum Verdict<'a> {
    /// Allowed by `rule`.
    Allow(&'a Rule),
    /// Denied; `rule` is None when no rule matched.
    Deny { rule: Option<&'a Rule>, reason: DenyReason },
    /// A dry-run rule would have denied; the action goes ahead.
    DryRunDeny { rule: &'a Rule, reason: DenyReason },
}

/// All compiled rules.
#[derive(Default)]
pub(crate) struct Policy {
    rules: Vec<Rule>,
    rpc: HashMap<String, RpcMethod>,
}

fn schema_from_file(key: &str, path: &Path) -> Result<Arc<jsonschema::Validator>, ConfigProblem> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigProblem::new(key, format!("cannot read {}: {e}", path.display())))?;
    let schema: Value = serde_json::from_str(&text)
        .map_err(|e| ConfigProblem::new(key, format!("{}: not JSON: {e}", path.display())))?;
    // Default features are off: no retriever is compiled in, so a remote `$ref` fails here.
    jsonschema::options()
        .build(&schema)
        .map(Arc::new)
        .map_err(|e| ConfigProblem::new(key, format!("{}: not a usable JSON Schema: {e}", path.display())))
}

impl Policy {
    /// Compiles rules, reading schema files; every problem is reported.
    pub(crate) fn load(channels: &[ChannelRule], rpc: &[RpcRule]) -> Result<Policy, ConfigError> {
        let mut problems = Vec::new();
        let mut policy = Policy::default();
        for (i, rule) in channels.iter().enumerate() {
            let Ok(pattern) = ChannelPattern::parse(&rule.pattern) else { continue };
            let schema = match &rule.schema_file {
                Some(path) => match schema_from_file(&format!("channels[{i}].schema_file"), path) {
                    Ok(s) => Some(s),
                    Err(p) => {
                        problems.push(p);
                        None
                    }
                },
                None => None,
            };
            policy.rules.push(Rule {
                id: Arc::from(rule.id.as_deref().unwrap_or(&rule.pattern)),
                pattern,
                subscribe: rule.subscribe.clone(),
                publish: rule.publish.clone(),
                history_reader: rule.history.clone(),
                history: (rule.history_size > 0).then(|| Retention {
                    size: rule.history_size as usize,
                    ttl: Duration::from_secs(rule.history_ttl_secs),
                }),
                schema,
                enforce: rule.enforce,
                publish_rate: rule.publish_per_sec.map(|r| KeyedRate::new(Rate::with_double_burst(r))),
                slow_consumer: rule.slow_consumer,
                publisher: rule.publisher.as_ref().map(|p| Arc::from(p.claims.as_slice())),
                presence: rule.presence.then(|| PresenceRule {
                    access: rule.presence_access.clone(),
                    claims: rule.presence_claims.clone().into(),
                    join_leave: rule.join_leave,
                }),
            });
        }
        for (i, method) in rpc.iter().enumerate() {
            let schema = match &method.schema_file {
                Some(path) => match schema_from_file(&format!("rpc[{i}].schema_file"), path) {
                    Ok(s) => Some(s),
                    Err(p) => {
                        problems.push(p);
                        None
                    }
                },
                None => None,
            };
            policy.rpc.insert(
                method.method.clone(),
                RpcMethod { roles: method.roles.clone(), scopes: method.scopes.clone(), schema },
            );
        }
        if problems.is_empty() { Ok(policy) } else { Err(ConfigError::new(ErrorCode::ConfigFile, problems)) }
    }

    /// Decides `action` on `channel` (already validated) for `identity`.
    pub(crate) fn decide(&self, identity: &Identity, action: ChannelAction, channel: &str) -> Verdict<'_> {
        let Some((rule, captures)) = self.rules.iter().find_map(|r| r.pattern.matches(channel).map(|c| (r, c))) else {
            return Verdict::Deny { rule: None, reason: DenyReason::NoRule };
        };
        let requirement = match action {
            ChannelAction::Subscribe => rule.subscribe.as_ref(),
            ChannelAction::Publish => rule.publish.as_ref(),
            ChannelAction::History => rule.history_reader.as_ref(),
        };
        let outcome = match requirement {
            None => Err(DenyReason::ActionNotListed),
            Some(req) => check(req, identity, &captures),
        };
        match outcome {
            Ok(()) => Verdict::Allow(rule),
            // Reading history reveals what was published before: like presence, a dry-run rule
            // never opens it.
            Err(reason) if rule.enforce || action == ChannelAction::History => {
                Verdict::Deny { rule: Some(rule), reason }
            }
            Err(reason) => Verdict::DryRunDeny { rule, reason },
        }
    }

    /// The `from` of a host's publication on `channel`: `{"server": true}` when the first rule
    /// matching the channel stamps publishers, else None (the host is not bound by the rules, but
    /// subscribers of a stamped channel must be able to tell its publications from a user's).
    pub(crate) fn server_stamp(&self, channel: &str) -> Option<Value> {
        let rule = self.rules.iter().find(|r| r.pattern.matches(channel).is_some())?;
        rule.publisher.as_ref()?;
        Some(serde_json::json!({ "server": true }))
    }

    /// Decides whether `identity` may read the presence of `channel` (the `presence` and
    /// `presence_stats` actions): the matching rule must track presence and list
    /// `presence_access`, and the identity must meet it. Enforced even in a dry-run rule
    /// (`enforce = false`): presence reveals who is online, so it is never opened by a dry run.
    pub(crate) fn decide_presence(&self, identity: &Identity, channel: &str) -> Verdict<'_> {
        let Some((rule, captures)) = self.rules.iter().find_map(|r| r.pattern.matches(channel).map(|c| (r, c))) else {
            return Verdict::Deny { rule: None, reason: DenyReason::NoRule };
        };
        let access = rule.presence.as_ref().and_then(|p| p.access.as_ref());
        let outcome = match access {
            None => Err(DenyReason::ActionNotListed),
            Some(req) => check(req, identity, &captures),
        };
        match outcome {
            Ok(()) => Verdict::Allow(rule),
            Err(reason) => Verdict::Deny { rule: Some(rule), reason },
        }
    }

    /// The presence settings of the rule `channel` matches, if it tracks presence.
    pub(crate) fn presence_rule(&self, channel: &str) -> Option<&PresenceRule> {
        self.rules.iter().find(|r| r.pattern.matches(channel).is_some()).and_then(|r| r.presence.as_ref())
    }

    /// The slow-consumer policy of the first rule whose pattern matches `channel`, for a
    /// server-made subscription (which no rule decides); `disconnect` when no rule matches.
    pub(crate) fn slow_consumer_for(&self, channel: &str) -> SlowConsumerPolicy {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(channel).is_some())
            .map_or(SlowConsumerPolicy::Disconnect, |r| r.slow_consumer)
    }

    /// What `channel` keeps: the history of the first rule matching it (the rule that decides
    /// its subscriptions), whoever publishes.
    pub(crate) fn retention(&self, channel: &str) -> Option<Retention> {
        self.rules.iter().find(|r| r.pattern.matches(channel).is_some()).and_then(|r| r.history)
    }

    /// The rule ids, in order.
    pub(crate) fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.id)
    }

    /// Forgets idle per-channel publish buckets (bounds memory under channel churn).
    pub(crate) fn forget_idle(&self) {
        for rate in self.rules.iter().filter_map(|r| r.publish_rate.as_ref()) {
            rate.forget_idle();
        }
    }

    /// The declaration of `method`, if the identity may call it.
    pub(crate) fn rpc(&self, identity: &Identity, method: &str) -> Result<&RpcMethod, ErrorCode> {
        let declared = self.rpc.get(method).ok_or(ErrorCode::UnknownMethod)?;
        let requirement =
            Requirement { scopes: declared.scopes.clone(), roles: declared.roles.clone(), claims: Default::default() };
        check(&requirement, identity, &Captures::new()).map_err(|_| ErrorCode::Forbidden)?;
        Ok(declared)
    }
}

fn check(req: &Requirement, identity: &Identity, captures: &Captures) -> Result<(), DenyReason> {
    if !req.scopes.iter().all(|s| identity.has_scope(s)) {
        return Err(DenyReason::MissingScope);
    }
    if !req.roles.is_empty() && !req.roles.iter().any(|r| identity.has_role(r)) {
        return Err(DenyReason::MissingRole);
    }
    for (claim, expected) in &req.claims {
        let expected = match expected.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            Some(name) => captures.get(name).map(String::as_str).ok_or(DenyReason::ClaimMismatch)?,
            None => expected.as_str(),
        };
        if identity.claims.get(claim).as_ref().and_then(Value::as_str) != Some(expected) {
            return Err(DenyReason::ClaimMismatch);
        }
    }
    Ok(())
}

/// Validates a payload, as decoded, against a rule's schema (compiled once, when the policy is
/// loaded); the error is a short human description. A valid payload takes `is_valid`, which
/// builds no error paths or messages; only a refused one is validated again for its first error.
pub(crate) fn check_schema(schema: &jsonschema::Validator, payload: &Value) -> Result<(), String> {
    if schema.is_valid(payload) {
        return Ok(());
    }
    match schema.iter_errors(payload).next() {
        Some(e) => Err(format!("payload does not match the schema at {}: {e}", e.instance_path().as_str())),
        // Both walks apply the same keywords; should they ever disagree, the payload stays refused.
        None => Err("payload does not match the schema".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(scopes: &[&str], roles: &[&str], claims: Value) -> Identity {
        Identity {
            subject: "u".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: 0,
            issued_at: None,
            token_id: None,
            claims: claims.as_object().cloned().unwrap_or_default().into(),
        }
    }

    fn policy(toml_rules: &str) -> Policy {
        #[derive(serde::Deserialize)]
        struct Rules {
            channels: Vec<ChannelRule>,
        }
        let rules: Rules = toml::from_str(toml_rules).expect("rules");
        Policy::load(&rules.channels, &[]).expect("policy")
    }

    const ORDERS: &str = r#"
        [[channels]]
        pattern = "tenant:{tenant}:orders"
        subscribe = { scopes = ["orders:read"], claims = { tenant = "{tenant}" } }
        publish = { scopes = ["orders:write"], claims = { tenant = "{tenant}" }, roles = ["admin", "service"] }
        [[channels]]
        pattern = "public"
        subscribe = {}
    "#;

    fn is_allowed(v: Verdict<'_>) -> bool {
        matches!(v, Verdict::Allow(_))
    }

    #[test]
    fn tenant_claims_bind_to_captured_segments() {
        let p = policy(ORDERS);
        let acme = identity(&["orders:read"], &[], serde_json::json!({"tenant": "acme"}));
        assert!(is_allowed(p.decide(&acme, ChannelAction::Subscribe, "tenant:acme:orders")));
        assert!(!is_allowed(p.decide(&acme, ChannelAction::Subscribe, "tenant:evil:orders")));
        assert!(!is_allowed(p.decide(&acme, ChannelAction::Publish, "tenant:acme:orders")));
        let writer = identity(&["orders:read", "orders:write"], &["service"], serde_json::json!({"tenant": "acme"}));
        assert!(is_allowed(p.decide(&writer, ChannelAction::Publish, "tenant:acme:orders")));
        let no_role = identity(&["orders:write"], &["viewer"], serde_json::json!({"tenant": "acme"}));
        assert!(matches!(
            p.decide(&no_role, ChannelAction::Publish, "tenant:acme:orders"),
            Verdict::Deny { reason: DenyReason::MissingRole, .. }
        ));
    }

    #[test]
    fn unmatched_channels_and_unlisted_actions_are_denied() {
        let p = policy(ORDERS);
        let anyone = identity(&[], &[], serde_json::json!({}));
        assert!(is_allowed(p.decide(&anyone, ChannelAction::Subscribe, "public")));
        assert!(matches!(
            p.decide(&anyone, ChannelAction::Publish, "public"),
            Verdict::Deny { reason: DenyReason::ActionNotListed, .. }
        ));
        assert!(matches!(
            p.decide(&anyone, ChannelAction::Subscribe, "private"),
            Verdict::Deny { reason: DenyReason::NoRule, rule: None }
        ));
    }

    #[test]
    fn stamps_carry_the_sub_and_listed_claims_only() {
        let p = policy(
            "[[channels]]\npattern = \"chat:{room}\"\nsubscribe = {}\npublish = {}\npublisher = { claims = [\"name\", \"team\"] }\n\
             [[channels]]\npattern = \"plain\"\npublish = {}\n",
        );
        let alice = identity(&[], &[], serde_json::json!({"sub": "alice", "name": "Alice", "email": "a@x"}));
        let Verdict::Allow(rule) = p.decide(&alice, ChannelAction::Publish, "chat:1") else { panic!("allowed") };
        assert_eq!(rule.stamp(&alice), Some(serde_json::json!({"sub": "u", "claims": {"name": "Alice"}})));
        let Verdict::Allow(plain) = p.decide(&alice, ChannelAction::Publish, "plain") else { panic!("allowed") };
        assert_eq!(plain.stamp(&alice), None);
        assert_eq!(p.server_stamp("chat:1"), Some(serde_json::json!({"server": true})));
        assert_eq!(p.server_stamp("plain"), None);
        assert_eq!(p.server_stamp("nothing"), None);
    }

    #[test]
    fn presence_is_denied_unless_the_rule_grants_it() {
        let p = policy(
            r#"
            [[channels]]
            pattern = "room:{room}"
            subscribe = {}
            presence = true
            presence_access = { claims = { room = "{room}" } }
            [[channels]]
            pattern = "hidden:{room}"
            subscribe = {}
            presence = true
            [[channels]]
            pattern = "plain"
            subscribe = {}
        "#,
        );
        let member = identity(&[], &[], serde_json::json!({"room": "a"}));
        assert!(is_allowed(p.decide_presence(&member, "room:a")));
        assert!(matches!(
            p.decide_presence(&member, "room:b"),
            Verdict::Deny { reason: DenyReason::ClaimMismatch, .. }
        ));
        assert!(matches!(
            p.decide_presence(&member, "hidden:a"),
            Verdict::Deny { reason: DenyReason::ActionNotListed, .. }
        ));
        assert!(matches!(
            p.decide_presence(&member, "plain"),
            Verdict::Deny { reason: DenyReason::ActionNotListed, .. }
        ));
        assert!(matches!(p.decide_presence(&member, "other"), Verdict::Deny { reason: DenyReason::NoRule, .. }));
        assert!(p.presence_rule("hidden:a").is_some());
        assert!(p.presence_rule("plain").is_none());
    }

    #[test]
    fn dry_run_rules_allow_but_report() {
        let p = policy("[[channels]]\npattern = \"x\"\nenforce = false\nsubscribe = { roles = [\"admin\"] }\n");
        let anyone = identity(&[], &[], serde_json::json!({}));
        assert!(matches!(p.decide(&anyone, ChannelAction::Subscribe, "x"), Verdict::DryRunDeny { .. }));
    }
}
