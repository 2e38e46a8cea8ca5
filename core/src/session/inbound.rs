//! What the session does with client messages: a batch of them, each through the pipeline of
//! [`Session::handle_text`] (or echoed back, in conformance mode), the batch's replies flushed
//! once.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Disconnect, Session};
use crate::transport::{Connection, Data, Inbound};

/// Most client messages handled, from what the socket already delivered, before the session
/// looks at its other events (deliveries, timers, revocations) again.
const READ_BATCH: usize = 32;

/// What one client message did to the session.
enum Step {
    Continue,
    /// The connection ended or failed: nothing more can be flushed (the close frame, if any, goes
    /// out with whatever is queued).
    Stop(Disconnect),
    /// The session ends after its replies are flushed.
    StopAfterReplies(Disconnect),
}

impl Session {
    /// Handles `first` and then every message the socket already delivered (a pipelining client
    /// sends many per read), up to [`READ_BATCH`]; the replies of the batch go out with one flush.
    /// Returns the disconnect that ends the session.
    pub(super) async fn read_batch<S>(&mut self, conn: &mut Connection<S>, first: Inbound) -> Option<Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut incoming = first;
        for handled in 1..=READ_BATCH {
            match self.on_message(conn, incoming).await {
                Step::Continue => {}
                Step::Stop(d) => return Some(d),
                Step::StopAfterReplies(d) => return Some(self.flush_replies(conn).await.err().unwrap_or(d)),
            }
            if handled == READ_BATCH {
                break;
            }
            match conn.next_buffered().await {
                Some(next) => incoming = next,
                None => {
                    // The socket ran dry: once the replies are out, an idle connection parks.
                    let flushed = self.flush_replies(conn).await;
                    if flushed.is_ok() {
                        conn.park_if_quiet();
                    }
                    return flushed.err();
                }
            }
        }
        self.flush_replies(conn).await.err()
    }

    /// One client message: text goes through the pipeline and its replies are handed to the
    /// connection, not flushed.
    async fn on_message<S>(&mut self, conn: &mut Connection<S>, incoming: Inbound) -> Step
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = &self.env.limits;
        let text = match incoming {
            // Conformance mode: the message went through every transport check (size caps, UTF-8,
            // framing) and is sent back unchanged, nothing decoded.
            Inbound::Data(data) if self.env.protocol.echo => {
                self.traffic.messages_in += 1;
                self.traffic.messages_out += 1;
                return match conn.echo(data, limits.write_timeout).await {
                    Ok(()) => Step::Continue,
                    Err(d) => Step::Stop(d),
                };
            }
            Inbound::Data(Data::Text(text)) => text,
            Inbound::Data(Data::Binary(bytes)) if self.env.protocol.allow_binary => match Utf8Bytes::try_from(bytes) {
                Ok(text) => text,
                Err(_) => return Step::Stop(Disconnect::InvalidUtf8),
            },
            Inbound::Data(Data::Binary(_)) => return Step::Stop(Disconnect::UnsupportedData),
            Inbound::Control => return Step::Continue,
            Inbound::Closed(code) => {
                let sent = conn.answer_close().await;
                self.env.stats.record_messages_out(false, sent);
                return Step::Stop(Disconnect::ClientClosed(code));
            }
            Inbound::Lost(d) => return Step::Stop(d),
        };
        self.traffic.messages_in += 1;
        let outcome = self.handle_text(&text).await;
        self.traffic.messages_out += outcome.frames.len() as u64;
        for frame in outcome.frames {
            if let Err(d) = conn.feed_reply(frame, self.env.limits.write_timeout).await {
                return Step::Stop(d);
            }
        }
        match outcome.disconnect {
            Some(d) => Step::StopAfterReplies(d),
            None => Step::Continue,
        }
    }

    /// Flushes the replies of the batch, if any, and counts them as sent.
    async fn flush_replies<S>(&mut self, conn: &mut Connection<S>) -> Result<(), Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let sent = conn.flush(self.env.limits.write_timeout).await?;
        if sent > 0 {
            self.env.stats.record_messages_out(false, sent);
        }
        Ok(())
    }
}
