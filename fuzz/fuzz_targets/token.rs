//! Token extraction from a request head, with every source enabled (header, `bearer.`
//! subprotocol, cookie, `access_token` query parameter). Beyond "never panics": a token found is
//! never empty, and a head without any token-carrying part yields none.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::fuzzing::find_token;

fuzz_target!(|data: &[u8]| {
    let Some(token) = find_token(data) else { return };
    assert!(!token.is_empty(), "empty token returned");
    let lower = data.to_ascii_lowercase();
    let mentions = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    assert!(
        mentions(b"authorization")
            || mentions(b"sec-websocket-protocol")
            || mentions(b"cookie")
            || mentions(b"access_token"),
        "token {token:?} found in a head without any token source"
    );
});
