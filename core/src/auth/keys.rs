//! Loads verification keys from the key source `[auth]` names (environment or file, never inline).

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde_json::Value;

use super::config::{AuthConfig, IssuerSpec, KeyFamily, KeySourceSpec};
use super::verify::TokenError;
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
    /// JWKS: keyed by `kid`.
    Set(KeySet),
}

/// A key set keyed by `kid`, each key with the algorithm it may be used with (when the JWK pins
/// one, or its curve decides it).
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, (DecodingKey, Option<Algorithm>)>,
}

impl KeySet {
    /// The key the token's header names, refusing a `kid`-less token, an unknown `kid` and an
    /// algorithm the key is pinned against. Only the `kid` is read from the header: `jku`, `x5u`,
    /// `x5c` and an embedded `jwk` are never looked at.
    pub(crate) fn find(&self, header: &Header) -> Result<&DecodingKey, TokenError> {
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let (key, pinned) = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        if pinned.is_some_and(|alg| alg != header.alg) {
            return Err(TokenError::AlgNotAllowed);
        }
        Ok(key)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key ids, sorted (to compare sets).
    pub(crate) fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Parses a JWKS document (`{"keys": [...]}`) and keeps the keys that fit `algorithms`.
    /// Returns the set and, for each key left out, why. A key is left out when it has no `kid`, a
    /// duplicated `kid`, a `use` other than `sig`, an `alg` not in `algorithms`, a type or curve of
    /// another family, or is a symmetric (`oct`) key. Fails when the document is not a JWKS.
    pub(crate) fn parse(text: &[u8], algorithms: &[Algorithm]) -> Result<(KeySet, Vec<String>), String> {
        let document: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        let Some(Value::Array(entries)) = document.get("keys") else {
            return Err("no \"keys\" array".into());
        };
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        let mut duplicated = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match usable_key(entry, algorithms) {
                Ok((kid, key, alg)) => {
                    if set.keys.insert(kid.clone(), (key, alg)).is_some() {
                        duplicated.push(kid);
                    }
                }
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        // A kid listed twice is ambiguous: neither of its keys is used.
        for kid in duplicated {
            set.keys.remove(&kid);
            skipped.push(format!("kid {kid:?} is listed more than once"));
        }
        Ok((set, skipped))
    }
}

/// One JWKS entry as a usable key, or why not.
fn usable_key(entry: &Value, algorithms: &[Algorithm]) -> Result<(String, DecodingKey, Option<Algorithm>), String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty()).ok_or("no \"kid\"")?;
    if let Some(use_) = &jwk.common.public_key_use
        && *use_ != PublicKeyUse::Signature
    {
        return Err(format!("{kid}: \"use\" is not \"sig\""));
    }
    let pinned = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(
            alg.to_string()
                .parse::<Algorithm>()
                .ok()
                .filter(|a| algorithms.contains(a))
                .ok_or_else(|| format!("{kid}: \"alg\" {alg:?} is not an allowed algorithm"))?,
        ),
    };
    // The key's type (and curve) must fit an allowed algorithm; a curve decides the algorithm.
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            let fits = algorithms.iter().any(|a| JwtFamily::of(*a) == JwtFamily::Rsa);
            fits.then_some(None).ok_or(format!("{kid}: an RSA key, and no RS*/PS* algorithm is allowed"))?
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let alg = match params.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(format!("{kid}: unsupported curve")),
            };
            algorithms.contains(&alg).then_some(Some(alg)).ok_or(format!("{kid}: {alg:?} is not allowed"))?
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 || !algorithms.contains(&Algorithm::EdDSA) {
                return Err(format!("{kid}: an OKP key, and EdDSA (Ed25519) is not allowed"));
            }
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::OctetKey(_) => return Err(format!("{kid}: a symmetric key is never accepted")),
        _ => return Err(format!("{kid}: unsupported key type")),
    };
    let alg = match (pinned, implied) {
        (Some(p), Some(i)) if p != i => return Err(format!("{kid}: \"alg\" {p:?} does not fit the key")),
        (Some(p), _) => Some(p),
        (None, i) => i,
    };
    if let Some(alg) = alg
        && JwtFamily::of(alg) != JwtFamily::of_params(&jwk.algorithm)
    {
        return Err(format!("{kid}: \"alg\" {alg:?} does not fit the key type"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{kid}: unusable key: {e}"))?;
    Ok((kid, key, alg))
}

/// Key families as jsonwebtoken's algorithms see them (to compare a JWK's `alg` and type).
#[derive(PartialEq, Eq)]
enum JwtFamily {
    Hmac,
    Rsa,
    Ec,
    Ed,
    Other,
}

impl JwtFamily {
    fn of(alg: Algorithm) -> JwtFamily {
        use Algorithm::*;
        match alg {
            HS256 | HS384 | HS512 => JwtFamily::Hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => JwtFamily::Rsa,
            ES256 | ES384 => JwtFamily::Ec,
            EdDSA => JwtFamily::Ed,
            _ => JwtFamily::Other,
        }
    }

    fn of_params(params: &AlgorithmParameters) -> JwtFamily {
        match params {
            AlgorithmParameters::RSA(_) => JwtFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => JwtFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => JwtFamily::Ed,
            AlgorithmParameters::OctetKey(_) => JwtFamily::Hmac,
            _ => JwtFamily::Other,
        }
    }
}

fn file_problem(key: &str, message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigFile, vec![ConfigProblem::new(key, message)])
}

/// Minimum HMAC secret length: RFC 7518 §3.2 requires a key at least as long as the hash output.
const MIN_HMAC_SECRET_BYTES: usize = 32;

impl VerificationKeys {
    /// Loads the keys of a local source (secret, PEM file, JWKS file) for one issuer.
    pub(crate) fn load(
        config: &AuthConfig,
        spec: &IssuerSpec,
        material: Option<&KeyMaterial>,
    ) -> Result<Self, ConfigError> {
        if let Some(KeyMaterial::HmacSecret(secret)) = material {
            return Ok(VerificationKeys::Single(DecodingKey::from_secret(secret)));
        }
        let key_of =
            |name: &str| if spec.key == "auth" { format!("auth.{name}") } else { format!("{}.{name}", spec.key) };
        match &spec.source {
            KeySourceSpec::HmacSecret => {
                let secret = read_hmac_secret(config)?.unwrap_or_default();
                let key =
                    if config.hmac_secret_env.is_some() { "auth.hmac_secret_env" } else { "auth.hmac_secret_file" };
                hmac(key, &secret)
            }
            KeySourceSpec::PublicKeyFile(path) => {
                let key_name = key_of("public_key_file");
                let pem = std::fs::read(path)
                    .map_err(|e| file_problem(&key_name, format!("cannot read {}: {e}", path.display())))?;
                let family = spec.algorithms.first().map(|a| a.family());
                let key = match family {
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
                        &key_name,
                        format!("{}: not a PEM public key of the configured algorithm family: {e}", path.display()),
                    )
                })?;
                Ok(VerificationKeys::Single(key))
            }
            KeySourceSpec::JwksFile(path) => {
                let key_name = key_of("jwks_file");
                let text = std::fs::read(path)
                    .map_err(|e| file_problem(&key_name, format!("cannot read {}: {e}", path.display())))?;
                let algorithms: Vec<Algorithm> = spec.algorithms.iter().map(|a| a.to_jwt()).collect();
                let (set, skipped) = KeySet::parse(&text, &algorithms)
                    .map_err(|e| file_problem(&key_name, format!("{}: not a JWKS document: {e}", path.display())))?;
                // A file is the operator's own: every entry must be usable.
                if let Some(why) = skipped.first() {
                    return Err(file_problem(&key_name, format!("{}: {why}", path.display())));
                }
                if set.len() == 0 {
                    return Err(file_problem(&key_name, "the key set is empty".into()));
                }
                Ok(VerificationKeys::Set(set))
            }
            KeySourceSpec::JwksUrl(_) | KeySourceSpec::Discovery => Err(ConfigError::new(
                ErrorCode::ConfigInvalid,
                vec![ConfigProblem::new(spec.key.clone(), "remote keys are not loaded from files")],
            )),
        }
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;

    fn fixture_jwk(file: &str, alg: Algorithm) -> Value {
        let path = format!("{}/../tests/fixtures/keys/{file}.pem", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(path).expect("fixture key");
        let key = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("PEM");
        serde_json::to_value(Jwk::from_encoding_key(&key, alg).expect("JWK")).expect("JSON")
    }

    fn with(mut jwk: Value, fields: Value) -> Value {
        for (k, v) in fields.as_object().expect("object") {
            if v.is_null() {
                jwk.as_object_mut().expect("object").remove(k);
            } else {
                jwk[k] = v.clone();
            }
        }
        jwk
    }

    #[test]
    fn keys_that_do_not_fit_the_allowed_algorithms_are_left_out() {
        let rsa = fixture_jwk("rsa-a", Algorithm::RS256);
        let p256 = fixture_jwk("ec-p256", Algorithm::ES256);
        let p384 = fixture_jwk("ec-p384", Algorithm::ES384);
        let ed = fixture_jwk("ed25519", Algorithm::EdDSA);
        let document = json!({"keys": [
            with(rsa.clone(), json!({"kid": "rsa"})),
            with(rsa.clone(), json!({"kid": "rsa-enc", "use": "enc"})),
            with(rsa.clone(), json!({"kid": "rsa-ps512", "alg": "PS512"})),
            with(rsa.clone(), json!({"kid": null})),
            with(rsa.clone(), json!({"kid": "rsa-unpinned", "alg": null})),
            with(p256.clone(), json!({"kid": "p256", "alg": null})),
            with(p384.clone(), json!({"kid": "p384"})),
            with(ed.clone(), json!({"kid": "ed"})),
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
            {"kty": "RSA", "kid": "broken"},
            with(rsa.clone(), json!({"kid": "twice"})),
            with(rsa, json!({"kid": "twice"})),
        ]});
        let text = document.to_string();
        let (set, skipped) = KeySet::parse(text.as_bytes(), &[Algorithm::RS256, Algorithm::ES256]).expect("a JWKS");
        assert_eq!(set.kids(), ["p256", "rsa", "rsa-unpinned"], "{skipped:?}");
        assert_eq!(skipped.len(), 8, "{skipped:?}");
        // The curve pins the algorithm: a P-256 key never verifies an RS256 header.
        let header = Header { kid: Some("p256".into()), ..Header::new(Algorithm::RS256) };
        assert!(matches!(set.find(&header), Err(TokenError::AlgNotAllowed)));
        let header = Header { kid: Some("nope".into()), ..Header::new(Algorithm::RS256) };
        assert!(matches!(set.find(&header), Err(TokenError::UnknownKey)));
        assert!(matches!(set.find(&Header::new(Algorithm::RS256)), Err(TokenError::UnknownKey)));
    }

    #[test]
    fn documents_that_are_not_a_jwks_are_refused() {
        for text in ["", "[]", "{\"keys\": {}}", "{\"nokeys\": []}", "{\"keys\": ["] {
            assert!(KeySet::parse(text.as_bytes(), &[Algorithm::RS256]).is_err(), "{text}");
        }
        let (set, _) = KeySet::parse(b"{\"keys\": []}", &[Algorithm::RS256]).expect("an empty JWKS parses");
        assert_eq!(set.len(), 0);
    }
}
