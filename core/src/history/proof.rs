//! Position proofs: what binds a recovery to a position the client was entitled to.
//!
//! A `subscribe` with `since` gives back what was published after `since.offset`. Without a
//! check, any client allowed to subscribe could name an old offset and read the channel's whole
//! retained window, publications made before it ever subscribed (that is the `history`
//! requirement's to grant). So every subscribe `ack` on a channel with history carries a
//! `proof`: a MAC over (the identity's `sub`, the channel, the epoch, the offset the subscription
//! started from), written `<start>.<mac>`. A recovery is honoured only with a proof that
//! verifies for the session's `sub`, the channel and `since.epoch`, and whose start is at most
//! `since.offset`: the client then only gets publications made while it was subscribed. An
//! unproven `since` subscribes all the same, answered `recovered: false` and a `gap`
//! (`position_unproven`); nothing is replayed.
//!
//! The key is random per process, or, in a cluster with `cluster.signing_key_env`, derived from
//! the signing key (and its previous key, during a rotation), so a proof from one node verifies
//! on every other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cluster::SigningKeys;

type HmacSha256 = Hmac<Sha256>;

/// The MAC's length as sent: 128 bits (22 base64url characters).
const TAG_BYTES: usize = 16;
/// Its length in base64url without padding.
const TAG_TEXT: usize = 22;
/// What the derived key is for (a signing key derives nothing else with this label).
const DERIVE_LABEL: &[u8] = b"wsguard position proof v1";

/// The keys that issue and verify position proofs.
pub(crate) struct PositionProofs {
    /// Issues proofs; verifies them.
    current: HmacSha256,
    /// Verifies proofs issued before a signing-key rotation.
    previous: Option<HmacSha256>,
}

impl std::fmt::Debug for PositionProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PositionProofs(..)")
    }
}

impl PositionProofs {
    /// A key of this process only (a single node, or a cluster without a signing key).
    pub(crate) fn random() -> Self {
        let key: [u8; 32] = rand::random();
        PositionProofs { current: keyed(&key), previous: None }
    }

    /// Keys derived from the cluster's signing keys (`cluster.signing_key_env` and the previous
    /// one): every node issues and accepts the same proofs.
    pub(crate) fn derived(signing: &SigningKeys) -> Self {
        let (current, previous) = signing.derive(DERIVE_LABEL);
        PositionProofs { current: keyed(&current), previous: previous.as_ref().map(|k| keyed(k)) }
    }

    /// The proof that `subject` was subscribed to `channel` from `start` in `epoch`.
    pub(crate) fn issue(&self, subject: &str, channel: &str, epoch: &str, start: u64) -> String {
        let tag = mac(&self.current, subject, channel, epoch, start);
        format!("{start}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
    }

    /// The start a proof vouches for, when it is one of ours for `subject`, `channel` and
    /// `epoch` (constant-time comparison); `None` for anything else.
    pub(crate) fn verify(&self, proof: &str, subject: &str, channel: &str, epoch: &str) -> Option<u64> {
        let (start, tag) = proof.split_once('.')?;
        // Canonical decimal only: one proof, one spelling.
        if start.is_empty() || start.len() > 20 || (start.len() > 1 && start.starts_with('0')) {
            return None;
        }
        if tag.len() != TAG_TEXT {
            return None;
        }
        let start: u64 = start.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|key| {
                let mut mac = key.clone();
                feed(&mut mac, subject, channel, epoch, start);
                mac.verify_truncated_left(&tag).is_ok()
            })
            .then_some(start)
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn mac(key: &HmacSha256, subject: &str, channel: &str, epoch: &str, start: u64) -> [u8; 32] {
    let mut mac = key.clone();
    feed(&mut mac, subject, channel, epoch, start);
    mac.finalize().into_bytes().into()
}

/// Each variable-length part with its length first, so no two tuples feed the same bytes.
fn feed(mac: &mut HmacSha256, subject: &str, channel: &str, epoch: &str, start: u64) {
    for part in [subject, channel, epoch] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.update(&start.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_what_it_was_issued_for() {
        let proofs = PositionProofs::random();
        let proof = proofs.issue("alice", "chat:1", "e1", 41);
        assert!(proof.starts_with("41."), "{proof}");
        assert_eq!(proofs.verify(&proof, "alice", "chat:1", "e1"), Some(41));
        assert_eq!(proofs.verify(&proof, "bob", "chat:1", "e1"), None, "another user");
        assert_eq!(proofs.verify(&proof, "alice", "chat:2", "e1"), None, "another channel");
        assert_eq!(proofs.verify(&proof, "alice", "chat:1", "e2"), None, "another epoch");
        let tag = proof.split_once('.').expect("dot").1;
        assert_eq!(proofs.verify(&format!("40.{tag}"), "alice", "chat:1", "e1"), None, "another start");
        assert_eq!(proofs.verify(&format!("041.{tag}"), "alice", "chat:1", "e1"), None, "not canonical");
        for bad in ["", "41", "41.", ".x", "x.y", "41.!!!!", "99999999999999999999999.AAAA"] {
            assert_eq!(proofs.verify(bad, "alice", "chat:1", "e1"), None, "{bad:?}");
        }
        assert_eq!(PositionProofs::random().verify(&proof, "alice", "chat:1", "e1"), None, "another key");
        // Length prefixes: moving a character from one part to the next is another tuple.
        let shifted = proofs.issue("alic", "echat:1", "e1", 41);
        assert_ne!(shifted.split_once('.').map(|p| p.1), Some(tag));
    }

    #[test]
    fn derived_keys_agree_across_nodes_and_across_a_rotation() {
        let old: &[u8] = b"the cluster signing key, 32 bytes";
        let node_a = PositionProofs::derived(&SigningKeys::new(old, None));
        let node_b = PositionProofs::derived(&SigningKeys::new(old, None));
        let proof = node_a.issue("alice", "chat:1", "e1", 7);
        assert_eq!(node_b.verify(&proof, "alice", "chat:1", "e1"), Some(7));
        let rotated = PositionProofs::derived(&SigningKeys::new(b"the next signing key, also 32 by", Some(old)));
        assert_eq!(rotated.verify(&proof, "alice", "chat:1", "e1"), Some(7), "previous key accepted");
        let fresh = rotated.issue("alice", "chat:1", "e1", 7);
        assert_eq!(node_a.verify(&fresh, "alice", "chat:1", "e1"), None, "a new key is not the old one");
        // The derived key is not the signing key itself.
        let raw = PositionProofs { current: keyed(old), previous: None };
        assert_eq!(raw.verify(&proof, "alice", "chat:1", "e1"), None);
    }
}
