//! The server API: `ServerHandle`'s operations over HTTP for operators and backends that do not
//! embed wsguard (`[api]`, docs/API.md). It owns its listener, authentication and audit trail;
//! it decides nothing about sessions itself: every operation is one `ServerHandle` call.
//!
//! A request goes through, cheapest check first:
//! 1. the listener (listener.rs): connection cap, TLS with client certificates when configured,
//!    one time box for the whole request;
//! 2. the router: a path under `/api/v1/` and its method, or 404 / 405;
//! 3. `Api::begin` (access.rs): the key (constant time) or the client certificate, then the
//!    caller's request rate;
//! 4. the handler (routes.rs, sessions.rs, reads.rs): `Content-Type`, the body size cap and a strict parse
//!    (reply.rs) or the query parameters (query.rs), the parameters, then the one `ServerHandle` call;
//! 5. `Api::finish`: the answer, an `api_request` event and `wsguard_api_requests_total`, for
//!    every call, accepted or refused. A refused call changes nothing.

mod access;
mod config;
mod listener;
mod openapi;
mod query;
mod reads;
mod reply;
mod routes;
mod sessions;
mod settings;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::de::DeserializeOwned;

pub use config::{ApiConfig, ApiKeyConfig};
pub(crate) use listener::serve;
pub use openapi::document as openapi_document;
pub(crate) use settings::ApiSettings;

use crate::error::ErrorCode;
use crate::observe::{Event, EventSink, Stats};
use crate::server::ServerHandle;
use access::{Access, Caller};
use reply::ApiError;

/// The state every handler shares.
pub(crate) struct Api {
    handle: ServerHandle,
    settings: ApiSettings,
    access: Access,
    events: EventSink,
    stats: Arc<Stats>,
}

/// Who is on the other end of a connection (set per connection by the listener).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    ip: IpAddr,
    /// The verified client certificate's subject, under mutual TLS.
    subject: Option<String>,
}

/// One call in progress: what the audit trail records about it.
pub(crate) struct Call {
    operation: &'static str,
    caller: Caller,
    client_ip: IpAddr,
    /// What the call acts on (`channel=...`, `user=...`), once the body is parsed.
    target: String,
    headers: HeaderMap,
    body: Option<Body>,
}

impl Call {
    /// The request body, read and parsed strictly (see `reply::read_json`).
    async fn body<T: DeserializeOwned>(&mut self, api: &Api) -> Result<T, ApiError> {
        let body = self.body.take().unwrap_or_else(Body::empty);
        reply::read_json(&self.headers, body, api.settings.max_body_bytes).await
    }
}

impl Api {
    pub(crate) fn new(handle: ServerHandle, mut settings: ApiSettings, events: EventSink, stats: Arc<Stats>) -> Self {
        let keys = std::mem::take(&mut settings.keys);
        let access = Access::new(keys, settings.has_client_certs, settings.requests_per_sec, settings.burst);
        Api { handle, settings, access, events, stats }
    }

    /// Authenticates and rates the caller; a refusal is audited and answered here.
    fn begin(&self, operation: &'static str, request: Request) -> Result<Call, Box<Response>> {
        let (parts, body) = request.into_parts();
        let peer = parts.extensions.get::<Peer>().cloned();
        let client_ip = peer.as_ref().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip);
        let subject = peer.and_then(|p| p.subject);
        let mut call = Call {
            operation,
            caller: Caller { key: None, subject: subject.clone() },
            client_ip,
            target: String::new(),
            headers: parts.headers,
            body: Some(body),
        };
        let admitted = match self.access.authenticate(&call.headers, subject.as_deref()) {
            Ok(caller) => {
                call.caller = caller;
                self.access.admit(&call.caller)
            }
            // Failed authentications count against the client address's rate, so a key cannot
            // be guessed faster than `api.requests_per_sec` per address.
            Err(refusal) => Err(self.access.admit_failure(client_ip).err().unwrap_or(refusal)),
        };
        match admitted {
            Ok(()) => Ok(call),
            Err(error) => Err(Box::new(self.finish(call, Err(error)))),
        }
    }

    /// Audits the call and turns its outcome into the answer.
    fn finish(&self, call: Call, result: Result<Response, ApiError>) -> Response {
        let (response, result_name) = match result {
            Ok(response) => (response, "ok"),
            Err(error) => {
                let name = error.code.name();
                (error.into_response(), name)
            }
        };
        self.stats.record_api_request(call.operation, result_name);
        self.events.emit(Event::ApiRequest {
            caller: call.caller.name(),
            client_ip: call.client_ip,
            operation: call.operation,
            target: call.target,
            result: result_name,
            status: response.status().as_u16(),
        });
        response
    }
}

/// The routes. Unknown paths answer 404 and known paths with another method 405, both after
/// authentication (an unauthenticated caller learns nothing about the endpoints but 401).
pub(crate) fn router(api: Arc<Api>) -> Router {
    let route = |method: MethodRouter<Arc<Api>>, allow: &'static str| {
        method.fallback(move |State(api): State<Arc<Api>>, request: Request| async move {
            refuse(&api, "unknown", request, ApiError::method_not_allowed(allow))
        })
    };
    Router::new()
        .route("/api/v1/publish", route(post(routes::publish), "POST"))
        .route("/api/v1/broadcast", route(post(routes::broadcast), "POST"))
        .route("/api/v1/disconnect", route(post(routes::disconnect), "POST"))
        .route("/api/v1/send", route(post(sessions::send), "POST"))
        .route("/api/v1/subscribe", route(post(sessions::subscribe), "POST"))
        .route("/api/v1/unsubscribe", route(post(sessions::unsubscribe), "POST"))
        .route("/api/v1/sessions", route(get(sessions::sessions), "GET"))
        .route("/api/v1/channels", route(get(sessions::channels), "GET"))
        .route("/api/v1/history", route(get(reads::history), "GET"))
        .route("/api/v1/presence", route(get(reads::presence), "GET"))
        .route("/api/v1/presence_stats", route(get(reads::presence_stats), "GET"))
        .route("/api/v1/revoke", route(post(routes::revoke), "POST"))
        .route("/api/v1/ban", route(post(routes::ban), "POST"))
        .route("/api/v1/unban", route(post(routes::unban), "POST"))
        .route("/api/v1/bans", route(get(routes::bans), "GET"))
        .route("/api/v1/stats", route(get(routes::stats), "GET"))
        .route("/api/v1/reload", route(post(routes::reload), "POST"))
        .fallback(|State(api): State<Arc<Api>>, request: Request| async move {
            let path = request.uri().path().to_string();
            refuse(
                &api,
                "unknown",
                request,
                ApiError::new(ErrorCode::ApiUnknownEndpoint, format!("no endpoint {path}")),
            )
        })
        .with_state(api)
}

/// Answers a request that matched no endpoint: 401 first when the caller is not authenticated.
fn refuse(api: &Api, operation: &'static str, request: Request, error: ApiError) -> Response {
    match api.begin(operation, request) {
        Ok(call) => api.finish(call, Err(error)),
        Err(response) => *response,
    }
}
