//! What travels through the broker: subject names, the publication envelope and control messages.
//!
//! Subjects (`P` is `cluster.channel_prefix`):
//!
//! | broker | publications on channel `a:b.c` | control |
//! |---|---|---|
//! | Redis | `P:c:a:b.c` (Redis channels are exact byte strings) | `P:control` |
//! | NATS | `P.c.a.b_2Ec` (`:` becomes the token separator `.`; `.`, `_` and anything else that is not a letter, digit, `-` or `@` is escaped as `_XX`) | `P.control` |
//!
//! Channel names never contain NATS wildcards or whitespace (`validate_channel`), and the escaping
//! is reversible, so a channel maps to exactly one literal subject and back.
//!
//! Payloads come in two formats. Signed (nodes with `cluster.signing_key_env`; the envelope is
//! built and checked in signing.rs): `~wsg1 \n node_id \n instance \n seq \n sent_ms \n mac \n
//! body`, where the body of a publication is the `message` frame and that of a control message
//! the JSON of a [`Control`]. Plain (nodes without a key): a publication is `node_id \n sent_ms \n
//! frame`, a control message the JSON of a [`ControlEnvelope`]. Either way the frame is the
//! `message` frame exactly as subscribers receive it, encoded once by the publishing node.

use serde::{Deserialize, Serialize};

use super::config::BrokerKind;
use crate::auth::Revocation;
use crate::limits::BanTarget;

/// Builds and parses subjects for one broker kind and prefix.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    kind: BrokerKind,
    channel_root: String,
    control: String,
}

impl Subjects {
    pub(crate) fn new(kind: BrokerKind, prefix: &str) -> Self {
        let sep = if kind == BrokerKind::Nats { '.' } else { ':' };
        Subjects { kind, channel_root: format!("{prefix}{sep}c{sep}"), control: format!("{prefix}{sep}control") }
    }

    pub(crate) fn control(&self) -> &str {
        &self.control
    }

    pub(crate) fn channel(&self, channel: &str) -> String {
        let mut subject = self.channel_root.clone();
        if self.kind != BrokerKind::Nats {
            subject.push_str(channel);
            return subject;
        }
        for b in channel.bytes() {
            match b {
                b':' => subject.push('.'),
                b if b.is_ascii_alphanumeric() || b == b'-' || b == b'@' => subject.push(b as char),
                b => subject.push_str(&format!("_{b:02X}")),
            }
        }
        subject
    }

    /// The channel a subject carries, or None for anything else.
    pub(crate) fn channel_of(&self, subject: &str) -> Option<String> {
        let rest = subject.strip_prefix(&self.channel_root)?;
        if self.kind != BrokerKind::Nats {
            return Some(rest.to_string());
        }
        let bytes = rest.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => out.push(b':'),
                b'_' => {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
}

/// Encodes a publication in the plain format.
pub(crate) fn encode_publication(node: &str, sent_ms: u64, frame: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(node.len() + frame.len() + 24);
    out.extend_from_slice(node.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(sent_ms.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(frame.as_bytes());
    out
}

/// A publication received from the broker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Publication<'a> {
    pub(crate) node: &'a str,
    pub(crate) sent_ms: u64,
    pub(crate) frame: &'a str,
}

pub(crate) fn decode_publication(payload: &[u8]) -> Option<Publication<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let (node, rest) = text.split_once('\n')?;
    let (sent, frame) = rest.split_once('\n')?;
    Some(Publication { node, sent_ms: sent.parse().ok()?, frame })
}

/// A control message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Control {
    /// A node (re)joined: every node answers by re-sending the revocations and bans it
    /// originated that are still in force.
    Hello,
    /// A revocation made at `at` (seconds since the Unix epoch).
    Revoke { revocation: Revocation, at: u64 },
    /// A ban until `until` (seconds since the Unix epoch).
    Ban { target: BanTarget, reason: String, until: u64 },
    /// A ban lifted by an operator.
    Lift { target: BanTarget },
    /// A server-side operation on sessions (`ServerHandle::send`, `disconnect_with`, `subscribe`,
    /// `unsubscribe`): every node applies it to the sessions of a user, or only the named node
    /// to one of its sessions. Not kept for re-sending: it acts on the sessions live now.
    Sessions { target: RemoteTarget, op: SessionOp },
}

/// Which sessions a [`Control::Sessions`] reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RemoteTarget {
    /// Every session of this user (`sub`), on every node.
    User(String),
    /// One session of one node (session ids are node-local).
    Session { node: String, id: u64 },
}

/// What a [`Control::Sessions`] does; the receiving node checks it again (channel names, close
/// codes and reasons) before applying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum SessionOp {
    /// Queue this `push` frame, encoded once by the sending node.
    Send { frame: String },
    /// Close with this code and reason.
    Disconnect { code: u16, reason: Option<String> },
    /// Subscribe (a server-made subscription).
    Subscribe { channel: String },
    /// Unsubscribe.
    Unsubscribe { channel: String },
}

/// A control message with its sender (the plain format; signed messages carry the sender in
/// their envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ControlEnvelope {
    pub(crate) node: String,
    pub(crate) sent_ms: u64,
    #[serde(flatten)]
    pub(crate) control: Control,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_subjects_are_literal_and_reversible() {
        let s = Subjects::new(BrokerKind::Nats, "wsg");
        for (channel, subject) in [
            ("news", "wsg.c.news"),
            ("tenant:acme:orders", "wsg.c.tenant.acme.orders"),
            ("a.b", "wsg.c.a_2Eb"),
            ("a_2Eb", "wsg.c.a_5F2Eb"),
            ("u@x.io:in-box", "wsg.c.u@x_2Eio.in-box"),
        ] {
            assert_eq!(s.channel(channel), subject);
            assert_eq!(s.channel_of(subject).as_deref(), Some(channel));
            assert!(!subject.contains(['*', '>', ' ']));
        }
        assert_eq!(s.control(), "wsg.control");
        assert_eq!(s.channel_of("wsg.control"), None);
        assert_eq!(s.channel_of("wsg.c.bad_Z"), None);
    }

    #[test]
    fn redis_subjects_keep_the_name() {
        let s = Subjects::new(BrokerKind::Redis, "wsg");
        assert_eq!(s.channel("a:b.c"), "wsg:c:a:b.c");
        assert_eq!(s.channel_of("wsg:c:a:b.c").as_deref(), Some("a:b.c"));
        assert_eq!(s.control(), "wsg:control");
    }

    #[test]
    fn publications_round_trip_and_garbage_is_refused() {
        let bytes = encode_publication("n1", 42, "{\"type\":\"message\",\"x\":\"a\\nb\"}");
        let p = decode_publication(&bytes).expect("decodes");
        assert_eq!(p, Publication { node: "n1", sent_ms: 42, frame: "{\"type\":\"message\",\"x\":\"a\\nb\"}" });
        assert!(decode_publication(b"n1\nx\n{}").is_none());
        assert!(decode_publication(b"n1").is_none());
        assert!(decode_publication(&[0xff, b'\n', b'1', b'\n']).is_none());
    }

    #[test]
    fn control_messages_round_trip() {
        let m = ControlEnvelope {
            node: "a".into(),
            sent_ms: 1,
            control: Control::Ban { target: BanTarget::User("bob".into()), reason: "operator".into(), until: 9 },
        };
        let text = serde_json::to_string(&m).expect("serializes");
        assert_eq!(serde_json::from_str::<ControlEnvelope>(&text).expect("parses"), m);
        let m = Control::Sessions {
            target: RemoteTarget::Session { node: "b".into(), id: 7 },
            op: SessionOp::Subscribe { channel: "news".into() },
        };
        let text = serde_json::to_string(&m).expect("serializes");
        assert_eq!(
            text,
            r#"{"kind":"sessions","target":{"session":{"node":"b","id":7}},"op":{"op":"subscribe","channel":"news"}}"#
        );
        assert_eq!(serde_json::from_str::<Control>(&text).expect("parses"), m);
    }
}
