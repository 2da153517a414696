//! Session tokens (`st`): what a 3.x+ SDK presents to re-open its session after a
//! reconnect instead of a fresh login signature (protocol §6.22).
//!
//! Tokens are stateless — `EXPIRES_MS.HMAC` over the app, the client id and the expiry,
//! keyed with the app's master key — so they survive a server restart and need no
//! storage.

use crate::signature::{sign, verify};

/// Lifetime of a session token.
pub const TOKEN_TTL_SECS: i32 = 86_400;

fn message(app_id: &str, client_id: &str, expires_ms: i64) -> String {
    format!("st:{app_id}:{client_id}:{expires_ms}")
}

/// Issues a token and its lifetime in seconds.
pub fn issue(master_key: &str, app_id: &str, client_id: &str, now_ms: i64) -> (String, i32) {
    let expires = now_ms + i64::from(TOKEN_TTL_SECS) * 1000;
    (format!("{expires}.{}", sign(master_key, &message(app_id, client_id, expires))), TOKEN_TTL_SECS)
}

/// Whether `token` was issued for this client of this app and has not expired.
pub fn is_valid(master_key: &str, app_id: &str, client_id: &str, token: &str, now_ms: i64) -> bool {
    let Some((expires, mac)) = token.split_once('.') else { return false };
    let Ok(expires) = expires.parse::<i64>() else { return false };
    expires > now_ms && verify(master_key, &message(app_id, client_id, expires), mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_app_client_and_time() {
        let (t, ttl) = issue("mk", "app", "alice", 1_000);
        assert_eq!(ttl, TOKEN_TTL_SECS);
        assert!(is_valid("mk", "app", "alice", &t, 2_000));
        assert!(!is_valid("mk", "app", "bob", &t, 2_000));
        assert!(!is_valid("mk", "other", "alice", &t, 2_000));
        assert!(!is_valid("other-key", "app", "alice", &t, 2_000));
        assert!(!is_valid("mk", "app", "alice", &t, 1_000 + 86_400_001));
        assert!(!is_valid("mk", "app", "alice", "garbage", 2_000));
        assert!(!is_valid("mk", "app", "alice", "12.zz", 2_000));
    }
}
