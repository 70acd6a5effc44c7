//! A connection's outbound mailbox: what its session sends it, plus a
//! close signal that overtakes everything queued.
//!
//! A close (takeover, operator destroy, shutdown, a violation the session
//! saw) must act at once, whatever is queued before it and whether or not
//! the peer reads: the connection watches the signal while it reads,
//! between the packets it handles and while a write is blocked. Packets
//! still queued when it closes are not written: the session keeps what it
//! must resend (QoS 1 and 2) for the next connection.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::mailbox::{self, Closed, Empty};
use crate::session::{CloseReason, Outbound};

/// The close reason a connection was told, if any. One byte and a
/// [`Notify`]: every connection has one.
#[derive(Debug, Default)]
struct CloseSignal {
    /// 0: open; otherwise [`encode`] of the first reason given.
    reason: AtomicU8,
    notify: Notify,
}

impl CloseSignal {
    fn get(&self) -> Option<CloseReason> {
        decode(self.reason.load(Ordering::Acquire))
    }

    async fn closed(&self) -> CloseReason {
        loop {
            if let Some(r) = self.get() {
                return r;
            }
            self.notify.notified().await;
        }
    }
}

fn encode(r: CloseReason) -> u8 {
    match r {
        CloseReason::TakenOver => 1,
        CloseReason::Destroyed => 2,
        CloseReason::ServerShutdown => 3,
        CloseReason::ProtocolError => 4,
    }
}

fn decode(v: u8) -> Option<CloseReason> {
    match v {
        1 => Some(CloseReason::TakenOver),
        2 => Some(CloseReason::Destroyed),
        3 => Some(CloseReason::ServerShutdown),
        4 => Some(CloseReason::ProtocolError),
        _ => None,
    }
}

/// The session's side.
#[derive(Debug, Clone)]
pub struct OutboundTx {
    tx: mailbox::Sender<Outbound>,
    close: Arc<CloseSignal>,
}

impl OutboundTx {
    /// Queues `out`; an [`Outbound::Close`] is not queued but signalled,
    /// so that it overtakes what is queued (the first reason given wins).
    pub fn send(&self, out: Outbound) -> Result<(), Closed<Outbound>> {
        match out {
            Outbound::Close(r) => {
                let _ = self.close.reason.compare_exchange(
                    0,
                    encode(r),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                // A stored permit: the connection cannot miss it between
                // its check and its wait (it is the only waiter).
                self.close.notify.notify_one();
                Ok(())
            }
            other => self.tx.send(other),
        }
    }
}

/// The connection's side.
pub struct OutboundRx {
    rx: mailbox::Receiver<Outbound>,
    close: Arc<CloseSignal>,
}

impl OutboundRx {
    /// The close reason, if the session asked to close.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close.get()
    }

    /// Completes when the session asks to close. Cancel safe.
    pub async fn closed(&self) -> CloseReason {
        self.close.closed().await
    }

    /// The next queued packet, or [`Outbound::Close`] as soon as the
    /// session asks to close, ahead of what is queued; `None` once the
    /// session side is gone. Cancel safe.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let (close, rx) = (&self.close, &mut self.rx);
        tokio::select! {
            biased;
            r = close.closed() => Some(Outbound::Close(r)),
            out = rx.recv() => out,
        }
    }

    pub fn try_recv(&mut self) -> Result<Outbound, Empty> {
        self.rx.try_recv()
    }
}

/// A connection's outbound mailbox.
pub fn channel() -> (OutboundTx, OutboundRx) {
    let (tx, rx) = mailbox::mailbox();
    let close = Arc::new(CloseSignal::default());
    (
        OutboundTx {
            tx,
            close: close.clone(),
        },
        OutboundRx { rx, close },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Packet;

    #[tokio::test]
    async fn close_overtakes_queued_packets_and_first_reason_wins() {
        let (tx, mut rx) = channel();
        tx.send(Outbound::Packet(Box::new(Packet::PingResp)))
            .unwrap();
        assert_eq!(rx.close_reason(), None);
        tx.send(Outbound::Close(CloseReason::TakenOver)).unwrap();
        tx.send(Outbound::Close(CloseReason::ServerShutdown))
            .unwrap();
        assert_eq!(rx.closed().await, CloseReason::TakenOver);
        assert!(matches!(
            rx.recv().await,
            Some(Outbound::Close(CloseReason::TakenOver))
        ));
        assert!(matches!(rx.try_recv(), Ok(Outbound::Packet(_))));
    }

    #[tokio::test]
    async fn closed_wakes_a_waiter() {
        let (tx, rx) = channel();
        let waiter = tokio::spawn(async move { rx.closed().await });
        tokio::task::yield_now().await;
        tx.send(Outbound::Close(CloseReason::Destroyed)).unwrap();
        assert_eq!(waiter.await.unwrap(), CloseReason::Destroyed);
    }
}
