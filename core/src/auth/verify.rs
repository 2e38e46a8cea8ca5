//! JWT verification. The algorithm comes from config and the key type, never from the token: the
//! header's `alg` is only compared against the configured list.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::config::{AuthConfig, KeySourceSpec};
use super::identity::{Identity, string_list};
use super::jwks::{JwksRuntime, RemoteKeys};
use super::keys::{KeyMaterial, VerificationKeys};
use crate::config::problems::ConfigError;
use crate::error::ErrorCode;

/// Longest token accepted before any parsing (the header cap bounds it too).
const MAX_TOKEN_BYTES: usize = 8192;

/// Why a token was refused. Each maps to one `ErrorCode` (3xxx) and to HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm is not allowed")]
    AlgNotAllowed,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    #[error("token lacks required claim {0:?}")]
    MissingClaim(String),
    #[error("token key id is missing or unknown")]
    UnknownKey,
    #[error("token claim {0:?} has the wrong type")]
    InvalidClaim(String),
    #[error("token revoked")]
    Revoked,
    #[error("token already used")]
    Replayed,
    #[error("the issuer's keys are not loaded yet (identity provider unreachable since start)")]
    KeysUnavailable,
}

impl TokenError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Malformed => ErrorCode::TokenMalformed,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::NotYetValid => ErrorCode::TokenNotYetValid,
            TokenError::BadSignature => ErrorCode::TokenBadSignature,
            TokenError::AlgNotAllowed => ErrorCode::TokenAlgNotAllowed,
            TokenError::WrongIssuer => ErrorCode::TokenWrongIssuer,
            TokenError::WrongAudience => ErrorCode::TokenWrongAudience,
            TokenError::LifetimeTooLong => ErrorCode::TokenLifetimeTooLong,
            TokenError::MissingClaim(_) => ErrorCode::TokenMissingClaim,
            TokenError::UnknownKey => ErrorCode::TokenUnknownKey,
            TokenError::InvalidClaim(_) => ErrorCode::TokenInvalidClaim,
            TokenError::Revoked => ErrorCode::TokenRevoked,
            TokenError::Replayed => ErrorCode::TokenReplayed,
            TokenError::KeysUnavailable => ErrorCode::KeysUnavailable,
        }
    }

    /// True when the token itself is at fault (counts towards an IP ban); false when the server
    /// could not check it (`keys_unavailable`).
    pub fn is_client_fault(&self) -> bool {
        !matches!(self, TokenError::KeysUnavailable)
    }
}

/// Verifies tokens against one `[auth]` configuration.
pub struct TokenVerifier {
    /// Accepted issuers; with more than one, the token's `iss` selects the entry.
    issuers: Vec<IssuerKeys>,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    required_claims: Vec<String>,
    roles_claim: String,
    scopes_claim: String,
}

/// One accepted issuer: its audience, algorithms and keys. Keys of one entry never verify a token
/// selected for another.
struct IssuerKeys {
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
}

enum KeySource {
    /// Loaded once from the environment or a file.
    Local(VerificationKeys),
    /// Fetched from the identity provider and cached.
    Remote(Arc<RemoteKeys>),
}

/// Claims wsguard always requires, whatever `required_claims` says: `exp` (short-lived sessions),
/// `iss` and `aud` (no token minted for another service), `sub` (per-user quotas and revocation).
const ALWAYS_REQUIRED: [&str; 4] = ["exp", "iss", "aud", "sub"];

impl TokenVerifier {
    /// Builds a verifier, loading local keys from their configured source (or `material`, when
    /// given). Remote keys (`jwks_url`, `oidc_discovery`) are not fetched here: a server starts
    /// their fetchers when it binds.
    pub fn new(config: &AuthConfig, material: Option<&KeyMaterial>) -> Result<Self, ConfigError> {
        let specs = config.issuer_specs();
        if specs.is_empty() {
            return Err(ConfigError::new(
                ErrorCode::ConfigInvalid,
                vec![crate::config::ConfigProblem::new("auth", "no key source configured")],
            ));
        }
        let mut issuers = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        for spec in &specs {
            let keys = match &spec.source {
                KeySourceSpec::JwksUrl(_) | KeySourceSpec::Discovery if material.is_none() => {
                    RemoteKeys::new(config, spec).map(KeySource::Remote)
                }
                _ => VerificationKeys::load(config, spec, material).map(KeySource::Local),
            };
            match keys {
                Ok(keys) => issuers.push(IssuerKeys {
                    issuer: spec.issuer.clone(),
                    audience: spec.audience.clone(),
                    algorithms: spec.algorithms.iter().map(|a| a.to_jwt()).collect(),
                    keys,
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let code = errors.first().map_or(ErrorCode::ConfigInvalid, ConfigError::code);
            return Err(ConfigError::new(code, errors.iter().flat_map(|e| e.problems().iter().cloned()).collect()));
        }
        let mut required: Vec<String> = ALWAYS_REQUIRED.iter().map(|s| s.to_string()).collect();
        for claim in &config.required_claims {
            if !required.contains(claim) {
                required.push(claim.clone());
            }
        }
        Ok(TokenVerifier {
            issuers,
            leeway_secs: config.leeway_secs,
            max_lifetime_secs: config.max_token_lifetime_secs,
            required_claims: required,
            roles_claim: config.roles_claim.clone(),
            scopes_claim: config.scopes_claim.clone(),
        })
    }

    fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteKeys>> {
        self.issuers.iter().filter_map(|entry| match &entry.keys {
            KeySource::Remote(remote) => Some(remote),
            KeySource::Local(_) => None,
        })
    }

    /// Takes over the running remote sources of `previous` whose configuration did not change
    /// (their cached keys and fetchers), so a reload neither empties the cache nor refetches. A
    /// source whose only changes are cache or fetch settings starts from the previous key set.
    pub(crate) fn adopt(&mut self, previous: &TokenVerifier) {
        for entry in &mut self.issuers {
            let KeySource::Remote(new) = &mut entry.keys else { continue };
            if let Some(old) = previous.remotes().find(|old| old.same_source(new)) {
                *new = Arc::clone(old);
            } else if let Some(old) = previous.remotes().find(|old| old.same_keys(new)) {
                new.seed_from(old);
            }
        }
    }

    /// Retires the remote sources of this (replaced) verifier that `current` did not take over:
    /// their fetchers stop although sessions built before the reload still hold them.
    pub(crate) fn retire_replaced(&self, current: &TokenVerifier) {
        for old in self.remotes() {
            if !current.remotes().any(|new| Arc::ptr_eq(old, new)) {
                old.retire();
            }
        }
    }

    /// Starts the fetchers of remote sources not yet running.
    pub(crate) fn start(&self, runtime: &JwksRuntime) {
        for remote in self.remotes() {
            remote.start(runtime);
        }
    }

    /// Waits until every remote source's first fetch attempt has ended (each bounded by its
    /// timeout). It never fails: an unreachable IdP leaves the server up and not ready.
    pub(crate) async fn first_attempts(&self) {
        let waits = self.remotes().map(|remote| remote.first_attempt(remote.attempt_limit() + Duration::from_secs(1)));
        futures_util::future::join_all(waits).await;
    }

    /// True when every issuer has keys (remote sources: a first key set is loaded).
    pub fn is_ready(&self) -> bool {
        self.remotes().all(|remote| remote.is_ready())
    }

    /// Issuers whose remote keys are not loaded yet (for `/readyz`).
    pub(crate) fn issuers_without_keys(&self) -> Vec<&str> {
        self.remotes().filter(|remote| !remote.is_ready()).map(|remote| remote.issuer()).collect()
    }

    /// Verifies `token` now. Remote keys are taken from the cache as it is: an unknown `kid` is
    /// refused without a refetch (the server's handshake and `refresh` refetch).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_at(token, now_secs())
    }

    pub(crate) fn verify_at(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        let (header, entry) = self.select(token)?;
        self.verify_with(entry, &header, token, now)
    }

    /// Verifies `token` now; an unknown `kid` of a remote issuer triggers a refetch (at most one
    /// per `auth.jwks_min_refetch_secs`, shared by every waiting connection) and one more try.
    pub(crate) async fn verify_fetching(&self, token: &str) -> Result<Identity, TokenError> {
        let (header, entry) = self.select(token)?;
        match self.verify_with(entry, &header, token, now_secs()) {
            Err(TokenError::UnknownKey) if header.kid.is_some() => match &entry.keys {
                KeySource::Remote(remote) if remote.refetch_for_unknown_kid().await => {
                    self.verify_with(entry, &header, token, now_secs())
                }
                _ => Err(TokenError::UnknownKey),
            },
            outcome => outcome,
        }
    }

    /// Parses the header, selects the issuer entry and checks the algorithm against its list.
    fn select(&self, token: &str) -> Result<(Header, &IssuerKeys), TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let entry = match self.issuers.as_slice() {
            [only] => only,
            entries => {
                // Unverified, only to pick the entry: the signature is then checked with that
                // entry's keys alone, and `iss` again against that entry.
                let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
                    .map_err(|_| TokenError::Malformed)?;
                let iss = match claims.get("iss") {
                    None => return Err(TokenError::MissingClaim("iss".into())),
                    Some(Value::String(iss)) => iss,
                    Some(_) => return Err(TokenError::InvalidClaim("iss".into())),
                };
                entries.iter().find(|e| &e.issuer == iss).ok_or(TokenError::WrongIssuer)?
            }
        };
        // The header's alg is only ever *checked* against config; the key decides the family.
        if !entry.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgNotAllowed);
        }
        Ok((header, entry))
    }

    fn verify_with(&self, entry: &IssuerKeys, header: &Header, token: &str, now: u64) -> Result<Identity, TokenError> {
        match &entry.keys {
            KeySource::Local(VerificationKeys::Single(key)) => self.decode(entry, header, key, token, now),
            KeySource::Local(VerificationKeys::Set(set)) => self.decode(entry, header, set.find(header)?, token, now),
            KeySource::Remote(remote) => {
                let set = remote.current().ok_or(TokenError::KeysUnavailable)?;
                self.decode(entry, header, set.find(header)?, token, now)
            }
        }
    }

    fn decode(
        &self,
        entry: &IssuerKeys,
        header: &Header,
        key: &DecodingKey,
        token: &str,
        now: u64,
    ) -> Result<Identity, TokenError> {
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&entry.issuer]);
        validation.set_audience(&[&entry.audience]);
        validation.set_required_spec_claims(&ALWAYS_REQUIRED);
        let data = decode::<Map<String, Value>>(token, key, &validation).map_err(|e| match e.kind() {
            // jsonwebtoken reports a registered claim it cannot parse (a string `exp`) as absent.
            // It checks claims only after the signature, so looking at the (authenticated) claims
            // here only refines the error code; it never admits anything.
            ErrorKind::MissingRequiredClaim(claim) if is_present(token, claim) => {
                TokenError::InvalidClaim(claim.clone())
            }
            kind => map_error(kind),
        })?;
        self.check_claims(data.claims, now)
    }

    fn check_claims(&self, claims: Map<String, Value>, now: u64) -> Result<Identity, TokenError> {
        for claim in &self.required_claims {
            if claims.get(claim).is_none_or(Value::is_null) {
                return Err(TokenError::MissingClaim(claim.clone()));
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::InvalidClaim("sub".into())),
        };
        let expires_at = numeric_date(&claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let issued_at = numeric_date(&claims, "iat")?;
        // Re-check exp ourselves so the clock used by tests and the lifetime check agree.
        if expires_at.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        if let Some(iat) = issued_at {
            if iat > now.saturating_add(self.leeway_secs) {
                return Err(TokenError::NotYetValid);
            }
            if expires_at.saturating_sub(iat) > self.max_lifetime_secs {
                return Err(TokenError::LifetimeTooLong);
            }
        } else if expires_at.saturating_sub(now) > self.max_lifetime_secs.saturating_add(self.leeway_secs) {
            // Without iat the remaining validity is the only lifetime we can bound.
            return Err(TokenError::LifetimeTooLong);
        }
        let token_id = match claims.get("jti") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(TokenError::InvalidClaim("jti".into())),
        };
        Ok(Identity {
            subject,
            roles: string_list(claims.get(&self.roles_claim)),
            scopes: string_list(claims.get(&self.scopes_claim)),
            expires_at,
            issued_at,
            token_id,
            claims: claims.into(),
        })
    }
}

/// True when the token's payload carries `claim` with a non-null value.
fn is_present(token: &str, claim: &str) -> bool {
    jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
        .is_ok_and(|claims| claims.get(claim).is_some_and(|v| !v.is_null()))
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.is_finite()).map(|f| f as u64)) {
            Some(n) => Ok(Some(n)),
            None => Err(TokenError::InvalidClaim(name.into())),
        },
    }
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            TokenError::AlgNotAllowed
        }
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::InvalidClaim(c.clone()),
        _ => TokenError::Malformed,
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
