//! Who is calling: LeanCloud's REST authentication.
//!
//! - `X-LC-Id: <appId>` with `X-LC-Key: <appKey>` or `X-LC-Key: <masterKey>,master`;
//! - or `X-LC-Sign: <md5hex(timestamp + key)>,<timestamp>[,master]` instead of the key;
//! - or the legacy `X-AVOSCloud-Application-Id`, `X-AVOSCloud-Application-Key`,
//!   `X-AVOSCloud-Master-Key` and `X-AVOSCloud-Request-Sign`.
//!
//! Keys and digests are compared in constant time. A signature's timestamp is not
//! checked against the clock (see docs/decisions.md).

use super::RestError;
use crate::Gateway;
use axum::http::HeaderMap;
use md5::{Digest, Md5};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The app.
    pub app_id: String,
    /// It showed the master key (else the app key).
    pub master: bool,
}

impl Caller {
    /// Refuses a caller without the master key, as LeanCloud does: 401.
    pub(crate) fn require_master(self) -> Result<Caller, RestError> {
        if self.master { Ok(self) } else { Err(RestError::unauthorized()) }
    }
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok())).map(str::trim)
}

/// The app id a request names, authenticated or not (for CORS).
pub(crate) fn claimed_app(headers: &HeaderMap) -> Option<&str> {
    header(headers, &["x-lc-id", "x-avoscloud-application-id"])
}

/// Equal, in time that depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `md5hex(timestamp + key)`, as `X-LC-Sign` carries it.
pub(crate) fn sign(timestamp: &str, key: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(key.as_bytes());
    hex::encode(md5.finalize())
}

/// Authenticates a request; any failure is 401 `{"code":401,"error":"Unauthorized."}`.
pub(crate) fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> Result<Caller, RestError> {
    let unauthorized = RestError::unauthorized;
    let app_id = claimed_app(headers).ok_or_else(unauthorized)?;
    let app = gateway.engine.app(app_id).ok_or_else(unauthorized)?;
    let (key, master) = (&app.config.key, &app.config.master_key);
    let matches = |given: &str, expected: &str| {
        !given.is_empty() && !expected.is_empty() && constant_time_eq(given.as_bytes(), expected.as_bytes())
    };
    let is_master = if let Some(signature) = header(headers, &["x-lc-sign", "x-avoscloud-request-sign"]) {
        let mut parts = signature.split(',').map(str::trim);
        let (Some(digest), Some(ts)) = (parts.next(), parts.next()) else {
            return Err(unauthorized());
        };
        let is_master = match parts.next() {
            None => false,
            Some("master") => true,
            Some(_) => return Err(unauthorized()),
        };
        if ts.is_empty() || parts.next().is_some() {
            return Err(unauthorized());
        }
        let expected = sign(ts, if is_master { master } else { key });
        let secret_set = !(if is_master { master } else { key }).is_empty();
        if !secret_set || !matches(&digest.to_ascii_lowercase(), &expected) {
            return Err(unauthorized());
        }
        is_master
    } else if let Some(given) = header(headers, &["x-lc-key"]) {
        match given.strip_suffix(",master") {
            Some(m) if matches(m, master) => true,
            None if matches(given, key) => false,
            _ => return Err(unauthorized()),
        }
    } else if let Some(given) = header(headers, &["x-avoscloud-master-key"]) {
        if !matches(given, master) {
            return Err(unauthorized());
        }
        true
    } else if let Some(given) = header(headers, &["x-avoscloud-application-key"]) {
        if !matches(given, key) {
            return Err(unauthorized());
        }
        false
    } else {
        return Err(unauthorized());
    };
    Ok(Caller { app_id: app_id.to_owned(), master: is_master })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_leanclouds_documented_examples() {
        assert_eq!(sign("1453014943466", "UtOCzqb67d3sN12Kts4URwy8"), "d5bcbb897e19b2f6633c716dfdfaf9be");
        assert_eq!(sign("1453014943466", "DyJegPlemooo4X1tg94gQkw1"), "e074720658078c898aa0d4b1b82bdf4b");
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
