//! Shutdown delivers wills (docs/security.md, "What mqttd guarantees"):
//! when the broker stops, the wills of the clients it disconnects reach
//! the subscribers still connected before their connections close, as
//! Mosquitto does; a delayed will is published at once, since the session
//! ends with the broker. Clients written by hand (wills, will delay) and a
//! rumqttc subscriber, against the real broker's shutdown path.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use rumqttc::{Packet, QoS};

/// Clients with a will, connected when the broker stops.
const CLIENTS: usize = 20;

/// A 3.1.1 CONNECT (clean session) with a will of `qos` on `topic`.
fn connect_v4_with_will(id: &str, topic: &str, qos: u8, retain: bool) -> Vec<u8> {
    let flags = 0x02 | 0x04 | (qos << 3) | if retain { 0x20 } else { 0 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
    for s in [id.as_bytes(), topic.as_bytes(), b"gone"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s);
    }
    frame(0x10, &body)
}

/// A 5.0 CONNECT with session expiry and a QoS 1 will delayed by an hour.
fn connect_v5_with_delayed_will(id: &str, topic: &str) -> Vec<u8> {
    let hour = 3600u32.to_be_bytes();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02 | 0x04 | 0x08, 0, 60];
    body.extend_from_slice(&[5, 0x11]); // session expiry interval
    body.extend_from_slice(&hour);
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(&[5, 0x18]); // will delay interval
    body.extend_from_slice(&hour);
    for s in [topic.as_bytes(), b"gone"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s);
    }
    frame(0x10, &body)
}

async fn connected(b: &TestBroker, packet: &[u8]) -> Raw {
    let mut raw = Raw::connect(b.addr).await;
    raw.send(packet).await;
    let (h, body) = raw.read().await.expect("CONNACK");
    assert_eq!((h, body.last()), (0x20, Some(&0)), "connection accepted");
    raw
}

#[tokio::test]
async fn shutdown_delivers_every_will_before_closing_subscribers() {
    let b = start_broker("").await;
    let mut sub = connect_id(b.addr, "subscriber").await;
    sub.subscribe("wills/#", QoS::AtLeastOnce).await;

    let mut expected = BTreeSet::new();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let topic = format!("wills/{i}");
        let packet = connect_v4_with_will(&format!("c{i}"), &topic, (i % 2) as u8, i % 5 == 0);
        clients.push(connected(&b, &packet).await);
        expected.insert(topic);
    }
    // Delayed wills: one client online, one offline whose will is pending.
    clients.push(
        connected(
            &b,
            &connect_v5_with_delayed_will("delayed-on", "wills/delayed-on"),
        )
        .await,
    );
    expected.insert("wills/delayed-on".to_string());
    drop(
        connected(
            &b,
            &connect_v5_with_delayed_will("delayed-off", "wills/delayed-off"),
        )
        .await,
    );
    expected.insert("wills/delayed-off".to_string());
    let ctx = b.server.broker().ctx.clone();
    wait_until(|| {
        ctx.table
            .get("delayed-off")
            .is_some_and(|s| !s.shared.is_connected())
    })
    .await;
    // A client that disconnected cleanly has no will left.
    let mut polite = connected(
        &b,
        &connect_v4_with_will("polite", "wills/polite", 1, false),
    )
    .await;
    polite.send(&[0xe0, 0]).await;
    polite.expect_closed().await;
    sub.no_publish(Duration::from_millis(200)).await;

    let TestBroker {
        server, dir: _dir, ..
    } = b;
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown in time");

    // Everything the subscriber read before its connection closed.
    let mut got = BTreeSet::new();
    while let Some(p) = tokio::time::timeout(WAIT, sub.rx.recv())
        .await
        .expect("subscriber closed in time")
    {
        if let Packet::Publish(p) = p {
            assert!(got.insert(p.topic.clone()), "duplicate {}", p.topic);
        }
    }
    assert_eq!(got, expected);
    drop(clients);
}
