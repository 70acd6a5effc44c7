//! The `limits:` section of the configuration: the bounds that keep the
//! broker inside its budget whatever its clients do (connections,
//! sessions, subscriptions, retained messages, publish rates, memory).
//!
//! Each key has a documented default, a metric counting the times it was
//! hit and the MQTT reason code the specification gives; the README's
//! "Limits" table lists them with their Mosquitto and EMQX equivalents.

use std::time::Duration;

use serde::Deserialize;

/// Longest `publish_rate_grace_secs` accepted: a day is already "never"
/// for a client, and a bound keeps instant arithmetic from overflowing.
const MAX_RATE_GRACE_SECS: u64 = 86_400;

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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 0,
            max_retained_messages: 100_000,
            max_retained_bytes: 64 * 1024 * 1024,
            max_publish_rate_messages: 0,
            max_publish_rate_bytes: 0,
            publish_rate_grace_secs: 60,
        }
    }
}

impl LimitsConfig {
    /// Semantic checks; errors are `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // Every max_connections is meaningful (0 = derived from the open-file limit);
        // serde rejects the rest with the key named (see the test).
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

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
