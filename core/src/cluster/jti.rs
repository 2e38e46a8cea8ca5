//! Single-use `jti`s across the cluster (`auth.single_use_jti` with a cluster Redis): a token's
//! `jti` is spent with one atomic `SET <prefix>:jti:<jti> 1 NX EX <seconds until exp + leeway>`, so exactly
//! one handshake or `refresh` in the whole cluster wins it, and Redis forgets it when the token
//! could no longer be accepted anyway. Each node's own cache (auth/revocation.rs) is asked first;
//! this store is asked only for a `jti` the node has not seen.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::config::JtiFailure;
use super::redis::RedisStore;
use crate::auth::{JtiSpend, UsedJtis};

/// The used-jti record in the cluster's Redis.
pub(crate) struct RedisJtis {
    store: Arc<RedisStore>,
    key_prefix: String,
    failure: JtiFailure,
}

impl RedisJtis {
    pub(crate) fn new(store: Arc<RedisStore>, channel_prefix: &str, failure: JtiFailure) -> Self {
        RedisJtis { store, key_prefix: format!("{channel_prefix}:jti:"), failure }
    }
}

impl UsedJtis for RedisJtis {
    fn spend(&self, jti: &str, until_secs: u64) -> BoxFuture<'static, JtiSpend> {
        let store = Arc::clone(&self.store);
        let key = format!("{}{jti}", self.key_prefix);
        let failure = self.failure;
        // A relative expiry: Redis's clock may differ from this node's, and an absolute one set in
        // Redis's past would expire the record at once (the token then usable once per node).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ttl_secs = until_secs.saturating_sub(now).max(1);
        Box::pin(async move {
            let set = store
                .with_connection("jti", |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("EX")
                        .arg(ttl_secs)
                        .query_async::<Option<String>>(&mut c)
                        .await
                })
                .await;
            match set {
                Ok(Some(_)) => JtiSpend::First,
                Ok(None) => JtiSpend::Replayed,
                Err(e) => {
                    tracing::warn!(
                        target: "wsguard::cluster", error = %e, policy = ?failure,
                        "cluster used-jti store unreachable"
                    );
                    match failure {
                        JtiFailure::Closed => JtiSpend::Unavailable,
                        JtiFailure::Open => JtiSpend::First,
                    }
                }
            }
        })
    }
}
