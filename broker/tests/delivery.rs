//! Delivery to subscribers against the real broker: shared-subscription
//! member choice, the resend window on resume, the QoS 0 byte bound and
//! paced retained replay. Clients are `rumqttc` and raw sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    connect_bytes, frame, parse_publish, publish_bytes, start_broker, v5, wait_until, WAIT,
};
use mqttd::metrics::DropReason;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const QUIET: Duration = Duration::from_millis(300);

/// A raw connection with a buffered reader (replays are many small packets).
struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let (r, w) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Conn {
            r: BufReader::with_capacity(64 * 1024, r),
            w,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write");
    }

    /// The next packet within `d`; `None` if none came (or the broker closed).
    async fn read_within(&mut self, d: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(d, self.read_inner())
            .await
            .ok()
            .flatten()
    }

    async fn read(&mut self) -> (u8, Vec<u8>) {
        self.read_within(WAIT).await.expect("a packet in time")
    }

    async fn read_inner(&mut self) -> Option<(u8, Vec<u8>)> {
        let first = self.r.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = self.r.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).await.ok()?;
        Some((first, body))
    }
}

/// A 5.0 CONNECT with a session expiry and, if given, a receive maximum.
fn connect_v5(
    client_id: &str,
    clean_start: bool,
    expiry: u32,
    receive_max: Option<u16>,
) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        if clean_start { 0x02 } else { 0 },
        0,
        60,
    ];
    let mut props = vec![0x11];
    props.extend_from_slice(&expiry.to_be_bytes());
    if let Some(rm) = receive_max {
        props.push(0x21);
        props.extend_from_slice(&rm.to_be_bytes());
    }
    body.push(props.len() as u8);
    body.extend_from_slice(&props);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

fn subscribe_v5(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    frame(0x82, &body)
}

fn puback(packet_id: u16) -> Vec<u8> {
    frame(0x40, &packet_id.to_be_bytes())
}

/// The packet id of a 5.0 or 3.1.1 QoS 1/2 PUBLISH.
fn publish_id(body: &[u8]) -> u16 {
    let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
    u16::from_be_bytes([body[2 + tl], body[3 + tl]])
}

fn is_publish(first: u8) -> bool {
    first >> 4 == 3
}

async fn wait_offline(b: &common::TestBroker, id: &str) {
    let table = &b.server.broker().ctx.table;
    wait_until(|| table.get(id).is_some_and(|e| !e.shared.is_connected())).await;
}

/// Item 8: an offline member of a shared group must not take the turn of a
/// connected one (QoS 0 was dropped, QoS 1 queued offline).
#[tokio::test]
async fn shared_group_prefers_connected_members() {
    let b = start_broker("").await;
    let mut o = v5::options(b.addr, "off");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let mut off = v5::connect(o.clone()).await;
    off.subscribe("$share/g/s8", QoS::AtLeastOnce).await;
    off.client.disconnect().await.unwrap();
    wait_offline(&b, "off").await;

    let mut on = v5::connect_id(b.addr, "on").await;
    on.subscribe("$share/g/s8", QoS::AtLeastOnce).await;
    let p = v5::connect_id(b.addr, "pub8").await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for i in 0..10 {
            p.client
                .publish("s8", qos, false, format!("{i}"))
                .await
                .unwrap();
        }
        for i in 0..10 {
            let got = on.publish().await;
            assert_eq!(got.payload, format!("{i}").into_bytes(), "{qos:?}");
        }
    }
    // Nothing waited in the offline member's queue.
    let mut off = v5::connect(o).await;
    assert!(off.connack.session_present);
    off.no_publish(QUIET).await;
}

/// Item 8: when no member can take a message, a 5.0 publisher is told so
/// (PUBACK 0x10) instead of success.
#[tokio::test]
async fn shared_group_without_a_taker_answers_no_matching_subscribers() {
    let b = start_broker("").await;
    let mut o = v5::options(b.addr, "off0");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let mut off = v5::connect(o).await;
    // Granted QoS 0: an offline member cannot keep it.
    off.subscribe("$share/g/s8b", QoS::AtMostOnce).await;
    off.client.disconnect().await.unwrap();
    wait_offline(&b, "off0").await;

    let mut p = v5::connect_id(b.addr, "pub8b").await;
    p.client
        .publish("s8b", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let reason = loop {
        if let v5::V5Event::Packet(Packet::PubAck(a)) = p.next().await {
            break a.reason;
        }
    };
    assert_eq!(reason, PubAckReason::NoMatchingSubscribers);

    let mut on = v5::connect_id(b.addr, "on0").await;
    on.subscribe("$share/g/s8b", QoS::AtMostOnce).await;
    p.client
        .publish("s8b", QoS::AtLeastOnce, false, "y")
        .await
        .unwrap();
    let reason = loop {
        if let v5::V5Event::Packet(Packet::PubAck(a)) = p.next().await {
            break a.reason;
        }
    };
    assert_eq!(reason, PubAckReason::Success);
    assert_eq!(on.publish().await.payload, "y");
}

/// Item 9: a resumed session resends no more unacknowledged PUBLISH
/// packets than the new connection's Receive Maximum [MQTT-3.3.4-9].
#[tokio::test]
async fn resume_resends_within_the_new_receive_maximum() {
    let b = start_broker("").await;
    let mut sub = Conn::open(b.addr).await;
    sub.send(&connect_v5("rm", true, 60, None)).await;
    assert_eq!(sub.read().await.0, 0x20);
    sub.send(&subscribe_v5(1, "rm/t", 1)).await;
    assert_eq!(sub.read().await.0, 0x90);

    let mut p = Conn::open(b.addr).await;
    p.send(&connect_bytes("pub9", 0x02, 60)).await;
    assert_eq!(p.read().await.0, 0x20);
    for i in 0..10u16 {
        p.send(&publish_bytes("rm/t", 1, false, i + 1, b"m")).await;
    }
    // All ten arrive (window 32), none acknowledged.
    for _ in 0..10 {
        let (first, _) = sub.read().await;
        assert!(is_publish(first));
    }
    drop(sub);
    wait_offline(&b, "rm").await;

    let mut sub = Conn::open(b.addr).await;
    sub.send(&connect_v5("rm", false, 60, Some(2))).await;
    let (first, body) = sub.read().await;
    assert_eq!((first, body[0]), (0x20, 1), "CONNACK, session present");
    let mut ids = Vec::new();
    while let Some((first, body)) = sub.read_within(QUIET).await {
        assert!(is_publish(first) && first & 0x08 != 0, "DUP PUBLISH");
        ids.push(publish_id(&body));
    }
    assert_eq!(ids.len(), 2, "resent beyond receive maximum 2: {ids:?}");
    // Each acknowledgement lets exactly one more through.
    sub.send(&puback(ids[0])).await;
    let (first, _) = sub.read().await;
    assert!(is_publish(first));
    assert!(sub.read_within(QUIET).await.is_none());
}

/// Item 14: a stalled QoS 0 subscriber is bounded in bytes, not only in
/// messages, and the drops are counted.
#[tokio::test]
async fn stalled_qos0_subscriber_is_bounded_in_bytes() {
    let b = start_broker("mqtt:\n  max_pending_qos0_bytes: 1048576\n").await;
    let mut sub = Conn::open(b.addr).await;
    sub.send(&connect_bytes("stalled", 0x02, 0)).await;
    assert_eq!(sub.read().await.0, 0x20);
    sub.send(&common::subscribe_bytes(1, "big", 0)).await;
    assert_eq!(sub.read().await.0, 0x90);
    // From here on the subscriber reads nothing.

    let mut p = Conn::open(b.addr).await;
    p.send(&connect_bytes("pub14", 0x02, 0)).await;
    assert_eq!(p.read().await.0, 0x20);
    let payload = vec![7u8; 64 * 1024];
    let metrics = &b.server.broker().ctx.metrics;
    // 400 x 64 KiB = 25 MiB: far fewer messages than the count bound,
    // far more bytes than the byte bound and the socket buffers.
    for _ in 0..400 {
        p.send(&publish_bytes("big", 0, false, 0, &payload)).await;
        if metrics.messages_dropped.by_reason(DropReason::Qos0Bytes) > 0 {
            break;
        }
    }
    wait_until(|| metrics.messages_dropped.by_reason(DropReason::Qos0Bytes) > 0).await;
    let text = metrics.render();
    assert!(text.contains("mqttd_qos0_byte_limit_drops_total"), "{text}");
}

/// Publishes `n` retained messages `ret/<i>` with raw bytes and waits
/// until the broker stores them all.
async fn retain_many(b: &common::TestBroker, n: usize) {
    let mut p = Conn::open(b.addr).await;
    p.send(&connect_bytes("retainer", 0x02, 0)).await;
    assert_eq!(p.read().await.0, 0x20);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend(publish_bytes(
            &format!("ret/{i}"),
            1,
            true,
            (i % 60_000 + 1) as u16,
            b"r",
        ));
        if batch.len() > 64 * 1024 {
            p.send(&batch).await;
            batch.clear();
        }
    }
    p.send(&batch).await;
    let mut acked = 0;
    while acked < n {
        let (first, _) = p.read().await;
        if first == 0x40 {
            acked += 1;
        }
    }
    let retained = &b.server.broker().ctx.retained;
    wait_until(|| retained.len() == n).await;
}

/// Item 15: 20,000 retained messages replayed to a QoS 0 subscriber that
/// reads as fast as it can all arrive (they were cut at the 10,000 QoS 0
/// bound).
#[tokio::test]
async fn retained_replay_is_paced_not_cut_qos0() {
    let b = start_broker("").await;
    let n = 20_000;
    retain_many(&b, n).await;
    let mut sub = Conn::open(b.addr).await;
    sub.send(&connect_bytes("replay0", 0x02, 0)).await;
    assert_eq!(sub.read().await.0, 0x20);
    sub.send(&common::subscribe_bytes(1, "ret/#", 0)).await;
    assert_eq!(sub.read().await.0, 0x90);
    let mut seen = vec![false; n];
    for _ in 0..n {
        let (first, body) = sub.read().await;
        assert!(is_publish(first) && first & 0x01 == 1, "retained PUBLISH");
        let (topic, _, _) = parse_publish(first, &body);
        let i: usize = topic["ret/".len()..].parse().unwrap();
        assert!(!seen[i], "duplicate {topic}");
        seen[i] = true;
    }
    assert!(sub.read_within(QUIET).await.is_none());
}

/// Item 15 for QoS 1: the replay waits for the window instead of
/// overflowing the session queue (1,000 by default).
#[tokio::test]
async fn retained_replay_is_paced_not_cut_qos1() {
    let b = start_broker("").await;
    let n = 3_000;
    retain_many(&b, n).await;
    let mut sub = Conn::open(b.addr).await;
    sub.send(&connect_bytes("replay1", 0x02, 0)).await;
    assert_eq!(sub.read().await.0, 0x20);
    sub.send(&common::subscribe_bytes(1, "ret/#", 1)).await;
    assert_eq!(sub.read().await.0, 0x90);
    for _ in 0..n {
        let (first, body) = sub.read().await;
        assert!(is_publish(first));
        sub.send(&puback(publish_id(&body))).await;
    }
    assert!(sub.read_within(QUIET).await.is_none());
    let dropped = b
        .server
        .broker()
        .ctx
        .metrics
        .messages_dropped
        .by_qos(mqttd::types::QoS::AtLeastOnce);
    assert_eq!(dropped, 0);
}

/// Item 15: the pending replay is bounded by the retained set, so a
/// client that re-subscribes without reading cannot grow it without end;
/// once it reads, it still gets a whole replay.
#[tokio::test]
async fn repeated_subscribes_without_reading_do_not_grow_the_replay() {
    let b = start_broker("").await;
    let n = 2_000;
    retain_many(&b, n).await;
    let mut sub = Conn::open(b.addr).await;
    sub.send(&connect_bytes("resub", 0x02, 0)).await;
    assert_eq!(sub.read().await.0, 0x20);
    // Subscriptions at QoS 1, never acknowledged: the replay stalls at
    // the window.
    let mut batch = Vec::new();
    for i in 0..50u16 {
        batch.extend(common::subscribe_bytes(i + 1, "ret/#", 1));
    }
    sub.send(&batch).await;
    let metrics = &b.server.broker().ctx.metrics;
    let dropped = || {
        metrics
            .messages_dropped
            .by_qos(mqttd::types::QoS::AtLeastOnce)
    };
    // 50 replays of 2,000: all but about one replay's worth (less what
    // went into the window) are refused.
    wait_until(|| dropped() >= 48 * n as u64).await;
}

/// QoS 0 for offline persistent sessions is dropped at routing, counted
/// once per session as `qos0_offline` (not as "no subscribers"), while
/// QoS 1 is queued for them and arrives on resume, alone.
#[tokio::test]
async fn qos0_for_offline_sessions_is_dropped_at_routing() {
    let b = start_broker("").await;
    let ctx = b.server.broker().ctx.clone();
    let ids = ["off-a", "off-b", "off-c"];
    for id in ids {
        let (mut raw, _) = common::raw_connect(b.addr, id, 0).await;
        raw.send(&common::subscribe_bytes(1, "offline/t", 1)).await;
        let (h, _) = raw.read().await.expect("SUBACK");
        assert_eq!(h, 0x90);
        raw.send(&frame(0xe0, &[])).await;
        raw.expect_closed().await;
    }
    let offline = || {
        ctx.metrics
            .messages_dropped
            .reason(DropReason::Qos0Offline, mqttd::types::QoS::AtMostOnce)
            .get()
    };
    let no_subscribers = || {
        ctx.metrics
            .messages_dropped
            .by_reason(DropReason::NoSubscribers)
    };
    let (mut publisher, _) = common::raw_connect(b.addr, "offline-pub", 2).await;
    publisher
        .send(&publish_bytes("offline/t", 0, false, 0, b"zero"))
        .await;
    publisher
        .send(&publish_bytes("offline/t", 1, false, 7, b"one"))
        .await;
    let (h, _) = publisher.read().await.expect("PUBACK");
    assert_eq!(h, 0x40);
    wait_until(|| offline() == 3).await;
    assert_eq!(no_subscribers(), 0);
    for id in ids {
        let (mut raw, present) = common::raw_connect(b.addr, id, 0).await;
        assert!(present, "{id}: session present");
        let (h, body) = raw.read().await.expect("queued PUBLISH");
        let (topic, _, payload) = parse_publish(h, &body);
        assert_eq!(
            (topic.as_str(), payload.as_slice()),
            ("offline/t", &b"one"[..])
        );
        assert!(
            raw.read_within(QUIET).await.is_err(),
            "{id}: only the QoS 1 message was kept"
        );
    }
    assert_eq!(offline(), 3);
}

/// An offline session whose queue is full takes no more: the message is
/// dropped at routing (`queue_full`, without waking the session's holder),
/// a 5.0 publisher whose message no session could take hears 0x97 quota
/// exceeded, and the session, back online, gets what its queue kept and
/// then new messages again.
#[tokio::test]
async fn a_full_offline_queue_refuses_at_routing() {
    const QUEUE: u64 = 3;
    let b = start_broker(&format!("mqtt:\n  max_queued_messages: {QUEUE}\n")).await;
    let ctx = b.server.broker().ctx.clone();
    let mut o = v5::options(b.addr, "full-off");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(600));
    let mut off = v5::connect(o.clone()).await;
    off.subscribe("full/t", QoS::AtLeastOnce).await;
    off.client.disconnect().await.unwrap();
    wait_offline(&b, "full-off").await;

    let full = || {
        ctx.metrics
            .messages_dropped
            .reason(DropReason::QueueFull, mqttd::types::QoS::AtLeastOnce)
            .get()
    };
    let mut p = v5::connect_id(b.addr, "full-pub").await;
    let mut acks = Vec::new();
    // The first refusal is the holder's (the queue fills); once it has
    // said so, the router refuses.
    for i in 0..50 {
        p.client
            .publish("full/t", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
        let reason = loop {
            if let v5::V5Event::Packet(Packet::PubAck(a)) = p.next().await {
                break a.reason;
            }
        };
        acks.push(reason);
        if reason == PubAckReason::QuotaExceeded {
            break;
        }
    }
    let sent = acks.len() as u64;
    assert_eq!(acks.last(), Some(&PubAckReason::QuotaExceeded), "{acks:?}");
    assert!(
        acks[..QUEUE as usize]
            .iter()
            .all(|r| *r == PubAckReason::Success),
        "the first {QUEUE} were queued: {acks:?}"
    );
    wait_until(|| full() == sent - QUEUE).await;
    assert_eq!(
        ctx.metrics
            .messages_dropped
            .by_reason(DropReason::NoSubscribers),
        0,
        "refused copies are not counted as unrouted"
    );

    // Back online: the queue's three, nothing of the refused ones.
    let mut on = v5::connect(o).await;
    assert!(on.connack.session_present);
    for i in 0..QUEUE {
        assert_eq!(on.publish().await.payload, format!("{i}").into_bytes());
    }
    on.no_publish(QUIET).await;
    // And it takes new messages again.
    p.client
        .publish("full/t", QoS::AtLeastOnce, false, "again")
        .await
        .unwrap();
    assert_eq!(on.publish().await.payload, "again");
}
