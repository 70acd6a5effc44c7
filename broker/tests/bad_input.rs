//! Malformed input closes only the offending connection; the broker and
//! other clients carry on.

mod common;

use common::*;
use rumqttc::QoS;

/// Byte sequences that break a rule after a valid CONNECT.
const AFTER_CONNECT: &[(&str, &[u8])] = &[
    ("reserved packet type 0", &[0x00, 0x00]),
    ("PUBREL with wrong flags", &[0x60, 0x02, 0x00, 0x01]),
    (
        "SUBSCRIBE with wrong flags",
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
    ),
    ("SUBSCRIBE with no filters", &[0x82, 0x02, 0x00, 0x01]),
    (
        "SUBSCRIBE with packet id 0",
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
    ),
    (
        "SUBSCRIBE with QoS 3",
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
    ),
    (
        "PUBLISH with QoS 3",
        &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
    ),
    (
        "PUBLISH with a wildcard topic",
        &[0x30, 0x04, 0x00, 0x02, b'a', b'#'],
    ),
    (
        "PUBLISH QoS 1 with packet id 0",
        &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
    ),
    ("invalid UTF-8 topic", &[0x30, 0x04, 0x00, 0x02, 0xc3, 0x28]),
    (
        "remaining length over 4 bytes",
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
    ),
    ("CONNACK from a client", &[0x20, 0x02, 0x00, 0x00]),
    (
        "invalid filter",
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00],
    ),
];

#[tokio::test]
async fn each_malformed_packet_closes_only_its_connection() {
    let b = start_broker("").await;
    let mut bystander = connect_id(b.addr, "bystander").await;
    bystander.subscribe("ok", QoS::AtMostOnce).await;
    for (i, (what, bytes)) in AFTER_CONNECT.iter().enumerate() {
        let (mut raw, _) = raw_connect(b.addr, &format!("bad{i}"), 2).await;
        raw.send(bytes).await;
        tokio::time::timeout(WAIT, raw.expect_closed())
            .await
            .unwrap_or_else(|_| panic!("not closed after {what}"));
    }
    let p = connect_id(b.addr, "p").await;
    p.client
        .publish("ok", QoS::AtMostOnce, false, "still here")
        .await
        .unwrap();
    assert_eq!(&bystander.publish().await.payload[..], b"still here");
}

#[tokio::test]
async fn oversized_packets_are_refused() {
    let b = start_broker("mqtt:\n  max_packet_size_bytes: 128\n").await;
    let (mut raw, _) = raw_connect(b.addr, "big", 2).await;
    raw.send(&publish_bytes("t", 0, false, 0, &[0u8; 200]))
        .await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn garbage_before_connect_is_refused() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(b"GET / HTTP/1.1\r\n\r\n").await;
    raw.expect_closed().await;
    // The broker still serves.
    let _c = connect_id(b.addr, "after").await;
}
