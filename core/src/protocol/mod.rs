//! Wire protocol v1: frames, the codec (the only parser of untrusted message bytes) and channel
//! names. See `docs/PROTOCOL.md`.

mod channel;
mod codec;
mod config;
mod frames;

pub use channel::{MAX_CHANNEL_BYTES, validate_channel};
pub use codec::{ReplyError, decode, is_within_depth};
pub use config::ProtocolConfig;
pub use frames::{
    ClientFrame, DEFAULT_HISTORY_PAGE, DEFAULT_PRESENCE_LIMIT, MAX_HISTORY_PAGE, MAX_PRESENCE_LIMIT, ServerFrame,
    Since, encode_history_page,
};
