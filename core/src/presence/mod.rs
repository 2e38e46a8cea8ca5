//! Presence: who is subscribed to a channel whose rule has `presence = true`, counted per user
//! (docs/PROTOCOL.md, "Presence"). Every subscriber of such a channel is a member; a user is
//! present while at least one of their sessions is subscribed.
//!
//! 1. This node keeps its own members (channel -> user -> sessions and the claims the rule lets
//!    them reveal). With the memory broker that table is the answer.
//! 2. With a cluster Redis (`cluster.quota_redis_url`, else the Redis broker), every member is
//!    also a lease in Redis (store.rs), renewed every third of `cluster.lease_ttl_secs`: a dead
//!    node's members expire within the lease, and reads count only unexpired leases.
//! 3. `join` and `leave` are decided where the user's membership changes atomically (this node's
//!    table, or a Redis script), so they are coalesced per user across the cluster and announced
//!    exactly once each, then sent like a publication on the channel (every node's subscribers).
//!
//! Presence never decides access (the policy does) and never fails a subscription: a Redis
//! failure is counted and logged, and the next renewal repairs the lease.

mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::cluster::{BrokerKind, Cluster, ClusterSettings};
use crate::config::problems::Problems;
use crate::observe::Stats;
use crate::policy::{ChannelRule, PresenceRule};
use crate::protocol::ServerFrame;
use store::RedisPresence;

/// One present user, as `presence` replies and `ServerHandle::presence` show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The user's subject.
    pub user: String,
    /// How many of the user's sessions are subscribed (across the cluster).
    pub sessions: u64,
    /// The claims the channel rule's `presence_claims` lists that the user's token carries.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub claims: Map<String, Value>,
}

/// One page of a channel's members, ordered by subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresencePage {
    /// The members of this page (at most the requested limit).
    pub members: Vec<Member>,
    /// When more members follow: the subject to pass as `after` for the next page.
    pub next: Option<String>,
}

/// A channel's presence counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PresenceStats {
    /// Distinct users subscribed.
    pub users: u64,
    /// Sessions subscribed (a user with two sessions counts twice).
    pub clients: u64,
}

/// Why presence could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

/// One user's sessions on this node, in one channel.
struct LocalUser {
    sessions: HashSet<u64>,
    claims: Arc<Map<String, Value>>,
}

/// One channel's members on this node.
#[derive(Default)]
struct LocalChannel {
    join_leave: bool,
    users: HashMap<String, LocalUser>,
}

/// What leaving changed on this node.
#[derive(Clone, Copy)]
struct LeftHere {
    is_last_here: bool,
    join_leave: bool,
}

/// The node's presence: its own members, and the cluster's through Redis when there is one.
pub(crate) struct Presence {
    local: Mutex<HashMap<Arc<str>, LocalChannel>>,
    redis: Option<RedisPresence>,
    cluster: Arc<Cluster>,
    stats: Arc<Stats>,
    /// `cluster.lease_ttl_secs`.
    ttl: Duration,
}

/// Presence across a NATS cluster needs a Redis to hold the members: NATS core has no atomic
/// counters or expiring keys (its key-value store is JetStream, which wsguard does not use), so
/// the per-user coalescing and a dead node's expiry could not be exact.
pub(crate) fn validate(channels: &[ChannelRule], cluster: &ClusterSettings, problems: &mut Problems) {
    if cluster.broker != BrokerKind::Nats || cluster.quota_url.is_some() {
        return;
    }
    for (i, _) in channels.iter().enumerate().filter(|(_, rule)| rule.presence) {
        problems.push(
            format!("channels[{i}].presence"),
            "with `cluster.broker = \"nats\"` presence needs `cluster.quota_redis_url` (the members are kept in Redis)",
        );
    }
}

/// The claims of `identity` that `rule` lets a member reveal.
fn revealed(identity: &Identity, rule: &PresenceRule) -> Map<String, Value> {
    rule.claims.iter().filter_map(|name| identity.claims.get(name).map(|v| (name.clone(), v))).collect()
}

impl Presence {
    /// The presence of a node built with `cluster`.
    pub(crate) fn new(settings: &ClusterSettings, cluster: Arc<Cluster>, stats: Arc<Stats>) -> Arc<Presence> {
        let redis = cluster
            .redis_store()
            .map(|store| RedisPresence::new(store, &settings.channel_prefix, cluster.node_id(), settings.lease_ttl));
        Arc::new(Presence { local: Mutex::default(), redis, cluster, stats, ttl: settings.lease_ttl })
    }

    /// Session `session_id` of `identity` subscribed to `channel`, whose rule tracks presence.
    /// Announces a `join` when this is the user's first session there (cluster-wide) and the rule
    /// has `join_leave`. Never fails: a Redis failure leaves the lease to the next renewal.
    pub(crate) async fn join(
        self: &Arc<Self>,
        channel: &str,
        identity: &Identity,
        session_id: u64,
        rule: &PresenceRule,
    ) {
        let claims = Arc::new(revealed(identity, rule));
        let user = identity.subject.as_str();
        let is_first_here = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            let members = local.entry(Arc::from(channel)).or_default();
            members.join_leave = rule.join_leave;
            let entry = members
                .users
                .entry(user.to_string())
                .or_insert_with(|| LocalUser { sessions: HashSet::new(), claims: Arc::clone(&claims) });
            entry.claims = Arc::clone(&claims);
            entry.sessions.insert(session_id) && entry.sessions.len() == 1
        };
        let is_new = match &self.redis {
            None => is_first_here,
            Some(redis) => redis.join(channel, user, &[session_id], &claims).await.unwrap_or(false),
        };
        if is_new && rule.join_leave {
            let frame = ServerFrame::Join { channel, user, claims: Some(&*claims).filter(|c| !c.is_empty()) };
            self.announce(channel, frame, "join");
        }
    }

    /// Session `session_id` of `user` left `channel` (unsubscribed, or dropped by a
    /// re-authorization). Announces a `leave` when it was the user's last session there
    /// (cluster-wide) and the rule the channel was joined under has `join_leave`.
    pub(crate) async fn leave(self: &Arc<Self>, channel: &str, user: &str, session_id: u64) {
        if let Some(left) = self.leave_here(channel, user, session_id) {
            self.left(channel, user, session_id, left).await;
        }
    }

    /// [`Presence::leave`] for a session that is ending (its loop does not wait for Redis): this
    /// node's table at once, the rest in a task.
    pub(crate) fn leave_later(self: &Arc<Self>, channel: &str, user: &str, session_id: u64) {
        let Some(left) = self.leave_here(channel, user, session_id) else { return };
        if self.redis.is_none() && !(left.is_last_here && left.join_leave) {
            return;
        }
        let (presence, channel, user) = (Arc::clone(self), channel.to_string(), user.to_string());
        self.cluster.runtime().spawn(async move { presence.left(&channel, &user, session_id, left).await });
    }

    /// Removes the session from this node's table; None when it was not a member.
    fn leave_here(&self, channel: &str, user: &str, session_id: u64) -> Option<LeftHere> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let members = local.get_mut(channel)?;
        let join_leave = members.join_leave;
        let entry = members.users.get_mut(user)?;
        if !entry.sessions.remove(&session_id) {
            return None;
        }
        let is_last_here = entry.sessions.is_empty();
        if is_last_here {
            members.users.remove(user);
            if members.users.is_empty() {
                local.remove(channel);
            }
        }
        Some(LeftHere { is_last_here, join_leave })
    }

    /// The cluster side of a leave, and its announcement.
    async fn left(self: &Arc<Self>, channel: &str, user: &str, session_id: u64, left: LeftHere) {
        let is_gone = match &self.redis {
            None => left.is_last_here,
            Some(redis) => redis.leave(channel, user, session_id).await.unwrap_or(false),
        };
        if is_gone && left.join_leave {
            self.announce(channel, ServerFrame::Leave { channel, user }, "leave");
        }
    }

    fn announce(self: &Arc<Self>, channel: &str, frame: ServerFrame<'_>, kind: &'static str) {
        self.stats.record_presence_announcement(kind);
        // Without waiting for the broker: a failure is counted in wsguard_broker_errors_total.
        let _ = self.cluster.send_frame(channel, frame.encode()).detach();
    }

    /// Up to `limit` members of `channel` after the subject `after`, ordered by subject.
    pub(crate) async fn members(
        &self,
        channel: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<PresencePage, Unavailable> {
        if let Some(redis) = &self.redis {
            return redis.members(channel, limit, after).await;
        }
        let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(members) = local.get(channel) else { return Ok(PresencePage { members: Vec::new(), next: None }) };
        let mut users: Vec<(&String, &LocalUser)> =
            members.users.iter().filter(|(user, _)| after.is_none_or(|a| user.as_str() > a)).collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let next = (users.len() > limit).then(|| users[limit - 1].0.clone());
        let members = users
            .into_iter()
            .take(limit)
            .map(|(user, entry)| Member {
                user: user.clone(),
                sessions: entry.sessions.len() as u64,
                claims: (*entry.claims).clone(),
            })
            .collect();
        Ok(PresencePage { members, next })
    }

    /// How many users and sessions are subscribed to `channel`.
    pub(crate) async fn stats(&self, channel: &str) -> Result<PresenceStats, Unavailable> {
        if let Some(redis) = &self.redis {
            return redis.stats(channel).await;
        }
        let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(members) = local.get(channel) else { return Ok(PresenceStats { users: 0, clients: 0 }) };
        let clients = members.users.values().map(|u| u.sessions.len() as u64).sum();
        Ok(PresenceStats { users: members.users.len() as u64, clients })
    }

    /// With Redis: renews this node's leases and sweeps the expired members of its channels
    /// (announcing their `leave`) every third of the lease, until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(redis) = &self.redis else { return };
        let mut renew = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(10)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = renew.tick() => {}
            }
            let held = self.held();
            for (channel, join_leave, users) in held {
                for (user, sessions, claims) in users {
                    // A lease that expired meanwhile (Redis was unreachable longer than the
                    // lease) comes back: the user is announced again, as they left.
                    if redis.join(&channel, &user, &sessions, &claims).await == Ok(true) && join_leave {
                        let frame = ServerFrame::Join {
                            channel: &channel,
                            user: &user,
                            claims: Some(&*claims).filter(|c| !c.is_empty()),
                        };
                        self.announce(&channel, frame, "join");
                    }
                }
                if let Ok(gone) = redis.sweep(&channel).await
                    && join_leave
                {
                    for user in gone {
                        self.announce(&channel, ServerFrame::Leave { channel: &channel, user: &user }, "leave");
                    }
                }
            }
        }
    }

    /// What this node holds, copied out of the lock: channel, `join_leave`, and per user the
    /// session ids and revealed claims.
    #[allow(clippy::type_complexity, reason = "a snapshot used once, by `run`")]
    fn held(&self) -> Vec<(String, bool, Vec<(String, Vec<u64>, Arc<Map<String, Value>>)>)> {
        let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        local
            .iter()
            .map(|(channel, members)| {
                let users = members
                    .users
                    .iter()
                    .map(|(user, entry)| {
                        (user.clone(), entry.sessions.iter().copied().collect(), Arc::clone(&entry.claims))
                    })
                    .collect();
                (channel.to_string(), members.join_leave, users)
            })
            .collect()
    }
}
