//! Steps that run in a child process of this binary: so that peak RSS (`VmHWM`) belongs to one
//! step, so that a writer can be killed with SIGKILL, and so that an engine that panics on a
//! damaged file does not take the run down.
//!
//! A child prints one line of `key=value` pairs on stdout; [`run`] parses it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

use crate::store::{self, Engine, Mode, Store};
use crate::throughput::spawn_flusher;
use crate::workload::{client_id, message_record, queue_key, session_record, topic, Op, Table};

/// Messages (or sessions) per atomic group while populating.
const POPULATE_GROUP: u64 = 10_000;

#[derive(Subcommand, Debug)]
pub enum Step {
    /// Write sessions, queued messages and retained messages; fsync; report.
    Populate(Populate),
    /// Open, scan everything, report times, counts and peak RSS.
    Reopen(Target),
    /// Open and bring the files to a settled state (flush and compact).
    Settle(Target),
    /// Append one message per group to client 0's queue, printing each acked sequence, until
    /// killed (or `--max-seconds`).
    KillWriter(KillWriter),
    /// Open and check which of client 0's first `--expect` messages are present.
    Probe(Probe),
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    #[arg(long, value_enum)]
    pub engine: Engine,
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 64 << 20)]
    pub cache_bytes: u64,
}

#[derive(Args, Debug)]
pub struct Populate {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub sessions: u64,
    #[arg(long)]
    pub messages: u64,
    #[arg(long)]
    pub retained: u64,
    #[arg(long)]
    pub payload: usize,
    /// After reporting, wait (for SIGKILL) until stdin closes.
    #[arg(long)]
    pub wait_for_kill: bool,
}

#[derive(Args, Debug)]
pub struct KillWriter {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum)]
    pub mode: Mode,
    #[arg(long)]
    pub payload: usize,
    /// Stop on its own after this long, so a lost parent leaves no writer behind.
    #[arg(long, default_value_t = 10)]
    pub max_seconds: u64,
}

#[derive(Args, Debug)]
pub struct Probe {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub expect: u64,
}

pub fn main(step: Step) -> Result<()> {
    match step {
        Step::Populate(p) => populate(&p),
        Step::Reopen(t) => reopen(&t),
        Step::Settle(t) => settle(&t),
        Step::KillWriter(k) => kill_writer(&k),
        Step::Probe(p) => probe(&p),
    }
}

fn report(pairs: &[(&str, String)]) -> Result<()> {
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.join(" ")).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Peak resident set of this process, from `/proc/self/status`.
pub fn peak_rss_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM line in /proc/self/status"))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn populate(p: &Populate) -> Result<()> {
    let t = &p.target;
    let start = Instant::now();
    let store = store::open(t.engine, Mode::Batched, &t.dir, t.cache_bytes)?;
    let mut ops = Vec::with_capacity(POPULATE_GROUP as usize);
    for s in 0..p.sessions {
        ops.push(Op::Put(Table::Sessions, client_id(s), session_record(s)));
        if ops.len() as u64 == POPULATE_GROUP {
            store.apply(&ops)?;
            ops.clear();
        }
    }
    // Messages arrive interleaved across sessions, as publishes to many subscribers do.
    let sessions = p.sessions.max(1);
    for i in 0..p.messages {
        let (session, seq) = (i % sessions, i / sessions);
        ops.push(Op::Put(
            Table::Queue,
            queue_key(&client_id(session), seq),
            message_record(session, seq, p.payload, 0, false),
        ));
        if ops.len() as u64 == POPULATE_GROUP {
            store.apply(&ops)?;
            ops.clear();
        }
    }
    for r in 0..p.retained {
        ops.push(Op::Put(
            Table::Retained,
            topic(r, 0),
            message_record(r, 0, p.payload, 0, false),
        ));
    }
    store.apply(&ops)?;
    store.sync()?;
    report(&[
        ("populate_ms", ms(start.elapsed())),
        ("hwm_kib", peak_rss_kib()?.to_string()),
    ])?;
    if p.wait_for_kill {
        // Everything is fsynced; the parent now kills this process, as a crash would.
        let mut sink = Vec::new();
        std::io::stdin()
            .read_to_end(&mut sink)
            .context("waiting on stdin")?;
    }
    Ok(())
}

fn reopen(t: &Target) -> Result<()> {
    let start = Instant::now();
    let store = store::open(t.engine, Mode::Sync, &t.dir, t.cache_bytes)?;
    let opened = start.elapsed();
    let totals = store.scan()?;
    let scanned = start.elapsed() - opened;
    report(&[
        ("open_ms", ms(opened)),
        ("scan_ms", ms(scanned)),
        ("hwm_kib", peak_rss_kib()?.to_string()),
        ("sessions", totals.sessions.to_string()),
        ("messages", totals.messages.to_string()),
        ("retained", totals.retained.to_string()),
        ("bytes", totals.bytes.to_string()),
    ])
}

fn settle(t: &Target) -> Result<()> {
    let start = Instant::now();
    let mut store = store::open(t.engine, Mode::Sync, &t.dir, t.cache_bytes)?;
    store.settle()?;
    drop(store);
    report(&[("settle_ms", ms(start.elapsed()))])
}

fn kill_writer(k: &KillWriter) -> Result<()> {
    let t = &k.target;
    let store: Arc<dyn Store> = Arc::from(store::open(t.engine, k.mode, &t.dir, t.cache_bytes)?);
    let flusher = match k.mode {
        Mode::Batched | Mode::RedbNone => Some(spawn_flusher(Arc::clone(&store))),
        Mode::Sync => None,
    };
    let id = client_id(0);
    let deadline = Instant::now() + Duration::from_secs(k.max_seconds);
    let mut out = std::io::stdout().lock();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        store.apply(&[Op::Put(
            Table::Queue,
            queue_key(&id, seq),
            message_record(0, seq, k.payload, 0, false),
        )])?;
        // Printed only once acked: every number the parent reads was promised as stored.
        writeln!(out, "{seq}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
        seq += 1;
    }
    drop(flusher);
    Ok(())
}

fn probe(p: &Probe) -> Result<()> {
    let t = &p.target;
    let start = Instant::now();
    let store = store::open(t.engine, Mode::Sync, &t.dir, t.cache_bytes)?;
    let opened = start.elapsed();
    let seqs = store.queue_seqs(&client_id(0))?;
    let present = seqs.iter().filter(|s| **s < p.expect).count() as u64;
    report(&[
        ("open_ms", ms(opened)),
        ("present", present.to_string()),
        ("missing", (p.expect - present).to_string()),
        ("total", seqs.len().to_string()),
    ])
}

/// The outcome of a child step.
pub enum Outcome {
    Ok(HashMap<String, String>),
    /// Exit code (101 = panic) and the last lines of stderr.
    Failed(Option<i32>, String),
}

impl Outcome {
    pub fn ok(self) -> Result<HashMap<String, String>> {
        match self {
            Outcome::Ok(m) => Ok(m),
            Outcome::Failed(code, err) => bail!("child step failed (exit {code:?}): {err}"),
        }
    }
}

fn child_command(args: &[String]) -> Result<Command> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut cmd = Command::new(exe);
    // Errors are reported in the tables; backtraces would bury them.
    cmd.arg("child")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    Ok(cmd)
}

pub fn target_args(engine: Engine, dir: &Path, cache_bytes: u64) -> Vec<String> {
    vec![
        "--engine".into(),
        engine_arg(engine).into(),
        "--dir".into(),
        dir.display().to_string(),
        "--cache-bytes".into(),
        cache_bytes.to_string(),
    ]
}

pub fn engine_arg(engine: Engine) -> &'static str {
    match engine {
        Engine::Fjall => "fjall",
        Engine::Redb => "redb",
    }
}

pub fn mode_arg(mode: Mode) -> &'static str {
    match mode {
        Mode::Batched => "batched",
        Mode::Sync => "sync",
        Mode::RedbNone => "redb-none",
    }
}

fn parse(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Caused by:" && !l.starts_with("note: run with"))
        .collect();
    lines.join(" / ")
}

/// Runs a step to completion.
pub fn run(step: &str, args: &[String]) -> Result<Outcome> {
    let mut full = vec![step.to_string()];
    full.extend_from_slice(args);
    let out = child_command(&full)?
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running child step {step}"))?;
    if !out.status.success() {
        return Ok(Outcome::Failed(out.status.code(), tail(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(Outcome::Ok(parse(stdout.lines().last().unwrap_or(""))))
}

/// Runs a step that reports one line and then waits; SIGKILLs it once the line is read.
pub fn run_then_kill(step: &str, args: &[String]) -> Result<HashMap<String, String>> {
    let mut full = vec![step.to_string()];
    full.extend_from_slice(args);
    let mut child = child_command(&full)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting child step {step}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("child has no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the child's report")?;
    // std's Child::kill sends SIGKILL on Unix.
    child.kill().context("killing the child")?;
    child.wait().context("waiting on the child")?;
    if line.trim().is_empty() {
        bail!("child step {step} reported nothing");
    }
    Ok(parse(&line))
}

/// Starts a kill writer, SIGKILLs it after `after`, and returns how many appends it had acked.
pub fn kill_writer_after(args: &[String], after: Duration) -> Result<u64> {
    let mut full = vec!["kill-writer".to_string()];
    full.extend_from_slice(args);
    let mut child = child_command(&full)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the kill writer")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("child has no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut last: Option<u64> = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(n) = line.trim().parse() {
                last = Some(n);
            }
        }
        last
    });
    std::thread::sleep(after);
    child.kill().context("killing the kill writer")?;
    child.wait().context("waiting on the kill writer")?;
    // The pipe still holds every line written before the kill.
    let last = reader
        .join()
        .map_err(|_| anyhow!("the reader thread panicked"))?;
    Ok(last.map_or(0, |n| n + 1))
}
