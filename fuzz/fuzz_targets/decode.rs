//! The message codec: `protocol::decode` on arbitrary text (the valid UTF-8 prefix of the input,
//! as tungstenite only hands over text frames that are valid UTF-8). Beyond "never panics", every
//! accepted frame must satisfy the envelope rules the session relies on without re-checking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::ErrorCode;
use wsguard::protocol::{ClientFrame, MAX_PRESENCE_LIMIT, decode, is_within_depth, validate_channel};

fuzz_target!(|data: &[u8]| {
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).expect("valid prefix"),
    };
    let mut accepted_at_smaller_depth = false;
    for max_depth in [0, 1, 2, 32] {
        let result = decode(text, max_depth);
        assert_eq!(result, decode(text, max_depth), "decode is deterministic");
        match result {
            Ok(frame) => {
                check_envelope(&frame, max_depth);
                accepted_at_smaller_depth = true;
            }
            Err(e) => {
                // A deeper allowance never refuses what a shallower one accepted.
                assert!(!accepted_at_smaller_depth, "refused at depth {max_depth} after accepting: {e:?}");
                assert!(
                    matches!(
                        e.code,
                        ErrorCode::InvalidJson
                            | ErrorCode::InvalidFrame
                            | ErrorCode::InvalidChannel
                            | ErrorCode::PayloadTooDeep
                    ),
                    "unexpected reply code {:?}",
                    e.code
                );
                assert!(!e.message.is_empty());
            }
        }
    }
});

fn check_envelope(frame: &ClientFrame, max_depth: u32) {
    match frame {
        ClientFrame::Subscribe { channel, since, proof, .. } => {
            assert_eq!(validate_channel(channel), Ok(()), "accepted channel {channel:?}");
            assert!(proof.is_none() || since.is_some(), "accepted a proof without since");
        }
        ClientFrame::Unsubscribe { channel, .. }
        | ClientFrame::History { channel, .. }
        | ClientFrame::PresenceStats { channel, .. } => {
            assert_eq!(validate_channel(channel), Ok(()), "accepted channel {channel:?}");
        }
        ClientFrame::Presence { channel, limit, after, .. } => {
            assert_eq!(validate_channel(channel), Ok(()), "accepted channel {channel:?}");
            assert!((1..=MAX_PRESENCE_LIMIT).contains(limit), "accepted limit {limit}");
            assert!(after.as_ref().is_none_or(|a| a.len() <= 1024), "accepted a long `after`");
        }
        ClientFrame::Publish { channel, payload, .. } => {
            assert_eq!(validate_channel(channel), Ok(()), "accepted channel {channel:?}");
            let object = payload.as_object().expect("publish payload is an object");
            assert!(is_within_depth(object, max_depth));
        }
        ClientFrame::Rpc { method, payload, .. } => {
            assert!((1..=128).contains(&method.len()) && method.bytes().all(|b| b.is_ascii_graphic()));
            let object = payload.as_object().expect("rpc payload is an object");
            assert!(is_within_depth(object, max_depth));
        }
        ClientFrame::Ping { .. } | ClientFrame::Refresh { .. } => {}
    }
}
