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
pub struct LimitsConfig {}

impl LimitsConfig {
    /// Semantic checks; errors are `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
