//! What an operator watches: `/metrics` over HTTP (per-listener figures,
//! the standard `process_*` figures) and `$SYS` topics.

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on the broker's HTTP port; the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of one series (`name{labels}`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Connections and bytes carry the listener's name (a second listener
/// keeps its own figures); the process figures Prometheus users expect
/// are there, read from /proc.
#[tokio::test]
async fn metrics_by_listener_and_process_figures() {
    let b = start_broker("  - name: second\n    bind: 127.0.0.1:0\n").await;
    let http = b.server.http_addr().expect("http on");
    let mut c = connect_id(b.addr, "watched").await;
    c.subscribe("a/b", rumqttc::QoS::AtMostOnce).await;

    let m = http_get(http, "/metrics").await;
    assert_eq!(
        value(&m, "mqttd_listener_connections{listener=\"mqtt\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "mqttd_listener_connections{listener=\"second\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "mqttd_listener_connections_total{listener=\"mqtt\"}"),
        Some(1.0)
    );
    let received = value(&m, "mqttd_listener_bytes_received_total{listener=\"mqtt\"}").unwrap();
    let sent = value(&m, "mqttd_listener_bytes_sent_total{listener=\"mqtt\"}").unwrap();
    // CONNECT + SUBSCRIBE in, CONNACK (4) + SUBACK (5) out.
    assert!(
        received > 20.0 && sent >= 9.0,
        "received {received}, sent {sent}"
    );
    assert_eq!(
        value(&m, "mqttd_listener_bytes_sent_total{listener=\"second\"}"),
        Some(0.0)
    );
    // No TLS listener: no TLS family.
    assert!(!m.contains("mqttd_tls_handshake_failures_total"), "{m}");

    assert!(
        value(&m, "process_resident_memory_bytes").unwrap() > 1e6,
        "{m}"
    );
    assert!(value(&m, "process_cpu_seconds_total").unwrap() >= 0.0);
    let open = value(&m, "process_open_fds").unwrap();
    assert!(open >= 5.0 && open <= value(&m, "process_max_fds").unwrap());
    assert!(m.contains("# TYPE process_cpu_seconds_total counter"));

    c.disconnect().await;
    wait_until(|| {
        let m = b.server.broker().ctx.metrics.render();
        value(&m, "mqttd_listener_connections{listener=\"mqtt\"}") == Some(0.0)
    })
    .await;
}

/// A password file with `users`, cheap hashes (debug-build tests).
fn password_file(dir: &std::path::Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut f = mqttd_passwd::PasswordFile::new();
    let hasher = mqttd_passwd::Hasher::argon2id(64, 1, 1).expect("hasher");
    for (u, p) in users {
        f.add(u, p.as_bytes(), &hasher).expect("add");
    }
    let path = dir.join("passwd");
    f.save(&path).expect("save");
    path
}

/// `$SYS` topics as Mosquitto publishes them, to a real client (rumqttc):
/// retained (a late subscriber gets them at once), refreshed every
/// `mqtt.sys_interval_secs`, only to a subscription naming `$SYS` (`#`
/// does not match it), and only where the ACL grants read on `$SYS/#`.
#[tokio::test]
async fn sys_topics_for_clients_the_acl_allows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = password_file(dir.path(), &[("watcher", "w"), ("device", "d")]);
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite app/#\nuser watcher\ntopic read $SYS/#\n",
    )
    .expect("acl");
    let b = start_broker(&format!(
        "mqtt:\n  sys_interval_secs: 1\nauth:\n  allow_anonymous: false\n  password_file: {}\n  acl_file: {}\n",
        pw.display(),
        acl.display()
    ))
    .await;
    let login = |id: &str, user: &str, pass: &str| {
        let mut o = options(b.addr, id);
        o.set_credentials(user, pass);
        o
    };
    // A device subscribed to everything: `#` never matches `$SYS`, and
    // it may not subscribe to `$SYS` itself.
    let mut device = connect(login("device-1", "device", "d")).await;
    assert_eq!(
        device.subscribe("#", rumqttc::QoS::AtMostOnce).await,
        [rumqttc::SubscribeReasonCode::Failure],
        "the ACL grants app/# only"
    );
    device.subscribe("app/#", rumqttc::QoS::AtMostOnce).await;
    let refused = device.subscribe("$SYS/#", rumqttc::QoS::AtMostOnce).await;
    assert_eq!(refused, [rumqttc::SubscribeReasonCode::Failure]);

    let mut watcher = connect(login("dash", "watcher", "w")).await;
    let granted = watcher
        .subscribe("$SYS/broker/#", rumqttc::QoS::AtMostOnce)
        .await;
    assert_eq!(
        granted,
        [rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtMostOnce
        )]
    );
    // Within a few rounds: the version, and both clients connected.
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen
        .get("$SYS/broker/clients/connected")
        .map(String::as_str)
        != Some("2")
        || !seen.contains_key("$SYS/broker/version")
        || !seen.contains_key("$SYS/broker/uptime")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$SYS values: {seen:?}"
        );
        if let Some(p) = watcher.try_publish(std::time::Duration::from_secs(2)).await {
            seen.insert(
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            );
        }
    }
    assert_eq!(
        seen["$SYS/broker/version"],
        format!("mqttd {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"), "{seen:?}");

    // Retained: a later subscriber gets the current values at once, with
    // the retain flag.
    let mut late = connect(login("dash-2", "watcher", "w")).await;
    late.subscribe("$SYS/broker/version", rumqttc::QoS::AtMostOnce)
        .await;
    let p = late.publish().await;
    assert!(p.retain, "retained");
    assert_eq!(p.topic, "$SYS/broker/version");

    device
        .no_publish(std::time::Duration::from_millis(1500))
        .await;
}
