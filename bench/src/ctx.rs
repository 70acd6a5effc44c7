//! What every scenario gets: the target, the protocol version, a run id for
//! unique client ids and topics, and an error tally.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use mqttd::codec::ProtocolVersion;

use crate::mqtt::ConnectOpts;
use crate::net::Target;
use crate::report::Report;

/// Keep alive announced by benchmark clients, in seconds: long enough that
/// no scenario needs to ping.
pub const KEEP_ALIVE_SECS: u16 = 600;

pub struct Ctx {
    pub target: Target,
    pub version: ProtocolVersion,
    pub quiet: bool,
    /// The broker's process id, if given (`--pid`).
    pub broker_pid: Option<u32>,
    /// A short random tag making this run's client ids and topics unique.
    pub run_id: String,
}

impl Ctx {
    pub fn connect_opts(&self, client_id: String, clean: bool) -> ConnectOpts {
        ConnectOpts {
            client_id,
            clean,
            keep_alive: KEEP_ALIVE_SECS,
            version: self.version,
        }
    }

    /// A report for `scenario` with the common parameters filled in.
    pub fn report(&self, scenario: &str) -> Report {
        let mut r = Report::new(scenario, &self.target.addr.to_string());
        r.param("mqtt_version", self.version.to_string())
            .param("tls", self.target.tls.is_some());
        if self.target.source_count() > 1 {
            r.param("source_ips", self.target.source_count());
        }
        r
    }
}

/// Errors met by concurrent tasks: how many, and the first one's text.
#[derive(Debug, Default)]
pub struct Errors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    pub fn record(&self, e: &anyhow::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }

    /// Adds the `errors` metric and the first error to `report`.
    pub fn fill(&self, report: &mut Report) {
        report.metric(
            "errors",
            self.count() as f64,
            "",
            crate::report::Better::Lower,
        );
        report.first_error = self.first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_count_and_first() {
        let e = Errors::default();
        e.record(&anyhow::anyhow!("first"));
        e.record(&anyhow::anyhow!("second"));
        assert_eq!(e.count(), 2);
        assert_eq!(e.first().as_deref(), Some("first"));
    }
}
