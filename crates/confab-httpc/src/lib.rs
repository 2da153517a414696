//! Confab's outbound HTTP/1.1 client.
//!
//! Confab calls other servers in two places: the app's hook backend (LeanEngine-style cloud
//! functions) and, in `confab pull`, LeanCloud's REST API. Both are hostile until bounded, so every
//! request here has
//!
//! - a **timeout** for the whole exchange (connect, TLS, request, and reading the full body), from
//!   [`ClientConfig::timeout`] or per request with [`RequestBuilder::timeout`];
//! - a **response body limit** ([`ClientConfig::max_response_bytes`], per request
//!   [`RequestBuilder::max_response_bytes`]): a larger body ends the request with
//!   [`Error::BodyTooLarge`] without buffering more than the limit.
//!
//! TLS is rustls with the *ring* provider and Mozilla's root certificates compiled in
//! (`webpki-roots`), so the binary depends on neither the OS certificate store nor a C toolchain
//! beyond what ring needs. Extra roots (a private CA in front of a hook backend) can be added as PEM
//! with [`ClientConfig::extra_roots_pem`]. Plain `http://` URLs work too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), confab_httpc::Error> {
//! use confab_httpc::{Client, ClientConfig};
//! use std::time::Duration;
//!
//! let client = Client::new(ClientConfig::default())?;
//! let reply: serde_json::Value = client
//!     .post("https://backend.example.com/1.1/functions/_messageReceived")
//!     .header("X-LC-Id", "app-id")
//!     .json(&serde_json::json!({ "fromPeer": "alice" }))
//!     .timeout(Duration::from_secs(3))
//!     .send_json()
//!     .await?;
//! # let _ = reply; Ok(()) }
//! ```
//!
//! A [`Client`] is cheap to clone (it shares one connection pool) and is meant to be built once and
//! kept.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use hyper::header::{HeaderMap, HeaderName, HeaderValue};
pub use hyper::{Method, StatusCode};

/// How many bytes of a non-2xx body [`Error::Status`] keeps, so an error message stays readable.
const STATUS_BODY_EXCERPT: usize = 512;

/// Settings shared by every request of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Default deadline for a whole request (connect, TLS, send, and reading the full body).
    pub timeout: Duration,
    /// Default largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Sent as `User-Agent` unless the request sets its own.
    pub user_agent: String,
    /// How long an idle pooled connection is kept for reuse.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// PEM certificates trusted in addition to Mozilla's roots (for a private CA). Empty: none.
    pub extra_roots_pem: Vec<u8>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_response_bytes: 16 * 1024 * 1024,
            user_agent: concat!("confab/", env!("CARGO_PKG_VERSION")).to_owned(),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 16,
            extra_roots_pem: Vec::new(),
        }
    }
}

/// What can go wrong with a request. Every variant is a clean outcome: nothing panics and nothing
/// waits past the timeout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse, or its scheme is neither `http` nor `https`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// The TLS setup failed (for example, an unreadable `extra_roots_pem`).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The request body could not be serialised as JSON.
    #[error("request JSON: {0}")]
    EncodeJson(serde_json::Error),
    /// The whole exchange did not finish within the deadline.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made (DNS, refused, TLS handshake).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection broke, or the peer did not speak HTTP/1.1 properly.
    #[error("request: {0}")]
    Request(String),
    /// The response body is larger than the limit.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in force for this request.
        limit: usize,
    },
    /// [`Response::error_for_status`] / [`RequestBuilder::send_json`]: the status is not 2xx.
    #[error("HTTP status {status}: {body_excerpt}")]
    Status {
        /// The status the server answered.
        status: StatusCode,
        /// The start of the body (at most 512 bytes, lossy UTF-8), for the error message.
        body_excerpt: String,
    },
    /// The response body is not the JSON expected.
    #[error("response JSON: {0}")]
    DecodeJson(serde_json::Error),
}

impl Error {
    /// Whether the failure says nothing about the request itself, so the same request may succeed
    /// later (a timeout, no connection, a broken connection, or a 5xx / 429 status).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::Connect(_) | Error::Request(_) => true,
            Error::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// A pooled HTTP/1.1 client. Clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: LegacyClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.config).finish()
    }
}

impl Client {
    /// Builds a client. Fails only when `extra_roots_pem` holds something that is not a
    /// certificate.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !config.extra_roots_pem.is_empty() {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut added = 0usize;
            for cert in CertificateDer::pem_slice_iter(&config.extra_roots_pem) {
                let cert = cert.map_err(|e| Error::Tls(format!("extra_roots_pem: {e}")))?;
                roots.add(cert).map_err(|e| Error::Tls(format!("extra_roots_pem: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(Error::Tls("extra_roots_pem holds no certificate".into()));
            }
        }
        // rustls 0.23.48 deprecates ring's provider only because it lacks post-quantum key
        // exchange; the alternative (aws-lc-rs) needs cmake and a large C build, which we avoid.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let inner = LegacyClient::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(connector);
        Ok(Self { inner, config: Arc::new(config) })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts a request with any method.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let mut builder = RequestBuilder {
            client: self.clone(),
            method,
            uri: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: self.config.timeout,
            max_response_bytes: self.config.max_response_bytes,
            error: None,
        };
        match parse_url(url) {
            Ok(uri) => builder.uri = Some(uri),
            Err(e) => builder.error = Some(e),
        }
        builder
    }

    /// Starts a `GET`.
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Starts a `POST`.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }
}

fn parse_url(url: &str) -> Result<hyper::Uri, Error> {
    let invalid = |reason: &str| Error::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
    let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(invalid("the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(uri)
}

/// One request being put together; finish it with [`send`](Self::send) or
/// [`send_json`](Self::send_json). Errors in the builder calls (a bad URL or header) are kept and
/// returned by `send`, so the calls chain.
#[derive(Debug)]
pub struct RequestBuilder {
    client: Client,
    method: Method,
    uri: Option<hyper::Uri>,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    max_response_bytes: usize,
    error: Option<Error>,
}

impl RequestBuilder {
    /// Sets a header (replacing one of the same name).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.insert(n, v);
            }
            _ => {
                self.error.get_or_insert(Error::InvalidHeader(name.to_owned()));
            }
        }
        self
    }

    /// Uses `body` serialised as JSON, with `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = Bytes::from(bytes);
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            }
            Err(e) => {
                self.error.get_or_insert(Error::EncodeJson(e));
            }
        }
        self
    }

    /// Uses raw bytes as the body (set `Content-Type` with [`header`](Self::header)).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The deadline for this request, replacing the client's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The response body limit for this request, replacing the client's default.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Sends the request and reads the whole response body (any status).
    pub async fn send(self) -> Result<Response, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(uri) = self.uri else {
            return Err(Error::InvalidUrl { url: String::new(), reason: "no URL".into() });
        };
        let timeout = self.timeout;
        let limit = self.max_response_bytes;
        let mut request = hyper::Request::new(Full::new(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        *headers = self.headers;
        if !headers.contains_key(USER_AGENT)
            && let Ok(ua) = HeaderValue::from_str(&self.client.config.user_agent)
        {
            headers.insert(USER_AGENT, ua);
        }
        // hyper-util sets Host itself; a caller-supplied one would be sent twice.
        headers.remove(HOST);
        let exchange = exchange(&self.client.inner, request, limit);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Sends the request, requires a 2xx status, and decodes the body as JSON.
    pub async fn send_json<T: DeserializeOwned>(self) -> Result<T, Error> {
        self.send().await?.error_for_status()?.json()
    }
}

async fn exchange(
    client: &LegacyClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
    limit: usize,
) -> Result<Response, Error> {
    let response = client.request(request).await.map_err(|e| {
        let text = error_chain(&e);
        if e.is_connect() { Error::Connect(text) } else { Error::Request(text) }
    })?;
    let (parts, mut body) = response.into_parts();
    // Refuse early when the peer announces a body over the limit; otherwise count as it arrives.
    let announced =
        parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Request(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Error::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Response { status: parts.status, headers: parts.headers, body: buf.freeze() })
}

/// The error and its sources on one line, so "connection refused" is not hidden behind
/// "client error (Connect)".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A complete response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Response {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// Decodes the body as JSON (any status).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(Error::DecodeJson)
    }

    /// `Ok(self)` for a 2xx status, else [`Error::Status`] with the start of the body.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status.is_success() {
            return Ok(self);
        }
        let end = self.body.len().min(STATUS_BODY_EXCERPT);
        Err(Error::Status {
            status: self.status,
            body_excerpt: String::from_utf8_lossy(&self.body[..end]).into_owned(),
        })
    }
}
