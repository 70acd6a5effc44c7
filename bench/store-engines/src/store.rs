//! One interface over both engines: apply an atomic group of writes with a durability mode,
//! fsync on demand, count and scan.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use clap::ValueEnum;

use crate::workload::Op;
use crate::{fjall_store, redb_store};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Fjall,
    Redb,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Fjall => "fjall 3.1",
            Engine::Redb => "redb 4.6",
        }
    }
}

/// When a group's writes count as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Handed to the OS before `apply` returns (survives kill -9); a background thread
    /// fsyncs every 100 ms. fjall: `PersistMode::Buffer`. redb: `Durability::Immediate`
    /// through a storage backend whose `sync_data` is deferred to that thread.
    Batched,
    /// fsync before `apply` returns. fjall: `PersistMode::SyncData`; redb:
    /// `Durability::Immediate` on the plain file backend.
    Sync,
    /// redb only: `Durability::None`, with a `Durability::Immediate` commit every 100 ms from
    /// the background thread. A non-durable commit stays in redb's own write buffer.
    RedbNone,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Batched => "batched",
            Mode::Sync => "sync",
            Mode::RedbNone => "redb-none",
        }
    }
}

/// The cost counters a run reports.
#[derive(Default, Debug)]
pub struct Counters {
    /// fsync/fdatasync calls made on the commit path or by the background flusher.
    pub fsyncs: AtomicU64,
    /// `sync_data` calls redb made that the deferring backend turned into no-ops.
    pub deferred_syncs: AtomicU64,
}

impl Counters {
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
    pub fn deferred(&self) -> u64 {
        self.deferred_syncs.load(Ordering::Relaxed)
    }
}

/// What a start-up scan saw.
#[derive(Default, Debug)]
pub struct ScanTotals {
    pub sessions: u64,
    pub messages: u64,
    pub retained: u64,
    pub bytes: u64,
}

pub trait Store: Send + Sync {
    /// Applies `ops` atomically; returns once they are as durable as the store's mode promises.
    fn apply(&self, ops: &[Op]) -> Result<()>;
    /// The background flusher's call: make everything applied so far durable.
    fn sync(&self) -> Result<()>;
    fn counters(&self) -> &Counters;
    /// Sequence numbers of every `queue` entry of one client (the kill test's check).
    fn queue_seqs(&self, client_id: &[u8]) -> Result<Vec<u64>>;
    /// Start-up: every session, then a prefix scan of its queue; then every retained message.
    fn scan(&self) -> Result<ScanTotals>;
    /// Brings the files to a settled state (fjall: memtables flushed to tables and a major
    /// compaction; redb: `Database::compact`).
    fn settle(&mut self) -> Result<()>;
}

pub fn open(engine: Engine, mode: Mode, dir: &Path, cache_bytes: u64) -> Result<Box<dyn Store>> {
    Ok(match engine {
        Engine::Fjall => Box::new(fjall_store::FjallStore::open(dir, mode, cache_bytes)?),
        Engine::Redb => Box::new(redb_store::RedbStore::open(dir, mode, cache_bytes)?),
    })
}
