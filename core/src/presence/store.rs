//! Cluster-wide presence in Redis, with leases like the per-user connection quota
//! (cluster/quota.rs): scores are expiry times in Redis server time, so node clocks do not matter.
//!
//! Keys (`P` is `cluster.channel_prefix`; channel names never contain a space, so the session
//! key of a channel and user cannot be another channel's):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:presence:u:<channel>` | sorted set | user -> expiry of their latest lease renewal |
//! | `P:presence:s:<channel> <user>` | sorted set | `node:session` -> expiry |
//! | `P:presence:c:<channel>` | hash | user -> the JSON of their revealed claims |
//!
//! A user joins when a script adds them to the users set and leaves when a script removes them,
//! so each `join` and `leave` is announced by exactly one node. Reads count unexpired leases only.
//! The scripts name the session keys they build from `ARGV` (standalone Redis, as the rest of the
//! cluster state).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Member, PresencePage, PresenceStats, Unavailable};
use crate::cluster::RedisStore;

/// KEYS: users, sessions, claims. ARGV: ttl ms, user, claims JSON, members... Adds or renews the
/// members' leases; returns 1 when the user was not present (a join).
const JOIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[2], ttl)
local added = redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ttl)
return added
";

/// KEYS: users, sessions, claims. ARGV: member, user. Removes the lease; returns 1 when it was
/// the user's last live one and this call removed the user (a leave).
const LEAVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
return redis.call('ZREM', KEYS[1], ARGV[2])
";

/// KEYS: users, claims. ARGV: session key prefix. Removes the users whose last lease expired
/// (at most 1000 a call); returns them (their leaves).
const SWEEP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)) do
  local sessions = ARGV[1] .. user
  redis.call('ZREMRANGEBYSCORE', sessions, '-inf', now)
  if redis.call('ZCARD', sessions) == 0 then
    redis.call('ZREM', KEYS[1], user)
    redis.call('HDEL', KEYS[2], user)
    table.insert(gone, user)
  end
end
return gone
";

/// KEYS: users, claims. ARGV: session key prefix, limit, after ('' for the start). Returns
/// `[more, user, sessions, claims, ...]` for up to `limit` present users after `after`, by subject
/// in byte order (compared byte by byte: Lua's `<` on strings follows the Redis server's locale).
const MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
table.sort(users, less)
local limit = tonumber(ARGV[2])
local out = {0}
local n = 0
for _, user in ipairs(users) do
  if ARGV[3] == '' or less(ARGV[3], user) then
    local sessions = redis.call('ZCOUNT', ARGV[1] .. user, '(' .. now, '+inf')
    if sessions > 0 then
      if n == limit then out[1] = 1 break end
      n = n + 1
      table.insert(out, user)
      table.insert(out, sessions)
      table.insert(out, redis.call('HGET', KEYS[2], user) or '{}')
    end
  end
end
return out
";

/// KEYS: users. ARGV: session key prefix. Returns `{users, sessions}` counting live leases.
const STATS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local users, clients = 0, 0
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local n = redis.call('ZCOUNT', ARGV[1] .. user, '(' .. now, '+inf')
  if n > 0 then
    users = users + 1
    clients = clients + n
  end
end
return {users, clients}
";

/// The presence keys of one cluster in Redis.
pub(super) struct RedisPresence {
    store: Arc<RedisStore>,
    /// `P:presence:`.
    root: String,
    node_id: String,
    ttl: Duration,
    join: redis::Script,
    leave: redis::Script,
    sweep: redis::Script,
    members: redis::Script,
    stats: redis::Script,
}

fn failed(e: impl std::fmt::Display) -> Unavailable {
    tracing::warn!(target: "wsguard::presence", error = %e, "presence store unreachable");
    Unavailable
}

impl RedisPresence {
    pub(super) fn new(store: Arc<RedisStore>, prefix: &str, node_id: &str, ttl: Duration) -> Self {
        RedisPresence {
            store,
            root: format!("{prefix}:presence:"),
            node_id: node_id.to_string(),
            ttl,
            join: redis::Script::new(JOIN),
            leave: redis::Script::new(LEAVE),
            sweep: redis::Script::new(SWEEP),
            members: redis::Script::new(MEMBERS),
            stats: redis::Script::new(STATS),
        }
    }

    fn users_key(&self, channel: &str) -> String {
        format!("{}u:{channel}", self.root)
    }

    fn claims_key(&self, channel: &str) -> String {
        format!("{}c:{channel}", self.root)
    }

    /// The prefix of a channel's session keys (the user follows).
    fn sessions_prefix(&self, channel: &str) -> String {
        format!("{}s:{channel} ", self.root)
    }

    fn member(&self, session_id: u64) -> String {
        format!("{}:{session_id}", self.node_id)
    }

    /// Adds or renews the leases of `sessions`; true when the user was not present.
    pub(super) async fn join(
        &self,
        channel: &str,
        user: &str,
        sessions: &[u64],
        claims: &Map<String, Value>,
    ) -> Result<bool, Unavailable> {
        let keys =
            [self.users_key(channel), format!("{}{user}", self.sessions_prefix(channel)), self.claims_key(channel)];
        let claims = Value::Object(claims.clone()).to_string();
        let members: Vec<String> = sessions.iter().map(|s| self.member(*s)).collect();
        let ttl_ms = self.ttl.as_millis() as u64;
        let added = self
            .store
            .with_connection("presence", |mut c| {
                let mut invocation = self.join.prepare_invoke();
                invocation.key(&keys[..]).arg(ttl_ms).arg(user).arg(claims).arg(members);
                async move { invocation.invoke_async::<i64>(&mut c).await }
            })
            .await
            .map_err(failed)?;
        Ok(added == 1)
    }

    /// Removes one session's lease; true when it was the user's last (this call removed them).
    pub(super) async fn leave(&self, channel: &str, user: &str, session_id: u64) -> Result<bool, Unavailable> {
        let keys =
            [self.users_key(channel), format!("{}{user}", self.sessions_prefix(channel)), self.claims_key(channel)];
        let member = self.member(session_id);
        let removed = self
            .store
            .with_connection("presence", |mut c| {
                let mut invocation = self.leave.prepare_invoke();
                invocation.key(&keys[..]).arg(member).arg(user);
                async move { invocation.invoke_async::<i64>(&mut c).await }
            })
            .await
            .map_err(failed)?;
        Ok(removed == 1)
    }

    /// Removes the users of `channel` whose every lease expired; returns them.
    pub(super) async fn sweep(&self, channel: &str) -> Result<Vec<String>, Unavailable> {
        let keys = [self.users_key(channel), self.claims_key(channel)];
        let prefix = self.sessions_prefix(channel);
        self.store
            .with_connection("presence", |mut c| {
                let mut invocation = self.sweep.prepare_invoke();
                invocation.key(&keys[..]).arg(prefix);
                async move { invocation.invoke_async::<Vec<String>>(&mut c).await }
            })
            .await
            .map_err(failed)
    }

    pub(super) async fn members(
        &self,
        channel: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<PresencePage, Unavailable> {
        let keys = [self.users_key(channel), self.claims_key(channel)];
        let prefix = self.sessions_prefix(channel);
        let after = after.unwrap_or("").to_string();
        let reply = self
            .store
            .with_connection("presence", |mut c| {
                let mut invocation = self.members.prepare_invoke();
                invocation.key(&keys[..]).arg(prefix).arg(limit).arg(after);
                async move { invocation.invoke_async::<Vec<redis::Value>>(&mut c).await }
            })
            .await
            .map_err(failed)?;
        let mut values = reply.into_iter();
        let more: i64 = values.next().map(redis::from_redis_value).transpose().map_err(failed)?.unwrap_or(0);
        let mut members = Vec::new();
        while let (Some(user), Some(sessions), Some(claims)) = (values.next(), values.next(), values.next()) {
            let user: String = redis::from_redis_value(user).map_err(failed)?;
            let sessions: u64 = redis::from_redis_value(sessions).map_err(failed)?;
            let claims: String = redis::from_redis_value(claims).map_err(failed)?;
            let claims = serde_json::from_str::<Map<String, Value>>(&claims).unwrap_or_default();
            members.push(Member { user, sessions, claims });
        }
        let next = (more == 1).then(|| members.last().map(|m| m.user.clone())).flatten();
        Ok(PresencePage { members, next })
    }

    pub(super) async fn stats(&self, channel: &str) -> Result<PresenceStats, Unavailable> {
        let key = self.users_key(channel);
        let prefix = self.sessions_prefix(channel);
        let (users, clients) = self
            .store
            .with_connection("presence", |mut c| {
                let mut invocation = self.stats.prepare_invoke();
                invocation.key(key).arg(prefix);
                async move { invocation.invoke_async::<(u64, u64)>(&mut c).await }
            })
            .await
            .map_err(failed)?;
        Ok(PresenceStats { users, clients })
    }
}
