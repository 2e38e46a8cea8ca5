//! The server API's answers: every error is one JSON shape, `{"error": {"code", "name",
//! "message"}}` (plus `problems` for a refused reload), with the HTTP status the error registry
//! gives its code. Request bodies are read here: content type checked, size capped, parsed
//! strictly (unknown fields refused by the body types' `deny_unknown_fields`).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::config::ConfigProblem;
use crate::error::{Error, ErrorCode};
use crate::server::ReloadError;

/// A refused API call: its code (and so its status), a message for humans, and details.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: ErrorCode,
    message: String,
    problems: Vec<ConfigProblem>,
    retry_after_secs: Option<u64>,
    allow: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), problems: Vec::new(), retry_after_secs: None, allow: None }
    }

    pub(crate) fn rate_limited(retry_after_secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::new(ErrorCode::ApiRateLimited, "too many requests for this caller")
        }
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        ApiError { allow: Some(allow), ..ApiError::new(ErrorCode::ApiMethodNotAllowed, format!("use {allow}")) }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.code.api_status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Config(e) => ApiError::from_config(e),
            Error::Refused { code, message } => ApiError::new(code, message),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

impl From<ReloadError> for ApiError {
    fn from(error: ReloadError) -> Self {
        match error.config_error() {
            Some(e) => ApiError::from_config(e.clone()),
            None => ApiError::new(error.code(), error.to_string()),
        }
    }
}

impl ApiError {
    fn from_config(error: crate::config::ConfigError) -> Self {
        ApiError {
            problems: error.problems().to_vec(),
            ..ApiError::new(error.code(), "the configuration was refused; the running configuration stays")
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// The stable number (docs/ERROR_CODES.md).
    code: u32,
    /// The stable name.
    name: &'static str,
    /// For humans; may change.
    message: String,
    /// A refused reload's problems, each with its config key path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<ProblemBody>,
}

/// One configuration problem.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProblemBody {
    /// The key path, e.g. `limits.max_message_bytes`.
    path: String,
    /// What is wrong.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.number(),
                name: self.code.name(),
                message: self.message,
                problems: self.problems.into_iter().map(|p| ProblemBody { path: p.path, message: p.message }).collect(),
            },
        };
        let mut response = json(status, &body);
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.code == ErrorCode::ApiUnauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"wsguard-api\""));
        }
        response
    }
}

/// A JSON answer; never cached (answers describe live state).
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Reads and parses a POST body: `Content-Type: application/json` (415), at most `max_bytes`
/// (413, checked on `Content-Length` first and then while reading), strict JSON (400).
pub(crate) async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(ErrorCode::ApiUnsupportedMediaType, "Content-Type must be application/json"));
    }
    let too_large = || ApiError::new(ErrorCode::ApiBodyTooLarge, format!("the body is larger than {max_bytes} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(ApiError::new(ErrorCode::ApiBadJson, format!("cannot read the body: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorCode::ApiBadJson, format!("invalid body: {e}")))
}
