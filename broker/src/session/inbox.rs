//! A session's inbox: its control messages and the deliveries routed to
//! it, in one allocation with one waker.
//!
//! Two queues, because control messages (takeover, destroy, shutdown)
//! must not wait behind a flood of deliveries: the owner takes control
//! first. Deliveries are counted in the broker's [`Backlog`] while they are
//! in the inbox: added when queued, taken back when the owner takes them
//! out or when the inbox is dropped with them still inside, so a session
//! that ends, panics or is aborted cannot leave the count raised.
//!
//! Each delivery also carries its [`Charge`] against the broker's
//! memory budget (see [`crate::budget`]), given back with it however it
//! leaves; the inbox holds the session's [`Account`], which the router
//! reads to decide what the session may take.
//!
//! Sends fail, giving the item back, once the inbox is dropped (the
//! session ended): a shared subscription then tries its next member. The
//! inbox also holds the session's "online" flag (a connection is
//! attached) and its "stored" flag (deliveries are stored first), read
//! by the router through the delivery side.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use super::{Delivery, SessionMsg};
use crate::backlog::Backlog;
use crate::budget::Account;
#[cfg(doc)]
use crate::budget::Charge;

/// A message the session no longer accepts (it has ended), given back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

/// Queue capacity kept after a drain; larger buffers are given back.
const KEEP_CAPACITY: usize = 16;

struct Inner {
    state: Mutex<State>,
    /// Wakes the owner. It registers before it looks again, so an item
    /// sent between its first look and its wait is never missed.
    waker: AtomicWaker,
    online: AtomicBool,
    /// The session is offline and its queue is full by count: a delivery
    /// would only be dropped, so the router drops it without waking the
    /// session's holder (see [`DeliveryTx::is_full`]).
    full: AtomicBool,
    /// QoS 1/2 deliveries are stored before they are sent here (a
    /// persistent session on a durable store).
    stored: AtomicBool,
    backlog: Arc<Backlog>,
    /// The session's share of the memory budget.
    account: Arc<Account>,
}

#[derive(Default)]
struct State {
    control: VecDeque<SessionMsg>,
    deliveries: VecDeque<Delivery>,
    /// The inbox was dropped: sends fail.
    closed: bool,
}

/// A new inbox whose deliveries count in `backlog`, for a session whose
/// copies are charged to `account`: the control sender, the delivery
/// sender and the inbox itself.
pub fn inbox(backlog: Arc<Backlog>, account: Arc<Account>) -> (ControlTx, DeliveryTx, Inbox) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State::default()),
        waker: AtomicWaker::new(),
        online: AtomicBool::new(false),
        full: AtomicBool::new(false),
        stored: AtomicBool::new(false),
        backlog,
        account,
    });
    (
        ControlTx(inner.clone()),
        DeliveryTx(inner.clone()),
        Inbox(inner),
    )
}

/// Sends control messages to a session.
#[derive(Clone)]
pub struct ControlTx(Arc<Inner>);

impl ControlTx {
    /// Queues `msg`, or gives it back if the session has ended.
    pub fn send(&self, msg: SessionMsg) -> Result<(), Closed<SessionMsg>> {
        {
            let mut state = self.0.state.lock();
            if state.closed {
                return Err(Closed(msg));
            }
            state.control.push_back(msg);
        }
        self.0.waker.wake();
        Ok(())
    }
}

/// Sends deliveries to a session (the router's handle).
#[derive(Clone)]
pub struct DeliveryTx(Arc<Inner>);

impl DeliveryTx {
    /// Queues `d` and counts it, or gives it back (uncounted) if the
    /// session has ended.
    pub fn send(&self, d: Delivery) -> Result<(), Closed<Delivery>> {
        {
            let mut state = self.0.state.lock();
            if state.closed {
                return Err(Closed(d));
            }
            // Counted under the lock: the owner never takes back more
            // than was added.
            self.0.backlog.add(1);
            state.deliveries.push_back(d);
        }
        self.0.waker.wake();
        Ok(())
    }

    /// The session's share of the memory budget.
    pub fn account(&self) -> &Arc<Account> {
        &self.0.account
    }

    /// Whether the session has a connection attached.
    pub fn is_online(&self) -> bool {
        self.0.online.load(Ordering::Relaxed)
    }

    /// Set by the session when a connection attaches or goes.
    pub(crate) fn set_online(&self, online: bool) {
        self.0.online.store(online, Ordering::Relaxed);
    }

    /// Whether the session is offline with a full queue: a message for it
    /// is dropped at routing (`queue_full`), not handed to its holder to
    /// drop. With ten thousand abandoned sessions matching a topic, that
    /// is ten thousand task wake-ups (and stored copies) saved per message.
    pub fn is_full(&self) -> bool {
        self.0.full.load(Ordering::Relaxed)
    }

    /// Set by the session when its offline queue refuses a message for its
    /// count; cleared when a connection attaches or the queue shrinks.
    pub(crate) fn set_full(&self, full: bool) {
        self.0.full.store(full, Ordering::Relaxed);
    }

    /// Whether QoS 1/2 deliveries must be stored before they are sent
    /// (see crate::store).
    pub fn is_stored(&self) -> bool {
        self.0.stored.load(Ordering::Relaxed)
    }

    pub(crate) fn set_stored(&self, stored: bool) {
        self.0.stored.store(stored, Ordering::Relaxed);
    }

    /// A delivery handle and the inbox it feeds (tests of the router side).
    #[cfg(test)]
    pub(crate) fn channel(backlog: Arc<Backlog>) -> (DeliveryTx, Inbox) {
        let account = Account::new(Arc::default());
        let (_, tx, inbox) = inbox(backlog, account);
        (tx, inbox)
    }
}

/// What the owner takes out of the inbox.
#[derive(Debug)]
pub enum Item {
    Control(SessionMsg),
    Delivery(Delivery),
}

/// The owner's side.
pub struct Inbox(Arc<Inner>);

impl Inbox {
    /// The next control message, else the next delivery (out of the
    /// backlog count from here on); `Pending` registers the owner's task
    /// to be woken by the next send. Never ends: the session's row keeps a
    /// control sender.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        if let Some(item) = self.try_next() {
            return Poll::Ready(item);
        }
        self.0.waker.register(cx.waker());
        match self.try_next() {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// The next control message only; deliveries stay queued.
    pub fn poll_control(&mut self, cx: &mut Context<'_>) -> Poll<SessionMsg> {
        if let Some(msg) = self.try_control() {
            return Poll::Ready(msg);
        }
        self.0.waker.register(cx.waker());
        match self.try_control() {
            Some(msg) => Poll::Ready(msg),
            None => Poll::Pending,
        }
    }

    fn try_next(&mut self) -> Option<Item> {
        let mut state = self.0.state.lock();
        if let Some(msg) = state.control.pop_front() {
            shrink(&mut state.control);
            return Some(Item::Control(msg));
        }
        let d = state.deliveries.pop_front()?;
        shrink(&mut state.deliveries);
        drop(state);
        self.0.backlog.sub(1);
        Some(Item::Delivery(d))
    }

    fn try_control(&mut self) -> Option<SessionMsg> {
        let mut state = self.0.state.lock();
        let msg = state.control.pop_front();
        shrink(&mut state.control);
        msg
    }

    /// The next delivery if one is queued, out of the backlog count.
    pub fn try_delivery(&mut self) -> Option<Delivery> {
        let d = {
            let mut state = self.0.state.lock();
            let d = state.deliveries.pop_front();
            shrink(&mut state.deliveries);
            d
        }?;
        self.0.backlog.sub(1);
        Some(d)
    }
}

fn shrink<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > KEEP_CAPACITY {
        q.shrink_to(KEEP_CAPACITY);
    }
}

impl Drop for Inbox {
    /// Refuses further sends and gives back the count of the deliveries
    /// still inside; what is left is dropped outside the lock (dropping a
    /// control message answers its waiter with an error).
    fn drop(&mut self) {
        let (control, deliveries) = {
            let mut state = self.0.state.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.control),
                std::mem::take(&mut state.deliveries),
            )
        };
        self.0.backlog.sub(deliveries.len());
        drop((control, deliveries));
    }
}

impl fmt::Debug for ControlTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inbox::ControlTx")
    }
}

impl fmt::Debug for DeliveryTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inbox::DeliveryTx")
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inbox::Inbox")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec::Publish;
    use crate::message::Message;
    use crate::session::CloseReason;
    use crate::types::{ClientId, QoS, TopicName};

    fn delivery() -> Delivery {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new("t").unwrap(),
            packet_id: None,
            payload: bytes::Bytes::from_static(b"x"),
            properties: Default::default(),
        };
        Delivery {
            msg: Message::from_publish(p, &ClientId::new("p")),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            seq: None,
            charge: Default::default(),
        }
    }

    fn inbox(backlog: Arc<Backlog>) -> (ControlTx, DeliveryTx, Inbox) {
        super::inbox(backlog, Account::new(Arc::default()))
    }

    async fn next(inbox: &mut Inbox) -> Item {
        std::future::poll_fn(|cx| inbox.poll_next(cx)).await
    }

    #[tokio::test]
    async fn control_overtakes_deliveries_and_counts_follow() {
        let backlog = Arc::new(Backlog::default());
        let (ctl, dtx, mut inbox) = inbox(backlog.clone());
        dtx.send(delivery()).unwrap();
        dtx.send(delivery()).unwrap();
        ctl.send(SessionMsg::Shutdown(CloseReason::Destroyed))
            .unwrap();
        assert_eq!(backlog.get(), 2);
        assert!(matches!(next(&mut inbox).await, Item::Control(_)));
        assert!(matches!(next(&mut inbox).await, Item::Delivery(_)));
        assert_eq!(backlog.get(), 1);
        assert!(inbox.try_delivery().is_some());
        assert_eq!(backlog.get(), 0);
    }

    #[tokio::test]
    async fn wakes_a_waiting_owner() {
        let (ctl, _dtx, mut inbox) = inbox(Arc::default());
        let waiter = tokio::spawn(async move { next(&mut inbox).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ctl.send(SessionMsg::Revoke(Vec::new())).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(got.unwrap().unwrap(), Item::Control(_)));
    }

    #[test]
    fn dropped_inbox_refuses_and_gives_back_its_count() {
        let backlog = Arc::new(Backlog::default());
        let (ctl, dtx, inbox) = inbox(backlog.clone());
        for _ in 0..3 {
            dtx.send(delivery()).unwrap();
        }
        assert_eq!(backlog.get(), 3);
        drop(inbox);
        assert_eq!(backlog.get(), 0);
        assert!(dtx.send(delivery()).is_err());
        assert!(ctl.send(SessionMsg::Revoke(Vec::new())).is_err());
        assert_eq!(backlog.get(), 0, "a refused send is not counted");
    }

    /// The deliveries' memory charges go with them, taken out or left in
    /// a dropped inbox alike.
    #[test]
    fn charges_leave_with_their_deliveries() {
        let budget = Arc::new(crate::budget::MemoryBudget::new(0));
        let account = Account::new(budget.clone());
        let (_ctl, dtx, mut inbox) = super::inbox(Arc::default(), account.clone());
        for _ in 0..3 {
            let charge = dtx.account().admit(100, false, true).unwrap();
            dtx.send(Delivery {
                charge,
                ..delivery()
            })
            .unwrap();
        }
        assert_eq!((budget.accounted(), account.held()), (300, 300));
        drop(inbox.try_delivery());
        assert_eq!(budget.accounted(), 200);
        drop(inbox);
        assert_eq!((budget.accounted(), account.held()), (0, 0));
    }

    #[tokio::test]
    async fn aborted_owner_gives_back_its_count() {
        let backlog = Arc::new(Backlog::default());
        let (_ctl, dtx, mut inbox) = inbox(backlog.clone());
        let owner = tokio::spawn(async move {
            let _ = next(&mut inbox).await;
            std::future::pending::<()>().await;
        });
        dtx.send(delivery()).unwrap();
        dtx.send(delivery()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        owner.abort();
        let _ = owner.await;
        assert_eq!(backlog.get(), 0);
    }

    #[test]
    fn gives_back_a_large_buffer_once_drained() {
        let (_ctl, dtx, mut inbox) = inbox(Arc::default());
        for _ in 0..1000 {
            dtx.send(delivery()).unwrap();
        }
        while inbox.try_delivery().is_some() {}
        assert!(inbox.0.state.lock().deliveries.capacity() <= KEEP_CAPACITY);
    }
}
