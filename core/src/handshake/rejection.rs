//! `Rejection`: the one place a refused handshake becomes an HTTP response (status from the error
//! registry, headers, body). The client learns the stable code name; the detail goes to logs and
//! events only.

use std::fmt;

use http::StatusCode;

use crate::error::ErrorCode;

/// A refused handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    code: ErrorCode,
    detail: String,
    retry_after_secs: Option<u64>,
    is_silent: bool,
}

impl Rejection {
    /// A rejection with a stable code and a detail for the logs.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Rejection { code, detail: detail.into(), retry_after_secs: None, is_silent: false }
    }

    /// Adds `Retry-After` (quotas and rate limits).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// Marks a rejection that cannot be answered (the peer is gone or never spoke HTTP).
    pub(crate) fn silent(mut self) -> Self {
        self.is_silent = true;
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The detail (for logs; never sent to the client).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The HTTP status the client receives: the registry's status for the code
    /// ([`ErrorCode::http_status`]), 400 for a code the registry never answers over HTTP.
    pub fn status(&self) -> StatusCode {
        self.code.http_status().unwrap_or(StatusCode::BAD_REQUEST)
    }

    /// True when no response should be written.
    pub(crate) fn is_silent(&self) -> bool {
        self.is_silent
    }

    /// The complete HTTP/1.1 response.
    pub(crate) fn to_response(&self) -> Vec<u8> {
        let status = self.status();
        let body = format!("{{\"error\":\"{}\",\"code\":{}}}\n", self.code.name(), self.code.number());
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = self.retry_after_secs {
            head.push_str(&format!("Retry-After: {secs}\r\n"));
        }
        match status {
            // RFC 6750 §3.1: no error code when the request carried no token at all.
            StatusCode::UNAUTHORIZED if self.code == ErrorCode::TokenMissing => {
                head.push_str("WWW-Authenticate: Bearer\r\n")
            }
            StatusCode::UNAUTHORIZED => head.push_str(&format!(
                "WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"{}\"\r\n",
                self.code.name()
            )),
            StatusCode::METHOD_NOT_ALLOWED => head.push_str("Allow: GET\r\n"),
            StatusCode::UPGRADE_REQUIRED => head.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
            _ => {}
        }
        head.push_str("\r\n");
        head.push_str(&body);
        head.into_bytes()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.status().as_u16(), self.code.name(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_carries_status_code_name_and_retry_after() {
        let r = Rejection::new(ErrorCode::TooManyConnectionsPerIp, "x").retry_after(3);
        let text = String::from_utf8(r.to_response()).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
        assert!(text.contains("Retry-After: 3\r\n"));
        assert!(text.ends_with("{\"error\":\"too_many_connections_per_ip\",\"code\":2009}\n"));
        assert!(!text.contains('x'.to_string().repeat(2).as_str()));
    }
}
