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
