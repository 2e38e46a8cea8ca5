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
}
