//! TLS client configuration (rustls with the ring provider) for `--tls`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// What a TLS dial needs: the connector and the name the certificate must
/// carry.
#[derive(Clone)]
pub struct TlsTarget {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A client trusting only the CA certificates in `cafile` (PEM). Session
/// resumption is off, so every connection pays a full handshake: the
/// connection-rate figure is then the same whatever ticket policy the
/// broker has.
pub fn client(cafile: &Path, server_name: &str) -> anyhow::Result<TlsTarget> {
    let pem = std::fs::read(cafile)
        .with_context(|| format!("cannot read CA file {}", cafile.display()))?;
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("bad PEM in {}", cafile.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("unusable CA certificate in {}", cafile.display()))?;
        found += 1;
    }
    if found == 0 {
        bail!("{} holds no PEM certificate", cafile.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let server_name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("invalid TLS server name {server_name:?}"))?;
    Ok(TlsTarget {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}
