//! The size of a directory tree, counted as `du` counts it: every file
//! and directory once (hard links once per inode), as apparent bytes
//! (`du -sb`) and as allocated blocks (`du -s --block-size=1`). A store
//! that preallocates its journal shows the difference.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Bytes a directory tree takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the sizes (`du -sb`).
    pub apparent: u64,
    /// Sum of the allocated blocks, in bytes (`du -s --block-size=1`).
    pub allocated: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct DiskError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// What `root` and everything under it take on disk (symbolic links are
/// counted, not followed).
pub fn usage(root: &Path) -> Result<Usage, DiskError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiskError { path, source }
    };
    let mut total = Usage::default();
    let mut seen = HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total.apparent += meta.len();
        total.allocated += meta.blocks() * 512;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(err(&path))? {
                pending.push(entry.map_err(err(&path))?.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_directories_once() {
        let dir = std::env::temp_dir().join(format!("mqttd-bench-disk-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(dir.join("a"), vec![1u8; 1000]).unwrap();
        std::fs::write(sub.join("b"), vec![2u8; 24]).unwrap();
        std::fs::hard_link(dir.join("a"), sub.join("a-again")).unwrap();
        let got = usage(&dir);
        let dirs = std::fs::metadata(&dir).unwrap().len() + std::fs::metadata(&sub).unwrap().len();
        std::fs::remove_dir_all(&dir).unwrap();
        let got = got.unwrap();
        assert_eq!(got.apparent, 1024 + dirs);
        assert!(got.allocated >= 2 * 512, "{got:?}");
        assert!(usage(&dir).is_err());
    }
}
