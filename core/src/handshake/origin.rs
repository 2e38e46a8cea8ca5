//! `[origins]` and the Origin allowlist (RFC 6454 serialized origins: scheme, host, port).
//!
//! Browsers always send `Origin` on WebSocket handshakes, so this is the cross-site WebSocket
//! hijacking defence. Matching is exact on scheme and port, case-insensitive on host; `*.` matches
//! one or more subdomain labels but never the bare domain and never a suffix trick such as
//! `example.com.evil.com` or `evilexample.com`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::problems::Problems;

/// `[origins]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OriginsConfig {
    /// Allowed origins: `https://app.example.com`, `https://*.example.com`, `http://localhost:8080`,
    /// or the literal `null` (sandboxed frames, `file://`; almost never wanted). Default empty:
    /// every browser is refused until origins are listed.
    pub allow: Vec<String>,
    /// Accept requests without an `Origin` header (non-browser clients). Default false.
    pub allow_missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// Matches hosts ending in `.{suffix}` with at least one label before it.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: HostPattern,
    port: u16,
}

/// The compiled allowlist.
#[derive(Debug, Clone)]
pub(crate) struct OriginAllowlist {
    patterns: Vec<OriginPattern>,
    allow_null: bool,
    allow_missing: bool,
}

/// Why an origin was refused (logged, not sent to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginRefusal {
    Missing,
    Null,
    Malformed,
    NotListed,
}

impl OriginRefusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OriginRefusal::Missing => "missing",
            OriginRefusal::Null => "null",
            OriginRefusal::Malformed => "malformed",
            OriginRefusal::NotListed => "not_listed",
        }
    }
}

impl OriginAllowlist {
    pub(crate) fn compile(config: &OriginsConfig, problems: &mut Problems) -> Self {
        let mut patterns = Vec::new();
        let mut allow_null = false;
        for (i, raw) in config.allow.iter().enumerate() {
            if raw == "null" {
                allow_null = true;
                continue;
            }
            match parse_origin(raw, true) {
                Some((scheme, host, port)) => {
                    let host = match host.strip_prefix("*.") {
                        Some(suffix) => HostPattern::Subdomains(suffix.to_string()),
                        None => HostPattern::Exact(host),
                    };
                    patterns.push(OriginPattern { scheme, host, port });
                }
                None => problems.push(
                    format!("origins.allow[{i}]"),
                    format!(
                        "not an origin (scheme://host[:port], optional leading '*.' on the host, no path): {raw:?}"
                    ),
                ),
            }
        }
        OriginAllowlist { patterns, allow_null, allow_missing: config.allow_missing }
    }

    /// Checks the raw `Origin` header value (None when absent).
    pub(crate) fn check(&self, origin: Option<&[u8]>) -> Result<(), OriginRefusal> {
        let Some(raw) = origin else {
            return if self.allow_missing { Ok(()) } else { Err(OriginRefusal::Missing) };
        };
        let raw = std::str::from_utf8(raw).map_err(|_| OriginRefusal::Malformed)?;
        if raw == "null" {
            return if self.allow_null { Ok(()) } else { Err(OriginRefusal::Null) };
        }
        let (scheme, host, port) = parse_origin(raw, false).ok_or(OriginRefusal::Malformed)?;
        let listed = self.patterns.iter().any(|p| {
            p.scheme == scheme
                && p.port == port
                && match &p.host {
                    HostPattern::Exact(h) => *h == host,
                    HostPattern::Subdomains(suffix) => host
                        .strip_suffix(suffix.as_str())
                        .and_then(|prefix| prefix.strip_suffix('.'))
                        .is_some_and(|label| !label.is_empty() && !label.ends_with('.')),
                }
        });
        if listed { Ok(()) } else { Err(OriginRefusal::NotListed) }
    }
}

/// Parses `scheme://host[:port]` into lowercase scheme, lowercase host and explicit port.
/// `allow_wildcard` admits a leading `*.` on the host (config side only).
fn parse_origin(raw: &str, allow_wildcard: bool) -> Option<(String, String, u16)> {
    let (scheme, rest) = raw.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':')?)?,
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), parse_port(p)?),
            None => (rest.to_ascii_lowercase(), default_port),
        }
    };
    let name = if allow_wildcard { host.strip_prefix("*.").unwrap_or(&host) } else { host.as_str() };
    let is_valid_name = !name.is_empty()
        && (name.starts_with('[')
            || name
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
    is_valid_name.then_some((scheme, host, port))
}

/// A port in decimal digits only: `u16::from_str` alone also takes a leading `+`, which no browser
/// sends and which would let `http://host:+80` stand for `http://host`.
fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], allow_missing: bool) -> OriginAllowlist {
        let mut problems = Problems::default();
        let config = OriginsConfig { allow: allow.iter().map(|s| s.to_string()).collect(), allow_missing };
        let list = OriginAllowlist::compile(&config, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        list
    }

    #[test]
    fn exact_origin_matches_scheme_host_and_port() {
        let l = list(&["https://app.example.com"], false);
        assert_eq!(l.check(Some(b"https://app.example.com")), Ok(()));
        assert_eq!(l.check(Some(b"https://APP.Example.com")), Ok(()));
        assert_eq!(l.check(Some(b"https://app.example.com:443")), Ok(()));
        assert_eq!(l.check(Some(b"http://app.example.com")), Err(OriginRefusal::NotListed));
        assert_eq!(l.check(Some(b"https://app.example.com:8443")), Err(OriginRefusal::NotListed));
        assert_eq!(l.check(Some(b"https://app.example.com.evil.com")), Err(OriginRefusal::NotListed));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let l = list(&["https://*.example.com"], false);
        assert_eq!(l.check(Some(b"https://a.example.com")), Ok(()));
        assert_eq!(l.check(Some(b"https://a.b.example.com")), Ok(()));
        assert_eq!(l.check(Some(b"https://example.com")), Err(OriginRefusal::NotListed));
        assert_eq!(l.check(Some(b"https://evilexample.com")), Err(OriginRefusal::NotListed));
        assert_eq!(l.check(Some(b"https://example.com.evil.com")), Err(OriginRefusal::NotListed));
        assert_eq!(l.check(Some(b"https://.example.com")), Err(OriginRefusal::Malformed));
    }

    #[test]
    fn null_missing_and_garbage() {
        let l = list(&["http://localhost:8080"], false);
        assert_eq!(l.check(None), Err(OriginRefusal::Missing));
        assert_eq!(l.check(Some(b"null")), Err(OriginRefusal::Null));
        assert_eq!(l.check(Some(b"localhost:8080")), Err(OriginRefusal::Malformed));
        assert_eq!(l.check(Some(b"http://localhost:8080/path")), Err(OriginRefusal::Malformed));
        assert_eq!(l.check(Some(b"http://user@localhost:8080")), Err(OriginRefusal::Malformed));
        assert_eq!(l.check(Some(&[0xff, 0xfe])), Err(OriginRefusal::Malformed));
        // Found by the `origin` fuzz target: `+` is not a digit.
        assert_eq!(l.check(Some(b"http://localhost:+8080")), Err(OriginRefusal::Malformed));
        let l = list(&["null"], true);
        assert_eq!(l.check(None), Ok(()));
        assert_eq!(l.check(Some(b"null")), Ok(()));
    }

    #[test]
    fn bad_config_entries_are_reported() {
        let mut problems = Problems::default();
        let config = OriginsConfig {
            allow: vec![
                "example.com".into(),
                "https://a.com/x".into(),
                "ftp://a.com".into(),
                "http://a.com:+80".into(),
            ],
            allow_missing: false,
        };
        OriginAllowlist::compile(&config, &mut problems);
        assert_eq!(problems.len(), 4);
    }
}
