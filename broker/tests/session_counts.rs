//! The session table's figures (sessions, connected sessions) as the
//! control API reports them, against what independent clients did.

mod common;

use common::*;
use serde_json::Value;

/// `GET /v1/<path>` on the broker's control socket.
async fn api(b: &TestBroker, path: &str) -> Value {
    let http = reqwest::Client::builder()
        .unix_socket(b.socket())
        .build()
        .expect("client");
    http.get(format!("http://mqttd/v1/{path}"))
        .send()
        .await
        .expect("control API answers")
        .error_for_status()
        .expect("2xx")
        .json()
        .await
        .expect("JSON")
}

/// (status sessions, list total, connected total, disconnected total).
async fn figures(b: &TestBroker) -> (u64, u64, u64, u64) {
    let status = api(b, "status").await;
    let total = |v: Value| v["total"].as_u64().expect("total");
    (
        status["sessions"].as_u64().expect("sessions"),
        total(api(b, "sessions?limit=1").await),
        total(api(b, "sessions?connected=true&limit=1").await),
        total(api(b, "sessions?connected=false&limit=1").await),
    )
}

async fn wait_figures(b: &TestBroker, want: (u64, u64, u64, u64)) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = figures(b).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "figures {got:?}, expected {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn list_totals_and_status_follow_connects_and_disconnects() {
    let b = start_broker("").await;
    wait_figures(&b, (0, 0, 0, 0)).await;

    // Three persistent and three clean clients.
    let mut persistent = Vec::new();
    let mut clean = Vec::new();
    for i in 0..3 {
        let mut o = options(b.addr, &format!("p-{i}"));
        o.set_clean_session(false);
        persistent.push(connect(o).await);
        clean.push(connect_id(b.addr, &format!("c-{i}")).await);
    }
    wait_figures(&b, (6, 6, 6, 0)).await;

    // Persistent sessions stay, offline; clean ones go.
    persistent.pop().expect("client").disconnect().await;
    clean.pop().expect("client").disconnect().await;
    wait_figures(&b, (5, 5, 4, 1)).await;
    persistent.pop().expect("client").kill();
    clean.pop().expect("client").kill();
    wait_figures(&b, (4, 4, 2, 2)).await;

    // A persistent session resumed: connected again, not a new row.
    let mut o = options(b.addr, "p-2");
    o.set_clean_session(false);
    let back = connect(o).await;
    wait_figures(&b, (4, 4, 3, 1)).await;

    // Destroyed by the operator, connected or not.
    let http = reqwest::Client::builder()
        .unix_socket(b.socket())
        .build()
        .expect("client");
    for id in ["p-2", "p-1"] {
        let r = http
            .delete(format!("http://mqttd/v1/sessions/{id}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 204);
    }
    wait_figures(&b, (2, 2, 2, 0)).await;
    drop(back);
    drop((persistent, clean));
}

/// A clean start for a client id with no session is created on the
/// connection's task (`mqttd_sessions_created_direct_total`); a persistent
/// start, or a clean start that must first destroy a live session, goes
/// through a session-manager worker. Both count as created.
#[tokio::test]
async fn clean_starts_without_a_session_skip_the_worker() {
    let b = start_broker("").await;
    let m = &b.server.broker().ctx.metrics;
    let counts = || (m.sessions_created.get(), m.sessions_created_direct.get());

    let (_a, present) = raw_connect(b.addr, "direct-a", 0x02).await;
    assert!(!present);
    assert_eq!(counts(), (1, 1), "clean start, no session: direct");

    let (_p, present) = raw_connect(b.addr, "persistent", 0x00).await;
    assert!(!present);
    assert_eq!(counts(), (2, 1), "persistent start: through a worker");

    // A clean start for an id with a live session destroys it first.
    let (_p2, present) = raw_connect(b.addr, "persistent", 0x02).await;
    assert!(!present);
    assert_eq!(
        counts(),
        (3, 1),
        "live session to destroy: through a worker"
    );

    let rendered = m.render();
    assert!(
        rendered.contains("mqttd_sessions_created_direct_total 1"),
        "{rendered}"
    );
    assert!(rendered.contains("mqttd_sessions_created_total 3"));
}
