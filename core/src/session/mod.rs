//! One task per connection, the protocol side of it: read -> size caps (in the transport) ->
//! rates -> decode -> replay check -> policy -> hook -> dispatch, with the outbox drained, pings
//! sent and the token's expiry and revocations watched in the same loop. The session decides;
//! every byte goes through its `transport::Connection` (the transport's module docs explain the
//! polling and the memory techniques the loop relies on). The session owns its subscriptions and
//! gives every one of them back to the hub on every exit path.

mod alarms;
mod dispatch;
mod inbound;
mod outbound;
mod registry;
mod state;
mod subscriptions;
mod timers;

use std::future::{Future, poll_fn};
use std::mem::ManuallyDrop;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

pub(crate) use alarms::Alarms;
pub(crate) use registry::{Local, Reach, Registry, Signal};
pub(crate) use state::Session;
use timers::Due;

use crate::auth::{Identity, JtiCache, RevocationList, TokenVerifier};
use crate::cluster::Cluster;
use crate::handshake::Held;
use crate::history::History;
use crate::hooks::{HandshakeInfo, HookRunner};
use crate::hub::Hub;
use crate::limits::{Bans, LimitsSettings, UserRates};
use crate::observe::{EventSink, Stats};
use crate::policy::Policy;
use crate::presence::Presence;
use crate::protocol::ProtocolConfig;
use crate::transport::Connection;
pub use crate::transport::{Disconnect, Reconnect};

/// What every session shares.
pub(crate) struct SessionEnv {
    pub(crate) hub: Arc<Hub>,
    pub(crate) history: Arc<History>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: EventSink,
    pub(crate) hooks: HookRunner,
    pub(crate) registry: Arc<Registry>,
    /// The sessions' alarms (each session's next deadline), served by one task of the server's.
    pub(crate) alarms: Arc<Alarms>,
    /// Swapped by reloads; read at every decision.
    pub(crate) policy: Arc<ArcSwap<Policy>>,
    /// Swapped by reloads; verifies in-band refresh tokens.
    pub(crate) verifier: Arc<ArcSwap<TokenVerifier>>,
    pub(crate) revocations: Arc<RevocationList>,
    pub(crate) jti_cache: Option<Arc<JtiCache>>,
    pub(crate) user_rates: UserRates,
    pub(crate) bans: Arc<Bans>,
    pub(crate) shutdown: CancellationToken,
    /// `[limits]` as compiled.
    pub(crate) limits: LimitsSettings,
    /// `[protocol]`: plain switches, used as written.
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
    pub(crate) held: Box<Held>,
    /// What the `authenticate` hook saw at the handshake.
    pub(crate) info: HandshakeInfo,
}

/// The effect of one client frame on the connection.
pub(crate) struct Outcome {
    /// Frames to write, in order (replies, `unsubscribed` notices).
    pub(crate) frames: Vec<Utf8Bytes>,
    /// Set when the frame ends the session.
    pub(crate) disconnect: Option<Disconnect>,
}

/// What one pass of the session loop does: what its select found ready. The select only picks
/// it, and the step runs after the select, so that no branch's output stays in the session's
/// future through another step's awaits (a delivery's write). The client message is in a
/// `ManuallyDrop`, which the `Read` step always takes out: a `Step` then has nothing to drop, so
/// it is not kept past the `match` (a value with drop glue would be, in every connection's task,
/// for its 40 bytes).
enum Step {
    /// The session's control: a request, a signal or its alarm.
    Control(registry::Wake),
    /// The outbox holds deliveries.
    Deliver,
    /// The client sent something (or its stream ended).
    Read(ManuallyDrop<crate::transport::Inbound>),
}

/// Runs one session to its end.
// A function returning an `async move` block rather than an `async fn`: an `async fn` keeps its
// arguments twice in its future (as captured arguments and as the locals they are moved into),
// and every idle connection would hold the connection and the start record twice.
#[allow(clippy::manual_async_fn, reason = "the async fn form doubles the arguments in the future")]
pub(crate) fn run<S>(mut conn: Connection<S>, env: Arc<SessionEnv>, start: SessionStart) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Built here, not in the block: the block keeps what it captures in place for its whole life,
    // and a field moved from a captured value into a local would hold both slots.
    let (mut session, held) = Session::new(start, env);
    async move {
        // One wait for everything from outside the session (its control: shutdown, revocations,
        // reloads, disconnect requests, and its alarm for every deadline of `Timers`, set in the
        // server's `Alarms`). Created once and polled in place; with nothing pending a poll is one
        // atomic operation and the waker's registration.
        let controlled = session.open().wait_owned();
        session.set_alarm();
        tokio::pin!(controlled);

        let disconnect = loop {
            // Biased: the order is the priority. A shutdown, a disconnect request, an expired token
            // or a revocation wins over a delivery or a client message that is ready at the same
            // time.
            // The select only picks the step, which runs after it (see `Step`).
            let step = tokio::select! {
                biased;
                wake = controlled.as_mut() => Step::Control(wake),
                () = poll_fn(|cx| session.link.outbox.poll_ready(cx)) => Step::Deliver,
                incoming = conn.next() => Step::Read(ManuallyDrop::new(incoming)),
            };
            match step {
                Step::Control(wake) => {
                    if let Some(d) = session.ends_on(&wake) {
                        break d;
                    }
                    // Taken before the re-authorization: a reload during it is seen next time.
                    if wake.has(Signal::Reload)
                        && let Err(d) = session.reauthorize_after_reload(&mut conn).await
                    {
                        break d;
                    }
                    if wake.has(Signal::Timer) {
                        match session.due() {
                            Due::TokenExpiry => break Disconnect::TokenExpired,
                            Due::Idle => break Disconnect::IdleTimeout,
                            Due::Ping => {
                                // Boxed, like every rare write (see the transport's module docs).
                                if let Err(d) = Box::pin(conn.ping(session.env.limits.write_timeout)).await {
                                    break d;
                                }
                            }
                            Due::Nothing => {}
                        }
                        session.set_alarm();
                    }
                }
                Step::Deliver => {
                    if let Err(d) = session.deliver(&mut conn).await {
                        break d;
                    }
                }
                Step::Read(incoming) => {
                    session.timers.record_activity();
                    // Boxed: the message pipeline's future is large, and only a batch of client
                    // messages needs it (one allocation per batch, none per delivery).
                    let batch = session.read_batch(&mut conn, ManuallyDrop::into_inner(incoming));
                    if let Some(d) = Box::pin(batch).await {
                        break d;
                    }
                    if session.timers.take_rescheduled() {
                        session.set_alarm();
                    }
                }
            }
        };

        session.leave();
        let reason = session.link.control.close_reason();
        // Boxed: rare, and inline it would be the largest state of the session's future.
        Box::pin(end(conn, session, held, disconnect, reason)).await;
    }
}

/// The end of a session, after it left the hub and the registry: the close frame, the release
/// of what the handshake held, the report, and then the lingering close on the bare socket, which
/// therefore holds no quota slot, permit or session state (the transport's `linger.rs`).
async fn end<S>(
    conn: Connection<S>,
    session: Session,
    held: Box<Held>,
    disconnect: Disconnect,
    reason: Option<Arc<str>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Only an operator's request carries a reason, and only the request that ended the session.
    let reason = reason.filter(|_| matches!(disconnect, Disconnect::ClosedWithCode(_)));
    let linger = conn.close(disconnect, reason.as_deref()).await;
    drop(held);
    session.report_closed(disconnect);
    let stats = Arc::clone(&session.env.stats);
    drop(session);
    if let Some(linger) = linger {
        stats.record_linger(linger.finish().await.name());
    }
}
