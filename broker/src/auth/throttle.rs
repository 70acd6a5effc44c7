//! Throttling of failed logins: no unlimited online password guessing.
//!
//! Failed logins (wrong password, unknown user) are counted per client
//! address and per username in a fixed window that opens at the first
//! failure. Once a key has `limit` failures, further logins for it are
//! refused *without checking the password* until its window ends, so a
//! guesser gets at most `limit` guesses per window per address and per
//! username, and a refused guess costs no hash.
//!
//! Addresses are IPv4 addresses or IPv6 /64 prefixes (one IPv6 site
//! usually holds a whole /64). Usernames are kept as a keyed 64-bit hash,
//! so an entry has a fixed size whatever the client sends. Each table
//! holds at most `max_entries` keys: when full, expired windows are
//! dropped first, then the key with the fewest failures (so locked keys
//! are the last to go). A success does not clear a count: otherwise a
//! guesser holding one valid account could reset his address between
//! guesses.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::AuthConfig;
use crate::metrics::{AuthMetrics, Gauge};

/// Why a login was refused unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Too many failures from the client's address.
    Address,
    /// Too many failures for the username.
    Username,
}

impl std::fmt::Display for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Throttled::Address => "address",
            Throttled::Username => "username",
        })
    }
}

/// Failure windows of one kind of key.
struct FailureTable<K> {
    /// Failures that lock a key; 0 turns the table off.
    limit: u32,
    window: Duration,
    max_entries: usize,
    map: Mutex<HashMap<K, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl<K: Eq + Hash + Copy> FailureTable<K> {
    fn new(limit: u32, window: Duration, max_entries: usize) -> Self {
        FailureTable {
            limit,
            window,
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self, w: &Window, now: Instant) -> bool {
        now < w.started + self.window
    }

    /// Whether `key` has used up its failures in its current window.
    fn is_locked(&self, key: &K, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let map = self.map.lock();
        map.get(key)
            .is_some_and(|w| self.live(w, now) && w.failures >= self.limit)
    }

    /// Counts a failure for `key`; returns the number of keys tracked.
    fn record(&self, key: K, now: Instant) -> usize {
        if self.limit == 0 {
            return 0;
        }
        let mut map = self.map.lock();
        if map.len() >= self.max_entries && !map.contains_key(&key) {
            map.retain(|_, w| self.live(w, now));
            if map.len() >= self.max_entries {
                // The least suspicious key goes; locked keys have the
                // most failures and go last.
                let victim = map
                    .iter()
                    .min_by_key(|(_, w)| (w.failures, w.started))
                    .map(|(k, _)| *k);
                if let Some(k) = victim {
                    map.remove(&k);
                }
            }
        }
        let w = map.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if !self.live(w, now) {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        map.len()
    }
}

/// Failed-login tracking per client address and per username.
pub struct LoginThrottle {
    by_address: FailureTable<IpAddr>,
    by_username: FailureTable<u64>,
    /// Keys usernames to their 64-bit hash, randomly per process.
    hasher: RandomState,
    metrics: Arc<AuthMetrics>,
}

impl LoginThrottle {
    pub fn new(cfg: &AuthConfig, metrics: Arc<AuthMetrics>) -> LoginThrottle {
        let window = cfg.failure_window();
        LoginThrottle {
            by_address: FailureTable::new(
                cfg.max_failures_per_address,
                window,
                cfg.max_tracked_failures,
            ),
            by_username: FailureTable::new(
                cfg.max_failures_per_username,
                window,
                cfg.max_tracked_failures,
            ),
            hasher: RandomState::new(),
            metrics,
        }
    }

    /// `Err` when a login from `peer` as `user` must be refused unchecked;
    /// the refusal is counted.
    pub fn check(&self, peer: IpAddr, user: &str) -> Result<(), Throttled> {
        let now = Instant::now();
        if self.by_address.is_locked(&address_key(peer), now) {
            self.metrics.throttled_address.inc();
            return Err(Throttled::Address);
        }
        if self.by_username.is_locked(&self.user_key(user), now) {
            self.metrics.throttled_username.inc();
            return Err(Throttled::Username);
        }
        Ok(())
    }

    /// Counts a failed login from `peer` as `user`.
    pub fn record_failure(&self, peer: IpAddr, user: &str) {
        let now = Instant::now();
        let set = |g: &Gauge, n: usize| g.set(i64::try_from(n).unwrap_or(i64::MAX));
        let n = self.by_address.record(address_key(peer), now);
        set(&self.metrics.tracked_addresses, n);
        let n = self.by_username.record(self.user_key(user), now);
        set(&self.metrics.tracked_usernames, n);
    }

    fn user_key(&self, user: &str) -> u64 {
        self.hasher.hash_one(user)
    }
}

/// The address a client's failures are counted under: IPv4 as is, IPv6
/// by its /64 prefix (IPv4-mapped IPv6 counts as IPv4).
fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_address: u32, per_user: u32, max_tracked: usize) -> LoginThrottle {
        let cfg = AuthConfig {
            max_failures_per_address: per_address,
            max_failures_per_username: per_user,
            failure_window_secs: 60,
            max_tracked_failures: max_tracked,
            ..AuthConfig::default()
        };
        LoginThrottle::new(&cfg, Arc::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn address_locks_after_limit_until_window_ends() {
        let t = throttle(3, 0, 100);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(t.check(a, "u"), Ok(()));
            t.record_failure(a, "u");
        }
        assert_eq!(t.check(a, "u"), Err(Throttled::Address));
        assert_eq!(t.check(a, "other"), Err(Throttled::Address));
        assert_eq!(t.check(ip("10.0.0.2"), "u"), Ok(()), "other address");
        assert_eq!(t.metrics.throttled_address.get(), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.check(a, "u"), Ok(()), "window over");
        t.record_failure(a, "u");
        assert_eq!(t.check(a, "u"), Ok(()), "a new window counts from 1");
    }

    #[tokio::test(start_paused = true)]
    async fn username_locks_across_addresses() {
        let t = throttle(0, 2, 100);
        t.record_failure(ip("10.0.0.1"), "alice");
        t.record_failure(ip("10.0.0.2"), "alice");
        assert_eq!(t.check(ip("10.0.0.3"), "alice"), Err(Throttled::Username));
        assert_eq!(t.check(ip("10.0.0.3"), "bob"), Ok(()));
        assert_eq!(t.metrics.throttled_username.get(), 1);
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[tokio::test(start_paused = true)]
    async fn tables_are_bounded_and_keep_locked_keys() {
        let t = throttle(2, 0, 10);
        let locked = ip("192.0.2.1");
        t.record_failure(locked, "u");
        t.record_failure(locked, "u");
        for i in 0..1000u32 {
            t.record_failure(IpAddr::from(i.to_be_bytes()), "u");
            assert!(t.by_address.map.lock().len() <= 10);
        }
        assert_eq!(t.metrics.tracked_addresses.get(), 10);
        assert_eq!(t.check(locked, "u"), Err(Throttled::Address));
        tokio::time::advance(Duration::from_secs(61)).await;
        t.record_failure(ip("192.0.2.2"), "u");
        assert_eq!(t.metrics.tracked_addresses.get(), 1, "expired purged");
    }
}
