//! NATS core pub/sub through async-nats. The client reconnects and re-subscribes by itself; its
//! connection events drive readiness and the `gap` announcement. One forwarding task per
//! subscribed channel; dropping a subscription unsubscribes it at the server.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::tls::BrokerTls;
use super::{Broker, BrokerError, Link};

/// How often a connected client that failed to re-subscribe tries again.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait for the server to answer a round trip.
const ROUND_TRIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct NatsBroker {
    client: Mutex<Option<async_nats::Client>>,
    password: Option<String>,
    /// `cluster.tls_*` (None: TLS only if the URL is `tls://` or the server asks, with the system
    /// trust store).
    tls: Option<Arc<BrokerTls>>,
}

impl NatsBroker {
    pub(crate) fn new(password: Option<&str>, tls: Option<Arc<BrokerTls>>) -> Self {
        NatsBroker { client: Mutex::new(None), password: password.map(str::to_string), tls }
    }

    fn client(&self) -> Option<async_nats::Client> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn forward(link: &Arc<Link>, mut subscriber: async_nats::Subscriber) -> JoinHandle<()> {
    let link = Arc::clone(link);
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            link.deliver(message.subject.as_str(), &message.payload);
        }
    })
}

async fn reconcile(
    link: &Arc<Link>,
    client: &async_nats::Client,
    subscribed: &mut HashMap<Arc<str>, JoinHandle<()>>,
) -> Result<(), BrokerError> {
    let wanted = link.interest.wanted();
    subscribed.retain(|channel, task| {
        let keep = wanted.contains(channel);
        if !keep {
            task.abort();
        }
        keep
    });
    for channel in &wanted {
        if subscribed.contains_key(channel) {
            continue;
        }
        let subscriber = client.subscribe(link.subjects.channel(channel)).await.map_err(|e| {
            link.stats.record_broker_error("subscribe");
            BrokerError::nats(e)
        })?;
        subscribed.insert(Arc::clone(channel), forward(link, subscriber));
    }
    round_trip(link, client).await.inspect_err(|_| link.stats.record_broker_error("subscribe"))?;
    link.stats.set_broker_subscriptions(wanted.len());
    link.interest.set_active(wanted.into_iter().collect::<HashSet<_>>());
    Ok(())
}

/// Resolves once the server has processed everything this client sent before (its SUBs in
/// particular). `flush` only proves the bytes were written; a request nobody answers comes back
/// from the server itself as "no responders", after the commands before it.
async fn round_trip(link: &Link, client: &async_nats::Client) -> Result<(), BrokerError> {
    let subject = format!("{}.sync.{}", link.subjects.control(), client.new_inbox());
    let request = async_nats::Request::new().timeout(Some(ROUND_TRIP_TIMEOUT));
    match client.send_request(subject, request).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(BrokerError::nats(e)),
    }
}

impl Broker for NatsBroker {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>> {
        let client = self.client();
        Box::pin(async move {
            let Some(client) = client else { return Err(BrokerError::NotConnected) };
            // async-nats buffers publishes while disconnected; that would be a silent success.
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err(BrokerError::NotConnected);
            }
            client.publish(subject, payload).await.map_err(BrokerError::nats)?;
            // NATS core has no publish acknowledgement: confirmed means written to the server's
            // connection (docs/OPERATIONS.md states what that leaves open).
            client.flush().await.map_err(BrokerError::nats)
        })
    }

    fn run(self: Arc<Self>, link: Arc<Link>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let (events, mut events_rx) = mpsc::unbounded_channel();
            let reconnect_link = Arc::clone(&link);
            let (url, user) = super::config::split_user(&link.url);
            let options = match (user, self.password.clone()) {
                (Some(user), Some(password)) => async_nats::ConnectOptions::with_user_and_password(user, password),
                (None, Some(token)) => async_nats::ConnectOptions::with_token(token),
                _ => async_nats::ConnectOptions::new(),
            };
            let options = match &self.tls {
                // Required, so a server (or a man in the middle) that offers no TLS is refused.
                Some(tls) => options.tls_client_config((*tls.rustls).clone()).require_tls(true),
                None => options,
            };
            let options = options
                .name(format!("wsguard {}", link.node_id))
                .no_echo()
                .retry_on_initial_connect()
                .max_reconnects(None)
                .reconnect_delay_callback(move |attempts| {
                    reconnect_link.backoff(u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX))
                })
                .event_callback(move |event| {
                    let events = events.clone();
                    async move {
                        let _ = events.send(event);
                    }
                });
            let client = tokio::select! {
                _ = link.shutdown.cancelled() => return,
                client = options.connect(url.as_str()) => match client {
                    Ok(client) => client,
                    Err(e) => {
                        link.stats.record_broker_error("connect");
                        tracing::error!(target: "wsguard::cluster", broker = "nats", error = %e, "cannot start the NATS client");
                        return;
                    }
                },
            };
            *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(client.clone());
            let control = match client.subscribe(link.subjects.control().to_string()).await {
                Ok(subscriber) => forward(&link, subscriber),
                Err(e) => {
                    link.stats.record_broker_error("subscribe");
                    tracing::error!(target: "wsguard::cluster", broker = "nats", error = %e, "cannot subscribe to the control subject");
                    return;
                }
            };
            let mut subscribed: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
            let mut is_up = false;
            // Connected but not yet re-subscribed (a failed round trip): try again on this tick.
            let mut retry = tokio::time::interval(RETRY_EVERY);
            loop {
                tokio::select! {
                    _ = link.shutdown.cancelled() => break,
                    Some(event) = events_rx.recv() => match event {
                        async_nats::Event::Connected => {
                            is_up = true;
                            match reconcile(&link, &client, &mut subscribed).await {
                                Ok(()) => link.set_connected(true, ""),
                                Err(e) => tracing::warn!(target: "wsguard::cluster", broker = "nats", error = %e, "re-subscribing failed"),
                            }
                        }
                        async_nats::Event::Disconnected => {
                            is_up = false;
                            link.stats.record_broker_error("connect");
                            link.set_connected(false, "disconnected from the NATS server");
                            tracing::warn!(target: "wsguard::cluster", broker = "nats", "broker unreachable; reconnecting");
                        }
                        other => tracing::debug!(target: "wsguard::cluster", broker = "nats", event = %other, "NATS event"),
                    },
                    _ = link.interest.changed() => {
                        if is_up && let Err(e) = reconcile(&link, &client, &mut subscribed).await {
                            tracing::warn!(target: "wsguard::cluster", broker = "nats", error = %e, "subscription change failed");
                        }
                    }
                    _ = retry.tick(), if is_up && !link.is_connected() => {
                        if reconcile(&link, &client, &mut subscribed).await.is_ok() {
                            link.set_connected(true, "");
                        }
                    }
                }
            }
            control.abort();
            for task in subscribed.into_values() {
                task.abort();
            }
            *self.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
        })
    }
}
