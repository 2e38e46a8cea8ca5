//! The only parser of untrusted message bytes. Decodes a text frame into a `ClientFrame` or a
//! reply error, never panicking and never allocating beyond the size caps enforced upstream.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::channel::validate_channel;
use super::frames::ClientFrame;
use crate::error::ErrorCode;

/// A per-message error: the client gets an `error` reply with this code and the session stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    /// The request id, when it could be read.
    pub id: Option<u64>,
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable detail (no internals).
    pub message: String,
}

impl ReplyError {
    /// A reply error. `code` must be one the error registry lists as a reply
    /// ([`ErrorCode::is_reply`]), since the registry decides whether it is a violation.
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        debug_assert!(code.is_reply(), "{code} is not a reply code in the error registry");
        ReplyError { id, code, message: message.into() }
    }
}

/// Longest `after` cursor of a `presence` request (a subject from a previous page).
const MAX_AFTER_BYTES: usize = 1024;

/// Decodes and validates one text frame.
pub fn decode(text: &str, max_payload_depth: u32) -> Result<ClientFrame, ReplyError> {
    let frame = parse(text)?;
    let id = frame.id();
    match &frame {
        ClientFrame::Subscribe { channel, .. }
        | ClientFrame::Unsubscribe { channel, .. }
        | ClientFrame::History { channel, .. } => {
            validate_channel(channel).map_err(|m| ReplyError::new(id, ErrorCode::InvalidChannel, m))?;
        }
        ClientFrame::Publish { channel, payload, .. } => {
            validate_channel(channel).map_err(|m| ReplyError::new(id, ErrorCode::InvalidChannel, m))?;
            check_payload(id, payload, max_payload_depth)?;
        }
        ClientFrame::Rpc { method, payload, .. } => {
            if method.is_empty() || method.len() > 128 || !method.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ReplyError::new(id, ErrorCode::InvalidFrame, "method must be 1-128 printable ASCII bytes"));
            }
            check_payload(id, payload, max_payload_depth)?;
        }
        ClientFrame::Presence { channel, after, .. } => {
            validate_channel(channel).map_err(|m| ReplyError::new(id, ErrorCode::InvalidChannel, m))?;
            if after.as_ref().is_some_and(|a| a.len() > MAX_AFTER_BYTES) {
                return Err(ReplyError::new(id, ErrorCode::InvalidFrame, "`after` is longer than 1024 bytes"));
            }
        }
        ClientFrame::PresenceStats { channel, .. } => {
            validate_channel(channel).map_err(|m| ReplyError::new(id, ErrorCode::InvalidChannel, m))?;
        }
        ClientFrame::Ping { .. } | ClientFrame::Refresh { .. } => {}
    }
    Ok(frame)
}

/// The JSON stage of [`decode`]: `invalid_json` or `invalid_frame`.
fn parse(text: &str) -> Result<ClientFrame, ReplyError> {
    serde_json::from_str(text).map_err(|e| {
        let id = salvage_id(text);
        // The frame is decoded in one pass, so a field error can stop it before a syntax error
        // further on: invalid JSON anywhere must still be `invalid_json`.
        let e = if e.is_syntax() || e.is_eof() {
            e
        } else {
            serde_json::from_str::<Value>(text).err().filter(|s| s.is_syntax() || s.is_eof()).unwrap_or(e)
        };
        if e.is_syntax() || e.is_eof() {
            ReplyError::new(id, ErrorCode::InvalidJson, format!("invalid JSON: {e}"))
        } else {
            ReplyError::new(id, ErrorCode::InvalidFrame, format!("invalid frame: {e}"))
        }
    })
}

fn check_payload(id: Option<u64>, payload: &Value, max_depth: u32) -> Result<(), ReplyError> {
    let Value::Object(object) = payload else {
        return Err(ReplyError::new(id, ErrorCode::InvalidFrame, "payload must be a JSON object"));
    };
    if !is_within_depth(object, max_depth) {
        return Err(ReplyError::new(id, ErrorCode::PayloadTooDeep, "payload nests too deeply"));
    }
    Ok(())
}

/// True when the payload object (depth 1) nests at most `max_depth` levels: every member's
/// nesting depth (a scalar is 0, `{}` / `[]` is 1) is below `max_depth`. Iterative, so hostile
/// input cannot exhaust the stack; a payload of scalars (the common case) allocates nothing.
pub fn is_within_depth(payload: &Map<String, Value>, max_depth: u32) -> bool {
    if max_depth == 0 {
        // Even a scalar member (depth 0) is too deep.
        return payload.is_empty();
    }
    // Containers still to look into, with their depth; each was checked when pushed.
    let mut stack = Vec::new();
    if !payload.values().all(|member| enter(&mut stack, member, 1, max_depth)) {
        return false;
    }
    while let Some((value, depth)) = stack.pop() {
        let is_within = match value {
            Value::Object(m) => m.values().all(|child| enter(&mut stack, child, depth + 1, max_depth)),
            Value::Array(a) => a.iter().all(|child| enter(&mut stack, child, depth + 1, max_depth)),
            _ => true,
        };
        if !is_within {
            return false;
        }
    }
    true
}

/// Queues `value`, a container at `depth`, to be looked into; false when it is too deep. A
/// scalar needs no look and no room.
fn enter<'a>(stack: &mut Vec<(&'a Value, u32)>, value: &'a Value, depth: u32, max_depth: u32) -> bool {
    if !matches!(value, Value::Object(_) | Value::Array(_)) {
        return true;
    }
    if depth >= max_depth {
        return false;
    }
    stack.push((value, depth));
    true
}

/// Reads `id` from a frame that failed to decode, so the error reply can still be correlated.
fn salvage_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode(text, 32).expect_err(text).code
    }

    #[test]
    fn decodes_every_action() {
        assert_eq!(decode(r#"{"action":"ping","id":7}"#, 32), Ok(ClientFrame::Ping { id: Some(7), seq: None }));
        assert!(matches!(
            decode(r#"{"action":"subscribe","channel":"a:b"}"#, 32),
            Ok(ClientFrame::Subscribe { id: None, .. })
        ));
        assert!(matches!(
            decode(r#"{"action":"publish","id":1,"channel":"a","payload":{"x":[1]}}"#, 32),
            Ok(ClientFrame::Publish { .. })
        ));
        assert!(matches!(
            decode(r#"{"action":"rpc","id":1,"method":"orders.create"}"#, 32),
            Ok(ClientFrame::Rpc { .. })
        ));
    }

    #[test]
    fn refuses_unknown_actions_fields_and_bad_types() {
        assert_eq!(code(r#"{"action":"admin"}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"action":"subscribe","channel":"a","roles":["admin"]}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"action":"ping","id":-1}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"action":"ping","id":"1"}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"action":"publish","channel":"a","payload":[1]}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"channel":"a"}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"action":"ping","action":"ping"}"#), ErrorCode::InvalidFrame);
        assert_eq!(code("{nope"), ErrorCode::InvalidJson);
        assert_eq!(code(""), ErrorCode::InvalidJson);
    }

    #[test]
    fn validates_channels_and_depth() {
        assert_eq!(code(r#"{"action":"subscribe","channel":"a*"}"#), ErrorCode::InvalidChannel);
        let deep =
            format!(r#"{{"action":"publish","channel":"a","payload":{{"x":{}1{}}}}}"#, "[".repeat(40), "]".repeat(40));
        assert_eq!(code(&deep), ErrorCode::PayloadTooDeep);
    }

    /// The decoder before the one-pass `RawFrame`: serde's internally tagged enum. Kept as the
    /// reference the one-pass decoder must agree with.
    #[derive(Deserialize)]
    #[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
    enum Tagged {
        Subscribe {
            id: Option<u64>,
            seq: Option<u64>,
            channel: String,
            #[serde(default)]
            since: Option<crate::protocol::Since>,
            #[serde(default)]
            proof: Option<String>,
        },
        Unsubscribe {
            id: Option<u64>,
            seq: Option<u64>,
            channel: String,
        },
        Publish {
            id: Option<u64>,
            seq: Option<u64>,
            channel: String,
            payload: Value,
        },
        Ping {
            id: Option<u64>,
            seq: Option<u64>,
        },
        Refresh {
            id: Option<u64>,
            seq: Option<u64>,
            token: String,
        },
        Rpc {
            id: Option<u64>,
            seq: Option<u64>,
            method: String,
            #[serde(default = "empty")]
            payload: Value,
        },
    }

    fn empty() -> Value {
        Value::Object(Map::new())
    }

    fn parse_reference(text: &str) -> Result<ClientFrame, ErrorCode> {
        let tagged: Tagged = serde_json::from_str(text)
            .map_err(|e| if e.is_syntax() || e.is_eof() { ErrorCode::InvalidJson } else { ErrorCode::InvalidFrame })?;
        Ok(match tagged {
            Tagged::Subscribe { id, seq, channel, since, proof } => {
                ClientFrame::Subscribe { id, seq, channel, since, proof }
            }
            Tagged::Unsubscribe { id, seq, channel } => ClientFrame::Unsubscribe { id, seq, channel },
            Tagged::Publish { id, seq, channel, payload } => ClientFrame::Publish { id, seq, channel, payload },
            Tagged::Ping { id, seq } => ClientFrame::Ping { id, seq },
            Tagged::Refresh { id, seq, token } => ClientFrame::Refresh { id, seq, token },
            Tagged::Rpc { id, seq, method, payload } => ClientFrame::Rpc { id, seq, method, payload },
        })
    }

    /// Every combination of present, absent, null and wrongly typed fields, for every action (and
    /// unknown, missing and non-string ones), with an invented field, a repeated field, the
    /// action first or last, and broken JSON after each of those: the one-pass decoder gives the
    /// same frame or the same error code as the tagged enum did.
    #[test]
    fn one_pass_decoder_agrees_with_the_tagged_enum() {
        let actions = [
            None,
            Some(r#""ping""#),
            Some(r#""subscribe""#),
            Some(r#""unsubscribe""#),
            Some(r#""publish""#),
            Some(r#""refresh""#),
            Some(r#""rpc""#),
            Some(r#""admin""#),
            Some("5"),
            Some("null"),
        ];
        let ids = [None, Some("7"), Some(r#""1""#), Some("null"), Some("-1")];
        let channels = [None, Some(r#""a:b""#), Some("5"), Some("null")];
        let payloads = [None, Some(r#"{"x":[1,{"y":2}]}"#), Some("[1]"), Some("null"), Some(r#"{"x":{"#)];
        let tokens = [None, Some(r#""t""#), Some("null")];
        let methods = [None, Some(r#""m.x""#), Some("[]")];
        let extras = [None, Some(r#""roles":["admin"]"#), Some(r#""action":"ping""#), Some(r#""seq":1,"seq":2"#)];
        let mut checked = 0;
        for action in actions {
            for id in ids {
                for channel in channels {
                    for payload in payloads {
                        for token in tokens {
                            for method in methods {
                                for (k, extra) in extras.iter().enumerate() {
                                    let mut fields: Vec<String> = [
                                        ("id", id),
                                        ("channel", channel),
                                        ("payload", payload),
                                        ("token", token),
                                        ("method", method),
                                    ]
                                    .iter()
                                    .filter_map(|(name, value)| value.map(|v| format!(r#""{name}":{v}"#)))
                                    .collect();
                                    if let Some(action) = action {
                                        let field = format!(r#""action":{action}"#);
                                        if k % 2 == 0 { fields.insert(0, field) } else { fields.push(field) }
                                    }
                                    if let Some(extra) = extra {
                                        fields.insert(fields.len() / 2, (*extra).to_string());
                                    }
                                    let text = format!("{{{}}}", fields.join(","));
                                    for text in [text.clone(), text[..text.len() - 1].to_string()] {
                                        let new = parse(&text).map_err(|e| e.code);
                                        if serde_json::from_str::<Value>(&text).is_err() {
                                            // Invalid JSON is always `invalid_json`; the tagged
                                            // enum said `invalid_frame` when a repeated `action`
                                            // came before the syntax error.
                                            assert_eq!(new, Err(ErrorCode::InvalidJson), "{text}");
                                        } else {
                                            assert_eq!(new, parse_reference(&text), "{text}");
                                        }
                                        checked += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 10 * 5 * 4 * 5 * 3 * 3 * 4 * 2);
        for text in ["", "[]", "null", r#""ping""#, "{}", r#"{"action":"ping"} x"#, r#"{"action":"ping"}  "#] {
            assert_eq!(parse(text).map_err(|e| e.code), parse_reference(text), "{text}");
        }
        let deep = format!(r#"{{"roles":{}1{},"action":"ping"}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep).map_err(|e| e.code), Err(ErrorCode::InvalidJson));
        assert_eq!(parse_reference(&deep), Err(ErrorCode::InvalidJson));
    }

    /// The depth rule as defined: a scalar is 0, a container one more than its deepest child.
    fn depth_reference(value: &Value) -> u32 {
        match value {
            Value::Object(m) => 1 + m.values().map(depth_reference).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth_reference).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn depth_check_agrees_with_the_definition() {
        let payloads = [
            serde_json::json!({}),
            serde_json::json!({"t": 1, "n": 2, "pad": "x"}),
            serde_json::json!({"a": {}}),
            serde_json::json!({"a": []}),
            serde_json::json!({"a": [1, [2, [3]]], "b": {"c": {"d": {}}}}),
            serde_json::json!({"a": [[[[[]]]]], "b": 1}),
            serde_json::json!({"a": [{}, [{"b": [[]]}]]}),
        ];
        for payload in payloads {
            let object = payload.as_object().expect("object");
            for max_depth in 0..8 {
                let expected = object.values().all(|v| depth_reference(v) < max_depth);
                assert_eq!(is_within_depth(object, max_depth), expected, "{payload} at {max_depth}");
            }
        }
    }

    #[test]
    fn error_replies_keep_the_id_when_readable() {
        let err = decode(r#"{"action":"nope","id":5}"#, 32).expect_err("bad");
        assert_eq!(err.id, Some(5));
    }
}
