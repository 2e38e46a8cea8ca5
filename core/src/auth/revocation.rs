//! Revocation and single-use tokens. Both are checked at every handshake and every in-band
//! refresh; live sessions re-check their identity whenever the revocation list changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::identity::Identity;
use super::verify::{TokenError, now_secs};
use crate::observe::{Event, EventSink};

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// One token, by its `jti`.
    TokenId(String),
    /// Every token of a subject issued up to now (tokens issued later stay valid).
    Subject(String),
    /// Every token issued before this time (seconds since the Unix epoch).
    IssuedBefore(u64),
}

#[derive(Default)]
struct Lists {
    /// jti -> when the entry may be forgotten (the revocation time plus the longest lifetime).
    token_ids: HashMap<String, u64>,
    /// sub -> revocation time: tokens with `iat` at or before it are revoked.
    subjects: HashMap<String, u64>,
    issued_before: u64,
}

/// Told of every revocation made on this node, to tell the other nodes (the cluster).
pub(crate) trait RevocationBroadcast: Send + Sync {
    /// `revocation` was made here at `at` (seconds since the Unix epoch).
    fn revoked(&self, revocation: &Revocation, at: u64);
}

/// What a server's list does besides listing: report and broadcast.
struct Effects {
    events: EventSink,
    broadcast: Box<dyn RevocationBroadcast>,
}

/// The revocation list, with a change counter live sessions watch. In a server it is also the one
/// owner of a revocation's side effects: the `revocation_applied` event and the broadcast to the
/// other nodes happen in [`RevocationList::revoke`] and `apply_remote`, nowhere else.
pub struct RevocationList {
    lists: Mutex<Lists>,
    max_lifetime_secs: u64,
    changed: watch::Sender<u64>,
    effects: OnceLock<Effects>,
}

impl Revocation {
    /// The one parser of a host's revocation: exactly one of a `jti`, a subject (its tokens
    /// issued until now) or a time (tokens issued before it, seconds since the Unix epoch). Every
    /// binding calls it (through [`crate::host::revocation`]).
    ///
    /// Errors: [`crate::Error::InvalidArgument`] for none or more than one.
    pub fn from_parts(
        jti: Option<&str>,
        sub: Option<&str>,
        issued_before: Option<u64>,
    ) -> Result<Revocation, crate::Error> {
        match (jti, sub, issued_before) {
            (Some(jti), None, None) => Ok(Revocation::TokenId(jti.to_owned())),
            (None, Some(sub), None) => Ok(Revocation::Subject(sub.to_owned())),
            (None, None, Some(before)) => Ok(Revocation::IssuedBefore(before)),
            _ => Err(crate::Error::InvalidArgument("a revocation takes exactly one of jti, sub, issued_before".into())),
        }
    }
}

impl RevocationList {
    /// An empty list; entries are kept as long as a token issued before them could be valid.
    pub fn new(max_lifetime_secs: u64) -> Self {
        RevocationList {
            lists: Mutex::new(Lists::default()),
            max_lifetime_secs,
            changed: watch::Sender::new(0),
            effects: OnceLock::new(),
        }
    }

    /// Makes this the server's list: revocations are reported to `events` and those made here are
    /// broadcast (once; later calls are ignored).
    pub(crate) fn set_effects(&self, events: EventSink, broadcast: Box<dyn RevocationBroadcast>) {
        let _ = self.effects.set(Effects { events, broadcast });
    }

    /// Adds a revocation made on this node and wakes every session to re-check itself. In a
    /// server it is reported (`revocation_applied`, even when it was already in force) and sent to
    /// the other nodes.
    pub fn revoke(&self, revocation: Revocation) {
        let at = now_secs();
        self.revoke_at(revocation.clone(), at);
        if let Some(effects) = self.effects.get() {
            effects.broadcast.revoked(&revocation, at);
            effects.events.emit(Event::RevocationApplied { revocation });
        }
    }

    /// Applies a revocation another node made at `at`; reported when it changed anything here.
    pub(crate) fn apply_remote(&self, revocation: Revocation, at: u64) {
        if self.revoke_at(revocation.clone(), at)
            && let Some(effects) = self.effects.get()
        {
            effects.events.emit(Event::RevocationApplied { revocation });
        }
    }

    /// Adds a revocation made at `at` (seconds since the Unix epoch; another node's revocation
    /// arrives later than it was made). Wakes the sessions and returns true when it changed
    /// anything (applying the same revocation twice is a no-op).
    fn revoke_at(&self, revocation: Revocation, at: u64) -> bool {
        let now = now_secs();
        let changed = {
            let mut lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget entries no token can still match.
            lists.token_ids.retain(|_, until| *until > now);
            let horizon = now.saturating_sub(self.max_lifetime_secs);
            lists.subjects.retain(|_, revoked_at| *revoked_at > horizon);
            match revocation {
                Revocation::TokenId(jti) => {
                    let until = at.saturating_add(self.max_lifetime_secs);
                    until > now && lists.token_ids.insert(jti, until).is_none()
                }
                Revocation::Subject(sub) => {
                    let entry = lists.subjects.entry(sub).or_insert(0);
                    let is_newer = at > *entry;
                    *entry = (*entry).max(at);
                    is_newer
                }
                Revocation::IssuedBefore(t) => {
                    let is_newer = t > lists.issued_before;
                    lists.issued_before = lists.issued_before.max(t);
                    is_newer
                }
            }
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        changed
    }

    /// True when the identity's token is revoked.
    pub fn is_revoked(&self, identity: &Identity) -> bool {
        let lists = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        // A token without iat cannot prove it was issued after a revocation: treat it as old.
        let issued = identity.issued_at.unwrap_or(0);
        identity.token_id.as_ref().is_some_and(|j| lists.token_ids.contains_key(j))
            || lists.subjects.get(&identity.subject).is_some_and(|at| issued <= *at)
            || issued < lists.issued_before
    }

    /// A receiver that changes whenever a revocation is added.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Used `jti`s, for `auth.single_use_jti`: this node's own record, then the cluster's (Redis)
/// when there is one.
pub(crate) struct JtiCache {
    used: Mutex<HashMap<String, u64>>,
    capacity: usize,
    /// Tokens are accepted until `exp + leeway`, so a jti is remembered that long.
    leeway_secs: u64,
    /// The cluster-wide record (cluster/jti.rs); None: single use per node.
    cluster: Option<Arc<dyn UsedJtis>>,
}

/// Why a single-use check failed.
pub(crate) enum JtiRefusal {
    Token(TokenError),
    /// This node's cache is full of unexpired entries (`replay_cache_full`).
    Full,
    /// The cluster's record could not be asked and `cluster.jti_failure = "closed"`
    /// (`jti_store_unavailable`).
    Unavailable,
}

/// What the cluster's used-jti record answered.
pub(crate) enum JtiSpend {
    /// No node had used it; it is now spent.
    First,
    /// Another node (or a concurrent handshake) already spent it.
    Replayed,
    /// The record could not be asked and the policy is to refuse.
    Unavailable,
}

/// The cluster's record of used `jti`s, implemented by the cluster (which owns the Redis
/// connection), so this area never talks to a broker itself.
pub(crate) trait UsedJtis: Send + Sync {
    /// Spends `jti` until `until_secs` (Unix seconds) unless some node already did.
    fn spend(&self, jti: &str, until_secs: u64) -> BoxFuture<'static, JtiSpend>;
}

impl JtiCache {
    pub(crate) fn new(capacity: usize, leeway_secs: u64, cluster: Option<Arc<dyn UsedJtis>>) -> Self {
        JtiCache { used: Mutex::new(HashMap::new()), capacity, leeway_secs, cluster }
    }

    /// Spends the identity's jti; refuses a jti seen before on this node or, with a cluster
    /// record, on any node (remembered until exp + leeway).
    pub(crate) async fn use_once(&self, identity: &Identity) -> Result<(), JtiRefusal> {
        let jti = identity.token_id.as_ref().ok_or(JtiRefusal::Token(TokenError::MissingClaim("jti".into())))?;
        let until = identity.expires_at.saturating_add(self.leeway_secs);
        // Reserved here first: a concurrent use on this node is refused without a round trip.
        self.reserve(jti, until)?;
        let Some(cluster) = &self.cluster else { return Ok(()) };
        match cluster.spend(jti, until).await {
            JtiSpend::First => Ok(()),
            // Spent elsewhere: this node keeps it as used too.
            JtiSpend::Replayed => Err(JtiRefusal::Token(TokenError::Replayed)),
            JtiSpend::Unavailable => {
                // Not spent anywhere: the token stays usable once the record answers again.
                self.used.lock().unwrap_or_else(PoisonError::into_inner).remove(jti);
                Err(JtiRefusal::Unavailable)
            }
        }
    }

    /// Records `jti` in this node's cache, unless it is there or the cache is full.
    fn reserve(&self, jti: &str, until: u64) -> Result<(), JtiRefusal> {
        let now = now_secs();
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if used.get(jti).is_some_and(|exp| *exp >= now) {
            return Err(JtiRefusal::Token(TokenError::Replayed));
        }
        if used.len() >= self.capacity {
            used.retain(|_, exp| *exp >= now);
            if used.len() >= self.capacity {
                return Err(JtiRefusal::Full);
            }
        }
        used.insert(jti.to_string(), until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Identity {
        Identity {
            subject: sub.into(),
            roles: vec![],
            scopes: vec![],
            expires_at: now_secs() + 60,
            issued_at: iat,
            token_id: jti.map(str::to_string),
            claims: Default::default(),
        }
    }

    /// Records what would go to the other nodes.
    struct Recorded(Arc<Mutex<Vec<Revocation>>>);

    impl RevocationBroadcast for Recorded {
        fn revoked(&self, revocation: &Revocation, _: u64) {
            self.0.lock().expect("lock").push(revocation.clone());
        }
    }

    #[test]
    fn only_this_nodes_revocations_are_broadcast() {
        let list = RevocationList::new(900);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(crate::observe::Stats::default());
        list.set_effects(EventSink::spawn(None, 1, stats), Box::new(Recorded(Arc::clone(&sent))));
        let changes = list.subscribe();
        list.revoke(Revocation::Subject("alice".into()));
        list.apply_remote(Revocation::Subject("bob".into()), now_secs());
        assert!(changes.has_changed().expect("open"));
        assert!(list.is_revoked(&identity("bob", None, Some(now_secs() - 10))));
        assert_eq!(*sent.lock().expect("lock"), [Revocation::Subject("alice".into())]);
    }

    #[test]
    fn revocations_match_by_jti_subject_and_time() {
        let list = RevocationList::new(900);
        let now = now_secs();
        let a = identity("alice", Some("j1"), Some(now - 10));
        assert!(!list.is_revoked(&a));
        list.revoke(Revocation::TokenId("j1".into()));
        assert!(list.is_revoked(&a));
        let b = identity("bob", None, Some(now - 10));
        list.revoke(Revocation::Subject("bob".into()));
        assert!(list.is_revoked(&b));
        assert!(!list.is_revoked(&identity("bob", None, Some(now + 5))));
        list.revoke(Revocation::IssuedBefore(now));
        assert!(list.is_revoked(&identity("carol", None, Some(now - 1))));
    }

    #[test]
    fn revocations_made_elsewhere_keep_their_time_and_apply_once() {
        let list = RevocationList::new(900);
        let now = now_secs();
        // Made 100 s ago on another node: a token issued 50 s ago is not covered.
        assert!(list.revoke_at(Revocation::Subject("dave".into()), now - 100));
        assert!(!list.is_revoked(&identity("dave", None, Some(now - 50))));
        assert!(list.is_revoked(&identity("dave", None, Some(now - 150))));
        assert!(!list.revoke_at(Revocation::Subject("dave".into()), now - 100));
        assert!(list.revoke_at(Revocation::TokenId("j".into()), now));
        assert!(!list.revoke_at(Revocation::TokenId("j".into()), now));
        assert!(!list.revoke_at(Revocation::TokenId("old".into()), now - 1000), "expired before it arrived");
    }

    fn use_once(cache: &JtiCache, jti: Option<&str>) -> Result<(), JtiRefusal> {
        futures_util::FutureExt::now_or_never(cache.use_once(&identity("a", jti, None))).expect("no await pending")
    }

    #[test]
    fn jti_is_single_use_and_the_cache_is_bounded() {
        let cache = JtiCache::new(1, 5, None);
        assert!(use_once(&cache, Some("x")).is_ok());
        assert!(matches!(use_once(&cache, Some("x")), Err(JtiRefusal::Token(TokenError::Replayed))));
        assert!(matches!(use_once(&cache, Some("y")), Err(JtiRefusal::Full)));
        assert!(matches!(use_once(&cache, None), Err(JtiRefusal::Token(TokenError::MissingClaim(_)))));
    }

    /// A cluster record that answers the same thing every time and counts the questions.
    struct Answer(fn() -> JtiSpend, Arc<Mutex<u32>>);

    impl UsedJtis for Answer {
        fn spend(&self, _: &str, _: u64) -> BoxFuture<'static, JtiSpend> {
            *self.1.lock().expect("lock") += 1;
            let answer = (self.0)();
            Box::pin(async move { answer })
        }
    }

    #[test]
    fn the_cluster_record_is_asked_after_this_nodes_cache() {
        let asked = Arc::new(Mutex::new(0));
        let cache = JtiCache::new(10, 5, Some(Arc::new(Answer(|| JtiSpend::Replayed, Arc::clone(&asked)))));
        assert!(matches!(use_once(&cache, Some("x")), Err(JtiRefusal::Token(TokenError::Replayed))));
        // Now known here: refused without asking again.
        assert!(matches!(use_once(&cache, Some("x")), Err(JtiRefusal::Token(TokenError::Replayed))));
        assert_eq!(*asked.lock().expect("lock"), 1);

        let cache = JtiCache::new(10, 5, Some(Arc::new(Answer(|| JtiSpend::Unavailable, Arc::clone(&asked)))));
        assert!(matches!(use_once(&cache, Some("y")), Err(JtiRefusal::Unavailable)));
        // Not spent: asked again (and refused again) rather than taken for a replay.
        assert!(matches!(use_once(&cache, Some("y")), Err(JtiRefusal::Unavailable)));

        let cache = JtiCache::new(10, 5, Some(Arc::new(Answer(|| JtiSpend::First, asked))));
        assert!(use_once(&cache, Some("z")).is_ok());
        assert!(matches!(use_once(&cache, Some("z")), Err(JtiRefusal::Token(TokenError::Replayed))));
    }
}
