//! The client against real sockets: a raw TCP server in the test answers with exactly the bytes
//! each case needs (good JSON, a hang, an oversized or garbage body, TLS with a test CA).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use confab_httpc::{Client, ClientConfig, Error, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Reads one request (head and a Content-Length body) and returns (head, body).
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// A server whose every connection answers every request with `respond(head, body)`; counts
/// accepted connections.
async fn serve<F>(respond: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(String, Vec<u8>) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let respond = respond.clone();
            tokio::spawn(async move {
                while let Some((head, body)) = read_request(&mut sock).await {
                    let out = respond(head, body);
                    if out.is_empty() {
                        // Hang: keep the socket open and never answer.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

fn http_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

#[tokio::test]
async fn post_json_sends_method_path_headers_and_body_and_decodes_the_reply() {
    let (base, _) = serve(|head, body| {
        let reply = serde_json::json!({
            "head": head,
            "body": serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        });
        http_response("200 OK", &reply.to_string())
    })
    .await;
    let reply: serde_json::Value = client()
        .post(&format!("{base}/1.1/functions/_messageReceived"))
        .header("X-LC-Id", "app1")
        .json(&serde_json::json!({"fromPeer": "alice", "n": 1}))
        .send_json()
        .await
        .unwrap();
    let head = reply["head"].as_str().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("post /1.1/functions/_messagereceived http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-lc-id: app1\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-type: application/json"), "{head}");
    assert!(head.contains("\r\nuser-agent: confab/"), "{head}");
    assert_eq!(reply["body"], serde_json::json!({"fromPeer": "alice", "n": 1}));
}

#[tokio::test]
async fn a_server_that_never_answers_ends_in_a_timeout() {
    let (base, _) = serve(|_, _| Vec::new()).await;
    let err =
        client().get(&format!("{base}/slow")).timeout(Duration::from_millis(200)).send().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_body_that_trickles_forever_still_ends_in_the_timeout() {
    // Headers arrive at once; the body never completes. The deadline covers the body too.
    let (base, _) =
        serve(|_, _| b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"".to_vec()).await;
    let err = client().get(&format!("{base}/")).timeout(Duration::from_millis(300)).send().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
}

#[tokio::test]
async fn an_announced_body_over_the_limit_is_refused() {
    let (base, _) = serve(|_, _| http_response("200 OK", &"x".repeat(2000))).await;
    let err = client().get(&format!("{base}/")).max_response_bytes(1000).send().await.unwrap_err();
    assert!(matches!(err, Error::BodyTooLarge { limit: 1000 }), "{err}");
    // At the limit exactly it is fine.
    let ok = client().get(&format!("{base}/")).max_response_bytes(2000).send().await.unwrap();
    assert_eq!(ok.body().len(), 2000);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_while_it_streams() {
    let (base, _) = serve(|_, _| {
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            out.extend_from_slice(format!("200\r\n{}\r\n", "y".repeat(0x200)).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    })
    .await;
    let err = client().get(&format!("{base}/")).max_response_bytes(4096).send().await.unwrap_err();
    assert!(matches!(err, Error::BodyTooLarge { limit: 4096 }), "{err}");
    let ok = client().get(&format!("{base}/")).send().await.unwrap();
    assert_eq!(ok.body().len(), 10 * 0x200);
}

#[tokio::test]
async fn non_2xx_statuses_are_errors_for_send_json_with_a_bounded_excerpt() {
    let (base, _) = serve(|head, _| {
        if head.starts_with("GET /500") {
            http_response("500 Internal Server Error", &"e".repeat(5000))
        } else {
            http_response("400 Bad Request", r#"{"code":1,"error":"no"}"#)
        }
    })
    .await;
    let err = client().get(&format!("{base}/500")).send_json::<serde_json::Value>().await.unwrap_err();
    match &err {
        Error::Status { status, body_excerpt } => {
            assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body_excerpt.len(), 512);
        }
        other => panic!("{other}"),
    }
    assert!(err.is_transient());
    let err = client().get(&format!("{base}/400")).send_json::<serde_json::Value>().await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    // `send` itself returns any status with its body.
    let resp = client().get(&format!("{base}/400")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["code"], 1);
}

#[tokio::test]
async fn garbage_instead_of_http_and_bad_json_are_clean_errors() {
    let (base, _) = serve(|head, _| {
        if head.starts_with("GET /garbage") {
            b"this is not HTTP at all\r\n\r\n".to_vec()
        } else {
            http_response("200 OK", "{not json")
        }
    })
    .await;
    let err = client().get(&format!("{base}/garbage")).send().await.unwrap_err();
    assert!(matches!(err, Error::Request(_)), "{err}");
    let err = client().get(&format!("{base}/json")).send_json::<serde_json::Value>().await.unwrap_err();
    assert!(matches!(err, Error::DecodeJson(_)), "{err}");
}

#[tokio::test]
async fn refused_connections_bad_urls_and_bad_headers() {
    // A port that was free a moment ago: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = client().get(&format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
    assert!(err.is_transient());
    for url in ["ftp://example.com/", "not a url", "/relative/only", "http:///x"] {
        let err = client().get(url).send().await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
    let err = client().get("http://127.0.0.1:1/").header("X-Bad", "line\nbreak").send().await.unwrap_err();
    assert!(matches!(err, Error::InvalidHeader(_)), "{err}");
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let (base, accepted) = serve(|_, _| http_response("200 OK", "{}")).await;
    let c = client();
    for _ in 0..3 {
        let r = c.get(&format!("{base}/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

const CA: &[u8] = include_bytes!("fixtures/ca.pem");
const SERVER_CERT: &[u8] = include_bytes!("fixtures/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("fixtures/server.key");

async fn serve_tls() -> String {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(SERVER_CERT).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                while let Some((head, _)) = read_request(&mut tls).await {
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let body = serde_json::json!({ "path": path }).to_string();
                    if write_all(&mut tls, &http_response("200 OK", &body)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("https://localhost:{port}")
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, b: &[u8]) -> std::io::Result<()> {
    s.write_all(b).await?;
    s.flush().await
}

#[tokio::test]
async fn https_with_a_private_ca_added_works_and_is_refused_without_it() {
    let base = serve_tls().await;
    let trusting =
        Client::new(ClientConfig { extra_roots_pem: CA.to_vec(), ..ClientConfig::default() }).unwrap();
    let v: serde_json::Value = trusting.get(&format!("{base}/tls/ok")).send_json().await.unwrap();
    assert_eq!(v["path"], "/tls/ok");
    // Mozilla's roots alone do not know the test CA.
    let err = client().get(&format!("{base}/tls/ok")).send().await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn extra_roots_that_are_not_certificates_are_refused() {
    let err = Client::new(ClientConfig { extra_roots_pem: b"hello".to_vec(), ..ClientConfig::default() })
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
}
