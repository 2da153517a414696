//! The server's configuration: defaults ← `confab.toml` ← `CONFAB_*` environment ←
//! command-line flags, resolved into [`Settings`]. Pure apart from reading the file and
//! the development app's key: [`FileConfig::parse`] and [`resolve`] take any input and
//! return an error naming the bad value (a fuzz target holds them to it). [`resolve`]
//! also reads the TLS certificate and key files the configuration names ([`tls`]), so a
//! bad pair is refused before the server starts.

pub mod tls;

use confab_engine::AppConfig;
pub use confab_types::Durability;
pub use confab_types::net::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
pub use tls::{TlsError, TlsFiles};

/// The file format (`confab.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Where the embedded store keeps its files.
    pub data_dir: Option<PathBuf>,
    /// The store: `sqlite:PATH` (an SQLite file) or `postgres://USER@HOST:PORT/DB`.
    pub store: Option<String>,
    /// The cluster's broker, `redis://HOST:PORT`: set, this node is one of several.
    pub broker: Option<String>,
    /// This node's name in the cluster (default: host name and listen port).
    pub node_id: Option<String>,
    /// Public base URL handed out by the router.
    pub public_url: Option<String>,
    /// `full` (fsync every commit, the default) or `normal`.
    pub durability: Option<String>,
    /// Seconds a new connection has to open a session.
    pub login_timeout_secs: Option<u64>,
    /// Seconds of client silence before the connection is closed.
    pub read_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's headers.
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds an HTTP connection (not a WebSocket) may go without reading or writing.
    pub http_idle_timeout_secs: Option<u64>,
    /// Addresses and networks of the reverse proxies whose `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` headers are believed (`"10.0.0.0/8"`, `"::1"`).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The bearer token `GET /metrics` requires; absent: the endpoint is open.
    pub metrics_token: Option<String>,
    /// PEM file of the server's certificate chain: set (with `tls_key`), the port
    /// serves TLS only (`https://`, `wss://`).
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, RSA or SEC1 EC).
    pub tls_key: Option<PathBuf>,
    /// Milliseconds a connection to the TLS port has to complete its TLS handshake.
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Apps.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
}

impl FileConfig {
    /// Reads and parses a file; errors name the file and the bad key.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        FileConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the text of a `confab.toml`; errors name the bad key.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }
}

/// Parses `ID:KEY:MASTER_KEY`.
pub fn parse_app(spec: &str) -> anyhow::Result<AppConfig> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [id, key, master] if !id.is_empty() && !key.is_empty() && !master.is_empty() => {
            Ok(AppConfig::new(*id, *key, *master))
        }
        _ => anyhow::bail!("--app takes ID:KEY:MASTER_KEY (three non-empty parts), got {spec:?}"),
    }
}

/// The resolved settings the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The store.
    pub store: StoreSpec,
    /// The cluster's broker (`redis://…`); `None`: a single node.
    pub broker: Option<String>,
    /// This node's name in the cluster.
    pub node_id: String,
    /// Public URL.
    pub public_url: Option<String>,
    /// Durability mode.
    pub durability: Durability,
    /// Login timeout.
    pub login_timeout_secs: u64,
    /// Read timeout.
    pub read_timeout_secs: u64,
    /// Seconds a client has to send a request's headers; also how long a keep-alive
    /// connection may wait for its next request (at least 1).
    pub http_header_timeout_secs: u64,
    /// Seconds an HTTP connection that is not a WebSocket may go without reading or
    /// writing (at least 1).
    pub http_idle_timeout_secs: u64,
    /// The proxies whose `X-Forwarded-*` headers are believed; empty: nobody's.
    pub trusted_proxies: Vec<IpNet>,
    /// The bearer token `GET /metrics` requires; `None`: the endpoint is open.
    pub metrics_token: Option<String>,
    /// The server's certificate and key; `None`: the port serves plain HTTP and
    /// WebSockets. Checked by [`resolve`] (both files load and match).
    pub tls: Option<TlsFiles>,
    /// Milliseconds a connection to the TLS port has to complete its TLS handshake
    /// (at least 1); unused without `tls`.
    pub tls_handshake_timeout_ms: u64,
    /// Apps; empty means "make the development app".
    pub apps: Vec<AppConfig>,
}

/// What stands in for a master key in printed settings.
pub const MASKED_KEY: &str = "***";

/// [`Settings`] in the file format, every value spelled out.
#[derive(Serialize)]
struct Effective<'a> {
    listen: String,
    data_dir: &'a Path,
    store: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<&'a str>,
    node_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_url: Option<&'a str>,
    durability: &'static str,
    login_timeout_secs: u64,
    read_timeout_secs: u64,
    http_header_timeout_secs: u64,
    http_idle_timeout_secs: u64,
    trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<&'a Path>,
    tls_handshake_timeout_ms: u64,
    apps: &'a [AppConfig],
}

impl Settings {
    /// The same settings with every secret (apps' master keys, hook keys, the metrics
    /// token, store and broker passwords) replaced by [`MASKED_KEY`], for printing.
    pub fn with_masked_keys(&self) -> Settings {
        let mut masked = self.clone();
        if masked.metrics_token.is_some() {
            masked.metrics_token = Some(MASKED_KEY.to_owned());
        }
        for app in &mut masked.apps {
            app.master_key = MASKED_KEY.to_owned();
            if let Some(hooks) = &mut app.hooks {
                hooks.key = MASKED_KEY.to_owned();
            }
        }
        masked.store = masked.store.with_masked_password();
        masked.broker = masked.broker.as_deref().map(mask_password);
        masked
    }

    /// The settings as a `confab.toml` that sets every value explicitly: parsed with
    /// [`FileConfig::parse`] and resolved with no overrides it gives these settings back.
    /// Prints the master keys as they are; see [`Settings::with_masked_keys`].
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let effective = Effective {
            listen: self.listen.to_string(),
            data_dir: &self.data_dir,
            store: self.store.to_string(),
            broker: self.broker.as_deref(),
            node_id: &self.node_id,
            public_url: self.public_url.as_deref(),
            durability: match self.durability {
                Durability::Full => "full",
                Durability::Normal => "normal",
            },
            login_timeout_secs: self.login_timeout_secs,
            read_timeout_secs: self.read_timeout_secs,
            http_header_timeout_secs: self.http_header_timeout_secs,
            http_idle_timeout_secs: self.http_idle_timeout_secs,
            trusted_proxies: self.trusted_proxies.iter().map(ToString::to_string).collect(),
            metrics_token: self.metrics_token.as_deref(),
            tls_cert: self.tls.as_ref().map(|t| t.cert.as_path()),
            tls_key: self.tls.as_ref().map(|t| t.key.as_path()),
            tls_handshake_timeout_ms: self.tls_handshake_timeout_ms,
            apps: &self.apps,
        };
        let body = toml::to_string(&effective).map_err(|e| anyhow::anyhow!("printing the settings: {e}"))?;
        let mut text = String::new();
        if self.public_url.is_none() {
            text.push_str(
                "# public_url is not set: the router hands out the address a client connected to\n",
            );
        }
        if self.apps.is_empty() {
            text.push_str("# no apps: `confab serve` makes the development app \"confab-dev\"\n");
        }
        text.push_str(&body);
        Ok(text)
    }
}

/// What the command line and the environment set, each winning over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `CONFAB_LISTEN`.
    pub listen: Option<String>,
    /// `--data-dir` / `CONFAB_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--store` / `CONFAB_STORE`.
    pub store: Option<String>,
    /// `--broker` / `CONFAB_BROKER`.
    pub broker: Option<String>,
    /// `--node-id` / `CONFAB_NODE_ID`.
    pub node_id: Option<String>,
    /// `--public-url` / `CONFAB_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// `--tls-cert` / `CONFAB_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `CONFAB_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// `--app ID:KEY:MASTER_KEY` (repeatable) / `CONFAB_APPS`; replaces the file's apps.
    pub apps: Vec<String>,
}

/// Resolves the settings: flags and environment over the file over the defaults.
/// Rejects a bad listen address, durability, app spec, trusted proxy, HTTP or TLS
/// handshake timeout or metrics token, an app configured twice, and a TLS certificate
/// without its key (or the reverse) or whose files do not load ([`TlsFiles::load`]).
pub fn resolve(file: FileConfig, overrides: Overrides) -> anyhow::Result<Settings> {
    let listen = overrides.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen.parse().map_err(|e| anyhow::anyhow!("listen address {listen:?}: {e}"))?;
    let data_dir = overrides.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let store = match overrides.store.or(file.store) {
        Some(spec) => StoreSpec::parse(&spec)?,
        None => StoreSpec::Sqlite(data_dir.join(SQLITE_FILE)),
    };
    let broker = overrides.broker.or(file.broker);
    if let Some(url) = &broker {
        if !url.starts_with("redis://") {
            anyhow::bail!("broker must be redis://HOST:PORT, got {:?}", mask_password(url));
        }
        if matches!(store, StoreSpec::Sqlite(_)) {
            anyhow::bail!(
                "a broker joins nodes that share one store: set store = \"postgres://USER@HOST:PORT/DB\" \
                 (an SQLite file belongs to one process)"
            );
        }
    }
    let node_id = match overrides.node_id.or(file.node_id) {
        Some(id) => {
            let bad = |c: char| c.is_whitespace() || c.is_control() || c == '/' || c == '#';
            if id.is_empty() || id.len() > 64 || id.contains(bad) {
                anyhow::bail!("node_id must be 1 to 64 characters without spaces, '/' or '#', got {id:?}");
            }
            id
        }
        None => default_node_id(listen),
    };
    let durability = match file.durability.as_deref() {
        None | Some("full") => Durability::Full,
        Some("normal") => Durability::Normal,
        Some(other) => anyhow::bail!("durability must be \"full\" or \"normal\", got {other:?}"),
    };
    let apps = if overrides.apps.is_empty() {
        file.apps
    } else {
        overrides.apps.iter().map(|s| parse_app(s)).collect::<anyhow::Result<Vec<_>>>()?
    };
    let trusted_proxies = file
        .trusted_proxies
        .iter()
        .map(|p| p.parse::<IpNet>().map_err(|e| anyhow::anyhow!("trusted_proxies: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let at_least_one = |key: &str, value: Option<u64>, default: u64| match value.unwrap_or(default) {
        0 => Err(anyhow::anyhow!("{key} must be at least 1")),
        secs => Ok(secs),
    };
    let http_header_timeout_secs = at_least_one(
        "http_header_timeout_secs",
        file.http_header_timeout_secs,
        DEFAULT_HTTP_HEADER_TIMEOUT_SECS,
    )?;
    let http_idle_timeout_secs =
        at_least_one("http_idle_timeout_secs", file.http_idle_timeout_secs, DEFAULT_HTTP_IDLE_TIMEOUT_SECS)?;
    let tls_handshake_timeout_ms = at_least_one(
        "tls_handshake_timeout_ms",
        file.tls_handshake_timeout_ms,
        DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
    )?;
    let tls = match (overrides.tls_cert.or(file.tls_cert), overrides.tls_key.or(file.tls_key)) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let files = TlsFiles { cert, key };
            files.load()?;
            Some(files)
        }
        (Some(_), None) => anyhow::bail!("tls_cert is set but tls_key is not: TLS needs both (or neither)"),
        (None, Some(_)) => anyhow::bail!("tls_key is set but tls_cert is not: TLS needs both (or neither)"),
    };
    if file.metrics_token.as_deref().is_some_and(|t| t.trim().is_empty() || t.trim() != t) {
        anyhow::bail!("metrics_token must be non-empty, without leading or trailing spaces");
    }
    let mut ids = std::collections::HashSet::new();
    for app in &apps {
        if !ids.insert(app.id.as_str()) {
            anyhow::bail!("app {:?} is configured twice", app.id);
        }
        let depth = app.limits.json_depth;
        if !(1..=confab_engine::bounds::MAX_JSON_DEPTH).contains(&depth) {
            anyhow::bail!(
                "app {:?}: limits.json_depth must be 1 to {}, got {depth}",
                app.id,
                confab_engine::bounds::MAX_JSON_DEPTH
            );
        }
        let l = &app.limits;
        for (key, value) in [
            ("blacklist_max", l.blacklist_max),
            ("room_blacklist_max", l.room_blacklist_max),
            ("silenced_max", l.silenced_max),
            ("room_silenced_max", l.room_silenced_max),
            ("room_managers_max", l.room_managers_max),
            ("client_blacklist_max", l.client_blacklist_max),
        ] {
            // 0 would refuse every block, silence or manager: the feature would be off
            // without saying so. Nothing stored is ever unbounded, so there is no "off".
            if value == 0 {
                anyhow::bail!("app {:?}: limits.{key} must be at least 1, got 0", app.id);
            }
        }
        if let Some(hooks) = &app.hooks {
            hooks.validate().map_err(|why| anyhow::anyhow!("app {:?}: {why}", app.id))?;
        }
    }
    Ok(Settings {
        listen,
        data_dir,
        store,
        broker,
        node_id,
        public_url: overrides.public_url.or(file.public_url),
        durability,
        login_timeout_secs: file.login_timeout_secs.unwrap_or(60),
        read_timeout_secs: file.read_timeout_secs.unwrap_or(400),
        http_header_timeout_secs,
        http_idle_timeout_secs,
        trusted_proxies,
        metrics_token: file.metrics_token,
        tls,
        tls_handshake_timeout_ms,
        apps,
    })
}

/// Where messages and conversations are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded SQLite store in this file (`sqlite:PATH`); the default is
    /// [`SQLITE_FILE`] in the data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL (`postgres://USER[:PASSWORD]@HOST:PORT/DB`); the
    /// store for several nodes.
    Postgres(String),
}

/// A node's default name: the host's name and the listen port.
fn default_node_id(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(['/', '#', ' ']))
        .unwrap_or_else(|| "confab".to_owned());
    format!("{host}:{}", listen.port())
}

/// The SQLite file of the default store, in the data directory.
pub const SQLITE_FILE: &str = "confab.db";

impl StoreSpec {
    /// Parses `sqlite:PATH` or a `postgres://` / `postgresql://` URL; the error names
    /// what is accepted. The URL's finer syntax is checked when the server connects.
    pub fn parse(spec: &str) -> anyhow::Result<StoreSpec> {
        if let Some(path) = spec.strip_prefix("sqlite:") {
            if path.is_empty() {
                anyhow::bail!("store \"sqlite:\" needs a file path, e.g. sqlite:/var/lib/confab/confab.db");
            }
            return Ok(StoreSpec::Sqlite(PathBuf::from(path)));
        }
        let rest = spec.strip_prefix("postgres://").or_else(|| spec.strip_prefix("postgresql://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
                Ok(StoreSpec::Postgres(spec.to_owned()))
            }
            _ => anyhow::bail!(
                "store must be sqlite:PATH or postgres://USER@HOST:PORT/DB, got {:?}",
                StoreSpec::Postgres(spec.to_owned()).with_masked_password().to_string()
            ),
        }
    }

    /// The same store with a password in a PostgreSQL URL replaced by [`MASKED_KEY`],
    /// for printing and logs.
    pub fn with_masked_password(&self) -> StoreSpec {
        match self {
            StoreSpec::Sqlite(_) => self.clone(),
            StoreSpec::Postgres(url) => StoreSpec::Postgres(mask_password(url)),
        }
    }
}

/// Replaces the password of `scheme://user:password@host…` (and a `password=`
/// parameter) with [`MASKED_KEY`].
fn mask_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:{MASKED_KEY}@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> =
                query
                    .split('&')
                    .map(|p| {
                        if p.starts_with("password=") {
                            format!("password={MASKED_KEY}")
                        } else {
                            p.to_owned()
                        }
                    })
                    .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() { format!("{authority}{tail}") } else { format!("{scheme}://{authority}{tail}") }
}

impl std::fmt::Display for StoreSpec {
    /// The form [`StoreSpec::parse`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Postgres(url) => f.write_str(url),
        }
    }
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./confab-data";
/// Default seconds a client has to send a request's headers.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default seconds an HTTP connection may go without reading or writing.
pub const DEFAULT_HTTP_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default milliseconds a connection to the TLS port has to complete its handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The development app used when none is configured. Its master key is random per data
/// directory and kept there.
pub fn development_app(data_dir: &Path) -> anyhow::Result<AppConfig> {
    let key_file = data_dir.join(DEV_MASTER_KEY_FILE);
    let master = match std::fs::read_to_string(&key_file) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => {
            let mut raw = [0u8; 16];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = hex::encode(raw);
            std::fs::create_dir_all(data_dir)?;
            std::fs::write(&key_file, &key)?;
            key
        }
    };
    Ok(AppConfig::new(DEV_APP_ID, DEV_APP_KEY, master))
}

/// The file in the data directory that keeps the development app's master key.
pub const DEV_MASTER_KEY_FILE: &str = "dev-master-key";
/// Id of the development app.
pub const DEV_APP_ID: &str = "confab-dev";
/// Key of the development app.
pub const DEV_APP_KEY: &str = "confab-dev-key";

#[cfg(test)]
mod tests {
    use super::*;

    /// The first ```toml block of a page.
    fn toml_example(page: &str) -> &str {
        let start = page.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + page[start..].find("```").expect("closed");
        &page[start..end]
    }

    /// The configuration example in the README is real: it parses, and names every limit.
    #[test]
    fn the_readme_example_parses() {
        let example = toml_example(include_str!("../../../README.md"));
        let config: FileConfig = toml::from_str(example).expect("the README example parses");
        assert_eq!(config.apps.len(), 1);
        let limits = toml::to_string(&confab_types::Limits::default()).expect("serializes");
        for line in limits.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            assert!(example.contains(&format!("\n{key} = ")), "README does not document limit {key}");
        }
    }

    /// The Chinese README's configuration example is the English one with its comments
    /// translated: it parses, sets the same keys to the same values, in the same order.
    #[test]
    fn the_chinese_readme_example_matches_the_english_one() {
        let english = toml_example(include_str!("../../../README.md"));
        let chinese = toml_example(include_str!("../../../README.zh-CN.md"));
        FileConfig::parse(chinese).expect("the README.zh-CN.md example parses");
        let table =
            |name: &str, text: &str| text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            table("README.zh-CN.md", chinese),
            table("README.md", english),
            "README.zh-CN.md's example sets other values than README.md's"
        );
        // The keys and section headers in the same order, so the two read side by side.
        let keys = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim_start)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(|line| {
                    let end = if line.starts_with('[') { '#' } else { '=' };
                    line.split(end).next().unwrap_or(line).trim().to_owned()
                })
                .collect()
        };
        assert_eq!(
            keys(chinese),
            keys(english),
            "README.zh-CN.md's example names other keys than README.md's"
        );
        let limits = toml::to_string(&confab_types::Limits::default()).expect("serializes");
        for line in limits.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            assert!(
                chinese.contains(&format!("\n{key} = ")),
                "README.zh-CN.md does not document limit {key}"
            );
        }
    }

    /// The security pages, in both languages, list every limit and server-wide bound.
    #[test]
    fn the_security_docs_list_every_limit() {
        let pages = [
            ("docs/security.md", include_str!("../../../docs/security.md")),
            ("docs/security.zh-CN.md", include_str!("../../../docs/security.zh-CN.md")),
        ];
        let limits = toml::to_string(&confab_types::Limits::default()).expect("serializes");
        let keys = limits.lines().map(|line| line.split('=').next().unwrap_or("").trim().to_owned());
        let server = [
            "login_timeout_secs",
            "read_timeout_secs",
            "http_header_timeout_secs",
            "http_idle_timeout_secs",
            "trusted_proxies",
            "metrics_token",
            "tls_cert",
            "tls_key",
            "tls_handshake_timeout_ms",
            "store",
            "broker",
            "node_id",
            "url",
            "key",
            "timeout_ms",
            "fail_closed",
        ];
        for key in keys.chain(server.iter().map(|k| (*k).to_owned())) {
            for (name, page) in pages {
                assert!(page.contains(&format!("`{key}`")), "{name} does not document {key}");
            }
        }
    }

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_named() {
        let file = FileConfig::parse(
            "listen = \"127.0.0.1:9000\"\ndurability = \"normal\"\n\
             [[apps]]\nid = \"a\"\nkey = \"k\"\nmaster_key = \"m\"\n",
        )
        .expect("parses");
        let settings = resolve(file.clone(), Overrides::default()).expect("valid");
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.durability, Durability::Normal);
        assert_eq!(settings.apps.len(), 1);
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            apps: vec!["b:k:m".into(), "c:k:m".into()],
            ..Overrides::default()
        };
        let settings = resolve(file.clone(), overrides).expect("valid");
        assert_eq!(settings.listen.port(), 0);
        assert_eq!(settings.apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let twice = Overrides { apps: vec!["b:k:m".into(), "b:x:y".into()], ..Overrides::default() };
        assert!(resolve(file.clone(), twice).is_err_and(|e| e.to_string().contains("twice")));
        let bad = FileConfig { durability: Some("sometimes".into()), ..file };
        assert!(resolve(bad, Overrides::default()).is_err_and(|e| e.to_string().contains("sometimes")));
        assert!(FileConfig::parse("nonsense = 1").is_err_and(|e| e.to_string().contains("nonsense")));
        for depth in ["0", "101"] {
            let deep = FileConfig::parse(&format!(
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nmaster_key = \"m\"\n[apps.limits]\njson_depth = {depth}\n"
            ))
            .expect("parses");
            assert!(resolve(deep, Overrides::default()).is_err_and(|e| e.to_string().contains("json_depth")));
        }
    }

    /// The list limits (blacklists, silences, room managers, a client's own blacklist):
    /// LeanCloud's sizes by default, set per app, and never 0.
    #[test]
    fn list_limits_default_parse_and_are_checked() {
        let app = |limits: &str| {
            FileConfig::parse(&format!(
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nmaster_key = \"m\"\n[apps.limits]\n{limits}\n"
            ))
            .and_then(|file| resolve(file, Overrides::default()))
        };
        let defaults = app("").expect("valid").apps.remove(0).limits;
        assert_eq!(
            (defaults.blacklist_max, defaults.room_blacklist_max, defaults.silenced_max),
            (500, 10_000, 500)
        );
        assert_eq!(
            (defaults.room_silenced_max, defaults.room_managers_max, defaults.client_blacklist_max),
            (10_000, 500, 1000)
        );
        let set = app("blacklist_max = 3\nroom_blacklist_max = 4\nsilenced_max = 5\nroom_silenced_max = 6\n\
             room_managers_max = 7\nclient_blacklist_max = 8")
        .expect("valid")
        .apps
        .remove(0)
        .limits;
        assert_eq!(
            [
                set.blacklist_max,
                set.room_blacklist_max,
                set.silenced_max,
                set.room_silenced_max,
                set.room_managers_max,
                set.client_blacklist_max
            ],
            [3, 4, 5, 6, 7, 8]
        );
        for key in [
            "blacklist_max",
            "room_blacklist_max",
            "silenced_max",
            "room_silenced_max",
            "room_managers_max",
            "client_blacklist_max",
        ] {
            let error = app(&format!("{key} = 0")).expect_err(key).to_string();
            assert!(error.contains(&format!("limits.{key}")), "{key}: {error}");
            for bad in ["-1", "\"many\"", "1.5"] {
                let error = app(&format!("{key} = {bad}")).expect_err(bad).to_string();
                assert!(error.contains(key), "{key} = {bad}: {error}");
            }
        }
    }

    #[test]
    fn the_metrics_token_is_optional_and_never_blank() {
        let parse = |text: &str| resolve(FileConfig::parse(text).expect("parses"), Overrides::default());
        assert_eq!(parse("").expect("valid").metrics_token, None, "open by default");
        let set = parse("metrics_token = \"s3cret\"").expect("valid");
        assert_eq!(set.metrics_token.as_deref(), Some("s3cret"));
        for bad in ["metrics_token = \"\"", "metrics_token = \" \"", "metrics_token = \"s3cret \""] {
            let error = parse(bad).expect_err(bad).to_string();
            assert!(error.contains("metrics_token"), "{bad}: {error}");
        }
    }

    #[test]
    fn trusted_proxies_and_http_timeouts() {
        let file = FileConfig::parse(
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\", \"fd00::/8\"]\n\
             http_header_timeout_secs = 5\n",
        )
        .expect("parses");
        let settings = resolve(file, Overrides::default()).expect("valid");
        assert_eq!(settings.trusted_proxies.len(), 4);
        assert!(settings.trusted_proxies[1].contains("10.9.8.7".parse().expect("an address")));
        assert_eq!(settings.http_header_timeout_secs, 5);
        assert_eq!(settings.http_idle_timeout_secs, DEFAULT_HTTP_IDLE_TIMEOUT_SECS);
        let defaults = resolve(FileConfig::default(), Overrides::default()).expect("valid");
        assert!(defaults.trusted_proxies.is_empty(), "nobody is trusted by default");
        assert_eq!(defaults.http_header_timeout_secs, DEFAULT_HTTP_HEADER_TIMEOUT_SECS);
        for (text, named) in [
            ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies"),
            ("trusted_proxies = [\"proxy.internal\"]", "trusted_proxies"),
            ("http_idle_timeout_secs = 0", "http_idle_timeout_secs"),
            ("http_header_timeout_secs = 0", "http_header_timeout_secs"),
        ] {
            let file = FileConfig::parse(text).expect("parses");
            let err = resolve(file, Overrides::default()).expect_err(text).to_string();
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    /// The printed settings are a configuration that resolves to the same settings.
    #[test]
    fn printed_settings_resolve_to_themselves() {
        let file = FileConfig::parse(
            "listen = \"[::1]:9000\"\nstore = \"postgres://u@db:5433/chat\"\ndurability = \"normal\"\npublic_url = \"https://chat.example.com\"\n\
             trusted_proxies = [\"10.1.2.3/8\", \"::1\"]\nread_timeout_secs = 30\nmetrics_token = \"scrape-secret\"\n\
             [[apps]]\nid = \"a\"\nkey = \"k\"\nmaster_key = \"m\"\nallowed_origins = [\"https://x.test\"]\n\
             [apps.signatures]\nlogin = true\n[apps.limits]\njson_depth = 7\n\
             [apps.hooks]\nurl = \"https://backend.test\"\nkey = \"hook-secret\"\n\
             [[apps]]\nid = \"b\"\nkey = \"k2\"\nmaster_key = \"m2\"\n",
        )
        .expect("parses");
        for settings in [
            resolve(file, Overrides::default()).expect("valid"),
            resolve(FileConfig::default(), Overrides::default()).expect("valid"),
        ] {
            let printed = settings.to_toml().expect("prints");
            let again = resolve(FileConfig::parse(&printed).expect(&printed), Overrides::default());
            assert_eq!(again.expect(&printed), settings, "{printed}");
            let masked = settings.with_masked_keys().to_toml().expect("prints");
            assert!(!masked.contains("\"m\"") && !masked.contains("\"m2\""), "{masked}");
            assert!(!masked.contains("hook-secret"), "{masked}");
            assert!(!masked.contains("scrape-secret"), "{masked}");
        }
    }

    /// `[apps.hooks]`: defaults as documented, and every bad value named.
    #[test]
    fn hook_settings_default_and_are_checked() {
        let app = |hooks: &str| {
            format!("[[apps]]\nid = \"a\"\nkey = \"k\"\nmaster_key = \"m\"\n[apps.hooks]\n{hooks}")
        };
        let file = FileConfig::parse(&app("url = \"http://127.0.0.1:3000\"\nkey = \"h\"\n")).expect("parses");
        let settings = resolve(file, Overrides::default()).expect("valid");
        let hooks = settings.apps[0].hooks.clone().expect("hooks");
        assert_eq!((hooks.timeout_ms, hooks.fail_closed), (3000, false));
        for (text, named) in [
            ("url = \"ftp://x\"\nkey = \"h\"", "hooks.url"),
            ("url = \"https://\"\nkey = \"h\"", "hooks.url"),
            ("url = \"http://x\"\nkey = \"\"", "hooks.key"),
            ("url = \"http://x\"\nkey = \"h\"\ntimeout_ms = 0", "hooks.timeout_ms"),
            ("url = \"http://x\"\nkey = \"h\"\ntimeout_ms = 60001", "hooks.timeout_ms"),
        ] {
            let file = FileConfig::parse(&app(text)).expect(text);
            let err = resolve(file, Overrides::default()).expect_err(text).to_string();
            assert!(err.contains(named), "{text}: {err}");
        }
        assert!(FileConfig::parse(&app("url = \"http://x\"\nkey = \"h\"\nretries = 3")).is_err());
    }

    #[test]
    fn stores_are_sqlite_files_or_postgres_urls() {
        let resolve_with = |file: &str, flag: Option<&str>| {
            let overrides = Overrides { store: flag.map(str::to_owned), ..Overrides::default() };
            resolve(FileConfig::parse(file).expect("parses"), overrides)
        };
        let default = resolve_with("data_dir = \"/srv/confab\"", None).expect("valid");
        assert_eq!(default.store, StoreSpec::Sqlite(PathBuf::from("/srv/confab/confab.db")));
        let file = resolve_with("store = \"sqlite:/data/x.db\"", None).expect("valid");
        assert_eq!(file.store, StoreSpec::Sqlite(PathBuf::from("/data/x.db")));
        let url = "postgres://confab:pw@db.internal:5432/confab";
        let flag = resolve_with("store = \"sqlite:/data/x.db\"", Some(url)).expect("valid");
        assert_eq!(flag.store, StoreSpec::Postgres(url.into()), "the flag wins over the file");
        let printed = flag.with_masked_keys().to_toml().expect("prints");
        assert!(printed.contains("postgres://confab:***@db.internal:5432/confab") && !printed.contains("pw"));
        assert_eq!(
            mask_password("postgresql://u@h/d?sslmode=disable&password=pw"),
            "postgresql://u@h/d?sslmode=disable&password=***"
        );
        for bad in ["mysql://x", "sqlite:", "postgres://", "/var/lib/confab.db", "postgres:///db"] {
            let err = resolve_with("", Some(bad)).expect_err(bad).to_string();
            assert!(err.contains("store"), "{bad}: {err}");
        }
        let err = resolve_with("", Some("mysql://u:secret@h")).expect_err("mysql").to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    /// A fixture of `testdata/tls` (see its README), as a path in a config file.
    fn tls_fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls").join(name).display().to_string()
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_or_neither() {
        let (cert, key) = (tls_fixture("ec-cert.pem"), tls_fixture("ec-key.pem"));
        let parse = |text: &str| FileConfig::parse(text).expect(text);
        let off = resolve(FileConfig::default(), Overrides::default()).expect("valid");
        assert_eq!(off.tls, None, "plain by default");
        assert_eq!(off.tls_handshake_timeout_ms, DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS);
        let file =
            parse(&format!("tls_cert = {cert:?}\ntls_key = {key:?}\ntls_handshake_timeout_ms = 250\n"));
        let on = resolve(file.clone(), Overrides::default()).expect("valid");
        assert_eq!(on.tls, Some(TlsFiles { cert: cert.clone().into(), key: key.clone().into() }));
        assert_eq!(on.tls_handshake_timeout_ms, 250);
        // Flags (and the environment) win over the file, and may set TLS on their own.
        let rsa = Overrides {
            tls_cert: Some(tls_fixture("rsa-cert.pem").into()),
            tls_key: Some(tls_fixture("rsa-key.pem").into()),
            ..Overrides::default()
        };
        let flagged = resolve(file, rsa.clone()).expect("valid");
        assert_eq!(flagged.tls.as_ref().map(|t| t.cert.clone()), Some(tls_fixture("rsa-cert.pem").into()));
        assert!(resolve(FileConfig::default(), rsa).expect("valid").tls.is_some());
        // One without the other, however it is split between the file and the flags.
        let key_flag = Overrides { tls_key: Some(key.clone().into()), ..Overrides::default() };
        for (file, overrides, named) in [
            (parse(&format!("tls_cert = {cert:?}")), Overrides::default(), "tls_key is not"),
            (parse(&format!("tls_key = {key:?}")), Overrides::default(), "tls_cert is not"),
            (FileConfig::default(), key_flag, "tls_cert is not"),
        ] {
            let error = resolve(file, overrides).expect_err(named).to_string();
            assert!(error.contains(named), "{error}");
        }
        // The files are read and checked: a missing file, a file that is not PEM, and a
        // key of another certificate are refused with the key and the file named.
        let missing = "/nonexistent/confab/cert.pem";
        for (text, named) in [
            (format!("tls_cert = {missing:?}\ntls_key = {key:?}"), "tls_cert /nonexistent/confab/cert.pem"),
            (format!("tls_cert = {cert:?}\ntls_key = {cert:?}"), "no private key"),
            (format!("tls_cert = {key:?}\ntls_key = {key:?}"), "no certificate"),
            (
                format!("tls_cert = {cert:?}\ntls_key = {:?}", tls_fixture("other-key.pem")),
                "not the certificate's",
            ),
            (
                format!("tls_cert = {cert:?}\ntls_key = {key:?}\ntls_handshake_timeout_ms = 0"),
                "tls_handshake_timeout_ms",
            ),
        ] {
            let error = resolve(parse(&text), Overrides::default()).expect_err(&text).to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        // Printed, the paths are shown as they are (they are not secrets) and read back.
        let printed = on.with_masked_keys().to_toml().expect("prints");
        assert!(printed.contains(&format!("tls_cert = {cert:?}")), "{printed}");
        let again =
            resolve(FileConfig::parse(&printed).expect(&printed), Overrides::default()).expect("valid");
        assert_eq!(again, on.with_masked_keys());
    }

    #[test]
    fn app_specs() {
        let app = parse_app("id:key:master").expect("valid");
        assert_eq!((app.id.as_str(), app.key.as_str(), app.master_key.as_str()), ("id", "key", "master"));
        assert!(parse_app("id:key").is_err());
        assert!(parse_app("id::master").is_err());
    }
}
