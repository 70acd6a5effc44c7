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

use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

/// Backlog above which publishers pause.
pub const HIGH_WATER_MESSAGES: isize = 50_000;
/// Longest pause for one read batch.
pub const MAX_PAUSE: Duration = Duration::from_millis(50);
/// How often a paused publisher looks again.
const POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub struct Backlog(AtomicIsize);

impl Backlog {
    pub fn add(&self, n: usize) {
        self.0
            .fetch_add(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    pub fn sub(&self, n: usize) {
        self.0
            .fetch_sub(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    pub fn get(&self) -> isize {
        self.0.load(Ordering::Relaxed)
    }

    /// Waits while the backlog is above [`HIGH_WATER_MESSAGES`], at most
    /// [`MAX_PAUSE`].
    pub async fn wait_below_high_water(&self) {
        if self.get() <= HIGH_WATER_MESSAGES {
            return;
        }
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
        b.sub(10);
        let started = tokio::time::Instant::now();
        b.wait_below_high_water().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
