//! `restart`: stop a broker that `fill` loaded, measure what it left on
//! disk, start it again and time its start-up.
//!
//! 1. SIGTERM to the broker (global `--pid`), then wait until it has
//!    exited (its `/proc` entry gone or a zombie): a broker that writes its
//!    state at shutdown (Mosquitto's `mosquitto.db`) has done so by then.
//! 2. The data directory's size, as `du -sb` counts it, and per queued
//!    message.
//! 3. The command after `--` is started (its output appended to `--log`),
//!    and probed every [`PROBE_INTERVAL`] until a CONNECT gets its CONNACK:
//!    that is the start-up time. mqttd binds its listeners only once the
//!    store is loaded and serves them once the sessions are restored, so
//!    the first CONNACK comes after both. Then the peak resident memory
//!    (`VmHWM`) and the CPU time spent so far, mqttd's "store loaded" log
//!    line, and the time until `--ready-cmd` succeeds.
//! 4. `--verify` of the sessions reconnect (clean_session=0) and count
//!    the queued messages they get, against what `fill` queued for them.
//! 5. The new broker is stopped (SIGTERM, then SIGKILL after
//!    [`STOP_GRACE`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use futures::stream::{self, StreamExt};
use mqttd::codec::Packet;
use tokio::process::{Child, Command};

use super::fill::{client_id, expected_for};
use super::parse_duration;
use crate::ctx::{Ctx, Errors};
use crate::mqtt::{self, Client, Incoming};
use crate::report::{Better, Report};
use crate::stats::{cpu, disk, rss};

/// Restart a broker loaded by `fill` and time its start-up: SIGTERM the
/// broker (global --pid), wait for it to exit, measure its data directory
/// (as `du -sb`), start COMMAND, time until it answers a CONNECT (and
/// until --ready-cmd succeeds), read its peak memory, reconnect --verify
/// of the sessions to count their queued messages, then stop it.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The broker's data directory (mqttd: storage.data_dir; Mosquitto:
    /// persistence_location), measured once the broker has stopped.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Sessions `fill` made (the same value).
    #[arg(long, default_value_t = 100_000)]
    pub sessions: usize,
    /// Messages `fill` queued (the same value).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// The prefix `fill` used.
    #[arg(long, default_value = "fill")]
    pub prefix: String,
    /// Sessions to reconnect once the broker is up, evenly spaced, to
    /// check their queued messages survived (0: none).
    #[arg(long, default_value_t = 100)]
    pub verify: usize,
    /// File the new broker's stdout and stderr are appended to; mqttd's
    /// "store loaded" line is read from it.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Shell command (sh -c) that succeeds once the broker answers its
    /// operators, e.g. "mqttctl --socket S status"; tried after the first
    /// CONNACK, timed from the start.
    #[arg(long, value_name = "CMD")]
    pub ready_cmd: Option<String>,
    /// Longest wait for each step (the old broker's exit, the new one's
    /// first CONNACK, --ready-cmd, the verification).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub limit: Duration,
    /// The command that starts the broker again.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Pause between two start-up probes (refused connection, failed command).
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// A verified session that received nothing for this long has nothing more.
const VERIFY_QUIET: Duration = Duration::from_secs(2);
/// Sessions verified at once.
const VERIFY_CONCURRENCY: usize = 32;
/// How long the restarted broker gets to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// How long to look for the "store loaded" line after the first CONNACK.
const LOG_WAIT: Duration = Duration::from_secs(2);
/// The line mqttd logs once it has read its store back.
const STORE_LOADED: &str = "store loaded";

pub fn time_limit(args: &Args) -> Duration {
    args.limit * 4 + STOP_GRACE
}

pub async fn run(ctx: &Arc<Ctx>, args: &Args) -> anyhow::Result<Report> {
    let Some(old) = ctx.broker_pid else {
        bail!("restart needs the running broker's --pid");
    };
    ensure!(!args.command.is_empty(), "no command to start the broker");
    let shutdown = stop_pid(old, args.limit).await?;
    let usage = disk::usage(&args.data_dir)?;
    let log_offset = match &args.log {
        Some(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
        None => 0,
    };
    let mut child = spawn(&args.command, args.log.as_deref())?;
    let started = Instant::now();
    let pid = child.id().context("the restarted broker exited at once")?;
    let result = measure(ctx, args, &mut child, pid, started, log_offset).await;
    stop_child(&mut child).await;
    let m = result?;

    let mut r = ctx.report("restart");
    r.param("sessions", args.sessions)
        .param("messages", args.messages)
        .param("verify", args.verify);
    r.metric("shutdown_ms", ms(shutdown), "ms", Better::Lower)
        .metric("disk_bytes", usage.apparent as f64, "B", Better::Lower)
        .metric(
            "disk_allocated_bytes",
            usage.allocated as f64,
            "B",
            Better::Lower,
        )
        .metric(
            "disk_bytes_per_message",
            per(usage.apparent, args.messages),
            "B",
            Better::Lower,
        )
        .metric(
            "disk_allocated_bytes_per_message",
            per(usage.allocated, args.messages),
            "B",
            Better::Lower,
        )
        .metric("listen_ms", ms(m.listen), "ms", Better::Lower)
        .metric("startup_ms", ms(m.connack), "ms", Better::Lower)
        .metric("startup_cpu_ms", ms(m.cpu), "ms", Better::Lower)
        .metric("peak_rss_bytes", m.peak_rss as f64, "B", Better::Lower)
        .metric("rss_bytes", m.rss as f64, "B", Better::Lower);
    if let Some(t) = m.ready_cmd {
        r.metric("ready_cmd_ms", ms(t), "ms", Better::Lower);
    }
    if let Some(l) = &m.loaded {
        let mut add = |name: &str, v: Option<u64>, unit: &str, better| {
            if let Some(v) = v {
                r.metric(name, v as f64, unit, better);
            }
        };
        add("store_load_ms", l.millis, "ms", Better::Lower);
        add("loaded_sessions", l.sessions, "", Better::Neither);
        add("loaded_messages", l.queued_messages, "msg", Better::Neither);
    }
    if args.verify > 0 {
        let v = &m.verified;
        r.metric("verify_sessions", v.sessions as f64, "", Better::Neither)
            .metric(
                "verify_session_present",
                v.present as f64,
                "",
                Better::Higher,
            )
            .metric("verify_expected", v.expected as f64, "msg", Better::Neither)
            .metric("verify_received", v.received as f64, "msg", Better::Higher)
            .metric(
                "verify_missing",
                v.expected.saturating_sub(v.received) as f64,
                "msg",
                Better::Lower,
            );
    }
    m.errors.fill(&mut r);
    Ok(r)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn per(bytes: u64, messages: u64) -> f64 {
    if messages == 0 {
        0.0
    } else {
        bytes as f64 / messages as f64
    }
}

/// What was measured on the restarted broker.
struct Measured {
    listen: Duration,
    connack: Duration,
    cpu: Duration,
    peak_rss: u64,
    rss: u64,
    ready_cmd: Option<Duration>,
    loaded: Option<StoreLoaded>,
    verified: Verified,
    errors: Errors,
}

async fn measure(
    ctx: &Arc<Ctx>,
    args: &Args,
    child: &mut Child,
    pid: u32,
    started: Instant,
    log_offset: u64,
) -> anyhow::Result<Measured> {
    let (listen, connack) = first_connack(ctx, child, started, args.limit).await?;
    // Read before anything else runs in the broker: the start-up's cost.
    let peak_rss = rss::read_peak_rss(pid)?;
    let rss = rss::read_rss(pid)?;
    let cpu = cpu::process_cpu(pid)?;
    let loaded = match &args.log {
        Some(path) => find_store_loaded(path, log_offset).await,
        None => None,
    };
    let ready_cmd = match &args.ready_cmd {
        Some(cmd) => Some(ready_cmd_time(cmd, started, args.limit).await?),
        None => None,
    };
    let errors = Errors::default();
    let verified = verify(ctx, args, &errors).await;
    Ok(Measured {
        listen,
        connack,
        cpu,
        peak_rss,
        rss,
        ready_cmd,
        loaded,
        verified,
        errors,
    })
}

/// Sends SIGTERM to `pid` and waits until it has exited; returns how long
/// that took.
async fn stop_pid(pid: u32, limit: Duration) -> anyhow::Result<Duration> {
    let raw = i32::try_from(pid).map_err(|_| anyhow!("{pid} is not a process id"))?;
    let start = Instant::now();
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(raw, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot send SIGTERM to the broker (process {pid}): {e}");
    }
    while !has_exited(pid) {
        if start.elapsed() > limit {
            bail!("the broker (process {pid}) did not exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    Ok(start.elapsed())
}

/// Whether process `pid` is gone or a zombie (exited, not yet reaped by
/// its parent).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => matches!(process_state(&stat), Some('Z' | 'X') | None),
        Err(_) => true,
    }
}

/// The state letter of a `/proc/PID/stat` line (the field after the
/// command name, which may hold spaces and parentheses).
fn process_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn spawn(command: &[String], log: Option<&Path>) -> anyhow::Result<Child> {
    let (program, rest) = command
        .split_first()
        .context("no command to start the broker")?;
    let mut cmd = Command::new(program);
    // NO_COLOR: a log written to a file is parsed, not read on a terminal.
    cmd.args(rest)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let err = file
                .try_clone()
                .with_context(|| format!("cannot open {}", path.display()))?;
            cmd.stdout(file).stderr(err);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {program}"))
}

/// Probes until a CONNECT gets a CONNACK; returns when the first TCP
/// connection and the first CONNACK succeeded, from `started`.
async fn first_connack(
    ctx: &Ctx,
    child: &mut Child,
    started: Instant,
    limit: Duration,
) -> anyhow::Result<(Duration, Duration)> {
    let deadline = tokio::time::Instant::from_std(started + limit);
    let opts = ctx.connect_opts(format!("{}-probe", ctx.run_id), true);
    let mut listen = None;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the restarted broker exited during start-up ({status})");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the restarted broker did not answer a CONNECT within {limit:?}");
        }
        if let Ok(Ok((rd, wr))) = tokio::time::timeout_at(deadline, ctx.target.dial()).await {
            let tcp = *listen.get_or_insert_with(|| started.elapsed());
            // Connected before the broker serves its listener: the CONNACK
            // waits in the accept backlog until it does.
            if let Ok(Ok((client, _))) =
                tokio::time::timeout_at(deadline, Client::handshake(rd, wr, &opts)).await
            {
                let connack = started.elapsed();
                let _ = client.disconnect().await;
                return Ok((tcp, connack));
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// What mqttd's "store loaded" line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreLoaded {
    pub sessions: Option<u64>,
    pub queued_messages: Option<u64>,
    pub millis: Option<u64>,
}

/// Looks for the "store loaded" line in what was appended to `log` after
/// `offset`, for up to [`LOG_WAIT`].
async fn find_store_loaded(log: &Path, offset: u64) -> Option<StoreLoaded> {
    let until = Instant::now() + LOG_WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(log) {
            let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]);
            if let Some(found) = parse_store_loaded(&text) {
                return Some(found);
            }
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(PROBE_INTERVAL * 5).await;
    }
}

/// Parses the first "store loaded" line of a log, human (`key=value`
/// fields) or JSON (`"fields": {..}`).
pub fn parse_store_loaded(log: &str) -> Option<StoreLoaded> {
    let line = strip_ansi(log.lines().find(|l| l.contains(STORE_LOADED))?);
    let field = |name: &str| -> Option<u64> {
        if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            return v.get("fields")?.get(name)?.as_u64();
        }
        line.split_whitespace()
            .filter_map(|tok| tok.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
    };
    Some(StoreLoaded {
        sessions: field("sessions"),
        queued_messages: field("queued_messages"),
        millis: field("millis"),
    })
}

/// `s` without ANSI escape sequences (ESC [ … letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `cmd` until it succeeds; returns when it did, from `started`.
async fn ready_cmd_time(cmd: &str, started: Instant, limit: Duration) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        let status = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout_at(deadline.into(), status).await;
        match status {
            Ok(Ok(s)) if s.success() => return Ok(started.elapsed()),
            Ok(Err(e)) => return Err(anyhow!("cannot run --ready-cmd: {e}")),
            Ok(Ok(_)) if Instant::now() < deadline => {
                tokio::time::sleep(PROBE_INTERVAL * 2).await;
            }
            _ => bail!("--ready-cmd did not succeed within {limit:?}: {cmd}"),
        }
    }
}

/// What the reconnected sessions found.
#[derive(Debug, Default)]
struct Verified {
    sessions: u64,
    /// Sessions the broker still had (CONNACK session present = 1).
    present: u64,
    expected: u64,
    received: u64,
}

/// The sessions verified: `count` of `sessions`, evenly spaced.
fn sample(sessions: usize, count: usize) -> Vec<usize> {
    let count = count.min(sessions);
    (0..count).map(|j| j * sessions / count).collect()
}

async fn verify(ctx: &Arc<Ctx>, args: &Args, errors: &Errors) -> Verified {
    let deadline = Instant::now() + args.limit;
    let results: Vec<_> = stream::iter(sample(args.sessions, args.verify))
        .map(|i| {
            let ctx = ctx.clone();
            let id = client_id(&args.prefix, i);
            let expected = expected_for(i, args.sessions, args.messages);
            async move {
                let one = verify_one(&ctx, id, expected);
                let got = tokio::time::timeout_at(deadline.into(), one)
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("restart --limit reached verifying")));
                (expected, got)
            }
        })
        .buffer_unordered(VERIFY_CONCURRENCY)
        .collect()
        .await;
    let mut v = Verified::default();
    for (expected, got) in results {
        v.sessions += 1;
        v.expected += expected;
        match got {
            Ok((present, received)) => {
                v.present += u64::from(present);
                v.received += received;
            }
            Err(e) => errors.record(&e),
        }
    }
    v
}

/// Reconnects one session and takes its queued messages; returns whether
/// the broker had the session and how many distinct messages came.
async fn verify_one(ctx: &Ctx, id: String, expected: u64) -> anyhow::Result<(bool, u64)> {
    let opts = ctx.connect_opts(id, false);
    let (mut client, ack) = Client::connect(&ctx.target, &opts).await?;
    let mut seen = HashSet::new();
    while (seen.len() as u64) < expected {
        match tokio::time::timeout(VERIFY_QUIET, client.reader.recv()).await {
            Err(_) => break,
            Ok(Ok(Some(Incoming::Publish {
                qos,
                packet_id,
                stamp,
            }))) => {
                if let Some(s) = stamp {
                    seen.insert((s.publisher, s.seq));
                }
                let ack = match (qos, packet_id) {
                    (1, Some(id)) => mqtt::ack_packet(Packet::PubAck, id),
                    (2, Some(id)) => mqtt::ack_packet(Packet::PubRec, id),
                    _ => None,
                };
                if let Some(ack) = ack {
                    client.send(&ack).await?;
                }
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => bail!("the broker closed a verified session's connection"),
            Ok(Err(e)) => return Err(e),
        }
    }
    client.disconnect().await?;
    Ok((ack.session_present, seen.len() as u64))
}

/// SIGTERM to the restarted broker, SIGKILL if it is still running after
/// [`STOP_GRACE`].
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our
        // own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_a_process() {
        assert_eq!(process_state("42 (my (odd) name) Z 1 2 3"), Some('Z'));
        assert_eq!(process_state("42 (mqttd) S 1 2 3"), Some('S'));
        assert_eq!(process_state("garbage"), None);
        assert!(!has_exited(std::process::id()));
        assert!(has_exited(u32::MAX));
    }

    #[test]
    fn store_loaded_line_human_and_json() {
        let human = "2026-12-01T05:00:00Z  INFO mqttd::server: listening\n\
            2026-12-01T05:00:01Z  INFO mqttd::store::load: store loaded path=/d \
            sessions=100000 queued_messages=1000000 retained=0 expired_sessions=0 millis=2345\n";
        let want = StoreLoaded {
            sessions: Some(100_000),
            queued_messages: Some(1_000_000),
            millis: Some(2345),
        };
        assert_eq!(parse_store_loaded(human), Some(want.clone()));
        let colored = "\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m store loaded \
            \x1b[3msessions\x1b[0m\x1b[2m=\x1b[0m100000 \x1b[3mqueued_messages\x1b[0m\x1b[2m=\x1b[0m1000000 \
            \x1b[3mmillis\x1b[0m\x1b[2m=\x1b[0m2345";
        assert_eq!(parse_store_loaded(colored), Some(want.clone()));
        let json = r#"{"level":"INFO","fields":{"message":"store loaded","sessions":100000,"queued_messages":1000000,"millis":2345}}"#;
        assert_eq!(parse_store_loaded(json), Some(want));
        assert_eq!(parse_store_loaded("nothing here\n"), None);
    }

    #[test]
    fn verified_sessions_are_spread() {
        assert_eq!(sample(100_000, 4), [0, 25_000, 50_000, 75_000]);
        assert_eq!(sample(3, 10), [0, 1, 2]);
        assert!(sample(10, 0).is_empty());
    }
}
