//! MQTT over WebSocket (`ws`) and WebSocket over TLS (`wss`), driven by
//! rumqttc's WebSocket transport and by hand-written HTTP upgrades.

mod common;

use std::net::SocketAddr;

use common::tls::*;
use common::*;
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr_of(b: &TestBroker, name: &str) -> SocketAddr {
    b.server
        .listeners()
        .iter()
        .find(|l| &*l.name == name)
        .map(|l| l.addr)
        .expect("listener")
}

const WS_LISTENER: &str = "  - name: ws\n    kind: ws\n    bind: 127.0.0.1:0\n";

#[tokio::test]
async fn websocket_clients_exchange_messages_with_tcp_clients() {
    let b = start_broker(WS_LISTENER).await;
    let ws = addr_of(&b, "ws");
    let mut ws_sub = try_connect(ws_options(ws, "/mqtt", "ws-sub", None))
        .await
        .unwrap();
    ws_sub.subscribe("web/#", QoS::AtLeastOnce).await;
    let mut tcp_sub = connect_id(b.addr, "tcp-sub").await;
    tcp_sub.subscribe("web/#", QoS::AtLeastOnce).await;

    let tcp_pub = connect_id(b.addr, "tcp-pub").await;
    tcp_pub
        .client
        .publish("web/1", QoS::AtLeastOnce, false, "from tcp")
        .await
        .unwrap();
    assert_eq!(&ws_sub.publish().await.payload[..], b"from tcp");
    assert_eq!(&tcp_sub.publish().await.payload[..], b"from tcp");

    ws_sub
        .client
        .publish("web/2", QoS::ExactlyOnce, false, vec![7u8; 9_000])
        .await
        .unwrap();
    let p = tcp_sub.publish().await;
    assert_eq!((p.topic.as_str(), p.payload.len()), ("web/2", 9_000));
    let p = ws_sub.publish().await;
    assert_eq!(
        p.payload.len(),
        9_000,
        "larger than one read of the WebSocket buffer"
    );
}

#[tokio::test]
async fn secure_websocket_with_a_custom_path() {
    let files = TlsFiles::new();
    let yaml = format!(
        "  - name: wss\n    kind: wss\n    bind: 127.0.0.1:0\n    path: /ws\n{}",
        files.yaml("")
    );
    let b = start_broker(&yaml).await;
    let wss = addr_of(&b, "wss");
    let tls = tls_config(&files.ca.pem(), None, None);
    let mut c = try_connect(ws_options(wss, "/ws", "wss-1", Some(tls.clone())))
        .await
        .unwrap();
    c.subscribe("secure/ws", QoS::AtMostOnce).await;
    c.client
        .publish("secure/ws", QoS::AtMostOnce, false, "wss")
        .await
        .unwrap();
    assert_eq!(&c.publish().await.payload[..], b"wss");
    let wrong_path = try_connect(ws_options(wss, "/mqtt", "wss-2", Some(tls))).await;
    assert!(wrong_path.is_err(), "only the configured path is served");
}

/// Sends an HTTP upgrade request and returns the response head.
async fn upgrade(addr: SocketAddr, path: &str, protocol: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let proto = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn upgrade_checks_path_and_subprotocol() {
    let b = start_broker(WS_LISTENER).await;
    let ws = addr_of(&b, "ws");
    let ok = upgrade(ws, "/mqtt", Some("mqtt")).await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(
        ok.to_ascii_lowercase()
            .contains("sec-websocket-protocol: mqtt"),
        "{ok}"
    );
    let not_found = upgrade(ws, "/other", Some("mqtt")).await;
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    let wrong_proto = upgrade(ws, "/mqtt", Some("chat")).await;
    assert!(wrong_proto.starts_with("HTTP/1.1 400"), "{wrong_proto}");
}
