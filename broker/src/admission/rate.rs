//! A listener's accept rate (`max_accept_rate`): a token bucket, kept as
//! the time the next connection may be accepted (GCRA), owned by the
//! accept loop alone, so no atomics.
//!
//! Above the rate the listener stops accepting until a token is due,
//! rather than accepting and refusing with CONNACK 0x9F: connections then
//! wait in the kernel's listen backlog at no cost to the broker (no
//! descriptor, no task, no TLS handshake, which is the very CPU cost a
//! reconnect storm brings and the rate is there to bound), are taken in
//! arrival order, and when the backlog is full the kernel drops new SYNs,
//! which clients retry with TCP's own exponential back-off. A refusal
//! would cost an accept, a TLS handshake and a write for each excess
//! connection, and most client libraries reconnect after a fixed delay.
//! The accept loop never spins: it sleeps until the next token is due.

use std::time::Duration;

use tokio::time::Instant;

/// Burst allowed, as a fraction of one second's rate: a tenth of a second.
const BURST_DIVISOR: u32 = 10;

#[derive(Debug)]
pub struct AcceptRate {
    per_sec: u32,
    /// Time between two tokens.
    interval: Duration,
    /// How far ahead of now `next` may run: (burst - 1) intervals.
    tolerance: Duration,
    /// The time at which the bucket would be empty again if no more
    /// tokens were taken ("theoretical arrival time").
    next: Instant,
}

impl AcceptRate {
    /// `per_sec` connections a second (at least 1), with a burst of a
    /// tenth of that (at least 1).
    pub fn new(per_sec: u32) -> AcceptRate {
        let per_sec = per_sec.max(1);
        let burst = per_sec.div_ceil(BURST_DIVISOR).max(1);
        let interval = Duration::from_secs(1) / per_sec;
        AcceptRate {
            per_sec,
            interval,
            tolerance: interval * (burst - 1),
            next: Instant::now(),
        }
    }

    /// The rate, connections a second.
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// The connections that may be accepted back to back from an idle
    /// start.
    pub fn burst(&self) -> u32 {
        u32::try_from(self.tolerance.as_nanos() / self.interval.as_nanos().max(1)).unwrap_or(0) + 1
    }

    /// When the next connection may be accepted: `None` if now.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        let earliest = self.next.checked_sub(self.tolerance).unwrap_or(now);
        (earliest > now).then_some(earliest)
    }

    /// Takes a token for a connection accepted at `now`.
    pub fn take(&mut self, now: Instant) {
        self.next = self.next.max(now) + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_the_rate() {
        let mut r = AcceptRate::new(50);
        assert_eq!(r.burst(), 5);
        let start = Instant::now();
        let mut accepted = 0;
        let mut now = start;
        // One simulated second of a client flood: accept whenever allowed.
        while now < start + Duration::from_secs(1) {
            match r.wait_until(now) {
                None => {
                    r.take(now);
                    accepted += 1;
                }
                Some(t) => {
                    assert!(t > now, "a wait must move time forward");
                    now = t;
                }
            }
        }
        // The burst, then one every 20 ms.
        assert!((54..=56).contains(&accepted), "{accepted}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_only_the_burst() {
        let mut r = AcceptRate::new(10);
        assert_eq!(r.burst(), 1);
        let now = Instant::now();
        r.take(now);
        assert_eq!(r.wait_until(now), Some(now + Duration::from_millis(100)));
        let later = now + Duration::from_secs(60);
        assert_eq!(r.wait_until(later), None);
        r.take(later);
        assert!(
            r.wait_until(later).is_some(),
            "an idle minute saved no tokens"
        );
    }
}
