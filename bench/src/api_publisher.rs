//! The load generator's server API client (`api-publish` scenario): `POST /api/v1/publish` over
//! HTTP/1.1, one request at a time, as a backend publishing through the API would. The API serves
//! one request per connection (`Connection: close`, docs/API.md), so each publication opens its
//! own TCP connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::handshake;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A server API client for one channel.
pub struct ApiPublisher {
    authority: String,
    authorization: String,
    /// `{"channel":<channel>,"payload":` — the part of every body that never changes.
    body_head: String,
}

impl ApiPublisher {
    /// A client of `url` (`http://ip:port`, the API's base URL) with `key` for `channel`.
    pub async fn connect(url: &str, key: &str, channel: &str) -> Result<Self, String> {
        let authority = url.strip_prefix("http://").ok_or("--api-url must be http://ip:port")?.trim_end_matches('/');
        let channel = serde_json::to_string(channel).map_err(|e| e.to_string())?;
        Ok(ApiPublisher {
            authority: authority.to_string(),
            authorization: format!("Bearer {key}"),
            body_head: format!("{{\"channel\":{channel},\"payload\":"),
        })
    }

    /// Publishes `payload` (a JSON object's text) and reads the whole answer; anything but
    /// `200 OK` is an error carrying the status and body.
    pub async fn publish(&mut self, payload: &str) -> Result<(), String> {
        let body = format!("{}{payload}}}", self.body_head);
        let request = Request::post("/api/v1/publish")
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, &self.authorization)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if status != StatusCode::OK {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }
}
