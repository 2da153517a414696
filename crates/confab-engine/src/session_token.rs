//! Session tokens (`st`): what a 3.x+ SDK presents to re-open its session after a
//! reconnect instead of a fresh login signature (protocol §6.22).
//!
//! Tokens are stateless — `EXPIRES_MS.HMAC.TAG`, the HMAC over the app, the client id,
//! the expiry and the device tag, keyed with the app's master key — so they survive a
//! server restart, need no storage, and carry the tag the re-login does not resend.

use crate::signature::{sign, verify};
use confab_types::SessionToken;

/// Lifetime of a session token.
pub const TOKEN_TTL_SECS: i32 = 86_400;

fn message(app_id: &str, client_id: &str, expires_ms: i64, tag: &str) -> String {
    format!("st:{app_id}:{client_id}:{expires_ms}:{tag}")
}

/// Issues a token.
pub fn issue(
    master_key: &str,
    app_id: &str,
    client_id: &str,
    tag: Option<&str>,
    now_ms: i64,
) -> SessionToken {
    let expires = now_ms + i64::from(TOKEN_TTL_SECS) * 1000;
    let tag = tag.unwrap_or("");
    let mac = sign(master_key, &message(app_id, client_id, expires, tag));
    SessionToken { token: format!("{expires}.{mac}.{tag}"), ttl_secs: TOKEN_TTL_SECS }
}

/// The device tag bound to `token` (`Some(None)` for an untagged session) if the token
/// was issued for this client of this app and has not expired.
pub fn check(
    master_key: &str,
    app_id: &str,
    client_id: &str,
    token: &str,
    now_ms: i64,
) -> Option<Option<String>> {
    let mut parts = token.splitn(3, '.');
    let expires: i64 = parts.next()?.parse().ok()?;
    let mac = parts.next()?;
    let tag = parts.next().unwrap_or("");
    let valid = expires > now_ms && verify(master_key, &message(app_id, client_id, expires, tag), mac);
    valid.then(|| (!tag.is_empty()).then(|| tag.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_app_client_tag_and_time() {
        let SessionToken { token: t, ttl_secs: ttl } = issue("mk", "app", "alice", None, 1_000);
        assert_eq!(ttl, TOKEN_TTL_SECS);
        assert_eq!(check("mk", "app", "alice", &t, 2_000), Some(None));
        assert_eq!(check("mk", "app", "bob", &t, 2_000), None);
        assert_eq!(check("mk", "other", "alice", &t, 2_000), None);
        assert_eq!(check("other-key", "app", "alice", &t, 2_000), None);
        assert_eq!(check("mk", "app", "alice", &t, 1_000 + 86_400_001), None);
        assert_eq!(check("mk", "app", "alice", "garbage", 2_000), None);
        let tagged = issue("mk", "app", "alice", Some("Mobile.v2"), 1_000).token;
        assert_eq!(check("mk", "app", "alice", &tagged, 2_000), Some(Some("Mobile.v2".into())));
        let forged = tagged.replace("Mobile.v2", "Web");
        assert_eq!(check("mk", "app", "alice", &forged, 2_000), None);
    }
}
