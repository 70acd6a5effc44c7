//! The publish path: a client's PUBLISH and PUBREL, handled on its
//! connection task (which owns the publisher's session and with it the
//! incoming QoS 2 ids awaiting PUBREL), and routing a message to the
//! matching sessions' delivery mailboxes.
//!
//! Each copy handed to a session is first admitted by the memory budget
//! (see [`crate::budget`]) and carries its charge; a copy the budget
//! refuses is counted by reason, and a 5.0 publisher whose message no
//! session took because of the budget gets 0x97 quota exceeded.

use std::sync::Arc;

use crate::budget::{self, Charge, Refusal};
use crate::codec::{Packet, PubResp, Publish, ReasonCode};
use crate::context::Context;
use crate::message::Message;
use crate::metrics::{DropReason, Metrics};
use crate::session::{DeliverTx, Delivery};
use crate::store::{QueuedRecord, Store};
use crate::types::{ClientId, PacketId, PacketIdSet, QoS};

/// One subscriber of a message, as the router found it.
type RouteDelivery = crate::router::Delivery<DeliverTx>;

/// What the connection must do after a PUBLISH or PUBREL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    None,
    PubAck(PubResp),
    PubRec(PubResp),
    /// The client exceeded the broker's Receive Maximum [MQTT-3.3.4-9].
    ReceiveMaximumExceeded,
}

/// Handles a PUBLISH the client may send: route it and acknowledge it.
/// `v5` selects MQTT 5.0 reason codes; `stored`: the publisher's session
/// is persistent, so its incoming QoS 2 ids are stored too.
pub(crate) fn on_publish(
    ctx: &Context,
    incoming_qos2: &mut PacketIdSet,
    client_id: &ClientId,
    p: Publish,
    v5: bool,
    stored: bool,
) -> Reply {
    ctx.metrics.messages_received.qos(p.qos).inc();
    let (qos, id) = (p.qos, p.packet_id);
    let msg = Message::from_publish(p, client_id);
    match (qos, id) {
        (QoS::AtLeastOnce, Some(id)) => {
            let n = route(ctx, msg, None);
            Reply::PubAck(ack(id, n, v5))
        }
        (QoS::ExactlyOnce, Some(id)) => {
            // Method B of the specification: deliver on PUBLISH, then
            // ignore duplicates until PUBREL [MQTT-4.3.3-2].
            let ids = incoming_qos2;
            let new = if ids.contains(&id) {
                false
            } else if v5 && ids.len() >= usize::from(ctx.config.mqtt.receive_maximum) {
                return Reply::ReceiveMaximumExceeded;
            } else {
                ids.insert(id)
            };
            // The id is stored with the message's copies, in one write:
            // a crash cannot keep one without the other.
            let mark = (new && stored).then_some((client_id, id));
            let n = if new {
                route(ctx, msg, mark)
            } else {
                Routed {
                    taken: 1,
                    refused: 0,
                }
            };
            let ack = ack(id, n, v5);
            if ack.code.is_error() {
                // A failed 5.0 PUBREC (quota exceeded) ends the exchange
                // [MQTT-4.3.3-4]: no PUBREL will release the id, and the
                // client may use it again at once.
                ids.remove(&id);
                if mark.is_some() {
                    ctx.store.qos2_released(client_id.as_str(), id);
                }
            }
            Reply::PubRec(ack)
        }
        _ => {
            route(ctx, msg, None);
            Reply::None
        }
    }
}

/// Acknowledges a PUBLISH that authorization refused, without routing it:
/// 3.1.1 has no way to say no [MQTT-3.3.5-2]; 5.0 answers 0x87.
pub(crate) fn on_denied_publish(
    ctx: &Context,
    incoming_qos2: &mut PacketIdSet,
    qos: QoS,
    packet_id: Option<PacketId>,
    v5: bool,
) -> Reply {
    ctx.metrics.messages_dropped.inc(DropReason::AclDenied, qos);
    let Some(id) = packet_id else {
        return Reply::None;
    };
    let mut ack = PubResp::success(id);
    if v5 {
        ack.code = ReasonCode::NOT_AUTHORIZED;
    }
    match qos {
        QoS::AtLeastOnce => Reply::PubAck(ack),
        QoS::ExactlyOnce => {
            // A failed 5.0 PUBREC ends the exchange; 3.1.1 goes on to PUBREL.
            if !v5 {
                incoming_qos2.insert(id);
            }
            Reply::PubRec(ack)
        }
        QoS::AtMostOnce => Reply::None,
    }
}

/// Handles PUBREL: releases the id and answers PUBCOMP. `stored`: as for
/// [`on_publish`].
pub(crate) fn on_pubrel(
    ctx: &Context,
    incoming_qos2: &mut PacketIdSet,
    client_id: &ClientId,
    r: &PubResp,
    v5: bool,
    stored: bool,
) -> Packet {
    let known = incoming_qos2.remove(&r.packet_id);
    if known && stored {
        ctx.store.qos2_released(client_id.as_str(), r.packet_id);
    }
    let mut resp = PubResp::success(r.packet_id);
    if !known && v5 {
        resp.code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    }
    Packet::PubComp(resp)
}

/// PUBACK/PUBREC for a message routed as `routed`: 5.0 says when no
/// session took it, and whether the memory budget was why (3.1.1 has no
/// code for either; the drops are counted).
fn ack(id: PacketId, routed: Routed, v5: bool) -> PubResp {
    let mut ack = PubResp::success(id);
    if routed.taken == 0 && v5 {
        ack.code = if routed.refused > 0 {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        };
    }
    ack
}

/// What became of a routed message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Sessions that took a copy.
    pub taken: usize,
    /// Copies the memory budget or a full offline queue refused (each
    /// counted by reason).
    pub refused: usize,
}

/// A session chosen for a copy, with the copy's charge.
struct Pick<'d> {
    to: &'d RouteDelivery,
    charge: Charge,
}

/// Stores a retained message and hands `msg` to every matching session
/// the memory budget lets take it; says how many took it and how many
/// the budget refused (none taken: PUBACK/PUBREC "no matching
/// subscribers" or "quota exceeded" for 5.0). A message no session took
/// for another reason (and not retained) is counted as `no_subscribers`.
///
/// Copies for persistent sessions are stored before any is handed over
/// (see [`crate::store`]), with `qos2_mark`, the publisher's incoming QoS
/// 2 id, in the same write.
pub(crate) fn route(
    ctx: &Context,
    msg: Arc<Message>,
    qos2_mark: Option<(&ClientId, PacketId)>,
) -> Routed {
    let mut kept = false;
    if msg.retain && ctx.config.mqtt.retain_available {
        crate::retain::apply(ctx, &msg);
        // Kept as the topic's retained message (unless a retained limit
        // refused it, which is counted there): not a drop.
        kept = !msg.payload.is_empty();
    }
    let deliveries = ctx.router.route(&msg.topic, msg.publisher.as_ref());
    // Each delivery's first choice of receiver the budget admits (a
    // shared group's next member in turn), then their stored copies in
    // one write.
    let cost = budget::cost(&msg);
    let mut tally = Tally::default();
    let picks: Vec<Option<Pick<'_>>> = deliveries
        .iter()
        .map(|d| {
            // QoS 0 is not queued for an offline session (a server "MAY"
            // store it, MQTT 3.1.1 section 3.1.2.4; Mosquitto does not by
            // default): dropped here rather than handed to its holder task
            // to drop, so a message matching thousands of abandoned
            // sessions does not wake each of them.
            if !d.shared && !d.handle.is_online() {
                let qos = msg.qos.min(d.qos);
                if qos == QoS::AtMostOnce {
                    tally.offline_qos0 += 1;
                    return None;
                }
                // Its holder would drop it (see DeliveryTx::is_full).
                if d.handle.is_full() {
                    tally.queue_full[qos as usize] += 1;
                    return None;
                }
            }
            pick(&msg, d, cost, &mut tally)
        })
        .collect();
    tally.count(&ctx.metrics);
    let targets: Vec<Option<&RouteDelivery>> =
        picks.iter().map(|p| p.as_ref().map(|p| p.to)).collect();
    let seqs = store_copies(&ctx.store, &msg, &targets, qos2_mark);
    let mut taken = 0;
    for ((d, pick), seq) in deliveries.iter().zip(picks).zip(seqs) {
        if pick.is_some_and(|p| hand_over(&ctx.store, &msg, d, p, seq, cost)) {
            taken += 1;
        }
    }
    // A retained message no session took now is kept, not dropped.
    if taken == 0 && tally.refused() == 0 && tally.offline_qos0 == 0 && !kept {
        ctx.metrics
            .messages_dropped
            .inc(DropReason::NoSubscribers, msg.qos);
    }
    Routed {
        taken,
        refused: tally.refused(),
    }
}

/// Copies of one message not handed to a session at routing, counted in
/// the metrics once per message rather than once per copy: a message
/// matching 10,000 abandoned sessions would otherwise make 10,000
/// increments of one shared counter.
#[derive(Default)]
struct Tally {
    /// Budget refusals by reason and QoS (`Refusal as usize`, QoS level).
    refused: [[usize; 3]; 4],
    /// Copies for offline sessions whose queue is full, by QoS.
    queue_full: [usize; 3],
    /// QoS 0 copies for offline sessions.
    offline_qos0: usize,
}

impl Tally {
    fn refuse(&mut self, r: Refusal, qos: QoS) {
        self.refused[refusal_index(r)][qos as usize] += 1;
    }

    /// Copies refused for the budget or a full queue: a 5.0 publisher
    /// whose message no session took hears "quota exceeded".
    fn refused(&self) -> usize {
        self.refused.iter().flatten().sum::<usize>() + self.queue_full.iter().sum::<usize>()
    }

    fn count(&self, metrics: &Metrics) {
        let dropped = &metrics.messages_dropped;
        if self.offline_qos0 > 0 {
            dropped
                .reason(DropReason::Qos0Offline, QoS::AtMostOnce)
                .add(self.offline_qos0 as u64);
        }
        for q in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let n = self.queue_full[q as usize];
            if n > 0 {
                dropped.reason(DropReason::QueueFull, q).add(n as u64);
            }
        }
        for r in [
            Refusal::Qos0,
            Refusal::Offline,
            Refusal::Slow,
            Refusal::Full,
        ] {
            for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let n = self.refused[refusal_index(r)][q as usize];
                if n > 0 {
                    dropped.reason(refusal_reason(r), q).add(n as u64);
                }
            }
        }
    }
}

fn refusal_index(r: Refusal) -> usize {
    match r {
        Refusal::Qos0 => 0,
        Refusal::Offline => 1,
        Refusal::Slow => 2,
        Refusal::Full => 3,
    }
}

/// The drop reason of a budget refusal.
fn refusal_reason(r: Refusal) -> DropReason {
    match r {
        Refusal::Qos0 => DropReason::MemoryBudgetQos0,
        Refusal::Offline => DropReason::MemoryBudgetOffline,
        Refusal::Slow => DropReason::MemoryBudgetSlow,
        Refusal::Full => DropReason::MemoryBudgetFull,
    }
}

/// Asks the budget to admit a copy of `msg` (costing `cost`) for `m`.
fn admit(msg: &Message, m: &RouteDelivery, cost: u64) -> Result<Charge, Refusal> {
    let qos0 = msg.qos.min(m.qos) == QoS::AtMostOnce;
    m.handle.account().admit(cost, qos0, m.handle.is_online())
}

/// Who gets `msg` for delivery `d`, among those the budget admits; a
/// delivery no one could take for the budget is counted (once) under the
/// first refusal's reason and in `refused`.
///
/// For a shared group (MQTT 5.0 section 4.8.2) only one member must get
/// it: connected members first, in turn; then, for QoS 1/2, an offline
/// persistent member, which queues it. QoS 0 is never given to an
/// offline member: it would be dropped while the group may still get it.
fn pick<'d>(
    msg: &'d Message,
    d: &'d RouteDelivery,
    cost: u64,
    tally: &mut Tally,
) -> Option<Pick<'d>> {
    let first_refusal = if d.shared {
        let mut first = None;
        for m in members_in_order(msg, d) {
            match admit(msg, m, cost) {
                Ok(charge) => return Some(Pick { to: m, charge }),
                Err(r) => {
                    first.get_or_insert((r, msg.qos.min(m.qos)));
                }
            }
        }
        first
    } else {
        match admit(msg, d, cost) {
            Ok(charge) => return Some(Pick { to: d, charge }),
            Err(r) => Some((r, msg.qos.min(d.qos))),
        }
    };
    let (r, qos) = first_refusal?;
    tally.refuse(r, qos);
    None
}

/// Sends `msg` to `pick`, delivery `d`'s choice, whose copy has
/// sequence number `seq` if stored; true if some session took it. A
/// shared group whose pick refuses it (its session is ending) tries its
/// next members.
fn hand_over(
    store: &Store,
    msg: &Arc<Message>,
    d: &RouteDelivery,
    pick: Pick<'_>,
    seq: Option<u64>,
    cost: u64,
) -> bool {
    let to = pick.to;
    if send(msg, to, seq, pick.charge) {
        return true;
    }
    if let Some(seq) = seq {
        store.remove_message(to.client_id.as_str(), seq);
    }
    d.shared && offer_others(store, msg, d, to, cost)
}

fn members_in_order<'d>(
    msg: &'d Message,
    d: &'d RouteDelivery,
) -> impl Iterator<Item = &'d RouteDelivery> + 'd {
    let members = move || std::iter::once(d).chain(&d.others);
    members().filter(|m| m.handle.is_online()).chain(
        members().filter(move |m| !m.handle.is_online() && msg.qos.min(m.qos) != QoS::AtMostOnce),
    )
}

/// A shared group's pick refused `msg` (its session is ending): the next
/// members the budget admits are tried in order, each copy stored before
/// it is sent.
fn offer_others(
    store: &Store,
    msg: &Arc<Message>,
    d: &RouteDelivery,
    failed: &RouteDelivery,
    cost: u64,
) -> bool {
    for m in members_in_order(msg, d).filter(|m| !std::ptr::eq(*m, failed)) {
        let Ok(charge) = admit(msg, m, cost) else {
            continue;
        };
        let seq = store_copies(store, msg, &[Some(m)], None).pop().flatten();
        if send(msg, m, seq, charge) {
            return true;
        }
        if let Some(seq) = seq {
            store.remove_message(m.client_id.as_str(), seq);
        }
    }
    false
}

/// Stores the copies of `msg` for the persistent sessions among `picks`
/// (QoS 1/2 after the downgrade), and `qos2_mark`; returns each pick's
/// sequence number.
fn store_copies(
    store: &Store,
    msg: &Arc<Message>,
    picks: &[Option<&RouteDelivery>],
    qos2_mark: Option<(&ClientId, PacketId)>,
) -> Vec<Option<u64>> {
    // QoS 0 is never stored.
    if !store.is_durable() || (msg.qos == QoS::AtMostOnce && qos2_mark.is_none()) {
        return vec![None; picks.len()];
    }
    // Read once: a session may change its flag meanwhile.
    let stored: Vec<bool> = picks
        .iter()
        .map(|p| p.is_some_and(|d| d.handle.is_stored() && msg.qos.min(d.qos) != QoS::AtMostOnce))
        .collect();
    let targets: Vec<(&str, QueuedRecord)> = picks
        .iter()
        .zip(&stored)
        .filter_map(|(p, s)| p.filter(|_| *s))
        .map(|d| {
            let record = QueuedRecord {
                msg: msg.clone(),
                qos: msg.qos.min(d.qos),
                retain: d.retain_as_published && msg.retain,
                sub_ids: d.subscription_ids.clone(),
            };
            (d.client_id.as_str(), record)
        })
        .collect();
    if targets.is_empty() && qos2_mark.is_none() {
        return vec![None; picks.len()];
    }
    let mark = qos2_mark.map(|(c, id)| (c.as_str(), id));
    let mut seqs = store.enqueue_many(&targets, mark).into_iter();
    stored
        .iter()
        .map(|s| if *s { seqs.next().flatten() } else { None })
        .collect()
}

fn send(msg: &Arc<Message>, d: &RouteDelivery, seq: Option<u64>, charge: Charge) -> bool {
    let delivery = Delivery {
        msg: msg.clone(),
        qos: d.qos,
        // Forwarded messages carry RETAIN 0 unless retain-as-published
        // [MQTT-3.3.1-9], [MQTT-3.3.1-12].
        retain: d.retain_as_published && msg.retain,
        subscription_ids: d.subscription_ids.clone(),
        seq,
        charge,
    };
    // A refused delivery is dropped here, and its charge given back.
    d.handle.send(delivery).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backlog::Backlog;
    use crate::codec::Publish;
    use crate::types::TopicName;

    fn message(qos: QoS) -> Arc<Message> {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new("t").unwrap(),
            packet_id: None,
            payload: bytes::Bytes::from_static(b"x"),
            properties: Default::default(),
        };
        Message::from_publish(p, &ClientId::new("p"))
    }

    /// Routing of one delivery, as `route` does it, without a store.
    fn offer(msg: &Arc<Message>, d: &RouteDelivery) -> bool {
        let store = Store::memory();
        let cost = budget::cost(msg);
        pick(msg, d, cost, &mut Tally::default())
            .is_some_and(|p| hand_over(&store, msg, d, p, None, cost))
    }

    fn member(name: &str, tx: &DeliverTx, qos: QoS) -> RouteDelivery {
        RouteDelivery {
            client_id: ClientId::new(name),
            handle: tx.clone(),
            qos,
            retain_as_published: false,
            subscription_ids: vec![],
            shared: true,
            others: vec![],
        }
    }

    /// The member whose turn it is is ending (its mailbox is gone): the
    /// message goes to the next one and counts as delivered once.
    #[test]
    fn shared_delivery_falls_through_a_failed_send() {
        let backlog = Arc::new(Backlog::default());
        let (ending, ending_rx) = DeliverTx::channel(backlog.clone());
        let (next, mut next_rx) = DeliverTx::channel(backlog.clone());
        ending.set_online(true);
        next.set_online(true);
        drop(ending_rx);
        let mut d = member("ending", &ending, QoS::AtLeastOnce);
        d.others.push(member("next", &next, QoS::AtLeastOnce));
        assert!(offer(&message(QoS::AtLeastOnce), &d));
        assert!(next_rx.try_delivery().is_some());
        assert_eq!(backlog.get(), 0);
    }

    /// Connected members come before an offline one, whatever the turn;
    /// QoS 0 is not given to an offline member at all.
    #[test]
    fn shared_delivery_prefers_connected_members() {
        let backlog = Arc::new(Backlog::default());
        let (offline, mut offline_rx) = DeliverTx::channel(backlog.clone());
        let (online, mut online_rx) = DeliverTx::channel(backlog.clone());
        online.set_online(true);
        let mut d = member("offline", &offline, QoS::AtLeastOnce);
        d.others.push(member("online", &online, QoS::AtLeastOnce));
        assert!(offer(&message(QoS::AtLeastOnce), &d));
        assert!(online_rx.try_delivery().is_some());
        assert!(offline_rx.try_delivery().is_none());

        online.set_online(false);
        assert!(!offer(&message(QoS::AtMostOnce), &d), "nobody for QoS 0");
        assert!(offer(&message(QoS::AtLeastOnce), &d), "queued offline");
        assert!(offline_rx.try_delivery().is_some());
    }
}
