//! Observability: security/lifecycle events, the metrics registry and the admin listener
//! (`/metrics`, `/healthz`, `/readyz`). This area records and reports; it never decides.

pub(crate) mod admin;
mod config;
mod events;
mod stats;

pub use config::{LogFormat, ObservabilityConfig};

pub use events::Event;
pub(crate) use events::EventSink;
pub(crate) use stats::Stats;
pub use stats::StatsSnapshot;
