//! mqttctl refuses a control socket (or socket directory) owned by another
//! user unless told to trust that user with --socket-owner; it follows a
//! symbolic link only to a socket whose owners it trusts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mqttd::control::fake::FakeBackend;
use mqttd::control::{serve_control, ControlConfig};
use tokio_util::sync::CancellationToken;

const NOBODY: u32 = 65534;

async fn mqttctl(args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqttctl"));
    for var in [
        "MQTTD_SOCKET",
        "MQTTD_URL",
        "MQTTD_TOKEN",
        "MQTTD_SOCKET_OWNER",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("mqttctl timed out")
        .expect("run mqttctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).expect("chown");
}

#[tokio::test]
async fn socket_owned_by_another_user_is_refused() {
    if mqttd_api::socket::effective_uid() != 0 {
        eprintln!("skipped: needs root to chown the socket to nobody");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = ControlConfig {
        socket: Some(dir.path().join("mqttd.sock")),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let server = serve_control(Arc::new(FakeBackend::new(2)), &cfg, shutdown.clone())
        .await
        .expect("control server");
    let socket = server.socket_path().to_path_buf();
    let s = socket.to_str().expect("utf-8 path");

    let (code, err) = mqttctl(&["--socket", s, "status"]).await;
    assert_eq!(code, 0, "{err}");

    // The socket of another user (as a planted one would be).
    chown(&socket, NOBODY);
    let (code, err) = mqttctl(&["--socket", s, "status"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains("--socket-owner"), "{err}");
    for owner in ["nobody", "65534"] {
        let (code, err) = mqttctl(&["--socket", s, "--socket-owner", owner, "status"]).await;
        assert_eq!(code, 0, "--socket-owner {owner}: {err}");
    }

    // A directory of another user.
    chown(&socket, 0);
    chown(dir.path(), NOBODY);
    let (code, err) = mqttctl(&["--socket", s, "status"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("directory of the socket is owned by uid 65534"),
        "{err}"
    );
    chown(dir.path(), 0);

    // A symbolic link is followed to a trusted socket only.
    let link_dir = tempfile::tempdir().expect("temp dir");
    let link = link_dir.path().join("link.sock");
    std::os::unix::fs::symlink(&socket, &link).expect("symlink");
    let l = link.to_str().expect("utf-8 path");
    let (code, err) = mqttctl(&["--socket", l, "status"]).await;
    assert_eq!(code, 0, "{err}");
    chown(&socket, NOBODY);
    let (code, err) = mqttctl(&["--socket", l, "status"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("-> {s}")), "{err}");
    chown(&socket, 0);
    assert_eq!(std::fs::metadata(&socket).expect("socket").uid(), 0);

    shutdown.cancel();
    server.join().await;
}
