//! Interoperability with Eclipse Mosquitto's command-line clients
//! (`mosquitto_pub`, `mosquitto_sub`), installed by the test command.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;

fn have_mosquitto_clients() -> bool {
    std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

async fn pub_(port: u16, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub {args:?}");
}

#[tokio::test]
async fn mosquitto_clients_exchange_messages_at_every_qos() {
    if !have_mosquitto_clients() {
        panic!("mosquitto-clients are not installed: run the README's test command");
    }
    let b = start_broker("").await;
    let port = b.addr.port();
    pub_(
        port,
        &["-t", "interop/retained", "-m", "kept", "-r", "-q", "1"],
    )
    .await;
    for qos in ["0", "1", "2"] {
        let sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "interop/#", "-q", qos, "-C", "2", "-v", "-W", "5"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        tokio::time::sleep(Duration::from_millis(300)).await;
        pub_(
            port,
            &["-t", "interop/live", "-m", &format!("q{qos}"), "-q", qos],
        )
        .await;
        let out = sub.wait_with_output().await.expect("mosquitto_sub output");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "mosquitto_sub failed: {text}");
        assert!(text.contains("interop/retained kept"), "{text}");
        assert!(text.contains(&format!("interop/live q{qos}")), "{text}");
    }
}
