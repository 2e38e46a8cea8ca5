//! `[server]` compiled once into what the listener and the handshake use: the address parsed, the
//! timeouts typed, the proxy CIDRs parsed. Validation happens here and nowhere else; a new
//! `[server]` key is declared in config.rs and compiled here.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::config::ServerConfig;
use crate::config::problems::Problems;
use crate::handshake::ProxyProtocol;

/// `[server]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerSettings {
    /// `listen`.
    pub(crate) listen: SocketAddr,
    /// `path`.
    pub(crate) path: String,
    /// `max_connections`.
    pub(crate) max_connections: usize,
    /// `max_pending_handshakes`.
    pub(crate) max_pending_handshakes: usize,
    /// `handshake_timeout_secs`.
    pub(crate) handshake_timeout: Duration,
    /// `max_header_bytes`.
    pub(crate) max_header_bytes: usize,
    /// `trusted_proxies`, a bare address as a single-host network.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// `proxy_protocol`; not `Off` only with `trusted_proxies`.
    pub(crate) proxy_protocol: ProxyProtocol,
    /// `demo_page`.
    pub(crate) demo_page: bool,
    /// `shutdown_grace_secs`.
    pub(crate) shutdown_grace: Duration,
}

impl ServerSettings {
    /// Compiles `[server]` (`has_tls`: a `[tls]` section is present), recording every problem
    /// (the settings are meaningless when any was recorded).
    pub(crate) fn compile(config: &ServerConfig, has_tls: bool, problems: &mut Problems) -> ServerSettings {
        let listen = match config.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                if !has_tls && !config.allow_insecure && !addr.ip().is_loopback() {
                    problems.push(
                        "server.listen",
                        format!(
                            "plain ws:// on non-loopback address {addr} is refused: configure [tls] or set server.allow_insecure = true"
                        ),
                    );
                }
                addr
            }
            Err(e) => {
                problems.push("server.listen", format!("not a socket address ({e}): {:?}", config.listen));
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        if !config.path.starts_with('/') || config.path.contains(['?', '#', ' ']) {
            problems.push("server.path", "must start with '/' and contain no '?', '#' or space");
        }
        let handshake_timeout = problems.positive_secs("server.handshake_timeout_secs", config.handshake_timeout_secs);
        let shutdown_grace = problems.positive_secs("server.shutdown_grace_secs", config.shutdown_grace_secs);
        if config.proxy_protocol != ProxyProtocol::Off && config.trusted_proxies.is_empty() {
            problems.push(
                "server.proxy_protocol",
                "is on but server.trusted_proxies is empty: list the load balancers that send the header",
            );
        }
        ServerSettings {
            listen,
            path: config.path.clone(),
            max_connections: config.max_connections as usize,
            max_pending_handshakes: config.max_pending_handshakes as usize,
            handshake_timeout,
            max_header_bytes: config.max_header_bytes,
            trusted_proxies: trusted_proxies(&config.trusted_proxies, problems),
            proxy_protocol: config.proxy_protocol,
            demo_page: config.demo_page,
            shutdown_grace,
        }
    }
}

/// Parses `trusted_proxies`; a bare address means a single host.
fn trusted_proxies(raw: &[String], problems: &mut Problems) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, raw) in raw.iter().enumerate() {
        match raw.parse::<IpNet>().or_else(|_| raw.parse::<std::net::IpAddr>().map(IpNet::from)) {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => {
                problems.push(format!("server.trusted_proxies[{i}]"), format!("not a CIDR or IP address: {raw:?}"))
            }
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile() {
        let mut problems = Problems::default();
        let settings = ServerSettings::compile(&ServerConfig::default(), false, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(settings.handshake_timeout, Duration::from_secs(5));
        assert_eq!(settings.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn proxies_parse_and_every_problem_is_reported() {
        let config = ServerConfig {
            listen: "0.0.0.0:80".into(),
            path: "ws".into(),
            trusted_proxies: vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "nope".into()],
            handshake_timeout_secs: 0.0,
            ..ServerConfig::default()
        };
        let mut problems = Problems::default();
        let settings = ServerSettings::compile(&config, false, &mut problems);
        assert_eq!(problems.len(), 4, "{problems:?}");
        let mut problems = Problems::default();
        let config = ServerConfig { proxy_protocol: ProxyProtocol::Any, ..ServerConfig::default() };
        ServerSettings::compile(&config, false, &mut problems);
        assert_eq!(problems.len(), 1, "PROXY protocol without trusted proxies: {problems:?}");
        assert_eq!(settings.trusted_proxies.len(), 2);
        let mut problems = Problems::default();
        ServerSettings::compile(
            &ServerConfig { listen: "0.0.0.0:80".into(), ..ServerConfig::default() },
            true,
            &mut problems,
        );
        assert!(problems.is_empty(), "TLS allows any address");
    }
}
