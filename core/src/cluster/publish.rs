//! A publication's one path, for a client's publish and the host's alike: counted under its rule,
//! encoded once, queued for this node's subscribers, and sent to the other nodes. The caller only
//! chooses whether to wait for the broker's confirmation.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::history::RedisHistory;
use super::{BrokerError, BrokerKind, Cluster, PublishError, now_ms, wire};
use crate::history::Retention;
use crate::protocol::ServerFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A publication delivered on this node, on its way to the other nodes.
#[must_use = "a publication reports whether the other nodes got it"]
pub(crate) struct Publication {
    queued: usize,
    remote: Remote,
}

/// Where the copy for the other nodes is.
enum Remote {
    /// No other node (the memory broker).
    Alone,
    /// Not sent: the broker is unreachable (already counted).
    Unreachable,
    /// Handed to the broker, confirmation pending.
    Sent(Arc<Cluster>, BoxFuture<'static, Result<(), BrokerError>>),
}

impl Cluster {
    /// Publishes `payload` on `channel`: counts it under `rule` (the channel rule's id, `server`
    /// for the host's publishes), encodes the `message` frame once (with `from`, the publisher
    /// stamp, when the rule asks for one), queues it for this node's subscribers and hands it to
    /// the broker for the other nodes. The stamp is part of the frame, so other nodes deliver it
    /// unchanged and a signed envelope covers it.
    /// On a channel that keeps history (`retention`), the frame also carries the channel's next
    /// offset and is stored, in offset order with the fan-out (see the history area). Without
    /// history, other nodes or a local subscriber, the frame is not encoded at all.
    pub(crate) fn publish(
        self: &Arc<Self>,
        channel: &str,
        payload: &Value,
        from: Option<&Value>,
        rule: &str,
        retention: Option<Retention>,
    ) -> Publication {
        self.stats.record_publication(rule);
        let hub = &self.link.inbound.hub;
        if let (Some(retention), Some(history)) = (retention, &self.redis_history) {
            return self.publish_kept(Arc::clone(history), channel, payload, from, retention);
        }
        // No subscriber on this node and no other node: nobody would read the frame, so it is
        // not encoded (the publication is still counted, and was authorized like any other).
        if retention.is_none() && self.link.kind == BrokerKind::Memory && hub.subscriber_count(channel) == 0 {
            return Publication { queued: 0, remote: Remote::Alone };
        }
        let (frame, queued) = match retention {
            None => {
                let frame = ServerFrame::Message { channel, payload, from, offset: None }.encode();
                let queued = hub.publish(channel, &frame);
                (frame, queued)
            }
            Some(retention) => self.history.publish(
                channel,
                retention,
                |offset| ServerFrame::Message { channel, payload, from, offset: Some(offset) }.encode(),
                |frame| (frame.clone(), hub.publish(channel, frame)),
            ),
        };
        self.send_remote(channel, frame, queued)
    }

    /// A publication on a channel whose history is in Redis: its offset is taken, the frame stored
    /// and PUBLISHed by one script (see cluster/history.rs), and every node, this one included,
    /// delivers it when the broker hands it back, so all deliver in offset order. Nothing is
    /// queued here: the count returned is this node's subscribers of the channel at publish time.
    fn publish_kept(
        self: &Arc<Self>,
        history: Arc<RedisHistory>,
        channel: &str,
        payload: &Value,
        from: Option<&Value>,
        retention: Retention,
    ) -> Publication {
        let queued = self.link.inbound.hub.subscriber_count(channel);
        let cluster = Arc::clone(self);
        let channel = channel.to_string();
        let payload = payload.clone();
        let from = from.cloned();
        let append = async move {
            let subject = cluster.link.subjects.channel(&channel);
            history
                .append(
                    &channel,
                    retention,
                    &subject,
                    |offset| {
                        ServerFrame::Message {
                            channel: &channel,
                            payload: &payload,
                            from: from.as_ref(),
                            offset: Some(offset),
                        }
                        .encode()
                    },
                    |frame| {
                        let sent_ms = now_ms();
                        cluster.link.guard.seal(&subject, sent_ms, frame.as_bytes(), || {
                            wire::encode_publication(&cluster.link.node_id, sent_ms, frame)
                        })
                    },
                )
                .await
                .map(|_| ())
        };
        Publication { queued, remote: Remote::Sent(Arc::clone(self), Box::pin(append)) }
    }

    /// Queues an encoded server frame (a `join` or `leave`) for every subscriber of `channel`, on
    /// this node and, through the broker, on the others: the same path as a publication, so it
    /// reaches the same sessions in the same order, but not counted as one (nor kept in history).
    pub(crate) fn send_frame(self: &Arc<Self>, channel: &str, frame: Utf8Bytes) -> Publication {
        let queued = self.link.inbound.hub.publish(channel, &frame);
        self.send_remote(channel, frame, queued)
    }

    /// Hands a frame already queued for `queued` sessions of this node to the broker.
    fn send_remote(self: &Arc<Self>, channel: &str, frame: Utf8Bytes, queued: usize) -> Publication {
        let remote = if self.link.kind == BrokerKind::Memory {
            Remote::Alone
        } else if !self.link.is_connected() {
            self.stats.record_broker_error("publish");
            Remote::Unreachable
        } else {
            let subject = self.link.subjects.channel(channel);
            let sent_ms = now_ms();
            let payload = self.link.guard.seal(&subject, sent_ms, frame.as_bytes(), || {
                wire::encode_publication(&self.link.node_id, sent_ms, &frame)
            });
            Remote::Sent(Arc::clone(self), self.broker.publish(subject, payload.into()))
        };
        Publication { queued, remote }
    }
}

impl Publication {
    /// Waits (at most `cluster.broker_timeout_secs`) for the broker's confirmation. Returns how
    /// many sessions of this node it was queued for; an error means the other nodes did not get it.
    pub(crate) async fn confirmed(self) -> Result<usize, PublishError> {
        let (cluster, publish) = match self.remote {
            Remote::Alone => return Ok(self.queued),
            Remote::Unreachable => return Err(PublishError::Unreachable),
            Remote::Sent(cluster, publish) => (cluster, publish),
        };
        match tokio::time::timeout(cluster.timeout, publish).await {
            Ok(Ok(())) => {
                cluster.stats.record_broker_published("publication");
                Ok(self.queued)
            }
            Ok(Err(e)) => {
                cluster.stats.record_broker_error("publish");
                tracing::debug!(target: "wsguard::cluster", error = %e, "publish failed");
                Err(PublishError::Refused(e))
            }
            Err(_) => {
                cluster.stats.record_broker_error("publish");
                Err(PublishError::TimedOut)
            }
        }
    }

    /// Does not wait (the host API is synchronous): the confirmation is counted when it comes.
    /// Fails at once only when the broker is known to be unreachable. Returns how many sessions
    /// of this node it was queued for, also on error.
    pub(crate) fn detach(self) -> Result<usize, (PublishError, usize)> {
        match self.remote {
            Remote::Alone => Ok(self.queued),
            Remote::Unreachable => Err((PublishError::Unreachable, self.queued)),
            Remote::Sent(cluster, publish) => {
                let runtime = cluster.runtime.clone();
                runtime.spawn(async move {
                    match tokio::time::timeout(cluster.timeout, publish).await {
                        Ok(Ok(())) => cluster.stats.record_broker_published("publication"),
                        _ => cluster.stats.record_broker_error("publish"),
                    }
                });
                Ok(self.queued)
            }
        }
    }
}
