//! The server API (`[api]`) over real HTTP on loopback: every endpoint, every documented refusal
//! with its status and code, and that a refused call changes nothing.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};
use support::{Setup, TempDir, WAIT, Ws, assert_frame, expect_close, recv_json, request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wsguard::{Config, ErrorCode, Server};

const KEY: &str = "test-api-key-0123456789abcdef";

/// An answer of the API.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// Asserts a refusal: the status and the registry's code, in the documented body shape.
    fn refused(&self, status: u16, code: ErrorCode) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["name"], code.name(), "{self:?}");
        assert_eq!(self.body["error"]["code"], code.number(), "{self:?}");
        assert!(self.body["error"]["message"].is_string(), "{self:?}");
        assert_eq!(self.header("content-type").as_deref(), Some("application/json"));
    }

    fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{self:?}");
        &self.body
    }
}

/// One raw HTTP/1.1 exchange on `stream` (the server closes after one request).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, raw: &[u8]) -> Answer {
    stream.write_all(raw).await.expect("send the request");
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes)).await.expect("an answer in time").expect("read");
    let text = String::from_utf8(bytes).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status: {head}"));
    let body = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("a JSON body") };
    Answer { status, head: head.to_string(), body }
}

fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: api\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// A running server with the API on and a client for it.
struct Api {
    server: support::TestServer,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Api {
    async fn start(api_lines: &str) -> Api {
        let dir = TempDir::new();
        let key_file = dir.write("api.key", format!("{KEY}\n").as_bytes());
        let server = Setup::new()
            .extra(&format!("[api]\nlisten = \"127.0.0.1:0\"\nkey_file = {}\n{api_lines}", toml_path(&key_file)))
            .start()
            .await;
        let addr = server.handle.api_addr().expect("the API is on");
        Api { server, addr, _dir: dir }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let tcp = TcpStream::connect(self.addr).await.expect("connect to the API");
        exchange(tcp, &raw(method, path, headers, body)).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        let auth = format!("Bearer {KEY}");
        self.send("POST", path, &[("Authorization", &auth), ("Content-Type", "application/json")], &body.to_string())
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        let auth = format!("Bearer {KEY}");
        self.send("GET", path, &[("Authorization", &auth)], "").await
    }
}

async fn metrics_text(api: &Api) -> String {
    api.server.admin("GET", "/metrics").await.body
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

async fn subscribed(ws: &mut Ws, channel: &str) {
    let reply = request(ws, &json!({"action": "subscribe", "id": 1, "channel": channel})).await;
    assert_frame(&reply, &json!({"type": "ack", "id": 1}));
}

/// The next frame is this publication (so nothing refused before it was delivered).
async fn next_message(ws: &mut Ws, channel: &str, payload: Value) {
    assert_frame(&recv_json(ws).await, &json!({"type": "message", "channel": channel, "payload": payload}));
}

#[tokio::test]
async fn publish_delivers_and_every_refusal_delivers_nothing() {
    let api = Api::start("").await;
    let mut ws = api.server.session("alice").await;
    subscribed(&mut ws, "room:1").await;
    let auth = format!("Bearer {KEY}");
    let json_type = ("Content-Type", "application/json");
    let good = json!({"channel": "room:1", "payload": {"n": 0}}).to_string();

    api.send("POST", "/api/v1/publish", &[json_type], &good).await.refused(401, ErrorCode::ApiUnauthorized);
    let no_key = api.send("POST", "/api/v1/publish", &[json_type], &good).await;
    assert!(no_key.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    api.send("POST", "/api/v1/publish", &[("Authorization", "Bearer wrong-key-wrong-key-00"), json_type], &good)
        .await
        .refused(401, ErrorCode::ApiUnauthorized);
    api.send("POST", "/api/v1/publish", &[("Authorization", &auth), json_type], "{not json")
        .await
        .refused(400, ErrorCode::ApiBadJson);
    api.post("/api/v1/publish", json!({"channel": "room:1", "payload": {}, "extra": 1}))
        .await
        .refused(400, ErrorCode::ApiBadJson);
    api.post("/api/v1/publish", json!({"channel": "room:1", "payload": [1]})).await.refused(400, ErrorCode::ApiBadJson);
    api.send("POST", "/api/v1/publish", &[("Authorization", &auth), ("Content-Type", "text/plain")], &good)
        .await
        .refused(415, ErrorCode::ApiUnsupportedMediaType);
    api.post("/api/v1/publish", json!({"channel": "room:*", "payload": {}}))
        .await
        .refused(400, ErrorCode::InvalidChannel);
    let deep = (0..100).fold(json!(1), |inner, _| json!({"a": inner}));
    api.post("/api/v1/publish", json!({"channel": "room:1", "payload": deep}))
        .await
        .refused(400, ErrorCode::PayloadTooDeep);

    let answer = api.post("/api/v1/publish", json!({"channel": "room:1", "payload": {"n": 1}})).await;
    assert_eq!(answer.ok()["delivered"], 1);
    next_message(&mut ws, "room:1", json!({"n": 1})).await;

    let metrics = api.server.scrape().await;
    assert!(!metrics_text(&api).await.contains(KEY), "the key never shows");
    assert_eq!(metrics.get(r#"wsguard_api_requests_total{operation="publish",result="ok"}"#), 1.0);
    assert_eq!(metrics.get(r#"wsguard_api_requests_total{operation="publish",result="api_unauthorized"}"#), 3.0);
    assert_eq!(metrics.get(r#"wsguard_api_requests_total{operation="publish",result="api_bad_json"}"#), 3.0);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let api = Api::start("max_body_bytes = 64").await;
    let mut ws = api.server.session("alice").await;
    subscribed(&mut ws, "room:1").await;
    let big = json!({"channel": "room:1", "payload": {"text": "x".repeat(100)}});
    api.post("/api/v1/publish", big).await.refused(413, ErrorCode::ApiBodyTooLarge);
    // A body larger than its declared length is cut at the cap too (chunked).
    let auth = format!("Bearer {KEY}");
    let body = json!({"channel": "room:1", "payload": {"text": "y".repeat(100)}}).to_string();
    let chunked = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: api\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let tcp = TcpStream::connect(api.addr).await.expect("connect");
    exchange(tcp, chunked.as_bytes()).await.refused(413, ErrorCode::ApiBodyTooLarge);
    assert_eq!(
        api.post("/api/v1/publish", json!({"channel": "room:1", "payload": {"n": 2}})).await.ok()["delivered"],
        1
    );
    next_message(&mut ws, "room:1", json!({"n": 2})).await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_404_and_405_after_authentication() {
    let api = Api::start("").await;
    api.get("/api/v1/nothing").await.refused(404, ErrorCode::ApiUnknownEndpoint);
    api.get("/").await.refused(404, ErrorCode::ApiUnknownEndpoint);
    let wrong = api.get("/api/v1/publish").await;
    wrong.refused(405, ErrorCode::ApiMethodNotAllowed);
    assert_eq!(wrong.header("allow").as_deref(), Some("POST"));
    let wrong = api.post("/api/v1/stats", json!({})).await;
    wrong.refused(405, ErrorCode::ApiMethodNotAllowed);
    assert_eq!(wrong.header("allow").as_deref(), Some("GET"));
    // Without a key, nothing is revealed about the endpoints.
    api.send("GET", "/api/v1/nothing", &[], "").await.refused(401, ErrorCode::ApiUnauthorized);
}

#[tokio::test]
async fn broadcast_is_all_or_nothing() {
    let api = Api::start("max_broadcast_channels = 3").await;
    let mut ws = api.server.session("alice").await;
    subscribed(&mut ws, "room:1").await;
    let mut other = api.server.session("bob").await;
    subscribed(&mut other, "room:2").await;
    api.post("/api/v1/broadcast", json!({"channels": ["room:1", "bad channel"], "payload": {"n": 0}}))
        .await
        .refused(400, ErrorCode::InvalidChannel);
    api.post("/api/v1/broadcast", json!({"channels": [], "payload": {}}))
        .await
        .refused(400, ErrorCode::ApiInvalidParameter);
    api.post("/api/v1/broadcast", json!({"channels": ["room:1", "room:1"], "payload": {}}))
        .await
        .refused(400, ErrorCode::ApiInvalidParameter);
    api.post("/api/v1/broadcast", json!({"channels": ["room:1", "room:2", "room:3", "room:4"], "payload": {}}))
        .await
        .refused(400, ErrorCode::ApiInvalidParameter);
    let answer =
        api.post("/api/v1/broadcast", json!({"channels": ["room:1", "room:2", "room:3"], "payload": {"n": 1}})).await;
    assert_eq!(answer.ok()["delivered"], 2);
    next_message(&mut ws, "room:1", json!({"n": 1})).await;
    next_message(&mut other, "room:2", json!({"n": 1})).await;
}

#[tokio::test]
async fn disconnect_and_revoke_close_sessions() {
    let api = Api::start("").await;
    api.post("/api/v1/disconnect", json!({"session_id": 1, "user": "alice"}))
        .await
        .refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/disconnect", json!({"session_id": 999_999})).await.refused(404, ErrorCode::UnknownSession);
    let mut alice = api.server.session("alice").await;
    support::ping(&mut alice, 1).await;
    assert_eq!(api.post("/api/v1/disconnect", json!({"user": "alice"})).await.ok()["disconnected"], 1);
    assert_eq!(expect_close(&mut alice).await, 4001);

    let mut bob = api.server.session("bob").await;
    support::ping(&mut bob, 1).await;
    api.post("/api/v1/revoke", json!({"sub": "bob", "jti": "x"})).await.refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/revoke", json!({})).await.refused(400, ErrorCode::InvalidArgument);
    support::ping(&mut bob, 2).await;
    assert_eq!(api.post("/api/v1/revoke", json!({"sub": "bob"})).await.ok()["changed"], true);
    assert_eq!(expect_close(&mut bob).await, 4501);
}

#[tokio::test]
async fn ban_list_and_unban() {
    let api = Api::start("").await;
    api.post("/api/v1/ban", json!({"ip": "not an ip", "duration_secs": 60}))
        .await
        .refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/ban", json!({"user": "mallory", "duration_secs": -1}))
        .await
        .refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/ban", json!({"user": "mallory"})).await.refused(400, ErrorCode::ApiBadJson);
    assert_eq!(api.get("/api/v1/bans").await.ok()["bans"], json!([]), "a refused ban bans nothing");

    assert_eq!(api.post("/api/v1/ban", json!({"user": "mallory", "duration_secs": 60})).await.ok()["changed"], true);
    assert_eq!(api.post("/api/v1/ban", json!({"ip": "192.0.2.7", "duration_secs": 60})).await.ok()["changed"], true);
    let bans = api.get("/api/v1/bans").await.ok()["bans"].clone();
    let bans = bans.as_array().expect("a list");
    assert_eq!(bans.len(), 2, "{bans:?}");
    assert!(bans.iter().any(|b| b["user"] == "mallory" && b["reason"] == "operator"));
    assert!(bans.iter().any(|b| b["ip"] == "192.0.2.7"));
    let refused = api.server.try_ws(&support::Connect::new().bearer(&api.server.token("mallory"))).await;
    assert!(refused.is_err(), "a banned user is refused at the handshake");

    assert_eq!(api.post("/api/v1/unban", json!({"user": "mallory"})).await.ok()["changed"], true);
    assert_eq!(api.post("/api/v1/unban", json!({"user": "mallory"})).await.ok()["changed"], false);
    assert_eq!(api.get("/api/v1/bans").await.ok()["bans"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn stats_and_reload_without_a_file() {
    let api = Api::start("").await;
    let _ws = api.server.session("alice").await;
    let stats = api.get("/api/v1/stats").await;
    assert_eq!(stats.ok()["sessions_active"], 1);
    assert_eq!(stats.body["broker_connected"], true);
    // An embedding host without a config file reloads through its own call.
    api.post("/api/v1/reload", json!({})).await.refused(409, ErrorCode::ApiReloadUnavailable);
    api.post("/api/v1/reload", json!({"config": "x"})).await.refused(400, ErrorCode::ApiBadJson);
}

#[tokio::test]
async fn reload_re_reads_the_config_file() {
    let dir = TempDir::new();
    let key_file = dir.write("api.key", KEY.as_bytes());
    let api_section = format!("[api]\nlisten = \"127.0.0.1:0\"\nkey_file = {}\n", toml_path(&key_file));
    let (text, _) = Setup::new().extra(&api_section).toml(&dir);
    let file = dir.write("wsguard.toml", text.as_bytes());
    let config = Config::from_file(&file).expect("valid");
    let server = Server::builder(config).config_file(&file).bind().await.expect("bind");
    let handle = server.handle();
    let addr = server.api_addr().expect("api on");
    tokio::spawn(server.serve());
    let post = |body: Value| {
        let raw = raw(
            "POST",
            "/api/v1/reload",
            &[("Authorization", &format!("Bearer {KEY}")), ("Content-Type", "application/json")],
            &body.to_string(),
        );
        async move { exchange(TcpStream::connect(addr).await.expect("connect"), &raw).await }
    };
    assert_eq!(post(json!({})).await.ok()["changed"], true);
    // A broken file is refused with every problem; the running configuration stays.
    std::fs::write(&file, text.replace("[limits]\n", "[limits]\nmax_message_bytes = -1\n")).expect("write");
    let refused = post(json!({})).await;
    refused.refused(422, ErrorCode::ConfigInvalid);
    assert!(
        refused.body["error"]["problems"][0]["path"].as_str().is_some_and(|p| p.starts_with("limits")),
        "{refused:?}"
    );
    std::fs::write(&file, text.replace("listen = \"127.0.0.1:0\"\nkey_file", "listen = \"127.0.0.1:1\"\nkey_file"))
        .expect("write");
    post(json!({})).await.refused(422, ErrorCode::ConfigInvalid);
    handle.shutdown();
}

#[tokio::test]
async fn the_rate_per_caller_answers_429_with_retry_after() {
    let api = Api::start("requests_per_sec = 0.01\nburst = 2").await;
    api.get("/api/v1/stats").await.ok();
    api.get("/api/v1/stats").await.ok();
    let limited = api.get("/api/v1/stats").await;
    limited.refused(429, ErrorCode::ApiRateLimited);
    let retry: u64 = limited.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!(retry >= 1);
    let mut ws = api.server.session("alice").await;
    subscribed(&mut ws, "room:1").await;
    api.post("/api/v1/publish", json!({"channel": "room:1", "payload": {"n": 0}}))
        .await
        .refused(429, ErrorCode::ApiRateLimited);
    api.server.handle.publish("room:1", &json!({"n": 1})).expect("host publish");
    next_message(&mut ws, "room:1", json!({"n": 1})).await;
}

fn bind_problem(api_section: &str) -> wsguard::Error {
    let dir = TempDir::new();
    let key_file = dir.write("api.key", KEY.as_bytes());
    let section = api_section.replace("KEY_FILE", &toml_path(&key_file));
    let (text, _) = Setup::new().extra(&section).toml(&dir);
    match Config::from_toml_str(&text) {
        Err(e) => wsguard::Error::Config(e),
        Ok(config) => {
            wsguard::check_config(&config).map(|()| panic!("accepted: {text}")).unwrap_or_else(wsguard::Error::Config)
        }
    }
}

#[tokio::test]
async fn unsafe_listeners_are_refused_at_start() {
    let plain = bind_problem("[api]\nlisten = \"0.0.0.0:0\"\nkey_file = KEY_FILE\n");
    assert_eq!(plain.code(), ErrorCode::ConfigInvalid);
    assert!(plain.to_string().contains("api.listen"), "{plain}");
    let open = bind_problem("[api]\nlisten = \"127.0.0.1:0\"\n");
    assert!(open.to_string().contains("authentication"), "{open}");
    let short = {
        let dir = TempDir::new();
        let key_file = dir.write("short.key", b"short");
        let (text, _) = Setup::new()
            .extra(&format!("[api]\nlisten = \"127.0.0.1:0\"\nkey_file = {}\n", toml_path(&key_file)))
            .toml(&dir);
        let config = Config::from_toml_str(&text).expect("valid shape");
        Server::bind(config).await.err().expect("a short key is refused")
    };
    assert_eq!(short.code(), ErrorCode::ConfigSecretMissing);
}

/// A CA, a server certificate for `localhost` and a client certificate, all signed by the CA.
struct Pki {
    ca_file: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    ca_der: CertificateDer<'static>,
    client: (Vec<CertificateDer<'static>>, Vec<u8>),
}

fn pki(dir: &TempDir) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "ops-robot");
    let client = client_params.signed_by(&client_key, &issuer).expect("client cert");
    Pki {
        ca_file: dir.write("ca.pem", ca.pem().as_bytes()),
        server_cert: dir.write("server.pem", server.pem().as_bytes()),
        server_key: dir.write("server.key", server_key.serialize_pem().as_bytes()),
        ca_der: ca.der().clone(),
        client: (vec![client.der().clone()], client_key.serialize_der()),
    }
}

async fn tls_exchange(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    client: Option<&(Vec<CertificateDer<'static>>, Vec<u8>)>,
    raw_request: &[u8],
) -> Option<Answer> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("trust the CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
    // TLS 1.3: a refused client certificate shows on the first read, not in the handshake.
    tls.write_all(raw_request).await.ok()?;
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut bytes)).await.expect("in time").ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer { status, head: head.to_string(), body: serde_json::from_str(body).unwrap_or(Value::Null) })
}

#[tokio::test]
async fn mutual_tls_names_the_caller_by_its_certificate() {
    let dir = TempDir::new();
    let pki = pki(&dir);
    let events = Arc::new(Recorder::default());
    let server = Setup::new()
        .hooks(Arc::clone(&events) as Arc<dyn wsguard::Hooks>)
        .extra(&format!(
            "[api]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = {}\ntls_key_file = {}\nclient_ca_file = {}\n",
            toml_path(&pki.server_cert),
            toml_path(&pki.server_key),
            toml_path(&pki.ca_file)
        ))
        .start()
        .await;
    let addr = server.handle.api_addr().expect("api on");
    let stats = raw("GET", "/api/v1/stats", &[], "");
    let accepted = tls_exchange(addr, &pki.ca_der, Some(&pki.client), &stats).await.expect("an answer");
    assert_eq!(accepted.ok()["sessions_active"], 0);
    assert!(tls_exchange(addr, &pki.ca_der, None, &stats).await.is_none(), "no certificate, no answer");
    let metrics = server.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_api_requests_total{operation="stats",result="ok"}"#), 1.0);
    // Plain HTTP to a TLS listener gets no API answer either.
    let plain = TcpStream::connect(addr).await.expect("connect");
    let mut plain = plain;
    plain.write_all(&stats).await.expect("write");
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut bytes)).await.expect("closed in time");
    assert!(!String::from_utf8_lossy(&bytes).contains("sessions_active"));
    // The audit trail names the caller by its certificate's subject.
    support::eventually("the api_request event", || {
        events.0.lock().expect("lock").iter().any(|e| {
            matches!(e, wsguard::Event::ApiRequest { caller, operation: "stats", result: "ok", status: 200, .. }
                if caller == "cert:CN=ops-robot")
        })
    })
    .await;
}

/// Records every event.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<wsguard::Event>>);

impl wsguard::Hooks for Recorder {
    fn on_event(&self, event: &wsguard::Event) -> wsguard::hooks::HookFuture<()> {
        self.0.lock().expect("lock").push(event.clone());
        Box::pin(std::future::ready(()))
    }
}

/// This node's one session of `user`: its id and the node's name, from the listing.
async fn only_session(api: &Api, user: &str) -> (u64, String) {
    let page = api.get(&format!("/api/v1/sessions?user={user}")).await.ok().clone();
    let sessions = page["sessions"].as_array().expect("a list");
    assert_eq!(sessions.len(), 1, "{page}");
    assert_eq!(sessions[0]["user"], user);
    assert_eq!(sessions[0]["client_ip"], "127.0.0.1");
    (sessions[0]["id"].as_u64().expect("an id"), page["node"].as_str().expect("a node").to_string())
}

#[tokio::test]
async fn send_reaches_a_user_or_a_session_and_refusals_send_nothing() {
    let api = Api::start("").await;
    let mut alice = api.server.session("alice").await;
    support::ping(&mut alice, 1).await;
    let (id, node) = only_session(&api, "alice").await;

    api.post("/api/v1/send", json!({"payload": {}})).await.refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/send", json!({"user": "alice", "node": node, "payload": {}}))
        .await
        .refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/send", json!({"session_id": id, "node": "elsewhere", "payload": {}}))
        .await
        .refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/send", json!({"session_id": 999_999, "payload": {}}))
        .await
        .refused(404, ErrorCode::UnknownSession);
    api.post("/api/v1/send", json!({"user": "alice", "payload": [1]})).await.refused(400, ErrorCode::ApiBadJson);
    let big = json!({"user": "alice", "payload": {"text": "x".repeat(70 * 1024)}});
    api.post("/api/v1/send", big).await.refused(413, ErrorCode::PayloadTooLarge);
    let deep = (0..100).fold(json!(1), |inner, _| json!({"a": inner}));
    api.post("/api/v1/send", json!({"user": "alice", "payload": deep})).await.refused(400, ErrorCode::PayloadTooDeep);
    support::ping(&mut alice, 2).await; // nothing was pushed before the pong

    let applied = api.post("/api/v1/send", json!({"user": "alice", "payload": {"n": 1}})).await;
    assert_eq!(applied.ok()["changed"], 1);
    assert_eq!(applied.body["node"], node.as_str());
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "push", "payload": {"n": 1}}));
    let applied = api.post("/api/v1/send", json!({"session_id": id, "node": node, "payload": {"n": 2}})).await;
    assert_eq!(applied.ok()["matched"], 1);
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "push", "payload": {"n": 2}}));
}

#[tokio::test]
async fn server_side_subscriptions_and_listings() {
    let api = Api::start("").await;
    let mut alice = api.server.session("alice").await;
    support::ping(&mut alice, 1).await;
    let (id, _) = only_session(&api, "alice").await;

    api.post("/api/v1/subscribe", json!({"user": "alice", "channel": "room:*"}))
        .await
        .refused(400, ErrorCode::InvalidChannel);
    api.post("/api/v1/subscribe", json!({"session_id": 999_999, "channel": "room:7"}))
        .await
        .refused(404, ErrorCode::UnknownSession);
    api.post("/api/v1/subscribe", json!({"user": "alice"})).await.refused(400, ErrorCode::ApiBadJson);
    assert_eq!(api.get("/api/v1/channels").await.ok()["channels"], json!([]), "a refused subscribe subscribes nothing");

    assert_eq!(api.post("/api/v1/subscribe", json!({"user": "alice", "channel": "room:7"})).await.ok()["changed"], 1);
    assert_frame(&recv_json(&mut alice).await, &json!({"type": "subscribed", "channel": "room:7", "by": "server"}));
    let listed = api.get("/api/v1/channels?pattern=room:{n}&limit=10").await;
    assert_eq!(listed.ok()["channels"], json!([{"channel": "room:7", "subscribers": 1}]));
    assert!(listed.body["node"].is_string());
    assert_eq!(listed.body["next_cursor"], Value::Null);
    assert_eq!(api.get("/api/v1/channels?pattern=other:{n}").await.ok()["channels"], json!([]));
    let sessions = api.get("/api/v1/sessions?limit=1").await;
    assert_eq!(sessions.ok()["sessions"][0]["subscriptions"], json!(["room:7"]));
    assert_eq!(sessions.body["next_cursor"], id, "a full page names its cursor");
    assert_eq!(api.get(&format!("/api/v1/sessions?cursor={id}")).await.ok()["sessions"], json!([]));
    assert_eq!(
        api.post("/api/v1/publish", json!({"channel": "room:7", "payload": {"n": 1}})).await.ok()["delivered"],
        1
    );
    next_message(&mut alice, "room:7", json!({"n": 1})).await;

    for bad in ["/api/v1/sessions?limit=0", "/api/v1/sessions?limit=1001", "/api/v1/channels?pattern=room:{"] {
        api.get(bad).await.refused(400, ErrorCode::InvalidArgument);
    }
    for bad in ["/api/v1/sessions?limit=ten", "/api/v1/sessions?cursor=1&cursor=2", "/api/v1/channels?color=red"] {
        api.get(bad).await.refused(400, ErrorCode::ApiInvalidParameter);
    }
    api.post("/api/v1/sessions", json!({})).await.refused(405, ErrorCode::ApiMethodNotAllowed);

    let applied = api.post("/api/v1/unsubscribe", json!({"session_id": id, "channel": "room:7"})).await;
    assert_eq!(applied.ok()["changed"], 1);
    assert_frame(
        &recv_json(&mut alice).await,
        &json!({"type": "unsubscribed", "channel": "room:7", "reason": "server"}),
    );
    assert_eq!(api.get("/api/v1/channels").await.ok()["channels"], json!([]));
}

#[tokio::test]
async fn disconnect_with_a_code_and_a_reason() {
    let api = Api::start("").await;
    let mut alice = api.server.session("alice").await;
    support::ping(&mut alice, 1).await;
    let (id, node) = only_session(&api, "alice").await;
    for code in [1000, 4000, 4501, 5000] {
        api.post("/api/v1/disconnect", json!({"user": "alice", "code": code}))
            .await
            .refused(400, ErrorCode::InvalidArgument);
    }
    api.post("/api/v1/disconnect", json!({"user": "alice", "code": 4321, "reason": "x".repeat(124)}))
        .await
        .refused(400, ErrorCode::InvalidArgument);
    api.post("/api/v1/disconnect", json!({"user": "alice", "code": 70000})).await.refused(400, ErrorCode::ApiBadJson);
    support::ping(&mut alice, 2).await; // still open
    let answer =
        api.post("/api/v1/disconnect", json!({"session_id": id, "node": node, "code": 4321, "reason": "moved"})).await;
    assert_eq!(answer.ok()["disconnected"], 1);
    assert_eq!(answer.body["node"], node.as_str());
    assert_eq!(expect_close(&mut alice).await, 4321);
}

const READ_RULES: &str = r#"
[[channels]]
pattern = "feed:{n}"
subscribe = {}
history_size = 100
[[channels]]
pattern = "chat:{n}"
subscribe = {}
presence = true
"#;

#[tokio::test]
async fn history_reads_and_their_refusals() {
    let api = Api::start(READ_RULES).await;
    let empty = api.get("/api/v1/history?channel=feed:1").await;
    assert_eq!(empty.ok()["publications"], json!([]));
    assert_eq!(empty.body["offset"], 0);
    let epoch = empty.body["epoch"].as_str().expect("an epoch").to_string();
    for n in 1..=3 {
        api.post("/api/v1/publish", json!({"channel": "feed:1", "payload": {"n": n}})).await.ok();
    }
    let page = api.get("/api/v1/history?channel=feed:1&limit=2").await;
    assert_eq!(
        page.ok()["publications"],
        json!([{"offset": 1, "payload": {"n": 1}}, {"offset": 2, "payload": {"n": 2}}])
    );
    assert_eq!(page.body["offset"], 3);
    let newest = api.get("/api/v1/history?channel=feed:1&limit=1&newest_first=true").await;
    assert_eq!(newest.ok()["publications"], json!([{"offset": 3, "payload": {"n": 3}}]));
    let after = api.get(&format!("/api/v1/history?channel=feed:1&since_offset=2&since_epoch={epoch}")).await;
    assert_eq!(after.ok()["publications"], json!([{"offset": 3, "payload": {"n": 3}}]));

    api.get("/api/v1/history").await.refused(400, ErrorCode::ApiInvalidParameter);
    api.get("/api/v1/history?channel=feed:1&since_offset=1").await.refused(400, ErrorCode::ApiInvalidParameter);
    api.get("/api/v1/history?channel=feed:1&newest_first=maybe").await.refused(400, ErrorCode::ApiInvalidParameter);
    api.get("/api/v1/history?channel=feed:*").await.refused(400, ErrorCode::InvalidChannel);
    api.get("/api/v1/history?channel=room:1").await.refused(404, ErrorCode::HistoryNotKept);
    api.get("/api/v1/history?channel=feed:1&limit=0").await.refused(400, ErrorCode::HistoryLimitInvalid);
    api.get(&format!("/api/v1/history?channel=feed:1&since_offset=99&since_epoch={epoch}"))
        .await
        .refused(400, ErrorCode::HistoryOffsetAhead);
    api.get("/api/v1/history?channel=feed:1&since_offset=1&since_epoch=stale")
        .await
        .refused(409, ErrorCode::HistoryEpochChanged);
    let metrics = api.server.scrape().await;
    assert_eq!(metrics.get(r#"wsguard_api_requests_total{operation="history",result="ok"}"#), 4.0);
}

#[tokio::test]
async fn presence_reads_and_their_refusals() {
    let api = Api::start(READ_RULES).await;
    let mut alice = api.server.session("alice").await;
    subscribed(&mut alice, "chat:1").await;
    let page = api.get("/api/v1/presence?channel=chat:1").await;
    assert_eq!(page.ok()["members"], json!([{"user": "alice", "sessions": 1}]));
    assert_eq!(page.body["next"], Value::Null);
    let counts = api.get("/api/v1/presence_stats?channel=chat:1").await;
    assert_eq!(counts.ok()["users"], 1);
    assert_eq!(counts.body["clients"], 1);

    api.get("/api/v1/presence?channel=room:1").await.refused(404, ErrorCode::PresenceNotTracked);
    api.get("/api/v1/presence_stats?channel=room:1").await.refused(404, ErrorCode::PresenceNotTracked);
    api.get("/api/v1/presence?channel=chat:1&limit=0").await.refused(400, ErrorCode::InvalidArgument);
    api.get("/api/v1/presence?channel=chat:1&limit=x").await.refused(400, ErrorCode::ApiInvalidParameter);
    api.get("/api/v1/presence_stats").await.refused(400, ErrorCode::ApiInvalidParameter);
    api.get("/api/v1/presence_stats?channel=chat:1&after=a").await.refused(400, ErrorCode::ApiInvalidParameter);
    api.get("/api/v1/presence_stats?channel=a%20b").await.refused(400, ErrorCode::InvalidChannel);

    let stats = api.get("/api/v1/stats").await;
    assert!(stats.ok()["node"].is_string() && stats.body["sessions_active"] == 1, "{:?}", stats.body);
    assert_eq!(api.get("/api/v1/bans").await.ok()["node"], stats.body["node"]);
}
