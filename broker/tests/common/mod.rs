//! Test harness: start the real broker on a random port, and drive it with
//! an independent client (`rumqttc`) or raw bytes written by hand (never
//! with the broker's own codec).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mqttd::config::{Config, ListenerKind};
use mqttd::server::Server;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestBroker {
    pub server: Server,
    pub addr: SocketAddr,
    /// Holds the control socket.
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("mqttd.sock")
    }
}

/// Starts a broker on 127.0.0.1:0 (MQTT and HTTP) with its control socket
/// in a temporary directory. The YAML `extra` (may be empty) follows the
/// first listener, so it may start with more listener items.
pub async fn start_broker(extra: &str) -> TestBroker {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("mqttd.sock");
    // The store is on (the default `batched`) in the temporary directory,
    // unless the test chooses its own storage.
    let storage = if extra.contains("storage:") {
        String::new()
    } else {
        format!(
            "storage:\n  data_dir: {}\n",
            dir.path().join("data").display()
        )
    };
    let yaml = format!(
        "listeners:\n  - name: mqtt\n    bind: 127.0.0.1:0\n{extra}\
         control:\n  socket: {}\nhttp:\n  bind: 127.0.0.1:0\n{storage}",
        socket.display()
    );
    let config = Config::parse(&yaml, Path::new("test.yaml")).expect("test config");
    let server = Server::start(config).await.expect("broker starts");
    let addr = server.addr(ListenerKind::Tcp).expect("tcp listener");
    TestBroker { server, addr, dir }
}

/// A rumqttc v4 client whose incoming packets arrive on `rx`.
pub struct Client {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Packet>,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects with `opts` and waits for the CONNACK.
pub async fn connect(opts: MqttOptions) -> Client {
    let (client, eventloop) = AsyncClient::new(opts, 1000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pump(eventloop, tx));
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("CONNACK in time")
        .expect("event loop alive");
    assert!(matches!(first, Packet::ConnAck(_)), "got {first:?}");
    Client { client, rx, task }
}

pub async fn connect_id(addr: SocketAddr, id: &str) -> Client {
    connect(options(addr, id)).await
}

async fn pump(mut el: EventLoop, tx: mpsc::UnboundedSender<Packet>) {
    loop {
        match el.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(p).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(_) => return,
        }
    }
}

impl Client {
    /// Next incoming packet other than PINGRESP, within [`WAIT`].
    pub async fn next(&mut self) -> Packet {
        loop {
            let p = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("packet in time")
                .expect("connection open");
            if !matches!(p, Packet::PingResp) {
                return p;
            }
        }
    }

    /// Next PUBLISH.
    pub async fn publish(&mut self) -> rumqttc::Publish {
        loop {
            if let Packet::Publish(p) = self.next().await {
                return p;
            }
        }
    }

    /// The next PUBLISH if one arrives within `d`.
    pub async fn try_publish(&mut self, d: Duration) -> Option<rumqttc::Publish> {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if let Packet::Publish(p) = p {
                return Some(p);
            }
        }
        None
    }

    /// Asserts no PUBLISH arrives within `d`.
    pub async fn no_publish(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            assert!(!matches!(p, Packet::Publish(_)), "unexpected {p:?}");
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            if let Packet::SubAck(a) = self.next().await {
                return a.return_codes;
            }
        }
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }

    /// Drops the connection without DISCONNECT.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Polls `cond` until it holds; panics after [`WAIT`].
pub async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A socket speaking bytes written by hand.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("tcp connect"),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one packet: (first byte, body). `None` if the broker closed.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(WAIT, self.read_inner())
            .await
            .expect("broker answered or closed in time")
    }

    /// Reads one packet if it comes within `d`: `Err` if none did (so the
    /// caller can say what it was waiting for), `Ok(None)` if the broker
    /// closed.
    pub async fn read_within(
        &mut self,
        d: Duration,
    ) -> Result<Option<(u8, Vec<u8>)>, tokio::time::error::Elapsed> {
        tokio::time::timeout(d, self.read_inner()).await
    }

    async fn read_inner(&mut self) -> Option<(u8, Vec<u8>)> {
        let first = self.stream.read_u8().await.ok()?;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = self.stream.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.ok()?;
        Some((first, body))
    }

    /// Asserts the broker closes the connection (maybe after packets
    /// listed by the caller having been read already).
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(WAIT, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("broker did not close the connection"),
            }
        }
    }
}

/// A 3.1.1 CONNECT with the given client id, flags byte and keep alive.
pub fn connect_bytes(client_id: &str, flags: u8, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

/// A 5.0 CONNECT with clean start, the given keep alive, no properties.
pub fn connect_v5_bytes(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

/// A fixed header plus body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A 3.1.1 SUBSCRIBE for one filter.
pub fn subscribe_bytes(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    frame(0x82, &body)
}

/// A 3.1.1 PUBLISH.
pub fn publish_bytes(
    topic: &str,
    qos: u8,
    retain: bool,
    packet_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// Decodes a 3.1.1 PUBLISH body: (topic, packet id, payload).
pub fn parse_publish(first: u8, body: &[u8]) -> (String, Option<u16>, Vec<u8>) {
    let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tl].to_vec()).expect("utf8 topic");
    let mut rest = &body[2 + tl..];
    let qos = (first >> 1) & 3;
    let id = if qos > 0 {
        let id = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        Some(id)
    } else {
        None
    };
    (topic, id, rest.to_vec())
}

/// Connects a raw client and checks CONNACK; returns it and the
/// session-present flag.
pub async fn raw_connect(addr: SocketAddr, id: &str, flags: u8) -> (Raw, bool) {
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect_bytes(id, flags, 60)).await;
    let (h, body) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20, "CONNACK expected");
    assert_eq!(body.len(), 2);
    assert_eq!(body[1], 0, "connection accepted");
    (raw, body[0] & 1 == 1)
}
pub mod v5;

/// The real binary as a child process (kill, restart, logs, metrics).
pub mod process;
/// Raw MQTT over a buffered connection (cancel-safe reads).
pub mod wire;

/// TLS and WebSocket helpers (certificates, rumqttc TLS options).
pub mod tls;
