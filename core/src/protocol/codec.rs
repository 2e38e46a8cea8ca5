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
    /// A reply error.
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ReplyError { id, code, message: message.into() }
    }
}

/// Decodes and validates one text frame.
pub fn decode(text: &str, max_payload_depth: u32) -> Result<ClientFrame, ReplyError> {
    let frame: ClientFrame = serde_json::from_str(text).map_err(|e| {
        let id = salvage_id(text);
        if e.is_syntax() || e.is_eof() {
            ReplyError::new(id, ErrorCode::InvalidJson, format!("invalid JSON: {e}"))
        } else {
            ReplyError::new(id, ErrorCode::InvalidFrame, format!("invalid frame: {e}"))
        }
    })?;
    let id = frame.id();
    match &frame {
        ClientFrame::Subscribe { channel, .. } | ClientFrame::Unsubscribe { channel, .. } => {
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
        ClientFrame::Ping { .. } | ClientFrame::Refresh { .. } => {}
    }
    Ok(frame)
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

/// True when the payload object (depth 1) nests at most `max_depth` levels.
pub fn is_within_depth(payload: &Map<String, Value>, max_depth: u32) -> bool {
    payload.values().all(|v| depth(v) < max_depth)
}

/// Nesting depth of a value (a scalar is 0, `{}` / `[]` is 1), iterative so hostile input cannot
/// exhaust the stack.
fn depth(value: &Value) -> u32 {
    let mut max = 0;
    let mut stack = vec![(value, 1u32)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                max = max.max(d);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                max = max.max(d);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
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

    #[test]
    fn error_replies_keep_the_id_when_readable() {
        let err = decode(r#"{"action":"nope","id":5}"#, 32).expect_err("bad");
        assert_eq!(err.id, Some(5));
    }
}
