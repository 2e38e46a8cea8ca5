//! TLS from PEM files with an explicit rustls crypto provider (ring) and TLS 1.2/1.3 only.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::TlsConfig;
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;
use crate::transport::TlsAcceptor;

fn problem(key: &str, message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigFile, vec![ConfigProblem::new(key, message)])
}

/// Builds the acceptor; every failure names the config key it concerns.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem("tls.cert_file", format!("{}: {e}", config.cert_file.display())))?;
    if certs.is_empty() {
        return Err(problem("tls.cert_file", format!("{}: no certificate found", config.cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| problem("tls.key_file", format!("{}: {e}", config.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| problem("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| problem("tls.key_file", format!("certificate and key do not fit together: {e}")))?;
    // WebSocket upgrades are HTTP/1.1 only.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
