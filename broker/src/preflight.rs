//! The checks start-up makes before it binds anything, in one place, so
//! `mqttd --check-config` runs exactly what start-up runs short of binding
//! sockets: the config's own validation (keys, values, listeners sharing
//! an address), the log filter, password and ACL files, every listener's
//! certificates, the control API's TCP token, and whether the store's
//! directory can be used.
//!
//! The store itself is not opened here: a broker already running on the
//! same `data_dir` holds its lock, and `--check-config` is typically run
//! beside that broker before a restart. What is checked is what a fresh
//! start needs of the directory (it is a directory, or can be created, and
//! mqttd's user may write in it); a store written by a newer mqttd is
//! still only refused when it is opened (exit code 3).

use std::path::{Path, PathBuf};

use crate::auth::Auth;
use crate::config::{Config, Durability};
use crate::server::StartError;

/// Why the store's directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("storage.data_dir {}: {reason}", path.display())]
pub struct DataDirError {
    pub path: PathBuf,
    pub reason: String,
}

/// Runs every check start-up makes before binding; returns the loaded
/// auth layer so start-up does not read its files twice.
pub fn check(config: &Config) -> Result<Auth, StartError> {
    crate::logging::check(&config.log).map_err(StartError::Log)?;
    crate::control::check_config(&config.control)?;
    let auth = Auth::new(&config.auth)?;
    for l in &config.listeners {
        crate::listener::load_tls(l)?;
    }
    if config.storage.durability != Durability::Memory {
        check_data_dir(&config.storage.data_dir)?;
    }
    Ok(auth)
}

/// `dir` is a directory mqttd's user may write in, or the nearest existing
/// ancestor is one (the store creates what is missing).
pub fn check_data_dir(dir: &Path) -> Result<(), DataDirError> {
    let fail = |path: &Path, reason: String| DataDirError {
        path: path.to_path_buf(),
        reason,
    };
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if !m.is_dir() => {
                return Err(fail(dir, format!("{} is not a directory", probe.display())))
            }
            Ok(_) if writable(probe) => return Ok(()),
            Ok(_) if probe == dir => {
                return Err(fail(dir, "mqttd's user may not write in it".into()))
            }
            Ok(_) => {
                return Err(fail(
                    dir,
                    format!(
                        "does not exist, and mqttd's user may not create it in {}",
                        probe.display()
                    ),
                ))
            }
            // Missing, or under a file (ENOTDIR): look at the parent, which
            // says which.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match probe.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                    // A relative path whose first component is missing: it is
                    // created in the working directory.
                    _ => return check_data_dir(Path::new(".")).map_err(|e| fail(dir, e.reason)),
                }
            }
            Err(e) => return Err(fail(dir, e.to_string())),
        }
    }
}

/// Whether this process may create entries in the directory `path`.
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_missing_under_a_writable_parent_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        check_data_dir(&tmp.path().join("a/b")).unwrap();
        check_data_dir(tmp.path()).unwrap();
    }

    #[test]
    fn data_dir_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = check_data_dir(&file.join("data")).unwrap_err().to_string();
        assert!(
            err.contains("storage.data_dir") && err.contains("not a directory"),
            "{err}"
        );
    }
}
