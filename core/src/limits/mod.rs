//! Limits: connection quotas, rate limits and size caps. This area counts and refuses; it never
//! decides identity or policy.

mod config;
mod quota;
mod rate;

pub use config::LimitsConfig;
pub(crate) use quota::ConnectionQuota;
pub(crate) use rate::{DirectRate, KeyedRate, retry_after_secs};
