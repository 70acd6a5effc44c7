//! The publish path: a client's PUBLISH and PUBREL, handled on its
//! connection task (which owns the publisher's session and with it the
//! incoming QoS 2 ids awaiting PUBREL), and routing a message to the
//! matching sessions' delivery mailboxes.

use std::sync::Arc;

use crate::codec::{Packet, PubResp, Publish, ReasonCode};
use crate::context::Context;
use crate::message::Message;
use crate::session::{DeliverTx, Delivery};
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
/// `v5` selects MQTT 5.0 reason codes.
pub(crate) fn on_publish(
    ctx: &Context,
    incoming_qos2: &mut PacketIdSet,
    client_id: &ClientId,
    p: Publish,
    v5: bool,
) -> Reply {
    ctx.metrics.messages_received.qos(p.qos).inc();
    let (qos, id) = (p.qos, p.packet_id);
    let msg = Message::from_publish(p, client_id);
    match (qos, id) {
        (QoS::AtLeastOnce, Some(id)) => {
            let n = route(ctx, msg);
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
            let n = if new { route(ctx, msg) } else { 1 };
            Reply::PubRec(ack(id, n, v5))
        }
        _ => {
            route(ctx, msg);
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

/// Handles PUBREL: releases the id and answers PUBCOMP.
pub(crate) fn on_pubrel(incoming_qos2: &mut PacketIdSet, r: &PubResp, v5: bool) -> Packet {
    let known = incoming_qos2.remove(&r.packet_id);
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
pub(crate) fn route(ctx: &Context, msg: Arc<Message>) -> usize {
    if msg.retain && ctx.config.mqtt.retain_available {
        // An empty retained payload clears the topic [MQTT-3.3.1-10] and
        // is still delivered to current subscribers. The payload is the
        // message's own copy (see `Message::from_publish`), so storing it
        // keeps no connection's read buffer alive.
        let stored = (!msg.payload.is_empty()).then(|| msg.clone());
        if let Err(e) = ctx.retained.set(&msg.topic, stored) {
            tracing::info!(topic = %msg.topic, error = %e, "retained message not stored");
        }
    }
    let deliveries = ctx.router.route(&msg.topic, msg.publisher.as_ref());
    deliveries.into_iter().filter(|d| offer(&msg, d)).count()
}

/// Gives `msg` to the subscriber of `d`; true if it took it.
///
/// For a shared group (MQTT 5.0 section 4.8.2) only one member must get
/// it: connected members first, in turn; then, for QoS 1/2, an offline
/// persistent member, which queues it. A member whose session is ending
/// refuses the send and the next one is tried. QoS 0 is never given to an
/// offline member: it would be dropped while the group may still get it.
fn offer(msg: &Arc<Message>, d: &RouteDelivery) -> bool {
    if !d.shared {
        return send(msg, d);
    }
    let members = || std::iter::once(d).chain(&d.others);
    members()
        .filter(|m| m.handle.is_online())
        .chain(members().filter(|m| !m.handle.is_online() && msg.qos.min(m.qos) != QoS::AtMostOnce))
        .any(|m| send(msg, m))
}

fn send(msg: &Arc<Message>, d: &RouteDelivery) -> bool {
    let delivery = Delivery {
        msg: msg.clone(),
        qos: d.qos,
        // Forwarded messages carry RETAIN 0 unless retain-as-published
        // [MQTT-3.3.1-9], [MQTT-3.3.1-12].
        retain: d.retain_as_published && msg.retain,
        subscription_ids: d.subscription_ids.clone(),
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
