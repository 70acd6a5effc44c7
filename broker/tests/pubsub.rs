//! Publish/subscribe against the real broker with rumqttc and raw bytes:
//! wildcards, `$` topics, retained messages, QoS in both directions,
//! overlapping subscriptions, ordering, offline queues and redelivery.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{QoS, SubscribeReasonCode};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn wildcards_match_as_specified() {
    let b = start_broker("").await;
    let mut s = connect_id(b.addr, "sub").await;
    s.subscribe("a/#", QoS::AtMostOnce).await;
    s.subscribe("x/+/z", QoS::AtMostOnce).await;
    let p = connect_id(b.addr, "pub").await;
    for t in ["a", "a/b/c", "x/y/z", "x/y/y", "x/z", "b"] {
        p.client
            .publish(t, QoS::AtMostOnce, false, t)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.publish().await.topic);
    }
    assert_eq!(got, ["a", "a/b/c", "x/y/z"]);
    s.no_publish(QUIET).await;
}

#[tokio::test]
async fn first_level_wildcards_do_not_match_dollar_topics() {
    let b = start_broker("").await;
    let mut all = connect_id(b.addr, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    all.subscribe("+/x", QoS::AtMostOnce).await;
    let mut sys = connect_id(b.addr, "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // Clients may not publish to $ topics in general, but the broker
    // routes them; use a raw client to publish one.
    let (mut raw, _) = raw_connect(b.addr, "raw", 2).await;
    raw.send(&publish_bytes("$SYS/x", 0, false, 0, b"s")).await;
    assert_eq!(sys.publish().await.topic, "$SYS/x");
    all.no_publish(QUIET).await;
}

#[tokio::test]
async fn retained_messages_stored_delivered_and_cleared() {
    let b = start_broker("").await;
    let p = connect_id(b.addr, "pub").await;
    p.client
        .publish("r/1", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    p.client
        .publish("r/2", QoS::AtMostOnce, true, "also")
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;

    let mut s = connect_id(b.addr, "late").await;
    s.subscribe("r/#", QoS::AtLeastOnce).await;
    let mut got = [s.publish().await, s.publish().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert!(got.iter().all(|m| m.retain), "retain flag set on subscribe");
    assert_eq!(&got[0].payload[..], b"kept");
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(got[1].qos, QoS::AtMostOnce);

    // Live forwarding clears the retain flag [MQTT-3.3.1-9].
    p.client
        .publish("r/1", QoS::AtMostOnce, true, "new")
        .await
        .unwrap();
    let live = s.publish().await;
    assert!(!live.retain);

    // Empty payload clears.
    p.client
        .publish("r/1", QoS::AtMostOnce, true, "")
        .await
        .unwrap();
    p.client
        .publish("r/2", QoS::AtMostOnce, true, "")
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;
    let mut s2 = connect_id(b.addr, "later").await;
    s2.subscribe("r/#", QoS::AtLeastOnce).await;
    s2.no_publish(QUIET).await;
    assert_eq!(b.server.broker().ctx.retained.len(), 0);
}

#[tokio::test]
async fn delivery_qos_is_minimum_of_publish_and_subscription() {
    let b = start_broker("").await;
    let mut s1 = connect_id(b.addr, "s1").await;
    s1.subscribe("q", QoS::AtLeastOnce).await;
    let mut s2 = connect_id(b.addr, "s2").await;
    s2.subscribe("q", QoS::ExactlyOnce).await;
    let p = connect_id(b.addr, "p").await;
    p.client
        .publish("q", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(s1.publish().await.qos, QoS::AtLeastOnce);
    assert_eq!(s2.publish().await.qos, QoS::ExactlyOnce);
    p.client
        .publish("q", QoS::AtMostOnce, false, "y")
        .await
        .unwrap();
    assert_eq!(s2.publish().await.qos, QoS::AtMostOnce);
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_max_qos() {
    let b = start_broker("").await;
    let mut s = connect_id(b.addr, "over").await;
    s.subscribe("o/#", QoS::AtMostOnce).await;
    s.subscribe("o/+", QoS::ExactlyOnce).await;
    let p = connect_id(b.addr, "p").await;
    p.client
        .publish("o/1", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(s.publish().await.qos, QoS::ExactlyOnce);
    s.no_publish(QUIET).await;
}

#[tokio::test]
async fn qos_exchanges_complete_in_both_directions() {
    let b = start_broker("").await;
    // Raw publisher checks PUBACK / PUBREC-PUBREL-PUBCOMP from the broker.
    let (mut raw, _) = raw_connect(b.addr, "rawpub", 2).await;
    let mut s = connect_id(b.addr, "sub").await;
    s.subscribe("e", QoS::ExactlyOnce).await;

    raw.send(&publish_bytes("e", 1, false, 7, b"one")).await;
    assert_eq!(raw.read().await, Some((0x40, vec![0, 7])));
    raw.send(&publish_bytes("e", 2, false, 8, b"two")).await;
    assert_eq!(raw.read().await, Some((0x50, vec![0, 8])));
    // A duplicate PUBLISH before PUBREL is not delivered twice.
    let mut dup = publish_bytes("e", 2, false, 8, b"two");
    dup[0] |= 0x08;
    raw.send(&dup).await;
    assert_eq!(raw.read().await, Some((0x50, vec![0, 8])));
    raw.send(&[0x62, 2, 0, 8]).await;
    assert_eq!(raw.read().await, Some((0x70, vec![0, 8])));

    assert_eq!(&s.publish().await.payload[..], b"one");
    assert_eq!(&s.publish().await.payload[..], b"two");
    s.no_publish(QUIET).await;
}

#[tokio::test]
async fn raw_subscriber_receives_qos2_with_full_handshake() {
    let b = start_broker("").await;
    let (mut raw, _) = raw_connect(b.addr, "rawsub", 2).await;
    raw.send(&subscribe_bytes(1, "h", 2)).await;
    assert_eq!(raw.read().await, Some((0x90, vec![0, 1, 2])));
    let p = connect_id(b.addr, "p").await;
    p.client
        .publish("h", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    let (h, body) = raw.read().await.expect("publish");
    assert_eq!(h & 0xf6, 0x34, "QoS 2 PUBLISH");
    let (_, id, payload) = parse_publish(h, &body);
    let id = id.expect("packet id");
    assert_ne!(id, 0);
    assert_eq!(payload, b"x");
    let [hi, lo] = id.to_be_bytes();
    raw.send(&[0x50, 2, hi, lo]).await; // PUBREC
    assert_eq!(raw.read().await, Some((0x62, vec![hi, lo]))); // PUBREL
    raw.send(&[0x70, 2, hi, lo]).await; // PUBCOMP
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order() {
    let b = start_broker("").await;
    let mut s = connect_id(b.addr, "ord-sub").await;
    s.subscribe("ord", QoS::AtLeastOnce).await;
    let p = connect_id(b.addr, "ord-pub").await;
    for i in 0..200u32 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        p.client
            .publish("ord", qos, false, i.to_string())
            .await
            .unwrap();
    }
    for i in 0..200u32 {
        let m = s.publish().await;
        assert_eq!(m.payload, i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn unacknowledged_messages_are_redelivered_with_dup_on_resume() {
    let b = start_broker("").await;
    let (mut raw, _) = raw_connect(b.addr, "redeliver", 0).await;
    raw.send(&subscribe_bytes(1, "d", 1)).await;
    assert_eq!(raw.read().await, Some((0x90, vec![0, 1, 1])));
    let p = connect_id(b.addr, "p").await;
    p.client
        .publish("d", QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    let (h, body) = raw.read().await.expect("publish");
    assert_eq!(h & 0x08, 0, "first delivery without DUP");
    let (_, id, _) = parse_publish(h, &body);
    drop(raw); // no PUBACK

    tokio::time::sleep(QUIET).await;
    let (mut raw, present) = raw_connect(b.addr, "redeliver", 0).await;
    assert!(present);
    let (h2, body2) = raw.read().await.expect("redelivery");
    assert_eq!(h2 & 0x08, 0x08, "DUP set on redelivery");
    let (topic, id2, payload) = parse_publish(h2, &body2);
    assert_eq!(
        (topic.as_str(), id2, payload.as_slice()),
        ("d", id, &b"m"[..])
    );
}

#[tokio::test]
async fn offline_queue_is_bounded_and_drops_are_counted() {
    let b = start_broker("mqtt:\n  max_queued_messages: 5\n").await;
    let (mut raw, _) = raw_connect(b.addr, "offline", 0).await;
    raw.send(&subscribe_bytes(1, "q/#", 1)).await;
    raw.read().await.expect("suback");
    raw.send(&[0xe0, 0]).await; // DISCONNECT
    raw.expect_closed().await;

    let p = connect_id(b.addr, "p").await;
    for i in 0..10 {
        p.client
            .publish("q/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    tokio::time::sleep(QUIET).await;
    let metrics = &b.server.broker().ctx.metrics;
    let dropped = metrics
        .messages_dropped
        .by_qos(mqttd::types::QoS::AtLeastOnce);
    assert_eq!(dropped, 5);

    let mut o = options(b.addr, "offline");
    o.set_clean_session(false);
    let mut c = connect(o).await;
    for i in 0..5 {
        assert_eq!(c.publish().await.payload, format!("{i}").as_bytes());
    }
    c.no_publish(QUIET).await;
}

#[tokio::test]
async fn denied_filters_get_suback_failure() {
    let b = start_broker("mqtt:\n  deny_subscribe: ['secret/#']\n").await;
    let mut s = connect_id(b.addr, "s").await;
    let codes = s.subscribe("secret/keys", QoS::AtLeastOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Failure]);
    let codes = s.subscribe("public/x", QoS::AtLeastOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let b = start_broker("").await;
    let mut s = connect_id(b.addr, "s").await;
    s.subscribe("u", QoS::AtMostOnce).await;
    s.client.unsubscribe("u").await.unwrap();
    loop {
        if let rumqttc::Packet::UnsubAck(_) = s.next().await {
            break;
        }
    }
    let p = connect_id(b.addr, "p").await;
    p.client
        .publish("u", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    s.no_publish(QUIET).await;
}

/// Messages in transit to sessions count in the broker's backlog (which
/// pauses publishers when high). A subscriber that stops reading must not
/// hold it up: its session takes messages into its own bounded queue.
#[tokio::test]
async fn stuck_subscriber_does_not_hold_the_backlog() {
    let b = start_broker("mqtt:\n  max_inflight_messages: 2\n").await;
    let backlog = || b.server.broker().ctx.metrics.backlog.get();
    let (mut raw, _) = raw_connect(b.addr, "slow", 0).await;
    raw.send(&subscribe_bytes(1, "bl/#", 1)).await;
    raw.read().await.expect("suback");

    let p = connect_id(b.addr, "p").await;
    for i in 0..20 {
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        p.client
            .publish("bl/x", qos, false, format!("{i}"))
            .await
            .unwrap();
    }
    // The subscriber reads one message and acknowledges none: the rest
    // wait behind its window, outside the backlog.
    raw.read().await.expect("first delivery");
    wait_until(|| backlog() == 0).await;
    let queued = || {
        b.server.broker().ctx.table.get("slow").map_or(0, |e| {
            e.shared.queued.load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    wait_until(|| queued() > 0).await;
    drop(raw);

    // Nothing was lost: the QoS 1 messages arrive on the next connection.
    let mut o = options(b.addr, "slow");
    o.set_clean_session(false);
    let mut c = connect(o).await;
    let mut received = 0;
    while c.try_publish(QUIET).await.is_some() {
        received += 1;
    }
    assert!(
        received >= 10,
        "the QoS 1 messages are delivered, got {received}"
    );
    assert_eq!(backlog(), 0);
}
