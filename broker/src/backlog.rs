//! Back-pressure from the broker to publishers.
//!
//! The broker counts the messages in transit: routed into a session's
//! delivery mailbox and not yet taken out by the session task. That is the
//! only unbounded step of the message path; past it, each session's own
//! limits (in-flight window, queue, QoS 0 backlog) bound what it keeps and
//! drop the rest. The count rises only when session tasks cannot keep up
//! with routing, i.e. when the broker is short of CPU; publishing
//! connections then pause before their next read, so TCP slows publishers
//! instead of the broker's memory growing. The pause is bounded, and a
//! slow or stuck subscriber never causes it (its session keeps draining
//! its mailbox into its own bounded queue), so one client cannot slow the
//! others down.

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

/// Backlog above which publishers pause.
pub const HIGH_WATER_MESSAGES: isize = 50_000;
/// Longest pause for one read batch.
pub const MAX_PAUSE: Duration = Duration::from_millis(50);
/// How often a paused publisher looks again.
const POLL: Duration = Duration::from_millis(1);

/// The count of messages in transit, and how often publishers paused.
#[derive(Debug, Default)]
pub struct Backlog {
    in_transit: AtomicIsize,
    pauses: AtomicU64,
}

impl Backlog {
    pub fn add(&self, n: usize) {
        self.in_transit
            .fetch_add(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    pub fn sub(&self, n: usize) {
        self.in_transit
            .fetch_sub(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    /// Messages in transit now.
    pub fn get(&self) -> isize {
        self.in_transit.load(Ordering::Relaxed)
    }

    /// Times a publishing connection paused since start.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Waits while the backlog is above [`HIGH_WATER_MESSAGES`], at most
    /// [`MAX_PAUSE`].
    pub async fn wait_below_high_water(&self) {
        if self.get() <= HIGH_WATER_MESSAGES {
            return;
        }
        self.pauses.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + MAX_PAUSE;
        while self.get() > HIGH_WATER_MESSAGES && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pause_is_bounded() {
        let b = Backlog::default();
        b.add(HIGH_WATER_MESSAGES as usize + 1);
        let started = tokio::time::Instant::now();
        b.wait_below_high_water().await;
        assert!(started.elapsed() >= MAX_PAUSE);
        assert_eq!(b.pauses(), 1);
        b.sub(10);
        let started = tokio::time::Instant::now();
        b.wait_below_high_water().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(b.pauses(), 1, "no pause below the mark");
    }
}
