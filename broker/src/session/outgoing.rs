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
//!
//! A queued message that is in the store may wait as its place in line
//! only ([`Queued::Stored`]): its content is read back from the store when
//! it moves into the window. An offline persistent session's queue is
//! kept so (see `Session::enqueue`), so its messages take disk, not memory.
//!
//! Such a place in line still takes a slot of the queue in memory: the
//! places are charged to the session's share of the memory budget
//! ([`PLACE_BYTES`] each, see crate::budget), the messages in memory
//! carry their own charge.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{OutPublish, Outbound};
use crate::budget::{Account, Charge};
use crate::codec::{Packet, PubResp};
use crate::message::Message;
use crate::types::{PacketId, PacketIdSet, QoS};

/// A message waiting for, or occupying, a place in the window.
#[derive(Debug)]
pub(super) struct Pending {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Its sequence number in the store, if stored (see crate::store).
    pub seq: Option<u64>,
    /// Its bytes in the memory budget (see crate::budget): given back
    /// when it leaves the window or the queue, or waits in the queue as
    /// its place in line only ([`Queued::Stored`]).
    pub charge: Charge,
}

impl Pending {
    /// What it counts for in `mqtt.max_queued_bytes`: payload and topic.
    pub fn size(&self) -> usize {
        self.msg.payload.len() + self.msg.topic.as_str().len()
    }

    pub fn to_out(&self, packet_id: Option<PacketId>, dup: bool) -> OutPublish {
        OutPublish {
            msg: self.msg.clone(),
            qos: self.qos,
            retain: self.retain,
            dup,
            packet_id,
            subscription_ids: self.sub_ids.clone(),
            // The window keeps the message, and its charge.
            charge: Charge::none(),
        }
    }
}

/// A message in the queue: in memory, or in the store only.
#[derive(Debug)]
pub(super) enum Queued {
    Ready(Pending),
    /// Its place in line; the message is in the store under `seq`.
    Stored {
        seq: u64,
        size: u32,
    },
}

impl Queued {
    fn seq(&self) -> Option<u64> {
        match self {
            Queued::Ready(p) => p.seq,
            Queued::Stored { seq, .. } => Some(*seq),
        }
    }

    fn size(&self) -> usize {
        match self {
            Queued::Ready(p) => p.size(),
            Queued::Stored { size, .. } => *size as usize,
        }
    }
}

/// Reads a stored message back (see [`Queued::Stored`]); `None` if the
/// store no longer has it (or it is not to be delivered any more).
pub(super) type Load<'a> = &'a dyn Fn(u64) -> Option<Pending>;

/// Reads the places in line of up to `max` stored messages with sequence
/// numbers in `from..end`, in order (see [`Tail`]).
pub(super) type ReadTail<'a> = &'a dyn Fn(u64, u64, usize) -> Vec<(u64, u32)>;

/// What a place in line ([`Queued::Stored`]) costs in the budget: its
/// slot, twice over for the queue's spare capacity.
pub(super) const PLACE_BYTES: u64 = 2 * std::mem::size_of::<Queued>() as u64;

/// Places in line read back from a [`Tail`] at a time.
const TAIL_BATCH: usize = 64;

/// The part of a queue restored at start-up that is still only on disk:
/// `left` messages with sequence numbers in `from..end` (`end`: the first
/// of this broker's life), older than anything queued since. It is read
/// back [`TAIL_BATCH`] at a time as the queue drains, so a restart needs
/// no memory per stored message.
#[derive(Debug, Clone, Copy)]
struct Tail {
    from: u64,
    end: u64,
    left: u64,
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
    /// `u32` (a window is at most 65,535, a Receive Maximum) and the
    /// queue's bound beside it: together in 8 bytes, so that the place
    /// for `account` costs an idle session nothing.
    window: u32,
    /// Entries of the window not sent on the current connection: always
    /// its last ones.
    unsent: usize,
    max_queued: u32,
    /// Bound on the queue's bytes (see [`Pending::size`]); 0: none.
    max_queued_bytes: usize,
    /// Where the places in line are charged; `None`: nowhere (tests).
    account: Option<std::sync::Arc<Account>>,
}

#[derive(Debug, Default)]
struct Lists {
    inflight: VecDeque<Inflight>,
    /// The ids in `inflight`, so allocation and acknowledgement do not
    /// scan the window.
    ids: PacketIdSet,
    queue: VecDeque<Queued>,
    /// The bytes of `queue` (see [`Pending::size`]).
    queued_bytes: usize,
    tail: Option<Tail>,
    /// The [`Queued::Stored`] entries of `queue`, and their charge.
    places: usize,
    places_charge: Charge,
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
    pub fn new(window: usize, max_queued: usize, max_queued_bytes: usize) -> Self {
        Outgoing {
            lists: None,
            next_id: PacketId::new(1).unwrap_or_else(|_| unreachable!()),
            window: clamp_u32(window).max(1),
            unsent: 0,
            max_queued: clamp_u32(max_queued),
            max_queued_bytes,
            account: None,
        }
    }

    /// Charges the places in line to `account` from now on.
    pub fn charge_places_to(&mut self, account: std::sync::Arc<Account>) {
        self.account = Some(account);
    }

    /// Brings the places' charge in line with their number. Forced: the
    /// message each place stands for was admitted with a larger charge
    /// (or comes back from disk, see crate::budget).
    fn charge_places(&mut self) {
        let (Some(account), Some(lists)) = (self.account.as_ref(), self.lists.as_mut()) else {
            return;
        };
        let want = lists.places as u64 * PLACE_BYTES;
        if lists.places_charge.bytes() != want {
            lists.places_charge = Charge::none();
            lists.places_charge = account.force(want);
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
            .is_some_and(|l| l.inflight.is_empty() && l.queue.is_empty() && l.tail.is_none())
        {
            self.lists = None;
        }
    }

    /// Sets the window (the smaller of ours and the client's receive
    /// maximum). Messages already in flight stay.
    pub fn set_window(&mut self, window: usize) {
        self.window = clamp_u32(window).max(1);
    }

    pub fn inflight_len(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| l.inflight.len())
    }

    /// Queued messages, those still only on disk since a restart included.
    pub fn queued_len(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| {
            let tail = l
                .tail
                .map_or(0, |t| usize::try_from(t.left).unwrap_or(usize::MAX));
            l.queue.len().saturating_add(tail)
        })
    }

    /// Whether a new message may go into the window now (nothing from
    /// before a resume still waits to be resent).
    pub fn has_room(&self) -> bool {
        self.unsent == 0 && self.inflight_len() < self.window as usize
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
        if !self.fits(pending.size()) {
            return Err(pending);
        }
        self.push_queued(Queued::Ready(pending));
        Ok(())
    }

    /// Whether a message of `size` bytes may join the queue.
    fn fits(&self, size: usize) -> bool {
        let bytes = self.lists.as_ref().map_or(0, |l| l.queued_bytes);
        self.queued_len() < self.max_queued as usize
            && (self.max_queued_bytes == 0 || bytes + size <= self.max_queued_bytes)
    }

    /// Whether the queue refused a message for its byte bound rather than
    /// its count.
    pub fn full_by_bytes(&self) -> bool {
        self.queued_len() < self.max_queued as usize
    }

    fn push_queued(&mut self, q: Queued) {
        let lists = self.lists_mut();
        lists.queued_bytes += q.size();
        let place = matches!(q, Queued::Stored { .. });
        lists.places += usize::from(place);
        lists.queue.push_back(q);
        if place {
            self.charge_places();
        }
    }

    /// Queues a stored message as its place in line only (the caller
    /// checked it has a sequence number); gives it back when the queue is
    /// full.
    pub fn enqueue_stored(&mut self, pending: Pending) -> Result<(), Pending> {
        let Some(seq) = pending.seq else {
            return self.enqueue(pending);
        };
        let size = pending.size();
        if !self.fits(size) {
            return Err(pending);
        }
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        // Its charge goes before its place is charged: the two together
        // could pass the budget.
        drop(pending);
        self.push_queued(Queued::Stored { seq, size });
        Ok(())
    }

    /// Lets go of the content of every queued message that is in the
    /// store (the session goes offline).
    pub fn keep_stored_on_disk(&mut self) {
        if let Some(lists) = self.lists.as_mut() {
            for q in lists.queue.iter_mut() {
                if let Queued::Ready(p) = q {
                    if let Some(seq) = p.seq {
                        let size = u32::try_from(p.size()).unwrap_or(u32::MAX);
                        *q = Queued::Stored { seq, size };
                        lists.places += 1;
                    }
                }
            }
        }
        self.charge_places();
    }

    /// Takes the next queued message if it can go now: QoS 0 always (it
    /// waited only to keep its place in line), QoS 1/2 when the window has
    /// room. Messages whose MQTT 5.0 expiry passed while queued are
    /// dropped on the way and returned in `Err`. A stored message whose
    /// content the store no longer has is skipped (`load` counts it).
    /// A restored queue's [`Tail`] is read back (`read`) before anything
    /// queued since.
    pub fn next_queued(
        &mut self,
        load: Load<'_>,
        read: ReadTail<'_>,
    ) -> Option<Result<Pending, Pending>> {
        let room = self.has_room();
        loop {
            self.refill(read);
            let lists = self.lists.as_mut()?;
            let ready = lists.queue.front().is_some_and(|q| match q {
                Queued::Ready(p) => p.qos == QoS::AtMostOnce || room,
                // Only QoS 1/2 messages are stored.
                Queued::Stored { .. } => room,
            });
            if !ready {
                return None;
            }
            let q = lists.queue.pop_front()?;
            lists.queued_bytes = lists.queued_bytes.saturating_sub(q.size());
            if matches!(q, Queued::Stored { .. }) {
                lists.places = lists.places.saturating_sub(1);
                self.charge_places();
            }
            self.tidy();
            let p = match q {
                Queued::Ready(p) => p,
                Queued::Stored { seq, .. } => match load(seq) {
                    Some(p) => p,
                    None => continue,
                },
            };
            return Some(if p.msg.is_expired() { Err(p) } else { Ok(p) });
        }
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

    #[cfg(test)]
    fn inflight_ids(&self) -> Vec<PacketId> {
        self.lists
            .as_ref()
            .map_or_else(Vec::new, |l| l.inflight.iter().map(|m| m.id).collect())
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
            self.push_queued(Queued::Ready(pending));
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

    /// Notes the rest of a restored queue, left on disk: `left` messages
    /// from sequence number `from` up to (not including) `end`.
    pub fn restore_tail(&mut self, from: u64, end: u64, left: u64) {
        if left > 0 {
            self.lists_mut().tail = Some(Tail { from, end, left });
        }
    }

    /// Reads the next places in line of the [`Tail`] to the front of the
    /// queue once nothing older than this broker's life is left there.
    fn refill(&mut self, read: ReadTail<'_>) {
        let Some(lists) = self.lists.as_mut() else {
            return;
        };
        let Some(mut t) = lists.tail else {
            return;
        };
        let front_is_older = lists
            .queue
            .front()
            .and_then(Queued::seq)
            .is_some_and(|s| s < t.end);
        if front_is_older {
            return;
        }
        let places = read(t.from, t.end, TAIL_BATCH);
        match places.last() {
            None => lists.tail = None,
            Some(&(last, _)) => {
                t.from = last + 1;
                t.left = t.left.saturating_sub(places.len() as u64);
                lists.tail = (t.left > 0).then_some(t);
            }
        }
        lists.places += places.len();
        for (seq, size) in places.into_iter().rev() {
            lists.queued_bytes += size as usize;
            lists.queue.push_front(Queued::Stored { seq, size });
        }
        self.charge_places();
        self.tidy();
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
        while self.unsent > 0 && lists.inflight.len() - self.unsent < self.window as usize {
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
    /// `keep` is false, keeping the others in order. Stored messages are
    /// read back to be checked; those the store no longer has go.
    pub fn drop_queued_unless(
        &mut self,
        keep: impl Fn(&Pending) -> bool,
        load: Load<'_>,
    ) -> Vec<Pending> {
        let mut dropped = Vec::new();
        let Some(lists) = self.lists.as_mut() else {
            return dropped;
        };
        lists.queue = std::mem::take(&mut lists.queue)
            .into_iter()
            .filter_map(|q| {
                let p = match q {
                    Queued::Ready(p) => p,
                    Queued::Stored { seq, size } => {
                        let p = load(seq)?;
                        if keep(&p) {
                            return Some(Queued::Stored { seq, size });
                        }
                        p
                    }
                };
                if keep(&p) {
                    Some(Queued::Ready(p))
                } else {
                    dropped.push(p);
                    None
                }
            })
            .collect();
        lists.queued_bytes = lists.queue.iter().map(Queued::size).sum();
        lists.places = lists
            .queue
            .iter()
            .filter(|q| matches!(q, Queued::Stored { .. }))
            .count();
        self.charge_places();
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
            charge: Charge::none(),
        }
    }

    #[test]
    fn window_bounds_inflight_and_queue_bounds_backlog() {
        let mut o = Outgoing::new(2, 1, 0);
        let a = o.send(pending(QoS::AtLeastOnce));
        let b = o.send(pending(QoS::ExactlyOnce));
        assert!(!o.has_room());
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_ok());
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_err());
        assert!(o.next_queued(&|_| None, &|_, _, _| Vec::new()).is_none());
        let (a, b) = (a.packet_id.unwrap(), b.packet_id.unwrap());
        assert_ne!(a, b);
        assert!(o.puback(a).is_some());
        assert!(o.puback(a).is_none(), "second PUBACK is unknown");
        assert!(o.puback(b).is_none(), "PUBACK does not complete QoS 2");
        assert!(matches!(
            o.next_queued(&|_| None, &|_, _, _| Vec::new()),
            Some(Ok(_))
        ));
        assert_eq!(o.pubrec(b), RecOutcome::Release);
        let resend = o.resume();
        assert!(matches!(&resend[0], Outbound::Packet(p) if matches!(**p, Packet::PubRel(_))));
        assert!(o.pubcomp(b).is_some());
        assert_eq!(o.inflight_len(), 0);
    }

    #[test]
    fn queue_bytes_are_bounded_and_given_back() {
        // "t" and "x": 2 bytes a message.
        let mut o = Outgoing::new(1, 100, 5);
        o.send(pending(QoS::AtLeastOnce));
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_ok());
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_ok());
        assert!(o.enqueue(pending(QoS::AtLeastOnce)).is_err(), "6 bytes > 5");
        assert!(o.full_by_bytes());
        let stored = Pending {
            seq: Some(7),
            ..pending(QoS::AtLeastOnce)
        };
        assert!(o.enqueue_stored(stored).is_err(), "stored ones count too");
        let first = o.inflight_ids()[0];
        assert!(o.puback(first).is_some());
        assert!(matches!(
            o.next_queued(&|_| None, &|_, _, _| Vec::new()),
            Some(Ok(_))
        ));
        assert!(
            o.enqueue(pending(QoS::AtLeastOnce)).is_ok(),
            "bytes given back"
        );
    }

    /// A restored queue's part on disk comes before anything queued
    /// since, read back a batch at a time.
    #[test]
    fn a_restored_tail_comes_before_newer_messages() {
        let mut o = Outgoing::new(1000, 1000, 0);
        o.restore_tail(1, 100, 71);
        assert_eq!(o.queued_len(), 71);
        let newer = Pending {
            seq: Some(150),
            ..pending(QoS::AtLeastOnce)
        };
        assert!(o.enqueue(newer).is_ok());
        let load = |seq: u64| {
            Some(Pending {
                seq: Some(seq),
                ..pending(QoS::AtLeastOnce)
            })
        };
        let read = |from: u64, end: u64, max: usize| -> Vec<(u64, u32)> {
            (from..end.min(72)).take(max).map(|s| (s, 10)).collect()
        };
        let mut order = Vec::new();
        while let Some(Ok(p)) = o.next_queued(&load, &read) {
            order.push(p.seq.unwrap());
            o.send(p);
        }
        let want: Vec<u64> = (1..72).chain([150]).collect();
        assert_eq!(order, want);
        assert_eq!(o.queued_len(), 0);
    }

    /// A place in line costs its slot, a message in memory its charge;
    /// both are given back as they leave.
    #[test]
    fn places_in_line_are_charged_while_they_wait() {
        use crate::budget::MemoryBudget;
        let budget = Arc::new(MemoryBudget::new(0));
        let account = Account::new(budget.clone());
        let mut o = Outgoing::new(1, 100, 0);
        o.charge_places_to(account.clone());
        let stored = |seq: u64| Pending {
            seq: Some(seq),
            ..pending(QoS::AtLeastOnce)
        };
        for seq in 1..=2 {
            o.enqueue_stored(stored(seq)).unwrap();
        }
        assert_eq!(budget.accounted(), 2 * PLACE_BYTES);
        // In memory while connected, then offline: the place only.
        let in_memory = Pending {
            charge: account.force(1000),
            ..stored(3)
        };
        o.enqueue(in_memory).unwrap();
        assert_eq!(budget.accounted(), 2 * PLACE_BYTES + 1000);
        o.keep_stored_on_disk();
        assert_eq!(budget.accounted(), 3 * PLACE_BYTES);
        let next = o.next_queued(&|seq| Some(stored(seq)), &|_, _, _| Vec::new());
        assert!(matches!(next, Some(Ok(_))));
        assert_eq!(budget.accounted(), 2 * PLACE_BYTES);
        drop(o);
        assert_eq!(budget.accounted(), 0);
    }

    #[test]
    fn resend_sets_dup_in_order() {
        let mut o = Outgoing::new(10, 10, 0);
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
        let mut o = Outgoing::new(10, 10, 0);
        o.next_id = PacketId::new(u16::MAX).unwrap();
        let a = o.send(pending(QoS::AtLeastOnce)).packet_id.unwrap();
        let b = o.send(pending(QoS::AtLeastOnce)).packet_id.unwrap();
        assert_eq!((a.get(), b.get()), (u16::MAX, 1));
    }

    #[test]
    fn resume_resends_at_most_the_new_window() {
        let mut o = Outgoing::new(10, 10, 0);
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
