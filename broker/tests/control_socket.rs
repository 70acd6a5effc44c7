//! The `mqttd` binary choosing its control socket location: a fallback
//! directory another local user prepared (a symbolic link, a directory of
//! another owner, an open mode) stops the broker with an error naming it;
//! a missing one is created private (0700). The broker runs as `nobody`,
//! so `/run/mqttd` is out of reach and `$XDG_RUNTIME_DIR/mqttd` is tried.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MQTTD: &str = env!("CARGO_BIN_EXE_mqttd");
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    mqttd_api::socket::effective_uid() == 0
}

/// A runtime directory owned by nobody holding the broker's config.
fn runtime_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("mqttd.yaml"),
        "listeners:\n  - bind: 127.0.0.1:0\nhttp:\n  bind: 127.0.0.1:0\n",
    )
    .expect("config");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
    dir
}

fn mqttd_as_nobody(xdg: &Path) -> Command {
    let mut cmd = Command::new(MQTTD);
    cmd.arg("--config")
        .arg(xdg.join("mqttd.yaml"))
        .arg("--data-dir")
        .arg(xdg.join("data"))
        .env("XDG_RUNTIME_DIR", xdg)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid(NOBODY)
        .gid(NOBODY);
    cmd
}

/// Runs the broker expecting it to refuse to start; returns its stderr.
fn refused(xdg: &Path) -> String {
    let mut child = mqttd_as_nobody(xdg).spawn().expect("spawn mqttd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mqttd started although its socket directory is unsafe");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out: Output = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unsafe_fallback_directories_stop_the_broker() {
    if !is_root() {
        eprintln!("skipped: needs root to run mqttd as nobody and chown");
        return;
    }
    let xdg = runtime_dir();
    let dir = xdg.path().join("mqttd");

    // A symbolic link to a directory of the attacker's choosing.
    let elsewhere = xdg.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::chown(&elsewhere, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::os::unix::fs::symlink(&elsewhere, &dir).expect("symlink");
    let err = refused(xdg.path());
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);
    std::fs::remove_file(&dir).expect("rm link");

    // Owned by another user (root here, from nobody's side).
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("mkdir");
    let err = refused(xdg.path());
    assert!(err.contains("owned by uid 0"), "{err}");

    // Ours, but open to others.
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = refused(xdg.path());
    assert!(err.contains("mode 0777"), "{err}");
    std::fs::remove_dir(&dir).expect("rmdir");

    // Absent: created private, and the broker serves there.
    let mut child = mqttd_as_nobody(xdg.path()).spawn().expect("spawn mqttd");
    let socket = dir.join("mqttd.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        assert!(child.try_wait().expect("wait").is_none(), "mqttd exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let served = socket.exists();
    let meta = std::fs::symlink_metadata(&dir);
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "socket bound in the created directory");
    let meta = meta.expect("directory created");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o700));
}
