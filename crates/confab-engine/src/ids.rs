//! Identifier generation.

use base64::Engine as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

fn process_seed() -> &'static [u8; 8] {
    static SEED: OnceLock<[u8; 8]> = OnceLock::new();
    SEED.get_or_init(|| {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // No entropy source: fall back on time and pid, still unique per process.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            seed = (t ^ u64::from(std::process::id())).to_le_bytes();
        }
        seed
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A message id: 22 URL-safe base64 characters, like LeanCloud's. A random per-process
/// prefix plus a counter: unique across restarts without a syscall per message.
pub fn message_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(process_seed());
    raw[8..].copy_from_slice(&n.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A conversation id: 24 lower-case hex digits like a LeanStorage object id (seconds,
/// then random bytes, then a counter).
pub fn conversation_id(now_ms: i64) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let secs = (now_ms / 1000) as u32;
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&secs.to_be_bytes());
    raw[4..9].copy_from_slice(&process_seed()[..5]);
    raw[9..].copy_from_slice(&n.to_be_bytes()[5..]);
    hex::encode(raw)
}

/// A temporary conversation id: `_tmp:` (the SDKs key behaviour off the prefix) and
/// 22 URL-safe characters.
pub fn temporary_conversation_id() -> String {
    format!("_tmp:{}", message_id())
}

/// An id for an anonymous client.
pub fn anonymous_client_id() -> String {
    let mut raw = [0u8; 12];
    if getrandom::fill(&mut raw).is_err() {
        return format!("anon-{}", message_id());
    }
    format!("anon-{}", hex::encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let a = message_id();
        let b = message_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        let c = conversation_id(1_700_000_000_000);
        assert_eq!(c.len(), 24);
        assert!(c.chars().all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()));
        assert_ne!(c, conversation_id(1_700_000_000_000));
    }
}
