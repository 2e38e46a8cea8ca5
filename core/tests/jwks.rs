//! Keys from an identity provider, against a real HTTPS JWKS server started by each test
//! (tokio-rustls, a certificate from an rcgen test CA that the server trusts through
//! `auth.jwks_ca_file`). The server counts the requests of every path, so tests assert how often
//! wsguard asked. Also: end-to-end handshakes for every algorithm family the config accepts.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{
    AUDIENCE, Connect, HttpResponse, ORIGIN, RawRequest, TempDir, WAIT, admin_request, handshake, now_secs,
    read_response, request, write_all,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use wsguard::{Config, Event, Hooks, Server, ServerHandle};

// ---- keys and tokens ------------------------------------------------------------------------------

/// A private key from tests/fixtures/keys, with the algorithm and `kid` it signs with.
struct Key {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    file: &'static str,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/keys").join(name)
}

impl Key {
    fn new(file: &'static str, alg: Algorithm, kid: &str) -> Key {
        let pem = std::fs::read(fixture(&format!("{file}.pem"))).expect("read a fixture key");
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no fixture for {other:?}"),
        }
        .expect("a PEM private key");
        Key { alg, kid: kid.to_string(), encoding, file }
    }

    /// The public JWK (`kid`, `alg`, `use: sig`).
    fn jwk(&self) -> Value {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&self.encoding, self.alg).expect("a JWK"))
            .expect("serialize the JWK");
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk
    }

    /// A token for `sub` from `iss` for `aud`, valid for five minutes.
    fn token(&self, iss: &str, aud: &str, sub: &str) -> String {
        self.token_with(Header { kid: Some(self.kid.clone()), ..Header::new(self.alg) }, iss, aud, sub)
    }

    fn token_with(&self, header: Header, iss: &str, aud: &str, sub: &str) -> String {
        let now = now_secs();
        let claims = json!({"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + 300});
        encode(&header, &claims, &self.encoding).expect("sign a test token")
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

// ---- the identity provider ------------------------------------------------------------------------

/// What the test IdP answers on one path.
#[derive(Clone, Debug)]
enum Reply {
    /// 200 with this JSON body and `Cache-Control`.
    Json(String, &'static str),
    /// This status and an empty body.
    Status(u16),
    /// 302 to this location.
    Redirect(String),
    /// 200 with this body and no `Content-Length` (the body ends when the connection closes).
    Unsized(String),
    /// Accepts the request and never answers.
    Hang,
}

/// An HTTPS server on 127.0.0.1 with a certificate from a fresh rcgen CA.
struct Idp {
    addr: SocketAddr,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: JoinHandle<()>,
    ca_file: PathBuf,
    _dir: TempDir,
}

impl Idp {
    async fn start() -> Idp {
        let dir = TempDir::new();
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wsguard test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let ca_file = dir.write("ca.pem", ca.pem().as_bytes());
        let leaf_key = rcgen::KeyPair::generate().expect("server key");
        let leaf_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("server certificate");
        let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("server key DER");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the IdP");
        let addr = listener.local_addr().expect("IdP address");
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let task = tokio::spawn({
            let replies = Arc::clone(&replies);
            let hits = Arc::clone(&hits);
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let replies = Arc::clone(&replies);
                    let hits = Arc::clone(&hits);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(WAIT, serve_one(acceptor, tcp, &replies, &hits)).await;
                    });
                }
            }
        });
        Idp { addr, replies, hits, task, ca_file, _dir: dir }
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().expect("replies").insert(path.to_string(), reply);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().expect("hits").get(path).copied().unwrap_or(0)
    }

    /// The IdP goes down: new connections are refused.
    fn stop(&self) {
        self.task.abort();
    }

    /// `[auth]` lines for a single issuer fetched from `path`.
    fn auth(&self, algorithm: &str, path: &str) -> String {
        format!(
            "algorithms = [\"{algorithm}\"]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{}\"\n\
             jwks_ca_file = {:?}\n",
            self.url(path),
            self.ca_file.display().to_string()
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The issuer of the single-issuer tests.
const ISSUER: &str = "https://idp.test";

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    replies: &Mutex<HashMap<String, Reply>>,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = tls.read(&mut chunk).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
    let reply = replies.lock().expect("replies").get(&path).cloned().unwrap_or(Reply::Status(404));
    let response = match reply {
        Reply::Json(body, cache) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: {cache}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Status(status) => format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        Reply::Redirect(to) => {
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::Unsized(body) => {
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}")
        }
        Reply::Hang => {
            // The caller's WAIT bounds this task.
            tokio::time::sleep(WAIT * 2).await;
            return Ok(());
        }
    };
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

/// A host that records the `jwks_fetch_failed` events it is handed: (reason, has_keys).
#[derive(Default)]
struct FetchFailures(Mutex<Vec<(String, bool)>>);

impl Hooks for FetchFailures {
    fn on_event(&self, event: &Event) -> wsguard::hooks::HookFuture<()> {
        if let Event::JwksFetchFailed { reason, has_keys, .. } = event {
            self.0.lock().expect("events").push((reason.to_string(), *has_keys));
        }
        Box::pin(std::future::ready(()))
    }
}

impl FetchFailures {
    /// Waits (bounded) for a `jwks_fetch_failed` event with `reason` and `has_keys`.
    async fn wait_for(&self, reason: &str, has_keys: bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.0.lock().expect("events").iter().any(|(r, k)| r == reason && *k == has_keys) {
            assert!(tokio::time::Instant::now() < deadline, "no jwks_fetch_failed {reason} (has_keys {has_keys})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- wsguard --------------------------------------------------------------------------------------

struct Wsg {
    addr: SocketAddr,
    handle: ServerHandle,
    config: Config,
}

impl Drop for Wsg {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn config_text(auth: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[origins]\nallow = [\"{ORIGIN}\"]\n[auth]\n{auth}\n\
         [limits]\nhandshakes_per_ip_per_sec = 100000.0\n[observability]\nmetrics_listen = \"127.0.0.1:0\"\n\
         [[channels]]\npattern = \"room:{{n}}\"\nsubscribe = {{}}\npublish = {{}}\n"
    )
}

async fn start(auth: &str) -> Wsg {
    start_with(auth, None).await
}

async fn start_with(auth: &str, hooks: Option<Arc<dyn Hooks>>) -> Wsg {
    let text = config_text(auth);
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
    let mut builder = Server::builder(config.clone());
    if let Some(hooks) = hooks {
        builder = builder.hooks(hooks);
    }
    let server = builder.bind().await.unwrap_or_else(|e| panic!("bind failed: {e}"));
    let handle = server.handle();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    Wsg { addr, handle, config }
}

impl Wsg {
    /// The handshake's response (101 or the refusal) for `token`.
    async fn handshake(&self, token: &str) -> HttpResponse {
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")
            .expect("connect to wsguard");
        write_all(&mut stream, &RawRequest::authorized(token).to_bytes()).await;
        read_response(&mut stream).await
    }

    async fn assert_admitted(&self, token: &str) {
        let response = self.handshake(token).await;
        assert_eq!(response.status, 101, "{response:?}");
    }

    async fn assert_refused(&self, token: &str, status: u16, code: &str) {
        let response = self.handshake(token).await;
        assert_eq!(response.status, status, "{response:?}");
        assert!(response.body.contains(&format!("\"error\":\"{code}\"")), "{response:?}");
    }

    async fn admin(&self, path: &str) -> HttpResponse {
        admin_request(self.handle.metrics_addr().expect("admin listener"), "GET", path).await
    }

    /// `wsguard_jwks_fetches_total{issuer, result}`.
    async fn fetches(&self, issuer: &str, result: &str) -> f64 {
        let metrics = support::Metrics::parse(&self.admin("/metrics").await.body);
        let series = format!("wsguard_jwks_fetches_total{{issuer=\"{issuer}\",result=\"{result}\"}}");
        if metrics.has(&series) { metrics.get(&series) } else { 0.0 }
    }

    /// Waits (bounded) until `fetches(issuer, result)` exceeds `than`.
    async fn wait_fetches(&self, issuer: &str, result: &str, than: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.fetches(issuer, result).await <= than {
            assert!(tokio::time::Instant::now() < deadline, "no {result} fetch for {issuer} in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.admin("/readyz").await.status != 200 {
            assert!(tokio::time::Instant::now() < deadline, "not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---- every algorithm family -----------------------------------------------------------------------

const FAMILIES: [(&str, Algorithm, &str); 5] = [
    ("RS256", Algorithm::RS256, "rsa-a"),
    ("PS256", Algorithm::PS256, "rsa-a"),
    ("ES256", Algorithm::ES256, "ec-p256"),
    ("ES384", Algorithm::ES384, "ec-p384"),
    ("EdDSA", Algorithm::EdDSA, "ed25519"),
];

/// A key of `alg`'s family other than the fixture, under `kid`.
fn other_key(alg: Algorithm, kid: &str) -> Key {
    let generated = |algorithm| rcgen::KeyPair::generate_for(algorithm).expect("generate a key").serialize_pem();
    let encoding = match alg {
        Algorithm::RS256 | Algorithm::PS256 => return Key::new("rsa-b", alg, kid),
        Algorithm::ES256 => EncodingKey::from_ec_pem(generated(&rcgen::PKCS_ECDSA_P256_SHA256).as_bytes()),
        Algorithm::ES384 => EncodingKey::from_ec_pem(generated(&rcgen::PKCS_ECDSA_P384_SHA384).as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(generated(&rcgen::PKCS_ED25519).as_bytes()),
        other => panic!("no other key for {other:?}"),
    }
    .expect("a generated PEM key");
    Key { alg, kid: kid.to_string(), encoding, file: "generated" }
}

#[tokio::test]
async fn every_algorithm_family_is_admitted_with_jwks_from_the_idp() {
    let idp = Idp::start().await;
    for (name, alg, file) in FAMILIES {
        let key = Key::new(file, alg, &format!("{name}-1"));
        let path = format!("/{name}/jwks");
        idp.set(&path, Reply::Json(jwks(&[&key]), "max-age=300"));
        let server = start(&idp.auth(name, &path)).await;
        server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;
        // Another key of the family under the same kid does not verify.
        let forged = other_key(alg, &key.kid);
        server.assert_refused(&forged.token(ISSUER, AUDIENCE, "mallory"), 401, "token_bad_signature").await;
        assert_eq!(idp.hits(&path), 1, "{name}: one fetch at start");
    }
}

#[tokio::test]
async fn every_algorithm_family_is_admitted_with_a_public_key_file() {
    for (name, alg, file) in FAMILIES {
        let key = Key::new(file, alg, "unused");
        let auth = format!(
            "algorithms = [\"{name}\"]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\npublic_key_file = {:?}\n",
            fixture(&format!("{}.pub.pem", key.file)).display().to_string()
        );
        let server = start(&auth).await;
        server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;
        let wrong = other_key(alg, "unused");
        server.assert_refused(&wrong.token(ISSUER, AUDIENCE, "mallory"), 401, "token_bad_signature").await;
    }
}

// ---- caching and rotation -------------------------------------------------------------------------

#[tokio::test]
async fn rotation_admits_the_new_key_after_a_refetch_and_refuses_the_removed_one() {
    let idp = Idp::start().await;
    let old = Key::new("rsa-a", Algorithm::RS256, "old");
    let new = Key::new("rsa-b", Algorithm::RS256, "new");
    idp.set("/jwks", Reply::Json(jwks(&[&old]), "max-age=3600"));
    let server = start(&format!("{}jwks_min_refetch_secs = 60\n", idp.auth("RS256", "/jwks"))).await;
    server.assert_admitted(&old.token(ISSUER, AUDIENCE, "alice")).await;
    assert_eq!(idp.hits("/jwks"), 1);

    idp.set("/jwks", Reply::Json(jwks(&[&new]), "max-age=3600"));
    server.assert_admitted(&new.token(ISSUER, AUDIENCE, "alice")).await;
    assert_eq!(idp.hits("/jwks"), 2, "the unknown kid refetched once");
    server.assert_refused(&old.token(ISSUER, AUDIENCE, "alice"), 401, "token_unknown_key").await;
    assert_eq!(idp.hits("/jwks"), 2, "no refetch within jwks_min_refetch_secs");
    assert_eq!(server.fetches(ISSUER, "ok").await, 2.0);
}

#[tokio::test]
async fn unknown_kid_flood_makes_at_most_one_request() {
    let idp = Idp::start().await;
    let key = Key::new("ec-p256", Algorithm::ES256, "k1");
    idp.set("/jwks", Reply::Json(jwks(&[&key]), "max-age=3600"));
    let server = Arc::new(start(&format!("{}jwks_min_refetch_secs = 60\n", idp.auth("ES256", "/jwks"))).await);
    assert_eq!(idp.hits("/jwks"), 1);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let server = Arc::clone(&server);
        let token = key.token_with(
            Header { kid: Some(format!("random-{i}")), ..Header::new(Algorithm::ES256) },
            ISSUER,
            AUDIENCE,
            "mallory",
        );
        tasks.push(tokio::spawn(async move { server.handshake(&token).await.status }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("handshake task"), 401);
    }
    assert_eq!(idp.hits("/jwks"), 2, "40 concurrent unknown kids made one request");
    for i in 0..20 {
        let token = key.token_with(
            Header { kid: Some(format!("again-{i}")), ..Header::new(Algorithm::ES256) },
            ISSUER,
            AUDIENCE,
            "mallory",
        );
        server.assert_refused(&token, 401, "token_unknown_key").await;
    }
    assert_eq!(idp.hits("/jwks"), 2, "no request within jwks_min_refetch_secs");
    server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;
}

#[tokio::test]
async fn idp_down_keeps_the_last_good_keys() {
    let idp = Idp::start().await;
    let key = Key::new("rsa-a", Algorithm::RS256, "k1");
    idp.set("/jwks", Reply::Json(jwks(&[&key]), "max-age=1"));
    let events = Arc::new(FetchFailures::default());
    let server = start_with(
        &format!("{}jwks_cache_min_secs = 1\njwks_cache_max_secs = 1\n", idp.auth("RS256", "/jwks")),
        Some(Arc::clone(&events) as Arc<dyn Hooks>),
    )
    .await;
    server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;
    idp.stop();
    server.wait_fetches(ISSUER, "connect", 0.0).await;
    events.wait_for("connect", true).await;
    server.assert_admitted(&key.token(ISSUER, AUDIENCE, "bob")).await;
    assert_eq!(server.admin("/readyz").await.status, 200, "keys in force: still ready");
}

#[tokio::test]
async fn oversized_malformed_failing_and_redirected_jwks_are_refused_and_the_last_keys_kept() {
    let idp = Idp::start().await;
    let key = Key::new("ed25519", Algorithm::EdDSA, "k1");
    let good = jwks(&[&key]);
    idp.set("/jwks", Reply::Json(good.clone(), "max-age=1"));
    let server = start(&format!(
        "{}jwks_cache_min_secs = 1\njwks_cache_max_secs = 1\njwks_max_bytes = 4096\njwks_timeout_secs = 1\n",
        idp.auth("EdDSA", "/jwks")
    ))
    .await;
    server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;

    let padded = json!({"keys": [key.jwk()], "padding": "x".repeat(8192)}).to_string();
    let other = Key::new("ec-p256", Algorithm::ES256, "k1");
    let cases = [
        ("too_large", Reply::Json(padded.clone(), "max-age=1")),
        ("too_large", Reply::Unsized(padded)),
        ("timeout", Reply::Hang),
        ("malformed", Reply::Json("{\"keys\": [".into(), "max-age=1")),
        ("malformed", Reply::Json("{\"no_keys\": []}".into(), "max-age=1")),
        // Only keys of another family: none usable, the set in force stays.
        ("no_usable_keys", Reply::Json(jwks(&[&other]), "max-age=1")),
        ("http_status", Reply::Status(500)),
        ("redirect", Reply::Redirect(format!("https://localhost:{}/elsewhere", idp.addr.port()))),
    ];
    for (reason, reply) in cases {
        let before = server.fetches(ISSUER, reason).await;
        idp.set("/jwks", reply);
        server.wait_fetches(ISSUER, reason, before).await;
        server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;
        server.assert_refused(&other.token(ISSUER, AUDIENCE, "mallory"), 401, "token_alg_not_allowed").await;
    }
    assert_eq!(idp.hits("/elsewhere"), 0, "a redirect to another host is never followed");

    // A redirect within the same origin is followed.
    let rotated = Key::new("ed25519", Algorithm::EdDSA, "k2");
    idp.set("/jwks", Reply::Redirect(idp.url("/moved")));
    idp.set("/moved", Reply::Json(jwks(&[&rotated]), "max-age=1"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.handshake(&rotated.token(ISSUER, AUDIENCE, "alice")).await.status != 101 {
        assert!(tokio::time::Instant::now() < deadline, "the same-origin redirect was not followed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idp.hits("/moved") >= 1);
}

// ---- readiness before the first key set -----------------------------------------------------------

#[tokio::test]
async fn not_ready_and_503_until_the_first_key_set_then_admitted() {
    let idp = Idp::start().await;
    let key = Key::new("rsa-a", Algorithm::PS256, "k1");
    idp.set("/jwks", Reply::Status(503));
    // Bind does not fail while the IdP is down.
    let events = Arc::new(FetchFailures::default());
    let server = start_with(
        &format!("{}jwks_cache_min_secs = 1\n", idp.auth("PS256", "/jwks")),
        Some(Arc::clone(&events) as Arc<dyn Hooks>),
    )
    .await;
    let ready = server.admin("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains(ISSUER), "{ready:?}");
    assert_eq!(server.admin("/healthz").await.status, 200);
    let response = server.handshake(&key.token(ISSUER, AUDIENCE, "alice")).await;
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.body.contains("\"error\":\"keys_unavailable\""), "{response:?}");
    assert!(response.body.contains("\"code\":2021"), "{response:?}");
    assert!(response.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("retry-after")), "{response:?}");
    assert!(server.fetches(ISSUER, "http_status").await >= 1.0);
    events.wait_for("http_status", false).await;
    let metrics = server.admin("/metrics").await.body;
    assert!(metrics.contains("wsguard_handshakes_total{result=\"rejected\",code=\"keys_unavailable\"} 1"), "{metrics}");

    idp.set("/jwks", Reply::Json(jwks(&[&key]), "max-age=300"));
    server.wait_ready().await;
    server.assert_admitted(&key.token(ISSUER, AUDIENCE, "alice")).await;
}

// ---- OpenID Connect discovery ---------------------------------------------------------------------

#[tokio::test]
async fn oidc_discovery_finds_the_jwks_and_checks_the_documents_issuer() {
    let idp = Idp::start().await;
    let key = Key::new("ec-p384", Algorithm::ES384, "k1");
    let issuer = idp.url("/tenant");
    idp.set(
        "/tenant/.well-known/openid-configuration",
        Reply::Json(json!({"issuer": issuer, "jwks_uri": idp.url("/tenant/keys")}).to_string(), "max-age=300"),
    );
    idp.set("/tenant/keys", Reply::Json(jwks(&[&key]), "max-age=300"));
    let ca = format!("{:?}", idp.ca_file.display().to_string());
    let server = start(&format!(
        "algorithms = [\"ES384\"]\nissuer = \"{issuer}\"\naudience = \"{AUDIENCE}\"\noidc_discovery = true\n\
         jwks_ca_file = {ca}\n"
    ))
    .await;
    server.assert_admitted(&key.token(&issuer, AUDIENCE, "alice")).await;
    assert_eq!(idp.hits("/tenant/.well-known/openid-configuration"), 1);
    assert_eq!(idp.hits("/tenant/keys"), 1);

    // A discovery document naming another issuer is refused: no keys, not ready, 503.
    let evil = idp.url("/evil");
    idp.set(
        "/evil/.well-known/openid-configuration",
        Reply::Json(json!({"issuer": "https://attacker.test", "jwks_uri": idp.url("/tenant/keys")}).to_string(), ""),
    );
    let server = start(&format!(
        "algorithms = [\"ES384\"]\nissuer = \"{evil}\"\naudience = \"{AUDIENCE}\"\noidc_discovery = true\n\
         jwks_ca_file = {ca}\n"
    ))
    .await;
    assert!(server.fetches(&evil, "issuer_mismatch").await >= 1.0);
    assert_eq!(server.admin("/readyz").await.status, 503);
    server.assert_refused(&key.token(&evil, AUDIENCE, "alice"), 503, "keys_unavailable").await;
    assert_eq!(idp.hits("/tenant/keys"), 1, "the mismatching document's jwks_uri is never fetched");
}

// ---- several issuers ------------------------------------------------------------------------------

#[tokio::test]
async fn a_key_of_one_issuer_never_verifies_another_issuers_token() {
    let idp = Idp::start().await;
    // The same kid at both issuers, different keys.
    let key_a = Key::new("rsa-a", Algorithm::RS256, "k1");
    let key_b = Key::new("rsa-b", Algorithm::RS256, "k1");
    idp.set("/a/jwks", Reply::Json(jwks(&[&key_a]), "max-age=300"));
    idp.set("/b/jwks", Reply::Json(jwks(&[&key_b]), "max-age=300"));
    let (iss_a, iss_b) = (idp.url("/a"), idp.url("/b"));
    let server = start(&format!(
        "algorithms = [\"RS256\"]\njwks_ca_file = {:?}\njwks_min_refetch_secs = 60\n\
         [[auth.issuers]]\nissuer = \"{iss_a}\"\naudience = \"aud-a\"\njwks_url = \"{}\"\n\
         [[auth.issuers]]\nissuer = \"{iss_b}\"\naudience = \"aud-b\"\njwks_url = \"{}\"\n",
        idp.ca_file.display().to_string(),
        idp.url("/a/jwks"),
        idp.url("/b/jwks"),
    ))
    .await;
    server.wait_ready().await;
    server.assert_admitted(&key_a.token(&iss_a, "aud-a", "alice")).await;
    server.assert_admitted(&key_b.token(&iss_b, "aud-b", "bob")).await;
    // A's key (same kid) for a token claiming B.
    server.assert_refused(&key_a.token(&iss_b, "aud-b", "mallory"), 401, "token_bad_signature").await;
    // A's audience is not B's.
    server.assert_refused(&key_b.token(&iss_b, "aud-a", "mallory"), 401, "token_wrong_audience").await;
    server.assert_refused(&key_a.token("https://other.test", "aud-a", "mallory"), 401, "token_wrong_issuer").await;
    // A kid only B has, in a token from A: unknown at A (one refetch of A, never of B).
    let only_b = Key::new("rsa-b", Algorithm::RS256, "only-b");
    idp.set("/b/jwks", Reply::Json(jwks(&[&key_b, &only_b]), "max-age=300"));
    server.assert_refused(&only_b.token(&iss_a, "aud-a", "mallory"), 401, "token_unknown_key").await;
    assert_eq!((idp.hits("/a/jwks"), idp.hits("/b/jwks")), (2, 1));
}

// ---- headers that name keys -----------------------------------------------------------------------

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_headers_are_never_followed() {
    let idp = Idp::start().await;
    let trusted = Key::new("ec-p256", Algorithm::ES256, "k1");
    let attacker = other_key(Algorithm::ES256, "attacker");
    idp.set("/jwks", Reply::Json(jwks(&[&trusted]), "max-age=300"));
    idp.set("/evil", Reply::Json(jwks(&[&attacker]), "max-age=300"));
    let server = start(&idp.auth("ES256", "/jwks")).await;
    let embedded: Jwk = serde_json::from_value(attacker.jwk()).expect("a JWK");
    for kid in ["attacker", "k1"] {
        let header = Header {
            kid: Some(kid.into()),
            jku: Some(idp.url("/evil")),
            x5u: Some(idp.url("/evil")),
            jwk: Some(embedded.clone()),
            ..Header::new(Algorithm::ES256)
        };
        let response = server.handshake(&attacker.token_with(header, ISSUER, AUDIENCE, "mallory")).await;
        assert_eq!(response.status, 401, "{response:?}");
    }
    assert_eq!(idp.hits("/evil"), 0, "jku / x5u never fetched");
}

// ---- refresh and reload ---------------------------------------------------------------------------

#[tokio::test]
async fn refresh_and_reload_use_the_remote_keys() {
    let idp = Idp::start().await;
    let old = Key::new("ed25519", Algorithm::EdDSA, "old");
    let new = Key::new("ed25519", Algorithm::EdDSA, "new");
    idp.set("/jwks", Reply::Json(jwks(&[&old]), "max-age=3600"));
    let server = start(&idp.auth("EdDSA", "/jwks")).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut ws, _) = handshake(
        tcp,
        &format!("ws://{}/ws", server.addr),
        &Connect::new().bearer(&old.token(ISSUER, AUDIENCE, "alice")),
    )
    .await
    .expect("admitted");
    // The IdP rotates; the in-band refresh with the new key refetches and is accepted.
    idp.set("/jwks", Reply::Json(jwks(&[&new]), "max-age=3600"));
    let reply =
        request(&mut ws, &json!({"action": "refresh", "id": 1, "token": new.token(ISSUER, AUDIENCE, "alice")})).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(idp.hits("/jwks"), 2);

    // A reload with the same key source keeps the cache: no fetch, no unavailability.
    server.handle.reload(server.config.clone()).expect("reload");
    server.assert_admitted(&new.token(ISSUER, AUDIENCE, "bob")).await;
    assert_eq!(idp.hits("/jwks"), 2);
    // A reload that changes only a fetch setting keeps the keys in force (no 503 gap) and
    // fetches with the new settings.
    let text = config_text(&format!("{}jwks_min_refetch_secs = 10\n", idp.auth("EdDSA", "/jwks")));
    server.handle.reload(Config::from_toml_str(&text).expect("config")).expect("reload");
    server.assert_admitted(&new.token(ISSUER, AUDIENCE, "dave")).await;
    // A reload to another JWKS URL fetches from there.
    idp.set("/jwks2", Reply::Json(jwks(&[&old]), "max-age=3600"));
    let text = config_text(&idp.auth("EdDSA", "/jwks2"));
    server.handle.reload(Config::from_toml_str(&text).expect("config")).expect("reload");
    server.wait_ready().await;
    server.assert_admitted(&old.token(ISSUER, AUDIENCE, "carol")).await;
    assert_eq!(idp.hits("/jwks2"), 1);
}

#[tokio::test]
async fn a_reload_retires_the_replaced_source_while_older_sessions_live() {
    let idp = Idp::start().await;
    let key = Key::new("ed25519", Algorithm::EdDSA, "k");
    idp.set("/a", Reply::Json(jwks(&[&key]), "no-cache"));
    idp.set("/b", Reply::Json(jwks(&[&key]), "no-cache"));
    // Keys cached for one second: a source that kept running would fetch every second.
    let auth = |path: &str| format!("{}jwks_cache_min_secs = 1\njwks_cache_max_secs = 1\n", idp.auth("EdDSA", path));
    let server = start(&auth("/a")).await;
    // A session from before the reload: it holds the configuration it was admitted under.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (ws, _) = handshake(
        tcp,
        &format!("ws://{}/ws", server.addr),
        &Connect::new().bearer(&key.token(ISSUER, AUDIENCE, "alice")),
    )
    .await
    .expect("admitted");
    server.handle.reload(Config::from_toml_str(&config_text(&auth("/b"))).expect("config")).expect("reload");
    server.wait_ready().await;
    server.assert_admitted(&key.token(ISSUER, AUDIENCE, "bob")).await;
    let replaced = idp.hits("/a");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(idp.hits("/a"), replaced, "the replaced source stopped fetching");
    assert!(idp.hits("/b") >= 1);
    drop(ws);
}

// ---- configuration --------------------------------------------------------------------------------

#[test]
fn remote_key_configuration_is_validated() {
    let cases = [
        (
            "algorithms = [\"RS256\"]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"http://idp.example/jwks\"\n",
            "auth.jwks_url",
        ),
        (
            "algorithms = [\"RS256\"]\nissuer = \"http://idp.example\"\naudience = \"y\"\noidc_discovery = true\n",
            "auth.issuer",
        ),
        (
            "algorithms = [\"HS256\"]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"https://idp.example/jwks\"\n",
            "auth.algorithms",
        ),
        (
            "algorithms = [\"RS256\"]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"https://idp.example/jwks\"\n\
             jwks_cache_min_secs = 600\njwks_cache_max_secs = 60\n",
            "auth.jwks_cache_max_secs",
        ),
        (
            "algorithms = [\"RS256\"]\nissuer = \"x\"\n[[auth.issuers]]\nissuer = \"a\"\naudience = \"b\"\n\
             jwks_url = \"https://idp.example/jwks\"\n",
            "auth.issuer",
        ),
        (
            "algorithms = [\"RS256\"]\n[[auth.issuers]]\nissuer = \"a\"\naudience = \"b\"\n\
             jwks_url = \"https://idp.example/jwks\"\noidc_discovery = true\n",
            "auth.issuers[0]",
        ),
        (
            "algorithms = [\"HS256\"]\n[[auth.issuers]]\nissuer = \"a\"\naudience = \"b\"\n\
             jwks_url = \"https://idp.example/jwks\"\n",
            "auth.algorithms",
        ),
    ];
    for (auth, key) in cases {
        let text = config_text(auth);
        let error = Config::from_toml_str(&text).expect_err(&format!("accepted:\n{auth}"));
        let problems: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|p| p.starts_with(key)), "{key} not in {problems:?}");
    }
    // The well-formed variants parse.
    let ok = config_text(
        "algorithms = [\"RS256\"]\n[[auth.issuers]]\nissuer = \"a\"\naudience = \"b\"\njwks_url = \"https://idp.example/jwks\"\n\
         [[auth.issuers]]\nissuer = \"https://c.example\"\naudience = \"d\"\noidc_discovery = true\nalgorithms = [\"ES256\"]\n",
    );
    Config::from_toml_str(&ok).expect("two issuers");
}
