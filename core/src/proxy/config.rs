//! `[proxy]`: the backend endpoints and their bounds, and the checks that need no file or
//! environment access (the CA file and the shared secret are read when the server is built).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::check_fetch_url;
use crate::config::problems::Problems;
use crate::policy::RpcRule;

/// Handshake headers that can never be forwarded: the token's carriers and the hop-by-hop headers
/// (RFC 9110 §7.6.1), whose meaning ends at wsguard, and the headers of the proxy request itself.
pub(crate) const UNFORWARDABLE_HEADERS: [&str; 16] = [
    "authorization",
    "proxy-authorization",
    "sec-websocket-protocol",
    "sec-websocket-key",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "accept",
    "x-wsguard-secret",
];

/// `[proxy]`: HTTP(S) endpoints of a backend that answer in place of the host hooks, for a
/// `wsguard serve` next to a service in any language. Off unless an endpoint is configured.
/// Request and answer JSON: docs/PROXY.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Asked at the handshake and at every `refresh`, in place of the `authenticate` hook.
    /// Default: none.
    pub connect: Option<ProxyEndpointConfig>,
    /// Asked at every `subscribe` (and re-authorization after a refresh or reload), in place of
    /// the `authorize` hook. Default: none.
    pub subscribe: Option<ProxyEndpointConfig>,
    /// Asked at every `publish`, in place of the `authorize` hook. Default: none.
    pub publish: Option<ProxyEndpointConfig>,
    /// Answers every declared `[[rpc]]` method that `rpc_methods` does not name. Default: none.
    pub rpc: Option<ProxyEndpointConfig>,
    /// One endpoint per declared RPC method (the key is the method name), in preference to `rpc`.
    /// Default: none.
    pub rpc_methods: BTreeMap<String, ProxyEndpointConfig>,
    /// Handshake headers forwarded to every endpoint (lower-case names, e.g. `cookie`,
    /// `x-request-id`). `authorization`, `sec-websocket-protocol` (both can carry the token) and
    /// hop-by-hop headers cannot be listed. Default: none.
    pub forward_headers: Vec<String>,
    /// PEM file of the CA certificates trusted for `https` endpoints; the platform's roots when
    /// unset. Default: unset.
    pub ca_file: Option<PathBuf>,
    /// Name of an environment variable holding a shared secret (at least 16 bytes), sent as the
    /// `X-Wsguard-Secret` header so that the backend can tell the caller is wsguard. Default:
    /// unset (no header). At most one of `secret_env` and `secret_file`.
    pub secret_env: Option<String>,
    /// A file holding that secret (surrounding whitespace trimmed), instead of `secret_env`.
    /// Default: unset.
    pub secret_file: Option<PathBuf>,
}

/// One backend endpoint and its bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyEndpointConfig {
    /// The URL POSTed to: `https`, or plain `http` to a loopback host only. Required.
    pub url: String,
    /// Seconds the whole request (connect, send, answer) may take; then the request fails closed
    /// with `hook_timeout`. Default 2.
    pub timeout_secs: f64,
    /// Largest answer body read, in bytes; a longer one is an invalid answer. Default 65536.
    #[schemars(range(min = 1))]
    pub max_response_bytes: u64,
    /// Requests in flight to this endpoint; one more fails closed at once (`proxy_unavailable`),
    /// it never waits. Default 64.
    #[schemars(range(min = 1))]
    pub max_concurrency: u32,
}

impl Default for ProxyEndpointConfig {
    fn default() -> Self {
        ProxyEndpointConfig { url: String::new(), timeout_secs: 2.0, max_response_bytes: 65_536, max_concurrency: 64 }
    }
}

impl ProxyConfig {
    /// True when at least one endpoint is configured.
    pub fn is_enabled(&self) -> bool {
        self.endpoints().next().is_some()
    }

    /// Every configured endpoint with its key path.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = (String, &ProxyEndpointConfig)> {
        let named = [
            ("connect", &self.connect),
            ("subscribe", &self.subscribe),
            ("publish", &self.publish),
            ("rpc", &self.rpc),
        ];
        named
            .into_iter()
            .filter_map(|(name, endpoint)| endpoint.as_ref().map(|e| (format!("proxy.{name}"), e)))
            .chain(self.rpc_methods.iter().map(|(method, e)| (format!("proxy.rpc_methods.{method}"), e)))
    }

    pub(crate) fn validate(&self, rpc: &[RpcRule], problems: &mut Problems) {
        for (key, endpoint) in self.endpoints() {
            if let Err(message) = check_fetch_url(&endpoint.url) {
                problems.push(format!("{key}.url"), message);
            }
            problems.positive_secs(&format!("{key}.timeout_secs"), endpoint.timeout_secs);
            if endpoint.max_response_bytes == 0 {
                problems.push(format!("{key}.max_response_bytes"), "must be at least 1");
            }
            if endpoint.max_concurrency == 0 {
                problems.push(format!("{key}.max_concurrency"), "must be at least 1");
            }
        }
        for method in self.rpc_methods.keys() {
            if !rpc.iter().any(|rule| &rule.method == method) {
                problems.push(format!("proxy.rpc_methods.{method}"), "not a method declared in [[rpc]]");
            }
        }
        for (i, name) in self.forward_headers.iter().enumerate() {
            let key = format!("proxy.forward_headers[{i}]");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.to_ascii_lowercase() != *name {
                problems.push(key, format!("{name:?} is not a lower-case header name"));
            } else if UNFORWARDABLE_HEADERS.contains(&name.as_str()) || name.starts_with("sec-websocket-") {
                problems.push(key, format!("{name:?} can carry the token or is hop-by-hop; it is never forwarded"));
            } else if self.forward_headers[..i].contains(name) {
                problems.push(key, format!("{name:?} is listed twice"));
            }
        }
        if let Some(name) = &self.secret_env
            && name.is_empty()
        {
            problems.push("proxy.secret_env", "must name an environment variable");
        }
        if self.secret_env.is_some() && self.secret_file.is_some() {
            problems.push("proxy.secret_file", "set at most one of secret_env and secret_file");
        }
        if self.ca_file.is_some() && !self.is_enabled() {
            problems.push("proxy.ca_file", "set without any proxy endpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Option<ProxyEndpointConfig> {
        Some(ProxyEndpointConfig { url: url.into(), ..Default::default() })
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = ProxyConfig {
            connect: endpoint("http://backend.example/connect"),
            subscribe: Some(ProxyEndpointConfig {
                url: "https://backend.example/sub".into(),
                timeout_secs: 0.0,
                max_response_bytes: 0,
                max_concurrency: 0,
            }),
            rpc_methods: BTreeMap::from([("nope".to_string(), ProxyEndpointConfig::default())]),
            forward_headers: vec![
                "cookie".into(),
                "Authorization".into(),
                "authorization".into(),
                "te".into(),
                "cookie".into(),
            ],
            ..Default::default()
        };
        let mut problems = Problems::default();
        config.validate(&[], &mut problems);
        let text = format!("{problems:?}");
        for key in [
            "proxy.connect.url",
            "proxy.subscribe.timeout_secs",
            "proxy.subscribe.max_response_bytes",
            "proxy.subscribe.max_concurrency",
            "proxy.rpc_methods.nope.url",
            "proxy.rpc_methods.nope",
            "proxy.forward_headers[1]",
            "proxy.forward_headers[2]",
            "proxy.forward_headers[3]",
            "proxy.forward_headers[4]",
        ] {
            assert!(text.contains(&format!("\"{key}\"")), "{key} missing in {text}");
        }
        assert_eq!(problems.len(), 10, "{text}");
    }

    #[test]
    fn loopback_http_and_https_are_accepted() {
        let config = ProxyConfig {
            connect: endpoint("http://127.0.0.1:9000/connect"),
            rpc: endpoint("https://backend.example/rpc"),
            forward_headers: vec!["cookie".into(), "x-request-id".into()],
            ..Default::default()
        };
        let mut problems = Problems::default();
        config.validate(&[], &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(config.is_enabled() && !ProxyConfig::default().is_enabled());
    }
}
