//! What can go wrong, as sentences a person can act on, and the exit code
//! of each kind.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Exit code when the operation failed (not found, rejected, server error).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage error (as clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when mqttd cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No connection, or the broker refused us (socket, permissions, token).
    #[error("{0}")]
    Unreachable(String),
    /// The broker answered 404.
    #[error("{0}")]
    NotFound(String),
    /// The broker answered 4xx/5xx with this reason.
    #[error("{0}")]
    Failed(String),
    /// Flags that parse but cannot be used (e.g. a malformed --url).
    #[error("{0}")]
    Usage(String),
    /// Several operations were attempted and some failed (already reported).
    #[error("{failed} of {total} operations failed")]
    Partial { failed: usize, total: usize },
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Unreachable(_) => EXIT_UNREACHABLE,
            CtlError::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }
}

/// Explains why the socket at `path` cannot be used, given the I/O error
/// met while connecting (or checking the path).
pub fn socket_unreachable(path: &Path, err: &io::Error) -> CtlError {
    socket_unreachable_with(path, err, std::env::var_os("MQTTD_SOCKET"))
}

/// [`socket_unreachable`] given the value of `MQTTD_SOCKET`: a user who
/// set it is not told to set it.
fn socket_unreachable_with(
    path: &Path,
    err: &io::Error,
    env_socket: Option<std::ffi::OsString>,
) -> CtlError {
    let at = format!("cannot reach mqttd at {}", path.display());
    let msg = match err.kind() {
        io::ErrorKind::NotFound => match env_socket.filter(|v| !v.is_empty()) {
            Some(v) => format!(
                "{at}: no such file — is mqttd running? MQTTD_SOCKET is set to {}: \
                 make it mqttd's control.socket, or unset it to use the default locations",
                Path::new(&v).display()
            ),
            None => {
                format!("{at}: no such file — is mqttd running? pass --socket or set MQTTD_SOCKET")
            }
        },
        io::ErrorKind::PermissionDenied => {
            format!("{at}: permission denied — {}", permission_hint(path))
        }
        io::ErrorKind::ConnectionRefused => format!(
            "{at}: connection refused — the socket file exists but no mqttd is listening \
             (left over from a stopped broker?)"
        ),
        _ => format!("{at}: {err}"),
    };
    CtlError::Unreachable(msg)
}

/// Who may use the socket, from its owner, group and mode.
fn permission_hint(path: &Path) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return "a directory on the way is not accessible to you; \
                run mqttctl as the user mqttd runs as, or with sudo"
            .into();
    };
    let mode = meta.permissions().mode() & 0o777;
    let owner = name_of("/etc/passwd", meta.uid()).unwrap_or_else(|| meta.uid().to_string());
    let group = name_of("/etc/group", meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    permission_advice(&owner, &group, meta.gid(), mode)
}

/// What to do about a socket owned by `owner:group` (gid `gid`) with
/// `mode`. Joining the group is advised only when it would help: the
/// group may connect (mode g+rw) and it is not root's group (gid 0),
/// which would hand out far more than mqttctl.
fn permission_advice(owner: &str, group: &str, gid: u32, mode: u32) -> String {
    let facts = format!("the socket is owned by {owner}:{group} with mode {mode:04o}");
    if gid == 0 {
        format!(
            "{facts}; run mqttctl as {owner} or with sudo (do not add users to group {group}: \
             run mqttd with its own group, e.g. `mqttd`, whose members may then use mqttctl)"
        )
    } else if mode & 0o060 != 0o060 {
        format!(
            "{facts}, so its group may not connect; run mqttctl as {owner} or with sudo, \
             or set control.socket_mode to \"0660\""
        )
    } else {
        format!(
            "{facts}; run mqttctl as {owner}, as a member of group {group} \
             (e.g. `usermod -aG {group} $USER`, then log in again), or with sudo"
        )
    }
}

/// Looks a numeric id up in a passwd/group style file (`name:x:id:...`).
pub fn name_of(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id_field = fields.nth(1)?;
        (id_field.parse() == Ok(id)).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_message() {
        let err = io::Error::from(io::ErrorKind::NotFound);
        let e = socket_unreachable(Path::new("/run/mqttd/mqttd.sock"), &err);
        assert_eq!(
            e.to_string(),
            "cannot reach mqttd at /run/mqttd/mqttd.sock: no such file — is mqttd running? \
             pass --socket or set MQTTD_SOCKET"
        );
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn permission_message_names_owner_group_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let err = io::Error::from(io::ErrorKind::PermissionDenied);
        let msg = socket_unreachable(&path, &err).to_string();
        assert!(msg.contains("permission denied"), "{msg}");
        assert!(msg.contains("mode 0660"), "{msg}");
        // The group named is the file's own (which advice follows is
        // `permission_advice`'s test).
        let meta = std::fs::metadata(&path).unwrap();
        let group = name_of("/etc/group", meta.gid()).unwrap_or_else(|| meta.gid().to_string());
        assert!(msg.contains(&format!(":{group} with mode")), "{msg}");
    }

    #[test]
    fn set_socket_variable_is_not_advised_again() {
        let err = io::Error::from(io::ErrorKind::NotFound);
        let path = Path::new("/srv/x.sock");
        let msg = socket_unreachable_with(path, &err, Some("/srv/x.sock".into())).to_string();
        assert!(msg.contains("MQTTD_SOCKET is set to /srv/x.sock"), "{msg}");
        assert!(!msg.contains("set MQTTD_SOCKET"), "{msg}");
    }

    #[test]
    fn root_group_is_never_advised() {
        let msg = permission_advice("root", "root", 0, 0o660);
        assert!(!msg.contains("usermod"), "{msg}");
        assert!(msg.contains("do not add users to group root"), "{msg}");
        let msg = permission_advice("mqttd", "mqttd", 998, 0o660);
        assert!(msg.contains("usermod -aG mqttd"), "{msg}");
        let msg = permission_advice("mqttd", "mqttd", 998, 0o600);
        assert!(
            !msg.contains("usermod") && msg.contains("socket_mode"),
            "{msg}"
        );
    }

    #[test]
    fn root_is_in_passwd() {
        assert_eq!(name_of("/etc/passwd", 0).as_deref(), Some("root"));
    }
}
