//! `confab`: the Confab realtime server.
//!
//! `confab serve` runs the server. With no arguments it listens on 127.0.0.1:7878, keeps
//! data in the embedded SQLite store in ./confab-data and serves a development app;
//! `--store postgres://USER@HOST:PORT/DB` keeps it in PostgreSQL instead (the store
//! several nodes share). When it accepts connections — after the store's migrations
//! ran and the store answered — it prints exactly one line on stdout,
//! `listening on http://HOST:PORT` (`https://` when `tls_cert` and `tls_key` are set:
//! the port then speaks TLS only); logs go to stderr. With TLS, SIGHUP reads the
//! certificate and key files again: new handshakes get the new certificate, open
//! connections keep theirs, and files that do not load leave the old one in place.
//! Without TLS, SIGHUP is logged and ignored.
//!
//! `confab migrate` brings the store's schema up to date and exits (`serve` does the
//! same at start).
//!
//! `confab check-config FILE` resolves the configuration as `serve` would (same file,
//! environment and flags, same checks) and prints the effective settings as TOML with
//! the master keys masked; it opens no store, binds no port and creates no directory.
//! Exit status 0 when valid, 2 (the error on stderr) when not.
//!
//! `confab pull --from URL --app-id ID --master-key KEY --out DIR` downloads an app's
//! IM data from LeanCloud's REST API (or another Confab's) into an export directory;
//! running it again continues an interrupted pull. Progress goes to stderr, the report
//! as one JSON object to stdout; exit status 0 when complete, 1 when it stopped.
//!
//! `confab import --app ID DIR` loads an export directory (`confab pull`'s, or one
//! assembled from LeanCloud's console export) into the store `serve` would open with
//! the same configuration, while the server is stopped. Skipped records and progress go
//! to stderr, the report as one JSON object to stdout. Exit status 0 when the import
//! ran to its end (skips included), 1 when it stopped.

use clap::{Parser, Subcommand};
use confab_cluster_redis::RedisCluster;
use confab_config::{DEV_APP_ID, FileConfig, Overrides, Settings, StoreSpec, development_app};
use confab_engine::Engine;
use confab_engine::ports::{Cluster, HookCaller, Store, StoreError, SystemClock};
use confab_gateway::server::{HttpTimeouts, accept_until};
use confab_gateway::tls::{Certificates, TlsListener};
use confab_gateway::{Gateway, GatewayConfig};
use confab_store_postgres::{OpenError, PostgresStore};
use confab_store_sqlite::SqliteStore;
use confab_types::{ErrorCode, ProtocolError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "confab",
    version,
    about = "Self-hosted realtime messaging, wire-compatible with LeanCloud's SDKs"
)]
struct Cli {
    /// Log format on stderr: `text` (the default) or `json` (one JSON object per line,
    /// for log collectors).
    #[arg(long, env = "CONFAB_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Validate a configuration and print the effective settings as TOML (master keys
    /// masked); exit status 1 with the error on stderr when it is invalid.
    CheckConfig(CheckArgs),
    /// Bring the store's schema up to date and exit (`serve` also does it at start).
    Migrate(ServeArgs),
    /// Load an export of LeanCloud data (`confab pull`'s directory) into the store;
    /// run it while the server is stopped. Running it again adds nothing.
    Import(ImportArgs),
    /// Download an app's conversations, member roles, service-conversation data and
    /// histories from LeanCloud's REST API (or another Confab's) into DIR; run it again
    /// to continue after an interruption.
    Pull(PullArgs),
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// The app's API base URL, e.g. `https://abcdefgh.api.lncldglobal.com` (or your bound
    /// API domain).
    #[arg(long, value_name = "URL")]
    from: String,
    /// The app id.
    #[arg(long, value_name = "ID")]
    app_id: String,
    /// The app's master key (or set CONFAB_PULL_MASTER_KEY, which keeps it out of the
    /// shell history).
    #[arg(long, env = "CONFAB_PULL_MASTER_KEY", hide_env_values = true, value_name = "KEY")]
    master_key: String,
    /// The output directory: new and empty, or one an interrupted pull with the same
    /// arguments left.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Only what changed since then: ISO-8601 UTC (2026-12-01T00:00:00Z) or epoch
    /// milliseconds. For the final delta at cutover, into a new directory.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Also download message files on LeanCloud's file domains into DIR/files/.
    #[arg(long)]
    files: bool,
    /// Another domain whose message files are downloaded (the app's own bound file
    /// domain); repeatable.
    #[arg(long = "file-domain", value_name = "HOST")]
    file_domains: Vec<String>,
    /// Also pull service conversations' messages (broadcasts and targeted messages),
    /// through every subscriber's history: one request series per subscriber.
    #[arg(long)]
    service_history: bool,
    /// Requests per second, at most.
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    rate: f64,
    /// Transient failures (timeouts, 5xx, 429) of one request before the pull stops.
    #[arg(long, value_name = "N", default_value_t = 8)]
    retries: u32,
    /// Largest file downloaded, in bytes; larger ones are reported and left out.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    max_file_bytes: usize,
    /// How long a 429 waits before its retry, in ms. Hidden: LeanCloud's quota window is a
    /// minute (the default); only tests shorten it.
    #[arg(long, hide = true, value_name = "MS", default_value_t = 60_000)]
    rate_limited_wait_ms: u64,
    /// The backoff unit of other transient failures, in ms (the first retry waits twice
    /// this). Hidden: only tests shorten it.
    #[arg(long, hide = true, value_name = "MS", default_value_t = 1_000)]
    backoff_ms: u64,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// TOML configuration file: the same as `serve`'s (its data directory, and the
    /// app's limits the data is checked against).
    #[arg(long, env = "CONFAB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory of the embedded store. Default: the configuration's, else
    /// ./confab-data.
    #[arg(long, env = "CONFAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where data lives, as for `serve`: `sqlite:PATH` or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB`. Default: SQLite in the data directory.
    #[arg(long, env = "CONFAB_STORE", value_name = "URL")]
    store: Option<String>,
    /// The app the data belongs to (its id; its limits come from the configuration,
    /// LeanCloud's defaults when it is not configured).
    #[arg(long = "app", value_name = "ID")]
    app: String,
    /// Rewrite the URLs of message files on LeanCloud's file domains to this base URL,
    /// where DIR/files/ (`pull --files`) is served from.
    #[arg(long, value_name = "URL")]
    file_base_url: Option<String>,
    /// Another domain whose file URLs are rewritten (the app's own bound file domain);
    /// repeatable.
    #[arg(long = "file-domain", value_name = "HOST")]
    file_domains: Vec<String>,
    /// Largest record read, in bytes (a line of a .jsonl file, an element of a .json
    /// array); larger ones are skipped and reported.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_record_bytes: usize,
    /// Where to sort histories too large to sort in memory (default: the system's
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The export directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CONFAB_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: OverrideArgs,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// TOML configuration file to check.
    #[arg(value_name = "FILE", env = "CONFAB_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    overrides: OverrideArgs,
}

/// The settings the environment and the command line set over the file's.
#[derive(Debug, clap::Args)]
struct OverrideArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one). Default 127.0.0.1:7878.
    #[arg(long, env = "CONFAB_LISTEN")]
    listen: Option<String>,
    /// Data directory of the embedded store. Default ./confab-data.
    #[arg(long, env = "CONFAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where data lives: `sqlite:PATH` (an SQLite file) or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (the store several nodes share).
    /// Default: SQLite in the data directory (`confab.db`).
    #[arg(long, env = "CONFAB_STORE", value_name = "URL")]
    store: Option<String>,
    /// The cluster's broker, `redis://HOST:PORT`: this node is then one of several
    /// sharing the PostgreSQL store. Default: none (a single node).
    #[arg(long, env = "CONFAB_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// This node's name in the cluster. Default: the host name and listen port.
    #[arg(long, env = "CONFAB_NODE_ID", value_name = "NAME")]
    node_id: Option<String>,
    /// Public base URL the router hands out (e.g. `https://chat.example.com`).
    #[arg(long, env = "CONFAB_PUBLIC_URL")]
    public_url: Option<String>,
    /// PEM file of the TLS certificate chain (with --tls-key): the port then speaks
    /// TLS only (https://, wss://). SIGHUP reads it again.
    #[arg(long, env = "CONFAB_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, RSA or EC).
    #[arg(long, env = "CONFAB_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// An app as ID:KEY:MASTER_KEY; repeatable. Replaces the apps of the config file.
    #[arg(long = "app", env = "CONFAB_APPS", value_delimiter = ',')]
    apps: Vec<String>,
}

fn resolve(config: Option<&Path>, args: OverrideArgs) -> anyhow::Result<Settings> {
    let file = match config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        store: args.store,
        broker: args.broker,
        node_id: args.node_id,
        public_url: args.public_url,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        apps: args.apps,
    };
    confab_config::resolve(file, overrides)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONFAB_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::CheckConfig(args) => std::process::exit(check_config(args)),
        Command::Import(args) => std::process::exit(import(args)),
        Command::Pull(args) => std::process::exit(pull(args)),
        Command::Migrate(args) => {
            let settings = resolve(args.config.as_deref(), args.overrides)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return runtime.block_on(migrate(settings));
        }
    };
    let mut settings = resolve(args.config.as_deref(), args.overrides)?;
    if settings.apps.is_empty() {
        let dev = development_app(&settings.data_dir)?;
        // The app key is public (every client carries it); the master key is not, so the
        // logs name the file that holds it instead. Every line on stderr stays in the
        // chosen format.
        let key_file = settings.data_dir.join(confab_config::DEV_MASTER_KEY_FILE);
        match cli.log_format {
            LogFormat::Json => tracing::info!(
                app_id = %dev.id, app_key = %dev.key, master_key_file = %key_file.display(),
                "development app (configure apps with --app or a config file)"
            ),
            LogFormat::Text => eprintln!(
                "development app: appId={} appKey={} masterKey in {} (configure apps with --app or a config file)",
                dev.id,
                dev.key,
                key_file.display()
            ),
        }
        settings.apps.push(dev);
    }
    warn_unsigned_logins(&settings);
    // Store reads run on blocking threads; without a cap a burst of logins started
    // hundreds of them (each with its own malloc arena and SQLite connection), which
    // showed as +1.5 KB per idle connection. Reads beyond the cap wait their turn.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()?;
    runtime.block_on(serve(settings))
}

/// `confab check-config`: the exit status. Resolves exactly as `serve` does, warns as
/// it does, and prints the settings; touches neither the data directory nor the network.
fn check_config(args: CheckArgs) -> i32 {
    let printed = resolve(Some(&args.config), args.overrides).and_then(|settings| {
        if let StoreSpec::Postgres(url) = &settings.store {
            PostgresStore::check_url(url)?;
        }
        warn_unsigned_logins(&settings);
        settings.with_masked_keys().to_toml()
    });
    match printed {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("confab check-config: writing the settings: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("confab check-config: invalid configuration: {e:#}");
            1
        }
    }
}

/// `confab pull`: the exit status.
fn pull(args: PullArgs) -> i32 {
    let since = match args.since.as_deref().map(|s| (s, confab_migrate::pull::parse_since(s))) {
        None => None,
        Some((_, Some(ms))) => Some(ms),
        Some((text, None)) => {
            eprintln!("confab pull: --since {text:?} is neither ISO-8601 UTC nor epoch milliseconds");
            return 1;
        }
    };
    let mut opts = confab_migrate::PullOptions::new(&args.from, &args.app_id, &args.master_key, &args.out);
    opts.since = since;
    opts.files = args.files;
    opts.service_history = args.service_history;
    opts.file_domains = confab_migrate::files::FileDomains::new(&args.file_domains);
    opts.rate = args.rate;
    opts.retries = args.retries;
    opts.max_file_bytes = args.max_file_bytes;
    opts.rate_limited_wait = std::time::Duration::from_millis(args.rate_limited_wait_ms);
    opts.backoff = std::time::Duration::from_millis(args.backoff_ms);
    // A bar redrawn in place on a terminal; periodic lines in a log file or a pipe.
    opts.bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let outcome =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string()).and_then(
            |rt| {
                rt.block_on(confab_migrate::pull(&opts, &mut std::io::stderr())).map_err(|e| {
                    if e.resumable() {
                        format!("{e} (run the same command again to continue)")
                    } else {
                        e.to_string()
                    }
                })
            },
        );
    match outcome {
        Ok(report) => {
            eprintln!(
                "confab pull: {} conversations, {} member infos, {} _SysMessage rows; {} messages in {} \
                 histories; {} subscribers; {} service-conversation messages; {} files ({} already there); \
                 {} not fetched",
                report.conversations,
                report.member_infos,
                report.sys_messages,
                report.messages,
                report.histories,
                report.subscribers,
                report.service_messages,
                report.files,
                report.files_present,
                report.failed,
            );
            match serde_json::to_string(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("confab pull: writing the report: {e}"),
            }
            0
        }
        Err(e) => {
            eprintln!("confab pull: {e}");
            1
        }
    }
}

/// `confab import`: the exit status.
fn import(args: ImportArgs) -> i32 {
    match run_import(args) {
        Ok(report) => {
            let skipped = report.skipped_total();
            eprintln!(
                "confab import: conversations {} created, {} updated, {} unchanged; messages {} imported, \
                 {} already there ({} moved to a free millisecond); {} _SysMessage rows; {skipped} skipped",
                report.conversations.created,
                report.conversations.updated,
                report.conversations.unchanged,
                report.messages.imported,
                report.messages.present,
                report.messages.shifted,
                report.sys_messages.imported,
            );
            match serde_json::to_string(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("confab import: writing the report: {e}"),
            }
            0
        }
        Err(e) => {
            eprintln!("confab import: {e:#}");
            1
        }
    }
}

fn run_import(args: ImportArgs) -> anyhow::Result<confab_migrate::ImportReport> {
    let overrides = OverrideArgs {
        listen: None,
        data_dir: args.data_dir,
        store: args.store,
        broker: None,
        node_id: None,
        public_url: None,
        tls_cert: None,
        tls_key: None,
        apps: Vec::new(),
    };
    let settings = resolve(args.config.as_deref(), overrides)?;
    let app = match settings.apps.iter().find(|a| a.id == args.app) {
        Some(app) => app.clone(),
        None if args.app == DEV_APP_ID => development_app(&settings.data_dir)?,
        None => {
            eprintln!(
                "confab import: app {:?} is not in the configuration; checking the data against the default limits",
                args.app
            );
            confab_engine::AppConfig::new(args.app.clone(), "", "")
        }
    };
    let opts = confab_migrate::ImportOptions {
        max_record_bytes: args.max_record_bytes,
        work_dir: args.work_dir,
        file_base_url: args.file_base_url,
        file_domains: confab_migrate::files::FileDomains::new(&args.file_domains),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // The store `serve` opens with these settings (its migrations run).
        let store = open_store(&settings).await?;
        let mut log = std::io::stderr();
        let outcome = confab_migrate::import(store.store().as_ref(), &app, &args.dir, &opts, &mut log).await;
        // Delivery cursors are buffered: written before the report says they are set,
        // and before an error ends the process.
        let flushed = store.flush().await;
        let report = outcome?;
        flushed.map_err(|e| anyhow::anyhow!("flushing the store: {e}"))?;
        Ok(report)
    })
}

/// Warns about every app that lets anyone log in as any client id: apps other than the
/// development app with login signatures off, and with a listen address other than
/// loopback, the development app too.
fn warn_unsigned_logins(settings: &Settings) {
    let exposed = !settings.listen.ip().is_loopback();
    for app in settings.apps.iter().filter(|a| !a.signatures.login) {
        if app.id != DEV_APP_ID {
            tracing::warn!(
                app = %app.id,
                "app {:?} has login signatures off: anyone who knows its id can log in as any client \
                 (turn on [apps.signatures] login = true)",
                app.id
            );
        } else if exposed {
            tracing::warn!(
                app = %app.id,
                listen = %settings.listen,
                "the development app {:?} (login signatures off) is served on {}, not only on loopback",
                app.id,
                settings.listen
            );
        }
    }
}

/// Most threads running store reads at once.
const BLOCKING_THREADS: usize = 32;

/// The store the server runs on.
#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Backend {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(s) => Arc::new(s.clone()),
            Backend::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// Writes what the store still buffers (delivery cursors).
    async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Backend::Sqlite(s) => s.flush().await,
            Backend::Postgres(s) => s.flush().await,
        }
    }
}

fn open_sqlite(path: &Path, settings: &Settings) -> anyhow::Result<SqliteStore> {
    SqliteStore::open_file(path, settings.durability)
        .map_err(|e| anyhow::anyhow!("opening the SQLite store {}: {e}", path.display()))
}

/// Opens the store, running its migrations. PostgreSQL that does not answer yet is
/// waited for (a node may start before its database), with the wait in the log; one
/// that refuses (authentication, no such database) or fails to migrate stops the start.
async fn open_store(settings: &Settings) -> anyhow::Result<Backend> {
    let url = match &settings.store {
        StoreSpec::Sqlite(path) => return Ok(Backend::Sqlite(open_sqlite(path, settings)?)),
        StoreSpec::Postgres(url) => url,
    };
    let mut attempts = 0u64;
    loop {
        match PostgresStore::connect(url).await {
            Ok(store) => {
                if attempts > 0 {
                    tracing::warn!(target_db = %store.target(), "PostgreSQL answered; starting");
                }
                return Ok(Backend::Postgres(store));
            }
            Err(OpenError::Unreachable { target, error }) => {
                // The first failure and then one line every 10 s, not one a second.
                if attempts.is_multiple_of(10) {
                    tracing::error!(
                        target_db = %target,
                        %error,
                        "PostgreSQL is unreachable: not listening until it answers (retrying every second)"
                    );
                }
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects to the cluster's Redis, waiting for it (with the wait in the log) as for
/// the store: a node that cannot reach its broker does not start serving.
async fn join_cluster(url: &str, cluster: &str, node_id: &str) -> Arc<RedisCluster> {
    let mut attempts = 0u64;
    loop {
        match RedisCluster::connect(url, cluster, node_id).await {
            Ok(cluster) => {
                if attempts > 0 {
                    tracing::warn!("Redis answered; starting");
                }
                return cluster;
            }
            Err(error) => {
                if attempts.is_multiple_of(10) {
                    tracing::error!(
                        %error,
                        "Redis is unreachable: not listening until it answers (retrying every second)"
                    );
                }
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `confab migrate`: the store's migrations, then exit.
async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match &settings.store {
        StoreSpec::Sqlite(path) => {
            let store = open_sqlite(path, &settings)?;
            store.flush().await?;
            writeln!(out, "schema up to date: sqlite:{}", path.display())?;
        }
        StoreSpec::Postgres(url) => {
            let ran = PostgresStore::migrate(url).await?;
            let shown = settings.store.with_masked_password();
            writeln!(out, "schema up to date: {shown} ({ran} migration(s) applied)")?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::listen()?;
    // A node waiting for its database still stops on SIGTERM.
    let backend = tokio::select! {
        opened = open_store(&settings) => opened?,
        () = shutdown.clone().wait() => return Ok(()),
    };
    let cluster = match (&settings.broker, &backend) {
        (Some(url), Backend::Postgres(store)) => {
            // Nodes sharing this database are one cluster, whatever their URLs look like.
            let name =
                store.cluster_id().await.map_err(|e| anyhow::anyhow!("reading the cluster's id: {e}"))?;
            tokio::select! {
                joined = join_cluster(url, &name, &settings.node_id) => Some(joined),
                () = shutdown.clone().wait() => return Ok(()),
            }
        }
        (Some(_), Backend::Sqlite(_)) => anyhow::bail!("a broker needs the PostgreSQL store"),
        (None, _) => None,
    };
    let frame_bytes = settings.apps.iter().map(|a| a.limits.frame_bytes).max().unwrap_or(64 * 1024);
    let node: Option<Arc<dyn Cluster>> = cluster.clone().map(|c| c as Arc<dyn Cluster>);
    let hooks: Option<Arc<dyn HookCaller>> = if settings.apps.iter().any(|a| a.hooks.is_some()) {
        let hooks = confab_gateway::hooks::HttpHooks::new()
            .map_err(|e| anyhow::anyhow!("setting up the hook client: {e}"))?;
        Some(Arc::new(hooks))
    } else {
        None
    };
    let has_hooks = hooks.is_some();
    let engine =
        Engine::with_ports(settings.apps.clone(), backend.store(), Arc::new(SystemClock), node, hooks);
    if let Some(cluster) = &cluster {
        cluster.attach(Arc::new(engine.clone()));
        tracing::info!(node = %settings.node_id, instance = %cluster.instance(), "joined the cluster");
    }
    if has_hooks {
        // Notifying hooks queued before a restart are delivered from the outbox now.
        tokio::spawn(engine.clone().run_outbox());
    }
    // A large backlog takes the reconnect storm after a restart without refusals.
    let socket = if settings.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(settings.listen).map_err(|e| anyhow::anyhow!("binding {}: {e}", settings.listen))?;
    let listener = socket.listen(4096)?;
    let local = listener.local_addr()?;
    let (tls, certificates) = match &settings.tls {
        Some(files) => {
            let (listener, certificates) = serve_tls(files, &settings)?;
            (Some(listener), Some((files.clone(), certificates)))
        }
        None => (None, None),
    };
    // Before the ready line: a SIGHUP sent once it is out never ends the process.
    reload_on_hangup(certificates)?;
    let gateway = Gateway {
        engine: engine.clone(),
        config: GatewayConfig {
            public_url: settings.public_url.clone(),
            trusted_proxies: settings.trusted_proxies.clone().into(),
            listen: local,
            login_timeout: Duration::from_secs(settings.login_timeout_secs),
            read_timeout: Duration::from_secs(settings.read_timeout_secs),
            http_header_timeout: Duration::from_secs(settings.http_header_timeout_secs),
            http_idle_timeout: Duration::from_secs(settings.http_idle_timeout_secs),
            frame_bytes,
            metrics_token: settings.metrics_token.clone(),
            tls: tls.is_some(),
        },
    };
    let timeouts =
        HttpTimeouts { header: gateway.config.http_header_timeout, idle: gateway.config.http_idle_timeout };
    tracing::info!(
        data_dir = %settings.data_dir.display(),
        store = %settings.store.with_masked_password(),
        apps = settings.apps.len(),
        "confab ready"
    );
    {
        let mut out = std::io::stdout().lock();
        let scheme = if tls.is_some() { "https" } else { "http" };
        writeln!(out, "listening on {scheme}://{local}")?;
        out.flush()?;
    }
    let app = confab_gateway::routes::router(gateway);
    let open = accept_until(listener, app, timeouts, tls, shutdown.wait()).await;
    // HTTP requests in flight and the WebSocket close handshakes share the grace period;
    // HTTP connections still open at its end (a client that never finishes its request)
    // are dropped, so a shutdown always ends.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let ((), dropped) = tokio::join!(drain(&engine, &backend), open.close_by(deadline));
    if dropped > 0 {
        tracing::info!(connections = dropped, "HTTP connections dropped at shutdown");
    }
    // Its sessions ended: stop counting them cluster-wide now, not when the liveness
    // runs out (a client reconnecting to another node would find its tag held).
    if let Some(cluster) = &cluster {
        cluster.leave().await;
    }
    Ok(())
}

/// The TLS side of the port: the certificate of `files` (loaded again: the files may
/// have changed since the settings were checked), replaceable by [`reload_on_hangup`].
fn serve_tls(
    files: &confab_config::TlsFiles,
    settings: &Settings,
) -> anyhow::Result<(TlsListener, Arc<Certificates>)> {
    let key = files.load()?;
    if settings.public_url.as_deref().is_some_and(|url| url.starts_with("http://")) {
        tracing::warn!(
            "public_url is http:// but the port speaks TLS only: the router hands out ws:// \
             (fine only behind a proxy that reaches this port with TLS)"
        );
    }
    let certificates = Certificates::new(key);
    let provider = Arc::new(confab_config::tls::provider());
    let timeout = Duration::from_millis(settings.tls_handshake_timeout_ms);
    let listener = TlsListener::new(Arc::clone(&certificates), provider, timeout)
        .map_err(|e| anyhow::anyhow!("setting up TLS: {e}"))?;
    tracing::info!(cert = %files.cert.display(), "TLS on: the port speaks https:// and wss:// only");
    Ok((listener, certificates))
}

/// Handles SIGHUP from now on: with TLS, loads the certificate and key files again and
/// makes them the certificate of new handshakes (open connections keep theirs); files
/// that do not load are logged and the previous certificate stays. Without TLS there is
/// nothing to reload: the signal is logged, and never ends the process (its default),
/// so `systemctl reload` is harmless either way.
fn reload_on_hangup(tls: Option<(confab_config::TlsFiles, Arc<Certificates>)>) -> anyhow::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("installing the SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some((files, certificates)) = &tls else {
                tracing::info!("SIGHUP: nothing to reload (no tls_cert)");
                continue;
            };
            // A file read: off the async workers.
            let reading = files.clone();
            match tokio::task::spawn_blocking(move || reading.load()).await {
                Ok(Ok(key)) => {
                    certificates.replace(key);
                    tracing::info!(
                        cert = %files.cert.display(),
                        key = %files.key.display(),
                        "SIGHUP: TLS certificate reloaded; new connections get it"
                    );
                }
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded, still serving the previous one"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded (the reload failed), still serving the previous one"
                ),
            }
        }
    });
    Ok(())
}

/// How long a shutdown waits for clients to answer their Close frames and for HTTP
/// requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// After the listener stopped: closes every session with 1001 (clients reconnect, to
/// this server after its restart or to another), waits a moment for the close
/// handshakes, then writes what the store still buffers (delivery cursors). A WebSocket
/// dropped without its Close frame shows as a reset to the client, and buffered cursors
/// left unwritten would redeliver messages after the restart.
async fn drain(engine: &Engine, store: &Backend) {
    let live = engine.live_connections();
    engine.close_all(&ProtocolError::new(ErrorCode::ServerShutdown, "the server is shutting down"));
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while engine.live_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "flushing the store at shutdown");
    }
    tracing::info!(connections = live, left_open = engine.live_connections(), "shut down");
}

/// SIGTERM or SIGINT, however early it comes: the handlers are registered when this is
/// made (before the ready line), and every clone sees a signal that arrived before it
/// was awaited. (A `tokio::signal` stream made later misses a signal delivered between
/// an earlier stream's drop and its own creation: a stop right after start was lost.)
#[derive(Clone)]
struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    fn listen() -> anyhow::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! { _ = term.recv() => {}, _ = interrupt.recv() => {} }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    /// Resolves once a stop was asked for.
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
