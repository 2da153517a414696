//! A minimal HTTP/1.1 client for the REST suites: one request per connection, the
//! answer's status, headers and JSON body.

use confab_testkit::Server;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The app's master key for the test app of the REST suites.
pub const MASTER: &[(&str, &str)] = &[("X-LC-Id", "test-app"), ("X-LC-Key", "m,master")];
/// The app key of the same app.
pub const APP_KEY: &[(&str, &str)] = &[("X-LC-Id", "test-app"), ("X-LC-Key", "k")];

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers as sent.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
}

impl Answer {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts 200 and returns the body.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.body
    }

    /// Asserts a LeanCloud error: HTTP status and body code.
    pub fn error(&self, status: u16, code: i64) {
        assert_eq!((self.status, self.body["code"].as_i64()), (status, Some(code)), "{}", self.body);
        assert!(self.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", self.body);
    }
}

/// Sends one request to `server` (through its balancer on a cluster) and reads the answer.
pub async fn http(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    http_to(&server.http, method, path, headers, body).await
}

/// [`http`] to one base URL: one node of a cluster (see `Server::node_https`).
pub async fn http_to(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // A peer may answer (413) before reading the whole body and close.
    let _ = s.write_all(body.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {out:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    assert!(!headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"));
    Answer { status, headers, body: serde_json::from_str(rest).unwrap_or(Value::Null) }
}
