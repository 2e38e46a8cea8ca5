//! `Disconnect`: the one place a server-ended session becomes a close code. Code ranges tell the
//! client what to do next (docs/PROTOCOL.md):
//!
//! - RFC 6455 codes 1002/1003/1007/1008/1009: the client is broken or abusive; do not reconnect
//!   unchanged.
//! - 1001: reconnect with backoff.
//! - 4000-4099: reconnect with backoff.
//! - 4100-4199: reconnect at once with a fresh token.
//! - 4500-4599: do not reconnect.

use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The client closed the connection (its close code, 1005 when none was given).
    ClientClosed(u16),
    /// The connection broke without a close handshake.
    ConnectionLost,
    /// The server is shutting down (1001).
    ServerShutdown,
    /// A frame violated RFC 6455 (1002).
    ProtocolError,
    /// A binary frame arrived; v1 is JSON text only (1003).
    UnsupportedData,
    /// A text frame was not valid UTF-8 (1007).
    InvalidUtf8,
    /// A frame or message exceeded `limits.max_frame_bytes` / `limits.max_message_bytes` (1009).
    MessageTooBig,
    /// The outbound queue overflowed (4000).
    SlowConsumer,
    /// An operator or the host disconnected the session (4001).
    DisconnectedByServer,
    /// A write did not complete within `limits.write_timeout_secs` (4002, recorded only: no close
    /// frame can be sent to a peer that does not read, so the client sees 1006).
    WriteTimeout,
    /// Too many violations within the window (1008).
    PolicyViolation,
    /// Nothing received (not even a pong) for `limits.idle_timeout_secs` (4003).
    IdleTimeout,
    /// The session's token expired (4100).
    TokenExpired,
    /// The session's token was revoked (4501).
    Revoked,
}

impl Disconnect {
    /// Every way the server ends a session (the client-side ones excluded), for docs and tests.
    pub const SERVER_SIDE: &'static [Disconnect] = &[
        Disconnect::ServerShutdown,
        Disconnect::ProtocolError,
        Disconnect::UnsupportedData,
        Disconnect::InvalidUtf8,
        Disconnect::MessageTooBig,
        Disconnect::SlowConsumer,
        Disconnect::DisconnectedByServer,
        Disconnect::WriteTimeout,
        Disconnect::PolicyViolation,
        Disconnect::IdleTimeout,
        Disconnect::TokenExpired,
        Disconnect::Revoked,
    ];

    /// The close code sent (or received, for `ClientClosed`).
    pub fn code(self) -> u16 {
        match self {
            Disconnect::ClientClosed(code) => code,
            Disconnect::ConnectionLost => 1006,
            Disconnect::ServerShutdown => 1001,
            Disconnect::ProtocolError => 1002,
            Disconnect::UnsupportedData => 1003,
            Disconnect::InvalidUtf8 => 1007,
            Disconnect::MessageTooBig => 1009,
            Disconnect::SlowConsumer => 4000,
            Disconnect::DisconnectedByServer => 4001,
            Disconnect::WriteTimeout => 4002,
            Disconnect::PolicyViolation => 1008,
            Disconnect::IdleTimeout => 4003,
            Disconnect::TokenExpired => 4100,
            Disconnect::Revoked => 4501,
        }
    }

    /// The stable reason name (also the close frame's reason text, well under 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::ClientClosed(_) => "client_closed",
            Disconnect::ConnectionLost => "connection_lost",
            Disconnect::ServerShutdown => "server_shutdown",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::UnsupportedData => "binary_not_supported",
            Disconnect::InvalidUtf8 => "invalid_utf8",
            Disconnect::MessageTooBig => "message_too_big",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::DisconnectedByServer => "disconnected",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::PolicyViolation => "too_many_violations",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Revoked => "token_revoked",
        }
    }

    /// The disconnect a tungstenite error ends the session with: the close code RFC 6455 §7.4.1
    /// prescribes for the cause.
    pub(crate) fn from_ws_error(error: &WsError) -> Disconnect {
        match error {
            WsError::Capacity(_) => Disconnect::MessageTooBig,
            WsError::Utf8(_) => Disconnect::InvalidUtf8,
            WsError::Protocol(_) => Disconnect::ProtocolError,
            _ => Disconnect::ConnectionLost,
        }
    }

    /// The close frame the server sends, if it sends one.
    pub(crate) fn close_frame(self) -> Option<CloseFrame> {
        match self {
            Disconnect::ClientClosed(_) | Disconnect::ConnectionLost | Disconnect::WriteTimeout => None,
            other => Some(CloseFrame { code: CloseCode::from(other.code()), reason: other.reason().into() }),
        }
    }
}
