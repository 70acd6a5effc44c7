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

use crate::control::{ControlConfig, HttpConfig};
use crate::types::TopicFilter;

mod auth;
mod limits;
mod listener;

pub use auth::{AuthConfig, HookFailure, HttpHookConfig};
pub use limits::LimitsConfig;
pub use listener::{
    CertUsername, ClientAuth, ListenerConfig, ListenerKind, TlsConfig,
    DEFAULT_HANDSHAKE_TIMEOUT_SECS, DEFAULT_WS_PATH,
};

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
    /// Bounds on connections, sessions, retained messages, rates, memory.
    pub limits: LimitsConfig,
    /// The admin API on a Unix socket (and optionally TCP).
    pub control: ControlConfig,
    /// Health probes and Prometheus metrics.
    pub http: HttpConfig,
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
            limits: LimitsConfig::default(),
            control: ControlConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
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
    /// Bytes (payload and topic) of those queued messages, per session:
    /// newer messages beyond are dropped and counted
    /// (`mqttd_queue_byte_limit_drops_total`). 0: no bound.
    pub max_queued_bytes: usize,
    /// QoS 0 messages waiting to be written to a slow client before newer
    /// ones are dropped and counted.
    pub max_pending_qos0_messages: usize,
    /// Payload bytes of those QoS 0 messages: the count alone lets a few
    /// thousand large messages hold gigabytes for one stalled client.
    pub max_pending_qos0_bytes: usize,
    /// Whether retained messages are kept.
    pub retain_available: bool,
    /// Largest keep alive granted, in seconds; a client asking for more
    /// (or for none) gets this one: through Server Keep Alive for MQTT
    /// 5.0; a 3.1.x client, which cannot be told, is closed after 1.5 ×
    /// this of silence. 0 grants whatever the client asks.
    pub max_keepalive_secs: u16,
    /// Time one write to a client may take; a client that stops reading
    /// is closed when it passes (`mqttd_write_timeouts_total`).
    pub write_timeout_secs: u64,
    /// Time a packet, once its first byte has arrived, has to arrive
    /// whole (after CONNECT); then the connection is closed
    /// (`mqttd_packet_timeouts_total`).
    pub packet_timeout_secs: u64,
    /// Topic aliases a MQTT 5.0 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Incoming QoS 2 messages a MQTT 5.0 client may have unreleased at
    /// once (its Receive Maximum towards the broker).
    pub receive_maximum: u16,
    /// Topic filters the broker refuses to subscribe (SUBACK 0x80): any
    /// requested filter covered by one of these.
    pub deny_subscribe: Vec<String>,
    /// Seconds between two rounds of `$SYS` topics (Mosquitto's
    /// `sys_interval`, see [`crate::sys_topics`]); 0: none published.
    pub sys_interval_secs: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size_bytes: crate::codec::decode::DEFAULT_MAX_PACKET_SIZE,
            connect_timeout_secs: 10,
            max_inflight_messages: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_pending_qos0_messages: 10_000,
            max_pending_qos0_bytes: 16 * 1024 * 1024,
            retain_available: true,
            max_keepalive_secs: 0,
            write_timeout_secs: 15,
            packet_timeout_secs: 60,
            topic_alias_maximum: 64,
            receive_maximum: 1024,
            deny_subscribe: Vec::new(),
            sys_interval_secs: 0,
        }
    }
}

impl MqttConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    pub fn packet_timeout(&self) -> Duration {
        Duration::from_secs(self.packet_timeout_secs)
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
pub struct StorageConfig {
    /// Directory for broker state: persistent sessions, their queues and
    /// retained messages (docs/storage.md).
    pub data_dir: PathBuf,
    /// What an acknowledgement promises (see [`Durability`]).
    pub durability: Durability,
    /// `batched`: the longest time between two fsyncs, so the most a
    /// power cut can lose.
    pub flush_interval_ms: u64,
    /// Bytes the store may take on disk; messages that would go beyond
    /// are dropped and counted. 0: no bound.
    pub max_disk_bytes: u64,
}

/// When what an acknowledgement covers reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Fsynced before the PUBACK, PUBREC, PUBCOMP, SUBACK or CONNACK is
    /// sent (one fsync for every write that arrived meanwhile).
    Sync,
    /// Written to the OS before the acknowledgement (a kill -9 loses
    /// nothing acknowledged), fsynced every `flush_interval_ms`.
    Batched,
    /// Nothing on disk: a restart loses every session and retained message.
    Memory,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Batched => "batched",
            Durability::Memory => "memory",
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("/var/lib/mqttd"),
            durability: Durability::Batched,
            flush_interval_ms: 1000,
            max_disk_bytes: 0,
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
            let message = e.into_inner().to_string();
            // serde_yaml repeats the key in front of its own message.
            let message = message
                .strip_prefix(&format!("{key}: "))
                .map(str::to_string)
                .unwrap_or(message);
            invalid(key, message)
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
        self.check_addresses()?;
        self.auth.validate()?;
        self.limits.validate()?;
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
        if m.receive_maximum == 0 {
            return Err(("mqtt.receive_maximum".into(), "must be at least 1".into()));
        }
        for (key, secs) in [
            ("mqtt.connect_timeout_secs", m.connect_timeout_secs),
            ("mqtt.write_timeout_secs", m.write_timeout_secs),
            ("mqtt.packet_timeout_secs", m.packet_timeout_secs),
        ] {
            if secs == 0 {
                return Err((key.into(), "must be at least 1".into()));
            }
        }
        for (i, f) in m.deny_subscribe.iter().enumerate() {
            if let Err(e) = TopicFilter::new(f) {
                return Err((format!("mqtt.deny_subscribe[{i}]"), e.to_string()));
            }
        }
        let st = &self.storage;
        if st.durability != Durability::Memory {
            if st.data_dir.as_os_str().is_empty() {
                return Err(("storage.data_dir".into(), "must not be empty".into()));
            }
            if !(1..=60_000).contains(&st.flush_interval_ms) {
                return Err((
                    "storage.flush_interval_ms".into(),
                    "must be between 1 and 60000".into(),
                ));
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

    /// No two sockets of the broker (listeners, the HTTP server, the TCP
    /// control API) on one address: the second bind would fail at start.
    /// Port 0 (any free port) never clashes; an unspecified address
    /// (`0.0.0.0`, `::`) clashes with every address of its port.
    fn check_addresses(&self) -> Result<(), (String, String)> {
        let mut seen: Vec<(String, SocketAddr)> = Vec::new();
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("listeners[{i}].bind"), l.bind));
        let http = self
            .http
            .enabled
            .then(|| ("http.bind".to_string(), self.http.bind));
        let control = self
            .control
            .tcp
            .as_ref()
            .map(|t| ("control.tcp.bind".to_string(), t.bind));
        for (key, addr) in listeners.chain(http).chain(control) {
            if addr.port() == 0 {
                continue;
            }
            let clash = seen.iter().find(|(_, other)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            if let Some((other_key, other)) = clash {
                return Err((
                    key,
                    format!("{addr} clashes with {other_key} ({other}): one port, one socket"),
                ));
            }
            seen.push((key, addr));
        }
        Ok(())
    }

    /// Checks the configuration again after command-line overrides
    /// (`--listen`, `--http`, `--data-dir`): they may clash with the file.
    pub fn revalidate(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })
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

        let err = parse("listeners:\n  - bind: nowhere\n")
            .unwrap_err()
            .to_string();
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
        for key in ["write_timeout_secs", "packet_timeout_secs"] {
            let err = parse(&format!("mqtt:\n  {key}: 0\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("mqtt.{key}")), "{err}");
        }
    }

    #[test]
    fn two_sockets_on_one_address_are_refused() {
        let err = parse(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:1883\n  - name: b\n    kind: ws\n    bind: 0.0.0.0:1883\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listeners[1].bind") && err.contains("listeners[0].bind"),
            "{err}"
        );
        let err = parse("listeners:\n  - bind: 0.0.0.0:8080\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.bind"), "{err}");
        // Off, the HTTP server's address is free; port 0 never clashes.
        parse("listeners:\n  - bind: 0.0.0.0:8080\nhttp:\n  enabled: false\n").unwrap();
        parse(
            "listeners:\n  - name: a\n    bind: 127.0.0.1:0\n  - name: b\n    bind: 127.0.0.1:0\n",
        )
        .unwrap();
    }

    #[test]
    fn listen_override_replaces_tcp_listeners() {
        let mut c = Config::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        c.override_listeners(&[a]);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, a);
    }
}
