//! The backend proxy (`[proxy]`) against a real HTTP backend started by each test on 127.0.0.1:
//! the happy paths of every endpoint, the headers it forwards (and the token it never does), the
//! composition with host hooks, and every failure mode, each failing closed with its documented
//! code, a `proxy_failed` event and a `wsguard_proxy_requests_total` sample.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::{Connect, RawRequest, Setup, TestServer, WAIT, Ws, eventually, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use wsguard::hooks::{AuthorizeRequest, Decision, HookFuture};
use wsguard::{Config, ErrorCode, Event, Hooks, Server};

// ---- the backend ----------------------------------------------------------------------------------

/// What the backend answers on one path.
#[derive(Clone, Debug)]
enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// This status, these extra header lines and this body, with `Content-Length`.
    Raw(u16, &'static str, String),
    /// 200 with this body and no `Content-Length` (it ends when the connection closes).
    Unsized(String),
    /// Takes the request and never answers.
    Hang,
}

/// One request the backend received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Value,
    /// The whole request as received.
    raw: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 server on 127.0.0.1 that records every request and answers by path.
struct Backend {
    addr: SocketAddr,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the backend");
        let addr = listener.local_addr().expect("backend address");
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let task = tokio::spawn({
            let replies = Arc::clone(&replies);
            let seen = Arc::clone(&seen);
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let replies = Arc::clone(&replies);
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(WAIT, serve_one(tcp, &replies, &seen)).await;
                    });
                }
            }
        });
        Backend { addr, replies, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().expect("replies").insert(path.to_string(), reply);
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen.lock().expect("seen").iter().filter(|s| s.path == path).cloned().collect()
    }

    fn last(&self, path: &str) -> Seen {
        self.seen(path).pop().unwrap_or_else(|| panic!("the backend saw no request on {path}"))
    }

    /// The backend goes down: new connections are refused.
    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut tcp: TcpStream,
    replies: &Mutex<HashMap<String, Reply>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut data = Vec::new();
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 || data.len() > 64 * 1024 {
            return Ok(());
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while data.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&data[head_end..head_end + length]).unwrap_or(Value::Null);
    let raw = String::from_utf8_lossy(&data).to_string();
    seen.lock().expect("seen").push(Seen { path: path.clone(), headers, body, raw });
    let reply = replies.lock().expect("replies").get(&path).cloned().unwrap_or(Reply::Raw(404, "", String::new()));
    let response = match reply {
        Reply::Json(value) => {
            let body = value.to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Reply::Raw(status, extra, body) => {
            format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
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
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await
}

// ---- wsguard --------------------------------------------------------------------------------------

const SECRET_VALUE: &str = "proxy-shared-secret-0123456789";

/// Host hooks that record the `proxy_failed` events (endpoint, result), and deny `authorize` on
/// channels starting with `room:host-denied`.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

impl Hooks for Recorder {
    fn authorize(&self, request: AuthorizeRequest) -> HookFuture<Decision> {
        let decision = if request.channel.starts_with("room:9") { Decision::Deny } else { Decision::Allow };
        Box::pin(std::future::ready(decision))
    }

    fn on_event(&self, event: &Event) -> HookFuture<()> {
        if let Event::ProxyFailed { endpoint, result, .. } = event {
            self.0.lock().expect("events").push((endpoint.to_string(), result.to_string()));
        }
        Box::pin(std::future::ready(()))
    }
}

impl Recorder {
    async fn wait_for(&self, endpoint: &str, result: &str) {
        eventually(&format!("a proxy_failed event {endpoint}/{result}"), || {
            self.0.lock().expect("events").iter().any(|(e, r)| e == endpoint && r == result)
        })
        .await;
    }
}

/// A server whose every endpoint points at `backend`, with the given endpoint options.
async fn server(backend: &Backend, options: &str) -> (TestServer, Arc<Recorder>) {
    let secret = support::TempDir::new();
    let secret_file = secret.write("proxy.secret", format!("{SECRET_VALUE}\n").as_bytes());
    let recorder = Arc::new(Recorder::default());
    let extra = format!(
        r#"
[[channels]]
pattern = "vip:{{n}}"
subscribe = {{ roles = ["vip"] }}
[[rpc]]
method = "orders.create"
[[rpc]]
method = "orders.special"
[proxy]
forward_headers = ["cookie", "x-request-id"]
secret_file = {secret_file:?}
[proxy.connect]
url = "{connect}"
{options}
[proxy.subscribe]
url = "{subscribe}"
{options}
[proxy.publish]
url = "{publish}"
{options}
[proxy.rpc]
url = "{rpc}"
{options}
[proxy.rpc_methods."orders.special"]
url = "{special}"
{options}
"#,
        connect = backend.url("/connect"),
        subscribe = backend.url("/subscribe"),
        publish = backend.url("/publish"),
        rpc = backend.url("/rpc"),
        special = backend.url("/special"),
        secret_file = secret_file.display().to_string(),
    );
    let server = Setup::new().extra(&extra).hooks(recorder.clone()).start().await;
    // The secret was read at bind.
    drop(secret);
    (server, recorder)
}

/// A backend that allows connect, subscribe and publish.
async fn allowing_backend() -> Backend {
    let backend = Backend::start().await;
    backend.set("/connect", Reply::Json(json!(true)));
    backend.set("/subscribe", Reply::Json(json!(true)));
    backend.set("/publish", Reply::Json(json!(true)));
    backend
}

async fn handshake_status(server: &TestServer, subject: &str) -> support::HttpResponse {
    server.exchange(&RawRequest::authorized(&server.token(subject))).await
}

async fn assert_reply_code(ws: &mut Ws, frame: Value, code: &str) {
    let reply = request(ws, &frame).await;
    assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(code)), "{reply}");
}

async fn assert_ok(ws: &mut Ws, frame: Value) -> Value {
    let reply = request(ws, &frame).await;
    assert_ne!(reply["type"], "error", "{frame} was refused: {reply}");
    reply
}

fn subscribe(id: u64, channel: &str) -> Value {
    json!({"action": "subscribe", "id": id, "channel": channel})
}

fn publish(id: u64, channel: &str) -> Value {
    json!({"action": "publish", "id": id, "channel": channel, "payload": {"text": "hi"}})
}

fn rpc(id: u64, method: &str) -> Value {
    json!({"action": "rpc", "id": id, "method": method, "payload": {"sku": "A-1"}})
}

async fn proxy_requests(server: &TestServer, endpoint: &str, result: &str) -> f64 {
    server.scrape().await.get(&format!("wsguard_proxy_requests_total{{endpoint=\"{endpoint}\",result=\"{result}\"}}"))
}

// ---- happy paths ----------------------------------------------------------------------------------

#[tokio::test]
async fn connect_allows_denies_and_updates_the_identity() {
    let backend = allowing_backend().await;
    let (server, _) = server(&backend, "").await;

    handshake_status(&server, "alice").await.status.eq(&101).then_some(()).expect("allowed by `true`");
    let seen = backend.last("/connect");
    assert_eq!(seen.body["identity"]["subject"], "alice");
    assert_eq!(seen.body["client_ip"], "127.0.0.1");
    assert_eq!(seen.body["session_id"], Value::Null);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-wsguard-secret"), Some(SECRET_VALUE));

    backend.set("/connect", Reply::Json(json!({"deny": "suspended"})));
    handshake_status(&server, "alice").await.assert_refused(403, "rejected_by_hook");
    backend.set("/connect", Reply::Json(json!(false)));
    handshake_status(&server, "alice").await.assert_refused(403, "rejected_by_hook");

    // Without the role, `vip:1` is refused by the channel rules; the backend grants it.
    backend.set("/connect", Reply::Json(json!(true)));
    let mut ws = server.session("bob").await;
    assert_reply_code(&mut ws, subscribe(1, "vip:1"), "forbidden").await;
    backend.set("/connect", Reply::Json(json!({"roles": ["vip"], "claims": {"plan": "pro"}})));
    let mut ws = server.session("bob").await;
    assert_ok(&mut ws, subscribe(1, "vip:1")).await;
    assert_eq!(backend.last("/subscribe").body["identity"]["claims"]["plan"], "pro", "the updated identity is used");
    assert_eq!(proxy_requests(&server, "connect", "ok").await, 5.0);
}

#[tokio::test]
async fn subscribe_and_publish_are_allowed_or_denied_by_the_backend() {
    let backend = allowing_backend().await;
    let (server, _) = server(&backend, "").await;
    let mut ws = server.session("alice").await;

    assert_ok(&mut ws, subscribe(1, "room:1")).await;
    let seen = backend.last("/subscribe");
    assert_eq!(
        (seen.body["channel"].as_str(), seen.body["identity"]["subject"].as_str()),
        (Some("room:1"), Some("alice"))
    );
    assert!(seen.body["session_id"].is_u64() && seen.body.get("payload").is_none(), "{}", seen.body);

    // Published to a channel it is not subscribed to: the next frame is the reply.
    assert_ok(&mut ws, publish(2, "room:5")).await;
    assert_eq!(backend.last("/publish").body["payload"], json!({"text": "hi"}));

    backend.set("/subscribe", Reply::Json(json!(false)));
    backend.set("/publish", Reply::Json(json!(false)));
    assert_reply_code(&mut ws, subscribe(3, "room:2"), "forbidden").await;
    assert_reply_code(&mut ws, publish(4, "room:5"), "forbidden").await;
}

#[tokio::test]
async fn rpc_is_answered_per_method_and_its_errors_are_rpc_failed() {
    let backend = allowing_backend().await;
    backend.set("/rpc", Reply::Json(json!({"result": {"order": 7}})));
    backend.set("/special", Reply::Json(json!({"result": "special"})));
    let (server, _) = server(&backend, "").await;
    let mut ws = server.session("alice").await;

    let reply = assert_ok(&mut ws, rpc(1, "orders.create")).await;
    assert_eq!(reply, json!({"type": "result", "id": 1, "payload": {"order": 7}}));
    let seen = backend.last("/rpc");
    assert_eq!((seen.body["method"].as_str(), &seen.body["payload"]), (Some("orders.create"), &json!({"sku": "A-1"})));
    let reply = assert_ok(&mut ws, rpc(2, "orders.special")).await;
    assert_eq!(reply["payload"], "special", "the method's own endpoint answers it");

    backend.set("/rpc", Reply::Json(json!({"error": "out of stock"})));
    let reply = request(&mut ws, &rpc(3, "orders.create")).await;
    assert_eq!(reply, json!({"type": "error", "id": 3, "code": "rpc_failed", "message": "out of stock"}));
}

#[tokio::test]
async fn only_allowlisted_headers_are_forwarded_and_never_the_token() {
    let backend = allowing_backend().await;
    let (server, _) = server(&backend, "").await;
    let token = server.token("alice");
    let request = RawRequest::authorized(&token)
        .header("Cookie", &format!("theme=dark; wsguard_token={token}"))
        .header("X-Request-Id", "req-42")
        .header("X-Other", "not-listed");
    assert_eq!(server.exchange(&request).await.status, 101);
    let seen = backend.last("/connect");
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    assert_eq!(seen.header("x-request-id"), Some("req-42"));
    assert_eq!(seen.header("x-other"), None);
    assert_eq!(seen.header("authorization"), None);
    assert!(!seen.raw.contains(&token), "the token reached the backend: {}", seen.raw);

    // The same through the subprotocol: never forwarded either.
    let connect = Connect::new().protocols(&format!("wsguard.v1, bearer.{token}")).header("x-request-id", "req-43");
    let mut ws = server.ws(&connect).await;
    assert_ok(&mut ws, subscribe(1, "room:1")).await;
    for path in ["/connect", "/subscribe"] {
        let seen = backend.last(path);
        assert_eq!(seen.header("x-request-id"), Some("req-43"), "{path}");
        assert!(!seen.raw.contains(&token), "the token reached {path}: {}", seen.raw);
    }
}

#[tokio::test]
async fn host_hooks_run_first_and_both_can_only_narrow() {
    let backend = allowing_backend().await;
    let (server, _) = server(&backend, "").await;
    let mut ws = server.session("alice").await;
    // The host denies `room:9`: the backend is not asked.
    assert_reply_code(&mut ws, subscribe(1, "room:9"), "forbidden").await;
    assert!(backend.seen("/subscribe").is_empty());
    // The host allows, the backend denies.
    backend.set("/subscribe", Reply::Json(json!(false)));
    assert_reply_code(&mut ws, subscribe(2, "room:1"), "forbidden").await;
    assert_eq!(backend.seen("/subscribe").len(), 1);
}

// ---- failure modes --------------------------------------------------------------------------------

/// Each bad backend answer at the handshake, its status, code and metric result.
#[tokio::test]
async fn every_connect_failure_fails_closed_with_its_code() {
    let backend = allowing_backend().await;
    let (server, recorder) = server(&backend, "timeout_secs = 0.3\nmax_response_bytes = 64").await;
    let long = format!("{{\"claims\": {{\"pad\": \"{}\"}}}}", "x".repeat(100));
    let cases: Vec<(Reply, u16, &str, &str)> = vec![
        (Reply::Raw(500, "", String::new()), 503, "proxy_unavailable", "http_status"),
        (Reply::Raw(403, "", "true".into()), 503, "proxy_unavailable", "http_status"),
        (Reply::Raw(200, "", "{not json".into()), 403, "rejected_by_hook", "malformed"),
        (Reply::Json(json!({"allow": true})), 403, "rejected_by_hook", "invalid"),
        (Reply::Json(json!({"claims": {"sub": "mallory"}})), 403, "rejected_by_hook", "invalid"),
        (Reply::Raw(200, "", long.clone()), 403, "rejected_by_hook", "too_large"),
        (Reply::Unsized(long), 403, "rejected_by_hook", "too_large"),
        (Reply::Hang, 503, "hook_timeout", "timeout"),
    ];
    for (reply, status, code, result) in cases {
        backend.set("/connect", reply.clone());
        handshake_status(&server, "alice").await.assert_refused(status, code);
        recorder.wait_for("connect", result).await;
        assert!(proxy_requests(&server, "connect", result).await >= 1.0, "{reply:?}");
    }
    // The backend goes down.
    backend.stop();
    handshake_status(&server, "alice").await.assert_refused(503, "proxy_unavailable");
    recorder.wait_for("connect", "unreachable").await;
    assert_eq!(proxy_requests(&server, "connect", "ok").await, 0.0, "nothing was admitted");
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let backend = allowing_backend().await;
    let (server, recorder) = server(&backend, "").await;
    let elsewhere = backend.url("/elsewhere");
    backend.set("/elsewhere", Reply::Json(json!(true)));
    backend.set(
        "/connect",
        Reply::Raw(307, Box::leak(format!("Location: {elsewhere}\r\n").into_boxed_str()), String::new()),
    );
    handshake_status(&server, "alice").await.assert_refused(503, "proxy_unavailable");
    recorder.wait_for("connect", "http_status").await;
    assert!(backend.seen("/elsewhere").is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn over_the_concurrency_cap_fails_at_once() {
    let backend = allowing_backend().await;
    backend.set("/connect", Reply::Hang);
    let (server, recorder) = server(&backend, "timeout_secs = 1.5\nmax_concurrency = 1").await;
    let token = server.token("alice");
    let first = {
        let addr = server.addr;
        let request = RawRequest::authorized(&token);
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            support::write_all(&mut stream, &request.to_bytes()).await;
            support::read_response(&mut stream).await
        })
    };
    eventually("the first request in flight", || !backend.seen("/connect").is_empty()).await;
    handshake_status(&server, "alice").await.assert_refused(503, "proxy_unavailable");
    recorder.wait_for("connect", "overloaded").await;
    assert_eq!(backend.seen("/connect").len(), 1, "the refused request never reached the backend");
    first.await.expect("the first handshake").assert_refused(503, "hook_timeout");
}

#[tokio::test]
async fn in_band_failures_fail_closed_with_their_codes() {
    let backend = allowing_backend().await;
    let (server, recorder) = server(&backend, "timeout_secs = 0.3").await;
    let mut ws = server.session("alice").await;
    backend.set("/subscribe", Reply::Raw(502, "", String::new()));
    assert_reply_code(&mut ws, subscribe(1, "room:1"), "proxy_unavailable").await;
    backend.set("/subscribe", Reply::Raw(200, "", "yes".into()));
    assert_reply_code(&mut ws, subscribe(2, "room:1"), "forbidden").await;
    backend.set("/subscribe", Reply::Json(json!({"allow": true})));
    assert_reply_code(&mut ws, subscribe(3, "room:1"), "forbidden").await;
    backend.set("/publish", Reply::Hang);
    assert_reply_code(&mut ws, publish(4, "room:1"), "hook_timeout").await;
    recorder.wait_for("publish", "timeout").await;

    backend.set("/rpc", Reply::Raw(500, "", String::new()));
    let reply = request(&mut ws, &rpc(5, "orders.create")).await;
    assert_eq!(
        (reply["code"].as_str(), reply["message"].as_str()),
        (Some("rpc_failed"), Some("the backend failed to answer"))
    );
    backend.set("/rpc", Reply::Json(json!({"result": 1, "extra": 2})));
    assert_reply_code(&mut ws, rpc(6, "orders.create"), "rpc_failed").await;
    backend.set("/rpc", Reply::Hang);
    assert_reply_code(&mut ws, rpc(7, "orders.create"), "hook_timeout").await;
    for (endpoint, result) in
        [("subscribe", "http_status"), ("subscribe", "malformed"), ("subscribe", "invalid"), ("rpc", "timeout")]
    {
        recorder.wait_for(endpoint, result).await;
    }
    // The session is still usable, and nothing was subscribed.
    backend.set("/subscribe", Reply::Json(json!(true)));
    assert_ok(&mut ws, subscribe(8, "room:1")).await;
}

// ---- configuration --------------------------------------------------------------------------------

fn config_with(proxy: &str) -> Result<Config, wsguard::ConfigError> {
    Config::from_toml_str(&format!(
        "[auth]\nhmac_secret_env = \"X\"\nissuer = \"i\"\naudience = \"a\"\n[[rpc]]\nmethod = \"m\"\n[proxy]\n{proxy}"
    ))
}

#[test]
fn bad_proxy_configs_are_refused_with_their_keys() {
    let cases = [
        ("[proxy.connect]\nurl = \"http://backend.example/c\"", "proxy.connect.url"),
        ("[proxy.connect]\nurl = \"ftp://127.0.0.1/c\"", "proxy.connect.url"),
        (
            "forward_headers = [\"authorization\"]\n[proxy.connect]\nurl = \"http://127.0.0.1/c\"",
            "proxy.forward_headers[0]",
        ),
        ("forward_headers = [\"sec-websocket-protocol\"]", "proxy.forward_headers[0]"),
        ("forward_headers = [\"connection\"]", "proxy.forward_headers[0]"),
        ("[proxy.rpc_methods.other]\nurl = \"http://127.0.0.1/c\"", "proxy.rpc_methods.other"),
        ("[proxy.publish]\nurl = \"https://b.example/p\"\nmax_concurrency = 0", "proxy.publish"),
    ];
    for (text, key) in cases {
        let error = config_with(text).expect_err(text);
        assert_eq!(error.code(), ErrorCode::ConfigInvalid, "{text}");
        assert!(error.problems().iter().any(|p| p.path == key), "{key} not in {error}");
    }
    assert!(config_with("[proxy.connect]\nurl = \"https://backend.example/c\"\ntimeout_secs = 1").is_ok());
}

#[tokio::test]
async fn an_unset_secret_refuses_to_start() {
    let dir = support::TempDir::new();
    let hmac = dir.write("hmac.secret", support::SECRET);
    let short = dir.write("short.secret", b"short");
    for (secret, key) in [
        ("secret_env = \"WSGUARD_PROXY_TEST_NEVER_SET\"".to_string(), "proxy.secret_env"),
        (format!("secret_file = {:?}", short.display().to_string()), "proxy.secret_file"),
    ] {
        let config = Config::from_toml_str(&format!(
            "[auth]\nhmac_secret_file = {:?}\nissuer = \"i\"\naudience = \"a\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [observability]\nmetrics_listen = \"\"\n[proxy]\n{secret}\n[proxy.connect]\nurl = \"http://127.0.0.1:1/c\"\n",
            hmac.display().to_string()
        ))
        .expect("valid config");
        let error = Server::bind(config).await.err().expect("refused");
        assert_eq!(error.code(), ErrorCode::ConfigSecretMissing, "{error}");
        assert!(error.to_string().contains(key), "{error}");
    }
}
