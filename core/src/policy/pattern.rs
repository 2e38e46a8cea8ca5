//! Channel patterns: `:`-separated segments, each either a literal or a `{name}` capture of exactly
//! one segment. Matching is exact segment by segment, so a capture can never span a `:` and a
//! pattern can never match a channel with more or fewer segments.

use std::collections::HashMap;

use crate::protocol::validate_channel;

/// A compiled channel pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

/// Captured segments by name.
pub(crate) type Captures = HashMap<String, String>;

impl ChannelPattern {
    /// Parses a pattern; the error says what is wrong.
    pub(crate) fn parse(raw: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        for part in raw.split(':') {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("capture {{{name}}} must be a name of [A-Za-z0-9_]"));
                }
                if segments.iter().any(|s| matches!(s, Segment::Capture(n) if n == name)) {
                    return Err(format!("capture {{{name}}} appears twice"));
                }
                segments.push(Segment::Capture(name.to_string()));
            } else {
                validate_channel(part).map_err(|e| format!("literal segment {part:?}: {e}"))?;
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(ChannelPattern { segments })
    }

    /// Matches a (validated) channel name, returning the captures.
    pub(crate) fn matches(&self, channel: &str) -> Option<Captures> {
        let mut captures = Captures::new();
        let mut parts = channel.split(':');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Capture(name) => {
                    captures.insert(name.clone(), part.to_string());
                }
            }
        }
        parts.next().is_none().then_some(captures)
    }

    /// True when the pattern defines the capture `name`.
    pub(crate) fn has_capture(&self, name: &str) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Capture(n) if n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_one_segment_exactly() {
        let p = ChannelPattern::parse("tenant:{tenant}:orders").expect("pattern");
        let c = p.matches("tenant:acme:orders").expect("match");
        assert_eq!(c.get("tenant").map(String::as_str), Some("acme"));
        assert!(p.matches("tenant:acme:orders:x").is_none());
        assert!(p.matches("tenant:acme").is_none());
        assert!(p.matches("tenant:a:b:orders").is_none());
        assert!(p.matches("other:acme:orders").is_none());
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["a:{}", "a:{x-y}", "{x}:{x}", "a*", "a::b", ""] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
