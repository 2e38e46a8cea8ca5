//! What the session writes without a client message asking for it: the deliveries its outbox
//! holds, and the `unsubscribed` notices after a policy reload.

use std::future::Future;
use std::sync::Arc;
use std::task::Context;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Disconnect, Session};
use crate::transport::Connection;

/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

impl Session {
    /// Writes what the outbox holds, up to [`WRITE_BATCH`] frames with one flush. An outbox that
    /// overflowed, before or during the write, ends the session as a slow consumer.
    // The session loop holds this future inline, in every connection's task.
    #[allow(clippy::manual_async_fn, reason = "the async fn form doubles the arguments in the future")]
    pub(super) fn deliver<'a, S>(
        &'a mut self,
        conn: &'a mut Connection<S>,
    ) -> impl Future<Output = Result<(), Disconnect>> + 'a
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        async move {
            let batch = conn.batch();
            if self.link.outbox.drain_into(WRITE_BATCH, batch).is_err() {
                return Err(Disconnect::SlowConsumer);
            }
            let count = batch.len() as u64;
            if count == 0 {
                // Woken by a push whose frame an earlier drain already took.
                return Ok(());
            }
            self.traffic.messages_out += count;
            let overflowed = |cx: &mut Context<'_>| self.link.outbox.poll_overflowed(cx);
            conn.write_deliveries(overflowed, self.env.limits.write_timeout).await?;
            self.env.stats.record_messages_out(true, count);
            Ok(())
        }
    }

    /// After a policy reload: re-authorizes every subscription and writes the `unsubscribed`
    /// notices of those no longer allowed.
    pub(super) async fn reauthorize_after_reload<S>(&mut self, conn: &mut Connection<S>) -> Result<(), Disconnect>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let identity = Arc::clone(&self.identity);
        // Both boxed: rare, and inline either would be the largest state of the session's future.
        let notices = Box::pin(self.reauthorize(&identity)).await;
        let batch = conn.batch();
        batch.extend(notices);
        let count = batch.len() as u64;
        if count == 0 {
            return Ok(());
        }
        self.traffic.messages_out += count;
        Box::pin(conn.write_batch(self.env.limits.write_timeout)).await?;
        self.env.stats.record_messages_out(false, count);
        Ok(())
    }
}
