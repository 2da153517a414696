//! HMAC-SHA1 signatures keyed with the app's master key (protocol §5): the strings to
//! sign, timestamp rules and replay protection.

use confab_types::Signature;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::collections::HashMap;
use std::sync::Mutex;

type HmacSha1 = Hmac<Sha1>;

/// Signs `message` with `key`: lower-case hex HMAC-SHA1.
pub fn sign(key: &str, message: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha1::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a hex signature in constant time.
pub fn verify(key: &str, message: &str, signature_hex: &str) -> bool {
    let Ok(expected) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha1::new_from_slice(key.as_bytes()) else {
        return false;
    };
    mac.update(message.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

/// Member ids as they enter a signature: sorted (UTF-16 order, as JavaScript's default
/// sort does) and joined with `:`.
pub fn sorted_members(members: &[String]) -> String {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(":")
}

/// The operation a signature covers, which fixes the signed string.
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
    /// `appId:clientId::t:n`
    Login,
    /// `appId:clientId:sortedMembers:t:n`
    Start {
        /// Members as received.
        members: &'a [String],
    },
    /// `appId:clientId:convId:sortedMembers:t:n:invite`
    Invite {
        /// Conversation id.
        cid: &'a str,
        /// Members as received.
        members: &'a [String],
    },
    /// `appId:clientId:convId:sortedMembers:t:n:kick`
    Kick {
        /// Conversation id.
        cid: &'a str,
        /// Members as received.
        members: &'a [String],
    },
    /// `appId:clientId:convId:sortedMembers:t:n:conversation-block-clients`
    Block {
        /// Conversation id.
        cid: &'a str,
        /// Clients as received.
        members: &'a [String],
    },
    /// `appId:clientId:convId:sortedMembers:t:n:conversation-unblock-clients`
    Unblock {
        /// Conversation id.
        cid: &'a str,
        /// Clients as received.
        members: &'a [String],
    },
}

/// The exact string to sign for an operation.
pub fn signed_string(app_id: &str, client_id: &str, op: Signed<'_>, t: &str, n: &str) -> String {
    match op {
        Signed::Login => format!("{app_id}:{client_id}::{t}:{n}"),
        Signed::Start { members } => {
            format!("{app_id}:{client_id}:{}:{t}:{n}", sorted_members(members))
        }
        Signed::Invite { cid, members } => {
            format!("{app_id}:{client_id}:{cid}:{}:{t}:{n}:invite", sorted_members(members))
        }
        Signed::Kick { cid, members } => {
            format!("{app_id}:{client_id}:{cid}:{}:{t}:{n}:kick", sorted_members(members))
        }
        Signed::Block { cid, members } => {
            format!(
                "{app_id}:{client_id}:{cid}:{}:{t}:{n}:conversation-block-clients",
                sorted_members(members)
            )
        }
        Signed::Unblock { cid, members } => {
            format!(
                "{app_id}:{client_id}:{cid}:{}:{t}:{n}:conversation-unblock-clients",
                sorted_members(members)
            )
        }
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProblem {
    /// None was sent.
    Missing,
    /// The timestamp is not a number.
    BadTimestamp,
    /// The timestamp is outside the window.
    Expired,
    /// The HMAC does not match.
    Mismatch,
    /// The nonce was used before within the window.
    Replayed,
}

impl SignatureProblem {
    /// A short human-readable explanation.
    pub fn detail(self) -> &'static str {
        match self {
            SignatureProblem::Missing => "signature required",
            SignatureProblem::BadTimestamp => "signature timestamp is not a number",
            SignatureProblem::Expired => "signature timestamp outside the allowed window",
            SignatureProblem::Mismatch => "signature mismatch",
            SignatureProblem::Replayed => "signature nonce already used",
        }
    }
}

/// Timestamps below this are seconds, above it milliseconds (10^11 s is the year 5138).
const SECONDS_THRESHOLD: i64 = 100_000_000_000;

/// Verifies signatures and remembers nonces within the validity window so a captured
/// signature cannot be replayed.
#[derive(Debug, Default)]
pub struct Verifier {
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl Verifier {
    /// Checks `sig` for `op`; on success the nonce is spent.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        app_id: &str,
        master_key: &str,
        client_id: &str,
        op: Signed<'_>,
        sig: Option<&Signature>,
        now_ms: i64,
        window_secs: u64,
    ) -> Result<(), SignatureProblem> {
        let sig = sig.ok_or(SignatureProblem::Missing)?;
        let t: i64 = sig.timestamp.trim().parse().map_err(|_| SignatureProblem::BadTimestamp)?;
        let t_ms = if t.abs() < SECONDS_THRESHOLD { t.saturating_mul(1000) } else { t };
        let window_ms = i64::try_from(window_secs).unwrap_or(i64::MAX / 2).saturating_mul(1000);
        if (now_ms - t_ms).abs() > window_ms {
            return Err(SignatureProblem::Expired);
        }
        let message = signed_string(app_id, client_id, op, &sig.timestamp, &sig.nonce);
        if !verify(master_key, &message, &sig.signature) {
            return Err(SignatureProblem::Mismatch);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 4096 {
            seen.retain(|_, expires| *expires > now_ms);
        }
        let key = (app_id.to_owned(), sig.nonce.clone());
        match seen.get(&key) {
            Some(expires) if *expires > now_ms => Err(SignatureProblem::Replayed),
            _ => {
                seen.insert(key, t_ms + window_ms + 1);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_node_crypto_hmac() {
        // node -e "console.log(require('crypto').createHmac('sha1','master').update('app:alice::1700000000:n1').digest('hex'))"
        assert_eq!(sign("master", "app:alice::1700000000:n1"), "65d208366d2ca616b2b175f13e6ef2ba56b3049c");
        assert!(verify("master", "m", &sign("master", "m")));
        assert!(!verify("master", "m", &sign("other", "m")));
        assert!(!verify("master", "m", "zz"));
    }

    #[test]
    fn signed_strings() {
        let m = vec!["bob".to_string(), "Alice".to_string(), "carol".to_string()];
        assert_eq!(signed_string("a", "c", Signed::Login, "1", "n"), "a:c::1:n");
        assert_eq!(
            signed_string("a", "c", Signed::Start { members: &m }, "1", "n"),
            "a:c:Alice:bob:carol:1:n"
        );
        assert_eq!(
            signed_string("a", "c", Signed::Invite { cid: "x", members: &m }, "1", "n"),
            "a:c:x:Alice:bob:carol:1:n:invite"
        );
        assert_eq!(
            signed_string("a", "c", Signed::Kick { cid: "x", members: &m }, "1", "n"),
            "a:c:x:Alice:bob:carol:1:n:kick"
        );
    }

    #[test]
    fn window_units_and_replay() {
        let v = Verifier::default();
        let now = 1_700_000_000_000;
        let make = |t: &str, n: &str| Signature {
            timestamp: t.into(),
            nonce: n.into(),
            signature: sign("mk", &signed_string("a", "c", Signed::Login, t, n)),
        };
        assert_eq!(v.check("a", "mk", "c", Signed::Login, Some(&make("1700000000", "n1")), now, 900), Ok(()));
        assert_eq!(
            v.check("a", "mk", "c", Signed::Login, Some(&make("1700000000", "n1")), now, 900),
            Err(SignatureProblem::Replayed)
        );
        assert_eq!(
            v.check("a", "mk", "c", Signed::Login, Some(&make("1700000000500", "n2")), now, 900),
            Ok(())
        );
        assert_eq!(
            v.check("a", "mk", "c", Signed::Login, Some(&make("1699990000", "n3")), now, 900),
            Err(SignatureProblem::Expired)
        );
        assert_eq!(v.check("a", "mk", "c", Signed::Login, None, now, 900), Err(SignatureProblem::Missing));
        let mut bad = make("1700000000", "n4");
        bad.signature = sign("wrong", "x");
        assert_eq!(
            v.check("a", "mk", "c", Signed::Login, Some(&bad), now, 900),
            Err(SignatureProblem::Mismatch)
        );
    }
}
