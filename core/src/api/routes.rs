//! One handler per `ServerHandle` operation. Each follows the same three steps: `Api::begin`
//! (authenticate, rate, audit a refusal), the operation on a strictly parsed body, `Api::finish`
//! (audit, metric, answer). Adding an endpoint is one small function here, its body types, and one
//! line in `router` and in openapi.rs.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Api;
use super::reply::{ApiError, json};
use crate::config::Config;
use crate::error::ErrorCode;
use crate::host::{ban_duration, ban_target, revocation};
use crate::limits::BanTarget;
use crate::observe::StatsSnapshot;

/// `POST /api/v1/publish`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// The channel (the channel-name rules of client frames apply; channel rules do not: the
    /// caller is trusted).
    channel: String,
    /// A JSON object, delivered as the `message` frame's payload.
    payload: serde_json::Map<String, Value>,
}

/// `POST /api/v1/broadcast`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastRequest {
    /// The channels, each named once, at most `api.max_broadcast_channels`. All are checked before
    /// anything is published: one invalid channel and nothing is.
    channels: Vec<String>,
    /// A JSON object, delivered to every channel.
    payload: serde_json::Map<String, Value>,
}

/// How many sessions a publication was queued for.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Delivered {
    /// Sessions on this node the publication was queued for (other nodes deliver to theirs).
    delivered: usize,
}

/// `POST /api/v1/disconnect`: exactly one of `session_id`, `user`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectRequest {
    /// One session's id.
    session_id: Option<u64>,
    /// Every session of this user (`sub`), on every node.
    user: Option<String>,
    /// With `session_id`: the node that holds the session (`cluster.node_id`); this node when
    /// absent.
    node: Option<String>,
    /// The close code: 4000-4999 except the codes wsguard sends for its own reasons (4000, 4002,
    /// 4003, 4100, 4501); 4001 when absent.
    code: Option<u16>,
    /// The close reason, at most 123 bytes of UTF-8; the reason name `disconnected` when absent.
    reason: Option<String>,
}

/// What a disconnect did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Disconnected {
    /// Sessions on this node that were asked to close.
    disconnected: usize,
    /// The node this count describes.
    node: String,
    /// True when the disconnect was also handed to the cluster broker for the other nodes.
    is_forwarded: bool,
}

/// `POST /api/v1/revoke`: exactly one of `jti`, `sub`, `issued_before`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    /// One token, by its `jti`.
    jti: Option<String>,
    /// Every token of this subject issued up to now.
    sub: Option<String>,
    /// Every token issued before this time (seconds since the Unix epoch).
    issued_before: Option<u64>,
}

/// `POST /api/v1/ban`: exactly one of `ip`, `user`, and a length.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanRequest {
    /// A client IP (IPv4 or IPv6).
    ip: Option<String>,
    /// A user (`sub`).
    user: Option<String>,
    /// How long, in seconds (positive).
    duration_secs: f64,
}

/// `POST /api/v1/unban`: exactly one of `ip`, `user`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnbanRequest {
    /// A client IP (IPv4 or IPv6).
    ip: Option<String>,
    /// A user (`sub`).
    user: Option<String>,
}

/// `GET /api/v1/stats`: the counters of one node.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeStats {
    /// The node these counters describe.
    node: String,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

/// The close code of a disconnect that names none (`disconnected_by_server`).
const DEFAULT_CLOSE_CODE: u16 = 4001;

/// `POST /api/v1/reload`: an empty object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReloadRequest {}

/// Whether the call changed something.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Done {
    /// `ban`: false when the target is exempt (`abuse.exempt`). `unban`: false when there was no
    /// ban on this node (other nodes lift theirs all the same). `revoke`, `reload`: true.
    changed: bool,
}

/// One ban in force.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BanEntry {
    /// The banned IP, for an IP ban.
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    /// The banned user, for a user ban.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// `auth_failures`, `violations` or `operator`.
    reason: String,
    /// Seconds until it lifts by itself.
    remaining_secs: f64,
}

/// `GET /api/v1/bans`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BanList {
    /// The node this list describes.
    node: String,
    /// The bans in force on this node.
    bans: Vec<BanEntry>,
}

#[utoipa::path(post, path = "/api/v1/publish", request_body = PublishRequest, tag = "publish",
    responses((status = 200, body = Delivered), (status = "4XX", body = super::reply::ErrorBody), (status = "5XX", body = super::reply::ErrorBody)))]
pub(crate) async fn publish(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("publish", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: PublishRequest = call.body(&api).await?;
        call.target = format!("channel={}", body.channel);
        let delivered = api.handle.publish(&body.channel, &Value::Object(body.payload))?;
        Ok(json(StatusCode::OK, &Delivered { delivered }))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(post, path = "/api/v1/broadcast", request_body = BroadcastRequest, tag = "publish",
    responses((status = 200, body = Delivered), (status = "4XX", body = super::reply::ErrorBody), (status = "5XX", body = super::reply::ErrorBody)))]
pub(crate) async fn broadcast(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("broadcast", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: BroadcastRequest = call.body(&api).await?;
        call.target = format!("channels={}", body.channels.len());
        if body.channels.is_empty() || body.channels.len() > api.settings.max_broadcast_channels {
            return Err(ApiError::new(
                ErrorCode::ApiInvalidParameter,
                format!("channels: 1 to {} channels", api.settings.max_broadcast_channels),
            ));
        }
        let mut seen = HashSet::new();
        if let Some(repeated) = body.channels.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(ApiError::new(ErrorCode::ApiInvalidParameter, format!("channel {repeated:?} is named twice")));
        }
        let delivered = api.handle.broadcast(&body.channels, &Value::Object(body.payload))?;
        Ok(json(StatusCode::OK, &Delivered { delivered }))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(post, path = "/api/v1/disconnect", request_body = DisconnectRequest, tag = "sessions",
    responses((status = 200, body = Disconnected), (status = "4XX", body = super::reply::ErrorBody)))]
pub(crate) async fn disconnect(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("disconnect", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: DisconnectRequest = call.body(&api).await?;
        let target = crate::host::target(body.session_id, body.user.as_deref(), body.node.as_deref())?;
        call.target = super::sessions::target_text(&target);
        let applied = api.handle.disconnect_with(
            &target,
            body.code.unwrap_or(DEFAULT_CLOSE_CODE),
            body.reason.as_deref().unwrap_or_default(),
        )?;
        let answer =
            Disconnected { disconnected: applied.changed, node: applied.node, is_forwarded: applied.is_forwarded };
        Ok(json(StatusCode::OK, &answer))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(post, path = "/api/v1/revoke", request_body = RevokeRequest, tag = "access",
    responses((status = 200, body = Done), (status = "4XX", body = super::reply::ErrorBody)))]
pub(crate) async fn revoke(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("revoke", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: RevokeRequest = call.body(&api).await?;
        let what = revocation(body.jti.as_deref(), body.sub.as_deref(), body.issued_before)?;
        call.target = match &what {
            crate::auth::Revocation::TokenId(jti) => format!("jti={jti}"),
            crate::auth::Revocation::Subject(sub) => format!("sub={sub}"),
            crate::auth::Revocation::IssuedBefore(at) => format!("issued_before={at}"),
        };
        api.handle.revoke(what);
        Ok(json(StatusCode::OK, &Done { changed: true }))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(post, path = "/api/v1/ban", request_body = BanRequest, tag = "access",
    responses((status = 200, body = Done), (status = "4XX", body = super::reply::ErrorBody)))]
pub(crate) async fn ban(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("ban", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: BanRequest = call.body(&api).await?;
        let target = ban_target(body.ip.as_deref(), body.user.as_deref())?;
        call.target = target_text(&target);
        let duration = ban_duration(body.duration_secs)?;
        let changed = api.handle.ban(target, duration);
        Ok(json(StatusCode::OK, &Done { changed }))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(post, path = "/api/v1/unban", request_body = UnbanRequest, tag = "access",
    responses((status = 200, body = Done), (status = "4XX", body = super::reply::ErrorBody)))]
pub(crate) async fn unban(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("unban", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: UnbanRequest = call.body(&api).await?;
        let target = ban_target(body.ip.as_deref(), body.user.as_deref())?;
        call.target = target_text(&target);
        let changed = api.handle.lift_ban(&target);
        Ok(json(StatusCode::OK, &Done { changed }))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(get, path = "/api/v1/bans", tag = "access",
    responses((status = 200, body = BanList), (status = "4XX", body = super::reply::ErrorBody)))]
pub(crate) async fn bans(State(api): State<Arc<Api>>, request: Request) -> Response {
    let call = match api.begin("bans", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let bans = api
        .handle
        .bans()
        .into_iter()
        .map(|ban| {
            let (ip, user) = match ban.target {
                BanTarget::Ip(ip) => (Some(ip.to_string()), None),
                BanTarget::User(user) => (None, Some(user)),
            };
            BanEntry { ip, user, reason: ban.reason.to_string(), remaining_secs: ban.remaining_secs }
        })
        .collect();
    api.finish(call, Ok(json(StatusCode::OK, &BanList { node: api.handle.node_id(), bans })))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "server",
    responses((status = 200, body = NodeStats), (status = "4XX", body = super::reply::ErrorBody)))]
pub(crate) async fn stats(State(api): State<Arc<Api>>, request: Request) -> Response {
    let call = match api.begin("stats", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    api.finish(call, Ok(json(StatusCode::OK, &NodeStats { node: api.handle.node_id(), stats: api.handle.stats() })))
}

#[utoipa::path(post, path = "/api/v1/reload", request_body = ReloadRequest, tag = "server",
    responses((status = 200, body = Done), (status = "4XX", body = super::reply::ErrorBody), (status = "5XX", body = super::reply::ErrorBody)))]
pub(crate) async fn reload(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("reload", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let ReloadRequest {} = call.body(&api).await?;
        let Some(path) = api.handle.config_file() else {
            return Err(ApiError::new(
                ErrorCode::ApiReloadUnavailable,
                "this server has no configuration file to re-read; its host reloads it",
            ));
        };
        call.target = format!("file={}", path.display());
        let config = Config::from_file(&path).map_err(|e| ApiError::from(crate::Error::Config(e)))?;
        api.handle.reload(config)?;
        Ok(json(StatusCode::OK, &Done { changed: true }))
    }
    .await;
    api.finish(call, result)
}

fn target_text(target: &BanTarget) -> String {
    match target {
        BanTarget::Ip(ip) => format!("ip={ip}"),
        BanTarget::User(user) => format!("user={user}"),
    }
}
