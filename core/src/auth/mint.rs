//! Token minting for tests, demos and the CLI's `wsguard token`. Production tokens come from the
//! application's identity provider; this exists so nobody pastes long-lived tokens into scripts.

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Map, Value};

use super::config::{AuthConfig, JwtAlgorithm, KeyFamily};
use super::verify::now_secs;
use crate::error::Error;

/// Why a token could not be minted (`token_mint`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// `SigningKey::from_config` on a config without an HMAC secret.
    #[error("the config has no HMAC secret; pass the private key file that matches auth.public_key_file")]
    NoHmacSecret,
    /// `auth.algorithms` is empty.
    #[error("auth.algorithms is empty")]
    NoAlgorithm,
    /// The request's subject is empty.
    #[error("the subject must not be empty")]
    EmptySubject,
    /// The private key is not a PEM key of the algorithm's family.
    #[error("{0}")]
    BadKey(#[source] jsonwebtoken::errors::Error),
    /// An HMAC secret for an asymmetric algorithm, or a private key for an HMAC one.
    #[error("the key does not fit algorithm {0:?}")]
    KeyDoesNotFit(JwtAlgorithm),
    /// Signing failed.
    #[error("{0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The key a token is signed with.
#[derive(Clone)]
pub enum SigningKey {
    /// The HMAC secret (for HS* configs).
    HmacSecret(Vec<u8>),
    /// A PEM private key (RSA, EC or Ed25519) matching the configured algorithms.
    PrivateKeyPem(Vec<u8>),
}

impl SigningKey {
    /// The HMAC secret named by `[auth]` (`hmac_secret_env` / `hmac_secret_file`).
    pub fn from_config(config: &AuthConfig) -> Result<SigningKey, Error> {
        match super::keys::read_hmac_secret(config)? {
            Some(secret) => Ok(SigningKey::HmacSecret(secret)),
            None => Err(Error::TokenMint(MintError::NoHmacSecret)),
        }
    }
}

/// What to put in a minted token; `iss`, `aud`, `iat` and `exp` come from the config and the clock.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// `sub`.
    pub subject: String,
    /// Roles, written to `auth.roles_claim` when non-empty.
    pub roles: Vec<String>,
    /// Scopes, written space-separated to `auth.scopes_claim` when non-empty.
    pub scopes: Vec<String>,
    /// Further claims (they cannot override the registered ones).
    pub extra_claims: Map<String, Value>,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// `kid` header, for JWKS setups.
    pub key_id: Option<String>,
}

/// Signs a token with the first configured algorithm.
pub fn mint_token(config: &AuthConfig, key: &SigningKey, request: &TokenRequest) -> Result<String, Error> {
    let alg = *config.algorithms.first().ok_or(Error::TokenMint(MintError::NoAlgorithm))?;
    if request.subject.is_empty() {
        return Err(Error::TokenMint(MintError::EmptySubject));
    }
    let encoding_key = match (key, alg.family()) {
        (SigningKey::HmacSecret(secret), KeyFamily::Hmac) => EncodingKey::from_secret(secret),
        (SigningKey::PrivateKeyPem(pem), KeyFamily::Rsa) => {
            EncodingKey::from_rsa_pem(pem).map_err(|e| Error::TokenMint(MintError::BadKey(e)))?
        }
        (SigningKey::PrivateKeyPem(pem), KeyFamily::Ec) => {
            EncodingKey::from_ec_pem(pem).map_err(|e| Error::TokenMint(MintError::BadKey(e)))?
        }
        (SigningKey::PrivateKeyPem(pem), KeyFamily::Ed) => {
            EncodingKey::from_ed_pem(pem).map_err(|e| Error::TokenMint(MintError::BadKey(e)))?
        }
        _ => return Err(Error::TokenMint(MintError::KeyDoesNotFit(alg))),
    };
    let now = now_secs();
    let mut claims = request.extra_claims.clone();
    if !request.roles.is_empty() {
        claims.insert(config.roles_claim.clone(), request.roles.clone().into());
    }
    if !request.scopes.is_empty() {
        claims.insert(config.scopes_claim.clone(), request.scopes.join(" ").into());
    }
    claims.insert("sub".into(), request.subject.clone().into());
    claims.insert("iss".into(), config.issuer.clone().unwrap_or_default().into());
    claims.insert("aud".into(), config.audience.clone().unwrap_or_default().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(request.ttl_secs).into());
    let mut header = Header::new(alg.to_jwt());
    header.kid = request.key_id.clone();
    encode(&header, &claims, &encoding_key).map_err(|e| Error::TokenMint(MintError::Sign(e)))
}
