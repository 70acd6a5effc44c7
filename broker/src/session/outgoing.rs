//! Messages on their way to the client: the QoS 1/2 in-flight window
//! (sent, not yet acknowledged) and the queue behind it.
//!
//! The window keeps send order so that a resumed session redelivers
//! unacknowledged messages in their original order [MQTT-4.4.0-1],
//! [MQTT-4.6.0-1]. Packet ids are allocated here and never reused while
//! in flight [MQTT-2.3.1-2].
//!
//! A resumed session may hold more messages in flight than the new
//! connection's Receive Maximum allows: it resends only as many as the
//! window holds, and the rest (a suffix of the window, still with their
//! ids) follow as acknowledgements free room [MQTT-3.3.4-9].

use std::collections::VecDeque;
use std::sync::Arc;

use super::{OutPublish, Outbound};
use crate::codec::{Packet, PubResp};
use crate::message::Message;
use crate::types::{PacketId, PacketIdSet, QoS};

/// A message waiting for, or occupying, a place in the window.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Its sequence number in the store, if stored (see crate::store).
    pub seq: Option<u64>,
}

impl Pending {
    pub fn to_out(&self, packet_id: Option<PacketId>, dup: bool) -> OutPublish {
        OutPublish {
            msg: self.msg.clone(),
            qos: self.qos,
            retain: self.retain,
            dup,
            packet_id,
            subscription_ids: self.sub_ids.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent; waiting for PUBCOMP (QoS 2).
    Released,
}

#[derive(Debug)]
struct Inflight {
    id: PacketId,
    pending: Pending,
    stage: Stage,
    /// Sent on the current connection; false while it waits for room
    /// after a resume.
    sent: bool,
}

#[derive(Debug)]
pub(super) struct Outgoing {
    /// The window and the queue; `None` while both are empty, so that a
    /// session with nothing in flight (most idle ones) does not carry them.
    lists: Option<Box<Lists>>,
    next_id: PacketId,
    window: usize,
    /// Entries of the window not sent on the current connection: always
    /// its last ones.
    unsent: usize,
    max_queued: usize,
}

#[derive(Debug, Default)]
struct Lists {
    inflight: VecDeque<Inflight>,
    /// The ids in `inflight`, so allocation and acknowledgement do not
    /// scan the window.
    ids: PacketIdSet,
    queue: VecDeque<Pending>,
}

/// What a PUBREC did to the window.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecOutcome {
    /// Known id: answer with PUBREL.
    Release,
    /// No such QoS 2 message in flight.
    Unknown,
}

impl Outgoing {
    pub fn new(window: usize, max_queued: usize) -> Self {
        Outgoing {
            lists: None,
            next_id: PacketId::new(1).unwrap_or_else(|_| unreachable!()),
            window: window.max(1),
            unsent: 0,
            max_queued,
        }
    }

    fn lists_mut(&mut self) -> &mut Lists {
        self.lists.get_or_insert_default()
    }

    /// Gives the lists' memory back once both are empty.
    fn tidy(&mut self) {
        if self
            .lists
            .as_ref()
            .is_some_and(|l| l.inflight.is_empty() && l.queue.is_empty())
        {
            self.lists = None;
        }
    }

    /// Sets the window (the smaller of ours and the client's receive
    /// maximum). Messages already in flight stay.
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    pub fn inflight_len(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| l.inflight.len())
    }

    pub fn queued_len(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| l.queue.len())
    }

    /// Whether a new message may go into the window now (nothing from
    /// before a resume still waits to be resent).
    pub fn has_room(&self) -> bool {
        self.unsent == 0 && self.inflight_len() < self.window
    }

    fn allocate_id(&mut self) -> PacketId {
        loop {
            let id = self.next_id;
            self.next_id = id.next();
            if self.lists_mut().ids.insert(id) {
                return id;
            }
        }
    }

    /// Puts a QoS 1/2 message into the window and returns its PUBLISH.
    /// The caller checks [`Outgoing::has_room`] first.
    pub fn send(&mut self, pending: Pending) -> OutPublish {
        let id = self.allocate_id();
        let publish = pending.to_out(Some(id), false);
        self.lists_mut().inflight.push_back(Inflight {
            id,
            pending,
            stage: Stage::Published,
            sent: true,
        });
        publish
    }

    /// Queues a message behind the window; gives it back when the queue is
    /// full (the caller counts and drops it).
    pub fn enqueue(&mut self, pending: Pending) -> Result<(), Pending> {
        if self.queued_len() >= self.max_queued {
            return Err(pending);
        }
        self.lists_mut().queue.push_back(pending);
        Ok(())
    }

    /// Takes the next queued message if it can go now: QoS 0 always (it
    /// waited only to keep its place in line), QoS 1/2 when the window has
    /// room. Messages whose MQTT 5.0 expiry passed while queued are
    /// dropped on the way and returned in `Err`.
    pub fn next_queued(&mut self) -> Option<Result<Pending, Pending>> {
        let room = self.has_room();
        let lists = self.lists.as_mut()?;
        let ready = lists
            .queue
            .front()
            .is_some_and(|p| p.qos == QoS::AtMostOnce || room);
        if !ready {
            return None;
        }
        let p = lists.queue.pop_front()?;
        self.tidy();
        Some(if p.msg.is_expired() { Err(p) } else { Ok(p) })
    }

    /// Removes a message acknowledged by PUBACK and returns it; `None` if
    /// unknown.
    pub fn puback(&mut self, id: PacketId) -> Option<Pending> {
        self.remove_where(id, |m| m.pending.qos == QoS::AtLeastOnce)
    }

    /// Moves a QoS 2 message to the released stage on PUBREC.
    pub fn pubrec(&mut self, id: PacketId) -> RecOutcome {
        let found = self.lists.as_mut().and_then(|l| {
            l.inflight
                .iter_mut()
                .find(|m| m.id == id && m.pending.qos == QoS::ExactlyOnce)
        });
        match found {
            Some(m) => {
                m.stage = Stage::Released;
                RecOutcome::Release
            }
            None => RecOutcome::Unknown,
        }
    }

    /// Removes a QoS 2 message completed by PUBCOMP; `None` if unknown.
    pub fn pubcomp(&mut self, id: PacketId) -> Option<Pending> {
        self.remove_where(id, |m| m.stage == Stage::Released)
    }

    /// Removes a message whatever its stage (it will not be sent again).
    pub fn discard(&mut self, id: PacketId) -> Option<Pending> {
        self.remove_where(id, |_| true)
    }

    fn remove_where(&mut self, id: PacketId, ok: impl Fn(&Inflight) -> bool) -> Option<Pending> {
        let lists = self.lists.as_mut()?;
        if !lists.ids.contains(&id) {
            return None;
        }
        // Acknowledgements usually come in order: the scan stops early.
        let i = lists.inflight.iter().position(|m| m.id == id && ok(m))?;
        let m = lists.inflight.remove(i)?;
        if !m.sent {
            self.unsent -= 1;
        }
        lists.ids.remove(&id);
        self.tidy();
        Some(m.pending)
    }

    /// The store sequence number of the message in flight as `id`.
    pub fn seq_of(&self, id: PacketId) -> Option<u64> {
        let lists = self.lists.as_ref()?;
        lists.inflight.iter().find(|m| m.id == id)?.pending.seq
    }

    /// Puts back a message that was in flight as `id` before a restart
    /// (`released`: its PUBREL was sent). It is resent when a connection
    /// attaches ([`Outgoing::resume`]).
    pub fn restore_inflight(&mut self, id: PacketId, pending: Pending, released: bool) {
        let lists = self.lists_mut();
        if !lists.ids.insert(id) {
            // Two stored messages with one id: the later one queues.
            lists.queue.push_back(pending);
            return;
        }
        lists.inflight.push_back(Inflight {
            id,
            pending,
            stage: if released {
                Stage::Released
            } else {
                Stage::Published
            },
            sent: false,
        });
        self.unsent += 1;
        self.next_id = id.next();
    }

    /// Puts back a queued message read from the store, whatever the
    /// queue's bound (it was within it when stored).
    pub fn restore_queued(&mut self, pending: Pending) {
        self.lists_mut().queue.push_back(pending);
    }

    /// Puts messages read from the store ahead of the queue, in order,
    /// whatever its bound (see `super::disk_tail`).
    pub fn push_front(&mut self, read: Vec<Pending>) {
        if read.is_empty() {
            return;
        }
        let queue = &mut self.lists_mut().queue;
        for p in read.into_iter().rev() {
            queue.push_front(p);
        }
    }

    /// The store sequence number of the first queued message: `None` if
    /// the queue is empty.
    pub fn front_seq(&self) -> Option<Option<u64>> {
        Some(self.lists.as_ref()?.queue.front()?.seq)
    }

    /// The packets that resume the window on a new connection, in order:
    /// PUBLISH with DUP for unacknowledged messages, PUBREL for released
    /// ones [MQTT-4.4.0-1]; at most as many as the window holds, the
    /// rest come from [`Outgoing::resend_ready`] as room frees up.
    pub fn resume(&mut self) -> Vec<Outbound> {
        if let Some(lists) = self.lists.as_mut() {
            for m in &mut lists.inflight {
                m.sent = false;
            }
        }
        self.unsent = self.inflight_len();
        self.resend_ready()
    }

    /// Messages from before a resume that now fit in the window.
    pub fn resend_ready(&mut self) -> Vec<Outbound> {
        let mut out = Vec::new();
        let Some(lists) = self.lists.as_mut() else {
            return out;
        };
        while self.unsent > 0 && lists.inflight.len() - self.unsent < self.window {
            let i = lists.inflight.len() - self.unsent;
            self.unsent -= 1;
            let Some(m) = lists.inflight.get_mut(i) else {
                break;
            };
            m.sent = true;
            out.push(match m.stage {
                Stage::Published => Outbound::Publish(m.pending.to_out(Some(m.id), true)),
                Stage::Released => {
                    Outbound::Packet(Box::new(Packet::PubRel(PubResp::success(m.id))))
                }
            });
        }
        out
    }
}

/// Pruning the queue when subscriptions are revoked (authorization).
impl Outgoing {
    /// Removes and returns the queued (not yet sent) messages for which
    /// `keep` is false, keeping the others in order.
    pub fn drop_queued_unless(&mut self, keep: impl Fn(&Pending) -> bool) -> Vec<Pending> {
        let mut dropped = Vec::new();
        let Some(lists) = self.lists.as_mut() else {
            return dropped;
        };
        lists.queue = std::mem::take(&mut lists.queue)
            .into_iter()
            .filter_map(|p| {
                if keep(&p) {
                    Some(p)
                } else {
                    dropped.push(p);
                    None
                }
            })
            .collect();
        self.tidy();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientId, TopicName};

    fn pending(qos: QoS) -> Pending {
        let publish = crate::codec::Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new("t").unwrap(),
            packet_id: None,
            payload: bytes::Bytes::from_static(b"x"),
            properties: Default::default(),
        };
        Pending {
            msg: Message::from_publish(publish, &ClientId::new("c")),
            qos,
            retain: false,
            sub_ids: vec![],
            seq: None,
        }
    }

    #[test]
    fn window_bounds_inflight_and_queue_bounds_backlog() {
        let mut o = Outgoing::new(2, 1);
        let a = o.send(pending(QoS::AtLeastOnce));
        let b = o.send(pending(QoS::ExactlyOnce));
        assert!(!o.has_room());
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_ok());
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_err());
        assert!(o.next_queued().is_none());
        let (a, b) = (a.packet_id.unwrap(), b.packet_id.unwrap());
        assert_ne!(a, b);
        assert!(o.puback(a).is_some());
        assert!(o.puback(a).is_none(), "second PUBACK is unknown");
        assert!(o.puback(b).is_none(), "PUBACK does not complete QoS 2");
        assert!(matches!(o.next_queued(), Some(Ok(_))));
        assert_eq!(o.pubrec(b), RecOutcome::Release);
        let resend = o.resume();
        assert!(matches!(&resend[0], Outbound::Packet(p) if matches!(**p, Packet::PubRel(_))));
        assert!(o.pubcomp(b).is_some());
        assert_eq!(o.inflight_len(), 0);
    }

    #[test]
    fn resend_sets_dup_in_order() {
        let mut o = Outgoing::new(10, 10);
        let ids: Vec<_> = (0..3)
            .map(|_| o.send(pending(QoS::AtLeastOnce)).packet_id)
            .collect();
        let resent: Vec<_> = o
            .resume()
            .into_iter()
            .map(|p| match p {
                Outbound::Publish(p) => {
                    assert!(p.dup);
                    p.packet_id
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, resent);
    }

    #[test]
    fn packet_ids_skip_those_in_flight() {
        let mut o = Outgoing::new(10, 10);
        o.next_id = PacketId::new(u16::MAX).unwrap();
        let a = o.send(pending(QoS::AtLeastOnce)).packet_id.unwrap();
        let b = o.send(pending(QoS::AtLeastOnce)).packet_id.unwrap();
        assert_eq!((a.get(), b.get()), (u16::MAX, 1));
    }

    #[test]
    fn resume_resends_at_most_the_new_window() {
        let mut o = Outgoing::new(10, 10);
        let ids: Vec<_> = (0..5)
            .map(|_| o.send(pending(QoS::AtLeastOnce)).packet_id.unwrap())
            .collect();
        o.set_window(2);
        let first = o.resume();
        assert_eq!(first.len(), 2);
        assert!(!o.has_room(), "new messages wait behind the resends");
        assert!(o.resend_ready().is_empty(), "window full");
        assert!(o.puback(ids[0]).is_some());
        let next = o.resend_ready();
        assert!(
            matches!(&next[..], [Outbound::Publish(p)] if p.packet_id == Some(ids[2]) && p.dup)
        );
        // An id acknowledged before it was resent frees nothing twice.
        assert!(o.puback(ids[4]).is_some());
        assert!(o.puback(ids[1]).is_some());
        let next = o.resend_ready();
        assert!(matches!(&next[..], [Outbound::Publish(p)] if p.packet_id == Some(ids[3])));
        assert!(!o.has_room());
        assert!(o.puback(ids[2]).is_some());
        assert!(o.has_room());
    }
}
