//! Opening the store: the data directory, the engine, the format version,
//! and what happens to a store that cannot be read.
//!
//! The broker never refuses to start because its store is damaged. fjall
//! recovers a torn journal tail by itself (it trims it to the last whole
//! batch), but refuses to open at all when a checksum inside the journal
//! fails (a power cut can leave that) or a table is damaged. The whole
//! database is then moved aside to `data_dir/quarantine/<timestamp>/`
//! (never deleted) and the broker starts with an empty store, logging an
//! error naming the path, counting it and showing it in `mqttctl status`.
//! Moving only the journal aside would keep the flushed tables, but
//! fjall 3.1 then restarts its sequence numbers at 0 and no longer sees
//! them (tested: `a_damaged_journal_moves_the_store_aside`), so the
//! database goes whole. Records that do not decode are quarantined one by
//! one by the loader.
//!
//! It does refuse, with a clear error, what an operator must decide on: a
//! store written by a newer, incompatible mqttd (moving it aside would
//! lose it to a downgrade), a store another process holds open, and a data
//! directory it cannot create or write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fjall::{Database, KeyspaceCreateOptions};

use super::load::Loaded;
use super::record::now_ms;
use super::{syncer, Engine, Store, StoreMetrics};
use crate::config::{Durability, StorageConfig};

/// The format of mqttd's records and keys. Bump it with a migration in
/// [`migrate`] when either changes.
pub const FORMAT_VERSION: u32 = 1;

/// The directory under `data_dir` that holds the engine's files.
const ENGINE_DIR: &str = "store";
const QUARANTINE_DIR: &str = "quarantine";
const META_KEYSPACE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";

/// Something the store could not keep, moved aside at start-up.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Where it was moved.
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use the data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("the store {path} has format {found}, newer than this mqttd reads ({supported}): run a newer mqttd, or move the directory away to start empty")]
    NewerFormat {
        path: PathBuf,
        found: String,
        supported: u32,
    },
    #[error("the store {path} cannot be opened: {reason}")]
    Engine { path: PathBuf, reason: String },
    #[error("cannot start the store's fsync thread: {0}")]
    Thread(std::io::Error),
}

impl OpenError {
    /// Whether the operator must act before the broker can start on this
    /// data directory (as opposed to a broken disk or directory).
    pub fn is_incompatible(&self) -> bool {
        matches!(self, OpenError::NewerFormat { .. })
    }
}

/// Opens the store `cfg` describes and reads back what it holds. With
/// `durability: memory`, an empty in-memory store.
pub fn open(cfg: &StorageConfig) -> Result<(Store, Loaded), OpenError> {
    if cfg.durability == Durability::Memory {
        return Ok((Store::memory(), Loaded::default()));
    }
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
        path: dir.clone(),
        source,
    })?;
    let metrics = Arc::new(StoreMetrics::default());
    let mut recoveries = Vec::new();
    let engine_dir = dir.join(ENGINE_DIR);
    let db = match open_engine(&engine_dir) {
        Ok(db) => db,
        Err(Failure::Refuse(e)) => return Err(e),
        Err(Failure::Damaged(reason)) => {
            let moved = quarantine(dir, &engine_dir).map_err(|source| OpenError::Dir {
                path: dir.clone(),
                source,
            })?;
            tracing::error!(path = %moved.display(), %reason, "the store could not be opened: moved aside whole, starting with an empty store");
            metrics.quarantined.inc();
            recoveries.push(Recovery {
                at_ms: now_ms(),
                path: moved,
                reason,
            });
            match open_engine(&engine_dir) {
                Ok(db) => db,
                Err(Failure::Refuse(e)) => return Err(e),
                Err(Failure::Damaged(reason)) => {
                    return Err(OpenError::Engine {
                        path: engine_dir,
                        reason,
                    })
                }
            }
        }
    };
    let ks = |name: &str| {
        db.keyspace(name, KeyspaceCreateOptions::default)
            .map_err(|e| OpenError::Engine {
                path: engine_dir.clone(),
                reason: format!("keyspace {name}: {e:?}"),
            })
    };
    let meta = ks(META_KEYSPACE)?;
    check_format(&engine_dir, &meta)?;
    let interval = match cfg.durability {
        Durability::Batched => Some(Duration::from_millis(cfg.flush_interval_ms)),
        _ => None,
    };
    let refresh = {
        let db = db.clone();
        let metrics = metrics.clone();
        move || {
            if let Ok(bytes) = db.disk_space() {
                metrics
                    .disk_bytes
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    };
    refresh();
    let sync = syncer::Shared::start(db.clone(), interval, metrics.clone(), refresh)
        .map_err(OpenError::Thread)?;
    let engine = Engine {
        meta,
        sessions: ks("sessions")?,
        subscriptions: ks("subscriptions")?,
        queued: ks("queued")?,
        sent: ks("sent")?,
        qos2: ks("qos2")?,
        retained: ks("retained")?,
        db,
        durability: cfg.durability,
        path: dir.clone(),
        next_seq: 1.into(),
        max_disk_bytes: cfg.max_disk_bytes,
        sync,
        metrics,
        recoveries,
    };
    let quarantine_records = dir.join(QUARANTINE_DIR).join(stamp());
    let loaded = super::load::load(&engine, &quarantine_records);
    let store = Store {
        engine: Some(Arc::new(engine)),
    };
    Ok((store, loaded))
}

enum Failure {
    Refuse(OpenError),
    Damaged(String),
}

fn open_engine(path: &Path) -> Result<Database, Failure> {
    // fjall reports damage as errors; a panic inside it on damaged files
    // is treated the same way rather than taking the broker down.
    // The table cache is bounded so that the descriptors kept for the
    // store (`admission::open_files::STORE_RESERVE`) suffice.
    let opened = std::panic::catch_unwind(|| {
        Database::builder(path)
            .max_cached_files(Some(crate::admission::open_files::STORE_MAX_CACHED_FILES))
            .open()
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(fjall::Error::Locked)) => Err(Failure::Refuse(OpenError::Locked {
            path: path.to_path_buf(),
        })),
        Ok(Err(fjall::Error::InvalidVersion(v))) if is_newer_engine(v) => {
            Err(Failure::Refuse(OpenError::NewerFormat {
                path: path.to_path_buf(),
                found: format!("fjall {}", v.map_or("?".into(), |v| v.to_string())),
                supported: FORMAT_VERSION,
            }))
        }
        Ok(Err(fjall::Error::Io(e))) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Failure::Refuse(OpenError::Dir {
                path: path.to_path_buf(),
                source: e,
            }))
        }
        Ok(Err(e)) => Err(Failure::Damaged(format!("{e:?}"))),
        Err(_) => Err(Failure::Damaged(
            "the engine panicked while opening it".into(),
        )),
    }
}

/// A version fjall cannot read because it is newer than the one linked in
/// (`None`: unreadable, which is damage, not a newer format).
fn is_newer_engine(v: Option<fjall::FormatVersion>) -> bool {
    v.is_some_and(|v| u8::from(v) > u8::from(fjall::FormatVersion::V3))
}

fn check_format(path: &Path, meta: &fjall::Keyspace) -> Result<(), OpenError> {
    let engine = |e: fjall::Error| OpenError::Engine {
        path: path.to_path_buf(),
        reason: format!("{e:?}"),
    };
    let found = meta.get(FORMAT_KEY).map_err(engine)?;
    let version = match found.as_deref() {
        None => {
            meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes())
                .map_err(engine)?;
            return Ok(());
        }
        Some(b) => match <[u8; 4]>::try_from(b) {
            Ok(b) => u32::from_be_bytes(b),
            Err(_) => {
                return Err(OpenError::NewerFormat {
                    path: path.to_path_buf(),
                    found: format!("unreadable format marker {b:?}"),
                    supported: FORMAT_VERSION,
                })
            }
        },
    };
    if version > FORMAT_VERSION {
        return Err(OpenError::NewerFormat {
            path: path.to_path_buf(),
            found: version.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    migrate(version, meta).map_err(engine)
}

/// Brings a store of an older format to [`FORMAT_VERSION`]. Format 1 is
/// the first: there is nothing older to migrate yet.
fn migrate(from: u32, meta: &fjall::Keyspace) -> Result<(), fjall::Error> {
    if from < FORMAT_VERSION {
        tracing::info!(from, to = FORMAT_VERSION, "migrating the store's format");
        meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes())?;
    }
    Ok(())
}

/// A directory name for now, sortable: `20261201T051500Z-123`.
fn stamp() -> String {
    let ms = now_ms();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = mqttd_api::time::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Moves `engine_dir` to a new quarantine directory; returns where.
fn quarantine(data_dir: &Path, engine_dir: &Path) -> std::io::Result<PathBuf> {
    let target = data_dir.join(QUARANTINE_DIR).join(stamp());
    std::fs::create_dir_all(&target)?;
    let moved = target.join(ENGINE_DIR);
    std::fs::rename(engine_dir, &moved)?;
    Ok(moved)
}

/// Appends a record that does not decode to `dir/records.txt` (keyspace,
/// key and value in hex), so that nothing is deleted unseen.
pub(super) fn quarantine_record(dir: &Path, keyspace: &str, key: &[u8], value: &[u8]) {
    use std::io::Write as _;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("records.txt"))?;
        writeln!(f, "{keyspace} {} {}", hex(key), hex(value))
    };
    if let Err(e) = write() {
        tracing::error!(path = %dir.display(), error = %e, "cannot write a quarantined record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionRecord;

    fn config(dir: &Path) -> StorageConfig {
        StorageConfig {
            data_dir: dir.to_path_buf(),
            ..StorageConfig::default()
        }
    }

    fn record() -> SessionRecord {
        SessionRecord {
            protocol: crate::codec::ProtocolVersion::V311,
            expiry_secs: 60,
            disconnected_at_ms: None,
            will: None,
            will_due_ms: None,
        }
    }

    /// The newest journal file of `engine`.
    fn newest_journal(engine: &Path) -> PathBuf {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(engine)
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path();
                let id = path.file_stem()?.to_str()?.parse().ok()?;
                (path.extension()? == "jnl").then_some((id, path))
            })
            .collect();
        found.sort();
        found.pop().expect("a journal file").1
    }

    /// A byte flipped inside the journal's last batch (a power cut can do
    /// it) makes fjall refuse to open: the store is moved aside whole and
    /// the broker's store opens empty, saying so. (fjall trims a torn tail
    /// by itself; the broker's tests/damaged_store.rs covers that.)
    #[test]
    fn a_damaged_journal_moves_the_store_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(&config(dir.path())).unwrap();
            store.save_session("in-journal", &record());
            store.sync_now_for_tests();
            // Dropped without close: the write is only in the journal.
        }
        let newest = newest_journal(&dir.path().join(ENGINE_DIR));
        let mut bytes = std::fs::read(&newest).unwrap();
        let at = bytes
            .windows(b"in-journal".len())
            .position(|w| w == b"in-journal")
            .expect("the write is in the journal");
        bytes[at] ^= 0xFF;
        std::fs::write(&newest, bytes).unwrap();
        let (store, loaded) = open(&config(dir.path())).unwrap();
        assert!(loaded.sessions.is_empty());
        let status = store.status();
        assert_eq!(status.recoveries.len(), 1, "the recovery is reported");
        let moved = &status.recoveries[0].path;
        assert!(moved.starts_with(dir.path().join(QUARANTINE_DIR)));
        assert!(
            moved.join(newest.file_name().unwrap()).exists(),
            "nothing deleted"
        );
        // The new store works.
        store.save_session("after", &record());
        drop(store);
        let (_, loaded) = open(&config(dir.path())).unwrap();
        assert_eq!(loaded.sessions.len(), 1);
    }

    fn journals(engine: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(engine)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
            .collect()
    }

    /// A clean close leaves one journal (the new, empty one): the next
    /// start replays nothing.
    #[test]
    fn a_clean_close_leaves_no_journal_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let (store, loaded) = open(&config(dir.path())).unwrap();
            assert_eq!(loaded.sessions.len(), round * 500);
            for i in 0..500 {
                store.save_session(&format!("c{round}-{i}"), &record());
            }
            store.close();
            drop(store);
            let left = journals(&dir.path().join(ENGINE_DIR));
            assert_eq!(left.len(), 1, "{left:?}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path().join(ENGINE_DIR))
                .open()
                .unwrap();
            let meta = db
                .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
                .unwrap();
            meta.insert(FORMAT_KEY, (FORMAT_VERSION + 1).to_be_bytes())
                .unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let err = open(&config(dir.path())).unwrap_err();
        assert!(err.is_incompatible(), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
        assert!(!dir.path().join(QUARANTINE_DIR).exists());
    }
}
