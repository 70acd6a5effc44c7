//! redb 4.6 (copy-on-write B-tree, one file) behind [`Store`].
//!
//! Every group is one write transaction. redb has two durabilities: `Immediate` (pages and
//! header written, then fdatasync, on every commit) and `None` (the commit stays in redb's own
//! in-process write buffer: nothing reaches the OS until a later `Immediate` commit; see
//! `PageManager::non_durable_commit` and `PagedCachedFile::write_barrier` in redb 4.6).
//! Neither is "handed to the OS, fsynced later". The batched mode gets that with a storage
//! backend that writes through to the file but defers `sync_data` to the background
//! flusher, which fdatasyncs the same file every 100 ms.

use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use redb::backends::FileBackend;
use redb::{
    BackendError, Database, Durability, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition,
};

use crate::store::{Counters, Mode, ScanTotals, Store};
use crate::workload::{queue_key_seq, queue_prefix, Op, Table};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;
const SESSIONS: Def = TableDefinition::new("sessions");
const QUEUE: Def = TableDefinition::new("queue");
const RETAINED: Def = TableDefinition::new("retained");

/// The database file's name inside the run directory.
pub const FILE_NAME: &str = "store.redb";

pub struct RedbStore {
    path: PathBuf,
    db: Database,
    mode: Mode,
    /// A second handle on the file, for the background fdatasync of the batched mode.
    sync_file: File,
    counters: Arc<Counters>,
}

/// redb's file backend, counting `sync_data` calls and, when `defer` is set, skipping them:
/// redb's writes still reach the OS before `commit` returns, the fdatasync comes later.
#[derive(Debug)]
struct CountingBackend {
    inner: FileBackend,
    defer: bool,
    counters: Arc<Counters>,
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.defer {
            self.counters.deferred_syncs.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

impl RedbStore {
    pub fn open(dir: &Path, mode: Mode, cache_bytes: u64) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let sync_file = file
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", path.display()))?;
        let counters = Arc::new(Counters::default());
        let backend = CountingBackend {
            inner: FileBackend::new(file).with_context(|| format!("locking {}", path.display()))?,
            defer: mode == Mode::Batched,
            counters: Arc::clone(&counters),
        };
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create_with_backend(backend)
            .with_context(|| format!("opening redb database {}", path.display()))?;
        let store = Self {
            path,
            db,
            mode,
            sync_file,
            counters,
        };
        // Create the tables, durably, so later transactions only open them.
        store.write(&[], Durability::Immediate)?;
        Ok(store)
    }

    fn write(&self, ops: &[Op], durability: Durability) -> Result<()> {
        let ctx = || format!("writing to redb database {}", self.path.display());
        let mut txn = self.db.begin_write().with_context(ctx)?;
        txn.set_durability(durability).with_context(ctx)?;
        {
            let mut sessions = txn.open_table(SESSIONS).with_context(ctx)?;
            let mut queue = txn.open_table(QUEUE).with_context(ctx)?;
            let mut retained = txn.open_table(RETAINED).with_context(ctx)?;
            for op in ops {
                let (table, key) = match op {
                    Op::Put(t, k, _) | Op::Delete(t, k) => (*t, k.as_slice()),
                };
                let handle = match table {
                    Table::Sessions => &mut sessions,
                    Table::Queue => &mut queue,
                    Table::Retained => &mut retained,
                };
                match op {
                    Op::Put(_, _, v) => {
                        handle.insert(key, v.as_slice()).with_context(ctx)?;
                    }
                    Op::Delete(..) => {
                        handle.remove(key).with_context(ctx)?;
                    }
                }
            }
        }
        txn.commit().with_context(ctx)?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn apply(&self, ops: &[Op]) -> Result<()> {
        let durability = match self.mode {
            Mode::Batched | Mode::Sync => Durability::Immediate,
            Mode::RedbNone => Durability::None,
        };
        self.write(ops, durability)
    }

    fn sync(&self) -> Result<()> {
        match self.mode {
            Mode::Batched => {
                self.sync_file
                    .sync_data()
                    .with_context(|| format!("fdatasync of {}", self.path.display()))?;
                self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            // An empty durable commit writes out and fsyncs every non-durable one before it.
            Mode::RedbNone => self.write(&[], Durability::Immediate)?,
            Mode::Sync => {}
        }
        Ok(())
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn queue_seqs(&self, client_id: &[u8]) -> Result<Vec<u64>> {
        let ctx = || format!("scanning redb queue in {}", self.path.display());
        let txn = self.db.begin_read().with_context(ctx)?;
        let queue = txn.open_table(QUEUE).with_context(ctx)?;
        let (lo, hi) = prefix_bounds(client_id);
        let mut seqs = Vec::new();
        for kv in queue
            .range::<&[u8]>(lo.as_slice()..=hi.as_slice())
            .with_context(ctx)?
        {
            let (k, _) = kv.with_context(ctx)?;
            seqs.extend(queue_key_seq(k.value()));
        }
        Ok(seqs)
    }

    fn scan(&self) -> Result<ScanTotals> {
        let ctx = || format!("scanning redb database {}", self.path.display());
        let txn = self.db.begin_read().with_context(ctx)?;
        let sessions = txn.open_table(SESSIONS).with_context(ctx)?;
        let queue = txn.open_table(QUEUE).with_context(ctx)?;
        let retained = txn.open_table(RETAINED).with_context(ctx)?;
        let mut totals = ScanTotals::default();
        for kv in sessions.iter().with_context(ctx)? {
            let (id, record) = kv.with_context(ctx)?;
            totals.sessions += 1;
            totals.bytes += record.value().len() as u64;
            let (lo, hi) = prefix_bounds(id.value());
            for m in queue
                .range::<&[u8]>(lo.as_slice()..=hi.as_slice())
                .with_context(ctx)?
            {
                let (_, msg) = m.with_context(ctx)?;
                totals.messages += 1;
                totals.bytes += msg.value().len() as u64;
            }
        }
        for kv in retained.iter().with_context(ctx)? {
            let (_, msg) = kv.with_context(ctx)?;
            totals.retained += 1;
            totals.bytes += msg.value().len() as u64;
        }
        Ok(totals)
    }

    fn settle(&mut self) -> Result<()> {
        let ctx = || format!("compacting redb database {}", self.path.display());
        while self.db.compact().with_context(ctx)? {}
        Ok(())
    }
}

/// First and last possible `queue` key of one client.
fn prefix_bounds(client_id: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = queue_prefix(client_id);
    let mut hi = lo.clone();
    lo.extend_from_slice(&[0; 8]);
    hi.extend_from_slice(&[0xff; 8]);
    (lo, hi)
}
