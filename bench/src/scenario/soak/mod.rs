//! `soak`: an overload soak. Publishers flood two topics (QoS 0 and QoS 1)
//! that a **stuck subscriber** subscribed to before it stopped reading,
//! while thousands of **abandoned persistent sessions** (connected with
//! clean_session=0, subscribed, disconnected) collect their share. Through
//! the flood a few **healthy subscribers** keep reading and a **probe**
//! opens a new connection every second. Every second the broker's RSS and
//! CPU (`--pid`) and each observer's figures are sampled; the report is a
//! per-second table plus a summary: did RSS stay under `--budget-bytes`,
//! did healthy delivery go on, were new connections served, what happened
//! to the stuck subscriber.
//!
//! - `flood`: the publishers, a few tasks each driving many connections;
//! - `observers`: the healthy subscribers, the stuck subscriber, the probe;
//! - `samples`: the per-second samples, the table and the summary (pure,
//!   unit-tested);
//! - `sockets`: the broker's end of the stuck subscriber's connection in
//!   the kernel's socket table;
//! - `markdown`: the `soak-report` subcommand, BENCHMARKS.md's soak
//!   section from several runs' JSON.

mod flood;
pub mod markdown;
mod observers;
mod samples;
mod sockets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use futures::stream::{self, StreamExt};
use mqttd::types::QoS;

use super::parse_duration;
use crate::ctx::{Ctx, Errors};
use crate::mqtt::Client;
use crate::payload::STAMP_LEN;
use crate::progress::Progress;
use crate::report::Report;
use crate::stats::rss;
use samples::{Sample, Sampler};

/// Overload soak: --publishers clients flood QoS 0 and QoS 1 (half each,
/// or --qos1-share) at two topics that a stuck subscriber (small SO_RCVBUF,
/// never reads after its SUBACK) and --sessions abandoned persistent
/// sessions subscribe to, for --duration; meanwhile --healthy subscribers
/// read everything and a probe connects every second. Samples the broker's
/// RSS and CPU (global --pid) every second and reports a per-second table
/// and a summary (peak RSS against --budget-bytes, slowest healthy rate,
/// probe failures, when the stuck subscriber was dropped).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Publishing clients (each keeps one connection for the whole flood).
    #[arg(long, default_value_t = 1000)]
    pub publishers: u32,
    /// Share of the publishers sending QoS 1 (the others send QoS 0).
    #[arg(long, default_value_t = 0.5)]
    pub qos1_share: f64,
    /// Abandoned persistent sessions made before the flood (clean_session=0,
    /// subscribed to the flooded topics at QoS 1, then disconnected).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Healthy subscribers, reading everything throughout.
    #[arg(long, default_value_t = 3)]
    pub healthy: u32,
    /// How long the flood lasts.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Sampling goes on this long after the publishers stop (recovery).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// Total offered rate over all publishers, messages/s; 0 = flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Payload bytes per message (at least 20: publisher, sequence, time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    /// Tasks driving the publishers' connections (each drives its share
    /// of them concurrently; one task per connection would cost 1,000
    /// tasks for nothing).
    #[arg(long, default_value_t = 4)]
    pub publisher_tasks: usize,
    /// SO_SNDBUF of each publisher's socket, bytes: what a flat-out
    /// publisher can park in its own kernel beyond what the broker read
    /// (loopback autotuning would allow megabytes per connection, a
    /// gigabyte or more over a thousand, taken from every TCP user of the
    /// machine).
    #[arg(long, default_value_t = 65_536)]
    pub publisher_sndbuf: u32,
    /// SO_RCVBUF of the stuck subscriber's socket, bytes (the kernel
    /// doubles it and enforces a minimum).
    #[arg(long, default_value_t = 4096)]
    pub stuck_rcvbuf: u32,
    /// Keep alive the stuck subscriber announces, seconds (it never
    /// pings: a broker may drop it after 1.5 times this).
    #[arg(long, default_value_t = 60)]
    pub stuck_keepalive: u16,
    /// The memory budget the broker was given, bytes: the summary says
    /// whether its RSS stayed under it.
    #[arg(long)]
    pub budget_bytes: Option<u64>,
    /// Longest wait for one probe's CONNACK; longer counts as a failure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Connections opened at once while setting up (sessions, publishers).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Longest time for each setup step (the sessions, the publishers).
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub setup_limit: Duration,
}

/// Time allowed for connecting the observers and winding down.
const ALLOWANCE: Duration = Duration::from_secs(30);

pub fn time_limit(args: &Args) -> Duration {
    args.setup_limit * 2 + args.duration + args.cooldown + args.probe_timeout + ALLOWANCE
}

/// The run's topics and the filter covering both.
pub struct Topics {
    pub qos0: String,
    pub qos1: String,
    pub filter: String,
}

impl Topics {
    fn new(run_id: &str) -> Topics {
        Topics {
            qos0: format!("soak/{run_id}/qos0"),
            qos1: format!("soak/{run_id}/qos1"),
            filter: format!("soak/{run_id}/+"),
        }
    }
}

fn check(args: &Args) -> anyhow::Result<()> {
    ensure!(args.publishers > 0, "--publishers must be at least 1");
    ensure!(
        (0.0..=1.0).contains(&args.qos1_share),
        "--qos1-share must be between 0 and 1"
    );
    ensure!(
        args.payload >= STAMP_LEN,
        "--payload must be at least {STAMP_LEN} bytes"
    );
    ensure!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate must be 0 or positive"
    );
    ensure!(args.inflight > 0, "--inflight must be at least 1");
    ensure!(
        args.publisher_tasks > 0,
        "--publisher-tasks must be at least 1"
    );
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(
        !args.duration.is_zero(),
        "--duration must be longer than zero"
    );
    Ok(())
}

/// Descriptors kept free for everything else the process opens.
const SPARE_FDS: u64 = 256;

pub async fn run(ctx: &Arc<Ctx>, args: &Args) -> anyhow::Result<Report> {
    check(args)?;
    let connections = u64::from(args.publishers) + u64::from(args.healthy) + 4;
    super::idle::ensure_fd_limit(connections + SPARE_FDS)?;
    let topics = Arc::new(Topics::new(&ctx.run_id));
    let errors = Arc::new(Errors::default());
    let rss_before = ctx.broker_pid.map(rss::read_rss).transpose()?;

    let made = abandon_sessions(ctx, args, &topics, &errors).await;
    let rss_after_sessions = ctx.broker_pid.map(rss::read_rss).transpose()?;
    let healthy = observers::Healthy::connect(ctx, args.healthy, &topics).await?;
    let stuck = observers::Stuck::connect(ctx, args, &topics).await?;
    let publishers = flood::connect(ctx, args, &errors).await;
    ensure!(
        !publishers.is_empty(),
        "no publisher could connect: {}",
        errors.first().unwrap_or_default()
    );
    let connected_publishers = publishers.len();

    let start = Instant::now();
    let flood_end = start + args.duration;
    let stop = flood_end + args.cooldown;
    let healthy_view = healthy.view();
    let flood = flood::start(args, &topics, publishers, flood_end, &errors);
    let healthy_tasks = healthy.start(stop, errors.clone());
    let probe = observers::Probe::start(ctx, args.probe_timeout, start, stop);
    let sampler = Sampler::new(
        ctx.broker_pid,
        start,
        flood_end,
        flood.counters(),
        healthy_view,
        stuck.view,
    );
    let progress = show_progress(ctx.quiet, &sampler);
    let rows = sampler.run(stop).await;
    progress.finish();

    let flood_totals = flood.finish().await;
    let healthy_totals = healthy_tasks.finish().await;
    let probes = probe.finish().await;
    stuck.close();

    let mut r = ctx.report("soak");
    r.param("publishers", args.publishers)
        .param("qos1_share", args.qos1_share)
        .param("sessions", args.sessions)
        .param("healthy", args.healthy)
        .param("duration_secs", args.duration.as_secs_f64())
        .param("cooldown_secs", args.cooldown.as_secs_f64())
        .param("rate", args.rate)
        .param("payload", args.payload)
        .param("inflight", args.inflight)
        .param("publisher_sndbuf", args.publisher_sndbuf)
        .param("stuck_rcvbuf", args.stuck_rcvbuf)
        .param("stuck_keepalive", args.stuck_keepalive);
    if let Some(b) = args.budget_bytes {
        r.param("budget_bytes", b);
    }
    let summary = samples::Summary {
        rows: &rows,
        probes: &probes,
        budget: args.budget_bytes,
    };
    summary.fill(&mut r, u64::from(args.healthy));
    samples::setup_metrics(
        &mut r,
        samples::Setup {
            sessions_made: made,
            publishers_connected: connected_publishers as u64,
            rss_before,
            rss_after_sessions,
        },
    );
    flood_totals.fill(&mut r, args.duration);
    healthy_totals.fill(&mut r);
    r.series = Some(samples::series(&rows, &probes));
    errors.fill(&mut r);
    Ok(r)
}

/// Makes the abandoned sessions: connect with clean_session=0, subscribe
/// to the flooded topics at QoS 1, disconnect. Returns how many were made;
/// failures are counted in `errors`.
async fn abandon_sessions(
    ctx: &Arc<Ctx>,
    args: &Args,
    topics: &Arc<Topics>,
    errors: &Errors,
) -> u64 {
    let deadline = Instant::now() + args.setup_limit;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = done.clone();
    let total = args.sessions;
    let progress = Progress::start("soak sessions", ctx.quiet, move || {
        format!(
            "{} of {total} abandoned sessions made",
            d.load(std::sync::atomic::Ordering::Relaxed)
        )
    });
    let mut attempts = stream::iter(0..args.sessions)
        .map(|i| {
            let ctx = ctx.clone();
            let topics = topics.clone();
            async move {
                let opts = ctx.connect_opts(format!("{}-a{i}", ctx.run_id), false);
                let once = async {
                    let (mut client, _) = Client::connect(&ctx.target, &opts).await?;
                    client.subscribe(&topics.filter, QoS::AtLeastOnce).await?;
                    client.disconnect().await
                };
                tokio::time::timeout_at(deadline.into(), once)
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("setup limit reached")))
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(result) = attempts.next().await {
        match result {
            Ok(()) => {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => errors.record(&e),
        }
    }
    progress.finish();
    done.load(std::sync::atomic::Ordering::Relaxed)
}

fn show_progress(quiet: bool, sampler: &Sampler) -> Progress {
    let last = sampler.last();
    Progress::start("soak", quiet, move || match last.lock() {
        Ok(s) => describe(&s),
        Err(_) => String::new(),
    })
}

fn describe(s: &Option<Sample>) -> String {
    let Some(s) = s else {
        return "starting".to_string();
    };
    let rss = s
        .rss_bytes
        .map_or("-".to_string(), |b| format!("{:.0} MB", b as f64 / 1e6));
    format!(
        "t={}s rss {rss}, sent {}/s, healthy {}/s, stuck {}",
        s.t,
        s.sent,
        s.healthy_total,
        match s.stuck_connected {
            Some(true) => "connected",
            Some(false) => "dropped",
            None => "?",
        }
    )
}
