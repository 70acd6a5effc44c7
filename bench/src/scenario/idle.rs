//! `idle`: hold N idle connections and measure the broker's resident
//! memory per connection (VmRSS of the broker's `--pid` before and after).
//!
//! Each connection costs this process a file descriptor, so the open-files
//! limit is raised to its hard maximum first; past 25,000 connections to a
//! loopback broker, connections are spread over source addresses
//! 127.0.0.1, 127.0.0.2, … so that ephemeral ports do not run out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use futures::stream::{self, StreamExt};

use super::parse_duration;
use crate::ctx::{Ctx, Errors};
use crate::mqtt::Client;
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::stats::rate::per_sec;
use crate::stats::rss;

/// Idle connections: open --connections connections (CONNECT, CONNACK,
/// keep alive 600 s), wait --settle, read the broker's VmRSS (global --pid),
/// hold them --hold, check each with PINGREQ, then close them all.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Pause between the last connection and the memory reading.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// How long the connections are held after the reading.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Longest time for opening all connections.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub connect_limit: Duration,
}

/// Descriptors kept free for everything else the process opens.
const SPARE_FDS: u64 = 256;
/// Longest wait for one PINGRESP when checking the held connections.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

pub fn time_limit(args: &Args) -> Duration {
    args.connect_limit + args.settle + args.hold + PING_TIMEOUT * 2
}

/// Raises the open-files limit to its hard maximum and checks that it
/// allows `needed` descriptors.
pub fn ensure_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("cannot raise RLIMIT_NOFILE")?;
    if limit < needed {
        bail!(
            "holding these connections needs {needed} file descriptors but RLIMIT_NOFILE \
             allows {limit}: raise the hard limit (ulimit -Hn, as root) or lower --connections"
        );
    }
    Ok(limit)
}

pub async fn run(ctx: &Arc<Ctx>, args: &Args) -> anyhow::Result<Report> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let fd_limit = ensure_fd_limit(args.connections as u64 + SPARE_FDS)?;
    let before = ctx.broker_pid.map(rss::read_rss).transpose()?;
    let errors = Errors::default();
    let start = Instant::now();
    let mut clients = open_all(ctx, args, &errors).await;
    let connect_time = start.elapsed();
    tokio::time::sleep(args.settle).await;
    let after = ctx.broker_pid.map(rss::read_rss).transpose()?;
    tokio::time::sleep(args.hold).await;
    let alive = ping_all(&mut clients, args.concurrency, &errors).await;
    let held = clients.len() as u64;
    drop(clients);
    let mut r = ctx.report("idle");
    r.param("connections", args.connections)
        .param("concurrency", args.concurrency)
        .param("fd_limit", fd_limit)
        .param("hold_secs", args.hold.as_secs_f64());
    r.metric("connections_held", held as f64, "", Better::Higher)
        .metric("connections_alive", alive as f64, "", Better::Higher)
        .metric(
            "connect_per_sec",
            per_sec(held, connect_time),
            "conn/s",
            Better::Higher,
        );
    if let (Some(b), Some(a)) = (before, after) {
        r.metric("broker_rss_before_bytes", b as f64, "B", Better::Neither)
            .metric("broker_rss_after_bytes", a as f64, "B", Better::Neither)
            .metric(
                "rss_per_connection_bytes",
                rss::per_connection(b, a, held),
                "B",
                Better::Lower,
            );
    }
    errors.fill(&mut r);
    Ok(r)
}

async fn open_all(ctx: &Arc<Ctx>, args: &Args, errors: &Errors) -> Vec<Client> {
    let opened = Arc::new(AtomicU64::new(0));
    let o = opened.clone();
    let total = args.connections;
    let progress = Progress::start("idle", ctx.quiet, move || {
        format!("{} of {total} connections open", o.load(Ordering::Relaxed))
    });
    let deadline = Instant::now() + args.connect_limit;
    let mut clients = Vec::with_capacity(args.connections);
    let mut attempts = stream::iter(0..args.connections)
        .map(|i| {
            let ctx = ctx.clone();
            let opened = opened.clone();
            async move {
                let opts = ctx.connect_opts(format!("{}-i{i}", ctx.run_id), true);
                let result =
                    tokio::time::timeout_at(deadline.into(), Client::connect(&ctx.target, &opts))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("connect limit reached")));
                if result.is_ok() {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                result
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(result) = attempts.next().await {
        match result {
            Ok((client, _)) => clients.push(client),
            Err(e) => errors.record(&e),
        }
    }
    progress.finish();
    clients
}

/// PINGs every held connection; returns how many answered.
async fn ping_all(clients: &mut [Client], concurrency: usize, errors: &Errors) -> u64 {
    let results: Vec<anyhow::Result<()>> = stream::iter(clients.iter_mut())
        .map(|c| async move {
            tokio::time::timeout(PING_TIMEOUT, c.ping())
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no PINGRESP within {PING_TIMEOUT:?}")))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut alive = 0;
    for r in results {
        match r {
            Ok(()) => alive += 1,
            Err(e) => errors.record(&e),
        }
    }
    alive
}
