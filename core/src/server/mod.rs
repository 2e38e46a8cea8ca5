//! `Server` (bind, accept loop, graceful shutdown, upkeep) and the state shared by its tasks. The
//! control surface for hosts is `ServerHandle` (handle.rs); the reloadable part is in live.rs.

mod config;
mod connection;
mod embedded;
mod handle;
mod live;
mod ops;
mod reload;
mod settings;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use slab::Slab;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ServerConfig, TlsConfig};
pub use embedded::EmbeddedServer;
pub use handle::ServerHandle;
pub use ops::{Applied, ChannelInfo, ChannelPage, MAX_PAGE_LIMIT, SessionInfo, SessionPage, Target};
pub use reload::ReloadError;
pub(crate) use settings::ServerSettings;

use crate::auth::{JtiCache, KeyMaterial, RevocationList};
use crate::cluster::{BrokerKind, Cluster, Interest, NodeParts};
use crate::config::{Config, ConfigError};
use crate::error::{Error, ErrorCode};
use crate::handshake::{MemoryBudget, UPKEEP_INTERVAL};
use crate::history::History;
use crate::hooks::{HookRunner, Hooks, NoHooks};
use crate::hub::Hub;
use crate::limits::{Bans, ConnectionQuota, RateBaseline};
use crate::observe::{Event, EventSink, Stats};
use crate::presence::Presence;
use crate::session::{Alarms, Registry, Signal};
use live::{Compiled, Core, Live, build_live, compile};

/// Pause after an accept error (typically EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Rate-limit buckets are swept every this many upkeep ticks.
const SWEEP_EVERY_TICKS: u64 = 6;

pub(crate) struct Shared {
    core: Core,
    /// Replaced by `ServerHandle::reload`; each connection reads one snapshot.
    live: ArcSwap<Live>,
    /// The config `live` was built from (for reload's restart-only check).
    config: Mutex<Config>,
    /// Every connection task, aborted when the grace period is over. One list for the server,
    /// instead of a cancellation wait in every task: `tokio::select!` polled that wait on every
    /// wake-up of every connection, under the token's one lock.
    tasks: Mutex<Slab<AbortHandle>>,
    /// Cancelled when `serve` has returned.
    stopped: CancellationToken,
    pending: Arc<Semaphore>,
    /// A grace chosen at shutdown time (`shutdown_within`), overriding the configured one.
    grace_override: Mutex<Option<Duration>>,
    next_session_id: AtomicU64,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    /// The file `reload` over the server API re-reads (`ServerBuilder::config_file`).
    config_file: Option<PathBuf>,
}

/// Builds a [`Server`] with hooks or host-supplied key material.
pub struct ServerBuilder {
    config: Config,
    /// `None`: the host installed none (the core skips the hook calls and the event queue).
    hooks: Option<Arc<dyn Hooks>>,
    key_material: Option<KeyMaterial>,
    api_key: Option<String>,
    config_file: Option<PathBuf>,
}

impl ServerBuilder {
    /// Uses this server API key instead of `api.key_env` (development mode's random key); it is
    /// named `default` in the audit trail.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The configuration file the server was loaded from: `reload` over the server API re-reads
    /// it (as the CLI's SIGHUP does). Without it the API answers `reload` with 409
    /// `api_reload_unavailable`.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Installs the host's hooks. Without hooks the core's decisions stand (what [`NoHooks`]
    /// answers) and nothing is called: no hook time box, no `authorize` request, no event queue.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Uses this key instead of the configured key source (development mode's random secret).
    /// It stays in use across reloads.
    pub fn key_material(mut self, material: KeyMaterial) -> Self {
        self.key_material = Some(material);
        self
    }

    /// Loads keys, certificates and schemas, binds the listeners. Must run inside a tokio
    /// runtime. With keys from an identity provider (`auth.jwks_url`, `auth.oidc_discovery`) it
    /// starts fetching them and waits for the first attempt (bounded by `auth.jwks_timeout_secs`);
    /// an unreachable provider never fails the bind: the server then answers `keys_unavailable`
    /// (503) and `/readyz` 503 until a first key set arrives, retrying with backoff.
    ///
    /// Errors: [`Error::Config`] listing every problem at once, [`Error::Io`] when an address
    /// cannot be bound.
    pub async fn bind(self) -> Result<Server, Error> {
        let ServerBuilder { config, hooks, key_material, api_key, config_file } = self;
        let has_host_hooks = hooks.is_some();
        let hooks = hooks.unwrap_or_else(|| Arc::new(NoHooks));
        let (compiled, api_settings) = compile_with_api(&config, key_material.as_ref(), api_key.as_deref())?;
        let Compiled { settings, verifier, tls, policy, cluster_secrets, broker_tls } = compiled;
        let listener = listen(settings.server.listen)
            .map_err(|e| Error::io(format!("cannot listen on {}", config.server.listen), e))?;
        let local_addr = listener.local_addr().map_err(|e| Error::io("local address", e))?;
        let admin = match config.observability.metrics_listen.as_str() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::io(format!("cannot listen on {addr} (observability.metrics_listen)"), e))?,
            ),
        };
        let metrics_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let api_listener = match &api_settings {
            None => None,
            Some(api) => Some(
                TcpListener::bind(api.listen)
                    .await
                    .map_err(|e| Error::io(format!("cannot listen on {} (api.listen)", api.listen), e))?,
            ),
        };
        let api_addr = api_listener.as_ref().and_then(|l| l.local_addr().ok());

        let stats = Arc::new(Stats::default());
        let event_hooks = HookRunner::new(
            Arc::clone(&hooks),
            has_host_hooks,
            Duration::from_secs_f64(config.hooks.timeout_secs),
            Arc::clone(&stats),
        );
        let events = EventSink::spawn(
            has_host_hooks.then_some(event_hooks),
            config.hooks.event_queue_capacity as usize,
            Arc::clone(&stats),
        );
        let verifier = Arc::new(verifier);
        let interest = Arc::new(Interest::default());
        // A single node has no broker to tell about channel interest.
        let hub = Arc::new(if config.cluster.broker == BrokerKind::Memory {
            Hub::new(Arc::clone(&stats))
        } else {
            Hub::with_interest(Arc::clone(&stats), Arc::clone(&interest))
        });
        let horizon_secs = config.auth.max_token_lifetime_secs + config.auth.leeway_secs;
        let revocations = Arc::new(RevocationList::new(horizon_secs));
        let bans = Arc::new(Bans::new(settings.abuse.clone(), events.clone(), Arc::clone(&stats)));
        let shutdown = CancellationToken::new();
        // Recovery positions proven across the cluster when its nodes share a signing key.
        let proofs = cluster_secrets
            .signing
            .as_ref()
            .map_or_else(crate::history::PositionProofs::random, crate::history::PositionProofs::derived);
        let history = Arc::new(History::in_memory(config.limits.history_memory_bytes, Arc::clone(&stats), proofs));
        let cluster = Cluster::new(
            &settings.cluster,
            &cluster_secrets,
            broker_tls,
            horizon_secs,
            NodeParts {
                hub: Arc::clone(&hub),
                history: Arc::clone(&history),
                interest,
                revocations: Arc::clone(&revocations),
                bans: Arc::clone(&bans),
                events: events.clone(),
                stats: Arc::clone(&stats),
                shutdown: shutdown.clone(),
            },
        );
        cluster.check_tls().await?;
        // Weak: the cluster holds the bans and the revocations, they must not keep it alive.
        bans.set_broadcast(Box::new(Arc::downgrade(&cluster)));
        revocations.set_effects(events.clone(), Box::new(Arc::downgrade(&cluster)));
        let used_jtis = cluster.used_jtis();
        // The persisted revocations and bans (when Redis answers now; otherwise the node admits no
        // one until `serve` has loaded them, under `cluster.state_failure = "closed"`).
        cluster.restore_now().await;
        let presence = Presence::new(&settings.cluster, Arc::clone(&cluster), Arc::clone(&stats));
        let core = Core {
            hub,
            history,
            cluster,
            presence,
            registry: Arc::new(Registry::default()),
            alarms: Arc::new(Alarms::default()),
            capacity: Arc::new(Semaphore::new(settings.server.max_connections)),
            per_ip: ConnectionQuota::new(settings.limits.connections_per_ip),
            pending_per_ip: ConnectionQuota::new(settings.limits.pending_handshakes_per_ip),
            per_user: ConnectionQuota::new(settings.limits.connections_per_user),
            bans,
            revocations,
            jti_cache: Arc::new(JtiCache::new(
                config.auth.jti_cache_capacity as usize,
                config.auth.leeway_secs,
                used_jtis,
            )),
            hooks,
            has_host_hooks,
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            verifier: Arc::new(ArcSwap::new(Arc::clone(&verifier))),
            shutdown,
            key_material,
            memory: Arc::new(MemoryBudget::new(Arc::clone(&stats))),
            stats,
            events,
        };
        // Remote keys: fetched from here on; bind waits for the first attempt (bounded by
        // `auth.jwks_timeout_secs`) but never fails because the identity provider is down.
        verifier.start(&core.jwks_runtime());
        verifier.first_attempts().await;
        let live = build_live(&config, &settings, &core, verifier, tls)?;
        if config.protocol.echo {
            tracing::warn!(
                target: "wsguard::server",
                "protocol.echo is on: conformance-test mode, messages are echoed undecoded; never use it in production"
            );
        }
        tracing::info!(
            target: "wsguard::server", %local_addr, tls = live.tls.is_some(), path = %config.server.path,
            metrics = ?metrics_addr, api = ?api_addr, "listening"
        );
        let shared = Arc::new(Shared {
            core,
            live: ArcSwap::from_pointee(live),
            tasks: Mutex::new(Slab::new()),
            stopped: CancellationToken::new(),
            pending: Arc::new(Semaphore::new(settings.server.max_pending_handshakes)),
            grace_override: Mutex::new(None),
            next_session_id: AtomicU64::new(1),
            local_addr,
            metrics_addr,
            api_addr,
            config_file,
            config: Mutex::new(config),
        });
        let api = api_settings.zip(api_listener).map(|(settings, listener)| {
            let api = crate::api::Api::new(
                ServerHandle::new(Arc::clone(&shared)),
                settings,
                shared.core.events.clone(),
                Arc::clone(&shared.core.stats),
            );
            (listener, Arc::new(api))
        });
        // Weak: the cluster is part of the shared state and must not keep it alive.
        let node_sessions: std::sync::Weak<Shared> = Arc::downgrade(&shared);
        shared.core.cluster.set_node_sessions(node_sessions);
        Ok(Server { listener, admin, api, shared })
    }
}

/// Checks everything `bind` would check except binding the addresses: the config itself, the
/// secret in the environment, key, certificate and schema files. `wsguard check-config` calls
/// this.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    compile_with_api(config, None, None).map(|_| ())
}

/// `compile` and the `[api]` section's keys and TLS files, every problem of both at once.
fn compile_with_api(
    config: &Config,
    material: Option<&KeyMaterial>,
    api_key: Option<&str>,
) -> Result<(Compiled, Option<crate::api::ApiSettings>), ConfigError> {
    let compiled = compile(config, material);
    // The section's semantic problems are already in `compile`'s (config.settings()).
    let api = if compiled.is_ok() || config.settings().is_ok() {
        crate::api::ApiSettings::compile(&config.api, api_key)
    } else {
        Ok(None)
    };
    match (compiled, api) {
        (Ok(compiled), Ok(api)) => Ok((compiled, api)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(ConfigError::new(a.code(), a.problems().iter().chain(b.problems()).cloned().collect())),
    }
}

/// A bound server. Call [`Server::serve`] to run it; keep a [`ServerHandle`] to control it.
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    /// The server API's listener and state, when `[api]` is on.
    api: Option<(TcpListener, Arc<crate::api::Api>)>,
    shared: Arc<Shared>,
}

impl Server {
    /// A builder for a server with hooks or host-supplied keys.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder { config, hooks: None, key_material: None, api_key: None, config_file: None }
    }

    /// Binds a server without hooks.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        Server::builder(config).bind().await
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The admin listener's address (`/metrics`, `/healthz`, `/readyz`), when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shared.metrics_addr
    }

    /// The server API's address (`[api]`), when enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.shared.api_addr
    }

    /// A handle for publishing, stats, disconnects, revocation, bans, reload and shutdown.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::new(Arc::clone(&self.shared))
    }

    /// Accepts connections until [`ServerHandle::shutdown`], then closes every session with 1001
    /// and waits up to `server.shutdown_grace_secs` before dropping the rest.
    pub async fn serve(self) -> Result<(), Error> {
        let Server { listener, admin, api, shared } = self;
        let core = &shared.core;
        let tracker = TaskTracker::new();
        // The admin listener outlives the drain: `/readyz` answers 503 while sessions close.
        let admin_stop = CancellationToken::new();
        let admin_task = admin.map(|listener| {
            tokio::spawn(crate::observe::admin::serve(
                listener,
                Arc::clone(&core.stats),
                Arc::clone(&core.cluster),
                Arc::clone(&core.verifier),
                core.shutdown.clone(),
                admin_stop.clone(),
            ))
        });
        // The server API stops taking calls when the drain starts (a call then would act on a
        // server that is closing) and finishes the ones in flight.
        let api_task = api.map(|(listener, api)| tokio::spawn(crate::api::serve(listener, api, core.shutdown.clone())));
        core.cluster.start();
        tokio::spawn(Arc::clone(&core.presence).run(core.shutdown.clone()));
        let upkeep = tokio::spawn(upkeep(Arc::clone(&shared)));
        let relay = tokio::spawn(relay_signals(Arc::clone(&shared)));
        tokio::spawn(Arc::clone(&core.alarms).run(Arc::clone(&core.registry), core.shutdown.clone()));
        loop {
            let (tcp, peer) = tokio::select! {
                _ = core.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(target: "wsguard::server", error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let live = shared.live.load_full();
            let Ok(pending) = Arc::clone(&shared.pending).try_acquire_owned() else {
                refuse_overload(core, &live, &tcp, peer);
                continue;
            };
            connection::spawn(&tracker, Arc::clone(&shared), live, tcp, peer, pending);
        }
        drop(listener);
        let grace =
            shared.grace_override.lock().ok().and_then(|g| *g).unwrap_or(shared.live.load().server.shutdown_grace);
        tracing::info!(target: "wsguard::server", grace_secs = grace.as_secs_f64(), "shutting down");
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(target: "wsguard::server", "grace period over, dropping remaining connections");
            let tasks = std::mem::take(&mut *shared.tasks.lock().unwrap_or_else(PoisonError::into_inner));
            for (_, task) in tasks {
                task.abort();
            }
            tracker.wait().await;
        }
        upkeep.abort();
        relay.abort();
        core.cluster.stop().await;
        admin_stop.cancel();
        if let Some(task) = api_task {
            let _ = task.await;
        }
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        shared.stopped.cancel();
        Ok(())
    }
}

/// Connection bursts queue in the kernel rather than being refused: the backlog is explicit
/// (the OS default can be as low as 128) and capped by `net.core.somaxconn` anyway.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // Restarts must not wait for TIME_WAIT sockets of the previous process.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Relays the server-wide changes every session must see (shutdown, a new revocation) to the
/// live sessions through the registry, so that a session waits on its own control alone rather
/// than on one wait per source (a reload signals the sessions itself, `ServerHandle::reload`). A
/// session registered after a change checks for it itself (`session::run`). Ends after relaying
/// the shutdown.
async fn relay_signals(shared: Arc<Shared>) {
    let core = &shared.core;
    let mut revocations = core.revocations.subscribe();
    let mut is_open = true;
    loop {
        tokio::select! {
            biased;
            () = core.shutdown.cancelled() => {
                core.registry.signal_all(Signal::Shutdown);
                return;
            }
            changed = revocations.changed(), if is_open => {
                is_open = changed.is_ok();
                if is_open {
                    core.registry.signal_all(Signal::Revocation);
                }
            }
        }
    }
}

/// Periodic upkeep: ban expiry, publish-rate anomalies, and (less often) sweeping idle rate-limit
/// buckets so their memory stays bounded under key churn.
async fn upkeep(shared: Arc<Shared>) {
    let core = &shared.core;
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    let mut baselines: HashMap<String, RateBaseline> = HashMap::new();
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks += 1;
        core.bans.sweep();
        core.history.sweep();
        if let Some((factor, min_rate)) = core.bans.anomaly_settings() {
            let policy = core.policy.load();
            for rule in policy.rule_ids() {
                let count = core.stats.publications_for(rule);
                let baseline = baselines.entry(rule.to_string()).or_default();
                if let Some((rate, base)) = baseline.observe(count, UPKEEP_INTERVAL.as_secs_f64(), factor, min_rate) {
                    core.stats.record_anomaly(rule);
                    core.events.emit(Event::Anomaly {
                        rule: rule.to_string(),
                        rate_per_sec: rate,
                        baseline_per_sec: base,
                    });
                }
            }
        }
        if ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
            let live = shared.live.load();
            live.gate.forget_idle();
            live.session_env.user_rates.forget_idle();
            core.policy.load().forget_idle();
        }
    }
}

/// Too many handshakes in flight: answer 503 without spending a task on it.
fn refuse_overload(core: &Core, live: &Live, tcp: &tokio::net::TcpStream, peer: SocketAddr) {
    let rejection = crate::handshake::Rejection::new(ErrorCode::ServerFull, "max_pending_handshakes reached");
    connection::refuse_at_accept(core, live, tcp, peer, rejection);
}
