//! TLS for tests of a server with `tls_cert` / `tls_key`: self-signed certificates made
//! at test time by the `openssl` command (Debian's `openssl` package), client
//! configurations that trust them, and raw handshakes that report the certificate the
//! server presented.
//!
//! Everything here panics on failure: in a test the panic is the report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// What the certificates are for: `localhost` and `127.0.0.1`, not a CA (webpki refuses
/// a CA certificate as a server's), so a client trusting one accepts it as it is.
const OPENSSL_CONFIG: &str = "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n\
    [dn]\nCN = localhost\n\
    [ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
    extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n";

/// A self-signed certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate's PEM file.
    pub cert: PathBuf,
    /// The private key's PEM file (PKCS#8).
    pub key: PathBuf,
    /// The certificate, DER: what a handshake with a server serving it presents.
    pub der: Vec<u8>,
}

impl TestCert {
    /// Makes a new P-256 certificate for `localhost` and `127.0.0.1`, valid from now
    /// for 30 days, as `dir/NAME.pem` and `dir/NAME.key`. Every call makes another key
    /// (and so another certificate).
    pub fn generate(dir: &Path, name: &str) -> TestCert {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("openssl-test-cert.cnf");
        std::fs::write(&config, OPENSSL_CONFIG).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "30", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .arg("-config")
            .arg(&config)
            .output()
            .unwrap_or_else(|e| {
                panic!("the openssl command is needed for TLS tests (apt-get install openssl): {e}")
            });
        assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
        let der = CertificateDer::from_pem_file(&cert).unwrap().to_vec();
        TestCert { cert, key, der }
    }

    /// Copies this certificate and key over the files at `cert` and `key` (the ones a
    /// server was started with), each replaced at once (written aside, then renamed).
    pub fn install(&self, cert: &Path, key: &Path) {
        for (from, to) in [(&self.key, key), (&self.cert, cert)] {
            let aside = to.with_extension("installing");
            std::fs::copy(from, &aside).unwrap();
            std::fs::rename(&aside, to).unwrap();
        }
    }

    /// The certificate's PEM text (for a client's list of extra roots).
    pub fn pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).unwrap()
    }
}

/// A client configuration trusting exactly `trusted` (each its own root), offering
/// ALPN `http/1.1`, with session resumption off so every handshake is a full one and
/// shows the server's current certificate.
pub fn client_config(trusted: &[&TestCert]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(CertificateDer::from(cert.der.clone())).unwrap();
    }
    // ring, as the server: rustls 0.23.48 deprecates it only for its lack of
    // post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The TLS handshake of a client on `tcp` for the server name `host`.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    TlsConnector::from(Arc::clone(config)).connect(name, tcp).await
}

/// Opens a TLS connection to `addr` (`127.0.0.1:PORT`, checked as the name
/// `127.0.0.1`) and returns the certificate the server presented (DER) and the ALPN
/// protocol agreed; the connection is then closed.
pub async fn presented_certificate(
    addr: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let tcp = TcpStream::connect(addr).await?;
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let tls = handshake(tcp, host, config).await?;
    let (_, connection) = tls.get_ref();
    let cert = connection.peer_certificates().and_then(|chain| chain.first()).map(|c| c.to_vec());
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    cert.map(|cert| (cert, alpn)).ok_or_else(|| std::io::Error::other("no certificate presented"))
}
