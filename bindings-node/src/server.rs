//! `JsServer` (exported as `Server`): a core `EmbeddedServer` driven from JavaScript.
//!
//! Every method converts its arguments, calls one core function and converts the result. The
//! blocking core calls (`EmbeddedServer::start` binds, `stop` drains sessions) run as napi
//! `AsyncTask`s on libuv's worker pool, so the JavaScript thread never waits; the server's tokio
//! runtime belongs to the `EmbeddedServer`, not to this module or the process.
//!
//! Event-loop contract: while the server listens, one referenced `KeepAlive` holds Node's loop
//! open (as a listening `net.Server` does) and keeps this object from being collected; `close()`
//! releases it, and every other threadsafe function is weak, so the process exits normally.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use napi::bindgen_prelude::{AsyncTask, FnArgs, Function, Object, This, Unknown};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Status, Task};
use napi_derive::napi;
use serde_json::Value;
use wsguard::host::{self, ConfigInput};
use wsguard::{Config, EmbeddedServer, ServerHandle};

use crate::callback::JsCallback;
use crate::errors::{core_error, invalid_argument};
use crate::hooks::JsHooks;
use crate::json;

/// A wsguard server: hardened WebSocket pub/sub with JWT auth, channel policy and RPC.
#[napi(js_name = "Server")]
pub struct JsServer {
    /// Taken by the first `listen()` (or dropped by `close()`).
    config: Mutex<Option<Config>>,
    hooks: Arc<JsHooks>,
    shared: Arc<Shared>,
}

/// What the JavaScript object and its background tasks share.
#[derive(Default)]
struct Shared {
    running: Mutex<Running>,
    /// Set once the server has started; stays readable after `close()` (final `stats()`).
    handle: OnceLock<ServerHandle>,
    keep_alive: Mutex<Option<KeepAlive>>,
}

#[derive(Default)]
struct Running {
    server: Option<EmbeddedServer>,
    /// `close()` was called: a `listen()` finishing later stops its server at once.
    is_closed: bool,
}

/// A referenced threadsafe function over a no-op bound to the server object: it holds Node's event
/// loop open and the server object alive while the server listens. Dropping it releases both.
type KeepAlive = ThreadsafeFunction<(), (), (), Status, false, false>;

/// Options of `close()`.
#[napi(object)]
pub struct CloseOptions {
    /// Seconds to let sessions finish after they were told to close (1001) before they are
    /// dropped. Default: the configured `server.shutdown_grace_secs`.
    pub grace_secs: Option<f64>,
}

/// Which sessions `disconnect()` closes (besides a session id).
#[napi(object)]
pub struct DisconnectTarget {
    /// Every session of this user (the token's `sub`).
    pub user: String,
}

/// Which sessions `send()`, `disconnectWith()`, `subscribe()` and `unsubscribe()` reach: exactly
/// one of `sessionId` (on `node`, this node by default) or `user` (on every node).
#[napi(object)]
pub struct SessionTarget {
    /// One session, by id (node-local).
    pub session_id: Option<i64>,
    /// Every session of this user (the token's `sub`).
    pub user: Option<String>,
    /// The node that holds the session (`cluster.node_id`), with `sessionId` only.
    pub node: Option<String>,
}

/// A page of `sessions()`.
#[napi(object)]
pub struct SessionsOptions {
    /// Only this user's sessions.
    pub user: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<i64>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// What `history()` reads.
#[napi(object)]
pub struct HistoryOptions {
    /// With `sinceEpoch`: the position to read from (the offset of the last publication seen).
    pub since_offset: Option<i64>,
    /// With `sinceOffset`: the epoch that offset belongs to.
    pub since_epoch: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// Newest first (before `sinceOffset`, or from the newest kept); default oldest first.
    pub newest_first: Option<bool>,
}

/// A page of `presence()`.
#[napi(object)]
pub struct PresenceOptions {
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// A page of `channels()`.
#[napi(object)]
pub struct ChannelsOptions {
    /// Only channels this channel-rule pattern matches (`{name}` for any one segment).
    pub pattern: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// What `revoke()` revokes; exactly one field.
#[napi(object)]
pub struct RevokeTarget {
    /// One token, by its `jti`.
    pub jti: Option<String>,
    /// Every token of this subject issued up to now.
    pub sub: Option<String>,
    /// Every token issued before this time, in seconds since the Unix epoch (like `iat`).
    pub issued_before: Option<f64>,
}

#[napi]
impl JsServer {
    /// Loads and fully checks the configuration, secrets and key and certificate files included
    /// (the core's `ConfigInput::load`): an object, TOML or JSON text, or the path of a `.toml` /
    /// `.json` file. Throws every problem at once (`code` `config_*`).
    #[napi(constructor, ts_args_type = "config: Record<string, unknown> | string")]
    pub fn new(env: Env, config: Value) -> napi::Result<Self> {
        let config = config_input(config).load().map_err(|e| core_error(&env, &e))?;
        Ok(JsServer { config: Mutex::new(Some(config)), hooks: Arc::default(), shared: Arc::default() })
    }

    /// Loads keys and certificates, binds and starts serving; resolves with the bound port.
    /// Rejects with the core's error (`config_*`, `io`); may be called once.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn listen(&self, env: Env, this: This<'_>) -> napi::Result<AsyncTask<Listen>> {
        let keep_alive = keep_alive(&env, &this.object)?;
        Ok(AsyncTask::new(Listen {
            config: self.config.lock().unwrap_or_else(PoisonError::into_inner).take(),
            hooks: Arc::clone(&self.hooks),
            shared: Arc::clone(&self.shared),
            keep_alive: Some(keep_alive),
        }))
    }

    /// The bound port once listening, else `null`.
    #[napi(getter)]
    pub fn port(&self) -> Option<u32> {
        self.shared.handle.get().map(|h| u32::from(h.local_addr().port()))
    }

    /// The bound address (`127.0.0.1:8080`) once listening, else `null`.
    #[napi(getter)]
    pub fn address(&self) -> Option<String> {
        self.shared.handle.get().map(|h| h.local_addr().to_string())
    }

    /// Stops accepting, closes every session with 1001, waits up to the grace period, stops the
    /// runtime and releases every JavaScript function. Idempotent; also fine before `listen()`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self, options: Option<CloseOptions>) -> napi::Result<AsyncTask<Close>> {
        let grace = match options.and_then(|o| o.grace_secs) {
            None => None,
            Some(secs) => Some(
                Duration::try_from_secs_f64(secs)
                    .map_err(|_| invalid_argument("graceSecs must be a non-negative number of seconds"))?,
            ),
        };
        drop(self.config.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.shared.running.lock().unwrap_or_else(PoisonError::into_inner).is_closed = true;
        // The pending task holds the loop open until the drain is over.
        drop(self.shared.keep_alive.lock().unwrap_or_else(PoisonError::into_inner).take());
        Ok(AsyncTask::new(Close { grace, hooks: Arc::clone(&self.hooks), shared: Arc::clone(&self.shared) }))
    }

    /// Handles `rpc` frames for `method` (which must be declared in `[[rpc]]`). The answer (or
    /// the Promise's value) is the client's `result`; a throw or rejection answers `rpc_failed`
    /// with its message. Replaces an earlier handler for the same method.
    #[napi(
        strict,
        ts_args_type = "method: string, handler: (session: Record<string, any>, payload: Record<string, any>) => unknown"
    )]
    pub fn rpc(
        &self,
        method: String,
        handler: Function<'_, FnArgs<(Value, Value)>, Unknown<'static>>,
    ) -> napi::Result<()> {
        self.hooks.set_rpc(method, JsCallback::new(&handler)?);
        Ok(())
    }

    /// Custom authentication after the token check (handshake and in-band refresh). The answer
    /// is the core's `AuthenticateAnswer`: `true` admits the identity as is, `false` or
    /// `{ deny: reason }` refuses, `{ roles?, scopes?, claims? }` admits it updated (claims merged
    /// key by key, `null` removes one, registered claims refused). Anything else, or a throw,
    /// refuses the client with 403 `rejected_by_hook`.
    #[napi(
        strict,
        ts_args_type = "handler: (handshake: Record<string, any>, identity: Record<string, any>) => unknown"
    )]
    pub fn authenticate(&self, handler: Function<'_, FnArgs<(Value, Value)>, Unknown<'static>>) -> napi::Result<()> {
        self.hooks.set_authenticate(JsCallback::new(&handler)?);
        Ok(())
    }

    /// Custom channel authorization after the core's rules: only an answer of `true` allows.
    #[napi(strict, ts_args_type = "handler: (request: Record<string, any>) => boolean | Promise<boolean>")]
    pub fn authorize(&self, handler: Function<'_, Value, Unknown<'static>>) -> napi::Result<()> {
        self.hooks.set_authorize(JsCallback::new(&handler)?);
        Ok(())
    }

    /// Receives every security and lifecycle event (the core's `Event`, as an object with `kind`),
    /// one at a time: the next one comes once the listener has returned and its returned Promise,
    /// if any, has settled (or `hooks.timeout_secs` passed). Events that do not fit the core's
    /// queue meanwhile (`hooks.event_queue_capacity`) are dropped and counted (`events_dropped`).
    #[napi(strict, ts_args_type = "listener: (event: Record<string, any>) => unknown")]
    pub fn on_event(&self, listener: Function<'_, Value, Unknown<'static>>) -> napi::Result<()> {
        self.hooks.set_event_listener(JsCallback::new(&listener)?);
        Ok(())
    }

    /// Publishes `payload` (an object) to every subscriber of `channel`; returns how many
    /// sessions it was queued for. Throws `invalid_channel`, `invalid_frame`, `payload_too_deep`,
    /// `not_running`.
    #[napi(ts_args_type = "channel: string, payload: Record<string, unknown>")]
    pub fn publish(&self, env: Env, channel: String, payload: Value) -> napi::Result<u32> {
        let count = self.handle(&env)?.publish(&channel, &json::from_js(payload)).map_err(|e| core_error(&env, &e))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Closes one session (by id) or every session of a user with 4001; returns how many.
    /// Throws `unknown_session` for an id that is not open, `invalid_argument` for a negative id.
    #[napi(ts_args_type = "target: number | DisconnectTarget")]
    pub fn disconnect(&self, env: Env, target: napi::Either<i64, DisconnectTarget>) -> napi::Result<u32> {
        let handle = self.handle(&env)?;
        let target = match target {
            napi::Either::A(id) => u64::try_from(id)
                .map_err(|_| {
                    wsguard::Error::InvalidArgument(format!("a session id is a non-negative integer, not {id}"))
                })
                .and_then(|id| host::disconnect_target(Some(id), None)),
            napi::Either::B(DisconnectTarget { user }) => host::disconnect_target(None, Some(&user)),
        };
        match target.map_err(|e| core_error(&env, &e))? {
            host::DisconnectTarget::Session(id) => {
                handle.disconnect_session(id).map_err(|e| core_error(&env, &e))?;
                Ok(1)
            }
            host::DisconnectTarget::User(user) => Ok(u32::try_from(handle.disconnect_user(&user)).unwrap_or(u32::MAX)),
        }
    }

    /// Sends `payload` as a `push` frame to the sessions of `target`; returns the core's result
    /// (`node`, `matched`, `changed`, `at_limit`, `is_forwarded`). Throws `invalid_argument`,
    /// `unknown_session`, `invalid_frame`, `payload_too_deep`, `payload_too_large`, `not_running`.
    #[napi(ts_args_type = "target: SessionTarget, payload: Record<string, unknown>")]
    pub fn send(&self, env: Env, target: SessionTarget, payload: Value) -> napi::Result<Value> {
        let outcome = session_target(target).and_then(|t| self.core()?.send(&t, &json::from_js(payload)));
        result(&env, outcome)
    }

    /// Closes the sessions of `target` with `code` (4000-4999 except wsguard's own) and `reason`
    /// (at most 123 bytes); returns the core's result. Throws `invalid_argument`,
    /// `unknown_session`, `not_running`.
    #[napi]
    pub fn disconnect_with(
        &self,
        env: Env,
        target: SessionTarget,
        code: u32,
        reason: Option<String>,
    ) -> napi::Result<Value> {
        let outcome = session_target(target).and_then(|t| {
            let code = u16::try_from(code)
                .map_err(|_| wsguard::Error::InvalidArgument(format!("close code {code} is out of range")))?;
            self.core()?.disconnect_with(&t, code, reason.as_deref().unwrap_or_default())
        });
        result(&env, outcome)
    }

    /// Subscribes the sessions of `target` to `channel` (channel rules bypassed, marked
    /// server-made); returns the core's result. Throws `invalid_argument`, `invalid_channel`,
    /// `unknown_session`, `not_running`.
    #[napi]
    pub fn subscribe(&self, env: Env, target: SessionTarget, channel: String) -> napi::Result<Value> {
        let outcome = session_target(target).and_then(|t| self.core()?.subscribe(&t, &channel));
        result(&env, outcome)
    }

    /// Unsubscribes the sessions of `target` from `channel`; returns the core's result.
    #[napi]
    pub fn unsubscribe(&self, env: Env, target: SessionTarget, channel: String) -> napi::Result<Value> {
        let outcome = session_target(target).and_then(|t| self.core()?.unsubscribe(&t, &channel));
        result(&env, outcome)
    }

    /// One page of this node's sessions: `node`, `sessions`, `next_cursor`. Throws
    /// `invalid_argument` (limit, cursor), `not_running`.
    #[napi]
    pub fn sessions(&self, env: Env, options: Option<SessionsOptions>) -> napi::Result<Value> {
        let SessionsOptions { user, cursor, limit } =
            options.unwrap_or(SessionsOptions { user: None, cursor: None, limit: None });
        let outcome = (|| {
            let limit = host::page_limit(limit.map(|n| non_negative(n, "limit")).transpose()?)?;
            let cursor = cursor.map(|n| non_negative(n, "cursor")).transpose()?;
            self.core()?.sessions(user.as_deref(), cursor, limit)
        })();
        result(&env, outcome)
    }

    /// One page of this node's channels with subscribers: `node`, `channels`, `next_cursor`.
    /// Throws `invalid_argument` (limit, pattern), `not_running`.
    #[napi]
    pub fn channels(&self, env: Env, options: Option<ChannelsOptions>) -> napi::Result<Value> {
        let ChannelsOptions { pattern, cursor, limit } =
            options.unwrap_or(ChannelsOptions { pattern: None, cursor: None, limit: None });
        let outcome = (|| {
            let limit = host::page_limit(limit.map(|n| non_negative(n, "limit")).transpose()?)?;
            self.core()?.channels(pattern.as_deref(), cursor.as_deref(), limit)
        })();
        result(&env, outcome)
    }

    /// One page of `channel`'s kept publications: `offset` and `epoch` (the channel's position)
    /// and `publications` (each `offset`, `payload`). The host is trusted: the rule's `history`
    /// requirement does not apply. Throws `invalid_channel`, `history_not_kept`,
    /// `history_limit_invalid`, `history_offset_ahead`, `history_epoch_changed`,
    /// `invalid_argument` (half a position, a negative number), `not_running`.
    #[napi]
    pub fn history(&self, env: Env, channel: String, options: Option<HistoryOptions>) -> napi::Result<Value> {
        let HistoryOptions { since_offset, since_epoch, limit, newest_first } = options.unwrap_or(HistoryOptions {
            since_offset: None,
            since_epoch: None,
            limit: None,
            newest_first: None,
        });
        let outcome = (|| {
            let since_offset = since_offset.map(|n| non_negative(n, "sinceOffset")).transpose()?;
            let limit = limit.map(|n| non_negative(n, "limit")).transpose()?;
            let handle = self.core()?;
            host::history(handle, &channel, since_offset, since_epoch.as_deref(), limit, newest_first.unwrap_or(false))
        })();
        result(&env, outcome)
    }

    /// One page of `channel`'s members, cluster-wide, as JSON text (lib/index.js parses it):
    /// `members` (each `user`, `sessions`, and `claims` when the rule lists any) and `next`. Read
    /// on a libuv worker thread (it may wait for Redis). Rejects with `invalid_channel`, `invalid_argument`, `presence_not_tracked`,
    /// `presence_unavailable`, `not_running`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn presence(&self, channel: String, options: Option<PresenceOptions>) -> AsyncTask<PresenceRead> {
        let PresenceOptions { limit, after } = options.unwrap_or(PresenceOptions { limit: None, after: None });
        let limit = limit.map(|n| non_negative(n, "limit")).transpose();
        let query = Some(PresenceQuery::Page { limit, after });
        AsyncTask::new(PresenceRead { channel, query, shared: Arc::clone(&self.shared) })
    }

    /// `channel`'s presence counts, cluster-wide, as JSON text: `users` and `clients`. As
    /// `presence()`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn presence_stats(&self, channel: String) -> AsyncTask<PresenceRead> {
        AsyncTask::new(PresenceRead { channel, query: Some(PresenceQuery::Stats), shared: Arc::clone(&self.shared) })
    }

    /// Revokes tokens: matching sessions close at once with 4501 and later handshakes and
    /// refreshes with a matching token are refused (`token_revoked`). Throws `invalid_argument`
    /// unless exactly one field is given (`issuedBefore` a non-negative number of seconds).
    #[napi]
    pub fn revoke(&self, env: Env, target: RevokeTarget) -> napi::Result<()> {
        let RevokeTarget { jti, sub, issued_before } = target;
        let revocation = issued_before
            .map(epoch_secs)
            .transpose()
            .and_then(|issued_before| host::revocation(jti.as_deref(), sub.as_deref(), issued_before))
            .map_err(|e| core_error(&env, &e))?;
        self.handle(&env)?.revoke(revocation);
        Ok(())
    }

    /// A snapshot of the server's counters (the core's `StatsSnapshot`, snake_case keys).
    #[napi(ts_return_type = "Record<string, number>")]
    pub fn stats(&self, env: Env) -> napi::Result<Value> {
        let snapshot = self.handle(&env)?.stats();
        serde_json::to_value(snapshot).map_err(|e| napi::Error::new(Status::GenericFailure, e.to_string()))
    }

    /// Applies a new configuration (the constructor's forms: an object, TOML or JSON text, or a
    /// file path) without dropping a connection. The core checks everything first, files
    /// included; on any problem nothing changes and the Promise rejects with every problem
    /// (`code` `config_*`, keys that need a restart included). Once applied, subscriptions the
    /// new channel rules forbid are dropped with an `unsubscribed` frame. Parsing and checking
    /// run off the JavaScript thread. Rejects with `not_running` before `listen()`.
    #[napi(ts_args_type = "config: Record<string, unknown> | string", ts_return_type = "Promise<void>")]
    pub fn reload(&self, config: Value) -> AsyncTask<Reload> {
        AsyncTask::new(Reload { config: Some(config), shared: Arc::clone(&self.shared) })
    }

    /// The handle, or the core's `not_running`.
    fn core(&self) -> Result<&ServerHandle, wsguard::Error> {
        self.shared.handle.get().ok_or(wsguard::Error::NotRunning)
    }

    pub(crate) fn handle(&self, env: &Env) -> napi::Result<&ServerHandle> {
        self.shared.handle.get().ok_or_else(|| core_error(env, &wsguard::Error::NotRunning))
    }
}

/// The core's target (its "exactly one of" rule) from a JavaScript one.
fn session_target(target: SessionTarget) -> Result<wsguard::Target, wsguard::Error> {
    let SessionTarget { session_id, user, node } = target;
    let session_id = session_id.map(|id| non_negative(id, "sessionId")).transpose()?;
    host::target(session_id, user.as_deref(), node.as_deref())
}

/// A JavaScript integer that must not be negative.
fn non_negative(n: i64, what: &str) -> Result<u64, wsguard::Error> {
    u64::try_from(n).map_err(|_| wsguard::Error::InvalidArgument(format!("{what} is a non-negative integer, not {n}")))
}

/// A core result as its JSON value, or the core's error.
fn result(env: &Env, outcome: Result<impl serde::Serialize, wsguard::Error>) -> napi::Result<Value> {
    let value = outcome.map_err(|e| core_error(env, &e))?;
    serde_json::to_value(value).map_err(|e| napi::Error::new(Status::GenericFailure, e.to_string()))
}

/// A string is text or a path by the core's one rule (`ConfigInput::text_or_path`); anything
/// else is the configuration object itself.
fn config_input(input: Value) -> ConfigInput {
    match input {
        Value::String(text) => ConfigInput::text_or_path(text),
        object => ConfigInput::Value(json::from_js(object)),
    }
}

/// A JavaScript number of seconds since the Unix epoch as the core's whole seconds (like `iat`).
fn epoch_secs(secs: f64) -> Result<u64, wsguard::Error> {
    if secs.is_finite() && secs >= 0.0 {
        // Whole seconds, as JWT `iat` counts them; `as` saturates beyond `u64::MAX`.
        Ok(secs as u64)
    } else {
        Err(wsguard::Error::InvalidArgument(format!("issuedBefore is a non-negative number of seconds, not {secs}")))
    }
}

fn keep_alive(env: &Env, server: &Object<'_>) -> napi::Result<KeepAlive> {
    let noop: Function<'_, (), ()> = env.create_function_from_closure("wsguardKeepAlive", |_| Ok(()))?;
    noop.bind(server)?.build_threadsafe_function::<()>().callee_handled::<false>().build()
}

/// `listen()`: starts the embedded server on a libuv worker thread.
pub struct Listen {
    config: Option<Config>,
    hooks: Arc<JsHooks>,
    shared: Arc<Shared>,
    keep_alive: Option<KeepAlive>,
}

impl Task for Listen {
    type Output = Result<u16, wsguard::Error>;
    type JsValue = u32;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let Some(config) = self.config.take() else {
            // Already started, or closed: there is no configuration left to start from.
            return Ok(Err(wsguard::Error::NotRunning));
        };
        // The core has no setting for this yet; one worker per CPU is what `#[tokio::main]`
        // gives the CLI.
        let hooks: Arc<dyn wsguard::Hooks> = Arc::clone(&self.hooks) as Arc<dyn wsguard::Hooks>;
        let mut server = match EmbeddedServer::start(config, hooks, None, 0) {
            Ok(server) => server,
            Err(e) => return Ok(Err(e)),
        };
        let mut running = self.shared.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_closed {
            drop(running);
            let _ = server.stop(Some(Duration::ZERO));
            return Ok(Err(wsguard::Error::NotRunning));
        }
        let port = server.local_addr().port();
        let _ = self.shared.handle.set(server.handle().clone());
        running.server = Some(server);
        Ok(Ok(port))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<u32> {
        let port = output.map_err(|e| core_error(&env, &e))?;
        let running = self.shared.running.lock().unwrap_or_else(PoisonError::into_inner);
        if !running.is_closed {
            *self.shared.keep_alive.lock().unwrap_or_else(PoisonError::into_inner) = self.keep_alive.take();
        }
        Ok(u32::from(port))
    }
}

/// `reload()`: parses the configuration and applies it on a libuv worker thread (both may read
/// files).
pub struct Reload {
    config: Option<Value>,
    shared: Arc<Shared>,
}

impl Task for Reload {
    type Output = Result<(), wsguard::Error>;
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let Some(handle) = self.shared.handle.get() else { return Ok(Err(wsguard::Error::NotRunning)) };
        let Some(input) = self.config.take() else { return Ok(Ok(())) };
        // The running server checks files and secrets itself, against what it runs with.
        Ok(config_input(input).parse().and_then(|config| Ok(handle.reload(config)?)))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<()> {
        output.map_err(|e| core_error(&env, &e))
    }
}

/// `presence()` (`page`: its limit and `after`) and `presenceStats()` (no page): the core's
/// blocking reads (`host::presence`, `host::presence_stats`) on a libuv worker thread.
pub struct PresenceRead {
    channel: String,
    query: Option<PresenceQuery>,
    shared: Arc<Shared>,
}

/// Which presence read: a page (its limit, still to be checked, and `after`) or the counts.
enum PresenceQuery {
    Page { limit: Result<Option<u64>, wsguard::Error>, after: Option<String> },
    Stats,
}

impl Task for PresenceRead {
    type Output = Result<String, wsguard::Error>;
    // JSON text: napi's `Task` cannot return a `serde_json::Value`; lib/index.js parses it.
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let Some(handle) = self.shared.handle.get() else { return Ok(Err(wsguard::Error::NotRunning)) };
        let text = match self.query.take() {
            None => return Ok(Err(wsguard::Error::NotRunning)),
            Some(PresenceQuery::Page { limit, after }) => limit
                .and_then(|limit| host::presence(handle, &self.channel, limit, after.as_deref()))
                .map(|page| serde_json::to_string(&page)),
            Some(PresenceQuery::Stats) => {
                host::presence_stats(handle, &self.channel).map(|stats| serde_json::to_string(&stats))
            }
        };
        match text {
            Ok(json) => Ok(Ok(json.map_err(|e| napi::Error::new(Status::GenericFailure, e.to_string()))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<String> {
        output.map_err(|e| core_error(&env, &e))
    }
}

/// `close()`: drains and stops the embedded server on a libuv worker thread.
pub struct Close {
    grace: Option<Duration>,
    hooks: Arc<JsHooks>,
    shared: Arc<Shared>,
}

impl Task for Close {
    type Output = Result<(), wsguard::Error>;
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let server = self.shared.running.lock().unwrap_or_else(PoisonError::into_inner).server.take();
        let stopped = match server {
            Some(mut server) => server.stop(self.grace),
            None => Ok(()),
        };
        self.hooks.release();
        Ok(stopped)
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<()> {
        output.map_err(|e| core_error(&env, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_text_or_a_path_by_the_core_rule_and_objects_are_values() {
        let object = serde_json::json!({ "auth": { "hmac_secret_env": "X", "issuer": "https://i", "audience": "a" } });
        assert_eq!(config_input(object.clone()), ConfigInput::Value(object.clone()));
        assert_eq!(config_input(Value::String(object.to_string())), ConfigInput::Text(object.to_string()));
        let missing = config_input(Value::String("/no/such/wsguard.toml".into())).load().expect_err("no file");
        assert_eq!(missing.code(), wsguard::ErrorCode::ConfigFile);
    }
}
