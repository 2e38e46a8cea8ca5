//! The cluster's errors: what went wrong between this node and its broker or quota store. None
//! reaches a client as text: a publication the broker did not take is answered
//! `broker_unavailable` ([`PublishError`]), a quota store that does not answer is
//! `quota_unavailable` or an admission, by `cluster.quota_failure`; the cause goes to logs,
//! metrics and the `broker_disconnected` event.

use crate::error::ErrorCode;

/// Why one operation on the broker (Redis or NATS) or the quota store (Redis) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The node holds no connection to the broker at the moment (it reconnects with backoff).
    #[error("not connected")]
    NotConnected,
    /// The broker did not answer within `cluster.broker_timeout_secs`.
    #[error("{0} timed out")]
    TimedOut(&'static str),
    /// The subscriber connection ended (the broker closed it).
    #[error("subscriber connection closed")]
    SubscriberClosed,
    /// `cluster.url` or `cluster.quota_redis_url` did not give a Redis client (validation
    /// reports it too).
    #[error("invalid Redis URL")]
    InvalidRedisUrl,
    /// Redis refused the command or the connection failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The NATS client refused the operation or the connection failed.
    #[error("{0}")]
    Nats(async_nats::Error),
}

impl BrokerError {
    /// A NATS client error (the client's error types differ per operation).
    pub(crate) fn nats(error: impl Into<async_nats::Error>) -> Self {
        BrokerError::Nats(error.into())
    }
}

/// Why a publication did not reach the other nodes (it did reach this node's subscribers).
/// The `Display` text is what the client's `broker_unavailable` reply and the host's error say.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The node is not connected to the broker.
    #[error("the broker is unreachable")]
    Unreachable,
    /// The broker refused the publication.
    #[error("the broker refused the publication")]
    Refused(#[source] BrokerError),
    /// The broker did not confirm within `cluster.broker_timeout_secs`.
    #[error("the broker did not confirm the publication in time")]
    TimedOut,
}

impl PublishError {
    /// The stable code: always `broker_unavailable`.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BrokerUnavailable
    }
}
