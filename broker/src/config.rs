//! The broker's configuration: the YAML file's schema, its defaults and its
//! validation.
//!
//! Every key has a default, so an empty file (or none at all) gives a
//! working broker: plain MQTT on 0.0.0.0:1883, anonymous clients allowed.
//! Errors name the file, the key and what is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::types::TopicFilter;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Network listeners; the default is one plain listener on 0.0.0.0:1883.
    pub listeners: Vec<ListenerConfig>,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub session_manager: PoolConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::tcp("mqtt", default_bind())],
            log: LogConfig::default(),
            mqtt: MqttConfig::default(),
            session_manager: PoolConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}

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
}

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
        }
    }

    /// The WebSocket path this listener serves.
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_WS_PATH)
    }

    fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        match (&self.tls, self.kind.is_tls()) {
            (None, true) => return err("tls", "a tls or wss listener needs a `tls` section"),
            (Some(_), false) => {
                return err("tls", "only tls and wss listeners take a `tls` section")
            }
            (Some(t), true) => t.validate(&format!("{key}.tls"))?,
            (None, false) => {}
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

    fn validate(&self, key: &str) -> Result<(), (String, String)> {
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter, e.g. `info` or `mqttd=debug,info`. The
    /// `RUST_LOG` environment variable, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Human,
        }
    }
}

/// Protocol limits and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest packet accepted from a client, fixed header included.
    pub max_packet_size_bytes: u32,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Outgoing QoS 1 and 2 messages unacknowledged at once, per session.
    pub max_inflight_messages: u16,
    /// Messages held per session beyond the in-flight window (while the
    /// client is offline or slow); newer messages are dropped and counted.
    pub max_queued_messages: usize,
    /// QoS 0 messages waiting to be written to a slow client before newer
    /// ones are dropped and counted.
    pub max_pending_qos0_messages: usize,
    /// Whether retained messages are kept.
    pub retain_available: bool,
    /// Topic filters the broker refuses to subscribe (SUBACK 0x80): any
    /// requested filter covered by one of these.
    pub deny_subscribe: Vec<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size_bytes: crate::codec::decode::DEFAULT_MAX_PACKET_SIZE,
            connect_timeout_secs: 10,
            max_inflight_messages: 32,
            max_queued_messages: 1000,
            max_pending_qos0_messages: 10_000,
            retain_available: true,
            deny_subscribe: Vec::new(),
        }
    }
}

impl MqttConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

/// Largest session-manager pool accepted (config and `mqttctl pool resize`).
pub const MAX_POOL_SIZE: usize = 1024;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Number of session-manager workers; 0 means the number of CPUs.
    pub pool_size: usize,
}

impl PoolConfig {
    /// The pool size to start with.
    pub fn effective_size(&self) -> usize {
        if self.pool_size == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.pool_size
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that send no username (listeners may override).
    pub allow_anonymous: bool,
    /// `user:hash` lines (see `docs/security.md`); reloaded on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// Topic access rules (see `docs/security.md`); reloaded on SIGHUP.
    pub acl_file: Option<PathBuf>,
    /// An HTTP endpoint asked for decisions the files do not make.
    pub http_hook: Option<HttpHookConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            http_hook: None,
        }
    }
}

/// What the broker decides when the HTTP hook cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFailure {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHookConfig {
    /// `http://` or `https://` URL that receives the JSON POSTs.
    pub url: String,
    /// Ask the hook whether a client may connect.
    #[serde(default = "yes")]
    pub authenticate: bool,
    /// Ask the hook whether a client may publish or subscribe.
    #[serde(default = "yes")]
    pub authorize: bool,
    /// Time allowed for one request, connection included.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// How long an allow/deny answer to an authorization question is
    /// reused; 0 disables the cache.
    #[serde(default = "default_hook_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// Most answers kept in the cache.
    #[serde(default = "default_hook_cache_entries")]
    pub cache_max_entries: usize,
    /// The decision when the hook is down, times out or answers badly.
    #[serde(default)]
    pub on_error: HookFailure,
}

fn yes() -> bool {
    true
}
fn default_hook_timeout_ms() -> u64 {
    2000
}
fn default_hook_cache_ttl() -> u64 {
    30
}
fn default_hook_cache_entries() -> usize {
    10_000
}

impl HttpHookConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("auth.http_hook.{k}");
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err((key("url"), "must be an http:// or https:// URL".into()));
        }
        if self.timeout_ms == 0 {
            return Err((key("timeout_ms"), "must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory for broker state.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("/var/lib/mqttd"),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates YAML text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        // An empty file is a valid config made only of defaults.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(key, e.into_inner().to_string())
        })?;
        config
            .validate()
            .map_err(|(key, message)| invalid(key.to_string(), message))?;
        Ok(config)
    }

    /// Semantic checks serde cannot express; errors are `(key, message)`.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.listeners.is_empty() {
            return Err(("listeners".into(), "at least one listener is needed".into()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if !l.name.is_empty() && !names.insert(l.name.as_str()) {
                return Err((
                    format!("listeners[{i}].name"),
                    format!("duplicate listener name `{}`", l.name),
                ));
            }
            l.validate(&format!("listeners[{i}]"))?;
        }
        if let Some(hook) = &self.auth.http_hook {
            hook.validate()?;
        }
        let m = &self.mqtt;
        if m.max_packet_size_bytes < 64 {
            return Err((
                "mqtt.max_packet_size_bytes".into(),
                "must be at least 64".into(),
            ));
        }
        if m.max_inflight_messages == 0 {
            return Err((
                "mqtt.max_inflight_messages".into(),
                "must be at least 1".into(),
            ));
        }
        if m.connect_timeout_secs == 0 {
            return Err((
                "mqtt.connect_timeout_secs".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, f) in m.deny_subscribe.iter().enumerate() {
            if let Err(e) = TopicFilter::new(f) {
                return Err((format!("mqtt.deny_subscribe[{i}]"), e.to_string()));
            }
        }
        if self.session_manager.pool_size > MAX_POOL_SIZE {
            return Err((
                "session_manager.pool_size".into(),
                format!("must be between 0 (number of CPUs) and {MAX_POOL_SIZE}"),
            ));
        }
        Ok(())
    }

    /// Replaces the plain TCP listeners with `binds` (the `--listen` flag).
    pub fn override_listeners(&mut self, binds: &[SocketAddr]) {
        if binds.is_empty() {
            return;
        }
        self.listeners.retain(|l| l.kind != ListenerKind::Tcp);
        for (i, bind) in binds.iter().enumerate() {
            let name = if i == 0 {
                "mqtt".to_string()
            } else {
                format!("mqtt-{i}")
            };
            self.listeners.push(ListenerConfig::tcp(&name, *bind));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, default_bind());
        assert!(c.auth.allow_anonymous);
    }

    #[test]
    fn errors_name_file_and_key() {
        let err = parse("mqtt:\n  max_inflight_messages: lots\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.yaml"), "{msg}");
        assert!(msg.contains("mqtt.max_inflight_messages"), "{msg}");

        let err = parse("mqtt:\n  bogus: 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");

        let err = parse("listeners:\n  - bind: nowhere\n").unwrap_err().to_string();
        assert!(err.contains("listeners[0].bind"), "{err}");
    }

    #[test]
    fn semantic_errors_name_key() {
        let err = parse("mqtt:\n  deny_subscribe: ['a/#/b']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.deny_subscribe[0]"), "{err}");
        let err = parse("session_manager:\n  pool_size: 5000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("session_manager.pool_size"), "{err}");
    }

    #[test]
    fn listen_override_replaces_tcp_listeners() {
        let mut c = Config::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        c.override_listeners(&[a]);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, a);
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
        ];
        for (yaml, key) in cases {
            let err = parse(&format!("listeners:\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn auth_section_parses_and_checks_hook_url() {
        let c = parse("auth:\n  allow_anonymous: false\n  password_file: /etc/pw\n  acl_file: /etc/acl\n  http_hook: {url: 'http://127.0.0.1:9/auth', on_error: allow}\n").unwrap();
        assert!(!c.auth.allow_anonymous);
        let hook = c.auth.http_hook.unwrap();
        assert_eq!(hook.on_error, HookFailure::Allow);
        assert!(hook.authenticate && hook.authorize);
        let err = parse("auth:\n  http_hook: {url: 'ftp://x'}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.http_hook.url"), "{err}");
    }
}
