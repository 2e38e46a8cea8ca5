//! Limits: connection quotas, rate limits and size caps. This area counts and refuses; it never
//! decides identity or policy.

mod abuse;
mod config;
mod quota;
mod rate;
mod settings;

pub use abuse::{AbuseConfig, BanInfo, BanTarget};
pub(crate) use abuse::{BanBroadcast, Bans, RateBaseline, ban_reason};
pub use config::LimitsConfig;
pub(crate) use quota::{ConnectionQuota, QuotaSlot};
pub(crate) use rate::{DirectRate, KeyedRate, Rate, UserRates, retry_after_secs};
pub(crate) use settings::{AbuseSettings, LimitsSettings};
