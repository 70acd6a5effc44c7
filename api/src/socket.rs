//! Where the control socket lives by default.
//!
//! The broker and `mqttctl` walk the same ordered list of candidates:
//!
//! 1. `/run/mqttd/mqttd.sock` — the system location (a packaged service or a
//!    container whose image prepares `/run/mqttd`);
//! 2. `$XDG_RUNTIME_DIR/mqttd/mqttd.sock` — a per-user runtime directory,
//!    when that variable holds an absolute path;
//! 3. `/tmp/mqttd-<uid>/mqttd.sock` — last resort for an unprivileged user.
//!
//! The broker binds at the first candidate whose directory it can write or
//! create; `mqttctl` connects to the first candidate that exists. An explicit
//! path (config `control.socket`, `mqttctl --socket`, `MQTTD_SOCKET`) skips
//! the list entirely.

use std::path::{Path, PathBuf};

/// File name of the socket inside each candidate directory.
pub const SOCKET_FILE_NAME: &str = "mqttd.sock";

/// The system socket directory, tried first.
pub const SYSTEM_SOCKET_DIR: &str = "/run/mqttd";

/// Environment variable `mqttctl` reads the socket path from.
pub const SOCKET_ENV: &str = "MQTTD_SOCKET";

/// `/run/mqttd/mqttd.sock`, the first candidate.
pub fn default_socket_path() -> PathBuf {
    Path::new(SYSTEM_SOCKET_DIR).join(SOCKET_FILE_NAME)
}

/// The candidates in order, from explicit inputs (pure, for tests).
///
/// `xdg_runtime_dir` is ignored unless it is an absolute path, as the XDG
/// base directory specification requires.
pub fn socket_path_candidates(xdg_runtime_dir: Option<&Path>, uid: u32) -> Vec<PathBuf> {
    let mut out = vec![default_socket_path()];
    if let Some(dir) = xdg_runtime_dir.filter(|d| d.is_absolute()) {
        out.push(dir.join("mqttd").join(SOCKET_FILE_NAME));
    }
    out.push(
        Path::new("/tmp")
            .join(format!("mqttd-{uid}"))
            .join(SOCKET_FILE_NAME),
    );
    out
}

/// The candidates for this process: reads `XDG_RUNTIME_DIR` and the real
/// user id.
pub fn socket_path_candidates_from_env() -> Vec<PathBuf> {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    socket_path_candidates(xdg.as_deref(), current_uid())
}

/// The path a client should connect to when given none: the first candidate
/// that exists, else the first candidate (so the error names the usual place).
pub fn client_socket_path() -> PathBuf {
    let candidates = socket_path_candidates_from_env();
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or(&candidates[0])
        .clone()
}

/// The real user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions, touches no memory of ours and
    // cannot fail (POSIX).
    unsafe { libc::getuid() }
}

/// The effective user id of this process: the owner of the files it
/// creates, and the owner a safe socket directory must have.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and
    // cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_in_order() {
        let c = socket_path_candidates(Some(Path::new("/run/user/1000")), 1000);
        assert_eq!(
            c,
            vec![
                PathBuf::from("/run/mqttd/mqttd.sock"),
                PathBuf::from("/run/user/1000/mqttd/mqttd.sock"),
                PathBuf::from("/tmp/mqttd-1000/mqttd.sock"),
            ]
        );
    }

    #[test]
    fn relative_or_missing_xdg_is_skipped() {
        let expected = vec![
            PathBuf::from("/run/mqttd/mqttd.sock"),
            PathBuf::from("/tmp/mqttd-7/mqttd.sock"),
        ];
        assert_eq!(socket_path_candidates(None, 7), expected);
        assert_eq!(
            socket_path_candidates(Some(Path::new("run/user")), 7),
            expected
        );
    }
}
