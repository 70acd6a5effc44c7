//! Noticing that a file changed, by polling: its identity and size and
//! modification time. A Kubernetes Secret or ConfigMap update swaps a
//! symbolic link to a new file (new inode), certbot and editors write or
//! rename files (new time or size): any of those is a change. Polled
//! rather than watched with inotify because a swapped symlink directory
//! escapes a watch on the old file, and two seconds is quick enough.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// What a file looked like; `None` while it cannot be read.
pub type FileStamp = Option<(u64, u64, u64, SystemTime)>;

/// `path`'s stamp now (the link followed, as a read would).
pub fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_has_a_new_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a").unwrap();
        let before = stamp(&path);
        assert_eq!(before, stamp(&path));
        // Same size, written to a new file and renamed over (a new inode),
        // as Kubernetes and most tools update files.
        let next = dir.path().join("f.new");
        std::fs::write(&next, "b").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_ne!(before, stamp(&path));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(stamp(&path), None);
    }
}
