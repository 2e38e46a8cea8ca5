//! The `wsguard` binary from the outside: config errors, token minting, development mode and
//! signal handling. Every wait is bounded.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BIN: &str = env!("CARGO_BIN_EXE_wsguard");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsguard-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_config(dir: &std::path::Path, body: &str) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-test-secret\n").expect("secret");
    let path = dir.join("wsguard.toml");
    let text = format!(
        "[observability]\nmetrics_listen = \"127.0.0.1:0\"\nlog_format = \"pretty\"\n[auth]\nhmac_secret_file = \"{}\"\nissuer = \"https://issuer.test\"\naudience = \"wsguard\"\n{body}",
        secret.display()
    );
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn check_config_reports_every_problem_with_its_path() {
    let dir = scratch("check");
    let path = write_config(&dir, "[server]\nlisen = \"127.0.0.1:1\"\nmax_conections = 5\n[origins]\nalow = []\n");
    let out = Command::new(BIN).args(["check-config"]).arg(&path).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["server.lisen", "server.max_conections", "origins.alow"] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let dir = scratch("ok");
    let path = write_config(&dir, "");
    let out = Command::new(BIN).args(["check-config"]).arg(&path).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("max_connections = 10000"), "{stdout}");
    assert!(!stdout.contains("test-secret"), "secret leaked: {stdout}");
}

#[test]
fn check_config_reports_a_missing_secret_file() {
    let dir = scratch("missing");
    let path = write_config(&dir, "");
    std::fs::remove_file(dir.join("secret")).expect("rm");
    let out = Command::new(BIN).args(["check-config"]).arg(&path).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.hmac_secret_file"));
}

#[test]
fn token_mints_a_jwt_with_the_requested_claims() {
    use base64::Engine;
    let dir = scratch("token");
    let path = write_config(&dir, "");
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "alice",
            "--role",
            "admin",
            "--scope",
            "orders:read",
            "--claim",
            "tenant=acme",
            "--ttl-secs",
            "60",
            "--config",
        ])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf8");
    let claims = token.trim().split('.').nth(1).expect("payload");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("b64");
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("json");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["roles"], serde_json::json!(["admin"]));
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["iss"], "https://issuer.test");
    assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 60);
}

/// Kills the child if a test fails midway.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wsguard serve` in development mode on a free port is not possible (the embedded config
/// pins 8080), so the SIGTERM test uses a config file with port 0 and reads the bound address from
/// the log.
fn start_server(dir: &std::path::Path) -> (Running, String) {
    let path = write_config(
        dir,
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\n[origins]\nallow_missing = true\n",
    );
    let (child, rx) = serve_logging(&path, &[]);
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("server did not log its address");
        if let Some(rest) = line.split("local_addr").nth(1) {
            let addr: String =
                rest.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| !c.is_whitespace()).collect();
            let addr = addr.trim_end_matches(|c: char| !c.is_ascii_digit()).to_string();
            break addr;
        }
    };
    (child, addr)
}

/// Starts `wsguard serve --config path` at log level info with extra environment variables;
/// its log lines (stderr) arrive on the receiver.
fn serve_logging(path: &std::path::Path, env: &[(&str, &str)]) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(path)
        .env("WSGUARD_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Running(child), rx)
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_zero() {
    let dir = scratch("sigterm");
    let (mut server, addr) = start_server(&dir);
    let token = Command::new(BIN)
        .args(["token", "--sub", "bob", "--config"])
        .arg(dir.join("wsguard.toml"))
        .output()
        .expect("token");
    let token = String::from_utf8(token.stdout).expect("utf8");
    let mut request = format!("ws://{addr}/ws").into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().expect("header"));
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), client_async(request, tcp))
        .await
        .expect("timeout")
        .expect("upgrade");

    let status = Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("no close frame in time");
    assert_eq!(close, Some(1001));
    let exit = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(status) = server.0.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("server did not exit");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn dev_mode_prints_a_token_and_a_connect_command() {
    // Development mode binds 127.0.0.1:8080, the admin listener 127.0.0.1:9090 and the server API
    // 127.0.0.1:8081; skip quietly when something else holds one of them.
    if ["127.0.0.1:8080", "127.0.0.1:9090", "127.0.0.1:8081"].iter().any(|a| std::net::TcpListener::bind(a).is_err()) {
        return;
    }
    let mut child =
        Running(Command::new(BIN).arg("serve").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn"));
    let stdout = child.0.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("=====") || l.contains("DEVELOPMENT"))
        .collect();
    let text = lines.join("\n");
    assert!(text.contains("DEVELOPMENT MODE"), "{text}");
    let command = lines.iter().find(|l| l.contains(" connect ws://127.0.0.1:8080/ws")).expect("connect command");
    let token = command.split("--token ").nth(1).expect("token");
    assert_eq!(token.split('.').count(), 3);
    // The printed command really connects: send a ping, expect the pong.
    let mut args = command.split_whitespace();
    let exe = args.next().expect("exe");
    let mut client = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client");
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().expect("stdin");
        writeln!(stdin, "{{\"action\":\"ping\",\"id\":9}}").expect("write");
        let mut reader = BufReader::new(client.stdout.take().expect("stdout"));
        let mut reply = String::new();
        reader.read_line(&mut reply).expect("reply");
        assert_eq!(reply.trim(), r#"{"type":"pong","id":9}"#);
    }
    let _ = client.wait();
    // The printed server API key works with `wsguard api`.
    let api_line = lines.iter().find(|l| l.starts_with("WSGUARD_API_KEY=")).expect("the API line");
    let key = api_line.split_whitespace().next().and_then(|k| k.strip_prefix("WSGUARD_API_KEY=")).expect("key");
    let out = Command::new(BIN)
        .args(["api", "--url", "http://127.0.0.1:8081", "stats"])
        .env("WSGUARD_API_KEY", key)
        .output()
        .expect("run wsguard api");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sessions_active"));
}

/// Reads `/readyz`'s status code from the admin listener.
fn readyz(admin: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The broker password comes from the environment variable named by `cluster.password_env`,
/// never from the config text: right password, the node becomes ready; wrong one, it says why.
#[test]
fn broker_password_comes_from_the_environment() {
    let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
    if !found {
        assert!(
            std::env::var("WSGUARD_REQUIRE_BROKERS").as_deref() != Ok("1"),
            "redis-server is not installed, and WSGUARD_REQUIRE_BROKERS=1 forbids skipping"
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let password = format!("pw-{}", std::process::id());
    let _redis = Running(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--requirepass", &password])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    let dir = scratch("broker-password");
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[origins]\nallow_missing = true\n[cluster]\nbroker = \"redis\"\n\
             url = \"redis://127.0.0.1:{port}\"\npassword_env = \"WSGUARD_TEST_BROKER_PASSWORD\"\nreconnect_max_secs = 0.2\n"
        ),
    );
    let serve = |password: &str| serve_logging(&path, &[("WSGUARD_TEST_BROKER_PASSWORD", password)]);
    let admin_of = |rx: &std::sync::mpsc::Receiver<String>| loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("server did not log its admin address");
        if let Some(rest) = line.split("metrics").nth(1).filter(|_| line.contains("listening")) {
            let addr: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            break addr;
        }
    };

    let (_good, rx) = serve(&password);
    let admin = admin_of(&rx);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while readyz(&admin) != Some(200) {
        assert!(std::time::Instant::now() < deadline, "never ready with the right password");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (_bad, rx) = serve("wrong-password");
    let admin = admin_of(&rx);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("a log line");
        if line.contains("broker unreachable") {
            assert!(line.to_lowercase().contains("pass"), "the reason names the password problem: {line}");
            break;
        }
    }
    assert_eq!(readyz(&admin), Some(503));

    // A password in the URL is refused before anything starts.
    let bad =
        write_config(&dir, &format!("[cluster]\nbroker = \"redis\"\nurl = \"redis://:{password}@127.0.0.1:{port}\"\n"));
    let out = Command::new(BIN).args(["check-config"]).arg(&bad).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster.url") && stderr.contains("password_env"), "{stderr}");
    assert!(!stderr.contains(&password), "the password is echoed: {stderr}");
}

/// `wsguard serve` with an `[api]`, driven through `wsguard api ...`.
#[test]
fn api_subcommands_drive_a_running_server() {
    const KEY: &str = "cli-test-api-key-0123456789";
    let dir = scratch("api");
    let path = write_config(
        &dir,
        "[server]\nlisten = \"127.0.0.1:0\"\n[origins]\nallow_missing = true\n[api]\nlisten = \"127.0.0.1:0\"\nkey_env = \"WSGUARD_TEST_API_KEY\"\n",
    );
    let (_child, rx) = serve_logging(&path, &[("WSGUARD_TEST_API_KEY", KEY)]);
    let api_addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("server did not log its API address");
        if let Some(rest) = line.split("api=Some(").nth(1) {
            break rest.split(')').next().expect("address").to_string();
        }
    };
    let url = format!("http://{api_addr}");
    let api = |key: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .arg("api")
            .args(args)
            .env("WSGUARD_API_URL", &url)
            .env("WSGUARD_API_KEY", key)
            .output()
            .expect("run wsguard api");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (ok, stdout, stderr) = api(KEY, &["stats"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("sessions_active: 0"), "{stdout}");
    let (ok, stdout, _) = api(KEY, &["--json", "stats"]);
    assert!(ok);
    let stats: serde_json::Value = serde_json::from_str(stdout.trim()).expect("--json prints JSON");
    assert_eq!(stats["sessions_active"], 0);

    let (ok, stdout, stderr) = api(KEY, &["publish", "news", r#"{"text":"hi"}"#]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("queued for 0 session(s)"), "{stdout}");
    let (ok, _, stderr) = api(KEY, &["publish", "bad channel", "{}"]);
    assert!(!ok);
    assert!(stderr.contains("invalid_channel"), "{stderr}");

    let (ok, _, stderr) = api(KEY, &["ban", "--user", "mallory", "--duration-secs", "60"]);
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = api(KEY, &["bans"]);
    assert!(ok && stdout.contains("user mallory") && stdout.contains("operator"), "{stdout}");
    let (ok, stdout, _) = api(KEY, &["unban", "--user", "mallory"]);
    assert!(ok && stdout.contains("ban lifted"), "{stdout}");
    let (ok, stdout, _) = api(KEY, &["bans"]);
    assert!(ok && stdout.contains("no bans"), "{stdout}");

    let (ok, stdout, stderr) = api(KEY, &["reload"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("configuration reloaded"), "{stdout}");

    let (ok, stdout, stderr) = api(KEY, &["send", "--user", "alice", r#"{"n":1}"#]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("0 session(s) matched"), "{stdout}");
    let (ok, _, stderr) = api(KEY, &["send", "--session", "999999", "{}"]);
    assert!(!ok && stderr.contains("unknown_session") && stderr.contains("404"), "{stderr}");
    let (ok, stdout, stderr) = api(KEY, &["subscribe", "--user", "alice", "news"]);
    assert!(ok && stdout.contains("0 changed"), "{stdout}{stderr}");
    let (ok, _, stderr) = api(KEY, &["disconnect", "--user", "alice", "--code", "4000"]);
    assert!(!ok && stderr.contains("invalid_argument"), "{stderr}");
    let (ok, stdout, stderr) = api(KEY, &["sessions", "--limit", "5"]);
    assert!(ok && stdout.starts_with("(node "), "{stdout}{stderr}");
    let (ok, stdout, _) = api(KEY, &["--json", "channels", "--pattern", "room:{id}"]);
    assert!(ok);
    let page: serde_json::Value = serde_json::from_str(stdout.trim()).expect("--json prints JSON");
    assert_eq!(page["channels"], serde_json::json!([]));
    let (ok, _, stderr) = api(KEY, &["sessions", "--limit", "0"]);
    assert!(!ok && stderr.contains("invalid_argument"), "{stderr}");
    let (ok, _, stderr) = api(KEY, &["history", "news"]);
    assert!(!ok && stderr.contains("history_not_kept"), "{stderr}");
    let (ok, _, stderr) = api(KEY, &["presence-stats", "news"]);
    assert!(!ok && stderr.contains("presence_not_tracked"), "{stderr}");

    let (ok, _, stderr) = api("not-the-key-not-the-key", &["stats"]);
    assert!(!ok);
    assert!(stderr.contains("api_unauthorized") && stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains(KEY));
}
