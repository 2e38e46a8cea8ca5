//! TLS towards the brokers (`rediss://`, NATS `tls://`): the `cluster.tls_*` files read and
//! checked once when the server is built, and the start-up probe that turns a broker whose
//! certificate this node does not trust (or that refuses this node's certificate) into a clear
//! `broker_tls` error instead of an endless reconnection loop.
//!
//! It never opens a broker session of its own beyond the probe: the Redis connections are made in
//! redis.rs, the NATS client in nats.rs, both from what [`BrokerTls`] holds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::config::{BrokerKind, ClusterConfig};
use super::settings::ClusterSettings;
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;

/// The broker TLS material, loaded from `cluster.tls_ca_file`, `tls_cert_file` and `tls_key_file`.
pub(crate) struct BrokerTls {
    /// For the redis crate, which parses PEM itself: the CA file (None: the system trust store)
    /// and the client certificate chain and key.
    pub(crate) redis: redis::TlsCertificates,
    /// For NATS and the start-up probe: ring provider, TLS 1.2/1.3, the same roots and client
    /// certificate.
    pub(crate) rustls: Arc<rustls::ClientConfig>,
    /// The NATS broker must speak TLS: a `tls://` URL, or a `tls_*` key. Not when TLS is there
    /// only for a `rediss://` quota store beside a plain `nats://` broker.
    pub(crate) nats: bool,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("BrokerTls").field("has_client_certificate", &self.redis.client_tls.is_some()).finish()
    }
}

/// True when the URL asks for TLS (`rediss://`, NATS `tls://`).
pub(crate) fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("tls://")
}

/// Whether this config talks TLS to a broker at all (a TLS URL, or NATS with a `tls_*` key).
pub(crate) fn uses_tls(config: &ClusterConfig) -> bool {
    config.broker != BrokerKind::Memory
        && (is_tls_url(&config.url) || is_tls_url(&config.quota_redis_url) || config.has_tls_files())
}

fn problem(key: &str, message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigFile, vec![ConfigProblem::new(key, message)])
}

fn read_certificates(key: &str, path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), ConfigError> {
    let pem = std::fs::read(path).map_err(|e| problem(key, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(problem(key, format!("{}: no certificate found", path.display())));
    }
    Ok((pem, certs))
}

/// Reads and checks the `cluster.tls_*` files (when the server is built, with the other files).
/// None when no broker connection uses TLS. Errors (`config_file`) name the key.
pub(crate) fn load(config: &ClusterConfig) -> Result<Option<Arc<BrokerTls>>, ConfigError> {
    if !uses_tls(config) {
        return Ok(None);
    }
    let is_redis_tls =
        (config.broker == BrokerKind::Redis && is_tls_url(&config.url)) || is_tls_url(&config.quota_redis_url);
    let native = rustls_native_certs::load_native_certs();
    if is_redis_tls && let Some(error) = native.errors.first() {
        // The redis crate reads the system store at every connection, even with a CA file, and
        // fails the connection on such an error: say so now rather than at every reconnection.
        return Err(problem(
            "cluster.tls_ca_file",
            format!("the system trust store cannot be read ({error}); the Redis client needs it readable"),
        ));
    }
    let mut roots = RootCertStore::empty();
    let root_pem = match &config.tls_ca_file {
        Some(path) => {
            let (pem, certs) = read_certificates("cluster.tls_ca_file", path)?;
            for cert in certs {
                roots.add(cert).map_err(|e| problem("cluster.tls_ca_file", format!("{}: {e}", path.display())))?;
            }
            Some(pem)
        }
        None => {
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(problem(
                    "cluster.tls_ca_file",
                    "the system trust store is empty: name the broker's CA in cluster.tls_ca_file".into(),
                ));
            }
            None
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| problem("cluster", e.to_string()))?
        .with_root_certificates(roots);
    let (client_config, client_tls) = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let (cert_pem, chain) = read_certificates("cluster.tls_cert_file", cert_path)?;
            let key_pem = std::fs::read(key_path)
                .map_err(|e| problem("cluster.tls_key_file", format!("cannot read {}: {e}", key_path.display())))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| problem("cluster.tls_key_file", format!("{}: {e}", key_path.display())))?;
            let client = builder.with_client_auth_cert(chain, key).map_err(|e| {
                problem("cluster.tls_key_file", format!("certificate and key do not fit together: {e}"))
            })?;
            (client, Some(redis::ClientTlsConfig { client_cert: cert_pem, client_key: key_pem }))
        }
        // Validation requires both or neither.
        _ => (builder.with_no_client_auth(), None),
    };
    if is_redis_tls {
        // The redis crate builds its rustls configuration with `ClientConfig::builder()`, which
        // takes the process default provider: make it ring (no-op when the host set one).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(Some(Arc::new(BrokerTls {
        redis: redis::TlsCertificates { client_tls, root_cert: root_pem },
        rustls: Arc::new(client_config),
        nats: config.broker == BrokerKind::Nats && (is_tls_url(&config.url) || config.has_tls_files()),
    })))
}

/// The check made when the server starts: one TLS connection to each TLS broker URL (the broker,
/// and the quota store when it is `rediss://`), so a broker whose certificate this node does not
/// trust, or that refuses this node's certificate, stops the start with `broker_tls` instead of
/// an endless reconnection loop. A broker that does not answer at all is no error here: the node
/// starts not ready and keeps reconnecting.
pub(crate) struct StartupCheck {
    tls: Arc<BrokerTls>,
    urls: Vec<String>,
}

impl StartupCheck {
    pub(crate) fn new(config: &ClusterSettings, tls: Arc<BrokerTls>) -> Self {
        // NATS with a `tls_*` key speaks TLS even on a `nats://` URL (nats.rs requires it).
        let is_nats = tls.nats;
        let mut urls: Vec<String> = [Some(config.url.as_str()), config.quota_url.as_deref()]
            .into_iter()
            .flatten()
            .filter(|url| is_tls_url(url) || (is_nats && *url == config.url))
            .map(str::to_string)
            .collect();
        urls.dedup();
        StartupCheck { tls, urls }
    }

    pub(crate) async fn run(&self, timeout: Duration) -> Result<(), crate::Error> {
        for url in &self.urls {
            match probe(url, &self.tls, timeout).await {
                Ok(()) => {}
                Err(ProbeFailure::Tls(detail)) => {
                    let broker = if url.starts_with("rediss://") { "redis" } else { "nats" };
                    return Err(crate::Error::BrokerTls { broker, detail });
                }
                Err(ProbeFailure::Unreachable(detail)) => {
                    tracing::warn!(
                        target: "wsguard::cluster", url = %super::config::split_user(url).0, error = %detail,
                        "broker not reachable at start-up; retrying in the background"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Why the start-up probe failed.
enum ProbeFailure {
    /// The TLS layer failed: untrusted or misnamed certificate, refused client certificate.
    Tls(String),
    /// Anything else (the broker is down, the address does not answer): the node starts and
    /// keeps reconnecting, as without TLS.
    Unreachable(String),
}

/// Opens one TLS connection to a broker the way its client does (NATS: after the server's plain
/// `INFO` line), sends a `PING` and reads the first answer, so a client certificate the broker
/// refuses after the handshake (TLS 1.3) is seen too.
async fn probe(url: &str, tls: &BrokerTls, timeout: Duration) -> Result<(), ProbeFailure> {
    let Some((host, port)) = host_port(url) else {
        return Err(ProbeFailure::Unreachable(format!("no host:port in {url}")));
    };
    match tokio::time::timeout(timeout, probe_inner(url, &host, port, tls)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeFailure::Unreachable("timed out".into())),
    }
}

async fn probe_inner(url: &str, host: &str, port: u16, tls: &BrokerTls) -> Result<(), ProbeFailure> {
    let unreachable = |e: std::io::Error| ProbeFailure::Unreachable(e.to_string());
    let tcp = TcpStream::connect((host, port)).await.map_err(unreachable)?;
    let mut tcp = BufReader::new(tcp);
    if !url.starts_with("rediss://") {
        // NATS greets in plain text, then upgrades.
        let mut info = String::new();
        tcp.read_line(&mut info).await.map_err(unreachable)?;
        if !info.starts_with("INFO ") {
            return Err(ProbeFailure::Unreachable("not a NATS server".into()));
        }
    }
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| ProbeFailure::Tls(format!("{host} is not a valid TLS server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.rustls));
    let mut stream = connector.connect(name, tcp.into_inner()).await.map_err(classify)?;
    stream.write_all(b"PING\r\n").await.map_err(classify)?;
    let mut first = [0u8; 1];
    match stream.read(&mut first).await {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(ProbeFailure::Unreachable("the broker closed the connection after the TLS handshake".into())),
        Err(e) => Err(classify(e)),
    }
}

/// A TLS failure (a `rustls::Error` inside the I/O error) or a plain I/O one.
fn classify(error: std::io::Error) -> ProbeFailure {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => ProbeFailure::Tls(tls.to_string()),
        None => ProbeFailure::Unreachable(error.to_string()),
    }
}

/// `host` and `port` of `scheme://[user@]host[:port][/...]` (default ports 6379 and 4222).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let default_port = if scheme.starts_with("redis") { 6379 } else { 4222 };
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:port`.
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().ok()?),
                None if after.is_empty() => (host, default_port),
                None => return None,
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, default_port),
        },
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_come_from_the_url() {
        assert_eq!(host_port("rediss://u@r.example:6380/0"), Some(("r.example".into(), 6380)));
        assert_eq!(host_port("rediss://r.example"), Some(("r.example".into(), 6379)));
        assert_eq!(host_port("tls://127.0.0.1:4443"), Some(("127.0.0.1".into(), 4443)));
        assert_eq!(host_port("tls://[::1]:4443"), Some(("::1".into(), 4443)));
        assert_eq!(host_port("nats://n"), Some(("n".into(), 4222)));
        assert_eq!(host_port("tls://[::1]"), Some(("::1".into(), 4222)));
        assert_eq!(host_port("tls://"), None);
    }

    #[test]
    fn a_rediss_quota_store_does_not_put_a_plain_nats_broker_on_tls() {
        let config = |url: &str| ClusterConfig {
            broker: BrokerKind::Nats,
            url: url.into(),
            quota_redis_url: "rediss://redis.example:6380".into(),
            ..ClusterConfig::default()
        };
        let Ok(Some(tls)) = load(&config("nats://nats.example:4222")) else {
            return; // no readable system trust store here: nothing to check
        };
        assert!(!tls.nats, "nats:// without tls_* keys stays plain");
        let Ok(Some(tls)) = load(&config("tls://nats.example:4222")) else { panic!("tls:// loads") };
        assert!(tls.nats);
    }
}
