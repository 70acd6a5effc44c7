//! The `mqttd` binary: flags, config checking, signals.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MQTTD: &str = env!("CARGO_BIN_EXE_mqttd");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn version_and_help() {
    let out = Command::new(MQTTD).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(MQTTD).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--check-config"] {
        assert!(help.contains(flag), "{flag} in help");
    }
}

#[test]
fn check_config_accepts_good_and_names_key_in_bad() {
    let mut good = tempfile::NamedTempFile::new().expect("temp");
    writeln!(
        good,
        "listeners:\n  - bind: 127.0.0.1:1883\nlog:\n  format: json\nstorage:\n  durability: memory"
    )
    .expect("write");
    let out = Command::new(MQTTD)
        .arg("--check-config")
        .arg(good.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");

    let mut bad = tempfile::NamedTempFile::new().expect("temp");
    writeln!(bad, "mqtt:\n  max_inflight_messages: -3").expect("write");
    let out = Command::new(MQTTD)
        .arg("--check-config")
        .arg(bad.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&bad.path().display().to_string()), "{err}");
    assert!(err.contains("mqtt.max_inflight_messages"), "{err}");

    let out = Command::new(MQTTD)
        .args(["--config", "/nonexistent/mqttd.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mqttd.yaml"));
}

/// The real binary on a free port, with its own config, control socket
/// and a private HTTP port; `dir` must outlive it.
async fn spawn_mqttd(dir: &std::path::Path) -> (std::process::Child, std::net::SocketAddr) {
    let port = free_port();
    let config = dir.join("mqttd.yaml");
    std::fs::write(&config, "http:\n  bind: 127.0.0.1:0\n").expect("write config");
    let child = Command::new(MQTTD)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--control-socket")
        .arg(dir.join("mqttd.sock"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mqttd");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mqttd did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits up to `limit` for `child` to exit, and checks it exited 0.
async fn assert_exits_cleanly(mut child: std::process::Child, limit: Duration) {
    let stopped = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(stopped.elapsed() < limit, "mqttd did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (child, addr) = spawn_mqttd(dir.path()).await;
    let _client = common::connect_id(addr, "alive").await;
    sigterm(&child);
    assert_exits_cleanly(child, Duration::from_secs(10)).await;
}

/// SIGTERM publishes the wills of the clients it disconnects to the
/// subscribers still connected before closing them (docs/security.md,
/// "shutdown delivers wills"): the real binary and a real signal, rumqttc
/// clients with wills and a raw-socket subscriber (rumqttc's event loop
/// drops what it read when the close arrives in the same read).
#[tokio::test]
async fn sigterm_delivers_wills_to_connected_subscribers() {
    const WILLS: usize = 5;
    let dir = tempfile::tempdir().expect("temp dir");
    let (child, addr) = spawn_mqttd(dir.path()).await;
    let (mut sub, _) = common::raw_connect(addr, "will-subscriber", 0x02).await;
    sub.send(&common::subscribe_bytes(1, "gone/#", 1)).await;
    let (h, _) = sub.read().await.expect("SUBACK");
    assert_eq!(h, 0x90, "SUBACK");
    let mut clients = Vec::new();
    for i in 0..WILLS {
        let mut opts = common::options(addr, &format!("will-{i}"));
        opts.set_last_will(rumqttc::LastWill::new(
            format!("gone/{i}"),
            "offline",
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
        clients.push(common::connect(opts).await);
    }
    sigterm(&child);
    let mut got = std::collections::BTreeSet::new();
    // Everything the subscriber reads until the broker closes it.
    while let Some((h, body)) = sub.read().await {
        if h >> 4 == 3 {
            got.insert(common::parse_publish(h, &body).0);
        }
    }
    let want: std::collections::BTreeSet<_> = (0..WILLS).map(|i| format!("gone/{i}")).collect();
    assert_eq!(
        got, want,
        "every will reached the subscriber before it was closed"
    );
    assert_exits_cleanly(child, Duration::from_secs(20)).await;
}

/// A SIGTERM as soon as the broker accepts clients stops it cleanly (exit
/// status 0), not by the signal's default action: its handlers are in
/// place before it starts.
#[test]
fn sigterm_as_soon_as_it_is_ready_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let spec = common::process::Spec {
        dir: dir.path(),
        data_dir: &data,
        durability: None,
        extra_yaml: "",
        log_level: common::process::QUIET,
    };
    for _ in 0..10 {
        let broker = common::process::Mqttd::start(&spec).running();
        let (status, log) = broker.terminate();
        assert!(status.success(), "exit status {status}:\n{log}");
    }
}

/// `mqttd --check-config FILE [flags]`: exit code and stderr.
fn check_config(yaml: &str, flags: &[&str]) -> (Option<i32>, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(yaml.as_bytes()).expect("write");
    let out = Command::new(MQTTD)
        .arg("--check-config")
        .arg(file.path())
        .args(flags)
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each of these said "configuration is valid" and then failed at start:
/// `--check-config` now runs start-up's own checks (preflight) and names
/// what is wrong, exit code 2.
#[test]
fn check_config_runs_every_start_up_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("cert.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let bad_acl = dir.path().join("acl");
    std::fs::write(&bad_acl, "user\n").expect("write");
    let a_file = dir.path().join("file");
    std::fs::write(&a_file, "").expect("write");
    let cases: Vec<(String, Vec<&str>, String)> = vec![
        (
            "control:\n  tcp:\n    bind: 127.0.0.1:0\n".into(),
            vec![],
            "control.tcp".into(),
        ),
        (
            "log:\n  level: mqttd=loud\n".into(),
            vec![],
            "log.level".into(),
        ),
        (
            "listeners:\n  - {name: a, bind: 127.0.0.1:1883}\n  - {name: b, kind: ws, bind: 0.0.0.0:1883}\n".into(),
            vec![],
            "listeners[1].bind".into(),
        ),
        // The default HTTP port under a --listen given on the command line.
        (String::new(), vec!["--listen", "0.0.0.0:8080"], "http.bind".into()),
        (
            format!(
                "listeners:\n  - kind: tls\n    bind: 127.0.0.1:0\n    tls: {{cert_file: {0}, key_file: {0}}}\n",
                not_pem.display()
            ),
            vec![],
            not_pem.display().to_string(),
        ),
        (
            "auth:\n  password_file: /nonexistent/passwd\n".into(),
            vec![],
            "/nonexistent/passwd".into(),
        ),
        (
            format!("auth:\n  acl_file: {}\n", bad_acl.display()),
            vec![],
            bad_acl.display().to_string(),
        ),
        (
            format!("storage:\n  data_dir: {}\n", a_file.join("data").display()),
            vec![],
            "storage.data_dir".into(),
        ),
    ];
    for (yaml, flags, named) in cases {
        let (code, err) = check_config(&yaml, &flags);
        assert_eq!(code, Some(2), "{yaml} {flags:?}: {err}");
        assert!(err.contains(&named), "{yaml}: {named} not in {err}");
    }
    // And a config using all of it correctly passes.
    let (code, err) = check_config(
        &format!(
            "control:\n  tcp:\n    bind: 127.0.0.1:0\n    token: s3cret\nlog:\n  level: mqttd=debug,info\nhttp:\n  enabled: false\nstorage:\n  data_dir: {}\n",
            dir.path().join("data").display()
        ),
        &["--listen", "0.0.0.0:8080"],
    );
    assert_eq!(code, Some(0), "{err}");
}

/// `--http ADDR` moves the health and metrics server; `--http off` (or
/// `http.enabled: false`) leaves it out, so its port stays free.
#[tokio::test]
async fn http_flag_moves_or_disables_the_health_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mqtt, http) = (free_port(), free_port());
    let config = dir.path().join("mqttd.yaml");
    std::fs::write(&config, format!("http:\n  bind: 127.0.0.1:{http}\n")).expect("write");
    for flag in [format!("127.0.0.1:{http}"), "off".to_string()] {
        let mut child = Command::new(MQTTD)
            .args(["--listen", &format!("127.0.0.1:{mqtt}"), "--http", &flag])
            .arg("--config")
            .arg(&config)
            .arg("--control-socket")
            .arg(dir.path().join("mqttd.sock"))
            .args(["--durability", "memory"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mqttd");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", mqtt)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mqttd did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let health = std::net::TcpStream::connect(("127.0.0.1", http));
        sigterm(&child);
        let _ = child.wait();
        assert_eq!(health.is_ok(), flag != "off", "--http {flag}");
    }
}

/// With stderr a pipe (docker logs, journald) the log has no ANSI colour
/// codes, and a failed start says why once: no second copy of the error,
/// no repeated "(os error 98)".
#[test]
fn failed_start_is_reported_once_in_plain_text() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(MQTTD)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--http", "off"])
        .arg("--control-socket")
        .arg(dir.path().join("mqttd.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("\x1b["), "colour codes in a pipe: {err:?}");
    assert!(err.contains("INFO"), "the log ran: {err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert_eq!(
        err.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "{err}"
    );
}

/// The README, read from the workspace.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README")
}

/// The first fenced block (after its opening ```line) that follows
/// `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let rest = &text[text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in README"))..];
    let start = rest.find("```").expect("a block") + 3;
    let body = &rest[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    &body[..body.find("```").expect("closing fence")]
}

/// "An empty file gives the defaults shown here": the README's sample
/// configuration parses, and gives exactly the defaults.
#[test]
fn readme_sample_config_is_the_defaults() {
    let text = readme();
    let sample = block_after(&text, "an empty file gives the defaults shown here");
    for section in [
        "listeners:",
        "control:",
        "http:",
        "storage:",
        "auth:",
        "mqtt:",
        "limits:",
    ] {
        assert!(
            sample.contains(&format!("\n{section}")) || sample.starts_with(section),
            "{section} in the sample"
        );
    }
    let parsed = mqttd::config::Config::parse(sample, std::path::Path::new("README.md"))
        .unwrap_or_else(|e| panic!("README sample: {e}"));
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", mqttd::config::Config::default()),
        "the README's sample is the defaults"
    );
}

/// The README's bad example gives, word for word, the error it shows.
#[test]
fn readme_bad_config_example_prints_what_readme_says() {
    let text = readme();
    let yaml = block_after(&text, "With this `mqttd.yaml`:");
    let shown = block_after(&text, "`mqttd --check-config mqttd.yaml` prints:");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("mqttd.yaml"), yaml).expect("write");
    let out = Command::new(MQTTD)
        .args(["--check-config", "mqttd.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), shown);
}

/// One list of protocol versions everywhere it is stated: README,
/// `--help`, the image label, the chart.
#[test]
fn protocol_versions_agree_everywhere() {
    const VERSIONS: &str = "MQTT 3.1, 3.1.1 and 5.0 broker";
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let help = Command::new(MQTTD).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for (what, text) in [
        ("README.md", readme()),
        ("mqttd --help", help),
        (
            "docker/Dockerfile",
            std::fs::read_to_string(format!("{root}/docker/Dockerfile")).expect("Dockerfile"),
        ),
        (
            "helm/mqttd/Chart.yaml",
            std::fs::read_to_string(format!("{root}/helm/mqttd/Chart.yaml")).expect("Chart.yaml"),
        ),
    ] {
        assert!(text.contains(VERSIONS), "{what} says {VERSIONS:?}");
    }
}
