//! Listing sessions from a table of 100,000: the cost of one control-API
//! page (first page, a page from a cursor in the middle, filtered pages).
//!
//! `cargo bench -p mqttd --bench session_table`

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use mqttd::session::table::{PageQuery, SessionEntry, SessionTable};
use mqttd::types::ClientId;

const SESSIONS: usize = 100_000;

fn table() -> SessionTable {
    let t = SessionTable::new();
    let account = mqttd::budget::Account::new(Default::default());
    let (tx, _, _inbox) = mqttd::session::inbox::inbox(Default::default(), account);
    for i in 0..SESSIONS {
        t.insert(Arc::new(SessionEntry::new(
            i as u64,
            ClientId::new(format!("device-{i:06}")),
            tx.clone(),
            SystemTime::now(),
        )));
    }
    t
}

fn bench(c: &mut Criterion) {
    let t = table();
    let mut g = c.benchmark_group("list 100k sessions");
    g.bench_function("first page of 100", |b| {
        b.iter(|| {
            t.page(&PageQuery {
                limit: 100,
                ..Default::default()
            })
        })
    });
    g.bench_function("page of 100 after a cursor in the middle", |b| {
        b.iter(|| {
            t.page(&PageQuery {
                after: Some("device-050000"),
                limit: 100,
                ..Default::default()
            })
        })
    });
    g.bench_function("prefix filter (1,000 match), page of 100", |b| {
        b.iter(|| {
            t.page(&PageQuery {
                prefix: Some("device-042"),
                limit: 100,
                ..Default::default()
            })
        })
    });
    g.bench_function(
        "connected filter (none match): full scan for the total",
        |b| {
            b.iter(|| {
                t.page(&PageQuery {
                    connected: Some(true),
                    limit: 100,
                    ..Default::default()
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
