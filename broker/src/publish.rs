//! The publish path: a client's PUBLISH and PUBREL, handled on its
//! connection task (which owns the publisher's session and with it the
//! incoming QoS 2 ids awaiting PUBREL), and routing a message to the
//! matching sessions' delivery mailboxes.

use std::sync::Arc;

use crate::codec::{Packet, PubResp, Publish, ReasonCode};
use crate::context::Context;
use crate::message::Message;
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
            let n = if new { route(ctx, msg, mark) } else { 1 };
            Reply::PubRec(ack(id, n, v5))
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
    ctx.metrics.messages_dropped.qos(qos).inc();
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

/// PUBACK/PUBREC for a message that reached `receivers` sessions.
fn ack(id: PacketId, receivers: usize, v5: bool) -> PubResp {
    let mut ack = PubResp::success(id);
    if receivers == 0 && v5 {
        ack.code = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    }
    ack
}

/// Stores a retained message and hands `msg` to every matching session;
/// returns how many sessions took it (0: PUBACK/PUBREC "no matching
/// subscribers" for 5.0).
///
/// Copies for persistent sessions are stored before any is handed over
/// (see [`crate::store`]), with `qos2_mark`, the publisher's incoming QoS
/// 2 id, in the same write.
pub(crate) fn route(
    ctx: &Context,
    msg: Arc<Message>,
    qos2_mark: Option<(&ClientId, PacketId)>,
) -> usize {
    if msg.retain && ctx.config.mqtt.retain_available {
        crate::retain::apply(ctx, &msg);
    }
    let deliveries = ctx.router.route(&msg.topic, msg.publisher.as_ref());
    // Each delivery's first choice of receiver (a shared group's next
    // member in turn), then their stored copies in one write.
    let picks: Vec<Option<&RouteDelivery>> =
        deliveries.iter().map(|d| first_pick(&msg, d)).collect();
    let seqs = store_copies(&ctx.store, &msg, &picks, qos2_mark);
    deliveries
        .iter()
        .zip(&picks)
        .zip(seqs)
        .filter(|((d, pick), seq)| pick.is_some_and(|p| hand_over(&ctx.store, &msg, d, p, *seq)))
        .count()
}

/// Sends `msg` to `pick`, delivery `d`'s first choice, whose copy has
/// sequence number `seq` if stored; true if some session took it. A
/// shared group whose pick refuses it (its session is ending) tries its
/// next members.
fn hand_over(
    store: &Store,
    msg: &Arc<Message>,
    d: &RouteDelivery,
    pick: &RouteDelivery,
    seq: Option<u64>,
) -> bool {
    if send(msg, pick, seq) {
        return true;
    }
    if let Some(seq) = seq {
        store.remove_message(pick.client_id.as_str(), seq);
    }
    d.shared && offer_others(store, msg, d, pick)
}

/// Who gets `msg` for delivery `d` first.
///
/// For a shared group (MQTT 5.0 section 4.8.2) only one member must get
/// it: connected members first, in turn; then, for QoS 1/2, an offline
/// persistent member, which queues it. QoS 0 is never given to an
/// offline member: it would be dropped while the group may still get it.
fn first_pick<'d>(msg: &'d Message, d: &'d RouteDelivery) -> Option<&'d RouteDelivery> {
    if !d.shared {
        return Some(d);
    }
    members_in_order(msg, d).next()
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

/// A shared group's first pick refused `msg` (its session is ending): the
/// next members are tried in order, each copy stored before it is sent.
fn offer_others(
    store: &Store,
    msg: &Arc<Message>,
    d: &RouteDelivery,
    failed: &RouteDelivery,
) -> bool {
    for m in members_in_order(msg, d).filter(|m| !std::ptr::eq(*m, failed)) {
        let seq = store_copies(store, msg, &[Some(m)], None).pop().flatten();
        if send(msg, m, seq) {
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

fn send(msg: &Arc<Message>, d: &RouteDelivery, seq: Option<u64>) -> bool {
    let delivery = Delivery {
        msg: msg.clone(),
        qos: d.qos,
        // Forwarded messages carry RETAIN 0 unless retain-as-published
        // [MQTT-3.3.1-9], [MQTT-3.3.1-12].
        retain: d.retain_as_published && msg.retain,
        subscription_ids: d.subscription_ids.clone(),
        seq,
    };
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
        first_pick(msg, d).is_some_and(|p| hand_over(&store, msg, d, p, None))
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
