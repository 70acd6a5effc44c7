//! The [`Auth`] facade: password file, ACL and HTTP hook combined.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mqttd_passwd::{Hasher, PasswordFile};
use serde_json::{json, Value};

use super::*;
use crate::config::{HookFailure, HttpHookConfig};

fn cheap() -> Hasher {
    Hasher::argon2id(64, 1, 1).unwrap()
}

fn write_passwords(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut f = PasswordFile::new();
    for (u, p) in users {
        f.add(u, p.as_bytes(), &cheap()).unwrap();
    }
    let path = dir.join("passwd");
    f.save(&path).unwrap();
    path
}

fn request<'a>(
    user: Option<&'a str>,
    pw: Option<&'a [u8]>,
    cert: &'a CertUser,
) -> ConnectRequest<'a> {
    ConnectRequest {
        peer: [127, 0, 0, 1].into(),
        client_id: "c1",
        username: user,
        password: pw,
        listener: "test",
        allow_anonymous: None,
        cert_user: cert,
    }
}

#[tokio::test]
async fn anonymous_follows_global_and_listener_setting() {
    let none = CertUser::None;
    let open = Auth::new(&AuthConfig::default()).unwrap();
    assert_eq!(
        open.authenticate(&request(None, None, &none))
            .await
            .unwrap()
            .username,
        None
    );
    let mut req = request(None, None, &none);
    req.allow_anonymous = Some(false);
    assert_eq!(open.authenticate(&req).await, Err(AuthError::NotAuthorized));

    let closed = Auth::new(&AuthConfig {
        allow_anonymous: false,
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(
        closed.authenticate(&request(None, None, &none)).await,
        Err(AuthError::NotAuthorized)
    );
    assert_eq!(
        closed
            .authenticate(&request(Some("u"), Some(b"p"), &none))
            .await,
        Err(AuthError::BadCredentials),
        "no credential store: a username proves nothing"
    );
    let mut req = request(None, None, &none);
    req.allow_anonymous = Some(true);
    assert!(closed.authenticate(&req).await.is_ok());
}

#[tokio::test]
async fn password_file_checks_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_passwords(dir.path(), &[("alice", "wonder")]);
    let auth = Auth::new(&AuthConfig {
        allow_anonymous: false,
        password_file: Some(path.clone()),
        ..AuthConfig::default()
    })
    .unwrap();
    let none = CertUser::None;
    let ok = auth
        .authenticate(&request(Some("alice"), Some(b"wonder"), &none))
        .await
        .unwrap();
    assert_eq!(ok.username.as_deref(), Some("alice"));
    assert_eq!(&*ok.client_id, "c1");
    let bad = auth
        .authenticate(&request(Some("alice"), Some(b"nope"), &none))
        .await;
    assert_eq!(bad, Err(AuthError::BadCredentials));
    let missing = auth
        .authenticate(&request(Some("alice"), None, &none))
        .await;
    assert_eq!(missing, Err(AuthError::BadCredentials));
    let unknown = auth
        .authenticate(&request(Some("bob"), Some(b"x"), &none))
        .await;
    assert_eq!(unknown, Err(AuthError::BadCredentials));

    write_passwords(dir.path(), &[("bob", "builder")]);
    auth.reload().unwrap();
    assert!(auth
        .authenticate(&request(Some("bob"), Some(b"builder"), &none))
        .await
        .is_ok());
    assert!(auth
        .authenticate(&request(Some("alice"), Some(b"wonder"), &none))
        .await
        .is_err());

    // A broken file keeps the previous contents.
    std::fs::write(&path, "garbage\n").unwrap();
    let err = auth.reload().unwrap_err().to_string();
    assert!(err.contains("passwd") && err.contains("line 1"), "{err}");
    assert!(auth
        .authenticate(&request(Some("bob"), Some(b"builder"), &none))
        .await
        .is_ok());
}

#[tokio::test]
async fn certificate_username_is_trusted() {
    let auth = Auth::new(&AuthConfig {
        allow_anonymous: false,
        ..AuthConfig::default()
    })
    .unwrap();
    let named = CertUser::Name("device-7".into());
    let c = auth
        .authenticate(&request(Some("ignored"), None, &named))
        .await
        .unwrap();
    assert_eq!(c.username.as_deref(), Some("device-7"));
    let unusable = CertUser::Unusable;
    let r = auth.authenticate(&request(None, None, &unusable)).await;
    assert_eq!(r, Err(AuthError::NotAuthorized));
}

#[test]
fn setup_errors_name_the_file() {
    let cfg = AuthConfig {
        password_file: Some("/nonexistent/mqttd-passwd".into()),
        ..AuthConfig::default()
    };
    let e = Auth::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/mqttd-passwd"), "{e}");
    let cfg = AuthConfig {
        acl_file: Some("/nonexistent/mqttd-acl".into()),
        ..AuthConfig::default()
    };
    let e = Auth::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/mqttd-acl"), "{e}");
}

#[tokio::test]
async fn acl_decides_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite a/#\ntopic deny a/secret\n",
    )
    .unwrap();
    let auth = Auth::new(&AuthConfig {
        acl_file: Some(acl.clone()),
        ..AuthConfig::default()
    })
    .unwrap();
    let alice = ClientCtx::new("c", Some("alice".into()), "l");
    assert!(auth.authorize_publish(&alice, "a/b").await);
    assert!(!auth.authorize_publish(&alice, "a/secret").await);
    assert!(auth.authorize_subscribe(&alice, "a/+/c").await);
    assert!(!auth.authorize_subscribe(&alice, "a/#").await);
    assert!(!auth.authorize_publish(&alice, "b").await);
    std::fs::write(&acl, "topic readwrite b\n").unwrap();
    auth.reload().unwrap();
    assert!(auth.authorize_publish(&alice, "b").await);
    assert!(!auth.authorize_publish(&alice, "a/b").await);
}

#[tokio::test]
async fn without_acl_or_hook_everything_is_allowed() {
    let auth = Auth::new(&AuthConfig::default()).unwrap();
    let c = ClientCtx::new("c", None, "l");
    assert!(auth.authorize_publish(&c, "any/topic").await);
    assert!(auth.authorize_subscribe(&c, "#").await);
}

#[test]
fn passwords_never_appear_in_debug_output() {
    let cert = CertUser::None;
    let r = request(Some("alice"), Some(b"hunter2"), &cert);
    let text = format!("{r:?}");
    assert!(
        !text.contains("hunter2") && text.contains("redacted"),
        "{text}"
    );
}

// ---- HTTP hook -------------------------------------------------------

/// A hook that allows alice/wonder, publishes under `ok/`, and counts
/// requests; `slow/` topics answer after 2 s; `broken/` gets a 500.
async fn hook_server() -> (SocketAddr, Arc<AtomicUsize>) {
    async fn handle(
        State(hits): State<Arc<AtomicUsize>>,
        Json(req): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        hits.fetch_add(1, Ordering::SeqCst);
        let topic = req["topic"].as_str().unwrap_or_default();
        if topic.starts_with("slow/") {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if topic.starts_with("broken/") {
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
        }
        let allow = match req["action"].as_str() {
            Some("connect") => req["username"] == "alice" && req["password"] == "wonder",
            Some("publish") | Some("subscribe") => {
                topic.starts_with("ok/") || topic.starts_with("slow/")
            }
            _ => false,
        };
        let result = if allow { "allow" } else { "deny" };
        (StatusCode::OK, Json(json!({ "result": result })))
    }
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/auth", post(handle))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

fn hook_config(url: String, on_error: HookFailure) -> AuthConfig {
    AuthConfig {
        allow_anonymous: false,
        http_hook: Some(HttpHookConfig {
            url,
            authenticate: true,
            authorize: true,
            timeout_ms: 500,
            cache_ttl_secs: 60,
            cache_max_entries: 100,
            on_error,
        }),
        ..AuthConfig::default()
    }
}

#[tokio::test]
async fn hook_authenticates_and_authorizes_with_cache() {
    let (addr, hits) = hook_server().await;
    let auth = Auth::new(&hook_config(
        format!("http://{addr}/auth"),
        HookFailure::Deny,
    ))
    .unwrap();
    let none = CertUser::None;
    let c = auth
        .authenticate(&request(Some("alice"), Some(b"wonder"), &none))
        .await
        .unwrap();
    assert_eq!(c.username.as_deref(), Some("alice"));
    let bad = auth
        .authenticate(&request(Some("alice"), Some(b"x"), &none))
        .await;
    assert_eq!(bad, Err(AuthError::BadCredentials));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "connect answers are not cached"
    );

    assert!(auth.authorize_publish(&c, "ok/1").await);
    assert!(!auth.authorize_subscribe(&c, "no/#").await);
    let before = hits.load(Ordering::SeqCst);
    assert!(auth.authorize_publish(&c, "ok/1").await);
    assert!(!auth.authorize_subscribe(&c, "no/#").await);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "answers came from the cache"
    );
    auth.reload().unwrap();
    assert!(auth.authorize_publish(&c, "ok/1").await);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + 1,
        "reload clears the cache"
    );
}

#[tokio::test]
async fn hook_failures_follow_on_error() {
    let (addr, _) = hook_server().await;
    let c = ClientCtx::new("c", Some("alice".into()), "l");
    let deny = Auth::new(&hook_config(
        format!("http://{addr}/auth"),
        HookFailure::Deny,
    ))
    .unwrap();
    assert!(
        !deny.authorize_publish(&c, "slow/1").await,
        "timeout denies"
    );
    assert!(!deny.authorize_publish(&c, "broken/1").await, "500 denies");
    let allow = Auth::new(&hook_config(
        format!("http://{addr}/auth"),
        HookFailure::Allow,
    ))
    .unwrap();
    assert!(
        allow.authorize_publish(&c, "broken/1").await,
        "on_error: allow"
    );

    // Nothing listens on the port of a dropped listener.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = gone.local_addr().unwrap();
    drop(gone);
    let down = Auth::new(&hook_config(
        format!("http://{dead}/auth"),
        HookFailure::Deny,
    ))
    .unwrap();
    let none = CertUser::None;
    let r = down
        .authenticate(&request(Some("alice"), Some(b"wonder"), &none))
        .await;
    assert_eq!(r, Err(AuthError::BadCredentials));
    assert!(!down.authorize_subscribe(&c, "ok/#").await);
}

#[tokio::test]
async fn acl_first_then_hook_for_unmatched() {
    let (addr, hits) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read local/#\ntopic deny ok/forbidden\n").unwrap();
    let mut cfg = hook_config(format!("http://{addr}/auth"), HookFailure::Deny);
    cfg.acl_file = Some(acl);
    let auth = Auth::new(&cfg).unwrap();
    let c = ClientCtx::new("c", None, "l");
    assert!(auth.authorize_subscribe(&c, "local/x").await);
    assert!(
        !auth.authorize_publish(&c, "ok/forbidden").await,
        "ACL deny is final"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert!(
        auth.authorize_publish(&c, "ok/other").await,
        "no rule: the hook decides"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn publish_decided_now_unless_only_the_hook_can_answer() {
    let c = ClientCtx::new("c", None, "l");
    let open = Auth::new(&AuthConfig::default()).unwrap();
    assert!(!open.restricts());
    assert_eq!(open.authorize_publish_now(&c, "any"), Some(true));

    let (addr, hits) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic write local/#\ntopic deny local/no\n").unwrap();
    let mut cfg = hook_config(format!("http://{addr}/auth"), HookFailure::Deny);
    cfg.acl_file = Some(acl.clone());
    let hooked = Auth::new(&cfg).unwrap();
    assert!(hooked.restricts());
    assert_eq!(hooked.authorize_publish_now(&c, "local/x"), Some(true));
    assert_eq!(hooked.authorize_publish_now(&c, "local/no"), Some(false));
    assert_eq!(hooked.authorize_publish_now(&c, "elsewhere"), None);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "never asks the hook");

    let acl_only = Auth::new(&AuthConfig {
        acl_file: Some(acl),
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(acl_only.authorize_publish_now(&c, "elsewhere"), Some(false));
}

#[test]
fn identity_is_the_username_or_anonymous() {
    let anon = ClientCtx::new("dev", None, "l").identity();
    let alice = ClientCtx::new("dev", Some("alice".into()), "l").identity();
    assert_eq!(anon, Identity::Anonymous);
    assert_eq!(alice, Identity::of(Some("alice")));
    assert_ne!(
        alice,
        ClientCtx::new("dev", Some("bob".into()), "m").identity()
    );
    assert_eq!(
        alice,
        ClientCtx::new("other", Some("alice".into()), "m").identity()
    );
}
