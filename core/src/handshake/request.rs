//! Reads and parses the HTTP/1.1 upgrade request head (httparse does the parsing) within the byte
//! cap, and checks the RFC 6455 §4.2.1 requirements. Nothing here allocates per-connection state
//! beyond the bounded read buffer.

use std::ops::Range;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::rejection::Rejection;
use crate::error::ErrorCode;

/// Most header lines accepted; more is answered 431 like an oversized head.
const MAX_HEADERS: usize = 64;

/// A parsed request head. Header names are matched case-insensitively; values are raw bytes.
/// The headers are ranges into the head's own bytes (one buffer, no copy per header line).
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    raw: Vec<u8>,
    /// (name, value) of each header line, as ranges of `raw`.
    headers: Vec<(Range<usize>, Range<usize>)>,
}

impl RequestHead {
    /// A head from its parts (tests, and anything that did not come off a socket).
    #[cfg(test)]
    pub(crate) fn from_parts(method: &str, path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> Self {
        let mut raw = Vec::new();
        let mut ranges = Vec::new();
        for (name, value) in headers {
            let name_start = raw.len();
            raw.extend_from_slice(name.as_bytes());
            let value_start = raw.len();
            raw.extend_from_slice(value.as_bytes());
            ranges.push((name_start..value_start, value_start..raw.len()));
        }
        RequestHead {
            method: method.to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
            raw,
            headers: ranges,
        }
    }

    /// Every value of a header, in order.
    pub(crate) fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
    }

    /// The single value of a header; a repeated header is a bad request (it could be used to make
    /// two components disagree about the value).
    pub(crate) fn single<'a>(&'a self, name: &str) -> Result<Option<&'a [u8]>, Rejection> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(Rejection::new(ErrorCode::BadRequest, format!("duplicate {name} header")));
        }
        Ok(first)
    }

    /// True when the comma-separated header contains `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name).any(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Where `part` (a slice of `whole`, as httparse returns them) starts and ends in `whole`; an
/// empty range for anything outside it (an empty slice need not point into `whole`).
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= whole.len() => start..end,
        _ => 0..0,
    }
}

/// Reads the head. Returns it with any bytes that followed it (early WebSocket frames).
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_header_bytes: usize,
) -> Result<(RequestHead, Vec<u8>), Rejection> {
    let mut buf = Vec::with_capacity(1024.min(max_header_bytes));
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Rejection::new(ErrorCode::BadRequest, format!("read failed: {e}")).silent())?;
        if n == 0 {
            return Err(
                Rejection::new(ErrorCode::BadRequest, "connection closed before the request head ended").silent()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if len > max_header_bytes {
                    return Err(Rejection::new(ErrorCode::HeadersTooLarge, "request head too large"));
                }
                if request.version != Some(1) {
                    return Err(Rejection::new(ErrorCode::BadRequest, "HTTP/1.1 required"));
                }
                let target = request.path.unwrap_or("/");
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_string(), Some(q.to_string())),
                    None => (target.to_string(), None),
                };
                let headers = request
                    .headers
                    .iter()
                    .map(|h| (range_in(&buf, h.name.as_bytes()), range_in(&buf, h.value)))
                    .collect();
                let method = request.method.unwrap_or_default().to_string();
                let rest = buf.split_off(len);
                let head = RequestHead { method, path, query, raw: buf, headers };
                return Ok((head, rest));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > max_header_bytes {
                    return Err(Rejection::new(ErrorCode::HeadersTooLarge, "request head too large"));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Rejection::new(ErrorCode::HeadersTooLarge, "too many header lines"));
            }
            Err(e) => return Err(Rejection::new(ErrorCode::BadRequest, format!("malformed request: {e}"))),
        }
    }
}

/// Checks path, method and the WebSocket upgrade headers; returns the `Sec-WebSocket-Key`.
pub(crate) fn check_upgrade(head: &RequestHead, expected_path: &str) -> Result<String, Rejection> {
    if head.path != expected_path {
        return Err(Rejection::new(ErrorCode::NotFound, "unknown path"));
    }
    if head.method != "GET" {
        return Err(Rejection::new(ErrorCode::MethodNotAllowed, "only GET upgrades"));
    }
    for name in ["host", "origin", "authorization", "sec-websocket-key", "sec-websocket-version", "upgrade", "cookie"] {
        head.single(name)?;
    }
    if head.single("host")?.is_none_or(|h| h.is_empty()) {
        return Err(Rejection::new(ErrorCode::BadRequest, "missing Host header"));
    }
    // A body on an upgrade request has no meaning; refusing it avoids smuggling ambiguity.
    if head.single("transfer-encoding")?.is_some() || head.single("content-length")?.is_some_and(|v| v != b"0") {
        return Err(Rejection::new(ErrorCode::BadRequest, "an upgrade request carries no body"));
    }
    if !head.has_token("upgrade", "websocket") || !head.has_token("connection", "upgrade") {
        return Err(Rejection::new(ErrorCode::UpgradeRequired, "not a WebSocket upgrade request"));
    }
    if head.single("sec-websocket-version")? != Some(b"13") {
        return Err(Rejection::new(ErrorCode::UpgradeRequired, "only WebSocket version 13 is supported"));
    }
    let key = head
        .single("sec-websocket-key")?
        .ok_or_else(|| Rejection::new(ErrorCode::BadRequest, "missing Sec-WebSocket-Key"))?;
    // RFC 6455 §4.1: the key is 16 random bytes, base64-encoded.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| Rejection::new(ErrorCode::BadRequest, "Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(Rejection::new(ErrorCode::BadRequest, "Sec-WebSocket-Key must encode 16 bytes"));
    }
    Ok(String::from_utf8_lossy(key).into_owned())
}

/// The subprotocols the client offered, in order.
pub(crate) fn offered_subprotocols(head: &RequestHead) -> Vec<String> {
    head.all("sec-websocket-protocol")
        .flat_map(|v| String::from_utf8_lossy(v).split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The values of the headers named in `proxy.forward_headers`, for the backend proxy: only
/// visible-ASCII values, each as its own (name, value), and the token's cookie (`cookie_name`)
/// taken out of every `Cookie` header, so that the token never reaches the backend.
pub(crate) fn forwarded_headers(head: &RequestHead, names: &[String], cookie_name: &str) -> Vec<(String, String)> {
    let mut forwarded = Vec::new();
    for name in names {
        for value in head.all(name) {
            let Ok(value) = http::HeaderValue::from_bytes(value) else { continue };
            let Ok(value) = value.to_str() else { continue };
            let value = if name == "cookie" {
                let kept: Vec<&str> = value
                    .split(';')
                    .map(str::trim)
                    .filter(|pair| !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(cookie_name))
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                kept.join("; ")
            } else {
                value.to_string()
            };
            forwarded.push((name.clone(), value));
        }
    }
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_headers_are_forwarded_and_never_the_token_cookie() {
        let head = RequestHead::from_parts(
            "GET",
            "/ws",
            None,
            &[
                ("Cookie", "theme=dark; wsguard_token=eyJ.x.y; sid=42"),
                ("cookie", "wsguard_token=eyJ.a.b"),
                ("X-Request-Id", "r-1"),
                ("Authorization", "Bearer eyJ.x.y"),
                ("X-Binary", "caf\u{e9}"),
            ],
        );
        let names = ["cookie".to_string(), "x-request-id".to_string(), "x-binary".to_string()];
        let forwarded = forwarded_headers(&head, &names, "wsguard_token");
        // The token cookie is taken out (a header left empty is dropped); a non-ASCII value is skipped.
        let expected = [("cookie", "theme=dark; sid=42"), ("x-request-id", "r-1")];
        let expected: Vec<(String, String)> = expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(forwarded, expected);
        assert!(forwarded_headers(&head, &[], "wsguard_token").is_empty());
    }

    async fn parse(text: &str) -> (RequestHead, Vec<u8>) {
        let mut bytes = text.as_bytes();
        read_head(&mut bytes, 8192).await.unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    #[tokio::test]
    async fn headers_are_found_whatever_their_case_and_empty_values_are_kept() {
        let (head, rest) = parse(
            "GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nsec-WebSocket-Protocol: p1, p2\r\nSEC-WEBSOCKET-PROTOCOL: p3\r\n\r\nEARLY",
        )
        .await;
        assert_eq!((head.method.as_str(), head.path.as_str(), head.query.as_deref()), ("GET", "/ws", Some("x=1")));
        assert_eq!(head.single("host").ok().flatten(), Some(&b"a"[..]));
        assert_eq!(head.single("HOST").ok().flatten(), Some(&b"a"[..]));
        assert_eq!(head.single("x-empty").ok().flatten(), Some(&b""[..]));
        let protocols: Vec<&[u8]> = head.all("sec-websocket-protocol").collect();
        assert_eq!(protocols, vec![&b"p1, p2"[..], &b"p3"[..]]);
        assert!(head.single("sec-websocket-protocol").is_err(), "a repeated header is refused by `single`");
        assert_eq!(head.single("absent").ok().flatten(), None);
        assert_eq!(rest, b"EARLY");
    }
}
