//! Topic authorization (ACL file) against the real broker: denied
//! subscriptions get SUBACK 0x80, denied publishes are acknowledged but
//! not delivered, and counted.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{QoS, SubscribeReasonCode};

const ACL: &str = "\
topic read public/#
pattern readwrite devices/%c/#
user admin
topic readwrite #
";

async fn broker_with_acl() -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).expect("write acl");
    let b = start_broker(&format!("auth:\n  acl_file: {}\n", acl.display())).await;
    (b, dir)
}

#[tokio::test]
async fn denied_subscriptions_get_suback_failure() {
    let (b, _dir) = broker_with_acl().await;
    let mut dev = connect_id(b.addr, "dev1").await;
    assert_eq!(
        dev.subscribe("public/news", QoS::AtLeastOnce).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        dev.subscribe("devices/dev1/cmd", QoS::AtLeastOnce).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        dev.subscribe("devices/dev2/cmd", QoS::AtLeastOnce).await,
        [SubscribeReasonCode::Failure]
    );
    assert_eq!(
        dev.subscribe("#", QoS::AtMostOnce).await,
        [SubscribeReasonCode::Failure]
    );
}

#[tokio::test]
async fn denied_publishes_are_acknowledged_dropped_and_counted() {
    let (b, _dir) = broker_with_acl().await;
    let mut o = options(b.addr, "watcher");
    o.set_credentials("admin", "x");
    let mut admin = connect(o).await;
    admin.subscribe("#", QoS::AtLeastOnce).await;

    let (mut raw, _) = raw_connect(b.addr, "dev1", 2).await;
    // QoS 1 to a topic dev1 may not write: PUBACK, but not delivered.
    raw.send(&publish_bytes("public/news", 1, false, 5, b"forged"))
        .await;
    assert_eq!(raw.read().await, Some((0x40, vec![0, 5])));
    // Its own topic is fine.
    raw.send(&publish_bytes("devices/dev1/temp", 1, false, 6, b"21"))
        .await;
    assert_eq!(raw.read().await, Some((0x40, vec![0, 6])));
    let m = admin.publish().await;
    assert_eq!(m.topic, "devices/dev1/temp");
    admin.no_publish(Duration::from_millis(300)).await;
    let dropped = b
        .server
        .broker()
        .ctx
        .metrics
        .messages_dropped
        .by_qos(mqttd::types::QoS::AtLeastOnce);
    assert_eq!(dropped, 1);
}
