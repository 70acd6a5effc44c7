//! Bounds on password checking, against the real broker: failed logins
//! throttled per client address and per username (refused without a
//! hash), password hashes bounded in number and in waiting time, and
//! reloads that change who may log in. Clients are raw sockets bound to
//! chosen loopback addresses; figures come from scraping `/metrics`.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use common::*;
use mqttd_passwd::{Hasher, PasswordFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// MQTT 3.1.1 CONNACK return codes.
const V3_BAD_CREDENTIALS: u8 = 0x04;
const V3_SERVER_UNAVAILABLE: u8 = 0x03;
/// MQTT 5.0 CONNACK reason codes.
const V5_BAD_CREDENTIALS: u8 = 0x86;
const V5_SERVER_BUSY: u8 = 0x89;
const V5_CONNECTION_RATE_EXCEEDED: u8 = 0x9F;

/// Cheap hashing so debug-build tests stay fast (the cost is stored in
/// each hash, so the broker verifies it as is).
fn cheap() -> Hasher {
    Hasher::argon2id(64, 1, 1).unwrap()
}

/// The broker's default cost (19 MiB, 2 passes): checks of a burst
/// overlap.
fn default_cost() -> Hasher {
    Hasher::default()
}

/// A hash that runs long (many passes) to hold a hashing slot.
fn slow() -> Hasher {
    Hasher::argon2id(19 * 1024, 12, 1).unwrap()
}

fn password_file(dir: &Path, users: &[(&str, &str, Hasher)]) -> PathBuf {
    let mut f = PasswordFile::new();
    for (u, p, h) in users {
        f.add(u, p.as_bytes(), h).unwrap();
    }
    let path = dir.join("passwd");
    f.save(&path).unwrap();
    path
}

/// A CONNECT (clean session) for `version` 4 or 5 with credentials.
fn connect_packet(version: u8, id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, 0xC2, 0, 60];
    if version == 5 {
        body.push(0); // no properties
    }
    for field in [id, user, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    frame(0x10, &body)
}

/// Sends a CONNECT from source address 127.0.0.`host` and returns the
/// CONNACK code.
async fn connack_from(host: u8, addr: SocketAddr, version: u8, user: &str, password: &str) -> u8 {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
        .unwrap();
    let stream = socket.connect(addr).await.expect("tcp connect");
    let mut raw = Raw { stream };
    raw.send(&connect_packet(version, "c", user, password))
        .await;
    let (h, body) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20, "CONNACK expected");
    body[1]
}

/// The broker's `/metrics` samples, by series.
async fn metrics(b: &TestBroker) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(b.server.http_addr().expect("http on"))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: mqttd\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .expect("metrics in time")
        .unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

async fn metric(b: &TestBroker, series: &str) -> f64 {
    *metrics(b)
        .await
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

const HASHES: &str = "mqttd_password_hashes_total";

fn auth_yaml(pw: &Path, extra: &str) -> String {
    format!(
        "auth:\n  allow_anonymous: false\n  password_file: {}\n{extra}",
        pw.display()
    )
}

#[tokio::test]
async fn wrong_passwords_from_one_address_are_throttled_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(
        dir.path(),
        &[
            ("alice", "wonderland", cheap()),
            ("bob", "builder", cheap()),
        ],
    );
    let b = start_broker(&auth_yaml(
        &pw,
        "  max_failures_per_address: 3\n  max_failures_per_username: 0\n",
    ))
    .await;
    for _ in 0..3 {
        let code = connack_from(1, b.addr, 4, "alice", "guess").await;
        assert_eq!(code, V3_BAD_CREDENTIALS);
    }
    assert_eq!(metric(&b, HASHES).await, 3.0);
    // The 4th attempt from 127.0.0.1 is refused without a hash, whatever
    // the password and username.
    assert_eq!(
        connack_from(1, b.addr, 5, "alice", "guess").await,
        V5_CONNECTION_RATE_EXCEEDED
    );
    assert_eq!(
        connack_from(1, b.addr, 4, "bob", "builder").await,
        V3_SERVER_UNAVAILABLE
    );
    assert_eq!(
        metric(&b, HASHES).await,
        3.0,
        "no hash for refused attempts"
    );
    assert_eq!(
        metric(&b, "mqttd_auth_throttled_total{reason=\"address\"}").await,
        2.0
    );
    // Another address still logs in, as alice too.
    assert_eq!(connack_from(2, b.addr, 4, "alice", "wonderland").await, 0);
    assert_eq!(connack_from(2, b.addr, 5, "bob", "builder").await, 0);
    assert_eq!(metric(&b, HASHES).await, 5.0);
}

#[tokio::test]
async fn a_username_guessed_from_many_addresses_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(
        dir.path(),
        &[
            ("alice", "wonderland", cheap()),
            ("bob", "builder", cheap()),
        ],
    );
    let b = start_broker(&auth_yaml(
        &pw,
        "  max_failures_per_address: 100\n  max_failures_per_username: 3\n",
    ))
    .await;
    for host in [1, 2, 3] {
        let code = connack_from(host, b.addr, 5, "bob", "guess").await;
        assert_eq!(code, V5_BAD_CREDENTIALS);
    }
    assert_eq!(
        connack_from(4, b.addr, 5, "bob", "builder").await,
        V5_CONNECTION_RATE_EXCEEDED,
        "bob is locked for the window, from any address"
    );
    assert_eq!(metric(&b, HASHES).await, 3.0);
    assert_eq!(
        metric(&b, "mqttd_auth_throttled_total{reason=\"username\"}").await,
        1.0
    );
    assert_eq!(connack_from(1, b.addr, 5, "alice", "wonderland").await, 0);
    assert_eq!(
        metric(&b, "mqttd_auth_failure_tracked{by=\"username\"}").await,
        1.0
    );
}

#[tokio::test]
async fn password_hashes_never_exceed_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &[("dev", "s3cret", default_cost())]);
    let b = start_broker(&auth_yaml(
        &pw,
        "  max_concurrent_hashes: 2\n  hash_wait_timeout_ms: 60000\n",
    ))
    .await;
    let burst: Vec<_> = (0..6)
        .map(|_| tokio::spawn(connack_from(1, b.addr, 5, "dev", "s3cret")))
        .collect();
    for c in burst {
        assert_eq!(c.await.unwrap(), 0, "every CONNECT gets its turn");
    }
    let m = metrics(&b).await;
    assert_eq!(m[HASHES], 6.0);
    let peak = m["mqttd_password_hashes_running_peak"];
    assert!((1.0..=2.0).contains(&peak), "peak {peak} above the bound");
    assert_eq!(m["mqttd_password_hashes_running"], 0.0);
    assert_eq!(m["mqttd_password_hashes_waiting"], 0.0);
}

#[tokio::test]
async fn connects_waiting_too_long_for_a_hash_get_server_busy() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(
        dir.path(),
        &[("slow", "pw", slow()), ("quick", "pw", cheap())],
    );
    let b = start_broker(&auth_yaml(
        &pw,
        "  max_concurrent_hashes: 1\n  hash_wait_timeout_ms: 1\n",
    ))
    .await;
    let addr = b.addr;
    let holder = tokio::spawn(connack_from(1, addr, 5, "slow", "pw"));
    // Wait until the slow hash holds the only slot.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&b, "mqttd_password_hashes_running").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "hash never ran");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        connack_from(2, addr, 5, "quick", "pw").await,
        V5_SERVER_BUSY
    );
    assert_eq!(
        connack_from(2, addr, 4, "quick", "pw").await,
        V3_SERVER_UNAVAILABLE
    );
    assert_eq!(holder.await.unwrap(), 0);
    assert_eq!(
        metric(
            &b,
            "mqttd_auth_throttled_total{reason=\"hash_wait_timeout\"}"
        )
        .await,
        2.0
    );
    // Busy refusals are not failed logins: quick logs in once the slot
    // is free.
    assert_eq!(connack_from(2, addr, 5, "quick", "pw").await, 0);
}

#[tokio::test]
async fn reload_changes_who_may_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &[("alice", "one", cheap())]);
    let b = start_broker(&auth_yaml(&pw, "")).await;
    assert_eq!(
        connack_from(1, b.addr, 4, "alice", "two").await,
        V3_BAD_CREDENTIALS
    );
    password_file(dir.path(), &[("alice", "two", cheap())]);
    assert!(b.server.reload().await, "reload succeeds");
    assert_eq!(connack_from(1, b.addr, 4, "alice", "two").await, 0);
}
