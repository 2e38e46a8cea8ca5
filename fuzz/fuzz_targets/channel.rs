//! Channel names and channel patterns. Input: `pattern\nchannel` (no newline: the whole input is
//! both). `validate_channel` is checked against an independent reference of the documented rule,
//! and every pattern match must round-trip: substituting the captures back into the pattern gives
//! the channel, and no capture spans a `:`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::fuzzing::match_channel;
use wsguard::protocol::{MAX_CHANNEL_BYTES, validate_channel};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, channel) = text.split_once('\n').unwrap_or((text, text));
    for name in [pattern, channel] {
        assert_eq!(validate_channel(name).is_ok(), is_valid_channel_reference(name), "validate_channel({name:?})");
    }
    // The policy only ever matches names that passed validation.
    if validate_channel(channel).is_err() {
        return;
    }
    let Some(captures) = match_channel(pattern, channel) else { return };
    let mut rebuilt = Vec::new();
    for segment in pattern.split(':') {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let value = captures
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_else(|| panic!("capture {name:?} missing from {captures:?}"));
                assert!(!value.is_empty() && !value.contains(':'), "capture {name} = {value:?}");
                rebuilt.push(value);
            }
            None => rebuilt.push(segment),
        }
    }
    assert_eq!(rebuilt.join(":"), channel, "pattern {pattern:?} captured {captures:?}");
});

/// The documented rule, written independently: 1..=128 bytes of `[A-Za-z0-9_.@-]` in non-empty
/// segments separated by `:`.
fn is_valid_channel_reference(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_BYTES
        && name.split(':').all(|segment| {
            !segment.is_empty()
                && segment.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
        })
}
