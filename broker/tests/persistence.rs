//! A restart keeps persistent sessions, their queues, subscriptions and
//! in-flight messages, and retained messages (the store, `batched` and
//! `sync`); clean sessions and `memory` keep nothing. Driven by rumqttc.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use mqttd::session::{CloseReason, SessionMsg};
use rumqttc::{Packet, QoS};

fn storage(dir: &Path, durability: &str) -> String {
    format!(
        "storage:\n  data_dir: {}\n  durability: {durability}\n",
        dir.display()
    )
}

async fn persistent(addr: std::net::SocketAddr, id: &str) -> (Client, bool) {
    let mut o = options(addr, id);
    o.set_clean_session(false);
    let (client, eventloop) = rumqttc::AsyncClient::new(o, 100);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut el = eventloop;
        while let Ok(ev) = el.poll().await {
            if let rumqttc::Event::Incoming(p) = ev {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("CONNACK in time")
        .expect("event loop alive");
    let Packet::ConnAck(ack) = first else {
        panic!("got {first:?}")
    };
    (Client { client, rx, task }, ack.session_present)
}

async fn publish_acked(c: &mut Client, topic: &str, qos: QoS, retain: bool, payload: &str) {
    c.client
        .publish(topic, qos, retain, payload.as_bytes().to_vec())
        .await
        .expect("publish");
    loop {
        match c.next().await {
            Packet::PubAck(_) if qos == QoS::AtLeastOnce => return,
            Packet::PubComp(_) if qos == QoS::ExactlyOnce => return,
            _ => {}
        }
    }
}

/// Runs one lifetime of a broker in a runtime of its own: when it ends,
/// every task of that broker (offline sessions' holders included) is
/// gone, and with them the store, as when a process exits.
fn lifetime<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f());
}

fn restart_keeps_sessions_queues_and_retained(durability: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let d = data.clone();
    lifetime(|| async move { first_life(&d, durability).await });
    lifetime(|| async move { second_life(&data, durability).await });
}

async fn first_life(data: &Path, durability: &str) {
    let b = start_broker(&storage(data, durability)).await;
    let (mut sub, present) = persistent(b.addr, "keeper").await;
    assert!(!present);
    sub.subscribe("t/#", QoS::ExactlyOnce).await;
    sub.disconnect().await;
    // A clean session is never stored.
    let mut clean = connect_id(b.addr, "passer-by").await;
    clean.subscribe("t/#", QoS::AtLeastOnce).await;

    let mut publisher = connect_id(b.addr, "publisher").await;
    for i in 0..5 {
        publish_acked(
            &mut publisher,
            "t/q1",
            QoS::AtLeastOnce,
            false,
            &format!("one-{i}"),
        )
        .await;
    }
    publish_acked(&mut publisher, "t/q2", QoS::ExactlyOnce, false, "two").await;
    publish_acked(&mut publisher, "r/kept", QoS::AtLeastOnce, true, "retained").await;
    publish_acked(&mut publisher, "r/cleared", QoS::AtLeastOnce, true, "gone").await;
    publish_acked(&mut publisher, "r/cleared", QoS::AtLeastOnce, true, "").await;
    publisher.disconnect().await;
    clean.disconnect().await;
    b.server.shutdown().await;
}

async fn second_life(data: &Path, durability: &str) {
    let b = start_broker(&storage(data, durability)).await;
    let table = &b.server.broker().ctx.table;
    assert!(table.get("keeper").is_some(), "persistent session restored");
    assert!(table.get("passer-by").is_none(), "clean session not stored");
    let (mut sub, present) = persistent(b.addr, "keeper").await;
    assert!(present, "session present after a restart");
    let mut got = Vec::new();
    for _ in 0..6 {
        let p = sub.publish().await;
        got.push(String::from_utf8_lossy(&p.payload).to_string());
    }
    let want: Vec<String> = (0..5)
        .map(|i| format!("one-{i}"))
        .chain(["two".to_string()])
        .collect();
    assert_eq!(got, want, "queued messages in order");
    // Its subscription survived: a new message reaches it.
    let mut publisher = connect_id(b.addr, "publisher").await;
    publish_acked(&mut publisher, "t/after", QoS::AtLeastOnce, false, "after").await;
    assert_eq!(&sub.publish().await.payload[..], b"after");
    let mut fresh = connect_id(b.addr, "fresh").await;
    fresh.subscribe("r/#", QoS::AtLeastOnce).await;
    let p = fresh.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("r/kept", &b"retained"[..])
    );
    fresh.no_publish(Duration::from_millis(300)).await;
    sub.disconnect().await;
    b.server.shutdown().await;
}

#[test]
fn batched_restart_keeps_sessions_queues_and_retained() {
    restart_keeps_sessions_queues_and_retained("batched");
}

#[test]
fn sync_restart_keeps_sessions_queues_and_retained() {
    restart_keeps_sessions_queues_and_retained("sync");
}

/// A session that ends (destroyed here) is deleted from the store, and a
/// `memory` broker keeps nothing.
#[test]
fn ended_sessions_and_memory_mode_leave_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    lifetime(|| async {
        let b = start_broker(&storage(&data, "batched")).await;
        let (c, _) = persistent(b.addr, "short-lived").await;
        c.disconnect().await;
        let entry = b.server.broker().ctx.table.get("short-lived").expect("row");
        let _ = entry.tx.send(SessionMsg::Shutdown(CloseReason::Destroyed));
        wait_until(|| b.server.broker().ctx.table.get("short-lived").is_none()).await;
        b.server.shutdown().await;
    });
    lifetime(|| async {
        let b = start_broker(&storage(&data, "batched")).await;
        assert!(b.server.broker().ctx.table.get("short-lived").is_none());
        b.server.shutdown().await;
    });
    lifetime(|| async {
        let b = start_broker(&storage(&data, "memory")).await;
        let (c, _) = persistent(b.addr, "volatile").await;
        c.disconnect().await;
        b.server.shutdown().await;
    });
    lifetime(|| async {
        let b = start_broker(&storage(&data, "memory")).await;
        assert!(b.server.broker().ctx.table.get("volatile").is_none());
        b.server.shutdown().await;
    });
}

/// A broker that stops by force (connections that would not close in
/// time are cut: every session gets `Shutdown(ServerShutdown)`) keeps
/// its persistent sessions in the store, connected or not.
#[test]
fn a_forced_stop_keeps_persistent_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    lifetime(|| async {
        let b = start_broker(&storage(&data, "batched")).await;
        let (offline, _) = persistent(b.addr, "offline").await;
        offline.disconnect().await;
        let (_online, _) = persistent(b.addr, "online").await;
        let ctx = &b.server.broker().ctx;
        for id in ["offline", "online"] {
            let entry = ctx.table.get(id).expect("row");
            let _ = entry
                .tx
                .send(SessionMsg::Shutdown(CloseReason::ServerShutdown));
        }
        wait_until(|| ctx.table.is_empty()).await;
        b.server.shutdown().await;
    });
    lifetime(|| async {
        let b = start_broker(&storage(&data, "batched")).await;
        let table = &b.server.broker().ctx.table;
        assert!(table.get("offline").is_some(), "offline session kept");
        assert!(table.get("online").is_some(), "connected session kept");
        b.server.shutdown().await;
    });
}

/// A long queue comes back whole and in order (its messages are read
/// from disk as they are sent), and messages published after the restart
/// come after it.
#[test]
fn long_queue_comes_back_whole_and_in_order() {
    const QUEUED: usize = 197;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    lifetime(|| async {
        let b = start_broker(&storage(&data, "batched")).await;
        let (mut sub, _) = persistent(b.addr, "backlog").await;
        sub.subscribe("q/#", QoS::AtLeastOnce).await;
        sub.disconnect().await;
        let mut publisher = connect_id(b.addr, "publisher").await;
        for i in 0..QUEUED {
            publish_acked(
                &mut publisher,
                "q/x",
                QoS::AtLeastOnce,
                false,
                &format!("{i}"),
            )
            .await;
        }
        publisher.disconnect().await;
        b.server.shutdown().await;
    });
    lifetime(|| async {
        let b = start_broker(&storage(&data, "batched")).await;
        let mut publisher = connect_id(b.addr, "publisher").await;
        publish_acked(&mut publisher, "q/x", QoS::AtLeastOnce, false, "after").await;
        let (mut sub, present) = persistent(b.addr, "backlog").await;
        assert!(present);
        let mut got = Vec::new();
        for _ in 0..=QUEUED {
            let p = sub.publish().await;
            got.push(String::from_utf8_lossy(&p.payload).to_string());
        }
        let want: Vec<String> = (0..QUEUED)
            .map(|i| i.to_string())
            .chain(["after".to_string()])
            .collect();
        assert_eq!(got, want, "the whole queue, in order, then the new message");
        sub.no_publish(Duration::from_millis(200)).await;
        sub.disconnect().await;
        publisher.disconnect().await;
        b.server.shutdown().await;
    });
}

/// With `sync`, a clean start that ends a stored session is answered only
/// once the session's deletion is on disk: an fsync comes between the
/// CONNECT and its CONNACK, as for any acknowledgement.
#[test]
fn sync_clean_start_is_acknowledged_after_an_fsync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    lifetime(|| async {
        let b = start_broker(&storage(&data, "sync")).await;
        let (mut c, _) = persistent(b.addr, "replaced").await;
        c.subscribe("t/#", QoS::AtLeastOnce).await;
        c.disconnect().await;
        let store = &b.server.broker().ctx.store;
        let fsyncs = &store.metrics().expect("a durable store").fsyncs;
        // Everything written so far is on disk.
        store.wait_durable(store.ticket()).await;
        let before = fsyncs.get();
        let clean = connect_id(b.addr, "replaced").await;
        assert!(
            fsyncs.get() > before,
            "CONNACK before the deletion was fsynced"
        );
        clean.disconnect().await;
        b.server.shutdown().await;
    });
    lifetime(|| async {
        let b = start_broker(&storage(&data, "sync")).await;
        assert!(b.server.broker().ctx.table.get("replaced").is_none());
        b.server.shutdown().await;
    });
}
