//! The per-connection publish rate (`limits.max_publish_rate_messages`,
//! `limits.max_publish_rate_bytes`, `limits.publish_rate_grace_secs`)
//! against the real broker: publishers are raw sockets (bytes written by
//! hand, so the test controls exactly how fast they send), the subscriber
//! is rumqttc, and the rate is measured where it matters, at the
//! subscriber, with a tolerance.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Receives `n` PUBLISH packets on `sub`; returns when each arrived.
async fn arrivals(sub: &mut Client, n: usize) -> Vec<Instant> {
    let mut at = Vec::with_capacity(n);
    for _ in 0..n {
        sub.publish().await;
        at.push(Instant::now());
    }
    at
}

/// Messages a second between arrival `from` and the last one.
fn rate_after(at: &[Instant], from: usize) -> f64 {
    let span = at[at.len() - 1] - at[from];
    (at.len() - 1 - from) as f64 / span.as_secs_f64()
}

/// A client sending far more than its message rate all at once is
/// delivered at about the rate (after its one-second burst), and, having
/// merely a backlog, is not disconnected.
#[tokio::test]
async fn a_burst_is_delivered_at_the_message_rate() {
    let b =
        start_broker("limits:\n  max_publish_rate_messages: 50\n  publish_rate_grace_secs: 10\n")
            .await;
    let mut sub = connect_id(b.addr, "sub").await;
    sub.subscribe("rate/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = raw_connect(b.addr, "fast", 0x02).await;
    // 200 messages in one write: four seconds of the rate.
    let burst: Vec<u8> = (0..200)
        .flat_map(|i| publish_bytes("rate/m", 0, false, 0, format!("{i:03}").as_bytes()))
        .collect();
    let started = Instant::now();
    publisher.send(&burst).await;
    // The rest of the burst takes about 3 s; each message within WAIT.
    let at = arrivals(&mut sub, 200).await;
    let took = at[199] - started;
    let rate = rate_after(&at, 60);
    println!("200 messages in {took:?}; {rate:.1} messages/s after the burst");
    assert!(
        (40.0..=60.0).contains(&rate),
        "delivered at {rate:.1}/s, limit 50/s"
    );
    assert!(took >= Duration::from_millis(2700), "took {took:?}");
    // Still connected: it answers a PINGREQ.
    publisher.send(&[0xC0, 0]).await;
    let (h, _) = publisher.read().await.expect("PINGRESP, not a close");
    assert_eq!(h, 0xD0);
    let m = &b.server.broker().ctx.metrics.publish_rate;
    assert_eq!(m.throttled.get(), 1, "one episode");
    let slowed = Duration::from_micros(m.throttled_micros.get());
    assert!(
        slowed >= Duration::from_millis(2500),
        "slowed for {slowed:?}"
    );
    assert_eq!(m.disconnects.get(), 0);
}

/// The byte rate counts PUBLISH packets as sent on the wire.
#[tokio::test]
async fn a_burst_is_delivered_at_the_byte_rate() {
    // A PUBLISH of topic "bytes" and 93 bytes of payload is 102 bytes on
    // the wire: 4,080 bytes/s lets 40 through a second.
    let b = start_broker("limits:\n  max_publish_rate_bytes: 4080\n").await;
    let mut sub = connect_id(b.addr, "sub").await;
    sub.subscribe("bytes", QoS::AtMostOnce).await;
    let (mut publisher, _) = raw_connect(b.addr, "bulky", 0x02).await;
    let one = publish_bytes("bytes", 0, false, 0, &[b'x'; 93]);
    assert_eq!(one.len(), 102);
    publisher.send(&one.repeat(120)).await;
    let at = arrivals(&mut sub, 120).await;
    let rate = rate_after(&at, 50);
    println!("{rate:.1} messages/s after the burst");
    assert!(
        (32.0..=48.0).contains(&rate),
        "delivered at {rate:.1}/s, limit 40/s"
    );
    assert_eq!(
        b.server.broker().ctx.metrics.publish_rate.throttled.get(),
        1
    );
}

/// Reads one packet from `r`: (first byte, body); `None` at a close.
async fn read_packet(r: &mut (impl AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    let first = r.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = r.read_u8().await.ok()?;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// A MQTT 5.0 QoS 0 PUBLISH without properties.
fn publish_v5(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

/// A client that keeps publishing at twice its rate is disconnected once
/// it has been over it for the grace: DISCONNECT 0x96 (MQTT 5.0).
#[tokio::test]
async fn staying_over_the_rate_past_the_grace_disconnects_with_0x96() {
    let b =
        start_broker("limits:\n  max_publish_rate_messages: 20\n  publish_rate_grace_secs: 2\n")
            .await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_v5_bytes("relentless", 60)).await;
    let (h, body) = raw.read().await.expect("CONNACK");
    assert_eq!((h, body[1]), (0x20, 0), "connected");
    let (mut rd, mut wr) = raw.stream.into_split();
    let started = Instant::now();
    // 40 messages a second, for 10 s at most.
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let disconnect = loop {
        tokio::select! {
            p = read_packet(&mut rd) => break p,
            _ = tick.tick() => {
                assert!(started.elapsed() < Duration::from_secs(10), "never disconnected");
                // The broker stops reading: writes may block, which is the point.
                let _ = tokio::time::timeout(
                    Duration::from_millis(25),
                    wr.write_all(&publish_v5("flood", b"more")),
                )
                .await;
            }
        }
    };
    let took = started.elapsed();
    let (h, body) = disconnect.expect("DISCONNECT before the close");
    assert_eq!(h, 0xE0, "DISCONNECT");
    assert_eq!(body.first(), Some(&0x96), "message rate too high");
    // One second of burst, then two of grace.
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "after {took:?}"
    );
    let m = &b.server.broker().ctx.metrics.publish_rate;
    wait_until(|| m.disconnects.get() == 1).await;
    assert_eq!(m.throttled.get(), 1);
}

/// A 3.1.1 client has no DISCONNECT from the server: it is closed.
#[tokio::test]
async fn a_3_1_1_client_over_the_rate_is_closed() {
    let b =
        start_broker("limits:\n  max_publish_rate_messages: 20\n  publish_rate_grace_secs: 1\n")
            .await;
    let (raw, _) = raw_connect(b.addr, "relentless", 0x02).await;
    let (mut rd, mut wr) = raw.stream.into_split();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let got = loop {
        tokio::select! {
            p = read_packet(&mut rd) => break p,
            _ = tick.tick() => {
                assert!(started.elapsed() < Duration::from_secs(10), "never closed");
                let _ = tokio::time::timeout(
                    Duration::from_millis(25),
                    wr.write_all(&publish_bytes("flood", 0, false, 0, b"more")),
                )
                .await;
            }
        }
    };
    assert_eq!(got, None, "closed without a packet");
    let m = &b.server.broker().ctx.metrics.publish_rate;
    wait_until(|| m.disconnects.get() == 1).await;
    // The metric is exposed under its documented name.
    let text = b.server.broker().ctx.metrics.render();
    assert!(
        text.contains("mqttd_publish_rate_disconnects_total 1\n"),
        "{text}"
    );
    assert!(text.contains("mqttd_publish_rate_throttled_total 1\n"));
}

/// A client writing as fast as its socket takes gets the DISCONNECT 0x96
/// too (the broker's unread input does not turn the close into a reset
/// before the client reads it), after the grace; its data waited in TCP
/// buffers meanwhile.
#[tokio::test]
async fn a_flat_out_flood_reads_its_0x96() {
    let b =
        start_broker("limits:\n  max_publish_rate_messages: 20\n  publish_rate_grace_secs: 2\n")
            .await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_v5_bytes("flood", 60)).await;
    let (h, _) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20);
    let (mut rd, mut wr) = raw.stream.into_split();
    let chunk = publish_v5("flood", &[b'x'; 100]).repeat(100);
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut rd))
        .await
        .expect("an answer within 10 s");
    let took = started.elapsed();
    writer.abort();
    let (h, body) = got.expect("DISCONNECT before the close");
    assert_eq!((h, body.first()), (0xE0, Some(&0x96)));
    assert!(took >= Duration::from_millis(1900), "after {took:?}");
    let m = &b.server.broker().ctx.metrics.publish_rate;
    wait_until(|| m.disconnects.get() == 1).await;
}

/// While the broker does not read a slowed client, keep alive does not
/// count its silence: the client sent, the broker did not listen. A
/// packet four times the byte burst holds reading for about three
/// seconds, twice the client's 1.5 s keep-alive grace.
#[tokio::test]
async fn a_slowed_client_is_not_closed_by_keep_alive() {
    let b = start_broker("limits:\n  max_publish_rate_bytes: 1000\n  publish_rate_grace_secs: 0\n")
        .await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_bytes("slowed", 0x02, 1)).await;
    let (h, _) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20);
    let started = Instant::now();
    raw.send(&publish_bytes("big", 0, false, 0, &[b'x'; 4000]))
        .await;
    // Pings every half second, as a client with keep alive 1 s would;
    // they wait behind the publish until the debt is repaid.
    let mut pongs = 0;
    while pongs < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "no PINGRESP");
        raw.send(&[0xC0, 0]).await;
        match raw.read_within(Duration::from_millis(500)).await {
            Ok(Some((0xD0, _))) => pongs += 1,
            Ok(other) => panic!("expected PINGRESP, got {other:?}"),
            Err(_) => {}
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "answered after {took:?}"
    );
    let m = &b.server.broker().ctx.metrics;
    assert_eq!(m.keepalive_timeouts.get(), 0);
    assert_eq!(m.publish_rate.throttled.get(), 1);
}
