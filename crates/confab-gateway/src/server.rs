//! The accept loop: serves the router on every accepted TCP connection with hyper's
//! HTTP/1.1, with WebSocket upgrades, and bounds what a client can hold open.
//!
//! - A request's headers must arrive within the header timeout (slowloris), and hyper
//!   runs the same timer while a connection waits for its first or next request, so a
//!   socket that never sends anything is closed by it too.
//! - An HTTP connection that neither reads nor writes for the idle timeout is dropped:
//!   an idle keep-alive connection, a request body that stopped coming, a response the
//!   client stopped reading. Upgraded connections (WebSockets) leave this loop and have
//!   their own timeouts.
//! - With TLS ([`TlsListener`]) each connection first completes its handshake, in its
//!   own task and within the handshake timeout: a socket that sends nothing, or stops
//!   halfway, is closed then. A plain HTTP request to the TLS port is answered with a
//!   400 that says to use `https://` (as nginx does) and closed.
//! - At shutdown the listener is closed, every HTTP connection is asked to finish its
//!   request and close ([`accept_until`]), and whatever is still open when the grace
//!   period ends is dropped ([`OpenConnections::close_by`]), so a client cannot hold
//!   the process up.

use crate::tls::TlsListener;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The timeouts of HTTP connections (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// Time to send a request's headers, and to start the next request.
    pub header: Duration,
    /// Longest time an HTTP connection may neither read nor write.
    pub idle: Duration,
}

/// The HTTP connections still open after [`accept_until`] returned.
#[derive(Debug)]
pub struct OpenConnections {
    tasks: JoinSet<()>,
}

impl OpenConnections {
    /// Waits until every connection has closed or `deadline` has passed, then drops the
    /// ones left. Returns how many were dropped.
    pub async fn close_by(mut self, deadline: Instant) -> usize {
        let all_closed = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout_at(deadline, all_closed).await.is_ok() {
            return 0;
        }
        let left = self.tasks.len();
        self.tasks.shutdown().await;
        left
    }
}

/// Serves `app` on every connection `listener` accepts until `shutdown` completes. Then
/// stops accepting (the listener is dropped), asks every HTTP connection to close once
/// its request is answered, and returns those still open. With `tls`, every connection
/// speaks TLS (see the module documentation).
///
/// Each request carries its TCP peer as [`ConnectInfo<SocketAddr>`]. Accepted sockets
/// get `TCP_NODELAY`: small frames must not wait for Nagle's algorithm (it showed as
/// 29 ms p999 tails).
pub async fn accept_until(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    tls: Option<TlsListener>,
    shutdown: impl Future<Output = ()>,
) -> OpenConnections {
    let (stop_tx, stop_rx) = watch::channel(());
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            // Finished connections are reaped as they go, so the set holds only open ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        tasks.spawn(serve_connection(tcp, peer, app.clone(), timeouts, tls.clone(), stop_rx.clone()));
    }
    drop(listener);
    // Every connection task sees the change (or the sender gone) and shuts down gracefully.
    drop(stop_tx);
    OpenConnections { tasks }
}

/// An accept error: a connection that failed before it was accepted is skipped; anything
/// else (out of file descriptors) is waited out briefly rather than spun on.
async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset => {}
        _ => {
            tracing::error!(error = %e, "accepting a connection");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Serves one connection until it closes, is upgraded, goes idle, or is shut down;
/// with `tls`, after its handshake.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: HttpTimeouts,
    tls: Option<TlsListener>,
    mut stop: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::new());
    let Some(tls) = tls else {
        let io = Tracked { inner: tcp, activity: Some(Arc::clone(&activity)) };
        return serve_http(io, peer, app, timeouts, activity, stop).await;
    };
    let handshake = tls_handshake(tcp, peer, &tls, Arc::clone(&activity));
    let stream = tokio::select! {
        stream = tokio::time::timeout(tls.handshake_timeout, handshake) => match stream {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not complete in time: closed");
                return;
            }
        },
        // Shutting down: a connection that is not yet HTTP has no request to finish.
        _ = stop.changed() => return,
    };
    serve_http(stream, peer, app, timeouts, activity, stop).await;
}

/// The first byte of a TLS connection: a handshake record (RFC 8446, 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The body of the answer to a plain HTTP request on the TLS port.
const PLAIN_HTTP_REFUSAL: &str = "This port speaks TLS: use https:// or wss://.\n";

/// Most bytes of a plain HTTP request read (and dropped) after the refusal, so that
/// closing the socket does not reset it before the client read the answer.
const PLAIN_HTTP_DRAIN_BYTES: usize = 16 * 1024;

/// Completes the TLS handshake of `tcp` (the caller bounds the time). `None`: the
/// client closed, failed the handshake, or spoke plain HTTP (answered with a 400).
async fn tls_handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: &TlsListener,
    activity: Arc<Activity>,
) -> Option<tokio_rustls::server::TlsStream<Tracked>> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS connection failed before its handshake");
            return None;
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        // An HTTP method starts with a capital letter; anything else is just closed.
        if first[0].is_ascii_uppercase() {
            tracing::debug!(%peer, "plain HTTP on the TLS port: refused");
            refuse_plain_http(tcp).await;
        } else {
            tracing::debug!(%peer, "not TLS on the TLS port: closed");
        }
        return None;
    }
    let io = Tracked { inner: tcp, activity: Some(activity) };
    match tls.acceptor.accept(io).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// Answers a plain HTTP request with a 400 naming the right scheme, then closes:
/// our side first, then after reading what the client still sends (up to
/// [`PLAIN_HTTP_DRAIN_BYTES`]), so the client gets the answer rather than a reset.
async fn refuse_plain_http(mut tcp: TcpStream) {
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_REFUSAL}",
        PLAIN_HTTP_REFUSAL.len()
    );
    if tcp.write_all(answer.as_bytes()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < PLAIN_HTTP_DRAIN_BYTES {
        match tcp.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Serves HTTP/1.1 on `io` until the connection closes, is upgraded, goes idle, or is
/// shut down.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    timeouts: HttpTimeouts,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        hyper::service::Service::call(&service, request)
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header);
    let mut conn = pin!(builder.serve_connection(io, service).with_upgrades());
    let mut stopping = false;
    loop {
        let idle_until = activity.last() + timeouts.idle;
        tokio::select! {
            // Done, or upgraded: the WebSocket's task now owns the socket.
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection failed");
                }
                return;
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.last() + timeouts.idle <= Instant::now() {
                    tracing::debug!(%peer, "HTTP connection idle: closed");
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last read or wrote.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that notes when it last read or wrote. Once the connection's task is gone
/// (the connection was upgraded, the socket now a WebSocket's) nobody reads the note:
/// the socket lets go of it and stops noting.
#[derive(Debug)]
struct Tracked {
    inner: TcpStream,
    activity: Option<Arc<Activity>>,
}

impl Tracked {
    fn touch(&mut self) {
        if let Some(activity) = &self.activity {
            if Arc::strong_count(activity) == 1 {
                self.activity = None;
            } else {
                activity.touch();
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_ready() {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if poll.is_ready() {
            self.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if poll.is_ready() {
            self.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
