//! Confab's network gateway: one port serves the v2 push router (`GET /v1/route`),
//! health (`GET /healthz`), the demo (`/demo/`) and the WebSocket endpoint (`/`).
//!
//! - [`routes`]: HTTP endpoints and the router;
//! - [`connection`]: one WebSocket connection: reader, bounded writer, timeouts, close
//!   codes. Data flows socket → codec → engine, and engine → queue → codec → socket.

pub mod connection;
pub mod routes;

use confab_engine::Engine;
use std::time::Duration;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The public base URL (`https://chat.example.com`) handed out by the router;
    /// `None` derives it from each request's `Host` and `X-Forwarded-Proto`.
    pub public_url: Option<String>,
    /// A connection must open a session within this time (close 4108).
    pub login_timeout: Duration,
    /// A connection that sends nothing for this long is closed (4107). Clients send a
    /// heartbeat every 60 s (2.x) or 180 s (4.x).
    pub read_timeout: Duration,
    /// Largest WebSocket frame accepted (close 4109 beyond it).
    pub frame_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            public_url: None,
            login_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(400),
            frame_bytes: 64 * 1024,
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
