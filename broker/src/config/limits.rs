//! The `limits:` section of the configuration: the bounds that keep the
//! broker inside its budget whatever its clients do (connections,
//! sessions, subscriptions, retained messages, publish rates, memory).
//!
//! Each key has a documented default, a metric counting the times it was
//! hit and the MQTT reason code the specification gives; the README's
//! "Limits" table lists them with their Mosquitto and EMQX equivalents.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
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
}

impl LimitsConfig {
    /// Semantic checks; errors are `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // Every u32 is meaningful (0 = derived from the open-file limit);
        // serde rejects the rest with the key named (see the test).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

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
