//! Trusting the control socket: before mqttctl talks to a socket it checks
//! who owns it, so a socket another local user planted (for instance in a
//! `/tmp/mqttd-<uid>` directory he created first) cannot answer in mqttd's
//! place and report success for commands that never reached the broker.
//!
//! The socket file and its directory, after symbolic links are resolved,
//! must be owned by root, by the user running mqttctl, or by the user named
//! with `--socket-owner` (env `MQTTD_SOCKET_OWNER`; a name or a uid), e.g.
//! the service user when an administrator runs `sudo mqttctl`. mqttctl then
//! connects to the resolved path, so a link swapped after the check is not
//! followed.
//!
//! The owner of a directory that root handed out is trusted too: when the
//! socket's directory sits in a parent that root owns and only root may
//! write (`/run` for systemd's `RuntimeDirectory=mqttd`), no other user can
//! have made or swapped it, so the socket there may belong to the
//! directory's owner. That lets members of group `mqttd` use the packaged
//! service's `/run/mqttd/mqttd.sock` without `--socket-owner`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{name_of, socket_unreachable, CtlError};

/// Resolves `--socket-owner`: a user name from /etc/passwd, or a uid.
pub fn parse_owner(owner: &str) -> Result<u32, CtlError> {
    if let Ok(uid) = owner.parse() {
        return Ok(uid);
    }
    uid_of("/etc/passwd", owner).ok_or_else(|| {
        CtlError::Usage(format!(
            "--socket-owner {owner:?}: no such user (give a user name or a numeric uid)"
        ))
    })
}

/// Checks the socket at `path` and returns the resolved path to connect to.
pub fn trusted_socket(path: &Path, extra_owner: Option<u32>) -> Result<PathBuf, CtlError> {
    let real = std::fs::canonicalize(path).map_err(|e| socket_unreachable(path, &e))?;
    let meta = std::fs::symlink_metadata(&real).map_err(|e| socket_unreachable(path, &e))?;
    if !meta.file_type().is_socket() {
        return Err(CtlError::Unreachable(format!(
            "cannot use {}: it is not a socket — pass --socket with mqttd's control socket",
            describe(path, &real)
        )));
    }
    let me = mqttd_api::socket::effective_uid();
    let delegated = real.parent().and_then(root_delegated_owner);
    let trusted =
        |uid: u32| uid == 0 || uid == me || Some(uid) == extra_owner || Some(uid) == delegated;
    if !trusted(meta.uid()) {
        return Err(untrusted(
            "the socket",
            &describe(path, &real),
            meta.uid(),
            me,
        ));
    }
    if let Some(dir) = real.parent() {
        let dmeta = std::fs::symlink_metadata(dir).map_err(|e| socket_unreachable(path, &e))?;
        if !trusted(dmeta.uid()) {
            return Err(untrusted(
                "the directory of the socket",
                &dir.display().to_string(),
                dmeta.uid(),
                me,
            ));
        }
    }
    Ok(real)
}

/// The owner of `dir` when root alone can have put it there: its parent is
/// a real directory owned by root and writable by nobody else.
fn root_delegated_owner(dir: &Path) -> Option<u32> {
    let dmeta = std::fs::symlink_metadata(dir).ok()?;
    let parent = std::fs::symlink_metadata(dir.parent()?).ok()?;
    if !(dmeta.is_dir() && parent.is_dir()) {
        return None;
    }
    delegated_owner(parent.uid(), parent.mode(), dmeta.uid())
}

/// Pure rule of [`root_delegated_owner`]: the directory's owner, if its
/// parent belongs to root and is not writable by group or others.
fn delegated_owner(parent_uid: u32, parent_mode: u32, dir_uid: u32) -> Option<u32> {
    (parent_uid == 0 && parent_mode & 0o022 == 0).then_some(dir_uid)
}

fn describe(path: &Path, real: &Path) -> String {
    if path == real {
        path.display().to_string()
    } else {
        format!("{} (-> {})", path.display(), real.display())
    }
}

fn untrusted(what: &str, at: &str, owner: u32, me: u32) -> CtlError {
    let who = match name_of("/etc/passwd", owner) {
        Some(name) => format!("uid {owner} ({name})"),
        None => format!("uid {owner}"),
    };
    let flag = name_of("/etc/passwd", owner).unwrap_or_else(|| owner.to_string());
    CtlError::Unreachable(format!(
        "refusing the control socket {at}: {what} is owned by {who}, not by you (uid {me}) \
         or root, so another user may have put it there — if mqttd runs as that user, \
         pass --socket-owner {flag} (or set MQTTD_SOCKET_OWNER)"
    ))
}

/// Looks a user name up in a passwd-style file (`name:x:uid:...`).
fn uid_of(file: &str, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_by_name_or_uid() {
        assert_eq!(parse_owner("root").unwrap(), 0);
        assert_eq!(parse_owner("4242").unwrap(), 4242);
        let err = parse_owner("no-such-user-here").unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn only_a_root_only_parent_delegates() {
        // /run (root, 0755) holding /run/mqttd of uid 999: trusted.
        assert_eq!(delegated_owner(0, 0o40755, 999), Some(999));
        // /tmp (root, 1777): anyone may have made the directory.
        assert_eq!(delegated_owner(0, 0o41777, 999), None);
        // A group-writable parent, or one another user owns.
        assert_eq!(delegated_owner(0, 0o40775, 999), None);
        assert_eq!(delegated_owner(1000, 0o40755, 999), None);
    }

    #[test]
    fn a_regular_file_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqttd.sock");
        std::fs::write(&path, "").unwrap();
        let msg = trusted_socket(&path, None).unwrap_err().to_string();
        assert!(msg.contains("not a socket"), "{msg}");
    }
}
