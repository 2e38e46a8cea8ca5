//! Origin allowlist matching. Input: lines; the last is the raw `Origin` header value (any bytes;
//! the line `<missing>` means no header), the others are `[origins] allow` entries. Beyond "never
//! panics", an independent reference decides whether an accepted origin really is listed: the
//! same scheme, the same explicit or default port, and the same host (ASCII case-insensitive), or
//! for `*.suffix` a host that is one or more non-empty labels followed by `.suffix`. Suffix tricks
//! (`example.com.evil.com`), userinfo, paths and non-canonical ports must never get through.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::fuzzing::check_origin;

fuzz_target!(|data: &[u8]| {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let origin = lines.pop().unwrap_or_default();
    let allow: Vec<&str> = lines.iter().filter_map(|l| std::str::from_utf8(l).ok()).collect();
    let origin = (origin != b"<missing>").then_some(origin);
    if !check_origin(&allow, origin) {
        return;
    }
    let origin = origin.expect("a missing Origin is refused (allow_missing is false)");
    let origin = std::str::from_utf8(origin).expect("an accepted origin is UTF-8");
    if origin == "null" {
        assert!(allow.contains(&"null"), "null accepted without a `null` entry");
        return;
    }
    let got = split_origin(origin).unwrap_or_else(|| panic!("accepted origin {origin:?} is not scheme://host[:port]"));
    let listed = allow.iter().filter_map(|entry| split_origin(entry)).any(|want| is_match(&want, &got));
    assert!(listed, "origin {origin:?} accepted but not listed in {allow:?}");
});

struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// Reference split of a serialized origin (RFC 6454 §6.2): a known scheme, `://`, a host of
/// ASCII letters, digits, `-`, `.` (or a bracketed IPv6 literal, or `*.` on the config side) and
/// an optional port of ASCII decimal digits (no sign: `u16::from_str` alone would take `+80`).
/// Deliberately strict: anything a browser would never send is refused here, so a looser parser in
/// the code under test shows up as a finding.
fn split_origin(raw: &str) -> Option<Origin> {
    let (scheme, rest) = raw.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        (&rest[..=end], rest[end + 1..].strip_prefix(':'))
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if rest.starts_with('[') && !rest[host.len()..].is_empty() && port.is_none() {
        return None;
    }
    let port = match port {
        None => default_port,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    let is_host_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*' | b'[' | b']' | b':');
    if host.is_empty() || !host.bytes().all(is_host_char) {
        return None;
    }
    Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
}

fn is_match(want: &Origin, got: &Origin) -> bool {
    if want.scheme != got.scheme || want.port != got.port || got.host.contains('*') {
        return false;
    }
    match want.host.strip_prefix("*.") {
        None => want.host == got.host,
        Some(suffix) => got
            .host
            .strip_suffix(suffix)
            .and_then(|prefix| prefix.strip_suffix('.'))
            .is_some_and(|labels| labels.split('.').all(|label| !label.is_empty())),
    }
}
