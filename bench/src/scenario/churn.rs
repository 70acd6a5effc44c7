//! `churn`: session churn, measured as session-manager operations per
//! second. Three phases, each for a share of `--duration`:
//!
//! - `clean`: connect with a clean session, disconnect (create + destroy);
//! - `persistent`: connect with clean = false to ids from a pool, disconnect
//!   (create the first time, resume afterwards);
//! - `takeover`: each worker keeps one live connection and replaces it by a
//!   new connection with the same client id (resume with takeover); the
//!   broker must close the old one.
//!
//! One operation is one CONNACK.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use mqttd::codec::Packet;
use tokio::task::JoinSet;

use super::parse_duration;
use crate::ctx::{Ctx, Errors};
use crate::mqtt::{Client, Incoming};
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::stats::rate::per_sec;

/// Session churn: connect/disconnect with clean and persistent sessions,
/// and takeovers by reusing client ids; reports session-manager operations
/// (CONNACKs) per second for each phase.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Total time, shared equally by the phases run.
    #[arg(long, default_value = "9s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Clients churning at once.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Client ids in the pool of the clean and persistent phases.
    #[arg(long, default_value_t = 1000)]
    pub ids: usize,
    /// Which phases to run.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    All,
    Clean,
    Persistent,
    Takeover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Clean,
    Persistent,
    Takeover,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Clean => "clean",
            Phase::Persistent => "persistent",
            Phase::Takeover => "takeover",
        }
    }
}

/// Longest wait for the broker to close a connection that was taken over.
const TAKEOVER_CLOSE_WAIT: Duration = Duration::from_secs(2);
const ALLOWANCE: Duration = Duration::from_secs(30);

pub fn time_limit(args: &Args) -> Duration {
    args.duration + ALLOWANCE
}

fn phases(mode: Mode) -> Vec<Phase> {
    match mode {
        Mode::All => vec![Phase::Clean, Phase::Persistent, Phase::Takeover],
        Mode::Clean => vec![Phase::Clean],
        Mode::Persistent => vec![Phase::Persistent],
        Mode::Takeover => vec![Phase::Takeover],
    }
}

#[derive(Debug, Default)]
struct Counters {
    ops: AtomicU64,
    session_present: AtomicU64,
    takeovers_confirmed: AtomicU64,
}

struct PhaseCtx {
    ctx: Arc<Ctx>,
    phase: Phase,
    deadline: Instant,
    workers: usize,
    ids: usize,
    counters: Counters,
    errors: Arc<Errors>,
}

pub async fn run(ctx: &Arc<Ctx>, args: &Args) -> anyhow::Result<Report> {
    ensure!(
        args.workers > 0 && args.ids > 0,
        "--workers and --ids must be at least 1"
    );
    let phases = phases(args.mode);
    let share = args.duration / phases.len() as u32;
    let errors = Arc::new(Errors::default());
    let mut r = ctx.report("churn");
    r.param("workers", args.workers)
        .param("ids", args.ids)
        .param("duration_secs", args.duration.as_secs_f64());
    let (mut total_ops, mut total_time) = (0, Duration::ZERO);
    for phase in phases {
        let p = Arc::new(PhaseCtx {
            ctx: ctx.clone(),
            phase,
            deadline: Instant::now() + share,
            workers: args.workers,
            ids: args.ids,
            counters: Counters::default(),
            errors: errors.clone(),
        });
        let elapsed = run_phase(&p).await;
        let ops = p.counters.ops.load(Ordering::Relaxed);
        let name = phase.name();
        total_ops += ops;
        total_time += elapsed;
        r.metric(&format!("{name}_ops"), ops as f64, "", Better::Neither)
            .metric(
                &format!("{name}_ops_per_sec"),
                per_sec(ops, elapsed),
                "op/s",
                Better::Higher,
            );
        match phase {
            Phase::Persistent => {
                let present = p.counters.session_present.load(Ordering::Relaxed);
                r.metric(
                    "persistent_session_present",
                    present as f64,
                    "",
                    Better::Neither,
                );
            }
            Phase::Takeover => {
                let confirmed = p.counters.takeovers_confirmed.load(Ordering::Relaxed);
                r.metric("takeovers_confirmed", confirmed as f64, "", Better::Higher);
            }
            Phase::Clean => {}
        }
    }
    r.metric("total_ops", total_ops as f64, "", Better::Neither);
    r.metric(
        "ops_per_sec",
        per_sec(total_ops, total_time),
        "op/s",
        Better::Higher,
    );
    errors.fill(&mut r);
    Ok(r)
}

async fn run_phase(p: &Arc<PhaseCtx>) -> Duration {
    let start = Instant::now();
    let q = p.clone();
    let progress = Progress::start(
        &format!("churn {}", p.phase.name()),
        p.ctx.quiet,
        move || {
            let ops = q.counters.ops.load(Ordering::Relaxed);
            format!(
                "{ops} ops ({:.0}/s), errors {}",
                per_sec(ops, start.elapsed()),
                q.errors.count()
            )
        },
    );
    let mut workers = JoinSet::new();
    for w in 0..p.workers {
        let p = p.clone();
        workers.spawn(async move {
            let result = match p.phase {
                Phase::Takeover => takeover_worker(&p, w).await,
                _ => session_worker(&p, w).await,
            };
            if let Err(e) = result {
                p.errors.record(&e);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    progress.finish();
    start.elapsed()
}

/// The pool index worker `w` uses for its `k`-th connection. Worker `w`
/// owns the ids congruent to `w` modulo the worker count (at least one), so
/// workers never share an id and the clean and persistent phases see no
/// takeovers.
fn pool_index(w: usize, k: usize, workers: usize, ids: usize) -> usize {
    let per_worker = (ids / workers).max(1);
    w + (k % per_worker) * workers
}

async fn session_worker(p: &PhaseCtx, w: usize) -> anyhow::Result<()> {
    let clean = p.phase == Phase::Clean;
    let mut k = 0;
    while Instant::now() < p.deadline {
        let idx = pool_index(w, k, p.workers, p.ids);
        k += 1;
        let opts = p
            .ctx
            .connect_opts(format!("{}-s{idx}", p.ctx.run_id), clean);
        match Client::connect(&p.ctx.target, &opts).await {
            Ok((client, ack)) => {
                p.counters.ops.fetch_add(1, Ordering::Relaxed);
                if ack.session_present {
                    p.counters.session_present.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(e) = client.disconnect().await {
                    p.errors.record(&e);
                }
            }
            Err(e) => p.errors.record(&e),
        }
    }
    Ok(())
}

async fn takeover_worker(p: &PhaseCtx, w: usize) -> anyhow::Result<()> {
    let opts = p.ctx.connect_opts(format!("{}-t{w}", p.ctx.run_id), false);
    let (mut held, _) = Client::connect(&p.ctx.target, &opts).await?;
    p.counters.ops.fetch_add(1, Ordering::Relaxed);
    while Instant::now() < p.deadline {
        let (next, ack) = match Client::connect(&p.ctx.target, &opts).await {
            Ok(x) => x,
            Err(e) => {
                p.errors.record(&e);
                continue;
            }
        };
        p.counters.ops.fetch_add(1, Ordering::Relaxed);
        if ack.session_present {
            p.counters.session_present.fetch_add(1, Ordering::Relaxed);
        }
        if closed_by_broker(&mut held).await {
            p.counters
                .takeovers_confirmed
                .fetch_add(1, Ordering::Relaxed);
        }
        held = next;
    }
    held.disconnect().await
}

/// Whether the broker closes `old` (after an optional DISCONNECT, which an
/// MQTT 5.0 broker sends with reason "session taken over").
async fn closed_by_broker(old: &mut Client) -> bool {
    let wait = async {
        loop {
            match old.reader.recv().await {
                Ok(None) | Err(_) => return true,
                Ok(Some(Incoming::Packet(Packet::Disconnect(_)))) => return true,
                Ok(Some(_)) => continue,
            }
        }
    };
    tokio::time::timeout(TAKEOVER_CLOSE_WAIT, wait)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_use_disjoint_ids() {
        let (workers, ids) = (4, 10);
        let mut owner = std::collections::HashMap::new();
        for w in 0..workers {
            for k in 0..20 {
                let idx = pool_index(w, k, workers, ids);
                assert!(idx < ids);
                assert_eq!(*owner.entry(idx).or_insert(w), w, "id {idx}");
            }
        }
        assert_eq!(owner.len(), 8);
        // Fewer ids than workers: one id each.
        assert_eq!(pool_index(5, 3, 8, 2), 5);
    }

    #[test]
    fn phase_selection() {
        assert_eq!(phases(Mode::All).len(), 3);
        assert_eq!(phases(Mode::Takeover), vec![Phase::Takeover]);
    }
}
