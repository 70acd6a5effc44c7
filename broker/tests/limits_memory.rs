//! `limits.max_memory_bytes` against the real broker: a subscriber that
//! stops reading, an offline persistent session and a healthy subscriber
//! under a flood, with a 2 MiB budget. QoS 0 to the stuck subscriber is
//! dropped first, the offline session's new messages are refused, a 5.0
//! publisher whose message no session can take gets 0x97, the healthy
//! subscriber keeps receiving, the accounted bytes never pass the budget,
//! and the process's resident memory stays within the budget plus the
//! stated margin.
//!
//! Clients are raw sockets (bytes written by hand) and rumqttc.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    connect_bytes, connect_v5_bytes, frame, publish_bytes, start_broker, subscribe_bytes,
};
use common::{Raw, TestBroker, WAIT};
use mqttd::metrics::DropReason;
use mqttd::types::QoS as Q;
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUDGET: u64 = 2 * 1024 * 1024;
/// What the process may take besides the budget during the flood: the
/// resident memory the test measures also holds its own clients and
/// their buffers (see the README's Limits section for the broker's own).
const RSS_MARGIN: u64 = 8 * 1024 * 1024;
const PAYLOAD: usize = 2048;
/// Bound on the messages any flood loop publishes.
const MAX_FLOOD: usize = 20_000;

/// The tests measure this process's memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config() -> String {
    // A generous write timeout: the stuck subscriber stays connected, so
    // its session goes on holding what it was given.
    format!("mqtt:\n  write_timeout_secs: 300\nlimits:\n  max_memory_bytes: {BUDGET}\n")
}

/// Resident memory of this process (broker and test clients), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Samples the accounted bytes and the resident memory every few
/// milliseconds until stopped; keeps the largest of each.
struct Sampler {
    stop: Arc<AtomicBool>,
    max_accounted: Arc<AtomicU64>,
    max_rss: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(b: &TestBroker) -> Sampler {
        let ctx = b.server.broker().ctx.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let max_accounted = Arc::new(AtomicU64::new(0));
        let max_rss = Arc::new(AtomicU64::new(0));
        let (s, a, r) = (stop.clone(), max_accounted.clone(), max_rss.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                a.fetch_max(ctx.budget.accounted(), Ordering::Relaxed);
                r.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Sampler {
            stop,
            max_accounted,
            max_rss,
            task,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.max_accounted.load(Ordering::Relaxed),
            self.max_rss.load(Ordering::Relaxed),
        )
    }
}

/// A subscriber that reads its CONNACK and SUBACK, then never reads
/// again, with a small receive buffer so the broker's side backs up soon.
async fn stuck_subscriber(b: &TestBroker, id: &str, filter: &str) -> Raw {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(b.addr).await.unwrap();
    let mut raw = Raw { stream };
    raw.send(&connect_bytes(id, 0x02, 300)).await;
    assert_eq!(raw.read().await.unwrap().0, 0x20);
    raw.send(&subscribe_bytes(1, filter, 1)).await;
    assert_eq!(raw.read().await.unwrap().0, 0x90);
    raw
}

/// A 3.1.1 persistent session subscribed to `filter` at QoS 1, then
/// gone offline.
async fn offline_session(b: &TestBroker, id: &str, filter: &str) {
    let (mut raw, _) = common::raw_connect(b.addr, id, 0).await;
    raw.send(&subscribe_bytes(1, filter, 1)).await;
    assert_eq!(raw.read().await.unwrap().0, 0x90);
    raw.send(&[0xe0, 0]).await;
    raw.expect_closed().await;
}

/// A raw 3.1.1 publisher whose PUBACKs are counted by a reader task.
struct Publisher {
    write: tokio::net::tcp::OwnedWriteHalf,
    acks: Arc<AtomicU64>,
    next_id: u16,
    _reader: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(b: &TestBroker, id: &str) -> Publisher {
        let (raw, _) = common::raw_connect(b.addr, id, 0x02).await;
        let (mut read, write) = raw.stream.into_split();
        let acks = Arc::new(AtomicU64::new(0));
        let counted = acks.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending = Vec::new();
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
                // PUBACKs are 4 bytes each: 0x40 0x02 id id.
                while pending.len() >= 4 {
                    assert_eq!(pending[0], 0x40, "only PUBACKs expected");
                    counted.fetch_add(1, Ordering::Relaxed);
                    pending.drain(..4);
                }
            }
        });
        Publisher {
            write,
            acks,
            next_id: 0,
            _reader: reader,
        }
    }

    async fn publish(&mut self, topic: &str, qos: u8) {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let bytes = publish_bytes(topic, qos, false, self.next_id, &[b'x'; PAYLOAD]);
        self.write.write_all(&bytes).await.unwrap();
    }
}

/// A healthy rumqttc subscriber on `filter` at QoS 1, counting what it
/// gets in a task.
async fn healthy_subscriber(
    b: &TestBroker,
    id: &str,
    filter: &str,
) -> (Arc<AtomicU64>, common::Client) {
    let mut c = common::connect_id(b.addr, id).await;
    c.subscribe(filter, QoS::AtLeastOnce).await;
    let got = Arc::new(AtomicU64::new(0));
    // Drain in a task: the client keeps reading however busy the test is.
    let counted = got.clone();
    let mut rx = std::mem::replace(&mut c.rx, tokio::sync::mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if matches!(p, rumqttc::Packet::Publish(_)) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (got, c)
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn dropped(b: &TestBroker, reason: DropReason) -> u64 {
    b.server
        .broker()
        .ctx
        .metrics
        .messages_dropped
        .by_reason(reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_at_a_stuck_subscriber_stays_inside_the_budget() {
    let _serial = SERIAL.lock().await;
    let b = start_broker(&config()).await;
    let ctx = b.server.broker().ctx.clone();
    assert_eq!(ctx.budget.limit(), BUDGET);
    offline_session(&b, "offline", "flood/#").await;
    let _stuck = stuck_subscriber(&b, "stuck", "flood/#").await;
    let (healthy, _healthy_client) = healthy_subscriber(&b, "healthy", "flood/#").await;
    let mut p = Publisher::connect(&b, "pub").await;
    let base_rss = rss();
    let sampler = Sampler::start(&b);

    // 1. QoS 0: the stuck subscriber's copies are dropped first.
    let mut sent = 0;
    while dropped(&b, DropReason::MemoryBudgetQos0) == 0 {
        assert!(sent < MAX_FLOOD, "no QoS 0 drop for the budget");
        p.publish("flood/q0", 0).await;
        sent += 1;
    }
    for _ in 0..200 {
        p.publish("flood/q0", 0).await;
    }
    let before = healthy.load(Ordering::Relaxed);
    wait_for("healthy gets QoS 0 past the soft mark", || {
        healthy.load(Ordering::Relaxed) >= before + 100
    })
    .await;
    assert_eq!(
        dropped(&b, DropReason::MemoryBudgetOffline),
        0,
        "QoS 0 goes before any offline refusal"
    );

    // 2. QoS 1: the offline session's new messages are refused (3.1.1
    // publisher: every PUBLISH still gets its PUBACK).
    let mut sent_q1 = 0u64;
    while dropped(&b, DropReason::MemoryBudgetOffline) == 0 {
        assert!(sent_q1 < MAX_FLOOD as u64, "no offline refusal");
        p.publish("flood/q1", 1).await;
        sent_q1 += 1;
    }
    wait_for("every QoS 1 PUBLISH acknowledged", || {
        p.acks.load(Ordering::Relaxed) == sent_q1
    })
    .await;

    // 3. The healthy subscriber still receives, at QoS 1 too.
    let before = healthy.load(Ordering::Relaxed);
    for _ in 0..50 {
        p.publish("flood/after", 1).await;
    }
    wait_for("healthy gets QoS 1 at the budget", || {
        healthy.load(Ordering::Relaxed) >= before + 50
    })
    .await;

    let (max_accounted, max_rss) = sampler.finish().await;
    assert!(
        max_accounted <= BUDGET,
        "accounted {max_accounted} > {BUDGET}"
    );
    assert!(ctx.budget.peak() <= BUDGET, "peak {}", ctx.budget.peak());
    assert!(
        max_accounted > BUDGET / 2,
        "the flood did fill the budget: {max_accounted}"
    );
    let grew = max_rss.saturating_sub(base_rss);
    eprintln!(
        "budget {BUDGET}, accounted peak {}, RSS {base_rss} -> {max_rss} (+{grew})",
        ctx.budget.peak()
    );
    assert!(grew <= BUDGET + RSS_MARGIN, "RSS grew by {grew}");

    let text = ctx.metrics.render();
    for line in [
        "mqttd_memory_budget_bytes 2097152",
        "mqttd_messages_dropped_total{qos=\"0\",reason=\"memory_budget_qos0\"}",
        "mqttd_messages_dropped_total{qos=\"1\",reason=\"memory_budget_offline\"}",
        "mqttd_memory_accounted_bytes ",
    ] {
        assert!(text.contains(line), "{line} missing");
    }

    // Every charge is given back when the sessions holding it go (the
    // offline one holds the places in line of its queue on disk: a clean
    // start under its client id ends it).
    drop(_stuck);
    _healthy_client.kill();
    drop(p);
    let (_offline, _) = common::raw_connect(b.addr, "offline", 0x02).await;
    wait_for("accounted bytes back to 0", || ctx.budget.accounted() == 0).await;
}

/// Reads packets until a PUBACK; returns its body.
async fn puback(raw: &mut Raw) -> Vec<u8> {
    loop {
        let (h, body) = raw.read().await.expect("broker open");
        if h == 0x40 {
            return body;
        }
    }
}

/// A 5.0 QoS 1 PUBLISH without properties.
fn publish_v5(topic: &str, id: u16) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&[b'y'; PAYLOAD]);
    frame(0x32, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_when_the_budget_lets_no_session_take_a_message() {
    let _serial = SERIAL.lock().await;
    // Queues in memory: the offline session's queue is charged and stays
    // (on disk it would only pass through), so the budget stays at its
    // mark once both sessions are full, and what is refused is certain.
    let b = start_broker(&format!("{}storage:\n  durability: memory\n", config())).await;
    let _stuck = stuck_subscriber(&b, "stuck", "only/#").await;
    offline_session(&b, "offline", "only/#").await;
    let mut p = Publisher::connect(&b, "filler").await;
    let mut sent = 0;
    while dropped(&b, DropReason::MemoryBudgetSlow) == 0 {
        assert!(
            sent < MAX_FLOOD,
            "the stuck subscriber never counted as slow"
        );
        p.publish("only/fill", 1).await;
        sent += 1;
    }

    // Everything the filler sent is routed before the counts are read.
    let sent = sent as u64;
    wait_for("the filler acknowledged", || {
        p.acks.load(Ordering::Relaxed) == sent
    })
    .await;

    // 5.0: quota exceeded, once every matching session is refused.
    let mut v5 = Raw::connect(b.addr).await;
    v5.send(&connect_v5_bytes("pub5", 60)).await;
    assert_eq!(v5.read().await.unwrap().0, 0x20);
    let mut code = 0;
    for id in 1..=500u16 {
        v5.send(&publish_v5("only/v5", id)).await;
        let body = puback(&mut v5).await;
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), id);
        code = body.get(2).copied().unwrap_or(0);
        if code != 0 {
            break;
        }
    }
    assert_eq!(code, 0x97, "PUBACK quota exceeded");

    // QoS 2: PUBREC 0x97 ends the exchange, so the same packet id is a
    // new message at once (not a duplicate answered 0x00).
    for _ in 0..2 {
        let mut q2 = publish_v5("only/v5", 7);
        q2[0] = 0x34;
        v5.send(&q2).await;
        let (h, body) = v5.read().await.expect("PUBREC");
        assert_eq!(h, 0x50, "PUBREC");
        assert_eq!(body[..3], [0, 7, 0x97], "PUBREC quota exceeded");
    }

    // 3.1.1: a plain PUBACK, the refusals counted (both copies of one
    // message, once the budget is at its mark again).
    let refusals =
        || dropped(&b, DropReason::MemoryBudgetSlow) + dropped(&b, DropReason::MemoryBudgetOffline);
    let (mut v3, _) = common::raw_connect(b.addr, "pub3", 0x02).await;
    let mut both_refused = false;
    for id in 1..=500u16 {
        let before = refusals();
        v3.send(&publish_bytes("only/v3", 1, false, id, &[b'z'; PAYLOAD]))
            .await;
        let [hi, lo] = id.to_be_bytes();
        assert_eq!(puback(&mut v3).await, vec![hi, lo], "a 3.1.1 PUBACK");
        if refusals() == before + 2 {
            both_refused = true;
            break;
        }
    }
    assert!(both_refused, "no 3.1.1 message refused by every session");
    let offline_refused = b
        .server
        .broker()
        .ctx
        .metrics
        .messages_dropped
        .reason(DropReason::MemoryBudgetOffline, Q::AtLeastOnce)
        .get();
    assert!(offline_refused > 0);
}

/// What a queued copy really costs, against what the budget charges for
/// it ([`mqttd::budget::MESSAGE_OVERHEAD_BYTES`] plus payload and topic):
/// 100,000 small QoS 1 messages queued in memory for an offline session,
/// without a budget (copies are still counted). Run by hand:
/// `cargo test -p mqttd --test limits_memory -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md), not a behaviour"]
async fn measure_the_cost_of_a_queued_copy() {
    let _serial = SERIAL.lock().await;
    let n: u64 = 100_000;
    let b = start_broker(&format!(
        "mqtt:\n  max_queued_messages: {n}\n  max_queued_bytes: 0\n\
         limits:\n  max_memory_bytes: 0\nstorage:\n  durability: memory\n"
    ))
    .await;
    let ctx = b.server.broker().ctx.clone();
    offline_session(&b, "offline", "m/#").await;
    let mut p = Publisher::connect(&b, "pub").await;
    let before = rss();
    for i in 0..n {
        p.next_id = p.next_id.wrapping_add(1).max(1);
        let bytes = publish_bytes(
            &format!("m/{}", i % 10),
            1,
            false,
            p.next_id,
            b"0123456789abcdef",
        );
        p.write.write_all(&bytes).await.unwrap();
    }
    wait_for("every PUBLISH acknowledged", || {
        p.acks.load(Ordering::Relaxed) == n
    })
    .await;
    wait_for("every copy queued", || ctx.metrics.backlog.get() == 0).await;
    let grew = rss().saturating_sub(before);
    let accounted = ctx.budget.accounted();
    eprintln!(
        "{n} queued copies: RSS +{grew} ({} per copy), accounted {accounted} ({} per copy)",
        grew / n,
        accounted / n
    );
    assert!(
        grew <= accounted,
        "the charge per copy is below its real cost"
    );
}
