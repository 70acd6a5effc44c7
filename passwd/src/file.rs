//! The password file: users and their hashes, in file order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::hash::{verify_hash, Algorithm, Hasher};
use crate::PasswdError;

/// Mode of a saved password file: readable by its owner only.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Valid,
    Invalid,
    UnknownUser,
}

/// Users and their password hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    /// (username, PHC hash) in file order; usernames are unique.
    entries: Vec<(String, String)>,
}

/// Checks that `user` can be stored in the file.
pub fn validate_username(user: &str) -> Result<(), PasswdError> {
    let bad = |why| Err(PasswdError::InvalidUsername(user.to_string(), why));
    if user.is_empty() {
        return bad("it is empty");
    }
    if user.contains(':') {
        return bad("it contains `:`");
    }
    if user.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if user.starts_with('#') {
        return bad("it starts with `#`");
    }
    if user.len() > usize::from(u16::MAX) {
        return bad("it is longer than MQTT allows");
    }
    Ok(())
}

impl PasswordFile {
    pub fn new() -> PasswordFile {
        PasswordFile::default()
    }

    /// Parses the text of a password file; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswdError> {
        let mut file = PasswordFile::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| PasswdError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let line = raw.trim_end();
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected `username:hash`".into()));
            };
            let hash = hash.trim();
            validate_username(user).map_err(|e| err(e.to_string()))?;
            if Algorithm::of_phc(hash).is_none() {
                return Err(err(format!(
                    "the hash of user `{user}` is not an argon2id or pbkdf2-sha512 PHC string"
                )));
            }
            if file.contains(user) {
                return Err(err(format!("user `{user}` appears twice")));
            }
            file.entries.push((user.to_string(), hash.to_string()));
        }
        Ok(file)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|error| PasswdError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        PasswordFile::parse(&text, path)
    }

    /// The file's text: one `user:hash` line per user.
    pub fn to_text(&self) -> String {
        self.entries
            .iter()
            .map(|(u, h)| format!("{u}:{h}\n"))
            .collect()
    }

    /// Writes the file atomically (a temporary file in the same directory,
    /// synced, then renamed over `path`) with mode 0600.
    ///
    /// An existing file keeps its owner and group: root editing the file of
    /// a broker that runs as `mqttd` (owner mqttd, mode 0600) must not
    /// leave it unreadable to the broker.
    pub fn save(&self, path: &Path) -> Result<(), PasswdError> {
        let err = |error| PasswdError::Write {
            path: path.to_path_buf(),
            error,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".passwd-")
            .tempfile_in(&dir)
            .map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(FILE_MODE);
            tmp.as_file().set_permissions(perms).map_err(err)?;
            if let Ok(old) = std::fs::metadata(path) {
                use std::os::unix::fs::MetadataExt;
                let same = |uid, gid| old.uid() == uid && old.gid() == gid;
                let new = tmp.as_file().metadata().map_err(err)?;
                if !same(new.uid(), new.gid()) {
                    std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()))
                        .map_err(err)?;
                }
            }
        }
        tmp.write_all(self.to_text().as_bytes()).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }

    pub fn contains(&self, user: &str) -> bool {
        self.position(user).is_some()
    }

    /// Usernames in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(u, _)| u.as_str())
    }

    /// The stored hash of `user`.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.position(user).map(|i| self.entries[i].1.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, user: &str) -> Option<usize> {
        self.entries.iter().position(|(u, _)| u == user)
    }

    /// Adds a new user; fails if it exists.
    pub fn add(&mut self, user: &str, password: &[u8], hasher: &Hasher) -> Result<(), PasswdError> {
        validate_username(user)?;
        if self.contains(user) {
            return Err(PasswdError::UserExists(user.to_string()));
        }
        let hash = hasher.hash(password)?;
        self.entries.push((user.to_string(), hash));
        Ok(())
    }

    /// Changes the password of an existing user.
    pub fn update(
        &mut self,
        user: &str,
        password: &[u8],
        hasher: &Hasher,
    ) -> Result<(), PasswdError> {
        let i = self
            .position(user)
            .ok_or_else(|| PasswdError::UnknownUser(user.to_string()))?;
        self.entries[i].1 = hasher.hash(password)?;
        Ok(())
    }

    /// Adds the user or changes its password; `true` if it was added.
    pub fn set(
        &mut self,
        user: &str,
        password: &[u8],
        hasher: &Hasher,
    ) -> Result<bool, PasswdError> {
        if self.contains(user) {
            self.update(user, password, hasher)?;
            Ok(false)
        } else {
            self.add(user, password, hasher)?;
            Ok(true)
        }
    }

    /// Removes a user; `true` if it existed.
    pub fn remove(&mut self, user: &str) -> bool {
        match self.position(user) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Checks `password` for `user`. An unknown user costs as much as a
    /// wrong password, so timing does not reveal which users exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> Verification {
        match self.hash_of(user) {
            Some(hash) if verify_hash(hash, password) => Verification::Valid,
            Some(_) => Verification::Invalid,
            None => {
                let _ = verify_hash(dummy_hash(), password);
                Verification::UnknownUser
            }
        }
    }
}

/// A hash of a random password at the default cost, verified against for
/// unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let password: [u8; 16] = rand_bytes();
        Hasher::default().hash(&password).unwrap_or_default()
    })
}

fn rand_bytes() -> [u8; 16] {
    use password_hash::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::tests::cheap;

    fn p() -> &'static Path {
        Path::new("pw")
    }

    #[test]
    fn add_update_remove_verify() {
        let h = cheap(Algorithm::Argon2id);
        let mut f = PasswordFile::new();
        f.add("alice", b"one", &h).unwrap();
        assert!(matches!(
            f.add("alice", b"x", &h),
            Err(PasswdError::UserExists(_))
        ));
        f.add("bob", b"two", &cheap(Algorithm::Pbkdf2Sha512))
            .unwrap();
        assert_eq!(f.verify("alice", b"one"), Verification::Valid);
        assert_eq!(f.verify("alice", b"two"), Verification::Invalid);
        assert_eq!(f.verify("bob", b"two"), Verification::Valid);
        f.update("alice", b"new", &h).unwrap();
        assert_eq!(f.verify("alice", b"one"), Verification::Invalid);
        assert_eq!(f.verify("alice", b"new"), Verification::Valid);
        assert!(matches!(
            f.update("carol", b"x", &h),
            Err(PasswdError::UnknownUser(_))
        ));
        assert!(f.set("carol", b"3", &h).unwrap());
        assert!(!f.set("carol", b"4", &h).unwrap());
        assert!(f.remove("alice"));
        assert!(!f.remove("alice"));
        assert_eq!(f.users().collect::<Vec<_>>(), ["bob", "carol"]);
    }

    #[test]
    fn bad_usernames_are_refused() {
        let h = cheap(Algorithm::Argon2id);
        let mut f = PasswordFile::new();
        for bad in ["", "a:b", "#x", "a\nb"] {
            assert!(f.add(bad, b"x", &h).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_round_trips_and_skips_comments() {
        let h = cheap(Algorithm::Argon2id);
        let mut f = PasswordFile::new();
        f.add("alice", b"one", &h).unwrap();
        f.add("user with space", b"two", &h).unwrap();
        let text = format!("# header\n\n{}", f.to_text());
        let g = PasswordFile::parse(&text, p()).unwrap();
        assert_eq!(f, g);
        assert_eq!(g.verify("user with space", b"two"), Verification::Valid);
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let e = PasswordFile::parse("# ok\nalice\n", p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pw") && e.contains("line 2"), "{e}");
        let e = PasswordFile::parse("alice:plaintext\n", p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("alice"), "{e}");
        let hash = cheap(Algorithm::Argon2id).hash(b"x").unwrap();
        let e = PasswordFile::parse(&format!("a:{hash}\na:{hash}\n"), p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn save_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let mut f = PasswordFile::new();
        f.add("alice", b"one", &cheap(Algorithm::Argon2id)).unwrap();
        f.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(PasswordFile::load(&path).unwrap(), f);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            // A rewrite keeps the owner and group the file had (root may
            // give it away; anyone may give it to their own group).
            use std::os::unix::fs::MetadataExt;
            let before = std::fs::metadata(&path).unwrap();
            let (uid, gid) = if before.uid() == 0 {
                (4242, 4242)
            } else {
                (before.uid(), before.gid())
            };
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            f.add("bob", b"two", &cheap(Algorithm::Argon2id)).unwrap();
            f.save(&path).unwrap();
            let after = std::fs::metadata(&path).unwrap();
            assert_eq!((after.uid(), after.gid()), (uid, gid));
            assert_eq!(after.mode() & 0o777, 0o600);
        }
        let missing = PasswordFile::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn unknown_user_is_reported() {
        let f = PasswordFile::new();
        assert_eq!(f.verify("ghost", b"x"), Verification::UnknownUser);
    }
}
