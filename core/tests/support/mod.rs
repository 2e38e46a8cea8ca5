//! Shared helpers for the integration tests: a real server on `127.0.0.1:0` built from TOML text,
//! token minting, a raw HTTP/1.1 client (for refusals, whose exact status and body we assert) and
//! a WebSocket client (for sessions), over plain TCP or rustls.
//!
//! Every network wait is bounded by [`WAIT`], so a broken server fails a test instead of hanging
//! the suite. Nothing here reads or writes environment variables: tests run in parallel threads.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod brokers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsguard::auth::{SigningKey, TokenRequest, mint_token};
use wsguard::{Config, Hooks, Server, ServerHandle};

/// Upper bound on every network wait.
pub const WAIT: Duration = Duration::from_secs(5);
/// The server's HMAC secret (written to a file named by `auth.hmac_secret_file`).
pub const SECRET: &[u8] = b"wsguard-integration-tests-hmac-secret-0123456789";
/// A secret of valid length that the server does not know.
pub const OTHER_SECRET: &[u8] = b"some-other-service-hmac-secret-of-48-bytes-012345";
/// `auth.issuer`.
pub const ISSUER: &str = "https://issuer.test";
/// `auth.audience`.
pub const AUDIENCE: &str = "wsguard-tests";
/// The origin in the default allowlist; every client helper sends it unless told otherwise.
pub const ORIGIN: &str = "https://app.example.com";
/// `server.path` (the default).
pub const PATH: &str = "/ws";
/// Token lifetime for ordinary sessions (under the default `max_token_lifetime_secs` of 900).
pub const TOKEN_TTL_SECS: u64 = 300;

/// A WebSocket client over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;
/// A WebSocket client over rustls.
pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `wsguard-tests-<pid>-<nanos>-<n>` under `std::env::temp_dir()`.
    pub fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let name = format!("wsguard-tests-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create a temp dir for test fixtures");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write a test fixture file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path as a TOML basic string (Debug escaping agrees with TOML for ordinary paths).
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The test configuration, section by section: each entry is one `key = value` TOML line added to
/// the defaults (`listen = "127.0.0.1:0"`, the HMAC secret file, issuer, audience, an allowlist
/// holding [`ORIGIN`], and one channel rule letting any authenticated session use `room:{n}`).
#[derive(Debug, Clone, Default)]
pub struct Setup {
    server: Vec<String>,
    origins: Option<Vec<String>>,
    auth: Vec<String>,
    limits: Vec<String>,
    has_tls: bool,
    extra: Vec<String>,
    hooks: Option<HostHooks>,
}

/// The host's hooks for [`Setup::hooks`] (a wrapper so `Setup` stays `Debug`).
#[derive(Clone)]
struct HostHooks(Arc<dyn Hooks>);

impl std::fmt::Debug for HostHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostHooks(..)")
    }
}

impl Setup {
    /// The defaults.
    pub fn new() -> Setup {
        Setup::default()
    }

    /// Adds a `[server]` line.
    pub fn server(mut self, line: &str) -> Setup {
        self.server.push(line.to_string());
        self
    }

    /// Adds an `[origins]` line; the first call replaces the default allowlist.
    pub fn origins(mut self, line: &str) -> Setup {
        self.origins.get_or_insert_with(Vec::new).push(line.to_string());
        self
    }

    /// Adds an `[auth]` line.
    pub fn auth(mut self, line: &str) -> Setup {
        self.auth.push(line.to_string());
        self
    }

    /// Adds a `[limits]` line.
    pub fn limits(mut self, line: &str) -> Setup {
        self.limits.push(line.to_string());
        self
    }

    /// Appends raw TOML after the generated sections (after the default `room:{n}` rule), for
    /// tables such as `[protocol]`, `[hooks]`, further `[[channels]]` rules or `[[rpc]]` methods.
    pub fn extra(mut self, toml: &str) -> Setup {
        self.extra.push(toml.to_string());
        self
    }

    /// Starts the server with these host hooks instead of `NoHooks`.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Setup {
        self.hooks = Some(HostHooks(hooks));
        self
    }

    /// Serves `wss://` with a fresh rcgen certificate for `localhost`.
    pub fn tls(mut self) -> Setup {
        self.has_tls = true;
        self
    }

    /// The TOML text, with the secret file (and certificate files) written into `dir`.
    pub fn toml(&self, dir: &TempDir) -> (String, Option<CertificateDer<'static>>) {
        let secret = dir.write("hmac.secret", SECRET);
        let default_origins = vec![format!("allow = [\"{ORIGIN}\"]")];
        let origins = self.origins.as_ref().unwrap_or(&default_origins);
        let mut text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{}\n", self.server.join("\n"));
        text.push_str(&format!("[origins]\n{}\n", origins.join("\n")));
        text.push_str(&format!(
            "[auth]\nhmac_secret_file = {}\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{}\n",
            toml_path(&secret),
            self.auth.join("\n")
        ));
        text.push_str(&format!("[limits]\n{}\n", self.limits.join("\n")));
        // Every test server gets its own ephemeral admin port (the default 9090 would collide).
        text.push_str("[observability]\nmetrics_listen = \"127.0.0.1:0\"\n");
        let mut cert = None;
        if self.has_tls {
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("generate a test certificate");
            let cert_file = dir.write("cert.pem", generated.cert.pem().as_bytes());
            let key_file = dir.write("key.pem", generated.signing_key.serialize_pem().as_bytes());
            text.push_str(&format!(
                "[tls]\ncert_file = {}\nkey_file = {}\n",
                toml_path(&cert_file),
                toml_path(&key_file)
            ));
            cert = Some(generated.cert.der().clone());
        }
        // Channel policy is default-deny: every authenticated session may use `room:*`, and no
        // other channel.
        text.push_str("[[channels]]\npattern = \"room:{n}\"\nsubscribe = {}\npublish = {}\n");
        for extra in &self.extra {
            text.push_str(extra);
            text.push('\n');
        }
        (text, cert)
    }

    /// Parses the config, binds on an ephemeral loopback port and spawns `serve`.
    pub async fn start(self) -> TestServer {
        let dir = TempDir::new();
        let (text, cert) = self.toml(&dir);
        let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
        let mut builder = Server::builder(config.clone());
        if let Some(HostHooks(hooks)) = self.hooks {
            builder = builder.hooks(hooks);
        }
        let server = builder.bind().await.unwrap_or_else(|e| panic!("bind failed: {e}"));
        let handle = server.handle();
        let addr = server.local_addr();
        let task = tokio::spawn(server.serve());
        TestServer { addr, handle, config, cert, task, _dir: dir }
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The host's handle.
    pub handle: ServerHandle,
    /// The parsed configuration.
    pub config: Config,
    /// The certificate clients must trust (TLS setups only).
    pub cert: Option<CertificateDer<'static>>,
    /// The `serve` task.
    pub task: JoinHandle<Result<(), wsguard::Error>>,
    _dir: TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

impl TestServer {
    /// A token for `subject`, minted by the core from the server's own `[auth]` section.
    pub fn token(&self, subject: &str) -> String {
        self.token_with_ttl(subject, TOKEN_TTL_SECS)
    }

    /// A token for `subject` valid for `ttl_secs`.
    pub fn token_with_ttl(&self, subject: &str, ttl_secs: u64) -> String {
        let request = TokenRequest { subject: subject.to_string(), ttl_secs, ..TokenRequest::default() };
        mint_token(&self.config.auth, &SigningKey::HmacSecret(SECRET.to_vec()), &request).expect("mint a test token")
    }

    /// A token minted from `request` (subject, roles, scopes, extra claims such as `tenant` or
    /// `jti`, lifetime) with the server's secret.
    pub fn mint(&self, request: &TokenRequest) -> String {
        mint_token(&self.config.auth, &SigningKey::HmacSecret(SECRET.to_vec()), request).expect("mint a test token")
    }

    /// The host's stats snapshot, read on a detached thread and bounded by [`WAIT`], so a lock
    /// that never comes free fails the test instead of hanging the suite (a `spawn_blocking` task
    /// would hang it anyway: dropping the runtime waits for blocking tasks).
    pub async fn stats(&self) -> wsguard::StatsSnapshot {
        let handle = self.handle.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(handle.stats());
        });
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("ServerHandle::stats answers in time (a deadlock otherwise)")
            .expect("ServerHandle::stats did not panic")
    }

    /// Sends a raw request and reads the response.
    pub async fn exchange(&self, request: &RawRequest) -> HttpResponse {
        let (_stream, response) = self.exchange_keep(request).await;
        response
    }

    /// Sends a raw request, reads the response and returns the still-open stream with it.
    pub async fn exchange_keep(&self, request: &RawRequest) -> (TcpStream, HttpResponse) {
        let mut stream = self.tcp().await;
        write_all(&mut stream, &request.to_bytes()).await;
        let response = read_response(&mut stream).await;
        (stream, response)
    }

    /// A fresh TCP connection to the server.
    pub async fn tcp(&self) -> TcpStream {
        tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")
            .expect("connect to the test server")
    }

    /// A WebSocket handshake over plain TCP; the error carries the refusal (`WsError::Http`).
    pub async fn try_ws(&self, connect: &Connect) -> Result<(Ws, Response), WsError> {
        let stream = self.tcp().await;
        handshake(stream, &format!("ws://{}{}", self.addr, connect.target), connect).await
    }

    /// A WebSocket session over plain TCP that must be accepted.
    pub async fn ws(&self, connect: &Connect) -> Ws {
        match self.try_ws(connect).await {
            Ok((ws, _)) => ws,
            Err(e) => panic!("handshake refused: {}", describe(&e)),
        }
    }

    /// A session for `subject` with a fresh token in the `Authorization` header.
    pub async fn session(&self, subject: &str) -> Ws {
        self.ws(&Connect::new().bearer(&self.token(subject))).await
    }

    /// A WebSocket handshake over TLS, trusting only the server's rcgen certificate.
    pub async fn try_wss(&self, connect: &Connect) -> Result<(Wss, Response), WsError> {
        let connector = tls_connector(self.cert.as_ref().expect("the server was started with Setup::tls()"));
        let name = ServerName::try_from("localhost").expect("server name");
        let tcp = self.tcp().await;
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake in time")
            .expect("TLS handshake with the test server");
        handshake(tls, &format!("wss://localhost:{}{}", self.addr.port(), connect.target), connect).await
    }
}

impl TestServer {
    /// The admin listener's address (`/metrics`, `/healthz`, `/readyz`); [`Setup`] always enables
    /// it on an ephemeral loopback port.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.handle.metrics_addr().expect("Setup enables the admin listener")
    }

    /// One request to the admin listener over a fresh TCP connection.
    pub async fn admin(&self, method: &str, path: &str) -> HttpResponse {
        admin_request(self.metrics_addr(), method, path).await
    }

    /// `GET /metrics`, parsed.
    pub async fn scrape(&self) -> Metrics {
        let response = self.admin("GET", "/metrics").await;
        assert_eq!(response.status, 200, "{response:?}");
        Metrics::parse(&response.body)
    }

    /// Writes a fresh rcgen certificate and key for `localhost` into the server's fixture
    /// directory and returns a copy of the server's config naming them (for
    /// `ServerHandle::reload`), with the certificate clients must then trust.
    pub fn config_with_new_certificate(&self) -> (Config, CertificateDer<'static>) {
        let (cert_file, key_file, cert) = write_certificate(&self._dir);
        let mut config = self.config.clone();
        let tls = config.tls.as_mut().expect("the server was started with Setup::tls()");
        tls.cert_file = cert_file;
        tls.key_file = key_file;
        (config, cert)
    }

    /// A path inside the server's fixture directory that does not exist.
    pub fn missing_file(&self, name: &str) -> PathBuf {
        let path = self._dir.path().join(name);
        assert!(!path.exists(), "{} exists", path.display());
        path
    }

    /// A WebSocket handshake over TLS trusting only `cert` (not necessarily the one the server
    /// started with). A failed TLS handshake comes back as `WsError::Io`.
    pub async fn try_wss_trusting(
        &self,
        cert: &CertificateDer<'static>,
        connect: &Connect,
    ) -> Result<(Wss, Response), WsError> {
        let connector = tls_connector(cert);
        let name = ServerName::try_from("localhost").expect("server name");
        let tcp = self.tcp().await;
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("TLS handshake in time")?;
        handshake(tls, &format!("wss://localhost:{}{}", self.addr.port(), connect.target), connect).await
    }
}

/// Writes a fresh rcgen certificate and key for `localhost` into `dir` under new names; returns
/// both paths and the certificate.
pub fn write_certificate(dir: &TempDir) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("generate a test certificate");
    let cert_file = dir.write(&format!("cert-{n}.pem"), generated.cert.pem().as_bytes());
    let key_file = dir.write(&format!("key-{n}.pem"), generated.signing_key.serialize_pem().as_bytes());
    (cert_file, key_file, generated.cert.der().clone())
}

/// One request (`method path`, no body) to an admin listener over a fresh TCP connection, read to
/// the end of its `Content-Length` body.
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect to the admin listener in time")
        .expect("connect to the admin listener");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    write_all(&mut stream, request.as_bytes()).await;
    read_response(&mut stream).await
}

/// A parsed Prometheus text exposition: each sample's series (name and labels, exactly as
/// exported, e.g. `wsguard_handshakes_total{result="rejected",code="not_found"}`) and its value.
#[derive(Debug, Clone, Default)]
pub struct Metrics(std::collections::HashMap<String, f64>);

impl Metrics {
    /// Parses every sample line (comments and `# EOF` skipped).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) =
                    line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}\n{text}"));
                let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad sample value in {line:?}: {e}"));
                (series.to_string(), value)
            })
            .collect();
        Metrics(samples)
    }

    /// A sample's value, 0 when the series was never exported (labelled counters appear on first
    /// use).
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// True when the series was exported.
    pub fn has(&self, series: &str) -> bool {
        self.0.contains_key(series)
    }
}

/// Client-side options of a WebSocket handshake.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Path and query.
    pub target: String,
    /// `Origin` (default [`ORIGIN`]).
    pub origin: Option<String>,
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// `Sec-WebSocket-Protocol`.
    pub protocols: Option<String>,
    /// Further headers (lowercase names).
    pub headers: Vec<(&'static str, String)>,
}

impl Default for Connect {
    fn default() -> Self {
        Connect {
            target: PATH.to_string(),
            origin: Some(ORIGIN.to_string()),
            bearer: None,
            protocols: None,
            headers: Vec::new(),
        }
    }
}

impl Connect {
    /// Path [`PATH`], origin [`ORIGIN`], no token.
    pub fn new() -> Connect {
        Connect::default()
    }

    /// Sends the token in the `Authorization` header.
    pub fn bearer(mut self, token: &str) -> Connect {
        self.bearer = Some(token.to_string());
        self
    }

    /// Sets (or with None, removes) the `Origin` header.
    pub fn origin(mut self, origin: Option<&str>) -> Connect {
        self.origin = origin.map(str::to_string);
        self
    }

    /// Offers these subprotocols (comma-separated).
    pub fn protocols(mut self, protocols: &str) -> Connect {
        self.protocols = Some(protocols.to_string());
        self
    }

    /// Requests another path and query.
    pub fn target(mut self, target: &str) -> Connect {
        self.target = target.to_string();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: &str) -> Connect {
        self.headers.push((name, value.to_string()));
        self
    }
}
/// A WebSocket handshake over any stream (the client side of `try_ws`).
pub async fn handshake<S>(stream: S, url: &str, connect: &Connect) -> Result<(WebSocketStream<S>, Response), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request()?;
    let value = |v: &str| HeaderValue::from_str(v).expect("a valid header value");
    let headers = request.headers_mut();
    if let Some(origin) = &connect.origin {
        headers.insert("origin", value(origin));
    }
    if let Some(token) = &connect.bearer {
        headers.insert("authorization", value(&format!("Bearer {token}")));
    }
    if let Some(protocols) = &connect.protocols {
        headers.insert("sec-websocket-protocol", value(protocols));
    }
    for (name, v) in &connect.headers {
        headers.append(*name, value(v));
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("WebSocket handshake in time")
}

/// A readable account of a handshake error (the refusal's status and body when it is one).
pub fn describe(error: &WsError) -> String {
    match error {
        WsError::Http(response) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            format!("HTTP {} {body}", response.status())
        }
        other => other.to_string(),
    }
}

/// Sends one JSON text frame.
pub async fn send_json<S>(ws: &mut WebSocketStream<S>, value: &Value)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send(ws, Message::text(value.to_string())).await;
}

/// Sends one message.
pub async fn send<S>(ws: &mut WebSocketStream<S>, message: Message)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, ws.send(message)).await.expect("send in time").expect("send a frame");
}

/// Receives the next text frame as JSON (control frames are skipped).
pub async fn recv_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("the server sends JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Sends a request frame and returns the next frame received.
pub async fn request<S>(ws: &mut WebSocketStream<S>, value: &Value) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_json(ws, value).await;
    recv_json(ws).await
}

/// Asserts that `frame` is an object holding every member of `expected` with the same value
/// (members the protocol may add later, such as sequence numbers, are not asserted).
pub fn assert_frame(frame: &Value, expected: &Value) {
    let expected = expected.as_object().expect("expected frame is an object");
    let actual = frame.as_object().unwrap_or_else(|| panic!("frame is not an object: {frame}"));
    for (key, value) in expected {
        assert_eq!(actual.get(key), Some(value), "member {key:?} of {frame}");
    }
}

/// A ping round trip: proves the session task is running (it registers itself and counts the
/// session only after the 101 went out, so the host side may lag the client by a moment).
pub async fn ping<S>(ws: &mut WebSocketStream<S>, id: u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = request(ws, &json!({"action": "ping", "id": id})).await;
    assert_frame(&reply, &json!({"type": "pong", "id": id}));
}

/// Reads until the server's close frame and returns its code, then drives the close handshake to
/// the end of the stream. Text frames before the close are skipped.
pub async fn expect_close<S>(ws: &mut WebSocketStream<S>) -> u16
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let code = loop {
        let next = tokio::time::timeout(WAIT, ws.next()).await.expect("a close frame in time");
        match next {
            Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    // tungstenite queued the close reply; reading on sends it and ends at the server's EOF.
    let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    code
}

/// Signs `claims` with `alg` and `secret` directly with jsonwebtoken (for tokens `mint_token` is
/// right to refuse to make).
pub fn sign(alg: jsonwebtoken::Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("sign a test token")
}

/// Valid claims for `subject`: the configured issuer and audience, issued now, 300 s lifetime.
pub fn claims(subject: &str) -> Value {
    let now = now_secs();
    json!({"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_TTL_SECS})
}

/// A raw HTTP/1.1 request, built from a valid WebSocket upgrade and then bent per test.
#[derive(Debug, Clone)]
pub struct RawRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl RawRequest {
    /// A valid upgrade request for `target` (no Origin, no token).
    pub fn upgrade(target: &str) -> RawRequest {
        RawRequest {
            method: "GET".into(),
            target: target.into(),
            headers: [
                ("Host", "127.0.0.1"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                // The RFC 6455 §1.3 sample key: 16 bytes, base64.
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// A valid upgrade request for [`PATH`] from [`ORIGIN`] carrying `token` as a bearer header.
    pub fn authorized(token: &str) -> RawRequest {
        RawRequest::upgrade(PATH).header("Origin", ORIGIN).header("Authorization", &format!("Bearer {token}"))
    }

    /// Replaces the method.
    pub fn method(mut self, method: &str) -> RawRequest {
        self.method = method.into();
        self
    }

    /// Appends a header (a repeated name is sent twice).
    pub fn header(mut self, name: &str, value: &str) -> RawRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces every value of a header with one.
    pub fn set(self, name: &str, value: &str) -> RawRequest {
        self.without(name).header(name, value)
    }

    /// Removes a header.
    pub fn without(mut self, name: &str) -> RawRequest {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The request head as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `error` member of a JSON refusal body.
    pub fn error_name(&self) -> String {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("refusal body is not JSON ({e}): {:?} (status {})", self.body, self.status));
        body["error"].as_str().unwrap_or_default().to_string()
    }

    /// Asserts a refusal: the status, the code name in the body, a numeric `code`, and
    /// `Connection: close`.
    pub fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.error_name().as_str()), (status, code), "response: {self:?}");
        let body: Value = serde_json::from_str(&self.body).expect("JSON body");
        assert!(body["code"].is_u64(), "numeric code in {:?}", self.body);
        assert_eq!(self.header("connection"), Some("close"), "{self:?}");
    }

    /// Asserts a 429 with a `Retry-After` of at least one second.
    pub fn assert_retry_after(&self) {
        let secs: u64 = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("Retry-After missing: {self:?}"))
            .parse()
            .expect("Retry-After is whole seconds");
        assert!(secs >= 1, "{self:?}");
    }
}

/// Writes bytes, bounded by [`WAIT`].
pub async fn write_all(stream: &mut TcpStream, bytes: &[u8]) {
    tokio::time::timeout(WAIT, stream.write_all(bytes)).await.expect("write in time").expect("write to the server");
}

/// Reads one response: the head, then `Content-Length` bytes of body. A 101 has no body and the
/// stream stays open.
pub async fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("a response in time").unwrap_or(0);
        assert!(n > 0, "connection ended before a complete response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("the body in time").unwrap_or(0);
        assert!(n > 0, "connection ended inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Asserts that the server closes the connection (EOF or reset) without sending anything more.
pub async fn assert_closed(stream: &mut TcpStream) {
    let mut chunk = [0u8; 256];
    let read =
        tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("the server closes the connection in time");
    if let Ok(n) = read {
        assert_eq!(n, 0, "unexpected bytes after the response: {:?}", String::from_utf8_lossy(&chunk[..n]));
    }
}

/// Waits (bounded) until `probe` holds; for host-side state that trails the client by a moment.
pub async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let polled = tokio::time::timeout(WAIT, async {
        while !probe() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting for: {what}");
}

/// A TLS client (ring, TLS 1.2/1.3) trusting only `cert`.
pub fn tls_connector(cert: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
