//! Cluster-wide per-user connection quotas in Redis. Each session holds a lease: a member
//! `node_id:n` of the sorted set `P:conn:<user>` scored with its expiry (Redis server time, so
//! node clocks do not matter). Admission counts the unexpired members atomically (a Lua script),
//! nodes renew their leases every third of `cluster.lease_ttl_secs`, and a session's end removes
//! its lease. When a node dies its leases simply expire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::QuotaFailure;
use super::redis::RedisStore;
use super::settings::ClusterSettings;

/// KEYS[1] the user's set; ARGV: limit, ttl ms, member. Returns 1 when admitted.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
";

/// KEYS[1] the user's set; ARGV: ttl ms, members... Re-adds members whose entry expired meanwhile
/// (the session is still live, so it still counts).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
";

/// What the quota store said about one handshake.
pub(crate) enum LeaseOutcome {
    /// Admitted; the lease (None when the store was unreachable and the policy is `open`)
    /// is held for the session's lifetime.
    Admitted(Option<Lease>),
    /// The user already holds `limit` sessions across the cluster.
    Full,
    /// The store was unreachable and the policy is `closed`.
    Unavailable,
}

/// One session's lease; dropping it releases the entry.
pub(crate) struct Lease {
    quota: Arc<LeaseQuota>,
    user: String,
    member: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.quota.leases.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.member);
        let _ = self.quota.releases.send((std::mem::take(&mut self.user), std::mem::take(&mut self.member)));
    }
}

pub(crate) struct LeaseQuota {
    store: Arc<RedisStore>,
    key_prefix: String,
    node_id: String,
    ttl: Duration,
    failure: QuotaFailure,
    next: AtomicU64,
    /// member -> user, for renewal.
    leases: Mutex<HashMap<String, String>>,
    releases: mpsc::UnboundedSender<(String, String)>,
    released: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, String)>>,
    /// The scripts, hashed once (`EVALSHA`, loaded on first use).
    acquire_script: redis::Script,
    renew_script: redis::Script,
}

impl LeaseQuota {
    /// The quota kept in `store` for this node, with `[cluster]`'s prefix, lease lifetime and
    /// failure policy.
    pub(crate) fn new(config: &ClusterSettings, store: Arc<RedisStore>, node_id: &str) -> Arc<Self> {
        let prefix = &config.channel_prefix;
        let (ttl, failure) = (config.lease_ttl, config.quota_failure);
        let (releases, released) = mpsc::unbounded_channel();
        Arc::new(LeaseQuota {
            store,
            key_prefix: format!("{prefix}:conn:"),
            node_id: node_id.to_string(),
            ttl,
            failure,
            next: AtomicU64::new(1),
            leases: Mutex::new(HashMap::new()),
            releases,
            released: tokio::sync::Mutex::new(released),
            acquire_script: redis::Script::new(ACQUIRE),
            renew_script: redis::Script::new(RENEW),
        })
    }

    /// Takes a lease for `user` if the cluster holds fewer than `limit` sessions of theirs.
    pub(crate) async fn acquire(self: &Arc<Self>, user: &str, limit: u32) -> LeaseOutcome {
        let member = format!("{}:{}", self.node_id, self.next.fetch_add(1, Ordering::Relaxed));
        let key = format!("{}{user}", self.key_prefix);
        let ttl_ms = self.ttl.as_millis() as u64;
        let admitted = self
            .store
            .with_connection("quota", |mut c| {
                let script = &self.acquire_script;
                let member = member.clone();
                let key = key.clone();
                async move { script.key(key).arg(limit).arg(ttl_ms).arg(member).invoke_async::<i64>(&mut c).await }
            })
            .await;
        match admitted {
            Ok(1) => {
                self.leases.lock().unwrap_or_else(PoisonError::into_inner).insert(member.clone(), user.to_string());
                LeaseOutcome::Admitted(Some(Lease { quota: Arc::clone(self), user: user.to_string(), member }))
            }
            Ok(_) => LeaseOutcome::Full,
            Err(e) => {
                tracing::warn!(
                    target: "wsguard::cluster", error = %e, policy = ?self.failure,
                    "cluster quota store unreachable"
                );
                match self.failure {
                    QuotaFailure::Open => LeaseOutcome::Admitted(None),
                    QuotaFailure::Closed => LeaseOutcome::Unavailable,
                }
            }
        }
    }

    async fn release(&self, batch: Vec<(String, String)>) {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        for (user, member) in batch {
            by_user.entry(user).or_default().push(member);
        }
        let prefix = &self.key_prefix;
        let _ = self
            .store
            .with_connection("quota", |mut c| async move {
                let mut pipe = redis::pipe();
                for (user, members) in by_user {
                    pipe.cmd("ZREM").arg(format!("{prefix}{user}")).arg(members).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await;
    }

    async fn renew(&self) {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        for (member, user) in self.leases.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            by_user.entry(user.clone()).or_default().push(member.clone());
        }
        if by_user.is_empty() {
            return;
        }
        let ttl_ms = self.ttl.as_millis() as u64;
        let prefix = &self.key_prefix;
        let _ = self
            .store
            .with_connection("quota", |mut c| async move {
                let script = &self.renew_script;
                for (user, members) in by_user {
                    let mut invocation = script.key(format!("{prefix}{user}"));
                    invocation.arg(ttl_ms);
                    for member in members {
                        invocation.arg(member);
                    }
                    invocation.invoke_async::<i64>(&mut c).await?;
                }
                Ok(())
            })
            .await;
    }

    /// Renews leases and sends releases until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut renew = tokio::time::interval((self.ttl / 3).max(std::time::Duration::from_millis(10)));
        renew.tick().await;
        loop {
            let mut released = self.released.lock().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = renew.tick() => {
                    drop(released);
                    self.renew().await;
                }
                Some(first) = released.recv() => {
                    let mut batch = vec![first];
                    while let Ok(next) = released.try_recv() {
                        batch.push(next);
                    }
                    drop(released);
                    self.release(batch).await;
                }
            }
        }
    }

    /// Sends the releases still queued (after the sessions ended at shutdown).
    pub(crate) async fn flush(&self, timeout: Duration) {
        let batch: Vec<_> = {
            let mut released = self.released.lock().await;
            std::iter::from_fn(|| released.try_recv().ok()).collect()
        };
        if !batch.is_empty() {
            let _ = tokio::time::timeout(timeout, self.release(batch)).await;
        }
    }
}
