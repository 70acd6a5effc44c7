//! TLS listeners, driven by independent clients: rumqttc with rustls and
//! Eclipse Mosquitto's command-line clients, against certificates made
//! for each test.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::tls::*;
use common::*;
use mqttd::config::Config;
use mqttd::server::Server;
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// A TLS listener item named `name` with `tls_extra` lines in its `tls:`
/// block and `extra` lines after it.
fn tls_listener(name: &str, files: &TlsFiles, tls_extra: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    kind: tls\n    bind: 127.0.0.1:0\n{}{extra}",
        files.yaml(tls_extra)
    )
}

fn addr_of(b: &TestBroker, name: &str) -> SocketAddr {
    b.server
        .listeners()
        .iter()
        .find(|l| &*l.name == name)
        .map(|l| l.addr)
        .expect("listener")
}

fn mtls(files: &TlsFiles, mode: &str, from_cert: &str) -> String {
    format!(
        "      client_ca_file: {}\n      client_auth: {mode}\n      username_from_cert: {from_cert}\n",
        files.ca_file.display()
    )
}

/// The value of one series (`name{labels}`) in the broker's `/metrics`.
fn metric(b: &TestBroker, series: &str) -> Option<f64> {
    let text = b.server.broker().ctx.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn tls_failures(b: &TestBroker, reason: &str) -> f64 {
    metric(
        b,
        &format!("mqttd_tls_handshake_failures_total{{listener=\"mqtts\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// The username the broker recorded for `client_id`.
fn username_of(b: &TestBroker, client_id: &str) -> Option<String> {
    let entry = b.server.broker().ctx.table.get(client_id)?;
    entry.shared.client()?.username.clone()
}

#[tokio::test]
async fn tls_clients_exchange_messages_with_a_verified_server() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener("mqtts", &files, "", "")).await;
    let addr = addr_of(&b, "mqtts");
    let trust = tls_config(&files.ca.pem(), None, None);
    let mut sub = try_connect(tls_options(addr, "tls-sub", trust.clone()))
        .await
        .unwrap();
    sub.subscribe("secure/#", QoS::AtLeastOnce).await;
    let publisher = try_connect(tls_options(addr, "tls-pub", trust))
        .await
        .unwrap();
    publisher
        .client
        .publish("secure/a", QoS::AtLeastOnce, false, "over tls")
        .await
        .unwrap();
    let p = sub.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("secure/a", &b"over tls"[..])
    );

    // A client that does not trust the server's CA refuses it.
    let stranger = tls_config(&Ca::new("other CA").pem(), None, None);
    let err = try_connect(tls_options(addr, "tls-x", stranger))
        .await
        .err();
    assert!(err.is_some(), "server certificate must be verified");
}

#[tokio::test]
async fn plaintext_mqtt_is_refused_on_the_tls_port() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener("mqtts", &files, "", "")).await;
    let mut s = TcpStream::connect(addr_of(&b, "mqtts")).await.unwrap();
    s.write_all(&connect_bytes("plain", 0x02, 30))
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the broker closes the connection");
    assert_ne!(
        got.first(),
        Some(&0x20),
        "no CONNACK on the TLS port: {got:?}"
    );
    wait_until(|| tls_failures(&b, "protocol_mismatch") == 1.0).await;
}

#[tokio::test]
async fn handshake_timeout_closes_silent_connections() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener(
        "mqtts",
        &files,
        "      handshake_timeout_secs: 1\n",
        "",
    ))
    .await;
    let mut s = TcpStream::connect(addr_of(&b, "mqtts")).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "closed after the handshake timeout: {n:?}"
    );
    wait_until(|| tls_failures(&b, "timeout") == 1.0).await;
    assert_eq!(tls_failures(&b, "other"), 0.0);
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener(
        "mqtts",
        &files,
        &mtls(&files, "required", "none"),
        "",
    ))
    .await;
    let addr = addr_of(&b, "mqtts");
    let ca = files.ca.pem();
    let good = files.ca.client("device-1", None);
    let c = try_connect(tls_options(addr, "m1", tls_config(&ca, Some(&good), None))).await;
    assert!(c.is_ok(), "{:?}", c.err());

    let none = try_connect(tls_options(addr, "m2", tls_config(&ca, None, None))).await;
    assert!(none.is_err(), "no client certificate");
    let foreign = Ca::new("rogue CA").client("device-1", None);
    let rogue = try_connect(tls_options(
        addr,
        "m3",
        tls_config(&ca, Some(&foreign), None),
    ))
    .await;
    assert!(rogue.is_err(), "client certificate from another CA");
    // Each failure counted under its reason, for this listener.
    wait_until(|| {
        tls_failures(&b, "no_client_cert") == 1.0 && tls_failures(&b, "unknown_ca") == 1.0
    })
    .await;
    assert_eq!(tls_failures(&b, "protocol_mismatch"), 0.0);
}

#[tokio::test]
async fn username_comes_from_the_client_certificate() {
    let files = TlsFiles::new();
    let listeners = [
        tls_listener(
            "by-cn",
            &files,
            &mtls(&files, "optional", "cn"),
            "    allow_anonymous: false\n",
        ),
        tls_listener("by-san", &files, &mtls(&files, "required", "san"), ""),
    ]
    .concat();
    let b = start_broker(&format!("{listeners}auth:\n  allow_anonymous: false\n")).await;
    let ca = files.ca.pem();

    let cn_cert = files.ca.client("device-42", None);
    let by_cn = addr_of(&b, "by-cn");
    try_connect(tls_options(
        by_cn,
        "cn-client",
        tls_config(&ca, Some(&cn_cert), None),
    ))
    .await
    .unwrap();
    assert_eq!(username_of(&b, "cn-client").as_deref(), Some("device-42"));
    // Optional client auth without a certificate: an anonymous client,
    // refused here.
    let anon = connect_err(tls_options(by_cn, "cn-anon", tls_config(&ca, None, None))).await;
    assert!(anon.contains("NotAuthorized"), "{anon}");

    let by_san = addr_of(&b, "by-san");
    let san_cert = files.ca.client("ignored", Some("sensor.example.com"));
    try_connect(tls_options(
        by_san,
        "san-client",
        tls_config(&ca, Some(&san_cert), None),
    ))
    .await
    .unwrap();
    assert_eq!(
        username_of(&b, "san-client").as_deref(),
        Some("sensor.example.com")
    );
    // A certificate without the name the listener takes is refused.
    let r = connect_err(tls_options(
        by_san,
        "san-none",
        tls_config(&ca, Some(&cn_cert), None),
    ))
    .await;
    assert!(r.contains("NotAuthorized"), "{r}");
}

#[tokio::test]
async fn alpn_is_negotiated() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener("mqtts", &files, "      alpn: [mqtt]\n", "")).await;
    let addr = addr_of(&b, "mqtts");
    let ca = files.ca.pem();
    let ok = try_connect(tls_options(
        addr,
        "a1",
        tls_config(&ca, None, Some(&["mqtt"])),
    ))
    .await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    let bad = try_connect(tls_options(
        addr,
        "a2",
        tls_config(&ca, None, Some(&["h2"])),
    ))
    .await;
    assert!(bad.is_err(), "no common ALPN protocol");
}

/// Replaces the listener's certificate with one from a new CA.
fn rotate(files: &TlsFiles) -> Ca {
    let ca2 = Ca::new("rotated CA");
    let server = ca2.server();
    // Key first: a poll between the two writes sees a mismatch and keeps
    // the old certificate; the next poll sees both.
    std::fs::write(&files.key, &server.key).unwrap();
    std::fs::write(&files.cert, &server.cert).unwrap();
    ca2
}

async fn assert_old_connection_alive(old: &mut Client, topic: &str) {
    old.subscribe(topic, QoS::AtMostOnce).await;
    old.client
        .publish(topic, QoS::AtMostOnce, false, "still here")
        .await
        .unwrap();
    assert_eq!(&old.publish().await.payload[..], b"still here");
}

#[tokio::test]
async fn reload_serves_a_new_certificate_and_keeps_connections() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener("mqtts", &files, "", "")).await;
    let addr = addr_of(&b, "mqtts");
    let ca1 = files.ca.pem();
    let mut old = try_connect(tls_options(addr, "old", tls_config(&ca1, None, None)))
        .await
        .unwrap();

    let ca2 = rotate(&files);
    assert!(b.server.reload().await, "reload succeeds");
    let new = try_connect(tls_options(addr, "new", tls_config(&ca2.pem(), None, None))).await;
    assert!(new.is_ok(), "new certificate served: {:?}", new.err());
    let stale = try_connect(tls_options(addr, "stale", tls_config(&ca1, None, None))).await;
    assert!(stale.is_err(), "old certificate no longer served");
    assert_old_connection_alive(&mut old, "reload/check").await;

    // A broken certificate file keeps the current certificate.
    std::fs::write(&files.cert, "garbage").unwrap();
    assert!(!b.server.reload().await);
    let again = try_connect(tls_options(
        addr,
        "again",
        tls_config(&ca2.pem(), None, None),
    ))
    .await;
    assert!(again.is_ok(), "{:?}", again.err());
}

#[tokio::test]
async fn changed_certificate_files_are_picked_up() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener("mqtts", &files, "", "")).await;
    let addr = addr_of(&b, "mqtts");
    let mut old = try_connect(tls_options(
        addr,
        "old",
        tls_config(&files.ca.pem(), None, None),
    ))
    .await
    .unwrap();
    let ca2 = rotate(&files);
    // The files are polled every 2 s; allow a few rounds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let c = try_connect(tls_options(
            addr,
            "poller",
            tls_config(&ca2.pem(), None, None),
        ))
        .await;
        if c.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not picked up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_old_connection_alive(&mut old, "poll/check").await;
}

/// The startup error for `yaml`; `preflight::check` (for `--check-config`)
/// reports the same without binding.
async fn start_error(yaml: &str) -> String {
    let yaml = format!("{yaml}storage:\n  durability: memory\n");
    let config = Config::parse(&yaml, Path::new("test.yaml")).expect("valid config");
    let checked = mqttd::preflight::check(&config)
        .err()
        .map(|e| e.to_string());
    match Server::start(config).await {
        Ok(_) => panic!("broker started with bad TLS files"),
        Err(e) => {
            assert_eq!(checked, Some(e.to_string()));
            e.to_string()
        }
    }
}

#[tokio::test]
async fn bad_certificate_files_stop_startup_with_the_file_named() {
    let files = TlsFiles::new();
    let listener = |cert: &Path, key: &Path| {
        format!(
            "listeners:\n  - name: mqtts\n    kind: tls\n    bind: 127.0.0.1:0\n    tls:\n      cert_file: {}\n      key_file: {}\n",
            cert.display(),
            key.display()
        )
    };
    let missing = files.dir.path().join("missing.pem");
    let e = start_error(&listener(&missing, &files.key)).await;
    assert!(e.contains("missing.pem") && e.contains("mqtts"), "{e}");

    let other = files.ca.server();
    let other_key = write(files.dir.path(), "other.key", &other.key);
    let e = start_error(&listener(&files.cert, &other_key)).await;
    assert!(
        e.contains("does not match") && e.contains("other.key") && e.contains("server.pem"),
        "{e}"
    );

    let junk = write(files.dir.path(), "junk.key", "not a key\n");
    let e = start_error(&listener(&files.cert, &junk)).await;
    assert!(e.contains("junk.key") && e.contains("private key"), "{e}");

    let e = start_error(&listener(&junk, &files.key)).await;
    assert!(e.contains("junk.key") && e.contains("certificate"), "{e}");
}

fn mosquitto(bin: &str, port: u16, files: &TlsFiles, client: Option<(&Path, &Path)>) -> Command {
    let mut c = Command::new(bin);
    c.args(["-h", "localhost", "-p", &port.to_string()]);
    c.arg("--cafile").arg(&files.ca_file);
    if let Some((cert, key)) = client {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

#[tokio::test]
async fn mosquitto_clients_use_tls_and_client_certificates() {
    let files = TlsFiles::new();
    let b = start_broker(&tls_listener(
        "mqtts",
        &files,
        &mtls(&files, "required", "cn"),
        "",
    ))
    .await;
    let port = addr_of(&b, "mqtts").port();
    let client = files.ca.client("mosquitto-device", None);
    let cert = write(files.dir.path(), "client.pem", &client.cert);
    let key = write(files.dir.path(), "client.key", &client.key);

    let sub = mosquitto("mosquitto_sub", port, &files, Some((&cert, &key)))
        .args(["-t", "mtls/#", "-C", "1", "-v", "-W", "5", "-i", "mq-sub"])
        .spawn()
        .expect("mosquitto_sub runs (install mosquitto-clients)");
    // Wait until the subscriber is connected.
    let deadline = tokio::time::Instant::now() + WAIT;
    while username_of(&b, "mq-sub").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto_sub did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        username_of(&b, "mq-sub").as_deref(),
        Some("mosquitto-device")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = mosquitto("mosquitto_pub", port, &files, Some((&cert, &key)))
        .args(["-t", "mtls/x", "-m", "hello", "-q", "1"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sub.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mtls/x hello");

    // Without a client certificate the handshake fails.
    let out = mosquitto("mosquitto_pub", port, &files, None)
        .args(["-t", "mtls/x", "-m", "nope"])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "mosquitto_pub without a certificate must fail"
    );
}
