//! Durable files: written whole or not at all.
//!
//! Owns: the one way the engine puts a file on disk that must survive a
//! crash (spill files, dead letters, the file sink's batches): write to a
//! temporary name beside it, fsync, rename over the final name, fsync the
//! directory. A failure at any step removes the temporary file, so a full
//! disk leaves nothing behind. Must not: decide names or formats, or run on
//! an async runtime's worker (callers use `spawn_blocking`).

use std::path::Path;

/// Writes `path` atomically with `fill`; the temporary name is `path` with
/// `.tmp` appended to its extension (`x.spill` -> `x.spill.tmp`), so two
/// files written side by side never share one. Without `fsync` the file is
/// still whole or absent, but a power loss may lose it from the page cache.
pub(crate) fn write_atomically(
    path: &Path,
    fsync: bool,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        if fsync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Some(dir) = path.parent().filter(|_| fsync) {
        sync_dir(dir);
    }
    Ok(())
}

/// Makes renames and deletions in `dir` durable; best effort (not every
/// filesystem allows opening a directory for it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_no_file_and_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.spill");
        let e =
            write_atomically(&path, true, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        write_atomically(&path, true, |f| std::io::Write::write_all(f, b"x")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
