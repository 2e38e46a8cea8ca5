//! `AuthenticateAnswer`: the one answer every host gives the `authenticate` hook, and the one
//! parser of that answer in its JSON form (what Python, Node and C hand back).
//!
//! The merge rule lives here and nowhere else: see [`IdentityUpdate`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Identity;

/// JWT registered claims (RFC 7519 §4.1): facts of the token that a hook can never change.
const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// What the `authenticate` hook answers, in every host.
///
/// JSON form (Python returns it as Python values, Node as JavaScript values, C as text through
/// `wsg_authenticate_answer_set_json`), parsed by [`AuthenticateAnswer::from_json`] only:
///
/// | answer                                   | meaning                                   |
/// |------------------------------------------|-------------------------------------------|
/// | `true`                                   | [`AuthenticateAnswer::Allow`]             |
/// | `false`                                  | [`AuthenticateAnswer::Deny`]              |
/// | `{"deny": "reason"}`                     | `Deny` with that reason (for the logs)    |
/// | `{"roles"?, "scopes"?, "claims"?}`       | [`AuthenticateAnswer::Update`]            |
///
/// Anything else (`null`, a number, a string, an unknown key) is refused as an invalid answer,
/// and the handshake or refresh is refused: a typo never passes silently.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthenticateAnswer {
    /// Keep the identity the core verified.
    Allow,
    /// Refuse: 403 `rejected_by_hook` at the handshake, a `rejected_by_hook` reply to a refresh.
    /// The reason goes to the logs and the `handshake_rejected` event, never to the client.
    Deny(String),
    /// Allow with roles, scopes or claims changed by the merge rule of [`IdentityUpdate`].
    Update(IdentityUpdate),
}

/// Changes an `authenticate` answer makes to the verified identity. The merge rule:
///
/// - `roles`, when present, replaces the token's roles; absent, they are kept. Same for `scopes`.
/// - `claims` is merged key by key into the token's claims: a key with a value adds or replaces
///   that claim, a key with `null` removes it, claims not named are kept.
/// - The registered claims (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`) are the token's
///   facts: an update that names one is an invalid answer (refused), as is any other key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityUpdate {
    /// Replacement roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Replacement scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Claims to add, replace (a value) or remove (`null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
}

/// Why a host's answer is not an [`AuthenticateAnswer`] (the handshake or refresh is refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid authenticate answer: {0}")]
pub struct InvalidAnswer(String);

impl AuthenticateAnswer {
    /// Parses an answer in its JSON form (see the type's table).
    ///
    /// Errors: [`InvalidAnswer`] for any other value, an unknown key, a wrong type, or an update
    /// naming a registered claim.
    pub fn from_json(value: Value) -> Result<Self, InvalidAnswer> {
        match value {
            Value::Bool(true) => Ok(AuthenticateAnswer::Allow),
            Value::Bool(false) => Ok(AuthenticateAnswer::Deny("the authenticate hook answered false".into())),
            Value::Object(mut object) if object.contains_key("deny") => {
                if object.len() != 1 {
                    return Err(InvalidAnswer("`deny` cannot be combined with other keys".into()));
                }
                match object.remove("deny") {
                    Some(Value::String(reason)) => Ok(AuthenticateAnswer::Deny(reason)),
                    _ => Err(InvalidAnswer("`deny` must be a string (the reason, for the logs)".into())),
                }
            }
            object @ Value::Object(_) => {
                let update: IdentityUpdate =
                    serde_json::from_value(object).map_err(|e| InvalidAnswer(e.to_string()))?;
                update.check()?;
                Ok(AuthenticateAnswer::Update(update))
            }
            other => Err(InvalidAnswer(format!(
                "expected true, false, {{\"deny\": reason}} or {{roles, scopes, claims}}, got {}",
                json_kind(&other)
            ))),
        }
    }

    /// Parses an answer from JSON text (the C ABI's form).
    ///
    /// Errors: [`InvalidAnswer`] when the text is not JSON or not an answer.
    pub fn from_json_text(text: &str) -> Result<Self, InvalidAnswer> {
        let value = serde_json::from_str(text).map_err(|e| InvalidAnswer(format!("not JSON: {e}")))?;
        Self::from_json(value)
    }

    /// Applies the answer to the verified identity: the identity the session gets, or the refusal
    /// reason. The caller (the hook runner) refuses on `Err`.
    pub(crate) fn apply(self, mut identity: Identity) -> Result<Identity, String> {
        match self {
            AuthenticateAnswer::Allow => Ok(identity),
            AuthenticateAnswer::Deny(reason) => Err(reason),
            AuthenticateAnswer::Update(update) => {
                update.check().map_err(|e| e.to_string())?;
                update.merge_into(&mut identity);
                Ok(identity)
            }
        }
    }
}

impl IdentityUpdate {
    /// Refuses an update naming a registered claim (a Rust host builds the struct directly, so
    /// the runner checks again before applying).
    fn check(&self) -> Result<(), InvalidAnswer> {
        let named = self.claims.iter().flat_map(|claims| claims.keys());
        match named.into_iter().find(|name| REGISTERED_CLAIMS.contains(&name.as_str())) {
            Some(name) => Err(InvalidAnswer(format!("the registered claim `{name}` cannot be changed"))),
            None => Ok(()),
        }
    }

    fn merge_into(self, identity: &mut Identity) {
        if let Some(roles) = self.roles {
            identity.roles = roles;
        }
        if let Some(scopes) = self.scopes {
            identity.scopes = scopes;
        }
        for (name, value) in self.claims.unwrap_or_default() {
            if value.is_null() {
                identity.claims.remove(&name);
            } else {
                identity.claims.insert(name, value);
            }
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::Claims;

    fn identity() -> Identity {
        let claims: Map<String, Value> =
            serde_json::from_value(json!({"sub": "alice", "tenant": "acme", "plan": "free"})).expect("fixture value");
        Identity {
            subject: "alice".into(),
            roles: vec!["user".into()],
            scopes: vec!["read".into()],
            expires_at: 4_000_000_000,
            issued_at: Some(1),
            token_id: Some("j1".into()),
            claims: Claims::from(claims),
        }
    }

    #[test]
    fn the_json_forms_parse_to_their_answers() {
        assert_eq!(AuthenticateAnswer::from_json(json!(true)), Ok(AuthenticateAnswer::Allow));
        assert!(matches!(AuthenticateAnswer::from_json(json!(false)), Ok(AuthenticateAnswer::Deny(_))));
        assert_eq!(
            AuthenticateAnswer::from_json(json!({"deny": "suspended"})),
            Ok(AuthenticateAnswer::Deny("suspended".into()))
        );
        assert_eq!(
            AuthenticateAnswer::from_json(json!({"roles": ["admin"]})),
            Ok(AuthenticateAnswer::Update(IdentityUpdate { roles: Some(vec!["admin".into()]), ..Default::default() }))
        );
        for invalid in [
            json!(null),
            json!(1),
            json!("yes"),
            json!([]),
            json!({"role": ["admin"]}),
            json!({"deny": true}),
            json!({"deny": "x", "roles": []}),
            json!({"roles": "admin"}),
            json!({"claims": {"exp": 1}}),
        ] {
            assert!(AuthenticateAnswer::from_json(invalid.clone()).is_err(), "{invalid} must be refused");
        }
        assert!(AuthenticateAnswer::from_json_text("{roles").is_err());
    }

    #[test]
    fn an_update_replaces_lists_and_merges_claims_key_by_key() {
        let answer = AuthenticateAnswer::from_json(json!({
            "scopes": ["write"], "claims": {"plan": "pro", "tenant": null, "team": "blue"}
        }))
        .expect("fixture value");
        let updated = answer.apply(identity()).expect("fixture value");
        assert_eq!(updated.roles, vec!["user".to_string()], "roles absent: kept");
        assert_eq!(updated.scopes, vec!["write".to_string()], "scopes present: replaced");
        assert_eq!(updated.claims.get("plan"), Some(json!("pro")));
        assert_eq!(updated.claims.get("team"), Some(json!("blue")));
        assert_eq!(updated.claims.get("tenant"), None, "null removes");
        assert_eq!(updated.claims.get("sub"), Some(json!("alice")), "unnamed claims kept");
        assert_eq!((updated.subject.as_str(), updated.token_id.as_deref()), ("alice", Some("j1")));
    }

    #[test]
    fn a_rust_built_update_naming_a_registered_claim_is_refused_when_applied() {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("mallory"));
        let update = IdentityUpdate { claims: Some(claims), ..Default::default() };
        assert!(AuthenticateAnswer::Update(update).apply(identity()).is_err());
    }
}
