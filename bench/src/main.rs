//! `mqttd-bench`: a load generator for MQTT brokers.
//!
//! # Layout
//!
//! - `cli`: flags and subcommands;
//! - `ctx`: what every scenario gets (target, version, run id, error tally);
//! - `net`, `tls`: dialing the broker (TCP from chosen source addresses, TLS);
//! - `mqtt`: a minimal client on the broker's codec; `frame`: copy-free
//!   PUBLISH reading for the receive hot path; `payload`: the stamp each
//!   message carries (publisher, sequence number, send time);
//! - `scenario/`: `conn`, `pubsub`, `latency`, `idle`, `churn`, `fill`,
//!   `restart` and `soak` (and `flow`, the publisher/subscriber engine under
//!   `pubsub`, `latency` and `fill`);
//! - `stats/`: rates, loss accounting, latency percentiles, VmRSS, disk
//!   usage;
//! - `report`: results as a table or JSON; `progress`: the stderr line;
//! - `compare/`: BENCHMARKS.md from the three brokers' JSON results.

mod cli;
mod compare;
mod ctx;
mod frame;
mod mqtt;
mod net;
mod payload;
mod progress;
mod report;
mod scenario;
mod stats;
mod tls;

use std::net::ToSocketAddrs as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use cli::{Cli, Command, Global};
use ctx::Ctx;
use net::{SourceIps, Target};
use stats::cpu;

/// Added to a scenario's own time limit to make the hard timeout.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(60);
/// Plain and TLS MQTT ports.
const MQTT_PORT: u16 = 1883;
const MQTTS_PORT: u16 = 8883;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Compare(args) => return exit(compare::run(args)),
        Command::SoakReport(args) => return exit(scenario::soak::markdown::run(args)),
        _ => {}
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.global.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return exit(Err(
                anyhow::Error::from(e).context("cannot start the runtime")
            ))
        }
    };
    let result = rt.block_on(run(&cli));
    // Tasks still blocked on a stuck broker must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    exit(result)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqttd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let ctx = Arc::new(make_ctx(&cli.global, &cli.command)?);
    let hard = cli
        .global
        .timeout
        .unwrap_or_else(|| cli.command.time_limit() + TIMEOUT_MARGIN);
    let scenario = async {
        match &cli.command {
            Command::Conn(a) => scenario::conn::run(&ctx, a).await,
            Command::Pubsub(a) => scenario::pubsub::run(&ctx, a).await,
            Command::Latency(a) => scenario::latency::run(&ctx, a).await,
            Command::Idle(a) => scenario::idle::run(&ctx, a).await,
            Command::Churn(a) => scenario::churn::run(&ctx, a).await,
            Command::Fill(a) => scenario::fill::run(&ctx, a).await,
            Command::Restart(a) => scenario::restart::run(&ctx, a).await,
            Command::Soak(a) => scenario::soak::run(&ctx, a).await,
            Command::Compare(_) | Command::SoakReport(_) => {
                unreachable!("compare and soak-report run without a runtime")
            }
        }
    };
    let usage = CpuUsage::start(ctx.broker_pid)?;
    let mut report = tokio::time::timeout(hard, scenario).await.map_err(|_| {
        anyhow::anyhow!("hard timeout of {hard:?} reached; the broker may be stuck")
    })??;
    usage.finish(&mut report);
    println!("{}", report.render(cli.global.output));
    Ok(())
}

/// The metric counting a scenario's operations, for the broker's CPU cost
/// per operation: connections made, messages delivered, connections held,
/// session operations.
const OPS_METRICS: &[&str] = &["connections", "received", "connections_held", "total_ops"];

/// CPU time of this process and of the broker over a run, reported as
/// average busy cores: tells whether the client or the broker was the
/// bottleneck.
struct CpuUsage {
    wall: std::time::Instant,
    bench: Duration,
    broker: Option<(u32, Duration)>,
}

impl CpuUsage {
    fn start(pid: Option<u32>) -> anyhow::Result<CpuUsage> {
        let broker = match pid {
            Some(pid) => Some((pid, cpu::process_cpu(pid)?)),
            None => None,
        };
        Ok(CpuUsage {
            wall: std::time::Instant::now(),
            bench: cpu::self_cpu(),
            broker,
        })
    }

    fn finish(self, report: &mut report::Report) {
        use report::Better::{Lower, Neither};
        let wall = self.wall.elapsed();
        let bench = cpu::self_cpu().saturating_sub(self.bench);
        report.metric("bench_cpu_cores", cpu::cores(bench, wall), "cores", Neither);
        let Some((pid, before)) = self.broker else {
            return;
        };
        let Ok(after) = cpu::process_cpu(pid) else {
            return;
        };
        let used = after.saturating_sub(before);
        report.metric("broker_cpu_cores", cpu::cores(used, wall), "cores", Neither);
        if let Some(ops) = OPS_METRICS.iter().find_map(|m| report.get(m)) {
            report.metric(
                "broker_cpu_us_per_op",
                cpu::per_op_us(used, ops),
                "us",
                Lower,
            );
        }
    }
}

fn make_ctx(g: &Global, command: &Command) -> anyhow::Result<Ctx> {
    let port = g.port.unwrap_or(if g.tls { MQTTS_PORT } else { MQTT_PORT });
    let addr = (g.host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", g.host))?
        .next()
        .with_context(|| format!("{} has no address", g.host))?;
    let tls = match (&g.cafile, g.tls) {
        (Some(ca), true) => Some(tls::client(
            ca,
            g.server_name.as_deref().unwrap_or(&g.host),
        )?),
        _ => None,
    };
    let sources = match (g.source_ips, command) {
        (Some(n), _) => n,
        (None, Command::Idle(a)) => net::source_ips_needed(a.connections),
        (None, _) => 1,
    };
    Ok(Ctx {
        target: Target::new(addr, tls).with_sources(SourceIps::loopback(sources)),
        version: g.mqtt_version,
        quiet: g.quiet,
        broker_pid: g.pid,
        run_id: format!("b{:08x}", rand::random::<u32>()),
    })
}
