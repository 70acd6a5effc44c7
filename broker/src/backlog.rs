//! Back-pressure from subscribers to publishers.
//!
//! The broker counts the messages it has routed and not yet written to a
//! subscriber's socket (in session mailboxes, in connection channels, and
//! queued for connected but slow clients). When that backlog is high,
//! publishing connections pause reading their sockets, so TCP slows the
//! publishers down instead of the broker's memory growing. The pause is
//! bounded, so a stuck subscriber slows publishers but never stops them;
//! its own queue limits then drop its messages.

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
