//! Wills are authorized (docs/security.md, "What mqttd guarantees"): a
//! CONNECT whose will topic the client may not publish to is refused with
//! 0x05 (3.1.1) / 0x87 (5.0), as Mosquitto does; a will is authorized
//! again when it is published, and dropped (counted, logged) if the ACL
//! now refuses it, retained or not. Raw CONNECT bytes and rumqttc against
//! the real broker.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rumqttc::QoS;

const ACL: &str = "\
pattern readwrite devices/%c/#
user admin
topic readwrite #
";

async fn broker(dir: &Path) -> TestBroker {
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    start_broker(&format!("auth:\n  acl_file: {}\n", acl.display())).await
}

/// A CONNECT (clean session, keep alive 60) with a QoS 1 will, for
/// protocol `version` 4 or 5.
fn connect_with_will(version: u8, id: &str, topic: &str, retain: bool) -> Vec<u8> {
    let flags = 0x02 | 0x04 | (1 << 3) | if retain { 0x20 } else { 0 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, flags, 0, 60];
    if version == 5 {
        body.push(0); // CONNECT properties
    }
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    if version == 5 {
        body.push(0); // will properties
    }
    for s in [topic.as_bytes(), b"offline"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s);
    }
    frame(0x10, &body)
}

/// The CONNACK return/reason code the broker answers `packet` with.
async fn connack_code(b: &TestBroker, packet: &[u8]) -> (Raw, u8) {
    let mut raw = Raw::connect(b.addr).await;
    raw.send(packet).await;
    let (h, body) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20);
    (raw, body[1])
}

async fn watcher(b: &TestBroker) -> Client {
    let mut o = options(b.addr, "watcher");
    o.set_credentials("admin", "x");
    let mut w = connect(o).await;
    w.subscribe("#", QoS::AtLeastOnce).await;
    w
}

#[tokio::test]
async fn connect_with_a_will_to_a_denied_topic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut w = watcher(&b).await;
    for (version, code) in [(4, 0x05), (5, 0x87)] {
        for retain in [false, true] {
            let packet = connect_with_will(version, "d1", "alarms/fire", retain);
            let (mut raw, got) = connack_code(&b, &packet).await;
            assert_eq!(got, code, "v{version} retain {retain}");
            raw.expect_closed().await;
        }
    }
    // Its own topic is fine, and the will goes out on an unclean close.
    let (raw, got) =
        connack_code(&b, &connect_with_will(4, "d1", "devices/d1/status", false)).await;
    assert_eq!(got, 0);
    drop(raw);
    let will = w.publish().await;
    assert_eq!(will.topic, "devices/d1/status");
    w.no_publish(Duration::from_millis(300)).await;
    assert_eq!(b.server.broker().ctx.metrics.wills_denied.get(), 4);
    // Nothing was retained by the refused wills.
    let mut late = connect_id(b.addr, "late").await;
    late.client
        .subscribe("alarms/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    late.no_publish(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_will_the_acl_denies_by_the_time_it_is_due_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut w = watcher(&b).await;
    // Accepted under the rules at CONNECT: retained and non-retained.
    let (plain, got) = connack_code(&b, &connect_with_will(4, "d2", "devices/d2/lwt", false)).await;
    assert_eq!(got, 0);
    let (kept, got) = connack_code(&b, &connect_with_will(5, "d3", "devices/d3/lwt", true)).await;
    assert_eq!(got, 0);

    // The device pattern is withdrawn before they drop off.
    std::fs::write(dir.path().join("acl"), "user admin\ntopic readwrite #\n").unwrap();
    assert!(b.server.reload().await);
    drop(plain);
    drop(kept);
    let m = &b.server.broker().ctx.metrics;
    wait_until(|| m.wills_denied.get() == 2).await;
    w.no_publish(Duration::from_millis(300)).await;
    let mut o = options(b.addr, "late");
    o.set_credentials("admin", "x");
    let mut late = connect(o).await;
    late.client
        .subscribe("devices/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    late.no_publish(Duration::from_millis(300)).await;
    assert_eq!(b.server.broker().ctx.retained.len(), 0);
}
