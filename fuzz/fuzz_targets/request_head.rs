//! The upgrade request head: the handshake's reader (httparse under the `server.max_header_bytes`
//! cap) followed by the RFC 6455 §4.2.1 checks, on arbitrary bytes. A larger cap never refuses a
//! head that a smaller cap accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::fuzzing::parse_request_head;

fuzz_target!(|data: &[u8]| {
    let mut caps = [1, 64, 512, 8192, data.len().max(1)];
    caps.sort_unstable();
    let mut accepted_by: Option<usize> = None;
    for max in caps {
        let result = parse_request_head(data, max);
        if let Some(smaller) = accepted_by {
            assert!(result.is_ok(), "cap {max} refused what cap {smaller} accepted: {result:?}");
        } else if result.is_ok() {
            accepted_by = Some(max);
        }
    }
});
