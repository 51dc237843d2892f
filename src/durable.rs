//! Durable files: written whole or not at all, and never through a symlink.
//!
//! Owns: the one way the engine puts a file on disk that must survive a
//! crash (spill files, dead letters, the file sink's batches): write to a
//! new temporary name beside it, fsync, rename over the final name, fsync
//! the directory. A failure at any step removes the temporary file, so a
//! full disk leaves nothing behind. Also owns the rules for the engine's
//! private directories (spill, quarantine, dead letters): created 0700,
//! their files 0600, a file only ever created under a name nothing holds yet
//! (`O_EXCL`) and read back only by a name that is not a symbolic link.
//! Must not: decide names or formats, or run on an async runtime's worker
//! (callers use `spawn_blocking`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files the engine keeps for itself (spill files, dead
/// letters): INSERTs carry user data, so only the engine's user reads them.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
/// Mode of the directories the engine creates for them.
const PRIVATE_DIR: u32 = 0o700;

/// How many temporary names `write_atomically` tries before giving up.
const TEMP_NAMES: u32 = 8;

// Refuses a symbolic link at the last component of a name we open.
const O_NOFOLLOW: i32 = libc::O_NOFOLLOW;

/// Writes `path` atomically with `fill`, creating it with `mode` (before
/// the umask). The temporary name is `path` with `.tmp` appended
/// (`x.spill` -> `x.spill.tmp`), or `.1.tmp`, `.2.tmp`... when that name is
/// taken: it is always created new (`O_EXCL`), so whatever already sits
/// there (a symlink planted to redirect the write, a FIFO, a leftover of a
/// crash, a concurrent writer's temporary) is never opened, followed or
/// truncated. The rename then replaces the final name itself, never what a
/// symlink there points to. Without `fsync` the file is still whole or
/// absent, but a power loss may lose it from the page cache.
pub(crate) fn write_atomically(
    path: &Path,
    fsync: bool,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let (mut f, tmp) = create_temporary(path, mode)?;
    let result = (|| {
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

/// Creates a new, empty temporary file beside `path`: the first of its
/// temporary names nothing holds yet.
fn create_temporary(path: &Path, mode: u32) -> io::Result<(File, PathBuf)> {
    let mut last = None;
    for n in 0..TEMP_NAMES {
        let mut tmp = path.as_os_str().to_owned();
        if n > 0 {
            tmp.push(format!(".{n}"));
        }
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // `create_new` is O_CREAT|O_EXCL, which fails on an existing name
        // even when it is a (dangling) symlink: that alone keeps the write
        // out of a symlink. O_NOFOLLOW only says the same thing twice.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(io::Error::new(
        e.kind(),
        format!(
            "{}: no free temporary name beside it ({} taken): {e}",
            path.display(),
            TEMP_NAMES
        ),
    ))
}

/// Creates `dir` and any missing parent with mode 0700 (before the umask).
/// A directory that already exists is left as it is: its mode is the
/// operator's choice, never widened nor narrowed here.
///
/// Refuses a `dir` whose last component is a symbolic link. Only the last
/// one: a configured path may legitimately go through symlinks
/// (`/var/lib -> /data/var/lib`), but the directory the engine writes into
/// must be the one named, not one a link (planted in a shared parent, or
/// left from an older layout) redirects its files to. It is checked before
/// and after creating, so a link that appears meanwhile is refused too.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    refuse_symlinked_dir(dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)?;
    refuse_symlinked_dir(dir)
}

fn refuse_symlinked_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: is a symbolic link; the engine does not write its files through one \
                 (configure the directory it points to instead)",
                dir.display()
            ),
        )),
        Ok(m) if !m.is_dir() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: exists and is not a directory", dir.display()),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `path` for reading, refusing a symbolic link or anything but a
/// regular file (`InvalidData`, naming the path).
///
/// Two checks: `O_NOFOLLOW` makes the kernel refuse a symlink at open (so
/// a link to a FIFO or a device is never even opened); the identity check
/// after the open (the name, not followed, is the very regular file held)
/// also refuses a name that is not a regular file.
pub(crate) fn open_no_symlink(path: &Path) -> io::Result<File> {
    let refused = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}; not following it", path.display()),
        )
    };
    let named = |path: &Path| std::fs::symlink_metadata(path);
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        // ELOOP: the kernel refused the link; say so plainly.
        Err(e) => match named(path) {
            Ok(m) if m.file_type().is_symlink() => return Err(refused("is a symbolic link")),
            _ => return Err(e),
        },
    };
    let held = f.metadata()?;
    let now = named(path)?;
    if now.file_type().is_symlink() {
        return Err(refused("is a symbolic link"));
    }
    if !held.is_file() || (now.dev(), now.ino()) != (held.dev(), held.ino()) {
        return Err(refused("is not a regular file"));
    }
    Ok(f)
}

/// Reads all of `path` through [`open_no_symlink`].
pub(crate) fn read_no_symlink(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = open_no_symlink(path)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut f, &mut bytes)?;
    Ok(bytes)
}

/// Makes renames and deletions in `dir` durable; best effort (not every
/// filesystem allows opening a directory for it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What `mode & 0o777` of a file created with `mode` is under this
/// process's umask: the tests' expectation whatever umask they run with.
#[cfg(test)]
pub(crate) fn after_umask(mode: u32) -> u32 {
    // /proc/self/status reads the umask without changing it (`umask(2)`
    // can only read it by setting it, racing with the other tests' files).
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or_else(|| {
            // SAFETY: umask(2) cannot fail; the old mask is put back at once.
            unsafe {
                let old = libc::umask(0o022);
                libc::umask(old);
                old as u32
            }
        });
    mode & 0o777 & !umask
}

/// `mode & 0o777` of `path` (not following a symlink).
#[cfg(test)]
pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_no_file_and_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.spill");
        let e = write_atomically(&path, true, PRIVATE_FILE, |_| {
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        write_atomically(&path, true, PRIVATE_FILE, |f| io::Write::write_all(f, b"x")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn files_are_created_0600_and_directories_0700() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a").join("b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode_of(&d.path().join("a")), after_umask(0o700));
        assert_eq!(mode_of(&dir), after_umask(0o700));
        let file = dir.join("f");
        write_atomically(&file, false, PRIVATE_FILE, |f| {
            io::Write::write_all(f, b"x")
        })
        .unwrap();
        assert_eq!(mode_of(&file), after_umask(0o600));
        // Nothing for group or others, whatever the umask.
        assert_eq!(mode_of(&file) & 0o077, 0);
    }

    #[test]
    fn an_existing_directory_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o750);
    }

    #[test]
    fn a_symlinked_directory_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = create_private_dir(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&*link.to_string_lossy()), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A dangling one too (creating would otherwise fail obscurely).
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        let e = create_private_dir(&dangling).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!d.path().join("nowhere").exists());
        // Symlinks above the last component are the operator's business.
        create_private_dir(&link.join("sub")).unwrap();
        assert!(real.join("sub").is_dir());
    }

    #[test]
    fn a_symlink_at_the_temporary_or_final_name_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let path = d.path().join("a.spill");
        std::os::unix::fs::symlink(&target, d.path().join("a.spill.tmp")).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_atomically(&path, true, PRIVATE_FILE, |f| {
            io::Write::write_all(f, b"new")
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // The final name is now the new file itself, not the link.
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), after_umask(0o600));
        // With every temporary name taken, the write fails rather than
        // open one.
        let other = d.path().join("b.spill");
        for n in 0..TEMP_NAMES {
            let tmp = match n {
                0 => "b.spill.tmp".to_string(),
                n => format!("b.spill.{n}.tmp"),
            };
            std::os::unix::fs::symlink(&target, d.path().join(tmp)).unwrap();
        }
        let e = write_atomically(&other, true, PRIVATE_FILE, |f| {
            io::Write::write_all(f, b"x")
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(!other.exists());
    }

    #[test]
    fn reading_refuses_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = d.path().join("x.spill");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_no_symlink(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = open_no_symlink(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(read_no_symlink(&target).unwrap(), b"secret");
        let e = read_no_symlink(&d.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
