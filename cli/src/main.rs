//! The `wsguard` command: `serve`, `check-config`, `token` and a small `connect` client.
//! All behaviour lives in the `wsguard` core crate; this file parses arguments, installs the
//! tracing subscriber (only the CLI does) and prints.

mod api;
mod connect;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wsguard::auth::{KeyMaterial, SigningKey, TokenRequest, mint_token};
use wsguard::observe::LogFormat;
use wsguard::{Config, Server};

/// The standalone server's allocator. Every connection holds about a dozen small allocations of
/// its own for its whole life (its task, its I/O registration, the session's shared state, its
/// identity), and glibc's malloc adds a header to each and leaves the holes of the handshake's
/// short-lived buffers between them: measured on 18,000 idle connections, jemalloc's size classes
/// take about a tenth less memory per connection (docs/PERFORMANCE.md, "Idle memory"). Embedding
/// hosts (C, Python, Node) keep their process's allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread gives memory freed by a burst
/// (handshakes, a busy connection's read and write buffers, a drained outbox) back to the system
/// about a second after it was last used, rather than only when a later allocation happens to
/// look (so an idle server's RSS follows its connections, not its peak). `_RJEM_MALLOC_CONF`
/// in the environment still overrides them.
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code, reason = "jemalloc reads its options from this exported symbol")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: Option<&'static std::ffi::c_char> = {
    let options = c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
    // SAFETY: the pointer is to a static C string, valid and NUL-terminated for the program's life.
    Some(unsafe { &*options.as_ptr() })
};

/// Embedded development configuration (see `default.toml`).
const DEV_CONFIG: &str = include_str!("default.toml");
/// Lifetime of the token printed in development mode.
const DEV_TOKEN_TTL_SECS: u64 = 3600;

#[derive(Parser)]
#[command(name = "wsguard", version, about = "Hardened real-time WebSocket pub/sub server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (without --config: development mode on the embedded default config).
    Serve {
        /// TOML (or .json) configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// TOML (or .json) configuration file.
        file: PathBuf,
    },
    /// Mint a token signed with the configured HMAC secret or a private key file.
    Token {
        /// TOML (or .json) configuration file (issuer, audience, algorithms, claim names).
        #[arg(long)]
        config: PathBuf,
        /// The `sub` claim.
        #[arg(long)]
        sub: String,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A scope (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// An extra claim `key=value` (value parsed as JSON when it is valid JSON; repeatable).
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, serde_json::Value)>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 300)]
        ttl_secs: u64,
        /// PEM private key for RS*/PS*/ES*/EdDSA configs.
        #[arg(long)]
        private_key_file: Option<PathBuf>,
        /// `kid` header (JWKS setups).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Connect to a server, send each stdin line as a text frame and print every frame received.
    Connect(connect::ConnectArgs),
    /// Call the server API of a running server (`[api]`, see docs/API.md).
    Api(api::ApiArgs),
}

fn parse_claim(raw: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = raw.split_once('=').ok_or("expected key=value")?;
    if key.is_empty() {
        return Err("empty claim name".into());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = |worker_threads: u32| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 0 {
            builder.worker_threads(worker_threads as usize);
        }
        builder.enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))
    };
    match cli.command {
        Command::Serve { config: path } => {
            let config = match &path {
                Some(path) => Config::from_file(path),
                None => Config::from_toml_str(DEV_CONFIG),
            };
            match config {
                Ok(config) => {
                    init_logging(config.observability.log_format, &config.observability.log_level);
                    match runtime(config.server.worker_threads) {
                        Ok(rt) => rt.block_on(serve(config, path)),
                        Err(e) => fail(&e),
                    }
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Token { config, sub, roles, scopes, claims, ttl_secs, private_key_file, kid } => {
            let request = TokenRequest {
                subject: sub,
                roles,
                scopes,
                extra_claims: claims.into_iter().collect(),
                ttl_secs,
                key_id: kid,
            };
            token(&config, &request, private_key_file)
        }
        Command::Connect(args) => match runtime(1) {
            Ok(rt) => rt.block_on(connect::run(args)),
            Err(e) => fail(&e),
        },
        Command::Api(args) => match runtime(1) {
            Ok(rt) => rt.block_on(api::run(args)),
            Err(e) => fail(&e),
        },
    }
}

/// Installs the process-wide subscriber (only the CLI does this; the library never does).
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSGUARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

#[allow(clippy::print_stderr)]
fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

#[allow(clippy::print_stdout)]
/// Runs the server; without a config file it is development mode. SIGHUP re-reads the file.
async fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    let dev_mode = path.is_none();
    let mut builder = Server::builder(config.clone());
    if let Some(path) = &path {
        builder = builder.config_file(path);
    }
    let mut dev_token = None;
    let mut dev_api_key = None;
    if dev_mode {
        let secret: [u8; 32] = rand::random();
        let request = TokenRequest {
            subject: "dev-user".into(),
            roles: vec!["admin".into()],
            scopes: vec!["demo".into()],
            ttl_secs: DEV_TOKEN_TTL_SECS,
            ..TokenRequest::default()
        };
        match mint_token(&config.auth, &SigningKey::HmacSecret(secret.to_vec()), &request) {
            Ok(t) => dev_token = Some(t),
            Err(e) => return fail(&e.to_string()),
        }
        builder = builder.key_material(KeyMaterial::HmacSecret(secret.to_vec()));
        let key: [u8; 24] = rand::random();
        let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        builder = builder.api_key(key.clone());
        dev_api_key = Some(key);
    }
    let server = match builder.bind().await {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let handle = server.handle();
    if let Some(token) = dev_token {
        let addr = server.local_addr();
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "wsguard".into());
        println!("==================== DEVELOPMENT MODE ====================");
        println!("Embedded default config, fresh random HS256 secret, loopback only.");
        println!("Not for production: pass --config FILE (see docs/CONFIG.md).");
        println!();
        println!("Token for sub=dev-user (valid {DEV_TOKEN_TTL_SECS} s):");
        println!("{token}");
        println!();
        println!("Connect (then type frames such as {{\"action\":\"subscribe\",\"id\":1,\"channel\":\"demo\"}}):");
        println!("{exe} connect ws://{addr}/ws --origin http://localhost:{} --token {token}", addr.port());
        println!();
        println!("Or open the demo page in a browser:");
        println!("http://localhost:{}/#token={token}", addr.port());
        if let (Some(key), Some(api)) = (&dev_api_key, server.api_addr()) {
            println!();
            println!("Server API on http://{api} (key below, random at every start):");
            println!("WSGUARD_API_KEY={key} {exe} api --url http://{api} publish demo '{{\"text\":\"hi\"}}'");
        }
        println!("==========================================================");
    }
    let stop = handle.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(target: "wsguard::cli", "signal received, shutting down");
        stop.shutdown();
    });
    tokio::spawn(reload_on_hangup(handle.clone(), path));
    match server.serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// SIGHUP: re-read the config file and apply it; an invalid file is refused (every problem is
/// logged by the core) and the running configuration stays.
async fn reload_on_hangup(handle: wsguard::ServerHandle, path: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
    while hangups.recv().await.is_some() {
        let Some(path) = &path else {
            tracing::warn!(target: "wsguard::cli", "SIGHUP ignored: development mode has no config file to re-read");
            continue;
        };
        match Config::from_file(path) {
            Ok(config) => match handle.reload(config) {
                Ok(()) => tracing::info!(target: "wsguard::cli", path = %path.display(), "configuration reloaded"),
                Err(e) => {
                    tracing::error!(target: "wsguard::cli", error = %e, "reload refused; the running configuration stays")
                }
            },
            Err(e) => {
                tracing::error!(target: "wsguard::cli", error = %e, "reload refused; the running configuration stays")
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the server still stops through its handle; wait forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[allow(clippy::print_stdout)]
fn check_config(file: &PathBuf) -> ExitCode {
    let config = match Config::from_file(file) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    if let Err(e) = wsguard::check_config(&config) {
        return fail(&e.to_string());
    }
    println!("# {}: valid. Effective configuration (secrets are only ever named, never shown):", file.display());
    print!("{}", config.to_toml_string());
    ExitCode::SUCCESS
}

#[allow(clippy::print_stdout)]
fn token(config_path: &PathBuf, request: &TokenRequest, private_key_file: Option<PathBuf>) -> ExitCode {
    let config = match Config::from_file(config_path) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let key = match private_key_file {
        Some(path) => match std::fs::read(&path) {
            Ok(pem) => SigningKey::PrivateKeyPem(pem),
            Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
        },
        None => match SigningKey::from_config(&config.auth) {
            Ok(k) => k,
            Err(e) => return fail(&e.to_string()),
        },
    };
    match mint_token(&config.auth, &key, request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}
