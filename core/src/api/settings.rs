//! The `[api]` section compiled at start: keys read from the environment, the TLS acceptor
//! (with client certificate verification for mutual TLS), typed limits. Every problem names its
//! config key; nothing here runs per request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::config::ApiConfig;
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;

/// Shortest key accepted: 128 bits of a random key.
const MIN_KEY_BYTES: usize = 16;

/// One key the API accepts, with the name the audit trail records.
pub(crate) struct ApiKey {
    pub(crate) name: String,
    pub(crate) secret: Vec<u8>,
}

/// The compiled `[api]` section.
pub(crate) struct ApiSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) keys: Vec<ApiKey>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) has_client_certs: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) requests_per_sec: f64,
    pub(crate) burst: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_broadcast_channels: usize,
}

impl ApiSettings {
    /// `None` when the API is off. `host_key`: a key supplied by the host instead of
    /// `api.key_env` (development mode's random key), named `default`.
    pub(crate) fn compile(config: &ApiConfig, host_key: Option<&str>) -> Result<Option<ApiSettings>, ConfigError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let mut secret_problems = Vec::new();
        let mut file_problems = Vec::new();
        let mut keys = Vec::new();
        if let Some(key) = host_key {
            keys.push(ApiKey { name: "default".into(), secret: key.as_bytes().to_vec() });
        }
        let mut read = |name: &str, env_path: String, var: &str, file_path: String, file: Option<&Path>| {
            let (path, value) = match file {
                Some(file) => match std::fs::read(file) {
                    Ok(mut bytes) => {
                        if bytes.last() == Some(&b'\n') {
                            bytes.pop();
                            if bytes.last() == Some(&b'\r') {
                                bytes.pop();
                            }
                        }
                        (file_path, bytes)
                    }
                    Err(e) => {
                        return secret_problems
                            .push(ConfigProblem::new(file_path, format!("cannot read {}: {e}", file.display())));
                    }
                },
                None => match std::env::var_os(var) {
                    Some(value) => (env_path, value.into_encoded_bytes()),
                    None => {
                        return secret_problems
                            .push(ConfigProblem::new(env_path, format!("environment variable {var} is not set")));
                    }
                },
            };
            if value.len() < MIN_KEY_BYTES {
                secret_problems
                    .push(ConfigProblem::new(path, format!("the key is shorter than {MIN_KEY_BYTES} bytes")));
            } else {
                keys.push(ApiKey { name: name.to_string(), secret: value });
            }
        };
        if host_key.is_none() && (!config.key_env.is_empty() || config.key_file.is_some()) {
            read("default", "api.key_env".into(), &config.key_env, "api.key_file".into(), config.key_file.as_deref());
        }
        for (i, key) in config.keys.iter().enumerate() {
            read(
                &key.name,
                format!("api.keys[{i}].key_env"),
                &key.key_env,
                format!("api.keys[{i}].key_file"),
                key.key_file.as_deref(),
            );
        }
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => match acceptor(cert, key, config.client_ca_file.as_deref()) {
                Ok(acceptor) => Some(acceptor),
                Err(problem) => {
                    file_problems.push(problem);
                    None
                }
            },
            _ => None,
        };
        let listen = config.listen.parse::<SocketAddr>().ok();
        let (code, problems) = if !secret_problems.is_empty() {
            (ErrorCode::ConfigSecretMissing, [secret_problems, file_problems].concat())
        } else {
            (ErrorCode::ConfigFile, file_problems)
        };
        if !problems.is_empty() {
            return Err(ConfigError::new(code, problems));
        }
        let Some(listen) = listen else {
            // Unreachable after `validate`; kept as a clear error anyway.
            return Err(ConfigError::new(
                ErrorCode::ConfigInvalid,
                vec![ConfigProblem::new("api.listen", "not a socket address")],
            ));
        };
        Ok(Some(ApiSettings {
            listen,
            keys,
            tls,
            has_client_certs: config.client_ca_file.is_some(),
            max_body_bytes: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
            requests_per_sec: config.requests_per_sec,
            burst: config.burst,
            request_timeout: Duration::try_from_secs_f64(config.request_timeout_secs)
                .unwrap_or(Duration::from_secs(10)),
            max_connections: config.max_connections as usize,
            max_broadcast_channels: config.max_broadcast_channels as usize,
        }))
    }
}

/// The API's own TLS acceptor: TLS 1.2/1.3, ring, HTTP/1.1; with `client_ca` every client must
/// present a certificate chaining to it.
fn acceptor(cert_file: &Path, key_file: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, ConfigProblem> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigProblem::new("api.tls_cert_file", format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(ConfigProblem::new("api.tls_cert_file", format!("{}: no certificate found", cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ConfigProblem::new("api.tls_key_file", format!("{}: {e}", key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigProblem::new("api", e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let problem = |message: String| ConfigProblem::new("api.client_ca_file", message);
            let mut roots = rustls::RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| problem(format!("{}: {e}", ca_file.display())))?;
            if cas.is_empty() {
                return Err(problem(format!("{}: no certificate found", ca_file.display())));
            }
            for ca in cas {
                roots.add(ca).map_err(|e| problem(format!("{}: {e}", ca_file.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| problem(format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigProblem::new("api.tls_key_file", format!("certificate and key do not fit together: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
