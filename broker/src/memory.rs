//! Giving memory back to the operating system after a load has passed.
//!
//! mqttd uses the system allocator (glibc malloc on Debian and in the
//! container image). Two of its defaults keep memory after a burst:
//!
//! - the mmap threshold is dynamic: once a large block (a 512 KiB payload)
//!   allocated by `mmap` is freed, glibc raises the threshold to its size,
//!   so later large payloads come from the heap arenas and stay there
//!   after they are freed (a stalled subscriber's gigabytes were kept);
//! - freed space in the middle of an arena is only returned by
//!   `malloc_trim`, never by `free`.
//!
//! [`tune`] fixes the mmap threshold (which also turns the dynamic
//! adjustment off), so payloads of [`MMAP_THRESHOLD_BYTES`] and more are
//! mapped and unmapped one by one, and starts a thread that calls
//! `malloc_trim(0)` every [`TRIM_INTERVAL`]. The thread runs off the tokio
//! runtime; a trim holds each arena's lock only while it walks that arena.
//! Measured figures are in BENCHMARKS.md ("Memory after a load").
//!
//! On other C libraries (musl) [`tune`] does nothing.

use std::time::Duration;

/// Blocks at least this large are mapped on their own and given back to
/// the system when freed (glibc's initial default, kept fixed).
pub const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;
/// How often free memory is trimmed from the heap arenas.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Sets the allocator up to return memory; call once at start.
pub fn tune() {
    imp::tune();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::{MMAP_THRESHOLD_BYTES, TRIM_INTERVAL};

    pub fn tune() {
        // SAFETY: mallopt only sets allocator parameters; these are valid
        // values for parameters glibc documents, and it is called before
        // the runtime's threads allocate concurrently.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES) == 1
        };
        if !ok {
            tracing::warn!("mallopt refused the memory settings; freed memory may be kept");
        }
        let spawned = std::thread::Builder::new()
            .name("mqttd-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_INTERVAL);
                // SAFETY: malloc_trim may be called at any time from any thread.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory trim thread");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune() {}
}
