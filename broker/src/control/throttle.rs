//! Failed bearer-token attempts on the TCP control API, per peer address:
//! after [`MAX_FAILURES`] failures within [`FAILURE_WINDOW`], the address is
//! refused (429, `Retry-After`) until that window ends, right token or not,
//! so nobody gets more than a handful of guesses a minute per address. The
//! failures are logged with the peer address (never the token), at most
//! [`LOG_BURST`] lines per [`FAILURE_WINDOW`]; the rest are counted and the
//! count is reported in the next line.
//!
//! IPv6 peers are keyed by their /64 prefix (one host usually holds a whole
//! /64). At most [`MAX_TRACKED_PEERS`] addresses are remembered; when the
//! table is full, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failed attempts allowed per address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;

/// The window failures are counted in, from an address's first failure.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses remembered at most (bounds memory under a spread attack).
pub const MAX_TRACKED_PEERS: usize = 4096;

/// Log lines about failed attempts per [`FAILURE_WINDOW`], across peers.
pub const LOG_BURST: u32 = 20;

/// What to do with a request before its token is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Too many failures: answer 429 with this `Retry-After`.
    Blocked {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

#[derive(Debug)]
struct LogBudget {
    since: Instant,
    lines: u32,
    suppressed: u64,
}

#[derive(Debug)]
struct Inner {
    peers: HashMap<IpAddr, Failures>,
    log: LogBudget,
}

/// The per-address failure table.
#[derive(Debug)]
pub(crate) struct AuthThrottle {
    inner: Mutex<Inner>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            inner: Mutex::new(Inner {
                peers: HashMap::new(),
                log: LogBudget {
                    since: Instant::now(),
                    lines: 0,
                    suppressed: 0,
                },
            }),
        }
    }
}

/// The key of a peer: its IPv4 address, or the /64 of its IPv6 address.
fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthThrottle {
    /// Whether `peer` may try a token now.
    pub fn check(&self, peer: IpAddr, now: Instant) -> Verdict {
        let inner = self.inner.lock();
        match inner.peers.get(&key(peer)) {
            Some(f) if f.count >= MAX_FAILURES => {
                let end = f.since + FAILURE_WINDOW;
                if now < end {
                    Verdict::Blocked {
                        retry_after: end - now,
                    }
                } else {
                    Verdict::Allowed
                }
            }
            _ => Verdict::Allowed,
        }
    }

    /// A right token: the address starts afresh.
    pub fn succeeded(&self, peer: IpAddr) {
        self.inner.lock().peers.remove(&key(peer));
    }

    /// Counts a failed attempt from `peer` and logs it within the budget.
    pub fn failed(&self, peer: SocketAddr, now: Instant) {
        let mut inner = self.inner.lock();
        let k = key(peer.ip());
        if !inner.peers.contains_key(&k) && inner.peers.len() >= MAX_TRACKED_PEERS {
            inner
                .peers
                .retain(|_, f| now.duration_since(f.since) < FAILURE_WINDOW);
            if inner.peers.len() >= MAX_TRACKED_PEERS {
                let oldest = inner
                    .peers
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    inner.peers.remove(&oldest);
                }
            }
        }
        let f = inner.peers.entry(k).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.duration_since(f.since) >= FAILURE_WINDOW {
            *f = Failures {
                count: 0,
                since: now,
            };
        }
        f.count = f.count.saturating_add(1);
        let failures = *f;

        let log = &mut inner.log;
        if now.duration_since(log.since) >= FAILURE_WINDOW {
            log.since = now;
            log.lines = 0;
        }
        if log.lines >= LOG_BURST {
            log.suppressed += 1;
            return;
        }
        log.lines += 1;
        let suppressed = std::mem::take(&mut log.suppressed);
        drop(inner);
        if failures.count >= MAX_FAILURES {
            tracing::warn!(
                %peer,
                failures = failures.count,
                suppressed_log_lines = suppressed,
                "control API: missing or wrong bearer token; address refused until {}s after its first failure",
                FAILURE_WINDOW.as_secs()
            );
        } else {
            tracing::warn!(
                %peer,
                failures = failures.count,
                suppressed_log_lines = suppressed,
                "control API: missing or wrong bearer token"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_max_failures_until_the_window_ends() {
        let t = AuthThrottle::default();
        let start = Instant::now();
        let a = peer("192.0.2.1:4000");
        for i in 0..MAX_FAILURES {
            assert_eq!(t.check(a.ip(), start), Verdict::Allowed);
            t.failed(a, start + Duration::from_secs(u64::from(i)));
        }
        let at = start + Duration::from_secs(10);
        assert_eq!(
            t.check(a.ip(), at),
            Verdict::Blocked {
                retry_after: FAILURE_WINDOW - Duration::from_secs(10)
            }
        );
        // Another port of the same host is the same peer; another host is not.
        assert!(matches!(
            t.check("192.0.2.1".parse().unwrap(), at),
            Verdict::Blocked { .. }
        ));
        assert_eq!(t.check("192.0.2.2".parse().unwrap(), at), Verdict::Allowed);
        // The window ends: allowed again, and counting starts over.
        let later = start + FAILURE_WINDOW;
        assert_eq!(t.check(a.ip(), later), Verdict::Allowed);
        t.failed(a, later);
        assert_eq!(t.check(a.ip(), later), Verdict::Allowed);
    }

    #[test]
    fn success_resets_and_ipv6_is_keyed_by_prefix() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        let a = peer("[2001:db8:1:2::1]:1");
        for _ in 0..MAX_FAILURES - 1 {
            t.failed(a, now);
        }
        t.succeeded(a.ip());
        t.failed(a, now);
        assert_eq!(t.check(a.ip(), now), Verdict::Allowed);
        for _ in 0..MAX_FAILURES {
            t.failed(peer("[2001:db8:1:2::99]:2"), now);
        }
        assert!(matches!(t.check(a.ip(), now), Verdict::Blocked { .. }));
        assert_eq!(
            t.check("2001:db8:1:3::1".parse().unwrap(), now),
            Verdict::Allowed
        );
    }

    #[test]
    fn the_table_and_the_log_are_bounded() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_PEERS as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.failed(SocketAddr::new(IpAddr::V4(ip), 1), now);
        }
        let inner = t.inner.lock();
        assert_eq!(inner.peers.len(), MAX_TRACKED_PEERS);
        // The log budget held too: the other failures were only counted.
        assert_eq!(inner.log.lines, LOG_BURST);
        assert_eq!(
            inner.log.suppressed,
            u64::from(MAX_TRACKED_PEERS as u32 + 10 - LOG_BURST)
        );
    }
}
