//! Crash behaviour: does an acked append survive SIGKILL of the writing process, and does the
//! engine open a store whose last write was torn or followed by garbage?

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::child::{self, Outcome};
use crate::files::{copy_dir, tempdir, walk};
use crate::redb_store;
use crate::store::{Engine, Mode};

pub struct KillResult {
    pub engine: Engine,
    pub mode: Mode,
    pub acked: u64,
    pub reopen: Outcome,
}

/// Writes with one group per message until SIGKILL after `after`, then reopens and checks that
/// every acked message is there.
pub fn kill_test(
    engine: Engine,
    mode: Mode,
    base: &Path,
    cache: u64,
    payload: usize,
    after: Duration,
) -> Result<KillResult> {
    let dir = tempdir(base)?;
    let mut args = child::target_args(engine, dir.path(), cache);
    args.extend([
        "--mode".into(),
        child::mode_arg(mode).into(),
        "--payload".into(),
        payload.to_string(),
    ]);
    let acked = child::kill_writer_after(&args, after)?;
    let reopen = probe(engine, dir.path(), cache, acked)?;
    Ok(KillResult {
        engine,
        mode,
        acked,
        reopen,
    })
}

fn probe(engine: Engine, dir: &Path, cache: u64, expect: u64) -> Result<Outcome> {
    let mut args = child::target_args(engine, dir, cache);
    args.extend(["--expect".into(), expect.to_string()]);
    child::run("probe", &args)
}

pub struct TornResult {
    pub engine: Engine,
    pub case: &'static str,
    pub acked: u64,
    pub reopen: Outcome,
}

/// A damage done to the tail of a killed store's journal (fjall) or file (redb).
#[derive(Clone, Copy)]
enum Damage {
    /// Cut the file 40 bytes before the end of the written data (mid-record).
    Cut,
    /// Write 256 pseudo-random bytes just after the written data.
    Garbage,
    /// Flip one byte inside the last record (fjall: 60 bytes before the end of the journal;
    /// redb: the root page number in the primary commit slot, as a torn header write would).
    FlipLast,
}

const CASES: [Damage; 3] = [Damage::Cut, Damage::Garbage, Damage::FlipLast];

fn case_name(engine: Engine, damage: Damage) -> &'static str {
    match (engine, damage) {
        (_, Damage::Cut) => "cut 40 B before the end (mid-record)",
        (_, Damage::Garbage) => "256 B of garbage after the end",
        (Engine::Fjall, Damage::FlipLast) => "one byte flipped in the last record",
        (Engine::Redb, Damage::FlipLast) => "one byte flipped in the primary commit slot",
    }
}

/// redb's header: the god byte after the 9-byte magic number; bit 0 names the primary of the
/// two 128-byte commit slots at offset 64; the root page number is 8 bytes into a slot.
const REDB_GOD_BYTE: u64 = 9;
const REDB_SLOT_0: u64 = 64;
const REDB_SLOT_BYTES: u64 = 128;
const REDB_SLOT_ROOT_PAGE: u64 = 8;

/// Kills a batched writer, then for each damage case reopens a damaged copy of its files.
pub fn torn_tail(
    engine: Engine,
    base: &Path,
    cache: u64,
    payload: usize,
) -> Result<Vec<TornResult>> {
    let dir = tempdir(base)?;
    let mut args = child::target_args(engine, dir.path(), cache);
    args.extend([
        "--mode".into(),
        "batched".into(),
        "--payload".into(),
        payload.to_string(),
    ]);
    let acked = child::kill_writer_after(&args, Duration::from_millis(300))?;
    let mut results = Vec::new();
    for damage in CASES {
        let copy = tempdir(base)?;
        copy_dir(dir.path(), copy.path())?;
        let (file, end, flip_at) = match engine {
            Engine::Fjall => {
                let journal = active_journal(copy.path())?;
                let end = written_end(&journal)?;
                (journal, end, end.saturating_sub(60))
            }
            Engine::Redb => {
                let file = copy.path().join(redb_store::FILE_NAME);
                let end = fs::metadata(&file)
                    .with_context(|| format!("stat {}", file.display()))?
                    .len();
                let primary = u64::from(read_byte(&file, REDB_GOD_BYTE)? & 1);
                (
                    file,
                    end,
                    REDB_SLOT_0 + primary * REDB_SLOT_BYTES + REDB_SLOT_ROOT_PAGE,
                )
            }
        };
        damage_file(&file, end, flip_at, damage)?;
        let reopen = probe(engine, copy.path(), cache, acked)?;
        results.push(TornResult {
            engine,
            case: case_name(engine, damage),
            acked,
            reopen,
        });
    }
    Ok(results)
}

fn read_byte(path: &Path, at: u64) -> Result<u8> {
    let ctx = || format!("reading {}", path.display());
    let mut f = fs::File::open(path).with_context(ctx)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).with_context(ctx)?;
    f.read_exact(&mut b).with_context(ctx)?;
    Ok(b[0])
}

fn damage_file(path: &Path, end: u64, flip_at: u64, damage: Damage) -> Result<()> {
    let ctx = || format!("damaging {}", path.display());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(ctx)?;
    match damage {
        Damage::Cut => f.set_len(end.saturating_sub(40)).with_context(ctx)?,
        Damage::Garbage => {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let junk: Vec<u8> = (0..256)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            f.seek(SeekFrom::Start(end)).with_context(ctx)?;
            f.write_all(&junk).with_context(ctx)?;
        }
        Damage::FlipLast => {
            let b = read_byte(path, flip_at)?;
            f.seek(SeekFrom::Start(flip_at)).with_context(ctx)?;
            f.write_all(&[b ^ 0xFF]).with_context(ctx)?;
        }
    }
    f.sync_all().with_context(ctx)
}

/// The newest `*.jnl` file under `dir`: fjall appends to the highest-numbered journal.
fn active_journal(dir: &Path) -> Result<PathBuf> {
    let mut journals = Vec::new();
    walk(dir, &mut |p| {
        let id = p
            .extension()
            .filter(|e| *e == "jnl")
            .and_then(|_| p.file_stem()?.to_str()?.parse::<u64>().ok());
        if let Some(id) = id {
            journals.push((id, p.to_path_buf()));
        }
    })?;
    journals
        .into_iter()
        .max_by_key(|(id, _)| *id)
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow!("no fjall journal under {}", dir.display()))
}

/// fjall preallocates its journal (64 MiB of zeros); the written part ends at the last
/// non-zero byte.
fn written_end(path: &Path) -> Result<u64> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    Ok(end as u64)
}
