//! The control socket file: choosing its path, replacing a stale one,
//! binding with the configured mode, and removing it on shutdown.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use super::error::ControlError;

/// How long probing an existing socket may take before it counts as live
/// (a busy broker may be slow to accept, but it is still there).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A bound control socket and the guard that removes its file.
pub(crate) struct BoundSocket {
    pub listener: UnixListener,
    pub guard: SocketFileGuard,
}

/// Removes the socket file when dropped, unless another process has since
/// replaced it (the device and inode no longer match).
#[derive(Debug)]
pub(crate) struct SocketFileGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFileGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFileGuard {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), "cannot remove control socket: {e}");
            }
        }
    }
}

/// Binds at the explicit `path`, or at the first usable default candidate.
pub(crate) async fn bind_control_socket(
    path: Option<&Path>,
    mode: u32,
) -> Result<BoundSocket, ControlError> {
    match path {
        Some(p) => bind_at(p, mode).await,
        None => bind_first(&mqttd_api::socket::socket_path_candidates_from_env(), mode).await,
    }
}

/// Tries each candidate in order. A location that cannot be used (directory
/// not creatable, not writable) moves on to the next; finding a live broker
/// or a non-socket file stops, since falling back would hide the problem.
pub(crate) async fn bind_first(
    candidates: &[PathBuf],
    mode: u32,
) -> Result<BoundSocket, ControlError> {
    let mut tried = Vec::new();
    for path in candidates {
        match bind_at(path, mode).await {
            Ok(bound) => return Ok(bound),
            Err(e @ (ControlError::AlreadyServing { .. } | ControlError::NotASocket { .. })) => {
                return Err(e)
            }
            Err(e) => {
                tracing::debug!("control socket location unusable: {e}");
                tried.push(e.to_string());
            }
        }
    }
    Err(ControlError::NoSocketLocation {
        tried: tried.join("; "),
    })
}

/// Binds at `path`: prepares its directory, clears a stale socket, binds and
/// sets the file mode.
pub(crate) async fn bind_at(path: &Path, mode: u32) -> Result<BoundSocket, ControlError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir, mode).map_err(|source| ControlError::SocketDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    clear_stale(path).await?;
    let bind_err = |source| ControlError::BindSocket {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    // Build the guard first so the file is removed if chmod fails.
    let guard = SocketFileGuard {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ControlError::SocketMode {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })?;
    Ok(BoundSocket { listener, guard })
}

/// Creates the socket directory if missing. A directory we create lets in
/// whoever the socket mode lets in (search permission for group and others
/// only when they may use the socket); an existing one is left alone.
fn prepare_dir(dir: &Path, socket_mode: u32) -> io::Result<()> {
    if !dir.is_dir() {
        let mut dir_mode = 0o700;
        if socket_mode & 0o060 != 0 {
            dir_mode |= 0o050;
        }
        if socket_mode & 0o006 != 0 {
            dir_mode |= 0o005;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(dir)?;
    }
    // Binding needs write permission; fail here with a clear cause instead.
    let probe = dir.join(format!(".mqttd-probe-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// If `path` exists: a socket nobody answers on is stale and removed; a
/// socket that accepts means another broker is running; anything else is an
/// error.
async fn clear_stale(path: &Path) -> Result<(), ControlError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Probe {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let probe_err = |source| ControlError::Probe {
        path: path.to_path_buf(),
        source,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale control socket");
            std::fs::remove_file(path).map_err(probe_err)
        }
        Ok(Err(e)) => Err(probe_err(e)),
        Ok(Ok(_)) | Err(_) => Err(ControlError::AlreadyServing {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn binds_with_mode_and_removes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mqttd.sock");
        let bound = bind_at(&path, 0o660).await.unwrap();
        assert_eq!(mode_of(&path), 0o660);
        assert_eq!(mode_of(path.parent().unwrap()), 0o750);
        assert_eq!(bound.guard.path(), path);
        drop(bound);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqttd.sock");
        // A socket file with nobody listening: bind, then drop the listener
        // without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let bound = bind_at(&path, 0o600).await.unwrap();
        assert_eq!(mode_of(&path), 0o600);
        drop(bound);
    }

    #[tokio::test]
    async fn live_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqttd.sock");
        let first = bind_at(&path, 0o660).await.unwrap();
        let err = bind_at(&path, 0o660).await.err().unwrap();
        assert!(matches!(err, ControlError::AlreadyServing { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("another mqttd is already serving on"));
        // Even when the second is only a fallback candidate.
        let err = bind_first(std::slice::from_ref(&path), 0o660)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ControlError::AlreadyServing { .. }));
        drop(first);
    }

    #[tokio::test]
    async fn regular_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqttd.sock");
        std::fs::write(&path, b"keep me").unwrap();
        let err = bind_at(&path, 0o660).await.err().unwrap();
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn falls_back_past_unusable_locations() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where a directory should be: not creatable, even as root.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let candidates = [
            blocker.join("mqttd/mqttd.sock"),
            dir.path().join("ok/mqttd.sock"),
        ];
        let bound = bind_first(&candidates, 0o660).await.unwrap();
        assert_eq!(bound.guard.path(), candidates[1]);

        let err = bind_first(&candidates[..1], 0o660).await.err().unwrap();
        assert!(
            matches!(err, ControlError::NoSocketLocation { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn guard_spares_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqttd.sock");
        let bound = bind_at(&path, 0o660).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(bound);
        assert!(path.exists());
    }
}
