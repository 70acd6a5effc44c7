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
    let trusted = |uid: u32| uid == 0 || uid == me || Some(uid) == extra_owner;
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
    fn a_regular_file_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqttd.sock");
        std::fs::write(&path, "").unwrap();
        let msg = trusted_socket(&path, None).unwrap_err().to_string();
        assert!(msg.contains("not a socket"), "{msg}");
    }
}
