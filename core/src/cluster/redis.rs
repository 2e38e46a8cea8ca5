//! Redis: [`RedisConnector`], the one place a connection to Redis is made (URL, password, TLS),
//! [`RedisStore`], the shared request connection of the cluster's Redis state (quota leases, used
//! jtis), and the pub/sub broker: one subscriber connection (SUBSCRIBE to the control channel and
//! the channels of interest) and one multiplexed connection for PUBLISH and health checks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::aio::{MultiplexedConnection, PubSubSink};

use super::tls::BrokerTls;
use super::{Broker, BrokerError, Link};
use crate::observe::Stats;

/// How this node connects to one Redis: the URL, the `AUTH` password and, for `rediss://`, the
/// `cluster.tls_*` material. Every Redis connection of the node (pub/sub, publishing, quota
/// leases, used jtis) is made here, so they all authenticate and verify the same way.
#[derive(Clone)]
pub(crate) struct RedisConnector {
    client: redis::Client,
}

impl RedisConnector {
    /// A connector for `url` (validated with the config); connects nothing yet.
    pub(crate) fn new(url: &str, password: Option<&str>, tls: Option<&BrokerTls>) -> redis::RedisResult<Self> {
        use redis::IntoConnectionInfo;
        let info = url.into_connection_info()?;
        let info = match password {
            Some(password) => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let client = match (info.addr(), tls) {
            (redis::ConnectionAddr::TcpTls { .. }, Some(tls)) => {
                redis::Client::build_with_tls(info, tls.redis.clone())?
            }
            _ => redis::Client::open(info)?,
        };
        Ok(RedisConnector { client })
    }

    /// A new multiplexed connection (requests and PUBLISH).
    pub(crate) async fn multiplexed(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.client.get_multiplexed_async_connection().await
    }

    /// A new subscriber connection.
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }
}

/// The cluster's Redis state store (`quota_redis_url`, else the Redis broker): one multiplexed
/// connection, made on first use and remade after a failure, every request time-boxed.
pub(crate) struct RedisStore {
    /// None when the URL did not give a client (validation reports it too).
    connector: Option<RedisConnector>,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
    stats: Arc<Stats>,
}

impl RedisStore {
    pub(crate) fn new(connector: Option<RedisConnector>, timeout: Duration, stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(RedisStore { connector, connection: tokio::sync::Mutex::new(None), timeout, stats })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connector = self.connector.as_ref().ok_or(BrokerError::InvalidRedisUrl)?;
        let connection = connector.multiplexed().await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `f` on the connection within `cluster.broker_timeout_secs`; a failure counts
    /// `wsguard_broker_errors_total{op}` and drops the connection so the next call reconnects.
    pub(crate) async fn with_connection<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, BrokerError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            Ok(f(connection).await?)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::TimedOut("cluster store request")),
        };
        if result.is_err() {
            *self.connection.lock().await = None;
            self.stats.record_broker_error(op);
        }
        result
    }
}

/// How often the connection is checked with PING (a dead peer without a TCP reset is noticed
/// within this plus the timeout).
const HEALTH_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct RedisBroker {
    /// None when the URL did not give a client (validation reports it too).
    connector: Option<RedisConnector>,
    timeout: Duration,
    /// The publishing connection while connected.
    publisher: Mutex<Option<MultiplexedConnection>>,
}

impl RedisBroker {
    pub(crate) fn new(connector: Option<RedisConnector>, timeout: Duration) -> Self {
        RedisBroker { connector, timeout, publisher: Mutex::new(None) }
    }

    fn publisher(&self) -> Option<MultiplexedConnection> {
        self.publisher.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), BrokerError> {
        let connector = self.connector.as_ref().ok_or(BrokerError::InvalidRedisUrl)?;
        let connect = async {
            let publisher = connector.multiplexed().await?;
            let pubsub = connector.pubsub().await?;
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
