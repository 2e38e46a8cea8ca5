//! `Identity`: who a session is, derived only from a verified token (never from anything the client
//! sends later).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
    pub claims: Claims,
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

/// A token's claims: a JSON object, kept as its compact text for the session's life and read one
/// claim at a time. A session holds its identity as long as it lives, and the same claims as a
/// `serde_json::Map` cost 0.6–0.9 KiB for the benchmark token's five (an 11-slot B-tree node and
/// a small allocation per key and per string value) where the text costs what it is long
/// (docs/PERFORMANCE.md, idle memory). (De)serializes as the JSON object it holds.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Claims {
    /// A JSON object as `serde_json` writes a [`Map`] (keys sorted, no duplicates); empty for `{}`.
    json: Box<str>,
}

impl Claims {
    /// No claims.
    pub fn new() -> Claims {
        Claims::default()
    }

    /// The claim `name`, when present (decoded from the text on every call).
    pub fn get(&self, name: &str) -> Option<Value> {
        if self.json.is_empty() {
            return None;
        }
        let mut reader = serde_json::Deserializer::from_str(&self.json);
        // The text was written from a `Map`: it always parses.
        FindClaim(name).deserialize(&mut reader).ok().flatten()
    }

    /// True when the claim `name` is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every claim, decoded.
    pub fn to_map(&self) -> Map<String, Value> {
        if self.json.is_empty() {
            return Map::new();
        }
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// The claims as a JSON object's text (`{}` when there are none).
    pub fn as_json(&self) -> &str {
        if self.json.is_empty() { "{}" } else { &self.json }
    }

    /// True when there are no claims.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Sets the claim `name`; returns its previous value.
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        let mut map = self.to_map();
        let previous = map.insert(name, value);
        *self = Claims::from(map);
        previous
    }

    /// Removes the claim `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let mut map = self.to_map();
        let previous = map.remove(name);
        if previous.is_some() {
            *self = Claims::from(map);
        }
        previous
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Claims {
        if map.is_empty() {
            return Claims::default();
        }
        // Writing a `Map` of `Value`s cannot fail.
        Claims { json: serde_json::to_string(&map).unwrap_or_default().into_boxed_str() }
    }
}

impl Extend<(String, Value)> for Claims {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, claims: I) {
        let mut map = self.to_map();
        map.extend(claims);
        *self = Claims::from(map);
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_map(), f)
    }
}

impl Serialize for Claims {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Claims, D::Error> {
        Map::deserialize(deserializer).map(Claims::from)
    }
}

/// Reads one claim out of the object's text: every other value is skipped, not built.
struct FindClaim<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for FindClaim<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Value>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindClaim<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Option<Value>, A::Error> {
        let mut found = None;
        while let Some(is_match) = entries.next_key_seed(KeyIs(self.0))? {
            if is_match {
                found = Some(entries.next_value::<Value>()?);
            } else {
                entries.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a key with the name sought, without allocating it (an escaped key is unescaped into
/// the reader's scratch buffer).
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Claims {
        match value {
            Value::Object(map) => Claims::from(map),
            _ => Claims::new(),
        }
    }

    #[test]
    fn claims_are_read_one_at_a_time_and_round_trip() {
        let map = json!({"sub": "alice", "tenant": "acme", "n": 3, "nested": {"tenant": "no"}, "we\"ird": [1]});
        let c = claims(map.clone());
        assert_eq!(c.get("tenant"), Some(json!("acme")));
        assert_eq!(c.get("n"), Some(json!(3)));
        assert_eq!(c.get("nested"), Some(json!({"tenant": "no"})));
        assert_eq!(c.get("we\"ird"), Some(json!([1])));
        assert_eq!(c.get("absent"), None);
        assert!(c.contains_key("sub"));
        assert_eq!(Value::Object(c.to_map()), map);
        assert_eq!(serde_json::to_value(&c).ok(), Some(map.clone()));
        assert_eq!(serde_json::from_value::<Claims>(map).ok(), Some(c));
    }

    #[test]
    fn claims_can_be_changed_and_emptied() {
        let mut c = Claims::new();
        assert!(c.is_empty());
        assert_eq!(c.as_json(), "{}");
        assert_eq!(c.get("sub"), None);
        assert_eq!(c.insert("sub".into(), json!("alice")), None);
        assert_eq!(c.insert("sub".into(), json!("bob")), Some(json!("alice")));
        c.extend([("tenant".to_string(), json!("acme"))]);
        assert_eq!(c.as_json(), r#"{"sub":"bob","tenant":"acme"}"#);
        assert_eq!(c.remove("sub"), Some(json!("bob")));
        assert_eq!(c.remove("sub"), None);
        assert_eq!(c.remove("tenant"), Some(json!("acme")));
        assert!(c.is_empty());
        assert_eq!(c, Claims::new());
    }
}
