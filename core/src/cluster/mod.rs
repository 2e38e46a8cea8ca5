//! Several nodes, one service: publications, revocations and bans cross nodes through an existing
//! broker (Redis pub/sub or NATS), and per-user connection quotas are counted cluster-wide in
//! Redis. `[cluster] broker = "memory"` (the default) keeps everything in this process.
//!
//! - Fan-out: a node subscribes at the broker only to channels it has local subscribers for
//!   (the hub reports the first subscriber and the last one leaving to `Interest`); the
//!   publishing node encodes the `message` frame once and every node delivers those bytes.
//! - Delivery is at most once. A publish the broker did not confirm gets a `broker_unavailable`
//!   error (the local subscribers did get it); while the broker is down the node is not ready,
//!   reconnects with backoff, re-subscribes, and sends every local subscriber a `gap` frame.
//! - Control messages (revocations, bans, lifted bans) go to every node on the control subject.
//!   Each node keeps the ones it originated while they can still matter and re-sends them when
//!   it reconnects or another node announces itself, so a node that missed them catches up.
//! - With `cluster.signing_key_env`, every message is signed and every received one verified,
//!   bounded in time and checked against replays (signing.rs); what fails is dropped and counted.
//! - With a Redis (the broker or `quota_redis_url`), revocations and bans are also written to it
//!   and loaded by every node as it joins, before it admits anyone (persist.rs).

mod config;
mod error;
mod history;
mod jti;
mod nats;
mod persist;
mod publish;
mod quota;
mod redis;
mod settings;
mod signing;
mod tls;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

pub use config::{BrokerKind, ClusterConfig, JtiFailure, QuotaFailure, StateFailure};
pub(crate) use config::{ClusterSecrets, read_secrets};
pub(crate) use error::{BrokerError, PublishError};
pub(crate) use persist::StateGate;
use persist::StateStore;
pub(crate) use publish::Publication;
pub(crate) use quota::{Lease, LeaseOutcome, LeaseQuota};
pub(crate) use redis::RedisStore;
pub(crate) use settings::ClusterSettings;
pub(crate) use signing::SigningKeys;
use signing::{Guard, Opened, Refused, RejectionLog};
pub(crate) use tls::{BrokerTls, load as load_tls};
use wire::{Control, ControlEnvelope, Subjects};
pub(crate) use wire::{RemoteTarget, SessionOp};

use crate::auth::{Revocation, RevocationBroadcast, RevocationList, UsedJtis};
use crate::history::History;
use crate::hub::Hub;
use crate::limits::{BanBroadcast, BanTarget, Bans};
use crate::observe::{Event, EventSink, Stats};

/// Longest a subscribe waits for the broker to confirm the subscription before it is
/// acknowledged anyway (a subscription confirmed later may have missed messages in between).
const SUBSCRIBE_CONFIRM_WAIT: Duration = Duration::from_secs(1);
/// At most this many originated control messages are kept for re-sending.
const MAX_ORIGINATED: usize = 10_000;
/// First reconnection pause; it doubles up to `cluster.reconnect_max_secs`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// A broker connection: publishes, and a task that keeps the connection and the subscriptions
/// up and hands what arrives to the [`Link`].
pub(crate) trait Broker: Send + Sync {
    /// Publishes `payload` on `subject`; resolves once the broker accepted it.
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Runs until `link.shutdown` is cancelled: connect (retrying with backoff), subscribe to the
    /// control subject and to every channel of interest, forward what arrives, reconnect.
    fn run(self: Arc<Self>, link: Arc<Link>) -> BoxFuture<'static, ()>;
}

/// The single-node broker: there is no other node to reach.
struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish(&self, _subject: String, _payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn run(self: Arc<Self>, _link: Arc<Link>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The channels this node wants from the broker (those with local subscribers) and those the
/// broker has confirmed.
#[derive(Default)]
pub(crate) struct Interest {
    wanted: Mutex<HashSet<Arc<str>>>,
    changed: Notify,
    active: Mutex<HashSet<Arc<str>>>,
    active_changed: watch::Sender<u64>,
}

impl Interest {
    /// The hub got the first local subscriber of `channel`.
    pub(crate) fn add(&self, channel: &Arc<str>) {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner).insert(Arc::clone(channel));
        self.changed.notify_one();
    }

    /// The last local subscriber of `channel` left.
    pub(crate) fn remove(&self, channel: &str) {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner).remove(channel);
        self.changed.notify_one();
    }

    pub(crate) fn wanted(&self) -> HashSet<Arc<str>> {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Resolves when the wanted set may have changed.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records what the broker now delivers.
    pub(crate) fn set_active(&self, active: HashSet<Arc<str>>) {
        *self.active.lock().unwrap_or_else(PoisonError::into_inner) = active;
        self.active_changed.send_modify(|n| *n += 1);
    }

    fn is_active(&self, channel: &str) -> bool {
        self.active.lock().unwrap_or_else(PoisonError::into_inner).contains(channel)
    }

    async fn wait_active(&self, channel: &str) {
        let mut changes = self.active_changed.subscribe();
        while !self.is_active(channel) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The node's live sessions, as a [`Control::Sessions`] from another node reaches them (the
/// server implements it; held weakly, set once the server exists).
pub(crate) trait NodeSessions: Send + Sync {
    /// Applies `op` to this node's sessions of `user`, or to its session `session`.
    fn apply_remote(&self, user: Option<&str>, session: Option<u64>, op: SessionOp);
}

/// What a broker task shares with the node.
pub(crate) struct Link {
    pub(crate) kind: BrokerKind,
    /// Without its `user@` part (the user is in the broker's options).
    pub(crate) url: String,
    pub(crate) node_id: Arc<str>,
    pub(crate) subjects: Subjects,
    pub(crate) interest: Arc<Interest>,
    pub(crate) reconnect_max: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) stats: Arc<Stats>,
    connected: AtomicBool,
    /// Set at the first connection: later connections are reconnections.
    has_connected: AtomicBool,
    /// Connection changes for the supervisor (`true`: connected).
    state: watch::Sender<bool>,
    inbound: Inbound,
    /// Signs what this node sends, verifies what it receives.
    guard: Guard,
    rejections: RejectionLog,
}

/// Where received messages go.
struct Inbound {
    hub: Arc<Hub>,
    revocations: Arc<RevocationList>,
    bans: Arc<Bans>,
    events: EventSink,
    /// Another node said hello: re-send what this node originated.
    hello: mpsc::UnboundedSender<()>,
    /// Lifted bans, so this node stops re-sending them.
    lifted: mpsc::UnboundedSender<BanTarget>,
    /// Where other nodes' session operations go.
    sessions: OnceLock<Weak<dyn NodeSessions>>,
}

impl Link {
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The broker task (re)connected and subscribed to the control subject and the channels, or
    /// lost the connection. Called before messages of the new connection are delivered, so after
    /// a reconnection the `gap` frames come before them.
    pub(crate) fn set_connected(&self, connected: bool, detail: &str) {
        if self.connected.swap(connected, Ordering::AcqRel) == connected {
            return;
        }
        self.stats.set_broker_connected(connected);
        if connected {
            let is_reconnect = self.has_connected.swap(true, Ordering::AcqRel);
            if is_reconnect {
                self.stats.record_broker_reconnect();
                // Publications from other nodes may have been missed while disconnected.
                self.inbound.hub.announce_gap("broker_reconnected");
            }
            self.inbound.events.emit(Event::BrokerConnected { broker: self.kind.name(), is_reconnect });
        } else {
            self.interest.set_active(HashSet::new());
            self.inbound.events.emit(Event::BrokerDisconnected { broker: self.kind.name(), error: detail.to_string() });
        }
        self.state.send_replace(connected);
    }

    /// Pause before reconnection attempt `attempt` (0-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        RECONNECT_MIN.saturating_mul(1u32 << attempt.min(16)).min(self.reconnect_max)
    }

    /// Handles one message from the broker: checked (signature, time, replay), then decoded by
    /// its subject.
    pub(crate) fn deliver(&self, subject: &str, payload: &[u8]) {
        let is_control = subject == self.subjects.control();
        let opened = match self.guard.open(subject, payload, now_ms(), is_control) {
            Ok(opened) => opened,
            Err(refused) => {
                self.reject(if is_control { "control" } else { "publication" }, &refused);
                return;
            }
        };
        if is_control {
            self.control(opened);
        } else {
            self.publication(subject, opened);
        }
    }

    /// Counts a dropped message and reports it (at most one event per reason per second).
    fn reject(&self, kind: &'static str, refused: &Refused<'_>) {
        let reason = refused.reason.name();
        self.stats.record_broker_rejected(kind, reason);
        if let Some(suppressed) = self.rejections.due(refused.reason, now_ms()) {
            self.inbound.events.emit(Event::BrokerMessageRejected {
                message: kind,
                reason,
                node: refused.node.chars().take(64).collect(),
                suppressed,
            });
        }
    }

    fn publication(&self, subject: &str, opened: Opened<'_>) {
        let Some(channel) = self.subjects.channel_of(subject) else {
            self.stats.record_broker_error("decode");
            return;
        };
        let (sent_ms, frame) = match opened {
            Opened::Own(body) => match std::str::from_utf8(body) {
                // Only history publications with a shared history come back to be delivered: the
                // others were queued here when published.
                Ok(frame) if self.is_kept_frame(frame) => (now_ms(), frame),
                _ => return,
            },
            Opened::Signed { sent_ms, body, .. } => match std::str::from_utf8(body) {
                Ok(frame) => (sent_ms, frame),
                Err(_) => {
                    self.stats.record_broker_error("decode");
                    return;
                }
            },
            Opened::Plain(payload) => match wire::decode_publication(payload) {
                Some(p) if p.node == &*self.node_id && !self.is_kept_frame(p.frame) => return,
                Some(p) => (p.sent_ms, p.frame),
                None => {
                    self.stats.record_broker_error("decode");
                    return;
                }
            },
        };
        self.stats.record_broker_received("publication");
        self.stats.observe_broker_lag(now_ms().saturating_sub(sent_ms) as f64 / 1000.0);
        let frame = Utf8Bytes::from(frame.to_string());
        self.inbound.hub.publish(&channel, &frame);
    }

    /// A frame this node published on a channel whose history is in Redis: it carries an
    /// `offset` (only such publications travel with one when the broker is Redis).
    fn is_kept_frame(&self, frame: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct Offset {
            offset: Option<u64>,
        }
        self.kind == BrokerKind::Redis && serde_json::from_str::<Offset>(frame).is_ok_and(|f| f.offset.is_some())
    }

    fn control(&self, opened: Opened<'_>) {
        let control = match opened {
            Opened::Own(_) => return,
            Opened::Signed { body, .. } => serde_json::from_slice::<Control>(body).ok(),
            Opened::Plain(payload) => match serde_json::from_slice::<ControlEnvelope>(payload) {
                Ok(envelope) if envelope.node == *self.node_id => return,
                Ok(envelope) => Some(envelope.control),
                Err(_) => None,
            },
        };
        let Some(control) = control else {
            self.stats.record_broker_error("decode");
            return;
        };
        self.stats.record_broker_received("control");
        let inbound = &self.inbound;
        match control {
            Control::Hello => {
                let _ = inbound.hello.send(());
            }
            Control::Revoke { revocation, at } => {
                inbound.revocations.apply_remote(revocation, at);
            }
            Control::Ban { target, reason, until } => {
                let left = Duration::from_secs(until.saturating_sub(crate::auth::now_secs()));
                if !left.is_zero() {
                    inbound.bans.apply_remote(target, left, crate::limits::ban_reason(&reason));
                }
            }
            Control::Lift { target } => {
                inbound.bans.lift_remote(&target);
                let _ = inbound.lifted.send(target);
            }
            Control::Sessions { target, op } => {
                let Some(sessions) = inbound.sessions.get().and_then(Weak::upgrade) else { return };
                match target {
                    RemoteTarget::User(user) => sessions.apply_remote(Some(&user), None, op),
                    RemoteTarget::Session { node, id } if node == *self.node_id => {
                        sessions.apply_remote(None, Some(id), op);
                    }
                    RemoteTarget::Session { .. } => {}
                }
            }
        }
    }
}

/// Revocations and bans this node originated, re-sent after reconnects and hellos.
#[derive(Default)]
struct Originated {
    revocations: Vec<(Revocation, u64)>,
    bans: HashMap<BanTarget, (&'static str, u64)>,
}

/// The node's cluster membership.
pub(crate) struct Cluster {
    broker: Arc<dyn Broker>,
    link: Arc<Link>,
    quota: Option<Arc<LeaseQuota>>,
    /// The cluster Redis (`quota_redis_url`, else the Redis broker), for the areas that keep
    /// cluster-wide state in it (presence).
    redis: Option<Arc<RedisStore>>,
    /// The cluster-wide used-jti record (with a cluster Redis).
    jtis: Option<Arc<jti::RedisJtis>>,
    /// The broker TLS check made at start-up (None without broker TLS).
    tls_check: Option<tls::StartupCheck>,
    /// Where revocations and bans are persisted (a Redis), if anywhere.
    store: Option<Arc<StateStore>>,
    /// Closed until the store's state is loaded (`state_failure = "closed"` with a store).
    state_gate: Option<Arc<StateGate>>,
    /// Set when `restore_now` loaded the state.
    restored: AtomicBool,
    originated: Mutex<Originated>,
    /// Revocations older than this (seconds) can no longer match a valid token.
    horizon_secs: u64,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    stats: Arc<Stats>,
    /// Channel history: publications on channels that keep it are offset and stored here.
    history: Arc<History>,
    /// Channel history in the broker's Redis (`broker = "redis"`), instead of `history`.
    redis_history: Option<Arc<history::RedisHistory>>,
    /// Taken by `start`.
    receivers: Mutex<Option<(mpsc::UnboundedReceiver<()>, mpsc::UnboundedReceiver<BanTarget>)>>,
}

/// What the cluster needs from the node to apply what other nodes send.
pub(crate) struct NodeParts {
    pub(crate) hub: Arc<Hub>,
    pub(crate) history: Arc<History>,
    pub(crate) interest: Arc<Interest>,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) bans: Arc<Bans>,
    pub(crate) events: EventSink,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutdown: CancellationToken,
}

impl Cluster {
    /// Builds the cluster side of a node from a validated config. Must run inside the server's
    /// runtime; connects nothing yet (see [`Cluster::start`]).
    pub(crate) fn new(
        config: &ClusterSettings,
        secrets: &ClusterSecrets,
        tls: Option<Arc<BrokerTls>>,
        horizon_secs: u64,
        parts: NodeParts,
    ) -> Arc<Cluster> {
        let node_id: Arc<str> = if config.node_id.is_empty() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0);
            format!("node-{}-{nanos:08x}", std::process::id()).into()
        } else {
            config.node_id.as_str().into()
        };
        let (hello, hello_rx) = mpsc::unbounded_channel();
        let (lifted, lifted_rx) = mpsc::unbounded_channel();
        let timeout = config.broker_timeout;
        let link = Arc::new(Link {
            kind: config.broker,
            url: config.url.clone(),
            node_id: Arc::clone(&node_id),
            subjects: Subjects::new(config.broker, &config.channel_prefix),
            interest: parts.interest,
            reconnect_max: config.reconnect_max,
            shutdown: parts.shutdown.clone(),
            stats: Arc::clone(&parts.stats),
            connected: AtomicBool::new(config.broker == BrokerKind::Memory),
            has_connected: AtomicBool::new(false),
            state: watch::Sender::new(false),
            guard: Guard::new(secrets.signing.clone(), &node_id),
            rejections: RejectionLog::default(),
            inbound: Inbound {
                hub: parts.hub,
                revocations: parts.revocations,
                bans: parts.bans,
                events: parts.events,
                hello,
                lifted,
                sessions: OnceLock::new(),
            },
        });
        let password = secrets.password.as_deref();
        // URLs were validated with the config: a connector is only a parsed URL until first use.
        let connector = |url: &str| redis::RedisConnector::new(url, password, tls.as_deref()).ok();
        let broker: Arc<dyn Broker> = match config.broker {
            BrokerKind::Memory => Arc::new(MemoryBroker),
            BrokerKind::Redis => Arc::new(redis::RedisBroker::new(connector(&config.url), timeout)),
            BrokerKind::Nats => Arc::new(nats::NatsBroker::new(password, tls.clone().filter(|tls| tls.nats))),
        };
        let store = config
            .quota_url
            .as_deref()
            .map(|url| redis::RedisStore::new(connector(url), timeout, Arc::clone(&parts.stats)));
        let quota = store.as_ref().map(|store| LeaseQuota::new(config, Arc::clone(store), &node_id));
        let redis = store.clone();
        let jtis = store.map(|store| Arc::new(jti::RedisJtis::new(store, &config.channel_prefix, config.jti_failure)));
        let state_store = config.quota_url.as_deref().and_then(|url| {
            Some(StateStore::new(
                connector(url)?,
                &config.channel_prefix,
                secrets.signing.clone(),
                horizon_secs,
                timeout,
                Arc::clone(&parts.stats),
            ))
        });
        // The history script PUBLISHes, so it must run on the broker's own Redis.
        let redis_history = (config.broker == BrokerKind::Redis).then(|| {
            let store = redis::RedisStore::new(connector(&config.url), timeout, Arc::clone(&parts.stats));
            Arc::new(history::RedisHistory::new(store, &config.channel_prefix))
        });
        let tls_check = tls.map(|tls| tls::StartupCheck::new(config, tls));
        parts.stats.set_broker_connected(config.broker == BrokerKind::Memory);
        Arc::new(Cluster {
            broker,
            link,
            quota,
            redis,
            jtis,
            tls_check,
            state_gate: (state_store.is_some() && config.state_failure == StateFailure::Closed)
                .then(|| Arc::new(StateGate::default())),
            store: state_store.map(Arc::new),
            restored: AtomicBool::new(false),
            originated: Mutex::default(),
            horizon_secs,
            timeout,
            runtime: tokio::runtime::Handle::current(),
            stats: parts.stats,
            history: parts.history,
            redis_history,
            receivers: Mutex::new(Some((hello_rx, lifted_rx))),
        })
    }

    /// Starts the broker connection, the re-sender and the quota renewals; they run until the
    /// node's shutdown token is cancelled.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.link.kind == BrokerKind::Memory {
            return;
        }
        tracing::info!(
            target: "wsguard::cluster", broker = self.link.kind.name(), node_id = &*self.link.node_id,
            cluster_quota = self.quota.is_some(), "joining the cluster"
        );
        if !self.link.guard.is_signing() {
            tracing::warn!(
                target: "wsguard::cluster",
                "cluster.signing_key_env is not set: broker messages are not authenticated, anyone who can publish on the broker can inject publications, revocations and lifted bans"
            );
        }
        if self.store.is_none() {
            tracing::warn!(
                target: "wsguard::cluster",
                "no Redis for the cluster state: revocations and bans are not persisted (set cluster.quota_redis_url)"
            );
        }
        if self.link.kind == BrokerKind::Nats && self.quota.is_none() {
            tracing::warn!(
                target: "wsguard::cluster",
                "per-user connection quotas and single-use jtis are per node: set cluster.quota_redis_url to share them cluster-wide"
            );
        }
        // Watched before the broker task starts, so even the first connection is seen.
        let state = self.link.state.subscribe();
        self.runtime.spawn(Arc::clone(&self.broker).run(Arc::clone(&self.link)));
        if let Some(quota) = &self.quota {
            self.runtime.spawn(Arc::clone(quota).run(self.link.shutdown.clone()));
        }
        if let Some(store) = &self.store {
            let link = Arc::clone(&self.link);
            self.runtime.spawn(Arc::clone(store).run(self.link.shutdown.clone(), move |n| link.backoff(n)));
            if !self.restored.load(Ordering::Acquire) {
                self.runtime.spawn(Arc::clone(self).restore(Arc::clone(store)));
            }
        }
        let Some((hello, lifted)) = self.receivers.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        self.runtime.spawn(Arc::clone(self).supervise(state, hello, lifted));
    }

    /// Reacts to connection changes and to other nodes' hellos.
    async fn supervise(
        self: Arc<Self>,
        mut state: watch::Receiver<bool>,
        mut hello: mpsc::UnboundedReceiver<()>,
        mut lifted: mpsc::UnboundedReceiver<BanTarget>,
    ) {
        loop {
            tokio::select! {
                _ = self.link.shutdown.cancelled() => return,
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*state.borrow_and_update() {
                        continue;
                    }
                    self.send_control(Control::Hello).await;
                    self.resend_originated().await;
                }
                Some(()) = hello.recv() => self.resend_originated().await,
                Some(target) = lifted.recv() => {
                    if let Some(store) = &self.store {
                        store.lift_if_queued(&target);
                    }
                    self.originated.lock().unwrap_or_else(PoisonError::into_inner).bans.remove(&target);
                }
            }
        }
    }

    async fn resend_originated(&self) {
        let now = crate::auth::now_secs();
        let messages: Vec<Control> = {
            let mut o = self.originated.lock().unwrap_or_else(PoisonError::into_inner);
            let horizon = now.saturating_sub(self.horizon_secs);
            o.revocations.retain(|(_, at)| *at > horizon);
            o.bans.retain(|_, (_, until)| *until > now);
            o.revocations
                .iter()
                .map(|(revocation, at)| Control::Revoke { revocation: revocation.clone(), at: *at })
                .chain(o.bans.iter().map(|(target, (reason, until))| Control::Ban {
                    target: target.clone(),
                    reason: (*reason).to_string(),
                    until: *until,
                }))
                .collect()
        };
        for message in messages {
            self.send_control(message).await;
        }
    }

    async fn send_control(&self, control: Control) {
        if self.link.kind == BrokerKind::Memory || !self.link.is_connected() {
            return;
        }
        let sent_ms = now_ms();
        let subject = self.link.subjects.control();
        let payload = self.link.guard.seal(subject, sent_ms, &serde_json::to_vec(&control).unwrap_or_default(), || {
            let envelope = ControlEnvelope { node: self.link.node_id.to_string(), sent_ms, control: control.clone() };
            serde_json::to_vec(&envelope).unwrap_or_default()
        });
        let publish = self.broker.publish(subject.to_string(), payload.into());
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(())) => self.stats.record_broker_published("control"),
            Ok(Err(e)) => {
                self.stats.record_broker_error("publish");
                tracing::warn!(target: "wsguard::cluster", error = %e, "control message not published");
            }
            Err(_) => self.stats.record_broker_error("publish"),
        }
    }

    /// Sends a control message to the other nodes (now if connected; in any case again after a
    /// reconnect, while it can still matter).
    fn broadcast(self: &Arc<Self>, control: Control) {
        if self.link.kind == BrokerKind::Memory {
            return;
        }
        {
            let mut o = self.originated.lock().unwrap_or_else(PoisonError::into_inner);
            match &control {
                Control::Revoke { revocation, at } => {
                    o.revocations.push((revocation.clone(), *at));
                    if o.revocations.len() > MAX_ORIGINATED {
                        o.revocations.remove(0);
                    }
                }
                Control::Ban { target, reason, until } => {
                    if o.bans.len() < MAX_ORIGINATED {
                        o.bans.insert(target.clone(), (crate::limits::ban_reason(reason), *until));
                    }
                }
                Control::Lift { target } => {
                    o.bans.remove(target);
                }
                Control::Hello | Control::Sessions { .. } => {}
            }
        }
        if let Some(store) = &self.store {
            match &control {
                Control::Revoke { revocation, at } => {
                    store.push(persist::Op::Revoke { revocation: revocation.clone(), at: *at });
                }
                Control::Ban { target, reason, until } => store.push(persist::Op::Ban {
                    target: target.clone(),
                    reason: crate::limits::ban_reason(reason),
                    until: *until,
                }),
                Control::Lift { target } => store.push(persist::Op::Lift { target: target.clone() }),
                Control::Hello | Control::Sessions { .. } => {}
            }
        }
        let cluster = Arc::clone(self);
        self.runtime.spawn(async move { cluster.send_control(control).await });
    }

    /// This node's name: `cluster.node_id`, or the one made up at start (`node-<pid>-<hex>`).
    pub(crate) fn node_id(&self) -> &str {
        &self.link.node_id
    }

    /// True with a broker (other nodes may exist).
    pub(crate) fn has_broker(&self) -> bool {
        self.link.kind != BrokerKind::Memory
    }

    /// Where other nodes' session operations are applied (set once, by the server).
    pub(crate) fn set_node_sessions(&self, sessions: Weak<dyn NodeSessions>) {
        let _ = self.link.inbound.sessions.set(sessions);
    }

    /// Sends a session operation to the other nodes (signed and checked like every control
    /// message; at most once: not kept for re-sending). False without a broker, or while it is
    /// unreachable (the operation then reached this node only).
    pub(crate) fn send_sessions(self: &Arc<Self>, target: RemoteTarget, op: SessionOp) -> bool {
        if !self.has_broker() || !self.link.is_connected() {
            return false;
        }
        let cluster = Arc::clone(self);
        self.runtime.spawn(async move { cluster.send_control(Control::Sessions { target, op }).await });
        true
    }

    /// Loads the persisted revocations and bans (see persist.rs) until Redis answers, then opens
    /// the handshake gate (if closed).
    async fn restore(self: Arc<Self>, store: Arc<StateStore>) {
        let inbound = &self.link.inbound;
        let link = Arc::clone(&self.link);
        let loaded = store
            .restore(&inbound.revocations, &inbound.bans, self.state_gate.as_deref(), &self.link.shutdown, move |n| {
                link.backoff(n)
            })
            .await;
        if let Some(loaded) = loaded {
            self.loaded(&loaded);
        }
    }

    /// One attempt to load the persisted state, bounded by `cluster.broker_timeout_secs`, made by
    /// `Server::bind` so that a node whose Redis is up admits from its first handshake on. When
    /// it fails, [`Cluster::start`] keeps trying in the background.
    pub(crate) async fn restore_now(&self) {
        let Some(store) = &self.store else { return };
        let inbound = &self.link.inbound;
        let load = tokio::time::timeout(self.timeout, store.load(&inbound.revocations, &inbound.bans)).await;
        if let Ok(Ok(loaded)) = load {
            if let Some(gate) = &self.state_gate {
                gate.open();
            }
            self.restored.store(true, Ordering::Release);
            self.loaded(&loaded);
        }
    }

    fn loaded(&self, loaded: &persist::Loaded) {
        for reason in &loaded.refused {
            self.link.reject("state", &Refused { reason: *reason, node: "" });
        }
        tracing::info!(
            target: "wsguard::cluster", revocations = loaded.revocations, bans = loaded.bans,
            refused = loaded.refused.len(), "cluster state loaded"
        );
    }

    /// The handshake gate that stays closed until the persisted state is loaded (`None` without
    /// a store or with `cluster.state_failure = "open"`).
    pub(crate) fn state_gate(&self) -> Option<Arc<StateGate>> {
        self.state_gate.clone()
    }

    /// False while a configured broker is unreachable, or the persisted state is not loaded
    /// under `cluster.state_failure = "closed"` (`/readyz` answers 503).
    pub(crate) fn is_ready(&self) -> bool {
        self.link.is_connected() && self.state_gate.as_ref().is_none_or(|gate| gate.is_loaded())
    }

    /// The cluster Redis, when there is one.
    pub(crate) fn redis_store(&self) -> Option<Arc<RedisStore>> {
        self.redis.clone()
    }

    /// The runtime the cluster's tasks run on (the server's).
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub(crate) fn quota(&self) -> Option<Arc<LeaseQuota>> {
        self.quota.clone()
    }

    /// The cluster-wide used-jti record, when the cluster has Redis.
    pub(crate) fn used_jtis(&self) -> Option<Arc<dyn UsedJtis>> {
        self.jtis.clone().map(|jtis| jtis as Arc<dyn UsedJtis>)
    }

    /// At start-up, with broker TLS: `broker_tls` when a TLS broker refuses this node or is not
    /// trusted (see [`tls::StartupCheck`]).
    pub(crate) async fn check_tls(&self) -> Result<(), crate::Error> {
        match &self.tls_check {
            Some(check) => check.run(self.timeout).await,
            None => Ok(()),
        }
    }

    /// Waits (briefly) until the broker delivers `channel` to this node, so an acknowledged
    /// subscription sees publications made on other nodes after the ack.
    pub(crate) async fn subscribed(&self, channel: &str) {
        if self.link.kind == BrokerKind::Memory || !self.link.is_connected() {
            return;
        }
        if tokio::time::timeout(SUBSCRIBE_CONFIRM_WAIT, self.link.interest.wait_active(channel)).await.is_err() {
            self.stats.record_broker_error("subscribe");
        }
    }

    /// Whether channel history is kept in the broker's Redis rather than this node's memory.
    pub(crate) fn has_shared_history(&self) -> bool {
        self.redis_history.is_some()
    }

    /// Reads `channel`'s history in Redis (None without a Redis history; an error when Redis
    /// cannot be reached).
    pub(crate) async fn read_history(
        &self,
        channel: &str,
        ttl: Duration,
        query: crate::history::Query,
    ) -> Option<Result<crate::history::Slice, BrokerError>> {
        let history = self.redis_history.as_ref()?;
        Some(history.read(channel, ttl, query).await)
    }

    /// [`Cluster::read_history`] for a synchronous caller (the host's `ServerHandle::history`):
    /// blocks the calling thread on the node's runtime. Refused (as unreachable) when called from
    /// inside a runtime, where blocking could stall it.
    pub(crate) fn read_history_blocking(
        &self,
        channel: &str,
        ttl: Duration,
        query: crate::history::Query,
    ) -> Option<Result<crate::history::Slice, BrokerError>> {
        self.redis_history.as_ref()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Some(Err(BrokerError::TimedOut("history read (blocking read inside a runtime)")));
        }
        self.runtime.block_on(self.read_history(channel, ttl, query))
    }

    /// Flushes released quota entries and unpersisted revocations and bans (called once the
    /// sessions have ended).
    pub(crate) async fn stop(&self) {
        if let Some(quota) = &self.quota {
            quota.flush(self.timeout).await;
        }
        if let Some(store) = &self.store {
            store.flush(self.timeout).await;
        }
    }
}

/// The bans and revocations made on this node go to the other nodes. Held weakly by the bans and
/// the revocation list (the cluster holds them).
impl BanBroadcast for Weak<Cluster> {
    fn banned(&self, target: &BanTarget, reason: &'static str, duration: Duration) {
        if let Some(cluster) = self.upgrade() {
            let until = crate::auth::now_secs().saturating_add(duration.as_secs().max(1));
            cluster.broadcast(Control::Ban { target: target.clone(), reason: reason.to_string(), until });
        }
    }

    fn lifted(&self, target: &BanTarget) {
        if let Some(cluster) = self.upgrade() {
            cluster.broadcast(Control::Lift { target: target.clone() });
        }
    }
}

impl RevocationBroadcast for Weak<Cluster> {
    fn revoked(&self, revocation: &Revocation, at: u64) {
        if let Some(cluster) = self.upgrade() {
            cluster.broadcast(Control::Revoke { revocation: revocation.clone(), at });
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
