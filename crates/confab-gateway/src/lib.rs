//! Confab's network gateway: one port serves the v2 push router (`GET /v1/route`),
//! health (`GET /healthz`), metrics (`GET /metrics`), the REST API (`/1.2/rtm/…`), the
//! demo (`/demo/`), the admin console (`/console/`) and the WebSocket endpoint (`/`).
//!
//! - [`server`]: the accept loop: HTTP/1.1 connections, their timeouts, WebSocket
//!   upgrades and the graceful shutdown;
//! - [`tls`]: TLS on the port (`https://`, `wss://`) and the certificate a reload
//!   replaces;
//! - [`routes`]: HTTP endpoints and the router;
//! - [`rest`]: LeanCloud's realtime REST API (`/1.2/rtm/…`) for the app's backend;
//! - [`hooks`]: the HTTP calls to the apps' hook backends;
//! - [`console`]: the admin console's page, assets and live numbers;
//! - [`connection`]: one WebSocket connection: reader, bounded writer, timeouts, close
//!   codes. Data flows socket → codec → engine, and engine → queue → codec → socket.

pub mod connection;
pub mod console;
pub mod hooks;
pub mod rest;
pub mod routes;
pub mod server;
pub mod tls;

use confab_engine::Engine;
use confab_types::net::IpNet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The public base URL (`https://chat.example.com`) handed out by the router;
    /// `None` derives it from each request's `Host`, or from `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` when the request comes from a trusted proxy.
    pub public_url: Option<String>,
    /// The proxies whose `X-Forwarded-*` headers are believed; empty: nobody's. Shared,
    /// as the gateway is cloned for every request.
    pub trusted_proxies: Arc<[IpNet]>,
    /// The address the server listens on: the router's answer when a request's host is
    /// missing or malformed.
    pub listen: SocketAddr,
    /// A client must send a request's headers within this time, and a keep-alive
    /// connection its next request (hyper's header timer runs while it waits).
    pub http_header_timeout: Duration,
    /// An HTTP connection that is not a WebSocket and neither reads nor writes for this
    /// long is closed: an idle keep-alive connection, a request body that stopped coming,
    /// a response the client stopped reading.
    pub http_idle_timeout: Duration,
    /// A connection must open a session within this time (close 4108).
    pub login_timeout: Duration,
    /// A connection that sends nothing for this long is closed (4107). Clients send a
    /// heartbeat every 60 s (2.x) or 180 s (4.x).
    pub read_timeout: Duration,
    /// Largest WebSocket frame accepted (close 4109 beyond it).
    pub frame_bytes: usize,
    /// The bearer token `GET /metrics` requires; `None`: the endpoint is open.
    pub metrics_token: Option<String>,
    /// The port speaks TLS: a router answer derived from the request hands out
    /// `wss://` (unless a trusted proxy's `X-Forwarded-Proto` says otherwise).
    pub tls: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            public_url: None,
            trusted_proxies: Arc::from([]),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7878)),
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(400),
            frame_bytes: 64 * 1024,
            metrics_token: None,
            tls: false,
        }
    }
}

/// Shared state of the HTTP and WebSocket handlers.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The engine.
    pub engine: Engine,
    /// Settings.
    pub config: GatewayConfig,
}
