//! The PROXY protocol header reader (versions 1 and 2, through `ppp`). Input: the first byte picks
//! the accepted versions (1, 2, else both), the second how many bytes arrive at a time (0: all at
//! once), the rest is the stream a trusted proxy sent. Beyond "never panics": the reader never
//! consumes a byte it has not seen, nor more than the largest header; the outcome does not depend
//! on how the bytes arrive; an accepted header is exactly the bytes consumed (reading them alone
//! gives the same result, so nothing after the header was needed or taken); a version 1 header
//! never exceeds 107 bytes; an address is never reported in IPv4-mapped form.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use wsguard::fuzzing::{PROXY_HEADER_MAX_BYTES, proxy_header};

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, stream @ ..] = data else { return };
    let whole = stream.len().max(1);
    let chunked = proxy_header(*mode, stream, usize::from(*chunk).max(1));
    let at_once = proxy_header(*mode, stream, whole);
    assert_eq!(chunked.outcome, at_once.outcome, "the outcome depends on how the bytes arrive");
    assert!(chunked.consumed <= PROXY_HEADER_MAX_BYTES && at_once.consumed <= PROXY_HEADER_MAX_BYTES);
    if at_once.outcome.is_ok() {
        assert_eq!(chunked.consumed, at_once.consumed, "an accepted header's length depends on arrival");
        let alone = proxy_header(*mode, &stream[..at_once.consumed], whole);
        assert_eq!(alone, at_once, "the header needed bytes past itself");
        if stream.starts_with(b"PROXY ") {
            assert!(at_once.consumed <= 107, "a version 1 header of {} bytes", at_once.consumed);
        }
    }
    if let Ok(Some(address)) = at_once.outcome
        && let IpAddr::V6(v6) = address.ip()
    {
        assert!(v6.to_ipv4_mapped().is_none(), "{address} reported in IPv4-mapped form");
    }
});
