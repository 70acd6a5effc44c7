//! The real `mqttctl` binary against the real `mqttd` binary, with clients
//! connected by an independent MQTT client (`rumqttc`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const MQTTCTL: &str = env!("CARGO_BIN_EXE_mqttctl");

/// The `mqttd` binary of this workspace, built if needed.
fn mqttd_bin() -> PathBuf {
    let path = Path::new(MQTTCTL).with_file_name("mqttd");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "mqttd", "--bin", "mqttd"])
            .status()
            .expect("cargo build mqttd");
        assert!(status.success(), "building mqttd failed");
    }
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Broker {
    child: Child,
    mqtt: SocketAddr,
    http: SocketAddr,
    socket: PathBuf,
    /// The broker's `--data-dir`, inside `dir`.
    data: PathBuf,
    /// `None` once [`Broker::stop`] handed it back.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start() -> Broker {
    start_in(tempfile::tempdir().expect("temp dir"), &[]).await
}

/// Starts mqttd with its socket, config and `--data-dir` in `dir` (what a
/// previous broker left there is kept), on fresh ports, with `extra`
/// flags.
async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Broker {
    let (mqtt_port, http_port) = (free_port(), free_port());
    let socket = dir.path().join("mqttd.sock");
    let config = dir.path().join("mqttd.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: mqtt\n    bind: 127.0.0.1:{mqtt_port}\n\
             http:\n  bind: 127.0.0.1:{http_port}\nsession_manager:\n  pool_size: 2\n"
        ),
    )
    .expect("write config");
    let child = Command::new(mqttd_bin())
        .arg("--config")
        .arg(&config)
        .arg("--control-socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mqttd");
    let mqtt = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
    let started = Instant::now();
    while !socket.exists() || tokio::net::TcpStream::connect(mqtt).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mqttd did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Broker {
        child,
        mqtt,
        http: SocketAddr::from(([127, 0, 0, 1], http_port)),
        socket,
        data,
        dir: Some(dir),
    }
}

impl Broker {
    /// SIGTERM, then waits (at most 10 s) for a clean exit; returns the
    /// directory for a next broker.
    async fn stop(mut self) -> tempfile::TempDir {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        let stopped = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "mqttd exited with {status}");
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "mqttd did not stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.dir.take().expect("the directory is still there")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(MQTTCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run mqttctl")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(out.status.success(), "mqttctl {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }
}

/// A connected rumqttc client; returns a channel of incoming packets.
async fn client(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    user: Option<&str>,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Packet>) {
    let (c, rx, _) = connect(addr, id, clean, user).await;
    (c, rx)
}

/// [`client`], and whether the CONNACK said a session was present.
async fn connect(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    user: Option<&str>,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Packet>,
    bool,
) {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_clean_session(clean);
    if let Some(u) = user {
        o.set_credentials(u, "secret");
    }
    let (c, mut el) = AsyncClient::new(o, 10);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = el.poll().await {
            if let Event::Incoming(p) = e {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("CONNACK in time");
    let Some(Packet::ConnAck(ack)) = first else {
        panic!("expected a CONNACK, got {first:?}")
    };
    (c, rx, ack.session_present)
}

/// Waits (at most 5 s) for the next packet `want` accepts.
async fn next_matching<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Packet>,
    mut want: impl FnMut(Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let p = rx.recv().await.expect("the connection is open");
            if let Some(t) = want(p) {
                return t;
            }
        }
    })
    .await
    .expect("packet in time")
}

async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn status_sessions_pool_against_the_real_broker() {
    let b = start().await;
    let (alice, mut alice_rx) = client(b.mqtt, "dev-alice", true, Some("alice")).await;
    alice
        .subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    while !matches!(alice_rx.recv().await, Some(Packet::SubAck(_))) {}
    let (_bob, _bob_rx) = client(b.mqtt, "dev-bob", true, None).await;
    let (carol, _carol_rx) = client(b.mqtt, "other-carol", false, None).await;
    carol.disconnect().await.unwrap();

    let status = b.json(&["status"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pool_size"], 2);
    assert_eq!(status["listeners"][0]["bind"], b.mqtt.to_string());

    eventually(|| b.json(&["sessions", "list", "--disconnected"])["total"] == 1).await;
    let all = b.json(&["sessions", "list"]);
    assert_eq!(all["total"], 3);
    let ids: Vec<_> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["dev-alice", "dev-bob", "other-carol"]);
    let alice_row = &all["sessions"][0];
    for key in [
        "connected",
        "persistent",
        "username",
        "peer",
        "protocol",
        "connected_at",
        "subscriptions",
        "inflight",
        "queued",
    ] {
        assert!(alice_row.get(key).is_some(), "session JSON has {key}");
    }
    assert_eq!(alice_row["username"], "alice");
    assert_eq!(alice_row["protocol"], "3.1.1");
    assert_eq!(alice_row["subscriptions"], 1);

    let disconnected = b.json(&["sessions", "list", "--disconnected"]);
    assert_eq!(disconnected["sessions"][0]["client_id"], "other-carol");
    assert_eq!(disconnected["sessions"][0]["persistent"], true);
    // When it went offline, from the session's own record of it.
    let gone = disconnected["sessions"][0]["disconnected_at"].as_u64();
    let created = disconnected["sessions"][0]["created_at"].as_u64();
    assert!(
        matches!((gone, created), (Some(g), Some(c)) if g >= c),
        "{disconnected}"
    );
    assert!(
        alice_row["disconnected_at"].is_null(),
        "connected: {alice_row}"
    );
    let shown = b.ctl(&["sessions", "show", "other-carol"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("disconnected at: 20"), "{shown}");
    assert_eq!(
        b.json(&["sessions", "list", "--prefix", "dev-"])["total"],
        2
    );
    assert_eq!(
        b.json(&["sessions", "list", "--username", "alice"])["total"],
        1
    );
    let page = b.json(&["sessions", "list", "--limit", "2"]);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());

    let show = b.json(&["sessions", "show", "dev-alice"]);
    assert_eq!(show["subscription_list"][0]["filter"], "sensors/#");
    assert_eq!(show["subscription_list"][0]["qos"], 1);

    let table = b.ctl(&["sessions", "list"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("dev-alice"));

    // Destroy disconnects the client and discards the session.
    let out = b.ctl(&["sessions", "destroy", "dev-alice"]);
    assert!(out.status.success(), "{out:?}");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while alice_rx.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "destroyed client disconnected");
    assert_eq!(b.json(&["sessions", "list"])["total"], 2);
    let out = b.ctl(&["sessions", "destroy", "dev-alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dev-alice"));

    let pool = b.json(&["pool", "resize", "5"]);
    assert_eq!(pool["size"], 5);
    assert_eq!(
        b.json(&["pool", "show"])["workers"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let out = b.ctl(&["pool", "resize", "0"]);
    assert!(!out.status.success());
    let out = b.ctl(&["pool", "resize", "5000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1024"));
}

/// The store as `mqttctl status` shows it: a broker with a data dir in
/// the default `batched` mode reports the engine, its directory, bytes on
/// disk and, once something was written, an fsync.
#[tokio::test]
async fn status_shows_the_store_of_a_data_dir() {
    let b = start().await;
    let (c, mut rx) = client(b.mqtt, "retainer", true, None).await;
    c.publish("keep/me", QoS::AtLeastOnce, true, "kept")
        .await
        .expect("publish");
    next_matching(&mut rx, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;

    let status = b.json(&["status"]);
    let store = &status["store"];
    assert_eq!(store["engine"], "fjall 3", "{status}");
    assert_eq!(store["durability"], "batched");
    assert_eq!(store["path"], b.data.display().to_string());
    assert!(
        store["disk_bytes"].as_u64().is_some_and(|n| n > 0),
        "{store}"
    );
    assert_eq!(store["recoveries"], serde_json::json!([]));
    // `batched` fsyncs within flush_interval_ms (1 s) of a write.
    eventually(|| b.json(&["status"])["store"]["last_fsync_at"].is_u64()).await;

    let out = b.ctl(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "store:         fjall 3\n".to_string(),
        "durability:    batched\n".to_string(),
        format!("data dir:      {}\n", b.data.display()),
        "recoveries:    none\n".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("last fsync:    -"), "{text}");
}

/// `--durability memory`: no store, nothing on disk, and `status` says so.
#[tokio::test]
async fn status_shows_memory_mode() {
    let b = start_in(
        tempfile::tempdir().expect("temp dir"),
        &["--durability", "memory"],
    )
    .await;
    let store = b.json(&["status"])["store"].clone();
    assert_eq!(
        store,
        serde_json::json!({
            "engine": "none",
            "path": null,
            "durability": "memory",
            "disk_bytes": 0,
            "last_fsync_at": null,
            "recoveries": [],
        })
    );
    assert!(!b.data.exists(), "memory mode created {}", b.data.display());
    let out = b.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("store:         none\n"), "{text}");
    assert!(text.contains("durability:    memory ("), "{text}");
    // The memory budget (limits.max_memory_bytes: auto by default).
    let memory = b.json(&["status"])["memory"].clone();
    assert!(memory["budget_bytes"].as_u64().unwrap_or(0) > 0, "{memory}");
    assert!(text.contains("budget held by messages"), "{text}");
    let (_, body) = http_get(b.http, "/metrics").await;
    assert!(
        !body.contains("mqttd_store_"),
        "memory mode exports store metrics"
    );
    assert!(body.contains("mqttd_memory_budget_bytes "), "{body}");
}

/// A persistent session with messages queued while its client was away
/// comes back after a restart: `sessions list` shows it disconnected with
/// its queue, and the client resumes it and gets the messages.
#[tokio::test]
async fn restored_session_is_listed_with_its_queue() {
    const ID: &str = "restored-1";
    let b = start().await;
    let (sub, mut sub_rx) = client(b.mqtt, ID, false, None).await;
    sub.subscribe("restore/t", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    next_matching(&mut sub_rx, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    sub.disconnect().await.expect("disconnect");
    eventually(|| b.json(&["sessions", "list", "--disconnected"])["total"] == 1).await;

    let (publisher, mut pub_rx) = client(b.mqtt, "restore-publisher", true, None).await;
    for i in 0..3 {
        publisher
            .publish("restore/t", QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
        // Each PUBACK follows the store's write of the message.
        next_matching(&mut pub_rx, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }
    eventually(|| {
        let page = b.json(&["sessions", "list", "--prefix", ID]);
        page["sessions"][0]["queued"] == 3
    })
    .await;
    drop((publisher, pub_rx));

    let b = start_in(b.stop().await, &[]).await;
    let page = b.json(&["sessions", "list"]);
    let row = page["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["client_id"] == ID)
        .unwrap_or_else(|| panic!("{ID} not restored: {page}"))
        .clone();
    assert_eq!(row["connected"], false, "{row}");
    assert_eq!(row["persistent"], true, "{row}");
    assert_eq!(row["subscriptions"], 1, "{row}");
    assert_eq!(row["queued"], 3, "{row}");
    // When it went offline survives the restart (from its stored record).
    assert!(row["disconnected_at"].as_u64().is_some(), "{row}");
    let show = b.json(&["sessions", "show", ID]);
    assert_eq!(show["queued"], 3, "{show}");
    assert_eq!(show["subscription_list"][0]["filter"], "restore/t");
    let status = b.json(&["status"]);
    assert_eq!(status["sessions"], 1, "{status}");

    let (_sub, mut sub_rx, present) = connect(b.mqtt, ID, false, None).await;
    assert!(present, "the restored session is resumed");
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(
            next_matching(&mut sub_rx, |p| match p {
                Packet::Publish(p) => Some(String::from_utf8_lossy(&p.payload).into_owned()),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(got, ["m0", "m1", "m2"]);
    eventually(|| b.json(&["sessions", "list", "--prefix", ID])["sessions"][0]["queued"] == 0)
        .await;
}

#[tokio::test]
async fn health_and_metrics_over_http() {
    let b = start().await;
    let (c, mut rx) = client(b.mqtt, "metered", true, None).await;
    c.subscribe("m/t", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    c.publish("m/t", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    let got_it = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(p) = rx.recv().await {
            if matches!(p, Packet::Publish(_)) {
                return;
            }
        }
    });
    got_it.await.expect("message back in time");
    for (path, want) in [("/healthz", "200"), ("/readyz", "200")] {
        let (status, _) = http_get(b.http, path).await;
        assert!(status.contains(want), "{path}: {status}");
    }
    let (status, body) = http_get(b.http, "/metrics").await;
    assert!(status.contains("200"));
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in:\n{body}"))
    };
    assert!(value("mqttd_connections") >= 1.0);
    assert!(value("mqttd_sessions") >= 1.0);
    assert!(value("mqttd_subscriptions") >= 1.0);
    assert!(value("mqttd_session_manager_pool_size") >= 1.0);
    assert!(value("mqttd_bytes_received_total") > 0.0);
    assert!(value("mqttd_bytes_sent_total") > 0.0);
    assert_eq!(value("mqttd_messages_received_total{qos=\"1\"}"), 1.0);
    assert_eq!(value("mqttd_messages_sent_total{qos=\"1\"}"), 1.0);
    assert_eq!(value("mqttd_delivery_backlog"), 0.0);
    assert_eq!(value("mqttd_publisher_pauses_total"), 0.0);
    // The broker has a data dir: the store's families are there.
    assert!(value("mqttd_store_disk_bytes") > 0.0);
    assert!(value("mqttd_store_writes_total") >= 0.0);
    assert_eq!(value("mqttd_store_write_errors_total"), 0.0);
    assert!(value("mqttd_store_fsyncs_total") >= 0.0);
    assert!(value("mqttd_store_last_fsync_timestamp_seconds") >= 0.0);
    assert_eq!(value("mqttd_store_recovered_total{kind=\"session\"}"), 0.0);
    assert_eq!(
        value("mqttd_store_dropped_total{reason=\"disk_full\"}"),
        0.0
    );
    assert_eq!(value("mqttd_store_quarantined_total"), 0.0);
}

async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn unreachable_socket_is_explained() {
    let out = Command::new(MQTTCTL)
        .args(["--socket", "/nonexistent/mqttd.sock", "status"])
        .output()
        .expect("run mqttctl");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/mqttd.sock"), "{err}");
}
