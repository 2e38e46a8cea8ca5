//! `[auth]`: how tokens are found and verified.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::problems::Problems;

/// A JWS algorithm wsguard accepts. `none` is deliberately not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The key family an algorithm needs; one config may only mix algorithms of one family, so a key
/// can never be used with an algorithm of another family (no RS256/HS256 confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// HS*: a shared secret.
    Hmac,
    /// RS*, PS*: an RSA public key.
    Rsa,
    /// ES*: an EC public key.
    Ec,
    /// EdDSA: an Ed25519 public key.
    Ed,
}

impl JwtAlgorithm {
    /// The jsonwebtoken equivalent.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JwtAlgorithm::HS256 => A::HS256,
            JwtAlgorithm::HS384 => A::HS384,
            JwtAlgorithm::HS512 => A::HS512,
            JwtAlgorithm::RS256 => A::RS256,
            JwtAlgorithm::RS384 => A::RS384,
            JwtAlgorithm::RS512 => A::RS512,
            JwtAlgorithm::PS256 => A::PS256,
            JwtAlgorithm::PS384 => A::PS384,
            JwtAlgorithm::PS512 => A::PS512,
            JwtAlgorithm::ES256 => A::ES256,
            JwtAlgorithm::ES384 => A::ES384,
            JwtAlgorithm::EdDSA => A::EdDSA,
        }
    }

    /// The key family this algorithm needs.
    pub fn family(self) -> KeyFamily {
        use JwtAlgorithm::*;
        match self {
            HS256 | HS384 | HS512 => KeyFamily::Hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyFamily::Rsa,
            ES256 | ES384 => KeyFamily::Ec,
            EdDSA => KeyFamily::Ed,
        }
    }
}

/// Where the handshake looks for a token, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `Sec-WebSocket-Protocol: wsguard.v1, bearer.<token>` (the browser-friendly path).
    Subprotocol,
    /// The cookie named by `auth.cookie_name`.
    Cookie,
    /// The `access_token` query parameter. Only when listed: URLs end up in logs and histories.
    Query,
}

/// `[auth]`: JWT verification. There is no usable default: `issuer`, `audience` and exactly one key
/// source must be configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The only algorithms accepted, all of one key family. Default `["HS256"]`.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Name of the environment variable whose UTF-8 value is the HMAC secret.
    pub hmac_secret_env: Option<String>,
    /// File whose bytes (trailing newline trimmed) are the HMAC secret.
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public key (RSA, EC or Ed25519) for asymmetric algorithms.
    pub public_key_file: Option<PathBuf>,
    /// JWKS file (`{"keys": [...]}`); tokens must then carry a `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` value.
    pub issuer: Option<String>,
    /// Required member of `aud`.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds. Default 5.
    pub leeway_secs: u64,
    /// Tokens whose `exp - iat` exceeds this are refused (short-lived tokens only). Default 900.
    #[schemars(range(min = 1))]
    pub max_token_lifetime_secs: u64,
    /// Claims that must be present. `exp`, `iss`, `aud` and `sub` are always required.
    /// Default `["sub", "exp", "iat"]`.
    pub required_claims: Vec<String>,
    /// Where to look for the token, in order. Default `["header", "subprotocol", "cookie"]`.
    pub token_sources: Vec<TokenSource>,
    /// Cookie holding the token when `cookie` is a source. Default `wsguard_token`.
    pub cookie_name: String,
    /// Claim holding the roles (string array, or a space-separated string). Default `roles`.
    pub roles_claim: String,
    /// Claim holding the scopes (space-separated string or array). Default `scope`.
    pub scopes_claim: String,
    /// Claims an in-band `refresh` token must carry with the same values as the session's token
    /// (besides `sub`), so a refresh can never move a session to another tenant. Default
    /// `["tenant"]`.
    pub session_bound_claims: Vec<String>,
    /// Refuse a token (at the handshake or in an in-band `refresh`) whose `jti` was already used;
    /// tokens must then carry `jti`. Default false.
    pub single_use_jti: bool,
    /// Most used `jti`s remembered (each until its token's `exp` plus `leeway_secs`); when full of
    /// unexpired entries new handshakes are refused with 503 (fail closed). Default 100000.
    #[schemars(range(min = 1))]
    pub jti_cache_capacity: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: vec![JwtAlgorithm::HS256],
            hmac_secret_env: None,
            hmac_secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 5,
            max_token_lifetime_secs: 900,
            required_claims: vec!["sub".into(), "exp".into(), "iat".into()],
            token_sources: vec![TokenSource::Header, TokenSource::Subprotocol, TokenSource::Cookie],
            cookie_name: "wsguard_token".into(),
            roles_claim: "roles".into(),
            scopes_claim: "scope".into(),
            session_bound_claims: vec!["tenant".into()],
            single_use_jti: false,
            jti_cache_capacity: 100_000,
        }
    }
}

impl AuthConfig {
    /// The key family of the configured algorithms (None when the list is empty or mixed).
    pub fn family(&self) -> Option<KeyFamily> {
        let first = self.algorithms.first()?.family();
        self.algorithms.iter().all(|a| a.family() == first).then_some(first)
    }

    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.algorithms.is_empty() {
            problems.push("auth.algorithms", "must list at least one algorithm");
        } else if self.family().is_none() {
            problems.push("auth.algorithms", "all algorithms must use one key family (HS*, RS*/PS*, ES* or EdDSA)");
        }
        let sources = [
            ("auth.hmac_secret_env", self.hmac_secret_env.is_some()),
            ("auth.hmac_secret_file", self.hmac_secret_file.is_some()),
            ("auth.public_key_file", self.public_key_file.is_some()),
            ("auth.jwks_file", self.jwks_file.is_some()),
        ];
        let set: Vec<&str> = sources.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect();
        match (set.as_slice(), self.family()) {
            ([], _) => problems.push(
                "auth",
                "configure exactly one key source: hmac_secret_env, hmac_secret_file, public_key_file or jwks_file",
            ),
            ([_, _, ..], _) => {
                problems.push("auth", format!("configure exactly one key source, found {}", set.join(", ")))
            }
            (["auth.hmac_secret_env" | "auth.hmac_secret_file"], Some(f)) if f != KeyFamily::Hmac => {
                problems.push("auth.algorithms", "an HMAC secret needs HS256, HS384 or HS512")
            }
            (["auth.public_key_file" | "auth.jwks_file"], Some(KeyFamily::Hmac)) => problems.push(
                "auth.algorithms",
                "HS* algorithms need an HMAC secret; a public key with HS* would allow algorithm confusion",
            ),
            _ => {}
        }
        if matches!(&self.hmac_secret_env, Some(v) if v.is_empty()) {
            problems.push("auth.hmac_secret_env", "must name an environment variable");
        }
        for (key, value) in [("auth.issuer", &self.issuer), ("auth.audience", &self.audience)] {
            match value {
                None => problems.push(key, "required"),
                Some(v) if v.is_empty() => problems.push(key, "must not be empty"),
                Some(_) => {}
            }
        }
        if self.token_sources.is_empty() {
            problems.push("auth.token_sources", "must list at least one source");
        }
        for (i, s) in self.token_sources.iter().enumerate() {
            if self.token_sources[..i].contains(s) {
                problems.push(format!("auth.token_sources[{i}]"), "listed twice");
            }
        }
        if self.cookie_name.is_empty()
            || !self.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            problems.push("auth.cookie_name", "must be a non-empty cookie name of [A-Za-z0-9._-]");
        }
        for (key, value) in [("auth.roles_claim", &self.roles_claim), ("auth.scopes_claim", &self.scopes_claim)] {
            if value.is_empty() {
                problems.push(key, "must not be empty");
            }
        }
        for (i, claim) in self.required_claims.iter().enumerate() {
            if claim.is_empty() {
                problems.push(format!("auth.required_claims[{i}]"), "must not be empty");
            }
        }
    }
}
