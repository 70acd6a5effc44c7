//! Handler tests through `tower::ServiceExt::oneshot` (no socket), and
//! end-to-end tests of the served socket and TCP listener.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use mqttd_api::{ApiError, PoolInfo, SessionDetail, SessionPage, Status};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::fake::{sample_session, FakeBackend};
use super::*;

/// Largest body a test reads.
const BODY_LIMIT: usize = 1 << 20;

fn backend_with(ids: &[&str]) -> Arc<FakeBackend> {
    let b = Arc::new(FakeBackend::new(4));
    for (i, id) in ids.iter().enumerate() {
        b.insert(sample_session(
            id,
            i % 2 == 0,
            Some(if i < 2 { "alice" } else { "bob" }),
        ));
    }
    b
}

async fn call(
    router: Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), BODY_LIMIT)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn get_json<T: DeserializeOwned>(b: &Arc<FakeBackend>, uri: &str) -> (StatusCode, T) {
    let (status, body) = call(routes::api_router(b.clone()), Method::GET, uri, None).await;
    let parsed = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, parsed)
}

#[tokio::test]
async fn status_reports_counts() {
    let b = backend_with(&["a", "b", "c"]);
    let (code, s): (_, Status) = get_json(&b, "/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!((s.sessions, s.connections, s.pool_size), (3, 2, 4));
    let store = s.store.expect("the fake reports a store");
    assert_eq!(
        (store.engine.as_str(), store.durability.as_str()),
        ("fjall 3", "batched")
    );
}

#[tokio::test]
async fn status_without_store_omits_the_field() {
    let b = backend_with(&["a"]);
    b.set_store(None);
    let (code, body) = call(
        routes::api_router(b.clone()),
        Method::GET,
        "/v1/status",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v.get("store").is_none(), "{v}");
    let s: Status = serde_json::from_value(v).unwrap();
    assert_eq!(s.store, None);
}

#[tokio::test]
async fn sessions_are_paged_and_filtered() {
    let b = backend_with(&["d1", "d2", "d3", "x1"]);
    let (code, p): (_, SessionPage) = get_json(&b, "/v1/sessions?limit=2").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(p.total, 4);
    assert_eq!(p.sessions.len(), 2);
    let cursor = p.next_cursor.unwrap();
    let (_, p2): (_, SessionPage) =
        get_json(&b, &format!("/v1/sessions?limit=2&cursor={cursor}")).await;
    let ids: Vec<_> = p2.sessions.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["d3", "x1"]);
    assert_eq!(p2.next_cursor, None);

    let (_, p): (_, SessionPage) = get_json(&b, "/v1/sessions?prefix=d&connected=true").await;
    let ids: Vec<_> = p.sessions.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!((ids, p.total), (vec!["d1", "d3"], 2));
    let (_, p): (_, SessionPage) = get_json(&b, "/v1/sessions?username=bob").await;
    assert_eq!(p.total, 2);
}

#[tokio::test]
async fn bad_queries_are_400_with_a_reason() {
    let b = backend_with(&[]);
    for uri in [
        "/v1/sessions?limit=0",
        "/v1/sessions?limit=1001",
        "/v1/sessions?limit=x",
        "/v1/sessions?colour=red",
    ] {
        let (code, e): (_, ApiError) = get_json(&b, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(e.status, 400);
        assert!(!e.error.is_empty());
    }
    let (_, e): (_, ApiError) = get_json(&b, "/v1/sessions?limit=5000").await;
    assert!(e.error.contains("between 1 and 1000"), "{}", e.error);
}

#[tokio::test]
async fn show_and_destroy_session() {
    let b = backend_with(&["dev/1"]);
    // A client id with a slash travels percent-encoded.
    let (code, d): (_, SessionDetail) = get_json(&b, "/v1/sessions/dev%2F1").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(d.summary.client_id, "dev/1");
    assert_eq!(d.subscription_list[0].filter, "devices/dev/1/#");

    let router = routes::api_router(b.clone());
    let (code, _) = call(router.clone(), Method::DELETE, "/v1/sessions/dev%2F1", None).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert!(b.client_ids().is_empty());
    let (code, body) = call(router, Method::DELETE, "/v1/sessions/dev%2F1", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!(e.error, "no session with client id \"dev/1\"");

    let (code, e): (_, ApiError) = get_json(&b, "/v1/sessions/nope").await;
    assert_eq!((code, e.status), (StatusCode::NOT_FOUND, 404));
}

#[tokio::test]
async fn pool_show_and_resize() {
    let b = backend_with(&[]);
    let (_, p): (_, PoolInfo) = get_json(&b, "/v1/pool").await;
    assert_eq!((p.size, p.workers.len()), (4, 4));
    let router = routes::api_router(b.clone());
    let (code, body) = call(
        router.clone(),
        Method::POST,
        "/v1/pool/resize",
        Some(r#"{"size":8}"#),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let p: PoolInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(p.size, 8);
    assert_eq!(p.workers[7].index, 7);

    for bad in [
        r#"{"size":0}"#,
        r#"{"size":1025}"#,
        r#"{"size":"x"}"#,
        "nope",
    ] {
        let (code, body) = call(router.clone(), Method::POST, "/v1/pool/resize", Some(bad)).await;
        let e: ApiError = serde_json::from_slice(&body).unwrap();
        assert!(code.is_client_error(), "{bad}: {code}");
        assert_eq!(e.status, code.as_u16());
    }
    let (_, body) = call(
        router,
        Method::POST,
        "/v1/pool/resize",
        Some(r#"{"size":0}"#),
    )
    .await;
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        e.error,
        "pool size 0 is out of range: it must be between 1 and 1024"
    );
    assert_eq!(b.metrics().workers().len(), 8);
}

#[tokio::test]
async fn unknown_path_and_method_use_the_error_shape() {
    let b = backend_with(&[]);
    let (code, e): (_, ApiError) = get_json(&b, "/v2/status").await;
    assert_eq!(
        (code, e.error.as_str()),
        (StatusCode::NOT_FOUND, "no such endpoint: GET /v2/status")
    );
    let (code, body) = call(routes::api_router(b), Method::PUT, "/v1/status", None).await;
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, e.status), (StatusCode::METHOD_NOT_ALLOWED, 405));
}

#[tokio::test]
async fn health_endpoints() {
    let b = backend_with(&[]);
    let router = || http::health_router(b.clone());
    assert_eq!(
        call(router(), Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(router(), Method::GET, "/readyz", None).await.0,
        StatusCode::OK
    );
    b.set_ready(false);
    assert_eq!(
        call(router(), Method::GET, "/readyz", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(router(), Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    let (code, body) = call(router(), Method::GET, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(
        "# TYPE mqttd_session_manager_pool_size gauge\nmqttd_session_manager_pool_size 4\n"
    ));
}

/// Sends one raw HTTP/1.1 request and returns the whole answer.
async fn raw_request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
) -> String {
    let req = format!("{head}\r\nHost: mqttd\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn socket_serves_survives_bad_clients_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ControlConfig {
        socket: Some(dir.path().join("mqttd.sock")),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let server = serve_control(backend_with(&["a"]), &cfg, shutdown.clone())
        .await
        .unwrap();
    let path = server.socket_path().to_path_buf();
    assert_eq!(path, dir.path().join("mqttd.sock"));

    // Garbage and an abrupt close must not stop the accept loop.
    let mut junk = tokio::net::UnixStream::connect(&path).await.unwrap();
    junk.write_all(b"\x00\x01 not http\r\n\r\n").await.unwrap();
    drop(junk);
    drop(tokio::net::UnixStream::connect(&path).await.unwrap());

    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let answer = raw_request(stream, "GET /v1/status HTTP/1.1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"sessions\":1"), "{answer}");

    // A second broker on the same path is refused.
    let err = serve_control(backend_with(&[]), &cfg, CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!("another mqttd is already serving on {}", path.display())
    );

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), server.join())
        .await
        .unwrap();
    assert!(!path.exists(), "socket file left behind");
}

#[tokio::test]
async fn tcp_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ControlConfig {
        socket: Some(dir.path().join("mqttd.sock")),
        tcp: Some(TcpApiConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            token: None,
            token_file: None,
        }),
        ..Default::default()
    };
    let err = serve_control(backend_with(&[]), &cfg, CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ControlError::TcpWithoutToken));
    assert!(
        !dir.path().join("mqttd.sock").exists(),
        "nothing bound on a config error"
    );

    if let Some(tcp) = cfg.tcp.as_mut() {
        tcp.token = Some("s3cret".into());
    }
    let shutdown = CancellationToken::new();
    let server = serve_control(backend_with(&[]), &cfg, shutdown.clone())
        .await
        .unwrap();
    let addr = server.tcp_addr().unwrap();
    let connect = || tokio::net::TcpStream::connect(addr);
    let denied = raw_request(connect().await.unwrap(), "GET /v1/status HTTP/1.1").await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(denied.contains("\"status\":401"), "{denied}");
    let wrong = raw_request(
        connect().await.unwrap(),
        "GET /v1/pool HTTP/1.1\r\nAuthorization: Bearer s3creT",
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let ok = raw_request(
        connect().await.unwrap(),
        "GET /v1/pool HTTP/1.1\r\nAuthorization: Bearer s3cret",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    shutdown.cancel();
    server.join().await;
}

#[tokio::test]
async fn http_server_binds_port_zero() {
    let shutdown = CancellationToken::new();
    let cfg = HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..HttpConfig::default()
    };
    let server = serve_http(backend_with(&[]), &cfg, shutdown.clone())
        .await
        .unwrap();
    assert_ne!(server.local_addr().port(), 0);
    let stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let answer = raw_request(stream, "GET /healthz HTTP/1.1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The same address again is a bind error, returned not logged.
    let taken = HttpConfig {
        bind: server.local_addr(),
        ..HttpConfig::default()
    };
    let err = serve_http(backend_with(&[]), &taken, CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("cannot bind the health server on"),
        "{err}"
    );
    shutdown.cancel();
    server.join().await;
}

/// Collects log output for one test (the server runs on the test's thread).
#[derive(Clone, Default)]
struct LogBuf(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failed_token_attempts_are_logged_with_the_peer_never_the_token() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let cfg = ControlConfig {
        socket: Some(dir.path().join("mqttd.sock")),
        tcp: Some(TcpApiConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            token: Some("the-real-token".into()),
            token_file: None,
        }),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let backend = backend_with(&[]);
    let server = serve_control(backend.clone(), &cfg, shutdown.clone())
        .await
        .unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut peers = Vec::new();
    for n in 0..(throttle::LOG_BURST + 5) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        peers.push(stream.local_addr().unwrap());
        let guess = format!("GET /v1/pool HTTP/1.1\r\nAuthorization: Bearer guess-{n:03}");
        let answer = raw_request(stream, &guess).await;
        let expected = if n < throttle::MAX_FAILURES {
            "HTTP/1.1 401"
        } else {
            "HTTP/1.1 429"
        };
        assert!(answer.starts_with(expected), "{n}: {answer}");
    }
    shutdown.cancel();
    server.join().await;

    let text = String::from_utf8(logs.0.lock().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("wrong bearer token"))
        .collect();
    // One line per failure (the later requests were refused with 429
    // before their token was looked at).
    assert_eq!(lines.len(), throttle::MAX_FAILURES as usize, "{text}");
    for (line, peer) in lines.iter().zip(&peers) {
        assert!(line.contains(&peer.to_string()), "{line}");
    }
    assert!(!text.contains("guess-"), "a token in the logs: {text}");
    assert!(
        !text.contains("the-real-token"),
        "a token in the logs: {text}"
    );
    let m = backend.metrics();
    assert_eq!(
        m.control_auth_failures.get(),
        u64::from(throttle::MAX_FAILURES)
    );
    assert_eq!(
        m.control_auth_throttled.get(),
        u64::from(throttle::LOG_BURST)
    );
}
