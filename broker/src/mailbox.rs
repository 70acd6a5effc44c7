//! An unbounded many-producer, single-consumer mailbox that costs almost
//! nothing while empty.
//!
//! Every connection has three mailboxes (its session's control and delivery
//! mailboxes and its own outbound one). Tokio's `mpsc` channel allocates a
//! block of 32 slots and cache-padded state when it is created, about
//! 1.9 KB each: most of an idle connection's memory. A mailbox is a deque
//! behind a lock plus an [`AtomicWaker`] for its one receiver: under 100
//! bytes until messages flow, its buffer given back when a burst has been
//! drained, and a receiver that waits holds no future state of its own
//! ([`Receiver::poll_recv`]).
//!
//! Semantics follow `tokio::sync::mpsc::unbounded_channel`: `send` fails
//! once the receiver is closed or dropped; `recv` returns `None` once every
//! sender is gone and the mailbox is empty; `close` refuses new messages
//! but leaves the queued ones to `try_recv`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

/// Capacity kept after a drain; larger buffers are given back.
const KEEP_CAPACITY: usize = 16;

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver. It registers before it looks again, so a
    /// message sent between its first look and its wait is never missed.
    waker: AtomicWaker,
    senders: AtomicUsize,
    /// A flag the receiver sets for senders to read (see [`Sender::flag`]).
    flag: AtomicBool,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver closed or dropped the mailbox.
    closed: bool,
}

/// Creates a mailbox.
pub fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        waker: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        flag: AtomicBool::new(false),
    });
    (Sender(inner.clone()), Receiver(inner))
}

/// The sending side; cheap to clone.
pub struct Sender<T>(Arc<Inner<T>>);

/// A message the receiver no longer accepts, given back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T> Sender<T> {
    /// The flag the receiver's owner sets (a session: whether it has a
    /// connection), kept in the mailbox so it costs no allocation of its own.
    pub fn flag(&self) -> bool {
        self.0.flag.load(Ordering::Relaxed)
    }

    /// Sets the flag (its owner's side, through any sender).
    pub fn set_flag(&self, on: bool) {
        self.0.flag.store(on, Ordering::Relaxed);
    }

    /// Queues `item`, or gives it back if the receiver is closed.
    pub fn send(&self, item: T) -> Result<(), Closed<T>> {
        {
            let mut state = self.0.state.lock();
            if state.closed {
                return Err(Closed(item));
            }
            state.items.push_back(item);
        }
        self.0.waker.wake();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: wake the receiver so it sees the end.
            self.0.waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mailbox::Sender")
    }
}

/// The receiving side.
pub struct Receiver<T>(Arc<Inner<T>>);

/// `try_recv` found nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Empty;

impl<T> Receiver<T> {
    /// The next message; `None` once all senders are gone (or the mailbox
    /// was closed) and nothing is left. Cancel safe.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll: `Pending` registers the task to be
    /// woken by the next send (or the last sender going).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(ready) = self.poll_once() {
            return Poll::Ready(ready);
        }
        self.0.waker.register(cx.waker());
        // Look again: a message may have come before the registration.
        match self.poll_once() {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    fn poll_once(&mut self) -> Option<Option<T>> {
        match self.try_recv() {
            Ok(item) => Some(Some(item)),
            // Look once more: a sender may have queued a message just
            // before it went away.
            Err(Empty) if self.ended() => Some(self.try_recv().ok()),
            Err(Empty) => None,
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<T, Empty> {
        let mut state = self.0.state.lock();
        let item = state.items.pop_front().ok_or(Empty)?;
        if state.items.is_empty() && state.items.capacity() > KEEP_CAPACITY {
            state.items.shrink_to(KEEP_CAPACITY);
        }
        Ok(item)
    }

    /// Refuses further messages; those already queued stay readable.
    pub fn close(&mut self) {
        self.0.state.lock().closed = true;
    }

    fn ended(&self) -> bool {
        self.0.senders.load(Ordering::Acquire) == 0 || self.0.state.lock().closed
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.0.state.lock();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: a message's drop may send elsewhere.
        drop(items);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mailbox::Receiver")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_ends_with_the_last_sender() {
        let (tx, mut rx) = mailbox();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(tx2);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver() {
        let (tx, mut rx) = mailbox();
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send("x").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Some("x"));
    }

    #[tokio::test]
    async fn wakes_when_the_last_sender_drops() {
        let (tx, mut rx) = mailbox::<u8>();
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn close_refuses_new_messages_and_keeps_queued_ones() {
        let (tx, mut rx) = mailbox();
        tx.send(1).unwrap();
        rx.close();
        assert_eq!(tx.send(2), Err(Closed(2)));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(Empty));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn dropped_receiver_refuses_and_drops_queued() {
        let (tx, rx) = mailbox();
        let counted = Arc::new(());
        tx.send(counted.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&counted), 1);
        assert!(tx.send(counted.clone()).is_err());
    }

    #[test]
    fn gives_back_a_large_buffer_once_drained() {
        let (tx, mut rx) = mailbox();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.0.state.lock().items.capacity() <= KEEP_CAPACITY);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_senders_lose_nothing() {
        let (tx, mut rx) = mailbox();
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10_000u64 {
                    tx.send(t * 1_000_000 + i).unwrap();
                    if i % 1000 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        drop(tx);
        let mut last = [None::<u64>; 4];
        let mut n = 0;
        while let Some(v) = rx.recv().await {
            let t = (v / 1_000_000) as usize;
            assert!(last[t].is_none_or(|l| l < v), "per-sender order");
            last[t] = Some(v);
            n += 1;
        }
        assert_eq!(n, 40_000);
        for t in tasks {
            t.await.unwrap();
        }
    }
}
