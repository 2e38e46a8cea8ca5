//! Wire protocol v1 frames (JSON text). Client frames are tagged by `action`, server frames by
//! `type`. Unknown actions and unknown fields are refused: a field the client invents (its own
//! roles, a user id) must never be read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

fn empty_object() -> Value {
    Value::Object(Map::new())
}
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A frame from the client.
///
/// Decoded in one pass through `RawFrame`, a flat struct of every field any action has: serde's
/// internally tagged enums buffer the whole frame into an intermediate tree before they read the
/// tag, and that buffer showed in the echo profile. The rules are the same: `action` is required
/// and known, every field is known and appears once, and each action accepts its own fields only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawFrame")]
pub enum ClientFrame {
    /// Start receiving a channel.
    Subscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
        /// Recover what was published after this position (channels with history only).
        since: Option<Since>,
        /// The `proof` of an earlier subscribe `ack` (with `since` only): that this identity was
        /// subscribed from at most `since.offset` on.
        proof: Option<String>,
    },
    /// Stop receiving a channel.
    Unsubscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// Send a publication to every subscriber of a channel.
    Publish {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
        /// The publication body: a JSON object.
        payload: Value,
    },
    /// Liveness check; answered with `pong`.
    Ping {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
    },
    /// Replace the session's token before it expires.
    Refresh {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The new token.
        token: String,
    },
    /// Read a page of a channel's kept publications.
    History {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
        /// How many publications at most, as sent (checked by the session: 1 to
        /// [`MAX_HISTORY_PAGE`]); absent: [`DEFAULT_HISTORY_PAGE`].
        limit: Option<i64>,
        /// The cursor: publications after it (oldest first) or before it (newest first).
        since: Option<Since>,
        /// Newest first instead of oldest first.
        is_newest_first: bool,
    },
    /// Call a host RPC handler.
    Rpc {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The method name.
        method: String,
        /// The arguments: a JSON object (default `{}`).
        payload: Value,
    },
    /// Who is subscribed to a channel now (a page of members, by subject).
    Presence {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
        /// Members per page, 1 to [`MAX_PRESENCE_LIMIT`] (default [`DEFAULT_PRESENCE_LIMIT`]).
        limit: usize,
        /// Start after this subject (the previous page's `next`).
        after: Option<String>,
    },
    /// How many users and sessions are subscribed to a channel now.
    PresenceStats {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
    },
}

/// Members in one `presence` reply when the request gives no `limit`.
pub const DEFAULT_PRESENCE_LIMIT: usize = 100;
/// The largest `limit` a `presence` request may ask for.
pub const MAX_PRESENCE_LIMIT: usize = 1000;
/// The largest `limit` of a `history` request.
pub const MAX_HISTORY_PAGE: i64 = 1000;
/// The `limit` of a `history` request that gives none.
pub const DEFAULT_HISTORY_PAGE: i64 = 100;

/// A position in a channel's history, as a client states it (`since`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    /// The last offset the client received.
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// The actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Subscribe,
    Unsubscribe,
    Publish,
    Ping,
    Refresh,
    Rpc,
    History,
    Presence,
    PresenceStats,
}

impl Action {
    const NAMES: [&'static str; 9] =
        ["subscribe", "unsubscribe", "publish", "ping", "refresh", "rpc", "history", "presence", "presence_stats"];
    const ALL: [Action; 9] = [
        Action::Subscribe,
        Action::Unsubscribe,
        Action::Publish,
        Action::Ping,
        Action::Refresh,
        Action::Rpc,
        Action::History,
        Action::Presence,
        Action::PresenceStats,
    ];

    fn name(self) -> &'static str {
        Action::NAMES[self as usize]
    }
}

/// Read as a string (a derived enum would make a non-string `action` a JSON syntax error).
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Action;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an action name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Action, E> {
                Action::NAMES
                    .iter()
                    .position(|n| *n == name)
                    .map(|i| Action::ALL[i])
                    .ok_or_else(|| E::unknown_variant(name, &Action::NAMES))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Every field of every action, read in one pass. Unknown and repeated fields are refused here;
/// which fields an action takes is checked by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame {
    action: Option<Action>,
    id: Option<u64>,
    seq: Option<u64>,
    // `Some` as soon as a field is present: `null` is a wrong type (or a field this action does
    // not take), never the same as absent.
    #[serde(default, deserialize_with = "present")]
    channel: Option<String>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    token: Option<String>,
    #[serde(default, deserialize_with = "present")]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    since: Option<Since>,
    #[serde(default, deserialize_with = "present")]
    proof: Option<String>,
    #[serde(default, deserialize_with = "present")]
    limit: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    newest_first: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    after: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Why a well-formed JSON object is not a v1 frame (reported as `invalid frame: ...`).
#[derive(Debug)]
pub(crate) struct FrameError(String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<RawFrame> for ClientFrame {
    type Error = FrameError;

    fn try_from(raw: RawFrame) -> Result<Self, FrameError> {
        let RawFrame { action, id, seq, channel, payload, token, method, since, proof, limit, newest_first, after } =
            raw;
        let Some(action) = action else { return Err(FrameError("missing field `action`".into())) };
        let name = action.name();
        // Whether this action takes a field.
        let takes = |field: &str| match action {
            Action::Subscribe => matches!(field, "channel" | "since" | "proof"),
            Action::Unsubscribe => field == "channel",
            Action::History => matches!(field, "channel" | "since" | "limit" | "newest_first"),
            Action::Publish => field == "channel" || field == "payload",
            Action::Ping => false,
            Action::Refresh => field == "token",
            Action::Rpc => field == "method" || field == "payload",
            Action::Presence => matches!(field, "channel" | "limit" | "after"),
            Action::PresenceStats => field == "channel",
        };
        let given = [
            ("channel", channel.is_some()),
            ("payload", payload.is_some()),
            ("token", token.is_some()),
            ("method", method.is_some()),
            ("since", since.is_some()),
            ("proof", proof.is_some()),
            ("limit", limit.is_some()),
            ("newest_first", newest_first.is_some()),
            ("after", after.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(field, is_given)| *is_given && !takes(field)) {
            return Err(FrameError(format!("unknown field `{field}` for action `{name}`")));
        }
        let missing = |field: &str| FrameError(format!("missing field `{field}` for action `{name}`"));
        Ok(match action {
            Action::Subscribe => {
                if proof.is_some() && since.is_none() {
                    return Err(FrameError("field `proof` needs `since` for action `subscribe`".into()));
                }
                ClientFrame::Subscribe { id, seq, channel: channel.ok_or_else(|| missing("channel"))?, since, proof }
            }
            Action::History => ClientFrame::History {
                id,
                seq,
                channel: channel.ok_or_else(|| missing("channel"))?,
                limit,
                since,
                is_newest_first: newest_first.unwrap_or(false),
            },
            Action::Unsubscribe => {
                ClientFrame::Unsubscribe { id, seq, channel: channel.ok_or_else(|| missing("channel"))? }
            }
            Action::Publish => ClientFrame::Publish {
                id,
                seq,
                channel: channel.ok_or_else(|| missing("channel"))?,
                payload: payload.ok_or_else(|| missing("payload"))?,
            },
            Action::Ping => ClientFrame::Ping { id, seq },
            Action::Refresh => ClientFrame::Refresh { id, seq, token: token.ok_or_else(|| missing("token"))? },
            Action::Rpc => ClientFrame::Rpc {
                id,
                seq,
                method: method.ok_or_else(|| missing("method"))?,
                payload: payload.unwrap_or_else(empty_object),
            },
            Action::Presence => ClientFrame::Presence {
                id,
                seq,
                channel: channel.ok_or_else(|| missing("channel"))?,
                limit: match limit {
                    None => DEFAULT_PRESENCE_LIMIT,
                    Some(n) if (1..=MAX_PRESENCE_LIMIT as i64).contains(&n) => n as usize,
                    Some(_) => {
                        return Err(FrameError(format!("`limit` must be 1 to {MAX_PRESENCE_LIMIT}")));
                    }
                },
                after,
            },
            Action::PresenceStats => {
                ClientFrame::PresenceStats { id, seq, channel: channel.ok_or_else(|| missing("channel"))? }
            }
        })
    }
}

impl ClientFrame {
    /// The frame's `id`.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientFrame::Subscribe { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Publish { id, .. }
            | ClientFrame::Ping { id, .. }
            | ClientFrame::Refresh { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Rpc { id, .. }
            | ClientFrame::Presence { id, .. }
            | ClientFrame::PresenceStats { id, .. } => *id,
        }
    }

    /// The action's wire name (a bounded metrics label).
    pub fn action_name(&self) -> &'static str {
        match self {
            ClientFrame::Subscribe { .. } => "subscribe",
            ClientFrame::Unsubscribe { .. } => "unsubscribe",
            ClientFrame::Publish { .. } => "publish",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::Refresh { .. } => "refresh",
            ClientFrame::Rpc { .. } => "rpc",
            ClientFrame::History { .. } => "history",
            ClientFrame::Presence { .. } => "presence",
            ClientFrame::PresenceStats { .. } => "presence_stats",
        }
    }

    /// The frame's `seq`.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ClientFrame::Subscribe { seq, .. }
            | ClientFrame::Unsubscribe { seq, .. }
            | ClientFrame::Publish { seq, .. }
            | ClientFrame::Ping { seq, .. }
            | ClientFrame::Refresh { seq, .. }
            | ClientFrame::History { seq, .. }
            | ClientFrame::Rpc { seq, .. }
            | ClientFrame::Presence { seq, .. }
            | ClientFrame::PresenceStats { seq, .. } => *seq,
        }
    }
}

/// A frame to the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The request with this id succeeded.
    Ack {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// The request with this id failed; the connection stays open.
    Error {
        /// The request's id, when it could be read.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable error code name.
        code: &'static str,
        /// Human-readable detail.
        message: &'a str,
        /// For `rate_limited`: milliseconds until a retry can succeed.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A publication on a subscribed channel.
    Message {
        /// The channel.
        channel: &'a str,
        /// The publication body.
        payload: &'a Value,
        /// Who published it, stamped by the server when the channel's rule has `publisher`:
        /// `{"sub": ..., "claims": {...}}` or `{"server": true}`. Absent otherwise.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a Value>,
        /// Its offset in the channel's history; absent on channels without history.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// The `ack` of a `subscribe` on a channel with history: the channel's position when the
    /// subscription started (live publications have greater offsets) and, when the request gave
    /// `since`, whether what was missed follows (`true`) or a `gap` does (`false`).
    #[serde(rename = "ack")]
    SubscribedAt {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel's latest offset.
        offset: u64,
        /// The channel's epoch.
        epoch: &'a str,
        /// Present when the request gave `since`.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Proves this identity was subscribed from here on; a later `subscribe` with `since`
        /// sends it back (see history/proof.rs).
        proof: &'a str,
    },
    /// Messages on `channel` may have been lost for this subscriber: dropped by the slow-consumer
    /// policy (sent before the next message of that channel, with the count), or missed while
    /// the cluster broker was unreachable (sent when it is back, with a `reason`, no count).
    Gap {
        /// The channel.
        channel: &'a str,
        /// How many messages were lost, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<u64>,
        /// Why, when not the slow-consumer policy: `broker_reconnected`, or, after a `subscribe`
        /// with `since` that could not recover, `epoch_changed` or `history_trimmed`.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// The server dropped a subscription: `forbidden` (after a refresh or a reload the rules no
    /// longer allow it) or `server` (the host or an operator unsubscribed the session).
    Unsubscribed {
        /// The channel.
        channel: &'a str,
        /// Stable reason name.
        reason: &'static str,
    },
    /// The host or an operator subscribed the session to `channel` (`ServerHandle::subscribe`);
    /// its messages follow this frame.
    Subscribed {
        /// The channel.
        channel: &'a str,
        /// Who made the subscription: always `server` (a client's own subscribe gets an `ack`).
        by: &'static str,
    },
    /// A message from the host or an operator to this session, outside any channel
    /// (`ServerHandle::send`).
    Push {
        /// The message body (a JSON object).
        payload: &'a Value,
    },
    /// Answer to `ping`.
    Pong {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Answer to `rpc`.
    Result {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// What the handler returned.
        payload: &'a Value,
    },
    /// A user's first session subscribed to a channel whose rule has `join_leave = true`.
    Join {
        /// The channel.
        channel: &'a str,
        /// The user's subject.
        user: &'a str,
        /// The claims the rule's `presence_claims` lists that the user's token carries (absent
        /// when the rule lists none).
        #[serde(skip_serializing_if = "Option::is_none")]
        claims: Option<&'a Map<String, Value>>,
    },
    /// A user's last session left a channel whose rule has `join_leave = true`.
    Leave {
        /// The channel.
        channel: &'a str,
        /// The user's subject.
        user: &'a str,
    },
    /// Answer to `presence`: one page of members, ordered by subject.
    Presence {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: &'a str,
        /// The members of this page.
        members: &'a [crate::presence::Member],
        /// Present when more members follow: pass it as `after` to get the next page.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<&'a str>,
    },
    /// Answer to `presence_stats`.
    PresenceStats {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: &'a str,
        /// Distinct users subscribed.
        users: u64,
        /// Sessions subscribed (a user with two sessions counts twice).
        clients: u64,
    },
}

impl ServerFrame<'_> {
    /// Encodes the frame once; the bytes are shared by every recipient.
    pub fn encode(&self) -> Utf8Bytes {
        match self {
            ServerFrame::Ack { id } => short_reply(Short::Ack, *id),
            ServerFrame::Pong { id } => short_reply(Short::Pong, *id),
            // Serializing these types cannot fail: all keys are strings and all values are JSON.
            _ => Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default()),
        }
    }
}

/// The answer to `history`: `{"type":"history","id":..,"channel":..,"offset":..,"epoch":..,
/// "publications":[..]}`, where each publication is its `message` frame exactly as it was
/// delivered (kept encoded, so it is copied here, not serialized again).
pub fn encode_history_page(
    id: Option<u64>,
    channel: &str,
    offset: u64,
    epoch: &str,
    publications: &[(u64, Utf8Bytes)],
) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Head<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        channel: &'a str,
        offset: u64,
        epoch: &'a str,
    }
    let head = serde_json::to_string(&Head { r#type: "history", id, channel, offset, epoch }).unwrap_or_default();
    let size = publications.iter().map(|(_, f)| f.len() + 1).sum::<usize>();
    let mut text = String::with_capacity(head.len() + size + 20);
    text.push_str(&head[..head.len() - 1]);
    text.push_str(",\"publications\":[");
    for (i, (_, frame)) in publications.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(frame.as_str());
    }
    text.push_str("]}");
    Utf8Bytes::from(text)
}

#[derive(Clone, Copy)]
enum Short {
    Ack,
    Pong,
}

/// `ack` and `pong`, the replies to almost every request, written without the serializer: the
/// same bytes `serde_json` gives, and no allocation without an `id`.
fn short_reply(kind: Short, id: Option<u64>) -> Utf8Bytes {
    let (bare, head) = match kind {
        Short::Ack => (r#"{"type":"ack"}"#, r#"{"type":"ack","id":"#),
        Short::Pong => (r#"{"type":"pong"}"#, r#"{"type":"pong","id":"#),
    };
    let Some(id) = id else { return Utf8Bytes::from_static(bare) };
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(id);
    let mut text = String::with_capacity(head.len() + digits.len() + 1);
    text.push_str(head);
    text.push_str(digits);
    text.push('}');
    Utf8Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_page_embeds_the_delivered_frames() {
        let payload = serde_json::json!({"n": 1});
        let frame = ServerFrame::Message { channel: "c", payload: &payload, from: None, offset: Some(7) }.encode();
        let page = encode_history_page(Some(3), "c", 9, "e", &[(7, frame)]);
        let parsed: Value = serde_json::from_str(page.as_str()).expect("JSON");
        assert_eq!(
            parsed,
            serde_json::json!({"type": "history", "id": 3, "channel": "c", "offset": 9, "epoch": "e",
                "publications": [{"type": "message", "channel": "c", "payload": {"n": 1}, "offset": 7}]})
        );
        let empty = encode_history_page(None, "c", 0, "e", &[]);
        assert_eq!(empty.as_str(), r#"{"type":"history","channel":"c","offset":0,"epoch":"e","publications":[]}"#);
    }

    #[test]
    fn short_replies_are_the_serializers_bytes() {
        for id in [None, Some(0), Some(7), Some(u64::MAX)] {
            for frame in [ServerFrame::Ack { id }, ServerFrame::Pong { id }] {
                let serialized = serde_json::to_string(&frame).expect("serializes");
                assert_eq!(frame.encode().as_str(), serialized);
            }
        }
    }
}
