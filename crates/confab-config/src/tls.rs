//! The server's own TLS certificate and key (`tls_cert`, `tls_key`): PEM files read
//! into a [`CertifiedKey`] rustls serves. The same loading runs when the configuration
//! is checked (so `confab check-config` and a start refuse a bad pair) and when the
//! server reloads its certificate on SIGHUP (where a bad pair keeps the old one).

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file read, in bytes: a certificate chain or a key is a few KB, so a
/// larger file is a wrong path (a log, a device), not a certificate.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The paths of the PEM files the server's TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then any intermediates
    /// (`-----BEGIN CERTIFICATE-----` sections; other sections are skipped).
    pub cert: PathBuf,
    /// The private key of the first certificate: PKCS#8 (`BEGIN PRIVATE KEY`), RSA
    /// (`BEGIN RSA PRIVATE KEY`) or SEC1 EC (`BEGIN EC PRIVATE KEY`); the first key in
    /// the file is used.
    pub key: PathBuf,
}

/// Why the certificate or key could not be loaded. Messages name the file and never
/// contain key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be opened or read.
    #[error("{key} {}: {source}", path.display())]
    Read {
        /// The configuration key naming the file (`tls_cert` or `tls_key`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a device, a pipe).
    #[error("{key} {}: not a regular file", path.display())]
    NotAFile {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_PEM_BYTES`].
    #[error("{key} {}: larger than {MAX_PEM_BYTES} bytes, not a PEM file", path.display())]
    TooLarge {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid PEM, or holds no section of the kind needed.
    #[error("{key} {}: {what}", path.display())]
    Pem {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The key is of a kind rustls cannot sign with, or the certificate does not
    /// parse, or the key is not the certificate's.
    #[error("tls_cert {} and tls_key {}: {what}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl TlsFiles {
    /// Reads and checks both files: at least one certificate, a key rustls (with the
    /// ring provider) can sign with, and the key matching the first certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_pem = read_pem("tls_cert", &self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("tls_cert", &self.cert, e))?;
        if chain.is_empty() {
            return Err(pem_error("tls_cert", &self.cert, rustls::pki_types::pem::Error::NoItemsFound));
        }
        let key_pem = read_pem("tls_key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_error("tls_key", &self.key, e))?;
        let pair = |what: String| TlsError::Pair { cert: self.cert.clone(), key: self.key.clone(), what };
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| pair(format!("the key is not one rustls can sign with: {e}")))?;
        let certified = CertifiedKey::new(chain, signing_key);
        // ring's keys all know their public half, so "unknown" never lets a pair through.
        certified.keys_match().map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => pair("the key is not the certificate's".to_owned()),
            other => pair(format!("the certificate does not parse: {other}")),
        })?;
        Ok(Arc::new(certified))
    }
}

/// The crypto provider the server's TLS runs on: ring, the one compiled in (aws-lc-rs
/// would need cmake and a large C build).
pub fn provider() -> CryptoProvider {
    // rustls 0.23.48 deprecates ring's provider only because it lacks post-quantum key
    // exchange.
    #[allow(deprecated)]
    rustls::crypto::ring::default_provider()
}

/// Reads a whole PEM file of at most [`MAX_PEM_BYTES`], refusing anything but a regular
/// file (so a path to a device or a pipe neither blocks nor fills memory).
fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read { key, path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(TlsError::NotAFile { key, path: path.to_owned() });
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { key, path: path.to_owned() });
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // The file may have grown since its size was read.
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { key, path: path.to_owned() });
    }
    Ok(bytes)
}

fn pem_error(key: &'static str, path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    use rustls::pki_types::pem::Error;
    let what = match e {
        Error::NoItemsFound if key == "tls_cert" => {
            "no certificate in it (a PEM \"BEGIN CERTIFICATE\" section)".to_owned()
        }
        Error::NoItemsFound => {
            "no private key in it (a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \
             \"BEGIN EC PRIVATE KEY\" section)"
                .to_owned()
        }
        // Other errors name a marker line or a base64 position, never key material.
        other => format!("not valid PEM: {other}"),
    };
    TlsError::Pem { key, path: path.to_owned(), what }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls").join(name)
    }

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles { cert: fixture(cert), key: fixture(key) }
    }

    #[test]
    fn pkcs8_sec1_and_rsa_keys_load() {
        for (cert, key) in [
            ("ec-cert.pem", "ec-key.pem"),
            ("ec-cert.pem", "ec-key-sec1.pem"),
            ("rsa-cert.pem", "rsa-key.pem"),
        ] {
            let loaded = files(cert, key).load().unwrap_or_else(|e| panic!("{cert} + {key}: {e}"));
            assert_eq!(loaded.cert.len(), 1, "{cert}");
        }
    }

    #[test]
    fn a_chain_keeps_its_order_and_a_combined_file_works() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let read = |name: &str| std::fs::read_to_string(fixture(name)).expect("a fixture");
        // The server's certificate, then an "intermediate".
        let chain = dir.path().join("chain.pem");
        std::fs::write(&chain, read("ec-cert.pem") + &read("rsa-cert.pem")).expect("written");
        let loaded = TlsFiles { cert: chain.clone(), key: fixture("ec-key.pem") }.load().expect("loads");
        assert_eq!(loaded.cert.len(), 2);
        // One file holding the key and the certificate serves as both.
        let both = dir.path().join("both.pem");
        std::fs::write(&both, read("ec-key.pem") + &read("ec-cert.pem")).expect("written");
        TlsFiles { cert: both.clone(), key: both }.load().expect("a combined file loads");
    }

    #[test]
    fn every_bad_pair_is_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("written");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n")
            .expect("written");
        let not_der = dir.path().join("not-der.pem");
        std::fs::write(&not_der, "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n")
            .expect("written");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; usize::try_from(MAX_PEM_BYTES).expect("fits") + 1]).expect("written");
        let missing = dir.path().join("missing.pem");
        let dirpath = dir.path().to_owned();
        let cases: [(TlsFiles, &str); 9] = [
            (TlsFiles { cert: missing.clone(), key: fixture("ec-key.pem") }, "tls_cert"),
            (TlsFiles { cert: fixture("ec-cert.pem"), key: missing }, "tls_key"),
            (TlsFiles { cert: dirpath, key: fixture("ec-key.pem") }, "not a regular file"),
            (TlsFiles { cert: big, key: fixture("ec-key.pem") }, "larger than"),
            (TlsFiles { cert: garbage.clone(), key: fixture("ec-key.pem") }, "no certificate"),
            (TlsFiles { cert: fixture("ec-cert.pem"), key: garbage }, "no private key"),
            (TlsFiles { cert: broken, key: fixture("ec-key.pem") }, "not valid PEM"),
            (TlsFiles { cert: not_der, key: fixture("ec-key.pem") }, "does not parse"),
            (files("ec-cert.pem", "other-key.pem"), "not the certificate's"),
        ];
        for (files, named) in cases {
            let error = files.load().expect_err(named).to_string();
            assert!(error.contains(named), "{files:?}: {error}");
        }
        // A key of one kind with a certificate of another.
        let error = files("rsa-cert.pem", "ec-key.pem").load().expect_err("mismatch").to_string();
        assert!(error.contains("not the certificate's"), "{error}");
    }
}
