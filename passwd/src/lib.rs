//! The mqttd password file, shared by the broker (which verifies) and
//! `mqttctl passwd` (which edits), without pulling in the broker.
//!
//! # Format
//!
//! One user per line, `USERNAME:HASH`, where `HASH` is a salted slow hash
//! in PHC string format:
//!
//! ```text
//! # comments and blank lines are ignored
//! alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$...
//! bob:$pbkdf2-sha512$i=210000,l=64$c2FsdA$...
//! ```
//!
//! Supported hashes: Argon2id (the default for new entries) and
//! PBKDF2-SHA512. A username may hold any character except `:`, control
//! characters and a leading `#`; it is never empty. Saving rewrites the
//! file atomically with mode 0600 (comments are not kept).
//!
//! # Layout
//!
//! - [`hash`]: hashing a password and verifying a PHC string;
//! - [`file`]: the file itself: parse, load, save, add/update/delete/verify.

pub mod file;
pub mod hash;

use std::path::PathBuf;

pub use file::{PasswordFile, Verification};
pub use hash::{verify_hash, Algorithm, Hasher};

/// Why a password file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("cannot read password file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write password file {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("password file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid username `{0}`: {1}")]
    InvalidUsername(String, &'static str),
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("no user `{0}`")]
    UnknownUser(String),
    #[error("cannot hash password: {0}")]
    Hash(String),
}
