//! Redis pub/sub: one subscriber connection (SUBSCRIBE to the control channel and the channels of
//! interest) and one multiplexed connection for PUBLISH and health checks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::aio::{MultiplexedConnection, PubSubSink};

use super::{Broker, BrokerError, Link};

/// How often the connection is checked with PING (a dead peer without a TCP reset is noticed
/// within this plus the timeout).
const HEALTH_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct RedisBroker {
    url: String,
    password: Option<String>,
    timeout: Duration,
    /// The publishing connection while connected.
    publisher: Mutex<Option<MultiplexedConnection>>,
}

impl RedisBroker {
    pub(crate) fn new(url: &str, password: Option<&str>, timeout: Duration) -> Self {
        RedisBroker {
            url: url.to_string(),
            password: password.map(str::to_string),
            timeout,
            publisher: Mutex::new(None),
        }
    }

    fn publisher(&self) -> Option<MultiplexedConnection> {
        self.publisher.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), BrokerError> {
        let client = super::config::redis_client(&self.url, self.password.as_deref())?;
        let connect = async {
            let publisher = client.get_multiplexed_async_connection().await?;
            let pubsub = client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((publisher, pubsub))
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BrokerError::TimedOut("connection")),
        }
    }

    /// One connected period: returns why it ended (None on shutdown).
    async fn session(
        &self,
        link: &Link,
        mut publisher: MultiplexedConnection,
        pubsub: redis::aio::PubSub,
    ) -> Option<BrokerError> {
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = sink.subscribe(link.subjects.control()).await {
            return Some(e.into());
        }
        let mut subscribed: HashSet<Arc<str>> = HashSet::new();
        if let Err(e) = reconcile(link, &mut sink, &mut subscribed).await {
            return Some(e);
        }
        *self.publisher.lock().unwrap_or_else(PoisonError::into_inner) = Some(publisher.clone());
        link.set_connected(true, "");
        let mut health = tokio::time::interval(HEALTH_EVERY);
        health.tick().await;
        loop {
            tokio::select! {
                _ = link.shutdown.cancelled() => return None,
                message = stream.next() => match message {
                    Some(message) => link.deliver(message.get_channel_name(), message.get_payload_bytes()),
                    None => return Some(BrokerError::SubscriberClosed),
                },
                _ = link.interest.changed() => {
                    if let Err(e) = reconcile(link, &mut sink, &mut subscribed).await {
                        return Some(e);
                    }
                }
                _ = health.tick() => {
                    let ping = redis::cmd("PING");
                    match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut publisher)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(e.into()),
                        Err(_) => return Some(BrokerError::TimedOut("PING")),
                    }
                }
            }
        }
    }
}

/// Subscribes to wanted channels and unsubscribes from the rest.
async fn reconcile(link: &Link, sink: &mut PubSubSink, subscribed: &mut HashSet<Arc<str>>) -> Result<(), BrokerError> {
    let wanted = link.interest.wanted();
    let add: Vec<String> = wanted.difference(subscribed).map(|c| link.subjects.channel(c)).collect();
    let remove: Vec<String> = subscribed.difference(&wanted).map(|c| link.subjects.channel(c)).collect();
    if !add.is_empty() {
        sink.subscribe(&add).await.map_err(|e| {
            link.stats.record_broker_error("subscribe");
            BrokerError::from(e)
        })?;
    }
    if !remove.is_empty() {
        sink.unsubscribe(&remove).await.map_err(|e| {
            link.stats.record_broker_error("subscribe");
            BrokerError::from(e)
        })?;
    }
    link.stats.set_broker_subscriptions(wanted.len());
    *subscribed = wanted.clone();
    link.interest.set_active(wanted);
    Ok(())
}

impl Broker for RedisBroker {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>> {
        let publisher = self.publisher();
        Box::pin(async move {
            let Some(mut publisher) = publisher else { return Err(BrokerError::NotConnected) };
            redis::cmd("PUBLISH")
                .arg(subject)
                .arg(payload.as_ref())
                .query_async::<i64>(&mut publisher)
                .await
                .map(|_| ())
                .map_err(BrokerError::from)
        })
    }

    fn run(self: Arc<Self>, link: Arc<Link>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut attempt = 0u32;
            loop {
                let outcome = tokio::select! {
                    _ = link.shutdown.cancelled() => return,
                    connected = self.connect() => connected,
                };
                let error = match outcome {
                    Ok((publisher, pubsub)) => {
                        attempt = 0;
                        let ended = self.session(&link, publisher, pubsub).await;
                        *self.publisher.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        match ended {
                            None => return,
                            Some(e) => e,
                        }
                    }
                    Err(e) => {
                        link.stats.record_broker_error("connect");
                        e
                    }
                };
                link.set_connected(false, &error.to_string());
                let pause = link.backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    target: "wsguard::cluster", broker = "redis", error = %error,
                    retry_in_ms = pause.as_millis() as u64, "broker unreachable"
                );
                tokio::select! {
                    _ = link.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        })
    }
}
