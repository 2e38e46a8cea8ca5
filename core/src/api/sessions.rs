//! The endpoints that act on live sessions outside any channel rule (`send`, `subscribe`,
//! `unsubscribe`) and the listings (`sessions`, `channels`). Same three steps as routes.rs; the
//! target rules are `host::target`'s (exactly one of `session_id`, `user`; `node` only with a
//! session), so the API and every binding refuse the same arguments.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::Api;
use super::query::Query;
use super::reply::{ErrorBody, json};
use crate::server::{Applied, ChannelPage, SessionPage, Target};

/// `POST /api/v1/send`: exactly one of `session_id`, `user`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// One session's id.
    session_id: Option<u64>,
    /// Every session of this user (`sub`), on every node.
    user: Option<String>,
    /// With `session_id`: the node that holds the session (`cluster.node_id`); this node when
    /// absent.
    node: Option<String>,
    /// A JSON object, delivered as the `push` frame's payload.
    payload: serde_json::Map<String, Value>,
}

/// `POST /api/v1/subscribe` and `/api/v1/unsubscribe`: exactly one of `session_id`, `user`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionRequest {
    /// One session's id.
    session_id: Option<u64>,
    /// Every session of this user (`sub`), on every node.
    user: Option<String>,
    /// With `session_id`: the node that holds the session; this node when absent.
    node: Option<String>,
    /// The channel (the channel-name rules apply; channel rules do not: the caller is trusted).
    channel: String,
}

/// The target as the audit trail records it.
pub(super) fn target_text(target: &Target) -> String {
    match target {
        Target::Session { id, node: Some(node) } => format!("session={id} node={node}"),
        Target::Session { id, node: None } => format!("session={id}"),
        Target::User(user) => format!("user={user}"),
    }
}

#[utoipa::path(post, path = "/api/v1/send", request_body = SendRequest, tag = "sessions",
    responses((status = 200, body = Applied), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub(crate) async fn send(State(api): State<Arc<Api>>, request: Request) -> Response {
    let mut call = match api.begin("send", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: SendRequest = call.body(&api).await?;
        let target = crate::host::target(body.session_id, body.user.as_deref(), body.node.as_deref())?;
        call.target = target_text(&target);
        let applied = api.handle.send(&target, &Value::Object(body.payload))?;
        Ok(json(StatusCode::OK, &applied))
    }
    .await;
    api.finish(call, result)
}

#[utoipa::path(post, path = "/api/v1/subscribe", request_body = SubscriptionRequest, tag = "sessions",
    responses((status = 200, body = Applied), (status = "4XX", body = ErrorBody)))]
pub(crate) async fn subscribe(State(api): State<Arc<Api>>, request: Request) -> Response {
    subscription(&api, "subscribe", request).await
}

#[utoipa::path(post, path = "/api/v1/unsubscribe", request_body = SubscriptionRequest, tag = "sessions",
    responses((status = 200, body = Applied), (status = "4XX", body = ErrorBody)))]
pub(crate) async fn unsubscribe(State(api): State<Arc<Api>>, request: Request) -> Response {
    subscription(&api, "unsubscribe", request).await
}

async fn subscription(api: &Api, operation: &'static str, request: Request) -> Response {
    let mut call = match api.begin(operation, request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let body: SubscriptionRequest = call.body(api).await?;
        let target = crate::host::target(body.session_id, body.user.as_deref(), body.node.as_deref())?;
        call.target = format!("{} channel={}", target_text(&target), body.channel);
        let applied = if operation == "subscribe" {
            api.handle.subscribe(&target, &body.channel)?
        } else {
            api.handle.unsubscribe(&target, &body.channel)?
        };
        Ok(json(StatusCode::OK, &applied))
    }
    .await;
    api.finish(call, result)
}

/// `GET /api/v1/sessions?user=&cursor=&limit=`: this node's sessions, in id order.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions",
    params(
        ("user" = Option<String>, Query, description = "Only this user's sessions."),
        ("cursor" = Option<u64>, Query, description = "The previous page's `next_cursor`."),
        ("limit" = Option<u64>, Query, description = "1 to 1000; 100 when absent."),
    ),
    responses((status = 200, body = SessionPage), (status = "4XX", body = ErrorBody)))]
pub(crate) async fn sessions(State(api): State<Arc<Api>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let mut call = match api.begin("sessions", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = (|| {
        let mut query = Query::parse(&uri)?;
        let user = query.text("user");
        let cursor = query.parsed::<u64>("cursor")?;
        let limit = query.parsed::<u64>("limit")?;
        query.finish()?;
        call.target = user.as_ref().map(|u| format!("user={u}")).unwrap_or_default();
        let limit = crate::host::page_limit(limit)?;
        let page: SessionPage = api.handle.sessions(user.as_deref(), cursor, limit)?;
        Ok(json(StatusCode::OK, &page))
    })();
    api.finish(call, result)
}

/// `GET /api/v1/channels?pattern=&cursor=&limit=`: this node's channels with subscribers.
#[utoipa::path(get, path = "/api/v1/channels", tag = "channels",
    params(
        ("pattern" = Option<String>, Query, description = "A channel-rule pattern (`room:{id}`)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`."),
        ("limit" = Option<u64>, Query, description = "1 to 1000; 100 when absent."),
    ),
    responses((status = 200, body = ChannelPage), (status = "4XX", body = ErrorBody)))]
pub(crate) async fn channels(State(api): State<Arc<Api>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let mut call = match api.begin("channels", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = (|| {
        let mut query = Query::parse(&uri)?;
        let pattern = query.text("pattern");
        let cursor = query.text("cursor");
        let limit = query.parsed::<u64>("limit")?;
        query.finish()?;
        call.target = pattern.as_ref().map(|p| format!("pattern={p}")).unwrap_or_default();
        let limit = crate::host::page_limit(limit)?;
        let page: ChannelPage = api.handle.channels(pattern.as_deref(), cursor.as_deref(), limit)?;
        Ok(json(StatusCode::OK, &page))
    })();
    api.finish(call, result)
}
