//! The handshake gate over real loopback sockets: one test per refusal, each asserting the exact
//! HTTP status and the stable error code name in the JSON body, plus the paths that must succeed
//! (wildcard origins, query tokens when configured, trusted proxies).

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::{
    AUDIENCE, Connect, ISSUER, ORIGIN, OTHER_SECRET, PATH, RawRequest, SECRET, Setup, assert_closed, claims, describe,
    now_secs, sign, write_all,
};
use tokio_tungstenite::tungstenite::Error as WsError;
use wsguard::{Config, ErrorCode};

// ---- request line and upgrade headers -------------------------------------------------------

#[tokio::test]
async fn wrong_path_is_404_not_found() {
    let server = Setup::new().start().await;
    let response = server.exchange(&RawRequest::upgrade("/elsewhere").header("Origin", ORIGIN)).await;
    response.assert_refused(404, "not_found");
}

#[tokio::test]
async fn post_is_405_method_not_allowed() {
    let server = Setup::new().start().await;
    let response = server.exchange(&RawRequest::upgrade(PATH).method("POST").header("Origin", ORIGIN)).await;
    response.assert_refused(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET"));
}

#[tokio::test]
async fn missing_upgrade_header_is_426_upgrade_required() {
    let server = Setup::new().start().await;
    let response = server.exchange(&RawRequest::upgrade(PATH).without("Upgrade").header("Origin", ORIGIN)).await;
    response.assert_refused(426, "upgrade_required");
}

#[tokio::test]
async fn websocket_version_8_is_426_upgrade_required() {
    let server = Setup::new().start().await;
    let request = RawRequest::upgrade(PATH).set("Sec-WebSocket-Version", "8").header("Origin", ORIGIN);
    let response = server.exchange(&request).await;
    response.assert_refused(426, "upgrade_required");
    // RFC 6455 §4.4: tell the client which version we speak.
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
}

#[tokio::test]
async fn bad_websocket_key_is_400_bad_request() {
    let server = Setup::new().start().await;
    // Valid base64, but 3 bytes instead of 16.
    let request = RawRequest::upgrade(PATH).set("Sec-WebSocket-Key", "YWJj").header("Origin", ORIGIN);
    server.exchange(&request).await.assert_refused(400, "bad_request");
}

#[tokio::test]
async fn duplicated_origin_is_400_bad_request() {
    let server = Setup::new().start().await;
    let request = RawRequest::authorized(&server.token("alice")).header("Origin", "https://evil.example");
    server.exchange(&request).await.assert_refused(400, "bad_request");
}

#[tokio::test]
async fn oversized_head_is_431_headers_too_large() {
    let server = Setup::new().server("max_header_bytes = 512").start().await;
    // Small enough to arrive in one read, so the server has consumed it all when it answers.
    let request = RawRequest::authorized(&server.token("alice")).header("X-Padding", &"p".repeat(700));
    server.exchange(&request).await.assert_refused(431, "headers_too_large");
}

#[tokio::test]
async fn slow_request_head_is_408_and_closed() {
    let server = Setup::new().server("handshake_timeout_secs = 0.3").start().await;
    let mut stream = server.tcp().await;
    // Half a request head, then silence (slowloris).
    write_all(&mut stream, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n").await;
    let response = support::read_response(&mut stream).await;
    response.assert_refused(408, "handshake_timeout");
    assert_closed(&mut stream).await;
}

// ---- Origin allowlist -------------------------------------------------------------------------

#[tokio::test]
async fn origin_not_in_allowlist_is_403() {
    let server = Setup::new().start().await;
    let request = RawRequest::authorized(&server.token("alice")).set("Origin", "https://evil.example");
    server.exchange(&request).await.assert_refused(403, "origin_not_allowed");
}

#[tokio::test]
async fn null_origin_is_403() {
    let server = Setup::new().start().await;
    let request = RawRequest::authorized(&server.token("alice")).set("Origin", "null");
    server.exchange(&request).await.assert_refused(403, "origin_not_allowed");
}

#[tokio::test]
async fn missing_origin_is_403_unless_allowed() {
    let server = Setup::new().start().await;
    let request = RawRequest::authorized(&server.token("alice")).without("Origin");
    server.exchange(&request).await.assert_refused(403, "origin_not_allowed");
}

#[tokio::test]
async fn wildcard_origin_admits_subdomains_but_not_suffix_tricks() {
    let server = Setup::new().origins("allow = [\"https://*.example.com\"]").start().await;
    let token = server.token("alice");
    let connect = Connect::new().bearer(&token).origin(Some("https://a.example.com"));
    if let Err(e) = server.try_ws(&connect).await {
        panic!("https://a.example.com must be accepted: {}", describe(&e));
    }
    let request = RawRequest::authorized(&token).set("Origin", "https://example.com.evil.com");
    server.exchange(&request).await.assert_refused(403, "origin_not_allowed");
}

// ---- tokens -----------------------------------------------------------------------------------

#[tokio::test]
async fn no_token_is_401_token_missing() {
    let server = Setup::new().start().await;
    let response = server.exchange(&RawRequest::upgrade(PATH).header("Origin", ORIGIN)).await;
    response.assert_refused(401, "token_missing");
    let challenge = response.header("www-authenticate").expect("401 carries a Bearer challenge");
    // RFC 6750 §3.1: a request without any token gets a bare challenge, no error code.
    assert_eq!(challenge, "Bearer");
}

#[tokio::test]
async fn expired_token_is_401_token_expired() {
    let server = Setup::new().start().await;
    let now = now_secs();
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now - 400, "exp": now - 100}),
    );
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_expired");
}

#[tokio::test]
async fn token_signed_with_another_secret_is_401_token_bad_signature() {
    let server = Setup::new().start().await;
    let token = sign(Algorithm::HS256, OTHER_SECRET, &claims("alice"));
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_bad_signature");
}

#[tokio::test]
async fn hs512_token_is_401_token_alg_not_allowed_when_only_hs256_is_configured() {
    let server = Setup::new().start().await;
    let token = sign(Algorithm::HS512, SECRET, &claims("alice"));
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_alg_not_allowed");
}

#[tokio::test]
async fn alg_none_token_is_401_and_never_upgraded() {
    let server = Setup::new().start().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("alice").to_string());
    let token = format!("{header}.{payload}.");
    let (mut stream, response) = server.exchange_keep(&RawRequest::authorized(&token)).await;
    assert_eq!(response.status, 401, "{response:?}");
    let code = response.error_name();
    assert!(code == "token_malformed" || code == "token_alg_not_allowed", "unexpected code {code}");
    assert_closed(&mut stream).await;
}

#[tokio::test]
async fn wrong_issuer_is_401_token_wrong_issuer() {
    let server = Setup::new().start().await;
    let mut claims = claims("alice");
    claims["iss"] = json!("https://someone-else.test");
    let token = sign(Algorithm::HS256, SECRET, &claims);
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_wrong_issuer");
}

#[tokio::test]
async fn wrong_audience_is_401_token_wrong_audience() {
    let server = Setup::new().start().await;
    let mut claims = claims("alice");
    claims["aud"] = json!("another-service");
    let token = sign(Algorithm::HS256, SECRET, &claims);
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_wrong_audience");
}

#[tokio::test]
async fn long_lived_token_is_401_token_lifetime_too_long() {
    let server = Setup::new().auth("max_token_lifetime_secs = 600").start().await;
    let token = server.token_with_ttl("alice", 3600);
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_lifetime_too_long");
}

#[tokio::test]
async fn token_without_iat_is_401_token_missing_claim() {
    let server = Setup::new().start().await;
    let mut claims = claims("alice");
    claims.as_object_mut().expect("claims object").remove("iat");
    let token = sign(Algorithm::HS256, SECRET, &claims);
    server.exchange(&RawRequest::authorized(&token)).await.assert_refused(401, "token_missing_claim");
}

#[tokio::test]
async fn query_token_is_ignored_by_default() {
    let server = Setup::new().start().await;
    let target = format!("{PATH}?access_token={}", server.token("alice"));
    let response = server.exchange(&RawRequest::upgrade(&target).header("Origin", ORIGIN)).await;
    response.assert_refused(401, "token_missing");
}

#[tokio::test]
async fn query_token_is_accepted_when_configured() {
    let server = Setup::new().auth("token_sources = [\"header\", \"query\"]").start().await;
    let target = format!("{PATH}?access_token={}", server.token("alice"));
    let response = server.exchange(&RawRequest::upgrade(&target).header("Origin", ORIGIN)).await;
    assert_eq!(response.status, 101, "{response:?}");
}

#[tokio::test]
async fn bearer_subprotocol_without_wsguard_v1_is_400_subprotocol_required() {
    let server = Setup::new().start().await;
    let token = server.token("alice");
    let request =
        RawRequest::upgrade(PATH).header("Origin", ORIGIN).header("Sec-WebSocket-Protocol", &format!("bearer.{token}"));
    server.exchange(&request).await.assert_refused(400, "subprotocol_required");
}

// ---- capacity, quotas, rates --------------------------------------------------------------------

#[tokio::test]
async fn full_server_is_503_server_full() {
    let server = Setup::new().server("max_connections = 1").start().await;
    let _first = server.session("alice").await;
    let response = server.exchange(&RawRequest::authorized(&server.token("bob"))).await;
    response.assert_refused(503, "server_full");
}

#[tokio::test]
async fn second_session_from_one_ip_is_429_with_retry_after() {
    let server = Setup::new().limits("connections_per_ip = 1").start().await;
    let _first = server.session("alice").await;
    let response = server.exchange(&RawRequest::authorized(&server.token("bob"))).await;
    response.assert_refused(429, "too_many_connections_per_ip");
    response.assert_retry_after();
}

#[tokio::test]
async fn second_session_of_one_user_is_429_with_retry_after() {
    let server = Setup::new().limits("connections_per_user = 1").limits("connections_per_ip = 10").start().await;
    let _first = server.session("alice").await;
    let response = server.exchange(&RawRequest::authorized(&server.token("alice"))).await;
    response.assert_refused(429, "too_many_connections_per_user");
    response.assert_retry_after();
    // Another user from the same IP is still welcome.
    let _other = server.session("bob").await;
}

#[tokio::test]
async fn handshake_burst_is_429_handshake_rate_limited() {
    // 1 per second sustained, burst of 2: the third immediate attempt is refused.
    let server = Setup::new().limits("handshakes_per_ip_per_sec = 1").start().await;
    let request = RawRequest::upgrade(PATH).header("Origin", ORIGIN);
    for _ in 0..2 {
        server.exchange(&request).await.assert_refused(401, "token_missing");
    }
    let response = server.exchange(&request).await;
    response.assert_refused(429, "handshake_rate_limited");
    response.assert_retry_after();
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_gives_each_client_its_own_quota() {
    let server =
        Setup::new().server("trusted_proxies = [\"127.0.0.1/32\"]").limits("connections_per_ip = 1").start().await;
    let token = server.token("alice");
    let _a = server.ws(&Connect::new().bearer(&token).header("x-forwarded-for", "198.51.100.1")).await;
    let _b = server.ws(&Connect::new().bearer(&token).header("x-forwarded-for", "198.51.100.2")).await;
    // The quota follows the forwarded address: a second session "from" .1 is refused.
    let request = RawRequest::authorized(&token).header("X-Forwarded-For", "198.51.100.1");
    server.exchange(&request).await.assert_refused(429, "too_many_connections_per_ip");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = Setup::new().limits("connections_per_ip = 1").start().await;
    let token = server.token("alice");
    let _a = server.ws(&Connect::new().bearer(&token).header("x-forwarded-for", "198.51.100.1")).await;
    let second = server.try_ws(&Connect::new().bearer(&token).header("x-forwarded-for", "198.51.100.2")).await;
    match second {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            assert!(body.contains("\"too_many_connections_per_ip\""), "{body}");
        }
        Err(other) => panic!("expected a 429 refusal, got {other}"),
        Ok(_) => panic!("a spoofed X-Forwarded-For must not buy a second per-IP slot"),
    }
}

// ---- configuration ----------------------------------------------------------------------------

#[test]
fn plain_ws_on_a_public_address_is_refused_by_config() {
    let text = |server: &str| {
        format!(
            "[server]\n{server}\n[auth]\nhmac_secret_file = \"/nonexistent/secret\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n"
        )
    };
    let err = Config::from_toml_str(&text("listen = \"0.0.0.0:0\"")).expect_err("ws:// on 0.0.0.0 without TLS");
    assert_eq!(err.code(), ErrorCode::ConfigInvalid);
    assert!(err.problems().iter().any(|p| p.path == "server.listen"), "{err}");
    // The explicit opt-out is accepted.
    Config::from_toml_str(&text("listen = \"0.0.0.0:0\"\nallow_insecure = true")).expect("allow_insecure opts out");
}
