//! `[api]`: the server API's listener, keys, TLS and request limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::problems::Problems;

/// One named API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's name: what the audit trail (`api_request` events) records as the caller, never
    /// the key itself. Letters, digits, `-`, `_` and `.`, at most 64 bytes; unique.
    pub name: String,
    /// Environment variable holding the key (at least 16 bytes). Keys are compared in constant
    /// time. Exactly one of `key_env`, `key_file`.
    #[serde(default)]
    pub key_env: String,
    /// File holding the key (one trailing newline ignored). Exactly one of `key_env`, `key_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the server API listener (HTTP JSON endpoints under `/api/v1/`, see docs/API.md).
    /// Empty string: no server API. Default empty (off). A non-loopback address needs
    /// `tls_cert_file`/`tls_key_file`.
    pub listen: String,
    /// Environment variable holding the API key (at least 16 bytes), sent by callers as
    /// `Authorization: Bearer <key>`; named `default` in the audit trail. Empty: no such key
    /// (then `key_file`, `keys` or `client_ca_file` must authenticate callers). Default empty.
    pub key_env: String,
    /// File holding the API key (at least 16 bytes; one trailing newline ignored), in place of
    /// `key_env`. Default none.
    pub key_file: Option<PathBuf>,
    /// More named keys (for one key per caller, or rotation: old and new side by side). Default
    /// none.
    pub keys: Vec<ApiKeyConfig>,
    /// PEM certificate chain of the API listener; with `tls_key_file` the API speaks HTTPS only.
    /// Default none (plain HTTP, allowed on loopback only).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the API listener. Default none.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle for client certificates (mutual TLS; needs TLS): a client must present a
    /// certificate that chains to it. With a key configured too, a caller needs both; without a
    /// key, the certificate alone authenticates (the caller is named by its subject). Default none.
    pub client_ca_file: Option<PathBuf>,
    /// Largest request body in bytes; a larger one is refused with 413 `api_body_too_large`
    /// before it is parsed. Default 1048576 (1 MiB: a publication plus its envelope).
    pub max_body_bytes: u64,
    /// Requests per second allowed per caller (key name or certificate subject); beyond the burst
    /// a request is refused with 429 `api_rate_limited` and `Retry-After`. Default 100.
    pub requests_per_sec: f64,
    /// Burst above `requests_per_sec` per caller. Default 200.
    pub burst: u32,
    /// Time allowed for one request, from the first byte to the answer being handed back (TLS
    /// handshake included), in seconds; a slow client is cut off. Default 10.
    pub request_timeout_secs: f64,
    /// Connections the API listener serves at once; more wait in the kernel's backlog. Default 64.
    pub max_connections: u32,
    /// Most channels one `broadcast` may name. Default 1000.
    pub max_broadcast_channels: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: String::new(),
            key_env: String::new(),
            key_file: None,
            keys: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            max_body_bytes: 1_048_576,
            requests_per_sec: 100.0,
            burst: 200,
            request_timeout_secs: 10.0,
            max_connections: 64,
            max_broadcast_channels: 1000,
        }
    }
}

/// Longest key name.
const MAX_KEY_NAME_BYTES: usize = 64;

impl ApiConfig {
    /// True when `listen` is set.
    pub fn is_enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The semantic checks (no file or environment access), every problem with its key path.
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if !self.is_enabled() {
            return;
        }
        let has_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => {
                problems.push("api.tls_key_file", "required with api.tls_cert_file");
                false
            }
            (None, Some(_)) => {
                problems.push("api.tls_cert_file", "required with api.tls_key_file");
                false
            }
        };
        match self.listen.parse::<SocketAddr>() {
            Err(_) => problems.push("api.listen", format!("not a socket address: {:?}", self.listen)),
            Ok(addr) if !addr.ip().is_loopback() && !has_tls => problems.push(
                "api.listen",
                format!("{addr} is not a loopback address: the server API needs api.tls_cert_file and api.tls_key_file there"),
            ),
            Ok(_) => {}
        }
        if self.client_ca_file.is_some() && !has_tls {
            problems.push("api.client_ca_file", "client certificates need api.tls_cert_file and api.tls_key_file");
        }
        if !self.key_env.is_empty() && self.key_file.is_some() {
            problems.push("api.key_file", "set api.key_env or api.key_file, not both");
        }
        let has_key = !self.key_env.is_empty() || self.key_file.is_some() || !self.keys.is_empty();
        if !has_key && self.client_ca_file.is_none() {
            problems.push(
                "api",
                "the server API needs authentication: api.key_env, api.key_file, api.keys or api.client_ca_file",
            );
        }
        let mut names: Vec<&str> = Vec::new();
        if !self.key_env.is_empty() || self.key_file.is_some() {
            names.push("default");
        }
        for (i, key) in self.keys.iter().enumerate() {
            let is_valid = !key.name.is_empty()
                && key.name.len() <= MAX_KEY_NAME_BYTES
                && key.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !is_valid {
                problems.push(format!("api.keys[{i}].name"), "1 to 64 letters, digits, '-', '_' or '.'");
            } else if names.contains(&key.name.as_str()) {
                problems.push(format!("api.keys[{i}].name"), format!("duplicate key name {:?}", key.name));
            }
            names.push(&key.name);
            if key.key_env.is_empty() == key.key_file.is_none() {
                problems.push(format!("api.keys[{i}]"), "exactly one of key_env, key_file");
            }
        }
        if self.max_body_bytes == 0 {
            problems.push("api.max_body_bytes", "must be at least 1");
        }
        problems.positive_rate("api.requests_per_sec", self.requests_per_sec);
        if self.burst == 0 {
            problems.push("api.burst", "must be at least 1");
        }
        problems.positive_secs("api.request_timeout_secs", self.request_timeout_secs);
        if self.max_connections == 0 {
            problems.push("api.max_connections", "must be at least 1");
        }
        if self.max_broadcast_channels == 0 {
            problems.push("api.max_broadcast_channels", "must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &ApiConfig) -> Vec<String> {
        let mut problems = Problems::default();
        config.validate(&mut problems);
        match problems.into_result(crate::error::ErrorCode::ConfigInvalid) {
            Ok(()) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.path.clone()).collect(),
        }
    }

    fn on(listen: &str) -> ApiConfig {
        ApiConfig { listen: listen.into(), key_env: "K".into(), ..ApiConfig::default() }
    }

    #[test]
    fn off_by_default_and_then_unchecked() {
        assert!(!ApiConfig::default().is_enabled());
        assert!(problems(&ApiConfig { requests_per_sec: -1.0, ..ApiConfig::default() }).is_empty());
    }

    #[test]
    fn loopback_needs_only_a_key() {
        assert!(problems(&on("127.0.0.1:8081")).is_empty());
        assert!(problems(&on("[::1]:8081")).is_empty());
        assert_eq!(problems(&ApiConfig { key_env: String::new(), ..on("127.0.0.1:8081") }), ["api"]);
    }

    #[test]
    fn non_loopback_needs_tls_and_client_certificates_need_tls() {
        assert_eq!(problems(&on("0.0.0.0:8081")), ["api.listen"]);
        let tls = ApiConfig {
            tls_cert_file: Some("c.pem".into()),
            tls_key_file: Some("k.pem".into()),
            ..on("10.0.0.2:8443")
        };
        assert!(problems(&tls).is_empty());
        let half = ApiConfig { tls_key_file: None, ..tls.clone() };
        assert_eq!(problems(&half), ["api.tls_key_file", "api.listen"]);
        let ca = ApiConfig { client_ca_file: Some("ca.pem".into()), ..on("127.0.0.1:1") };
        assert_eq!(problems(&ca), ["api.client_ca_file"]);
        let cert_only = ApiConfig { key_env: String::new(), client_ca_file: Some("ca.pem".into()), ..tls };
        assert!(problems(&cert_only).is_empty());
    }

    #[test]
    fn key_names_are_checked_and_unique() {
        let key = |name: &str| ApiKeyConfig { name: name.into(), key_env: "E".into(), key_file: None };
        let config = ApiConfig {
            keys: vec![key("deploy"), key("default"), key("bad name"), key("deploy")],
            ..on("127.0.0.1:1")
        };
        assert_eq!(problems(&config), ["api.keys[1].name", "api.keys[2].name", "api.keys[3].name"]);
        let both = ApiKeyConfig { key_file: Some("f".into()), ..key("ok") };
        assert_eq!(problems(&ApiConfig { keys: vec![both], ..on("127.0.0.1:1") }), ["api.keys[0]"]);
    }
}
