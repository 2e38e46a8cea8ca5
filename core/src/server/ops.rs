//! The server-side operations on live sessions and the listings (`ServerHandle::send`,
//! `disconnect_with`, `subscribe`, `unsubscribe`, `sessions`, `channels`), and how another
//! node's session operations are applied here ([`NodeSessions`]).
//!
//! Every operation checks all of its arguments before it changes anything. A user target acts on
//! this node's sessions of the user and, with a `[cluster]` broker, on every other node's; a
//! session target acts on this node, or on the node it names (session ids are node-local).
//! Results and pages derive `Serialize`, so they can be returned as JSON as they are.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Shared;
use super::handle::ServerHandle;
use crate::auth::Identity;
use crate::cluster::{NodeSessions, RemoteTarget, SessionOp};
use crate::error::{Error, ErrorCode};
use crate::policy::Policy;
use crate::policy::pattern::ChannelPattern;
use crate::protocol::{ServerFrame, is_within_depth, validate_channel};
use crate::session::{Disconnect, Local, Reach};

/// Most entries one listing page returns (`limit` above it is `invalid_argument`).
pub const MAX_PAGE_LIMIT: usize = 1000;

/// Which sessions a server-side operation reaches; build it with `host::target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One session, by id. Ids are node-local: `node` names the node that holds it (`None` or
    /// this node's name: this node).
    Session {
        /// The session id (`SessionOpened` events, listings).
        id: u64,
        /// The node that holds the session (`cluster.node_id`), when not this one.
        node: Option<String>,
    },
    /// Every session of a user (`sub`), on every node.
    User(String),
}

/// What a server-side operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Applied {
    /// The node these counts describe (`cluster.node_id`, or the name made up at start).
    pub node: String,
    /// Sessions on this node the target named.
    pub matched: usize,
    /// Of those, the sessions the operation reached or changed: a push queued, a close
    /// requested, a subscription made or removed now.
    pub changed: usize,
    /// `subscribe` only: sessions left out because they hold `limits.max_subscriptions`.
    pub at_limit: usize,
    /// True when the operation was also handed to the cluster broker for the other nodes (their
    /// counts are not included: delivery is at most once and unconfirmed); false without a
    /// broker, for a target on this node only, or while the broker is unreachable.
    pub is_forwarded: bool,
}

/// One live session in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Session id (node-local).
    pub id: u64,
    /// The user (`sub`).
    pub user: String,
    /// The client's address as the handshake determined it (trusted proxies applied).
    #[schema(value_type = String)]
    pub client_ip: IpAddr,
    /// When the session opened, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Its subscriptions, client-made and server-made, sorted.
    pub subscriptions: Vec<String>,
}

/// A page of [`ServerHandle::sessions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionPage {
    /// The node this page describes.
    pub node: String,
    /// Sessions in id order.
    pub sessions: Vec<SessionInfo>,
    /// The cursor for the next page (the last id here); `None` when this page is the last.
    pub next_cursor: Option<u64>,
}

/// One channel with subscribers in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelInfo {
    /// The channel name.
    pub channel: String,
    /// Its subscribers on this node.
    pub subscribers: usize,
}

/// A page of [`ServerHandle::channels`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelPage {
    /// The node this page describes.
    pub node: String,
    /// Channels in name order.
    pub channels: Vec<ChannelInfo>,
    /// The cursor for the next page (the last name here); `None` when this page is the last.
    pub next_cursor: Option<String>,
}

/// An operation as it is applied to this node's sessions.
enum Op<'a> {
    Send(&'a Utf8Bytes),
    Disconnect(u16, Option<Arc<str>>),
    Subscribe(&'a str),
    Unsubscribe(&'a str),
}

impl Shared {
    fn apply(&self, target: Local<'_>, op: &Op<'_>) -> Reach {
        let core = &self.core;
        match op {
            Op::Send(frame) => core.registry.send(target, frame, &core.stats),
            Op::Disconnect(code, reason) => {
                core.registry.disconnect(target, Disconnect::ClosedWithCode(*code), reason.as_ref())
            }
            Op::Subscribe(channel) => {
                let policy = core.policy.load_full();
                let slow_consumer = policy.slow_consumer_for(channel);
                let is_tracked = policy.presence_rule(channel).is_some();
                let max = self.live.load().session_env.limits.max_subscriptions;
                let mut added = Vec::new();
                let reach = core.registry.subscribe(target, channel, slow_consumer, max, &core.hub, |id, identity| {
                    if is_tracked {
                        added.push((id, Arc::clone(identity)));
                    }
                });
                for (id, identity) in added {
                    self.join_presence(channel, id, identity, Arc::clone(&policy));
                }
                reach
            }
            Op::Unsubscribe(channel) => core.registry.unsubscribe(target, channel, &core.hub, |id, identity| {
                // Like a client unsubscribe: a leave (announced when it was the user's last session).
                core.presence.leave_later(channel, &identity.subject, id);
            }),
        }
    }

    /// A server-made subscription joins presence like a client's, in a task (the operation
    /// itself is synchronous and may be called from any thread; joining may wait for Redis):
    /// the `join` frame and the membership follow the `subscribed` frame shortly. A session that
    /// ended or was unsubscribed while the join ran is a member no longer: it leaves again.
    fn join_presence(&self, channel: &str, id: u64, identity: Arc<Identity>, policy: Arc<Policy>) {
        let (presence, registry) = (Arc::clone(&self.core.presence), Arc::clone(&self.core.registry));
        let channel = channel.to_string();
        self.core.cluster.runtime().spawn(async move {
            let Some(rule) = policy.presence_rule(&channel) else { return };
            presence.join(&channel, &identity, id, rule).await;
            if !registry.is_subscribed(id, &channel) {
                presence.leave(&channel, &identity.subject, id).await;
            }
        });
    }

    fn max_message_bytes(&self) -> usize {
        self.live.load().session_env.limits.max_message_bytes
    }
}

/// Another node's session operation, checked again here (a plain-format cluster carries no
/// signature) and applied to this node's sessions.
impl NodeSessions for Shared {
    fn apply_remote(&self, user: Option<&str>, session: Option<u64>, op: SessionOp) {
        let target = match (user, session) {
            (Some(user), _) => Local::User(user),
            (None, Some(id)) => Local::Session(id),
            (None, None) => return,
        };
        let is_valid = match &op {
            SessionOp::Send { frame } => frame.len() <= self.max_message_bytes() && is_push_frame(frame),
            SessionOp::Disconnect { code, reason } => {
                crate::host::close(*code, reason.as_deref().unwrap_or_default()).is_ok()
            }
            SessionOp::Subscribe { channel } | SessionOp::Unsubscribe { channel } => validate_channel(channel).is_ok(),
        };
        if !is_valid {
            self.core.stats.record_broker_error("decode");
            return;
        }
        match op {
            SessionOp::Send { frame } => self.apply(target, &Op::Send(&Utf8Bytes::from(frame))),
            SessionOp::Disconnect { code, reason } => {
                self.apply(target, &Op::Disconnect(code, reason.filter(|r| !r.is_empty()).map(Arc::from)))
            }
            SessionOp::Subscribe { channel } => self.apply(target, &Op::Subscribe(&channel)),
            SessionOp::Unsubscribe { channel } => self.apply(target, &Op::Unsubscribe(&channel)),
        };
    }
}

/// True for a `{"type":"push","payload":{...}}` frame and nothing else.
fn is_push_frame(frame: &str) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Push {
        r#type: String,
        #[allow(dead_code, reason = "only its shape is checked")]
        payload: serde_json::Map<String, Value>,
    }
    serde_json::from_str::<Push>(frame).is_ok_and(|p| p.r#type == "push")
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::Refused { code, message: message.into() }
}

impl ServerHandle {
    /// Runs `op` for `target`: here, and on the other nodes when the target reaches them.
    fn run(&self, target: &Target, op: Op<'_>, remote: impl FnOnce() -> SessionOp) -> Result<Applied, Error> {
        let shared = self.shared();
        let cluster = &shared.core.cluster;
        let node = cluster.node_id().to_string();
        let (local, forward) = match target {
            Target::User(user) => (Some(Local::User(user)), Some(RemoteTarget::User(user.clone()))),
            Target::Session { id, node: Some(other) } if *other != node => {
                if !cluster.has_broker() {
                    return Err(Error::InvalidArgument(format!(
                        "no node {other:?}: this server has no [cluster] broker (this node is {node:?})"
                    )));
                }
                (None, Some(RemoteTarget::Session { node: other.clone(), id: *id }))
            }
            Target::Session { id, .. } => (Some(Local::Session(*id)), None),
        };
        let reach = local.map(|target| shared.apply(target, &op)).unwrap_or_default();
        if let Some(Local::Session(id)) = local
            && reach.matched == 0
        {
            return Err(refused(ErrorCode::UnknownSession, format!("no session {id} on node {node:?}")));
        }
        let is_forwarded = forward.is_some_and(|forward| cluster.send_sessions(forward, remote()));
        Ok(Applied { node, matched: reach.matched, changed: reach.changed, at_limit: reach.at_limit, is_forwarded })
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.shared().core.shutdown.is_cancelled() { Err(Error::NotRunning) } else { Ok(()) }
    }

    /// Sends `payload` (a JSON object) to the sessions of `target` as a
    /// `{"type":"push","payload":...}` frame, outside any channel. The frame is encoded once and
    /// queued in each session's bounded outbox like a delivery: a session whose outbox is full is
    /// closed as a slow consumer (4000). The same payload rules as [`ServerHandle::publish`], and
    /// the frame may not exceed `limits.max_message_bytes`.
    ///
    /// Errors: `invalid_frame` (not an object), `payload_too_deep`, `payload_too_large`,
    /// `unknown_session`, `invalid_argument` (a node named without a cluster broker),
    /// `not_running`.
    pub fn send(&self, target: &Target, payload: &Value) -> Result<Applied, Error> {
        self.check_running()?;
        let Value::Object(object) = payload else {
            return Err(refused(ErrorCode::InvalidFrame, "payload must be a JSON object"));
        };
        let shared = self.shared();
        if !is_within_depth(object, shared.live.load().session_env.limits.max_payload_depth) {
            return Err(refused(ErrorCode::PayloadTooDeep, "payload nests too deeply"));
        }
        let frame = ServerFrame::Push { payload }.encode();
        let max = shared.max_message_bytes();
        if frame.len() > max {
            return Err(refused(
                ErrorCode::PayloadTooLarge,
                format!("the push frame is {} bytes, more than limits.max_message_bytes ({max})", frame.len()),
            ));
        }
        self.run(target, Op::Send(&frame), || SessionOp::Send { frame: frame.as_str().to_string() })
    }

    /// Closes the sessions of `target` with close code `code` and `reason` (empty: the reason name
    /// `disconnected`). `code` is one of 4000-4999 except the codes wsguard sends for its own
    /// reasons ([`Disconnect::is_app_code`], docs/PROTOCOL.md §3); `reason` is UTF-8 of at most
    /// 123 bytes.
    ///
    /// Errors: `invalid_argument` (code or reason; a node named without a cluster broker),
    /// `unknown_session`, `not_running`.
    pub fn disconnect_with(&self, target: &Target, code: u16, reason: &str) -> Result<Applied, Error> {
        self.check_running()?;
        crate::host::close(code, reason)?;
        let shared_reason = (!reason.is_empty()).then(|| Arc::<str>::from(reason));
        self.run(target, Op::Disconnect(code, shared_reason), || SessionOp::Disconnect {
            code,
            reason: (!reason.is_empty()).then(|| reason.to_string()),
        })
    }

    /// Subscribes the sessions of `target` to `channel`. The host is trusted: the channel rules
    /// and the `authorize` hook are not asked, and a reload or a refresh never re-checks the
    /// subscription (it is marked server-made; only an unsubscribe or the end of the session
    /// removes it). The channel name rules apply, and so does `limits.max_subscriptions`: a
    /// session that holds that many subscriptions is left out (counted in `at_limit`). Each
    /// subscribed session gets a `{"type":"subscribed","channel":...,"by":"server"}` frame
    /// before the channel's messages; the slow-consumer policy is that of the first channel rule
    /// whose pattern matches the channel (`disconnect` when none does). A session already
    /// subscribed is left as it is. On a channel whose rule has `presence = true` each subscribed
    /// session joins presence like a client subscribe (with the rule's `join_leave`, a `join` for
    /// a user's first session), in a task started here: the membership follows shortly after
    /// this returns, not before.
    ///
    /// Errors: `invalid_channel`, `unknown_session`, `invalid_argument` (a node named without a
    /// cluster broker), `not_running`.
    pub fn subscribe(&self, target: &Target, channel: &str) -> Result<Applied, Error> {
        self.check_running()?;
        validate_channel(channel).map_err(|m| refused(ErrorCode::InvalidChannel, m))?;
        self.run(target, Op::Subscribe(channel), || SessionOp::Subscribe { channel: channel.to_string() })
    }

    /// Removes `channel` from the sessions of `target`, whoever subscribed them; each gets an
    /// `{"type":"unsubscribed","channel":...,"reason":"server"}` frame, and leaves presence like
    /// a client unsubscribe (a `leave` after the user's last session, with `join_leave`).
    ///
    /// Errors: `invalid_channel`, `unknown_session`, `invalid_argument` (a node named without a
    /// cluster broker), `not_running`.
    pub fn unsubscribe(&self, target: &Target, channel: &str) -> Result<Applied, Error> {
        self.check_running()?;
        validate_channel(channel).map_err(|m| refused(ErrorCode::InvalidChannel, m))?;
        self.run(target, Op::Unsubscribe(channel), || SessionOp::Unsubscribe { channel: channel.to_string() })
    }

    /// This node's live sessions (of `user` only, when given), in id order: up to `limit` (1 to
    /// [`MAX_PAGE_LIMIT`]) with an id above `cursor` (the previous page's `next_cursor`).
    ///
    /// Errors: `invalid_argument` (limit out of range).
    pub fn sessions(&self, user: Option<&str>, cursor: Option<u64>, limit: usize) -> Result<SessionPage, Error> {
        let limit = crate::host::page_limit(Some(limit as u64))?;
        let shared = self.shared();
        let sessions: Vec<SessionInfo> = shared
            .core
            .registry
            .list(user, cursor, limit)
            .into_iter()
            .map(|s| SessionInfo {
                id: s.id,
                user: s.user,
                client_ip: s.client_ip,
                connected_at_ms: s.connected_at_ms,
                subscriptions: s.subscriptions,
            })
            .collect();
        let next_cursor = (sessions.len() == limit).then(|| sessions.last().map(|s| s.id)).flatten();
        Ok(SessionPage { node: shared.core.cluster.node_id().to_string(), sessions, next_cursor })
    }

    /// This node's channels with subscribers and their subscriber counts, in name order: up to
    /// `limit` (1 to [`MAX_PAGE_LIMIT`]) sorting after `cursor` (the previous page's
    /// `next_cursor`), matching `pattern` when given (the channel-rule pattern syntax:
    /// `:`-separated segments, `{name}` for any one segment).
    ///
    /// Errors: `invalid_argument` (limit out of range, a pattern that does not parse).
    pub fn channels(&self, pattern: Option<&str>, cursor: Option<&str>, limit: usize) -> Result<ChannelPage, Error> {
        let limit = crate::host::page_limit(Some(limit as u64))?;
        let pattern = pattern
            .map(ChannelPattern::parse)
            .transpose()
            .map_err(|e| Error::InvalidArgument(format!("pattern: {e}")))?;
        let shared = self.shared();
        let found = shared.core.hub.list(cursor, limit, |c| pattern.as_ref().is_none_or(|p| p.matches(c).is_some()));
        let channels: Vec<ChannelInfo> =
            found.into_iter().map(|(channel, subscribers)| ChannelInfo { channel, subscribers }).collect();
        let next_cursor = (channels.len() == limit).then(|| channels.last().map(|c| c.channel.clone())).flatten();
        Ok(ChannelPage { node: shared.core.cluster.node_id().to_string(), channels, next_cursor })
    }

    /// This node's name, as listings and [`Applied`] report it.
    pub fn node_id(&self) -> String {
        self.shared().core.cluster.node_id().to_string()
    }
}
