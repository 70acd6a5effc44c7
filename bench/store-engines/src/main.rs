//! store-engines: measures two embedded storage engines, fjall 3.1 (LSM tree) and redb 4.6
//! (copy-on-write B-tree), on mqttd's durable-storage workload, and prints Markdown tables.
//!
//! What it measures:
//! - **throughput**: the QoS 1 lifecycle of a message queued for a persistent subscriber
//!   (append before the publisher's PUBACK, overwrite with packet id + "sent", delete on the
//!   subscriber's PUBACK) in messages/s, with fsync counts and ack latency, for each durability
//!   mode: *batched* (handed to the OS before the ack, fsync every 100 ms), *sync* (fsync before
//!   the ack, group commit) and, for redb, *redb-none* (`Durability::None`).
//! - **start-up**: with a backlog of sessions and queued messages, reopen time plus a prefix scan
//!   of every session's queue, after SIGKILL and after a clean close; peak RSS; disk bytes per
//!   queued message.
//! - **kill**: whether acked appends survive SIGKILL of the writing process, per mode.
//! - **torn-tail**: whether each engine opens a store whose log/file tail was cut, followed by
//!   garbage, or had its last record corrupted.
//!
//! Layout:
//! - `workload`: the broker's key layout and record shapes.
//! - `store`: the engine-neutral interface and durability modes; `fjall_store`, `redb_store`.
//! - `throughput`, `startup`, `crash`: the measurements; `child`: steps run in a child process.
//! - `report`: the Markdown tables; `files`: temporary directories and disk use.

mod child;
mod crash;
mod files;
mod fjall_store;
mod redb_store;
mod report;
mod startup;
mod store;
mod throughput;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, ValueEnum};

use crate::store::{Engine, Mode};
use crate::throughput::RunSpec;

/// Measures fjall 3.1 and redb 4.6 on mqttd's storage workload and prints Markdown tables
/// (progress goes to stderr). With no --part, runs every part; the defaults finish in under
/// three minutes on a 2-core machine.
#[derive(Parser, Debug)]
#[command(name = "store-engines", version)]
struct Cli {
    /// Parts to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    part: Vec<Part>,
    /// Engines to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["fjall", "redb"])]
    engines: Vec<Engine>,
    /// Directory for the temporary stores (removed after each run) [default: the system's].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Block/page cache of each engine, in MiB (fjall `cache_size`, redb `set_cache_size`).
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    /// Payload bytes of each message (the record adds a ~20-byte header and a 30-byte topic).
    #[arg(long, default_value_t = 100)]
    payload: usize,

    /// Throughput: length of each run, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    duration_ms: u64,
    /// Throughput: most messages in one run.
    #[arg(long, default_value_t = 1_000_000)]
    max_messages: u64,
    /// Throughput, batched modes: writer threads.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    writers: Vec<usize>,
    /// Throughput: sessions the writers publish into.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
    sessions: Vec<u64>,
    /// Throughput, batched modes: messages per ack group (one atomic write + one persist).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    batched_groups: Vec<usize>,
    /// Throughput, sync mode: writer threads submitting to the group committer.
    #[arg(long, default_value_t = 8)]
    sync_writers: usize,
    /// Throughput, sync mode: most messages one fsync may cover.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 128])]
    sync_groups: Vec<usize>,
    /// Throughput, sync mode: un-acked appends each writer may have in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Throughput: runs of each row (the whole matrix is repeated, so noise from other work on
    /// the machine spreads over all rows); the table shows the median run and the range.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Throughput: skip redb's Durability::None rows.
    #[arg(long)]
    no_redb_none: bool,

    /// Start-up: sessions in the backlog.
    #[arg(long, default_value_t = 100_000)]
    start_sessions: u64,
    /// Start-up: queued messages in the backlog, spread evenly across the sessions.
    #[arg(long, default_value_t = 1_000_000)]
    start_messages: u64,
    /// Start-up: retained messages in the backlog.
    #[arg(long, default_value_t = 10_000)]
    start_retained: u64,

    /// Kill test: SIGKILL the writer after this many milliseconds.
    #[arg(long, default_value_t = 700)]
    kill_after_ms: u64,

    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(clap::Subcommand, Debug)]
enum Child {
    /// Internal: one step in a child process.
    #[command(hide = true, subcommand)]
    Child(child::Step),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Throughput,
    Startup,
    Kill,
    TornTail,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Child::Child(step)) = cli.child {
        return child::main(step);
    }
    let parts = if cli.part.is_empty() {
        vec![Part::Throughput, Part::Startup, Part::Kill, Part::TornTail]
    } else {
        cli.part.clone()
    };
    let base = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let cache = cli.cache_mib << 20;
    println!("# store-engines\n");
    println!(
        "Command: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    for part in parts {
        match part {
            Part::Throughput => throughput(&cli, &base, cache)?,
            Part::Startup => startup(&cli, &base, cache)?,
            Part::Kill => kill(&cli, &base, cache)?,
            Part::TornTail => torn_tail(&cli, &base, cache)?,
        }
    }
    Ok(())
}

fn throughput(cli: &Cli, base: &std::path::Path, cache: u64) -> Result<()> {
    let mut specs = Vec::new();
    let spec = |engine, mode, writers, sessions, group| RunSpec {
        engine,
        mode,
        writers,
        sessions,
        group,
        window: cli.window,
        payload: cli.payload,
        duration: Duration::from_millis(cli.duration_ms),
        max_messages: cli.max_messages,
        cache_bytes: cache,
    };
    for &engine in &cli.engines {
        let mut batched = vec![Mode::Batched];
        if engine == Engine::Redb && !cli.no_redb_none {
            batched.push(Mode::RedbNone);
        }
        for &mode in &batched {
            for &w in &cli.writers {
                for &s in &cli.sessions {
                    for &g in &cli.batched_groups {
                        specs.push(spec(engine, mode, w, s, g));
                    }
                }
            }
        }
        for &s in &cli.sessions {
            for &g in &cli.sync_groups {
                specs.push(spec(engine, Mode::Sync, cli.sync_writers, s, g));
            }
        }
    }
    let mut runs: Vec<Vec<throughput::RunResult>> = specs.iter().map(|_| Vec::new()).collect();
    for round in 1..=cli.repeat.max(1) {
        for (s, row) in specs.iter().zip(&mut runs) {
            eprintln!(
                "throughput ({round}/{}): {} {} writers={} sessions={} group={}",
                cli.repeat.max(1),
                s.engine.name(),
                s.mode.name(),
                s.writers,
                s.sessions,
                s.group
            );
            let dir = files::tempdir(base)?;
            row.push(throughput::run(s, dir.path())?);
        }
    }
    let results: Vec<report::Row> = runs.into_iter().filter_map(report::Row::median).collect();
    report::throughput(&results);
    Ok(())
}

fn startup(cli: &Cli, base: &std::path::Path, cache: u64) -> Result<()> {
    let sizes = startup::Sizes {
        sessions: cli.start_sessions,
        messages: cli.start_messages,
        retained: cli.start_retained,
        payload: cli.payload,
    };
    let mut results = Vec::new();
    for &engine in &cli.engines {
        eprintln!("startup: {}", engine.name());
        results.push(startup::run(engine, base, sizes, cache)?);
    }
    report::startup(&results, sizes);
    Ok(())
}

fn kill(cli: &Cli, base: &std::path::Path, cache: u64) -> Result<()> {
    let mut results = Vec::new();
    for &engine in &cli.engines {
        let modes: &[Mode] = match engine {
            Engine::Fjall => &[Mode::Batched, Mode::Sync],
            Engine::Redb => &[Mode::Batched, Mode::Sync, Mode::RedbNone],
        };
        for &mode in modes {
            eprintln!("kill: {} {}", engine.name(), mode.name());
            let after = Duration::from_millis(cli.kill_after_ms);
            results.push(crash::kill_test(
                engine,
                mode,
                base,
                cache,
                cli.payload,
                after,
            )?);
        }
    }
    report::kill(&results);
    Ok(())
}

fn torn_tail(cli: &Cli, base: &std::path::Path, cache: u64) -> Result<()> {
    let mut results = Vec::new();
    for &engine in &cli.engines {
        eprintln!("torn-tail: {}", engine.name());
        results.extend(crash::torn_tail(engine, base, cache, cli.payload)?);
    }
    report::torn_tail(&results);
    Ok(())
}
