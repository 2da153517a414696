//! TLS on the listening port (`tls_cert` / `tls_key`): with it the one port speaks TLS
//! only, `https://` and `wss://`, with ALPN `http/1.1`.
//!
//! - [`Certificates`] holds the certificate every new handshake presents; replacing it
//!   (on SIGHUP, see the `confab` binary) changes what the next handshake gets and
//!   leaves established connections as they are.
//! - [`TlsListener`] is what the accept loop ([`crate::server::accept_until`]) needs:
//!   the acceptor and the time a handshake may take. The handshake runs in each
//!   connection's own task, bounded by that time, so neither a slow client nor many of
//!   them hold up the accept loop.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// The one ALPN protocol served: the accept loop speaks HTTP/1.1 (and WebSockets over
/// it). A client that offers only others (`h2` alone) is refused by the handshake.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The certificate the next TLS handshake presents; replaceable while the server runs.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Starts with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Certificates> {
        Arc::new(Certificates { current: RwLock::new(key) })
    }

    /// Makes `key` the certificate of every later handshake. Connections already
    /// established keep theirs.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        // A writer that panicked left a whole `Arc` behind: the lock's value is usable.
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
    }

    /// The certificate a handshake now presents.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl ResolvesServerCert for Certificates {
    /// The same certificate whatever the client asks for (one name per server).
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What the accept loop needs to serve TLS.
#[derive(Clone)]
pub struct TlsListener {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("handshake_timeout", &self.handshake_timeout).finish()
    }
}

impl TlsListener {
    /// Serves the certificates of `certificates` with `provider` (TLS 1.2 and 1.3,
    /// rustls's safe defaults, ALPN `http/1.1`, no client certificates). A connection
    /// that has not completed its handshake `handshake_timeout` after it was accepted is
    /// closed.
    pub fn new(
        certificates: Arc<Certificates>,
        provider: Arc<CryptoProvider>,
        handshake_timeout: Duration,
    ) -> Result<TlsListener, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificates);
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(TlsListener { acceptor: TlsAcceptor::from(Arc::new(config)), handshake_timeout })
    }
}
