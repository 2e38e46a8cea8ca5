//! `[server]` and `[tls]`: the listener and the resources it may spend before a session exists, as
//! written in the config (`[server]` is compiled by settings.rs).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::problems::Problems;
use crate::handshake::ProxyProtocol;

/// `[server]`: where to listen and how much the listener may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Socket address to listen on. Default `127.0.0.1:8080`: loopback until told otherwise.
    pub listen: String,
    /// The only HTTP path that upgrades; any other path gets 404. Default `/ws`.
    pub path: String,
    /// Ceiling on open sessions; past it the handshake gets 503. Default 10000 (fits the usual
    /// 20k open-file cap with room for in-flight handshakes).
    #[schemars(range(min = 1))]
    pub max_connections: u32,
    /// Ceiling on connections still in their TLS/HTTP handshake; past it a connection is answered
    /// 503 at once and closed (over TLS it is closed without a response: no HTTP can be spoken
    /// before TLS). Default 1024: bounds what a slowloris flood can hold.
    #[schemars(range(min = 1))]
    pub max_pending_handshakes: u32,
    /// The TLS handshake and the whole upgrade request must arrive within this many seconds
    /// (fractional allowed), or the connection gets 408 and is closed (closed without a response
    /// when the TLS handshake itself did not finish). Default 5.
    pub handshake_timeout_secs: f64,
    /// Largest accepted request head (request line + headers) in bytes; past it 431. Default 8192.
    #[schemars(range(min = 256))]
    pub max_header_bytes: usize,
    /// CIDRs of reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are believed, and of
    /// the load balancers that send a PROXY protocol header (`proxy_protocol`). Default empty: the
    /// TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// PROXY protocol from the load balancers in `trusted_proxies` (`off`, `v1`, `v2` or `any`).
    /// When on, every connection from a trusted proxy must start with a header of an accepted
    /// version, and its source address becomes the connection's address; a connection from any
    /// other peer must not start with one. Either failure closes the connection before TLS.
    /// Default `off`: behind an L4 load balancer that sends no header, every client would share
    /// its address.
    pub proxy_protocol: ProxyProtocol,
    /// Allow plain `ws://` on a non-loopback address. Default false: tokens must not cross a
    /// network in clear text.
    pub allow_insecure: bool,
    /// Serve a small demo page at `/` (connect, subscribe, publish, see refusals), and the
    /// TypeScript client's modules it runs on at `/wsguard-client/*.js`. For development mode and
    /// first steps; keep it off in production. Default false.
    pub demo_page: bool,
    /// Runtime worker threads of a server that owns its runtime (the C, Python and Node bindings;
    /// the CLI too). 0: one per CPU. Default 0.
    pub worker_threads: u32,
    /// On shutdown, sessions get close 1001 and this many seconds to finish before the rest are
    /// dropped. Default 10.
    pub shutdown_grace_secs: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            path: "/ws".into(),
            max_connections: 10_000,
            max_pending_handshakes: 1024,
            handshake_timeout_secs: 5.0,
            max_header_bytes: 8192,
            trusted_proxies: Vec::new(),
            proxy_protocol: ProxyProtocol::Off,
            allow_insecure: false,
            demo_page: false,
            worker_threads: 0,
            shutdown_grace_secs: 10.0,
        }
    }
}

/// `[tls]`: PEM certificate chain and private key. When the section is present the listener
/// speaks TLS 1.2/1.3 only (rustls, ring provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first. Relative paths resolve against the working
    /// directory.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.cert_file.as_os_str().is_empty() {
            problems.push("tls.cert_file", "must not be empty");
        }
        if self.key_file.as_os_str().is_empty() {
            problems.push("tls.key_file", "must not be empty");
        }
    }
}
