//! Revocations and bans kept in Redis, so that a node starting after every other node restarted
//! still refuses a revoked token and a banned client. The store is the cluster's Redis:
//! `cluster.quota_redis_url`, else the broker's `url` when `broker = "redis"`. With NATS and no
//! `quota_redis_url` nothing is persisted (a node then learns only what the nodes that are up
//! re-send when it says hello).
//!
//! Keys (`P` is `cluster.channel_prefix`):
//! - `P:state:revocations`, a sorted set: each member is `mac|{"revocation":..,"at":..}`, scored
//!   with the time (seconds since the Unix epoch) after which no token it covers can be valid: the
//!   revocation time (for `issued_before`, the later of it and the cut-off) plus
//!   `auth.max_token_lifetime_secs + auth.leeway_secs`. Every write drops the members past their
//!   score.
//! - `P:state:bans`, a hash: the field is the ban target's JSON (`{"kind":"ip","value":..}`), the
//!   value `mac|{"reason":..,"until":..}` (`until` in seconds since the Unix epoch). Lifting a ban
//!   deletes its field; a load, and every ten minutes a node that wrote bans, delete the fields
//!   past their `until`.
//!
//! `mac` is the hex HMAC-SHA256 with `cluster.signing_key_env` of `wsg-state1 \n key \n field \n
//! json` (`field` empty for revocations), or `-` on a node without a key. A node with a key
//! ignores (and counts, kind `state`) entries without a valid MAC, so whoever can write to Redis
//! still cannot plant a ban or a revocation that a keyed node would apply.
//!
//! Only the node that made a revocation or ban writes it (the others get it from the broker).
//! Writes go through one queue, in order, retried until Redis takes them. A node loads both keys
//! as it joins the cluster, retrying with the reconnection backoff until Redis answers; under
//! `cluster.state_failure = "closed"` (the default) it is not ready and refuses every handshake
//! with 503 `cluster_state_unavailable` until then, under `open` it admits meanwhile.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::BrokerError;
use super::signing::{Rejection, SigningKeys};
use crate::auth::{Revocation, RevocationList};
use crate::limits::{BanTarget, Bans};
use crate::observe::Stats;

/// At most this many writes wait for Redis; older ones are dropped beyond it (and counted).
const MAX_QUEUED: usize = 10_000;
const DOMAIN: &[u8] = b"wsg-state1\n";
/// How often a node that wrote bans deletes the expired ones from `P:state:bans` (a hash has no
/// per-field expiry that every Redis supports).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One change to the persisted state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Revoke { revocation: Revocation, at: u64 },
    Ban { target: BanTarget, reason: &'static str, until: u64 },
    Lift { target: BanTarget },
}

#[derive(Serialize, Deserialize)]
struct StoredRevocation {
    revocation: Revocation,
    at: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredBan {
    reason: String,
    until: u64,
}

/// Whether the persisted state has been loaded: handshakes wait for it (503) under
/// `cluster.state_failure = "closed"`.
#[derive(Default)]
pub(crate) struct StateGate {
    loaded: std::sync::atomic::AtomicBool,
}

impl StateGate {
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn open(&self) {
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// What a load found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub(crate) revocations: usize,
    pub(crate) bans: usize,
    /// Entries ignored: no valid MAC at a node with a key, or not parseable.
    pub(crate) refused: Vec<Rejection>,
}

pub(crate) struct StateStore {
    connector: super::redis::RedisConnector,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    revocations_key: String,
    bans_key: String,
    keys: Option<SigningKeys>,
    horizon_secs: u64,
    timeout: Duration,
    queue: Mutex<VecDeque<Op>>,
    wake: Notify,
    stats: Arc<Stats>,
}

impl StateStore {
    /// A store on the cluster's Redis, reached through `connector` (the node's one Redis
    /// connection factory: password and `cluster.tls_*` included).
    pub(crate) fn new(
        connector: super::redis::RedisConnector,
        prefix: &str,
        keys: Option<SigningKeys>,
        horizon_secs: u64,
        timeout: Duration,
        stats: Arc<Stats>,
    ) -> StateStore {
        StateStore {
            connector,
            connection: tokio::sync::Mutex::new(None),
            revocations_key: format!("{prefix}:state:revocations"),
            bans_key: format!("{prefix}:state:bans"),
            keys,
            horizon_secs,
            timeout,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            stats,
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let connection = tokio::time::timeout(self.timeout, self.connector.multiplexed())
            .await
            .map_err(|_| BrokerError::TimedOut("state store connection"))??;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    fn seal(&self, key: &str, field: &str, json: &str) -> String {
        match &self.keys {
            Some(keys) => {
                let mac = keys.sign_hex(&[DOMAIN, key.as_bytes(), b"\n", field.as_bytes(), b"\n", json.as_bytes()]);
                format!("{}|{json}", String::from_utf8_lossy(&mac))
            }
            None => format!("-|{json}"),
        }
    }

    /// The JSON of a stored value, or why it is ignored.
    fn open<'a>(&self, key: &str, field: &str, value: &'a str) -> Result<&'a str, Rejection> {
        let (mac, json) = value.split_once('|').ok_or(Rejection::Malformed)?;
        let Some(keys) = &self.keys else { return Ok(json) };
        if mac == "-" {
            return Err(Rejection::Unsigned);
        }
        let parts: [&[u8]; 6] = [DOMAIN, key.as_bytes(), b"\n", field.as_bytes(), b"\n", json.as_bytes()];
        if keys.verify_hex(&parts, mac.as_bytes()) { Ok(json) } else { Err(Rejection::BadSignature) }
    }

    /// Applies what Redis holds to this node's lists (as if another node had sent it) and deletes
    /// the expired entries. Fails when Redis does not answer within `cluster.broker_timeout_secs`.
    /// Loads the state, retrying with `pause` until it succeeds or `shutdown`; then opens
    /// `gate`. Reports each failure (the first one as an error log).
    pub(crate) async fn restore(
        &self,
        revocations: &RevocationList,
        bans: &Bans,
        gate: Option<&StateGate>,
        shutdown: &CancellationToken,
        pause: impl Fn(u32) -> Duration,
    ) -> Option<Loaded> {
        let mut attempt = 0u32;
        loop {
            let load = tokio::select! {
                _ = shutdown.cancelled() => return None,
                load = tokio::time::timeout(self.timeout * 2, self.load(revocations, bans)) => load,
            };
            let error = match load {
                Ok(Ok(loaded)) => {
                    if let Some(gate) = gate {
                        gate.open();
                    }
                    return Some(loaded);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            self.stats.record_broker_error("state_load");
            if attempt == 0 {
                tracing::error!(
                    target: "wsguard::cluster", error = %error, admitting = gate.is_none(),
                    "cannot load the cluster's revocations and bans; retrying"
                );
            }
            let wait = pause(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub(crate) async fn load(&self, revocations: &RevocationList, bans: &Bans) -> Result<Loaded, BrokerError> {
        let now = crate::auth::now_secs();
        let mut connection = self.connection().await?;
        let read = async {
            let (members, fields): (Vec<String>, Vec<(String, String)>) = redis::pipe()
                .cmd("ZRANGEBYSCORE")
                .arg(&self.revocations_key)
                .arg(now + 1)
                .arg("+inf")
                .cmd("HGETALL")
                .arg(&self.bans_key)
                .query_async(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>((members, fields))
        };
        let (members, fields) = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                self.forget_connection().await;
                return Err(e.into());
            }
            Err(_) => return Err(BrokerError::TimedOut("state store load")),
        };
        let mut loaded = Loaded::default();
        for member in &members {
            match self
                .open(&self.revocations_key, "", member)
                .and_then(|json| serde_json::from_str::<StoredRevocation>(json).map_err(|_| Rejection::Malformed))
            {
                Ok(StoredRevocation { revocation, at }) => {
                    revocations.apply_remote(revocation, at);
                    loaded.revocations += 1;
                }
                Err(reason) => loaded.refused.push(reason),
            }
        }
        let mut expired = Vec::new();
        for (field, value) in &fields {
            let parsed = self.open(&self.bans_key, field, value).and_then(|json| {
                let ban = serde_json::from_str::<StoredBan>(json).map_err(|_| Rejection::Malformed)?;
                let target = serde_json::from_str::<BanTarget>(field).map_err(|_| Rejection::Malformed)?;
                Ok((target, ban))
            });
            match parsed {
                Ok((_, StoredBan { until, .. })) if until <= now => expired.push(field.clone()),
                Ok((target, StoredBan { reason, until })) => {
                    bans.apply_remote(target, Duration::from_secs(until - now), crate::limits::ban_reason(&reason));
                    loaded.bans += 1;
                }
                Err(reason) => loaded.refused.push(reason),
            }
        }
        if !expired.is_empty() {
            let mut cleanup = redis::cmd("HDEL");
            cleanup.arg(&self.bans_key).arg(&expired);
            let _ = tokio::time::timeout(self.timeout, cleanup.query_async::<i64>(&mut connection)).await;
        }
        Ok(loaded)
    }

    /// Queues a change for Redis.
    pub(crate) fn push(&self, op: Op) {
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() >= MAX_QUEUED {
                queue.pop_front();
                self.stats.record_broker_error("persist");
            }
            queue.push_back(op);
        }
        self.wake.notify_one();
    }

    /// Another node lifted the ban on `target`: when a ban of it is still queued here (Redis was
    /// unreachable from this node), queue the lift after it, so that this node's late write
    /// cannot bring the lifted ban back into Redis.
    pub(crate) fn lift_if_queued(&self, target: &BanTarget) {
        let queued = {
            let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.iter().any(|op| matches!(op, Op::Ban { target: banned, .. } if banned == target))
        };
        if queued {
            self.push(Op::Lift { target: target.clone() });
        }
    }

    /// Writes queued changes in order until `shutdown`; a failed write is retried after `pause`
    /// (the reconnection backoff).
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken, pause: impl Fn(u32) -> Duration) {
        let mut attempt = 0u32;
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.tick().await;
        let mut has_banned = false;
        loop {
            let next = self.queue.lock().unwrap_or_else(PoisonError::into_inner).front().cloned();
            let Some(op) = next else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => continue,
                    _ = prune.tick(), if has_banned => {
                        has_banned = false;
                        if let Err(e) = self.prune().await {
                            tracing::debug!(target: "wsguard::cluster", error = %e, "expired bans not pruned");
                        }
                        continue;
                    }
                }
            };
            match self.write(&op).await {
                Ok(()) => {
                    attempt = 0;
                    has_banned |= matches!(op, Op::Ban { .. });
                    let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    if queue.front() == Some(&op) {
                        queue.pop_front();
                    }
                }
                Err(e) => {
                    self.stats.record_broker_error("persist");
                    tracing::warn!(target: "wsguard::cluster", error = %e, "revocation or ban not persisted yet; retrying");
                    self.forget_connection().await;
                    let wait = pause(attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Deletes the bans past their end from `P:state:bans`.
    async fn prune(&self) -> Result<(), BrokerError> {
        let now = crate::auth::now_secs();
        let mut connection = self.connection().await?;
        let mut read = redis::cmd("HGETALL");
        read.arg(&self.bans_key);
        let fields = tokio::time::timeout(self.timeout, read.query_async::<Vec<(String, String)>>(&mut connection))
            .await
            .map_err(|_| BrokerError::TimedOut("prune"))??;
        let expired: Vec<&String> = fields
            .iter()
            .filter(|(_, value)| {
                let json = value.split_once('|').map_or("", |(_, json)| json);
                serde_json::from_str::<StoredBan>(json).is_ok_and(|ban| ban.until <= now)
            })
            .map(|(field, _)| field)
            .collect();
        if !expired.is_empty() {
            let mut delete = redis::cmd("HDEL");
            delete.arg(&self.bans_key).arg(expired);
            tokio::time::timeout(self.timeout, delete.query_async::<i64>(&mut connection))
                .await
                .map_err(|_| BrokerError::TimedOut("prune"))??;
        }
        Ok(())
    }

    /// Writes what is still queued (at shutdown, after the writer task stopped), giving up at
    /// the first failure or after `within`.
    pub(crate) async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = self.queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some(op) = next else { return };
            match tokio::time::timeout_at(deadline, self.write(&op)).await {
                Ok(Ok(())) => {}
                _ => {
                    self.stats.record_broker_error("persist");
                    tracing::warn!(target: "wsguard::cluster", "revocations or bans left unpersisted at shutdown");
                    return;
                }
            }
        }
    }

    async fn write(&self, op: &Op) -> Result<(), BrokerError> {
        let now = crate::auth::now_secs();
        let mut pipe = redis::pipe();
        pipe.atomic();
        match op {
            Op::Revoke { revocation, at } => {
                let covers_until = match revocation {
                    Revocation::IssuedBefore(t) => (*t).max(*at),
                    _ => *at,
                };
                let expires = covers_until.saturating_add(self.horizon_secs);
                if expires <= now {
                    return Ok(());
                }
                let json = serde_json::to_string(&StoredRevocation { revocation: revocation.clone(), at: *at })
                    .unwrap_or_default();
                let member = self.seal(&self.revocations_key, "", &json);
                pipe.cmd("ZADD").arg(&self.revocations_key).arg(expires).arg(member).ignore();
                pipe.cmd("ZREMRANGEBYSCORE").arg(&self.revocations_key).arg("-inf").arg(now).ignore();
            }
            Op::Ban { target, reason, until } => {
                if *until <= now {
                    return Ok(());
                }
                let field = serde_json::to_string(target).unwrap_or_default();
                let json = serde_json::to_string(&StoredBan { reason: (*reason).to_string(), until: *until })
                    .unwrap_or_default();
                let value = self.seal(&self.bans_key, &field, &json);
                pipe.cmd("HSET").arg(&self.bans_key).arg(field).arg(value).ignore();
            }
            Op::Lift { target } => {
                let field = serde_json::to_string(target).unwrap_or_default();
                pipe.cmd("HDEL").arg(&self.bans_key).arg(field).ignore();
            }
        }
        let mut connection = self.connection().await?;
        match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut connection)).await {
            Ok(result) => result.map_err(BrokerError::from),
            Err(_) => Err(BrokerError::TimedOut("state store write")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lift_from_another_node_is_queued_after_a_ban_still_waiting_here() {
        let connector = super::super::redis::RedisConnector::new("redis://127.0.0.1:1", None, None).expect("url");
        let store = StateStore::new(connector, "t", None, 60, Duration::from_secs(1), Arc::new(Stats::default()));
        let ip = BanTarget::Ip("203.0.113.9".parse().expect("ip"));
        let user = BanTarget::User("mallory".into());
        store.lift_if_queued(&ip);
        assert!(store.queue.lock().expect("queue").is_empty(), "nothing of this node's to undo");
        store.push(Op::Ban { target: ip.clone(), reason: "operator", until: u64::MAX });
        store.lift_if_queued(&user);
        store.lift_if_queued(&ip);
        let queue = store.queue.lock().expect("queue");
        assert_eq!(queue.len(), 2);
        assert!(matches!(queue.back(), Some(Op::Lift { target }) if *target == ip));
    }
}
