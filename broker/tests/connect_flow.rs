//! The CONNECT flow against the real broker: protocol and client id
//! validation, session create/resume/destroy, takeover, timeouts.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{Packet, QoS};

#[tokio::test]
async fn unacceptable_protocol_level_gets_connack_1() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    // Level 6 does not exist.
    raw.send(&frame(
        0x10,
        &[0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 1, b'a'],
    ))
    .await;
    assert_eq!(raw.read().await, Some((0x20, vec![0, 1])));
    raw.expect_closed().await;
}

#[tokio::test]
async fn empty_client_id_with_persistent_session_is_rejected() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_bytes("", 0, 60)).await;
    assert_eq!(raw.read().await, Some((0x20, vec![0, 2])));
    raw.expect_closed().await;
}

#[tokio::test]
async fn empty_client_id_with_clean_session_is_accepted() {
    let b = start_broker("").await;
    let (mut raw, present) = raw_connect(b.addr, "", 0x02).await;
    assert!(!present);
    raw.send(&[0xc0, 0]).await; // PINGREQ
    assert_eq!(raw.read().await, Some((0xd0, vec![])));
    assert_eq!(b.server.broker().ctx.table.len(), 1);
}

#[tokio::test]
async fn mqtt_31_is_accepted() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    let mut body = vec![0, 6];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[3, 2, 0, 60, 0, 3]);
    body.extend_from_slice(b"v31");
    raw.send(&frame(0x10, &body)).await;
    assert_eq!(raw.read().await, Some((0x20, vec![0, 0])));
}

#[tokio::test]
async fn first_packet_must_be_connect() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&[0xc0, 0]).await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn second_connect_closes_the_connection() {
    let b = start_broker("").await;
    let (mut raw, _) = raw_connect(b.addr, "twice", 0x02).await;
    raw.send(&connect_bytes("twice", 0x02, 60)).await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn connect_timeout_closes_silent_sockets() {
    let b = start_broker("mqtt:\n  connect_timeout_secs: 1\n").await;
    let mut raw = Raw::connect(b.addr).await;
    let started = std::time::Instant::now();
    raw.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn persistent_session_is_resumed_with_session_present() {
    let b = start_broker("").await;
    let mut o = options(b.addr, "persist");
    o.set_clean_session(false);
    let mut c = connect(o.clone()).await;
    c.subscribe("p/t", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
    let ack = loop {
        if let rumqttc::Event::Incoming(Packet::ConnAck(a)) = el.poll().await.expect("poll") {
            break a;
        }
    };
    assert!(ack.session_present, "resumed session");
    drop(client);

    // A clean session discards it: session present 0.
    let (_raw, present) = raw_connect(b.addr, "persist", 0x02).await;
    assert!(!present);
}

#[tokio::test]
async fn subscriptions_survive_reconnect_of_persistent_session() {
    let b = start_broker("").await;
    let mut o = options(b.addr, "sub-keeper");
    o.set_clean_session(false);
    let mut c = connect(o.clone()).await;
    c.subscribe("keep/#", QoS::AtLeastOnce).await;
    c.disconnect().await;

    let p = connect_id(b.addr, "pub").await;
    p.client
        .publish("keep/x", QoS::AtLeastOnce, false, "while away")
        .await
        .unwrap();
    // Wait until the broker has queued it.
    let table = &b.server.broker().ctx.table;
    for _ in 0..100 {
        if table
            .get("sub-keeper")
            .is_some_and(|e| e.shared.queued.load(std::sync::atomic::Ordering::Relaxed) == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = connect(o).await;
    let m = c.publish().await;
    assert_eq!(m.topic, "keep/x");
    assert_eq!(&m.payload[..], b"while away");
}

#[tokio::test]
async fn takeover_closes_the_old_connection() {
    let b = start_broker("").await;
    let mut first = connect_id(b.addr, "same").await;
    let _second = connect_id(b.addr, "same").await;
    // The first connection is closed by the broker: its event loop ends.
    let closed =
        tokio::time::timeout(WAIT, async { while first.rx.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "old connection closed");
    assert_eq!(b.server.broker().ctx.table.len(), 1);
}

#[tokio::test]
async fn clean_session_entry_is_removed_on_disconnect() {
    let b = start_broker("").await;
    let c = connect_id(b.addr, "transient").await;
    assert_eq!(b.server.broker().ctx.table.len(), 1);
    c.disconnect().await;
    let table = &b.server.broker().ctx.table;
    for _ in 0..100 {
        if table.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("session entry not removed");
}

#[tokio::test]
async fn anonymous_refused_when_disabled() {
    let b = start_broker("auth:\n  allow_anonymous: false\n").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_bytes("anon", 2, 60)).await;
    assert_eq!(raw.read().await, Some((0x20, vec![0, 5])));
    raw.expect_closed().await;
}
