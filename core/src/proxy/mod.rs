//! The backend proxy (`[proxy]`): HTTP(S) endpoints of a separate service that answer the
//! questions the host hooks answer in an embedding host: `connect` for `authenticate`,
//! `subscribe` and `publish` for `authorize`, `rpc` for `rpc`. For `wsguard serve` next to a
//! backend in any language.
//!
//! This area builds each request (JSON: the verified identity, the client IP, the session, the
//! channel or method, the payload; the allowlisted handshake headers as HTTP headers, never the
//! token), sends it within the endpoint's bounds and parses the answer strictly into the hooks'
//! own answer types ([`AuthenticateAnswer`], [`Decision`], an RPC result or [`RpcError`]). *It
//! never applies an answer*: the hook runner does, after the host hooks and with the same rules,
//! so a proxied backend and an embedded handler behave identically. Request and answer JSON:
//! docs/PROXY.md.

mod client;
mod config;

pub(crate) use client::ProxyFailure;
pub use config::{ProxyConfig, ProxyEndpointConfig};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use self::client::{Endpoint, Shared};
use crate::auth::Identity;
use crate::config::problems::{ConfigError, ConfigProblem};
use crate::error::ErrorCode;
use crate::hooks::{AuthenticateAnswer, ChannelAction, Decision, HandshakeInfo, RpcError};
use crate::observe::{EventSink, Stats};

/// Shortest `proxy.secret_env` value accepted, in bytes.
const MIN_SECRET_BYTES: usize = 16;

/// The compiled `[proxy]` section: one client, the configured endpoints.
pub(crate) struct Proxy {
    shared: Shared,
    connect: Option<Endpoint>,
    subscribe: Option<Endpoint>,
    publish: Option<Endpoint>,
    rpc: Option<Endpoint>,
    rpc_methods: HashMap<String, Endpoint>,
    forward_headers: Vec<String>,
}

/// What a channel question carries besides the hooks' `AuthorizeRequest`.
#[derive(Serialize)]
struct ChannelRequest<'a> {
    /// `subscribe`, `publish`, or `history` (asked of the `subscribe` endpoint).
    action: ChannelAction,
    session_id: u64,
    client_ip: std::net::IpAddr,
    identity: &'a Identity,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Value>,
}

#[derive(Serialize)]
struct ConnectRequest<'a> {
    /// None at the handshake (no session yet), the session at a `refresh`.
    session_id: Option<u64>,
    client_ip: std::net::IpAddr,
    origin: Option<&'a str>,
    user_agent: Option<&'a str>,
    identity: &'a Identity,
}

#[derive(Serialize)]
struct RpcRequest<'a> {
    session_id: u64,
    client_ip: std::net::IpAddr,
    identity: &'a Identity,
    method: &'a str,
    payload: &'a Value,
}

impl Proxy {
    /// Builds the proxy of a validated config (None without endpoints), with the files and
    /// secret of [`check_files`].
    pub(crate) fn build(
        config: &ProxyConfig,
        stats: Arc<Stats>,
        events: EventSink,
    ) -> Result<Option<Arc<Proxy>>, ConfigError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let secret = read_secret(config)?;
        let client = build_client(config)?;
        let endpoint = |name: &'static str, config: &Option<ProxyEndpointConfig>| {
            config.as_ref().map(|c| Endpoint::new(name, c)).transpose()
        };
        let invalid =
            |message: String| ConfigError::new(ErrorCode::ConfigInvalid, vec![ConfigProblem::new("proxy", message)]);
        let mut rpc_methods = HashMap::new();
        for (method, c) in &config.rpc_methods {
            rpc_methods.insert(method.clone(), Endpoint::new("rpc", c).map_err(invalid)?);
        }
        Ok(Some(Arc::new(Proxy {
            shared: Shared { client, secret, stats, events },
            connect: endpoint("connect", &config.connect).map_err(invalid)?,
            subscribe: endpoint("subscribe", &config.subscribe).map_err(invalid)?,
            publish: endpoint("publish", &config.publish).map_err(invalid)?,
            rpc: endpoint("rpc", &config.rpc).map_err(invalid)?,
            rpc_methods,
            forward_headers: config.forward_headers.clone(),
        })))
    }

    /// The handshake headers to forward (lower-case names).
    pub(crate) fn forward_headers(&self) -> &[String] {
        &self.forward_headers
    }

    /// True when a `connect` endpoint is configured.
    pub(crate) fn has_connect(&self) -> bool {
        self.connect.is_some()
    }

    /// True when `action` has an endpoint.
    pub(crate) fn has_channel(&self, action: ChannelAction) -> bool {
        self.channel_endpoint(action).is_some()
    }

    fn channel_endpoint(&self, action: ChannelAction) -> Option<&Endpoint> {
        match action {
            // Reading a channel's history is decided like receiving its publications.
            ChannelAction::Subscribe | ChannelAction::History => self.subscribe.as_ref(),
            ChannelAction::Publish => self.publish.as_ref(),
        }
    }

    fn rpc_endpoint(&self, method: &str) -> Option<&Endpoint> {
        self.rpc_methods.get(method).or(self.rpc.as_ref())
    }

    /// True when `method` has an endpoint (its own or `proxy.rpc`).
    pub(crate) fn has_rpc(&self, method: &str) -> bool {
        self.rpc_endpoint(method).is_some()
    }

    /// Asks `connect` (None without that endpoint). The answer is parsed by
    /// [`AuthenticateAnswer::from_json`], the parser of every host's answer.
    pub(crate) async fn connect(
        &self,
        info: &HandshakeInfo,
        identity: &Identity,
        session_id: Option<u64>,
    ) -> Option<Result<AuthenticateAnswer, ProxyFailure>> {
        let endpoint = self.connect.as_ref()?;
        let request = ConnectRequest {
            session_id,
            client_ip: info.client_ip,
            origin: info.origin.as_deref(),
            user_agent: info.user_agent.as_deref(),
            identity,
        };
        let parse = |value| AuthenticateAnswer::from_json(value).map_err(|e| ProxyFailure::Invalid(e.to_string()));
        Some(self.ask(endpoint, &request, info, parse).await)
    }

    /// Asks `subscribe` or `publish` (None without that endpoint). Only `true` allows and only
    /// `false` denies; any other answer is invalid.
    pub(crate) async fn authorize(
        &self,
        action: ChannelAction,
        session_id: u64,
        info: &HandshakeInfo,
        identity: &Identity,
        channel: &str,
        payload: Option<&Value>,
    ) -> Option<Result<Decision, ProxyFailure>> {
        let endpoint = self.channel_endpoint(action)?;
        let payload = payload.filter(|_| action == ChannelAction::Publish);
        let request = ChannelRequest { action, session_id, client_ip: info.client_ip, identity, channel, payload };
        let parse = |value| match value {
            Value::Bool(true) => Ok(Decision::Allow),
            Value::Bool(false) => Ok(Decision::Deny),
            _ => Err(ProxyFailure::Invalid("expected true or false".into())),
        };
        Some(self.ask(endpoint, &request, info, parse).await)
    }

    /// Asks the method's endpoint (None without one). `{"result": value}` answers the client,
    /// `{"error": "message"}` fails the call with that message; anything else is invalid.
    pub(crate) async fn rpc(
        &self,
        session_id: u64,
        info: &HandshakeInfo,
        identity: &Identity,
        method: &str,
        payload: &Value,
    ) -> Option<Result<Result<Value, RpcError>, ProxyFailure>> {
        let endpoint = self.rpc_endpoint(method)?;
        let request = RpcRequest { session_id, client_ip: info.client_ip, identity, method, payload };
        Some(self.ask(endpoint, &request, info, parse_rpc_answer).await)
    }

    async fn ask<T>(
        &self,
        endpoint: &Endpoint,
        request: &impl Serialize,
        info: &HandshakeInfo,
        parse: impl FnOnce(Value) -> Result<T, ProxyFailure>,
    ) -> Result<T, ProxyFailure> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ProxyFailure::Invalid(format!("cannot encode the request: {e}")))?;
        endpoint.call(&self.shared, body, &info.forwarded_headers, parse).await
    }
}

/// `{"result": value}` or `{"error": "message"}`, and nothing else.
fn parse_rpc_answer(value: Value) -> Result<Result<Value, RpcError>, ProxyFailure> {
    let invalid = || ProxyFailure::Invalid("expected {\"result\": value} or {\"error\": \"message\"}".into());
    let Value::Object(mut object) = value else { return Err(invalid()) };
    if object.len() != 1 {
        return Err(invalid());
    }
    match (object.remove("result"), object.remove("error")) {
        (Some(result), None) => Ok(Ok(result)),
        (None, Some(Value::String(message))) => Ok(Err(RpcError::Failed(message))),
        _ => Err(invalid()),
    }
}

/// Reads what `[proxy]` names outside the config text (the CA file, the secret), as the server
/// does when it is built, so that `check_config` reports the same problems.
///
/// Errors: `config_file` for an unreadable CA file, `config_secret_missing` for an unset,
/// unreadable or short secret.
pub(crate) fn check_files(config: &ProxyConfig) -> Result<(), ConfigError> {
    if !config.is_enabled() {
        return Ok(());
    }
    read_secret(config)?;
    build_client(config).map(drop)
}

/// The value of `proxy.secret_env` or `proxy.secret_file` (None when neither is set).
fn read_secret(config: &ProxyConfig) -> Result<Option<String>, ConfigError> {
    let (value, from, key) = match (&config.secret_env, &config.secret_file) {
        (Some(name), _) => match std::env::var(name) {
            Ok(value) => (value, format!("${name}"), "proxy.secret_env"),
            Err(_) => return Err(secret_problem("proxy.secret_env", format!("${name} is not set"))),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => (text.trim().to_string(), path.display().to_string(), "proxy.secret_file"),
            Err(e) => return Err(secret_problem("proxy.secret_file", format!("cannot read {}: {e}", path.display()))),
        },
        (None, None) => return Ok(None),
    };
    if value.len() < MIN_SECRET_BYTES || http::HeaderValue::from_str(&value).is_err() {
        return Err(secret_problem(key, format!("{from}: not a header value of at least {MIN_SECRET_BYTES} bytes")));
    }
    Ok(Some(value))
}

/// The one HTTP client of the proxy: rustls with ring (trusting `proxy.ca_file` or the platform's
/// roots), no redirects, no environment proxy.
fn build_client(config: &ProxyConfig) -> Result<reqwest::Client, ConfigError> {
    let ca: Option<(PathBuf, Vec<u8>)> = match &config.ca_file {
        None => None,
        Some(path) => Some((
            path.clone(),
            std::fs::read(path).map_err(|e| file_problem(format!("cannot read {}: {e}", path.display())))?,
        )),
    };
    let tls = crate::auth::tls_config(ca.as_ref(), "proxy.ca_file")?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // A redirect is an HTTP status like any other non-2xx: it fails closed.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("wsguard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| file_problem(format!("cannot build the proxy HTTP client: {e}")))
}

fn secret_problem(key: &str, message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigSecretMissing, vec![ConfigProblem::new(key, message)])
}

fn file_problem(message: String) -> ConfigError {
    ConfigError::new(ErrorCode::ConfigFile, vec![ConfigProblem::new("proxy.ca_file", message)])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rpc_answers_are_parsed_strictly() {
        assert_eq!(parse_rpc_answer(json!({"result": {"id": 7}})), Ok(Ok(json!({"id": 7}))));
        assert_eq!(parse_rpc_answer(json!({"result": null})), Ok(Ok(Value::Null)));
        assert_eq!(
            parse_rpc_answer(json!({"error": "out of stock"})),
            Ok(Err(RpcError::Failed("out of stock".into())))
        );
        for invalid in [
            json!(null),
            json!(true),
            json!({}),
            json!({"error": 1}),
            json!({"result": 1, "error": "x"}),
            json!({"results": 1}),
        ] {
            assert!(parse_rpc_answer(invalid.clone()).is_err(), "{invalid} must be refused");
        }
    }
}
