//! `confab pull`: downloads an app's IM data from LeanCloud's REST API (or Confab's,
//! which serves the same endpoints) into the export directory of [`crate::layout`].
//!
//! 1. The classes `_Conversation`, `_ConversationMemberInfo` and `_SysMessage` through
//!    the scan API (`GET /1.1/scan/classes/{class}`, cursor paging, master key), one
//!    JSON object per line.
//! 2. For each conversation row, in file order: a normal conversation's or chat room's
//!    history (`GET /1.2/rtm/{conversations|chatrooms}/{id}/messages`, newest first,
//!    1000 a page, each next page starting at the page's last record's `timestamp` +
//!    `msgid`, that record included and dropped again) into
//!    `messages/<id>.json`; a service conversation's subscribers
//!    (`GET /1.2/rtm/service-conversations/{id}/subscribers`, 50 a page after the last
//!    `client_id`) into `subscribers/<id>.json`.
//! 3. With `--service-history`, each service conversation's messages, read through every
//!    subscriber's history, into `messages/<id>.json` (see `service_history`).
//! 4. With `--files`, every message file on a file domain into `files/<host>/<path>`.
//!
//! **Resumable**: files are written as `.part` and renamed when complete, and
//! `.pull-state.json` records after every page where each step stands; running the
//! same command again continues from there. **Throttled**: at most `rate` requests a
//! second; a 429 waits a minute (LeanCloud's quota window), other transient failures
//! back off and retry, and after `retries` of them the run stops (resumable). A 401 or
//! 403 from the API (a wrong app id or master key) stops the run at once.
//! **Progress**: on a terminal a bar redrawn in place; otherwise a line every 2 s.
//! **`--since`**: only rows updated (conversations: or with a last message) since then,
//! and only the history after it: the final delta at cutover, into a new directory.

use crate::files::{FileDomains, file_url, local_path};
use crate::layout;
use crate::lean::{date_ms, valid_conversation_id};
use crate::read::{Line, Lines};
use confab_httpc::{Client, ClientConfig, StatusCode};
use confab_types::time::iso8601;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt::Display;
use std::io::{BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The state file in the output directory.
pub const STATE_FILE: &str = ".pull-state.json";
/// History records per request (LeanCloud's maximum).
const HISTORY_PAGE: usize = 1000;
/// Rows per scan request (LeanCloud's maximum).
const SCAN_PAGE: usize = 1000;
/// Subscribers per request (LeanCloud's maximum).
const SUBSCRIBER_PAGE: usize = 50;
/// A progress line at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// The progress bar is redrawn at most this often.
const BAR_EVERY: Duration = Duration::from_millis(200);
/// How long a 429 waits: LeanCloud refuses for the rest of the minute.
pub const RATE_LIMITED_WAIT: Duration = Duration::from_secs(60);
/// The first retry of another transient failure waits twice this, each next one
/// twice as long, up to a minute.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between retries of a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Transient failures of one file download before it is given up.
const FILE_RETRIES: u32 = 2;
/// Largest `_Conversation` line read back for the history step.
const MAX_ROW_BYTES: usize = 16 * 1024 * 1024;

/// How a pull runs.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The API's base URL (`https://API_HOST`).
    pub from: String,
    /// The app id.
    pub app_id: String,
    /// The app's master key.
    pub master_key: String,
    /// The output directory.
    pub out: PathBuf,
    /// Only what changed since then (ms).
    pub since: Option<i64>,
    /// Download message files.
    pub files: bool,
    /// Which URLs are message files to download.
    pub file_domains: FileDomains,
    /// Requests per second, at most.
    pub rate: f64,
    /// Transient failures of one request before the run stops.
    pub retries: u32,
    /// Deadline of one request.
    pub timeout: Duration,
    /// Largest file downloaded; larger ones are reported and left out.
    pub max_file_bytes: usize,
    /// Largest API response accepted.
    pub max_response_bytes: usize,
    /// How long a 429 waits before the retry ([`RATE_LIMITED_WAIT`]; shorter only in
    /// tests, through `confab pull`'s hidden `--rate-limited-wait-ms`).
    pub rate_limited_wait: Duration,
    /// The unit of the backoff of other transient failures ([`BACKOFF`]; shorter only
    /// in tests, through the hidden `--backoff-ms`).
    pub backoff: Duration,
    /// Also every subscriber's history of each service conversation (broadcasts and
    /// targeted messages): one request series per subscriber.
    pub service_history: bool,
    /// Progress as a bar redrawn in place (`log` is a terminal) rather than a line
    /// every 2 s.
    pub bar: bool,
}

impl PullOptions {
    /// Options with the defaults for everything but the source and the output.
    pub fn new(from: &str, app_id: &str, master_key: &str, out: &Path) -> PullOptions {
        PullOptions {
            from: from.to_owned(),
            app_id: app_id.to_owned(),
            master_key: master_key.to_owned(),
            out: out.to_owned(),
            since: None,
            files: false,
            file_domains: FileDomains::new(&[]),
            rate: 10.0,
            retries: 8,
            timeout: Duration::from_secs(60),
            max_file_bytes: 64 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            rate_limited_wait: RATE_LIMITED_WAIT,
            backoff: BACKOFF,
            bar: false,
            service_history: false,
        }
    }
}

/// What a pull wrote (this run and the runs it continued, as far as the state file
/// remembers).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// `_Conversation` rows.
    pub conversations: u64,
    /// `_ConversationMemberInfo` rows.
    pub member_infos: u64,
    /// `_SysMessage` rows.
    pub sys_messages: u64,
    /// Conversations whose history was fetched.
    pub histories: u64,
    /// History records.
    pub messages: u64,
    /// Service conversations whose subscribers were fetched.
    pub subscriber_lists: u64,
    /// Subscribers.
    pub subscribers: u64,
    /// Service conversations whose history was fetched (`--service-history`).
    #[serde(default)]
    pub service_histories: u64,
    /// Their messages (broadcasts and targeted messages), each once.
    #[serde(default)]
    pub service_messages: u64,
    /// Files downloaded.
    pub files: u64,
    /// Files already there.
    pub files_present: u64,
    /// Files or histories that could not be fetched (each on the log).
    pub failed: u64,
    /// HTTP requests made by this run.
    pub requests: u64,
}

/// Why a pull stopped. Running the same command again continues.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// A file of the output directory.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API refused the app id or the master key (401 or 403): retrying cannot help.
    #[error(
        "{what}: {source}: the API refused the app id or master key; check --app-id and \
         --master-key (the master key, not the app key)"
    )]
    Auth {
        /// The request.
        what: String,
        /// The refusal.
        source: confab_httpc::Error,
    },
    /// The API refused or failed for good.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// Why.
        source: confab_httpc::Error,
    },
    /// The API answered something else than the documented shape.
    #[error("{what}: unexpected answer: {detail}")]
    Shape {
        /// The request.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The directory holds another pull, or other files.
    #[error("{0}")]
    Directory(String),
    /// The options are wrong.
    #[error("{0}")]
    Options(String),
}

impl PullError {
    /// Whether running the same command again may get further (not for wrong keys or
    /// options, or a directory holding something else).
    pub fn resumable(&self) -> bool {
        matches!(self, PullError::Io { .. } | PullError::Http { .. } | PullError::Shape { .. })
    }
}

/// Where a pull stands, saved after every page.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    from: String,
    app_id: String,
    since: Option<i64>,
    /// Classes completely written.
    classes_done: Vec<String>,
    /// The class being scanned: its name, the next cursor and the bytes written.
    scanning: Option<Partial>,
    /// `_Conversation.jsonl` lines whose history and subscribers are complete.
    rows_done: u64,
    /// The conversation being fetched.
    fetching: Option<Partial>,
    done: bool,
    report: PullReport,
}

/// A file being written: where the next page starts and how much of the `.part` file
/// is good.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Partial {
    name: String,
    /// The next page's start: a scan cursor, a `timestamp:msgid`, a subscriber id.
    next: Option<String>,
    bytes: u64,
    items: u64,
    /// History: the ids already written whose timestamp is the next page's start (the
    /// page repeats them; see [`Paging`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<String>,
}

/// At most `rate` requests a second: each request takes the next slot, `1/rate` after
/// the one before (or now, when that has passed).
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    next: Option<Instant>,
}

impl Throttle {
    fn new(rate: f64) -> Throttle {
        Throttle { interval: Duration::from_secs_f64(1.0 / rate), next: None }
    }

    /// Takes the next slot for a request made at `now`: how long it waits for it.
    fn slot(&mut self, now: Instant) -> Duration {
        let slot = self.next.map_or(now, |n| n.max(now));
        self.next = Some(slot + self.interval);
        slot - now
    }
}

/// Percent-encodes a query parameter value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io { path: path.to_owned(), source }
}

/// Runs (or continues) a pull, logging progress and failures to `log`.
pub async fn pull(opts: &PullOptions, log: &mut dyn Write) -> Result<PullReport, PullError> {
    let mut from = opts.from.trim_end_matches('/').to_owned();
    if !from.starts_with("http://") && !from.starts_with("https://") {
        from = format!("https://{from}");
    }
    if !(opts.rate > 0.0 && opts.rate.is_finite()) {
        return Err(PullError::Options("--rate must be a positive number of requests per second".into()));
    }
    let client = Client::new(ClientConfig {
        timeout: opts.timeout,
        max_response_bytes: opts.max_response_bytes,
        ..ClientConfig::default()
    })
    .map_err(|source| PullError::Http { what: "HTTP client".into(), source })?;
    std::fs::create_dir_all(&opts.out).map_err(io_error(&opts.out))?;
    let state = load_state(opts, &from)?;
    let mut run = Puller {
        opts,
        from,
        client,
        log,
        state,
        throttle: Throttle::new(opts.rate),
        last_progress: (!opts.bar).then(Instant::now),
        bar_shown: false,
        history_started: None,
        requests: 0,
    };
    if run.state.done {
        run.say("the directory holds a complete pull; nothing to do");
        return Ok(run.state.report.clone());
    }
    for class in [layout::CONVERSATIONS, layout::MEMBER_INFOS, layout::SYS_MESSAGES] {
        run.scan_class(class).await?;
    }
    run.conversations().await?;
    run.clear_bar();
    run.state.done = true;
    run.state.report.requests = run.requests;
    run.save()?;
    Ok(run.state.report.clone())
}

/// Reads the state of a pull in `opts.out`, or starts one in an empty directory.
fn load_state(opts: &PullOptions, from: &str) -> Result<State, PullError> {
    let path = opts.out.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let state: State = serde_json::from_slice(&bytes)
                .map_err(|e| PullError::Directory(format!("{}: unreadable ({e})", path.display())))?;
            if state.from != from || state.app_id != opts.app_id || state.since != opts.since {
                return Err(PullError::Directory(format!(
                    "{} holds a pull from {} (app {}, since {:?}); use another directory",
                    opts.out.display(),
                    state.from,
                    state.app_id,
                    state.since
                )));
            }
            Ok(state)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut entries = std::fs::read_dir(&opts.out).map_err(io_error(&opts.out))?;
            if entries.next().is_some() {
                return Err(PullError::Directory(format!(
                    "{} is not empty and holds no pull; pull into a new directory",
                    opts.out.display()
                )));
            }
            Ok(State {
                from: from.to_owned(),
                app_id: opts.app_id.clone(),
                since: opts.since,
                ..State::default()
            })
        }
        Err(e) => Err(PullError::Io { path, source: e }),
    }
}

struct Puller<'a> {
    opts: &'a PullOptions,
    from: String,
    client: Client,
    log: &'a mut dyn Write,
    state: State,
    throttle: Throttle,
    /// When progress was last shown (on a terminal, the first of each step at once).
    last_progress: Option<Instant>,
    /// A progress bar is on the terminal's last line (cleared before other output).
    bar_shown: bool,
    /// When this run's history step started, and the conversations and messages done
    /// then.
    history_started: Option<(Instant, u64, u64)>,
    requests: u64,
}

impl Drop for Puller<'_> {
    /// Whatever ends the run, what comes next on the terminal starts on a clean line.
    fn drop(&mut self) {
        self.clear_bar();
    }
}

/// A `.part` file being appended to.
struct PartFile {
    file: std::fs::File,
    path: PathBuf,
    bytes: u64,
}

impl PartFile {
    /// Opens `final_path`'s `.part`, keeping its first `keep` bytes (what the state says
    /// was written) and dropping any tail a crash left.
    fn open(final_path: &Path, keep: u64) -> Result<PartFile, PullError> {
        let mut name = final_path.as_os_str().to_owned();
        name.push(".part");
        let path = PathBuf::from(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        if len < keep {
            return Err(PullError::Directory(format!(
                "{} is shorter than the state says ({len} < {keep} bytes); remove it and {STATE_FILE} to start over",
                path.display()
            )));
        }
        file.set_len(keep).map_err(io_error(&path))?;
        file.seek(std::io::SeekFrom::End(0)).map_err(io_error(&path))?;
        Ok(PartFile { file, path, bytes: keep })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PullError> {
        self.file.write_all(bytes).map_err(io_error(&self.path))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Makes what was written durable (before the state says so).
    fn sync(&mut self) -> Result<(), PullError> {
        self.file.sync_data().map_err(io_error(&self.path))
    }

    /// Renames the `.part` to its final name.
    fn finish(mut self, final_path: &Path) -> Result<(), PullError> {
        self.sync()?;
        std::fs::rename(&self.path, final_path).map_err(io_error(final_path))
    }
}

/// How a request failed for good.
enum Fetch {
    /// The API said no to this request (4xx other than 401/429): skip what it was for.
    Refused(String),
    /// Stop the run.
    Fatal(PullError),
}

impl From<PullError> for Fetch {
    fn from(e: PullError) -> Fetch {
        Fetch::Fatal(e)
    }
}

impl<'a> Puller<'a> {
    fn say(&mut self, line: impl Display) {
        self.clear_bar();
        let _ = writeln!(self.log, "pull: {line}");
    }

    /// Takes the progress bar off the terminal's last line.
    fn clear_bar(&mut self) {
        if self.bar_shown {
            let _ = write!(self.log, "\r\x1b[K");
            self.bar_shown = false;
        }
    }

    /// Shows `text`: redrawn in place on a terminal (at most every 200 ms), else as a
    /// line at most every 2 s.
    fn progress(&mut self, text: impl FnOnce(&Self) -> String) {
        let every = if self.opts.bar { BAR_EVERY } else { PROGRESS_EVERY };
        if self.last_progress.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last_progress = Some(Instant::now());
        let line = text(self);
        if self.opts.bar {
            let _ = write!(self.log, "\r{line}\x1b[K");
            let _ = self.log.flush();
            self.bar_shown = true;
        } else {
            self.say(line);
        }
    }

    /// The history step's progress: conversations done of the scan's total, messages,
    /// and on a terminal the rate and the time left at this run's pace.
    fn history_progress(&mut self) {
        self.progress(|run| {
            let (done, total, messages) =
                (run.state.rows_done, run.state.report.conversations, run.state.report.messages);
            match run.history_started {
                Some((at, done_then, messages_then)) if run.opts.bar => bar_line(
                    (done, total),
                    messages,
                    at.elapsed(),
                    (done - done_then, messages - messages_then),
                ),
                _ => format!("histories: {done}/{total} conversations, {messages} messages"),
            }
        });
    }

    fn save(&self) -> Result<(), PullError> {
        let path = self.opts.out.join(STATE_FILE);
        let tmp = self.opts.out.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| PullError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        std::fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    /// Waits for the next request slot of the rate limit.
    async fn throttle(&mut self) {
        let wait = self.throttle.slot(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.requests += 1;
    }

    /// GETs `url` (the master key for API calls), retrying transient failures.
    async fn get(&mut self, url: &str, api: bool, max_bytes: usize) -> Result<confab_httpc::Response, Fetch> {
        // A file host that is down costs each file a few tries, not the API's patience.
        let retries = if api { self.opts.retries } else { self.opts.retries.min(FILE_RETRIES) };
        let mut failures = 0u32;
        loop {
            self.throttle().await;
            let mut request = self.client.get(url).max_response_bytes(max_bytes);
            if api {
                let key = format!("{},master", self.opts.master_key);
                request = request.header("X-LC-Id", &self.opts.app_id).header("X-LC-Key", &key);
            }
            let outcome = request.send().await.and_then(|r| r.error_for_status());
            let error = match outcome {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let what = url.split('?').next().unwrap_or(url).to_owned();
            if let confab_httpc::Error::Status { status, .. } = &error {
                // Wrong keys stop the run; a file host's refusal costs only that file.
                if api && (*status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN) {
                    return Err(Fetch::Fatal(PullError::Auth { what, source: error }));
                }
                if status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS {
                    return Err(Fetch::Refused(format!("{what}: {error}")));
                }
            }
            if let confab_httpc::Error::BodyTooLarge { .. } = &error {
                return Err(Fetch::Refused(format!("{what}: {error}")));
            }
            failures += 1;
            if !error.is_transient() || failures > retries {
                return Err(Fetch::Fatal(PullError::Http { what, source: error }));
            }
            let wait = match &error {
                confab_httpc::Error::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                    self.opts.rate_limited_wait
                }
                _ => (self.opts.backoff * (1 << failures.min(6))).min(MAX_BACKOFF),
            };
            self.say(format!("{what}: {error}; retry {failures} of {retries} in {wait:?}"));
            tokio::time::sleep(wait).await;
        }
    }

    async fn get_json(&mut self, url: &str) -> Result<Value, Fetch> {
        let response = self.get(url, true, self.opts.max_response_bytes).await?;
        response.json::<Value>().map_err(|source| {
            Fetch::Fatal(PullError::Http { what: url.split('?').next().unwrap_or(url).to_owned(), source })
        })
    }

    fn since_where(&self, class: &str) -> Option<Value> {
        let since = self.opts.since?;
        let date = json!({"__type": "Date", "iso": iso8601(since)});
        Some(if class == layout::CONVERSATIONS {
            json!({"$or": [{"updatedAt": {"$gte": date}}, {"lm": {"$gte": date}}]})
        } else {
            json!({"updatedAt": {"$gte": date}})
        })
    }

    // ---- classes -------------------------------------------------------------------

    async fn scan_class(&mut self, file: &str) -> Result<(), PullError> {
        if self.state.classes_done.iter().any(|c| c == file) {
            return Ok(());
        }
        let class = file.trim_end_matches(".jsonl");
        let final_path = self.opts.out.join(file);
        let resume = self.state.scanning.clone().filter(|p| p.name == file);
        let (mut cursor, keep, mut rows) = match &resume {
            Some(p) => (p.next.clone(), p.bytes, p.items),
            None => (None, 0, 0),
        };
        if resume.is_some() {
            self.say(format!("{class}: continuing after {rows} rows"));
        } else {
            self.say(format!("{class}: scanning"));
        }
        let mut part = PartFile::open(&final_path, keep)?;
        let filter =
            self.since_where(file).map(|w| format!("&where={}", encode(&w.to_string()))).unwrap_or_default();
        let mut restarted = false;
        loop {
            let mut url = format!("{}/1.1/scan/classes/{class}?limit={SCAN_PAGE}{filter}", self.from);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={}", encode(c)));
            }
            let page = match self.get_json(&url).await {
                Ok(page) => page,
                // A scan cursor lives 10 minutes: an old one is refused; scan again.
                Err(Fetch::Refused(why)) if cursor.is_some() && !restarted => {
                    self.say(format!(
                        "{class}: the saved cursor was refused ({why}); scanning from the start"
                    ));
                    restarted = true;
                    part = PartFile::open(&final_path, 0)?;
                    (cursor, rows) = (None, 0);
                    continue;
                }
                // A class that was never created (an app without service conversations
                // has no _SysMessage) is refused: an empty file. Conversations are not
                // optional.
                Err(Fetch::Refused(why)) if cursor.is_none() && file != layout::CONVERSATIONS => {
                    self.say(format!("{class}: not available ({why}); written empty"));
                    break;
                }
                Err(Fetch::Refused(why)) => {
                    return Err(PullError::Shape { what: format!("scan {class}"), detail: why });
                }
                Err(Fetch::Fatal(e)) => return Err(e),
            };
            let Some(results) = page.get("results").and_then(Value::as_array) else {
                return Err(PullError::Shape { what: format!("scan {class}"), detail: "no results".into() });
            };
            for row in results {
                part.write(format!("{row}\n").as_bytes())?;
            }
            rows += results.len() as u64;
            cursor = page.get("cursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_owned);
            part.sync()?;
            self.state.scanning = Some(Partial {
                name: file.to_owned(),
                next: cursor.clone(),
                bytes: part.bytes,
                items: rows,
                ..Partial::default()
            });
            self.save()?;
            self.progress(|_| format!("{class}: {rows} rows"));
            if cursor.is_none() {
                break;
            }
        }
        part.finish(&final_path)?;
        match file {
            layout::CONVERSATIONS => self.state.report.conversations = rows,
            layout::MEMBER_INFOS => self.state.report.member_infos = rows,
            _ => self.state.report.sys_messages = rows,
        }
        self.state.scanning = None;
        self.state.classes_done.push(file.to_owned());
        self.save()?;
        self.say(format!("{class}: {rows} rows"));
        Ok(())
    }

    // ---- histories and subscribers -------------------------------------------------

    async fn conversations(&mut self) -> Result<(), PullError> {
        let path = self.opts.out.join(layout::CONVERSATIONS);
        let file = std::fs::File::open(&path).map_err(io_error(&path))?;
        let mut lines = Lines::new(BufReader::new(file), MAX_ROW_BYTES);
        let total = self.state.report.conversations;
        if self.state.rows_done > 0 {
            self.say(format!(
                "histories: continuing after {} of {total} conversations",
                self.state.rows_done
            ));
        } else {
            self.say(format!("histories of {total} conversations"));
        }
        self.history_started = Some((Instant::now(), self.state.rows_done, self.state.report.messages));
        if self.opts.bar {
            self.last_progress = None;
        }
        while let Some(line) = lines.next_line().map_err(io_error(&path))? {
            if lines.number <= self.state.rows_done {
                continue;
            }
            let row = match line {
                Line::Text(t) => serde_json::from_slice::<Value>(&t).ok(),
                Line::TooLong(_) => None,
            };
            if let Some(row) = row {
                self.conversation(&row).await?;
            }
            self.state.rows_done = lines.number;
            self.state.fetching = None;
            self.save()?;
            self.history_progress();
        }
        self.clear_bar();
        Ok(())
    }

    async fn conversation(&mut self, row: &Value) -> Result<(), PullError> {
        let Some(cid) = row.get("objectId").and_then(Value::as_str).filter(|c| valid_conversation_id(c))
        else {
            return Ok(());
        };
        let flag = |k: &str| row.get(k).and_then(Value::as_bool) == Some(true);
        if flag("temp") {
            return Ok(());
        }
        if flag("sys") {
            // Continuing in its history: the subscribers are written.
            let in_history = self.state.fetching.as_ref().is_some_and(|p| p.name == service_marker(cid));
            if !in_history {
                self.subscribers(cid).await?;
            }
            if self.opts.service_history {
                self.service_history(cid).await?;
            }
            return Ok(());
        }
        // A delta needs no history of a conversation without a message since then.
        if let Some(since) = self.opts.since
            && row.get("lm").and_then(date_ms).is_some_and(|lm| lm < since)
        {
            return Ok(());
        }
        let family = if flag("tr") { "chatrooms" } else { "conversations" };
        self.history(cid, family).await
    }

    async fn history(&mut self, cid: &str, family: &str) -> Result<(), PullError> {
        let final_path = self.opts.out.join(layout::MESSAGES_DIR).join(format!("{cid}.json"));
        let resume = self.state.fetching.clone().filter(|p| p.name == cid);
        if resume.is_some() && final_path.exists() {
            // Complete and renamed; stopped before the state said so.
            return Ok(());
        }
        let (mut paging, keep, mut count) = match &resume {
            Some(p) => (Paging::resume(p.next.as_deref(), &p.seen), p.bytes, p.items),
            None => (Paging::default(), 0, 0),
        };
        let mut part = PartFile::open(&final_path, keep)?;
        if keep == 0 {
            part.write(b"[")?;
        }
        let stop =
            self.opts.since.map(|s| format!("&till_timestamp={s}&include_stop=true")).unwrap_or_default();
        loop {
            let url = format!(
                "{}/1.2/rtm/{family}/{}/messages?limit={HISTORY_PAGE}{stop}{}",
                self.from,
                encode(cid),
                paging.query()
            );
            let page = match self.get_json(&url).await {
                Ok(page) => page,
                Err(Fetch::Refused(why)) => {
                    // Gone since the scan, or not served: say so and go on.
                    self.state.report.failed += 1;
                    self.say(format!("history of {cid} not fetched: {why}"));
                    drop(part);
                    let _ = std::fs::remove_file(format!("{}.part", final_path.display()));
                    return Ok(());
                }
                Err(Fetch::Fatal(e)) => return Err(e),
            };
            let Some(records) = page.as_array() else {
                return Err(PullError::Shape {
                    what: format!("history of {cid}"),
                    detail: "not a JSON array".into(),
                });
            };
            let (fresh, step) = paging
                .page(records, HISTORY_PAGE)
                .map_err(|detail| PullError::Shape { what: format!("history of {cid}"), detail })?;
            for r in fresh.iter().map(|&i| &records[i]) {
                if count > 0 {
                    part.write(b",\n")?;
                }
                part.write(r.to_string().as_bytes())?;
                count += 1;
                if self.opts.files
                    && let Some(url) = r.get("data").and_then(Value::as_str).and_then(file_url)
                {
                    self.file(&url).await?;
                }
            }
            match step {
                PageStep::Done => break,
                PageStep::Next => {}
                PageStep::PastTie(ts) => self.say(format!(
                    "history of {cid}: a full page of messages at timestamp {ts} came back again; \
                     the server does not page within that millisecond, so its messages not yet \
                     written are skipped"
                )),
            }
            part.sync()?;
            self.state.report.messages += fresh.len() as u64;
            self.state.fetching = Some(Partial {
                name: cid.to_owned(),
                next: paging.start.as_ref().map(|(ts, id)| format!("{ts}:{id}")),
                bytes: part.bytes,
                items: count,
                seen: paging.seen.clone(),
            });
            self.save()?;
            self.history_progress();
        }
        part.write(b"]\n")?;
        part.finish(&final_path)?;
        self.state.report.histories += 1;
        Ok(())
    }

    async fn subscribers(&mut self, cid: &str) -> Result<(), PullError> {
        let final_path = self.opts.out.join(layout::SUBSCRIBERS_DIR).join(format!("{cid}.json"));
        let resume = self.state.fetching.clone().filter(|p| p.name == cid);
        if resume.is_some() && final_path.exists() {
            // Complete and renamed; stopped before the state said so.
            return Ok(());
        }
        let (mut next, keep, mut count) = match &resume {
            Some(p) => (p.next.clone(), p.bytes, p.items),
            None => (None, 0, 0),
        };
        let mut part = PartFile::open(&final_path, keep)?;
        if keep == 0 {
            part.write(b"[")?;
        }
        loop {
            let mut url = format!(
                "{}/1.2/rtm/service-conversations/{}/subscribers?limit={SUBSCRIBER_PAGE}",
                self.from,
                encode(cid)
            );
            if let Some(after) = &next {
                url.push_str(&format!("&client_id={}", encode(after)));
            }
            let page = match self.get_json(&url).await {
                Ok(page) => page,
                Err(Fetch::Refused(why)) => {
                    self.state.report.failed += 1;
                    self.say(format!("subscribers of {cid} not fetched: {why}"));
                    drop(part);
                    let _ = std::fs::remove_file(format!("{}.part", final_path.display()));
                    return Ok(());
                }
                Err(Fetch::Fatal(e)) => return Err(e),
            };
            // An array, or `{"results": […]}`.
            let list = page.as_array().or_else(|| page.get("results").and_then(Value::as_array));
            let Some(list) = list else {
                return Err(PullError::Shape {
                    what: format!("subscribers of {cid}"),
                    detail: "not a list".into(),
                });
            };
            let last =
                list.last().and_then(|s| s.get("subscriber")).and_then(Value::as_str).map(str::to_owned);
            for s in list {
                if count > 0 {
                    part.write(b",\n")?;
                }
                part.write(s.to_string().as_bytes())?;
                count += 1;
            }
            self.state.report.subscribers += list.len() as u64;
            match last {
                Some(last) if next.as_deref() != Some(last.as_str()) => next = Some(last),
                _ => break,
            }
            part.sync()?;
            self.state.fetching = Some(Partial {
                name: cid.to_owned(),
                next: next.clone(),
                bytes: part.bytes,
                items: count,
                ..Partial::default()
            });
            self.save()?;
        }
        part.write(b"]\n")?;
        part.finish(&final_path)?;
        self.state.report.subscriber_lists += 1;
        Ok(())
    }

    /// `--service-history`: every subscriber's history of service conversation `cid`
    /// (`GET /1.2/rtm/service-conversations/{cid}/subscribers/{client}/messages`, paged
    /// as a conversation's), one record per `msg-id`, into `messages/<cid>.json`. A
    /// record that names its recipients (`to-clients`, as Confab's do) keeps them; one
    /// every subscriber read had is a broadcast; any other is targeted, and gets
    /// `to-clients`: the subscribers whose history held it. Held in memory until the
    /// conversation is done; an interruption fetches this conversation's again.
    async fn service_history(&mut self, cid: &str) -> Result<(), PullError> {
        let list = self.opts.out.join(layout::SUBSCRIBERS_DIR).join(format!("{cid}.json"));
        let Ok(bytes) = std::fs::read(&list) else { return Ok(()) };
        let subscribers: Vec<String> = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(list)) => {
                list.into_iter().filter_map(|v| crate::lean::subscriber(v).ok()).collect()
            }
            _ => return Err(PullError::Directory(format!("{}: not a JSON array", list.display()))),
        };
        self.state.fetching = Some(Partial { name: service_marker(cid), ..Partial::default() });
        self.save()?;
        let stop =
            self.opts.since.map(|s| format!("&till_timestamp={s}&include_stop=true")).unwrap_or_default();
        // msg-id → the record and who had it, in the order first seen.
        let mut records: Vec<(Value, Vec<String>)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut read = 0usize;
        'subscribers: for client in &subscribers {
            let mut paging = Paging::default();
            loop {
                let url = format!(
                    "{}/1.2/rtm/service-conversations/{}/subscribers/{}/messages?limit={HISTORY_PAGE}{stop}{}",
                    self.from,
                    encode(cid),
                    encode(client),
                    paging.query()
                );
                let page = match self.get_json(&url).await {
                    Ok(page) => page,
                    Err(Fetch::Refused(why)) => {
                        // Left out of the count of readers too, so broadcasts stay broadcasts.
                        self.state.report.failed += 1;
                        self.say(format!("history of {cid} for subscriber {client} not fetched: {why}"));
                        continue 'subscribers;
                    }
                    Err(Fetch::Fatal(e)) => return Err(e),
                };
                let Some(page) = page.as_array() else {
                    return Err(PullError::Shape {
                        what: format!("history of {cid} for {client}"),
                        detail: "not a JSON array".into(),
                    });
                };
                let (fresh, step) = paging.page(page, HISTORY_PAGE).map_err(|detail| PullError::Shape {
                    what: format!("history of {cid} for {client}"),
                    detail,
                })?;
                for r in fresh.iter().map(|&i| &page[i]) {
                    let Some(id) = r.get("msg-id").and_then(Value::as_str) else { continue };
                    match index.get(id) {
                        Some(&at) => records[at].1.push(client.clone()),
                        None => {
                            index.insert(id.to_owned(), records.len());
                            records.push((r.clone(), vec![client.clone()]));
                            if self.opts.files
                                && let Some(url) = r.get("data").and_then(Value::as_str).and_then(file_url)
                            {
                                self.file(&url).await?;
                            }
                        }
                    }
                }
                match step {
                    PageStep::Done => break,
                    PageStep::Next => {}
                    PageStep::PastTie(ts) => self.say(format!(
                        "history of {cid} for {client}: a full page at timestamp {ts} came back again; \
                         the rest of that millisecond is skipped"
                    )),
                }
                self.history_progress();
            }
            read += 1;
        }
        let final_path = self.opts.out.join(layout::MESSAGES_DIR).join(format!("{cid}.json"));
        let mut part = PartFile::open(&final_path, 0)?;
        part.write(b"[")?;
        for (i, (mut record, mut had)) in records.into_iter().enumerate() {
            if i > 0 {
                part.write(b",\n")?;
            }
            if record.get("to-clients").is_none() && had.len() < read {
                had.sort();
                had.dedup();
                record["to-clients"] = json!(had);
            }
            part.write(record.to_string().as_bytes())?;
            self.state.report.service_messages += 1;
        }
        part.write(b"]\n")?;
        part.finish(&final_path)?;
        self.state.report.service_histories += 1;
        Ok(())
    }

    // ---- files ---------------------------------------------------------------------

    async fn file(&mut self, url: &str) -> Result<(), PullError> {
        let Some(relative) = local_path(url, &self.opts.file_domains) else { return Ok(()) };
        let target = self.opts.out.join(layout::FILES_DIR).join(&relative);
        if target.exists() {
            self.state.report.files_present += 1;
            return Ok(());
        }
        let body = match self.get(url, false, self.opts.max_file_bytes).await {
            Ok(r) => r.into_body(),
            Err(Fetch::Refused(why)) => {
                self.state.report.failed += 1;
                self.say(format!("file {url} not downloaded: {why}"));
                return Ok(());
            }
            Err(Fetch::Fatal(PullError::Http { source, .. })) => {
                // A file host that keeps failing costs the file, not the pull.
                self.state.report.failed += 1;
                self.say(format!("file {url} not downloaded: {source}"));
                return Ok(());
            }
            Err(Fetch::Fatal(e)) => return Err(e),
        };
        let mut part = PartFile::open(&target, 0)?;
        part.write(&body)?;
        part.finish(&target)?;
        self.state.report.files += 1;
        Ok(())
    }
}

/// The state's name for the history step of service conversation `cid`.
fn service_marker(cid: &str) -> String {
    format!("{cid}#history")
}

/// How the next history page is asked for, and which records of a page are new.
///
/// LeanCloud pages a conversation's history newest first from a start `timestamp` +
/// `msgid` (§2.4; the id tells apart messages of the same millisecond). Each next page
/// starts at the last record of the page before (§2.5), in the server's order, not at
/// the smallest (`timestamp`, `msg-id`) on it: within a millisecond the server's order
/// need not be the ids' order. The start is asked for with `include_start=true`, and
/// the records already written that carry the start's timestamp (`seen`) are dropped
/// from the answer: a server that honours `msgid` repeats only the start record, one
/// that pages by timestamp alone repeats the whole millisecond, and either way nothing
/// is lost or written twice. A page with nothing new ends the history. Should a full
/// page be nothing but repeats (a server that ignores `msgid`, with more messages in
/// one millisecond than a page holds), the next request excludes the start
/// ([`PageStep::PastTie`]) rather than asking for the same page forever.
#[derive(Debug, Default, Clone, PartialEq)]
struct Paging {
    /// The next page's start, after the first page.
    start: Option<(i64, String)>,
    /// Ids written whose timestamp is the start's.
    seen: Vec<String>,
    /// The next request excludes the start.
    exclusive: bool,
}

/// What follows a history page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageStep {
    /// Ask for the next page.
    Next,
    /// The history is complete.
    Done,
    /// A full page repeated the records of this millisecond: the next page excludes it.
    PastTie(i64),
}

impl Paging {
    /// Paging continued from a saved `timestamp:msgid` and its `seen` ids.
    fn resume(next: Option<&str>, seen: &[String]) -> Paging {
        let start =
            next.and_then(|n| n.split_once(':')).and_then(|(ts, id)| Some((ts.parse().ok()?, id.to_owned())));
        Paging { start, seen: seen.to_vec(), exclusive: false }
    }

    /// The query parameters of the next page's start.
    fn query(&self) -> String {
        match &self.start {
            None => String::new(),
            Some((ts, id)) => {
                let include = if self.exclusive { "" } else { "&include_start=true" };
                format!("&timestamp={ts}&msgid={}{include}", encode(id))
            }
        }
    }

    /// Takes a page (newest first, at most `limit` records): the indices of the records
    /// not written before, and what follows.
    fn page(&mut self, records: &[Value], limit: usize) -> Result<(Vec<usize>, PageStep), String> {
        let key = |r: &Value| {
            let ts = r.get("timestamp").and_then(Value::as_i64)?;
            let id = r.get("msg-id").and_then(Value::as_str)?;
            Some((ts, id.to_owned()))
        };
        let fresh: Vec<usize> = (0..records.len())
            .filter(|&i| {
                records[i]
                    .get("msg-id")
                    .and_then(Value::as_str)
                    .is_none_or(|id| !self.seen.iter().any(|s| s == id))
            })
            .collect();
        let Some(last) = records.last() else { return Ok((fresh, PageStep::Done)) };
        if fresh.is_empty() {
            if records.len() >= limit && !self.exclusive {
                self.exclusive = true;
                return Ok((fresh, PageStep::PastTie(self.start.as_ref().map_or(0, |s| s.0))));
            }
            return Ok((fresh, PageStep::Done));
        }
        let Some((ts, id)) = key(last) else {
            return Err("records without timestamp and msg-id".into());
        };
        if self.start.as_ref().is_none_or(|s| s.0 != ts) {
            self.seen.clear();
        }
        for r in records {
            if let Some((t, i)) = key(r)
                && t == ts
                && !self.seen.contains(&i)
            {
                self.seen.push(i);
            }
        }
        self.start = Some((ts, id));
        self.exclusive = false;
        Ok((fresh, PageStep::Next))
    }
}

/// The progress bar of the history step: `done` of `total` conversations, `messages`,
/// and this run's pace (`elapsed` for `this_run` conversations and messages): messages a
/// second and the time left.
fn bar_line((done, total): (u64, u64), messages: u64, elapsed: Duration, this_run: (u64, u64)) -> String {
    const WIDTH: u64 = 24;
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '-' }).collect();
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { format!("{:.0} msg/s", this_run.1 as f64 / secs) } else { "-".into() };
    let eta = if this_run.0 > 0 && done <= total {
        let left = secs * (total - done) as f64 / this_run.0 as f64;
        format_duration(Duration::from_secs_f64(left))
    } else {
        "-".into()
    };
    format!("[{bar}] {done}/{total} conversations, {messages} messages, {rate}, ETA {eta}")
}

/// `1h02m`, `4m05s`, `12s`.
fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Parses `--since`: ISO-8601 UTC (`2026-12-01T00:00:00Z`, milliseconds optional) or
/// epoch milliseconds.
pub fn parse_since(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    confab_types::time::parse_iso8601(text)
}

/// Re-reads a finished pull's report from its state file.
pub fn saved_report(out: &Path) -> Option<PullReport> {
    let bytes = std::fs::read(out.join(STATE_FILE)).ok()?;
    serde_json::from_slice::<State>(&bytes).ok().map(|s| s.report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn since_takes_iso_or_milliseconds() {
        assert_eq!(parse_since("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_since("2020-01-01T00:00:00.000Z"), Some(1_577_836_800_000));
        assert_eq!(parse_since("2020-01-01T00:00:00Z"), Some(1_577_836_800_000));
        assert_eq!(parse_since("yesterday"), None);
        assert_eq!(parse_since("-5"), None);
    }

    #[test]
    fn the_throttle_gives_each_request_its_own_slot() {
        // Counted in slots of a made-up clock: no waiting, no wall-clock.
        let t0 = Instant::now();
        let mut t = Throttle::new(4.0);
        let waits: Vec<Duration> = (0..5).map(|_| t.slot(t0)).collect();
        assert_eq!(waits, (0..5).map(|i| Duration::from_millis(250 * i)).collect::<Vec<_>>());
        // Slots passed unused are not saved up for a burst.
        assert_eq!(t.slot(t0 + Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(t.slot(t0 + Duration::from_secs(10)), Duration::from_millis(250));
    }

    fn rec(ts: i64, id: &str) -> Value {
        json!({"timestamp": ts, "msg-id": id})
    }

    #[test]
    fn history_pages_start_at_the_last_record_and_drop_repeats() {
        let mut p = Paging::default();
        assert_eq!(p.query(), "");
        // The last record is the start, whatever the ids' order within a millisecond.
        let (fresh, step) = p.page(&[rec(9, "a"), rec(5, "z"), rec(5, "b")], 3).unwrap();
        assert_eq!((fresh, step), (vec![0, 1, 2], PageStep::Next));
        assert_eq!(p.query(), "&timestamp=5&msgid=b&include_start=true");
        // A server that honours msgid repeats the start only …
        let (fresh, _) = p.page(&[rec(5, "b"), rec(4, "c"), rec(3, "d")], 3).unwrap();
        assert_eq!(fresh, vec![1, 2]);
        assert_eq!((p.start.clone(), p.seen.clone()), (Some((3, "d".into())), vec!["d".to_owned()]));
        // … one that pages by timestamp repeats the millisecond.
        let mut q = Paging::resume(Some("5:b"), &["z".into(), "b".into()]);
        let (fresh, _) = q.page(&[rec(5, "z"), rec(5, "b"), rec(5, "y"), rec(4, "c")], 4).unwrap();
        assert_eq!(fresh, vec![2, 3]);
        // Nothing new: the end.
        let (fresh, step) = p.page(&[rec(3, "d")], 3).unwrap();
        assert_eq!((fresh.len(), step), (0, PageStep::Done));
        let (_, step) = Paging::default().page(&[], 3).unwrap();
        assert_eq!(step, PageStep::Done);
    }

    #[test]
    fn a_full_page_of_repeats_steps_past_the_millisecond() {
        let mut p = Paging::resume(Some("5:b"), &["a".into(), "b".into()]);
        let (fresh, step) = p.page(&[rec(5, "a"), rec(5, "b")], 2).unwrap();
        assert_eq!((fresh.len(), step), (0, PageStep::PastTie(5)));
        assert_eq!(p.query(), "&timestamp=5&msgid=b");
        let (fresh, step) = p.page(&[rec(4, "c")], 2).unwrap();
        assert_eq!((fresh, step), (vec![0], PageStep::Next));
        assert_eq!(p.query(), "&timestamp=4&msgid=c&include_start=true");
        assert!(Paging::default().page(&[json!({"data": "x"})], 2).is_err());
    }

    #[test]
    fn the_progress_bar_shows_share_rate_and_time_left() {
        let line = bar_line((25, 100), 5000, Duration::from_secs(10), (5, 1000));
        assert_eq!(
            line,
            "[######------------------] 25/100 conversations, 5000 messages, 100 msg/s, ETA 2m30s"
        );
        let line = bar_line((0, 0), 0, Duration::ZERO, (0, 0));
        assert_eq!(line, "[########################] 0/0 conversations, 0 messages, -, ETA -");
        assert_eq!(format_duration(Duration::from_secs(3 * 3600 + 7 * 60 + 5)), "3h07m");
        assert_eq!(format_duration(Duration::from_secs(42)), "42s");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode(r#"{"a":1}"#), "%7B%22a%22%3A1%7D");
        assert_eq!(encode("abc-_.~"), "abc-_.~");
    }
}
