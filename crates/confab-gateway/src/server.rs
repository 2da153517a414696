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
//! - At shutdown the listener is closed, every HTTP connection is asked to finish its
//!   request and close ([`accept_until`]), and whatever is still open when the grace
//!   period ends is dropped ([`OpenConnections::close_by`]), so a client cannot hold
//!   the process up.

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
/// its request is answered, and returns those still open.
///
/// Each request carries its TCP peer as [`ConnectInfo<SocketAddr>`]. Accepted sockets
/// get `TCP_NODELAY`: small frames must not wait for Nagle's algorithm (it showed as
/// 29 ms p999 tails).
pub async fn accept_until(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
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
        tasks.spawn(serve_connection(tcp, peer, app.clone(), timeouts, stop_rx.clone()));
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

/// Serves one connection until it closes, is upgraded, goes idle, or is shut down.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: HttpTimeouts,
    mut stop: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { inner: tcp, activity: Some(Arc::clone(&activity)) });
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
