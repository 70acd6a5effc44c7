//! The fsync thread.
//!
//! Every write bumps [`Shared::written`] once it is in the journal (and so
//! with the OS). The thread fsyncs the journal and then publishes, in
//! `synced`, the value of `written` it read *before* the fsync: every
//! write counted up to there was in the journal when the fsync began, so
//! it is on disk once the fsync returns.
//!
//! - `sync`: the thread fsyncs when a connection asks ([`Shared::wait`]);
//!   writes that arrive during an fsync are covered by the next one, so
//!   one fsync serves every connection that waited meanwhile (group
//!   commit).
//! - `batched`: the thread fsyncs every `flush_interval_ms` if anything
//!   was written, bounding what a power cut can lose.
//!
//! An fsync that fails leaves fjall refusing writes (it cannot know what
//! reached the disk). The thread then logs it, and releases every waiter:
//! acknowledgements no longer wait for a disk that cannot take them, and
//! `mqttctl status` and the write-error metric say so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::{Database, PersistMode};
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::record::now_ms;
use super::StoreMetrics;

pub(super) struct Shared {
    /// Writes handed to the journal so far.
    pub written: AtomicU64,
    /// Writes known to be on disk.
    synced: watch::Sender<u64>,
    /// The highest ticket a waiter asked for.
    wanted: Mutex<u64>,
    wake: Condvar,
    stopping: AtomicBool,
    /// The thread, joined by [`Shared::stop`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    /// Starts the thread. `interval`: fsync at least this often when
    /// something was written (`batched`); `None`: only when asked (`sync`).
    pub fn start(
        db: Database,
        interval: Option<Duration>,
        metrics: Arc<StoreMetrics>,
        refresh_disk: impl Fn() + Send + 'static,
    ) -> std::io::Result<Arc<Shared>> {
        let (synced, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            synced,
            wanted: Mutex::new(0),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("mqttd-fsync".into())
            .spawn(move || s.run(&db, interval, &metrics, &refresh_disk))?;
        *shared.thread.lock() = Some(handle);
        Ok(shared)
    }

    /// Returns once every write counted before `ticket` is on disk.
    pub async fn wait(&self, ticket: u64) {
        let mut rx = self.synced.subscribe();
        if *rx.borrow() >= ticket {
            return;
        }
        {
            let mut wanted = self.wanted.lock();
            if *wanted < ticket {
                *wanted = ticket;
            }
        }
        self.wake.notify_one();
        // The sender lives as long as the store.
        let _ = rx.wait_for(|s| *s >= ticket).await;
    }

    /// A last fsync, then the thread ends.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        {
            let _guard = self.wanted.lock();
            self.wake.notify_one();
        }
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn run(
        &self,
        db: &Database,
        interval: Option<Duration>,
        metrics: &StoreMetrics,
        refresh_disk: &dyn Fn(),
    ) {
        // `sync` fsyncs when asked, and also once a second for writes no
        // acknowledgement waited for (deliveries, deletes).
        let period = interval.unwrap_or(Duration::from_secs(1));
        let mut failed = false;
        let mut last_refresh = Instant::now();
        loop {
            let stopping = {
                let mut wanted = self.wanted.lock();
                loop {
                    let stopping = self.stopping.load(Ordering::Acquire);
                    let synced = *self.synced.borrow();
                    if stopping || *wanted > synced {
                        break stopping;
                    }
                    if self.wake.wait_for(&mut wanted, period).timed_out() {
                        break false;
                    }
                }
            };
            let target = self.written.load(Ordering::Acquire);
            if target > *self.synced.borrow() {
                if failed {
                    self.synced.send_replace(u64::MAX);
                } else {
                    let started = Instant::now();
                    match db.persist(PersistMode::SyncData) {
                        Ok(()) => {
                            let micros =
                                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                            metrics.fsyncs.inc();
                            metrics.fsync_micros.add(micros);
                            let max = i64::try_from(micros).unwrap_or(i64::MAX);
                            if max > metrics.fsync_max_micros.get() {
                                metrics.fsync_max_micros.set(max);
                            }
                            metrics.last_fsync_ms.store(now_ms(), Ordering::Relaxed);
                            self.synced.send_replace(target);
                        }
                        Err(e) => {
                            failed = true;
                            metrics.write_errors.inc();
                            tracing::error!(error = ?e, "store fsync failed: the store takes no more writes; acknowledgements no longer wait for the disk");
                            self.synced.send_replace(u64::MAX);
                        }
                    }
                }
            }
            if last_refresh.elapsed() >= Duration::from_secs(1) || stopping {
                refresh_disk();
                last_refresh = Instant::now();
            }
            if stopping {
                if !failed {
                    let _ = db.persist(PersistMode::SyncAll);
                }
                return;
            }
        }
    }
}
