//! TLS for listeners: build a rustls server configuration from PEM files
//! (TLS 1.2 and 1.3 only, ring provider, optional ALPN and client
//! certificates), accept handshakes with a timeout, and swap in new
//! certificates without dropping existing connections.
//!
//! A [`TlsServer`] holds the current `Arc<ServerConfig>` behind a lock;
//! every handshake takes a clone of it, so a reload affects only new
//! connections. Reloads happen on SIGHUP and when the files' modification
//! times or sizes change (see `reload.rs`); a reload that fails keeps the
//! previous certificate.
//!
//! - [`pem`]: reading PEM files;
//! - [`identity`]: the username a client certificate stands for.

mod failure;
pub mod identity;
pub mod pem;

pub use failure::HandshakeFailure;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::CertUser;
use crate::config::{ClientAuth, TlsConfig};

/// Why a TLS configuration cannot be built; every error names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not valid PEM: {message}")]
    BadPem { path: PathBuf, message: String },
    #[error("{path}: no PEM certificate found")]
    NoCertificates { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, RSA or EC expected)")]
    NoKey { path: PathBuf },
    #[error("{path}: unusable private key: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("{path}: unusable certificate: {message}")]
    BadCert { path: PathBuf, message: String },
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: unusable client CA: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The crypto provider for every listener: ring, whatever other rustls
/// providers the build happens to enable.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration `cfg` describes.
pub fn build_server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let certified = load_certified_key(&cfg.cert_file, &cfg.key_file, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (&cfg.client_ca_file, cfg.client_auth) {
        (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
            let roots = Arc::new(pem::load_roots(ca)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if cfg.client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::BadCa {
                path: ca.clone(),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        // Validation guarantees a CA whenever client auth is on.
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = cfg.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// The certificate chain and its key, checked to belong together.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = pem::load_certs(cert_file)?;
    let key = pem::load_key(key_file)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_file.to_path_buf(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        // ring keys always know their public key; if one ever does not,
        // the handshake itself will fail visibly.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
            })
        }
        Err(e) => Err(TlsError::BadCert {
            path: cert_file.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A listener's TLS state: its settings and the configuration in use.
pub struct TlsServer {
    listener: Arc<str>,
    cfg: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' stamps when last loaded (or tried).
    stamps: Mutex<Vec<Stamp>>,
}

impl TlsServer {
    /// Loads the certificates; fails with a message naming the bad file.
    pub fn new(listener: &str, cfg: &TlsConfig) -> Result<TlsServer, TlsError> {
        let stamps = Mutex::new(Self::file_stamps(cfg));
        let config = build_server_config(cfg)?;
        Ok(TlsServer {
            listener: listener.into(),
            cfg: cfg.clone(),
            current: RwLock::new(Arc::new(config)),
            stamps,
        })
    }

    fn file_stamps(cfg: &TlsConfig) -> Vec<Stamp> {
        let mut files = vec![cfg.cert_file.as_path(), cfg.key_file.as_path()];
        files.extend(cfg.client_ca_file.as_deref());
        files.into_iter().map(stamp).collect()
    }

    pub fn listener(&self) -> &str {
        &self.listener
    }

    pub fn settings(&self) -> &TlsConfig {
        &self.cfg
    }

    /// The configuration new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Re-reads the files; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.stamps.lock() = Self::file_stamps(&self.cfg);
        let config = build_server_config(&self.cfg)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// Reloads if a file changed since the last attempt; `None` if none did.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        if Self::file_stamps(&self.cfg) == *self.stamps.lock() {
            return None;
        }
        Some(self.reload())
    }

    /// Runs the server side of a handshake (bounded by the listener's
    /// handshake timeout) and works out the certificate username.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<(TlsStream<IO>, CertUser)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.server_config());
        let stream = tokio::time::timeout(self.cfg.handshake_timeout(), acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let (_, conn) = stream.get_ref();
        let user = identity::cert_user(self.cfg.username_from_cert, conn.peer_certificates());
        Ok((stream, user))
    }
}
