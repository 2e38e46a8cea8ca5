//! `wsguard api <operation>`: a client of the server API (`[api]`, docs/API.md). URL and key come
//! from flags or `WSGUARD_API_URL` / `WSGUARD_API_KEY`; HTTPS trusts `--ca-file` (or the system
//! store) and can present a client certificate. Output is readable, or the answer's JSON with
//! `--json`; a refused call exits non-zero and prints the code name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// Time allowed for one call.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ApiArgs {
    /// Base URL of the server API, e.g. `http://127.0.0.1:8081`.
    #[arg(long, env = "WSGUARD_API_URL", default_value = "http://127.0.0.1:8081")]
    url: String,
    /// The API key (sent as `Authorization: Bearer`). Prefer the environment variable: a flag
    /// shows in the process list.
    #[arg(long, env = "WSGUARD_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// PEM CA bundle to trust for an `https://` URL (default: the system store).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM client private key (mutual TLS).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Print the answer's JSON as is.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    operation: Operation,
}

#[derive(Subcommand)]
enum Operation {
    /// Publish a JSON object to a channel.
    Publish {
        /// The channel.
        channel: String,
        /// The payload: a JSON object.
        payload: String,
    },
    /// Publish one JSON object to several channels (all checked first: one invalid, none sent).
    Broadcast {
        /// The payload: a JSON object.
        payload: String,
        /// The channels.
        #[arg(required = true)]
        channels: Vec<String>,
    },
    /// Close one session (by id) or every session of a user, with a close code (4001 by
    /// default) and a reason.
    Disconnect {
        #[command(flatten)]
        target: TargetArgs,
        /// The close code: 4000-4999 except those wsguard sends for its own reasons.
        #[arg(long)]
        code: Option<u16>,
        /// The close reason (at most 123 bytes).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a JSON object to a user's sessions or one session, outside any channel (a `push`).
    Send {
        #[command(flatten)]
        target: TargetArgs,
        /// The payload: a JSON object.
        payload: String,
    },
    /// Subscribe a user's sessions or one session to a channel (no channel rule is asked).
    Subscribe {
        #[command(flatten)]
        target: TargetArgs,
        /// The channel.
        channel: String,
    },
    /// Remove a channel from a user's sessions or one session.
    Unsubscribe {
        #[command(flatten)]
        target: TargetArgs,
        /// The channel.
        channel: String,
    },
    /// List the sessions of the node that takes the call (of one user, with `--user`).
    Sessions {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// The previous page's `next_cursor`.
        #[arg(long)]
        cursor: Option<u64>,
        /// Entries per page (1-1000; 100 by default).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// List the channels with subscribers on the node that takes the call.
    Channels {
        /// A channel-rule pattern, e.g. `room:{id}`.
        #[arg(long)]
        pattern: Option<String>,
        /// The previous page's `next_cursor`.
        #[arg(long)]
        cursor: Option<String>,
        /// Entries per page (1-1000; 100 by default).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Read a channel's kept publications.
    History {
        /// The channel.
        channel: String,
        /// Entries (1-1000; 100 by default).
        #[arg(long)]
        limit: Option<u64>,
        /// Page after this offset (with `--since-epoch`).
        #[arg(long, requires = "since_epoch")]
        since_offset: Option<u64>,
        /// The epoch `--since-offset` belongs to.
        #[arg(long, requires = "since_offset")]
        since_epoch: Option<String>,
        /// Newest first.
        #[arg(long)]
        newest_first: bool,
    },
    /// List a channel's members (cluster-wide).
    Presence {
        /// The channel.
        channel: String,
        /// Entries (1-1000; 100 by default).
        #[arg(long)]
        limit: Option<u64>,
        /// The previous page's `next`.
        #[arg(long)]
        after: Option<String>,
    },
    /// Count a channel's users and sessions (cluster-wide).
    PresenceStats {
        /// The channel.
        channel: String,
    },
    /// Revoke tokens by `jti`, subject, or issue time.
    Revoke {
        /// A token id.
        #[arg(long, group = "what")]
        jti: Option<String>,
        /// Every token of this subject issued up to now.
        #[arg(long, group = "what")]
        sub: Option<String>,
        /// Every token issued before this Unix time (seconds).
        #[arg(long, group = "what")]
        issued_before: Option<u64>,
    },
    /// Ban an IP or a user for a time.
    Ban {
        /// A client IP.
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        ip: Option<String>,
        /// A user (`sub`).
        #[arg(long)]
        user: Option<String>,
        /// Length in seconds.
        #[arg(long)]
        duration_secs: f64,
    },
    /// Lift a ban.
    Unban {
        /// A client IP.
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        ip: Option<String>,
        /// A user (`sub`).
        #[arg(long)]
        user: Option<String>,
    },
    /// List the bans in force.
    Bans,
    /// Show the server's counters.
    Stats,
    /// Make the server re-read its configuration file (as SIGHUP does).
    Reload,
}

/// Which sessions an operation reaches: a user's, or one session (on a named node).
#[derive(Args)]
struct TargetArgs {
    /// A session id.
    #[arg(long, conflicts_with = "user", required_unless_present = "user")]
    session: Option<u64>,
    /// A user (`sub`): every session of the user, on every node.
    #[arg(long)]
    user: Option<String>,
    /// With `--session`: the node that holds it (`cluster.node_id`).
    #[arg(long, requires = "session")]
    node: Option<String>,
}

impl TargetArgs {
    fn body(&self) -> Value {
        without_nulls(json!({"session_id": self.session, "user": self.user, "node": self.node}))
    }
}

/// `path?name=value&...`, absent values left out.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() { path.to_string() } else { format!("{path}?{query}") }
}

impl Operation {
    /// Method, path and body.
    fn request(&self) -> Result<(reqwest::Method, String, Option<Value>), String> {
        let object = |text: &str| -> Result<Value, String> {
            match serde_json::from_str::<Value>(text) {
                Ok(value @ Value::Object(_)) => Ok(value),
                Ok(_) => Err("the payload must be a JSON object".into()),
                Err(e) => Err(format!("the payload is not JSON: {e}")),
            }
        };
        let post = |path: &str, body| Ok((reqwest::Method::POST, path.to_string(), Some(body)));
        let get = |path: String| Ok((reqwest::Method::GET, path, None));
        let text = |v: &Option<u64>| v.map(|n| n.to_string());
        match self {
            Operation::Publish { channel, payload } => {
                post("/api/v1/publish", json!({"channel": channel, "payload": object(payload)?}))
            }
            Operation::Broadcast { payload, channels } => {
                post("/api/v1/broadcast", json!({"channels": channels, "payload": object(payload)?}))
            }
            Operation::Disconnect { target, code, reason } => {
                let mut body = target.body();
                body["code"] = json!(code);
                body["reason"] = json!(reason);
                post("/api/v1/disconnect", without_nulls(body))
            }
            Operation::Send { target, payload } => {
                let mut body = target.body();
                body["payload"] = object(payload)?;
                post("/api/v1/send", body)
            }
            Operation::Subscribe { target, channel } | Operation::Unsubscribe { target, channel } => {
                let mut body = target.body();
                body["channel"] = json!(channel);
                let path = if matches!(self, Operation::Subscribe { .. }) {
                    "/api/v1/subscribe"
                } else {
                    "/api/v1/unsubscribe"
                };
                post(path, body)
            }
            Operation::Sessions { user, cursor, limit } => get(with_query(
                "/api/v1/sessions",
                &[("user", user.clone()), ("cursor", text(cursor)), ("limit", text(limit))],
            )),
            Operation::Channels { pattern, cursor, limit } => get(with_query(
                "/api/v1/channels",
                &[("pattern", pattern.clone()), ("cursor", cursor.clone()), ("limit", text(limit))],
            )),
            Operation::History { channel, limit, since_offset, since_epoch, newest_first } => get(with_query(
                "/api/v1/history",
                &[
                    ("channel", Some(channel.clone())),
                    ("limit", text(limit)),
                    ("since_offset", text(since_offset)),
                    ("since_epoch", since_epoch.clone()),
                    ("newest_first", newest_first.then(|| "true".to_string())),
                ],
            )),
            Operation::Presence { channel, limit, after } => get(with_query(
                "/api/v1/presence",
                &[("channel", Some(channel.clone())), ("limit", text(limit)), ("after", after.clone())],
            )),
            Operation::PresenceStats { channel } => {
                get(with_query("/api/v1/presence_stats", &[("channel", Some(channel.clone()))]))
            }
            Operation::Revoke { jti, sub, issued_before } => {
                post("/api/v1/revoke", without_nulls(json!({"jti": jti, "sub": sub, "issued_before": issued_before})))
            }
            Operation::Ban { ip, user, duration_secs } => {
                post("/api/v1/ban", without_nulls(json!({"ip": ip, "user": user, "duration_secs": duration_secs})))
            }
            Operation::Unban { ip, user } => post("/api/v1/unban", without_nulls(json!({"ip": ip, "user": user}))),
            Operation::Bans => get("/api/v1/bans".into()),
            Operation::Stats => get("/api/v1/stats".into()),
            Operation::Reload => post("/api/v1/reload", json!({})),
        }
    }
}

/// Absent options are left out of the body (the API refuses `null` for most fields' siblings).
fn without_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn run(args: ApiArgs) -> ExitCode {
    let (method, path, body) = match args.operation.request() {
        Ok(request) => request,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match client(&args) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let mut request = client.request(method, &url);
    if let Some(key) = &args.key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("error: cannot reach {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let error = &answer["error"];
        let name = error["name"].as_str().unwrap_or("unknown");
        if args.json {
            println!("{answer}");
        }
        eprintln!(
            "error: {name} ({}, HTTP {}): {}",
            error["code"],
            status.as_u16(),
            error["message"].as_str().unwrap_or("")
        );
        if let Some(problems) = error["problems"].as_array() {
            for problem in problems {
                eprintln!(
                    "  {}: {}",
                    problem["path"].as_str().unwrap_or(""),
                    problem["message"].as_str().unwrap_or("")
                );
            }
        }
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{answer}");
    } else {
        print!("{}", readable(&args.operation, &answer));
    }
    ExitCode::SUCCESS
}

/// The answer for a human.
fn readable(operation: &Operation, answer: &Value) -> String {
    match operation {
        Operation::Publish { .. } | Operation::Broadcast { .. } => {
            format!("queued for {} session(s) on the node that took the call\n", answer["delivered"])
        }
        Operation::Disconnect { .. } => {
            format!(
                "{} session(s) disconnected on node {}\n",
                answer["disconnected"],
                answer["node"].as_str().unwrap_or("")
            )
        }
        Operation::Send { .. } | Operation::Subscribe { .. } | Operation::Unsubscribe { .. } => format!(
            "node {}: {} session(s) matched, {} changed{}{}\n",
            answer["node"].as_str().unwrap_or(""),
            answer["matched"],
            answer["changed"],
            if answer["at_limit"].as_u64().unwrap_or(0) > 0 {
                format!(", {} at limits.max_subscriptions", answer["at_limit"])
            } else {
                String::new()
            },
            if answer["is_forwarded"] == true { "; forwarded to the other nodes" } else { "" },
        ),
        Operation::Sessions { .. } => listing(answer, "sessions", |s| {
            let subscriptions: Vec<&str> =
                s["subscriptions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            format!(
                "{}\t{}\t{}\t{}\t{}",
                s["id"],
                s["user"].as_str().unwrap_or(""),
                s["client_ip"].as_str().unwrap_or(""),
                s["connected_at_ms"],
                subscriptions.join(",")
            )
        }),
        Operation::Channels { .. } => {
            listing(answer, "channels", |c| format!("{}\t{}", c["channel"].as_str().unwrap_or(""), c["subscribers"]))
        }
        Operation::History { .. } => {
            let mut text = format!("epoch {} offset {}\n", answer["epoch"], answer["offset"]);
            for p in answer["publications"].as_array().into_iter().flatten() {
                text.push_str(&format!("{}\t{}\n", p["offset"], p["payload"]));
            }
            text
        }
        Operation::Presence { .. } => {
            let mut text = String::new();
            for m in answer["members"].as_array().into_iter().flatten() {
                text.push_str(&format!("{}\t{} session(s)\n", m["user"].as_str().unwrap_or(""), m["sessions"]));
            }
            if let Some(next) = answer["next"].as_str() {
                text.push_str(&format!("more: --after {next}\n"));
            }
            if text.is_empty() { "no members\n".into() } else { text }
        }
        Operation::PresenceStats { .. } => format!("{} user(s), {} session(s)\n", answer["users"], answer["clients"]),
        Operation::Revoke { .. } => "revoked\n".into(),
        Operation::Ban { .. } if answer["changed"] == true => "banned\n".into(),
        Operation::Ban { .. } => "not banned: the target is exempt (abuse.exempt)\n".into(),
        Operation::Unban { .. } if answer["changed"] == true => "ban lifted\n".into(),
        Operation::Unban { .. } => "no ban on the node that took the call (lifted cluster-wide all the same)\n".into(),
        Operation::Reload => "configuration reloaded\n".into(),
        Operation::Bans => {
            let bans = answer["bans"].as_array().cloned().unwrap_or_default();
            if bans.is_empty() {
                return "no bans\n".into();
            }
            bans.iter()
                .map(|ban| {
                    let who = match (ban["ip"].as_str(), ban["user"].as_str()) {
                        (Some(ip), _) => format!("ip {ip}"),
                        (None, Some(user)) => format!("user {user}"),
                        (None, None) => "?".into(),
                    };
                    format!(
                        "{who}\t{}\t{:.0} s left\n",
                        ban["reason"].as_str().unwrap_or(""),
                        ban["remaining_secs"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        }
        Operation::Stats => match answer.as_object() {
            Some(map) => map.iter().map(|(k, v)| format!("{k}: {v}\n")).collect(),
            None => format!("{answer}\n"),
        },
    }
}

/// A listing page: one line per entry, then the node it describes and the next cursor.
fn listing(answer: &Value, key: &str, line: impl Fn(&Value) -> String) -> String {
    let mut text: String = answer[key].as_array().into_iter().flatten().map(|e| line(e) + "\n").collect();
    text.push_str(&format!("(node {}", answer["node"].as_str().unwrap_or("")));
    if !answer["next_cursor"].is_null() {
        text.push_str(&format!("; more: --cursor {}", answer["next_cursor"]));
    }
    text.push_str(")\n");
    text
}

fn client(args: &ApiArgs) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &args.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let tls = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .no_proxy()
        .user_agent(concat!("wsguard-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
