//! Temporary directories, directory copies and disk use.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", from.display()))?
            .path();
        let target = to.join(
            path.file_name()
                .ok_or_else(|| anyhow!("no file name in {}", path.display()))?,
        );
        if path.is_dir() {
            fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            copy_dir(&path, &target)?;
        } else {
            fs::copy(&path, &target)
                .with_context(|| format!("copying {} to {}", path.display(), target.display()))?;
        }
    }
    Ok(())
}

pub fn tempdir(base: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("store-engines-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))
}

/// Disk use of a directory tree: allocated bytes (what `du` reports) and apparent bytes.
pub fn disk_usage(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut allocated, mut apparent) = (0u64, 0u64);
    let mut err = None;
    walk(dir, &mut |p| match fs::metadata(p) {
        Ok(m) => {
            allocated += m.blocks() * 512;
            apparent += m.len();
        }
        Err(e) => err = Some(anyhow!("stat {}: {e}", p.display())),
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok((allocated, apparent)),
    }
}
