//! The control socket file: choosing its path, checking and creating its
//! directory safely, replacing a stale socket, binding with the configured
//! mode, and removing it on shutdown.
//!
//! Whoever can write the socket's directory can swap the socket (and then
//! answer `mqttctl` in mqttd's place) or plant symbolic links for mqttd to
//! follow, so the directory is checked before anything is created in it:
//!
//! - a **private** location (`$XDG_RUNTIME_DIR/mqttd`, `/tmp/mqttd-<uid>`,
//!   where another local user may have created the directory first) must be
//!   a real directory (not a symbolic link), owned by mqttd's user, with
//!   mode 0700 (no access for group or others); it is created so;
//! - a **configured** location (`/run/mqttd`, which only root can create,
//!   or the `control.socket` path an operator chose) must be a real
//!   directory owned by mqttd's user or root, and one owned by mqttd's user
//!   must not be writable by group or others (unless sticky); it is created
//!   with the search bits the socket mode needs.
//!
//! Anything else stops the broker with an error naming the directory. An
//! existing socket path is never followed: a symbolic link, a file that is
//! not a socket, or a socket owned by another user is refused, and only a
//! stale socket of our own is removed. The writability probe is created
//! with `O_EXCL`, so a planted link cannot make mqttd truncate a file.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// Who may own and enter a socket directory (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirPolicy {
    /// `/run/mqttd` or `control.socket`: chosen by an administrator.
    Configured,
    /// A fallback another local user could have prepared: ours alone.
    Private,
}

/// Binds at the explicit `path`, or at the first usable default candidate.
pub(crate) async fn bind_control_socket(
    path: Option<&Path>,
    mode: u32,
) -> Result<BoundSocket, ControlError> {
    match path {
        Some(p) => bind_at(p, mode, DirPolicy::Configured).await,
        None => bind_first(&default_candidates(), mode).await,
    }
}

/// The default locations with their policies: the system directory is
/// configured by root, every fallback is private.
fn default_candidates() -> Vec<(PathBuf, DirPolicy)> {
    let system = Path::new(mqttd_api::socket::SYSTEM_SOCKET_DIR);
    mqttd_api::socket::socket_path_candidates_from_env()
        .into_iter()
        .map(|p| {
            let policy = if p.parent() == Some(system) {
                DirPolicy::Configured
            } else {
                DirPolicy::Private
            };
            (p, policy)
        })
        .collect()
}

/// Tries each candidate in order. A location that cannot be used (directory
/// not creatable, not writable) moves on to the next; finding a live broker,
/// a non-socket file, a foreign socket or an unsafe directory stops, since
/// falling back would hide the problem (and `mqttctl`, which takes the
/// first existing candidate, would find the wrong socket).
pub(crate) async fn bind_first(
    candidates: &[(PathBuf, DirPolicy)],
    mode: u32,
) -> Result<BoundSocket, ControlError> {
    let mut tried = Vec::new();
    for (path, policy) in candidates {
        match bind_at(path, mode, *policy).await {
            Ok(bound) => return Ok(bound),
            Err(
                e @ (ControlError::AlreadyServing { .. }
                | ControlError::NotASocket { .. }
                | ControlError::SymlinkSocket { .. }
                | ControlError::ForeignSocket { .. }
                | ControlError::UnsafeSocketDir { .. }),
            ) => return Err(e),
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

/// Binds at `path`: prepares and checks its directory, clears a stale
/// socket, binds and sets the file mode.
pub(crate) async fn bind_at(
    path: &Path,
    mode: u32,
    policy: DirPolicy,
) -> Result<BoundSocket, ControlError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir, mode, policy).map_err(|e| match e {
            DirError::Unsafe(reason) => ControlError::UnsafeSocketDir {
                path: dir.to_path_buf(),
                reason,
            },
            DirError::Io(source) => ControlError::SocketDir {
                path: dir.to_path_buf(),
                source,
            },
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
    // chmod follows links: make sure the path is still the socket we bound.
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ControlError::SocketMode {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })?;
    Ok(BoundSocket { listener, guard })
}

/// Why a socket directory cannot be used.
#[derive(Debug)]
enum DirError {
    /// Not safe to use: stop with this explanation.
    Unsafe(String),
    /// Not usable (not creatable, not writable): maybe try elsewhere.
    Io(io::Error),
}

impl From<io::Error> for DirError {
    fn from(e: io::Error) -> Self {
        DirError::Io(e)
    }
}

/// Creates the socket directory if missing, then checks it against
/// `policy` without following a symbolic link, and that we can create
/// files in it.
fn prepare_dir(dir: &Path, socket_mode: u32, policy: DirPolicy) -> Result<(), DirError> {
    let ours = mqttd_api::socket::effective_uid();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir(dir, socket_mode, policy)?;
            std::fs::symlink_metadata(dir)?
        }
        Err(e) => return Err(e.into()),
    };
    let unsafe_dir = |why: String| {
        let fix = match policy {
            DirPolicy::Private => format!(
                "mqttd needs it to be its own (uid {ours}) with mode 0700; \
                 remove it if you did not create it, or set control.socket"
            ),
            DirPolicy::Configured => "fix its owner and mode, or set control.socket".to_owned(),
        };
        DirError::Unsafe(format!("{why}; {fix}"))
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
    match policy {
        DirPolicy::Private => {
            if owner != ours {
                return Err(unsafe_dir(format!(
                    "it is owned by uid {owner}, not by mqttd's user (uid {ours})"
                )));
            }
            if mode & 0o077 != 0 {
                return Err(unsafe_dir(format!(
                    "its mode {mode:04o} lets other users in"
                )));
            }
        }
        DirPolicy::Configured => {
            if owner != ours && owner != 0 {
                return Err(unsafe_dir(format!(
                    "it is owned by uid {owner}, neither mqttd's user (uid {ours}) nor root"
                )));
            }
            if owner == ours && mode & 0o022 != 0 && mode & 0o1000 == 0 {
                return Err(unsafe_dir(format!(
                    "its mode {mode:04o} lets group or others write to it"
                )));
            }
        }
    }
    // Binding needs write permission; fail here with a clear cause instead.
    // O_EXCL: never opens (or truncates) something planted under the name.
    let probe = dir.join(format!(
        ".mqttd-probe-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    std::fs::remove_file(&probe)?;
    Ok(())
}

/// Creates the directory: a private one with mode 0700, a configured one
/// letting in whoever the socket mode lets in (search permission for group
/// and others only when they may use the socket). Missing parents are
/// created only for a configured path; the final component is created with
/// `mkdir`, which never follows a link planted there meanwhile.
fn create_dir(dir: &Path, socket_mode: u32, policy: DirPolicy) -> io::Result<()> {
    let mut dir_mode = 0o700;
    if policy == DirPolicy::Configured {
        if socket_mode & 0o060 != 0 {
            dir_mode |= 0o050;
        }
        if socket_mode & 0o006 != 0 {
            dir_mode |= 0o005;
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
    }
    match std::fs::DirBuilder::new().mode(dir_mode).create(dir) {
        // Created meanwhile by someone else: the checks that follow decide.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// If `path` exists: a stale socket of ours (nobody answers) is removed; a
/// socket that accepts means another broker is running; a symbolic link, a
/// non-socket or another user's socket is refused and left alone.
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
    if meta.file_type().is_symlink() {
        return Err(ControlError::SymlinkSocket {
            path: path.to_path_buf(),
        });
    }
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let ours = mqttd_api::socket::effective_uid();
    if meta.uid() != ours {
        return Err(ControlError::ForeignSocket {
            path: path.to_path_buf(),
            owner: meta.uid(),
            ours,
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

    /// A temporary directory a private location may live in (0700).
    fn private_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn binds_with_mode_and_removes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mqttd.sock");
        let bound = bind_at(&path, 0o660, DirPolicy::Configured).await.unwrap();
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
        let bound = bind_at(&path, 0o600, DirPolicy::Configured).await.unwrap();
        assert_eq!(mode_of(&path), 0o600);
        drop(bound);
    }

    #[tokio::test]
    async fn live_socket_is_an_error() {
        let dir = private_tempdir();
        let path = dir.path().join("mqttd.sock");
        let first = bind_at(&path, 0o660, DirPolicy::Configured).await.unwrap();
        let err = bind_at(&path, 0o660, DirPolicy::Configured)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ControlError::AlreadyServing { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("another mqttd is already serving on"));
        // Even when the second is only a fallback candidate.
        let err = bind_first(&[(path.clone(), DirPolicy::Private)], 0o660)
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
        let err = bind_at(&path, 0o660, DirPolicy::Configured)
            .await
            .err()
            .unwrap();
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
            (blocker.join("mqttd/mqttd.sock"), DirPolicy::Private),
            (dir.path().join("ok/mqttd.sock"), DirPolicy::Private),
        ];
        let bound = bind_first(&candidates, 0o660).await.unwrap();
        assert_eq!(bound.guard.path(), candidates[1].0);
        assert_eq!(mode_of(&dir.path().join("ok")), 0o700);

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
        let bound = bind_at(&path, 0o660, DirPolicy::Configured).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(bound);
        assert!(path.exists());
    }

    /// uid of `nobody`, for files owned by another user.
    const NOBODY: u32 = 65534;

    fn is_root() -> bool {
        mqttd_api::socket::effective_uid() == 0
    }

    async fn refused(path: &Path, policy: DirPolicy) -> ControlError {
        // Through bind_first: the refusal stops the search, no fallback.
        let fallback = path.parent().unwrap().with_file_name("fallback/mqttd.sock");
        let err = bind_first(
            &[(path.to_path_buf(), policy), (fallback.clone(), policy)],
            0o660,
        )
        .await
        .err()
        .expect("refused");
        assert!(!fallback.exists(), "fell back past: {err}");
        err
    }

    #[tokio::test]
    async fn planted_symlink_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("attacker");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("mqttd-1000")).unwrap();
        for policy in [DirPolicy::Private, DirPolicy::Configured] {
            let err = refused(&dir.path().join("mqttd-1000/mqttd.sock"), policy).await;
            assert!(matches!(err, ControlError::UnsafeSocketDir { .. }), "{err}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "nothing created"
        );
    }

    #[tokio::test]
    async fn dir_of_another_user_is_refused() {
        if !is_root() {
            eprintln!("skipped: needs root to chown a directory to nobody");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("mqttd-0");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&planted)
            .unwrap();
        std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
        for policy in [DirPolicy::Private, DirPolicy::Configured] {
            let err = refused(&planted.join("mqttd.sock"), policy).await;
            assert!(matches!(err, ControlError::UnsafeSocketDir { .. }), "{err}");
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
        assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn private_dir_with_open_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("mqttd-0");
        for mode in [0o755, 0o750, 0o777, 0o701] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&open)
                .unwrap();
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = refused(&open.join("mqttd.sock"), DirPolicy::Private).await;
            assert!(matches!(err, ControlError::UnsafeSocketDir { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("mode {mode:04o}")),
                "{err}"
            );
            std::fs::remove_dir(&open).unwrap();
        }
        // A configured directory of ours may be entered by the group, not
        // written; a sticky one (like /tmp) may be written.
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(&open)
            .unwrap();
        drop(
            bind_at(&open.join("mqttd.sock"), 0o660, DirPolicy::Configured)
                .await
                .unwrap(),
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = refused(&open.join("mqttd.sock"), DirPolicy::Configured).await;
        assert!(
            err.to_string().contains("lets group or others write"),
            "{err}"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        drop(
            bind_at(&open.join("mqttd.sock"), 0o660, DirPolicy::Configured)
                .await
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn symlinked_socket_is_refused_and_not_followed() {
        let dir = private_tempdir();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        for (i, target) in [&victim, &stale].into_iter().enumerate() {
            let link = dir.path().join(format!("mqttd-{i}.sock"));
            std::os::unix::fs::symlink(target, &link).unwrap();
            let err = bind_at(&link, 0o666, DirPolicy::Private)
                .await
                .err()
                .unwrap();
            assert!(matches!(err, ControlError::SymlinkSocket { .. }), "{err}");
            assert!(std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(mode_of(&victim), 0o600);
        assert!(stale.exists());
    }

    #[tokio::test]
    async fn socket_of_another_user_is_not_replaced() {
        if !is_root() {
            eprintln!("skipped: needs root to chown a socket to nobody");
            return;
        }
        let dir = private_tempdir();
        let path = dir.path().join("mqttd.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        let err = bind_at(&path, 0o660, DirPolicy::Private)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ControlError::ForeignSocket { owner: NOBODY, .. }),
            "{err}"
        );
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), NOBODY);
    }
}
