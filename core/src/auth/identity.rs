//! `Identity`: who a session is, derived only from a verified token (never from anything the client
//! sends later).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The verified identity of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The `sub` claim.
    pub subject: String,
    /// Roles from `auth.roles_claim` (a string array or a space-separated string; anything else
    /// counts as none).
    pub roles: Vec<String>,
    /// Scopes from `auth.scopes_claim` (space-separated string or string array).
    pub scopes: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `iat`, when present.
    pub issued_at: Option<u64>,
    /// `jti`, when present.
    pub token_id: Option<String>,
    /// Every claim of the token, for hooks and policies.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// True when the identity carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// True when the identity carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Reads a string list claim; a space-separated string is split (RFC 8693 `scope`).
pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}
