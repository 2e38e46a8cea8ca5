//! `[protocol]`: wire protocol options.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[protocol]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Accept binary frames carrying the same UTF-8 JSON envelope as text frames. Default false:
    /// a binary frame closes the session with 1003.
    pub allow_binary: bool,
    /// Every client frame must carry `seq`, strictly increasing within the session; a duplicate or
    /// a regression is refused with `replay`. Default false.
    pub require_seq: bool,
    /// Conformance-test mode: every text or binary message that passes the transport checks
    /// (size caps, UTF-8, RFC 6455 framing) is sent back unchanged instead of being decoded as a
    /// v1 frame. It exists so the Autobahn suite can exercise the production connection path;
    /// **never enable it in production** (it bypasses the wire protocol and channel rules).
    /// Default false.
    pub echo: bool,
}
