//! `conn`: connection rate, CONNECT→CONNACK per second (plain or TLS),
//! with `--concurrency` clients connecting in parallel until `--count`
//! connections or `--duration` is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use tokio::task::JoinSet;

use super::latency::percentile_metrics;
use super::parse_duration;
use crate::ctx::{Ctx, Errors};
use crate::mqtt::Client;
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::stats::latency::LatencyHist;
use crate::stats::rate::per_sec;

/// Connection rate: each of --concurrency workers connects (TCP, TLS with
/// --tls, CONNECT, CONNACK), disconnects and starts over, until --count
/// connections succeeded or --duration passed.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to make in total.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Stop after this long even if --count is not reached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Connections in progress at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Longest a single connection attempt may take once the deadline passed.
const ATTEMPT_ALLOWANCE: Duration = Duration::from_secs(30);

pub fn time_limit(args: &Args) -> Duration {
    args.duration + ATTEMPT_ALLOWANCE
}

struct Shared {
    /// Tickets handed out: attempt `n` is the n-th connection.
    tickets: AtomicU64,
    connected: AtomicU64,
    errors: Errors,
    deadline: Instant,
    count: u64,
}

pub async fn run(ctx: &Arc<Ctx>, args: &Args) -> anyhow::Result<Report> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let start = Instant::now();
    let shared = Arc::new(Shared {
        tickets: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        errors: Errors::default(),
        deadline: start + args.duration,
        count: args.count,
    });
    let s = shared.clone();
    let progress = Progress::start("conn", ctx.quiet, move || {
        let n = s.connected.load(Ordering::Relaxed);
        format!(
            "{n} connections ({:.0}/s), errors {}",
            per_sec(n, start.elapsed()),
            s.errors.count()
        )
    });
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker(ctx.clone(), shared.clone()));
    }
    let mut hist = LatencyHist::new();
    while let Some(h) = workers.join_next().await {
        if let Ok(h) = h {
            hist.merge(&h);
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    let connected = shared.connected.load(Ordering::Relaxed);
    let mut r = ctx.report("conn");
    r.param("count", args.count)
        .param("duration_secs", args.duration.as_secs_f64())
        .param("concurrency", args.concurrency);
    r.metric("connections", connected as f64, "", Better::Neither)
        .metric("elapsed_secs", elapsed.as_secs_f64(), "s", Better::Neither)
        .metric(
            "connections_per_sec",
            per_sec(connected, elapsed),
            "conn/s",
            Better::Higher,
        );
    percentile_metrics(&mut r, &hist.percentiles(), "handshake_");
    shared.errors.fill(&mut r);
    Ok(r)
}

/// Connects and disconnects until the count or the deadline; returns the
/// handshake times (dial to CONNACK) it measured.
async fn worker(ctx: Arc<Ctx>, shared: Arc<Shared>) -> LatencyHist {
    let mut hist = LatencyHist::new();
    loop {
        let n = shared.tickets.fetch_add(1, Ordering::Relaxed);
        if n >= shared.count || Instant::now() >= shared.deadline {
            return hist;
        }
        let opts = ctx.connect_opts(format!("{}-c{n}", ctx.run_id), true);
        let t0 = Instant::now();
        match Client::connect(&ctx.target, &opts).await {
            Ok((client, _)) => {
                hist.record(t0.elapsed());
                shared.connected.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = client.disconnect().await {
                    shared.errors.record(&e);
                }
            }
            Err(e) => shared.errors.record(&e),
        }
    }
}
