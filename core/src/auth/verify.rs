//! JWT verification. The algorithm comes from config and the key type, never from the token: the
//! header's `alg` is only compared against the configured list.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::config::AuthConfig;
use super::identity::{Identity, string_list};
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
        }
    }
}

/// Verifies tokens against one `[auth]` configuration.
pub struct TokenVerifier {
    keys: VerificationKeys,
    algorithms: Vec<Algorithm>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    required_claims: Vec<String>,
    roles_claim: String,
    scopes_claim: String,
}

/// Claims wsguard always requires, whatever `required_claims` says: `exp` (short-lived sessions),
/// `iss` and `aud` (no token minted for another service), `sub` (per-user quotas and revocation).
const ALWAYS_REQUIRED: [&str; 4] = ["exp", "iss", "aud", "sub"];

impl TokenVerifier {
    /// Builds a verifier, loading the key from its configured source (or `material`, when given).
    pub fn new(config: &AuthConfig, material: Option<&KeyMaterial>) -> Result<Self, ConfigError> {
        let keys = VerificationKeys::load(config, material)?;
        let mut required: Vec<String> = ALWAYS_REQUIRED.iter().map(|s| s.to_string()).collect();
        for claim in &config.required_claims {
            if !required.contains(claim) {
                required.push(claim.clone());
            }
        }
        Ok(TokenVerifier {
            keys,
            algorithms: config.algorithms.iter().map(|a| a.to_jwt()).collect(),
            issuer: config.issuer.clone().unwrap_or_default(),
            audience: config.audience.clone().unwrap_or_default(),
            leeway_secs: config.leeway_secs,
            max_lifetime_secs: config.max_token_lifetime_secs,
            required_claims: required,
            roles_claim: config.roles_claim.clone(),
            scopes_claim: config.scopes_claim.clone(),
        })
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_at(token, now_secs())
    }

    pub(crate) fn verify_at(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        // The header's alg is only ever *checked* against config; the key decides the family.
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgNotAllowed);
        }
        let key = match &self.keys {
            VerificationKeys::Single(key) => key,
            VerificationKeys::Set(set) => {
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let (key, pinned) = set.get(kid).ok_or(TokenError::UnknownKey)?;
                if pinned.is_some_and(|alg| alg != header.alg) {
                    return Err(TokenError::AlgNotAllowed);
                }
                key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
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
