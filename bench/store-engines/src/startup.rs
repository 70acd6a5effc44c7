//! Start-up cost with a large backlog: populate, SIGKILL after the final fsync (a crash),
//! reopen and scan everything; reopen and scan again after that clean close; settle (flush +
//! compaction), reopen and scan a third time. Disk use is taken before each reopen.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Result};

use crate::child;
use crate::files::{disk_usage, tempdir};
use crate::store::Engine;

#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub sessions: u64,
    pub messages: u64,
    pub retained: u64,
    pub payload: usize,
}

pub struct Reopen {
    pub open_ms: f64,
    pub scan_ms: f64,
    pub hwm_mib: f64,
    pub sessions: u64,
    pub messages: u64,
    pub retained: u64,
}

/// One reopen-and-scan, and the disk use just before it.
pub struct Stage {
    pub name: &'static str,
    pub disk_bytes: u64,
    pub reopen: Reopen,
}

pub struct StartupResult {
    pub engine: Engine,
    pub populate_ms: f64,
    pub settle_ms: f64,
    pub stages: Vec<Stage>,
}

fn num<T: std::str::FromStr>(m: &HashMap<String, String>, key: &str) -> Result<T> {
    m.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("child report lacks {key}: {m:?}"))
}

fn reopen(engine: Engine, dir: &Path, cache: u64) -> Result<Reopen> {
    let m = child::run("reopen", &child::target_args(engine, dir, cache))?.ok()?;
    Ok(Reopen {
        open_ms: num(&m, "open_ms")?,
        scan_ms: num(&m, "scan_ms")?,
        hwm_mib: num::<f64>(&m, "hwm_kib")? / 1024.0,
        sessions: num(&m, "sessions")?,
        messages: num(&m, "messages")?,
        retained: num(&m, "retained")?,
    })
}

pub fn run(engine: Engine, base: &Path, sizes: Sizes, cache: u64) -> Result<StartupResult> {
    let dir = tempdir(base)?;
    let mut args = child::target_args(engine, dir.path(), cache);
    args.extend([
        "--sessions".into(),
        sizes.sessions.to_string(),
        "--messages".into(),
        sizes.messages.to_string(),
        "--retained".into(),
        sizes.retained.to_string(),
        "--payload".into(),
        sizes.payload.to_string(),
        "--wait-for-kill".into(),
    ]);
    eprintln!("  {}: populating", engine.name());
    let populated = child::run_then_kill("populate", &args)?;
    let mut stages = Vec::new();
    let mut stage = |name: &'static str| -> Result<()> {
        eprintln!("  {}: reopening {name}", engine.name());
        let disk_bytes = disk_usage(dir.path())?.0;
        let reopen = reopen(engine, dir.path(), cache)?;
        stages.push(Stage {
            name,
            disk_bytes,
            reopen,
        });
        Ok(())
    };
    stage("after SIGKILL")?;
    // That reopen closed the store cleanly.
    stage("after a clean close")?;
    eprintln!("  {}: settling", engine.name());
    let settled = child::run("settle", &child::target_args(engine, dir.path(), cache))?.ok()?;
    stage("after settling")?;
    Ok(StartupResult {
        engine,
        populate_ms: num(&populated, "populate_ms")?,
        settle_ms: num(&settled, "settle_ms")?,
        stages,
    })
}
