//! Authentication of CONNECT against a password file, per-listener
//! anonymous access, reload on SIGHUP and the HTTP hook, with CONNACK
//! codes checked on raw bytes and successful logins made by rumqttc.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use common::tls::*;
use common::*;
use mqttd_passwd::{Hasher, PasswordFile};
use rumqttc::QoS;
use serde_json::{json, Value};

/// MQTT 3.1.1 CONNACK return codes.
const V3_BAD_CREDENTIALS: u8 = 0x04;
const V3_NOT_AUTHORIZED: u8 = 0x05;
/// MQTT 5.0 CONNACK reason codes.
const V5_BAD_CREDENTIALS: u8 = 0x86;
const V5_NOT_AUTHORIZED: u8 = 0x87;

/// Cheap hashing so debug-build tests stay fast (the cost is stored in
/// each hash, so the broker verifies it as is).
fn hasher() -> Hasher {
    Hasher::argon2id(64, 1, 1).unwrap()
}

fn password_file(dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let mut f = PasswordFile::new();
    for (u, p) in users {
        f.add(u, p.as_bytes(), &hasher()).unwrap();
    }
    let path = dir.join("passwd");
    f.save(&path).unwrap();
    path
}

/// A CONNECT (clean session, keep alive 60) for `version` 4 or 5 with
/// optional credentials, written by hand.
fn connect_packet(version: u8, id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', version, flags, 0, 60];
    if version == 5 {
        body.push(0); // no properties
    }
    for field in [Some(id), user, password].into_iter().flatten() {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    frame(0x10, &body)
}

/// The CONNACK code the broker answers to a CONNECT.
async fn connack_code(
    addr: SocketAddr,
    version: u8,
    user: Option<&str>,
    password: Option<&str>,
) -> u8 {
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect_packet(version, "raw-client", user, password))
        .await;
    let (h, body) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20, "CONNACK expected");
    body[1]
}

#[tokio::test]
async fn password_file_decides_connack_codes() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &[("alice", "wonderland")]);
    let b = start_broker(&format!(
        "auth:\n  allow_anonymous: false\n  password_file: {}\n",
        pw.display()
    ))
    .await;
    for version in [4, 5] {
        assert_eq!(
            connack_code(b.addr, version, Some("alice"), Some("wonderland")).await,
            0
        );
    }
    let cases = [
        (
            Some("alice"),
            Some("wrong"),
            V3_BAD_CREDENTIALS,
            V5_BAD_CREDENTIALS,
        ),
        (Some("alice"), None, V3_BAD_CREDENTIALS, V5_BAD_CREDENTIALS),
        (
            Some("mallory"),
            Some("x"),
            V3_BAD_CREDENTIALS,
            V5_BAD_CREDENTIALS,
        ),
        (None, None, V3_NOT_AUTHORIZED, V5_NOT_AUTHORIZED),
    ];
    for (user, password, v3, v5) in cases {
        assert_eq!(
            connack_code(b.addr, 4, user, password).await,
            v3,
            "{user:?}/{password:?}"
        );
        assert_eq!(
            connack_code(b.addr, 5, user, password).await,
            v5,
            "{user:?}/{password:?}"
        );
    }

    let mut opts = options(b.addr, "alice-1");
    opts.set_credentials("alice", "wonderland");
    let mut alice = connect(opts).await;
    alice.subscribe("a/b", QoS::AtLeastOnce).await;
    alice
        .client
        .publish("a/b", QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    assert_eq!(&alice.publish().await.payload[..], b"hi");

    let mut opts = options(b.addr, "alice-2");
    opts.set_credentials("alice", "guess");
    let err = connect_err(opts).await;
    assert!(err.contains("BadUserNamePassword"), "{err}");
}

#[tokio::test]
async fn listeners_override_anonymous_access() {
    let extra = "  - name: open\n    bind: 127.0.0.1:0\n    allow_anonymous: true\nauth:\n  allow_anonymous: false\n";
    let b = start_broker(extra).await;
    let open = b
        .server
        .listeners()
        .iter()
        .find(|l| &*l.name == "open")
        .map(|l| l.addr)
        .unwrap();
    assert_eq!(connack_code(b.addr, 4, None, None).await, V3_NOT_AUTHORIZED);
    assert_eq!(connack_code(open, 4, None, None).await, 0);
    connect_id(open, "anon").await.disconnect().await;
}

#[tokio::test]
async fn sighup_reloads_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &[("alice", "one")]);
    // The polling below fails until the reload: no failed-login limit.
    let b = start_broker(&format!(
        "auth:\n  allow_anonymous: false\n  password_file: {}\n  max_failures_per_address: 0\n  max_failures_per_username: 0\n",
        pw.display()
    ))
    .await;
    assert_eq!(
        connack_code(b.addr, 4, Some("bob"), Some("two")).await,
        V3_BAD_CREDENTIALS
    );
    password_file(dir.path(), &[("alice", "one"), ("bob", "two")]);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while connack_code(b.addr, 4, Some("bob"), Some("two")).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "password file not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tls_only_with_passwords() {
    let files = TlsFiles::new();
    let pw = password_file(files.dir.path(), &[("device", "s3cret")]);
    let yaml = format!(
        "  - name: mqtts\n    kind: tls\n    bind: 127.0.0.1:0\n{}auth:\n  allow_anonymous: false\n  password_file: {}\n",
        files.yaml(""),
        pw.display()
    );
    let b = start_broker(&yaml).await;
    let addr = b.server.addr(mqttd::config::ListenerKind::Tls).unwrap();
    let ca = files.ca.pem();
    let mut opts = tls_options(addr, "dev-1", tls_config(&ca, None, None));
    opts.set_credentials("device", "s3cret");
    try_connect(opts).await.unwrap();
    let mut opts = tls_options(addr, "dev-2", tls_config(&ca, None, None));
    opts.set_credentials("device", "nope");
    assert!(connect_err(opts).await.contains("BadUserNamePassword"));
    let anon = connect_err(tls_options(addr, "dev-3", tls_config(&ca, None, None))).await;
    assert!(anon.contains("NotAuthorized"), "{anon}");
}

#[tokio::test]
async fn http_hook_authenticates_connect() {
    async fn hook(Json(req): Json<Value>) -> Json<Value> {
        let ok =
            req["action"] == "connect" && req["username"] == "hooked" && req["password"] == "pw";
        Json(json!({ "result": if ok { "allow" } else { "deny" } }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().route("/auth", post(hook))).await;
    });
    let b = start_broker(&format!(
        "auth:\n  allow_anonymous: false\n  http_hook:\n    url: http://{hook_addr}/auth\n"
    ))
    .await;
    assert_eq!(connack_code(b.addr, 4, Some("hooked"), Some("pw")).await, 0);
    assert_eq!(
        connack_code(b.addr, 4, Some("hooked"), Some("no")).await,
        V3_BAD_CREDENTIALS
    );
    assert_eq!(connack_code(b.addr, 5, None, None).await, V5_NOT_AUTHORIZED);
}

/// How long a changed file may take to be picked up: the poll interval
/// (2 s) and a debug build's slack.
const FILE_CHANGE_WAIT: Duration = Duration::from_secs(10);

/// A Kubernetes Secret update, as the kubelet makes it: the file is a
/// symbolic link through `..data`, which is switched to a new directory.
/// The broker notices without SIGHUP and a new user logs in within
/// seconds; a removed user is refused.
#[tokio::test]
async fn changed_password_file_is_picked_up_without_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let version = |n: u32, users: &[(&str, &str)]| {
        let v = dir.path().join(format!("..v{n}"));
        std::fs::create_dir(&v).unwrap();
        password_file(&v, users);
        let link = dir.path().join(format!("..data_tmp{n}"));
        std::os::unix::fs::symlink(&v, &link).unwrap();
        std::fs::rename(&link, dir.path().join("..data")).unwrap();
    };
    version(1, &[("alice", "one")]);
    let pw = dir.path().join("passwd");
    std::os::unix::fs::symlink(dir.path().join("..data/passwd"), &pw).unwrap();
    let b = start_broker(&format!(
        "auth:\n  allow_anonymous: false\n  password_file: {}\n  max_failures_per_address: 0\n  max_failures_per_username: 0\n",
        pw.display()
    ))
    .await;
    assert_eq!(
        connack_code(b.addr, 4, Some("bob"), Some("two")).await,
        V3_BAD_CREDENTIALS
    );

    version(2, &[("bob", "two")]);
    let deadline = tokio::time::Instant::now() + FILE_CHANGE_WAIT;
    while connack_code(b.addr, 4, Some("bob"), Some("two")).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "changed password file not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        connack_code(b.addr, 4, Some("alice"), Some("one")).await,
        V3_BAD_CREDENTIALS,
        "alice was removed"
    );
}

/// The ACL file too: a subscription refused (SUBACK 0x80) is granted once
/// the file is rewritten, without SIGHUP.
#[tokio::test]
async fn changed_acl_file_is_picked_up_without_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read public/#\n").unwrap();
    let b = start_broker(&format!("auth:\n  acl_file: {}\n", acl.display())).await;
    let mut c = connect_id(b.addr, "reader").await;
    let refused = c.subscribe("private/x", QoS::AtMostOnce).await;
    assert_eq!(refused, [rumqttc::SubscribeReasonCode::Failure]);

    let next = dir.path().join("acl.new");
    std::fs::write(&next, "topic read public/#\ntopic read private/#\n").unwrap();
    std::fs::rename(&next, &acl).unwrap();
    let deadline = tokio::time::Instant::now() + FILE_CHANGE_WAIT;
    loop {
        let got = c.subscribe("private/x", QoS::AtMostOnce).await;
        if got == [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "changed ACL file not picked up: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.disconnect().await;
}
