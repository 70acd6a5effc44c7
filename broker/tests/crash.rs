//! The real `mqttd` binary killed (SIGKILL) and restarted on the same
//! data directory.

mod common;

use std::time::Duration;

use common::process::{Mqttd, Spec};
use common::wire::{Conn, DISCONNECT};

/// A session connected when the broker was killed expires its interval
/// after the first restart, even if the broker is killed again before
/// that: the restart writes down when the count began.
#[test]
fn expiry_of_a_session_connected_at_a_kill_counts_from_the_first_restart() {
    use common::wire::{self, SUBACK};
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let spec = Spec {
        dir: tmp.path(),
        data_dir: &data,
        durability: Some("batched"),
        extra_yaml: "",
        log_level: common::process::QUIET,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let broker = Mqttd::start(&spec).running();
    let held = rt.block_on(async {
        let connect = wire::connect_v5("held", true, Some(1));
        let (mut c, _) = Conn::open(broker.mqtt, &connect).await.expect("connect");
        c.send(&wire::subscribe_v5(1, "t/#", 1))
            .await
            .expect("send");
        c.expect(SUBACK).await.expect("SUBACK");
        c
    });
    broker.kill();
    drop(held);
    // Restarted (the session restored by the time it is ready), and
    // killed again long before the expiry.
    let restarted = Mqttd::start(&spec).running();
    let first_restart = std::time::Instant::now();
    restarted.kill();
    // The expiry (1 s) is over, counted from the first restart.
    let over = first_restart + Duration::from_millis(1_500);
    std::thread::sleep(over.saturating_duration_since(std::time::Instant::now()));
    let broker = Mqttd::start(&spec).running();
    let present = rt.block_on(async {
        let probe = wire::connect_v5("held", false, None);
        let (mut c, present) = Conn::open(broker.mqtt, &probe).await.expect("probe");
        let _ = c.send(&DISCONNECT).await;
        present
    });
    assert!(!present, "the session outlived its expiry");
    let (status, log) = broker.terminate();
    assert!(status.success(), "{status}:\n{log}");
}
