//! Observability: security/lifecycle events and counters. Metrics export and health endpoints
//! build on these (see the observability issue).

mod events;
mod stats;

pub use events::Event;
pub(crate) use events::EventSink;
pub(crate) use stats::Stats;
pub use stats::StatsSnapshot;
