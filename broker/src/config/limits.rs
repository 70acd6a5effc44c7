//! The `limits:` section of the configuration: the bounds that keep the
//! broker inside its budget whatever its clients do (connections,
//! sessions, subscriptions, retained messages, publish rates, memory).
//!
//! Each key has a documented default, a metric counting the times it was
//! hit and the MQTT reason code the specification gives; the README's
//! "Limits" table lists them with their Mosquitto and EMQX equivalents.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Longest `publish_rate_grace_secs` accepted: a day is already "never"
/// for a client, and a bound keeps instant arithmetic from overflowing.
const MAX_RATE_GRACE_SECS: u64 = 86_400;

/// Shortest client id every server must accept [MQTT-3.1.3-5]: a smaller
/// `max_client_id_len` would refuse conforming clients.
pub const MIN_CLIENT_ID_LEN: usize = 23;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Network connections open at once, all listeners together (TLS and
    /// WebSocket handshakes included). Beyond, a connection is refused
    /// cheaply: CONNACK 0x97 quota exceeded (5.0) / 0x03 server
    /// unavailable (3.1.x), counted in
    /// `mqttd_connections_refused_total{reason="max_connections"}`.
    /// 0 (the default): the process's open-file limit minus a reserve for
    /// the store, the control and HTTP ports and refusals in progress
    /// (see [`crate::admission::open_files`]), so that the default is a
    /// real bound and the broker never runs out of descriptors for its
    /// own files.
    pub max_connections: u32,
    /// Sessions in the session table, online and offline. A CONNECT that
    /// would create one more is refused (CONNACK 0x97 quota exceeded; 3.1.1:
    /// 0x03 server unavailable); resuming or taking over an existing
    /// session always goes through. Default 100,000: an offline session
    /// costs about 2.2 KB before its queue (bench/README.md), so the bare
    /// sessions stay near 220 MB, well inside an edge box.
    pub max_sessions: usize,
    /// The longest session expiry granted, in seconds. A 5.0 client asking
    /// for more (0xFFFFFFFF "never" included) gets this, and is told so
    /// by the CONNACK's Session Expiry Interval (MQTT 5.0 section
    /// 3.2.2.3.2); one that sets more at DISCONNECT gets it too. A 3.1.1
    /// persistent session (clean_session=0 asks for "never") gets this
    /// too, as Mosquitto's `persistent_client_expiration` does, so that
    /// abandoned client ids do not keep their queues forever. Default 7
    /// days: a device off for a long weekend still resumes its session.
    /// 4294967295 lifts the cap ("never" is granted again).
    pub max_session_expiry_secs: u32,
    /// Subscriptions one session may hold. New filters of a SUBSCRIBE past
    /// it get SUBACK 0x97 quota exceeded (3.1.1: 0x80); subscribing again to
    /// a filter the session has does not count twice. A session restored
    /// with more (the limit lowered since) keeps them. Default 1,000: far
    /// above a device's needs, enough for gateways, and it bounds the
    /// router entries one client can make.
    pub max_subscriptions_per_client: usize,
    /// Longest client id, in bytes: longer ones get CONNACK 0x85 client
    /// identifier not valid (3.1.1: 0x02). At least 23 [MQTT-3.1.3-5].
    /// Default 256: UUIDs and cloud device ids (128) fit; the id is a key
    /// of the session table, of every stored message and of log lines.
    pub max_client_id_len: usize,
    /// Longest username, in bytes: longer ones get CONNACK 0x86 bad user
    /// name or password (3.1.1: 0x04), before any password is checked.
    /// Default 256: the login throttle remembers up to
    /// `auth.max_tracked_failures` usernames, which this bounds.
    pub max_username_len: usize,
    /// Longest topic name or filter, in bytes (PUBLISH, SUBSCRIBE, will).
    /// Default 1,024: topics are held in every queued and retained message
    /// and in topic aliases.
    pub max_topic_len: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter, as
    /// sent (a `$share/GROUP/` prefix counts two). Default 128, as EMQX:
    /// the router walks one node per level.
    pub max_topic_levels: usize,
    /// Retained messages kept at most (broker-wide; 100,000 by default,
    /// as emqttd's retainer had). A retained publish
    /// to a topic that holds none yet is then not retained (it is still
    /// delivered to current subscribers, and acknowledged as usual);
    /// replacing or clearing a retained topic is always allowed.
    /// Counted in `mqttd_retained_refused_total{limit="messages"}`.
    /// 0: no bound.
    pub max_retained_messages: usize,
    /// Bytes (payload and topic) of the retained messages at most, with
    /// the same rule as `max_retained_messages`
    /// (`mqttd_retained_refused_total{limit="bytes"}`). 0: no bound.
    pub max_retained_bytes: u64,
    /// PUBLISH packets per second one connection may send; past its
    /// allowance (a token bucket holding one second of the rate, so a
    /// burst of that size passes at once) the broker stops reading the
    /// connection until the allowance returns, so TCP slows the client
    /// down. 0: no bound.
    pub max_publish_rate_messages: u32,
    /// Bytes of PUBLISH packets (as sent on the wire) per second one
    /// connection may send, with the same rule. 0: no bound.
    pub max_publish_rate_bytes: u64,
    /// How long a connection may stay over its publish rate (slowed
    /// without its allowance ever filling up again) before it is
    /// disconnected: DISCONNECT 0x96 "message rate too high" for MQTT
    /// 5.0, a plain close for 3.1.x (`mqttd_publish_rate_disconnects_total`).
    /// 0: never disconnected, only slowed.
    pub publish_rate_grace_secs: u64,
    /// The memory budget for the message copies sessions hold (delivery
    /// mailboxes, queues, in-flight windows, unwritten QoS 0): see
    /// `crate::budget`. Near it, QoS 0 to slow subscribers is dropped
    /// first (80 %), then QoS 1/2 for offline sessions is refused (90 %),
    /// and a 5.0 publisher whose message no session could take gets
    /// 0x97 quota exceeded. `auto` (the default): half of the machine's
    /// memory or of the cgroup's limit, whichever is smaller; 0: no
    /// budget (copies are still counted).
    pub max_memory_bytes: MemoryBytes,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 0,
            max_sessions: 100_000,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_subscriptions_per_client: 1_000,
            max_client_id_len: 256,
            max_username_len: 256,
            max_topic_len: 1024,
            max_topic_levels: 128,
            max_retained_messages: 100_000,
            max_retained_bytes: 64 * 1024 * 1024,
            max_publish_rate_messages: 0,
            max_publish_rate_bytes: 0,
            publish_rate_grace_secs: 60,
            max_memory_bytes: MemoryBytes::Auto,
        }
    }
}

/// The smallest budget accepted: below it a few in-flight windows of
/// large messages would fill it.
pub const MIN_MEMORY_BYTES: u64 = 1024 * 1024;

/// `limits.max_memory_bytes`: `auto` or a number of bytes (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryBytes {
    #[default]
    Auto,
    Bytes(u64),
}

impl MemoryBytes {
    /// The budget in bytes (0: none); `auto` is worked out from the
    /// machine (see [`auto_memory_budget`]).
    pub fn resolve(self) -> u64 {
        match self {
            MemoryBytes::Auto => auto_memory_budget(),
            MemoryBytes::Bytes(n) => n,
        }
    }
}

impl<'de> Deserialize<'de> for MemoryBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MemoryBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes (0: no budget) or `auto`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemoryBytes, E> {
                Ok(MemoryBytes::Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MemoryBytes, E> {
                u64::try_from(v)
                    .map(MemoryBytes::Bytes)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemoryBytes, E> {
                if v == "auto" {
                    Ok(MemoryBytes::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Half of the machine's memory (`MemTotal` in /proc/meminfo) or of the
/// cgroup's limit (v2 `/sys/fs/cgroup/memory.max`, else v1
/// `/sys/fs/cgroup/memory/memory.limit_in_bytes`), whichever is smaller;
/// 0 (no budget) if neither can be read. An unlimited cgroup (`max`, or
/// v1's huge figure) leaves the machine's memory.
pub fn auto_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_total(&t));
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    match (total, cgroup) {
        (Some(a), Some(b)) => a.min(b) / 2,
        (a, b) => a.or(b).unwrap_or(0) / 2,
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl LimitsConfig {
    /// Semantic checks; errors are `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // max_connections: every u32 is meaningful (0 = derived from the
        // open-file limit); serde rejects the rest with the key named.
        for (key, value) in [
            ("limits.max_sessions", self.max_sessions),
            (
                "limits.max_session_expiry_secs",
                self.max_session_expiry_secs as usize,
            ),
            (
                "limits.max_subscriptions_per_client",
                self.max_subscriptions_per_client,
            ),
            ("limits.max_username_len", self.max_username_len),
            ("limits.max_topic_len", self.max_topic_len),
            ("limits.max_topic_levels", self.max_topic_levels),
        ] {
            if value == 0 {
                return Err((key.into(), "must be at least 1".into()));
            }
        }
        if self.max_client_id_len < MIN_CLIENT_ID_LEN {
            return Err((
                "limits.max_client_id_len".into(),
                format!("must be at least {MIN_CLIENT_ID_LEN}, the length every server must accept [MQTT-3.1.3-5]"),
            ));
        }
        // Every max_connections is meaningful (0 = derived from the open-file limit);
        // serde rejects the rest with the key named (see the test).
        if let MemoryBytes::Bytes(n) = self.max_memory_bytes {
            if n != 0 && n < MIN_MEMORY_BYTES {
                return Err((
                    "limits.max_memory_bytes".into(),
                    format!("must be 0 (no budget), `auto` or at least {MIN_MEMORY_BYTES}"),
                ));
            }
        }
        if self.publish_rate_grace_secs > MAX_RATE_GRACE_SECS {
            return Err((
                "limits.publish_rate_grace_secs".into(),
                format!("must be at most {MAX_RATE_GRACE_SECS} (0: never disconnect)"),
            ));
        }
        Ok(())
    }

    /// Whether a per-connection publish rate is set.
    pub fn publish_rate_limited(&self) -> bool {
        self.max_publish_rate_messages > 0 || self.max_publish_rate_bytes > 0
    }

    /// Time over the publish rate before a disconnect; `None`: never.
    pub fn publish_rate_grace(&self) -> Option<Duration> {
        (self.publish_rate_grace_secs > 0)
            .then(|| Duration::from_secs(self.publish_rate_grace_secs))
    }

    /// The session expiry granted to a client asking for `asked` seconds
    /// (a 3.1.1 persistent session asks for "never").
    pub fn granted_session_expiry(&self, asked: u32) -> u32 {
        asked.min(self.max_session_expiry_secs)
    }
}

#[cfg(test)]
mod session_limit_tests {
    use super::*;

    fn parse(yaml: &str) -> Result<(), String> {
        let c: LimitsConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|(key, msg)| format!("{key}: {msg}"))
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(parse("{}"), Ok(()));
    }

    #[test]
    fn bad_values_name_their_key() {
        for key in [
            "max_sessions",
            "max_session_expiry_secs",
            "max_subscriptions_per_client",
            "max_username_len",
            "max_topic_len",
            "max_topic_levels",
        ] {
            let err = parse(&format!("{key}: 0")).unwrap_err();
            assert!(err.starts_with(&format!("limits.{key}:")), "{err}");
        }
        let err = parse("max_client_id_len: 22").unwrap_err();
        assert!(err.starts_with("limits.max_client_id_len:"), "{err}");
        assert_eq!(parse("max_client_id_len: 23"), Ok(()));
    }

    #[test]
    fn expiry_is_capped() {
        let l = LimitsConfig {
            max_session_expiry_secs: 60,
            ..LimitsConfig::default()
        };
        assert_eq!(l.granted_session_expiry(30), 30);
        assert_eq!(l.granted_session_expiry(61), 60);
        assert_eq!(l.granted_session_expiry(u32::MAX), 60);
        let uncapped = LimitsConfig {
            max_session_expiry_secs: u32::MAX,
            ..LimitsConfig::default()
        };
        assert_eq!(uncapped.granted_session_expiry(u32::MAX), u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn max_memory_bytes_values() {
        assert_eq!(
            parse("").unwrap().limits.max_memory_bytes,
            MemoryBytes::Auto
        );
        let c = parse("limits:\n  max_memory_bytes: 0\n").unwrap();
        assert_eq!(c.limits.max_memory_bytes.resolve(), 0);
        let c = parse("limits:\n  max_memory_bytes: 2097152\n").unwrap();
        assert_eq!(c.limits.max_memory_bytes, MemoryBytes::Bytes(2 << 20));
        let c = parse("limits:\n  max_memory_bytes: auto\n").unwrap();
        assert_eq!(c.limits.max_memory_bytes, MemoryBytes::Auto);
    }

    #[test]
    fn bad_max_memory_bytes_names_the_key() {
        for bad in ["1000", "lots", "-5"] {
            let err = parse(&format!("limits:\n  max_memory_bytes: {bad}\n")).unwrap_err();
            assert!(err.contains("limits.max_memory_bytes"), "{bad}: {err}");
        }
    }

    #[test]
    fn auto_budget_is_half_of_the_smaller_bound() {
        let text = "MemTotal:        8000000 kB\nMemFree: 1 kB\n";
        assert_eq!(meminfo_total(text), Some(8_000_000 * 1024));
        // On this machine: some bound, and at most half of its memory.
        let auto = auto_memory_budget();
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_total(&t));
        if let Some(total) = total {
            assert!(auto > 0 && auto <= total / 2, "{auto} of {total}");
        }
    }

    #[test]
    fn defaults_bound_retained_and_leave_rates_off() {
        let c = Config::parse("", Path::new("test.yaml")).expect("defaults");
        assert_eq!(c.limits.max_retained_messages, 100_000);
        assert_eq!(c.limits.max_retained_bytes, 64 * 1024 * 1024);
        assert!(!c.limits.publish_rate_limited());
        assert_eq!(c.limits.publish_rate_grace_secs, 60);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::parse(
            "limits:\n  publish_rate_grace_secs: 100000\n",
            Path::new("test.yaml"),
        )
        .expect_err("too long a grace");
        assert!(
            err.to_string().contains("limits.publish_rate_grace_secs"),
            "{err}"
        );
        let err = Config::parse(
            "limits:\n  max_retained_messages: -1\n",
            Path::new("test.yaml"),
        )
        .expect_err("negative count");
        assert!(
            err.to_string().contains("limits.max_retained_messages"),
            "{err}"
        );
        let c = Config::parse(
            "limits:\n  max_publish_rate_messages: 10\n  publish_rate_grace_secs: 0\n",
            Path::new("test.yaml"),
        )
        .expect("rate without disconnect");
        assert!(c.limits.publish_rate_limited());
        assert_eq!(c.limits.publish_rate_grace(), None);
    }

    #[test]
    fn max_connections_bad_values_name_the_key() {
        for bad in ["-1", "lots", "5000000000"] {
            let text = format!("limits:\n  max_connections: {bad}\n");
            let err = Config::parse(&text, Path::new("t.yaml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("limits.max_connections"), "{bad}: {err}");
        }
        let c = Config::parse("limits:\n  max_connections: 10\n", Path::new("t.yaml")).unwrap();
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(Config::default().limits.max_connections, 0);
    }
}
