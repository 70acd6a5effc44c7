//! Enforcing the per-client bounds of `limits:` that look at what a
//! client sends: the lengths of client ids, usernames and topics, and
//! topic levels (see [`crate::config::LimitsConfig`]). The session-count
//! bound lives in the session manager, the subscription bound in the
//! session, the expiry cap where an expiry is set.
//!
//! The checks are on bytes the decoder already validated as UTF-8, so
//! they only measure; which reason code a refusal carries is the caller's
//! (CONNACK, SUBACK, PUBACK/PUBREC, DISCONNECT).

use crate::codec::Connect;
use crate::config::LimitsConfig;
use crate::metrics::SessionLimitMetrics;

/// The limit a client's input went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    ClientIdLen,
    UsernameLen,
    TopicLen,
    TopicLevels,
}

impl Hit {
    /// The configuration key, for logs.
    pub fn key(self) -> &'static str {
        match self {
            Hit::ClientIdLen => "limits.max_client_id_len",
            Hit::UsernameLen => "limits.max_username_len",
            Hit::TopicLen => "limits.max_topic_len",
            Hit::TopicLevels => "limits.max_topic_levels",
        }
    }

    /// Counts the refusal in `mqttd_session_limit_refusals_total`.
    pub fn count(self, m: &SessionLimitMetrics) {
        match self {
            Hit::ClientIdLen => m.client_id_len.inc(),
            Hit::UsernameLen => m.username_len.inc(),
            Hit::TopicLen => m.topic_len.inc(),
            Hit::TopicLevels => m.topic_levels.inc(),
        }
    }
}

/// A topic name or filter within `max_topic_len` bytes and
/// `max_topic_levels` levels. Bytes are checked first, so counting levels
/// never walks more than `max_topic_len` bytes.
pub fn check_topic(limits: &LimitsConfig, topic: &str) -> Result<(), Hit> {
    if topic.len() > limits.max_topic_len {
        return Err(Hit::TopicLen);
    }
    // Levels are the separators plus one ("a/b" has two; "/" has two).
    let levels = topic.bytes().filter(|&b| b == b'/').count() + 1;
    if levels > limits.max_topic_levels {
        return Err(Hit::TopicLevels);
    }
    Ok(())
}

/// The CONNECT's client id, username and will topic within their limits.
/// Runs before authentication, so that an oversized username is neither
/// hashed against nor remembered by the login throttle.
pub fn check_connect(limits: &LimitsConfig, c: &Connect) -> Result<(), Hit> {
    if c.client_id.len() > limits.max_client_id_len {
        return Err(Hit::ClientIdLen);
    }
    if c.username
        .as_ref()
        .is_some_and(|u| u.len() > limits.max_username_len)
    {
        return Err(Hit::UsernameLen);
    }
    if let Some(will) = &c.will {
        check_topic(limits, will.topic.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(len: usize, levels: usize) -> LimitsConfig {
        LimitsConfig {
            max_topic_len: len,
            max_topic_levels: levels,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn topic_bytes_and_levels() {
        let l = limits(8, 3);
        assert_eq!(check_topic(&l, "a/b/c"), Ok(()));
        assert_eq!(check_topic(&l, "12345678"), Ok(()));
        assert_eq!(check_topic(&l, "123456789"), Err(Hit::TopicLen));
        // Multi-byte characters count in bytes: "é" is two.
        assert_eq!(check_topic(&l, "éééé"), Ok(()));
        assert_eq!(check_topic(&l, "ééééé"), Err(Hit::TopicLen));
        assert_eq!(check_topic(&l, "a/b/c/d"), Err(Hit::TopicLevels));
        assert_eq!(check_topic(&l, "//"), Ok(()));
        assert_eq!(check_topic(&l, "///"), Err(Hit::TopicLevels));
    }

    #[test]
    fn connect_fields() {
        let l = LimitsConfig {
            max_client_id_len: 23,
            max_username_len: 4,
            ..limits(8, 3)
        };
        let mut c = Connect {
            protocol: crate::codec::ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 0,
            client_id: "x".repeat(23),
            will: None,
            username: Some("user".into()),
            password: None,
            properties: Default::default(),
        };
        assert_eq!(check_connect(&l, &c), Ok(()));
        c.username = Some("users".into());
        assert_eq!(check_connect(&l, &c), Err(Hit::UsernameLen));
        c.client_id.push('x');
        assert_eq!(check_connect(&l, &c), Err(Hit::ClientIdLen));
    }
}
