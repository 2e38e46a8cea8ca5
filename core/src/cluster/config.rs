//! `[cluster]`: which broker joins the nodes, and how cluster-wide quotas behave, as written in the
//! config (compiled by settings.rs).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::problems::Problems;

/// Which broker carries publications and control messages between nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// One node: publications stay in this process (the default).
    #[default]
    Memory,
    /// Redis pub/sub (`url = "redis://host:6379"`, or `rediss://` for TLS).
    Redis,
    /// NATS core pub/sub (`url = "nats://host:4222"`, or `tls://` for TLS).
    Nats,
}

impl BrokerKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            BrokerKind::Memory => "memory",
            BrokerKind::Redis => "redis",
            BrokerKind::Nats => "nats",
        }
    }
}

/// What a handshake gets when the cluster quota store cannot be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaFailure {
    /// Admit, counting against this node's own per-user quota only (the default).
    #[default]
    Open,
    /// Refuse with 503 `quota_unavailable`.
    Closed,
}

/// What a starting node does until it has read the revocations and bans kept in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFailure {
    /// Admit no one (503 `cluster_state_unavailable`, `/readyz` 503) until they are loaded (the
    /// default): a node never admits a revoked token or a banned client it could not know about.
    #[default]
    Closed,
    /// Admit meanwhile (the failure is logged and counted); the state is applied when Redis
    /// answers, and bans and revocations still arrive from the other nodes that are up.
    Open,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `memory` (single node, default), `redis` or `nats`.
    pub broker: BrokerKind,
    /// The broker's URL: `redis://[user@]host:port[/db]` (`rediss://` for TLS) or
    /// `nats://[user@]host:port` / `tls://[user@]host:port`. Required for `redis` and `nats`; must be empty for `memory`.
    /// Never a password: see `password_env`.
    pub url: String,
    /// Name of the environment variable holding the broker's password (Redis `AUTH`, with the
    /// URL's user as ACL user; NATS: the password of the URL's user, or a token when the URL
    /// names no user). Also used for `quota_redis_url`. Empty (default): no password.
    pub password_env: String,
    /// This node's name, unique in the cluster (letters, digits, `_`, `-`, `.`; at most 64
    /// bytes). Empty (default): generated from the process id and the start time.
    pub node_id: String,
    /// Prefix of every broker subject and key, so several clusters can share a broker (letters,
    /// digits, `_`, `-`; at most 64 bytes). Default `wsguard`.
    pub channel_prefix: String,
    /// Redis URL where cluster-wide per-user connection counts and used single-use `jti`s are
    /// kept. Empty (default): the broker's `url` when `broker = "redis"`, otherwise both stay per
    /// node.
    pub quota_redis_url: String,
    /// When the quota store cannot be reached: `open` (admit; this node's own per-user quota
    /// still applies) or `closed` (refuse with 503 `quota_unavailable`). Default `open`.
    pub quota_failure: QuotaFailure,
    /// Lifetime of a session's entry in the cluster quota; nodes renew their entries every third
    /// of it, so the entries of a node that dies vanish within this time. Default 30.
    pub lease_ttl_secs: f64,
    /// How long a publish waits for the broker's confirmation before the client gets a
    /// `broker_unavailable` error (and how long a handshake waits for the quota store).
    /// Default 2.
    pub broker_timeout_secs: f64,
    /// Longest pause between reconnection attempts (the pause doubles from 0.1 s). Default 5.
    pub reconnect_max_secs: f64,

    // --- Broker TLS and the cluster-wide single-use jti (cluster/tls.rs, cluster/jti.rs) ---
    /// PEM file with the CA certificate(s) the broker's certificate must chain to (Redis
    /// `rediss://`, NATS, and `quota_redis_url` when it is `rediss://`). None (default): the
    /// system trust store. With NATS, any `tls_*` key makes TLS required even for `nats://`.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file with this node's client certificate chain, leaf first, for brokers that require
    /// one (Redis `tls-auth-clients`, NATS `verify`). None (default): no client certificate.
    /// Requires `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1). None (default).
    pub tls_key_file: Option<PathBuf>,
    /// With `auth.single_use_jti` and a cluster Redis (`quota_redis_url`, or the Redis broker):
    /// what a handshake or `refresh` gets when Redis cannot be asked whether the `jti` was used on
    /// another node: `closed` (refuse with 503 `jti_store_unavailable`, the default: a replay is
    /// a security failure) or `open` (admit when this node has not seen the `jti`).
    pub jti_failure: JtiFailure,

    // --- Authenticated broker messages and persisted security state (signing.rs, persist.rs) ---
    /// Name of the environment variable holding the key (at least 32 bytes) that signs every
    /// message this node puts on the broker; messages that are not signed with it (or with
    /// `signing_key_previous_env`), or are replayed, are dropped. Empty (default): messages are
    /// neither signed nor verified, and anyone able to publish on the broker can inject
    /// publications, revocations and lifted bans. Recommended for every cluster.
    pub signing_key_env: String,
    /// A file holding the signing key instead (one trailing newline is ignored), e.g. a mounted
    /// Kubernetes secret. At most one of `signing_key_env` and `signing_key_file`. Empty
    /// (default): none.
    pub signing_key_file: String,
    /// Name of the environment variable holding the previous signing key, still accepted (never
    /// used to sign) while a new key is rolled out. Empty (default): none.
    pub signing_key_previous_env: String,
    /// A file holding the previous signing key instead. Empty (default): none.
    pub signing_key_previous_file: String,
    /// Until a starting node has read the revocations and bans kept in Redis (`quota_redis_url`,
    /// else the Redis broker; it retries until Redis answers): `closed` (refuse every handshake
    /// with 503 `cluster_state_unavailable`, not ready) or `open` (admit meanwhile). Default
    /// `closed`.
    pub state_failure: StateFailure,
}

/// What a single-use token gets when the cluster's used-jti store (Redis) cannot be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JtiFailure {
    /// Refuse with 503 `jti_store_unavailable` (the default).
    #[default]
    Closed,
    /// Admit when this node's own used-jti cache has not seen the `jti` (single use per node
    /// during the outage).
    Open,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            broker: BrokerKind::Memory,
            url: String::new(),
            password_env: String::new(),
            node_id: String::new(),
            channel_prefix: "wsguard".into(),
            quota_redis_url: String::new(),
            quota_failure: QuotaFailure::Open,
            lease_ttl_secs: 30.0,
            broker_timeout_secs: 2.0,
            reconnect_max_secs: 5.0,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            jti_failure: JtiFailure::Closed,
            signing_key_env: String::new(),
            signing_key_file: String::new(),
            signing_key_previous_env: String::new(),
            signing_key_previous_file: String::new(),
            state_failure: StateFailure::Closed,
        }
    }
}

const MAX_NAME_BYTES: usize = 64;

impl ClusterConfig {
    /// The URL and name rules (the durations are checked as they are compiled, settings.rs).
    pub(crate) fn check_urls_and_names(&self, problems: &mut Problems) {
        match self.broker {
            BrokerKind::Memory if !self.url.is_empty() => {
                problems.push("cluster.url", "only used with broker = \"redis\" or \"nats\"");
            }
            BrokerKind::Memory => {}
            BrokerKind::Redis => check_redis_url("cluster.url", &self.url, problems),
            BrokerKind::Nats => {
                if self.url.is_empty() {
                    problems.push("cluster.url", "required with broker = \"nats\"");
                } else if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
                    problems.push("cluster.url", "must start with nats:// or tls://");
                } else if userinfo(&self.url).is_some() && self.password_env.is_empty() {
                    // `nats://secret@host` is a token: a secret in the config text.
                    problems.push("cluster.url", "a user (or token) in a NATS URL needs cluster.password_env; put tokens in that variable, not in the URL");
                }
            }
        }
        for (path, url) in [("cluster.url", &self.url), ("cluster.quota_redis_url", &self.quota_redis_url)] {
            if userinfo(url).is_some_and(|u| u.contains(':')) {
                problems
                    .push(path, "holds a password: put it in the environment variable named by cluster.password_env");
            }
        }
        if !self.password_env.is_empty() && self.broker == BrokerKind::Memory {
            problems.push("cluster.password_env", "only used with broker = \"redis\" or \"nats\"");
        }
        if !self.quota_redis_url.is_empty() {
            check_redis_url("cluster.quota_redis_url", &self.quota_redis_url, problems);
            if self.broker == BrokerKind::Memory {
                problems.push("cluster.quota_redis_url", "only used with broker = \"redis\" or \"nats\"");
            }
        }
        self.check_signing_keys(problems);
        if !self.node_id.is_empty() && !is_name(&self.node_id, true) {
            problems.push("cluster.node_id", "use 1-64 letters, digits, '_', '-' or '.'");
        }
        if !is_name(&self.channel_prefix, false) {
            problems.push("cluster.channel_prefix", "use 1-64 letters, digits, '_' or '-'");
        }
        self.check_tls(problems);
    }

    /// True when a `tls_*` key is set.
    pub(crate) fn has_tls_files(&self) -> bool {
        self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some()
    }

    /// The `tls_*` rules (the files themselves are read when the server is built, cluster/tls.rs).
    fn check_tls(&self, problems: &mut Problems) {
        for (path, file) in [
            ("cluster.tls_ca_file", &self.tls_ca_file),
            ("cluster.tls_cert_file", &self.tls_cert_file),
            ("cluster.tls_key_file", &self.tls_key_file),
        ] {
            if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                problems.push(path, "must not be empty (leave it out instead)");
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push("cluster.tls_cert_file", "tls_cert_file and tls_key_file go together");
        }
        if !self.has_tls_files() {
            return;
        }
        let has_tls_url = [&self.url, &self.quota_redis_url].iter().any(|u| super::tls::is_tls_url(u));
        match self.broker {
            BrokerKind::Memory => problems.push("cluster.tls_ca_file", "only used with broker = \"redis\" or \"nats\""),
            BrokerKind::Redis if !has_tls_url => {
                problems.push("cluster.url", "the cluster.tls_* keys need a rediss:// URL");
            }
            _ => {}
        }
    }
}

impl ClusterConfig {
    fn check_signing_keys(&self, problems: &mut Problems) {
        let sources = [
            ("cluster.signing_key_env", &self.signing_key_env),
            ("cluster.signing_key_file", &self.signing_key_file),
            ("cluster.signing_key_previous_env", &self.signing_key_previous_env),
            ("cluster.signing_key_previous_file", &self.signing_key_previous_file),
        ];
        for (path, value) in sources {
            if !value.is_empty() && self.broker == BrokerKind::Memory {
                problems.push(path, "only used with broker = \"redis\" or \"nats\"");
            }
        }
        if !self.signing_key_env.is_empty() && !self.signing_key_file.is_empty() {
            problems.push("cluster.signing_key_file", "set at most one of signing_key_env and signing_key_file");
        }
        if !self.signing_key_previous_env.is_empty() && !self.signing_key_previous_file.is_empty() {
            problems.push(
                "cluster.signing_key_previous_file",
                "set at most one of signing_key_previous_env and signing_key_previous_file",
            );
        }
        let has_previous = !self.signing_key_previous_env.is_empty() || !self.signing_key_previous_file.is_empty();
        if has_previous && self.signing_key_env.is_empty() && self.signing_key_file.is_empty() {
            problems.push("cluster.signing_key_previous_env", "a previous key needs a current one (signing_key_env)");
        }
    }
}

/// The `user[:password]` part of a URL's authority, if any.
pub(crate) fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    authority.rsplit_once('@').map(|(info, _)| info)
}

/// The URL without its `user@` part, and the user.
pub(crate) fn split_user(url: &str) -> (String, Option<String>) {
    match (userinfo(url), url.split_once("://")) {
        (Some(info), Some((scheme, rest))) => {
            let host = &rest[info.len() + 1..];
            (format!("{scheme}://{host}"), Some(info.to_string()))
        }
        _ => (url.to_string(), None),
    }
}

/// Reads `cluster.password_env` (at bind, with the other environment checks).
pub(crate) fn read_password(config: &ClusterConfig) -> Result<Option<String>, crate::config::problems::ConfigError> {
    if config.password_env.is_empty() || config.broker == BrokerKind::Memory {
        return Ok(None);
    }
    match std::env::var(&config.password_env) {
        Ok(password) if !password.is_empty() => Ok(Some(password)),
        _ => Err(crate::config::problems::ConfigError::new(
            crate::error::ErrorCode::ConfigSecretMissing,
            vec![crate::config::problems::ConfigProblem::new(
                "cluster.password_env",
                format!("environment variable {} is not set, empty or not UTF-8", config.password_env),
            )],
        )),
    }
}

/// What `[cluster]` reads from the environment at bind.
#[derive(Debug, Default)]
pub(crate) struct ClusterSecrets {
    /// `cluster.password_env`'s value.
    pub(crate) password: Option<String>,
    /// `cluster.signing_key_env` (and `signing_key_previous_env`).
    pub(crate) signing: Option<super::signing::SigningKeys>,
}

/// Reads `cluster.password_env` and the signing keys (at bind, with the other environment
/// checks); every problem is reported.
pub(crate) fn read_secrets(config: &ClusterConfig) -> Result<ClusterSecrets, crate::config::problems::ConfigError> {
    use crate::config::problems::{ConfigError, ConfigProblem};
    let mut problems = Vec::new();
    let password = read_password(config).map_err(|e| problems.extend(e.problems().iter().cloned())).ok().flatten();
    let mut key = |env_path: &str, var: &str, file_path: &str, file: &str| -> Option<Vec<u8>> {
        if config.broker == BrokerKind::Memory {
            return None;
        }
        let (path, value) = if !var.is_empty() {
            match std::env::var_os(var) {
                Some(value) => (env_path, value.into_encoded_bytes()),
                None => {
                    problems.push(ConfigProblem::new(env_path, format!("environment variable {var} is not set")));
                    return None;
                }
            }
        } else if !file.is_empty() {
            match std::fs::read(file) {
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
                    problems.push(ConfigProblem::new(file_path, format!("cannot read {file}: {e}")));
                    return None;
                }
            }
        } else {
            return None;
        };
        if value.len() < super::signing::MIN_KEY_BYTES {
            problems.push(ConfigProblem::new(
                path,
                format!("the signing key must be at least {} bytes", super::signing::MIN_KEY_BYTES),
            ));
            return None;
        }
        Some(value)
    };
    let current =
        key("cluster.signing_key_env", &config.signing_key_env, "cluster.signing_key_file", &config.signing_key_file);
    let previous = key(
        "cluster.signing_key_previous_env",
        &config.signing_key_previous_env,
        "cluster.signing_key_previous_file",
        &config.signing_key_previous_file,
    );
    if !problems.is_empty() {
        return Err(ConfigError::new(crate::error::ErrorCode::ConfigSecretMissing, problems));
    }
    let signing = current.map(|current| super::signing::SigningKeys::new(&current, previous.as_deref()));
    Ok(ClusterSecrets { password, signing })
}

fn is_name(s: &str, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (allow_dot && b == b'.'))
}

fn check_redis_url(path: &str, url: &str, problems: &mut Problems) {
    if url.is_empty() {
        problems.push(path, "required with broker = \"redis\"");
    } else if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        problems.push(path, "must start with redis:// or rediss:// (TLS)");
    } else {
        use redis::IntoConnectionInfo;
        match url.into_connection_info() {
            Err(e) => problems.push(path, format!("not a valid Redis URL: {e}")),
            Ok(info) if matches!(info.addr(), redis::ConnectionAddr::TcpTls { insecure: true, .. }) => {
                problems.push(path, "#insecure (no certificate check) is refused; name the CA in cluster.tls_ca_file");
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::settings::ClusterSettings;

    fn quota_url(config: &ClusterConfig) -> Option<String> {
        ClusterSettings::compile(config, &mut Problems::default()).quota_url
    }

    fn problems(config: &ClusterConfig) -> Vec<String> {
        let mut p = Problems::default();
        ClusterSettings::compile(config, &mut p);
        match p.into_result(crate::error::ErrorCode::ConfigInvalid) {
            Ok(()) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn default_is_a_valid_single_node() {
        assert!(problems(&ClusterConfig::default()).is_empty());
        assert_eq!(quota_url(&ClusterConfig::default()), None);
    }

    #[test]
    fn urls_must_match_the_broker() {
        let c = ClusterConfig { url: "redis://x".into(), ..Default::default() };
        assert_eq!(problems(&c), ["cluster.url: only used with broker = \"redis\" or \"nats\""]);
        let c = ClusterConfig { broker: BrokerKind::Redis, ..Default::default() };
        assert_eq!(problems(&c).len(), 1);
        let c = ClusterConfig { broker: BrokerKind::Nats, url: "redis://x".into(), ..Default::default() };
        assert_eq!(problems(&c), ["cluster.url: must start with nats:// or tls://"]);
        let c = ClusterConfig { broker: BrokerKind::Redis, url: "rediss://x".into(), ..Default::default() };
        assert!(problems(&c).is_empty());
        let c = ClusterConfig { broker: BrokerKind::Redis, url: "rediss://x/#insecure".into(), ..Default::default() };
        assert!(problems(&c)[0].contains("#insecure"), "{:?}", problems(&c));
        let c = ClusterConfig {
            broker: BrokerKind::Nats,
            url: "nats://127.0.0.1:4222".into(),
            node_id: "a b".into(),
            channel_prefix: "x.y".into(),
            lease_ttl_secs: 0.0,
            ..Default::default()
        };
        let p = problems(&c);
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn passwords_never_live_in_urls() {
        let c = ClusterConfig { broker: BrokerKind::Redis, url: "redis://u:pw@r:1".into(), ..Default::default() };
        assert!(problems(&c)[0].contains("holds a password"), "{:?}", problems(&c));
        let c = ClusterConfig { broker: BrokerKind::Redis, url: "redis://u@r:1".into(), ..Default::default() };
        assert!(problems(&c).is_empty());
        let c = ClusterConfig { broker: BrokerKind::Nats, url: "nats://s3cret@n:1".into(), ..Default::default() };
        assert!(problems(&c)[0].contains("password_env"));
        let c = ClusterConfig { password_env: "P".into(), ..c };
        assert!(problems(&c).is_empty());
        assert_eq!(split_user("nats://bob@n:1/x"), ("nats://n:1/x".to_string(), Some("bob".to_string())));
        assert_eq!(split_user("nats://n:1"), ("nats://n:1".to_string(), None));
        assert_eq!(userinfo("redis://h:1/0?x=a@b"), None);
    }

    #[test]
    fn signing_keys_need_a_broker_one_source_and_32_bytes() {
        let c = ClusterConfig { signing_key_env: "K".into(), ..Default::default() };
        assert_eq!(problems(&c), ["cluster.signing_key_env: only used with broker = \"redis\" or \"nats\""]);
        let nats = ClusterConfig { broker: BrokerKind::Nats, url: "nats://n:1".into(), ..Default::default() };
        let c = ClusterConfig { signing_key_env: "K".into(), signing_key_file: "f".into(), ..nats.clone() };
        assert!(problems(&c)[0].contains("at most one"), "{:?}", problems(&c));
        let c = ClusterConfig { signing_key_previous_env: "K".into(), ..nats.clone() };
        assert!(problems(&c)[0].contains("needs a current one"), "{:?}", problems(&c));

        let dir = std::env::temp_dir().join(format!("wsg-signing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let short = dir.join("short");
        let long = dir.join("long");
        std::fs::write(&short, b"too short\n").expect("write");
        std::fs::write(&long, b"0123456789abcdef0123456789abcdef\n").expect("write");
        let file = |path: &std::path::Path| path.to_string_lossy().into_owned();
        let c = ClusterConfig { signing_key_file: file(&short), ..nats.clone() };
        let e = read_secrets(&c).expect_err("short key");
        assert_eq!(e.code(), crate::error::ErrorCode::ConfigSecretMissing);
        assert!(e.to_string().contains("at least 32 bytes"), "{e}");
        let c = ClusterConfig { signing_key_file: file(&long), ..nats.clone() };
        assert!(read_secrets(&c).expect("32 bytes after the newline").signing.is_some());
        let c = ClusterConfig { signing_key_env: "WSGUARD_TEST_SURELY_UNSET_VARIABLE".into(), ..nats.clone() };
        assert_eq!(read_secrets(&c).expect_err("unset").code(), crate::error::ErrorCode::ConfigSecretMissing);
        assert!(read_secrets(&nats).expect("no key").signing.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn quota_store_follows_the_broker_unless_given() {
        let redis = ClusterConfig { broker: BrokerKind::Redis, url: "redis://r:1".into(), ..Default::default() };
        assert_eq!(quota_url(&redis).as_deref(), Some("redis://r:1"));
        let nats = ClusterConfig { broker: BrokerKind::Nats, url: "nats://n:1".into(), ..Default::default() };
        assert_eq!(quota_url(&nats), None);
        let nats = ClusterConfig { quota_redis_url: "redis://q:1".into(), ..nats };
        assert_eq!(quota_url(&nats).as_deref(), Some("redis://q:1"));
    }

    #[test]
    fn tls_keys_need_a_broker_a_tls_url_and_each_other() {
        let ca = Some(PathBuf::from("ca.pem"));
        let c = ClusterConfig { tls_ca_file: ca.clone(), ..Default::default() };
        assert_eq!(problems(&c), ["cluster.tls_ca_file: only used with broker = \"redis\" or \"nats\""]);
        let redis = ClusterConfig { broker: BrokerKind::Redis, url: "redis://r:1".into(), ..Default::default() };
        let c = ClusterConfig { tls_ca_file: ca.clone(), ..redis.clone() };
        assert_eq!(problems(&c), ["cluster.url: the cluster.tls_* keys need a rediss:// URL"]);
        let c = ClusterConfig { tls_ca_file: ca.clone(), quota_redis_url: "rediss://q:1".into(), ..redis };
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        // NATS: the keys make TLS required even with nats://.
        let nats =
            ClusterConfig { broker: BrokerKind::Nats, url: "nats://n:1".into(), tls_ca_file: ca, ..Default::default() };
        assert!(problems(&nats).is_empty());
        let c = ClusterConfig { tls_cert_file: Some("c.pem".into()), ..nats.clone() };
        assert_eq!(problems(&c), ["cluster.tls_cert_file: tls_cert_file and tls_key_file go together"]);
        let c = ClusterConfig { tls_cert_file: Some("c.pem".into()), tls_key_file: Some("".into()), ..nats };
        assert_eq!(problems(&c), ["cluster.tls_key_file: must not be empty (leave it out instead)"]);
    }
}
