//! The process's open-file limit (`RLIMIT_NOFILE`), which bounds the
//! connections the broker can hold whatever it is configured to, and the
//! default `limits.max_connections` derived from it.
//!
//! At start the soft limit is raised to the hard limit (as the Go runtime
//! and nginx do): the soft default of 1024 on many systems would cap a
//! broker at a few hundred devices while the administrator has allowed
//! far more. The default connection bound then leaves a reserve of
//! descriptors for what is not a client: the store, the control socket
//! and HTTP port, password and certificate files, the HTTP auth hook,
//! logs, and refusals in progress.

use super::MAX_REFUSING;

/// Descriptors kept for the process itself: standard streams, the
/// runtime's epoll and wake-up descriptors, listeners, control and HTTP
/// connections, file reads on reload, auth-hook connections, logs.
pub const BASE_RESERVE: u64 = 64;

/// Files the store's engine keeps open at most (its table cache), set in
/// [`crate::store`].
pub const STORE_MAX_CACHED_FILES: usize = 192;

/// Descriptors kept for the store: its cached table files, journals,
/// lock and directory handles.
pub const STORE_RESERVE: u64 = STORE_MAX_CACHED_FILES as u64 + 64;

/// The soft open-file limit, or `None` if it cannot be read or is
/// unlimited.
pub fn soft_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    (r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Raises the soft open-file limit to the hard limit; returns the soft
/// limit in force afterwards. A failure leaves the limit as it was.
pub fn raise_soft_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; `setrlimit` only reads the struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::debug!(
                    soft = r.rlim_cur,
                    hard = r.rlim_max,
                    "cannot raise the open-file limit"
                );
            }
        }
    }
    soft_limit()
}

/// Descriptors not available to clients: [`BASE_RESERVE`], the refusals
/// in progress, and [`STORE_RESERVE`] when a store is on disk.
pub fn reserve(store_on_disk: bool) -> u64 {
    BASE_RESERVE + MAX_REFUSING as u64 + if store_on_disk { STORE_RESERVE } else { 0 }
}

/// The default connection bound for an open-file limit of `nofile`:
/// `nofile` minus the reserve, but at least half of `nofile` (a tiny
/// limit still serves some clients). `None` (unlimited): no bound from
/// descriptors.
pub fn default_max_connections(nofile: Option<u64>, store_on_disk: bool) -> u64 {
    match nofile {
        Some(n) => n.saturating_sub(reserve(store_on_disk)).max(n / 2),
        None => u64::from(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_leaves_the_reserve() {
        // A systemd service's default (524288) and a login shell's (1024).
        assert_eq!(
            default_max_connections(Some(524_288), true),
            524_288 - 64 - 64 - 256
        );
        assert_eq!(default_max_connections(Some(1024), false), 1024 - 128);
        assert_eq!(default_max_connections(Some(1024), true), 1024 - 384);
        // Tiny limits keep half for clients.
        assert_eq!(default_max_connections(Some(48), true), 24);
        assert_eq!(default_max_connections(None, true), u64::from(u32::MAX));
    }

    #[test]
    fn the_soft_limit_is_read_and_raised_to_the_hard_one() {
        let before = soft_limit();
        let after = raise_soft_limit();
        assert!(after >= before, "{after:?} < {before:?}");
    }
}
