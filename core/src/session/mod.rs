//! One task per connection: read -> size caps (tungstenite) -> rates -> decode -> replay check ->
//! policy -> hook -> dispatch, with the outbox drained, pings sent and the token's expiry and
//! revocations watched in the same loop. The session owns its subscriptions and gives every one of
//! them back to the hub on every exit path.

mod disconnect;
mod dispatch;
mod gate;
mod registry;
mod transport;

use std::collections::{HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

pub use disconnect::Disconnect;
use gate::{Gate, ReadGate};
pub(crate) use registry::{Registry, Signal};
use transport::{Traffic, WriteFrames, finish_delivery, read_batch, send_ping, write_all};

use crate::auth::{Identity, JtiCache, RevocationList, TokenVerifier, now_secs};
use crate::cluster::Cluster;
use crate::hooks::{HandshakeInfo, HookRunner};
use crate::hub::{Hub, Outbox};
use crate::limits::{Bans, DirectRate, LimitsSettings, UserRates};
use crate::observe::{Event, EventSink, Stats};
use crate::policy::Policy;
use crate::protocol::ProtocolConfig;

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a closing session waits for the client's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What every session shares.
pub(crate) struct SessionEnv {
    pub(crate) hub: Arc<Hub>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: EventSink,
    pub(crate) hooks: HookRunner,
    pub(crate) registry: Arc<Registry>,
    /// Swapped by reloads; read at every decision.
    pub(crate) policy: Arc<ArcSwap<Policy>>,
    /// Swapped by reloads; verifies in-band refresh tokens.
    pub(crate) verifier: Arc<ArcSwap<TokenVerifier>>,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) jti_cache: Option<Arc<JtiCache>>,
    pub(crate) user_rates: UserRates,
    /// One rate-limiter clock for every session (cheap to clone, costly to create).
    pub(crate) clock: governor::clock::DefaultClock,
    pub(crate) bans: Arc<Bans>,
    pub(crate) shutdown: CancellationToken,
    /// `[limits]` as compiled.
    pub(crate) limits: LimitsSettings,
    pub(crate) protocol: ProtocolConfig,
    /// `auth.leeway_secs`: a session ends this long after its token's `exp`.
    pub(crate) leeway_secs: u64,
    /// `auth.session_bound_claims`: a refreshed token must carry the same values.
    pub(crate) session_bound_claims: Vec<String>,
}

/// One admitted connection.
pub(crate) struct SessionStart {
    pub(crate) id: u64,
    pub(crate) identity: Arc<Identity>,
    pub(crate) client_ip: IpAddr,
    /// Quota slots and the connection permit, released when the session ends.
    pub(crate) held: Box<dyn Send>,
    /// What the `authenticate` hook saw at the handshake.
    pub(crate) info: HandshakeInfo,
}

/// Per-session state the dispatcher works on.
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) identity: Arc<Identity>,
    pub(crate) outbox: Outbox,
    pub(crate) subscriptions: HashSet<String>,
    pub(crate) env: Arc<SessionEnv>,
    message_rate: DirectRate,
    byte_rate: DirectRate,
    /// The user's bucket, shared with the user's other sessions.
    user_rate: Arc<DirectRate>,
    violations: VecDeque<Instant>,
    last_seq: Option<u64>,
    info: HandshakeInfo,
    client_ip: IpAddr,
}

/// The effect of one client frame on the connection.
pub(crate) struct Outcome {
    /// Frames to write, in order (replies, `unsubscribed` notices).
    pub(crate) frames: Vec<Utf8Bytes>,
    /// Set when the frame ends the session.
    pub(crate) disconnect: Option<Disconnect>,
}

/// The session timer's next deadline: the token's expiry, the idle timeout counted from the last
/// client frame, or the next ping, whichever comes first.
fn next_deadline(limits: &LimitsSettings, expires_at: Instant, last_activity: Instant, next_ping: Instant) -> Instant {
    expires_at.min(last_activity + limits.idle_timeout).min(next_ping)
}

fn expiry_deadline(identity: &Identity, leeway_secs: u64) -> Instant {
    let remaining = identity.expires_at.saturating_add(leeway_secs).saturating_sub(now_secs());
    Instant::now() + Duration::from_secs(remaining)
}

/// Runs one session to its end.
// A function returning an `async move` block rather than an `async fn`: an `async fn` keeps its
// arguments twice in its future (as captured arguments and as the locals they are moved into),
// and the WebSocket stream and the start record are about 450 bytes that every idle connection
// would hold twice.
#[allow(clippy::manual_async_fn, reason = "the async fn form doubles the arguments in the future")]
pub(crate) fn run<S>(mut ws: WebSocketStream<S>, env: Arc<SessionEnv>, start: SessionStart) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Built here, not in the block: the block keeps what it captures in place for its whole life,
    // and a field moved from a captured value into a local would hold both slots.
    let SessionStart { id, identity, client_ip, held, info } = start;
    let limits = &env.limits;
    let user_rate = env.user_rates.bucket(&identity.subject);
    let mut session = Session {
        id,
        identity,
        outbox: Outbox::new(limits.outbox_messages, limits.outbox_bytes, Arc::clone(&env.stats)),
        subscriptions: HashSet::new(),
        env: Arc::clone(&env),
        message_rate: DirectRate::new(limits.message_rate, &env.clock),
        byte_rate: DirectRate::new(limits.byte_rate, &env.clock),
        user_rate,
        violations: VecDeque::new(),
        last_seq: None,
        info,
        client_ip,
    };
    async move {
        let started = Instant::now();
        let control = env.registry.register(session.id, &session.identity);
        // A shutdown or a revocation between the handshake's checks and the registration would
        // otherwise be missed: the relay (`server::relay_signals`) only reaches registered sessions. A
        // reload would not matter yet (no subscriptions).
        if env.shutdown.is_cancelled() {
            control.signal(Signal::Shutdown);
        }
        if env.revocations.is_revoked(&session.identity) {
            control.signal(Signal::Revocation);
        }
        env.stats.session_opened();
        env.events.emit(Event::SessionOpened {
            session_id: session.id,
            user: session.identity.subject.clone(),
            client_ip: session.client_ip,
        });
        // One timer serves the token's expiry, the idle timeout and the heartbeat: it is set to
        // the earliest of the three deadlines and, when it fires, the loop sees which are due.
        // Three timers cost every idle connection about 350 bytes and three timer-wheel entries.
        // The idle deadline is not moved per message: the timer fires at the old one and is set
        // again from `last_activity`.
        let mut expires_at = expiry_deadline(&session.identity, env.leeway_secs);
        let mut last_activity = Instant::now();
        let mut next_ping = last_activity + env.limits.ping_interval;
        let timer = tokio::time::sleep_until(next_deadline(&env.limits, expires_at, last_activity, next_ping));
        tokio::pin!(timer);
        let mut traffic = Traffic::default();
        // Deliveries and reload notices are drained into this one buffer, reused for the whole
        // session: a delivery costs no allocation once it has grown to a batch.
        let mut frames: Vec<Utf8Bytes> = Vec::new();
        // A delivery write was cut off inside a frame (see `finish_delivery`): no close frame.
        let mut mid_frame = false;

        // The waits are created once and polled in place, not rebuilt for every message (each
        // rebuild registered and dropped a `Notify` waiter). The rare ones are polled through the
        // gate, only in passes after one of them woke the task ([`Gate`]). A wait that fires is
        // re-armed with `set`, and the gate told to poll it once so it registers again.
        // Shutdown, revocations and reloads reach the session through its control, with the
        // disconnect requests: one wait instead of four (about 400 bytes less per connection).
        let controlled = control.wait();
        tokio::pin!(controlled);
        let gate = Gate::new();
        let reads = ReadGate::new();

        let disconnect = loop {
            let is_due = gate.take_due();
            // Biased: the order is the priority. A shutdown, a disconnect request, an expired token
            // or a revocation wins over a delivery or a client message that is ready at the same
            // time; in a pass that does not poll them, `gate.woken()` (ahead of deliveries and
            // reads) sends the loop round to a pass that does.
            tokio::select! {
                biased;
                wake = gate.gated(controlled.as_mut()), if is_due => {
                    if wake.has(Signal::Shutdown) {
                        break Disconnect::ServerShutdown;
                    }
                    if let Some(requested) = wake.requested {
                        break requested;
                    }
                    if wake.has(Signal::Revocation) && env.revocations.is_revoked(&session.identity) {
                        break Disconnect::Revoked;
                    }
                    // Re-armed first: a reload during the re-authorization is seen next time.
                    controlled.set(control.wait());
                    gate.mark_due();
                    if wake.has(Signal::Reload) {
                        let identity = Arc::clone(&session.identity);
                        // Boxed, like `read_batch` below: see there.
                        frames.extend(Box::pin(session.reauthorize(&identity)).await);
                        traffic.messages_out += frames.len() as u64;
                        if let Err(d) = Box::pin(write_all(&mut ws, &mut frames, false, &env)).await {
                            break d;
                        }
                    }
                }
                () = gate.gated(timer.as_mut()), if is_due => {
                    let now = Instant::now();
                    if expires_at <= now {
                        break Disconnect::TokenExpired;
                    }
                    if last_activity + env.limits.idle_timeout <= now {
                        break Disconnect::IdleTimeout;
                    }
                    if next_ping <= now {
                        next_ping = now + env.limits.ping_interval;
                        // Boxed, like the reload's write above and the close after the loop: rare,
                        // and inline each would be the largest state of this future, which every
                        // idle connection holds for its whole life (docs/PERFORMANCE.md, idle
                        // memory).
                        if let Err(d) = Box::pin(send_ping(&mut ws, &env)).await {
                            break d;
                        }
                    }
                    timer.as_mut().reset(next_deadline(&env.limits, expires_at, last_activity, next_ping));
                    gate.mark_due();
                }
                () = gate.woken(), if !is_due => {}
                () = poll_fn(|cx| session.outbox.poll_ready(cx)) => {
                    if session.outbox.drain_into(WRITE_BATCH, &mut frames).is_err() {
                        break Disconnect::SlowConsumer;
                    }
                    let count = frames.len() as u64;
                    if count == 0 {
                        // Woken by a push whose frame an earlier drain already took.
                        continue;
                    }
                    traffic.messages_out += count;
                    // Usually the write is done at its first poll; only one that has to wait races
                    // the overflow: a stalled client must not hide it behind the write timeout.
                    let mut write = WriteFrames::new(&mut ws, &mut frames);
                    let written = match poll_fn(|cx| Poll::Ready(Pin::new(&mut write).poll(cx))).await {
                        Poll::Ready(written) => written.map_err(|e| transport::classify(&e)),
                        // Boxed: rare, and inline it would be this future's largest state.
                        Poll::Pending => {
                            let limit = env.limits.write_timeout;
                            Box::pin(finish_delivery(write, &session.outbox, limit, &mut mid_frame)).await
                        }
                    };
                    if let Err(d) = written {
                        break d;
                    }
                    env.stats.record_messages_out(true, count);
                }
                incoming = reads.next(&mut ws) => {
                    last_activity = Instant::now();
                    let expires = expires_at;
                    // Boxed: the message pipeline's future (about 2 KiB) would otherwise be part of
                    // this task's future, which every idle connection holds for its whole life. One
                    // allocation per batch of client messages (none per delivery) buys that back.
                    let batch =
                        read_batch(&mut ws, &reads, &mut session, &env, incoming, &mut expires_at, &mut traffic);
                    let batch = Box::pin(batch).await;
                    if expires_at != expires {
                        // A refresh moved the expiry.
                        timer.as_mut().reset(next_deadline(&env.limits, expires_at, last_activity, next_ping));
                        gate.mark_due();
                    }
                    if let Some(d) = batch {
                        break d;
                    }
                }
            }
        };

        for channel in session.subscriptions.drain() {
            env.hub.unsubscribe(&channel, session.id);
        }
        env.registry.remove(session.id);
        if let Some(frame) = disconnect.close_frame().filter(|_| !mid_frame) {
            // Send the close frame, then give the client a moment to answer it (RFC 6455 §7.1.1: the
            // server should let the client see the close before the TCP connection goes).
            let closing = async {
                if ws.close(Some(frame)).await.is_ok() {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            };
            let _ = Box::pin(tokio::time::timeout(CLOSE_WAIT, closing)).await;
        }
        drop(held);
        let duration_secs = started.elapsed().as_secs_f64();
        env.stats.session_closed(disconnect.code(), disconnect.reason(), duration_secs);
        env.events.emit(Event::SessionClosed {
            session_id: session.id,
            user: session.identity.subject.clone(),
            client_ip: session.client_ip,
            close_code: disconnect.code(),
            reason: disconnect.reason(),
            duration_secs,
            messages_in: traffic.messages_in,
            messages_out: traffic.messages_out,
        });
    }
}

impl Session {
    /// Records a violation; true when the session has now exceeded `limits.max_violations` within
    /// the window.
    pub(crate) fn record_violation(&mut self) -> bool {
        let now = Instant::now();
        let window = self.env.limits.violation_window;
        while self.violations.front().is_some_and(|t| now.duration_since(*t) > window) {
            self.violations.pop_front();
        }
        self.violations.push_back(now);
        self.env.bans.record_violation(self.client_ip, &self.identity.subject);
        self.violations.len() > self.env.limits.max_violations
    }
}
