//! Apps: the tenants of a Confab server. Each has its own keys, limits and security
//! settings, and nothing is shared between apps.

use confab_types::Limits;
use serde::{Deserialize, Serialize};

/// Which operations must carry a signature (protocol §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignaturePolicy {
    /// `session open` must be signed.
    pub login: bool,
    /// `conv start/add/remove` must be signed.
    pub conversation: bool,
    /// How far a signature's timestamp may be from the server's clock, in seconds.
    pub window_secs: u64,
}

/// One app's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App id (`appId`).
    pub id: String,
    /// App key (used by REST clients; never on the WebSocket).
    pub key: String,
    /// Master key: the HMAC-SHA1 key of signatures.
    pub master_key: String,
    /// Origins allowed to connect from browsers; empty = any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Signature enforcement.
    #[serde(default)]
    pub signatures: SignaturePolicy,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

impl Default for SignaturePolicy {
    /// Nothing enforced; a 15-minute window when something is. Also the default of each
    /// field left out of a `[apps.signatures]` table.
    fn default() -> Self {
        SignaturePolicy { login: false, conversation: false, window_secs: DEFAULT_SIGNATURE_WINDOW_SECS }
    }
}

/// Default signature validity window: 15 minutes either side.
pub const DEFAULT_SIGNATURE_WINDOW_SECS: u64 = 900;

impl AppConfig {
    /// An app with default settings.
    pub fn new(id: impl Into<String>, key: impl Into<String>, master_key: impl Into<String>) -> Self {
        AppConfig {
            id: id.into(),
            key: key.into(),
            master_key: master_key.into(),
            allowed_origins: Vec::new(),
            signatures: SignaturePolicy::default(),
            limits: Limits::default(),
        }
    }

    /// Whether a browser page from `origin` may connect. Requests without an Origin
    /// header (native apps, servers) are not browsers and are always allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                self.allowed_origins.is_empty()
                    || self.allowed_origins.iter().any(|a| {
                        a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o.trim_end_matches('/'))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_signature_table_keeps_the_default_window() {
        let p: SignaturePolicy = serde_json::from_str(r#"{"login": true}"#).expect("parses");
        assert_eq!(p, SignaturePolicy { login: true, conversation: false, window_secs: 900 });
    }

    #[test]
    fn origin_allow_list() {
        let mut app = AppConfig::new("a", "k", "m");
        assert!(app.origin_allowed(Some("http://evil.example")));
        app.allowed_origins = vec!["https://good.example/".into()];
        assert!(app.origin_allowed(Some("https://good.example")));
        assert!(app.origin_allowed(Some("HTTPS://GOOD.EXAMPLE")));
        assert!(!app.origin_allowed(Some("https://evil.example")));
        assert!(app.origin_allowed(None));
    }
}
