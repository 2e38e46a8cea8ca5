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
    /// JWKS URL of the identity provider (`https://`; `http://` only to a loopback host). Keys are
    /// fetched from here only (never from a token's `jku`, `x5u` or `jwk` header) and cached; tokens
    /// must carry a `kid`.
    pub jwks_url: Option<String>,
    /// OpenID Connect discovery: the JWKS URL is the `jwks_uri` of
    /// `<issuer>/.well-known/openid-configuration`, whose `issuer` must equal `auth.issuer`.
    /// Default false.
    pub oidc_discovery: bool,
    /// PEM file of the CA certificate(s) trusted for JWKS and discovery fetches. When set, only these
    /// are trusted; when unset, the platform's trust roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// Fewest seconds a fetched key set is kept before the next scheduled fetch (the response's
    /// `Cache-Control: max-age` is clamped to `[jwks_cache_min_secs, jwks_cache_max_secs]`; without
    /// `max-age`, or with `no-cache`/`no-store`, this minimum applies). Default 60.
    #[schemars(range(min = 1))]
    pub jwks_cache_min_secs: u64,
    /// Most seconds a fetched key set is kept before the next scheduled fetch, whatever `max-age`
    /// says: bounds how long a key the IdP removed keeps verifying. Default 3600.
    #[schemars(range(min = 1))]
    pub jwks_cache_max_secs: u64,
    /// A token whose `kid` is not in the cached set triggers at most one refetch per this many
    /// seconds per issuer (one request for all connections at once), so random `kid`s cannot
    /// flood the IdP. Default 30.
    #[schemars(range(min = 1))]
    pub jwks_min_refetch_secs: u64,
    /// Time limit of one JWKS or discovery request (connect, TLS, response), in seconds. Default 5.
    #[schemars(range(min = 1))]
    pub jwks_timeout_secs: u64,
    /// Largest JWKS or discovery response accepted, in bytes (real key sets are a few KiB).
    /// Default 262144.
    #[schemars(range(min = 1))]
    pub jwks_max_bytes: u64,
    /// Required `iss` value.
    pub issuer: Option<String>,
    /// Required member of `aud`.
    pub audience: Option<String>,
    /// Several accepted issuers (a multi-tenant IdP, two IdPs during a migration), each with its own
    /// audience and key source. The token's `iss` selects the entry; a key of one issuer never
    /// verifies another's token. When set, `issuer`, `audience` and the top-level key sources stay
    /// unset. Default empty (the single issuer above).
    pub issuers: Vec<IssuerConfig>,
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
            jwks_url: None,
            oidc_discovery: false,
            jwks_ca_file: None,
            jwks_cache_min_secs: 60,
            jwks_cache_max_secs: 3600,
            jwks_min_refetch_secs: 30,
            jwks_timeout_secs: 5,
            jwks_max_bytes: 256 * 1024,
            issuer: None,
            audience: None,
            issuers: Vec::new(),
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

/// One entry of `[[auth.issuers]]`: an accepted issuer with its audience and its public keys.
/// Exactly one key source: `jwks_url`, `oidc_discovery`, `jwks_file` or `public_key_file` (no HMAC
/// secret: a shared secret cannot tell issuers apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Required `iss` value; selects this entry.
    pub issuer: String,
    /// Required member of `aud` for this issuer's tokens.
    pub audience: String,
    /// Algorithms accepted from this issuer, all of one asymmetric family. Default: `auth.algorithms`.
    #[serde(default)]
    pub algorithms: Option<Vec<JwtAlgorithm>>,
    /// JWKS URL (as `auth.jwks_url`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// OpenID Connect discovery from `issuer` (as `auth.oidc_discovery`). Default false.
    #[serde(default)]
    pub oidc_discovery: bool,
    /// JWKS file (as `auth.jwks_file`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// PEM public key (as `auth.public_key_file`).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

/// Where one issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum KeySourceSpec {
    /// An HMAC secret (single issuer only); read by `keys.rs`.
    HmacSecret,
    /// A PEM public key file.
    PublicKeyFile(PathBuf),
    /// A JWKS file.
    JwksFile(PathBuf),
    /// A JWKS URL.
    JwksUrl(String),
    /// OpenID Connect discovery from the issuer.
    Discovery,
}

/// One accepted issuer as the verifier sees it (the single-issuer keys and `[[auth.issuers]]` end
/// up the same).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IssuerSpec {
    /// Config key path of the entry, for problems (`auth` or `auth.issuers[1]`).
    pub(crate) key: String,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) algorithms: Vec<JwtAlgorithm>,
    pub(crate) source: KeySourceSpec,
}

/// The key family of a list of algorithms (None when empty or mixed).
fn family_of(algorithms: &[JwtAlgorithm]) -> Option<KeyFamily> {
    let first = algorithms.first()?.family();
    algorithms.iter().all(|a| a.family() == first).then_some(first)
}

/// True when `url` may be fetched: `https`, or `http` to a loopback host; no credentials.
pub(crate) fn check_fetch_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err("must name a host".into());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let is_loopback =
        bare.parse::<std::net::IpAddr>().map_or_else(|_| bare.eq_ignore_ascii_case("localhost"), |ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback => Ok(parsed),
        "http" => Err("plain http is accepted only to a loopback host; use https".into()),
        other => Err(format!("scheme {other:?} is not https")),
    }
}

impl AuthConfig {
    /// The key family of the configured algorithms (None when the list is empty or mixed).
    pub fn family(&self) -> Option<KeyFamily> {
        family_of(&self.algorithms)
    }

    /// True when some issuer's keys come from an identity provider over HTTP.
    pub fn has_remote_keys(&self) -> bool {
        self.issuer_specs().iter().any(|s| matches!(s.source, KeySourceSpec::JwksUrl(_) | KeySourceSpec::Discovery))
    }

    /// Every accepted issuer, in config order (one for the single-issuer keys). Entries without a
    /// usable key source are left out (validation reports them).
    pub(crate) fn issuer_specs(&self) -> Vec<IssuerSpec> {
        if self.issuers.is_empty() {
            let source = if self.hmac_secret_env.is_some() || self.hmac_secret_file.is_some() {
                Some(KeySourceSpec::HmacSecret)
            } else {
                source_of(&self.public_key_file, &self.jwks_file, &self.jwks_url, self.oidc_discovery)
            };
            return source
                .map(|source| IssuerSpec {
                    key: "auth".into(),
                    issuer: self.issuer.clone().unwrap_or_default(),
                    audience: self.audience.clone().unwrap_or_default(),
                    algorithms: self.algorithms.clone(),
                    source,
                })
                .into_iter()
                .collect();
        }
        self.issuers
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| {
                let source =
                    source_of(&entry.public_key_file, &entry.jwks_file, &entry.jwks_url, entry.oidc_discovery)?;
                Some(IssuerSpec {
                    key: format!("auth.issuers[{i}]"),
                    issuer: entry.issuer.clone(),
                    audience: entry.audience.clone(),
                    algorithms: entry.algorithms.clone().unwrap_or_else(|| self.algorithms.clone()),
                    source,
                })
            })
            .collect()
    }

    /// The top-level key sources, each with whether it is set (exactly one may be).
    fn key_sources(&self) -> [(&'static str, bool); 6] {
        [
            ("auth.hmac_secret_env", self.hmac_secret_env.is_some()),
            ("auth.hmac_secret_file", self.hmac_secret_file.is_some()),
            ("auth.public_key_file", self.public_key_file.is_some()),
            ("auth.jwks_file", self.jwks_file.is_some()),
            ("auth.jwks_url", self.jwks_url.is_some()),
            ("auth.oidc_discovery", self.oidc_discovery),
        ]
    }

    fn validate_issuers(&self, problems: &mut Problems) {
        let named = [("auth.issuer", self.issuer.is_some()), ("auth.audience", self.audience.is_some())];
        for (key, set) in named.into_iter().chain(self.key_sources()) {
            if set {
                problems.push(key, "must not be set with auth.issuers (each entry names its own)");
            }
        }
        for (i, entry) in self.issuers.iter().enumerate() {
            let key = format!("auth.issuers[{i}]");
            if entry.issuer.is_empty() {
                problems.push(format!("{key}.issuer"), "must not be empty");
            } else if self.issuers[..i].iter().any(|e| e.issuer == entry.issuer) {
                problems.push(format!("{key}.issuer"), "listed twice");
            }
            if entry.audience.is_empty() {
                problems.push(format!("{key}.audience"), "must not be empty");
            }
            let algorithms = entry.algorithms.as_deref().unwrap_or(&self.algorithms);
            let algorithms_key =
                if entry.algorithms.is_some() { format!("{key}.algorithms") } else { "auth.algorithms".into() };
            match family_of(algorithms) {
                None if algorithms.is_empty() => problems.push(algorithms_key, "must list at least one algorithm"),
                None => problems.push(algorithms_key, "all algorithms must use one key family"),
                Some(KeyFamily::Hmac) => problems.push(
                    algorithms_key,
                    "auth.issuers take public keys only (RS*, PS*, ES*, EdDSA); an HMAC secret cannot tell issuers apart",
                ),
                Some(_) => {}
            }
            let set: Vec<&str> = [
                ("jwks_url", entry.jwks_url.is_some()),
                ("oidc_discovery", entry.oidc_discovery),
                ("jwks_file", entry.jwks_file.is_some()),
                ("public_key_file", entry.public_key_file.is_some()),
            ]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| *k)
            .collect();
            if set.len() != 1 {
                problems.push(
                    key.clone(),
                    format!(
                        "configure exactly one key source (jwks_url, oidc_discovery, jwks_file or public_key_file), found {}",
                        if set.is_empty() { "none".to_string() } else { set.join(", ") }
                    ),
                );
            }
            if let Some(url) = &entry.jwks_url
                && let Err(why) = check_fetch_url(url)
            {
                problems.push(format!("{key}.jwks_url"), why);
            }
            if entry.oidc_discovery
                && let Err(why) = check_fetch_url(&entry.issuer)
            {
                problems.push(format!("{key}.issuer"), format!("oidc_discovery fetches from the issuer, which {why}"));
            }
        }
    }

    fn validate_jwks_settings(&self, problems: &mut Problems) {
        for (key, value) in [
            ("auth.jwks_cache_min_secs", self.jwks_cache_min_secs),
            ("auth.jwks_cache_max_secs", self.jwks_cache_max_secs),
            ("auth.jwks_min_refetch_secs", self.jwks_min_refetch_secs),
            ("auth.jwks_timeout_secs", self.jwks_timeout_secs),
            ("auth.jwks_max_bytes", self.jwks_max_bytes),
        ] {
            if value == 0 {
                problems.push(key, "must be at least 1");
            }
        }
        if self.jwks_cache_max_secs < self.jwks_cache_min_secs {
            problems.push("auth.jwks_cache_max_secs", "must not be less than auth.jwks_cache_min_secs");
        }
        if let Some(url) = &self.jwks_url
            && let Err(why) = check_fetch_url(url)
        {
            problems.push("auth.jwks_url", why);
        }
        if self.oidc_discovery
            && let Some(issuer) = &self.issuer
            && let Err(why) = check_fetch_url(issuer)
        {
            problems.push("auth.issuer", format!("auth.oidc_discovery fetches from the issuer, which {why}"));
        }
    }

    pub(crate) fn validate(&self, problems: &mut Problems) {
        self.validate_jwks_settings(problems);
        if !self.issuers.is_empty() {
            self.validate_issuers(problems);
        } else {
            self.validate_single_issuer(problems);
        }
        self.validate_common(problems);
    }

    fn validate_single_issuer(&self, problems: &mut Problems) {
        if self.algorithms.is_empty() {
            problems.push("auth.algorithms", "must list at least one algorithm");
        } else if self.family().is_none() {
            problems.push("auth.algorithms", "all algorithms must use one key family (HS*, RS*/PS*, ES* or EdDSA)");
        }
        let set: Vec<&str> = self.key_sources().into_iter().filter(|(_, on)| *on).map(|(k, _)| k).collect();
        match (set.as_slice(), self.family()) {
            ([], _) => problems.push(
                "auth",
                "configure exactly one key source: hmac_secret_env, hmac_secret_file, public_key_file, jwks_file, \
                 jwks_url, oidc_discovery or issuers",
            ),
            ([_, _, ..], _) => {
                problems.push("auth", format!("configure exactly one key source, found {}", set.join(", ")))
            }
            (["auth.hmac_secret_env" | "auth.hmac_secret_file"], Some(f)) if f != KeyFamily::Hmac => {
                problems.push("auth.algorithms", "an HMAC secret needs HS256, HS384 or HS512")
            }
            (
                ["auth.public_key_file" | "auth.jwks_file" | "auth.jwks_url" | "auth.oidc_discovery"],
                Some(KeyFamily::Hmac),
            ) => problems.push(
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
    }

    fn validate_common(&self, problems: &mut Problems) {
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

/// The key source named by one set of asymmetric source keys (the first set one; validation
/// reports several).
fn source_of(
    public_key_file: &Option<PathBuf>,
    jwks_file: &Option<PathBuf>,
    jwks_url: &Option<String>,
    discovery: bool,
) -> Option<KeySourceSpec> {
    if let Some(path) = public_key_file {
        Some(KeySourceSpec::PublicKeyFile(path.clone()))
    } else if let Some(path) = jwks_file {
        Some(KeySourceSpec::JwksFile(path.clone()))
    } else if let Some(url) = jwks_url {
        Some(KeySourceSpec::JwksUrl(url.clone()))
    } else {
        discovery.then_some(KeySourceSpec::Discovery)
    }
}
