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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Start receiving a channel.
    Subscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The channel.
        channel: String,
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
    /// Call a host RPC handler.
    Rpc {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Replay counter (see `protocol.require_seq`).
        seq: Option<u64>,
        /// The method name.
        method: String,
        /// The arguments: a JSON object (default `{}`).
        #[serde(default = "empty_object")]
        payload: Value,
    },
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
            | ClientFrame::Rpc { id, .. } => *id,
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
            | ClientFrame::Rpc { seq, .. } => *seq,
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
        /// Why, when not the slow-consumer policy (`broker_reconnected`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// The server dropped a subscription (after a refresh, the new token no longer allows it).
    Unsubscribed {
        /// The channel.
        channel: &'a str,
        /// Stable reason name.
        reason: &'static str,
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
}

impl ServerFrame<'_> {
    /// Encodes the frame once; the bytes are shared by every recipient.
    pub fn encode(&self) -> Utf8Bytes {
        // Serializing these types cannot fail: all keys are strings and all values are JSON.
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}
