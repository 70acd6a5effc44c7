//! The password file as the broker uses it: loaded at start, swapped on
//! reload, and checked off the async threads (slow hashes are CPU work).
//!
//! The file format and editing live in the `mqttd-passwd` crate, shared
//! with `mqttctl`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqttd_passwd::{PasswdError, PasswordFile, Verification};
use parking_lot::RwLock;

pub struct PasswordStore {
    path: PathBuf,
    current: RwLock<Arc<PasswordFile>>,
}

impl PasswordStore {
    pub fn load(path: &Path) -> Result<PasswordStore, PasswdError> {
        let file = PasswordFile::load(path)?;
        Ok(PasswordStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; on error the previous contents stay in use.
    /// Returns the number of users.
    pub fn reload(&self) -> Result<usize, PasswdError> {
        let file = PasswordFile::load(&self.path)?;
        let users = file.len();
        *self.current.write() = Arc::new(file);
        Ok(users)
    }

    /// Checks `password` for `user` on a blocking thread.
    pub async fn verify(&self, user: &str, password: &[u8]) -> Verification {
        let file = self.current.read().clone();
        let user = user.to_string();
        let password = password.to_vec();
        tokio::task::spawn_blocking(move || file.verify(&user, &password))
            .await
            // A panicking hash library refuses rather than admits.
            .unwrap_or(Verification::Invalid)
    }
}
