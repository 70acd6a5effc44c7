//! Resizing the session-manager pool during a connect/takeover storm
//! loses no session, duplicates none, and fails no CONNECT.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::Semaphore;

const CLIENTS: usize = 400;
const SHARED_IDS: usize = 12;
const CONCURRENCY: usize = 64;

/// Connects with `id`, checks CONNACK accepted, then leaves with
/// DISCONNECT or by dropping the socket.
async fn one_client(addr: std::net::SocketAddr, i: usize) -> Result<(), String> {
    let id = format!("storm-{}", i % SHARED_IDS);
    let clean = i.is_multiple_of(3);
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect_bytes(&id, if clean { 2 } else { 0 }, 60))
        .await;
    match raw.read().await {
        Some((0x20, body)) if body.len() == 2 && body[1] == 0 => {}
        other => return Err(format!("client {i} ({id}): unexpected answer {other:?}")),
    }
    if i.is_multiple_of(2) {
        raw.send(&[0xe0, 0]).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_during_storm_keeps_one_session_per_id() {
    let b = start_broker("session_manager:\n  pool_size: 4\n").await;
    let broker = b.server.broker().clone();
    let addr = b.addr;
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let done = Arc::new(AtomicUsize::new(0));
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (gate, done) = (gate.clone(), done.clone());
        storm.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let r = one_client(addr, i).await;
            done.fetch_add(1, Ordering::SeqCst);
            r
        });
    }
    // A resize after every 50 finished clients: all happen mid-storm.
    let resizer = tokio::spawn({
        let (broker, done) = (broker.clone(), done.clone());
        async move {
            for (k, size) in [1, 7, 2, 16, 3, 9, 4].into_iter().enumerate() {
                while done.load(Ordering::SeqCst) < (k + 1) * 50 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                broker.manager.resize(size).await.expect("resize");
            }
        }
    });
    let mut failures = Vec::new();
    while let Some(r) = storm.join_next().await {
        if let Err(e) = r.expect("client task") {
            failures.push(e);
        }
    }
    resizer.await.expect("resizer");
    assert!(failures.is_empty(), "failed CONNECTs: {failures:?}");
    assert_eq!(broker.manager.snapshot().size, 4);

    // Every id connects once more, persistently, and stays: exactly one
    // session per id, and no orphan session task beside the table.
    let mut keep = Vec::new();
    for n in 0..SHARED_IDS {
        let (raw, _) = raw_connect(addr, &format!("storm-{n}"), 0).await;
        keep.push(raw);
    }
    let ctx = &broker.ctx;
    for _ in 0..100 {
        if ctx.metrics.sessions.get() == SHARED_IDS as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctx.table.len(), SHARED_IDS);
    for n in 0..SHARED_IDS {
        let e = ctx
            .table
            .get(&format!("storm-{n}"))
            .expect("session present");
        assert!(e.shared.is_connected());
    }
    assert_eq!(
        ctx.metrics.sessions.get(),
        SHARED_IDS as i64,
        "live session tasks equal table rows"
    );
}

/// A resize whose caller gives up mid-swap (mqttctl's timeout, Ctrl-C, a
/// closed HTTP connection) still finishes: the pool never stays without
/// workers, every later CONNECT is accepted, and `pool show` reports the
/// size asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_resize_leaves_a_working_pool() {
    const STORM: usize = 200;
    let b = start_broker("session_manager:\n  pool_size: 4\n").await;
    let broker = b.server.broker().clone();
    let addr = b.addr;
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..STORM {
        let gate = gate.clone();
        storm.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            one_client(addr, i).await
        });
    }
    // Resizes dropped at their first await: the swap (if it started) has
    // taken the old workers and is waiting for them to drain.
    for size in [2, 6, 1, 3, 8, 2, 5, 3, 7, 2] {
        let _ = tokio::time::timeout(Duration::ZERO, broker.manager.resize(size)).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut failures = Vec::new();
    while let Some(r) = storm.join_next().await {
        if let Err(e) = r.expect("client task") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "failed CONNECTs: {failures:?}");

    // On a quiet broker the dropped resize is sure to have started its
    // swap; it completes on its own and `pool show` reports it.
    let _ = tokio::time::timeout(Duration::ZERO, broker.manager.resize(3)).await;
    wait_until(|| {
        broker.manager.snapshot().size == 3 && broker.ctx.metrics.worker_infos().len() == 3
    })
    .await;
    for n in 0..SHARED_IDS {
        let (raw, _) = raw_connect(addr, &format!("after-{n}"), 2).await;
        drop(raw);
    }
    broker
        .manager
        .resize(5)
        .await
        .expect("a later resize works");
    assert_eq!(broker.manager.snapshot().size, 5);
    let (raw, _) = raw_connect(addr, "after-last", 2).await;
    drop(raw);
}
