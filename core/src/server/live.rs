//! The split between what a running server keeps for its whole life (`Core`: counters, the hub,
//! live sessions, quotas, bans, revocations) and what a config reload replaces (`Live`: the
//! handshake gate, TLS, limits for new sessions). Both bind and reload build a `Live` through the
//! same function, so a reloaded server is configured exactly like a freshly started one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::ServerSettings;
use super::tls;
use crate::auth::{JtiCache, JwksRuntime, KeyMaterial, RevocationList, TokenVerifier};
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, ConfigProblem, Problems, Settings};
use crate::error::ErrorCode;
use crate::handshake::{HandshakeGate, MemoryBudget, TrustedProxies};
use crate::history::History;
use crate::hooks::{HookRunner, Hooks};
use crate::hub::Hub;
use crate::limits::{Bans, ConnectionQuota, KeyedRate, UserRates};
use crate::observe::{EventSink, Stats};
use crate::policy::Policy;
use crate::presence::Presence;
use crate::proxy::Proxy;
use crate::session::{Alarms, Registry, SessionEnv};
use crate::transport::TlsAcceptor;

/// What survives reloads.
pub(crate) struct Core {
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: EventSink,
    pub(crate) hub: Arc<Hub>,
    pub(crate) history: Arc<History>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) registry: Arc<Registry>,
    /// The sessions' timers (`session::Alarms`), served by one task of the server's.
    pub(crate) alarms: Arc<Alarms>,
    pub(crate) capacity: Arc<Semaphore>,
    pub(crate) per_ip: Arc<ConnectionQuota<std::net::IpAddr>>,
    /// Connections in their handshake per client address (`limits.pending_handshakes_per_ip`).
    pub(crate) pending_per_ip: Arc<ConnectionQuota<std::net::IpAddr>>,
    pub(crate) per_user: Arc<ConnectionQuota<String>>,
    pub(crate) bans: Arc<Bans>,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) jti_cache: Arc<JtiCache>,
    pub(crate) hooks: Arc<dyn Hooks>,
    /// False when the host installed no hooks (see `HookRunner`).
    pub(crate) has_host_hooks: bool,
    /// Shared with every session, old and new: a reload's rules apply to open sessions too.
    pub(crate) policy: Arc<ArcSwap<Policy>>,
    /// Shared with every session for in-band refresh.
    pub(crate) verifier: Arc<ArcSwap<TokenVerifier>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) key_material: Option<KeyMaterial>,
    pub(crate) memory: Arc<MemoryBudget>,
}

impl Core {
    /// What the identity-provider key fetchers report to.
    pub(crate) fn jwks_runtime(&self) -> JwksRuntime {
        JwksRuntime { stats: Arc::clone(&self.stats), events: self.events.clone(), shutdown: self.shutdown.clone() }
    }
}

/// What a reload replaces; a connection takes one snapshot when it is accepted.
pub(crate) struct Live {
    pub(crate) gate: HandshakeGate,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) ws_config: Arc<WebSocketConfig>,
    pub(crate) session_env: Arc<SessionEnv>,
    /// `[server]` as compiled.
    pub(crate) server: ServerSettings,
}

/// A config compiled: the areas' typed settings and the parts that need the environment or files
/// (keys, certificates, schemas).
pub(crate) struct Compiled {
    pub(crate) settings: Settings,
    pub(crate) verifier: TokenVerifier,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) policy: Policy,
    /// `cluster.password_env`'s value and the signing keys.
    pub(crate) cluster_secrets: crate::cluster::ClusterSecrets,
    /// `cluster.tls_*`, loaded (None without broker TLS).
    pub(crate) broker_tls: Option<Arc<crate::cluster::BrokerTls>>,
}

/// Loads keys, certificates and schemas, reporting every problem of every area at once.
pub(crate) fn compile(config: &Config, material: Option<&KeyMaterial>) -> Result<Compiled, ConfigError> {
    // Semantic problems and file problems are reported together.
    let settings = config.settings();
    let verifier = TokenVerifier::new(&config.auth, material);
    let tls = config.tls.as_ref().map(tls::acceptor).transpose();
    let policy = Policy::load(&config.channels, &config.rpc);
    let secrets = crate::cluster::read_secrets(&config.cluster);
    let broker_tls = crate::cluster::load_tls(&config.cluster);
    // Read here so that `check_config` reports them; the proxy itself is built with the live part.
    let proxy = crate::proxy::check_files(&config.proxy);
    match (settings, verifier, tls, policy, secrets, broker_tls, proxy) {
        (Ok(settings), Ok(verifier), Ok(tls), Ok(policy), Ok(cluster_secrets), Ok(broker_tls), Ok(())) => {
            Ok(Compiled { settings, verifier, tls, policy, cluster_secrets, broker_tls })
        }
        (settings, verifier, tls, policy, password, broker_tls, proxy) => {
            let errors: Vec<ConfigError> = [
                settings.err(),
                verifier.err(),
                tls.err(),
                policy.err(),
                password.err(),
                broker_tls.err(),
                proxy.err(),
            ]
            .into_iter()
            .flatten()
            .collect();
            let code = errors.first().map_or(ErrorCode::ConfigInvalid, ConfigError::code);
            Err(ConfigError::new(code, errors.iter().flat_map(|e| e.problems().iter().cloned()).collect()))
        }
    }
}

/// Keys that a reload cannot change (they shape listeners, queues or long-lived state).
pub(crate) fn restart_only_changes(old: &Config, new: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut check = |key: &str, changed: bool| {
        if changed {
            problems.push(ConfigProblem::new(key, "cannot change on reload; restart the server"));
        }
    };
    check("server.listen", old.server.listen != new.server.listen);
    check("server.worker_threads", old.server.worker_threads != new.server.worker_threads);
    check("server.max_connections", old.server.max_connections != new.server.max_connections);
    check("server.max_pending_handshakes", old.server.max_pending_handshakes != new.server.max_pending_handshakes);
    check("tls", old.tls.is_some() != new.tls.is_some());
    check("observability", old.observability != new.observability);
    check("abuse", old.abuse != new.abuse);
    check("api", old.api != new.api);
    check("hooks.event_queue_capacity", old.hooks.event_queue_capacity != new.hooks.event_queue_capacity);
    check("auth.jti_cache_capacity", old.auth.jti_cache_capacity != new.auth.jti_cache_capacity);
    check("cluster", old.cluster != new.cluster);
    check("limits.history_memory_bytes", old.limits.history_memory_bytes != new.limits.history_memory_bytes);
    problems
}

/// Builds the reloadable part from a compiled config. Applies the new quota ceilings to the
/// shared counters.
pub(crate) fn build_live(
    config: &Config,
    settings: &Settings,
    core: &Core,
    verifier: Arc<TokenVerifier>,
    tls: Option<TlsAcceptor>,
) -> Result<Live, ConfigError> {
    let Settings { server, origins, limits, .. } = settings;
    let mut problems = Problems::default();
    let hook_timeout = problems.positive_secs("hooks.timeout_secs", config.hooks.timeout_secs);
    problems.into_result(ErrorCode::ConfigInvalid)?;

    core.per_ip.set_limit(limits.connections_per_ip);
    core.pending_per_ip.set_limit(limits.pending_handshakes_per_ip);
    core.per_user.set_limit(limits.connections_per_user);
    core.stats.set_memory_budget(limits.max_memory_bytes);
    let proxy = Proxy::build(&config.proxy, Arc::clone(&core.stats), core.events.clone())?;
    let hooks = HookRunner::new(Arc::clone(&core.hooks), core.has_host_hooks, hook_timeout, Arc::clone(&core.stats))
        .with_proxy(proxy);
    let jti_cache = config.auth.single_use_jti.then(|| Arc::clone(&core.jti_cache));
    let gate = HandshakeGate {
        path: server.path.clone(),
        max_header_bytes: server.max_header_bytes,
        origins: origins.clone(),
        proxies: TrustedProxies::new(server.trusted_proxies.clone()),
        token_sources: config.auth.token_sources.clone(),
        cookie_name: config.auth.cookie_name.clone(),
        verifier,
        revocations: Arc::clone(&core.revocations),
        jti_cache: jti_cache.clone(),
        per_ip: Arc::clone(&core.per_ip),
        per_user: Arc::clone(&core.per_user),
        rate: KeyedRate::new(limits.handshake_rate),
        capacity: Arc::clone(&core.capacity),
        hooks: hooks.clone(),
        bans: Arc::clone(&core.bans),
        stats: Arc::clone(&core.stats),
        max_memory_bytes: limits.max_memory_bytes,
        memory: Arc::clone(&core.memory),
        demo_page: server.demo_page,
        cluster_quota: core.cluster.quota(),
        cluster_state: core.cluster.state_gate(),
    };
    let session_env = Arc::new(SessionEnv {
        hub: Arc::clone(&core.hub),
        history: Arc::clone(&core.history),
        cluster: Arc::clone(&core.cluster),
        presence: Arc::clone(&core.presence),
        stats: Arc::clone(&core.stats),
        events: core.events.clone(),
        hooks,
        registry: Arc::clone(&core.registry),
        alarms: Arc::clone(&core.alarms),
        policy: Arc::clone(&core.policy),
        verifier: Arc::clone(&core.verifier),
        revocations: Arc::clone(&core.revocations),
        jti_cache,
        bans: Arc::clone(&core.bans),
        user_rates: UserRates::new(limits.user_message_rate),
        shutdown: core.shutdown.clone(),
        limits: limits.clone(),
        protocol: config.protocol.clone(),
        leeway_secs: config.auth.leeway_secs,
        session_bound_claims: config.auth.session_bound_claims.clone(),
    });
    let ws_config = Arc::new(crate::transport::websocket_config(limits.max_frame_bytes, limits.max_message_bytes));
    Ok(Live { gate, tls, ws_config, session_env, server: server.clone() })
}
