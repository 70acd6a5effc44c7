//! Command-line flags: the broker to drive (global) and one subcommand per
//! scenario, plus `compare` for the side-by-side report.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mqttd::codec::ProtocolVersion;

use crate::mqtt::parse_version;
use crate::report::Output;
use crate::scenario::{self, parse_duration};

/// A load generator for MQTT brokers (any broker, not only mqttd):
/// connection rate, throughput, latency, idle memory, session churn,
/// start-up with a full store, and an overload soak.
/// Results go to stdout (a table, or JSON with -o json); progress to stderr.
#[derive(Debug, Parser)]
#[command(name = "mqttd-bench", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// Broker host name or address.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (default 1883, or 8883 with --tls).
    #[arg(short, long, global = true)]
    pub port: Option<u16>,
    /// Connect with TLS (rustls); needs --cafile.
    #[arg(long, global = true, requires = "cafile")]
    pub tls: bool,
    /// PEM file of the CA certificate(s) that signed the broker's.
    #[arg(long, global = true, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Name the broker's certificate must carry (default: --host).
    #[arg(long, global = true)]
    pub server_name: Option<String>,
    /// MQTT version spoken: 3.1.1 or 5.
    #[arg(long, global = true, default_value = "3.1.1", value_parser = parse_version)]
    pub mqtt_version: ProtocolVersion,
    /// Loopback source addresses to spread connections over (127.0.0.1 …
    /// 127.0.0.N); `idle` picks enough by itself.
    #[arg(long, global = true)]
    pub source_ips: Option<usize>,
    /// Hard time limit for the whole run (default: the scenario's own
    /// limit plus a minute).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Result format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// No progress line on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The broker's process id (same machine): its CPU use is reported for
    /// every scenario, its resident memory by `idle` and `soak`.
    #[arg(long, global = true, alias = "broker-pid")]
    pub pid: Option<u32>,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Conn(scenario::conn::Args),
    Pubsub(scenario::pubsub::Args),
    Latency(scenario::latency::Args),
    Idle(scenario::idle::Args),
    Churn(scenario::churn::Args),
    Fill(scenario::fill::Args),
    Restart(scenario::restart::Args),
    Soak(scenario::soak::Args),
    Compare(crate::compare::Args),
    SoakReport(scenario::soak::markdown::Args),
}

impl Command {
    /// The longest a well-behaved run of this scenario takes.
    pub fn time_limit(&self) -> Duration {
        match self {
            Command::Conn(a) => scenario::conn::time_limit(a),
            Command::Pubsub(a) => scenario::pubsub::time_limit(a),
            Command::Latency(a) => scenario::latency::time_limit(a),
            Command::Idle(a) => scenario::idle::time_limit(a),
            Command::Churn(a) => scenario::churn::time_limit(a),
            Command::Fill(a) => scenario::fill::time_limit(a),
            Command::Restart(a) => scenario::restart::time_limit(a),
            Command::Soak(a) => scenario::soak::time_limit(a),
            Command::Compare(_) | Command::SoakReport(_) => Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_scenario() {
        let cli = Cli::try_parse_from([
            "mqttd-bench",
            "pubsub",
            "--publishers",
            "8",
            "--qos",
            "1",
            "-o",
            "json",
            "-p",
            "1999",
        ]);
        let cli = cli.map_err(|e| e.to_string());
        assert!(
            matches!(
                &cli,
                Ok(Cli { command: Command::Pubsub(a), global }) if a.publishers == 8 && global.port == Some(1999)
            ),
            "{cli:?}"
        );
    }

    #[test]
    fn restart_takes_the_broker_command_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "mqttd-bench",
            "--pid",
            "42",
            "restart",
            "--data-dir",
            "/d",
            "--",
            "mqttd",
            "--config",
            "x.yaml",
        ]);
        let cli = cli.map_err(|e| e.to_string());
        assert!(
            matches!(
                &cli,
                Ok(Cli { command: Command::Restart(a), global })
                    if a.command == ["mqttd", "--config", "x.yaml"] && global.pid == Some(42)
            ),
            "{cli:?}"
        );
        assert!(Cli::try_parse_from(["mqttd-bench", "restart", "--data-dir", "/d"]).is_err());
    }

    #[test]
    fn soak_defaults_and_broker_pid() {
        let cli = Cli::try_parse_from([
            "mqttd-bench",
            "soak",
            "--broker-pid",
            "7",
            "--budget-bytes",
            "268435456",
            "--duration",
            "30s",
        ]);
        let cli = cli.map_err(|e| e.to_string());
        assert!(
            matches!(
                &cli,
                Ok(Cli { command: Command::Soak(a), global })
                    if a.publishers == 1000
                        && a.sessions == 10_000
                        && a.qos1_share == 0.5
                        && a.budget_bytes == Some(268_435_456)
                        && a.duration == Duration::from_secs(30)
                        && global.pid == Some(7)
            ),
            "{cli:?}"
        );
        assert!(Cli::try_parse_from(["mqttd-bench", "soak-report"]).is_err());
    }

    #[test]
    fn tls_needs_a_ca_file() {
        assert!(Cli::try_parse_from(["mqttd-bench", "conn", "--tls"]).is_err());
    }
}
