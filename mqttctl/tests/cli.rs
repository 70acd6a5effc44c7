//! Runs the real `mqttctl` binary against the control server of the `mqttd`
//! crate, backed by its in-memory fake, on a temporary socket.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use mqttd::control::fake::{sample_recovery, sample_session, sample_store, FakeBackend};
use mqttd::control::{serve_control, ControlBackend, ControlConfig, ControlServer, TcpApiConfig};
use mqttd_api::{PoolInfo, SessionDetail, SessionPage, Status};
use tokio_util::sync::CancellationToken;

/// Upper bound for one mqttctl run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

struct Broker {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    backend: Arc<FakeBackend>,
    server: Option<ControlServer>,
    shutdown: CancellationToken,
}

impl Broker {
    /// Sessions `dev-1`..`dev-5` (odd ones connected, alice owns 1-2) and `x/1`.
    async fn start(tcp_token: Option<&str>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::new(4));
        for i in 1..=5 {
            let user = if i <= 2 { "alice" } else { "bob" };
            backend.insert(sample_session(&format!("dev-{i}"), i % 2 == 1, Some(user)));
        }
        backend.insert(sample_session("x/1", false, None));
        let cfg = ControlConfig {
            socket: Some(dir.path().join("mqttd.sock")),
            tcp: tcp_token.map(|t| TcpApiConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                token: Some(t.into()),
                token_file: None,
            }),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let server = serve_control(backend.clone(), &cfg, shutdown.clone())
            .await
            .unwrap();
        Broker {
            socket: server.socket_path().to_path_buf(),
            _dir: dir,
            backend,
            server: Some(server),
            shutdown,
        }
    }

    async fn ctl(&self, args: &[&str]) -> Run {
        run_with(
            &[],
            &[&["--socket", self.socket.to_str().unwrap()], args].concat(),
        )
        .await
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.join().await;
        }
        assert!(!self.socket.exists());
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs mqttctl with `env` set and every other MQTTD_* variable removed.
async fn run_with(env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqttctl"));
    for var in ["MQTTD_SOCKET", "MQTTD_URL", "MQTTD_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).args(args).kill_on_drop(true);
    let out: Output = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("mqttctl timed out")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ids(page: &SessionPage) -> Vec<&str> {
    page.sessions.iter().map(|s| s.client_id.as_str()).collect()
}

#[tokio::test]
async fn status_table_and_json() {
    let b = Broker::start(None).await;
    let r = b.ctl(&["status"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("sessions:      6\n"), "{}", r.stdout);
    assert!(r.stdout.contains("pool size:     4\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("LISTENER  KIND  BIND\nmqtt      tcp   0.0.0.0:1883\n"),
        "{}",
        r.stdout
    );

    for line in [
        "store:         fjall 3\n",
        "durability:    batched\n",
        "data dir:      /var/lib/mqttd\n",
        "disk:          1.5 MiB\n",
        "last fsync:    2023-12-31T23:59:55Z (",
        "recoveries:    none\n",
    ] {
        assert!(r.stdout.contains(line), "{line:?} in\n{}", r.stdout);
    }

    let s: Status = b.ctl(&["status", "-o", "json"]).await.json();
    assert_eq!((s.sessions, s.connections, s.pool_size), (6, 3, 4));
    assert_eq!(s.store, Some(sample_store()));
    b.stop().await;
}

#[tokio::test]
async fn status_shows_store_recoveries_and_memory_mode() {
    let b = Broker::start(None).await;
    let mut store = sample_store();
    store.recoveries.push(sample_recovery());
    b.backend.set_store(Some(store));
    let r = b.ctl(&["status"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recovery = sample_recovery();
    assert!(
        r.stdout
            .contains("recoveries:    1 (moved aside at start-up, see below)\n"),
        "{}",
        r.stdout
    );
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("2024-01-01T00:00:00Z"))
        .unwrap_or_else(|| panic!("no recovery row in\n{}", r.stdout));
    assert!(
        row.contains(&recovery.path) && row.ends_with(&recovery.reason),
        "{row}"
    );
    let s: Status = b.ctl(&["-o", "json", "status"]).await.json();
    assert_eq!(s.store.unwrap().recoveries, [recovery]);

    b.backend.set_store(Some(mqttd_api::StoreInfo {
        engine: "none".into(),
        path: None,
        durability: "memory".into(),
        disk_bytes: 0,
        last_fsync_at: None,
        recoveries: vec![],
    }));
    let r = b.ctl(&["status"]).await;
    assert!(r.stdout.contains("store:         none\n"), "{}", r.stdout);
    assert!(r.stdout.contains("durability:    memory ("), "{}", r.stdout);
    assert!(r.stdout.contains("recoveries:    none\n"), "{}", r.stdout);

    // A broker older than the store: no `store` field at all.
    b.backend.set_store(None);
    let r = b.ctl(&["status"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("store:         not reported"),
        "{}",
        r.stdout
    );
    let raw: serde_json::Value = b.ctl(&["status", "-o", "json"]).await.json();
    assert!(raw.get("store").is_none(), "{raw}");
    b.stop().await;
}

#[tokio::test]
async fn sessions_list_filters_and_pages() {
    let b = Broker::start(None).await;
    let r = b.ctl(&["sessions", "list"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut lines = r.stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("CLIENT ID  STATE"), "{header}");
    let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &first[..5],
        ["dev-1", "connected", "5.0", "alice", "10.0.0.7:51234"]
    );
    // An offline session shows how long it has been offline; a
    // connected one a dash.
    assert!(header.ends_with("OFFLINE FOR"), "{header}");
    assert_eq!(first.last(), Some(&"-"));
    let second: Vec<&str> = r
        .stdout
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(second[..2], ["dev-2", "disconnected"]);
    assert!(second.last().unwrap().ends_with('d'), "{second:?}");
    assert_eq!(r.stdout.lines().count(), 7);

    let p: SessionPage = b
        .ctl(&["sessions", "list", "--connected", "-o", "json"])
        .await
        .json();
    assert_eq!(ids(&p), ["dev-1", "dev-3", "dev-5"]);
    let p: SessionPage = b
        .ctl(&[
            "sessions",
            "list",
            "--disconnected",
            "--username",
            "alice",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(ids(&p), ["dev-2"]);
    let p: SessionPage = b
        .ctl(&["-o", "json", "sessions", "list", "--prefix", "x/"])
        .await
        .json();
    assert_eq!(ids(&p), ["x/1"]);

    // One page, with the way to the next on stderr.
    let r = b.ctl(&["sessions", "list", "--limit", "2"]).await;
    assert_eq!(r.stdout.lines().count(), 3);
    assert!(
        r.stderr
            .contains("2 of 6 sessions shown; next page: --cursor dev-2"),
        "{}",
        r.stderr
    );
    let p: SessionPage = b
        .ctl(&[
            "sessions", "list", "--limit", "2", "--cursor", "dev-2", "-o", "json",
        ])
        .await
        .json();
    assert_eq!(
        (ids(&p), p.next_cursor.as_deref()),
        (vec!["dev-3", "dev-4"], Some("dev-4"))
    );

    // --all follows the cursors, reporting progress on stderr.
    let r = b
        .ctl(&["sessions", "list", "--all", "--limit", "2", "-o", "json"])
        .await;
    let p: SessionPage = r.json();
    assert_eq!(
        ids(&p),
        ["dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "x/1"]
    );
    assert_eq!((p.total, p.next_cursor), (6, None));
    assert!(r.stderr.contains("fetched 4 of 6 sessions"), "{}", r.stderr);

    let r = b.ctl(&["sessions", "list", "--prefix", "zzz"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
    assert!(r.stderr.contains("no sessions match"));
    b.stop().await;
}

#[tokio::test]
async fn sessions_show() {
    let b = Broker::start(None).await;
    let r = b.ctl(&["sessions", "show", "x/1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("client id:       x/1\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("created at:      2024-01-01T00:00:00Z ("),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("disconnected at: 2024-01-01T00:02:00Z ("),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("FILTER         QOS\ndevices/x/1/#    1\n"),
        "{}",
        r.stdout
    );

    let d: SessionDetail = b
        .ctl(&["sessions", "show", "dev-1", "-o", "json"])
        .await
        .json();
    assert_eq!(d.summary.client_id, "dev-1");
    assert_eq!(d.keepalive_secs, 60);

    let r = b.ctl(&["sessions", "show", "nope"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "error: no session with client id \"nope\"\n");
    assert_eq!(r.stdout, "");
    b.stop().await;
}

#[tokio::test]
async fn sessions_destroy_reports_each() {
    let b = Broker::start(None).await;
    let r = b.ctl(&["sessions", "destroy", "dev-1", "x/1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "destroyed session \"dev-1\"\ndestroyed session \"x/1\"\n"
    );

    let r = b
        .ctl(&["sessions", "destroy", "dev-2", "gone", "dev-3"])
        .await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        "destroyed session \"dev-2\"\ndestroyed session \"dev-3\"\n"
    );
    assert!(
        r.stderr
            .contains("error: no session with client id \"gone\"\n"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("1 of 3 operations failed"),
        "{}",
        r.stderr
    );
    assert_eq!(b.backend.client_ids(), ["dev-4", "dev-5"]);

    let r = b
        .ctl(&["sessions", "destroy", "dev-4", "gone", "-o", "json"])
        .await;
    assert_eq!(r.code, 1);
    let v: serde_json::Value = r.json();
    assert_eq!(v[0]["destroyed"], true);
    assert_eq!(v[1]["client_id"], "gone");
    assert_eq!(v[1]["error"], "no session with client id \"gone\"");

    let r = b.ctl(&["sessions", "destroy", "gone"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: no session with client id \"gone\"\n")
    );
    assert_eq!(b.ctl(&["sessions", "destroy"]).await.code, 2);
    b.stop().await;
}

#[tokio::test]
async fn pool_show_and_resize() {
    let b = Broker::start(None).await;
    let r = b.ctl(&["pool", "show"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("pool size: 4\n\nWORKER  QUEUE  CREATED"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.lines().count(), 7);

    let p: PoolInfo = b.ctl(&["pool", "resize", "8", "-o", "json"]).await.json();
    assert_eq!((p.size, p.workers.len()), (8, 8));

    let r = b.ctl(&["pool", "resize", "0"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "error: pool size 0 is out of range: it must be between 1 and 1024\n"
    );
    let r = b.ctl(&["pool", "resize", "2000"]).await;
    assert!(r.stderr.contains("between 1 and 1024"), "{}", r.stderr);
    assert_eq!(b.ctl(&["pool", "resize", "many"]).await.code, 2);
    assert_eq!(b.backend.metrics().workers().len(), 8);
    b.stop().await;
}

#[tokio::test]
async fn unreachable_broker_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let r = run_with(&[], &["--socket", missing.to_str().unwrap(), "status"]).await;
    assert_eq!(r.code, 3);
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot reach mqttd at {}: no such file — is mqttd running? \
             pass --socket or set MQTTD_SOCKET\n",
            missing.display()
        )
    );
    // A user who set MQTTD_SOCKET is told it points nowhere, not to set it.
    let r = run_with(&[("MQTTD_SOCKET", missing.to_str().unwrap())], &["status"]).await;
    assert_eq!(r.code, 3);
    assert!(
        r.stderr
            .contains(&format!("MQTTD_SOCKET is set to {}", missing.display()))
            && !r.stderr.contains("set MQTTD_SOCKET"),
        "{}",
        r.stderr
    );

    // A socket file nobody listens on.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let r = run_with(
        &[],
        &["--socket", stale.to_str().unwrap(), "sessions", "list"],
    )
    .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("connection refused"), "{}", r.stderr);
    assert!(Path::new(&stale).exists());
}

#[tokio::test]
async fn tcp_api_with_token() {
    let b = Broker::start(Some("s3cret")).await;
    let addr = b.server.as_ref().unwrap().tcp_addr().unwrap();
    let url = format!("http://{addr}");
    let r = run_with(&[("MQTTD_URL", &url)], &["status"]).await;
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("pass --token or set MQTTD_TOKEN"),
        "{}",
        r.stderr
    );

    let r = run_with(
        &[("MQTTD_URL", &url), ("MQTTD_TOKEN", "s3cret")],
        &["sessions", "show", "x/1", "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d: SessionDetail = r.json();
    assert_eq!(d.summary.client_id, "x/1");
    b.stop().await;
}

#[tokio::test]
async fn completions_and_usage() {
    let r = run_with(&[], &["completions", "bash"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("mqttctl"));
    let r = run_with(&[], &["frobnicate"]).await;
    assert_eq!(r.code, 2);
    let r = run_with(&[], &["--help"]).await;
    assert!(r.stdout.contains("3  cannot reach mqttd"), "{}", r.stdout);
}

/// `passwd` works on a file: its help lists no broker-connection flag
/// (the broker commands' help still does).
#[tokio::test]
async fn passwd_help_lists_no_connection_flags() {
    for args in [&["passwd", "--help"][..], &["passwd", "add", "--help"]] {
        let r = run_with(&[], args).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        for flag in ["--socket", "--url", "--token"] {
            assert!(
                !r.stdout.contains(flag),
                "{flag} in {args:?}:\n{}",
                r.stdout
            );
        }
    }
    let r = run_with(&[], &["status", "--help"]).await;
    assert!(
        r.stdout.contains("--socket") && r.stdout.contains("--url"),
        "{}",
        r.stdout
    );
}

/// A malformed `--url` is a usage error (2); a URL that answers 404
/// without the API's error body (the metrics port, another server) is
/// "unreachable" (3) with a hint, not "the operation failed" (1).
#[tokio::test]
async fn wrong_url_is_usage_or_unreachable() {
    for bad in ["localhost:8081", "ftp://127.0.0.1/", "http//x"] {
        let r = run_with(&[], &["--url", bad, "status"]).await;
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("invalid --url"), "{}", r.stderr);
    }
    // A plain HTTP server answering 404 to everything, as the health and
    // metrics port does for /v1/status.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let r = run_with(&[], &["--url", &format!("http://{addr}"), "status"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("is --url the control API"),
        "{}",
        r.stderr
    );
    server.abort();
}
