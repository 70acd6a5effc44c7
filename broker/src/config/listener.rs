//! The `listeners:` entries of the configuration: kind, address, TLS
//! settings, per-listener anonymous access, WebSocket path, and the
//! listener's connection limit and accept rate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The transport a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Plain MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }

    /// Whether the listener needs a `tls` section.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// Whether the listener speaks WebSocket.
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

/// The HTTP path WebSocket listeners serve when none is configured.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs, metrics and `mqttctl` (defaults to `KIND-PORT`).
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: ListenerKind,
    pub bind: SocketAddr,
    /// Certificates and client authentication (`tls` and `wss` only).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Overrides `auth.allow_anonymous` for this listener.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// The HTTP path of the WebSocket endpoint (`ws` and `wss` only;
    /// default `/mqtt`).
    #[serde(default)]
    pub path: Option<String>,
    /// Connections open at once through this listener; beyond, refused
    /// like `limits.max_connections` (CONNACK 0x97 / 0x03, counted with
    /// `reason="listener_max_connections"`). 0 (default): only the global
    /// bound applies.
    #[serde(default)]
    pub max_connections: u32,
    /// New connections accepted per second, with a burst of a tenth of a
    /// second's worth (at least 1). Beyond, the listener stops accepting
    /// for a moment and connections wait in the kernel's backlog (see
    /// [`crate::admission::rate`] for why they are not refused). 0
    /// (default): no limit.
    #[serde(default)]
    pub max_accept_rate: u32,
}

/// Highest `max_accept_rate` accepted: beyond, the accept loop's own cost
/// is the bound.
pub const MAX_ACCEPT_RATE: u32 = 1_000_000;

fn default_kind() -> ListenerKind {
    ListenerKind::Tcp
}

impl ListenerConfig {
    pub fn tcp(name: &str, bind: SocketAddr) -> Self {
        ListenerConfig {
            name: name.to_string(),
            kind: ListenerKind::Tcp,
            bind,
            tls: None,
            allow_anonymous: None,
            path: None,
            max_connections: 0,
            max_accept_rate: 0,
        }
    }

    /// The WebSocket path this listener serves.
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_WS_PATH)
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        match (&self.tls, self.kind.is_tls()) {
            (None, true) => return err("tls", "a tls or wss listener needs a `tls` section"),
            (Some(_), false) => {
                return err("tls", "only tls and wss listeners take a `tls` section")
            }
            (Some(t), true) => t.validate(&format!("{key}.tls"))?,
            (None, false) => {}
        }
        if self.max_accept_rate > MAX_ACCEPT_RATE {
            return err(
                "max_accept_rate",
                &format!("must be at most {MAX_ACCEPT_RATE} (0: no limit)"),
            );
        }
        if let Some(path) = &self.path {
            if !self.kind.is_websocket() {
                return err("path", "only ws and wss listeners take a `path`");
            }
            if !path.starts_with('/') {
                return err("path", "must start with `/`");
            }
        }
        Ok(())
    }
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is requested.
    #[default]
    None,
    /// A certificate is requested; if sent it must chain to the client CA.
    Optional,
    /// Connections without a valid client certificate are refused.
    Required,
}

/// Where a client's username comes from when it shows a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertUsername {
    /// The CONNECT username (and password) are used as sent.
    #[default]
    None,
    /// The certificate subject's common name.
    Cn,
    /// The certificate's first DNS or e-mail subject alternative name.
    San,
}

/// Default time a client has to finish the TLS (and WebSocket) handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, server certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// ALPN protocols offered, in order of preference (none by default).
    #[serde(default)]
    pub alpn: Vec<String>,
    #[serde(default)]
    pub username_from_cert: CertUsername,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
}

fn default_handshake_timeout() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_SECS
}

impl TlsConfig {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        if self.client_auth != ClientAuth::None && self.client_ca_file.is_none() {
            return err(
                "client_ca_file",
                "client_auth optional or required needs a client CA",
            );
        }
        if self.client_auth == ClientAuth::None && self.client_ca_file.is_some() {
            return err(
                "client_auth",
                "a client CA is set: choose optional or required",
            );
        }
        if self.username_from_cert != CertUsername::None && self.client_auth == ClientAuth::None {
            return err(
                "username_from_cert",
                "needs client_auth optional or required",
            );
        }
        if self.handshake_timeout_secs == 0 {
            return err("handshake_timeout_secs", "must be at least 1");
        }
        for (i, p) in self.alpn.iter().enumerate() {
            if p.is_empty() || p.len() > 255 {
                return err(&format!("alpn[{i}]"), "must be 1 to 255 bytes");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn listener_kinds_and_tls_options_parse() {
        let c = parse(
            "listeners:\n  - {name: a, kind: tcp, bind: 127.0.0.1:1, allow_anonymous: false}\n  - name: b\n    kind: wss\n    bind: 127.0.0.1:2\n    path: /ws\n    tls:\n      cert_file: c.pem\n      key_file: k.pem\n      client_ca_file: ca.pem\n      client_auth: required\n      alpn: [mqtt]\n      username_from_cert: cn\n",
        )
        .unwrap();
        assert_eq!(c.listeners[0].allow_anonymous, Some(false));
        let b = &c.listeners[1];
        assert_eq!(b.kind, ListenerKind::Wss);
        assert_eq!(b.ws_path(), "/ws");
        let t = b.tls.as_ref().unwrap();
        assert_eq!(t.client_auth, ClientAuth::Required);
        assert_eq!(t.username_from_cert, CertUsername::Cn);
        assert_eq!(t.handshake_timeout(), Duration::from_secs(10));
        assert_eq!((b.max_connections, b.max_accept_rate), (0, 0));
        let c =
            parse("listeners:\n  - {bind: 127.0.0.1:1, max_connections: 5, max_accept_rate: 20}\n")
                .unwrap();
        assert_eq!(
            (
                c.listeners[0].max_connections,
                c.listeners[0].max_accept_rate
            ),
            (5, 20)
        );
    }

    #[test]
    fn listener_semantic_errors_name_key() {
        let cases = [
            ("  - {kind: tls, bind: 127.0.0.1:1}\n", "listeners[0].tls"),
            ("  - {kind: tcp, bind: 127.0.0.1:1, tls: {cert_file: c, key_file: k}}\n", "listeners[0].tls"),
            ("  - {kind: tcp, bind: 127.0.0.1:1, path: /x}\n", "listeners[0].path"),
            ("  - {kind: ws, bind: 127.0.0.1:1, path: x}\n", "listeners[0].path"),
            ("  - {kind: tls, bind: 127.0.0.1:1, tls: {cert_file: c, key_file: k, client_auth: required}}\n", "listeners[0].tls.client_ca_file"),
            ("  - {kind: tls, bind: 127.0.0.1:1, tls: {cert_file: c, key_file: k, username_from_cert: san}}\n", "listeners[0].tls.username_from_cert"),
            ("  - {kind: tls, bind: 127.0.0.1:1, tls: {cert_file: c, key_file: k, handshake_timeout_secs: 0}}\n", "listeners[0].tls.handshake_timeout_secs"),
            ("  - {bind: 127.0.0.1:1, max_accept_rate: 1000001}\n", "listeners[0].max_accept_rate"),
            ("  - {bind: 127.0.0.1:1, max_accept_rate: -5}\n", "listeners[0].max_accept_rate"),
            ("  - {bind: 127.0.0.1:1, max_connections: many}\n", "listeners[0].max_connections"),
        ];
        for (yaml, key) in cases {
            let err = parse(&format!("listeners:\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }
}
