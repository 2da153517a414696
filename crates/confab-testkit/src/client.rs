//! A small client for the LeanCloud v2 JSON protocol, used by Confab's integration
//! tests. It keeps every received frame in arrival order so a test can wait for a
//! reply by serial or for a push matching a predicate.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a wait lasts before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// Nothing matching arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server closed the connection.
    #[error("connection closed (code {0:?})")]
    Closed(Option<u16>),
    /// A frame was not JSON.
    #[error("bad frame: {0}")]
    BadFrame(String),
}

/// What a connection runs over: a TCP socket, or TLS over one.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Transport for T {}

/// One connection.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<Box<dyn Transport>>,
    inbox: VecDeque<Value>,
    next_serial: i32,
    close_code: Option<Option<u16>>,
    /// The client id after [`Client::open`].
    pub peer_id: Option<String>,
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:7878/`); a `wss://` URL needs
    /// [`Client::connect_tls`].
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Self::connect_with(url, &[]).await
    }

    /// Connects with extra handshake headers (e.g. `Origin`).
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, ClientError> {
        Self::connect_over(url, headers, None).await
    }

    /// Connects to a `wss://` `url`, trusting what `tls` trusts (see
    /// [`crate::tls::client_config`]).
    pub async fn connect_tls(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Client, ClientError> {
        Self::connect_over(url, &[], Some(tls)).await
    }

    async fn connect_over(
        url: &str,
        headers: &[(&str, &str)],
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Client, ClientError> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let name: tungstenite::http::HeaderName =
                name.parse().map_err(|_| ClientError::BadFrame(format!("header name {name}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ClientError::BadFrame(format!("header value {value}")))?;
            request.headers_mut().insert(name, value);
        }
        let (host, port) = host_and_port(&request, url)?;
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(io_error)?;
        let stream: Box<dyn Transport> = match (request.uri().scheme_str(), tls) {
            (Some("wss"), Some(tls)) => {
                Box::new(crate::tls::handshake(tcp, &host, tls).await.map_err(io_error)?)
            }
            (Some("wss"), None) => {
                return Err(ClientError::BadFrame(format!("{url}: wss:// needs Client::connect_tls")));
            }
            _ => Box::new(tcp),
        };
        Self::handshake(request, stream).await
    }

    async fn handshake(request: Request, stream: Box<dyn Transport>) -> Result<Client, ClientError> {
        let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(Client { ws, inbox: VecDeque::new(), next_serial: 1, close_code: None, peer_id: None })
    }

    /// Connects to a `ws://` `url` over a socket whose kernel receive buffer is fixed
    /// at `bytes` (no autotuning): a client that stops reading then makes the server's
    /// writes block after little more than the server's own send buffer.
    pub async fn connect_with_recv_buffer(url: &str, bytes: u32) -> Result<Client, ClientError> {
        let request = url.into_client_request()?;
        let (host, port) = host_and_port(&request, url)?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(io_error)?
            .next()
            .ok_or_else(|| ClientError::BadFrame(format!("{url}: no address")))?;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
        let socket = socket.map_err(io_error)?;
        socket.set_recv_buffer_size(bytes).map_err(io_error)?;
        let stream = socket.connect(addr).await.map_err(io_error)?;
        Self::handshake(request, Box::new(stream)).await
    }

    /// Connects and opens a session for `peer_id` in `app_id`; `extra` fields (a
    /// signature) are merged into the open frame.
    pub async fn open(url: &str, app_id: &str, peer_id: &str, extra: Value) -> Result<Client, ClientError> {
        let mut client = Client::connect(url).await?;
        client.open_session(app_id, peer_id, extra).await?;
        Ok(client)
    }

    /// [`Client::open`] over `wss://`, trusting what `tls` trusts.
    pub async fn open_tls(
        url: &str,
        tls: &Arc<rustls::ClientConfig>,
        app_id: &str,
        peer_id: &str,
        extra: Value,
    ) -> Result<Client, ClientError> {
        let mut client = Client::connect_tls(url, tls).await?;
        client.open_session(app_id, peer_id, extra).await?;
        Ok(client)
    }

    /// Opens a session for `peer_id` in `app_id` on this connection; `extra` fields (a
    /// signature) are merged into the open frame.
    pub async fn open_session(
        &mut self,
        app_id: &str,
        peer_id: &str,
        extra: Value,
    ) -> Result<(), ClientError> {
        let mut frame = json!({"cmd": "session", "op": "open", "appId": app_id, "peerId": peer_id, "ua": "confab-client"});
        merge(&mut frame, extra);
        let reply = self.request(frame).await?;
        if reply["op"] != "opened" {
            return Err(ClientError::BadFrame(reply.to_string()));
        }
        self.peer_id = reply["peerId"].as_str().map(str::to_owned);
        Ok(())
    }

    /// Sends a frame as is.
    pub async fn send(&mut self, frame: &Value) -> Result<(), ClientError> {
        self.send_text(frame.to_string()).await
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends raw bytes as one binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// Sends a request with a fresh serial and waits for the frame carrying it.
    pub async fn request(&mut self, mut frame: Value) -> Result<Value, ClientError> {
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Value::Object(m) = &mut frame {
            m.insert("i".into(), json!(serial));
        }
        self.send(&frame).await?;
        self.wait_for(&format!("reply to i={serial}"), |f| f["i"] == json!(serial)).await
    }

    /// Waits for (and removes) the first received frame matching `pred`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        self.wait_for_within(what, WAIT, pred).await
    }

    /// Like [`Client::wait_for`] with an explicit time limit.
    pub async fn wait_for_within(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(pos) = self.inbox.iter().position(&pred) {
                return Ok(self.inbox.remove(pos).unwrap_or(Value::Null));
            }
            if let Some(code) = self.close_code {
                return Err(ClientError::Closed(code));
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(ClientError::Timeout(what.to_owned())),
                Ok(frame) => self.take(frame)?,
            }
        }
    }

    /// Collects every frame matching `pred` that arrives within `quiet` of the last one.
    pub async fn drain(
        &mut self,
        quiet: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>, ClientError> {
        let mut out = Vec::new();
        loop {
            while let Some(pos) = self.inbox.iter().position(&pred) {
                out.extend(self.inbox.remove(pos));
            }
            if self.close_code.is_some() {
                return Ok(out);
            }
            match tokio::time::timeout(quiet, self.ws.next()).await {
                Err(_) => return Ok(out),
                Ok(frame) => self.take(frame)?,
            }
        }
    }

    /// Waits until the server closes the connection; returns the close code.
    pub async fn closed(&mut self) -> Result<Option<u16>, ClientError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(code) = self.close_code {
                return Ok(code);
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(ClientError::Timeout("close".into())),
                Ok(frame) => self.take(frame)?,
            }
        }
    }

    /// Frames received but not yet taken.
    pub fn pending(&self) -> &VecDeque<Value> {
        &self.inbox
    }

    fn take(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Result<(), ClientError> {
        match frame {
            None => self.close_code = Some(None),
            Some(Err(_)) => self.close_code = Some(None),
            Some(Ok(Message::Text(t))) => {
                let v: Value =
                    serde_json::from_str(t.as_str()).map_err(|e| ClientError::BadFrame(e.to_string()))?;
                self.inbox.push_back(v);
            }
            Some(Ok(Message::Close(frame))) => {
                self.close_code = Some(frame.map(|f: CloseFrame| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The host (without brackets) and port (the scheme's default if none) of a `ws://` or
/// `wss://` request.
fn host_and_port(request: &Request, url: &str) -> Result<(String, u16), ClientError> {
    let bad_url = || ClientError::BadFrame(format!("not a ws:// or wss:// url: {url}"));
    let uri = request.uri();
    let host = uri.host().ok_or_else(bad_url)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_owned();
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("wss")) => 443,
        (None, Some("ws")) => 80,
        (None, _) => return Err(bad_url()),
    };
    Ok((host, port))
}

fn io_error(e: std::io::Error) -> ClientError {
    ClientError::WebSocket(e.into())
}

fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        t.extend(e);
    }
}
