//! Session hand-over (issue 11, item 5), black-box against the real broker
//! with raw sockets. A persistent session (3.1.1 clean session 0, 5.0 with
//! a session expiry) moves from connection to connection by takeover (a new
//! CONNECT for the client id while the old connection is open) or through
//! an offline spell (DISCONNECT or a dropped socket, then a resume), and
//! keeps what it owns:
//!
//! - its messages, under load: every QoS 1 message arrives; one arrives
//!   again only with DUP set, only if its PUBACK was not confirmed before
//!   the hand-over, and at most a window of them per connection; each
//!   connection sees the numbers in increasing order, resends first;
//! - its subscriptions: session present every time, never a resubscribe;
//! - its incoming QoS 2 state: a PUBLISH answered with PUBREC is not
//!   delivered again after a hand-over, and the next connection's PUBREL
//!   completes it;
//! - a full in-flight window, resent with DUP to the new connection.
//!
//! A clean-start takeover is the opposite: the old session is destroyed.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{connect_bytes, frame, raw_connect, start_broker, wait_until, Raw, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, MissedTickBehavior};

/// The outgoing in-flight window, set in every broker here.
const WINDOW: usize = 32;
/// Messages in the load test.
const LOAD: usize = 3_000;
/// The load test's publisher sends this many per millisecond at most.
const BATCH: usize = 10;
const PINGREQ: [u8; 2] = [0xc0, 0];
const DISCONNECT: [u8; 2] = [0xe0, 0];

#[derive(Debug, Clone, Copy)]
enum V {
    V311,
    V5,
}

impl V {
    /// A CONNECT for `id`, clean or resuming; 5.0 asks for a session
    /// expiry so that the session outlives the connection.
    fn connect(self, id: &str, clean: bool) -> Vec<u8> {
        let flags = if clean { 0x02 } else { 0 };
        match self {
            V::V311 => connect_bytes(id, flags, 60),
            V::V5 => {
                let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 60];
                body.extend_from_slice(&[5, 0x11, 0, 0, 0x01, 0x2c]); // expiry 300 s
                body.extend_from_slice(&(id.len() as u16).to_be_bytes());
                body.extend_from_slice(id.as_bytes());
                frame(0x10, &body)
            }
        }
    }

    fn subscribe(self, packet_id: u16, filter: &str) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        if matches!(self, V::V5) {
            body.push(0);
        }
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(1);
        frame(0x82, &body)
    }

    /// A QoS 1 or 2 PUBLISH.
    fn publish(self, topic: &str, qos: u8, dup: bool, packet_id: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&packet_id.to_be_bytes());
        if matches!(self, V::V5) {
            body.push(0);
        }
        body.extend_from_slice(payload);
        frame(0x30 | u8::from(dup) << 3 | qos << 1, &body)
    }

    /// A QoS 1/2 PUBLISH from the broker.
    fn parse(self, first: u8, body: &[u8]) -> Received {
        let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + tl].to_vec()).expect("utf8 topic");
        let id = u16::from_be_bytes([body[2 + tl], body[3 + tl]]);
        let mut rest = &body[4 + tl..];
        if matches!(self, V::V5) {
            let (mut len, mut shift, mut i) = (0usize, 0, 0);
            loop {
                len |= usize::from(rest[i] & 0x7f) << shift;
                shift += 7;
                i += 1;
                if rest[i - 1] & 0x80 == 0 {
                    break;
                }
            }
            rest = &rest[i + len..];
        }
        Received {
            topic,
            id,
            dup: first & 0x08 != 0,
            payload: String::from_utf8(rest.to_vec()).expect("utf8 payload"),
        }
    }
}

#[derive(Debug)]
struct Received {
    topic: String,
    id: u16,
    dup: bool,
    payload: String,
}

fn ack(kind: u8, packet_id: u16) -> Vec<u8> {
    frame(kind, &packet_id.to_be_bytes())
}

/// Connects `id` and checks the CONNACK accepts; returns the session-present flag.
async fn connect(addr: SocketAddr, v: V, id: &str, clean: bool) -> (Raw, bool) {
    let mut raw = Raw::connect(addr).await;
    raw.send(&v.connect(id, clean)).await;
    let (first, body) = raw.read().await.expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK accepting {id}");
    (raw, body[0] & 1 == 1)
}

/// Reads the next packet, which must be `kind` (PUBACK, PUBREC, PUBCOMP)
/// for `packet_id`, with success (5.0 may omit reason 0).
async fn expect_ack(raw: &mut Raw, kind: u8, packet_id: u16) {
    let (first, body) = raw.read().await.expect("acknowledgement");
    assert_eq!(first, kind, "packet type");
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), packet_id);
    assert_eq!(body.get(2).copied().unwrap_or(0), 0, "reason code");
}

/// Subscribes to `filter` at QoS 1 and checks it is granted.
async fn subscribe(raw: &mut Raw, v: V, filter: &str) {
    raw.send(&v.subscribe(1, filter)).await;
    let (first, body) = raw.read().await.expect("SUBACK");
    assert_eq!((first, body[0], body[1]), (0x90, 0, 1), "SUBACK");
    assert_eq!(body.last(), Some(&1), "granted QoS 1");
}

async fn expect_publish(raw: &mut Raw, v: V) -> Received {
    let (first, body) = raw.read().await.expect("PUBLISH");
    assert_eq!(first >> 4, 3, "PUBLISH expected");
    v.parse(first, &body)
}

/// A client-side view of the load test's subscriber, checked receipt by
/// receipt.
struct Ledger {
    /// Receipts per message number.
    receipts: Vec<u32>,
    /// Acknowledged, and the broker answered a PINGREQ sent after the
    /// PUBACK, before the hand-over: it must never come again.
    settled: Vec<bool>,
    /// Acknowledged on this connection, not (yet) settled.
    acked: Vec<usize>,
    unique: usize,
    redeliveries: usize,
    /// The current connection: its last number, whether a message without
    /// DUP came, how many with DUP.
    last: Option<usize>,
    fresh: bool,
    resent: usize,
}

impl Ledger {
    fn new(n: usize) -> Ledger {
        Ledger {
            receipts: vec![0; n],
            settled: vec![false; n],
            acked: Vec::new(),
            unique: 0,
            redeliveries: 0,
            last: None,
            fresh: false,
            resent: 0,
        }
    }

    fn record(&mut self, n: usize, dup: bool) {
        assert!(n < self.receipts.len(), "message {n} was never published");
        assert!(
            self.last.is_none_or(|last| n > last),
            "message {n} after {:?} on one connection",
            self.last
        );
        if dup {
            assert!(!self.fresh, "resend of {n} after new messages");
            self.resent += 1;
            assert!(self.resent <= WINDOW, "more resends than the window");
        } else {
            self.fresh = true;
        }
        if self.receipts[n] == 0 {
            self.unique += 1;
        } else {
            assert!(dup, "message {n} received again without DUP");
            assert!(
                !self.settled[n],
                "message {n} redelivered after its PUBACK was confirmed"
            );
            self.redeliveries += 1;
        }
        self.receipts[n] += 1;
        self.last = Some(n);
    }

    fn new_connection(&mut self) {
        self.acked.clear();
        (self.last, self.fresh, self.resent) = (None, false, 0);
    }

    fn missing(&self) -> Vec<usize> {
        let missing = (0..self.receipts.len()).filter(|&n| self.receipts[n] == 0);
        missing.take(20).collect()
    }
}

/// Reads the next packet of the subscriber's connection, records a
/// PUBLISH and, if `ack_it`, acknowledges it (a write error is the
/// broker's close, seen on the next read). Returns the packet type, `None`
/// once the broker closed the connection.
async fn step(sub: &mut Raw, v: V, log: &mut Ledger, ack_it: bool) -> Option<u8> {
    let Ok(read) = sub.read_within(WAIT).await else {
        panic!(
            "nothing from the broker in {WAIT:?}; first missing: {:?}",
            log.missing()
        );
    };
    let (first, body) = read?;
    if first >> 4 == 3 {
        let p = v.parse(first, &body);
        let n = p.payload.parse().expect("numbered payload");
        log.record(n, p.dup);
        if ack_it {
            let _ = sub.stream.write_all(&ack(0x40, p.id)).await;
            log.acked.push(n);
        }
    }
    Some(first)
}

/// Publishes messages 0..LOAD at QoS 1, `BATCH` a millisecond at most so
/// that the stream runs through the hand-overs; counts those acknowledged.
async fn publish_numbered(addr: SocketAddr, acked: Arc<AtomicUsize>) {
    let (mut p, _) = raw_connect(addr, "load-pub", 0x02).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next = 0;
    while next < LOAD {
        tick.tick().await;
        let end = (next + BATCH).min(LOAD);
        let mut bytes = Vec::new();
        for n in next..end {
            let id = n as u16 + 1;
            bytes.extend(V::V311.publish("load/t", 1, false, id, n.to_string().as_bytes()));
        }
        p.send(&bytes).await;
        for n in next..end {
            expect_ack(&mut p, 0x40, n as u16 + 1).await;
        }
        next = end;
        acked.store(next, Ordering::SeqCst);
    }
}

/// Items 1 and 2: the subscriber's session goes through takeovers,
/// DISCONNECTs and dropped sockets in turn while a publisher streams.
async fn handover_under_load(v: V) {
    // The queue holds the whole stream: a full queue drops by design, and
    // that is not what this test is about.
    let b = start_broker(&format!(
        "mqtt:\n  max_inflight_messages: {WINDOW}\n  max_queued_messages: {LOAD}\n"
    ))
    .await;
    let id = format!("load-{v:?}");
    let (mut sub, present) = connect(b.addr, v, &id, false).await;
    assert!(!present);
    subscribe(&mut sub, v, "load/t").await;

    let published = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_numbered(b.addr, published.clone()));
    let mut log = Ledger::new(LOAD);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut handovers = 0;
    while log.unique < LOAD {
        assert!(Instant::now() < deadline, "load test took over 60 s");
        // A varying number of messages on each connection.
        for _ in 0..20 + (handovers * 37) % 130 {
            if log.unique == LOAD {
                break;
            }
            step(&mut sub, v, &mut log, true)
                .await
                .expect("subscriber connection open");
        }
        // Settle: the broker has read every PUBACK before its PINGRESP.
        sub.send(&PINGREQ).await;
        let acked = std::mem::take(&mut log.acked);
        while step(&mut sub, v, &mut log, true).await.expect("open") != 0xd0 {}
        for n in acked {
            log.settled[n] = true;
        }

        handovers += 1;
        let (next, present) = match handovers % 3 {
            0 => {
                // Takeover: the old connection is closed, whatever it
                // still had on the way is read (its PUBACKs are too late).
                let next = connect(b.addr, v, &id, false).await;
                while step(&mut sub, v, &mut log, true).await.is_some() {}
                next
            }
            kind => {
                // Offline: DISCONNECT or a dropped socket; messages queue
                // while the publisher goes on.
                if kind == 1 {
                    sub.send(&DISCONNECT).await;
                    while step(&mut sub, v, &mut log, false).await.is_some() {}
                }
                drop(sub);
                let target = (published.load(Ordering::SeqCst) + 2 * BATCH).min(LOAD);
                wait_until(|| published.load(Ordering::SeqCst) >= target).await;
                connect(b.addr, v, &id, false).await
            }
        };
        assert!(present, "hand-over {handovers} lost the session");
        sub = next;
        log.new_connection();
    }
    tokio::time::timeout(WAIT, publisher)
        .await
        .expect("publisher done")
        .expect("publisher ok");
    assert!(handovers >= 12, "only {handovers} hand-overs");
    println!(
        "{v:?}: {LOAD} messages, {handovers} hand-overs, {} redelivered",
        log.redeliveries
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_session_survives_handovers_under_load() {
    handover_under_load(V::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_survives_handovers_under_load() {
    handover_under_load(V::V5).await;
}

/// Item 3: a QoS 2 PUBLISH answered with PUBREC before a takeover, and one
/// before an offline hand-over, are each delivered once: the resent
/// PUBLISH (DUP) is recognised, and PUBREL on the new connection completes.
async fn qos2_state_survives_handovers(v: V) {
    let b = start_broker("").await;
    let (mut sub, _) = raw_connect(b.addr, "q2-sub", 0x02).await;
    subscribe(&mut sub, V::V311, "q2/t").await;
    let id = format!("q2-{v:?}");

    // Takeover between PUBREC and PUBREL.
    let (mut old, _) = connect(b.addr, v, &id, false).await;
    old.send(&v.publish("q2/t", 2, false, 7, b"first")).await;
    expect_ack(&mut old, 0x50, 7).await;
    let (mut conn, present) = connect(b.addr, v, &id, false).await;
    assert!(present);
    old.expect_closed().await;
    conn.send(&v.publish("q2/t", 2, true, 7, b"first")).await;
    expect_ack(&mut conn, 0x50, 7).await;
    conn.send(&ack(0x62, 7)).await;
    expect_ack(&mut conn, 0x70, 7).await;

    // Offline between PUBREC and PUBREL.
    conn.send(&v.publish("q2/t", 2, false, 9, b"second")).await;
    expect_ack(&mut conn, 0x50, 9).await;
    conn.send(&DISCONNECT).await;
    conn.expect_closed().await;
    let (mut conn, present) = connect(b.addr, v, &id, false).await;
    assert!(present);
    conn.send(&v.publish("q2/t", 2, true, 9, b"second")).await;
    expect_ack(&mut conn, 0x50, 9).await;
    conn.send(&ack(0x62, 9)).await;
    expect_ack(&mut conn, 0x70, 9).await;

    // In order from one publisher: a duplicate would come before the marker.
    conn.send(&v.publish("q2/t", 1, false, 10, b"marker")).await;
    expect_ack(&mut conn, 0x40, 10).await;
    for want in ["first", "second", "marker"] {
        let p = expect_publish(&mut sub, V::V311).await;
        assert_eq!(p.payload, want);
        sub.send(&ack(0x40, p.id)).await;
    }
}

#[tokio::test]
async fn v311_qos2_state_survives_handovers() {
    qos2_state_survives_handovers(V::V311).await;
}

#[tokio::test]
async fn v5_qos2_state_survives_handovers() {
    qos2_state_survives_handovers(V::V5).await;
}

/// Item 4: a takeover while the old connection holds a full window of
/// unacknowledged messages resends them all, in order, with DUP and their
/// packet ids; the queued ones follow as the new connection acknowledges.
async fn takeover_resends_a_full_window(v: V) {
    let b = start_broker(&format!("mqtt:\n  max_inflight_messages: {WINDOW}\n")).await;
    let id = format!("win-{v:?}");
    let (mut old, _) = connect(b.addr, v, &id, false).await;
    subscribe(&mut old, v, "win/t").await;
    let (mut p, _) = raw_connect(b.addr, "win-pub", 0x02).await;
    let total = WINDOW + 8;
    for n in 0..total {
        let n16 = n as u16 + 1;
        p.send(&V::V311.publish("win/t", 1, false, n16, n.to_string().as_bytes()))
            .await;
        expect_ack(&mut p, 0x40, n16).await;
    }
    let mut ids = Vec::new();
    for n in 0..WINDOW {
        let m = expect_publish(&mut old, v).await;
        assert_eq!((m.payload, m.dup), (n.to_string(), false));
        ids.push(m.id);
    }

    let (mut new, present) = connect(b.addr, v, &id, false).await;
    assert!(present);
    old.expect_closed().await;
    for (n, &packet_id) in ids.iter().enumerate() {
        let m = expect_publish(&mut new, v).await;
        assert_eq!((m.payload, m.id, m.dup), (n.to_string(), packet_id, true));
    }
    for &packet_id in &ids {
        new.send(&ack(0x40, packet_id)).await;
    }
    for n in WINDOW..total {
        let m = expect_publish(&mut new, v).await;
        assert_eq!((m.payload, m.dup), (n.to_string(), false));
        new.send(&ack(0x40, m.id)).await;
    }
}

#[tokio::test]
async fn v311_takeover_resends_a_full_window() {
    takeover_resends_a_full_window(V::V311).await;
}

#[tokio::test]
async fn v5_takeover_resends_a_full_window() {
    takeover_resends_a_full_window(V::V5).await;
}

/// Item 5: a clean-start takeover destroys the old session: session
/// present 0, no resend of its unacknowledged message, and its
/// subscription is gone (a marker on a new subscription comes first).
async fn clean_start_takeover_destroys_the_session(v: V) {
    let b = start_broker("").await;
    let id = format!("clean-{v:?}");
    let (mut old, _) = connect(b.addr, v, &id, false).await;
    subscribe(&mut old, v, "gone/t").await;
    let (mut p, _) = raw_connect(b.addr, "clean-pub", 0x02).await;
    p.send(&V::V311.publish("gone/t", 1, false, 1, b"unacked"))
        .await;
    expect_ack(&mut p, 0x40, 1).await;
    assert_eq!(expect_publish(&mut old, v).await.payload, "unacked");

    let (mut new, present) = connect(b.addr, v, &id, true).await;
    assert!(!present, "clean start resumed the session");
    old.expect_closed().await;
    subscribe(&mut new, v, "gone/marker").await;
    p.send(&V::V311.publish("gone/t", 1, false, 2, b"after"))
        .await;
    expect_ack(&mut p, 0x40, 2).await;
    p.send(&V::V311.publish("gone/marker", 1, false, 3, b"marker"))
        .await;
    expect_ack(&mut p, 0x40, 3).await;
    let m = expect_publish(&mut new, v).await;
    assert_eq!((m.topic.as_str(), m.dup), ("gone/marker", false));
}

#[tokio::test]
async fn v311_clean_start_takeover_destroys_the_session() {
    clean_start_takeover_destroys_the_session(V::V311).await;
}

#[tokio::test]
async fn v5_clean_start_takeover_destroys_the_session() {
    clean_start_takeover_destroys_the_session(V::V5).await;
}
