//! The scenarios, one module each: an `Args` struct (its doc comment is the
//! subcommand's help), a `run` returning a [`crate::report::Report`], and
//! `time_limit`, the longest a well-behaved run takes (the hard timeout
//! adds a margin to it).

pub mod churn;
pub mod conn;
pub mod fill;
pub mod flow;
pub mod idle;
pub mod latency;
pub mod pubsub;
pub mod restart;
pub mod soak;

use mqttd::types::QoS;

/// Parses `--qos`.
pub fn parse_qos(s: &str) -> Result<QoS, String> {
    let n: u8 = s
        .parse()
        .map_err(|_| format!("QoS must be 0, 1 or 2, not {s:?}"))?;
    QoS::from_u8(n).map_err(|e| e.to_string())
}

/// Parses a duration such as `10s`, `500ms` or `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_and_durations() {
        assert_eq!(parse_qos("2"), Ok(QoS::ExactlyOnce));
        assert!(parse_qos("3").is_err());
        assert!(parse_qos("x").is_err());
        assert_eq!(
            parse_duration("1500ms"),
            Ok(std::time::Duration::from_millis(1500))
        );
        assert!(parse_duration("soon").is_err());
    }
}
