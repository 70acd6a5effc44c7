//! Back-pressure from the broker to publishers.
//!
//! The broker counts the messages in transit: routed into a session's
//! delivery mailbox and not yet taken out by the session's owner (its
//! connection's task, or the holder of an offline session). That is the
//! only unbounded step of the message path; past it, each session's own
//! limits (in-flight window, queue, QoS 0 backlog) bound what it keeps and
//! drop the rest. The count rises only when owners cannot keep up with
//! routing, i.e. when the broker is short of CPU; publishing
//! connections then pause before their next read, so TCP slows publishers
//! instead of the broker's memory growing. The pause is bounded, and a
//! slow or stuck subscriber never causes it (its session keeps draining
//! its mailbox into its own bounded queue), so one client cannot slow the
//! others down.
//!
//! The count is kept by the session's inbox itself
//! ([`crate::session::inbox`]): a message adds one when it is queued and
//! takes it back when it is taken out or when the inbox is dropped with it
//! still inside, so a session that panics or is aborted cannot leave the
//! count raised (which would throttle every publisher afterwards). A paused publisher waits on
//! a [`Notify`] woken when the count falls to [`LOW_WATER_MESSAGES`], not
//! on a timer: no timer load exactly when the broker is overloaded.

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use std::time::Duration;

use tokio::sync::Notify;

/// Backlog above which publishers pause.
pub const HIGH_WATER_MESSAGES: isize = 50_000;
/// Backlog at which paused publishers resume: below the high water, so
/// that they do not wake for every message taken in.
pub const LOW_WATER_MESSAGES: isize = HIGH_WATER_MESSAGES / 2;
/// Longest pause for one read batch.
pub const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The count of messages in transit, and how often publishers paused.
#[derive(Debug, Default)]
pub struct Backlog {
    in_transit: AtomicIsize,
    pauses: AtomicU64,
    /// Woken when the count falls to [`LOW_WATER_MESSAGES`].
    drained: Notify,
}

impl Backlog {
    pub fn add(&self, n: usize) {
        self.in_transit
            .fetch_add(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }

    pub fn sub(&self, n: usize) {
        let n = isize::try_from(n).unwrap_or(isize::MAX);
        let before = self.in_transit.fetch_sub(n, Ordering::Relaxed);
        if before > LOW_WATER_MESSAGES && before.saturating_sub(n) <= LOW_WATER_MESSAGES {
            self.drained.notify_waiters();
        }
    }

    /// Messages in transit now.
    pub fn get(&self) -> isize {
        self.in_transit.load(Ordering::Relaxed)
    }

    /// Times a publishing connection paused since start.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Waits while the backlog is above [`HIGH_WATER_MESSAGES`], until it
    /// falls to [`LOW_WATER_MESSAGES`] or [`MAX_PAUSE`] has passed.
    pub async fn wait_below_high_water(&self) {
        if self.get() <= HIGH_WATER_MESSAGES {
            return;
        }
        self.pauses.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + MAX_PAUSE;
        loop {
            // Registered before the count is read, so a fall between the
            // read and the wait is not missed.
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() <= LOW_WATER_MESSAGES {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    /// With time paused, a timer-polling wait would need the clock to
    /// move; an event-driven one resumes the instant the count falls.
    #[tokio::test(start_paused = true)]
    async fn paused_publisher_wakes_on_drain_without_a_timer() {
        let b = Arc::new(Backlog::default());
        b.add(HIGH_WATER_MESSAGES as usize + 1);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                b.wait_below_high_water().await;
                started.elapsed()
            })
        };
        // Let the waiter park.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        // Still above the low water: it keeps waiting.
        b.sub(10);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.sub((HIGH_WATER_MESSAGES - LOW_WATER_MESSAGES) as usize);
        let waited = waiter.await.unwrap();
        assert_eq!(waited, Duration::ZERO, "woken by the drain, not a timer");
    }
}
