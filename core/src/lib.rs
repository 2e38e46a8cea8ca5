//! # wsguard — a hardened real-time WebSocket pub/sub server
//!
//! A request's path through the crate:
//!
//! 1. **server** accepts a TCP connection (bounded by `server.max_pending_handshakes`), runs TLS
//!    when `[tls]` is configured, and hands the stream to
//! 2. **handshake**, which reads the upgrade request within a deadline and a byte cap, resolves the
//!    client IP (trusted proxies only), applies the handshake rate limit, checks path, method,
//!    upgrade headers, the Origin allowlist and global capacity, finds the token in the configured
//!    sources, has **auth** verify it (pinned algorithms, issuer, audience, lifetime), takes the
//!    per-IP and per-user quota slots and asks the host's `authenticate` hook and the backend
//!    **proxy**'s `connect` endpoint, when configured. Any refusal is an
//!    HTTP status with a stable code, before the upgrade.
//! 3. **session** runs one task per connection over its **transport** (reads and writes around
//!    tungstenite, the close handshake): tungstenite enforces the frame and message caps,
//!    **protocol** decodes each text frame strictly (unknown actions and fields refused), the
//!    host's `authorize` hook (and the backend proxy's `subscribe` / `publish` endpoints) decides
//!    channel access, and **hub** fans publications out, encoded
//!    once, into bounded per-session outboxes. Slow consumers are closed, not buffered.
//!    **presence** counts the subscribers of channels whose rule tracks them, per user and
//!    cluster-wide, and announces a user's first session in and last one out.
//!    On channels whose rule keeps **history**, each publication gets an offset and is retained, so
//!    a subscriber that comes back with `since` recovers exactly what it missed, or learns it
//!    cannot (`gap`).
//! 4. **observe** counts everything and turns refusals and disconnects into `Event`s.
//!
//! ## Quickstart
//!
//! ```no_run
//! # async fn run() -> Result<(), wsguard::Error> {
//! let config = wsguard::Config::from_toml_str(r#"
//!     [origins]
//!     allow = ["https://app.example.com"]
//!     [auth]
//!     hmac_secret_env = "WSGUARD_HMAC_SECRET"
//!     issuer = "https://issuer.example"
//!     audience = "wsguard"
//! "#)?;
//! let server = wsguard::Server::bind(config).await?;
//! let handle = server.handle();
//! tokio::spawn(server.serve());
//! handle.publish("news", &serde_json::json!({"headline": "hello"}))?;
//! handle.shutdown();
//! handle.stopped().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod history;
pub mod hooks;
pub mod host;
mod hub;
pub mod limits;
pub mod observe;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod session;
mod transport;

pub use auth::Identity;
pub use config::{Config, ConfigError, ConfigProblem};
pub use error::{Error, ErrorCode, Surface};
pub use hooks::{Hooks, NoHooks};
pub use observe::{Event, StatsSnapshot};
pub use server::{
    Applied, ChannelInfo, ChannelPage, EmbeddedServer, ReloadError, Server, ServerBuilder, ServerHandle, SessionInfo,
    SessionPage, Target, check_config,
};
pub use session::{Disconnect, Reconnect};
