//! `ServerHandle`: what a host holds to control a running server from any thread or task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Shared;
use super::live::{Compiled, build_live, compile, restart_only_changes};
use super::reload::ReloadError;
use crate::auth::Revocation;
use crate::config::Config;
use crate::error::{Error, ErrorCode};
use crate::history::{Page, Since, SinceError};
use crate::limits::{BanInfo, BanTarget};
use crate::observe::{Event, StatsSnapshot};
use crate::presence::{PresencePage, PresenceStats};
use crate::protocol::{MAX_HISTORY_PAGE, MAX_PRESENCE_LIMIT, is_within_depth, validate_channel};
use crate::session::{Disconnect, Signal};

fn presence_unavailable() -> Error {
    Error::Refused { code: ErrorCode::PresenceUnavailable, message: "the presence store is unreachable".into() }
}

/// Controls a running server. Cheap to clone; every method may be called from any thread.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        ServerHandle { shared }
    }

    /// Runs `future` to completion on the server's runtime from a host thread (not one of the
    /// runtime's own: see `host::refuse_on_server_thread`).
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.shared.core.cluster.runtime().block_on(future)
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The admin listener's address, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shared.metrics_addr
    }

    /// Publishes `payload` (a JSON object) to every subscriber of `channel`, encoded once.
    /// Returns how many sessions it was queued for. Server-side publishes bypass channel rules
    /// (the host is trusted) but not the channel-name and payload-shape rules.
    ///
    /// With a `[cluster]` broker the publication also goes to the other nodes (without waiting
    /// for the broker's confirmation; failures are counted in `wsguard_broker_errors_total`).
    ///
    /// Errors: `invalid_channel`, `invalid_frame` (payload not an object), `payload_too_deep`,
    /// `not_running`, `broker_unavailable` (the broker is unreachable: delivered on this node
    /// only).
    pub fn publish(&self, channel: &str, payload: &Value) -> Result<usize, Error> {
        self.check_publication(channel, payload)?;
        self.publish_checked(channel, payload).detach().map_err(|(why, queued)| Error::Refused {
            code: why.code(),
            message: format!("{why}: queued for {queued} session(s) on this node only"),
        })
    }

    /// Publishes one `payload` to each of `channels` (as [`ServerHandle::publish`] does for one),
    /// checked as a whole first: one invalid channel, or an invalid payload, and nothing is
    /// published. Returns how many sessions it was queued for on this node, over all channels.
    ///
    /// Errors: those of `publish`; `broker_unavailable` only after every channel was published
    /// on this node.
    pub fn broadcast(&self, channels: &[String], payload: &Value) -> Result<usize, Error> {
        for channel in channels {
            self.check_publication(channel, payload)?;
        }
        let mut queued = 0;
        let mut broker_error = None;
        for channel in channels {
            match self.publish_checked(channel, payload).detach() {
                Ok(n) => queued += n,
                Err((why, n)) => {
                    queued += n;
                    broker_error.get_or_insert(why);
                }
            }
        }
        match broker_error {
            None => Ok(queued),
            Some(why) => Err(Error::Refused {
                code: why.code(),
                message: format!("{why}: queued for {queued} session(s) on this node only"),
            }),
        }
    }

    /// Publishes an already checked server-side publication, stamped `{"server":true}` where
    /// the channel's rule stamps publishers.
    fn publish_checked(&self, channel: &str, payload: &Value) -> crate::cluster::Publication {
        let core = &self.shared.core;
        let policy = core.policy.load();
        let from = policy.server_stamp(channel);
        core.cluster.publish(channel, payload, from.as_ref(), "server", policy.retention(channel))
    }

    /// The checks every server-side publication passes before anything is sent.
    fn check_publication(&self, channel: &str, payload: &Value) -> Result<(), Error> {
        let core = &self.shared.core;
        if core.shutdown.is_cancelled() {
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
        if !is_within_depth(object, self.shared.live.load().session_env.limits.max_payload_depth) {
            return Err(Error::Refused { code: ErrorCode::PayloadTooDeep, message: "payload nests too deeply".into() });
        }
        Ok(())
    }

    /// The server API's address (`[api]`), when enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.shared.api_addr
    }

    /// The configuration file the server was built from (`ServerBuilder::config_file`), which
    /// `reload` over the server API re-reads.
    pub fn config_file(&self) -> Option<std::path::PathBuf> {
        self.shared.config_file.clone()
    }

    /// Up to `limit` (1 to 1000) members of `channel` whose subject sorts after `after`, ordered
    /// by subject, with their session counts and the claims the channel rule's
    /// `presence_claims` lists: what a client's `presence` action gets, cluster-wide, without
    /// the rule's `presence_access` (the host is trusted). Page on with the returned `next`.
    ///
    /// Errors: `invalid_channel`, `invalid_argument` (limit out of range), `presence_not_tracked`
    /// (the channel's rule has no `presence = true`), `presence_unavailable` (the cluster's Redis
    /// is unreachable), `not_running`.
    pub async fn presence(&self, channel: &str, limit: usize, after: Option<&str>) -> Result<PresencePage, Error> {
        self.presence_checks(channel)?;
        if !(1..=MAX_PRESENCE_LIMIT).contains(&limit) {
            return Err(Error::Refused {
                code: ErrorCode::InvalidArgument,
                message: format!("limit must be 1 to {MAX_PRESENCE_LIMIT}"),
            });
        }
        self.shared.core.presence.members(channel, limit, after).await.map_err(|_| presence_unavailable())
    }

    /// How many users and sessions are subscribed to `channel` (what `presence_stats` answers),
    /// cluster-wide. Errors as [`ServerHandle::presence`].
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, Error> {
        self.presence_checks(channel)?;
        self.shared.core.presence.stats(channel).await.map_err(|_| presence_unavailable())
    }

    fn presence_checks(&self, channel: &str) -> Result<(), Error> {
        let core = &self.shared.core;
        if core.shutdown.is_cancelled() {
            return Err(Error::NotRunning);
        }
        validate_channel(channel).map_err(|m| Error::Refused { code: ErrorCode::InvalidChannel, message: m.into() })?;
        if core.policy.load().presence_rule(channel).is_none() {
            return Err(Error::Refused {
                code: ErrorCode::PresenceNotTracked,
                message: "no channel rule with `presence = true` matches this channel".into(),
            });
        }
        Ok(())
    }

    /// Reads a page of `channel`'s kept publications (its rule's `history_size` and
    /// `history_ttl_secs`): at most `limit` (1 to 1000), oldest first after `since.offset`, or
    /// newest first before it (`is_newest_first`); without `since`, from the oldest or the newest
    /// kept. The host is trusted: the rule's `history` requirement does not apply.
    ///
    /// Errors: `invalid_channel`, `history_not_kept` (no rule matching the channel keeps
    /// history), `history_limit_invalid`, `history_offset_ahead`, `history_epoch_changed` (see
    /// docs/PROTOCOL.md, "History and recovery"), `not_running`; with `[cluster] broker =
    /// "redis"` (history in Redis) also `broker_unavailable` when Redis cannot be read, or when
    /// called from inside a tokio runtime (this call then blocks the calling thread).
    pub fn history(
        &self,
        channel: &str,
        since: Option<&Since>,
        limit: usize,
        is_newest_first: bool,
    ) -> Result<Page, Error> {
        let core = &self.shared.core;
        if core.shutdown.is_cancelled() {
            return Err(Error::NotRunning);
        }
        let refused = |code: ErrorCode, message: &str| Error::Refused { code, message: message.into() };
        validate_channel(channel).map_err(|m| refused(ErrorCode::InvalidChannel, m))?;
        if !(1..=MAX_HISTORY_PAGE as usize).contains(&limit) {
            return Err(refused(ErrorCode::HistoryLimitInvalid, "limit must be 1 to 1000"));
        }
        let Some(retention) = core.policy.load().retention(channel) else {
            return Err(refused(ErrorCode::HistoryNotKept, "no rule matching this channel keeps history"));
        };
        let query = crate::history::page_query(since, limit, is_newest_first);
        let page = match core.cluster.read_history_blocking(channel, retention.ttl, query) {
            None => core.history.page(channel, since, limit, is_newest_first),
            Some(Ok(slice)) => crate::history::page_of(slice, since),
            Some(Err(_)) => return Err(refused(ErrorCode::BrokerUnavailable, "the channel's history is unreachable")),
        };
        match page {
            Ok(page) => Ok(page.into()),
            Err(SinceError::Ahead) => {
                Err(refused(ErrorCode::HistoryOffsetAhead, "since.offset is beyond the channel's latest offset"))
            }
            Err(SinceError::EpochChanged) => {
                Err(refused(ErrorCode::HistoryEpochChanged, "the channel's history was lost since that position"))
            }
        }
    }

    /// A snapshot of the server's counters (the figures `/metrics` exports).
    pub fn stats(&self) -> StatsSnapshot {
        let core = &self.shared.core;
        core.stats.snapshot(core.hub.channel_count() as u64)
    }

    /// The Prometheus/OpenMetrics text that `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        self.shared.core.stats.encode()
    }

    /// Closes one session with 4001 (see [`ServerHandle::disconnect_with`] for a code and a
    /// reason of the caller's, or a session on another node). Errors: `unknown_session`.
    pub fn disconnect_session(&self, session_id: u64) -> Result<(), Error> {
        if self.shared.core.registry.disconnect_session(session_id, Disconnect::DisconnectedByServer) {
            Ok(())
        } else {
            Err(Error::Refused { code: ErrorCode::UnknownSession, message: format!("no session {session_id}") })
        }
    }

    /// Closes every session of `user` (the `sub` claim) with 4001; returns how many.
    pub fn disconnect_user(&self, user: &str) -> usize {
        self.shared.core.registry.disconnect_user(user, Disconnect::DisconnectedByServer)
    }

    /// Revokes tokens: matching live sessions close at once with 4501, and matching tokens are
    /// refused at later handshakes and refreshes. With a `[cluster]` broker every node applies
    /// it too (see docs/OPERATIONS.md for the bound).
    pub fn revoke(&self, revocation: Revocation) {
        self.shared.core.revocations.revoke(revocation);
    }

    /// Bans in force.
    pub fn bans(&self) -> Vec<BanInfo> {
        self.shared.core.bans.list()
    }

    /// Bans `target` for `duration` (an operator ban; `abuse.exempt` IPs excepted). Live sessions
    /// of the target are not closed: combine with `disconnect_user` when that is wanted. With a
    /// `[cluster]` broker every node applies the ban too.
    pub fn ban(&self, target: BanTarget, duration: Duration) -> bool {
        self.shared.core.bans.ban(target, duration, "operator")
    }

    /// Lifts a ban; true when there was one here. With a `[cluster]` broker every node lifts it.
    pub fn lift_ban(&self, target: &BanTarget) -> bool {
        self.shared.core.bans.lift(target)
    }

    /// Applies a new configuration without dropping a connection: TLS certificate and key, JWT
    /// keys, origins, channel and RPC rules, limits and timeouts. The new config is validated
    /// completely first (including files); if anything is wrong, nothing changes and every
    /// problem is returned. Open sessions keep running under their limits; new handshakes use
    /// the new settings; subscriptions the new rules forbid are dropped with an `unsubscribed`
    /// frame. Keys that shape listeners or long-lived state (`server.listen`,
    /// `server.max_connections`, ...) cannot change and are reported as problems. After shutdown
    /// it fails with `not_running`.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let core = &self.shared.core;
        if core.shutdown.is_cancelled() {
            return Err(ReloadError::NotRunning);
        }
        let mut current = self.shared.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = (|| {
            let restart_only = restart_only_changes(&current, &config);
            if !restart_only.is_empty() {
                return Err(ReloadError::restart_required(restart_only));
            }
            let Compiled { settings, mut verifier, tls, policy, .. } = compile(&config, core.key_material.as_ref())?;
            // Identity-provider keys whose source did not change keep their cache and fetcher; a
            // changed source starts fetching now (its issuer's tokens get `keys_unavailable` until
            // its first key set arrives).
            verifier.adopt(&core.verifier.load());
            verifier.start(&core.jwks_runtime());
            let verifier = Arc::new(verifier);
            let live = build_live(&config, &settings, core, Arc::clone(&verifier), tls)?;
            let previous = core.verifier.swap(Arc::clone(&verifier));
            previous.retire_replaced(&verifier);
            core.policy.store(Arc::new(policy));
            self.shared.live.store(Arc::new(live));
            // Every session re-authorizes its subscriptions against the new policy.
            core.registry.signal_all(Signal::Reload);
            Ok(())
        })();
        match &outcome {
            Ok(()) => {
                *current = config;
                core.events.emit(Event::ConfigReloaded { is_applied: true, problems: Vec::new() });
            }
            Err(e) => core.events.emit(Event::ConfigReloaded {
                is_applied: false,
                problems: e.problems().iter().map(ToString::to_string).collect(),
            }),
        }
        outcome
    }

    /// Starts a graceful shutdown (idempotent). `Server::serve` returns when it is complete.
    pub fn shutdown(&self) {
        self.shared.core.shutdown.cancel();
    }

    /// Starts a graceful shutdown with this grace instead of `server.shutdown_grace_secs`.
    pub fn shutdown_within(&self, grace: Duration) {
        if let Ok(mut g) = self.shared.grace_override.lock() {
            *g = Some(grace);
        }
        self.shared.core.shutdown.cancel();
    }

    /// True once shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.core.shutdown.is_cancelled()
    }

    /// Resolves when `serve` has returned.
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }
}
