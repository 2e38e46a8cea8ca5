//! Channel names: 1 to 128 bytes of `[A-Za-z0-9_.@-]` in segments separated by `:`. ASCII only, so
//! no Unicode look-alikes; no wildcards, so a name can never address more than one channel; no empty
//! segment, so `{name}` captures in channel patterns are unambiguous.

/// Longest channel name in bytes.
pub const MAX_CHANNEL_BYTES: usize = 128;

/// Checks a channel name; the error says what is wrong (for the reply message).
pub fn validate_channel(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("channel must not be empty");
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return Err("channel is longer than 128 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b':')) {
        return Err("channel may only use A-Z a-z 0-9 _ - . @ and : as segment separator");
    }
    if name.split(':').any(str::is_empty) {
        return Err("channel segments separated by ':' must not be empty");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["news", "tenant:acme:orders", "user@example.com:inbox", "a.b-c_d", &"x".repeat(128)] {
            assert_eq!(validate_channel(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_wildcards_controls_lookalikes_and_empties() {
        for bad in ["", "a*", "a>", "a b", "a\u{0}", "a\n", "\u{430}dmin", "a::b", ":a", "a:", "{x}", &"x".repeat(129)]
        {
            assert!(validate_channel(bad).is_err(), "{bad:?}");
        }
    }
}
