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

/// What a client should do after the server closed its session with a code: the code's range
/// says it (docs/PROTOCOL.md §3, generated from [`Disconnect::SERVER_SIDE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconnect {
    /// 1002, 1003, 1007, 1008, 1009: the client is broken or abusive; not unchanged.
    FixClientFirst,
    /// 1001 and 4000-4099: reconnect with backoff.
    WithBackoff,
    /// 4100-4199: reconnect at once with a fresh token.
    WithFreshToken,
    /// 4500-4599: do not reconnect.
    Never,
}

impl Reconnect {
    /// The policy of a close code, by its range; `None` for a code outside wsguard's ranges.
    pub fn for_code(code: u16) -> Option<Reconnect> {
        match code {
            1002 | 1003 | 1007 | 1008 | 1009 => Some(Reconnect::FixClientFirst),
            1001 | 1006 | 4000..=4099 => Some(Reconnect::WithBackoff),
            4100..=4199 => Some(Reconnect::WithFreshToken),
            4500..=4599 => Some(Reconnect::Never),
            _ => None,
        }
    }

    /// The advice as docs/PROTOCOL.md words it.
    pub fn advice(self) -> &'static str {
        match self {
            Reconnect::FixClientFirst => "Not reconnect unchanged.",
            Reconnect::WithBackoff => "Reconnect with backoff.",
            Reconnect::WithFreshToken => "Reconnect at once with a fresh token.",
            Reconnect::Never => "Not reconnect.",
        }
    }
}

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
    /// An operator or the host closed the session with its own close code, one of
    /// [`Disconnect::APP_CODES`] (`disconnect_session_with`, `disconnect_user_with`); the close
    /// frame carries the caller's reason text.
    ClosedWithCode(u16),
}

impl Disconnect {
    /// The close codes a host or an operator may choose (docs/PROTOCOL.md §3): 4000-4999, except
    /// the codes wsguard sends for its own reasons (4000, 4002, 4003, 4100, 4501). 4001 is the
    /// code of a disconnect without one. The range still tells the client what to do
    /// ([`Reconnect::for_code`]); 4200-4499 and 4600-4999 carry no advice from wsguard and are the
    /// application's to define.
    pub const APP_CODES: std::ops::RangeInclusive<u16> = 4000..=4999;

    /// Whether a host or an operator may close a session with `code` (see [`Disconnect::APP_CODES`]).
    pub fn is_app_code(code: u16) -> bool {
        Disconnect::APP_CODES.contains(&code)
            && !Disconnect::SERVER_SIDE.iter().any(|d| d.code() == code && *d != Disconnect::DisconnectedByServer)
    }

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
            Disconnect::ClosedWithCode(code) => code,
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
            Disconnect::DisconnectedByServer | Disconnect::ClosedWithCode(_) => "disconnected",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::PolicyViolation => "too_many_violations",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::Revoked => "token_revoked",
        }
    }

    /// What the client should do next (from the close code's range).
    pub fn reconnect(self) -> Option<Reconnect> {
        Reconnect::for_code(self.code())
    }

    /// When the server ends a session this way, for docs/PROTOCOL.md's close-code table.
    pub fn when(self) -> &'static str {
        match self {
            Disconnect::ClientClosed(_) => "The client closed (its own code is recorded, 1005 when it gave none).",
            Disconnect::ConnectionLost => "The connection broke without a close handshake.",
            Disconnect::ServerShutdown => "The server is shutting down.",
            Disconnect::ProtocolError => "A frame broke RFC 6455 (for example an unmasked frame or bad control frame).",
            Disconnect::UnsupportedData => "A binary frame arrived and `protocol.allow_binary` is false.",
            Disconnect::InvalidUtf8 => "A text frame (or an accepted binary frame) was not valid UTF-8.",
            Disconnect::MessageTooBig => {
                "A frame exceeded `limits.max_frame_bytes`, or a message exceeded `limits.max_message_bytes`."
            }
            Disconnect::SlowConsumer => {
                "The outbound queue was full and the channel's `slow_consumer` policy is `disconnect`. If a \
                 write to the client had stopped in the middle of a frame, that frame is finished first \
                 (within the same 2 s as the close frame's write); when it cannot be, no close frame is sent, \
                 and the client sees 1006."
            }
            Disconnect::DisconnectedByServer => {
                "An operator or the host closed the session (`disconnect_session`, `disconnect_user`)."
            }
            Disconnect::ClosedWithCode(_) => {
                "An operator or the host closed the session with a code of its choice and a reason \
                 (`disconnect_session_with`, `disconnect_user_with`)."
            }
            Disconnect::WriteTimeout => {
                "A write did not finish within `limits.write_timeout_secs`. **No close frame is sent**: the \
                 connection is dropped, and the client sees an abnormal closure (1006). The code appears \
                 only in server events."
            }
            Disconnect::PolicyViolation => {
                "More than `limits.max_violations` violations within `limits.violation_window_secs`."
            }
            Disconnect::IdleTimeout => "Nothing arrived for `limits.idle_timeout_secs`, not even a pong.",
            Disconnect::TokenExpired => "The session's token expired (`exp` + `leeway_secs`).",
            Disconnect::Revoked => {
                "The host revoked the session's token (`ServerHandle::revoke`). Live sessions are \
                 re-checked the moment a revocation is added."
            }
        }
    }

    /// What the client should do, for docs/PROTOCOL.md: the range's advice, and a hint where
    /// there is one.
    pub fn client_should(self) -> String {
        let advice = self.reconnect().map_or("", Reconnect::advice);
        let hint = match self {
            Disconnect::SlowConsumer => " Resubscribe; publications in between are lost.",
            Disconnect::TokenExpired => " Better: `refresh` before expiry.",
            _ => "",
        };
        format!("{advice}{hint}")
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

    /// The close frame the server sends, if it sends one; `reason` replaces the stable reason
    /// name (an operator's reason, at most 123 bytes, checked by `host::close_reason`).
    pub(crate) fn close_frame(self, reason: Option<&str>) -> Option<CloseFrame> {
        match self {
            Disconnect::ClientClosed(_) | Disconnect::ConnectionLost | Disconnect::WriteTimeout => None,
            other => Some(CloseFrame {
                code: CloseCode::from(other.code()),
                reason: reason.unwrap_or_else(|| other.reason()).into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_side_close_has_a_policy_from_its_range() {
        for disconnect in Disconnect::SERVER_SIDE {
            assert!(disconnect.reconnect().is_some(), "{disconnect:?} has a code outside the ranges");
            assert!(!disconnect.when().is_empty() && !disconnect.client_should().is_empty());
        }
        assert_eq!(Disconnect::Revoked.reconnect(), Some(Reconnect::Never));
        assert_eq!(Disconnect::TokenExpired.reconnect(), Some(Reconnect::WithFreshToken));
        assert_eq!(Disconnect::SlowConsumer.reconnect(), Some(Reconnect::WithBackoff));
        assert_eq!(Disconnect::ServerShutdown.reconnect(), Some(Reconnect::WithBackoff));
        assert_eq!(Disconnect::PolicyViolation.reconnect(), Some(Reconnect::FixClientFirst));
        assert_eq!(Reconnect::for_code(1000), None);
    }

    #[test]
    fn app_codes_leave_out_the_codes_wsguard_sends_for_its_own_reasons() {
        for code in [4001, 4004, 4099, 4101, 4200, 4500, 4502, 4999] {
            assert!(Disconnect::is_app_code(code), "{code}");
        }
        for code in [1000, 1001, 3000, 3999, 4000, 4002, 4003, 4100, 4501, 5000] {
            assert!(!Disconnect::is_app_code(code), "{code}");
        }
        let frame = Disconnect::ClosedWithCode(4200).close_frame(Some("maintenance")).expect("a close frame");
        assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4200, "maintenance"));
    }
}
