//! The session limits of `limits:` against the real broker: each refusal
//! with its reason code on the wire for MQTT 5.0 and 3.1.1, what stays
//! allowed at a limit (resume, takeover, subscribing again), the expiry
//! cap (CONNACK property, 3.1.1 persistent sessions expiring with their
//! queues, also across restarts), and the metrics that count them.
//!
//! Refusals are read from packets written by hand (so the exact codes are
//! seen); sessions and queues are driven by rumqttc.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use mqttd::metrics::Metrics;

/// CONNECT fields the tests vary.
#[derive(Default, Clone, Copy)]
struct Hello<'a> {
    v5: bool,
    id: &'a str,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    clean: bool,
    username: Option<&'a str>,
    will_topic: Option<&'a str>,
    /// 5.0 Session Expiry Interval.
    expiry: Option<u32>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A CONNECT written by hand, keep alive 60 s.
fn connect_packet(h: Hello<'_>) -> Vec<u8> {
    let mut flags = 0u8;
    if h.clean {
        flags |= 0x02;
    }
    if h.will_topic.is_some() {
        flags |= 0x04;
    }
    if h.username.is_some() {
        flags |= 0x80;
    }
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        if h.v5 { 5 } else { 4 },
        flags,
    ];
    body.extend_from_slice(&60u16.to_be_bytes());
    if h.v5 {
        match h.expiry {
            Some(secs) => {
                body.extend_from_slice(&[5, 0x11]);
                body.extend_from_slice(&secs.to_be_bytes());
            }
            None => body.push(0),
        }
    }
    put_str(&mut body, h.id);
    if let Some(topic) = h.will_topic {
        if h.v5 {
            body.push(0); // no will properties
        }
        put_str(&mut body, topic);
        put_str(&mut body, "gone");
    }
    if let Some(user) = h.username {
        put_str(&mut body, user);
    }
    frame(0x10, &body)
}

/// Sends the CONNECT and reads the CONNACK: the connection, the
/// session-present flag and the return / reason code.
async fn hello(addr: std::net::SocketAddr, h: Hello<'_>) -> (Raw, bool, u8) {
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect_packet(h)).await;
    let (first, body) = raw.read().await.expect("CONNACK");
    assert_eq!(first, 0x20, "CONNACK expected");
    (raw, body[0] & 1 == 1, body[1])
}

/// The CONNACK code for this CONNECT, checking the broker then closes a
/// refused connection.
async fn refused_with(addr: std::net::SocketAddr, h: Hello<'_>) -> u8 {
    let (mut raw, _, code) = hello(addr, h).await;
    if code != 0 {
        raw.expect_closed().await;
    }
    code
}

/// A SUBSCRIBE for several filters at QoS 1; `v5` adds the empty
/// property length.
fn subscribe_packet(v5: bool, id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for f in filters {
        put_str(&mut body, f);
        body.push(1);
    }
    frame(0x82, &body)
}

/// Subscribes and returns the SUBACK's codes.
async fn suback(raw: &mut Raw, v5: bool, id: u16, filters: &[&str]) -> Vec<u8> {
    raw.send(&subscribe_packet(v5, id, filters)).await;
    loop {
        let (first, body) = raw.read().await.expect("SUBACK");
        if first == 0x90 {
            assert_eq!(body[..2], id.to_be_bytes());
            // 5.0: a property length (0 from this broker) precedes the codes.
            return body[if v5 { 3 } else { 2 }..].to_vec();
        }
    }
}

/// A PUBLISH, with the empty 5.0 property length if `v5`.
fn publish_packet(v5: bool, topic: &str, qos: u8, id: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(b"x");
    frame(0x30 | (qos << 1), &body)
}

fn metrics(b: &TestBroker) -> &Metrics {
    &b.server.broker().ctx.metrics
}

/// The rendered sample of `mqttd_session_limit_refusals_total` for `limit`.
fn refusals(b: &TestBroker, limit: &str) -> u64 {
    let text = metrics(b).render();
    let line = format!("mqttd_session_limit_refusals_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample for {limit} in:\n{text}"))
}

#[tokio::test]
async fn max_sessions_refuses_new_sessions_and_lets_existing_ones_back() {
    let b = start_broker("limits:\n  max_sessions: 2\n").await;
    let v3 = Hello {
        id: "keeper",
        ..Hello::default()
    };
    let (keeper, present, code) = hello(b.addr, v3).await;
    assert_eq!((present, code), (false, 0));
    let v5 = Hello {
        v5: true,
        id: "online",
        clean: true,
        ..Hello::default()
    };
    let (_online, _, code) = hello(b.addr, v5).await;
    assert_eq!(code, 0);

    // Two sessions: a third client id is refused, in either version.
    let newcomer = Hello {
        id: "newcomer",
        clean: true,
        ..Hello::default()
    };
    assert_eq!(
        refused_with(b.addr, newcomer).await,
        0x03,
        "3.1.1: server unavailable"
    );
    let newcomer5 = Hello {
        v5: true,
        ..newcomer
    };
    assert_eq!(
        refused_with(b.addr, newcomer5).await,
        0x97,
        "5.0: quota exceeded"
    );

    // The persistent session goes offline and comes back: resumed.
    drop(keeper);
    let table = &b.server.broker().ctx.table;
    wait_until(|| {
        table
            .get("keeper")
            .is_some_and(|e| !e.shared.is_connected())
    })
    .await;
    let (keeper, present, code) = hello(b.addr, v3).await;
    assert_eq!((present, code), (true, 0), "resumed at the limit");
    // Taken over while connected, and replaced by a clean start: both
    // allowed, neither is a new session.
    let (_keeper2, present, code) = hello(b.addr, v3).await;
    assert_eq!((present, code), (true, 0), "taken over at the limit");
    drop(keeper);
    let (_online2, _, code) = hello(b.addr, v5).await;
    assert_eq!(code, 0, "clean start of an existing client id at the limit");

    assert_eq!(table.len(), 2);
    assert_eq!(metrics(&b).session_limits.sessions.get(), 2);
    assert_eq!(refusals(&b, "max_sessions"), 2);
}

/// Many CONNECTs at once for new client ids: exactly `max_sessions` get
/// in, whichever path creates their session (clean start on the
/// connection's task, persistent through a worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sessions_holds_under_concurrent_connects() {
    const MAX: usize = 40;
    const CLIENTS: usize = 120;
    let b = start_broker(&format!("limits:\n  max_sessions: {MAX}\n")).await;
    let addr = b.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        tasks.spawn(async move {
            let id = format!("crowd-{i}");
            let h = Hello {
                v5: i % 3 == 0,
                id: &id,
                clean: i % 2 == 0,
                ..Hello::default()
            };
            let (raw, _, code) = hello(addr, h).await;
            // Held open so that clean sessions stay in the table.
            (raw, code)
        });
    }
    let mut held = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (raw, code) = joined.expect("client task");
        match code {
            0 => accepted += 1,
            0x03 | 0x97 => refused += 1,
            other => panic!("unexpected CONNACK code {other:#x}"),
        }
        held.push(raw);
    }
    assert_eq!((accepted, refused), (MAX, CLIENTS - MAX));
    assert_eq!(b.server.broker().ctx.table.len(), MAX);
    assert_eq!(
        metrics(&b).session_limits.sessions.get(),
        (CLIENTS - MAX) as u64
    );
}

#[tokio::test]
async fn v5_session_expiry_is_capped_and_told_in_connack() {
    let b = start_broker("limits:\n  max_session_expiry_secs: 60\n").await;
    let ask = |id: &'static str, secs: u32| {
        let mut o = common::v5::options(b.addr, id);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(secs));
        o
    };
    let c = common::v5::connect(ask("long", 3600)).await;
    assert_eq!(
        c.connack.properties.map(|p| p.session_expiry_interval),
        Some(Some(60))
    );
    let c2 = common::v5::connect(ask("never", u32::MAX)).await;
    assert_eq!(
        c2.connack.properties.map(|p| p.session_expiry_interval),
        Some(Some(60))
    );
    let c3 = common::v5::connect(ask("short", 30)).await;
    assert_eq!(
        c3.connack
            .properties
            .and_then(|p| p.session_expiry_interval),
        None,
        "granted as asked: no property"
    );
    let table = &b.server.broker().ctx.table;
    let expiry = |id: &str| {
        table.get(id).map(|e| {
            e.shared
                .expiry_interval_secs
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    assert_eq!(
        (expiry("long"), expiry("never"), expiry("short")),
        (Some(60), Some(60), Some(30))
    );
    assert_eq!(metrics(&b).session_limits.expiry_capped.get(), 2);

    // DISCONNECT may set a new expiry: capped too.
    let (mut raw, _, code) = hello(
        b.addr,
        Hello {
            v5: true,
            id: "leaving",
            expiry: Some(30),
            ..Hello::default()
        },
    )
    .await;
    assert_eq!(code, 0);
    let mut disconnect = vec![0xE0, 7, 0x00, 5, 0x11];
    disconnect.extend_from_slice(&100_000u32.to_be_bytes());
    raw.send(&disconnect).await;
    raw.expect_closed().await;
    wait_until(|| expiry("leaving") == Some(60)).await;
    assert_eq!(metrics(&b).session_limits.expiry_capped.get(), 3);
    let text = metrics(&b).render();
    assert!(
        text.contains("\nmqttd_session_expiry_capped_total 3\n"),
        "{text}"
    );
}

/// A 3.1.1 persistent session with messages queued for it.
async fn abandon_with_queue(addr: std::net::SocketAddr) {
    let mut o = options(addr, "abandoned");
    o.set_clean_session(false);
    let mut dev = connect(o).await;
    dev.subscribe("t/#", rumqttc::QoS::AtLeastOnce).await;
    dev.disconnect().await;
    let mut publisher = connect_id(addr, "publisher").await;
    for i in 0..3 {
        publisher
            .client
            .publish("t/x", rumqttc::QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    let mut acked = 0;
    while acked < 3 {
        if let rumqttc::Packet::PubAck(_) = publisher.next().await {
            acked += 1;
        }
    }
    publisher.disconnect().await;
}

/// Reconnects "abandoned" with clean_session=0: a fresh session, nothing
/// queued for it.
async fn comes_back_to_nothing(addr: std::net::SocketAddr) {
    let (mut raw, present, code) = hello(
        addr,
        Hello {
            id: "abandoned",
            ..Hello::default()
        },
    )
    .await;
    assert_eq!((present, code), (false, 0), "a new session");
    match raw.read_within(Duration::from_millis(300)).await {
        Err(_) => {}
        Ok(p) => panic!("nothing should be sent, got {p:?}"),
    }
}

#[tokio::test]
async fn v311_persistent_session_expires_with_its_queue() {
    let b = start_broker("limits:\n  max_session_expiry_secs: 1\n").await;
    abandon_with_queue(b.addr).await;
    let table = &b.server.broker().ctx.table;
    let entry = table.get("abandoned").expect("kept offline");
    assert_eq!(
        entry
            .shared
            .queued
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    drop(entry);
    wait_until(|| table.get("abandoned").is_none()).await;
    assert_eq!(metrics(&b).sessions_expired.get(), 1);
    comes_back_to_nothing(b.addr).await;
}

fn storage(dir: &Path, expiry: u32) -> String {
    format!(
        "storage:\n  data_dir: {}\nlimits:\n  max_session_expiry_secs: {expiry}\n",
        dir.display()
    )
}

/// One lifetime of a broker in a runtime of its own, as a process.
fn lifetime<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f());
}

/// A 3.1.1 session stored as "never expires" (no cap, as an older mqttd
/// stored them) gets the cap when the store brings it back, counted from
/// when its connection went: it expires, and its stored state goes with it.
#[test]
fn stored_v311_session_gets_the_cap_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let d = data.clone();
    lifetime(|| async move {
        let b = start_broker(&storage(&d, u32::MAX)).await;
        abandon_with_queue(b.addr).await;
        b.server.shutdown().await;
    });
    let d = data.clone();
    lifetime(|| async move {
        let b = start_broker(&storage(&d, 1)).await;
        let table = &b.server.broker().ctx.table;
        wait_until(|| table.get("abandoned").is_none()).await;
        assert_eq!(metrics(&b).sessions_expired.get(), 1);
        b.server.shutdown().await;
    });
    lifetime(|| async move {
        let b = start_broker(&storage(&data, 1)).await;
        assert!(
            b.server.broker().ctx.table.get("abandoned").is_none(),
            "gone from the store"
        );
        comes_back_to_nothing(b.addr).await;
        b.server.shutdown().await;
    });
}

/// A 3.1.1 session stored with the cap expires while the broker is down:
/// the store drops it at start-up, in wall-clock time.
#[test]
fn v311_session_expires_while_the_broker_is_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let d = data.clone();
    lifetime(|| async move {
        let b = start_broker(&storage(&d, 1)).await;
        abandon_with_queue(b.addr).await;
        b.server.shutdown().await;
    });
    // The expiry is the time that passes while the broker is down: it
    // went offline before this instant, so one second after it, it is due.
    std::thread::sleep(Duration::from_millis(1100));
    lifetime(|| async move {
        let b = start_broker(&storage(&data, 1)).await;
        assert!(
            b.server.broker().ctx.table.get("abandoned").is_none(),
            "dropped at load"
        );
        let text = metrics(&b).render();
        assert!(
            text.contains("mqttd_store_dropped_total{reason=\"expired_session\"} 1\n"),
            "{text}"
        );
        comes_back_to_nothing(b.addr).await;
        b.server.shutdown().await;
    });
}

/// A session restored with more subscriptions than a lowered limit keeps
/// them all, and can add no more.
#[test]
fn restored_session_keeps_subscriptions_past_a_lowered_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let with_max = |max: usize| {
        format!(
            "storage:\n  data_dir: {}\nlimits:\n  max_subscriptions_per_client: {max}\n",
            data.display()
        )
    };
    let (first, second) = (with_max(3), with_max(1));
    lifetime(|| async move {
        let b = start_broker(&first).await;
        let (mut raw, _, code) = hello(
            b.addr,
            Hello {
                id: "gateway",
                ..Hello::default()
            },
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(
            suback(&mut raw, false, 1, &["a", "b", "c"]).await,
            [1, 1, 1]
        );
        b.server.shutdown().await;
    });
    lifetime(|| async move {
        let b = start_broker(&second).await;
        let (mut raw, present, code) = hello(
            b.addr,
            Hello {
                id: "gateway",
                ..Hello::default()
            },
        )
        .await;
        assert_eq!((present, code), (true, 0));
        let entry = b
            .server
            .broker()
            .ctx
            .table
            .get("gateway")
            .expect("restored");
        assert_eq!(
            entry
                .shared
                .subscriptions
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        assert_eq!(suback(&mut raw, false, 2, &["c", "d"]).await, [1, 0x80]);
        // The three still deliver.
        let publisher = connect_id(b.addr, "publisher").await;
        for topic in ["a", "b", "c"] {
            publisher
                .client
                .publish(topic, rumqttc::QoS::AtMostOnce, false, "x")
                .await
                .expect("publish");
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            let (first, body) = raw.read().await.expect("PUBLISH");
            if first >> 4 == 3 {
                got.push(parse_publish(first, &body).0);
            }
        }
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
        b.server.shutdown().await;
    });
}

#[tokio::test]
async fn subscriptions_per_client_are_bounded() {
    let b = start_broker("limits:\n  max_subscriptions_per_client: 2\n").await;
    for v5 in [true, false] {
        let id = if v5 { "sub5" } else { "sub3" };
        let (mut raw, _, code) = hello(
            b.addr,
            Hello {
                v5,
                id,
                clean: true,
                ..Hello::default()
            },
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(suback(&mut raw, v5, 1, &["a", "b"]).await, [1, 1]);
        let refused = if v5 { 0x97 } else { 0x80 };
        // Again for a filter it holds: replaced, not counted; new ones refused.
        assert_eq!(
            suback(&mut raw, v5, 2, &["a", "c", "d"]).await,
            [1, refused, refused]
        );
        // Room again after an UNSUBSCRIBE.
        let mut body = 3u16.to_be_bytes().to_vec();
        if v5 {
            body.push(0);
        }
        put_str(&mut body, "b");
        raw.send(&frame(0xA2, &body)).await;
        assert_eq!(suback(&mut raw, v5, 4, &["c"]).await, [1]);
    }
    assert_eq!(metrics(&b).session_limits.subscriptions.get(), 4);
    assert_eq!(refusals(&b, "max_subscriptions_per_client"), 4);
}

#[tokio::test]
async fn client_id_username_and_will_topic_lengths() {
    let b = start_broker(
        "limits:\n  max_client_id_len: 30\n  max_username_len: 8\n  max_topic_len: 16\n  max_topic_levels: 3\n",
    )
    .await;
    let long_id = "i".repeat(31);
    for v5 in [false, true] {
        let base = Hello {
            v5,
            id: "ok-id",
            clean: true,
            ..Hello::default()
        };
        let at_limits = Hello {
            id: &long_id[..30],
            username: Some("eightchr"),
            will_topic: Some("a/b/exactly16byt"),
            ..base
        };
        assert_eq!(refused_with(b.addr, at_limits).await, 0, "at the limits");
        let code = |v3: u8, v5c: u8| if v5 { v5c } else { v3 };
        let id = Hello {
            id: &long_id,
            ..base
        };
        assert_eq!(
            refused_with(b.addr, id).await,
            code(0x02, 0x85),
            "client id"
        );
        let user = Hello {
            username: Some("ninechars"),
            ..base
        };
        assert_eq!(
            refused_with(b.addr, user).await,
            code(0x04, 0x86),
            "username"
        );
        let will = Hello {
            will_topic: Some("will/topic/17byte"),
            ..base
        };
        assert_eq!(
            refused_with(b.addr, will).await,
            code(0x05, 0x90),
            "will topic"
        );
        let deep = Hello {
            will_topic: Some("a/b/c/d"),
            ..base
        };
        assert_eq!(
            refused_with(b.addr, deep).await,
            code(0x05, 0x90),
            "will levels"
        );
    }
    assert_eq!(refusals(&b, "max_client_id_len"), 2);
    assert_eq!(refusals(&b, "max_username_len"), 2);
    assert_eq!(refusals(&b, "max_topic_len"), 2);
    assert_eq!(refusals(&b, "max_topic_levels"), 2);
    // Refused before authentication: no failure counted there.
    assert_eq!(metrics(&b).auth_failures.get(), 0);
}

#[tokio::test]
async fn topic_lengths_on_publish_and_subscribe() {
    let b = start_broker("limits:\n  max_topic_len: 16\n  max_topic_levels: 3\n").await;
    let long = "t/0123456789abcde"; // 17 bytes
    let deep = "a/b/c/d";
    let open = |v5: bool, id: &'static str| {
        hello(
            b.addr,
            Hello {
                v5,
                id,
                clean: true,
                ..Hello::default()
            },
        )
    };

    // 5.0: QoS 1 and 2 are refused in their acknowledgement; the
    // connection goes on.
    let (mut c, _, _) = open(true, "pub5").await;
    c.send(&publish_packet(true, long, 1, 1)).await;
    let (first, body) = c.read().await.expect("PUBACK");
    assert_eq!((first, body[..3].to_vec()), (0x40, vec![0, 1, 0x90]));
    c.send(&publish_packet(true, deep, 2, 2)).await;
    let (first, body) = c.read().await.expect("PUBREC");
    assert_eq!((first, body[..3].to_vec()), (0x50, vec![0, 2, 0x90]));
    // At the limit: accepted (no subscriber: 0x10).
    c.send(&publish_packet(true, "a/b/exactly16byt", 1, 3))
        .await;
    let (first, body) = c.read().await.expect("PUBACK");
    assert_eq!((first, body[..3].to_vec()), (0x40, vec![0, 3, 0x10]));
    assert_eq!(
        suback(&mut c, true, 4, &[long, deep, "a/+/#"]).await,
        [0x8F, 0x8F, 1]
    );
    // QoS 0 has no acknowledgement: DISCONNECT 0x90.
    c.send(&publish_packet(true, long, 0, 0)).await;
    let (first, body) = c.read().await.expect("DISCONNECT");
    assert_eq!((first, body.first().copied()), (0xE0, Some(0x90)));
    c.expect_closed().await;

    // 3.1.1: SUBACK 0x80; a PUBLISH cannot be refused, so it is closed.
    let (mut c, _, _) = open(false, "pub3").await;
    assert_eq!(suback(&mut c, false, 1, &[long, "ok/#"]).await, [0x80, 1]);
    c.send(&publish_packet(false, deep, 1, 2)).await;
    c.expect_closed().await;

    assert_eq!(refusals(&b, "max_topic_len"), 4);
    assert_eq!(refusals(&b, "max_topic_levels"), 3);
    assert_eq!(
        b.server.broker().ctx.metrics.malformed_packets.get(),
        0,
        "not malformed"
    );
}
