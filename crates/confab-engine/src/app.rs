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
    /// The app's hook backend (`[apps.hooks]`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HookSettings>,
}

/// Where and how the app's hooks are called: LeanCloud's realtime hooks, sent as LeanCloud
/// sent them to a LeanEngine app (`POST {url}/1.1/functions/{hookName}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    /// Base URL of the backend (`http://` or `https://`), without `/1.1/functions`.
    pub url: String,
    /// Sent as `X-LC-Hook-Key` (LeanEngine's `LEANCLOUD_APP_HOOK_KEY`).
    pub key: String,
    /// How long a call may take, in milliseconds: a blocking hook's caller waits at most
    /// this long; a notifying call that takes longer counts as failed and is retried.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// When a blocking hook fails (timeout, non-2xx, unreadable reply): `false` (as
    /// LeanCloud by default) goes on as if it had answered `{}`; `true` refuses the request.
    #[serde(default)]
    pub fail_closed: bool,
}

/// Default `[apps.hooks] timeout_ms`.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 3000;
/// The largest `[apps.hooks] timeout_ms` accepted: a blocking hook holds its client's
/// request (and the connection's later requests) this long at most.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 60_000;

fn default_hook_timeout_ms() -> u64 {
    DEFAULT_HOOK_TIMEOUT_MS
}

impl HookSettings {
    /// Checks the settings: an `http(s)://` URL with a host, a non-empty key, and a
    /// timeout of 1 to [`MAX_HOOK_TIMEOUT_MS`] ms.
    pub fn validate(&self) -> Result<(), String> {
        let rest =
            self.url.strip_prefix("http://").or_else(|| self.url.strip_prefix("https://")).ok_or_else(
                || format!("hooks.url must start with http:// or https://, got {:?}", self.url),
            )?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("hooks.url has no host: {:?}", self.url));
        }
        if self.key.is_empty() {
            return Err("hooks.key must not be empty".into());
        }
        if !(1..=MAX_HOOK_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "hooks.timeout_ms must be 1 to {MAX_HOOK_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
        Ok(())
    }
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
            hooks: None,
        }
    }

    /// Whether a browser page from `origin` may connect or call the REST API, as
    /// LeanCloud's secure domains (REST export §5.3): scheme, host and port must match
    /// an entry exactly, a default port may be left out (`https://x` is
    /// `https://x:443`), and pages on the developer's own machine (`localhost`,
    /// `127.0.0.1`, `[::1]`, any port) are always allowed. Requests without an Origin
    /// header (native apps, servers) are not browsers and are always allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(o) = origin else { return true };
        if self.allowed_origins.is_empty() || self.allowed_origins.iter().any(|a| a == "*") {
            return true;
        }
        match Origin::parse(o) {
            Some(given) => {
                given.is_loopback()
                    || self.allowed_origins.iter().any(|a| Origin::parse(a).is_some_and(|a| a == given))
            }
            // Not `scheme://host[:port]` (`null`, a file page): only an entry spelled the same.
            None => self.allowed_origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o)),
        }
    }
}

/// An origin as browsers send it, compared by scheme, host and port.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `scheme://host[:port]` (a trailing `/` is tolerated in configured entries), with
    /// the scheme's default port when none is given; `None` for anything else.
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.trim().trim_end_matches('/').split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            (format!("[{host}]"), after)
        } else {
            match rest.rsplit_once(':') {
                Some((host, _)) => (host.to_owned(), rest.get(host.len()..).unwrap_or("")),
                None => (rest.to_owned(), ""),
            }
        };
        let port = match port {
            "" => default,
            p => p.strip_prefix(':')?.parse::<u16>().ok()?,
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return None;
        }
        Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
    }

    fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_by_scheme_host_and_port_and_localhost_always_passes() {
        let mut app = AppConfig::new("a", "k", "m");
        app.allowed_origins = vec!["https://Chat.Example.com/".into(), "http://dev.example.com:8080".into()];
        let ok = |o: &str| app.origin_allowed(Some(o));
        assert!(
            ok("https://chat.example.com")
                && ok("https://chat.example.com:443")
                && ok("HTTPS://CHAT.example.com")
        );
        assert!(ok("http://dev.example.com:8080"));
        assert!(!ok("http://chat.example.com") && !ok("https://chat.example.com:8443"));
        assert!(!ok("https://evil.chat.example.com") && !ok("https://chat.example.com.evil.net"));
        assert!(!ok("http://dev.example.com") && !ok("http://dev.example.com:80"));
        assert!(!ok("null") && !ok("https://chat.example.com@evil.net"));
        for local in
            ["http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://[::1]:5173"]
        {
            assert!(ok(local), "{local}");
        }
        assert!(!ok("http://localhost.evil.net"));
        assert!(app.origin_allowed(None));
        app.allowed_origins = vec!["http://example.com:80".into()];
        assert!(app.origin_allowed(Some("http://example.com")));
        app.allowed_origins = vec!["*".into()];
        assert!(app.origin_allowed(Some("https://anything.example")));
    }

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
