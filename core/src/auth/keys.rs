//! Loads verification keys from the key source `[auth]` names (environment or file, never inline).

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;

use super::config::{AuthConfig, KeyFamily};
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;

/// Secret or public key material supplied by the host instead of the configured source (the CLI's
/// development mode uses it for its fresh random secret).
#[derive(Clone)]
pub enum KeyMaterial {
    /// An HMAC secret.
    HmacSecret(Vec<u8>),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::HmacSecret(_) => f.write_str("HmacSecret(<redacted>)"),
        }
    }
}

/// The keys a verifier checks signatures with.
pub(crate) enum VerificationKeys {
    /// One key for every token.
    Single(DecodingKey),
    /// JWKS: keyed by `kid`, each with the algorithm the JWK pins (if any).
    Set(HashMap<String, (DecodingKey, Option<jsonwebtoken::Algorithm>)>),
}

fn file_problem(key: &str, message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigFile, vec![ConfigProblem::new(key, message)])
}

/// Minimum HMAC secret length: RFC 7518 §3.2 requires a key at least as long as the hash output.
const MIN_HMAC_SECRET_BYTES: usize = 32;

impl VerificationKeys {
    pub(crate) fn load(config: &AuthConfig, material: Option<&KeyMaterial>) -> Result<Self, ConfigError> {
        if let Some(KeyMaterial::HmacSecret(secret)) = material {
            return Ok(VerificationKeys::Single(DecodingKey::from_secret(secret)));
        }
        if let Some(secret) = read_hmac_secret(config)? {
            let key = if config.hmac_secret_env.is_some() { "auth.hmac_secret_env" } else { "auth.hmac_secret_file" };
            return hmac(key, &secret);
        }
        if let Some(path) = &config.public_key_file {
            let pem = std::fs::read(path)
                .map_err(|e| file_problem("auth.public_key_file", format!("cannot read {}: {e}", path.display())))?;
            let key = match config.family() {
                Some(KeyFamily::Rsa) => DecodingKey::from_rsa_pem(&pem),
                Some(KeyFamily::Ec) => DecodingKey::from_ec_pem(&pem),
                Some(KeyFamily::Ed) => DecodingKey::from_ed_pem(&pem),
                _ => {
                    return Err(file_problem(
                        "auth.algorithms",
                        "a public key needs RS*, PS*, ES* or EdDSA algorithms".into(),
                    ));
                }
            }
            .map_err(|e| {
                file_problem(
                    "auth.public_key_file",
                    format!("{}: not a PEM public key of the configured algorithm family: {e}", path.display()),
                )
            })?;
            return Ok(VerificationKeys::Single(key));
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| file_problem("auth.jwks_file", format!("cannot read {}: {e}", path.display())))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| file_problem("auth.jwks_file", format!("{}: not a JWKS document: {e}", path.display())))?;
            let mut keys = HashMap::new();
            for (i, jwk) in set.keys.iter().enumerate() {
                let Some(kid) = jwk.common.key_id.clone() else {
                    return Err(file_problem("auth.jwks_file", format!("keys[{i}] has no \"kid\"")));
                };
                let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<jsonwebtoken::Algorithm>().ok());
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| file_problem("auth.jwks_file", format!("keys[{i}] ({kid}): unusable key: {e}")))?;
                if keys.insert(kid.clone(), (key, alg)).is_some() {
                    return Err(file_problem("auth.jwks_file", format!("duplicate kid {kid:?}")));
                }
            }
            if keys.is_empty() {
                return Err(file_problem("auth.jwks_file", "the key set is empty".into()));
            }
            return Ok(VerificationKeys::Set(keys));
        }
        Err(ConfigError::new(ErrorCode::ConfigInvalid, vec![ConfigProblem::new("auth", "no key source configured")]))
    }
}

/// Reads the HMAC secret from `hmac_secret_env` or `hmac_secret_file` (None when neither is set).
pub(crate) fn read_hmac_secret(config: &AuthConfig) -> Result<Option<Vec<u8>>, ConfigError> {
    if let Some(var) = &config.hmac_secret_env {
        let secret = std::env::var(var).map_err(|_| {
            ConfigError::new(
                ErrorCode::ConfigSecretMissing,
                vec![ConfigProblem::new(
                    "auth.hmac_secret_env",
                    format!("environment variable {var} is not set or not UTF-8"),
                )],
            )
        })?;
        return Ok(Some(secret.into_bytes()));
    }
    if let Some(path) = &config.hmac_secret_file {
        let bytes = std::fs::read(path)
            .map_err(|e| file_problem("auth.hmac_secret_file", format!("cannot read {}: {e}", path.display())))?;
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        return Ok(Some(trimmed.to_vec()));
    }
    Ok(None)
}

fn hmac(key: &str, secret: &[u8]) -> Result<VerificationKeys, ConfigError> {
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(ConfigError::new(
            ErrorCode::ConfigSecretMissing,
            vec![ConfigProblem::new(key, format!("the HMAC secret must be at least {MIN_HMAC_SECRET_BYTES} bytes"))],
        ));
    }
    Ok(VerificationKeys::Single(DecodingKey::from_secret(secret)))
}
