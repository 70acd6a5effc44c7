//! The Markdown tables printed on stdout.

use crate::child::Outcome;
use crate::crash::{KillResult, TornResult};
use crate::startup::{Sizes, StartupResult};
use crate::throughput::RunResult;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The median run of one throughput row, and the spread of msg/s over its runs.
pub struct Row {
    pub median: RunResult,
    pub runs: usize,
    pub min: f64,
    pub max: f64,
}

impl Row {
    pub fn median(mut runs: Vec<RunResult>) -> Option<Row> {
        runs.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        let (min, max) = (runs.first()?.per_second(), runs.last()?.per_second());
        let n = runs.len();
        let median = runs.swap_remove(n / 2);
        Some(Row {
            median,
            runs: n,
            min,
            max,
        })
    }
}

pub fn throughput(rows: &[Row]) {
    println!("## Throughput (append → overwrite → delete per message)\n");
    let runs = rows.first().map_or(1, |r| r.runs);
    if runs > 1 {
        println!(
            "Median of {runs} runs per row (by msg/s); the range is the slowest and fastest run.\n"
        );
    }
    println!("| engine | mode | writers | sessions | group | msg/s | msg/s range | fsyncs | msg per fsync | deferred syncs | ack p50 µs | ack p99 µs |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let r = &row.median;
        let s = &r.spec;
        let per_fsync = if r.fsyncs == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", r.messages as f64 / r.fsyncs as f64)
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {} |",
            s.engine.name(),
            s.mode.name(),
            s.writers,
            s.sessions,
            s.group,
            r.per_second(),
            row.min,
            row.max,
            r.fsyncs,
            per_fsync,
            r.deferred_syncs,
            r.p50_us,
            r.p99_us
        );
    }
    println!();
}

pub fn startup(results: &[StartupResult], sizes: Sizes) {
    println!(
        "## Start-up: {} sessions, {} queued messages of {} B payload, {} retained\n",
        sizes.sessions, sizes.messages, sizes.payload, sizes.retained
    );
    println!("Each reopen: open the store, then for every session a prefix scan of its queue, then every retained message; one child process, peak RSS = its VmHWM. Disk = allocated bytes (`du`) just before the reopen.\n");
    println!(
        "| engine | state | open ms | scan ms | peak RSS MiB | disk MiB | disk B/msg | all found |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for r in results {
        for st in &r.stages {
            let o = &st.reopen;
            let found = o.sessions == sizes.sessions
                && o.messages == sizes.messages
                && o.retained == sizes.retained;
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                r.engine.name(),
                st.name,
                o.open_ms,
                o.scan_ms,
                o.hwm_mib,
                mib(st.disk_bytes),
                st.disk_bytes as f64 / sizes.messages.max(1) as f64,
                if found {
                    "yes".to_string()
                } else {
                    format!(
                        "no: {} sessions, {} messages, {} retained",
                        o.sessions, o.messages, o.retained
                    )
                },
            );
        }
    }
    println!();
    for r in results {
        println!(
            "{}: populate {:.1} s (groups of 10,000 writes, batched mode, one fsync at the end); settle {:.1} s.",
            r.engine.name(),
            r.populate_ms / 1e3,
            r.settle_ms / 1e3
        );
    }
    println!();
}

fn outcome(o: &Outcome, acked: u64) -> String {
    match o {
        Outcome::Ok(m) => {
            let get = |k: &str| m.get(k).map_or("?", String::as_str);
            format!(
                "opens ({} ms); {} of {} acked present, {} lost",
                get("open_ms"),
                get("present"),
                acked,
                get("missing")
            )
        }
        Outcome::Failed(Some(101), err) => format!("panics on open: {err}"),
        Outcome::Failed(code, err) => format!("refuses to open (exit {code:?}): {err}"),
    }
}

pub fn kill(results: &[KillResult]) {
    println!("## SIGKILL of the writing process (one message per group)\n");
    println!("| engine | mode | acked before SIGKILL | after reopen |");
    println!("|---|---|---:|---|");
    for r in results {
        println!(
            "| {} | {} | {} | {} |",
            r.engine.name(),
            r.mode.name(),
            r.acked,
            outcome(&r.reopen, r.acked)
        );
    }
    println!();
}

pub fn torn_tail(results: &[TornResult]) {
    println!("## Damaged tail after SIGKILL (fjall: active journal; redb: the file)\n");
    println!("| engine | damage | after reopen |");
    println!("|---|---|---|");
    for r in results {
        println!(
            "| {} | {} | {} |",
            r.engine.name(),
            r.case,
            outcome(&r.reopen, r.acked)
        );
    }
    println!();
}
