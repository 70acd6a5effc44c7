//! The durable store: persistent sessions, their subscriptions, queued and
//! in-flight QoS 1/2 messages and incoming QoS 2 ids, and retained
//! messages, in an embedded fjall database under `storage.data_dir`
//! (docs/storage.md says why fjall, and what each durability mode can
//! lose).
//!
//! - `keys`: record keys; `record`: record bytes;
//! - `open`: opening, format versions, quarantine of what cannot be read;
//! - `syncer`: the fsync thread (group commit for `sync`, the interval
//!   for `batched`);
//! - `load`: reading everything back at start-up;
//! - `proptests` (tests): the records' encodings round-trip, and no bytes
//!   make a decoder panic.
//!
//! Every write goes through fjall's journal, which hands it to the OS
//! before the call returns (fjall's default), so a process crash loses
//! nothing written. A write that an acknowledgement covers is made
//! before the acknowledgement is sent; with `sync`, the connection then
//! waits for [`Store::wait_durable`]. With `memory` (or [`Store::memory`])
//! every operation does nothing.
//!
//! A write that fails (a full or failing disk) is logged and counted, and
//! the broker goes on serving from memory: refusing every client because
//! the disk failed would turn a durability problem into an outage.

mod keys;
pub mod load;
mod open;
#[cfg(test)]
mod proptests;
pub mod record;
mod syncer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{Database, Keyspace, OwnedWriteBatch};

use crate::config::Durability;
use crate::log_limit::LogLimit;
use crate::message::Message;
use crate::metrics::{Counter, Gauge};
use crate::types::PacketId;

pub use open::{open, OpenError, Recovery, FORMAT_VERSION};
pub use record::{QueuedRecord, SentStage, SessionRecord, SubscriptionRecord};

/// The store's figures, for `/metrics` and `mqttctl status`.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Write batches handed to the engine.
    pub writes: Counter,
    /// Writes the engine refused (I/O errors).
    pub write_errors: Counter,
    pub fsyncs: Counter,
    /// Sum of fsync durations, in microseconds.
    pub fsync_micros: Counter,
    /// The slowest fsync since start, in microseconds.
    pub fsync_max_micros: Gauge,
    /// When the last fsync finished (Unix milliseconds; 0: never).
    pub last_fsync_ms: AtomicU64,
    /// Bytes the store takes on disk, as last measured.
    pub disk_bytes: Gauge,
    /// Sessions, messages and subscriptions read back at start-up.
    pub recovered_sessions: Counter,
    pub recovered_messages: Counter,
    pub recovered_retained: Counter,
    /// Records dropped at start-up, by reason.
    pub dropped_expired_sessions: Counter,
    pub dropped_expired_messages: Counter,
    pub dropped_orphans: Counter,
    pub dropped_unreadable: Counter,
    /// Messages not stored because the store reached `max_disk_bytes`.
    pub dropped_disk_full: Counter,
    /// Stores or records moved to the quarantine directory.
    pub quarantined: Counter,
}

/// A handle on the store; cheap to clone. Without an engine (the
/// `memory` mode) every operation does nothing.
#[derive(Clone, Default)]
pub struct Store {
    engine: Option<Arc<Engine>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.engine {
            Some(e) => write!(f, "Store({})", e.path.display()),
            None => write!(f, "Store(memory)"),
        }
    }
}

struct Engine {
    db: Database,
    sessions: Keyspace,
    subscriptions: Keyspace,
    queued: Keyspace,
    sent: Keyspace,
    qos2: Keyspace,
    retained: Keyspace,
    /// The format marker (see `open`).
    meta: Keyspace,
    durability: Durability,
    path: PathBuf,
    /// The next queued message's sequence number.
    next_seq: AtomicU64,
    max_disk_bytes: u64,
    sync: Arc<syncer::Shared>,
    metrics: Arc<StoreMetrics>,
    recoveries: Vec<Recovery>,
}

/// What `mqttctl status` shows of the store.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    pub engine: &'static str,
    pub path: Option<PathBuf>,
    pub durability: Durability,
    pub disk_bytes: u64,
    pub last_fsync_ms: Option<u64>,
    pub recoveries: Vec<Recovery>,
}

thread_local! {
    /// The ticket of the last write made on this thread (see
    /// [`Store::last_write_here`]).
    static LAST_WRITE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

static WRITE_ERROR_LOG: LogLimit = LogLimit::new(std::time::Duration::from_secs(10));

impl Store {
    /// A store that keeps nothing (`storage.durability: memory`).
    pub fn memory() -> Store {
        Store { engine: None }
    }

    /// Whether anything is written to disk.
    pub fn is_durable(&self) -> bool {
        self.engine.is_some()
    }

    pub fn metrics(&self) -> Option<&Arc<StoreMetrics>> {
        self.engine.as_ref().map(|e| &e.metrics)
    }

    pub fn status(&self) -> StoreStatus {
        match &self.engine {
            None => StoreStatus {
                engine: "none",
                path: None,
                durability: Durability::Memory,
                disk_bytes: 0,
                last_fsync_ms: None,
                recoveries: Vec::new(),
            },
            Some(e) => {
                let last = e.metrics.last_fsync_ms.load(Ordering::Relaxed);
                StoreStatus {
                    engine: "fjall 3",
                    path: Some(e.path.clone()),
                    durability: e.durability,
                    disk_bytes: e.disk_bytes(),
                    last_fsync_ms: (last != 0).then_some(last),
                    recoveries: e.recoveries.clone(),
                }
            }
        }
    }

    /// A mark to wait for with [`Store::wait_durable`]: every write made
    /// before it.
    pub fn ticket(&self) -> u64 {
        self.engine
            .as_ref()
            .map_or(0, |e| e.sync.written.load(Ordering::Acquire))
    }

    /// The ticket of the last write made on this thread. A task compares
    /// it before and after work that does not await (so runs on one
    /// thread) to learn whether that work wrote, and what to wait for.
    pub fn last_write_here() -> u64 {
        LAST_WRITE.get()
    }

    /// Whether acknowledgements must wait for an fsync (`sync`).
    pub fn acks_wait(&self) -> bool {
        self.engine
            .as_ref()
            .is_some_and(|e| e.durability == Durability::Sync)
    }

    /// With `sync`: returns once every write before `ticket` is fsynced
    /// (one fsync serves every waiter). Otherwise returns at once: the
    /// writes are already with the OS.
    pub async fn wait_durable(&self, ticket: u64) {
        let Some(e) = &self.engine else { return };
        if e.durability == Durability::Sync {
            e.sync.wait(ticket).await;
        }
    }

    /// An fsync now (tests).
    #[cfg(test)]
    pub fn sync_now_for_tests(&self) {
        if let Some(e) = &self.engine {
            let _ = e.db.persist(fjall::PersistMode::SyncAll);
        }
    }

    /// Shutdown: flushes what is in memory to the engine's tables (so the
    /// next start replays no journal), then stops the fsync thread after a
    /// last fsync.
    pub fn close(&self) {
        if let Some(e) = &self.engine {
            // Every keyspace, the format marker's included: fjall deletes
            // a journal only once each keyspace with data in it flushed.
            for ks in e.keyspaces().into_iter().chain([&e.meta]) {
                if let Err(err) = ks.rotate_memtable_and_wait() {
                    e.write_failed("flush at shutdown", &err);
                }
            }
            e.sync.stop();
        }
    }

    fn write(&self, fill: impl FnOnce(&Engine, &mut OwnedWriteBatch)) {
        let Some(e) = &self.engine else { return };
        let mut batch = e.db.batch();
        fill(e, &mut batch);
        if batch.is_empty() {
            return;
        }
        e.commit(batch);
    }

    /// Saves a persistent session's own fields.
    pub fn save_session(&self, client_id: &str, s: &SessionRecord) {
        self.write(|e, b| {
            b.insert(
                &e.sessions,
                keys::client(client_id),
                record::encode_session(s),
            )
        });
    }

    /// Deletes every record of a session that ended.
    pub fn delete_session(&self, client_id: &str) {
        if let Some(e) = &self.engine {
            e.delete_all(client_id);
        }
    }

    pub fn save_subscription(&self, client_id: &str, filter: &str, s: &SubscriptionRecord) {
        self.write(|e, b| {
            b.insert(
                &e.subscriptions,
                keys::subscription(client_id, filter),
                record::encode_subscription(s).to_vec(),
            )
        });
    }

    pub fn delete_subscriptions<'f>(
        &self,
        client_id: &str,
        filters: impl IntoIterator<Item = &'f str>,
    ) {
        self.write(|e, b| {
            for f in filters {
                b.remove(&e.subscriptions, keys::subscription(client_id, f));
            }
        });
    }

    /// Stores a QoS 1/2 message for each session of `targets` (client
    /// ids), and `qos2_mark` (an incoming QoS 2 id of the publisher, see
    /// [`Store::qos2_received`]), in one atomic write. Returns each
    /// target's sequence number; `None` where nothing is stored (memory,
    /// or the disk bound reached: counted).
    pub fn enqueue_many(
        &self,
        targets: &[(&str, QueuedRecord)],
        qos2_mark: Option<(&str, PacketId)>,
    ) -> Vec<Option<u64>> {
        let Some(e) = self.engine.as_ref() else {
            return vec![None; targets.len()];
        };
        let mut batch = e.db.batch();
        // As last measured by the fsync thread: a bound, not an exact cap.
        let full = e.max_disk_bytes > 0 && e.metrics.disk_bytes.get_u64() >= e.max_disk_bytes;
        let seqs = if full || targets.is_empty() {
            if full {
                e.metrics.dropped_disk_full.add(targets.len() as u64);
            }
            vec![None; targets.len()]
        } else {
            let first = e
                .next_seq
                .fetch_add(targets.len() as u64, Ordering::Relaxed);
            let mut seqs = Vec::with_capacity(targets.len());
            for (i, (client_id, q)) in targets.iter().enumerate() {
                let seq = first + i as u64;
                batch.insert(
                    &e.queued,
                    keys::queued(client_id, seq),
                    record::encode_queued(q),
                );
                seqs.push(Some(seq));
            }
            seqs
        };
        if let Some((client_id, id)) = qos2_mark {
            batch.insert(&e.qos2, keys::qos2(client_id, id), Vec::new());
        }
        if !batch.is_empty() {
            e.commit(batch);
        }
        seqs
    }

    /// The message `seq` of `client_id` went out with `stage`.
    pub fn mark_sent(&self, client_id: &str, seq: u64, stage: SentStage) {
        self.write(|e, b| {
            b.insert(
                &e.sent,
                keys::queued(client_id, seq),
                record::encode_sent(stage).to_vec(),
            )
        });
    }

    /// The message `seq` of `client_id` is delivered or dropped.
    pub fn remove_message(&self, client_id: &str, seq: u64) {
        self.write(|e, b| {
            let key = keys::queued(client_id, seq);
            b.remove(&e.sent, key.clone());
            b.remove(&e.queued, key);
        });
    }

    /// Reads back the queued message `seq` of `client_id`; `None` if the
    /// store does not have it (logged and counted if unreadable).
    pub fn read_message(&self, client_id: &str, seq: u64) -> Option<QueuedRecord> {
        let e = self.engine.as_ref()?;
        let value = match e.queued.get(keys::queued(client_id, seq)) {
            Ok(v) => v?,
            Err(err) => {
                e.write_failed("read", &err);
                return None;
            }
        };
        match record::decode_queued(&value) {
            Ok(q) => Some(q),
            Err(err) => {
                tracing::error!(client_id, seq, error = %err, "unreadable queued message skipped");
                e.metrics.dropped_unreadable.inc();
                None
            }
        }
    }

    /// The places in line (sequence number, record size) of up to `max`
    /// queued messages of `client_id` with sequence numbers in
    /// `from..end`, in order, skipping those marked sent (they are in
    /// flight). Reads keys and sizes only.
    pub fn read_places(&self, client_id: &str, from: u64, end: u64, max: usize) -> Vec<(u64, u32)> {
        let Some(e) = &self.engine else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let range = keys::queued(client_id, from)..keys::queued(client_id, end);
        for item in e.queued.range(range) {
            if out.len() >= max {
                break;
            }
            let (key, value) = match item.into_inner() {
                Ok(kv) => kv,
                Err(err) => {
                    e.write_failed("read", &err);
                    break;
                }
            };
            let Some(seq) = keys::split(&key).and_then(|(_, rest)| keys::seq_of(rest)) else {
                continue;
            };
            if e.sent.contains_key(&key).unwrap_or(false) {
                continue;
            }
            out.push((seq, u32::try_from(value.len()).unwrap_or(u32::MAX)));
        }
        out
    }

    /// An incoming QoS 2 message was received (PUBREC follows).
    pub fn qos2_received(&self, client_id: &str, id: PacketId) {
        self.write(|e, b| b.insert(&e.qos2, keys::qos2(client_id, id), Vec::new()));
    }

    /// An incoming QoS 2 id was released (PUBCOMP follows).
    pub fn qos2_released(&self, client_id: &str, id: PacketId) {
        self.write(|e, b| b.remove(&e.qos2, keys::qos2(client_id, id)));
    }

    /// Retains `msg` for its topic, or clears the topic (`None`).
    pub fn set_retained(&self, topic: &str, msg: Option<&Message>) {
        self.write(|e, b| match msg {
            Some(m) => {
                let mut buf = bytes::BytesMut::new();
                record::encode_message(&mut buf, m);
                b.insert(&e.retained, topic.as_bytes().to_vec(), Vec::from(buf));
            }
            None => b.remove(&e.retained, topic.as_bytes().to_vec()),
        });
    }

    /// Clears the retained messages of `topics` (expired ones), in one write.
    pub fn clear_retained<'t>(&self, topics: impl IntoIterator<Item = &'t str>) {
        self.write(|e, b| {
            for topic in topics {
                b.remove(&e.retained, topic.as_bytes().to_vec());
            }
        });
    }
}

impl Engine {
    fn keyspaces(&self) -> [&Keyspace; 6] {
        [
            &self.sessions,
            &self.subscriptions,
            &self.queued,
            &self.sent,
            &self.qos2,
            &self.retained,
        ]
    }

    /// Deletes every record of `client_id`, in one write.
    fn delete_all(&self, client_id: &str) {
        let prefix = keys::client(client_id);
        let mut batch = self.db.batch();
        for ks in &self.keyspaces()[1..5] {
            for item in ks.prefix(&prefix) {
                match item.key() {
                    Ok(key) => batch.remove(ks, key),
                    Err(err) => self.write_failed("scan", &err),
                }
            }
        }
        batch.remove(&self.sessions, prefix);
        self.commit(batch);
    }

    fn commit(&self, batch: OwnedWriteBatch) {
        match batch.commit() {
            Ok(()) => {
                self.metrics.writes.inc();
                let ticket = self.sync.written.fetch_add(1, Ordering::AcqRel) + 1;
                LAST_WRITE.set(ticket);
            }
            Err(err) => self.write_failed("write", &err),
        }
    }

    fn write_failed(&self, what: &str, err: &fjall::Error) {
        self.metrics.write_errors.inc();
        if let Some(suppressed) = WRITE_ERROR_LOG.check() {
            tracing::error!(path = %self.path.display(), error = ?err, suppressed, "store {what} failed: state is kept in memory only");
        }
    }

    fn disk_bytes(&self) -> u64 {
        let bytes = self.db.disk_space().unwrap_or(0);
        self.metrics
            .disk_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        bytes
    }
}

impl Drop for Engine {
    /// The fsync thread holds the database open: it stops with the last
    /// handle (after a last fsync), so the database closes and its lock
    /// goes.
    fn drop(&mut self) {
        self.sync.stop();
    }
}
