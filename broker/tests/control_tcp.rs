//! The TCP control API of the real broker: failed bearer-token attempts
//! are counted per peer address, answered 429 with Retry-After once too
//! many, and counted in `/metrics`; another address is not affected.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use common::WAIT;
use mqttd::config::Config;
use mqttd::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const TOKEN: &str = "s3cret-admin-token";

/// One HTTP/1.1 request from source address `from`; the whole answer.
async fn get(from: IpAddr, to: SocketAddr, path: &str, token: Option<&str>) -> String {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind source");
    let mut stream = socket.connect(to).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: mqttd\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    answer
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn failed_token_attempts_are_throttled_per_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "listeners:\n  - bind: 127.0.0.1:0\ncontrol:\n  socket: {}\n  tcp:\n    bind: 127.0.0.1:0\n    token: {TOKEN}\nhttp:\n  bind: 127.0.0.1:0\nstorage:\n  durability: memory\n",
        dir.path().join("mqttd.sock").display()
    );
    let config = Config::parse(&yaml, Path::new("test.yaml")).expect("config");
    let server = Server::start(config).await.expect("broker starts");
    let api = server.control_tcp_addr().expect("control.tcp bound");
    let (me, other): (IpAddr, IpAddr) =
        ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());

    assert_eq!(status(&get(me, api, "/v1/status", Some(TOKEN)).await), 200);
    // Five failures: a missing token, then wrong ones.
    assert_eq!(status(&get(me, api, "/v1/status", None).await), 401);
    for guess in ["a", "s3cret-admin-tokeN", "s3cret-admin-token-", "x"] {
        let answer = get(me, api, "/v1/pool", Some(guess)).await;
        assert_eq!(status(&answer), 401, "{answer}");
    }
    // Now even the right token is refused from this address, for a while.
    let answer = get(me, api, "/v1/status", Some(TOKEN)).await;
    assert_eq!(status(&answer), 429, "{answer}");
    assert!(answer.contains("\"status\":429"), "{answer}");
    let retry_after: u64 = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")?
                .trim()
                .parse()
                .ok()
        })
        .expect("Retry-After header");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // Another address is not affected.
    assert_eq!(
        status(&get(other, api, "/v1/status", Some(TOKEN)).await),
        200
    );
    assert_eq!(
        status(&get(other, api, "/v1/status", Some("nope")).await),
        401
    );

    let metrics = get(me, server.http_addr().expect("http on"), "/metrics", None).await;
    assert_eq!(metric(&metrics, "mqttd_control_auth_failures_total"), 6);
    assert_eq!(metric(&metrics, "mqttd_control_auth_throttled_total"), 1);
    server.shutdown().await;
}
