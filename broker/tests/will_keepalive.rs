//! Keep alive and wills against the real broker.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::{LastWill, QoS};

/// A raw CONNECT with a will on `topic`.
fn connect_with_will(id: &str, keep_alive: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02 | 0x04];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for s in [id.as_bytes(), topic.as_bytes(), payload] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s);
    }
    frame(0x10, &body)
}

#[tokio::test]
async fn keepalive_timeout_closes_and_publishes_will() {
    let b = start_broker("").await;
    let mut watcher = connect_id(b.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_with_will("sleepy", 1, "wills/sleepy", b"gone"))
        .await;
    assert_eq!(raw.read().await, Some((0x20, vec![0, 0])));
    let started = Instant::now();
    raw.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    let will = watcher.publish().await;
    assert_eq!(will.topic, "wills/sleepy");
    assert_eq!(&will.payload[..], b"gone");
}

#[tokio::test]
async fn pings_keep_the_connection_alive() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_bytes("pinger", 2, 1)).await;
    raw.read().await.expect("connack");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        raw.send(&[0xc0, 0]).await;
        assert_eq!(raw.read().await, Some((0xd0, vec![])));
    }
}

#[tokio::test]
async fn will_published_on_unclean_close_not_after_disconnect() {
    let b = start_broker("").await;
    let mut watcher = connect_id(b.addr, "watcher").await;
    watcher.subscribe("lw/#", QoS::AtLeastOnce).await;

    let mut o = options(b.addr, "dies");
    o.set_last_will(LastWill::new("lw/dies", "bye", QoS::AtLeastOnce, false));
    connect(o).await.kill();
    let will = watcher.publish().await;
    assert_eq!(will.topic, "lw/dies");

    let mut o = options(b.addr, "polite");
    o.set_last_will(LastWill::new("lw/polite", "bye", QoS::AtLeastOnce, false));
    connect(o).await.disconnect().await;
    watcher.no_publish(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn will_published_on_takeover_and_retained_wills_are_kept() {
    let b = start_broker("").await;
    let mut o = options(b.addr, "dup");
    o.set_last_will(LastWill::new("lw/dup", "taken", QoS::AtMostOnce, true));
    let _first = connect(o).await;
    let _second = connect_id(b.addr, "dup").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = connect_id(b.addr, "late").await;
    late.subscribe("lw/#", QoS::AtMostOnce).await;
    let will = late.publish().await;
    assert!(will.retain);
    assert_eq!(&will.payload[..], b"taken");
}
