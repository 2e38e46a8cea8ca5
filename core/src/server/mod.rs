//! `Server` (bind, accept loop, graceful shutdown) and `ServerHandle` (what the host holds to
//! publish, read stats, disconnect and stop).

mod config;
mod connection;
mod embedded;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ServerConfig, TlsConfig};
pub use embedded::EmbeddedServer;

use crate::auth::{JtiCache, KeyMaterial, Revocation, RevocationList, TokenVerifier};
use crate::config::{Config, ConfigError, Problems};
use crate::error::{Error, ErrorCode};
use crate::handshake::{HandshakeGate, OriginAllowlist, TrustedProxies, UPKEEP_INTERVAL};
use crate::hooks::{HookRunner, Hooks, NoHooks};
use crate::hub::Hub;
use crate::limits::{ConnectionQuota, KeyedRate};
use crate::observe::{Event, EventSink, Stats, StatsSnapshot};
use crate::policy::Policy;
use crate::protocol::{ServerFrame, is_within_depth, validate_channel};
use crate::session::{Disconnect, Registry, SessionEnv, SessionLimits};

/// Pause after an accept error (typically EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) struct Shared {
    gate: HandshakeGate,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    ws_config: WebSocketConfig,
    stats: Arc<Stats>,
    events: EventSink,
    hub: Arc<Hub>,
    registry: Arc<Registry>,
    session_env: Arc<SessionEnv>,
    /// Cancelled when shutdown starts: stop accepting, sessions close with 1001.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: remaining tasks are dropped.
    hard_stop: CancellationToken,
    /// Cancelled when `serve` has returned.
    stopped: CancellationToken,
    pending: Arc<Semaphore>,
    grace: Duration,
    /// A grace chosen at shutdown time (`shutdown_within`), overriding `grace`.
    grace_override: std::sync::Mutex<Option<Duration>>,
    next_session_id: AtomicU64,
    local_addr: SocketAddr,
    max_payload_depth: u32,
    revocations: Arc<RevocationList>,
}

/// Builds a [`Server`] with hooks or host-supplied key material.
pub struct ServerBuilder {
    config: Config,
    hooks: Arc<dyn Hooks>,
    key_material: Option<KeyMaterial>,
}

impl ServerBuilder {
    /// Installs the host's hooks (default: [`NoHooks`]).
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Uses this key instead of the configured key source (development mode's random secret).
    pub fn key_material(mut self, material: KeyMaterial) -> Self {
        self.key_material = Some(material);
        self
    }

    /// Loads keys and certificates, binds the listener. Must run inside a tokio runtime.
    ///
    /// Errors: [`Error::Config`] listing every key/certificate problem at once, [`Error::Io`] when
    /// the address cannot be bound.
    pub async fn bind(self) -> Result<Server, Error> {
        let ServerBuilder { config, hooks, key_material } = self;
        let Compiled { verifier, tls, policy } = compile(&config, key_material.as_ref())?;
        let verifier = Arc::new(verifier);
        let listener = TcpListener::bind(&config.server.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.server.listen), e))?;
        let local_addr = listener.local_addr().map_err(|e| Error::io("local address", e))?;

        let mut problems = Problems::default();
        let origins = OriginAllowlist::compile(&config.origins, &mut problems);
        let proxies = TrustedProxies::new(config.server.parsed_trusted_proxies(&mut problems));
        let handshake_timeout =
            problems.positive_secs("server.handshake_timeout_secs", config.server.handshake_timeout_secs);
        let grace = problems.positive_secs("server.shutdown_grace_secs", config.server.shutdown_grace_secs);
        let hook_timeout = problems.positive_secs("hooks.timeout_secs", config.hooks.timeout_secs);
        let write_timeout = problems.positive_secs("limits.write_timeout_secs", config.limits.write_timeout_secs);
        let violation_window =
            problems.positive_secs("limits.violation_window_secs", config.limits.violation_window_secs);
        let ping_interval = problems.positive_secs("limits.ping_interval_secs", config.limits.ping_interval_secs);
        let idle_timeout = problems.positive_secs("limits.idle_timeout_secs", config.limits.idle_timeout_secs);
        let rpc_timeout = problems.positive_secs("limits.rpc_timeout_secs", config.limits.rpc_timeout_secs);
        problems.into_result(ErrorCode::ConfigInvalid)?;

        let limits = &config.limits;
        let stats = Arc::new(Stats::default());
        let hook_runner = HookRunner::new(hooks, hook_timeout);
        let events = EventSink::spawn(
            Arc::clone(hook_runner.hooks()),
            config.hooks.event_queue_capacity as usize,
            Arc::clone(&stats),
        );
        let hub = Arc::new(Hub::new(Arc::clone(&stats)));
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let rate = limits.handshakes_per_ip_per_sec;
        let revocations = Arc::new(RevocationList::new(config.auth.max_token_lifetime_secs + config.auth.leeway_secs));
        let jti_cache = config
            .auth
            .single_use_jti
            .then(|| Arc::new(JtiCache::new(config.auth.jti_cache_capacity as usize, config.auth.leeway_secs)));
        let gate = HandshakeGate {
            path: config.server.path.clone(),
            max_header_bytes: config.server.max_header_bytes,
            origins,
            proxies,
            token_sources: config.auth.token_sources.clone(),
            cookie_name: config.auth.cookie_name.clone(),
            verifier: Arc::clone(&verifier),
            revocations: Arc::clone(&revocations),
            jti_cache: jti_cache.clone(),
            per_ip: ConnectionQuota::new(limits.connections_per_ip),
            per_user: ConnectionQuota::new(limits.connections_per_user),
            rate: KeyedRate::new(rate, (rate * 2.0).ceil().min(f64::from(u32::MAX)) as u32),
            capacity: Arc::new(Semaphore::new(config.server.max_connections as usize)),
            hooks: hook_runner.clone(),
        };
        let session_env = Arc::new(SessionEnv {
            hub: Arc::clone(&hub),
            stats: Arc::clone(&stats),
            events: events.clone(),
            hooks: hook_runner,
            registry: Arc::clone(&registry),
            policy: Arc::new(policy),
            verifier,
            revocations: Arc::clone(&revocations),
            jti_cache,
            user_rate: KeyedRate::new(limits.user_messages_per_sec, (limits.user_messages_per_sec * 2.0).ceil() as u32),
            shutdown: shutdown.clone(),
            limits: SessionLimits {
                max_subscriptions: limits.max_subscriptions as usize,
                max_payload_depth: limits.max_payload_depth,
                outbox_messages: limits.outbound_queue_messages as usize,
                outbox_bytes: limits.outbound_queue_bytes,
                write_timeout,
                leeway_secs: config.auth.leeway_secs,
                messages_per_sec: limits.messages_per_sec,
                message_burst: limits.message_burst,
                bytes_per_sec: limits.bytes_per_sec,
                // Two seconds' worth, and always room for one maximal message.
                bytes_burst: (limits.bytes_per_sec * 2.0).max(limits.max_message_bytes as f64).min(f64::from(u32::MAX))
                    as u32,
                max_violations: limits.max_violations as usize,
                violation_window,
                ping_interval,
                idle_timeout,
                rpc_timeout,
                allow_binary: config.protocol.allow_binary,
                require_seq: config.protocol.require_seq,
                session_bound_claims: config.auth.session_bound_claims.clone(),
            },
        });
        // tungstenite's defaults are not hardened: cap frames and messages to the configured
        // limits, and keep the per-connection buffers small (idle connections stay cheap).
        let ws_config = WebSocketConfig::default()
            .max_frame_size(Some(limits.max_frame_bytes))
            .max_message_size(Some(limits.max_message_bytes))
            .read_buffer_size(4096)
            .write_buffer_size(8192)
            .max_write_buffer_size(8192 + 4 * limits.max_message_bytes);
        let shared = Arc::new(Shared {
            gate,
            tls,
            handshake_timeout,
            ws_config,
            stats,
            events,
            hub,
            registry,
            session_env,
            shutdown,
            hard_stop: CancellationToken::new(),
            stopped: CancellationToken::new(),
            pending: Arc::new(Semaphore::new(config.server.max_pending_handshakes as usize)),
            grace,
            grace_override: std::sync::Mutex::new(None),
            next_session_id: AtomicU64::new(1),
            local_addr,
            max_payload_depth: limits.max_payload_depth,
            revocations,
        });
        tracing::info!(target: "wsguard::server", %local_addr, tls = shared.tls.is_some(), path = %config.server.path, "listening");
        Ok(Server { listener, shared })
    }
}

struct Compiled {
    verifier: TokenVerifier,
    tls: Option<TlsAcceptor>,
    policy: Policy,
}

/// Loads what needs the environment or files (keys, certificates, schemas), reporting every
/// problem of every area at once.
fn compile(config: &Config, material: Option<&KeyMaterial>) -> Result<Compiled, ConfigError> {
    config.validate()?;
    let verifier = TokenVerifier::new(&config.auth, material);
    let tls = config.tls.as_ref().map(tls::acceptor).transpose();
    let policy = Policy::load(&config.channels, &config.rpc);
    match (verifier, tls, policy) {
        (Ok(verifier), Ok(tls), Ok(policy)) => Ok(Compiled { verifier, tls, policy }),
        (verifier, tls, policy) => {
            let errors: Vec<ConfigError> = [verifier.err(), tls.err(), policy.err()].into_iter().flatten().collect();
            let code = errors.first().map_or(ErrorCode::ConfigInvalid, ConfigError::code);
            Err(ConfigError::new(code, errors.iter().flat_map(|e| e.problems().iter().cloned()).collect()))
        }
    }
}

/// Checks everything `bind` would check except binding the address: the config itself, the
/// secret in the environment, key and certificate files. `wsguard check-config` calls this.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    compile(config, None).map(|_| ())
}

/// A bound server. Call [`Server::serve`] to run it; keep a [`ServerHandle`] to control it.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// A builder for a server with hooks or host-supplied keys.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder { config, hooks: Arc::new(NoHooks), key_material: None }
    }

    /// Binds a server without hooks.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        Server::builder(config).bind().await
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle for publishing, stats, disconnects and shutdown.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Accepts connections until [`ServerHandle::shutdown`], then closes every session with 1001
    /// and waits up to `server.shutdown_grace_secs` before dropping the rest.
    pub async fn serve(self) -> Result<(), Error> {
        let Server { listener, shared } = self;
        let tracker = TaskTracker::new();
        let upkeep = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => break,
                        _ = tick.tick() => {
                            shared.gate.forget_idle();
                            shared.session_env.user_rate.forget_idle();
                            shared.session_env.policy.forget_idle();
                        }
                    }
                }
            })
        };
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(target: "wsguard::server", error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(pending) = Arc::clone(&shared.pending).try_acquire_owned() else {
                refuse_overload(&shared, &tcp, peer);
                continue;
            };
            let task_shared = Arc::clone(&shared);
            let hard_stop = shared.hard_stop.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = hard_stop.cancelled() => {}
                    _ = connection::handle(task_shared, tcp, peer, pending) => {}
                }
            });
        }
        drop(listener);
        let grace = shared.grace_override.lock().ok().and_then(|g| *g).unwrap_or(shared.grace);
        tracing::info!(target: "wsguard::server", grace_secs = grace.as_secs_f64(), "shutting down");
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(target: "wsguard::server", "grace period over, dropping remaining connections");
            shared.hard_stop.cancel();
            tracker.wait().await;
        }
        upkeep.abort();
        shared.stopped.cancel();
        Ok(())
    }
}

/// Too many handshakes in flight: answer 503 without spending a task on it. The socket is fresh,
/// so a short non-blocking write fits in its send buffer.
fn refuse_overload(shared: &Shared, tcp: &tokio::net::TcpStream, peer: SocketAddr) {
    let rejection = crate::handshake::Rejection::new(ErrorCode::ServerFull, "max_pending_handshakes reached");
    if shared.tls.is_none() {
        let _ = tcp.try_write(&rejection.to_response());
    }
    shared.stats.record_handshake_rejected();
    shared.events.emit(Event::HandshakeRejected {
        client_ip: peer.ip(),
        status: rejection.status().as_u16(),
        code: rejection.code().name(),
        detail: rejection.detail().to_string(),
        origin: None,
    });
}

/// Controls a running server from any thread or task. Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Publishes `payload` (a JSON object) to every subscriber of `channel`, encoded once.
    /// Returns how many sessions it was queued for.
    ///
    /// Errors: `invalid_channel`, `invalid_frame` (payload not an object), `payload_too_deep`,
    /// `not_running`.
    pub fn publish(&self, channel: &str, payload: &Value) -> Result<usize, Error> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::NotRunning);
        }
        validate_channel(channel).map_err(|m| Error::Refused { code: ErrorCode::InvalidChannel, message: m.into() })?;
        let Value::Object(object) = payload else {
            return Err(Error::Refused {
                code: ErrorCode::InvalidFrame,
                message: "payload must be a JSON object".into(),
            });
        };
        // The same depth rule as client publications: subscribers never see deeper payloads.
        if !is_within_depth(object, self.shared.max_payload_depth) {
            return Err(Error::Refused { code: ErrorCode::PayloadTooDeep, message: "payload nests too deeply".into() });
        }
        let text = ServerFrame::Message { channel, payload }.encode();
        Ok(self.shared.hub.publish(channel, &text))
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot(self.shared.hub.channel_count() as u64)
    }

    /// Closes one session with 4001. Errors: `unknown_session`.
    pub fn disconnect_session(&self, session_id: u64) -> Result<(), Error> {
        if self.shared.registry.disconnect_session(session_id, Disconnect::DisconnectedByServer) {
            Ok(())
        } else {
            Err(Error::Refused { code: ErrorCode::UnknownSession, message: format!("no session {session_id}") })
        }
    }

    /// Closes every session of `user` (the `sub` claim) with 4001; returns how many.
    pub fn disconnect_user(&self, user: &str) -> usize {
        self.shared.registry.disconnect_user(user, Disconnect::DisconnectedByServer)
    }

    /// Revokes tokens: matching live sessions close at once with 4501, and matching tokens are
    /// refused at later handshakes and refreshes.
    pub fn revoke(&self, revocation: Revocation) {
        tracing::info!(target: "wsguard::security", event = "revocation_applied", revocation = ?revocation);
        self.shared.revocations.revoke(revocation);
    }

    /// Starts a graceful shutdown (idempotent). `Server::serve` returns when it is complete.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Starts a graceful shutdown with this grace instead of `server.shutdown_grace_secs`.
    pub fn shutdown_within(&self, grace: Duration) {
        if let Ok(mut g) = self.shared.grace_override.lock() {
            *g = Some(grace);
        }
        self.shared.shutdown.cancel();
    }

    /// True once shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Resolves when `serve` has returned.
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }
}
