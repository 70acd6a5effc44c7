//! The `mqttd` binary: flags, config checking, signals.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MQTTD: &str = env!("CARGO_BIN_EXE_mqttd");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn version_and_help() {
    let out = Command::new(MQTTD).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(MQTTD).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--check-config"] {
        assert!(help.contains(flag), "{flag} in help");
    }
}

#[test]
fn check_config_accepts_good_and_names_key_in_bad() {
    let mut good = tempfile::NamedTempFile::new().expect("temp");
    writeln!(
        good,
        "listeners:\n  - bind: 127.0.0.1:1883\nlog:\n  format: json"
    )
    .expect("write");
    let out = Command::new(MQTTD)
        .arg("--check-config")
        .arg(good.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");

    let mut bad = tempfile::NamedTempFile::new().expect("temp");
    writeln!(bad, "mqtt:\n  max_inflight_messages: -3").expect("write");
    let out = Command::new(MQTTD)
        .arg("--check-config")
        .arg(bad.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&bad.path().display().to_string()), "{err}");
    assert!(err.contains("mqtt.max_inflight_messages"), "{err}");

    let out = Command::new(MQTTD)
        .args(["--config", "/nonexistent/mqttd.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mqttd.yaml"));
}

/// The real binary on a free port, with its own config, control socket
/// and a private HTTP port; `dir` must outlive it.
async fn spawn_mqttd(dir: &std::path::Path) -> (std::process::Child, std::net::SocketAddr) {
    let port = free_port();
    let config = dir.join("mqttd.yaml");
    std::fs::write(&config, "http:\n  bind: 127.0.0.1:0\n").expect("write config");
    let child = Command::new(MQTTD)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--control-socket")
        .arg(dir.join("mqttd.sock"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mqttd");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mqttd did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits up to `limit` for `child` to exit, and checks it exited 0.
async fn assert_exits_cleanly(mut child: std::process::Child, limit: Duration) {
    let stopped = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(stopped.elapsed() < limit, "mqttd did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (child, addr) = spawn_mqttd(dir.path()).await;
    let _client = common::connect_id(addr, "alive").await;
    sigterm(&child);
    assert_exits_cleanly(child, Duration::from_secs(10)).await;
}

/// SIGTERM publishes the wills of the clients it disconnects to the
/// subscribers still connected before closing them (docs/security.md,
/// "shutdown delivers wills"): the real binary and a real signal, rumqttc
/// clients with wills and a raw-socket subscriber (rumqttc's event loop
/// drops what it read when the close arrives in the same read).
#[tokio::test]
async fn sigterm_delivers_wills_to_connected_subscribers() {
    const WILLS: usize = 5;
    let dir = tempfile::tempdir().expect("temp dir");
    let (child, addr) = spawn_mqttd(dir.path()).await;
    let (mut sub, _) = common::raw_connect(addr, "will-subscriber", 0x02).await;
    sub.send(&common::subscribe_bytes(1, "gone/#", 1)).await;
    let (h, _) = sub.read().await.expect("SUBACK");
    assert_eq!(h, 0x90, "SUBACK");
    let mut clients = Vec::new();
    for i in 0..WILLS {
        let mut opts = common::options(addr, &format!("will-{i}"));
        opts.set_last_will(rumqttc::LastWill::new(
            format!("gone/{i}"),
            "offline",
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
        clients.push(common::connect(opts).await);
    }
    sigterm(&child);
    let mut got = std::collections::BTreeSet::new();
    // Everything the subscriber reads until the broker closes it.
    while let Some((h, body)) = sub.read().await {
        if h >> 4 == 3 {
            got.insert(common::parse_publish(h, &body).0);
        }
    }
    let want: std::collections::BTreeSet<_> = (0..WILLS).map(|i| format!("gone/{i}")).collect();
    assert_eq!(
        got, want,
        "every will reached the subscriber before it was closed"
    );
    assert_exits_cleanly(child, Duration::from_secs(20)).await;
}

/// A SIGTERM as soon as the broker accepts clients stops it cleanly (exit
/// status 0), not by the signal's default action: its handlers are in
/// place before it starts.
#[test]
fn sigterm_as_soon_as_it_is_ready_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let spec = common::process::Spec {
        dir: dir.path(),
        data_dir: &data,
        durability: None,
        extra_yaml: "",
        log_level: common::process::QUIET,
    };
    for _ in 0..10 {
        let broker = common::process::Mqttd::start(&spec).running();
        let (status, log) = broker.terminate();
        assert!(status.success(), "exit status {status}:\n{log}");
    }
}
