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
//! The count is owned by the delivery mailbox itself ([`channel`]): a
//! message adds one when it is queued and takes it back when it is
//! received or when the receiver is dropped with it still inside, so a
//! session that panics or is aborted cannot leave the count raised (which
//! would throttle every publisher afterwards). A paused publisher waits on
//! a [`Notify`] woken when the count falls to [`LOW_WATER_MESSAGES`], not
//! on a timer: no timer load exactly when the broker is overloaded.

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::mailbox::{self, Closed};

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

/// A delivery mailbox whose messages are counted in `backlog` while they
/// are in it.
pub fn channel<T>(backlog: Arc<Backlog>) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mailbox::mailbox();
    (
        Sender {
            tx,
            backlog: backlog.clone(),
        },
        Receiver { rx, backlog },
    )
}

/// The sending side of a counted mailbox.
#[derive(Debug)]
pub struct Sender<T> {
    tx: mailbox::Sender<T>,
    backlog: Arc<Backlog>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            backlog: self.backlog.clone(),
        }
    }
}

impl<T> Sender<T> {
    /// The mailbox's flag (see [`mailbox::Sender::flag`]).
    pub fn flag(&self) -> bool {
        self.tx.flag()
    }

    pub fn set_flag(&self, on: bool) {
        self.tx.set_flag(on);
    }

    /// Queues `item` and counts it, or gives it back (uncounted) if the
    /// receiver is gone.
    pub fn send(&self, item: T) -> Result<(), Closed<T>> {
        // Counted first, so the receiver never takes back more than was
        // added.
        self.backlog.add(1);
        self.tx.send(item).inspect_err(|_| self.backlog.sub(1))
    }
}

/// The receiving side of a counted mailbox. Dropping it (a session that
/// ends, panics or is aborted) takes back the count of what is left in it.
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mailbox::Receiver<T>,
    backlog: Arc<Backlog>,
}

impl<T> Receiver<T> {
    /// The next message, no longer in transit. Cancel safe.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(_)) = &polled {
            self.backlog.sub(1);
        }
        polled
    }

    /// The next message if one is queued, taken out of the count.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok();
        if item.is_some() {
            self.backlog.sub(1);
        }
        item
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Closed first: a send that loses the race fails and takes its
        // own count back.
        self.rx.close();
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        self.backlog.sub(left);
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

    #[test]
    fn dropped_receiver_gives_back_its_count() {
        let b = Arc::new(Backlog::default());
        let (tx, rx) = channel::<u32>(b.clone());
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        assert_eq!(b.get(), 100);
        // A session that panics drops its receiver with messages inside.
        drop(rx);
        assert_eq!(b.get(), 0);
        assert!(tx.send(1).is_err());
        assert_eq!(b.get(), 0, "a refused send is not counted");
    }

    #[tokio::test]
    async fn aborted_receiver_task_gives_back_its_count() {
        let b = Arc::new(Backlog::default());
        let (tx, mut rx) = channel::<u32>(b.clone());
        tx.send(0).unwrap();
        let task = tokio::spawn(async move {
            let _ = rx.recv().await;
            panic!("session bug");
        });
        assert!(task.await.is_err());
        for i in 0..10 {
            let _ = tx.send(i);
        }
        assert_eq!(b.get(), 0);
    }

    #[tokio::test]
    async fn received_messages_leave_the_count() {
        let b = Arc::new(Backlog::default());
        let (tx, mut rx) = channel::<u32>(b.clone());
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(b.get(), 1);
    }
}
