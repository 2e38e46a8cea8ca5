//! Reads of one channel's state: `history`, `presence`, `presence_stats` (GET, query
//! parameters). The host is trusted: the channel rule's `history` and `presence_access`
//! requirements do not apply, but the channel must keep history or track presence.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::Api;
use super::query::Query;
use super::reply::{ApiError, ErrorBody, json};
use crate::error::ErrorCode;
use crate::history::Since;

/// A page of a channel's history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryPage {
    /// The channel.
    channel: String,
    /// The offset of the channel's latest publication when the page was read (0: none yet).
    offset: u64,
    /// The channel's epoch (a `since` position is only valid in the same epoch).
    epoch: String,
    /// The publications, in the requested order.
    publications: Vec<HistoryPublication>,
}

/// One kept publication.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryPublication {
    /// Its offset in the channel's epoch.
    offset: u64,
    /// Its payload, as delivered.
    #[schema(value_type = Object)]
    payload: Value,
}

/// A page of a channel's members, cluster-wide, ordered by user.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PresencePage {
    /// The channel.
    channel: String,
    /// The members of this page.
    members: Vec<PresenceMember>,
    /// When more follow: the `after` of the next page.
    next: Option<String>,
}

/// One member of a channel.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PresenceMember {
    /// The user (`sub`).
    user: String,
    /// How many of the user's sessions are subscribed (across the cluster).
    sessions: u64,
    /// The claims the rule's `presence_claims` lists that the user's token carries.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    claims: serde_json::Map<String, Value>,
}

/// A channel's presence counts, cluster-wide.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PresenceCounts {
    /// The channel.
    channel: String,
    /// Distinct users subscribed.
    users: u64,
    /// Sessions subscribed.
    clients: u64,
}

/// Most presence members one page returns.
const MAX_PRESENCE_LIMIT: u64 = 1000;
/// Entries in a history or presence page when the caller names no limit.
const DEFAULT_LIMIT: u64 = 100;

fn channel(query: &mut Query) -> Result<String, ApiError> {
    query
        .text("channel")
        .ok_or_else(|| ApiError::new(ErrorCode::ApiInvalidParameter, "query parameter channel is required"))
}

/// `GET /api/v1/history?channel=&limit=&since_offset=&since_epoch=&newest_first=`.
#[utoipa::path(get, path = "/api/v1/history", tag = "channels",
    params(
        ("channel" = String, Query, description = "The channel."),
        ("limit" = Option<u64>, Query, description = "1 to 1000; 100 when absent."),
        ("since_offset" = Option<u64>, Query, description = "With `since_epoch`: page after (or, newest first, before) this offset."),
        ("since_epoch" = Option<String>, Query, description = "The epoch `since_offset` belongs to."),
        ("newest_first" = Option<bool>, Query, description = "`true`: newest first; `false` (default): oldest first."),
    ),
    responses((status = 200, body = HistoryPage), (status = "4XX", body = ErrorBody)))]
pub(crate) async fn history(State(api): State<Arc<Api>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let mut call = match api.begin("history", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = (|| {
        let mut query = Query::parse(&uri)?;
        let channel = channel(&mut query)?;
        let limit = query.parsed::<u64>("limit")?.unwrap_or(DEFAULT_LIMIT);
        let since_offset = query.parsed::<u64>("since_offset")?;
        let since_epoch = query.text("since_epoch");
        let is_newest_first = query.parsed::<bool>("newest_first")?.unwrap_or(false);
        query.finish()?;
        call.target = format!("channel={channel}");
        let since = match (since_offset, since_epoch) {
            (Some(offset), Some(epoch)) => Some(Since { offset, epoch }),
            (None, None) => None,
            _ => {
                return Err(ApiError::new(ErrorCode::ApiInvalidParameter, "since_offset and since_epoch go together"));
            }
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = api.handle.history(&channel, since.as_ref(), limit, is_newest_first)?;
        let publications = page
            .publications
            .into_iter()
            .map(|p| HistoryPublication { offset: p.offset, payload: p.payload })
            .collect();
        let answer =
            HistoryPage { channel, offset: page.position.offset, epoch: page.position.epoch.to_string(), publications };
        Ok(json(StatusCode::OK, &answer))
    })();
    api.finish(call, result)
}

/// `GET /api/v1/presence?channel=&limit=&after=`.
#[utoipa::path(get, path = "/api/v1/presence", tag = "channels",
    params(
        ("channel" = String, Query, description = "The channel."),
        ("limit" = Option<u64>, Query, description = "1 to 1000; 100 when absent."),
        ("after" = Option<String>, Query, description = "The previous page's `next`."),
    ),
    responses((status = 200, body = PresencePage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub(crate) async fn presence(State(api): State<Arc<Api>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let mut call = match api.begin("presence", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let mut query = Query::parse(&uri)?;
        let channel = channel(&mut query)?;
        let limit = query.parsed::<u64>("limit")?.unwrap_or(DEFAULT_LIMIT);
        let after = query.text("after");
        query.finish()?;
        call.target = format!("channel={channel}");
        if !(1..=MAX_PRESENCE_LIMIT).contains(&limit) {
            return Err(ApiError::new(ErrorCode::InvalidArgument, format!("limit must be 1 to {MAX_PRESENCE_LIMIT}")));
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = api.handle.presence(&channel, limit, after.as_deref()).await?;
        let members = page
            .members
            .into_iter()
            .map(|m| PresenceMember { user: m.user, sessions: m.sessions, claims: m.claims })
            .collect();
        Ok(json(StatusCode::OK, &PresencePage { channel, members, next: page.next }))
    }
    .await;
    api.finish(call, result)
}

/// `GET /api/v1/presence_stats?channel=`.
#[utoipa::path(get, path = "/api/v1/presence_stats", tag = "channels",
    params(("channel" = String, Query, description = "The channel.")),
    responses((status = 200, body = PresenceCounts), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub(crate) async fn presence_stats(State(api): State<Arc<Api>>, request: Request) -> Response {
    let uri = request.uri().clone();
    let mut call = match api.begin("presence_stats", request) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let result = async {
        let mut query = Query::parse(&uri)?;
        let channel = channel(&mut query)?;
        query.finish()?;
        call.target = format!("channel={channel}");
        let stats = api.handle.presence_stats(&channel).await?;
        Ok(json(StatusCode::OK, &PresenceCounts { channel, users: stats.users, clients: stats.clients }))
    }
    .await;
    api.finish(call, result)
}
