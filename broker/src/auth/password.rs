//! The password file as the broker uses it: loaded at start, swapped on
//! reload, and checked off the async threads (slow hashes are CPU work),
//! at most `auth.max_concurrent_hashes` at once.
//!
//! Each check computes an Argon2 hash (about 19 MiB at the default
//! cost), also for unknown users, so hashing is bounded by a semaphore:
//! a CONNECT waits for a slot at most `auth.hash_wait_timeout_ms` and is
//! then refused as busy. The slot is held by the blocking task itself, so
//! a connection that goes away while its hash runs does not free a slot
//! early.
//!
//! The file format and editing live in the `mqttd-passwd` crate, shared
//! with `mqttctl`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mqttd_passwd::{PasswdError, PasswordFile, Verification};
use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::metrics::{AuthMetrics, Gauge};

/// No hashing slot became free in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Bounds how many password hashes run at once, and how long a check
/// waits for a slot.
pub struct HashGate {
    slots: Arc<Semaphore>,
    max_wait: Duration,
    metrics: Arc<AuthMetrics>,
}

impl HashGate {
    pub fn new(max_concurrent: usize, max_wait: Duration, metrics: Arc<AuthMetrics>) -> HashGate {
        HashGate {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_wait,
            metrics,
        }
    }

    /// Runs `hash` on a blocking thread once a slot is free; `Err(Busy)`
    /// (counted) if none frees within the wait bound.
    pub async fn run<T, F>(&self, hash: F) -> Result<T, Busy>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = {
            let _waiting = Held::new(&self.metrics.hashes_waiting);
            tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await
        };
        let Ok(Ok(slot)) = slot else {
            // Timed out (the semaphore is never closed).
            self.metrics.hash_wait_timeouts.inc();
            return Err(Busy);
        };
        let metrics = self.metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let running = metrics.hashes_running.add_get(1);
            metrics.hashes_running_peak.raise_to(running);
            metrics.hashes.inc();
            let out = hash();
            metrics.hashes_running.dec();
            out
        });
        // A panicked hash refuses (as busy) rather than admits.
        task.await.map_err(|_| Busy)
    }
}

/// Counts one in a gauge while alive (also when its future is dropped).
struct Held<'a>(&'a Gauge);

impl<'a> Held<'a> {
    fn new(g: &'a Gauge) -> Self {
        g.inc();
        Held(g)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct PasswordStore {
    path: PathBuf,
    current: RwLock<Arc<PasswordFile>>,
}

impl PasswordStore {
    pub fn load(path: &Path) -> Result<PasswordStore, PasswdError> {
        let file = PasswordFile::load(path)?;
        Ok(PasswordStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file (blocking I/O: call it off the async threads);
    /// on error the previous contents stay in use. Returns the number of
    /// users.
    pub fn reload(&self) -> Result<usize, PasswdError> {
        let file = PasswordFile::load(&self.path)?;
        let users = file.len();
        *self.current.write() = Arc::new(file);
        Ok(users)
    }

    /// Checks `password` for `user` on a blocking thread, through `gate`.
    pub async fn verify(
        &self,
        gate: &HashGate,
        user: &str,
        password: &[u8],
    ) -> Result<Verification, Busy> {
        let file = self.current.read().clone();
        let user = user.to_string();
        let password = password.to_vec();
        gate.run(move || file.verify(&user, &password)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_never_exceed_the_bound_and_waiters_time_out() {
        let metrics = Arc::new(AuthMetrics::default());
        let gate = Arc::new(HashGate::new(2, Duration::from_secs(30), metrics.clone()));
        // Hashes that block until released, so the bound is reached.
        let (release, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (gate, rx) = (gate.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                gate.run(move || {
                    let _ = rx.lock().map(|r| r.recv());
                })
                .await
            }));
        }
        let full = async {
            while metrics.hashes_running.get() < 2 || metrics.hashes_waiting.get() < 4 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), full)
            .await
            .expect("two hashes run, four wait");
        assert_eq!(metrics.hashes_running.get(), 2);
        // A short-waiting gate on the same slots is refused as busy.
        let impatient = HashGate {
            slots: gate.slots.clone(),
            max_wait: Duration::from_millis(1),
            metrics: metrics.clone(),
        };
        assert_eq!(impatient.run(|| ()).await, Err(Busy));
        assert_eq!(metrics.hash_wait_timeouts.get(), 1);
        for _ in 0..6 {
            release.send(()).unwrap();
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(metrics.hashes.get(), 6);
        assert_eq!(metrics.hashes_running_peak.get(), 2);
        assert_eq!(metrics.hashes_running.get(), 0);
        assert_eq!(metrics.hashes_waiting.get(), 0);
    }
}
