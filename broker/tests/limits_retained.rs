//! Retained-message limits (`limits.max_retained_messages`,
//! `limits.max_retained_bytes`) and the purge of expired retained
//! messages, against the real broker with rumqttc (3.1.1 and 5.0);
//! figures from the broker's metrics and `/metrics`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::v5::{self, V5Event, V5};
use common::*;
use rumqttc::v5::mqttbytes::v5::{Packet as V5Packet, PubAckReason, PublishProperties};
use rumqttc::{Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The broker's `/metrics` samples, by series.
async fn metrics(b: &TestBroker) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(b.server.http_addr().expect("http on"))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: mqttd\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .expect("metrics in time")
        .unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

async fn metric(b: &TestBroker, series: &str) -> f64 {
    *metrics(b)
        .await
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Publishes a retained QoS 1 message and waits for its PUBACK.
async fn retain(c: &mut Client, topic: &str, payload: &[u8]) {
    c.client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .expect("publish");
    loop {
        if let Packet::PubAck(_) = c.next().await {
            return;
        }
    }
}

/// The retained messages a new subscriber to `filter` gets, as
/// (topic, payload), sorted. They follow the SUBACK at once; the window
/// after the last one only shows that no more come.
async fn retained_for(
    addr: std::net::SocketAddr,
    filter: &str,
    expect: usize,
) -> Vec<(String, String)> {
    let mut c = connect_id(addr, "retained-reader").await;
    c.subscribe(filter, QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..expect {
        let p = c.publish().await;
        assert!(p.retain, "a retained message carries RETAIN");
        got.push((p.topic, String::from_utf8_lossy(&p.payload).to_string()));
    }
    c.no_publish(Duration::from_millis(200)).await;
    c.disconnect().await;
    got.sort();
    got
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// Past the count bound a new topic is not retained but still delivered;
/// replacing is allowed; clearing frees room.
#[tokio::test]
async fn count_bound_refuses_new_topics_only() {
    let b = start_broker("limits:\n  max_retained_messages: 2\n").await;
    let mut live = connect_id(b.addr, "live").await;
    live.subscribe("r/#", QoS::AtLeastOnce).await;
    let mut p = connect_id(b.addr, "publisher").await;
    retain(&mut p, "r/1", b"one").await;
    retain(&mut p, "r/2", b"two").await;
    retain(&mut p, "r/3", b"three").await;
    for want in ["one", "two", "three"] {
        assert_eq!(
            &live.publish().await.payload[..],
            want.as_bytes(),
            "delivered live"
        );
    }
    let m = &b.server.broker().ctx.metrics;
    assert_eq!(m.retained.refused_messages.get(), 1);
    assert_eq!(
        metric(&b, "mqttd_retained_refused_total{limit=\"messages\"}").await,
        1.0
    );
    assert_eq!(metric(&b, "mqttd_retained_messages").await, 2.0);
    assert_eq!(
        retained_for(b.addr, "r/#", 2).await,
        pairs(&[("r/1", "one"), ("r/2", "two")])
    );

    // Replacing an existing topic is always allowed.
    retain(&mut p, "r/1", b"one again").await;
    // Clearing one frees room for a new topic.
    retain(&mut p, "r/2", b"").await;
    retain(&mut p, "r/3", b"three").await;
    assert_eq!(
        retained_for(b.addr, "r/#", 2).await,
        pairs(&[("r/1", "one again"), ("r/3", "three")])
    );
    assert_eq!(
        m.retained.refused_messages.get(),
        1,
        "nothing refused since"
    );
    p.disconnect().await;
    live.disconnect().await;
}

/// The bytes bound counts payload and topic; a refused 5.0 QoS 1 publish
/// is acknowledged as accepted (it was published), not with 0x97.
#[tokio::test]
async fn byte_bound_counts_payload_and_topic() {
    let b = start_broker("limits:\n  max_retained_bytes: 100\n").await;
    let mut p = connect_id(b.addr, "publisher").await;
    // "b/1" + 60 bytes: 63.
    retain(&mut p, "b/1", &[b'x'; 60]).await;
    assert_eq!(b.server.broker().ctx.retained.bytes(), 63);
    assert_eq!(metric(&b, "mqttd_retained_bytes").await, 63.0);

    // Another 63 would make 126 > 100: refused, from a 5.0 publisher.
    let mut p5: V5 = v5::connect_id(b.addr, "publisher-v5").await;
    let mut sub5 = v5::connect_id(b.addr, "sub-v5").await;
    sub5.subscribe("b/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    p5.publish_props(
        "b/2",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        &"y".repeat(60),
        PublishProperties::default(),
    )
    .await;
    let reason = loop {
        match p5.next().await {
            V5Event::Packet(V5Packet::PubAck(a)) => break a.reason,
            V5Event::Closed(why) => panic!("closed: {why}"),
            _ => {}
        }
    };
    assert_eq!(reason, PubAckReason::Success, "published, so accepted");
    // (After b/1's retained replay.)
    let mut delivered = sub5.publish().await;
    if delivered.topic == "b/1" {
        delivered = sub5.publish().await;
    }
    assert_eq!(&delivered.topic[..], b"b/2", "still delivered");
    assert!(
        !delivered.retain,
        "delivered live, not as a retained message"
    );
    assert_eq!(
        metric(&b, "mqttd_retained_refused_total{limit=\"bytes\"}").await,
        1.0
    );
    assert_eq!(b.server.broker().ctx.retained.len(), 1);

    // A replacement may grow the topic: 3 + 90.
    retain(&mut p, "b/1", &[b'z'; 90]).await;
    assert_eq!(b.server.broker().ctx.retained.bytes(), 93);
    // Clearing it frees the room for b/2.
    retain(&mut p, "b/1", b"").await;
    retain(&mut p, "b/2", &[b'y'; 60]).await;
    assert_eq!(b.server.broker().ctx.retained.bytes(), 63);
    assert_eq!(
        retained_for(b.addr, "b/#", 1).await,
        pairs(&[("b/2", &"y".repeat(60))])
    );
    assert_eq!(
        metric(&b, "mqttd_retained_refused_total{limit=\"bytes\"}").await,
        1.0
    );
    p.disconnect().await;
}

/// Runs one lifetime of a broker in a runtime of its own, so that when
/// it ends every task holding its store is gone, as when a process exits.
fn lifetime<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f());
}

fn storage(data: &Path) -> String {
    format!("storage:\n  data_dir: {}\n", data.display())
}

/// A retained message with a 1 s expiry leaves memory (a new subscriber
/// gets nothing, the gauge falls, the purge is counted) and the store
/// (after a restart it is not there to be dropped).
#[test]
fn expired_retained_message_is_purged_from_memory_and_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let d = data.clone();
    lifetime(|| async move {
        let b = start_broker(&storage(&d)).await;
        let p = v5::connect_id(b.addr, "publisher").await;
        let expiring = PublishProperties {
            message_expiry_interval: Some(1),
            ..Default::default()
        };
        let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
        p.publish_props("e/gone", qos, true, "short-lived", expiring)
            .await;
        p.publish_props("e/kept", qos, true, "kept", PublishProperties::default())
            .await;
        let ctx = &b.server.broker().ctx;
        wait_until(|| ctx.retained.len() == 2).await;
        // Purged within its second plus one sweep interval.
        wait_until(|| ctx.metrics.retained.expired.get() == 1).await;
        assert_eq!(ctx.retained.len(), 1);
        assert_eq!(metric(&b, "mqttd_retained_messages").await, 1.0);
        assert_eq!(metric(&b, "mqttd_retained_expired_total").await, 1.0);
        assert_eq!(
            retained_for(b.addr, "e/#", 1).await,
            pairs(&[("e/kept", "kept")])
        );
        b.server.shutdown().await;
    });
    lifetime(|| async move {
        let b = start_broker(&storage(&data)).await;
        assert_eq!(b.server.broker().ctx.retained.len(), 1);
        let m = metrics(&b).await;
        assert_eq!(m["mqttd_store_recovered_total{kind=\"retained\"}"], 1.0);
        // Gone from the store already: nothing expired left to drop at load.
        assert_eq!(
            m["mqttd_store_dropped_total{reason=\"expired_message\"}"],
            0.0
        );
        assert_eq!(
            retained_for(b.addr, "e/#", 1).await,
            pairs(&[("e/kept", "kept")])
        );
        b.server.shutdown().await;
    });
}

/// Stored retained messages beyond a lowered bound stay on disk at
/// start-up, counted; raising the bound again brings them back, except
/// one superseded meanwhile by a newer (refused) retained publish.
#[test]
fn restore_beyond_the_bound_keeps_the_rest_on_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let life = |max: usize, publish: &'static [&'static str], expect: usize, not_restored: u64| {
        let data = data.clone();
        lifetime(move || async move {
            let yaml = format!(
                "limits:\n  max_retained_messages: {max}\n{}",
                storage(&data)
            );
            let b = start_broker(&yaml).await;
            let ctx = &b.server.broker().ctx;
            assert_eq!(ctx.metrics.retained.not_restored.get(), not_restored);
            assert_eq!(
                metric(&b, "mqttd_retained_not_restored_total").await,
                not_restored as f64
            );
            let mut p = connect_id(b.addr, "publisher").await;
            for t in publish {
                retain(&mut p, t, b"newer").await;
            }
            p.disconnect().await;
            assert_eq!(ctx.retained.len(), expect);
            b.server.shutdown().await;
        });
    };
    life(10, &["s/1", "s/2", "s/3", "s/4"], 4, 0);
    // s/3 and s/4 stay on disk; a newer s/4 is refused (full).
    life(2, &["s/4"], 2, 2);
    // With room again, what stayed on disk is back, but s/4.
    let mut got = Vec::new();
    lifetime(|| async {
        let yaml = format!("limits:\n  max_retained_messages: 10\n{}", storage(&data));
        let b = start_broker(&yaml).await;
        got = retained_for(b.addr, "s/#", 3).await;
        b.server.shutdown().await;
    });
    assert_eq!(
        got,
        pairs(&[("s/1", "newer"), ("s/2", "newer"), ("s/3", "newer")]),
        "s/4 superseded, not resurrected"
    );
}
