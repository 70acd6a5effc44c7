//! Sessions belong to identities (docs/security.md, "What mqttd
//! guarantees"): a CONNECT that names another identity's persistent
//! session gets a fresh one and the old one is destroyed; subscriptions
//! are authorized again on resume and after an ACL reload. Driven by
//! rumqttc against the real broker with a password file and an ACL file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use common::*;
use mqttd_passwd::{Hasher, PasswordFile};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const ACL: &str = "\
user alice
topic readwrite alice/#
user bob
topic readwrite bob/#
user admin
topic readwrite #
";

/// Cheap hashing so debug-build tests stay fast.
fn password_file(dir: &Path) -> PathBuf {
    let hasher = Hasher::argon2id(64, 1, 1).unwrap();
    let mut f = PasswordFile::new();
    for user in ["alice", "bob", "admin"] {
        f.add(user, format!("{user}-pw").as_bytes(), &hasher)
            .unwrap();
    }
    let path = dir.join("passwd");
    f.save(&path).unwrap();
    path
}

/// A broker with the password file and the ACL file (anonymous clients
/// allowed, with no ACL rule of their own).
async fn broker(dir: &Path) -> TestBroker {
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let passwd = password_file(dir);
    start_broker(&format!(
        "auth:\n  password_file: {}\n  acl_file: {}\n",
        passwd.display(),
        acl.display()
    ))
    .await
}

fn opts(b: &TestBroker, id: &str, user: Option<&str>, clean: bool) -> MqttOptions {
    let mut o = options(b.addr, id);
    o.set_clean_session(clean);
    if let Some(u) = user {
        o.set_credentials(u, format!("{u}-pw"));
    }
    o
}

/// Connects and returns the client with the CONNACK's session-present flag.
async fn connect_sp(o: MqttOptions) -> (Client, bool) {
    async fn pump(mut el: EventLoop, tx: mpsc::UnboundedSender<Packet>) {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    }
    let (client, el) = AsyncClient::new(o, 1000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pump(el, tx));
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("CONNACK in time")
        .expect("event loop alive");
    let Packet::ConnAck(ack) = first else {
        panic!("expected CONNACK, got {first:?}");
    };
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    (Client { client, rx, task }, ack.session_present)
}

async fn publish(c: &Client, topic: &str, payload: &str) {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
}

#[tokio::test]
async fn another_identity_gets_a_fresh_session_not_the_owners() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let (admin, _) = connect_sp(opts(&b, "admin", Some("admin"), true)).await;

    // Alice's persistent session, offline with a queued message.
    let (mut alice, present) = connect_sp(opts(&b, "device-7", Some("alice"), false)).await;
    assert!(!present);
    alice.subscribe("alice/inbox", QoS::AtLeastOnce).await;
    alice.disconnect().await;
    publish(&admin, "alice/inbox", "queued secret").await;
    let s = b
        .server
        .broker()
        .ctx
        .table
        .get("device-7")
        .expect("session");
    wait_until(|| s.shared.queued.load(Ordering::Relaxed) == 1).await;

    // Bob names her client id: a fresh session, none of her messages.
    let (mut bob, present) = connect_sp(opts(&b, "device-7", Some("bob"), false)).await;
    assert!(!present, "bob must not resume alice's session");
    bob.no_publish(Duration::from_millis(300)).await;
    publish(&admin, "alice/inbox", "live secret").await;
    bob.no_publish(Duration::from_millis(300)).await;
    let m = &b.server.broker().ctx.metrics;
    assert_eq!(m.sessions_identity_mismatch.get(), 1);

    // Anonymous is an identity of its own: it takes over neither, and
    // Bob's connection is closed as in a takeover.
    let (mut anon, present) = connect_sp(opts(&b, "device-7", None, false)).await;
    assert!(!present);
    anon.no_publish(Duration::from_millis(200)).await;
    tokio::time::timeout(WAIT, async { while bob.rx.recv().await.is_some() {} })
        .await
        .expect("bob's connection closed");
    assert_eq!(m.sessions_identity_mismatch.get(), 2);

    // Alice comes back to a fresh session: hers was destroyed.
    let (_alice, present) = connect_sp(opts(&b, "device-7", Some("alice"), false)).await;
    assert!(!present);
    assert_eq!(m.sessions_identity_mismatch.get(), 3);
}

#[tokio::test]
async fn the_same_identity_still_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let (admin, _) = connect_sp(opts(&b, "admin", Some("admin"), true)).await;
    let (mut alice, _) = connect_sp(opts(&b, "phone", Some("alice"), false)).await;
    alice.subscribe("alice/inbox", QoS::AtLeastOnce).await;
    alice.disconnect().await;
    publish(&admin, "alice/inbox", "while away").await;
    let s = b.server.broker().ctx.table.get("phone").expect("session");
    wait_until(|| s.shared.queued.load(Ordering::Relaxed) == 1).await;
    let (mut alice, present) = connect_sp(opts(&b, "phone", Some("alice"), false)).await;
    assert!(present);
    assert_eq!(&alice.publish().await.payload[..], b"while away");
    assert_eq!(
        b.server
            .broker()
            .ctx
            .metrics
            .sessions_identity_mismatch
            .get(),
        0
    );
}

#[tokio::test]
async fn acl_reload_revokes_subscriptions_it_now_denies() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let (admin, _) = connect_sp(opts(&b, "admin", Some("admin"), true)).await;
    let (mut alice, _) = connect_sp(opts(&b, "tablet", Some("alice"), false)).await;
    assert_eq!(
        alice.subscribe("alice/#", QoS::AtLeastOnce).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    alice.subscribe("alice/news", QoS::AtLeastOnce).await;
    // Bob's offline session is checked too.
    let (mut bob, _) = connect_sp(opts(&b, "laptop", Some("bob"), false)).await;
    bob.subscribe("bob/#", QoS::AtLeastOnce).await;
    bob.disconnect().await;

    // The new rules keep alice/news but deny alice/private/#, which
    // `alice/#` could match; Bob loses everything.
    let acl = format!("{ACL}user alice\ntopic deny alice/private/#\n")
        .replace("topic readwrite bob/#", "topic readwrite bob/public");
    std::fs::write(dir.path().join("acl"), acl).unwrap();
    assert!(b.server.reload().await);
    let m = &b.server.broker().ctx.metrics;
    wait_until(|| m.subscriptions_revoked.get() == 2).await;

    publish(&admin, "alice/private/diary", "no").await;
    publish(&admin, "alice/news", "yes").await;
    let got = alice.publish().await;
    assert_eq!(got.topic, "alice/news");
    alice.no_publish(Duration::from_millis(300)).await;
    let bob_session = b.server.broker().ctx.table.get("laptop").expect("session");
    assert_eq!(bob_session.shared.subscriptions.load(Ordering::Relaxed), 0);
}

/// An HTTP hook whose answer to alice's subscriptions the test flips.
async fn flipping_hook(allow: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/auth",
        post(move |Json(req): Json<Value>| {
            let allow = allow.clone();
            async move {
                let ok = req["action"] != "subscribe" || allow.load(Ordering::SeqCst);
                Json(json!({ "result": if ok { "allow" } else { "deny" } }))
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn resume_reauthorizes_subscriptions_and_drops_what_they_queued() {
    let allow = Arc::new(AtomicBool::new(true));
    let hook = flipping_hook(allow.clone()).await;
    let b = start_broker(&format!(
        "auth:\n  http_hook:\n    url: http://{hook}/auth\n    authenticate: false\n    cache_ttl_secs: 0\n"
    ))
    .await;
    let (publisher, _) = connect_sp(opts(&b, "pub", None, true)).await;
    let (mut sub, _) = connect_sp(opts(&b, "sensor-9", Some("carol"), false)).await;
    assert_eq!(
        sub.subscribe("feed/#", QoS::AtLeastOnce).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    sub.disconnect().await;
    publish(&publisher, "feed/a", "queued").await;
    let s = b
        .server
        .broker()
        .ctx
        .table
        .get("sensor-9")
        .expect("session");
    wait_until(|| s.shared.queued.load(Ordering::Relaxed) == 1).await;

    // The hook now refuses the subscription: on resume it is removed
    // before the queued message goes out.
    allow.store(false, Ordering::SeqCst);
    let (mut sub, present) = connect_sp(opts(&b, "sensor-9", Some("carol"), false)).await;
    assert!(present);
    sub.no_publish(Duration::from_millis(300)).await;
    publish(&publisher, "feed/b", "live").await;
    sub.no_publish(Duration::from_millis(300)).await;
    assert_eq!(b.server.broker().ctx.metrics.subscriptions_revoked.get(), 1);
}
