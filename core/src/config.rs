//! The one configuration schema shared by the CLI, C, Python and Node.
//!
//! `Config` is composed of each area's own struct. Loading is a pipeline; each stage reports
//! *every* problem it finds at once, each with its key path (a later stage runs only when the
//! earlier ones passed):
//!
//! 1. syntax (TOML or JSON) — one error with line and column;
//! 2. shape — the input is checked against the JSON Schema derived from these very structs
//!    (`additionalProperties: false` everywhere), which lists every unknown key and every wrong type
//!    in one pass (serde's `deny_unknown_fields` alone stops at the first);
//! 3. typed deserialization with `deny_unknown_fields` (a second, independent guard: a host that
//!    deserializes `Config` directly still cannot slip an unknown key through);
//! 4. semantic checks owned by each area: an area with typed settings (`[server]`, `[limits]`,
//!    `[abuse]`, `[cluster]`, `[origins]`) compiles them once (`settings.rs` in the area:
//!    durations typed, derived defaults computed; `[origins]` into its allowlist), the others
//!    `validate`; and, when the server is built, the environment and file checks (secrets, keys,
//!    certificates).
//!
//! Problems and the error that carries them live in the leaf module `problems`, which imports no
//! area: the areas import it, and this root imports the areas.
//!
//! Secrets never live in the config text: only the names of environment variables (`*_env`) or
//! files (`*_file`) that hold them.

pub(crate) mod problems;

use std::path::Path;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::ApiConfig;
use crate::auth::AuthConfig;
use crate::cluster::{ClusterConfig, ClusterSettings};
use crate::error::ErrorCode;
use crate::handshake::{OriginAllowlist, OriginsConfig};
use crate::hooks::HooksConfig;
use crate::limits::{AbuseConfig, AbuseSettings, LimitsConfig, LimitsSettings};
use crate::observe::ObservabilityConfig;
use crate::policy::{ChannelRule, RpcRule};
use crate::protocol::ProtocolConfig;
use crate::proxy::ProxyConfig;
use crate::server::{ServerConfig, ServerSettings, TlsConfig};

pub use problems::{ConfigError, ConfigProblem, Problems};

/// The root configuration. Every section is optional in the text and falls back to the
/// documented defaults (see `docs/CONFIG.md`), except `auth`, which has no usable default, and
/// `channels`, whose default (none) denies every channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener, path, connection ceiling, timeouts, trusted proxies.
    pub server: ServerConfig,
    /// TLS material; when present the listener speaks `wss://` only.
    pub tls: Option<TlsConfig>,
    /// The Origin allowlist.
    pub origins: OriginsConfig,
    /// JWT verification.
    pub auth: AuthConfig,
    /// Connection quotas, handshake rate, message size caps.
    pub limits: LimitsConfig,
    /// Time box and queue size for host callbacks.
    pub hooks: HooksConfig,
    /// Wire protocol options.
    pub protocol: ProtocolConfig,
    /// Admin listener (metrics, health) and logging.
    pub observability: ObservabilityConfig,
    /// Automatic bans and anomaly detection; off unless present.
    pub abuse: Option<AbuseConfig>,
    /// Channel authorization rules, matched in order; an unmatched channel is denied.
    pub channels: Vec<ChannelRule>,
    /// Declared RPC methods; an undeclared method is refused before host code runs.
    pub rpc: Vec<RpcRule>,
    /// Multi-node fan-out, cluster-wide revocations, bans and per-user quotas through a broker.
    pub cluster: ClusterConfig,
    /// The server API over HTTP (publish, disconnect, revoke, ban, stats, reload); off unless
    /// `api.listen` is set.
    pub api: ApiConfig,
    /// Backend endpoints that answer in place of the host hooks; off unless one is configured.
    pub proxy: ProxyConfig,
}

/// The areas' configs compiled once (see [`Config::settings`]): durations typed, derived defaults
/// computed, validated. An area without settings is still read from its config struct.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) server: ServerSettings,
    pub(crate) origins: OriginAllowlist,
    pub(crate) limits: LimitsSettings,
    /// `None` without an `[abuse]` section.
    pub(crate) abuse: Option<AbuseSettings>,
    pub(crate) cluster: ClusterSettings,
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            syntax_error(format!("invalid TOML{at}: {msg}"))
        })?;
        let json = serde_json::to_value(value).map_err(|e| syntax_error(format!("invalid TOML value: {e}")))?;
        Config::from_json_value(json)
    }

    /// Parses JSON text.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| syntax_error(format!("invalid JSON (line {}, column {}): {e}", e.line(), e.column())))?;
        Config::from_json_value(value)
    }

    /// Parses text that is either JSON (first non-blank character `{`) or TOML.
    pub fn from_text(text: &str) -> Result<Config, ConfigError> {
        if text.trim_start().starts_with('{') { Config::from_json_str(text) } else { Config::from_toml_str(text) }
    }

    /// Reads a file: `.json` is JSON, anything else TOML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                ErrorCode::ConfigFile,
                vec![ConfigProblem::new("<file>", format!("cannot read {}: {e}", path.display()))],
            )
        })?;
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            Config::from_json_str(&text)
        } else {
            Config::from_toml_str(&text)
        }
    }

    /// Builds a config from an already-parsed JSON value (a Python dict or a JS object arrive here).
    pub fn from_json_value(value: serde_json::Value) -> Result<Config, ConfigError> {
        let problems = shape_problems(&value);
        if !problems.is_empty() {
            return Err(ConfigError::new(ErrorCode::ConfigInvalid, problems));
        }
        let config: Config = serde_json::from_value(value).map_err(|e| {
            // Unreachable when the schema and the structs agree; kept as a clear error anyway.
            ConfigError::new(ErrorCode::ConfigInvalid, vec![ConfigProblem::new("<root>", e.to_string())])
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The semantic checks that need no file or environment access, every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }

    /// Compiles the areas that have typed settings and checks the others, every problem at once.
    /// The one place a config is validated; the server runs on what this returns.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let mut problems = Problems::default();
        let server = ServerSettings::compile(&self.server, self.tls.is_some(), &mut problems);
        if let Some(tls) = &self.tls {
            tls.validate(&mut problems);
        }
        let origins = OriginAllowlist::compile(&self.origins, &mut problems);
        self.auth.validate(&mut problems);
        let limits = LimitsSettings::compile(&self.limits, &mut problems);
        self.hooks.validate(&mut problems);
        self.observability.validate(&mut problems);
        let abuse = self.abuse.as_ref().map(|abuse| AbuseSettings::compile(abuse, &mut problems));
        crate::policy::validate(&self.channels, &self.rpc, &mut problems);
        self.proxy.validate(&self.rpc, &mut problems);
        let cluster = ClusterSettings::compile(&self.cluster, &mut problems);
        crate::presence::validate(&self.channels, &cluster, &mut problems);
        self.api.validate(&mut problems);
        if self.cluster.broker == crate::cluster::BrokerKind::Nats {
            // NATS core pub/sub keeps nothing: without a shared store, offsets would differ
            // between nodes and a client recovering on another node would get a wrong replay.
            // With Redis, history lives in the broker's Redis (see docs/CONFIG.md).
            for (i, _) in self.channels.iter().enumerate().filter(|(_, r)| r.history_size > 0) {
                problems.push(
                    format!("channels[{i}].history_size"),
                    "channel history needs a store shared by the nodes: use [cluster] broker = \"redis\" (NATS clusters cannot keep history)",
                );
            }
        }
        problems.into_result(ErrorCode::ConfigInvalid)?;
        Ok(Settings { server, origins, limits, abuse, cluster })
    }

    /// The JSON Schema of the configuration (draft 2020-12), as committed in
    /// `docs/config.schema.json`.
    pub fn json_schema() -> &'static serde_json::Value {
        static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
        SCHEMA.get_or_init(|| serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default())
    }

    /// The effective configuration as pretty TOML. Holds no secret: secrets are only ever named.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

fn syntax_error(message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigSyntax, vec![ConfigProblem::new("<root>", message)])
}

/// Validates the raw value against the derived schema and returns every problem.
fn shape_problems(value: &serde_json::Value) -> Vec<ConfigProblem> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .build(Config::json_schema())
            .map_err(|e| format!("internal error: config schema does not compile: {e}"))
    });
    let validator = match validator {
        Ok(v) => v,
        Err(e) => return vec![ConfigProblem::new("<root>", e.clone())],
    };
    let mut problems = Vec::new();
    for error in validator.iter_errors(value) {
        let path = dotted_path(error.instance_path().as_str());
        match error.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    problems.push(ConfigProblem::new(join_path(&path, key), "unknown key"));
                }
            }
            _ => problems
                .push(ConfigProblem::new(if path.is_empty() { "<root>".to_string() } else { path }, error.to_string())),
        }
    }
    problems
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// `/server/trusted_proxies/0` -> `server.trusted_proxies[0]` (RFC 6901 unescaping).
fn dotted_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() && !out.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [auth]
        algorithms = ["HS256"]
        hmac_secret_env = "WSGUARD_HMAC_SECRET"
        issuer = "https://issuer.example"
        audience = "wsguard"
    "#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let config = Config::from_toml_str(MINIMAL).expect("valid");
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.server.path, "/ws");
        assert_eq!(config.limits.connections_per_ip, 50);
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_path() {
        let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\npaht = \"/x\"\n[bogus]\n");
        let err = Config::from_toml_str(&text).expect_err("unknown keys");
        let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"server.lisen"), "{paths:?}");
        assert!(paths.contains(&"server.paht"), "{paths:?}");
        assert!(paths.contains(&"bogus"), "{paths:?}");
        assert_eq!(err.code(), ErrorCode::ConfigInvalid);
    }

    #[test]
    fn type_errors_and_unknown_keys_come_together() {
        let text = format!("{MINIMAL}\n[server]\nmax_connections = \"many\"\n[limits]\nconections_per_ip = 3\n");
        let err = Config::from_toml_str(&text).expect_err("invalid");
        let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"server.max_connections"), "{paths:?}");
        assert!(paths.contains(&"limits.conections_per_ip"), "{paths:?}");
    }

    #[test]
    fn json_and_toml_give_the_same_config() {
        let json = r#"{"auth":{"algorithms":["HS256"],"hmac_secret_env":"WSGUARD_HMAC_SECRET",
            "issuer":"https://issuer.example","audience":"wsguard"}}"#;
        assert_eq!(Config::from_json_str(json).expect("json"), Config::from_toml_str(MINIMAL).expect("toml"));
        assert_eq!(Config::from_text(json).expect("text"), Config::from_text(MINIMAL).expect("text"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Config::from_toml_str("[server]\nlisten = \n").expect_err("syntax");
        assert_eq!(err.code(), ErrorCode::ConfigSyntax);
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn pointer_paths_become_dotted() {
        assert_eq!(dotted_path("/server/trusted_proxies/0"), "server.trusted_proxies[0]");
        assert_eq!(dotted_path(""), "");
        assert_eq!(dotted_path("/a~1b"), "a/b");
    }
}
