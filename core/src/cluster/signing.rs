//! Authenticated broker messages (`cluster.signing_key_env`): every publication and control
//! message a node puts on the broker is signed, and every message it takes from the broker is
//! verified, bounded in time and checked against replays before anything acts on it.
//!
//! A signed message is
//!
//! ```text
//! ~wsg1 \n node_id \n instance \n seq \n sent_ms \n mac \n body
//! ```
//!
//! - `node_id`: the sender's `cluster.node_id` (for logs and the own-message check);
//! - `instance`: 32 hex digits drawn at random when the node starts, so a restarted node is a new
//!   sender whose sequence starts again at 1 without colliding with what it sent before;
//! - `seq`: the sender's message counter (decimal, from 1, one counter for all subjects);
//! - `sent_ms`: the sender's clock, milliseconds since the Unix epoch;
//! - `mac`: 64 lowercase hex digits, HMAC-SHA256 with the signing key over
//!   `subject \n` followed by every byte of the message except the `mac` line, so a message
//!   captured on one channel cannot be replayed on another, and no header field can be changed;
//! - `body`: the `message` frame of a publication, or the JSON of a control message.
//!
//! A receiver with a key accepts a message only if, in this order:
//! 1. it starts with `~wsg1` and parses (else `unsigned` for a message in the plain format,
//!    `malformed` otherwise);
//! 2. the MAC matches the current key or `cluster.signing_key_previous_env` (compared in constant
//!    time; else `bad_signature`);
//! 3. `sent_ms` is within [`MAX_SKEW`] of the receiver's clock, either way (else `stale`);
//! 4. `seq` is new for that sender instance (else `replayed`): the receiver keeps, per instance,
//!    the highest `seq` seen and a bitmap of the [`WINDOW`] numbers below it. A receiver sees only
//!    the subjects it subscribes to, so gaps are normal; a message more than [`WINDOW`] numbers
//!    behind the highest one seen from its sender is refused as `replayed` too.
//!
//! A sender instance silent for twice [`MAX_SKEW`] is forgotten: any message of it that could be
//! replayed is by then older than [`MAX_SKEW`] and refused as `stale`. The one replay this leaves
//! open: a receiver that (re)started less than [`MAX_SKEW`] after a message was sent, and never
//! saw it, accepts one copy of it (once: its own window then holds it).
//!
//! A node without a key sends the plain format (below), and accepts both formats without being
//! able to verify the signed one. A node with a key never accepts the plain format. See
//! docs/OPERATIONS.md for the rolling rollout.
//!
//! Plain (unsigned) format: a publication is `node_id \n sent_ms \n frame`, a control message the
//! JSON of a [`super::wire::ControlEnvelope`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The first line of a signed message. `~` cannot start a node id or a JSON text, so the two
/// formats never overlap.
const MAGIC: &[u8] = b"~wsg1\n";
/// How far a message's `sent_ms` may be from the receiver's clock, either way.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(30);
/// How many sequence numbers below the highest one seen are remembered per sender instance.
pub(crate) const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;
/// The shortest signing key accepted (bytes), as for `auth.hmac_secret_env`.
pub(crate) const MIN_KEY_BYTES: usize = 32;
/// Hex digits of a MAC.
const MAC_HEX: usize = 64;

/// The signing key and the previous one, accepted for verification only during a rotation.
#[derive(Clone)]
pub(crate) struct SigningKeys {
    current: HmacSha256,
    previous: Option<HmacSha256>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKeys(..)")
    }
}

impl SigningKeys {
    /// From the key bytes (each at least [`MIN_KEY_BYTES`], checked by the caller).
    pub(crate) fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        SigningKeys {
            current: HmacSha256::new_from_slice(current).expect("HMAC takes keys of any length"),
            previous: previous.map(|k| HmacSha256::new_from_slice(k).expect("HMAC takes keys of any length")),
        }
    }

    /// A key for another purpose, from each key (the current one, the previous one): the MAC of
    /// `label`. Nothing else is signed with `label` alone, so it reveals nothing of these keys.
    pub(crate) fn derive(&self, label: &[u8]) -> ([u8; 32], Option<[u8; 32]>) {
        let derive = |key: &HmacSha256| {
            let mut mac = key.clone();
            mac.update(label);
            <[u8; 32]>::from(mac.finalize().into_bytes())
        };
        (derive(&self.current), self.previous.as_ref().map(derive))
    }

    /// The MAC of `parts` (concatenated) with the current key, as lowercase hex.
    pub(crate) fn sign_hex(&self, parts: &[&[u8]]) -> [u8; MAC_HEX] {
        let mut mac = self.current.clone();
        for part in parts {
            mac.update(part);
        }
        hex(&mac.finalize().into_bytes())
    }

    /// True when `mac_hex` is the MAC of `parts` under the current or the previous key
    /// (constant-time comparison).
    pub(crate) fn verify_hex(&self, parts: &[&[u8]], mac_hex: &[u8]) -> bool {
        let Some(tag) = unhex(mac_hex) else { return false };
        [Some(&self.current), self.previous.as_ref()].into_iter().flatten().any(|key| {
            let mut mac = key.clone();
            for part in parts {
                mac.update(part);
            }
            mac.verify_slice(&tag).is_ok()
        })
    }
}

fn hex(bytes: &[u8]) -> [u8; MAC_HEX] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; MAC_HEX];
    for (i, b) in bytes.iter().take(MAC_HEX / 2).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

fn unhex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != MAC_HEX {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// Why a message from the broker was dropped (the `reason` label of
/// `wsguard_broker_rejected_total` and of the `broker_message_rejected` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The plain format, at a node with a signing key.
    Unsigned,
    /// Neither the current nor the previous key produced its MAC.
    BadSignature,
    /// `sent_ms` further than [`MAX_SKEW`] from this node's clock.
    Stale,
    /// A sequence number already seen (or too far behind) for its sender instance.
    Replayed,
    /// Not a message of either format.
    Malformed,
}

impl Rejection {
    pub(crate) const ALL: [Rejection; 5] =
        [Rejection::Unsigned, Rejection::BadSignature, Rejection::Stale, Rejection::Replayed, Rejection::Malformed];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::BadSignature => "bad_signature",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
            Rejection::Malformed => "malformed",
        }
    }
}

/// At most one `broker_message_rejected` event per reason per second: a flood of forged messages
/// is counted in full by the metric, but cannot flood the event queue and the logs.
#[derive(Default)]
pub(crate) struct RejectionLog {
    /// Per reason: when the last event was emitted (ms since the epoch) and how many rejections
    /// were not reported since.
    last_ms: [AtomicU64; 5],
    suppressed: [AtomicU64; 5],
}

impl RejectionLog {
    /// Counts a rejection; `Some(suppressed)` when an event is due, with how many rejections of
    /// this reason went unreported since the last one.
    pub(crate) fn due(&self, reason: Rejection, now_ms: u64) -> Option<u64> {
        let i = Rejection::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        let last = self.last_ms[i].load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self.last_ms[i].compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed[i].swap(0, Ordering::Relaxed));
        }
        self.suppressed[i].fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A message taken from the broker, ready to be decoded by its kind.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened<'a> {
    /// Sent by this node (Redis echoes a node's own publications): ignored, except history
    /// publications with a shared history (delivered when they come back). Its MAC is checked
    /// when this node has a key (not its sequence: it is this node's own).
    Own(&'a [u8]),
    /// A signed message: verified when this node has a key.
    Signed { node: &'a str, sent_ms: u64, body: &'a [u8] },
    /// The plain format (only at a node without a key).
    Plain(&'a [u8]),
}

/// A rejected message and the sender it claims (possibly empty or forged).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused<'a> {
    pub(crate) reason: Rejection,
    pub(crate) node: &'a str,
}

/// One sender instance's replay window.
struct Window {
    highest: u64,
    /// Bit `s % WINDOW` is set when `s` (within the window) was seen.
    seen: [u64; WORDS],
    last_heard: Instant,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window { highest: 0, seen: [0; WORDS], last_heard: now }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Records `seq`; false when it was seen or is too far behind.
    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            let ahead = seq - self.highest;
            if ahead >= WINDOW {
                self.seen = [0; WORDS];
            } else {
                // Forget the numbers the window slides over.
                let mut s = self.highest + 1;
                while s < seq {
                    if s.is_multiple_of(64) && seq - s >= 64 {
                        self.seen[((s % WINDOW) / 64) as usize] = 0;
                        s += 64;
                    } else {
                        let (word, mask) = Window::bit(s);
                        self.seen[word] &= !mask;
                        s += 1;
                    }
                }
            }
            self.highest = seq;
            let (word, mask) = Window::bit(seq);
            self.seen[word] |= mask;
            return true;
        }
        if self.highest - seq >= WINDOW {
            return false;
        }
        let (word, mask) = Window::bit(seq);
        let fresh = self.seen[word] & mask == 0;
        self.seen[word] |= mask;
        fresh
    }
}

/// Signs what this node sends and checks what it receives.
pub(crate) struct Guard {
    keys: Option<SigningKeys>,
    node: String,
    /// This process's random sender id (32 hex digits).
    instance: String,
    seq: AtomicU64,
    windows: Mutex<Windows>,
}

struct Windows {
    /// Per sender instance, for its publications.
    publications: HashMap<String, Window>,
    /// Per sender instance, for its control messages.
    control: HashMap<String, Window>,
    last_sweep: Instant,
}

impl Guard {
    pub(crate) fn new(keys: Option<SigningKeys>, node: &str) -> Self {
        Guard {
            keys,
            node: node.to_string(),
            instance: format!("{:032x}", rand::random::<u128>()),
            seq: AtomicU64::new(0),
            windows: Mutex::new(Windows {
                publications: HashMap::new(),
                control: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    pub(crate) fn is_signing(&self) -> bool {
        self.keys.is_some()
    }

    /// Wraps `body` for `subject`: signed when this node has a key, otherwise `plain` (the plain
    /// format of the same message).
    pub(crate) fn seal(&self, subject: &str, sent_ms: u64, body: &[u8], plain: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        let Some(keys) = &self.keys else { return plain() };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut out = Vec::with_capacity(MAGIC.len() + self.node.len() + 32 + 48 + MAC_HEX + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.node.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(self.instance.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(itoa::Buffer::new().format(sent_ms).as_bytes());
        out.push(b'\n');
        let header_end = out.len();
        let mac = keys.sign_hex(&[subject.as_bytes(), b"\n", &out, body]);
        out.extend_from_slice(&mac);
        out.push(b'\n');
        out.extend_from_slice(body);
        debug_assert_eq!(out.len(), header_end + MAC_HEX + 1 + body.len());
        out
    }

    /// Checks a message received on `subject` at `now_ms` (this node's clock). `control`: the
    /// subject is the control subject. Control messages (revocations, bans) get a replay window of
    /// their own per sender: they arrive in order on their one subscription, so a burst of the
    /// sender's publications, delivered by other tasks, can never push a genuine revocation out of
    /// the window.
    pub(crate) fn open<'a>(
        &self,
        subject: &str,
        payload: &'a [u8],
        now_ms: u64,
        control: bool,
    ) -> Result<Opened<'a>, Refused<'a>> {
        let Some(rest) = payload.strip_prefix(MAGIC) else {
            return match self.keys {
                Some(_) => Err(Refused { reason: Rejection::Unsigned, node: plain_node(payload) }),
                None => Ok(Opened::Plain(payload)),
            };
        };
        let malformed = |node| Refused { reason: Rejection::Malformed, node };
        let mut fields = rest.splitn(6, |b| *b == b'\n');
        let mut next = || fields.next().ok_or(malformed(""));
        let node = std::str::from_utf8(next()?).map_err(|_| malformed(""))?;
        let instance = next()?;
        let seq = decimal(next()?).ok_or(malformed(node))?;
        let sent_ms = decimal(next()?).ok_or(malformed(node))?;
        let mac = next()?;
        let body = next()?;
        if instance.len() != 32 || seq == 0 {
            return Err(malformed(node));
        }
        let is_own = instance == self.instance.as_bytes();
        let Some(keys) = &self.keys else {
            return Ok(if is_own { Opened::Own(body) } else { Opened::Signed { node, sent_ms, body } });
        };
        // Everything before the MAC line.
        let header = &payload[..payload.len() - body.len() - mac.len() - 1];
        if !keys.verify_hex(&[subject.as_bytes(), b"\n", header, body], mac) {
            return Err(Refused { reason: Rejection::BadSignature, node });
        }
        if is_own {
            return Ok(Opened::Own(body));
        }
        if sent_ms.abs_diff(now_ms) > MAX_SKEW.as_millis() as u64 {
            return Err(Refused { reason: Rejection::Stale, node });
        }
        // Verified, so the instance is a real node's: only then does it get a window.
        let instance = std::str::from_utf8(instance).map_err(|_| malformed(node))?;
        if !self.record(instance, control, seq) {
            return Err(Refused { reason: Rejection::Replayed, node });
        }
        Ok(Opened::Signed { node, sent_ms, body })
    }

    fn record(&self, instance: &str, control: bool, seq: u64) -> bool {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(windows.last_sweep) > MAX_SKEW {
            windows.publications.retain(|_, w| now.duration_since(w.last_heard) <= 2 * MAX_SKEW);
            windows.control.retain(|_, w| now.duration_since(w.last_heard) <= 2 * MAX_SKEW);
            windows.last_sweep = now;
        }
        let windows = if control { &mut windows.control } else { &mut windows.publications };
        let window = match windows.get_mut(instance) {
            Some(window) => window,
            None => windows.entry(instance.to_string()).or_insert_with(|| Window::new(now)),
        };
        window.last_heard = now;
        window.accept(seq)
    }
}

/// The node a plain message claims (for the rejection's report).
fn plain_node(payload: &[u8]) -> &str {
    if payload.first() == Some(&b'{') {
        return "";
    }
    let end = payload.iter().position(|b| *b == b'\n').unwrap_or(0).min(64);
    std::str::from_utf8(&payload[..end]).unwrap_or("")
}

fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000_000;

    fn guard(key: Option<&[u8]>, node: &str) -> Guard {
        Guard::new(key.map(|k| SigningKeys::new(k, None)), node)
    }

    #[test]
    fn signed_messages_verify_once_and_only_on_their_subject() {
        let (a, b) = (guard(Some(KEY), "a"), guard(Some(KEY), "b"));
        let sealed = a.seal("wsg:c:news", NOW, b"{\"x\":1}", Vec::new);
        assert_eq!(a.open("wsg:c:news", &sealed, NOW, false), Ok(Opened::Own(b"{\"x\":1}")));
        assert_eq!(
            b.open("wsg:c:news", &sealed, NOW, false),
            Ok(Opened::Signed { node: "a", sent_ms: NOW, body: b"{\"x\":1}" })
        );
        assert_eq!(b.open("wsg:c:news", &sealed, NOW, false).map_err(|r| r.reason), Err(Rejection::Replayed));
        let other = guard(Some(KEY), "c");
        assert_eq!(other.open("wsg:c:admin", &sealed, NOW, false).map_err(|r| r.reason), Err(Rejection::BadSignature));
        assert_eq!(other.open("wsg:c:news", &sealed, NOW + 31_000, false).map_err(|r| r.reason), Err(Rejection::Stale));
        assert_eq!(other.open("wsg:c:news", &sealed, NOW - 31_000, false).map_err(|r| r.reason), Err(Rejection::Stale));
    }

    #[test]
    fn a_control_message_is_not_pushed_out_by_a_burst_of_publications() {
        let (a, b) = (guard(Some(KEY), "a"), guard(Some(KEY), "b"));
        // Sealed first, delivered last: the control subscription lags behind the channels'.
        let revocation = a.seal("wsg:control", NOW, b"{\"revoke\":1}", Vec::new);
        for _ in 0..2 * WINDOW {
            let publication = a.seal("wsg:c:news", NOW, b"{}", Vec::new);
            assert!(b.open("wsg:c:news", &publication, NOW, false).is_ok());
        }
        assert!(matches!(b.open("wsg:control", &revocation, NOW, true), Ok(Opened::Signed { .. })));
        assert_eq!(b.open("wsg:control", &revocation, NOW, true).map_err(|r| r.reason), Err(Rejection::Replayed));
    }

    #[test]
    fn every_byte_is_covered() {
        let a = guard(Some(KEY), "a");
        let sealed = a.seal("s", NOW, b"body", Vec::new);
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            let b = guard(Some(KEY), "b");
            assert!(b.open("s", &tampered, NOW, false).is_err(), "byte {i} changed and still accepted");
        }
        let b = guard(Some(KEY), "b");
        assert!(b.open("s", &sealed, NOW, false).is_ok());
    }

    #[test]
    fn keys_decide_what_is_accepted() {
        let wrong = guard(Some(b"another key that is 32 bytes lon"), "x");
        let sealed = wrong.seal("s", NOW, b"body", Vec::new);
        let keyed = guard(Some(KEY), "k");
        assert_eq!(keyed.open("s", &sealed, NOW, false).map_err(|r| r.reason), Err(Rejection::BadSignature));
        assert_eq!(keyed.open("s", b"n1\n1\n{}", NOW, false), Err(Refused { reason: Rejection::Unsigned, node: "n1" }));
        assert_eq!(keyed.open("s", b"{\"node\":\"n\"}", NOW, false).map_err(|r| r.reason), Err(Rejection::Unsigned));
        assert_eq!(
            keyed.open("s", b"~wsg1\nn\nshort\n1\n1\nx\n", NOW, false).map_err(|r| r.reason),
            Err(Rejection::Malformed)
        );
        assert_eq!(keyed.open("s", b"~wsg1\n", NOW, false).map_err(|r| r.reason), Err(Rejection::Malformed));
        // Without a key: both formats, the signed one unverified.
        let open = guard(None, "o");
        assert_eq!(open.open("s", b"n1\n1\n{}", NOW, false), Ok(Opened::Plain(b"n1\n1\n{}")));
        assert!(matches!(open.open("s", &sealed, NOW, false), Ok(Opened::Signed { node: "x", .. })));
        assert_eq!(open.seal("s", NOW, b"body", || b"plain".to_vec()), b"plain");
    }

    #[test]
    fn the_previous_key_still_verifies() {
        let old = guard(Some(b"the previous key, 32 bytes long!"), "old");
        let sealed = old.seal("s", NOW, b"body", Vec::new);
        let rotated = Guard::new(Some(SigningKeys::new(KEY, Some(b"the previous key, 32 bytes long!"))), "new");
        assert!(matches!(rotated.open("s", &sealed, NOW, false), Ok(Opened::Signed { .. })));
    }

    /// The cost per publication, for docs/PERFORMANCE.md: run in release with
    /// `cargo test -p wsguard --release --lib signing_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check: run in release"]
    #[allow(clippy::print_stdout)]
    fn signing_cost() {
        let sender = guard(Some(KEY), "ws-1");
        let receiver = guard(Some(KEY), "ws-2");
        for size in [64usize, 256, 1024, 16 * 1024] {
            let frame = format!("{{\"type\":\"message\",\"channel\":\"room:1\",\"payload\":\"{}\"}}", "x".repeat(size));
            let n = 200_000u64 / (1 + size as u64 / 1024);
            let start = Instant::now();
            let mut sealed = Vec::with_capacity(n as usize);
            for _ in 0..n {
                sealed.push(sender.seal("wsguard:c:room:1", NOW, frame.as_bytes(), Vec::new));
            }
            let sign_ns = start.elapsed().as_nanos() as f64 / n as f64;
            let start = Instant::now();
            for message in &sealed {
                assert!(matches!(receiver.open("wsguard:c:room:1", message, NOW, false), Ok(Opened::Signed { .. })));
            }
            let verify_ns = start.elapsed().as_nanos() as f64 / n as f64;
            println!("frame {:>6} bytes: sign {sign_ns:>7.0} ns, verify {verify_ns:>7.0} ns", frame.len());
        }
    }

    #[test]
    fn the_window_takes_reordering_and_refuses_repeats() {
        let mut w = Window::new(Instant::now());
        assert!(w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(4));
        assert!(!w.accept(5));
        assert!(w.accept(5 + WINDOW - 1));
        assert!(!w.accept(5), "slid over and seen");
        assert!(w.accept(6 + 200));
        assert!(!w.accept(1), "too far behind");
        assert!(w.accept(10_000_000));
        assert!(!w.accept(10_000_000));
        assert!(w.accept(10_000_000 - 1));
        // A jump of less than the window clears what it slides over.
        let mut w = Window::new(Instant::now());
        for s in 1..=WINDOW {
            assert!(w.accept(s));
        }
        assert!(w.accept(WINDOW + 130));
        assert!(!w.accept(WINDOW + 130));
        assert!(!w.accept(100), "behind the window");
        assert!(w.accept(WINDOW + 129));
        assert!(!w.accept(WINDOW));
    }
}
