//! The QoS 1 message lifecycle under load: append (must be stored before the publisher's
//! PUBACK), overwrite once with packet id + "sent", delete on the subscriber's PUBACK.
//!
//! Each atomic group carries the new appends plus the overwrites of the previous group's
//! messages and the deletes of the group before that, so a queue stays short, as it does for
//! an online subscriber, and every message costs exactly three writes.
//!
//! - batched/redb-none: each writer thread applies its own groups directly (fjall's journal
//!   lock or redb's single write transaction serialises them); a background thread makes
//!   them durable every 100 ms.
//! - sync: writers submit appends to one committer thread, up to `window` in flight each
//!   (MQTT's receive maximum); the committer takes whatever has arrived, up to `group`, applies
//!   it as one group with an fsync, then acks each. One fsync covers every write that arrived
//!   meanwhile.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;

use crate::store::{self, Engine, Mode, Store};
use crate::workload::{client_id, message_record, queue_key, session_record, Op, Table};

/// How often the background flusher makes batched writes durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub engine: Engine,
    pub mode: Mode,
    pub writers: usize,
    pub sessions: u64,
    /// Most appends in one atomic group (one ack group).
    pub group: usize,
    /// Appends each writer may have un-acked (sync mode).
    pub window: usize,
    pub payload: usize,
    pub duration: Duration,
    pub max_messages: u64,
    pub cache_bytes: u64,
}

pub struct RunResult {
    pub spec: RunSpec,
    pub messages: u64,
    pub elapsed: Duration,
    pub fsyncs: u64,
    pub deferred_syncs: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// A message's place: which session, which sequence number.
#[derive(Clone, Copy)]
struct Msg {
    session: u64,
    seq: u64,
}

/// The writes of one group: appends of `new`, overwrites of `sent`, deletes of `acked`.
fn group_ops(payload: usize, new: &[Msg], sent: &[Msg], acked: &[Msg]) -> Vec<Op> {
    let mut ops = Vec::with_capacity(new.len() + sent.len() + acked.len());
    for m in new {
        let id = client_id(m.session);
        ops.push(Op::Put(
            Table::Queue,
            queue_key(&id, m.seq),
            message_record(m.session, m.seq, payload, 0, false),
        ));
    }
    for m in sent {
        let id = client_id(m.session);
        let packet_id = u16::try_from(m.seq % 65_535 + 1).unwrap_or(1);
        ops.push(Op::Put(
            Table::Queue,
            queue_key(&id, m.seq),
            message_record(m.session, m.seq, payload, packet_id, true),
        ));
    }
    for m in acked {
        ops.push(Op::Delete(
            Table::Queue,
            queue_key(&client_id(m.session), m.seq),
        ));
    }
    ops
}

/// Groups that are appended but not yet overwritten / overwritten but not yet deleted.
#[derive(Default)]
struct Lifecycle {
    pending: VecDeque<Vec<Msg>>,
}

impl Lifecycle {
    /// The ops for a new group, advancing the two older groups one step.
    fn next(&mut self, payload: usize, new: Vec<Msg>) -> Vec<Op> {
        let acked = if self.pending.len() >= 2 {
            self.pending.pop_front()
        } else {
            None
        };
        let sent = self.pending.back().cloned().unwrap_or_default();
        let ops = group_ops(payload, &new, &sent, acked.as_deref().unwrap_or(&[]));
        self.pending.push_back(new);
        ops
    }
}

/// What one writer (or the committer) reports: messages acked and their ack latencies (µs).
type Tally = (u64, Histogram<u64>);

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 2).map_err(|e| anyhow!("latency histogram: {e}"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs the background flusher until `stop` is dropped or sent to.
pub fn spawn_flusher(store: Arc<dyn Store>) -> (mpsc::Sender<()>, thread::JoinHandle<Result<()>>) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = thread::spawn(move || loop {
        match stop_rx.recv_timeout(FLUSH_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => store.sync()?,
            _ => return Ok(()),
        }
    });
    (stop_tx, handle)
}

pub fn run(spec: &RunSpec, dir: &Path) -> Result<RunResult> {
    let store: Arc<dyn Store> =
        Arc::from(store::open(spec.engine, spec.mode, dir, spec.cache_bytes)?);
    let sessions: Vec<Op> = (0..spec.sessions)
        .map(|s| Op::Put(Table::Sessions, client_id(s), session_record(s)))
        .collect();
    store.apply(&sessions)?;
    store.sync()?;
    let before = (store.counters().fsyncs(), store.counters().deferred());

    let flusher = match spec.mode {
        Mode::Batched | Mode::RedbNone => Some(spawn_flusher(Arc::clone(&store))),
        Mode::Sync => None,
    };
    let seqs: Arc<Vec<AtomicU64>> =
        Arc::new((0..spec.sessions).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let outcome = match spec.mode {
        Mode::Sync => run_group_commit(spec, &store, &seqs),
        Mode::Batched | Mode::RedbNone => run_direct(spec, &store, &seqs),
    };
    let elapsed = start.elapsed();
    if let Some((stop, handle)) = flusher {
        drop(stop);
        handle
            .join()
            .map_err(|_| anyhow!("the flusher thread panicked"))??;
    }
    let (messages, hist) = outcome?;
    Ok(RunResult {
        spec: spec.clone(),
        messages,
        elapsed,
        fsyncs: store.counters().fsyncs() - before.0,
        deferred_syncs: store.counters().deferred() - before.1,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
    })
}

/// Picks the next session for writer `w` (round-robin from its own offset) and a sequence.
fn next_msg(seqs: &[AtomicU64], w: usize, i: &mut u64) -> Msg {
    let n = seqs.len() as u64;
    let session = (w as u64 + *i) % n;
    *i += 1;
    let seq = seqs[session as usize].fetch_add(1, Ordering::Relaxed);
    Msg { session, seq }
}

fn run_direct(spec: &RunSpec, store: &Arc<dyn Store>, seqs: &Arc<Vec<AtomicU64>>) -> Result<Tally> {
    let deadline = Instant::now() + spec.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..spec.writers)
        .map(|w| {
            let (store, seqs, issued, spec) = (
                Arc::clone(store),
                Arc::clone(seqs),
                Arc::clone(&issued),
                spec.clone(),
            );
            thread::spawn(move || -> Result<Tally> {
                let mut hist = histogram()?;
                let mut life = Lifecycle::default();
                let (mut i, mut done) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let take = spec.group as u64;
                    if issued.fetch_add(take, Ordering::Relaxed) >= spec.max_messages {
                        break;
                    }
                    let t0 = Instant::now();
                    let new: Vec<Msg> = (0..spec.group)
                        .map(|_| next_msg(&seqs, w, &mut i))
                        .collect();
                    store.apply(&life.next(spec.payload, new))?;
                    let lat = micros(t0.elapsed());
                    hist.record_n(lat.max(1), take)
                        .map_err(|e| anyhow!("latency histogram: {e}"))?;
                    done += take;
                }
                Ok((done, hist))
            })
        })
        .collect();
    collect(handles)
}

fn collect(handles: Vec<thread::JoinHandle<Result<Tally>>>) -> Result<Tally> {
    let mut total = 0;
    let mut hist = histogram()?;
    for h in handles {
        let (n, hh) = h
            .join()
            .map_err(|_| anyhow!("a writer thread panicked"))??;
        total += n;
        hist.add(&hh)
            .map_err(|e| anyhow!("latency histogram: {e}"))?;
    }
    Ok((total, hist))
}

/// An append waiting for the committer.
struct Request {
    writer: usize,
    msg: Msg,
    submitted: Instant,
}

fn run_group_commit(
    spec: &RunSpec,
    store: &Arc<dyn Store>,
    seqs: &Arc<Vec<AtomicU64>>,
) -> Result<Tally> {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut acks = Vec::with_capacity(spec.writers);
    let mut writers = Vec::with_capacity(spec.writers);
    for w in 0..spec.writers {
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        acks.push(ack_tx);
        let (req_tx, seqs, stop, window) = (
            req_tx.clone(),
            Arc::clone(seqs),
            Arc::clone(&stop),
            spec.window,
        );
        writers.push(thread::spawn(move || {
            let (mut i, mut in_flight) = (0u64, 0usize);
            loop {
                while in_flight < window && !stop.load(Ordering::Relaxed) {
                    let msg = next_msg(&seqs, w, &mut i);
                    if req_tx
                        .send(Request {
                            writer: w,
                            msg,
                            submitted: Instant::now(),
                        })
                        .is_err()
                    {
                        return;
                    }
                    in_flight += 1;
                }
                // The committer drops the ack senders when it stops.
                if ack_rx.recv().is_err() {
                    return;
                }
                in_flight -= 1;
            }
        }));
    }
    drop(req_tx);

    let result = commit_loop(spec, store, &req_rx, &acks);
    stop.store(true, Ordering::Relaxed);
    drop(acks);
    drop(req_rx);
    for w in writers {
        w.join().map_err(|_| anyhow!("a writer thread panicked"))?;
    }
    result
}

fn commit_loop(
    spec: &RunSpec,
    store: &Arc<dyn Store>,
    req_rx: &mpsc::Receiver<Request>,
    acks: &[mpsc::Sender<()>],
) -> Result<Tally> {
    let deadline = Instant::now() + spec.duration;
    let mut hist = histogram()?;
    let mut life = Lifecycle::default();
    let mut done = 0u64;
    let mut group = Vec::with_capacity(spec.group);
    while done < spec.max_messages {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match req_rx.recv_timeout(left) {
            Ok(r) => group.push(r),
            Err(_) => break,
        }
        while group.len() < spec.group {
            match req_rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        store.apply(&life.next(spec.payload, group.iter().map(|r| r.msg).collect()))?;
        let now = Instant::now();
        for r in group.drain(..) {
            hist.record(micros(now - r.submitted).max(1))
                .map_err(|e| anyhow!("latency histogram: {e}"))?;
            // A writer that has stopped no longer needs its ack.
            let _ = acks[r.writer].send(());
            done += 1;
        }
    }
    Ok((done, hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_appended_overwritten_then_deleted() {
        let mut life = Lifecycle::default();
        let m = |seq| vec![Msg { session: 0, seq }];
        let kinds = |ops: &[Op]| -> (usize, usize) {
            let puts = ops.iter().filter(|o| matches!(o, Op::Put(..))).count();
            (puts, ops.len() - puts)
        };
        assert_eq!(kinds(&life.next(10, m(0))), (1, 0));
        assert_eq!(kinds(&life.next(10, m(1))), (2, 0));
        // From the third group on: one append, one overwrite, one delete.
        assert_eq!(kinds(&life.next(10, m(2))), (2, 1));
        assert_eq!(life.pending.len(), 2);
    }
}
